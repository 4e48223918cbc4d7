//! The engine: what instances share, in two roles (as the centrifuge library
//! splits its Broker and PresenceManager):
//!
//! - a [`Broker`] stores each room's history with contiguous offsets, fans
//!   published messages (and typing notices) out to every instance
//!   subscribed to the room, and answers ranges of the history;
//! - a [`PresenceStore`] knows who is in which room on any instance, and
//!   which rooms are active.
//!
//! Two implementations provide both roles: [`memory::MemoryEngine`] (one
//! instance, no Redis; also the test double) and [`redis::RedisEngine`] (a
//! cluster of instances sharing Redis or Valkey). The engine never knows
//! the hub: what it receives for subscribed rooms leaves through the
//! [`Events`] channels that `server::run` wires to the hub's shards.
//!
//! **Invariant:** every message a client receives went through
//! [`Broker::publish`]; events for one room leave in offset order or, when a
//! transport may drop or reorder them (Redis pub/sub), the hub repairs the
//! sequence from [`Broker::range`].

pub(crate) mod memory;
pub(crate) mod redis;

use crate::archive::Archive;
use async_trait::async_trait;
use protocol::admin::{AdminAction, InstanceStatus};
use protocol::{ChatMessage, RoomInfo, RoomName, Since, User};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{self, error::SendError, error::TrySendError};

/// A message as published: everything but its room and offset, which the
/// broker assigns. Also the form the Redis broker stores in a room's
/// stream and carries on its channel (the offset is the entry id there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Publication {
    /// Server-assigned id (`m_…`).
    pub(crate) id: String,
    pub(crate) client_id: String,
    pub(crate) from: User,
    pub(crate) body: String,
    /// Milliseconds since the Unix epoch, from the publishing instance.
    pub(crate) ts: i64,
    /// The W3C `traceparent` of the `publish` span, when the publishing
    /// instance exports traces ([`crate::telemetry`]): every instance's
    /// `deliver` span is its child. Never sent to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) trace: Option<String>,
}

impl Publication {
    /// The JSON the Redis engine stores and publishes. Written into a
    /// buffer sized once for the body and the rest (`to_string` starts at
    /// 128 bytes and grew it twice per message: callgrind).
    pub(crate) fn to_json(&self) -> String {
        let mut json = Vec::with_capacity(self.body.len() + self.from.name.len() + 192);
        serde_json::to_writer(&mut json, self).expect("a publication serialises");
        String::from_utf8(json).expect("serde_json writes UTF-8")
    }

    /// The wire message of this publication at `offset` in `room`.
    pub(crate) fn into_message(self, room: &RoomName, offset: u64) -> ChatMessage {
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

/// Where a room stands: its epoch and latest offset (0: no message yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) epoch: Arc<str>,
    pub(crate) offset: u64,
}

/// The outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub(crate) epoch: Arc<str>,
    pub(crate) offset: u64,
    /// The same (user, client id) was published before: `offset` is the
    /// earlier message's and nothing was stored or fanned out again.
    pub(crate) duplicate: bool,
}

/// What an engine delivers to the hub of its instance.
#[derive(Debug, Clone)]
pub(crate) enum EngineEvent {
    /// A stored message of a subscribed room.
    Message {
        room: RoomName,
        epoch: Arc<str>,
        message: ChatMessage,
        /// [`Publication::trace`].
        trace: Option<String>,
    },
    /// Someone is typing (ephemeral, never stored).
    Typing { room: RoomName, user: User },
    /// A user became present in a room (first connection anywhere) or left
    /// it (last connection anywhere, or its instance stopped refreshing).
    Presence {
        room: RoomName,
        user: User,
        joined: bool,
    },
    /// The room has a new epoch ([`Broker::reset_epoch`]): what local
    /// members hold of the room's history means nothing now.
    Epoch { room: RoomName, epoch: Arc<str> },
    /// The transport dropped messages of the room (the hub fell behind and
    /// its channel was full): the hub must catch the room up from
    /// [`Broker::range`].
    Dropped { room: RoomName },
    /// The transport may have lost events (e.g. the pub/sub connection came
    /// back): the hub must catch every local room up from [`Broker::range`].
    Resync,
}

