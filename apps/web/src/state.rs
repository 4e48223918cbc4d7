//! The client's model of the chat, in plain Rust: what this tab knows about
//! its session, rooms, messages, pending sends, members and typing users, and
//! the connection's lifecycle.
//!
//! Owns every protocol decision of the client: how a server frame changes
//! the model ([`ChatState::apply`]), which client frames answer it (re-join
//! with `since`, resend of pending messages with their client ids), how a
//! close code turns into a reconnect delay ([`ChatState::on_close`]), and the
//! rows the views show ([`ChatState::rows`]). Does not own IO: no socket,
//! timer, storage or DOM (that is `client.rs` and the views), so every rule
//! here is unit-tested natively.
//!
//! **Invariants:** a room's `messages` are sorted by offset with no
//! duplicates, all `<= last_seen`; a message with an offset at or below
//! `last_seen` that arrives live is a duplicate and is dropped; a pending
//! send leaves `pending` once the server's copy of it (same client id, sent
//! by us) is in `messages` or below `last_seen`, so nothing shows twice.

use protocol::{
    Body, ChatMessage, ClientFrame, CloseCode, ErrorCode, RoomInfo, RoomName, ServerFrame, Since,
    User,
};
use std::collections::{BTreeMap, VecDeque};

/// The room every new session joins.
pub const DEFAULT_ROOM: &str = "general";
/// How long a typing notice is shown after it arrives.
pub const TYPING_SHOW_MS: i64 = 3_000;
/// Least time between two `typing` frames this client sends for a room.
pub const TYPING_SEND_EVERY_MS: i64 = 2_000;
/// Consecutive messages of one sender closer than this are grouped.
pub const GROUP_WINDOW_MS: i64 = 5 * 60 * 1_000;
/// Messages asked for per scroll-back request.
pub const HISTORY_PAGE: u64 = 50;
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

/// Where a message of ours is on its way to the room.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SendState {
    /// Not written on the current connection (offline, or before re-join).
    Queued,
    /// Written; no `ack` yet.
    Sent,
    /// Stored by the server at this offset; its `message` has not arrived.
    Acked(u64),
    /// Refused. `retry`: the cause is transient (rate limit, store
    /// unavailable) and the send is tried again later with the same id.
    Failed { reason: String, retry: bool },
}

/// A message this tab sent that the room has not shown back yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub client_id: String,
    pub body: String,
    /// Local time it was composed, for display and grouping.
    pub created_ms: i64,
    pub state: SendState,
}

/// A room this tab is in (joined, or to be joined once connected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub name: String,
    /// Whether the current connection has had `joined` for it.
    pub joined: bool,
    /// The epoch of `messages`; `None` until the first `joined`.
    pub epoch: Option<String>,
    /// Highest offset received live or in `joined`; the `since` of a re-join.
    pub last_seen: u64,
    /// Known messages, ascending by offset.
    pub messages: Vec<ChatMessage>,
    /// Our sends not yet shown back, in the order they were composed.
    pub pending: Vec<Pending>,
    /// Current members by user id (a set: duplicates are harmless).
    pub members: BTreeMap<String, User>,
    /// Users typing, by id, with the time their notice expires.
    pub typing: BTreeMap<String, (User, i64)>,
    /// Messages from others that arrived while the room was not shown.
    pub unread: u32,
    /// A `history` request is outstanding.
    pub loading_older: bool,
    /// Nothing older than `messages[0]` exists (or can be fetched).
    pub complete: bool,
    /// When we last sent `typing` here.
    last_typing_sent: Option<i64>,
}

impl Room {
    fn new(name: &str) -> Room {
        Room {
            name: name.to_owned(),
            joined: false,
            epoch: None,
            last_seen: 0,
            messages: Vec::new(),
            pending: Vec::new(),
            members: BTreeMap::new(),
            typing: BTreeMap::new(),
            unread: 0,
            loading_older: false,
            complete: false,
            last_typing_sent: None,
        }
    }

    /// The `join` frame for this room: with `since` when we have a position.
    fn join_frame(&self) -> ClientFrame {
        ClientFrame::Join {
            room: self.name.clone(),
            since: self.epoch.as_ref().map(|epoch| Since {
                epoch: epoch.clone(),
                offset: self.last_seen,
            }),
        }
    }

    /// Inserts a message in offset order unless its offset is already there.
    fn insert(&mut self, msg: ChatMessage) -> bool {
        match self
            .messages
            .binary_search_by_key(&msg.offset, |m| m.offset)
        {
            Ok(_) => false,
            Err(at) => {
                self.messages.insert(at, msg);
                true
            }
        }
    }

    /// Drops pending sends the room now holds: the server's copy (same client
    /// id, from `me`) is in `messages`, or their acked offset is already seen.
    fn settle_pending(&mut self, me: Option<&User>) {
        let Some(me) = me else { return };
        let last_seen = self.last_seen;
        let mine: Vec<&str> = self
            .messages
            .iter()
            .filter(|m| m.from.id == me.id)
            .map(|m| m.client_id.as_str())
            .collect();
        self.pending.retain(|p| {
            let echoed = mine.contains(&p.client_id.as_str());
            let seen = matches!(p.state, SendState::Acked(o) if o <= last_seen);
            !echoed && !seen
        });
    }

    /// `send` frames for every pending message that must (re)go on the wire,
    /// marking them sent.
    fn resend(&mut self, include_retry: bool) -> Vec<ClientFrame> {
        let room = self.name.clone();
        self.pending
            .iter_mut()
            .filter(|p| match &p.state {
                SendState::Queued => true,
                SendState::Failed { retry, .. } => *retry && include_retry,
                SendState::Sent | SendState::Acked(_) => false,
            })
            .map(|p| {
                p.state = SendState::Sent;
                ClientFrame::Send {
                    room: room.clone(),
                    id: p.client_id.clone(),
                    body: p.body.clone(),
                }
            })
            .collect()
    }

