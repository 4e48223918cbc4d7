//! The frames of protocol v1 as serde types. Every frame is one JSON object
//! with a snake_case `"type"` tag; unknown fields are ignored on both sides.
//!
//! Frames carry plain strings: a value that parses is not yet valid. The
//! server checks each value with [`crate::validate`], because a bad room name
//! must be answered `bad_room`, not `bad_frame`, and a bad body must echo the
//! send's `id`.

use crate::codes::ErrorCode;
use serde::{Deserialize, Serialize};

/// A user as other users see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Stable id (`u_…`), carried in the session token.
    pub id: String,
    /// Display name from the latest `hello`.
    pub name: String,
}

/// The position a client recovers from: a room epoch and the last offset it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    pub epoch: String,
    pub offset: u64,
}

/// One stored chat message, as delivered in `message`, `joined.history` and
/// `history` frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    pub room: String,
    /// Position in the room's epoch: 1, 2, 3, … with no gaps.
    pub offset: u64,
    /// Server-assigned id (`m_…`).
    pub id: String,
    /// The id the sender chose, echoed for matching acks and dedupe.
    pub client_id: String,
    pub from: User,
    pub body: String,
    /// Milliseconds since the Unix epoch, when the server accepted it.
    pub ts: i64,
}

/// An active room and how many distinct users are in it across all instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomInfo {
    pub room: String,
    pub members: u64,
}

/// Why a server asks its clients to reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectReason {
    /// The instance is shutting down; any other instance serves the client.
    Shutdown,
}

/// A frame from a client to a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Must be the first frame. `token` comes from an earlier `welcome`.
    Hello {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Join a room, optionally recovering what was missed after `since`.
    Join {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Since>,
    },
    Leave {
        room: String,
    },
    /// Post a message. `id` is client-chosen: resending the same `id` in the
    /// same room is the same message.
    Send {
        room: String,
        id: String,
        body: String,
    },
    /// Older messages for scrolling back: the newest `limit` with offset
    /// `< before` (no `before`: the newest of the room).
    History {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    Typing {
        room: String,
    },
    /// Active rooms, the busiest first, one page at a time (v1.1: a v1
    /// `{"type":"rooms"}` gets the first page).
    Rooms {
        /// Where the page starts: the `next` of the previous page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
        /// Rooms per page (default and largest:
        /// [`crate::limits::ROOMS_PAGE_MAX`]; larger values are capped).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    Ping,
    /// Extension (PROTOCOL.md "Host identity"): a fresh host-app token for
    /// this connection's user (same `sub`), sent before the one it signed in
    /// with expires; the connection then lives until the new one's `exp`.
    Refresh {
        token: String,
    },
}

impl ClientFrame {
    /// The `type` tag, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Hello { .. } => "hello",
            ClientFrame::Join { .. } => "join",
            ClientFrame::Leave { .. } => "leave",
            ClientFrame::Send { .. } => "send",
            ClientFrame::History { .. } => "history",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::Rooms { .. } => "rooms",
            ClientFrame::Ping => "ping",
            ClientFrame::Refresh { .. } => "refresh",
        }
    }

    /// Parses one text frame. Unknown fields are ignored; an unknown `type`
    /// or a missing field is an error.
    pub fn from_json(text: &str) -> Result<ClientFrame, serde_json::Error> {
        expect_object(text)?;
        serde_json::from_str(text)
    }

    /// The JSON text of this frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client frames always serialise")
    }
}

/// A frame from a server to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        protocol: u32,
        user: User,
        /// Signed session token: send it in a later `hello` (to any instance)
        /// to come back as the same user.
        token: String,
        /// The instance serving this connection.
        server: String,
    },
    Joined {
        room: String,
        epoch: String,
        /// The room's latest offset when the join was answered.
        offset: u64,
        members: Vec<User>,
        history: Vec<ChatMessage>,
        /// True only when `history` holds every message after `since`.
        recovered: bool,
    },
    Left {
        room: String,
    },
    /// The message with client id `id` is stored at `offset` and published.
    Ack {
        id: String,
        room: String,
        offset: u64,
    },
    Message(ChatMessage),
    History {
        room: String,
        messages: Vec<ChatMessage>,
    },
    Typing {
        room: String,
        user: User,
    },
    Presence {
        room: String,
        joined: Vec<User>,
        left: Vec<User>,
    },
    Rooms {
        rooms: Vec<RoomInfo>,
        /// Present when more rooms follow: the `cursor` of the next page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    Pong,
    Error {
        code: ErrorCode,
        message: String,
        /// The client id of the `send` this error answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// The instance is going away: reconnect (to any instance) and re-join
    /// with `since`.
    Reconnect {
        reason: ReconnectReason,
        /// Milliseconds to keep using this connection before reconnecting
        /// (PROTOCOL.md, "Drain"): a draining instance spreads its clients'
        /// reconnects over a window. Absent (0): reconnect at once; the
        /// close follows.
        #[serde(default, skip_serializing_if = "is_zero")]
        delay_ms: u64,
    },
}

/// Serde's test for an absent `delay_ms`.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ServerFrame {
    /// The `type` tag, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Welcome { .. } => "welcome",
            ServerFrame::Joined { .. } => "joined",
            ServerFrame::Left { .. } => "left",
            ServerFrame::Ack { .. } => "ack",
            ServerFrame::Message(_) => "message",
            ServerFrame::History { .. } => "history",
            ServerFrame::Typing { .. } => "typing",
            ServerFrame::Presence { .. } => "presence",
            ServerFrame::Rooms { .. } => "rooms",
            ServerFrame::Pong => "pong",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Reconnect { .. } => "reconnect",
        }
    }

    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, id: Option<String>) -> ServerFrame {
        ServerFrame::Error {
            code,
            message: message.into(),
            id,
        }
    }

    /// Parses one text frame from a server.
    pub fn from_json(text: &str) -> Result<ServerFrame, serde_json::Error> {
        expect_object(text)?;
        serde_json::from_str(text)
    }

    /// The JSON text of this frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialise")
    }
}

/// Refuses a frame that is not a JSON object. Serde's internally tagged enums
/// also accept a JSON array holding the tag and then the fields in order
/// (`["ping"]`, `["leave","general"]`), but a frame is "one JSON object with
/// a `type` tag".
fn expect_object(text: &str) -> Result<(), serde_json::Error> {
    if text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        Ok(())
    } else {
        Err(serde::de::Error::custom("a frame must be a JSON object"))
    }
}

/// Every `type` tag a client may send, in protocol order.
pub const CLIENT_FRAME_TYPES: [&str; 9] = [
    "hello", "join", "leave", "send", "history", "typing", "rooms", "ping", "refresh",
];

/// Every `type` tag a server may send, in protocol order.
pub const SERVER_FRAME_TYPES: [&str; 12] = [
    "welcome",
    "joined",
    "left",
    "ack",
    "message",
    "history",
    "typing",
    "presence",
    "rooms",
    "pong",
    "error",
    "reconnect",
];
