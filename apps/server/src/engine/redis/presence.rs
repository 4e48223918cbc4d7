//! The Redis engine as a [`PresenceStore`]: a user is present in a room
//! while any instance holds an unexpired entry for it. Entries are scored
//! by expiry on the store's clock (`TIME` inside `lua/presence_*.lua`,
//! `lua/members.lua`, `lua/rooms_index.lua`), so instances whose clocks
//! disagree still agree on who is present. Entries are refreshed by
//! the hub every third of `--presence-ttl-ms`, and swept by every instance
//! with members in the room, so a crashed instance's users leave.
//!
//! Every script touches one room's slot (or one rooms index partition's),
//! so a refresh is many small commands, not one pipeline: a pipeline must
//! stay in one slot on a cluster. They run [`REFRESH_CONCURRENCY`] at a
//! time on the multiplexed connection, which writes them back to back.

use super::keys::{self, Keys, ROOMS_PARTITIONS};
use super::RedisEngine;
use crate::engine::{EngineError, LocalPresence, PresenceStore, RoomsCursor, RoomsPage};
use async_trait::async_trait;
use futures_util::{stream, StreamExt};
use protocol::{RoomInfo, RoomName, User};
use std::future::Future;
use std::sync::atomic::Ordering;

/// Commands of a refresh in flight at once. Few: they share the
/// multiplexed connection with the publishes, which wait behind whatever
/// is in flight on it, and Redis runs a client's pipelined commands in one
/// go, the other instances' publishes waiting meanwhile. At 256 (a script
/// takes ~20 µs) every refresh of a few thousand entries held publishes
/// back by 5 ms and more, the p99 of `make bench-delivery`'s load; at 16 a
/// publish waits ~0.3 ms at most, and 10,000 entries still take well under
/// a second of the refresh's third of a TTL.
const REFRESH_CONCURRENCY: usize = 16;
/// Users swept per script call (each one's hash is a declared key).
const SWEEP_BATCH: usize = 100;

