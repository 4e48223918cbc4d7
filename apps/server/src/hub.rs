//! The hub: this instance's local view of rooms → local members, and the
//! single place where engine events become frames on sockets.
//!
//! Owns: membership of local connections, subscription of the instance to
//! a room while it has local members there, per-user local connection
//! counts (so presence counts a user once), and the in-order delivery of
//! each room's messages to local members. Does not own sockets (the
//! connection task does) or storage (the engine does).
//!
//! **Invariant:** every local member of a room receives that room's
//! messages in offset order with no gap: a message that arrives after a gap
//! is held until the gap is filled from [`Engine::range`]. Each frame is
//! encoded once and the bytes are shared by all recipients.
//!
//! **Invariant:** the hub never waits for a member: it pushes into the
//! member's bounded [`Outbox`] and kicks the member (close 1013) when it is
//! full.

use crate::engine::{
    self, Engine, EngineError, EngineEvent, NewMessage, Position, Published, Recovery,
    RecoveryLimits,
};
use crate::metrics as m;
use crate::outbox::Outbox;
use protocol::{ChatMessage, CloseCode, RoomInfo, RoomName, ServerFrame, Since, User};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{mpsc, OnceCell};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Identifies one connection on this instance.
pub type ConnId = u64;

/// One item of a connection's outbox: a frame encoded once, behind one
/// `Arc` shared by every local recipient (a queue slot is a pointer).
#[derive(Debug)]
pub struct Outbound {
    pub room: Arc<str>,
    /// The message's offset, or 0 for frames that are not stored messages
    /// (typing, presence).
    pub offset: u64,
    pub frame: Utf8Bytes,
}

/// A local connection as a member of a room.
#[derive(Debug, Clone)]
pub struct Member {
    pub conn: ConnId,
    pub user: Arc<User>,
    pub outbox: Arc<Outbox>,
}

/// What a `join` answers.
#[derive(Debug)]
pub struct Joined {
    /// The room's key, as carried by [`Outbound::room`].
    pub key: Arc<str>,
    pub recovery: Recovery,
    pub members: Vec<User>,
}

/// The hub of one instance.
pub struct Hub {
    engine: Arc<dyn Engine>,
    /// Rooms with at least one local member. A std mutex: sections are short
    /// (lookups and `try_send`s) and never cross an await.
    rooms: Mutex<HashMap<RoomName, LocalRoom>>,
    limits: RecoveryLimits,
}

struct LocalRoom {
    key: Arc<str>,
    members: HashMap<ConnId, Member>,
    /// Local connections per user id: presence changes at 0 ↔ 1.
    users: HashMap<String, usize>,
    /// Set once the engine confirmed the subscription; concurrent joiners of
    /// a new room all wait for the same subscribe.
    subscribed: Arc<OnceCell<()>>,
    /// The last message delivered here, or the lowest position a joiner was
    /// answered with while nothing was delivered yet (`provisional`).
    cursor: Option<Cursor>,
}

#[derive(Debug, Clone)]
struct Cursor {
    epoch: Arc<str>,
    offset: u64,
    provisional: bool,
}

impl LocalRoom {
    fn new(name: &RoomName) -> LocalRoom {
        LocalRoom {
            key: Arc::from(name.as_str()),
            members: HashMap::new(),
            users: HashMap::new(),
            subscribed: Arc::new(OnceCell::new()),
            cursor: None,
        }
    }

    /// Pushes `item` to every member except the connections of `except`.
    fn fan_out(&self, item: &Arc<Outbound>, except: Option<&str>) {
        for member in self.members.values() {
            if except.is_some_and(|id| id == member.user.id) {
                continue;
            }
            // A kicked member stays until its connection leaves; count it
            // once.
            if member.outbox.push(item.clone()).is_err()
                && member.outbox.kick(CloseCode::TryAgainLater)
            {
                metrics::counter!(m::SLOW_CONSUMER_CLOSES).increment(1);
            }
        }
    }
}