    fn first_offset(&self) -> Option<u64> {
        self.messages.first().map(|m| m.offset)
    }
}

/// How a displayed message is doing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowStatus {
    /// In the room (or acked: stored, its echo on the way).
    Sent,
    /// Ours, not yet stored.
    Pending,
    /// Ours, refused; `retry` says whether it is tried again.
    Failed { reason: String, retry: bool },
}

/// One line of the message list, ready to render.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Row {
    /// Stable identity: the server's message id, or our client id.
    pub key: String,
    pub offset: Option<u64>,
    pub client_id: String,
    pub from: User,
    pub body: String,
    pub ts: i64,
    /// Same sender as the row above, within [`GROUP_WINDOW_MS`]: shown
    /// without avatar and name.
    pub grouped: bool,
    pub mine: bool,
    pub status: RowStatus,
}

/// One entry of the room list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomEntry {
    pub name: String,
    /// Members across all instances, from the last `rooms` frame (or the
    /// member list of a joined room when it is fresher).
    pub members: Option<u64>,
    pub unread: u32,
    /// This tab is in the room.
    pub mine: bool,
    pub current: bool,
}

/// What the connection driver must do after a frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Frames to write, in order.
    pub send: Vec<ClientFrame>,
    /// The session (user or token) changed: store it.
    pub session_changed: bool,
}

/// What to do after the socket closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// Open a new socket after this many milliseconds (0: at once).
    ReconnectIn(u64),
    /// Stop: the cause needs the user (shown in [`Conn::Offline`]).
    Stop,
}

/// A message for the user that is not part of a room's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notice {
    pub code: Option<ErrorCode>,
    pub text: String,
}

/// Everything this tab knows. See the module docs for the invariants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatState {
    /// The name to say `hello` with; `None` until the user gives one.
    pub name: Option<String>,
    /// Session token from the last `welcome`, to keep the identity.
    pub token: Option<String>,
    /// Who the server says we are.
    pub me: Option<User>,
    pub conn: Conn,
    /// Rooms this tab is in, by name.
    pub rooms: BTreeMap<String, Room>,
    /// Active rooms across all instances, from the last `rooms` frame.
    pub directory: Vec<RoomInfo>,
    /// The room on screen.
    pub current: Option<String>,
    /// The latest error worth showing, until dismissed.
    pub notice: Option<Notice>,
    /// Random per tab, so client ids never collide across tabs or reloads.
    id_prefix: String,
    next_id: u64,
    /// Consecutive failed connection attempts; 0 once `welcome` arrives.
    attempt: u32,
    /// Rooms whose `join` is unanswered, oldest first: a `bad_room` or
    /// `too_many_rooms` error answers the oldest (frames are answered in order).
    joins_in_flight: VecDeque<String>,
    /// The server refused our token during `hello`: the close that follows
    /// is retried at once without it.
    token_rejected: bool,
    /// The message of the last error frame, to explain a terminal close.
    last_error: Option<String>,
}

impl ChatState {
    /// A fresh state; `id_prefix` should be random per tab.
    pub fn new(id_prefix: impl Into<String>) -> ChatState {
        ChatState {
            name: None,
            token: None,
            me: None,
            conn: Conn::Offline { reason: None },
            rooms: BTreeMap::new(),
            directory: Vec::new(),
            current: None,
            notice: None,
            id_prefix: id_prefix.into(),
            next_id: 0,
            attempt: 0,
            joins_in_flight: VecDeque::new(),
            token_rejected: false,
            last_error: None,
        }
    }

    /// Restores what a previous page load stored: the session and the rooms
    /// it was in (invalid room names are skipped).
    pub fn restore(
        &mut self,
        name: Option<String>,
        token: Option<String>,
        rooms: &[String],
        current: Option<String>,
    ) {
        self.name = name.filter(|n| protocol::Name::parse(n).is_ok());
        self.token = token.filter(|t| !t.is_empty());
        for room in rooms {
            if let Ok(room) = RoomName::parse(room) {
                self.rooms
                    .entry(room.as_str().to_owned())
                    .or_insert_with(|| Room::new(room.as_str()));
            }
        }
        self.current = current
            .filter(|c| self.rooms.contains_key(c))
            .or_else(|| self.rooms.keys().next().cloned());
    }

