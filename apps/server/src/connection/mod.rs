//! One task per WebSocket: reads frames, checks them through [`protocol`]
//! and [`crate::codec`], asks the [`Hub`] to act, and writes replies and
//! the frames the hub queued in this connection's bounded outbox.
//!
//! Owns the session state of one client (user, joined rooms, rate limit).
//! Pings and the idle timeout are the instance's ([`live::keepalive`]).
//! Does not own room
//! state (the hub does) or storage (the engine does).
//!
//! By step: [`hello`] (sign-in), [`frames`] (each client frame), this
//! module (the task's loop, writing the outbox, replies, closing), and
//! [`live`] (the registry shutdown goes through).
//!
//! **Invariant:** for each joined room the client sees `joined` first, then
//! the room's messages in offset order, each once: the room is opened in
//! the outbox, at the offset of `joined`, only once `joined` went out
//! (see [`crate::outbox`]).

mod frames;
mod hello;
mod live;

pub(crate) use self::live::{keepalive, Live};

use crate::codec::{encode, Wire};
use crate::config::Config;
use crate::cost::{AddressKey, Bucket, Costs, Payer};
use crate::engine::EngineError;
use crate::hub::{ConnId, Hub};
use crate::metrics as m;
use crate::outbox::{Outbox, Woken};
use crate::session::Sessions;
use crate::ws::Socket;
use futures_util::StreamExt;
use protocol::limits::{BAD_FRAME_LIMIT, BAD_FRAME_WINDOW_SECS};
use protocol::{CloseCode, ErrorCode, ReconnectReason, RoomName, ServerFrame, User};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// What every connection of an instance shares.
pub(crate) struct ConnContext {
    pub(crate) config: Arc<Config>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) sessions: Sessions,
    /// Open connections; [`Live::shut_down`] when the instance stops.
    pub(crate) live: Live,
    /// What frames cost, and the per-user and per-address buckets.
    pub(crate) costs: Costs,
    /// The host app's tokens and private rooms.
    pub(crate) identity: crate::identity::Identity,
}

/// How a connection ends.
enum End {
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
    /// The peer is gone (closed, errored, or silent past the idle timeout).
    Gone,
}

/// A joined room, as this connection sees it (the outbox keeps the last
/// offset written to the client).
struct JoinedRoom {
    name: RoomName,
    /// The hub's key of the room: the same `Arc` every
    /// [`crate::outbox::Outbound`] of the room carries.
    key: Arc<str>,
}

/// Longest pause of a connection's reading after a refused frame.
const MAX_READ_PAUSE: Duration = Duration::from_secs(5);

/// Serves one upgraded WebSocket until it closes.
///
/// Not an `async fn`: the connection is built before the future, so the
/// future holds it once instead of also keeping room for the socket it was
/// made from. Every open connection keeps this future for its whole life.
/// `request_id`: the upgrade request's id (`x-request-id`), a field of
/// the connection's span. That span is a root: as the request span's child
/// it kept the request span alive (and its fields formatted, for the logs)
/// as long as the connection, ~0.5 KB per connection.
pub(crate) fn serve(
    socket: Socket,
    outbox: Arc<Outbox>,
    ctx: Arc<ConnContext>,
    id: ConnId,
    ip: IpAddr,
    request_id: String,
) -> impl std::future::Future<Output = ()> + Send {
    let span = tracing::info_span!(
        parent: None,
        "conn",
        conn = id,
        request_id = request_id.as_str(),
        user = tracing::field::Empty,
        server = %ctx.config.instance_id
    );
    drop(request_id);
    let mut conn = Connection::new(socket, outbox, ctx, id, ip);
    conn.ctx.live.add(id, conn.outbox.clone());
    async move {
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        let end = conn.run().await;
        // Boxed, like every step that runs for a moment only (see `run`).
        Box::pin(conn.finish(end)).await;
        conn.ctx.live.remove(conn.id);
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
    }
    .instrument(span)
}

