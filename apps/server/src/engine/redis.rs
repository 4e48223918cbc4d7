//! The Redis/Valkey engine: many instances, one chat.
//!
//! Layout, per room `R` under prefix `P` (every key and the channel of a
//! room share the hash tag `{R}`, so a room lives in one Redis Cluster slot):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:{R}:meta` | hash | `epoch`, `offset` (latest) |
//! | `P:{R}:log` | stream | the history, entry id `<offset>-0`, field `m` = message JSON, capped |
//! | `P:{R}:d:<user>:<client id>` | string | offset of a published (user, client id), expires |
//! | `P:{R}:users` | zset | user id → latest expiry of its presence (ms) |
//! | `P:{R}:names` | hash | user id → display name |
//! | `P:{R}:u:<user>` | hash | instance → expiry of that instance's presence entry |
//! | `P:{R}:ch` | channel | `m <epoch> <offset> <json>`, `t <user json>`, `p j|l <user id> <name>` |
//! | `P:rooms` | zset | room → latest presence expiry (for the rooms list) |
//!
//! Publishing is one Lua script (`lua/publish.lua`): dedupe, next offset,
//! append, PUBLISH, atomically. One pub/sub connection per instance carries
//! the channels of rooms with local members; it is pinged, and re-made with
//! backoff when it dies, after which the hub is told to [`EngineEvent::Resync`]
//! (catch every room up from the stream). Presence entries are refreshed
//! while local members are connected, so a crashed instance's users expire.
//!
//! Owns the Redis connections and the key layout. Does not own ordering of
//! delivery (the hub repairs gaps through [`Engine::range`]).

use super::memory::new_epoch;
use super::{Engine, EngineError, EngineEvent, NewMessage, Position, Published};
use crate::config::RedisConfig;
use async_trait::async_trait;
use futures_util::StreamExt;
use protocol::{ChatMessage, RoomInfo, RoomName, User};
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, Client, Script};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, OnceCell};
use tokio_util::sync::CancellationToken;

/// How long one Redis command may take before the store counts as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the pub/sub connection is pinged; an idle subscription can die
/// silently behind proxies.
const PUBSUB_PING_EVERY: Duration = Duration::from_secs(5);
/// Backoff bounds between pub/sub reconnects.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A message as stored in the stream and carried on the channel: the offset
/// is the stream entry id, not part of the JSON. Server-internal.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    id: String,
    client_id: String,
    from: User,
    body: String,
    ts: i64,
}

impl Stored {
    fn into_message(self, room: &RoomName, offset: u64) -> ChatMessage {
        ChatMessage {
            room: room.as_str().to_owned(),
            offset,
            id: self.id,
            client_id: self.client_id,
            from: self.from,
            body: self.body,
            ts: self.ts,
        }
    }
}

/// Key names of one deployment.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn room(&self, room: &RoomName, what: &str) -> String {
        format!("{}:{{{}}}:{what}", self.prefix, room.as_str())
    }
    fn meta(&self, room: &RoomName) -> String {
        self.room(room, "meta")
    }
    fn log(&self, room: &RoomName) -> String {
        self.room(room, "log")
    }
    fn channel(&self, room: &RoomName) -> String {
        self.room(room, "ch")
    }
    fn users(&self, room: &RoomName) -> String {
        self.room(room, "users")
    }
    fn names(&self, room: &RoomName) -> String {
        self.room(room, "names")
    }
    fn user_prefix(&self, room: &RoomName) -> String {
        self.room(room, "u:")
    }
    fn user(&self, room: &RoomName, user_id: &str) -> String {
        format!("{}{user_id}", self.user_prefix(room))
    }
    fn dedupe(&self, room: &RoomName, user_id: &str, client_id: &str) -> String {
        format!(
            "{}:{{{}}}:d:{user_id}:{client_id}",
            self.prefix,
            room.as_str()
        )
    }
    fn rooms(&self) -> String {
        format!("{}:rooms", self.prefix)
    }
    /// The room of a channel name, if it is one of ours.
    fn room_of_channel(&self, channel: &str) -> Option<RoomName> {
        let inner = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:ch")?;
        RoomName::parse(inner).ok()
    }
}

struct Scripts {
    publish: Script,
    position: Script,
    presence_join: Script,
    presence_leave: Script,
    presence_sweep: Script,
}

