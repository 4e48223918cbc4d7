//! The Redis/Valkey engine: many instances, one chat.
//!
//! Layout, per room `R` under prefix `P` (every key and the channel of a
//! room share the hash tag `{R}`, so a room lives in one Redis Cluster slot;
//! names are made in [`keys`]):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:{R}:meta` | hash | `epoch`, `offset` (latest); expires after `--room-retention-secs` without activity (a publish, a join, a member's presence refresh) |
//! | `P:{R}:log` | stream | the history, entry id `<offset>-0`, field `m` = [`Publication`] JSON, capped; expires with `meta` |
//! | `P:{R}:d:<user>:<client id>` | string | offset of a published (user, client id), expires |
//! | `P:{R}:users` | zset | user id → latest expiry of its presence (ms, the store's clock: `TIME` in the scripts) |
//! | `P:{R}:names` | hash | user id → display name |
//! | `P:{R}:u:<user>` | hash | instance → expiry of that instance's presence entry |
//! | `P:{R}:ch` | channel | `m <epoch> <offset> <publication json>`, `e <new epoch>`, `t <user json>`, `p j\|l <user id> <name>` |
//! | `P:rooms` | zset | room → latest presence expiry (which rooms are active) |
//! | `P:rooms:members` | zset | room → −members (the index a `rooms` page reads) |
//! | `P:instance:{<id>}` | string | nonce of the process holding instance id `<id>` (`lua/instance.lua`), expires a presence TTL after its last renewal |
//! | `P:{probe:<instance>}:s\|h\|x\|z\|d`, channel `…:ch` | one of each type | the readiness probe's writes (`lua/probe.lua`), expire a minute after the last probe |
//!
//! By role: [`connections`] (the command connection and the pub/sub task,
//! which counts subscriptions and reconnects), [`broker`] (publishing is one
//! Lua script, `lua/publish.lua`: dedupe, next offset, append, PUBLISH,
//! atomically; history reads from the stream) and [`presence`] (per-room
//! zsets scored by expiry, refreshed while local members are connected, so
//! a crashed instance's users expire).
//!
//! Owns the Redis connections and the key layout. Does not own ordering of
//! delivery (the hub repairs gaps through [`crate::engine::Broker::range`]).

mod broker;
mod connections;
mod keys;
mod presence;

use self::connections::{Commands, PubSub};
use self::keys::Keys;
use crate::config::RedisConfig;
use crate::engine::{EngineError, EngineEvent, Publication};
use protocol::{RoomName, User};
use redis::{Client, IntoConnectionInfo, Script};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The Lua scripts, loaded once (EVALSHA, then EVAL when the server does
/// not know the script, as [`redis::Script`] does).
struct Scripts {
    publish: Script,
    position: Script,
    reset_epoch: Script,
    presence_join: Script,
    presence_leave: Script,
    presence_sweep: Script,
    members: Script,
    rooms_index: Script,
    probe: Script,
    instance: Script,
}

/// What the engine keeps of a room, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoomLimits {
    /// Messages kept per room stream (`XADD MAXLEN`).
    pub(crate) history_cap: usize,
    /// How long a presence entry lives without a refresh.
    pub(crate) presence_ttl: Duration,
    /// How long a room lives without activity (`--room-retention-secs`).
    pub(crate) retention: Duration,
}

/// The Redis engine: a [`crate::engine::Broker`] and a
/// [`crate::engine::PresenceStore`] on one Redis or Valkey.
pub(crate) struct RedisEngine {
    commands: Commands,
    pubsub: PubSub,
    keys: Keys,
    scripts: Scripts,
    /// This instance's id: the field of its entries in the per-user
    /// presence hashes.
    instance: String,
    /// Messages kept per room stream (`XADD MAXLEN`).
    history_cap: usize,
    /// How long a presence entry lives without a refresh.
    presence_ttl: Duration,
    /// How long a room's epoch and history live without activity (a
    /// publish, a join, a presence refresh of a member): their keys expire.
    retention: Duration,
    /// Random per process: what this process writes to claim its
    /// instance id, so a second process with the same id is told apart.
    nonce: String,
    /// Another live process holds this instance's id (not ready).
    id_taken: std::sync::atomic::AtomicBool,
    /// Why the last readiness probe failed (`None`: it passed), so each
    /// change is logged once.
    last_probe: std::sync::Mutex<Option<String>>,
}

impl RedisEngine {
    /// Builds the engine and starts its pub/sub task on `tracker`, which
    /// ends when `stop` is cancelled. Does not need Redis to be up.
    ///
    /// Errors: an invalid URL, an unreadable CA file, a key prefix with
    /// braces (it would change every key's hash tag).
    pub(crate) fn start(
        config: &RedisConfig,
        instance: String,
        rooms: RoomLimits,
        events: mpsc::Sender<EngineEvent>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Arc<RedisEngine>, EngineError> {
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| EngineError::Internal(format!("invalid Redis URL: {e}")))?
            .set_tcp_settings(connections::tcp_settings());
        let client = match &config.ca_cert {
            None => Client::open(info),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    EngineError::Internal(format!("reading {}: {e}", path.display()))
                })?;
                Client::build_with_tls(
                    info,
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
        let keys = Keys::new(&config.key_prefix);
        Ok(Arc::new(RedisEngine {
            pubsub: PubSub::start(
                client.clone(),
                keys.clone(),
                keys.probe_channel(&instance),
                events,
                tracker,
                stop,
            ),
            commands: Commands::new(client),
            keys,
            scripts: Scripts {
                publish: Script::new(include_str!("lua/publish.lua")),
                position: Script::new(include_str!("lua/position.lua")),
                reset_epoch: Script::new(include_str!("lua/reset_epoch.lua")),
                presence_join: Script::new(include_str!("lua/presence_join.lua")),
                presence_leave: Script::new(include_str!("lua/presence_leave.lua")),
                presence_sweep: Script::new(include_str!("lua/presence_sweep.lua")),
                members: Script::new(include_str!("lua/members.lua")),
                rooms_index: Script::new(include_str!("lua/rooms_index.lua")),
                probe: Script::new(include_str!("lua/probe.lua")),
                instance: Script::new(include_str!("lua/instance.lua")),
            },
            instance,
            history_cap: rooms.history_cap,
            presence_ttl: rooms.presence_ttl,
            retention: rooms.retention,
            last_probe: std::sync::Mutex::new(None),
            nonce: format!("{:016x}", rand::random::<u64>()),
            id_taken: std::sync::atomic::AtomicBool::new(false),
        }))
    }
}

/// Parses a channel payload (the formats of the layout table) into an event.
fn parse_payload(room: RoomName, payload: &str) -> Option<EngineEvent> {
    let (kind, rest) = payload.split_once(' ')?;
    match kind {
        "m" => {
            let (epoch, rest) = rest.split_once(' ')?;
            let (offset, json) = rest.split_once(' ')?;
            let offset: u64 = offset.parse().ok()?;
            let publication: Publication = serde_json::from_str(json).ok()?;
            Some(EngineEvent::Message {
                message: publication.into_message(&room, offset),
                room,
                epoch: Arc::from(epoch),
            })
        }
        "e" => Some(EngineEvent::Epoch {
            room,
            epoch: Arc::from(rest),
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        match parse_payload(room.clone(), "e ep9") {
            Some(EngineEvent::Epoch { epoch, .. }) => assert_eq!(&*epoch, "ep9"),
            other => panic!("{other:?}"),
        }
        assert!(parse_payload(room, "x y").is_none());
    }
}
