//! The client's model of the chat, in plain Rust: what this tab knows about
//! its session, rooms, messages, pending sends, members and typing users, and
//! the connection's lifecycle.
//!
//! Owns every protocol decision of the client: how a server frame changes
//! the model ([`ChatState::apply`]), which client frames answer it (re-join
//! with `since`, resend of pending messages with their client ids), how a
//! close code turns into a reconnect delay ([`ChatState::apply_close`]), and
//! the rows the views show ([`ChatState::rows`]). Does not own IO: no socket,
//! timer, storage or DOM (that is `client.rs` and the views), so every rule
//! here is unit-tested natively.
//!
//! This file holds [`ChatState`] and how each server frame changes it.
//! Beside it: `actions` (what the user's actions do and send), `conn` (the
//! connection's lifecycle and reconnect delay), `room` (one room's messages
//! and pending sends) and `read` (what the views read: rows, grouping, the
//! room list). Every public item is re-exported here, so paths stay
//! `crate::state::X`.
//!
//! Words with one meaning each: a room is *in this tab* when it is a key of
//! [`ChatState::rooms`] (its `join` goes out whenever a connection is up); it is
//! *live* ([`Room::live`]) once the current connection has had its `joined`
//! frame; `joined` itself only ever names that frame.
//!
//! **Invariants:** a room's `messages` are sorted by offset with no
//! duplicates, all `<= last_seen`; a message with an offset at or below
//! `last_seen` that arrives live is a duplicate and is dropped; a pending
//! send leaves `pending` once the server's copy of it (same client id, sent
//! by us) is in `messages` or below `last_seen`, so nothing shows twice.

mod actions;
mod conn;
mod read;
mod room;
#[cfg(test)]
mod tests;

pub use conn::{backoff_ms, CloseAction, Conn, BACKOFF_BASE_MS, BACKOFF_MAX_MS};
pub use read::{groups_with, RoomEntry, Row, RowStatus, TypingPart, GROUP_WINDOW_MS};
pub use room::{Pending, Room, SendState};

use protocol::{ChatMessage, ClientFrame, ErrorCode, RoomInfo, RoomName, ServerFrame, User};
use std::collections::{BTreeMap, VecDeque};

/// The room every new session joins.
pub const DEFAULT_ROOM: &str = "general";
/// How long a typing notice is shown after it arrives.
pub const TYPING_SHOW_MS: i64 = 3_000;
/// Least time between two `typing` frames this client sends for a room.
pub const TYPING_SEND_EVERY_MS: i64 = 2_000;
/// Messages asked for per scroll-back request.
pub const HISTORY_PAGE: u64 = 50;

