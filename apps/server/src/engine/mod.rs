//! The engine: what instances share. Stores each room's history with
//! contiguous offsets, fans published messages out to every instance
//! subscribed to the room, keeps presence, and lists active rooms.
//!
//! Two implementations behind [`Engine`]: [`memory::MemoryEngine`] (one
//! instance, no Redis; also the test double) and [`redis::RedisEngine`] (a
//! cluster of instances sharing Redis or Valkey). The engine never knows the hub: what it receives
//! for subscribed rooms leaves through the [`EngineEvent`] channel that
//! `server::run` wires to the hub.
//!
//! **Invariant:** every message a client receives went through
//! [`Engine::publish`]; events for one room leave in offset order or, when a
//! transport may drop or reorder them (Redis pub/sub), the hub repairs the
//! sequence from [`Engine::range`].

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use protocol::{ChatMessage, RoomInfo, RoomName, Since, User};
use std::sync::Arc;

/// A message about to be published; the engine assigns its offset.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Server-assigned id (`m_…`).
    pub id: String,
    pub client_id: String,
    pub from: User,
    pub body: String,
    pub ts: i64,
}

/// Where a room stands: its epoch and latest offset (0: no message yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: Arc<str>,
    pub offset: u64,
}

/// The outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub epoch: Arc<str>,
    pub offset: u64,
    /// The same (user, client id) was published before: `offset` is the
    /// earlier message's and nothing was stored or fanned out again.
    pub duplicate: bool,
}

/// What an engine delivers to the hub of its instance.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A stored message of a subscribed room.
    Message {
        room: RoomName,
        epoch: Arc<str>,
        message: ChatMessage,
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
    /// The transport may have lost events (e.g. the pub/sub connection came
    /// back): the hub must catch every local room up from [`Engine::range`].
    Resync,
}

/// Why an engine operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The shared store cannot be reached; the client may retry (`unavailable`).
    #[error("the shared store is unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this code does not understand.
    #[error("engine error: {0}")]
    Internal(String),
}

/// The shared engine between instances. Object-safe: the server holds an
/// `Arc<dyn Engine>`.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// A short name for logs and metrics (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// Stores `msg` as the room's next offset and fans it out to every
    /// subscribed instance, atomically, unless the same (user, client id)
    /// was published in this room within the dedupe window.
    async fn publish(&self, room: &RoomName, msg: NewMessage) -> Result<Published, EngineError>;

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
    /// [`Engine::unsubscribe`] and are counted: the instance stays subscribed
    /// while more subscribes than unsubscribes were made. Returns once events
    /// published from now on will be delivered.
    async fn subscribe(&self, room: &RoomName) -> Result<(), EngineError>;

    /// Ends one [`Engine::subscribe`].
    async fn unsubscribe(&self, room: &RoomName) -> Result<(), EngineError>;

    /// `user` has a connection in `room` on this instance (called once per
    /// user and room while it has one). Emits a presence event when the user
    /// was present nowhere.
    async fn presence_join(&self, room: &RoomName, user: &User) -> Result<(), EngineError>;

    /// `user` has no connection left in `room` on this instance. Emits a
    /// presence event when the user is present nowhere any more.
    async fn presence_leave(&self, room: &RoomName, user: &User) -> Result<(), EngineError>;

    /// Distinct users present in the room on any instance.
    async fn members(&self, room: &RoomName) -> Result<Vec<User>, EngineError>;

    /// Fans a typing notice out to every subscribed instance.
    async fn typing(&self, room: &RoomName, user: &User) -> Result<(), EngineError>;

    /// Rooms with at least one member on any instance, with member counts.
    async fn rooms(&self) -> Result<Vec<RoomInfo>, EngineError>;

    /// Whether the shared store answers (for `/readyz`).
    async fn ready(&self) -> Result<(), EngineError>;
}

/// The history answer of a `join`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub position: Position,
    pub history: Vec<ChatMessage>,
    /// True only when `history` holds every message after `since`.
    pub recovered: bool,
}

/// How much a `join` may return.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryLimits {
    /// Messages returned without `since` (or when recovery is impossible).
    pub recent: usize,
    /// Largest gap replayed for a `since`.
    pub max_replay: u64,
}

/// The `joined` history rule of PROTOCOL.md, in terms of the engine's
/// primitives so both engines answer it identically: every message after
/// `since` when the epoch matches, the offset is not beyond the room's, the
/// gap is within `max_replay` and still retained; otherwise the newest
/// `recent` messages and `recovered: false`.
pub async fn recover(
    engine: &dyn Engine,
    room: &RoomName,
    since: Option<&Since>,
    limits: RecoveryLimits,
) -> Result<Recovery, EngineError> {
    let position = engine.position(room).await?;
    if let Some(since) = since {
        let replayable = *since.epoch == *position.epoch
            && since.offset <= position.offset
            && position.offset - since.offset <= limits.max_replay;
        if replayable {
            let history = engine.range(room, since.offset, position.offset).await?;
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
    let history = engine
        .before(room, position.offset + 1, limits.recent)
        .await?;
    Ok(Recovery {
        position,
        history,
        recovered: false,
    })
}
