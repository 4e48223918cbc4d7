//! The Redis/Valkey engine: many instances, one chat.
//!
//! Layout, per room `R` under prefix `P` (every key and the channel of a
//! room share the hash tag `{R}`, so a room lives in one Redis Cluster slot;
//! names are made in [`keys`]):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:{R}:meta` | hash | `epoch`, `offset` (latest), `archived` (with an archive: every entry up to it is in the database); expires after `--room-retention-secs` without activity (a publish, a join, a member's presence refresh) |
//! | `P:{R}:log` | stream | the history, entry id `<offset>-0`, field `m` = [`Publication`] JSON, capped (with an archive, never below `archived`: consumer group `archive`); expires with `meta` |
//! | `P:{R}:d:<user>:<client id>` | string | offset of a published (user, client id), expires |
//! | `P:{R}:users` | zset | user id → latest expiry of its presence (ms, the store's clock: `TIME` in the scripts) |
//! | `P:{R}:names` | hash | user id → display name |
//! | `P:{R}:u:<user>` | hash | instance → expiry of that instance's presence entry |
//! | `P:{R}:ch` | channel (a shard channel on a cluster) | `m <epoch> <offset> <publication json>`, `e <new epoch>`, `a <epoch> <archived offset>`, `t <user json>`, `p j\|l <user id> <name>` |
//! | `P:{rooms:<p>}:active` | zset | room → latest presence expiry (which rooms are active), for the rooms of partition `p` (0–15, by a hash of the name) |
//! | `P:{rooms:<p>}:order` | zset | `<9999999999 − members, 10 digits>:<room>`, all scored 0: a `rooms` page is one `ZRANGEBYLEX` per partition, merged |
//! | `P:{rooms:<p>}:count` | hash | room → members (the order entry to replace) |
//! | `P:{archive:<p>}:dirty` | zset | room → when it was last marked as having messages to archive (ms), for the rooms of partition `p` (with `--database-url` only: [`archiver`]) |
//! | `P:instance:{<id>}` | string | nonce of the process holding instance id `<id>` (`lua/instance.lua`), expires a presence TTL after its last renewal |
//! | `P:{admin}:instances` | hash | instance id → its last heartbeat (JSON), for the admin view ([`board`]); stale entries are removed by readers |
//! | `P:{admin}:actions` | stream | admin actions for every instance (field `a`, JSON), capped near 1,000 |
//! | `P:{probe:<instance>}:s\|h\|x\|z\|d`, channel `…:ch` | one of each type | the readiness probe's writes (`lua/probe.lua`), expire a minute after the last probe |
//!
//! Nothing busy is global in one slot: every key above but the instance,
//! admin and probe keys is a room's or a rooms index partition's, so on a
//! Redis Cluster the load spreads over the masters with the rooms (the
//! admin keys take one write per instance per second).
//!
//! By role: [`connections`] (the seeds, one Redis or a cluster, and the
//! command connection), [`pubsub`] (the pub/sub task, which counts
//! subscriptions and reconnects; on a cluster it runs [`sharded`]: shard
//! channels that follow their slot), [`broker`] (publishing is one
//! Lua script, `lua/publish.lua`: dedupe, next offset, append, PUBLISH,
//! atomically; history reads from the stream) and [`presence`] (per-room
//! zsets scored by expiry, refreshed while local members are connected, so
//! a crashed instance's users expire); with `--database-url`, [`archiver`]
//! moves the streams into the archive and restores rooms a wiped store
//! lost.
//!
//! Owns the Redis connections and the key layout. Does not own ordering of
//! delivery (the hub repairs gaps through [`crate::engine::Broker::range`]).

mod archiver;
mod board;
mod broker;
mod connections;
mod keys;
mod presence;
mod pubsub;
mod sharded;

