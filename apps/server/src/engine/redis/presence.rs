//! The Redis engine as a [`PresenceStore`]: a user is present in a room
//! while any instance holds an unexpired entry for it. Entries are scored
//! by expiry on the store's clock (`TIME` inside `lua/presence_*.lua`,
//! `lua/members.lua`, `lua/rooms_index.lua`), so instances whose clocks
//! disagree still agree on who is present. Entries are refreshed by
//! the hub every third of `--presence-ttl-ms` (pipelined, in batches), and
//! swept by every instance with members in the room, so a crashed
//! instance's users leave.

use super::RedisEngine;
use crate::engine::{EngineError, LocalPresence, PresenceStore, RoomsPage};
use async_trait::async_trait;
use protocol::{RoomInfo, RoomName, User};
use redis::{AsyncCommands, RedisResult, ScriptInvocation};
use std::sync::atomic::Ordering;

/// Presence entries (or rooms) per pipelined round trip of a refresh.
const REFRESH_BATCH: usize = 500;

impl RedisEngine {
    /// `lua/instance.lua` with `op` (`claim` or `release`).
    async fn instance_script(&self, op: &str) -> Result<bool, EngineError> {
        let key = self.keys.instance(&self.instance);
        let held: u8 = self
            .commands
            .run(|mut conn| {
                let key = &key;
                async move {
                    self.scripts
                        .instance
                        .key(key)
                        .arg(&self.nonce)
                        .arg(op)
                        .arg(self.presence_ttl.as_millis() as u64)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(held == 1)
    }

    /// Marks `user` present in `room` through this instance for one TTL
    /// (also the refresh), and the room active in the rooms index.
    async fn mark_present(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        self.commands
            .run(|mut conn| async move {
                let mut join = self.scripts.presence_join.prepare_invoke();
                self.presence_join_args(&mut join, room, user);
                let members: u64 = join.invoke_async(&mut conn).await?;
                let mut touch = self.scripts.rooms_index.prepare_invoke();
                self.rooms_touch_args(&mut touch, room, members);
                touch.invoke_async::<i64>(&mut conn).await
            })
            .await?;
        Ok(())
    }

    /// Keys and arguments of `lua/presence_join.lua` for `user` in `room`.
    fn presence_join_args(&self, join: &mut ScriptInvocation<'_>, room: &RoomName, user: &User) {
        join.key(self.keys.users(room))
            .key(self.keys.names(room))
            .key(self.keys.user(room, &user.id))
            .key(self.keys.meta(room))
            .key(self.keys.log(room))
            .arg(&user.id)
            .arg(&self.instance)
            .arg(self.presence_ttl.as_millis() as u64)
            .arg(&user.name)
            .arg(self.keys.channel(room))
            .arg(self.retention.as_millis() as u64);
    }

    /// `lua/rooms_index.lua touch`: the room is active for one more TTL
    /// with `members` members (0: it is not).
    fn rooms_touch_args(&self, touch: &mut ScriptInvocation<'_>, room: &RoomName, members: u64) {
        touch
            .key(self.keys.rooms())
            .key(self.keys.rooms_by_members())
            .arg("touch")
            .arg(room.as_str())
            .arg(self.presence_ttl.as_millis() as u64)
            .arg(members);
    }

    /// Runs a pipeline made with `ignore_errors`, counting its commands and
    /// failures (a failed round trip counts as one failure) in `failures`.
    /// Returns each command's answer (none if the round trip failed).
    async fn run_pipeline(
        &self,
        pipe: &redis::Pipeline,
        failures: &mut Failures,
    ) -> Vec<RedisResult<redis::Value>> {
        let results: Result<Vec<RedisResult<redis::Value>>, EngineError> = self
            .commands
            .run(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await;
        match results {
            Ok(results) => {
                failures.commands += results.len();
                for e in results.iter().filter_map(|r| r.as_ref().err()) {
                    failures.failed += 1;
                    failures.first.get_or_insert_with(|| e.to_string());
                }
                results
            }
            Err(e) => {
                failures.failed += 1;
                failures.first.get_or_insert_with(|| e.to_string());
                Vec::new()
            }
        }
    }
}

/// Commands of one refresh cycle, and those that failed.
#[derive(Default)]
struct Failures {
    commands: usize,
    failed: usize,
    first: Option<String>,
}

impl Failures {
    fn into_result(self) -> Result<(), EngineError> {
        match self.first {
            None => Ok(()),
            Some(first) => Err(EngineError::Unavailable(format!(
                "{} of {} presence updates failed; first: {first}",
                self.failed, self.commands
            ))),
        }
    }
}

#[async_trait]
impl PresenceStore for RedisEngine {
    async fn join(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        self.mark_present(room, user).await
    }

    async fn leave(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        self.commands
            .run(|mut conn| async move {
                let members: u64 = self
                    .scripts
                    .presence_leave
                    .key(self.keys.users(room))
                    .key(self.keys.names(room))
                    .key(self.keys.user(room, &user.id))
                    .arg(&user.id)
                    .arg(&self.instance)
                    .arg(self.keys.channel(room))
                    .invoke_async(&mut conn)
                    .await?;
                let mut touch = self.scripts.rooms_index.prepare_invoke();
                self.rooms_touch_args(&mut touch, room, members);
                touch.invoke_async::<i64>(&mut conn).await
            })
            .await?;
        Ok(())
    }

    /// Pipelined: [`REFRESH_BATCH`] users per round trip (the join
    /// script), then one round trip of sweeps per batch of rooms (each
    /// answers the room's live member count), then the rooms index with
    /// those counts. A failed entry or batch does not stop the others; the
    /// error reports how many failed.
    async fn refresh(&self, local: &[LocalPresence]) -> Result<(), EngineError> {
        match self.claim_instance().await {
            Ok(held) => {
                let was = self.id_taken.swap(!held, Ordering::Relaxed);
                if !held && !was {
                    tracing::error!(
                        instance = %self.instance,
                        "another live instance uses this instance id: not ready; give every instance its own --instance-id"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "instance claim not renewed"),
        }
        let entries: Vec<(&RoomName, &User)> = local
            .iter()
            .flat_map(|e| e.users.iter().map(move |u| (&e.room, u)))
            .collect();
        let mut failures = Failures::default();
        for batch in entries.chunks(REFRESH_BATCH) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors()
                .load_script(&self.scripts.presence_join);
            for (room, user) in batch {
                let mut join = self.scripts.presence_join.prepare_invoke();
                self.presence_join_args(&mut join, room, user);
                pipe.invoke_script(&join);
            }
            self.run_pipeline(&pipe, &mut failures).await;
        }
        let rooms: Vec<&RoomName> = local.iter().map(|e| &e.room).collect();
        for batch in rooms.chunks(REFRESH_BATCH) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors()
                .load_script(&self.scripts.presence_sweep);
            for room in batch {
                let mut sweep = self.scripts.presence_sweep.prepare_invoke();
                sweep
                    .key(self.keys.users(room))
                    .key(self.keys.names(room))
                    .arg(self.keys.user_prefix(room))
                    .arg(self.keys.channel(room));
                pipe.invoke_script(&sweep);
            }
            let answers = self.run_pipeline(&pipe, &mut failures).await;
            // The sweeps' answers are the last ones (before them: the
            // SCRIPT LOAD's, if the pipeline answers it).
            let sweeps = &answers[answers.len().saturating_sub(batch.len())..];
            let counts: Vec<(&RoomName, u64)> = batch
                .iter()
                .zip(sweeps)
                .filter_map(|(room, answer)| match answer {
                    Ok(v) => <u64 as redis::FromRedisValue>::from_redis_value_ref(v)
                        .ok()
                        .map(|n| (*room, n)),
                    Err(_) => None,
                })
                .collect();
            if counts.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors().load_script(&self.scripts.rooms_index);
            for (room, members) in counts {
                let mut touch = self.scripts.rooms_index.prepare_invoke();
                self.rooms_touch_args(&mut touch, room, members);
                pipe.invoke_script(&touch);
            }
            self.run_pipeline(&pipe, &mut failures).await;
        }
        let mut expire = self.scripts.rooms_index.prepare_invoke();
        expire
            .key(self.keys.rooms())
            .key(self.keys.rooms_by_members())
            .arg("expire");
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .load_script(&self.scripts.rooms_index)
            .invoke_script(&expire);
        self.run_pipeline(&pipe, &mut failures).await;
        failures.into_result()
    }

    async fn members(&self, room: &RoomName) -> Result<Vec<User>, EngineError> {
        let flat: Vec<String> = self
            .commands
            .run(|mut conn| async move {
                self.scripts
                    .members
                    .key(self.keys.users(room))
                    .key(self.keys.names(room))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(flat
            .chunks_exact(2)
            .map(|pair| User {
                id: pair[0].clone(),
                name: pair[1].clone(),
            })
            .collect())
    }

    async fn rooms(&self, start: usize, limit: usize) -> Result<RoomsPage, EngineError> {
        // One more than the page: whether more follow.
        let stop = start.saturating_add(limit) as isize;
        let scored: Vec<(String, f64)> = self
            .commands
            .run(|mut conn| async move {
                conn.zrange_withscores(self.keys.rooms_by_members(), start as isize, stop)
                    .await
            })
            .await?;
        let more = scored.len() > limit;
        let rooms = scored
            .into_iter()
            .take(limit)
            .map(|(room, score)| RoomInfo {
                room,
                members: (-score).max(0.0) as u64,
            })
            .collect();
        Ok(RoomsPage { rooms, more })
    }

    async fn claim_instance(&self) -> Result<bool, EngineError> {
        self.instance_script("claim").await
    }

    async fn release_instance(&self) {
        if let Err(e) = self.instance_script("release").await {
            tracing::debug!(error = %e, "instance claim not released; it expires");
        }
    }
}