impl RedisEngine {
    /// `lua/instance.lua` with `op` (`claim` or `release`).
    async fn instance_script(&self, op: &str) -> Result<bool, EngineError> {
        let key = self.keys.instance(&self.instance);
        let held: u8 = self
            .commands
            .run(|mut conn| {
                let key = &key;
                async move {
                    self.scripts(&conn)
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
    /// (also the refresh); answers the room's live member count.
    async fn mark_present(&self, room: &RoomName, user: &User) -> Result<u64, EngineError> {
        self.commands
            .run(|mut conn| async move {
                self.scripts(&conn)
                    .presence_join
                    .key(self.keys.users(room))
                    .key(self.keys.names(room))
                    .key(self.keys.user(room, &user.id))
                    .key(self.keys.meta(room))
                    .key(self.keys.log(room))
                    .arg(&user.id)
                    .arg(&self.instance)
                    .arg(self.presence_ttl.as_millis() as u64)
                    .arg(&user.name)
                    .arg(self.keys.channel(room))
                    .arg(self.retention.as_millis() as u64)
                    .invoke_async(&mut conn)
                    .await
            })
            .await
    }

    /// `lua/rooms_index.lua` on partition `p` with `args` (`touch …` or
    /// `expire`).
    async fn rooms_index(&self, p: usize, args: &[String]) -> Result<(), EngineError> {
        let keys = self.keys.rooms_index(p);
        self.commands
            .run(|mut conn| {
                let keys = &keys;
                async move {
                    self.scripts(&conn)
                        .rooms_index
                        .key(&keys[..])
                        .arg(args)
                        .invoke_async::<i64>(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(())
    }

    /// `lua/rooms_index.lua touch`: the room is active for one more TTL
    /// with `members` members (0: it is not), in its partition.
    async fn rooms_touch(&self, room: &RoomName, members: u64) -> Result<(), EngineError> {
        let args = [
            "touch".to_owned(),
            room.as_str().to_owned(),
            (self.presence_ttl.as_millis() as u64).to_string(),
            members.to_string(),
        ];
        self.rooms_index(Keys::rooms_partition(room), &args).await
    }

    /// `lua/presence_sweep.lua` on `room`: its users whose every instance
    /// stopped refreshing leave. Answers the room's live member count.
    async fn sweep(&self, room: &RoomName) -> Result<u64, EngineError> {
        let (count, expired) = self.sweep_look(room, &[]).await?;
        if expired.is_empty() {
            return Ok(count);
        }
        let mut count = count;
        for batch in expired.chunks(SWEEP_BATCH) {
            count = self.sweep_look(room, batch).await?.0;
        }
        Ok(count)
    }

    /// One call of `lua/presence_sweep.lua`: sweeps `users` (none: the
    /// first look) and answers the live count and, on the first look, the
    /// expired users.
    async fn sweep_look(
        &self,
        room: &RoomName,
        users: &[String],
    ) -> Result<(u64, Vec<String>), EngineError> {
        let answer: Vec<redis::Value> = self
            .commands
            .run(|mut conn| async move {
                let mut sweep = self.scripts(&conn).presence_sweep.prepare_invoke();
                sweep
                    .key(self.keys.users(room))
                    .key(self.keys.names(room))
                    .arg(self.keys.channel(room));
                for user in users {
                    sweep.key(self.keys.user(room, user)).arg(user);
                }
                sweep.invoke_async(&mut conn).await
            })
            .await?;
        let mut answer = answer.into_iter();
        let count = answer
            .next()
            .and_then(|v| <u64 as redis::FromRedisValue>::from_redis_value(v).ok())
            .ok_or_else(|| EngineError::Internal("presence sweep: no count".into()))?;
        let expired = answer
            .filter_map(|v| <String as redis::FromRedisValue>::from_redis_value(v).ok())
            .collect();
        Ok((count, expired))
    }

    /// `lua/rooms_index.lua expire` on every partition.
    async fn rooms_expire(&self) -> Result<(), EngineError> {
        let mut failures = Failures::default();
        let expire = ["expire".to_owned()];
        each(&mut failures, 0..ROOMS_PARTITIONS, |p| {
            self.rooms_index(p, &expire)
        })
        .await;
        failures.into_result()
    }
}

/// Runs `op` on every item, [`REFRESH_CONCURRENCY`] at a time, counting
/// the calls and failures; answers what succeeded, by item.
async fn each<I, T, F, Fut>(failures: &mut Failures, items: I, op: F) -> Vec<(I::Item, T)>
where
    I: IntoIterator,
    I::Item: Clone,
    F: Fn(I::Item) -> Fut,
    Fut: Future<Output = Result<T, EngineError>>,
{
    let results: Vec<(I::Item, Result<T, EngineError>)> = stream::iter(items)
        .map(|item| {
            let call = op(item.clone());
            async move { (item, call.await) }
        })
        .buffer_unordered(REFRESH_CONCURRENCY)
        .collect()
        .await;
    let mut done = Vec::with_capacity(results.len());
    for (item, result) in results {
        failures.commands += 1;
        match result {
            Ok(v) => done.push((item, v)),
            Err(e) => {
                failures.failed += 1;
                failures.first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    done
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
        let members = self.mark_present(room, user).await?;
        self.rooms_touch(room, members).await
    }

    async fn leave(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        let members: u64 = self
            .commands
            .run(|mut conn| async move {
                self.scripts(&conn)
                    .presence_leave
                    .key(self.keys.users(room))
                    .key(self.keys.names(room))
                    .key(self.keys.user(room, &user.id))
                    .arg(&user.id)
                    .arg(&self.instance)
                    .arg(self.keys.channel(room))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        self.rooms_touch(room, members).await
    }

    /// Every local user's entry (the join script), then a sweep of every
    /// local room (each answers the room's live member count), then the
    /// rooms index with those counts and its expiry. A failed command does
    /// not stop the others; the error reports how many failed.
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
        let rooms: Vec<&RoomName> = local.iter().map(|e| &e.room).collect();
        let mut failures = Failures::default();
        each(&mut failures, entries, |(room, user)| {
            self.mark_present(room, user)
        })
        .await;
        let counts = each(&mut failures, rooms, |room| self.sweep(room)).await;
        each(&mut failures, counts, |(room, members)| {
            self.rooms_touch(room, members)
        })
        .await;
        if let Err(e) = self.rooms_expire().await {
            failures.failed += 1;
            failures.first.get_or_insert_with(|| e.to_string());
        }
        failures.into_result()
    }

    async fn members(&self, room: &RoomName) -> Result<Vec<User>, EngineError> {
        let flat: Vec<String> = self
            .commands
            .run(|mut conn| async move {
                self.scripts(&conn)
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

    /// One `ZRANGEBYLEX` per rooms index partition (`limit` + 1 entries
    /// past the cursor's), merged.
    async fn rooms(
        &self,
        after: Option<&RoomsCursor>,
        limit: usize,
    ) -> Result<RoomsPage, EngineError> {
        let min = match after {
            None => "-".to_owned(),
            Some(c) => format!("({}", keys::rooms_order_entry(c.members, &c.room)),
        };
        let mut failures = Failures::default();
        let pages = each(&mut failures, 0..ROOMS_PARTITIONS, |p| {
            let (key, min) = (self.keys.rooms_index(p)[1].clone(), &min);
            async move {
                self.commands
                    .run(|mut conn| {
                        let (key, min) = (&key, min);
                        async move {
                            redis::cmd("ZRANGEBYLEX")
                                .arg(key)
                                .arg(min)
                                .arg("+")
                                .arg("LIMIT")
                                .arg(0)
                                .arg(limit + 1)
                                .query_async::<Vec<String>>(&mut conn)
                                .await
                        }
                    })
                    .await
            }
        })
        .await;
        failures.into_result()?;
        let mut entries: Vec<String> = pages.into_iter().flat_map(|(_, page)| page).collect();
        entries.sort_unstable();
        let more = entries.len() > limit;
        let rooms = entries
            .iter()
            .take(limit)
            .filter_map(|e| keys::parse_rooms_order_entry(e))
            .map(|(members, room)| RoomInfo {
                room: room.to_owned(),
                members,
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