use self::connections::{Commands, Conn, Mode, Seeds};
use self::keys::Keys;
use self::pubsub::PubSub;
use crate::config::RedisConfig;
use crate::engine::{EngineError, EngineEvent, Publication};
use protocol::{ChatMessage, RoomName, User};
use redis::Script;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The Lua scripts, loaded once per server (EVALSHA, then EVAL when the
/// server does not know the script, as [`redis::Script`] does). Each
/// publishes with the command its first line names (`PUBLISH`, or
/// `SPUBLISH` on a cluster: [`Scripts::new`]).
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
    restore: Script,
    archive_read: Script,
    archive_ack: Script,
    archive_clean: Script,
}

impl Scripts {
    /// The scripts for `mode`: each source gets `local PUBLISH = '…'`
    /// prepended on its first line (a comment in every file), so the
    /// line numbers Redis reports stay those of the files.
    fn new(mode: Mode) -> Scripts {
        let publish = mode.publish_command();
        let script = |source: &str| Script::new(&format!("local PUBLISH = '{publish}' {source}"));
        Scripts {
            publish: script(include_str!("lua/publish.lua")),
            position: script(include_str!("lua/position.lua")),
            reset_epoch: script(include_str!("lua/reset_epoch.lua")),
            presence_join: script(include_str!("lua/presence_join.lua")),
            presence_leave: script(include_str!("lua/presence_leave.lua")),
            presence_sweep: script(include_str!("lua/presence_sweep.lua")),
            members: script(include_str!("lua/members.lua")),
            rooms_index: script(include_str!("lua/rooms_index.lua")),
            probe: script(include_str!("lua/probe.lua")),
            instance: script(include_str!("lua/instance.lua")),
            restore: script(include_str!("lua/restore.lua")),
            archive_read: script(include_str!("lua/archive_read.lua")),
            archive_ack: script(include_str!("lua/archive_ack.lua")),
            archive_clean: script(include_str!("lua/archive_clean.lua")),
        }
    }
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
    /// The scripts on one Redis, and on a cluster ([`RedisEngine::scripts`]).
    single_scripts: Scripts,
    cluster_scripts: Scripts,
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
    /// The archive behind the streams (`--database-url`), if any.
    archive: Option<archiver::ArchiveLink>,
    /// Another live process holds this instance's id (not ready).
    id_taken: std::sync::atomic::AtomicBool,
    /// Why the last readiness probe failed (`None`: it passed), so each
    /// change is logged once.
    last_probe: std::sync::Mutex<Option<String>>,
}

impl RedisEngine {
    /// Builds the engine and starts its pub/sub task on `tracker` (and,
    /// with `archive`, the archiver: [`archiver`]), which end when `stop`
    /// is cancelled. Does not need Redis to be up.
    ///
    /// Errors: an invalid URL, an unreadable CA file, a key prefix with
    /// braces (it would change every key's hash tag).
    pub(crate) fn start(
        config: &RedisConfig,
        instance: String,
        rooms: RoomLimits,
        archive: Option<(crate::archive::Archive, Duration)>,
        events: crate::engine::Events,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Arc<RedisEngine>, EngineError> {
        let ca =
            match &config.ca_cert {
                None => None,
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    EngineError::Internal(format!("reading {}: {e}", path.display()))
                })?),
            };
        let seeds = Arc::new(Seeds::new(&config.urls, ca)?);
        if config.key_prefix.contains(['{', '}']) {
            return Err(EngineError::Internal(
                "the Redis key prefix may not contain braces".into(),
            ));
        }
        let keys = Keys::new(&config.key_prefix);
        let archive =
            archive.map(|(archive, claim_after)| archiver::ArchiveLink::new(archive, claim_after));
        let engine = Arc::new(RedisEngine {
            pubsub: PubSub::start(
                seeds.clone(),
                keys.clone(),
                keys.probe_channel(&instance),
                archive.as_ref().map(|link| link.tail.clone()),
                events,
                tracker,
                stop.clone(),
            ),
            commands: Commands::new(seeds),
            keys,
            single_scripts: Scripts::new(Mode::Single),
            cluster_scripts: Scripts::new(Mode::Cluster),
            instance,
            history_cap: rooms.history_cap,
            presence_ttl: rooms.presence_ttl,
            retention: rooms.retention,
            last_probe: std::sync::Mutex::new(None),
            nonce: format!("{:016x}", rand::random::<u64>()),
            id_taken: std::sync::atomic::AtomicBool::new(false),
            archive,
        });
        if engine.archive.is_some() {
            tracker.spawn(engine.clone().run_archiver(stop));
        }
        Ok(engine)
    }
}

