//! The Redis engine as a [`Broker`]: publish through `lua/publish.lua`,
//! history from the room's stream (`XRANGE`, `XREVRANGE`), typing notices
//! on the room's channel, subscriptions through the pub/sub task.

use super::RedisEngine;
use crate::engine::{new_epoch_digits, Broker, EngineError, Position, Publication, Published};
use async_trait::async_trait;
use protocol::{ChatMessage, RoomName, User};
use redis::streams::StreamRangeReply;
use redis::AsyncCommands;
use std::sync::Arc;

#[async_trait]
impl Broker for RedisEngine {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn publish(
        &self,
        room: &RoomName,
        msg: Publication,
        seen: Option<&Position>,
    ) -> Result<Published, EngineError> {
        let (seen_epoch, seen_offset) = seen.map_or(("", 0), |p| (&*p.epoch, p.offset));
        let dedupe = self.keys.dedupe(room, &msg.from.id, &msg.client_id);
        let stored = msg.to_json();
        if self.archive.is_some() {
            Box::pin(self.mark_before_publish(room)).await?;
        }
        let published = self
            .restoring(room, || async {
                let (epoch, offset, duplicate): (String, u64, u8) = self
                    .commands
                    .run(|mut conn| {
                        let (dedupe, stored) = (&dedupe, &stored);
                        async move {
                            // The hottest command: built in one buffer
                            // (see `evalsha`).
                            let script = &self.scripts(&conn).publish;
                            // 3 keys, 9 arguments; the keys and the
                            // channel are about as long as the dedupe key.
                            let bytes = dedupe.len() * 4 + stored.len() + seen_epoch.len() + 80;
                            let mut cmd = super::evalsha(script, 3, 12, bytes);
                            cmd.arg(self.keys.meta(room))
                                .arg(self.keys.log(room))
                                .arg(dedupe)
                                .arg(self.keys.channel(room))
                                .arg(new_epoch_digits().as_str())
                                .arg(self.history_cap)
                                // A forgotten room forgets its dedupe keys too.
                                .arg(
                                    protocol::limits::DEDUPE_WINDOW_SECS
                                        .min(self.retention.as_secs().max(1)),
                                )
                                .arg(stored)
                                .arg(seen_epoch)
                                .arg(seen_offset)
                                .arg(self.retention.as_millis() as u64)
                                .arg(self.archive_flag());
                            super::run_script(&mut conn, script, &cmd).await
                        }
                    })
                    .await?;
                Ok((!epoch.is_empty()).then(|| Published {
                    epoch: Arc::from(epoch),
                    offset,
                    duplicate: duplicate == 1,
                }))
            })
            .await?;
        if let (Some(link), false) = (&self.archive, published.duplicate) {
            // Held against a wipe before the channel brings it back (if it
            // does).
            let message = msg.into_message(room, published.offset);
            link.tail.record(room, &published.epoch, message);
            link.published(room);
        }
        Ok(published)
    }

    async fn position(&self, room: &RoomName) -> Result<Position, EngineError> {
        self.restoring(room, || async {
            let (epoch, offset): (String, u64) = self
                .commands
                .run(|mut conn| async move {
                    self.scripts(&conn)
                        .position
                        .key(self.keys.meta(room))
                        .key(self.keys.log(room))
                        .arg(new_epoch_digits().as_str())
                        .arg(self.retention.as_millis() as u64)
                        .arg(self.presence_ttl.as_millis() as u64)
                        .arg(self.archive_flag())
                        .invoke_async(&mut conn)
                        .await
                })
                .await?;
            Ok((!epoch.is_empty()).then(|| Position {
                epoch: Arc::from(epoch),
                offset,
            }))
        })
        .await
    }