impl EngineEvent {
    /// The room the event is about; `None` for [`EngineEvent::Resync`].
    pub(crate) fn room(&self) -> Option<&RoomName> {
        match self {
            EngineEvent::Message { room, .. }
            | EngineEvent::Typing { room, .. }
            | EngineEvent::Presence { room, .. }
            | EngineEvent::Epoch { room, .. }
            | EngineEvent::Dropped { room } => Some(room),
            EngineEvent::Resync => None,
        }
    }
}

/// Where an engine hands its events to the hub: one bounded channel per
/// hub shard. An event goes to the shard of its room ([`Events::shard_of`],
/// so one room's events stay in order on one channel); a
/// [`EngineEvent::Resync`] goes to every shard.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    shards: Arc<[mpsc::Sender<EngineEvent>]>,
}

impl Events {
    /// `shards` channels of `capacity` events each, and their receivers in
    /// shard order. Panics if `shards` is 0.
    pub(crate) fn channel(
        shards: usize,
        capacity: usize,
    ) -> (Events, Vec<mpsc::Receiver<EngineEvent>>) {
        assert!(shards > 0, "a hub has at least one shard");
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::channel(capacity)).unzip();
        (
            Events {
                shards: senders.into(),
            },
            receivers,
        )
    }

    /// The shard of `room` among `shards`: a hash of its name, the same on
    /// every call of the process.
    pub(crate) fn shard_of(room: &str, shards: usize) -> usize {
        use std::hash::BuildHasher;
        // Fixed keys: the engine's routing and the hub's lookups must agree.
        let hash =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(room);
        (hash % shards as u64) as usize
    }

    /// The shard of the event's room; `None` for a resync (every shard).
    fn target(&self, event: &EngineEvent) -> Option<usize> {
        event
            .room()
            .map(|room| Events::shard_of(room.as_str(), self.shards.len()))
    }

    /// Hands `event` over without waiting. `Full` when its shard's channel
    /// (for a resync: any shard's) has no room; a resync then may have
    /// reached some shards, and sending it again is harmless (a room
    /// catching up already reads the store once more).
    // As tokio's `try_send`: a refused event comes back to the caller (the
    // intake counts it and owes its room a catch-up).
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_send(&self, event: EngineEvent) -> Result<(), TrySendError<EngineEvent>> {
        if let Some(i) = self.target(&event) {
            return self.shards[i].try_send(event);
        }
        let mut full = false;
        for shard in self.shards.iter() {
            match shard.try_send(EngineEvent::Resync) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => full = true,
                Err(closed) => return Err(closed),
            }
        }
        if full {
            return Err(TrySendError::Full(EngineEvent::Resync));
        }
        Ok(())
    }

    /// Hands `event` over, waiting for room in its shard's channel. Errors:
    /// the hub stopped.
    pub(crate) async fn send(&self, event: EngineEvent) -> Result<(), SendError<EngineEvent>> {
        if let Some(i) = self.target(&event) {
            return self.shards[i].send(event).await;
        }
        for shard in self.shards.iter() {
            shard.send(EngineEvent::Resync).await?;
        }
        Ok(())
    }

    /// Waits until every shard's channel has room for one event. False when
    /// the hub stopped.
    pub(crate) async fn ready(&self) -> bool {
        for shard in self.shards.iter() {
            match shard.reserve().await {
                Ok(permit) => drop(permit),
                Err(_) => return false,
            }
        }
        true
    }
}

/// Why an engine operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum EngineError {
    /// The shared store cannot be reached; the client may retry (`unavailable`).
    #[error("the shared store is unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this code does not understand.
    #[error("engine error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The archive (`--database-url`) could not be read or written: the
    /// client may retry (`unavailable`).
    pub(crate) fn archive(e: sqlx::Error) -> EngineError {
        EngineError::Unavailable(format!("the archive: {e}"))
    }
}