/// The pub/sub task: waits for the mode, then runs its loop.
async fn run_pubsub(seeds: Arc<Seeds>, mut core: pubsub::Core) {
    match pubsub::wait_for_mode(&seeds, &mut core).await {
        None => {}
        Some(Mode::Single) => pubsub::run_single(seeds, core).await,
        Some(Mode::Cluster) => sharded::run(seeds, core).await,
    }
}

impl RedisEngine {
    /// The scripts for the server `conn` reaches.
    fn scripts(&self, conn: &Conn) -> &Scripts {
        match conn.mode() {
            Mode::Single => &self.single_scripts,
            Mode::Cluster => &self.cluster_scripts,
        }
    }
}

/// An `EVALSHA` of `script` with `keys` keys, its keys and arguments to be
/// added in order: one command buffer, where redis-rs's `ScriptInvocation`
/// keeps each argument in a vector of its own and copies them all into the
/// command (a dozen allocations per publish, issue 18's profile). Run it
/// with [`run_script`]. `args` (keys and arguments) and `bytes` (their
/// total length) size the buffers once: grown argument by argument they
/// were reallocated about six times per publish (callgrind).
fn evalsha(script: &Script, keys: usize, args: usize, bytes: usize) -> redis::Cmd {
    let hash = script.get_hash();
    let mut cmd = redis::Cmd::with_capacity(args + 3, bytes + hash.len() + 32);
    cmd.arg("EVALSHA").arg(hash).arg(keys);
    cmd
}

/// Runs `cmd`, an [`evalsha`] of `script`; on `NOSCRIPT` (a restarted or
/// flushed Redis) loads the script and runs it once more, as
/// `ScriptInvocation::invoke_async` does.
async fn run_script<T: redis::FromRedisValue>(
    conn: &mut Conn,
    script: &Script,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.prepare_invoke().load_async(conn).await?;
            cmd.query_async(conn).await
        }
        answer => answer,
    }
}

/// A stream entry of `room` as its message: entry id `<offset>-0` and
/// field `m`, the [`Publication`] JSON (`json`; `None`: the entry has no
/// such field). Errors (`Internal`): another id, no `m`, not a publication.
fn stream_message(
    room: &RoomName,
    id: &str,
    json: Option<&str>,
) -> Result<ChatMessage, EngineError> {
    let offset = id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse::<u64>().ok())
        .ok_or_else(|| EngineError::Internal(format!("bad stream id {id}")))?;
    let json = json.ok_or_else(|| EngineError::Internal("stream entry without m".into()))?;
    let publication: Publication = serde_json::from_str(json)
        .map_err(|e| EngineError::Internal(format!("stored message: {e}")))?;
    Ok(publication.into_message(room, offset))
}

/// Parses a channel payload (the formats of the layout table) into an event.
fn parse_payload(room: RoomName, payload: &str) -> Option<EngineEvent> {
    let (kind, rest) = payload.split_once(' ')?;
    match kind {
        "m" => {
            let (epoch, rest) = rest.split_once(' ')?;
            let (offset, json) = rest.split_once(' ')?;
            let offset: u64 = offset.parse().ok()?;
            let mut publication: Publication = serde_json::from_str(json).ok()?;
            Some(EngineEvent::Message {
                trace: publication.trace.take(),
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
