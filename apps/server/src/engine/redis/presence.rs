//! The Redis engine as a [`PresenceStore`]: a user is present in a room
//! while any instance holds an unexpired entry for it. Entries are scored
//! by expiry on this instance's clock (`lua/presence_*.lua`), refreshed by
//! the hub every third of `--presence-ttl-ms`, and swept by every instance
//! with members in the room, so a crashed instance's users leave.

use super::RedisEngine;
use crate::engine::{now_ms, EngineError, LocalPresence, PresenceStore};
use async_trait::async_trait;
use protocol::{RoomInfo, RoomName, User};
use redis::AsyncCommands;

impl RedisEngine {
    /// Marks `user` present in `room` through this instance for one TTL
    /// (also the refresh), and the room active in the rooms index.
    async fn mark_present(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        let now = now_ms();
        let expiry = now + self.presence_ttl.as_millis() as i64;
        self.commands
            .run(|mut conn| async move {
                let _: i64 = self
                    .scripts
                    .presence_join
                    .key(self.keys.users(room))
                    .key(self.keys.names(room))
                    .key(self.keys.user(room, &user.id))
                    .arg(&user.id)
                    .arg(&self.instance)
                    .arg(expiry)
                    .arg(now)
                    .arg(&user.name)
                    .arg(self.keys.channel(room))
                    .invoke_async(&mut conn)
                    .await?;
                redis::cmd("ZADD")
                    .arg(self.keys.rooms())
                    .arg("GT")
                    .arg(expiry)
                    .arg(room.as_str())
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await?;
        Ok(())
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
                self.scripts
                    .presence_leave
                    .key(self.keys.users(room))
                    .key(self.keys.names(room))
                    .key(self.keys.user(room, &user.id))
                    .arg(&user.id)
                    .arg(&self.instance)
                    .arg(now_ms())
                    .arg(self.keys.channel(room))
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn refresh(&self, local: &[LocalPresence]) -> Result<(), EngineError> {
        for entry in local {
            for user in &entry.users {
                self.mark_present(&entry.room, user).await?;
            }
        }
        let now = now_ms();
        for LocalPresence { room, .. } in local {
            self.commands
                .run(|mut conn| async move {
                    self.scripts
                        .presence_sweep
                        .key(self.keys.users(room))
                        .key(self.keys.names(room))
                        .arg(now)
                        .arg(self.keys.user_prefix(room))
                        .arg(self.keys.channel(room))
                        .invoke_async::<i64>(&mut conn)
                        .await
                })
                .await?;
        }
        self.commands
            .run(|mut conn| async move {
                conn.zrembyscore::<_, _, _, i64>(self.keys.rooms(), "-inf", now)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn members(&self, room: &RoomName) -> Result<Vec<User>, EngineError> {
        let (ids, names): (Vec<String>, Vec<Option<String>>) = self
            .commands
            .run(|mut conn| async move {
                let ids: Vec<String> = conn
                    .zrangebyscore(self.keys.users(room), now_ms(), "+inf")
                    .await?;
                if ids.is_empty() {
                    return Ok((ids, Vec::new()));
                }
                let names = redis::cmd("HMGET")
                    .arg(self.keys.names(room))
                    .arg(&ids)
                    .query_async(&mut conn)
                    .await?;
                Ok((ids, names))
            })
            .await?;
        Ok(ids
            .into_iter()
            .zip(names)
            .map(|(id, name)| User {
                id,
                name: name.unwrap_or_default(),
            })
            .collect())
    }

    async fn rooms(&self) -> Result<Vec<RoomInfo>, EngineError> {
        let now = now_ms();
        let counted: Vec<(String, u64)> = self
            .commands
            .run(|mut conn| async move {
                let names: Vec<String> = conn.zrangebyscore(self.keys.rooms(), now, "+inf").await?;
                let mut counted = Vec::with_capacity(names.len());
                for name in names {
                    let Ok(room) = RoomName::parse(&name) else {
                        continue;
                    };
                    let members: u64 = conn.zcount(self.keys.users(&room), now, "+inf").await?;
                    counted.push((name, members));
                }
                Ok(counted)
            })
            .await?;
        Ok(counted
            .into_iter()
            .filter(|(_, members)| *members > 0)
            .map(|(room, members)| RoomInfo { room, members })
            .collect())
    }
}