/// A hot store's answer to [`Broker::range`] completed from the archive:
/// `held` are the store's messages with `after < offset <= upto`
/// (ascending, contiguous); what lies below the first of them (below
/// `upto + 1` when there is none) is read from `archive`, which holds
/// every message the store dropped. Without an archive, `held`.
pub(crate) async fn range_through(
    archive: Option<&Archive>,
    room: &RoomName,
    after: u64,
    upto: u64,
    held: Vec<ChatMessage>,
) -> Result<Vec<ChatMessage>, EngineError> {
    let lowest = held.first().map_or(upto.saturating_add(1), |m| m.offset);
    match archive {
        Some(archive) if lowest > after.saturating_add(1) => {
            let mut messages = archive
                .range(room, after, lowest - 1)
                .await
                .map_err(EngineError::archive)?;
            messages.extend(held);
            Ok(messages)
        }
        _ => Ok(held),
    }
}

/// A hot store's answer to [`Broker::before`] completed from the archive:
/// `held` are the store's newest messages with `offset < before`, at most
/// `limit`, ascending; when fewer, the rest (the newest below the first of
/// them) is read from `archive`. Without an archive, `held`.
pub(crate) async fn before_through(
    archive: Option<&Archive>,
    room: &RoomName,
    before: u64,
    limit: usize,
    held: Vec<ChatMessage>,
) -> Result<Vec<ChatMessage>, EngineError> {
    let lowest = held.first().map_or(before, |m| m.offset);
    match archive {
        Some(archive) if held.len() < limit && lowest > 1 => {
            let mut messages = archive
                .before(room, lowest, limit - held.len())
                .await
                .map_err(EngineError::archive)?;
            messages.extend(held);
            Ok(messages)
        }
        _ => Ok(held),
    }
}

/// History and fan-out. Object-safe: the hub holds an `Arc<dyn Broker>`.
#[async_trait]
pub(crate) trait Broker: Send + Sync + 'static {
    /// A short name for logs and metrics (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// Stores `msg` as the room's next offset and fans it out to every
    /// subscribed instance, atomically, unless the same (user, client id)
    /// was published in this room within the dedupe window
    /// ([`protocol::limits::DEDUPE_WINDOW_SECS`]).
    ///
    /// `seen` is the newest position of the room this instance has
    /// delivered or answered. A store whose offset is below it in the same
    /// epoch lost history (a restore from an older snapshot, a failover to
    /// a replica that lagged): the room gets a new epoch first, announced
    /// as [`EngineEvent::Epoch`], and the message is stored in it.
    async fn publish(
        &self,
        room: &RoomName,
        msg: Publication,
        seen: Option<&Position>,
    ) -> Result<Published, EngineError>;

    /// The room's history under epoch `lost` diverged from what this
    /// instance delivered (an offset went back: the store lost messages).
    /// Gives the room a new epoch, unless its epoch is no longer `lost`
    /// (another instance did it first, or the store was wiped), and
    /// announces it as [`EngineEvent::Epoch`]. The retained history keeps
    /// its offsets: it is the new epoch's history.
    async fn reset_epoch(&self, room: &RoomName, lost: &str) -> Result<(), EngineError>;

    /// The room's epoch and latest offset; creates the epoch when missing.
    async fn position(&self, room: &RoomName) -> Result<Position, EngineError>;

    /// Retained messages with `after < offset <= upto`, ascending. Messages
    /// already trimmed from the history are missing from the result.
    async fn range(
        &self,
        room: &RoomName,
        after: u64,
        upto: u64,
    ) -> Result<Vec<ChatMessage>, EngineError>;

    /// The newest `limit` retained messages with `offset < before`, ascending.
    async fn before(
        &self,
        room: &RoomName,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, EngineError>;

    /// Starts delivering the room's events to this instance. Calls pair with
    /// [`Broker::unsubscribe`] and are counted by the broker: the instance
    /// stays subscribed while more subscribes than unsubscribes were made,
    /// whatever order concurrent calls take (a leave's unsubscribe racing
    /// the next join's subscribe). Returns once events published from now
    /// on will be delivered; on an error the call counts for nothing.
    async fn subscribe(&self, room: &RoomName) -> Result<(), EngineError>;

    /// Ends one successful [`Broker::subscribe`].
    async fn unsubscribe(&self, room: &RoomName);

    /// Fans a typing notice out to every subscribed instance.
    async fn typing(&self, room: &RoomName, user: &User) -> Result<(), EngineError>;

    /// Whether the shared store takes writes from this instance (for
    /// `/readyz`): answering is not enough, a replica answers too.
    async fn reachable(&self) -> Result<(), EngineError>;
}

