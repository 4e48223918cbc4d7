//! The Redis engine as a [`Broker`]: publish through `lua/publish.lua`,
//! history from the room's stream (`XRANGE`, `XREVRANGE`), typing notices
//! on the room's channel, subscriptions through the pub/sub task.

use super::RedisEngine;
use crate::engine::{new_epoch, now_ms, Broker, EngineError, Position, Publication, Published};
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
        let stored =
            serde_json::to_string(&msg).map_err(|e| EngineError::Internal(e.to_string()))?;
        let (epoch, offset, duplicate): (String, u64, u8) = self
            .commands
            .run(|mut conn| {
                let (dedupe, stored) = (&dedupe, &stored);
                async move {
                    self.scripts
                        .publish
                        .key(self.keys.meta(room))
                        .key(self.keys.log(room))
                        .key(dedupe)
                        .arg(self.keys.channel(room))
                        .arg(&*new_epoch())
                        .arg(self.history_cap)
                        .arg(protocol::limits::DEDUPE_WINDOW_SECS)
                        .arg(stored)
                        .arg(seen_epoch)
                        .arg(seen_offset)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(Published {
            epoch: Arc::from(epoch),
            offset,
            duplicate: duplicate == 1,
        })
    }

    async fn position(&self, room: &RoomName) -> Result<Position, EngineError> {
        let (epoch, offset): (String, u64) = self
            .commands
            .run(|mut conn| async move {
                self.scripts
                    .position
                    .key(self.keys.meta(room))
                    .key(self.keys.log(room))
                    .arg(&*new_epoch())
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(Position {
            epoch: Arc::from(epoch),
            offset,
        })
    }

    async fn reset_epoch(&self, room: &RoomName, lost: &str) -> Result<(), EngineError> {
        let changed: u8 = self
            .commands
            .run(|mut conn| async move {
                self.scripts
                    .reset_epoch
                    .key(self.keys.meta(room))
                    .arg(lost)
                    .arg(&*new_epoch())
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
        parse_entries(room, reply)
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
        let mut messages = parse_entries(room, reply)?;
        messages.reverse();
        Ok(messages)
    }

    async fn subscribe(&self, room: &RoomName) -> Result<(), EngineError> {
        self.pubsub.subscribe(self.keys.channel(room)).await
    }

    async fn unsubscribe(&self, room: &RoomName) {
        self.pubsub.unsubscribe(self.keys.channel(room)).await
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
                    conn.publish::<_, _, i64>(self.keys.channel(room), payload)
                        .await
                }
            })
            .await?;
        Ok(())
    }

    /// A write, not a PING: a replica (a demoted primary after a failover
    /// or `REPLICAOF`) answers PING but refuses every publish with
    /// READONLY, and an instance that cannot write must not report ready.
    async fn reachable(&self) -> Result<(), EngineError> {
        let key = self.keys.probe(&self.instance);
        self.commands
            .run(|mut conn| {
                let key = &key;
                async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(now_ms())
                        .arg("PX")
                        .arg(60_000)
                        .query_async::<()>(&mut conn)
                        .await
                }
            })
            .await
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
        .map(|entry| {
            let offset = entry
                .id
                .split_once('-')
                .and_then(|(ms, _)| ms.parse::<u64>().ok())
                .ok_or_else(|| EngineError::Internal(format!("bad stream id {}", entry.id)))?;
            let json: String = entry
                .get("m")
                .ok_or_else(|| EngineError::Internal("stream entry without m".into()))?;
            let publication: Publication = serde_json::from_str(&json)
                .map_err(|e| EngineError::Internal(format!("stored message: {e}")))?;
            Ok(publication.into_message(room, offset))
        })
        .collect()
}