/// Encodes a frame once, for every recipient.
pub fn encode(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(frame.to_json())
}

impl Hub {
    pub fn new(engine: Arc<dyn Engine>, limits: RecoveryLimits) -> Hub {
        Hub {
            engine,
            rooms: Mutex::new(HashMap::new()),
            limits,
        }
    }

    pub fn engine_kind(&self) -> &'static str {
        self.engine.kind()
    }

    /// Adds `member` to `room` (or answers again if it is a member already)
    /// and returns what the `joined` frame needs. From the moment this is
    /// called, the room's new messages reach the member's outbox; those up
    /// to the returned position are in the history instead, so the
    /// connection skips outbox messages at or below it.
    pub async fn join(
        &self,
        room: &RoomName,
        member: Member,
        since: Option<&Since>,
    ) -> Result<Joined, EngineError> {
        let conn = member.conn;
        let user = member.user.clone();
        let (key, subscribed, first_of_user, already) = {
            let mut rooms = self.rooms.lock().expect("hub lock");
            let r = rooms
                .entry(room.clone())
                .or_insert_with(|| LocalRoom::new(room));
            let already = r.members.contains_key(&conn);
            let mut first_of_user = false;
            if !already {
                r.members.insert(conn, member);
                let n = r.users.entry(user.id.clone()).or_insert(0);
                *n += 1;
                first_of_user = *n == 1;
            }
            let joined = (r.key.clone(), r.subscribed.clone(), first_of_user, already);
            metrics::gauge!(m::LOCAL_ROOMS).set(rooms.len() as f64);
            joined
        };
        let result = async {
            subscribed
                .get_or_try_init(|| self.engine.subscribe(room))
                .await?;
            if first_of_user {
                self.engine.presence_join(room, &user).await?;
            }
            let recovery = engine::recover(&*self.engine, room, since, self.limits).await?;
            let mut members = self.engine.members(room).await?;
            members.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
            Ok::<_, EngineError>((recovery, members))
        }
        .await;
        match result {
            Ok((recovery, members)) => {
                self.set_provisional_cursor(room, &recovery.position);
                Ok(Joined {
                    key,
                    recovery,
                    members,
                })
            }
            Err(e) => {
                if !already {
                    self.leave(room, conn).await;
                }
                Err(e)
            }
        }
    }

    fn set_provisional_cursor(&self, room: &RoomName, pos: &Position) {
        let mut rooms = self.rooms.lock().expect("hub lock");
        let Some(r) = rooms.get_mut(room) else { return };
        match &mut r.cursor {
            None => {
                r.cursor = Some(Cursor {
                    epoch: pos.epoch.clone(),
                    offset: pos.offset,
                    provisional: true,
                })
            }
            Some(c) if c.provisional && c.epoch == pos.epoch => c.offset = c.offset.min(pos.offset),
            Some(_) => {}
        }
    }

    /// Removes the connection from the room; the last local connection of a
    /// user leaves presence, the last local member unsubscribes.
    pub async fn leave(&self, room: &RoomName, conn: ConnId) {
        let (left_user, unsubscribe) = {
            let mut rooms = self.rooms.lock().expect("hub lock");
            let Some(r) = rooms.get_mut(room) else {
                return;
            };
            let Some(member) = r.members.remove(&conn) else {
                return;
            };
            let mut left_user = None;
            if let Some(n) = r.users.get_mut(&member.user.id) {
                *n -= 1;
                if *n == 0 {
                    r.users.remove(&member.user.id);
                    left_user = Some(member.user);
                }
            }
            let empty = r.members.is_empty();
            let was_subscribed = empty && r.subscribed.initialized();
            if empty {
                rooms.remove(room);
            }
            metrics::gauge!(m::LOCAL_ROOMS).set(rooms.len() as f64);
            (left_user, was_subscribed)
        };
        if let Some(user) = left_user {
            if let Err(e) = self.engine.presence_leave(room, &user).await {
                tracing::warn!(room = %room, error = %e, "presence leave failed; it expires instead");
            }
        }
        if unsubscribe {
            if let Err(e) = self.engine.unsubscribe(room).await {
                tracing::warn!(room = %room, error = %e, "unsubscribe failed");
            }
        }
    }

    pub async fn publish(
        &self,
        room: &RoomName,
        msg: NewMessage,
    ) -> Result<Published, EngineError> {
        self.engine.publish(room, msg).await
    }

    pub async fn typing(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        self.engine.typing(room, user).await
    }

    pub async fn history(
        &self,
        room: &RoomName,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, EngineError> {
        let before = match before {
            Some(b) => b,
            None => self.engine.position(room).await?.offset.saturating_add(1),
        };
        self.engine.before(room, before, limit).await
    }

    /// Active rooms, the busiest first.
    pub async fn rooms(&self) -> Result<Vec<RoomInfo>, EngineError> {
        let mut rooms = self.engine.rooms().await?;
        rooms.sort_by(|a, b| b.members.cmp(&a.members).then_with(|| a.room.cmp(&b.room)));
        Ok(rooms)
    }

    pub async fn ready(&self) -> Result<(), EngineError> {
        self.engine.ready().await
    }

    /// Delivers engine events to local members until the engine side of the
    /// channel closes. Holds the hub weakly between events: the hub owns the
    /// engine, which owns the channel's sender, so a strong reference here
    /// would keep the channel open, and this task alive, for ever. Once the
    /// last connection and the router let go of the hub, the channel closes
    /// and the task ends, which is what shutdown waits for.
    pub async fn run(hub: Weak<Self>, mut events: mpsc::Receiver<EngineEvent>) {
        while let Some(event) = events.recv().await {
            let Some(hub) = hub.upgrade() else { return };
            hub.handle(event).await;
        }
    }

    async fn handle(&self, event: EngineEvent) {
        match event {
            EngineEvent::Message {
                room,
                epoch,
                message,
            } => self.on_message(&room, epoch, message).await,
            EngineEvent::Typing { room, user } => {
                let frame = ServerFrame::Typing {
                    room: room.as_str().to_owned(),
                    user,
                };
                self.fan_out_ephemeral(&room, &frame);
            }
            EngineEvent::Presence { room, user, joined } => {
                let (joined, left) = if joined {
                    (vec![user], vec![])
                } else {
                    (vec![], vec![user])
                };
                let frame = ServerFrame::Presence {
                    room: room.as_str().to_owned(),
                    joined,
                    left,
                };
                self.fan_out_ephemeral(&room, &frame);
            }
            EngineEvent::Resync => self.resync().await,
        }
    }

    /// Typing and presence go to every local member but the connections of
    /// the user they are about (a joiner learns members from `joined`).
    fn fan_out_ephemeral(&self, room: &RoomName, frame: &ServerFrame) {
        let about = match frame {
            ServerFrame::Typing { user, .. } => Some(user.id.as_str()),
            ServerFrame::Presence { joined, left, .. } => {
                joined.first().or(left.first()).map(|u| u.id.as_str())
            }
            _ => None,
        };
        let frame = encode(frame);
        let rooms = self.rooms.lock().expect("hub lock");
        let Some(r) = rooms.get(room) else { return };
        let item = Arc::new(Outbound {
            room: r.key.clone(),
            offset: 0,
            frame,
        });
        r.fan_out(&item, about);
    }

    async fn on_message(&self, room: &RoomName, epoch: Arc<str>, message: ChatMessage) {
        let offset = message.offset;
        enum Next {
            Deliver,
            Fill(u64),
            Skip,
            NewEpoch,
        }
        let next = {
            let rooms = self.rooms.lock().expect("hub lock");
            let Some(r) = rooms.get(room) else { return };
            match &r.cursor {
                None => Next::Deliver,
                Some(c) if c.epoch != epoch => Next::NewEpoch,
                Some(c) if offset <= c.offset => Next::Skip,
                Some(c) if offset == c.offset + 1 => Next::Deliver,
                Some(c) => Next::Fill(c.offset),
            }
        };
        match next {
            Next::Skip => {}
            Next::Deliver => self.deliver(room, &epoch, message),
            Next::NewEpoch => self.reset_room(room),
            Next::Fill(after) => {
                metrics::counter!(m::GAP_FILLS).increment(1);
                match self.engine.range(room, after, offset - 1).await {
                    Ok(missing) => {
                        for m in missing {
                            self.deliver(room, &epoch, m);
                        }
                        self.deliver(room, &epoch, message);
                    }
                    // Deliver nothing newer than the gap: the next event (or
                    // the resync after a reconnect) retries the fill.
                    Err(e) => tracing::warn!(room = %room, error = %e, "gap fill failed"),
                }
            }
        }
    }

    /// Delivers one message to every local member, unless it is not newer
    /// than the room's cursor.
    fn deliver(&self, room: &RoomName, epoch: &Arc<str>, message: ChatMessage) {
        let offset = message.offset;
        // Encoded before taking the lock: joins and leaves of every room wait
        // on this mutex, and serialising is the slowest step here.
        let frame = encode(&ServerFrame::Message(message));
        let mut rooms = self.rooms.lock().expect("hub lock");
        let Some(r) = rooms.get_mut(room) else { return };
        if r.cursor
            .as_ref()
            .is_some_and(|c| c.epoch == *epoch && offset <= c.offset)
        {
            return;
        }
        r.cursor = Some(Cursor {
            epoch: epoch.clone(),
            offset,
            provisional: false,
        });
        let item = Arc::new(Outbound {
            room: r.key.clone(),
            offset,
            frame,
        });
        metrics::counter!(m::MESSAGES_DELIVERED).increment(r.members.len() as u64);
        r.fan_out(&item, None);
    }

    /// The room's history was lost (new epoch): local members hold offsets
    /// that mean nothing now. They are asked to reconnect; their re-join with
    /// the old epoch is answered `recovered: false` with the new history.
    fn reset_room(&self, room: &RoomName) {
        let mut rooms = self.rooms.lock().expect("hub lock");
        if let Some(r) = rooms.get_mut(room) {
            tracing::warn!(room = %room, "room epoch changed; members reconnect");
            r.cursor = None;
            for member in r.members.values() {
                member.outbox.kick(CloseCode::TryAgainLater);
            }
        }
    }

    /// Catches every local room up after the engine may have lost events.
    /// Rooms whose catch-up fails (the store is still coming back) are
    /// retried with backoff, for up to about half a minute; after that the
    /// next message of the room finds the gap and fills it.
    async fn resync(&self) {
        let mut rooms: Vec<RoomName> = {
            let rooms = self.rooms.lock().expect("hub lock");
            rooms.keys().cloned().collect()
        };
        let mut delay = std::time::Duration::from_millis(100);
        for attempt in 0..8 {
            let mut failed = Vec::new();
            for room in rooms {
                if let Err(e) = self.catch_up(&room).await {
                    tracing::warn!(room = %room, attempt, error = %e, "resync failed");
                    failed.push(room);
                }
            }
            if failed.is_empty() {
                return;
            }
            rooms = failed;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
    }

    /// Delivers what the room's local members missed since its cursor, or
    /// resets the room when its epoch changed.
    async fn catch_up(&self, room: &RoomName) -> Result<(), EngineError> {
        let cursor = {
            let rooms = self.rooms.lock().expect("hub lock");
            rooms.get(room).and_then(|r| r.cursor.clone())
        };
        let Some(cursor) = cursor else {
            return Ok(());
        };
        let pos = self.engine.position(room).await?;
        if pos.epoch != cursor.epoch {
            self.reset_room(room);
            return Ok(());
        }
        for m in self.engine.range(room, cursor.offset, pos.offset).await? {
            self.deliver(room, &pos.epoch, m);
        }
        Ok(())
    }
}
