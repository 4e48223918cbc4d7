//! One task per WebSocket: reads frames, checks them through [`protocol`]
//! and [`crate::codec`], asks the [`Hub`] to act, and writes replies and
//! the frames the hub queued in this connection's bounded outbox.
//!
//! Owns the session state of one client (user, joined rooms and the last
//! offset delivered per room, rate limit, heartbeats). Does not own room
//! state (the hub does) or storage (the engine does).
//!
//! **Invariant:** for each joined room the client sees `joined` first, then
//! the room's messages in offset order, each once: outbox messages at or
//! below the last delivered offset (already in `joined.history`) are skipped.

use crate::codec::{self, DecodeError, Decoded};
use crate::config::Config;
use crate::engine::{EngineError, NewMessage};
use crate::hub::{encode, ConnId, Hub, Member, Outbound};
use crate::metrics as m;
use crate::outbox::Outbox;
use crate::session::Sessions;
use crate::ws::{self, Socket};
use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use protocol::limits::{
    BAD_FRAME_LIMIT, BAD_FRAME_WINDOW_SECS, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT,
};
use protocol::{
    Body, ClientFrame, ClientId, CloseCode, ErrorCode, Name, ReconnectReason, RoomName,
    ServerFrame, Since, User,
};
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self as tungstenite, Message, Utf8Bytes};
use tracing::Instrument;

/// What every connection of an instance shares.
pub struct ConnContext {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub sessions: Sessions,
    /// Open connections; [`Live::shut_down`] when the instance stops.
    pub live: Live,
}

/// The outboxes of this instance's open connections, and whether it is
/// shutting down. Shutdown reaches each connection, in `hello` or after,
/// through the outbox it already watches (a kick with 1012: it sends
/// `reconnect` and closes). Polling a shutdown token instead meant locking a
/// mutex per connection on every delivery (one shared mutex for clones of
/// the token; fan-out 1 × 1000 p99 went from ~17 to ~14 ms without it).
#[derive(Debug, Default)]
pub struct Live {
    state: std::sync::Mutex<LiveState>,
}

#[derive(Debug, Default)]
struct LiveState {
    outboxes: std::collections::HashMap<ConnId, Arc<Outbox>>,
    closing: bool,
}

impl Live {
    /// Registers a connection; one that arrives during shutdown is told at
    /// once.
    fn add(&self, id: ConnId, outbox: Arc<Outbox>) {
        let mut state = self.state.lock().expect("live lock");
        if state.closing {
            outbox.kick(CloseCode::ServiceRestart);
        }
        state.outboxes.insert(id, outbox);
    }

    fn remove(&self, id: ConnId) {
        self.state.lock().expect("live lock").outboxes.remove(&id);
    }

    /// Asks every open connection, and every later one, to send
    /// `reconnect` and close with 1012.
    pub fn shut_down(&self) {
        let mut state = self.state.lock().expect("live lock");
        state.closing = true;
        for outbox in state.outboxes.values() {
            outbox.kick(CloseCode::ServiceRestart);
        }
    }
}

/// How a connection ends.
enum End {
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
    /// The peer is gone (closed, errored, or silent past the idle timeout).
    Gone,
}

/// A joined room, as this connection sees it.
struct JoinedRoom {
    name: RoomName,
    /// The hub's key of the room: the same `Arc` every [`Outbound`] of the
    /// room carries, so matching an outbox item is a pointer comparison.
    key: Arc<str>,
    /// Last message offset written to the client for this room.
    delivered: u64,
}

/// Outbox items a connection keeps room for between drains; a burst beyond
/// it allocates for the burst only.
const KEPT_BATCH_CAPACITY: usize = 64;