    /// The room names to remember across reloads.
    pub fn room_names(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.conn, Conn::Connected { .. })
    }

    pub fn current_room(&self) -> Option<&Room> {
        self.current.as_ref().and_then(|c| self.rooms.get(c))
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

    /// Sets the name to use; the session keeps its token (a rename).
    pub fn set_name(&mut self, name: protocol::Name) {
        self.name = Some(name.into_string());
    }

    /// Applies one frame from the server at local time `now` (ms).
    pub fn apply(&mut self, frame: ServerFrame, now: i64) -> Outcome {
        let mut out = Outcome::default();
        match frame {
            ServerFrame::Welcome {
                user,
                token,
                server,
                ..
            } => {
                self.me = Some(user);
                self.token = Some(token);
                self.conn = Conn::Connected { server };
                self.attempt = 0;
                self.token_rejected = false;
                self.last_error = None;
                out.session_changed = true;
                if self.rooms.is_empty() {
                    self.rooms
                        .insert(DEFAULT_ROOM.to_owned(), Room::new(DEFAULT_ROOM));
                }
                if self.current.is_none() {
                    self.current = self.rooms.keys().next().cloned();
                }
                for room in self.rooms.values() {
                    self.joins_in_flight.push_back(room.name.clone());
                    out.send.push(room.join_frame());
                }
                out.send.push(ClientFrame::Rooms);
            }
            ServerFrame::Joined {
                room,
                epoch,
                offset,
                members,
                history,
                recovered,
            } => {
                if let Some(at) = self.joins_in_flight.iter().position(|r| *r == room) {
                    self.joins_in_flight.remove(at);
                }
                let is_current = self.current.as_deref() == Some(room.as_str());
                let me = self.me.clone();
                let Some(r) = self.rooms.get_mut(&room) else {
                    // Left while the join was in flight.
                    out.send.push(ClientFrame::Leave { room });
                    return out;
                };
                let same_epoch = r.epoch.as_deref() == Some(epoch.as_str());
                if recovered && same_epoch {
                    for msg in history {
                        if msg.offset > r.last_seen {
                            if !is_current && me.as_ref().is_some_and(|me| me.id != msg.from.id) {
                                r.unread += 1;
                            }
                            r.insert(msg);
                        }
                    }
                    r.last_seen = r.last_seen.max(offset);
                } else {
                    // Epoch changed or the gap was too large: what we hold
                    // may not line up with the room any more.
                    r.messages = history;
                    r.messages.sort_by_key(|m| m.offset);
                    r.messages.dedup_by_key(|m| m.offset);
                    r.last_seen = offset.max(r.messages.last().map_or(0, |m| m.offset));
                    r.complete = r.first_offset().is_none_or(|o| o <= 1);
                }
                if r.messages.is_empty() {
                    r.complete = true;
                }
                r.epoch = Some(epoch);
                r.joined = true;
                r.loading_older = false;
                r.members = members.into_iter().map(|u| (u.id.clone(), u)).collect();
                r.typing.clear();
                r.settle_pending(me.as_ref());
                out.send.extend(r.resend(true));
                out.send.push(ClientFrame::Rooms);
            }
            ServerFrame::Left { room } => {
                if let Some(r) = self.rooms.get(&room) {
                    if !r.joined {
                        // A leave answered after a new join request: keep it.
                        return out;
                    }
                }
                self.remove_room(&room);
                out.send.push(ClientFrame::Rooms);
            }
            ServerFrame::Ack { id, room, offset } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    if let Some(p) = r.pending.iter_mut().find(|p| p.client_id == id) {
                        p.state = SendState::Acked(offset);
                    }
                    r.settle_pending(self.me.as_ref());
                }
            }
            ServerFrame::Message(msg) => {
                let is_current = self.current.as_deref() == Some(msg.room.as_str());
                let me = self.me.clone();
                let Some(r) = self.rooms.get_mut(&msg.room) else {
                    return out;
                };
                if !r.joined || msg.offset <= r.last_seen {
                    return out;
                }
                let from_me = me.as_ref().is_some_and(|me| me.id == msg.from.id);
                if !is_current && !from_me {
                    r.unread += 1;
                }
                r.typing.remove(&msg.from.id);
                r.last_seen = msg.offset;
                r.insert(msg);
                r.settle_pending(me.as_ref());
            }
            ServerFrame::History { room, messages } => {
                let Some(r) = self.rooms.get_mut(&room) else {
                    return out;
                };
                r.loading_older = false;
                let fetched = messages.len() as u64;
                let below = r.first_offset().unwrap_or(r.last_seen + 1);
                let mut lowest = None;
                for msg in messages {
                    if msg.offset < below {
                        lowest = Some(lowest.map_or(msg.offset, |l: u64| l.min(msg.offset)));
                        r.insert(msg);
                    }
                }
                if fetched < HISTORY_PAGE || lowest.is_none() || lowest.is_some_and(|o| o <= 1) {
                    r.complete = true;
                }
            }
            ServerFrame::Typing { room, user } => {
                if self.me.as_ref().is_some_and(|me| me.id == user.id) {
                    return out;
                }
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.typing
                        .insert(user.id.clone(), (user, now + TYPING_SHOW_MS));
                }
            }
            ServerFrame::Presence { room, joined, left } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    for u in joined {
                        r.members.insert(u.id.clone(), u);
                    }
                    for u in left {
                        r.members.remove(&u.id);
                        r.typing.remove(&u.id);
                    }
                }
            }
            ServerFrame::Rooms { rooms } => {
                self.directory = rooms;
            }
            ServerFrame::Pong => {}
            ServerFrame::Reconnect { .. } => {
                self.last_error = Some("the server is restarting".to_owned());
            }
            ServerFrame::Error { code, message, id } => {
                self.on_error(code, message, id);
            }
        }
        out
    }

    fn on_error(&mut self, code: ErrorCode, message: String, id: Option<String>) {
        self.last_error = Some(message.clone());
        if let Some(id) = id {
            let retry = matches!(
                code,
                ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::NotJoined
            );
            for r in self.rooms.values_mut() {
                if let Some(p) = r.pending.iter_mut().find(|p| p.client_id == id) {
                    p.state = SendState::Failed {
                        reason: message.clone(),
                        retry,
                    };
                }
            }
            return;
        }
        match code {
            ErrorCode::Unauthorized if !self.is_connected() && self.token.is_some() => {
                self.token_rejected = true;
                return;
            }
            ErrorCode::BadRoom | ErrorCode::TooManyRooms => {
                if let Some(room) = self.joins_in_flight.pop_front() {
                    if self.rooms.get(&room).is_some_and(|r| !r.joined) {
                        self.remove_room(&room);
                    }
                }
            }
            // Typing notices over the rate limit are simply not shown.
            ErrorCode::RateLimited => return,
            _ => {}
        }
        self.notice = Some(Notice {
            code: Some(code),
            text: message,
        });
    }

    fn remove_room(&mut self, room: &str) {
        self.rooms.remove(room);
        if self.current.as_deref() == Some(room) {
            self.current = self.rooms.keys().next().cloned();
        }
    }

    /// The socket closed with `code` at `now`. `jitter` is uniform in [0, 1)
    /// and spreads reconnects (full jitter). Every room needs a new `joined`
    /// and every unacknowledged send goes again after it.
    pub fn on_close(&mut self, code: u16, now: i64, jitter: f64) -> CloseAction {
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

    /// Forgets what only the closed connection knew: joins, outstanding
    /// requests, typing; sends written but not acked go back to the queue.
    fn drop_connection(&mut self) {
        for r in self.rooms.values_mut() {
            r.joined = false;
            r.loading_older = false;
            r.typing.clear();
            for p in &mut r.pending {
                if p.state == SendState::Sent {
                    p.state = SendState::Queued;
                }
            }
        }
        self.joins_in_flight.clear();
    }

    /// Stops for good (the user changed their name or asked to go offline).
    pub fn go_offline(&mut self, reason: Option<String>) {
        self.drop_connection();
        self.token_rejected = false;
        self.attempt = 0;
        self.conn = Conn::Offline { reason };
    }

    /// Joins `room` (or just shows it if this tab is already in it).
    pub fn join(&mut self, room: &RoomName) -> Vec<ClientFrame> {
        let name = room.as_str();
        self.select(name);
        if self.rooms.contains_key(name) {
            return Vec::new();
        }
        let r = Room::new(name);
        let frame = r.join_frame();
        self.rooms.insert(name.to_owned(), r);
        self.current = Some(name.to_owned());
        if !self.is_connected() {
            return Vec::new();
        }
        self.joins_in_flight.push_back(name.to_owned());
        vec![frame]
    }

    /// Leaves `room`, dropping what this tab held of it.
    pub fn leave(&mut self, room: &str) -> Vec<ClientFrame> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let was_joined = r.joined;
        self.remove_room(room);
        if was_joined && self.is_connected() {
            vec![
                ClientFrame::Leave {
                    room: room.to_owned(),
                },
                ClientFrame::Rooms,
            ]
        } else {
            Vec::new()
        }
    }

    /// Shows `room` and marks it read.
    pub fn select(&mut self, room: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.unread = 0;
            self.current = Some(room.to_owned());
        }
    }

    /// Posts `body` to `room`: it shows at once as pending and goes on the
    /// wire now if the room is joined, else after the next `joined`.
    pub fn compose(&mut self, room: &str, body: Body, now: i64) -> Vec<ClientFrame> {
        self.next_id += 1;
        let client_id = format!("c-{}-{}", self.id_prefix, self.next_id);
        let connected = self.is_connected();
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        r.pending.push(Pending {
            client_id,
            body: body.into_string(),
            created_ms: now,
            state: SendState::Queued,
        });
        r.last_typing_sent = None;
        if connected && r.joined {
            r.resend(false)
        } else {
            Vec::new()
        }
    }

    /// Sends failed-but-retriable messages again (called periodically).
    pub fn retry_failed(&mut self) -> Vec<ClientFrame> {
        if !self.is_connected() {
            return Vec::new();
        }
        self.rooms
            .values_mut()
            .filter(|r| r.joined)
            .flat_map(|r| r.resend(true))
            .collect()
    }

    /// Forgets a pending message (after a refusal that will not pass).
    pub fn discard(&mut self, room: &str, client_id: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.pending.retain(|p| p.client_id != client_id);
        }
    }

    /// A `typing` frame for `room` if we have not sent one recently.
    pub fn typing(&mut self, room: &str, now: i64) -> Option<ClientFrame> {
        if !self.is_connected() {
            return None;
        }
        let r = self.rooms.get_mut(room).filter(|r| r.joined)?;
        if r.last_typing_sent
            .is_some_and(|t| now - t < TYPING_SEND_EVERY_MS && now >= t)
        {
            return None;
        }
        r.last_typing_sent = Some(now);
        Some(ClientFrame::Typing {
            room: room.to_owned(),
        })
    }

    /// A `history` request for the page before the oldest message shown, if
    /// there may be one and none is outstanding.
    pub fn older(&mut self, room: &str) -> Option<ClientFrame> {
        if !self.is_connected() {
            return None;
        }
        let r = self.rooms.get_mut(room).filter(|r| r.joined)?;
        if r.loading_older || r.complete {
            return None;
        }
        let before = r.first_offset()?;
        r.loading_older = true;
        Some(ClientFrame::History {
            room: room.to_owned(),
            before: Some(before),
            limit: Some(HISTORY_PAGE),
        })
    }

    /// Drops the notice.
    pub fn dismiss_notice(&mut self) {
        self.notice = None;
    }

    /// The rows of `room`'s message list: stored messages by offset, then our
    /// pending ones (acked by offset, the rest in the order composed).
    pub fn rows(&self, room: &str) -> Vec<Row> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let me_id = self.me.as_ref().map(|m| m.id.as_str());
        let mut rows: Vec<Row> = r
            .messages
            .iter()
            .map(|m| Row {
                key: m.id.clone(),
                offset: Some(m.offset),
                client_id: m.client_id.clone(),
                from: m.from.clone(),
                body: m.body.clone(),
                ts: m.ts,
                grouped: false,
                mine: Some(m.from.id.as_str()) == me_id,
                status: RowStatus::Sent,
            })
            .collect();
        let me = self.me.clone().unwrap_or_else(|| User {
            id: String::new(),
            name: self.name.clone().unwrap_or_default(),
        });
        let mut pending: Vec<&Pending> = r.pending.iter().collect();
        pending.sort_by_key(|p| match p.state {
            SendState::Acked(o) => (0, o),
            _ => (1, 0),
        });
        rows.extend(pending.into_iter().map(|p| Row {
            key: p.client_id.clone(),
            offset: match p.state {
                SendState::Acked(o) => Some(o),
                _ => None,
            },
            client_id: p.client_id.clone(),
            from: me.clone(),
            body: p.body.clone(),
            ts: p.created_ms,
            grouped: false,
            mine: true,
            status: match &p.state {
                SendState::Acked(_) => RowStatus::Sent,
                SendState::Queued | SendState::Sent => RowStatus::Pending,
                SendState::Failed { reason, retry } => RowStatus::Failed {
                    reason: reason.clone(),
                    retry: *retry,
                },
            },
        }));
        for i in 1..rows.len() {
            let grouped = groups_with(&rows[i - 1], &rows[i]);
            rows[i].grouped = grouped;
        }
        rows
    }

    /// "alice is typing…" for `room` at `now`, if anyone is.
    pub fn typing_line(&self, room: &str, now: i64) -> Option<String> {
        let r = self.rooms.get(room)?;
        let names: Vec<&str> = r
            .typing
            .values()
            .filter(|(_, until)| *until > now)
            .map(|(u, _)| u.name.as_str())
            .collect();
        match names.as_slice() {
            [] => None,
            [one] => Some(format!("{one} is typing…")),
            [a, b] => Some(format!("{a} and {b} are typing…")),
            [a, b, c] => Some(format!("{a}, {b} and {c} are typing…")),
            more => Some(format!("{} people are typing…", more.len())),
        }
    }

    /// The members of `room`, sorted by name.
    pub fn members(&self, room: &str) -> Vec<User> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let mut users: Vec<User> = r.members.values().cloned().collect();
        users.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then_with(|| a.id.cmp(&b.id))
        });
        users
    }

    /// The room list: this tab's rooms and the active ones, by name.
    pub fn room_list(&self) -> Vec<RoomEntry> {
        let mut list: BTreeMap<&str, RoomEntry> = BTreeMap::new();
        for info in &self.directory {
            list.insert(
                info.room.as_str(),
                RoomEntry {
                    name: info.room.clone(),
                    members: Some(info.members),
                    unread: 0,
                    mine: false,
                    current: false,
                },
            );
        }
        for r in self.rooms.values() {
            let e = list.entry(r.name.as_str()).or_insert_with(|| RoomEntry {
                name: r.name.clone(),
                members: None,
                unread: 0,
                mine: true,
                current: false,
            });
            e.mine = true;
            e.unread = r.unread;
            e.current = self.current.as_deref() == Some(r.name.as_str());
            if r.joined {
                e.members = Some(r.members.len() as u64);
            }
        }
        list.into_values().collect()
    }

    /// Unread messages over all rooms.
    pub fn total_unread(&self) -> u32 {
        self.rooms.values().map(|r| r.unread).sum()
    }
}