/// A request to the pub/sub task.
enum SubCmd {
    Subscribe(String, oneshot::Sender<Result<(), EngineError>>),
    Unsubscribe(String),
}

/// The Redis engine.
pub struct RedisEngine {
    client: Client,
    /// Made on first use, so an instance starts (and reports not ready)
    /// while Redis is down. The manager reconnects by itself afterwards.
    conn: OnceCell<ConnectionManager>,
    keys: Keys,
    scripts: Scripts,
    instance: String,
    history_cap: usize,
    presence_ttl: Duration,
    /// Subscription counts per room (see [`Engine::subscribe`]).
    subs: Mutex<HashMap<RoomName, usize>>,
    sub_tx: mpsc::Sender<SubCmd>,
    /// Users present through this instance, refreshed periodically.
    local_presence: Mutex<HashMap<(RoomName, String), User>>,
}

impl RedisEngine {
    /// Builds the engine and starts its pub/sub and presence tasks, which
    /// end when `stop` is cancelled. Does not need Redis to be up.
    pub fn start(
        config: &RedisConfig,
        instance: String,
        history_cap: usize,
        presence_ttl: Duration,
        events: mpsc::Sender<EngineEvent>,
        stop: CancellationToken,
    ) -> Result<Arc<RedisEngine>, EngineError> {
        let client = match &config.ca_cert {
            None => Client::open(config.url.as_str()),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    EngineError::Internal(format!("reading {}: {e}", path.display()))
                })?;
                Client::build_with_tls(
                    config.url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
        }
        .map_err(|e| EngineError::Internal(format!("invalid Redis URL: {e}")))?;
        if config.key_prefix.contains(['{', '}']) {
            return Err(EngineError::Internal(
                "the Redis key prefix may not contain braces".into(),
            ));
        }
        let (sub_tx, sub_rx) = mpsc::channel(1024);
        let engine = Arc::new(RedisEngine {
            client,
            conn: OnceCell::new(),
            keys: Keys {
                prefix: config.key_prefix.clone(),
            },
            scripts: Scripts {
                publish: Script::new(include_str!("lua/publish.lua")),
                position: Script::new(include_str!("lua/position.lua")),
                presence_join: Script::new(include_str!("lua/presence_join.lua")),
                presence_leave: Script::new(include_str!("lua/presence_leave.lua")),
                presence_sweep: Script::new(include_str!("lua/presence_sweep.lua")),
            },
            instance,
            history_cap,
            presence_ttl,
            subs: Mutex::new(HashMap::new()),
            sub_tx,
            local_presence: Mutex::new(HashMap::new()),
        });
        tokio::spawn(pubsub_task(
            engine.client.clone(),
            engine.keys.clone(),
            sub_rx,
            events,
            stop.clone(),
        ));
        tokio::spawn(presence_task(Arc::downgrade(&engine), stop));
        Ok(engine)
    }

    async fn conn(&self) -> Result<ConnectionManager, EngineError> {
        self.conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_with_config(self.client.clone(), config)
                    .await
                    .map_err(unavailable)
            })
            .await
            .cloned()
    }

    /// Runs `op` on the shared connection; once more when the connection
    /// turned out to be dead (Redis restarted while it was idle: the first
    /// command fails, then the manager reconnects). Safe for every command
    /// here: reads are idempotent, and a publish that did run the first time
    /// is answered as a duplicate with its offset the second time.
    async fn with_conn<T, F, Fut>(&self, op: F) -> Result<T, EngineError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match op(self.conn().await?).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                tracing::debug!(error = %e, "redis command failed on a dead connection; retrying once");
                op(self.conn().await?).await.map_err(unavailable)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    fn now_ms() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default()
    }

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
                let stored: Stored = serde_json::from_str(&json)
                    .map_err(|e| EngineError::Internal(format!("stored message: {e}")))?;
                Ok(stored.into_message(room, offset))
            })
            .collect()
    }

    async fn join_presence(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        let now = Self::now_ms();
        let expiry = now + self.presence_ttl.as_millis() as i64;
        self.with_conn(|mut conn| async move {
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

    /// Refreshes this instance's presence entries and sweeps expired users
    /// of the rooms it is subscribed to.
    async fn refresh_presence(&self) -> Result<(), EngineError> {
        let entries: Vec<(RoomName, User)> = {
            let local = self.local_presence.lock().expect("presence lock");
            local
                .iter()
                .map(|((room, _), user)| (room.clone(), user.clone()))
                .collect()
        };
        for (room, user) in &entries {
            self.join_presence(room, user).await?;
        }
        let rooms: Vec<RoomName> = {
            let subs = self.subs.lock().expect("subs lock");
            subs.keys().cloned().collect()
        };
        let now = Self::now_ms();
        for room in &rooms {
            self.with_conn(|mut conn| async move {
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
        self.with_conn(|mut conn| async move {
            conn.zrembyscore::<_, _, _, i64>(self.keys.rooms(), "-inf", now)
                .await
        })
        .await?;
        Ok(())
    }
}

fn unavailable(e: redis::RedisError) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

#[async_trait]
impl Engine for RedisEngine {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, room: &RoomName, msg: NewMessage) -> Result<Published, EngineError> {
        let dedupe = self.keys.dedupe(room, &msg.from.id, &msg.client_id);
        let stored = serde_json::to_string(&Stored {
            id: msg.id,
            client_id: msg.client_id,
            from: msg.from,
            body: msg.body,
            ts: msg.ts,
        })
        .map_err(|e| EngineError::Internal(e.to_string()))?;
        let (epoch, offset, duplicate): (String, u64, u8) = self
            .with_conn(|mut conn| {
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
            .with_conn(|mut conn| async move {
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
            .with_conn(|mut conn| async move {
                conn.xrange(
                    self.keys.log(room),
                    format!("{}-0", after + 1),
                    format!("{upto}-0"),
                )
                .await
            })
            .await?;
        Self::parse_entries(room, reply)
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
            .with_conn(|mut conn| async move {
                conn.xrevrange_count(self.keys.log(room), format!("{}-0", before - 1), "-", limit)
                    .await
            })
            .await?;
        let mut messages = Self::parse_entries(room, reply)?;
        messages.reverse();
        Ok(messages)
    }

    async fn subscribe(&self, room: &RoomName) -> Result<(), EngineError> {
        let first = {
            let mut subs = self.subs.lock().expect("subs lock");
            let n = subs.entry(room.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if !first {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let result = async {
            self.sub_tx
                .send(SubCmd::Subscribe(self.keys.channel(room), tx))
                .await
                .map_err(|_| EngineError::Internal("pub/sub task stopped".into()))?;
            match tokio::time::timeout(COMMAND_TIMEOUT * 2, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(EngineError::Internal("pub/sub task stopped".into())),
                Err(_) => Err(EngineError::Unavailable("subscribe timed out".into())),
            }
        }
        .await;
        if result.is_err() {
            // Undo the count so a later subscribe tries again.
            let mut subs = self.subs.lock().expect("subs lock");
            if let Some(n) = subs.get_mut(room) {
                *n -= 1;
                if *n == 0 {
                    subs.remove(room);
                }
            }
        }
        result
    }

    async fn unsubscribe(&self, room: &RoomName) -> Result<(), EngineError> {
        let last = {
            let mut subs = self.subs.lock().expect("subs lock");
            match subs.get_mut(room) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    subs.remove(room);
                    true
                }
                None => false,
            }
        };
        // A stopped pub/sub task (the instance is shutting down) holds no
        // subscription any more: there is nothing to undo.
        if last
            && self
                .sub_tx
                .send(SubCmd::Unsubscribe(self.keys.channel(room)))
                .await
                .is_err()
        {
            tracing::debug!(room = %room, "pub/sub task stopped; nothing to unsubscribe");
        }
        Ok(())
    }

    async fn presence_join(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        self.local_presence
            .lock()
            .expect("presence lock")
            .insert((room.clone(), user.id.clone()), user.clone());
        self.join_presence(room, user).await
    }

    async fn presence_leave(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        self.local_presence
            .lock()
            .expect("presence lock")
            .remove(&(room.clone(), user.id.clone()));
        self.with_conn(|mut conn| async move {
            self.scripts
                .presence_leave
                .key(self.keys.users(room))
                .key(self.keys.names(room))
                .key(self.keys.user(room, &user.id))
                .arg(&user.id)
                .arg(&self.instance)
                .arg(Self::now_ms())
                .arg(self.keys.channel(room))
                .invoke_async::<i64>(&mut conn)
                .await
        })
        .await?;
        Ok(())
    }

    async fn members(&self, room: &RoomName) -> Result<Vec<User>, EngineError> {
        let (ids, names): (Vec<String>, Vec<Option<String>>) = self
            .with_conn(|mut conn| async move {
                let ids: Vec<String> = conn
                    .zrangebyscore(self.keys.users(room), Self::now_ms(), "+inf")
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

    async fn typing(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        let payload = format!(
            "t {}",
            serde_json::to_string(user).map_err(|e| EngineError::Internal(e.to_string()))?
        );
        self.with_conn(|mut conn| {
            let payload = &payload;
            async move {
                conn.publish::<_, _, i64>(self.keys.channel(room), payload)
                    .await
            }
        })
        .await?;
        Ok(())
    }

    async fn rooms(&self) -> Result<Vec<RoomInfo>, EngineError> {
        let now = Self::now_ms();
        let counted: Vec<(String, u64)> = self
            .with_conn(|mut conn| async move {
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

    async fn ready(&self) -> Result<(), EngineError> {
        self.with_conn(|mut conn| async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await?;
        Ok(())
    }
}

/// Parses a channel payload into an event.
fn parse_payload(room: RoomName, payload: &str) -> Option<EngineEvent> {
    let (kind, rest) = payload.split_once(' ')?;
    match kind {
        "m" => {
            let (epoch, rest) = rest.split_once(' ')?;
            let (offset, json) = rest.split_once(' ')?;
            let offset: u64 = offset.parse().ok()?;
            let stored: Stored = serde_json::from_str(json).ok()?;
            Some(EngineEvent::Message {
                message: stored.into_message(&room, offset),
                room,
                epoch: Arc::from(epoch),
            })
        }
        "t" => Some(EngineEvent::Typing {
            room,
            user: serde_json::from_str(rest).ok()?,
        }),
        "p" => {
            let (dir, rest) = rest.split_once(' ')?;
            let (id, name) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(EngineEvent::Presence {
                room,
                user: User {
                    id: id.to_owned(),
                    name: name.to_owned(),
                },
                joined: dir == "j",
            })
        }
        _ => None,
    }
}

/// Owns the pub/sub connection: keeps it subscribed to the wanted channels,
/// forwards what arrives to the hub, pings it, and re-makes it with backoff
/// when it dies (then asks the hub to resync, as events may have been lost).
async fn pubsub_task(
    client: Client,
    keys: Keys,
    mut cmds: mpsc::Receiver<SubCmd>,
    events: mpsc::Sender<EngineEvent>,
    stop: CancellationToken,
) {
    let mut wanted: HashSet<String> = HashSet::new();
    let mut waiting: Vec<oneshot::Sender<Result<(), EngineError>>> = Vec::new();
    let mut backoff = RECONNECT_MIN;
    let mut connected_before = false;
    loop {
        let connect = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub());
        let pubsub = tokio::select! {
            _ = stop.cancelled() => return,
            r = connect => r,
        };
        let (mut sink, mut stream) = match pubsub {
            Ok(Ok(p)) => p.split(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "pub/sub connect failed");
                if !wait_backoff(&mut backoff, &mut cmds, &mut wanted, &mut waiting, &stop).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::warn!("pub/sub connect timed out");
                if !wait_backoff(&mut backoff, &mut cmds, &mut wanted, &mut waiting, &stop).await {
                    return;
                }
                continue;
            }
        };
        let channels: Vec<&String> = wanted.iter().collect();
        if !channels.is_empty() {
            if let Err(e) = sink.subscribe(channels).await {
                tracing::warn!(error = %e, "resubscribe failed");
                if !wait_backoff(&mut backoff, &mut cmds, &mut wanted, &mut waiting, &stop).await {
                    return;
                }
                continue;
            }
        }
        for w in waiting.drain(..) {
            let _ = w.send(Ok(()));
        }
        backoff = RECONNECT_MIN;
        if connected_before {
            tracing::info!(rooms = wanted.len(), "pub/sub reconnected; resyncing rooms");
            if events.send(EngineEvent::Resync).await.is_err() {
                return;
            }
        }
        connected_before = true;
        let mut ping = tokio::time::interval(PUBSUB_PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        tracing::warn!("pub/sub connection lost");
                        break;
                    };
                    let Some(room) = keys.room_of_channel(msg.get_channel_name()) else { continue };
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match parse_payload(room, &payload) {
                        Some(event) => {
                            if events.send(event).await.is_err() {
                                return;
                            }
                        }
                        None => tracing::warn!(payload, "unreadable channel payload"),
                    }
                }
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else { return };
                    let ok = match cmd {
                        SubCmd::Subscribe(channel, reply) => {
                            let r = sink.subscribe(&channel).await;
                            wanted.insert(channel);
                            match r {
                                Ok(()) => { let _ = reply.send(Ok(())); true }
                                Err(e) => { waiting.push(reply); tracing::warn!(error = %e, "subscribe failed"); false }
                            }
                        }
                        SubCmd::Unsubscribe(channel) => {
                            wanted.remove(&channel);
                            sink.unsubscribe(&channel).await.is_ok()
                        }
                    };
                    if !ok {
                        break;
                    }
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        tracing::warn!("pub/sub ping failed; reconnecting");
                        break;
                    }
                }
            }
        }
        if !wait_backoff(&mut backoff, &mut cmds, &mut wanted, &mut waiting, &stop).await {
            return;
        }
    }
}

/// Sleeps the backoff (with jitter) while still taking subscription changes;
/// subscribers wait for the next connection. Returns false when stopping.
async fn wait_backoff(
    backoff: &mut Duration,
    cmds: &mut mpsc::Receiver<SubCmd>,
    wanted: &mut HashSet<String>,
    waiting: &mut Vec<oneshot::Sender<Result<(), EngineError>>>,
    stop: &CancellationToken,
) -> bool {
    let jitter = rand::random::<f64>() * 0.5 + 0.75;
    let sleep = tokio::time::sleep(backoff.mul_f64(jitter));
    tokio::pin!(sleep);
    *backoff = (*backoff * 2).min(RECONNECT_MAX);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = &mut sleep => return true,
            cmd = cmds.recv() => match cmd {
                None => return false,
                Some(SubCmd::Subscribe(channel, reply)) => {
                    wanted.insert(channel);
                    waiting.push(reply);
                }
                Some(SubCmd::Unsubscribe(channel)) => {
                    wanted.remove(&channel);
                }
            },
        }
    }
}

/// Refreshes presence every third of its lifetime while the engine lives.
async fn presence_task(engine: std::sync::Weak<RedisEngine>, stop: CancellationToken) {
    let every = match engine.upgrade() {
        Some(e) => (e.presence_ttl / 3).max(Duration::from_millis(50)),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if let Err(e) = engine.refresh_presence().await {
            tracing::warn!(error = %e, "presence refresh failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys {
            prefix: "chat".into(),
        }
    }

    #[test]
    fn keys_of_a_room_share_its_hash_tag() {
        let room = RoomName::parse("general").unwrap();
        let k = keys();
        for key in [
            k.meta(&room),
            k.log(&room),
            k.channel(&room),
            k.users(&room),
            k.names(&room),
            k.user(&room, "u_1"),
            k.dedupe(&room, "u_1", "c-1"),
        ] {
            assert!(key.starts_with("chat:{general}:"), "{key}");
        }
    }

    #[test]
    fn channel_names_map_back_to_rooms() {
        let k = keys();
        let room = RoomName::parse("a-b_c").unwrap();
        assert_eq!(k.room_of_channel(&k.channel(&room)), Some(room));
        assert_eq!(k.room_of_channel("other:{general}:ch"), None);
        assert_eq!(k.room_of_channel("chat:{Bad}:ch"), None);
    }

    #[test]
    fn payloads_parse_into_events() {
        let room = RoomName::parse("general").unwrap();
        let stored = r#"{"id":"m_1","client_id":"c-1","from":{"id":"u_1","name":"al ice"},"body":"hi there","ts":5}"#;
        match parse_payload(room.clone(), &format!("m ep0 7 {stored}")) {
            Some(EngineEvent::Message { epoch, message, .. }) => {
                assert_eq!(&*epoch, "ep0");
                assert_eq!(message.offset, 7);
                assert_eq!(message.body, "hi there");
                assert_eq!(message.room, "general");
            }
            other => panic!("{other:?}"),
        }
        match parse_payload(room.clone(), "p l u_1 al ice") {
            Some(EngineEvent::Presence { user, joined, .. }) => {
                assert_eq!(user.name, "al ice");
                assert!(!joined);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_payload(room.clone(), r#"t {"id":"u_1","name":"a"}"#),
            Some(EngineEvent::Typing { .. })
        ));
        assert!(parse_payload(room, "x y").is_none());
    }
}