/// Serves one upgraded WebSocket until it closes.
///
/// Not an `async fn`: the connection is built before the future, so the
/// future holds it once instead of also keeping room for the socket it was
/// made from. Every open connection keeps this future for its whole life.
pub fn serve(
    socket: Socket,
    ctx: Arc<ConnContext>,
    id: ConnId,
) -> impl std::future::Future<Output = ()> + Send {
    let span = tracing::info_span!(
        "conn",
        conn = id,
        user = tracing::field::Empty,
        server = %ctx.config.instance_id
    );
    let mut conn = Connection::new(socket, ctx, id);
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
    outbox: Arc<Outbox>,
    /// What the last drain of the outbox took (empty between drains).
    batch: VecDeque<Arc<Outbound>>,
    limiter: DefaultDirectRateLimiter,
    /// When the recent `bad_frame` errors were sent (at most
    /// [`BAD_FRAME_LIMIT`] kept).
    bad_frames: VecDeque<Instant>,
    last_seen: Instant,
}

impl Connection {
    fn new(socket: Socket, ctx: Arc<ConnContext>, id: ConnId) -> Connection {
        let cfg = &ctx.config;
        let quota = Quota::per_second(NonZeroU32::new(cfg.rate_per_sec).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(cfg.rate_burst).unwrap_or(NonZeroU32::MIN));
        Connection {
            socket,
            id,
            user: None,
            rooms: Vec::new(),
            outbox: Outbox::new(cfg.outbox_capacity),
            batch: VecDeque::new(),
            limiter: RateLimiter::direct(quota),
            bad_frames: VecDeque::new(),
            last_seen: Instant::now(),
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
        let mut ping = tokio::time::interval(self.ctx.config.ping_interval);
        ping.tick().await;
        // Made once, not per loop turn: re-creating it registered and
        // dropped a waiter per delivered message. Shutdown and kicks come
        // through the outbox too (see `Live`).
        let outbox = self.outbox.clone();
        let outbox_ready = outbox.ready();
        tokio::pin!(outbox_ready);
        loop {
            let step = tokio::select! {
                biased;
                () = &mut outbox_ready => {
                    outbox_ready.set(outbox.ready());
                    Box::pin(self.forward()).await
                }
                msg = self.socket.next() => Box::pin(self.on_message(msg)).await,
                _ = ping.tick() => Box::pin(self.heartbeat()).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Waits for `hello`, the only frame allowed first, and answers `welcome`.
    async fn hello(&mut self) -> Result<(), End> {
        let deadline = tokio::time::sleep(self.ctx.config.hello_timeout);
        tokio::pin!(deadline);
        let outbox = self.outbox.clone();
        let frame = loop {
            let msg = tokio::select! {
                // Nothing is queued before a join: this is a kick (shutdown).
                () = outbox.ready() => {
                    self.forward().await?;
                    continue;
                }
                _ = &mut deadline => {
                    self.error(ErrorCode::Unauthorized, "no hello in time", None).await?;
                    return Err(End::Close(CloseCode::PolicyViolation, "no hello"));
                }
                msg = self.socket.next() => msg,
            };
            let Some(Ok(msg)) = msg else {
                return Err(End::Gone);
            };
            self.last_seen = Instant::now();
            match codec::decode(&msg) {
                Ok(Decoded::Control) => {}
                Ok(Decoded::Close) => return Err(End::Gone),
                Ok(Decoded::Frame(frame)) => break Some(frame),
                Err(DecodeError::TooLarge(_)) => {
                    return Err(End::Close(CloseCode::MessageTooBig, "frame too large"))
                }
                Err(DecodeError::BadFrame { .. }) => break None,
            }
        };
        let Some(ClientFrame::Hello { name, token }) = frame else {
            self.count_in("invalid");
            self.error(
                ErrorCode::Unauthorized,
                "the first frame must be hello",
                None,
            )
            .await?;
            return Err(End::Close(CloseCode::PolicyViolation, "no hello"));
        };
        self.count_in("hello");
        let name = match Name::parse(&name) {
            Ok(name) => name,
            Err(e) => {
                self.error(e.code(), &e.to_string(), None).await?;
                return Err(End::Close(CloseCode::PolicyViolation, "bad name"));
            }
        };
        let now = SystemTime::now();
        let user_id = match token {
            None => Sessions::new_user_id(),
            Some(token) => match self.ctx.sessions.verify(&token, now) {
                Ok(id) => id,
                Err(e) => {
                    self.error(ErrorCode::Unauthorized, &e.to_string(), None)
                        .await?;
                    return Err(End::Close(CloseCode::PolicyViolation, "bad token"));
                }
            },
        };
        tracing::Span::current().record("user", user_id.as_str());
        let user = User {
            id: user_id,
            name: name.into_string(),
        };
        let welcome = ServerFrame::Welcome {
            protocol: protocol::PROTOCOL_VERSION,
            token: self.ctx.sessions.issue(&user.id, now),
            user: user.clone(),
            server: self.ctx.config.instance_id.clone(),
        };
        self.user = Some(Arc::new(user));
        self.reply(&welcome).await
    }

    async fn on_message(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), End> {
        let Some(Ok(msg)) = msg else {
            return Err(End::Gone);
        };
        self.last_seen = Instant::now();
        match codec::decode(&msg) {
            Ok(Decoded::Control) => Ok(()),
            Ok(Decoded::Close) => Err(End::Gone),
            Ok(Decoded::Frame(frame)) => {
                self.count_in(frame.kind());
                self.on_frame(frame).await
            }
            Err(DecodeError::TooLarge(_)) => {
                self.count_in("invalid");
                metrics::counter!(m::REJECTED_FRAMES, "code" => ErrorCode::TooLarge.as_str())
                    .increment(1);
                Err(End::Close(CloseCode::MessageTooBig, "frame over 64 KiB"))
            }
            Err(DecodeError::BadFrame { reason, id }) => {
                self.count_in("invalid");
                self.error(ErrorCode::BadFrame, &reason, id).await
            }
        }
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Result<(), End> {
        match frame {
            ClientFrame::Hello { .. } => {
                self.error(ErrorCode::BadFrame, "hello was already said", None)
                    .await
            }
            ClientFrame::Join { room, since } => self.join(&room, since).await,
            ClientFrame::Leave { room } => self.leave(&room).await,
            ClientFrame::Send { room, id, body } => self.send(&room, id, &body).await,
            ClientFrame::History {
                room,
                before,
                limit,
            } => self.history(&room, before, limit).await,
            ClientFrame::Typing { room } => self.typing(&room).await,
            ClientFrame::Rooms => match self.ctx.hub.rooms().await {
                Ok(rooms) => self.reply(&ServerFrame::Rooms { rooms }).await,
                Err(e) => self.unavailable(e, None).await,
            },
            ClientFrame::Ping => self.reply(&ServerFrame::Pong).await,
        }
    }

    /// Index of a joined room by name.
    fn joined(&self, room: &str) -> Option<usize> {
        self.rooms.iter().position(|r| r.name.as_str() == room)
    }

    fn user(&self) -> &User {
        self.user.as_ref().expect("user is set after hello")
    }

    /// Parses a room name, answering `bad_room` when it is not one.
    async fn room_name(&mut self, room: &str, id: Option<&str>) -> Result<Option<RoomName>, End> {
        match RoomName::parse(room) {
            Ok(name) => Ok(Some(name)),
            Err(e) => {
                self.error(e.code(), &e.to_string(), id.map(str::to_owned))
                    .await?;
                Ok(None)
            }
        }
    }

    /// A joined room's name, answering `bad_room` or `not_joined` otherwise.
    async fn joined_room(&mut self, room: &str, id: Option<&str>) -> Result<Option<RoomName>, End> {
        let Some(name) = self.room_name(room, id).await? else {
            return Ok(None);
        };
        if self.joined(name.as_str()).is_none() {
            self.error(
                ErrorCode::NotJoined,
                &format!("join room {name:?} first"),
                id.map(str::to_owned),
            )
            .await?;
            return Ok(None);
        }
        Ok(Some(name))
    }

    async fn join(&mut self, room: &str, since: Option<Since>) -> Result<(), End> {
        let Some(name) = self.room_name(room, None).await? else {
            return Ok(());
        };
        let max = self.ctx.config.max_rooms_per_conn;
        if self.joined(name.as_str()).is_none() && self.rooms.len() >= max {
            return self
                .error(
                    ErrorCode::TooManyRooms,
                    &format!("a connection may join at most {max} rooms; leave one first"),
                    None,
                )
                .await;
        }
        let member = Member {
            conn: self.id,
            user: self.user.clone().expect("user is set after hello"),
            outbox: self.outbox.clone(),
        };
        let joined = match self.ctx.hub.join(&name, member, since.as_ref()).await {
            Ok(joined) => joined,
            Err(e) => return self.unavailable(e, None).await,
        };
        let offset = joined.recovery.position.offset;
        match self.joined(name.as_str()) {
            Some(i) => self.rooms[i].delivered = self.rooms[i].delivered.max(offset),
            None => {
                // Exactly: most connections join one or two rooms.
                self.rooms.reserve_exact(1);
                self.rooms.push(JoinedRoom {
                    name: name.clone(),
                    key: joined.key.clone(),
                    delivered: offset,
                })
            }
        }
        let frame = ServerFrame::Joined {
            room: name.into_string(),
            epoch: joined.recovery.position.epoch.to_string(),
            offset,
            members: joined.members,
            history: joined.recovery.history,
            recovered: joined.recovery.recovered,
        };
        self.reply(&frame).await
    }

    async fn leave(&mut self, room: &str) -> Result<(), End> {
        let Some(name) = self.joined_room(room, None).await? else {
            return Ok(());
        };
        if let Some(i) = self.joined(name.as_str()) {
            self.rooms.swap_remove(i);
        }
        self.ctx.hub.leave(&name, self.id).await;
        self.reply(&ServerFrame::Left {
            room: name.into_string(),
        })
        .await
    }

    async fn send(&mut self, room: &str, id: String, body: &str) -> Result<(), End> {
        let client_id = match ClientId::parse(&id) {
            Ok(c) => c,
            Err(e) => return self.error(e.code(), &e.to_string(), Some(id)).await,
        };
        let Some(name) = self.joined_room(room, Some(&id)).await? else {
            return Ok(());
        };
        let body = match Body::parse(body) {
            Ok(b) => b,
            Err(e) => return self.error(e.code(), &e.to_string(), Some(id)).await,
        };
        if self.limiter.check().is_err() {
            return self
                .error(
                    ErrorCode::RateLimited,
                    "sending too fast; message not stored",
                    Some(id),
                )
                .await;
        }
        let msg = NewMessage {
            id: format!("m_{}", uuid::Uuid::now_v7().simple()),
            client_id: client_id.into_string(),
            from: User::clone(self.user()),
            body: body.into_string(),
            ts: now_ms(),
        };
        let started = Instant::now();
        match self.ctx.hub.publish(&name, msg).await {
            Ok(published) => {
                metrics::histogram!(m::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
                if !published.duplicate {
                    metrics::counter!(m::MESSAGES_PUBLISHED).increment(1);
                }
                self.reply(&ServerFrame::Ack {
                    id,
                    room: name.into_string(),
                    offset: published.offset,
                })
                .await
            }
            Err(e) => self.unavailable(e, Some(id)).await,
        }
    }

    async fn history(
        &mut self,
        room: &str,
        before: Option<u64>,
        limit: Option<u64>,
    ) -> Result<(), End> {
        let Some(name) = self.joined_room(room, None).await? else {
            return Ok(());
        };
        let limit = limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
            .min(MAX_HISTORY_LIMIT) as usize;
        match self.ctx.hub.history(&name, before, limit).await {
            Ok(messages) => {
                self.reply(&ServerFrame::History {
                    room: name.into_string(),
                    messages,
                })
                .await
            }
            Err(e) => self.unavailable(e, None).await,
        }
    }

    async fn typing(&mut self, room: &str) -> Result<(), End> {
        let Some(name) = self.joined_room(room, None).await? else {
            return Ok(());
        };
        if self.limiter.check().is_err() {
            return self
                .error(ErrorCode::RateLimited, "typing notices too fast", None)
                .await;
        }
        let user = self.user.clone().expect("user is set after hello");
        match self.ctx.hub.typing(&name, &user).await {
            Ok(()) => Ok(()),
            Err(e) => self.unavailable(e, None).await,
        }
    }

    /// Writes what the hub queued since the last drain, flushed once; or
    /// closes as the hub (or shutdown) asked.
    async fn forward(&mut self) -> Result<(), End> {
        if let Some(code) = self.outbox.drain(&mut self.batch) {
            self.batch.clear();
            if code == CloseCode::ServiceRestart {
                return Err(self.shutting_down().await);
            }
            return Err(End::Close(code, kick_reason(code)));
        }
        let mut pending = false;
        while let Some(item) = self.batch.pop_front() {
            if let Some(frame) = self.admit(&item) {
                pending = true;
                if let Err(end) =
                    timed(self.write_timeout(), ws::feed_text(&mut self.socket, frame)).await
                {
                    self.batch.clear();
                    return Err(end);
                }
            }
        }
        // A burst grew the buffer; an idle connection should not keep it.
        if self.batch.capacity() > KEPT_BATCH_CAPACITY {
            self.batch = VecDeque::new();
        }
        if pending {
            timed(self.write_timeout(), self.socket.flush()).await?;
        }
        Ok(())
    }

    /// Whether an outbox item goes to the client: only for joined rooms, and
    /// a message only if newer than the last one delivered in its room.
    fn admit(&mut self, item: &Outbound) -> Option<Utf8Bytes> {
        let room = self
            .rooms
            .iter_mut()
            .find(|r| Arc::ptr_eq(&r.key, &item.room))?;
        if item.offset != 0 {
            if item.offset <= room.delivered {
                return None;
            }
            room.delivered = item.offset;
        }
        Some(item.frame.clone())
    }

    async fn heartbeat(&mut self) -> Result<(), End> {
        if self.last_seen.elapsed() > self.ctx.config.idle_timeout {
            tracing::info!("peer silent past the idle timeout; dropping it");
            return Err(End::Gone);
        }
        timed(
            self.write_timeout(),
            self.socket.send(Message::Ping(Default::default())),
        )
        .await
    }

    async fn shutting_down(&mut self) -> End {
        let frame = ServerFrame::Reconnect {
            reason: ReconnectReason::Shutdown,
        };
        match self.reply(&frame).await {
            Ok(()) => End::Close(CloseCode::ServiceRestart, "server shutting down"),
            Err(end) => end,
        }
    }

    /// Sends a direct reply to this client.
    async fn reply(&mut self, frame: &ServerFrame) -> Result<(), End> {
        metrics::counter!(m::FRAMES_OUT, "type" => frame.kind()).increment(1);
        let bytes = encode(frame);
        let limit = self.write_timeout();
        let socket = &mut self.socket;
        timed(limit, async move {
            ws::feed_text(socket, bytes).await?;
            socket.flush().await
        })
        .await
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
        metrics::counter!(m::FRAMES_IN, "type" => kind).increment(1);
    }

    /// Leaves every room and closes the socket as `end` says.
    async fn finish(&mut self, end: End) {
        for room in std::mem::take(&mut self.rooms) {
            self.ctx.hub.leave(&room.name, self.id).await;
        }
        if let End::Close(code, reason) = end {
            tracing::debug!(code = code.code(), reason, "closing");
            let close = Message::Close(Some(CloseFrame {
                code: code.code().into(),
                reason: Utf8Bytes::from_static(reason),
            }));
            let _ =
                tokio::time::timeout(self.ctx.config.write_timeout, self.socket.send(close)).await;
        }
    }
}

/// Runs one write within `limit`: a client that does not take a frame in
/// that time is dropped (it reconnects and recovers by offset).
async fn timed(
    limit: Duration,
    io: impl std::future::Future<Output = Result<(), tungstenite::Error>>,
) -> Result<(), End> {
    match tokio::time::timeout(limit, io).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => {
            tracing::info!("write timed out; dropping the client");
            Err(End::Gone)
        }
    }
}

fn kick_reason(code: CloseCode) -> &'static str {
    match code {
        CloseCode::TryAgainLater => "too slow: reconnect and re-join with since",
        _ => "closed by the server",
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of the future a function of three arguments returns.
    fn future_size<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
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
