//! Error codes carried in `error` frames and WebSocket close codes, with what
//! a client is expected to do about each.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The `code` of an `error` frame. What a client branches on; the `message`
/// beside it is for humans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, unknown `type`, missing field, invalid body or client
    /// id, or a second `hello`.
    BadFrame,
    /// The `hello` name is empty, too long or holds control characters.
    BadName,
    /// The room name is not 1–64 characters of `[a-z0-9_-]`.
    BadRoom,
    /// The frame names a room this connection has not joined.
    NotJoined,
    /// A body longer than the limit.
    TooLarge,
    /// The per-connection token bucket is empty; the frame was not stored.
    RateLimited,
    /// The shared store is unreachable; the client may retry.
    Unavailable,
    /// A frame before `hello`, or an invalid or expired token.
    Unauthorized,
    /// Extension of v1: the connection already holds the server's maximum
    /// number of joined rooms; leave one first.
    TooManyRooms,
    /// Extension of v1 (PROTOCOL.md "Host identity"): the room is private
    /// and this session's token does not list it.
    Forbidden,
    /// A code this side does not know (sent by a newer server, v1.1): the
    /// frame still parses, and a client treats it as a plain refusal with
    /// a message for humans. Never sent.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code, in declaration order (used by docs and tests).
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadFrame,
        ErrorCode::BadName,
        ErrorCode::BadRoom,
        ErrorCode::NotJoined,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Unauthorized,
        ErrorCode::TooManyRooms,
        ErrorCode::Forbidden,
    ];

    /// The wire spelling, e.g. `"bad_frame"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::BadName => "bad_name",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes a server uses, split into a terminal range (the
/// client must fix the cause) and a reconnect range (the client reconnects
/// and re-joins with `since`, losing nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1008: frame before `hello`, bad name, bad token, `bad_frame` flood.
    PolicyViolation,
    /// 1009: a client frame over [`crate::limits::MAX_CLIENT_FRAME_BYTES`].
    MessageTooBig,
    /// 1011: the instance hit an internal error.
    InternalError,
    /// 1012: the instance is shutting down.
    ServiceRestart,
    /// 1013: the client read too slowly and its outbound queue filled.
    TryAgainLater,
    /// 4001 (extension, PROTOCOL.md "Host identity"): the host-app token
    /// the session signed in with expired and no `refresh` replaced it.
    TokenExpired,
}

impl CloseCode {
    /// Every code the server sends.
    pub const ALL: [CloseCode; 6] = [
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::ServiceRestart,
        CloseCode::TryAgainLater,
        CloseCode::TokenExpired,
    ];

    /// The numeric code on the wire.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::ServiceRestart => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::TokenExpired => 4001,
        }
    }

    /// The code for a number, if it is one the server sends.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether a client should reconnect after this close: true for the
    /// reconnect range (1011–1013), false for the terminal one (1008, 1009,
    /// and 4001: a fresh token must come from the host app first).
    pub fn should_reconnect(self) -> bool {
        matches!(
            self,
            CloseCode::InternalError | CloseCode::ServiceRestart | CloseCode::TryAgainLater
        )
    }

    /// Whether the client should reconnect at once rather than back off
    /// (only a restart: the other instances are healthy).
    pub fn reconnect_immediately(self) -> bool {
        self == CloseCode::ServiceRestart
    }
}
