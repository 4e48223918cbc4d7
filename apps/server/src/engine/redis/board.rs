//! The admin view's board on Redis ([`AdminBoard`]): `P:{admin}:instances`,
//! a hash instance id → its last heartbeat ([`InstanceStatus`] JSON), and
//! `P:{admin}:actions`, a stream of [`AdminAction`]s (field `a`, JSON,
//! capped near 1,000 entries). Plain commands that Redis 5 has: `HSET`,
//! `HGETALL`, `HDEL`, `XADD … MAXLEN ~`, `XREVRANGE … COUNT 1` and
//! `XREAD COUNT` without `BLOCK` (non-blocking: every instance reads the
//! stream at its heartbeat). Both keys share the hash tag `{admin}` (one
//! slot on a cluster): a write per instance per second and a rare action.

use super::RedisEngine;
use crate::engine::{fresh_instances, AdminBoard, EngineError};
use async_trait::async_trait;
use protocol::admin::{AdminAction, InstanceStatus};

/// Actions kept in the stream (`MAXLEN ~`: Redis trims by whole nodes, so
/// somewhat more).
const KEPT_ACTIONS: u64 = 1000;

/// Actions read per heartbeat; more wait for the next one.
const ACTIONS_PER_READ: u64 = 100;

type StreamEntries = Vec<(String, Vec<(String, String)>)>;

#[async_trait]
impl AdminBoard for RedisEngine {
    async fn heartbeat(&self, status: &InstanceStatus) -> Result<(), EngineError> {
        let key = self.keys.admin_instances();
        let json = serde_json::to_string(status).expect("a status serialises");
        self.commands
            .run(|mut conn| {
                let (key, json) = (&key, &json);
                async move {
                    redis::cmd("HSET")
                        .arg(key)
                        .arg(&status.id)
                        .arg(json)
                        .query_async::<i64>(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(())
    }

    async fn instances(&self, now_ms: i64) -> Result<Vec<InstanceStatus>, EngineError> {
        let key = self.keys.admin_instances();
        let all: Vec<(String, String)> = self
            .commands
            .run(|mut conn| {
                let key = &key;
                async move { redis::cmd("HGETALL").arg(key).query_async(&mut conn).await }
            })
            .await?;
        let parsed = all.into_iter().filter_map(|(id, json)| {
            serde_json::from_str::<InstanceStatus>(&json)
                .map_err(|e| tracing::warn!(instance = %id, error = %e, "unreadable heartbeat"))
                .ok()
        });
        let (fresh, stale) = fresh_instances(parsed, now_ms);
        if !stale.is_empty() {
            self.commands
                .run(|mut conn| {
                    let (key, stale) = (&key, &stale);
                    async move {
                        redis::cmd("HDEL")
                            .arg(key)
                            .arg(stale)
                            .query_async::<i64>(&mut conn)
                            .await
                    }
                })
                .await?;
        }
        Ok(fresh)
    }

    async fn post_action(&self, action: &AdminAction) -> Result<(), EngineError> {
        let key = self.keys.admin_actions();
        let json = serde_json::to_string(action).expect("an action serialises");
        self.commands
            .run(|mut conn| {
                let (key, json) = (&key, &json);
                async move {
                    redis::cmd("XADD")
                        .arg(key)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(KEPT_ACTIONS)
                        .arg("*")
                        .arg("a")
                        .arg(json)
                        .query_async::<String>(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(())
    }

    async fn actions(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<AdminAction>, String), EngineError> {
        let key = self.keys.admin_actions();
        let Some(cursor) = cursor else {
            // From now: the newest entry's id, or before every id.
            let newest: StreamEntries = self
                .commands
                .run(|mut conn| {
                    let key = &key;
                    async move {
                        redis::cmd("XREVRANGE")
                            .arg(key)
                            .arg("+")
                            .arg("-")
                            .arg("COUNT")
                            .arg(1)
                            .query_async(&mut conn)
                            .await
                    }
                })
                .await?;
            let id = newest
                .into_iter()
                .next()
                .map_or("0-0".to_owned(), |(id, _)| id);
            return Ok((Vec::new(), id));
        };
        // XREAD answers nil when nothing is newer.
        let read: Option<Vec<(String, StreamEntries)>> = self
            .commands
            .run(|mut conn| {
                let key = &key;
                async move {
                    redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(ACTIONS_PER_READ)
                        .arg("STREAMS")
                        .arg(key)
                        .arg(cursor)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        let entries = read
            .into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .collect::<Vec<_>>();
        let next = entries
            .last()
            .map_or(cursor.to_owned(), |(id, _)| id.clone());
        let actions = entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let json = fields.into_iter().find(|(f, _)| f == "a")?.1;
                serde_json::from_str(&json)
                    .map_err(|e| tracing::warn!(entry = %id, error = %e, "unreadable admin action"))
                    .ok()
            })
            .collect();
        Ok((actions, next))
    }
}