    async fn reset_epoch(&self, room: &RoomName, lost: &str) -> Result<(), EngineError> {
        let changed: u8 = self
            .commands
            .run(|mut conn| async move {
                self.scripts(&conn)
                    .reset_epoch
                    .key(self.keys.meta(room))
                    .arg(lost)
                    .arg(new_epoch_digits().as_str())
                    .arg(self.keys.channel(room))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        if changed == 1 {
            tracing::warn!(room = %room, lost, "the store lost messages of the room; it has a new epoch");
        }
        Ok(())
    }

    async fn range(
        &self,
        room: &RoomName,
        after: u64,
        upto: u64,
    ) -> Result<Vec<ChatMessage>, EngineError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let reply: StreamRangeReply = self
            .commands
            .run(|mut conn| async move {
                conn.xrange(
                    self.keys.log(room),
                    format!("{}-0", after + 1),
                    format!("{upto}-0"),
                )
                .await
            })
            .await?;
        let held = parse_entries(room, reply)?;
        // Older than the stream: in the archive, which holds every message
        // the stream dropped.
        crate::engine::range_through(self.archived_in(), room, after, upto, held).await
    }

    async fn before(
        &self,
        room: &RoomName,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, EngineError> {
        if before <= 1 || limit == 0 {
            return Ok(Vec::new());
        }
        let reply: StreamRangeReply = self
            .commands
            .run(|mut conn| async move {
                conn.xrevrange_count(self.keys.log(room), format!("{}-0", before - 1), "-", limit)
                    .await
            })
            .await?;
        let mut held = parse_entries(room, reply)?;
        held.reverse();
        crate::engine::before_through(self.archived_in(), room, before, limit, held).await
    }

    async fn subscribe(&self, room: &RoomName) -> Result<(), EngineError> {
        // Held from before the subscription answers: nothing it brings
        // is missed.
        if let Some(link) = &self.archive {
            link.tail.subscribed(room);
        }
        let result = self.pubsub.subscribe(self.keys.channel(room)).await;
        if let (Some(link), Err(_)) = (&self.archive, &result) {
            link.tail.unsubscribed(room);
        }
        result
    }

    async fn unsubscribe(&self, room: &RoomName) {
        self.pubsub.unsubscribe(self.keys.channel(room)).await;
        if let Some(link) = &self.archive {
            link.tail.unsubscribed(room);
        }
    }

    async fn typing(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        let payload = format!(
            "t {}",
            serde_json::to_string(user).map_err(|e| EngineError::Internal(e.to_string()))?
        );
        self.commands
            .run(|mut conn| {
                let payload = &payload;
                async move {
                    redis::cmd(conn.mode().publish_command())
                        .arg(self.keys.channel(room))
                        .arg(payload)
                        .query_async::<i64>(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(())
    }

    /// A write of every kind the server makes, not a PING: a replica (a
    /// demoted primary after a failover or `REPLICAOF`) answers PING but
    /// refuses every publish with READONLY, and an ACL user missing a
    /// command or key permission answers NOPERM only when that command
    /// runs. `lua/probe.lua` runs each command the scripts run; the reads
    /// made outside scripts follow; the pub/sub connection must be up (and
    /// subscribed to the probe channel). A failure is logged once per
    /// distinct reason, naming it (Redis's NOPERM names the command).
    async fn reachable(&self) -> Result<(), EngineError> {
        let result = self.probe().await.map_err(name_the_command);
        let reason = result.as_ref().err().map(|e| e.to_string());
        let mut last = self.last_probe.lock().expect("probe lock");
        if *last != reason {
            match &reason {
                Some(r) if r.contains(PERMISSION) || r.contains("NOPERM") => tracing::error!(
                    reason = %r,
                    "the Redis user lacks a permission the server needs: not ready until it is granted"
                ),
                Some(r) => tracing::warn!(reason = %r, "not ready: the store cannot take writes"),
                None => tracing::info!("ready: the store takes writes again"),
            }
            *last = reason;
        }
        result
    }
}

/// Publishes and position reads that find the room gone restore it at
/// most this often before giving up.
const RESTORE_TRIES: usize = 3;

impl RedisEngine {
    /// Runs `op` (a script that, with an archive, answers `None` when the
    /// store has no epoch for `room` instead of making one); on `None`,
    /// restores the room from the archive ([`RedisEngine::restore`]) and
    /// runs it again, up to [`RESTORE_TRIES`] times (the store may be
    /// wiped again meanwhile). Errors: `op`'s or the restore's, or
    /// `Unavailable` when every try found the room gone.
    async fn restoring<T, F, Fut>(&self, room: &RoomName, op: F) -> Result<T, EngineError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, EngineError>>,
    {
        for _ in 0..RESTORE_TRIES {
            if let Some(done) = op().await? {
                return Ok(done);
            }
            // Boxed: rare, and inline it would size every publish's future.
            Box::pin(self.restore(room)).await?;
        }
        Err(EngineError::Unavailable(format!(
            "the store lost room {room} again after each of {RESTORE_TRIES} restores"
        )))
    }

    /// The archive behind the streams, if any.
    fn archived_in(&self) -> Option<&crate::archive::Archive> {
        self.archive.as_ref().map(|link| &link.archive)
    }

    /// The scripts' archive argument: `1` with an archive.
    fn archive_flag(&self) -> u8 {
        u8::from(self.archive.is_some())
    }

    async fn probe(&self) -> Result<(), EngineError> {
        if self.id_taken.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(EngineError::Internal(format!(
                "another live instance uses the instance id {}",
                self.instance
            )));
        }
        let keys = self.keys.probe(&self.instance);
        let channel = self.keys.probe_channel(&self.instance);
        self.commands
            .run(|mut conn| {
                let (keys, channel) = (&keys, &channel);
                async move {
                    let _now: i64 = self
                        .scripts(&conn)
                        .probe
                        .key(&keys[..])
                        .arg(channel)
                        .arg(self.archive_flag())
                        .invoke_async(&mut conn)
                        .await?;
                    if self.archive.is_some() {
                        // Refused in scripts by Redis 5 (lua/probe.lua).
                        redis::cmd("XREADGROUP")
                            .arg("GROUP")
                            .arg(super::archiver::GROUP)
                            .arg("probe")
                            .arg("COUNT")
                            .arg(1)
                            .arg("STREAMS")
                            .arg(&keys[4])
                            .arg(">")
                            .query_async::<()>(&mut conn)
                            .await?;
                    }
                    redis::pipe()
                        .cmd("XRANGE")
                        .arg(&keys[2])
                        .arg("-")
                        .arg("+")
                        .arg("COUNT")
                        .arg(1)
                        .ignore()
                        .cmd("XREVRANGE")
                        .arg(&keys[2])
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .ignore()
                        .cmd("ZCOUNT")
                        .arg(&keys[3])
                        .arg(0)
                        .arg("+inf")
                        .ignore()
                        .cmd("ZRANGEBYSCORE")
                        .arg(&keys[3])
                        .arg(0)
                        .arg("+inf")
                        .ignore()
                        .cmd("ZRANGEBYLEX")
                        .arg(&keys[3])
                        .arg("-")
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(1)
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await
                }
            })
            .await?;
        self.pubsub.connected()
    }
}

/// Stream entries (id `<offset>-0`, field `m`) as messages of `room`.
fn parse_entries(
    room: &RoomName,
    reply: StreamRangeReply,
) -> Result<Vec<ChatMessage>, EngineError> {
    reply
        .ids
        .into_iter()
        .map(|entry| super::stream_message(room, &entry.id, entry.get::<String>("m").as_deref()))
        .collect()
}

/// How [`name_the_command`] starts its message.
const PERMISSION: &str = "the Redis user may not run";

/// A probe error that happened inside `lua/probe.lua` names its script line
/// (`@user_script:<line>`) but, on Redis 7.0, not the command the ACL
/// refused ("The user executing the script can't run this command"): the
/// line of the probe script tells which command it was.
fn name_the_command(e: EngineError) -> EngineError {
    let EngineError::Unavailable(text) = &e else {
        return e;
    };
    let refused = text.contains("can't run this command")
        || text.contains("can't access")
        || text.contains("NOPERM")
        || text.contains("NoPerm");
    let line = text.split_once("@user_script:").and_then(|(_, rest)| {
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<usize>()
            .ok()
    });
    let command = line.and_then(|n| {
        let source = include_str!("lua/probe.lua")
            .lines()
            .nth(n.checked_sub(1)?)?;
        let (_, call) = source.split_once("redis.call('")?;
        Some(call.split_once('\'')?.0.to_owned())
    });
    match (refused, command) {
        (true, Some(command)) => EngineError::Unavailable(format!(
            "{PERMISSION} {command} (or reach its keys or channel): {text}"
        )),
        _ => e,
    }
}
