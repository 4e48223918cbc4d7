//! The connection's lifecycle as the model sees it: the states the user is
//! shown ([`Conn`]), the `hello` that opens a connection, and what a close
//! code decides ([`ChatState::apply_close`]: reconnect at once, after a
//! backoff with full jitter, or stop). Owns no socket or timer; the driver
//! (`client.rs`) carries the decisions out.

use super::{ChatState, SendState};
use protocol::{ClientFrame, CloseCode};

/// First reconnect delay cap; doubles per failed attempt.
pub const BACKOFF_BASE_MS: u64 = 500;
/// Largest reconnect delay cap.
pub const BACKOFF_MAX_MS: u64 = 15_000;

/// The connection as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    /// Not connected and not trying: no name yet (`reason: None`) or a
    /// terminal close the user must act on.
    Offline { reason: Option<String> },
    /// A socket is opening, or open and waiting for `welcome`.
    Connecting { attempt: u32 },
    /// `welcome` received from the instance `server`.
    Connected { server: String },
    /// Waiting to reconnect at `at_ms` (ms since the Unix epoch).
    Reconnecting { attempt: u32, at_ms: i64 },
}

impl Conn {
    /// The stable name of the state, for `data-state` and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Conn::Offline { .. } => "offline",
            Conn::Connecting { .. } => "connecting",
            Conn::Connected { .. } => "connected",
            Conn::Reconnecting { .. } => "reconnecting",
        }
    }
}

/// What to do after the socket closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// Open a new socket after this many milliseconds (0: at once).
    ReconnectIn(u64),
    /// Stop: the cause needs the user (shown in [`Conn::Offline`]).
    Stop,
}

impl ChatState {
    pub fn is_connected(&self) -> bool {
        matches!(self.conn, Conn::Connected { .. })
    }

    /// The `hello` that opens every connection.
    pub fn hello(&self) -> Option<ClientFrame> {
        Some(ClientFrame::Hello {
            name: self.name.clone()?,
            token: self.token.clone(),
        })
    }

    /// A socket is being opened.
    pub fn connecting(&mut self) {
        self.conn = Conn::Connecting {
            attempt: self.attempt + 1,
        };
    }

    /// The socket closed with `code` at `now`. `jitter` is uniform in [0, 1)
    /// and spreads reconnects (full jitter). Every room needs a new `joined`
    /// and every unacknowledged send goes again after it.
    pub fn apply_close(&mut self, code: u16, now: i64, jitter: f64) -> CloseAction {
        self.drop_connection();
        if self.token_rejected {
            // The token is bad or expired: come back as a new identity.
            self.token_rejected = false;
            self.token = None;
            self.conn = Conn::Connecting { attempt: 1 };
            return CloseAction::ReconnectIn(0);
        }
        let close = CloseCode::from_code(code);
        if let Some(c) = close.filter(|c| !c.should_reconnect()) {
            let why = self.last_error.take().unwrap_or_else(|| match c {
                CloseCode::MessageTooBig => "a frame was too large".to_owned(),
                CloseCode::TokenExpired => "the sign-in from the host app expired".to_owned(),
                _ => "the server refused this session".to_owned(),
            });
            self.conn = Conn::Offline {
                reason: Some(format!("{why} (close {code})")),
            };
            return CloseAction::Stop;
        }
        if close.is_some_and(CloseCode::reconnect_immediately) {
            self.attempt = 0;
            self.conn = Conn::Connecting { attempt: 1 };
            return CloseAction::ReconnectIn(0);
        }
        self.attempt += 1;
        let delay = backoff_ms(self.attempt, jitter);
        self.conn = Conn::Reconnecting {
            attempt: self.attempt,
            at_ms: now + delay as i64,
        };
        CloseAction::ReconnectIn(delay)
    }

    /// Forgets what only the closed connection knew: which rooms are live,
    /// outstanding requests, typing; sends written but not acked go back to
    /// the queue.
    fn drop_connection(&mut self) {
        for r in self.rooms.values_mut() {
            r.live = false;
            r.loading_older = false;
            r.typing.clear();
            for p in &mut r.pending {
                if p.state == SendState::Sent {
                    p.state = SendState::Queued;
                }
            }
        }
        self.joins_in_flight.clear();
        // The next `welcome` joins every room again.
        self.join_retries.clear();
    }

    /// Stops for good (the user changed their name or asked to go offline).
    pub fn go_offline(&mut self, reason: Option<String>) {
        self.drop_connection();
        self.token_rejected = false;
        self.attempt = 0;
        self.conn = Conn::Offline { reason };
    }
}

/// The reconnect delay before attempt `attempt` (1-based): uniform in
/// [0, min(max, base · 2^(attempt−1))) — "full jitter".
pub fn backoff_ms(attempt: u32, jitter: f64) -> u64 {
    let cap = BACKOFF_BASE_MS
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(BACKOFF_MAX_MS);
    (cap as f64 * jitter.clamp(0.0, 1.0)) as u64
}
