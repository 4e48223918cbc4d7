//! The protocol's documented limits. Servers may be configured tighter for
//! rates and counts, never looser for the value rules (a client relies on
//! these to validate before sending).

/// Largest frame a client may send, in bytes; a larger one closes the socket
/// with [`crate::CloseCode::MessageTooBig`].
pub const MAX_CLIENT_FRAME_BYTES: usize = 64 * 1024;

/// Longest user name, in Unicode scalar values after trimming.
pub const NAME_MAX_CHARS: usize = 32;

/// Longest room name, in bytes (room names are ASCII `[a-z0-9_-]`).
pub const ROOM_MAX_CHARS: usize = 64;

/// Longest message body, in Unicode scalar values after trimming.
pub const BODY_MAX_CHARS: usize = 4000;

/// Longest client-chosen message id, in Unicode scalar values.
pub const CLIENT_ID_MAX_CHARS: usize = 64;

/// Messages in `joined.history` when the client gives no `since`.
pub const DEFAULT_JOIN_HISTORY: usize = 50;

/// Default `limit` of a `history` request.
pub const DEFAULT_HISTORY_LIMIT: u64 = 50;

/// Largest `limit` of a `history` request: larger values are capped, not refused.
pub const MAX_HISTORY_LIMIT: u64 = 200;

/// Largest gap a `join` with `since` replays by default; a larger gap is
/// answered with the newest messages and `recovered: false`.
pub const DEFAULT_MAX_REPLAY: u64 = 1000;

/// Default refill of the per-connection token bucket, in cost units per
/// second (v1.1 "Costs": every client frame costs units; v1 counted `send`
/// and `typing` only, one unit each).
pub const DEFAULT_RATE_PER_SEC: u32 = 20;

/// Default burst of the per-connection token bucket, in cost units.
pub const DEFAULT_RATE_BURST: u32 = 40;

/// Default refill of the per-user bucket (all of a user's connections on
/// one instance), in cost units per second.
pub const DEFAULT_USER_RATE_PER_SEC: u32 = 40;

/// Default burst of the per-user bucket, in cost units.
pub const DEFAULT_USER_RATE_BURST: u32 = 80;

/// Default refill of the per-address bucket (every connection from one
/// IPv4 address or one IPv6 /64, on one instance), in cost units per second.
pub const DEFAULT_ADDRESS_RATE_PER_SEC: u32 = 400;

/// Default burst of the per-address bucket, in cost units.
pub const DEFAULT_ADDRESS_RATE_BURST: u32 = 800;

/// Default cost of each client frame, in units (v1.1 "Costs"), as
/// `type=units` pairs. `hello` costs nothing; `connect`, the WebSocket
/// upgrade, is paid from the address's bucket alone.
pub const DEFAULT_FRAME_COSTS: &str =
    "ping=1,typing=1,send=1,leave=1,join=2,history=2,rooms=5,connect=5";

/// A `joined` or `history` reply costs one more unit per this many bytes
/// it carries, so a replay costs by its size.
pub const DEFAULT_REPLY_BYTES_PER_UNIT: usize = 4 * 1024;

/// Default bound of a `joined` or `history` reply, in bytes of JSON: the
/// newest messages that fit (at least one) are sent, and the client
/// scrolls back for more. A `joined` cut by it says `recovered: false`.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 256 * 1024;

/// Largest page of a `rooms` reply, also the default `limit`.
pub const ROOMS_PAGE_MAX: u64 = 100;

/// `bad_frame` errors tolerated within [`BAD_FRAME_WINDOW_SECS`] before the
/// socket is closed with [`crate::CloseCode::PolicyViolation`].
pub const BAD_FRAME_LIMIT: usize = 10;

/// Window of the `bad_frame` flood rule, in seconds.
pub const BAD_FRAME_WINDOW_SECS: u64 = 10;

/// How long a server remembers a (user, client id) pair for dedupe, at least.
pub const DEDUPE_WINDOW_SECS: u64 = 5 * 60;

/// Default lifetime of a session token, in seconds (7 days).
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 7 * 24 * 60 * 60;
/// Default maximum lifetime of a session across token renewals, seconds
/// (30 days; PROTOCOL.md v1.1 "Sessions").
pub const DEFAULT_SESSION_MAX_LIFETIME_SECS: u64 = 30 * 24 * 60 * 60;