/// What the admin view shares between instances: each instance's
/// heartbeat, and the actions every instance applies to its own
/// connections. Object-safe: the admin task holds an `Arc<dyn AdminBoard>`.
#[async_trait]
pub(crate) trait AdminBoard: Send + Sync + 'static {
    /// Writes this instance's status, replacing its previous one.
    async fn heartbeat(&self, status: &InstanceStatus) -> Result<(), EngineError>;

    /// Every instance whose heartbeat is at most
    /// [`protocol::admin::STALE_AFTER_MS`] older than `now_ms`, by id; older
    /// ones are removed.
    async fn instances(&self, now_ms: i64) -> Result<Vec<InstanceStatus>, EngineError>;

    /// Records `action` for every instance (the newest 1,000 are kept).
    async fn post_action(&self, action: &AdminAction) -> Result<(), EngineError>;

    /// The actions recorded after `cursor`, oldest first, and the cursor to
    /// pass next. `None`: from now (no action, only the cursor). Actions
    /// that do not parse are skipped and logged.
    async fn actions(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<AdminAction>, String), EngineError>;
}

/// [`AdminBoard::instances`]: the fresh ones of `all`, by id, and the ids
/// of the stale ones.
pub(crate) fn fresh_instances(
    all: impl IntoIterator<Item = InstanceStatus>,
    now_ms: i64,
) -> (Vec<InstanceStatus>, Vec<String>) {
    let (mut fresh, stale): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|s| now_ms - s.at_ms <= protocol::admin::STALE_AFTER_MS as i64);
    fresh.sort_by(|a, b| a.id.cmp(&b.id));
    (fresh, stale.into_iter().map(|s| s.id).collect())
}

/// The users one instance has connected in one room (for
/// [`PresenceStore::refresh`]).
#[derive(Debug, Clone)]
pub(crate) struct LocalPresence {
    pub(crate) room: RoomName,
    pub(crate) users: Vec<User>,
}

/// Who is where, on any instance. Object-safe: the hub holds an
/// `Arc<dyn PresenceStore>`. Changes reach every subscribed instance as
/// [`EngineEvent::Presence`].
#[async_trait]
pub(crate) trait PresenceStore: Send + Sync + 'static {
    /// `user` has a connection in `room` on this instance (called once per
    /// user and room while it has one). Emits a presence event when the user
    /// was present nowhere.
    async fn join(&self, room: &RoomName, user: &User) -> Result<(), EngineError>;

    /// `user` has no connection left in `room` on this instance. Emits a
    /// presence event when the user is present nowhere any more.
    async fn leave(&self, room: &RoomName, user: &User) -> Result<(), EngineError>;

    /// Called periodically with every user this instance has connected:
    /// keeps their entries alive, and removes (announcing it) the users of
    /// these rooms whose every instance stopped refreshing them (a crashed
    /// instance). A store whose entries do not expire does nothing.
    async fn refresh(&self, local: &[LocalPresence]) -> Result<(), EngineError>;

    /// Distinct users present in the room on any instance.
    async fn members(&self, room: &RoomName) -> Result<Vec<User>, EngineError>;

    /// One page of the rooms with at least one member on any instance, with
    /// member counts, the busiest first and ties by name ([`RoomsCursor`]'s
    /// order): `limit` rooms after `after` (from the first when `None`).
    /// Reads an index, not every room. Counts may lag the truth by up to
    /// one presence refresh.
    async fn rooms(
        &self,
        after: Option<&RoomsCursor>,
        limit: usize,
    ) -> Result<RoomsPage, EngineError>;

    /// Claims this instance's id for one presence TTL, or renews the claim
    /// (presence entries are keyed by the id: two live processes sharing
    /// one would keep each other's users present and sweep each other's).
    /// False when another live process holds it. A store that serves one
    /// instance only holds it always.
    async fn claim_instance(&self) -> Result<bool, EngineError>;

    /// This instance stops: its claim is released at once, so a restart
    /// with the same id need not wait for it to expire. Best effort.
    async fn release_instance(&self);
}