/// Whether `row` continues `prev`'s group: same sender, both delivered or
/// pending alike, close in time.
pub fn groups_with(prev: &Row, row: &Row) -> bool {
    prev.from.id == row.from.id
        && prev.from.name == row.from.name
        && !matches!(prev.status, RowStatus::Failed { .. })
        && (0..GROUP_WINDOW_MS).contains(&(row.ts - prev.ts))
}

/// The reconnect delay before attempt `attempt` (1-based): uniform in
/// [0, min(max, base · 2^(attempt−1))) — "full jitter".
pub fn backoff_ms(attempt: u32, jitter: f64) -> u64 {
    let cap = BACKOFF_BASE_MS
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(BACKOFF_MAX_MS);
    (cap as f64 * jitter.clamp(0.0, 1.0)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User {
            id: format!("u_{id}"),
            name: id.to_owned(),
        }
    }

    fn msg(room: &str, offset: u64, from: &str, client_id: &str, ts: i64) -> ChatMessage {
        ChatMessage {
            room: room.to_owned(),
            offset,
            id: format!("m_{offset}"),
            client_id: client_id.to_owned(),
            from: user(from),
            body: format!("body {offset}"),
            ts,
        }
    }

    fn welcome(state: &mut ChatState) -> Outcome {
        state.apply(
            ServerFrame::Welcome {
                protocol: 1,
                user: user("me"),
                token: "tok".to_owned(),
                server: "server-a".to_owned(),
            },
            0,
        )
    }

    fn joined(
        room: &str,
        epoch: &str,
        offset: u64,
        history: Vec<ChatMessage>,
        recovered: bool,
    ) -> ServerFrame {
        ServerFrame::Joined {
            room: room.to_owned(),
            epoch: epoch.to_owned(),
            offset,
            members: vec![user("me"), user("bob")],
            history,
            recovered,
        }
    }

    /// A state connected and joined to `general` at offset 3.
    fn connected() -> ChatState {
        let mut s = ChatState::new("t");
        s.set_name(protocol::Name::parse("me").unwrap());
        s.connecting();
        welcome(&mut s);
        let history = (1..=3)
            .map(|o| msg("general", o, "bob", &format!("b{o}"), o as i64))
            .collect();
        s.apply(joined("general", "e1", 3, history, false), 0);
        s
    }

    fn offsets(s: &ChatState, room: &str) -> Vec<u64> {
        s.rooms[room].messages.iter().map(|m| m.offset).collect()
    }

    #[test]
    fn welcome_joins_the_default_room_and_asks_for_rooms() {
        let mut s = ChatState::new("t");
        s.set_name(protocol::Name::parse("me").unwrap());
        assert_eq!(
            s.hello(),
            Some(ClientFrame::Hello {
                name: "me".to_owned(),
                token: None
            })
        );
        let out = welcome(&mut s);
        assert!(out.session_changed);
        assert_eq!(
            out.send,
            vec![
                ClientFrame::Join {
                    room: "general".to_owned(),
                    since: None
                },
                ClientFrame::Rooms
            ]
        );
        assert_eq!(s.current.as_deref(), Some("general"));
        assert_eq!(
            s.conn,
            Conn::Connected {
                server: "server-a".to_owned()
            }
        );
        assert_eq!(s.token.as_deref(), Some("tok"));
    }

    #[test]
    fn live_messages_are_deduplicated_by_offset() {
        let mut s = connected();
        s.apply(ServerFrame::Message(msg("general", 4, "bob", "b4", 4)), 0);
        s.apply(ServerFrame::Message(msg("general", 4, "bob", "b4", 4)), 0);
        s.apply(ServerFrame::Message(msg("general", 2, "bob", "b2", 2)), 0);
        assert_eq!(offsets(&s, "general"), vec![1, 2, 3, 4]);
        assert_eq!(s.rooms["general"].last_seen, 4);
    }

    #[test]
    fn pending_becomes_sent_on_ack_and_is_replaced_by_its_echo() {
        let mut s = connected();
        let frames = s.compose("general", Body::parse(" hi ").unwrap(), 100);
        let ClientFrame::Send { id, body, .. } = &frames[0] else {
            panic!("expected a send, got {frames:?}");
        };
        assert_eq!(body, "hi");
        assert!(id.starts_with("c-t-"));
        let id = id.clone();
        assert_eq!(s.rows("general").last().unwrap().status, RowStatus::Pending);

        s.apply(
            ServerFrame::Ack {
                id: id.clone(),
                room: "general".to_owned(),
                offset: 4,
            },
            0,
        );
        let last = s.rows("general").pop().unwrap();
        assert_eq!((last.status, last.offset), (RowStatus::Sent, Some(4)));

        let mut echo = msg("general", 4, "me", &id, 150);
        echo.body = "hi".to_owned();
        s.apply(ServerFrame::Message(echo), 0);
        let rows = s.rows("general");
        assert_eq!(rows.iter().filter(|r| r.client_id == id).count(), 1);
        assert!(s.rooms["general"].pending.is_empty());
        assert_eq!(rows.len(), 4);
    }

    #[test]
    fn an_echo_before_the_ack_also_settles_the_pending_send() {
        let mut s = connected();
        s.compose("general", Body::parse("yo").unwrap(), 0);
        let id = s.rooms["general"].pending[0].client_id.clone();
        s.apply(ServerFrame::Message(msg("general", 4, "me", &id, 0)), 0);
        s.apply(
            ServerFrame::Ack {
                id,
                room: "general".to_owned(),
                offset: 4,
            },
            0,
        );
        assert!(s.rooms["general"].pending.is_empty());
        assert_eq!(s.rows("general").len(), 4);
    }

    #[test]
    fn another_users_message_with_our_client_id_does_not_settle_ours() {
        let mut s = connected();
        s.compose("general", Body::parse("yo").unwrap(), 0);
        let id = s.rooms["general"].pending[0].client_id.clone();
        s.apply(ServerFrame::Message(msg("general", 4, "bob", &id, 0)), 0);
        assert_eq!(s.rooms["general"].pending.len(), 1);
    }

    #[test]
    fn offline_sends_stay_pending_and_go_with_the_same_id_after_rejoin() {
        let mut s = connected();
        let first = s.compose("general", Body::parse("one").unwrap(), 0);
        assert_eq!(first.len(), 1);
        assert_eq!(s.on_close(1006, 0, 0.5), CloseAction::ReconnectIn(250));
        assert!(s
            .compose("general", Body::parse("two").unwrap(), 0)
            .is_empty());
        assert!(s
            .rows("general")
            .iter()
            .rev()
            .take(2)
            .all(|r| r.status == RowStatus::Pending));

        s.connecting();
        let out = welcome(&mut s);
        assert_eq!(
            out.send[0],
            ClientFrame::Join {
                room: "general".to_owned(),
                since: Some(Since {
                    epoch: "e1".to_owned(),
                    offset: 3
                })
            }
        );
        let out = s.apply(joined("general", "e1", 3, vec![], true), 0);
        let ids: Vec<&str> = out
            .send
            .iter()
            .filter_map(|f| match f {
                ClientFrame::Send { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let pending: Vec<&str> = s.rooms["general"]
            .pending
            .iter()
            .map(|p| p.client_id.as_str())
            .collect();
        assert_eq!(ids, pending);
        assert_eq!(ids.len(), 2);
        let ClientFrame::Send { id, .. } = &first[0] else {
            panic!()
        };
        assert_eq!(ids[0], id);
    }

    #[test]
    fn a_send_stored_before_the_drop_is_settled_by_recovered_history() {
        let mut s = connected();
        s.compose("general", Body::parse("one").unwrap(), 0);
        let id = s.rooms["general"].pending[0].client_id.clone();
        s.on_close(1012, 0, 0.5);
        welcome(&mut s);
        let out = s.apply(
            joined(
                "general",
                "e1",
                4,
                vec![msg("general", 4, "me", &id, 0)],
                true,
            ),
            0,
        );
        assert!(s.rooms["general"].pending.is_empty());
        assert!(!out
            .send
            .iter()
            .any(|f| matches!(f, ClientFrame::Send { .. })));
        assert_eq!(offsets(&s, "general"), vec![1, 2, 3, 4]);
    }

    #[test]
    fn recovered_history_appends_only_what_is_new() {
        let mut s = connected();
        s.on_close(1006, 0, 0.0);
        welcome(&mut s);
        let history = (3..=5)
            .map(|o| msg("general", o, "bob", "x", o as i64))
            .collect();
        s.apply(joined("general", "e1", 5, history, true), 0);
        assert_eq!(offsets(&s, "general"), vec![1, 2, 3, 4, 5]);
        assert_eq!(s.rooms["general"].last_seen, 5);
    }

    #[test]
    fn unrecovered_join_replaces_the_history() {
        let mut s = connected();
        s.on_close(1006, 0, 0.0);
        welcome(&mut s);
        let history = (1..=2)
            .map(|o| msg("general", o, "bob", "x", o as i64))
            .collect();
        s.apply(joined("general", "e2", 2, history, false), 0);
        assert_eq!(offsets(&s, "general"), vec![1, 2]);
        assert_eq!(s.rooms["general"].last_seen, 2);
        assert_eq!(s.rooms["general"].epoch.as_deref(), Some("e2"));
        // A live message at the new epoch's next offset is accepted.
        s.apply(ServerFrame::Message(msg("general", 3, "bob", "y", 3)), 0);
        assert_eq!(offsets(&s, "general"), vec![1, 2, 3]);
    }

    #[test]
    fn a_gap_too_large_replaces_and_allows_scrolling_back() {
        let mut s = connected();
        s.on_close(1006, 0, 0.0);
        welcome(&mut s);
        let history = (2000..2050)
            .map(|o| msg("general", o, "bob", "x", o as i64))
            .collect();
        s.apply(joined("general", "e1", 2049, history, false), 0);
        assert_eq!(s.rooms["general"].messages.len(), 50);
        assert!(!s.rooms["general"].complete);
        assert_eq!(
            s.older("general"),
            Some(ClientFrame::History {
                room: "general".to_owned(),
                before: Some(2000),
                limit: Some(HISTORY_PAGE)
            })
        );
        assert_eq!(s.older("general"), None, "one request at a time");
        let page = (1950..2000)
            .map(|o| msg("general", o, "bob", "x", o as i64))
            .collect();
        s.apply(
            ServerFrame::History {
                room: "general".to_owned(),
                messages: page,
            },
            0,
        );
        assert_eq!(s.rooms["general"].messages.len(), 100);
        assert_eq!(s.rooms["general"].messages[0].offset, 1950);
        assert!(!s.rooms["general"].complete);
        s.apply(
            ServerFrame::History {
                room: "general".to_owned(),
                messages: vec![],
            },
            0,
        );
        assert!(s.rooms["general"].complete);
        assert_eq!(s.older("general"), None);
    }

    #[test]
    fn presence_is_a_set() {
        let mut s = connected();
        let p = |joined: Vec<User>, left: Vec<User>| ServerFrame::Presence {
            room: "general".to_owned(),
            joined,
            left,
        };
        s.apply(p(vec![user("carol")], vec![]), 0);
        s.apply(p(vec![user("carol"), user("bob")], vec![]), 0);
        assert_eq!(s.members("general").len(), 3);
        s.apply(p(vec![], vec![user("bob")]), 0);
        s.apply(p(vec![], vec![user("bob"), user("zed")]), 0);
        let names: Vec<String> = s.members("general").into_iter().map(|u| u.name).collect();
        assert_eq!(names, vec!["carol", "me"]);
    }

    #[test]
    fn unread_counts_others_messages_in_rooms_not_shown() {
        let mut s = connected();
        s.join(&RoomName::parse("dev").unwrap());
        s.apply(joined("dev", "d", 0, vec![], false), 0);
        assert_eq!(s.current.as_deref(), Some("dev"));
        s.apply(ServerFrame::Message(msg("general", 4, "bob", "b", 0)), 0);
        s.apply(ServerFrame::Message(msg("general", 5, "me", "m", 0)), 0);
        s.apply(ServerFrame::Message(msg("dev", 1, "bob", "b", 0)), 0);
        assert_eq!(s.rooms["general"].unread, 1);
        assert_eq!(s.rooms["dev"].unread, 0);
        assert_eq!(s.total_unread(), 1);
        let general = s
            .room_list()
            .into_iter()
            .find(|e| e.name == "general")
            .unwrap();
        assert_eq!(general.unread, 1);
        s.select("general");
        assert_eq!(s.total_unread(), 0);
    }

    #[test]
    fn consecutive_messages_group_by_sender_within_the_window() {
        let mut s = connected();
        let t = 1_000_000;
        for (o, from, ts) in [
            (4, "bob", t),
            (5, "bob", t + 60_000),
            (6, "me", t + 61_000),
            (7, "me", t + 61_000 + GROUP_WINDOW_MS),
        ] {
            s.apply(ServerFrame::Message(msg("general", o, from, "x", ts)), 0);
        }
        let grouped: Vec<bool> = s
            .rows("general")
            .iter()
            .skip(3)
            .map(|r| r.grouped)
            .collect();
        // Offset 4 follows bob's offset 3 but far earlier in time (ts 3).
        assert_eq!(grouped, vec![false, true, false, false]);
    }

    #[test]
    fn typing_shows_for_a_while_and_is_throttled_when_sent() {
        let mut s = connected();
        s.apply(
            ServerFrame::Typing {
                room: "general".to_owned(),
                user: user("bob"),
            },
            1_000,
        );
        assert_eq!(
            s.typing_line("general", 1_500).as_deref(),
            Some("bob is typing…")
        );
        assert_eq!(s.typing_line("general", 1_000 + TYPING_SHOW_MS), None);
        s.apply(
            ServerFrame::Typing {
                room: "general".to_owned(),
                user: user("me"),
            },
            1_000,
        );
        assert_eq!(
            s.rooms["general"].typing.len(),
            1,
            "our own typing is not shown"
        );
        s.apply(
            ServerFrame::Message(msg("general", 4, "bob", "x", 0)),
            1_100,
        );
        assert_eq!(
            s.typing_line("general", 1_200),
            None,
            "a message ends typing"
        );

        assert!(s.typing("general", 10_000).is_some());
        assert!(s.typing("general", 11_000).is_none());
        assert!(s.typing("general", 10_000 + TYPING_SEND_EVERY_MS).is_some());
    }

    #[test]
    fn close_codes_choose_the_reconnect() {
        let mut s = connected();
        assert_eq!(s.on_close(1012, 0, 0.9), CloseAction::ReconnectIn(0));
        assert_eq!(s.on_close(1006, 1_000, 0.5), CloseAction::ReconnectIn(250));
        assert_eq!(
            s.conn,
            Conn::Reconnecting {
                attempt: 1,
                at_ms: 1_250
            }
        );
        assert_eq!(s.on_close(1011, 0, 0.5), CloseAction::ReconnectIn(500));
        assert_eq!(
            s.on_close(1013, 0, 0.999_999),
            CloseAction::ReconnectIn(1_999)
        );
        s.apply(
            ServerFrame::error(ErrorCode::BadFrame, "too many bad frames", None),
            0,
        );
        assert_eq!(s.on_close(1008, 0, 0.5), CloseAction::Stop);
        assert_eq!(s.conn.name(), "offline");
        assert_eq!(s.on_close(1009, 0, 0.5), CloseAction::Stop);
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_full_jitter() {
        assert_eq!(backoff_ms(1, 1.0), 500);
        assert_eq!(backoff_ms(2, 1.0), 1_000);
        assert_eq!(backoff_ms(6, 1.0), 15_000);
        assert_eq!(backoff_ms(60, 1.0), 15_000);
        assert_eq!(backoff_ms(3, 0.0), 0);
        assert_eq!(backoff_ms(3, 0.5), 1_000);
    }

    #[test]
    fn a_rejected_token_is_dropped_and_retried_at_once() {
        let mut s = ChatState::new("t");
        s.restore(Some("me".to_owned()), Some("old".to_owned()), &[], None);
        s.connecting();
        s.apply(
            ServerFrame::error(ErrorCode::Unauthorized, "token expired", None),
            0,
        );
        assert_eq!(s.on_close(1008, 0, 0.5), CloseAction::ReconnectIn(0));
        assert_eq!(s.token, None);
        assert_eq!(
            s.hello(),
            Some(ClientFrame::Hello {
                name: "me".to_owned(),
                token: None
            })
        );
    }

    #[test]
    fn bad_room_errors_drop_the_room_being_joined() {
        let mut s = connected();
        // The server may refuse a name the client accepts (e.g. a reserved one).
        let frames = s.join(&RoomName::parse("nope").unwrap());
        assert_eq!(frames.len(), 1);
        s.apply(ServerFrame::error(ErrorCode::BadRoom, "reserved", None), 0);
        assert!(!s.rooms.contains_key("nope"));
        assert_eq!(s.current.as_deref(), Some("general"));
        assert_eq!(s.notice.as_ref().map(|n| n.text.as_str()), Some("reserved"));
    }

    #[test]
    fn refused_sends_fail_visibly_and_transient_ones_retry() {
        let mut s = connected();
        s.compose("general", Body::parse("a").unwrap(), 0);
        s.compose("general", Body::parse("b").unwrap(), 0);
        let ids: Vec<String> = s.rooms["general"]
            .pending
            .iter()
            .map(|p| p.client_id.clone())
            .collect();
        s.apply(
            ServerFrame::error(ErrorCode::RateLimited, "slow down", Some(ids[0].clone())),
            0,
        );
        s.apply(
            ServerFrame::error(ErrorCode::BadFrame, "bad", Some(ids[1].clone())),
            0,
        );
        let retry = s.retry_failed();
        assert_eq!(retry.len(), 1);
        assert!(matches!(&retry[0], ClientFrame::Send { id, .. } if *id == ids[0]));
        let failed = s.rows("general").pop().unwrap();
        assert_eq!(
            failed.status,
            RowStatus::Failed {
                reason: "bad".to_owned(),
                retry: false
            }
        );
        s.discard("general", &ids[1]);
        assert_eq!(s.rooms["general"].pending.len(), 1);
    }

    #[test]
    fn leaving_forgets_the_room_and_restore_skips_bad_names() {
        let mut s = connected();
        s.join(&RoomName::parse("dev").unwrap());
        s.apply(joined("dev", "d", 0, vec![], false), 0);
        assert_eq!(s.leave("dev").len(), 2);
        assert_eq!(s.current.as_deref(), Some("general"));
        assert_eq!(s.room_names(), vec!["general"]);

        let mut r = ChatState::new("t");
        r.restore(
            None,
            None,
            &["ok".to_owned(), "Not Ok".to_owned()],
            Some("gone".to_owned()),
        );
        assert_eq!(r.room_names(), vec!["ok"]);
        assert_eq!(r.current.as_deref(), Some("ok"));
    }
}