struct Connection {
    ctx: Arc<ConnContext>,
    socket: Socket,
    id: ConnId,
    /// Shared with every room membership of this connection.
    user: Option<Arc<User>>,
    /// Joined rooms (at most `max_rooms_per_conn`; a short list scanned by
    /// pointer is cheaper per delivered message than hashing the name).
    rooms: Vec<JoinedRoom>,
    /// The socket's write side, shared with the hub.
    outbox: Arc<Outbox>,
    /// The connection's bucket and its address's key.
    payer: Payer,
    /// Set when a frame was refused `rate_limited`: the socket is not read
    /// until it fires (when the bucket holds the frame's cost again, at
    /// most [`MAX_READ_PAUSE`]), so a client that keeps sending over its
    /// limit waits on TCP instead of costing a refusal per frame. The
    /// outbox is still written meanwhile. Boxed: allocated only then.
    paused: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the recent `bad_frame` errors were sent (at most
    /// [`BAD_FRAME_LIMIT`] kept).
    bad_frames: VecDeque<Instant>,
    /// Set when a drain asked the client to reconnect: the connection is
    /// closed with 1012 when it fires, if the client has not left by then.
    /// Boxed: allocated only then.
    leave_by: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set when the session signed in with a host-app token: what it
    /// grants, and when it ends. Boxed: guests pay one pointer.
    host: Option<Box<HostGrant>>,
}

/// What a host-app token grants a connection (PROTOCOL.md "Host identity").
struct HostGrant {
    /// The token's `rooms` claim: the private rooms it may join.
    rooms: Vec<String>,
    /// Fires at the token's `exp` (moved by a `refresh`): the connection
    /// closes with 4001.
    expiry: Pin<Box<tokio::time::Sleep>>,
}

/// How long after the `delay_ms` of a drain's `reconnect` the instance
/// closes a client that is still connected (PROTOCOL.md, "Drain").
pub(crate) const DRAIN_LINGER: Duration = Duration::from_secs(2);

impl Connection {
    fn new(
        socket: Socket,
        outbox: Arc<Outbox>,
        ctx: Arc<ConnContext>,
        id: ConnId,
        ip: IpAddr,
    ) -> Connection {
        Connection {
            socket,
            id,
            user: None,
            rooms: Vec::new(),
            outbox,
            payer: Payer {
                bucket: Bucket::new(Instant::now()),
                address: AddressKey::of(ip),
            },
            paused: None,
            bad_frames: VecDeque::new(),
            leave_by: None,
            host: None,
            ctx,
        }
    }

