//! The admin view's JSON (`/admin/api/…`, authenticated by the admin
//! token): what each instance reports of itself, the rooms, and the
//! actions. Not part of the chat protocol a client speaks; here so that the
//! server and the admin page (`/admin`) share one definition.

use serde::{Deserialize, Serialize};

/// One instance as it last reported itself in the shared store (its
/// heartbeat, every [`HEARTBEAT_MS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// `--instance-id`.
    pub id: String,
    /// The server's version (its crate version).
    pub version: String,
    /// When the process started, ms since the Unix epoch.
    pub started_ms: i64,
    /// When this report was written, ms since the Unix epoch.
    pub at_ms: i64,
    /// Open WebSockets.
    pub connections: u64,
    /// Rooms with a member on this instance.
    pub rooms: u64,
    /// Messages written to this instance's clients since it started.
    pub delivered: u64,
    /// Deliveries per second over the last heartbeat interval.
    pub deliveries_per_s: f64,
    /// Whether it takes new connections (`/readyz`): false while draining
    /// or while its store cannot take writes.
    pub ready: bool,
}

/// Every heartbeat is written this often, in ms; an instance silent for
/// [`STALE_AFTER_MS`] is gone from the list.
pub const HEARTBEAT_MS: u64 = 1_000;

/// An instance whose last heartbeat is older than this, in ms, is not
/// listed (it stopped or crashed).
pub const STALE_AFTER_MS: u64 = 5_000;

/// A room in the admin view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdminRoom {
    pub room: String,
    /// Distinct users present, on any instance.
    pub members: u64,
    /// The room's latest offset: the page derives messages/s from two
    /// reads.
    pub offset: u64,
}

/// `GET /admin/api/overview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// The instance that answered.
    pub server: String,
    /// Every instance with a fresh heartbeat, by id.
    pub instances: Vec<InstanceStatus>,
    /// The busiest rooms (at most [`OVERVIEW_ROOMS`]), busiest first.
    pub rooms: Vec<AdminRoom>,
    /// When the overview was read, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Rooms listed in an [`Overview`].
pub const OVERVIEW_ROOMS: usize = 50;

/// An action, carried to every instance through the shared store (each
/// applies it to its own connections within one heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AdminAction {
    /// Close every connection of the user (close 1008: the client does not
    /// reconnect on its own).
    DisconnectUser { user: String },
    /// Every member leaves the room (each gets `left`); its history stays
    /// and it can be joined again.
    CloseRoom { room: String },
}

/// The answer to an action: it was recorded for every instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionAccepted {
    pub action: AdminAction,
}