/// What the connection driver must do after a frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Frames to write, in order.
    pub send: Vec<ClientFrame>,
    /// The session (user or token) changed: store it.
    pub session_changed: bool,
    /// A refused join is to be tried again: call
    /// [`ChatState::retry_joins`] in this many milliseconds.
    pub retry_joins_in: Option<u64>,
    /// A draining instance asked for a reconnect in this many
    /// milliseconds (PROTOCOL.md, "Drain"): keep the socket until then,
    /// then close it and reconnect at once, as after a 1012.
    pub reconnect_in: Option<u64>,
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
    /// Rooms whose join the server refused `unavailable` (the store was
    /// briefly away): failed attempts in a row, and when (local ms) the
    /// next goes; `None` while it is in flight.
    join_retries: BTreeMap<String, (u32, Option<i64>)>,
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
            join_retries: BTreeMap::new(),
            token_rejected: false,
            last_error: None,
        }
    }

    /// Signs in with a token from the host app (a JWT, PROTOCOL.md "Host
    /// identity"): the next `hello` carries it, and the name shown until
    /// `welcome` is its `name` claim (else its `sub`). The server verifies
    /// it; this only reads it. False, and nothing changes, when it is not a
    /// JWT whose payload names someone.
    pub fn sign_in_with_host_token(&mut self, token: &str) -> bool {
        let Some(name) = host_token_name(token) else {
            return false;
        };
        self.name = Some(name);
        self.token = Some(token.to_owned());
        self.token_rejected = false;
        true
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

    pub fn current_room(&self) -> Option<&Room> {
        self.current.as_ref().and_then(|c| self.rooms.get(c))
    }

    /// Sets the name to use; the session keeps its token (a rename).
    pub fn set_name(&mut self, name: protocol::Name) {
        self.name = Some(name.into_string());
    }

    /// Applies one frame from the server at local time `now` (ms).
    pub fn apply(&mut self, frame: ServerFrame, now: i64) -> Outcome {
        let send = match frame {
            ServerFrame::Welcome {
                user,
                token,
                server,
                ..
            } => {
                return Outcome {
                    send: self.apply_welcome(user, token, server),
                    session_changed: true,
                    ..Outcome::default()
                };
            }
            ServerFrame::Joined {
                room,
                epoch,
                offset,
                members,
                history,
                recovered,
            } => self.apply_joined(room, epoch, offset, members, history, recovered),
            ServerFrame::Left { room } => self.apply_left(&room),
            ServerFrame::Ack { id, room, offset } => {
                self.apply_ack(&id, &room, offset);
                Vec::new()
            }
            ServerFrame::Message(msg) => {
                self.apply_message(msg);
                Vec::new()
            }
            ServerFrame::History { room, messages } => {
                self.apply_history(&room, messages);
                Vec::new()
            }
            ServerFrame::Typing { room, user } => {
                self.apply_typing(&room, user, now);
                Vec::new()
            }
            // The wire calls the users who arrived `joined`; here they are
            // `arrived`, since `joined` names the frame.
            ServerFrame::Presence {
                room,
                joined: arrived,
                left: departed,
            } => {
                self.apply_presence(&room, arrived, departed);
                Vec::new()
            }
            ServerFrame::Rooms { rooms, .. } => {
                self.directory = rooms;
                Vec::new()
            }
            ServerFrame::Pong => Vec::new(),
            ServerFrame::Reconnect { delay_ms, .. } => {
                if delay_ms > 0 {
                    return Outcome {
                        reconnect_in: Some(delay_ms),
                        ..Outcome::default()
                    };
                }
                self.last_error = Some("the server is restarting".to_owned());
                Vec::new()
            }
            ServerFrame::Error { code, message, id } => {
                if let Some(delay) = self.apply_error(code, message, id, now) {
                    return Outcome {
                        retry_joins_in: Some(delay),
                        ..Outcome::default()
                    };
                }
                Vec::new()
            }
        };
        Outcome {
            send,
            ..Outcome::default()
        }
    }

    /// Sends again the joins refused `unavailable` whose backoff ran out
    /// by `now`. Returns the frames and, if more wait, when to call again.
    pub fn retry_joins(&mut self, now: i64) -> (Vec<ClientFrame>, Option<u64>) {
        if !self.is_connected() {
            return (Vec::new(), None);
        }
        let mut send = Vec::new();
        let mut next: Option<i64> = None;
        for (room, (_, due)) in self.join_retries.iter_mut() {
            match *due {
                Some(at) if at <= now => {
                    let Some(r) = self.rooms.get(room).filter(|r| !r.live) else {
                        continue;
                    };
                    *due = None;
                    self.joins_in_flight.push_back(room.clone());
                    send.push(r.join_frame());
                }
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        self.join_retries
            .retain(|room, _| self.rooms.get(room).is_some_and(|r| !r.live));
        (send, next.map(|at| (at - now).max(0) as u64))
    }

    /// `welcome`: the session is ours; join every room of this tab (the
    /// default one if there is none) and ask for the room list.
    fn apply_welcome(&mut self, user: User, token: String, server: String) -> Vec<ClientFrame> {
        self.me = Some(user);
        self.token = Some(token);
        self.conn = Conn::Connected { server };
        self.attempt = 0;
        self.token_rejected = false;
        self.last_error = None;
        if self.rooms.is_empty() {
            self.rooms
                .insert(DEFAULT_ROOM.to_owned(), Room::new(DEFAULT_ROOM));
        }
        if self.current.is_none() {
            self.current = self.rooms.keys().next().cloned();
        }
        let mut send = Vec::new();
        for room in self.rooms.values() {
            self.joins_in_flight.push_back(room.name.clone());
            send.push(room.join_frame());
        }
        send.push(ClientFrame::Rooms {
            cursor: None,
            limit: None,
        });
        send
    }

    /// `joined`: the room is live on this connection. Recovered history
    /// appends what is new; otherwise it replaces what we held. Pending
    /// sends the room now holds settle, the rest go (again).
    fn apply_joined(
        &mut self,
        room: String,
        epoch: String,
        offset: u64,
        members: Vec<User>,
        history: Vec<ChatMessage>,
        recovered: bool,
    ) -> Vec<ClientFrame> {
        if let Some(at) = self.joins_in_flight.iter().position(|r| *r == room) {
            self.joins_in_flight.remove(at);
        }
        self.join_retries.remove(&room);
        let is_current = self.current.as_deref() == Some(room.as_str());
        let me = self.me.clone();
        let Some(r) = self.rooms.get_mut(&room) else {
            // Left while the join was in flight.
            return vec![ClientFrame::Leave { room }];
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
        r.live = true;
        r.loading_older = false;
        r.members = members.into_iter().map(|u| (u.id.clone(), u)).collect();
        r.typing.clear();
        r.settle_pending(me.as_ref());
        let mut send = r.resend(true);
        send.push(ClientFrame::Rooms {
            cursor: None,
            limit: None,
        });
        send
    }

    /// `left`: forget the room, unless a new join was asked for since.
    fn apply_left(&mut self, room: &str) -> Vec<ClientFrame> {
        if let Some(r) = self.rooms.get(room) {
            if !r.live {
                // A leave answered after a new join request: keep it.
                return Vec::new();
            }
        }
        self.remove_room(room);
        vec![ClientFrame::Rooms {
            cursor: None,
            limit: None,
        }]
    }

    /// `ack`: our send `id` is stored at `offset`.
    fn apply_ack(&mut self, id: &str, room: &str, offset: u64) {
        if let Some(r) = self.rooms.get_mut(room) {
            if let Some(p) = r.pending.iter_mut().find(|p| p.client_id == id) {
                p.state = SendState::Acked(offset);
            }
            r.settle_pending(self.me.as_ref());
        }
    }

    /// `message`: a live message, dropped unless the room is live and the
    /// offset is new.
    fn apply_message(&mut self, msg: ChatMessage) {
        let is_current = self.current.as_deref() == Some(msg.room.as_str());
        let me = self.me.clone();
        let Some(r) = self.rooms.get_mut(&msg.room) else {
            return;
        };
        if !r.live || msg.offset <= r.last_seen {
            return;
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

    /// `history`: an older page; a short or empty one means the start.
    fn apply_history(&mut self, room: &str, messages: Vec<ChatMessage>) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
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

    /// `typing`: show another user's notice until [`TYPING_SHOW_MS`] from now.
    fn apply_typing(&mut self, room: &str, user: User, now: i64) {
        if self.me.as_ref().is_some_and(|me| me.id == user.id) {
            return;
        }
        if let Some(r) = self.rooms.get_mut(room) {
            r.typing
                .insert(user.id.clone(), (user, now + TYPING_SHOW_MS));
        }
    }

    /// `presence`: members arrived and departed (the member list is a set).
    fn apply_presence(&mut self, room: &str, arrived: Vec<User>, departed: Vec<User>) {
        if let Some(r) = self.rooms.get_mut(room) {
            for u in arrived {
                r.members.insert(u.id.clone(), u);
            }
            for u in departed {
                r.members.remove(&u.id);
                r.typing.remove(&u.id);
            }
        }
    }

    /// `error`: a refused send (with its client `id`), a refused token, a
    /// refused join, or a notice for the user. A join refused `unavailable`
    /// (the shared store is briefly away) or `rate_limited` (v1.1: every
    /// frame has a cost) is tried again after a backoff
    /// with jitter ([`backoff_ms`], from the tab's random id, so a burst of
    /// refused tabs spreads out): returns in how many ms. An `unavailable`
    /// without id may answer a `rooms`, `history` or `typing` frame
    /// instead; taking the oldest join in flight then only schedules a join
    /// the server answers `joined` again (harmless, dropped once `joined`
    /// arrives), and since frames are answered in order, a refused join is
    /// always the oldest in flight or already scheduled: none is forgotten.
    fn apply_error(
        &mut self,
        code: ErrorCode,
        message: String,
        id: Option<String>,
        now: i64,
    ) -> Option<u64> {
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
            return None;
        }
        let mut retry_in = None;
        match code {
            // A host-app token is not dropped for a guest sign-in: the
            // close that follows says why (PROTOCOL.md "Host identity").
            ErrorCode::Unauthorized
                if !self.is_connected()
                    && self.token.as_deref().is_some_and(|t| !is_host_token(t)) =>
            {
                self.token_rejected = true;
                return None;
            }
            // A join over the rate limit waits like one the store refused;
            // any other frame over it (typing, ping, rooms) is not retried.
            ErrorCode::Unavailable | ErrorCode::RateLimited => {
                let limited = code == ErrorCode::RateLimited;
                if limited && self.joins_in_flight.is_empty() {
                    return None;
                }
                if let Some(room) = self.joins_in_flight.pop_front() {
                    if self.rooms.get(&room).is_some_and(|r| !r.live) {
                        let attempt = self.join_retries.get(&room).map_or(0, |(a, _)| *a) + 1;
                        let delay = backoff_ms(attempt, 0.5 + 0.5 * self.jitter(&room, attempt));
                        self.join_retries
                            .insert(room, (attempt, Some(now + delay as i64)));
                        retry_in = Some(delay);
                    }
                }
            }
            ErrorCode::BadRoom | ErrorCode::TooManyRooms | ErrorCode::Forbidden => {
                if let Some(room) = self.joins_in_flight.pop_front() {
                    if self.rooms.get(&room).is_some_and(|r| !r.live) {
                        self.remove_room(&room);
                    }
                }
            }
            _ => {}
        }
        self.notice = Some(Notice {
            code: Some(code),
            text: message,
        });
        retry_in
    }

    /// A number in [0, 1) from this tab's random id, `room` and `attempt`
    /// (FNV-1a): the jitter of a join retry, different in every tab.
    fn jitter(&self, room: &str, attempt: u32) -> f64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self
            .id_prefix
            .bytes()
            .chain(room.bytes())
            .chain(attempt.to_le_bytes())
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (h >> 11) as f64 / (1u64 << 53) as f64
    }

    fn remove_room(&mut self, room: &str) {
        self.rooms.remove(room);
        if self.current.as_deref() == Some(room) {
            self.current = self.rooms.keys().next().cloned();
        }
    }
}

/// Whether `token` is a host-app JWT rather than one of the server's
/// session tokens (`u_…`): a JSON header in base64url starts `eyJ`.
pub fn is_host_token(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

/// The display name a host token's payload gives: its `name` claim, else
/// its `sub`, if that is a valid name. Unverified: for showing only.
pub fn host_token_name(token: &str) -> Option<String> {
    use base64::Engine as _;
    if !is_host_token(token) {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let name = [&claims["name"], &claims["sub"]]
        .into_iter()
        .filter_map(|v| v.as_str())
        .find(|n| protocol::Name::parse(n).is_ok())
        .map(str::to_owned);
    name
}