    /// The connection's life. Each step's future (hello, writing a batch,
    /// handling a frame, a ping, the goodbye) is boxed: it lives for a
    /// moment, and inline it would be part of the future every open
    /// connection keeps, sized for the largest step.
    async fn run(&mut self) -> End {
        if let Err(end) = Box::pin(self.hello()).await {
            return end;
        }
        // Pings and the idle timeout are the instance's keepalive
        // ([`live::keepalive`]): no timer per connection.
        // Made once, not per loop turn: re-creating it registered and
        // dropped a waiter per delivered message. Shutdown and kicks come
        // through the outbox too (see `Live`).
        let outbox = self.outbox.clone();
        let outbox_ready = outbox.changed();
        tokio::pin!(outbox_ready);
        loop {
            let step = tokio::select! {
                biased;
                () = &mut outbox_ready => {
                    outbox_ready.set(outbox.changed());
                    Box::pin(self.forward()).await
                }
                msg = self.socket.next(), if self.paused.is_none() => {
                    Box::pin(self.on_socket_message(msg)).await
                }
                () = async { self.paused.as_mut().expect("paused").await }, if self.paused.is_some() => {
                    self.paused = None;
                    Ok(())
                }
                () = async { self.leave_by.as_mut().expect("leave_by").await }, if self.leave_by.is_some() => {
                    Err(End::Close(CloseCode::ServiceRestart, "server shutting down"))
                }
                () = async { self.host.as_mut().expect("host").expiry.as_mut().await }, if self.host.is_some() => {
                    Err(End::Close(CloseCode::TokenExpired, "token expired"))
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Writes what waited for this task (frames of a room whose `joined`
    /// just went out, bytes the socket did not take); or closes as the hub
    /// (or shutdown) asked.
    async fn forward(&mut self) -> Result<(), End> {
        let mut closed = Vec::new();
        let unsent = match self.outbox.on_wake(&mut closed) {
            Woken::Ready { unsent } => unsent,
            Woken::Failed => return Err(End::Gone),
            Woken::Silent => {
                tracing::info!("peer silent past the idle timeout; dropping it");
                return Err(End::Gone);
            }
            Woken::Kicked(CloseCode::ServiceRestart) => return Err(self.shutting_down().await),
            Woken::Kicked(code) => return Err(End::Close(code, kick_reason(code))),
        };
        // The hub closed these rooms (the admin view): the client was told.
        for key in closed {
            self.rooms.retain(|r| !Arc::ptr_eq(&r.key, &key));
        }
        if let Some(delay) = self.outbox.take_reconnect() {
            Box::pin(self.reconnect_after(delay)).await?;
        }
        if unsent {
            self.flush().await?;
        }
        Ok(())
    }

    /// Waits until the socket took every byte written to the outbox: a
    /// client that does not take them within the write timeout is dropped
    /// (it reconnects and recovers by offset).
    async fn flush(&mut self) -> Result<(), End> {
        match tokio::time::timeout(self.write_timeout(), self.outbox.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                tracing::info!("write timed out; dropping the client");
                Err(End::Gone)
            }
        }
    }

    /// Writes one frame of this connection's own, after what waits, and
    /// waits until the socket took it.
    async fn write(&mut self, wire: &Wire) -> Result<(), End> {
        if self.outbox.write(wire.bytes()) {
            // Boxed: rare (the socket took the frame at once, as it almost
            // always does, or the peer is gone), and inline its timer would
            // size every reply's future.
            Box::pin(self.flush()).await?;
        }
        Ok(())
    }

    /// The session signed in (or refreshed) with host token `host`: its
    /// rooms claim now decides the private rooms it may join, and the
    /// connection ends at its `exp`.
    fn hold_host_session(&mut self, host: crate::identity::HostSession) {
        let left = host
            .expires
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        let expiry = Box::pin(tokio::time::sleep(left));
        self.host = Some(Box::new(HostGrant {
            rooms: host.rooms,
            expiry,
        }));
    }

    /// The private rooms this session may join: its token's `rooms` claim,
    /// none for a guest.
    fn host_rooms(&self) -> Option<&[String]> {
        self.host.as_deref().map(|h| h.rooms.as_slice())
    }

    /// A drain asked this client to reconnect after `delay`: tells it,
    /// and closes the connection [`DRAIN_LINGER`] after that.
    async fn reconnect_after(&mut self, delay: Duration) -> Result<(), End> {
        self.reply(&ServerFrame::Reconnect {
            reason: ReconnectReason::Shutdown,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        })
        .await?;
        self.leave_by = Some(Box::pin(tokio::time::sleep(delay + DRAIN_LINGER)));
        Ok(())
    }

    async fn shutting_down(&mut self) -> End {
        let frame = ServerFrame::Reconnect {
            reason: ReconnectReason::Shutdown,
            delay_ms: 0,
        };
        match self.reply(&frame).await {
            Ok(()) => End::Close(CloseCode::ServiceRestart, "server shutting down"),
            Err(end) => end,
        }
    }

    /// Sends a direct reply to this client.
    async fn reply(&mut self, frame: &ServerFrame) -> Result<(), End> {
        self.reply_len(frame).await.map(drop)
    }

    /// [`Connection::reply`], answering how many bytes were sent.
    async fn reply_len(&mut self, frame: &ServerFrame) -> Result<usize, End> {
        m::frame_out(frame.kind());
        let wire = encode(frame);
        self.write(&wire).await?;
        Ok(wire.payload_len())
    }

    /// Sends an `error` frame; `bad_frame` errors count toward the flood rule.
    async fn error(
        &mut self,
        code: ErrorCode,
        message: &str,
        id: Option<String>,
    ) -> Result<(), End> {
        metrics::counter!(m::REJECTED_FRAMES, "code" => code.as_str()).increment(1);
        self.reply(&ServerFrame::error(code, message, id)).await?;
        if code == ErrorCode::BadFrame {
            let now = Instant::now();
            if self.bad_frames.len() == BAD_FRAME_LIMIT {
                self.bad_frames.pop_front();
            }
            self.bad_frames.push_back(now);
            let window = Duration::from_secs(BAD_FRAME_WINDOW_SECS);
            if self.bad_frames.len() == BAD_FRAME_LIMIT
                && now.duration_since(self.bad_frames[0]) <= window
            {
                return Err(End::Close(
                    CloseCode::PolicyViolation,
                    "too many bad frames",
                ));
            }
        }
        Ok(())
    }

    async fn unavailable(&mut self, e: EngineError, id: Option<String>) -> Result<(), End> {
        metrics::counter!(m::ENGINE_ERRORS, "engine" => self.ctx.hub.engine_kind()).increment(1);
        tracing::warn!(error = %e, "engine call failed");
        self.error(
            ErrorCode::Unavailable,
            "the shared store is unavailable; retry shortly",
            id,
        )
        .await
    }

    fn write_timeout(&self) -> Duration {
        self.ctx.config.write_timeout
    }

    fn count_in(&self, kind: &'static str) {
        m::frame_in(kind);
    }

    /// Leaves every room and closes the socket as `end` says.
    async fn finish(&mut self, end: End) {
        for room in std::mem::take(&mut self.rooms) {
            self.ctx.hub.leave(&room.name, self.id).await;
        }
        if let End::Close(code, reason) = end {
            tracing::debug!(code = code.code(), reason, "closing");
            let _ = self.write(&Wire::close(code.code(), reason)).await;
        }
        // A member entry the hub may still hold keeps no socket open.
        self.outbox.close();
    }
}

fn kick_reason(code: CloseCode) -> &'static str {
    match code {
        CloseCode::TryAgainLater => "too slow: reconnect and re-join with since",
        CloseCode::PolicyViolation => "disconnected by an administrator",
        _ => "closed by the server",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of the future a function of six arguments returns.
    fn future_size<A, B, C, D, E, G, F: std::future::Future>(
        _: fn(A, B, C, D, E, G) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every open connection keeps this future in its task for its whole
    /// life, so its size is memory per connection; the hello phase and the
    /// frame handler are boxed out of it. A regression guard, not a target.
    #[test]
    fn the_per_connection_future_stays_small() {
        let size = future_size(serve);
        eprintln!(
            "connection future: {size} bytes, of which the Connection {} and its socket {}",
            std::mem::size_of::<Connection>(),
            std::mem::size_of::<Socket>(),
        );
        // 944 bytes when written (it was 2,408 before the steps were boxed).
        assert!(size <= 1152, "connection future grew to {size} bytes");
    }
}