/// One page of [`PresenceStore::rooms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomsPage {
    pub(crate) rooms: Vec<RoomInfo>,
    /// More rooms follow this page.
    pub(crate) more: bool,
}

/// A place in the rooms order: more members first, then by name (byte
/// order). A page read after a cursor starts with the first room past it,
/// so a page never depends on how many rooms came before it (a keyset, not
/// an offset: an index partitioned over Redis Cluster slots is merged
/// page by page). On the wire (`rooms.next`, PROTOCOL.md v1.1 "Bounds")
/// it is `<members>:<room>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomsCursor {
    pub(crate) members: u64,
    pub(crate) room: String,
}

impl RoomsCursor {
    /// The cursor just past `info`.
    pub(crate) fn at(info: &RoomInfo) -> RoomsCursor {
        RoomsCursor {
            members: info.members,
            room: info.room.clone(),
        }
    }

    /// `<members>:<room>`; `None` for anything else (a room name that is
    /// not valid, a count that is not a number).
    pub(crate) fn parse(text: &str) -> Option<RoomsCursor> {
        let (members, room) = text.split_once(':')?;
        if members.is_empty() || !members.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(RoomsCursor {
            members: members.parse().ok()?,
            room: RoomName::parse(room).ok()?.into_string(),
        })
    }

    pub(crate) fn encode(&self) -> String {
        format!("{}:{}", self.members, self.room)
    }

    /// Whether `info` comes after this cursor in the rooms order.
    pub(crate) fn precedes(&self, info: &RoomInfo) -> bool {
        (std::cmp::Reverse(info.members), info.room.as_str())
            > (std::cmp::Reverse(self.members), self.room.as_str())
    }
}

/// A fresh epoch: 16 random hex digits, so a restarted process or a wiped
/// store never reuses one.
pub(crate) fn new_epoch() -> Arc<str> {
    Arc::from(new_epoch_digits().as_str())
}

/// A fresh epoch as [`new_epoch`] makes it, on the stack: the Redis
/// publish passes one with every message (the epoch a room gets if it has
/// none yet), and `format!` plus an allocation cost about 850
/// instructions per message there (issue 18's callgrind profile).
pub(crate) fn new_epoch_digits() -> EpochDigits {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::random::<u64>();
    let mut digits = [0u8; 16];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    EpochDigits(digits)
}

/// 16 lowercase hex digits: an epoch ([`new_epoch_digits`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EpochDigits([u8; 16]);

impl EpochDigits {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

/// Milliseconds since the Unix epoch on this machine's clock (0 if the
/// clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The history answer of a `join`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recovery {
    pub(crate) position: Position,
    pub(crate) history: Vec<ChatMessage>,
    /// True only when `history` holds every message after `since`.
    pub(crate) recovered: bool,
}

/// How much a `join` may return.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecoveryLimits {
    /// Messages returned without `since` (or when recovery is impossible).
    pub(crate) recent: usize,
    /// Largest gap replayed for a `since`.
    pub(crate) max_replay: u64,
}

/// The `joined` history rule of PROTOCOL.md, in terms of the broker's
/// primitives so both engines answer it identically: every message after
/// `since` when the epoch matches, the offset is not beyond the room's, the
/// gap is within `max_replay` and still retained; otherwise the newest
/// `recent` messages and `recovered: false`.
pub(crate) async fn recover(
    broker: &dyn Broker,
    room: &RoomName,
    since: Option<&Since>,
    limits: RecoveryLimits,
) -> Result<Recovery, EngineError> {
    let position = broker.position(room).await?;
    if let Some(since) = since {
        let replayable = *since.epoch == *position.epoch
            && since.offset <= position.offset
            && position.offset - since.offset <= limits.max_replay;
        if replayable {
            let history = broker.range(room, since.offset, position.offset).await?;
            let complete = history.len() as u64 == position.offset - since.offset
                && history.first().is_none_or(|m| m.offset == since.offset + 1);
            if complete {
                return Ok(Recovery {
                    position,
                    history,
                    recovered: true,
                });
            }
        }
    }
    let history = broker
        .before(room, position.offset + 1, limits.recent)
        .await?;
    Ok(Recovery {
        position,
        history,
        recovered: false,
    })
}

#[cfg(test)]
mod tests;
