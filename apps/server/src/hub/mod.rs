//! The hub: this instance's local view of rooms → local members, and the
//! single place where engine events become frames on sockets.
//!
//! Owns: membership of local connections, one broker subscription per
//! local membership (the broker counts them), per-user local connection
//! counts (so presence counts a user once, and is refreshed while the user
//! is here; the last connection's leave reaches presence only after the
//! grace, and not if the user is back), and the in-order delivery of each
//! room's messages to local members. Does not own sockets (the connection task does) or storage
//! (the engine does).
//!
//! **Delivery rule** (per room, by its cursor: [`room::Step`]): the next
//! offset is delivered; one at or below the cursor is skipped; one beyond
//! the next is held while the room's catch-up reads the gap from
//! [`Broker::range`], then delivered in order; another epoch resets the
//! room's members (close 1013, they re-join). Each frame is encoded once
//! and the bytes are shared by all recipients.
//!
//! **Divergence rule:** within an epoch the store's offset never goes back.
//! When it does (Redis restored from an older snapshot, a lagging replica
//! promoted), the store lost messages members were given, and offsets
//! after it would be skipped as seen. Wherever it shows first (the publish
//! script comparing the store with what this instance saw, the transport
//! bringing an offset at or below its previous one, a catch-up finding the
//! store behind the cursor), the room gets a new epoch in the store
//! ([`Broker::reset_epoch`], announced to every instance) and its members
//! are reset: they re-join with `recovered: false`. Never a silent gap.
//!
//! **Invariant:** the event loop ([`Hub::run`]) never waits for the store or
//! for a member: catch-ups run per room beside it ([`catch_up`]), and a
//! member's outbox is bounded and never waited on (full: the member is
//! kicked with 1013).

mod catch_up;
mod room;

use self::room::{Delivery, LocalRoom, PendingPresence};
use crate::codec::encode;
use crate::engine::{
    self, Broker, EngineError, EngineEvent, Events, LocalPresence, PresenceStore, Publication,
    Published, Recovery, RecoveryLimits, RoomsCursor, RoomsPage,
};
use crate::metrics as m;
use crate::outbox::{Outbound, Outbox};
use protocol::{ChatMessage, RoomName, ServerFrame, Since, User};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Identifies one connection on this instance.
pub(crate) type ConnId = u64;

/// A local connection as a member of a room.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) conn: ConnId,
    pub(crate) user: Arc<User>,
    pub(crate) outbox: Arc<Outbox>,
    /// Set by the hub when the member is added: the room's presence
    /// changes up to this one were handled before, so its `joined.members`
    /// (read after) holds them and its presence frames leave them out.
    pub(crate) presence_from: u64,
}

/// What a `join` answers.
#[derive(Debug)]
pub(crate) struct Joined {
    /// The room's key, as carried by [`Outbound::room`].
    pub(crate) key: Arc<str>,
    pub(crate) recovery: Recovery,
    pub(crate) members: Vec<User>,
}

/// How joins wait for a briefly unavailable store (Redis restarting,
/// loading its data set, failing over) before they are refused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JoinWaits {
    /// Longest wait of one join (0: refuse at once).
    pub(crate) wait: Duration,
    /// Joins waiting at once; past this a join is refused at once.
    pub(crate) waiters: usize,
}

/// When presence changes reach the store and the members.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PresenceTiming {
    /// How long a user's leave waits for them to come back
    /// (`--presence-grace-ms`).
    pub(crate) grace: Duration,
    /// How long a room's changes are gathered into one `presence` frame
    /// (`--presence-window-ms`; 0: a frame per change).
    pub(crate) window: Duration,
}

/// First and longest pause between the attempts of a waiting join.
const JOIN_RETRY_MIN: Duration = Duration::from_millis(50);
const JOIN_RETRY_MAX: Duration = Duration::from_secs(1);

/// The hub of one instance.
pub(crate) struct Hub {
    broker: Arc<dyn Broker>,
    store: Arc<dyn PresenceStore>,
    /// Rooms with at least one local member, sharded by room
    /// ([`Events::shard_of`]): each shard has its own lock and its own event
    /// loop ([`Hub::run`]), so deliveries (the outbox writes) run on as many
    /// cores as there are shards. A std mutex: sections are short (lookups
    /// and outbox writes) and never cross an await.
    shards: Box<[Mutex<HashMap<RoomName, LocalRoom>>]>,
    /// Rooms with at least one local member, over every shard.
    room_count: std::sync::atomic::AtomicUsize,
    limits: RecoveryLimits,
    /// How long a join that meets an unavailable store waits for it.
    join_wait: Duration,
    /// Permits of joins waiting for the store (`--join-waiters`).
    join_waiters: Semaphore,
    presence: PresenceTiming,
    /// Permits of catch-ups reading the store ([`catch_up::CONCURRENT`]).
    catch_ups: Semaphore,
    /// Where catch-ups are spawned, so shutdown waits for them.
    tracker: TaskTracker,
    /// The instance's shutdown: a catch-up waiting to retry stops.
    stop: CancellationToken,
    /// This hub, for the catch-up tasks it spawns (they hold it weakly).
    me: Weak<Hub>,
    /// Messages written to local members' outboxes since the start.
    delivered: Arc<std::sync::atomic::AtomicU64>,
}

impl Hub {
    /// A hub of `shards` shards (as many as the engine's [`Events`]
    /// channels, each served by [`Hub::run`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shards: usize,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn PresenceStore>,
        limits: RecoveryLimits,
        waits: JoinWaits,
        presence_timing: PresenceTiming,
        tracker: TaskTracker,
        stop: CancellationToken,
    ) -> Arc<Hub> {
        Arc::new_cyclic(|me| Hub {
            broker,
            store: presence,
            shards: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            room_count: Default::default(),
            limits,
            join_wait: waits.wait,
            join_waiters: Semaphore::new(waits.waiters),
            presence: presence_timing,
            catch_ups: Semaphore::new(catch_up::CONCURRENT),
            tracker,
            stop,
            me: me.clone(),
            delivered: Arc::default(),
        })
    }

    /// Messages written to local members' outboxes since the start.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rooms with a member on this instance.
    pub(crate) fn local_rooms(&self) -> usize {
        self.room_count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The shard holding `room`, locked.
    fn room_shard(&self, room: &RoomName) -> MutexGuard<'_, HashMap<RoomName, LocalRoom>> {
        self.shard(Events::shard_of(room.as_str(), self.shards.len()))
    }

    /// Shard `i`, locked.
    fn shard(&self, i: usize) -> MutexGuard<'_, HashMap<RoomName, LocalRoom>> {
        self.shards[i].lock().expect("hub lock")
    }

    /// Counts a room made (+1) or dropped (-1) and sets the gauge.
    fn count_room(&self, made: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = if made {
            self.room_count.fetch_add(1, Relaxed) + 1
        } else {
            self.room_count.fetch_sub(1, Relaxed) - 1
        };
        metrics::gauge!(m::LOCAL_ROOMS).set(n as f64);
    }

    /// Every local member leaves `room` as if it had sent `leave`, and is
    /// sent `left` (the admin view's "close a room"): its outbox gets the
    /// frame with [`Outbound::CLOSES_ROOM`], so the connection forgets the
    /// room too. Answers how many connections left.
    pub(crate) async fn close_room(&self, room: &RoomName) -> usize {
        let members: Vec<(ConnId, Arc<Outbox>, Arc<str>)> = {
            let rooms = self.room_shard(room);
            let Some(r) = rooms.get(room) else {
                return 0;
            };
            r.members
                .iter()
                .map(|(conn, m)| (*conn, m.outbox.clone(), r.key.clone()))
                .collect()
        };
        let frame = encode(&ServerFrame::Left {
            room: room.as_str().to_owned(),
        });
        for (conn, outbox, key) in &members {
            self.leave(room, *conn).await;
            // Past capacity the member is kicked (1013) and loses the room
            // anyway.
            if outbox
                .push(Arc::new(Outbound {
                    room: key.clone(),
                    offset: Outbound::CLOSES_ROOM,
                    frame: frame.clone(),
                }))
                .is_err()
            {
                outbox.kick(protocol::CloseCode::TryAgainLater);
            }
        }
        members.len()
    }

    pub(crate) fn engine_kind(&self) -> &'static str {
        self.broker.kind()
    }

    /// Adds `member` to `room` (or answers again if it is a member already)
    /// and returns what the `joined` frame needs. From the moment this is
    /// called, the room's new messages reach the member's outbox; those up
    /// to the returned position are in the history instead, so the
    /// connection skips outbox messages at or below it.
    ///
    /// A join that meets an unavailable store waits for it: it is tried
    /// again with backoff (50 ms doubling to 1 s, jittered) for up to
    /// [`JoinWaits::wait`], while at most [`JoinWaits::waiters`] joins wait
    /// (past that, and past the wait, it is refused `unavailable`).
    pub(crate) async fn join(
        &self,
        room: &RoomName,
        member: Member,
        since: Option<&Since>,
    ) -> Result<Joined, EngineError> {
        let first = self.try_join(room, member.clone(), since).await;
        if !matches!(first, Err(EngineError::Unavailable(_))) || self.join_wait.is_zero() {
            return first;
        }
        let Ok(_waiting) = self.join_waiters.try_acquire() else {
            metrics::counter!(m::JOIN_WAITS, "outcome" => "refused_full").increment(1);
            return first;
        };
        let deadline = tokio::time::Instant::now() + self.join_wait;
        let mut delay = JOIN_RETRY_MIN;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                metrics::counter!(m::JOIN_WAITS, "outcome" => "refused_timeout").increment(1);
                return first;
            }
            let pause = delay
                .mul_f64(0.5 + rand::random::<f64>())
                .min(deadline - now);
            tokio::select! {
                _ = self.stop.cancelled() => return first,
                _ = tokio::time::sleep(pause) => {}
            }
            match self.try_join(room, member.clone(), since).await {
                Err(EngineError::Unavailable(_)) => delay = (delay * 2).min(JOIN_RETRY_MAX),
                answer => {
                    metrics::counter!(m::JOIN_WAITS, "outcome" => "joined").increment(1);
                    return answer;
                }
            }
        }
    }

    /// One attempt of [`Hub::join`]; on an error the member is removed again.
    async fn try_join(
        &self,
        room: &RoomName,
        member: Member,
        since: Option<&Since>,
    ) -> Result<Joined, EngineError> {
        let conn = member.conn;
        let user = member.user.clone();
        let (key, first_of_user, already) = {
            let mut rooms = self.room_shard(room);
            let r = rooms.entry(room.clone()).or_insert_with(|| {
                self.count_room(true);
                LocalRoom::new(Arc::from(room.as_str()), self.delivered.clone())
            });
            let already = r.members.contains_key(&conn);
            let mut first_of_user = false;
            if !already {
                let mut member = member;
                member.presence_from = r.presence_seq;
                r.members.insert(conn, member);
                let (_, n) = r
                    .users
                    .entry(user.id.clone())
                    .or_insert_with(|| (user.clone(), 0));
                *n += 1;
                first_of_user = *n == 1;
            }
            (r.key.clone(), first_of_user, already)
        };
        if !already {
            if let Err(e) = self.broker.subscribe(room).await {
                self.remove_member(room, conn, false).await;
                return Err(e);
            }
        }
        let answer = async {
            if first_of_user {
                self.store.join(room, &user).await?;
            }
            let recovery = engine::recover(&*self.broker, room, since, self.limits).await?;
            let mut members = self.store.members(room).await?;
            members.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
            Ok::<_, EngineError>((recovery, members))
        }
        .await;
        match answer {
            Ok((recovery, members)) => {
                let mut rooms = self.room_shard(room);
                if let Some(r) = rooms.get_mut(room) {
                    r.joined_at(&recovery.position.epoch, recovery.position.offset);
                }
                Ok(Joined {
                    key,
                    recovery,
                    members,
                })
            }
            Err(e) => {
                if !already {
                    self.remove_member(room, conn, true).await;
                }
                Err(e)
            }
        }
    }

    /// Removes the connection from the room; the last local connection of a
    /// user leaves presence, and its broker subscription ends.
    pub(crate) async fn leave(&self, room: &RoomName, conn: ConnId) {
        self.remove_member(room, conn, true).await
    }

    /// [`Hub::leave`]; `subscribed` says whether the member's subscribe
    /// succeeded (only then is there one to end).
    async fn remove_member(&self, room: &RoomName, conn: ConnId, subscribed: bool) {
        let left_user = {
            let mut rooms = self.room_shard(room);
            let Some(r) = rooms.get_mut(room) else {
                return;
            };
            let Some(member) = r.members.remove(&conn) else {
                return;
            };
            let mut left_user = None;
            if let Some((user, n)) = r.users.get_mut(&member.user.id) {
                *n -= 1;
                if *n == 0 {
                    left_user = Some(user.clone());
                    r.users.remove(&member.user.id);
                }
            }
            if r.members.is_empty() {
                rooms.remove(room);
                self.count_room(false);
            }
            left_user
        };
        if let Some(user) = left_user {
            if self.presence.grace.is_zero() {
                self.leave_presence(room, &user).await;
            } else {
                self.tracker
                    .spawn(Hub::leave_after_grace(self.me.clone(), room.clone(), user));
            }
        }
        if subscribed {
            self.broker.unsubscribe(room).await;
        }
    }

    /// Tells the store that `user` left `room` here (logged if it fails:
    /// the entry then expires).
    async fn leave_presence(&self, room: &RoomName, user: &User) {
        if let Err(e) = self.store.leave(room, user).await {
            tracing::warn!(room = %room, error = %e, "presence leave failed; it expires instead");
        }
    }

    /// Waits the delay `pick` reads from the hub (cut short when the
    /// instance stops), then gives the hub back if it is still there: the
    /// first step of the presence tasks, which hold the hub weakly.
    async fn after(hub: Weak<Hub>, pick: fn(&Hub) -> Duration) -> Option<Arc<Hub>> {
        let (delay, stop) = {
            let h = hub.upgrade()?;
            (pick(&h), h.stop.clone())
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        hub.upgrade()
    }

    /// The grace of a leaving user: after `--presence-grace-ms` (at once if
    /// the instance stops), the user leaves presence unless a connection of
    /// theirs is in the room here again. A user back on another instance
    /// meanwhile is present there, so the store announces nothing either.
    async fn leave_after_grace(hub: Weak<Hub>, room: RoomName, user: Arc<User>) {
        let Some(hub) = Hub::after(hub, |h| h.presence.grace).await else {
            return;
        };
        let back = {
            let rooms = hub.room_shard(&room);
            rooms
                .get(&room)
                .is_some_and(|r| r.users.contains_key(&user.id))
        };
        if !back {
            hub.leave_presence(&room, &user).await;
        }
    }

    /// Publishes `msg` in `room`, telling the broker the newest position
    /// this instance has seen of the room (so a store that lost history is
    /// caught on publish). A publish answered in another epoch than the one
    /// seen starts the room's catch-up, which resets the room if the epoch
    /// indeed changed (its announcement may be lost with the transport).
    pub(crate) async fn publish(
        &self,
        room: &RoomName,
        msg: Publication,
    ) -> Result<Published, EngineError> {
        let seen = {
            let rooms = self.room_shard(room);
            rooms
                .get(room)
                .and_then(|r| r.seen())
                .map(|(epoch, offset)| engine::Position { epoch, offset })
        };
        let published = self.broker.publish(room, msg, seen.as_ref()).await?;
        if seen.is_some_and(|s| s.epoch != published.epoch) {
            self.verify(room);
        }
        Ok(published)
    }

    /// Catches `room` up from the store: starts its catch-up, or makes the
    /// running one read the store once more.
    fn verify(&self, room: &RoomName) {
        let start = {
            let mut rooms = self.room_shard(room);
            match rooms.get_mut(room).map(|r| &mut r.catching_up) {
                Some(Some(held)) => {
                    held.stale = true;
                    false
                }
                Some(idle) => {
                    *idle = Some(Default::default());
                    true
                }
                None => false,
            }
        };
        if start {
            self.start_catch_up(room.clone());
        }
    }

    pub(crate) async fn typing(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        self.broker.typing(room, user).await
    }

    pub(crate) async fn history(
        &self,
        room: &RoomName,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, EngineError> {
        let before = match before {
            Some(b) => b,
            None => self.broker.position(room).await?.offset.saturating_add(1),
        };
        self.broker.before(room, before, limit).await
    }

    /// One page of the active rooms, the busiest first: `limit` from the
    /// `start`-th.
    pub(crate) async fn rooms(
        &self,
        after: Option<&RoomsCursor>,
        limit: usize,
    ) -> Result<RoomsPage, EngineError> {
        self.store.rooms(after, limit).await
    }

    /// Distinct users present in the room, on any instance.
    pub(crate) async fn members(&self, room: &RoomName) -> Result<Vec<User>, EngineError> {
        self.store.members(room).await
    }

    /// The room's latest offset (the admin view's message rates).
    pub(crate) async fn latest_offset(&self, room: &RoomName) -> Result<u64, EngineError> {
        Ok(self.broker.position(room).await?.offset)
    }

    /// Whether the shared store answers (`/readyz`).
    pub(crate) async fn reachable(&self) -> Result<(), EngineError> {
        self.broker.reachable().await
    }

    /// The event loop of shard `shard`: delivers the engine events of its
    /// rooms to local members until the engine side of its channel closes. Never awaits anything but the
    /// next event. Holds the hub weakly between events: the hub owns the
    /// engine, which owns the channel's sender, so a strong reference here
    /// would keep the channel open, and this task alive, for ever. Once the
    /// last connection and the router let go of the hub, the channel closes
    /// and the task ends, which is what shutdown waits for.
    pub(crate) async fn run(
        hub: Weak<Self>,
        shard: usize,
        mut events: mpsc::Receiver<EngineEvent>,
    ) {
        while let Some(event) = events.recv().await {
            let Some(hub) = hub.upgrade() else { return };
            match event {
                // Every shard is sent one: each catches its own rooms up.
                EngineEvent::Resync => hub.resync(Some(shard)),
                event => hub.handle(event),
            }
        }
    }

    /// Keeps this instance's presence entries alive: every `every`, tells
    /// the presence store which users are connected here, until `stop`.
    pub(crate) async fn refresh_presence(
        hub: Weak<Self>,
        every: Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(hub) = hub.upgrade() else { return };
            let local = hub.local_presence();
            let started = std::time::Instant::now();
            if let Err(e) = hub.store.refresh(&local).await {
                tracing::warn!(error = %e, "presence refresh failed");
            }
            hub.leave_again_after_refresh(&local).await;
            metrics::gauge!(m::PRESENCE_REFRESH_SECONDS).set(started.elapsed().as_secs_f64());
        }
    }

    /// A user whose last connection left while a refresh ran may have been
    /// written back by it (the refresh read the users before the leave).
    /// Without a grace the leave is done again; with one, the grace's own
    /// leave comes later than any refresh.
    async fn leave_again_after_refresh(&self, refreshed: &[LocalPresence]) {
        if !self.presence.grace.is_zero() {
            return;
        }
        let gone: Vec<(RoomName, User)> = refreshed
            .iter()
            .flat_map(|e| {
                let rooms = self.room_shard(&e.room);
                let here = rooms.get(&e.room);
                e.users
                    .iter()
                    .filter(|u| !here.is_some_and(|r| r.users.contains_key(&u.id)))
                    .map(|u| (e.room.clone(), u.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (room, user) in gone {
            self.leave_presence(&room, &user).await;
        }
    }

    /// The users connected here, per room.
    fn local_presence(&self) -> Vec<LocalPresence> {
        (0..self.shards.len())
            .flat_map(|i| {
                self.shard(i)
                    .iter()
                    .map(|(name, r)| LocalPresence {
                        room: name.clone(),
                        users: r.users.values().map(|(u, _)| User::clone(u)).collect(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn handle(&self, event: EngineEvent) {
        match event {
            EngineEvent::Message {
                room,
                epoch,
                message,
                trace,
            } => {
                let span =
                    crate::telemetry::deliver_span(trace.as_deref(), room.as_str(), message.offset);
                let _entered = span.enter();
                self.on_stored(&room, epoch, message)
            }
            EngineEvent::Typing { room, user } => {
                let frame = ServerFrame::Typing {
                    room: room.as_str().to_owned(),
                    user,
                };
                self.fan_out_ephemeral(&room, &frame);
            }
            EngineEvent::Presence { room, user, joined } => self.on_presence(&room, user, joined),
            EngineEvent::Epoch { room, epoch } => {
                let mut rooms = self.room_shard(&room);
                if let Some(r) = rooms.get_mut(&room) {
                    if r.cursor.as_ref().is_some_and(|c| c.epoch != epoch) {
                        r.reset("epoch");
                    }
                }
            }
            EngineEvent::Dropped { room } => self.verify(&room),
            EngineEvent::Resync => self.resync(None),
        }
    }

    /// A presence change of `room`: gathered for the window, or out at once
    /// when there is none.
    fn on_presence(&self, room: &RoomName, user: User, joined: bool) {
        let start = {
            let mut rooms = self.room_shard(room);
            let Some(r) = rooms.get_mut(room) else { return };
            r.presence_seq += 1;
            let seq = r.presence_seq;
            if self.presence.window.is_zero() {
                drop(rooms);
                self.fan_out_presence(room, PendingPresence::one(user, joined, seq));
                return;
            }
            let start = r.presence.is_none();
            r.presence
                .get_or_insert_with(PendingPresence::default)
                .add(user, joined, seq);
            start
        };
        if start {
            self.tracker
                .spawn(Hub::flush_presence(self.me.clone(), room.clone()));
        }
    }

    /// The end of a room's presence window (at once if the instance stops):
    /// its changes go out as one frame.
    async fn flush_presence(hub: Weak<Hub>, room: RoomName) {
        let Some(hub) = Hub::after(hub, |h| h.presence.window).await else {
            return;
        };
        let pending = {
            let mut rooms = hub.room_shard(&room);
            rooms.get_mut(&room).and_then(|r| r.presence.take())
        };
        if let Some(pending) = pending {
            hub.fan_out_presence(&room, pending);
        }
    }

    /// One `presence` frame with the changes of `pending` to each local
    /// member, leaving out the member's own user (no one is told about
    /// themselves) and the changes handled before the member was added
    /// (its `joined.members` holds them). Encoded once per distinct
    /// (first change, own user mentioned) pair, so once for everyone who
    /// was here before the window; not sent to a member it would tell
    /// nothing.
    fn fan_out_presence(&self, room: &RoomName, pending: PendingPresence) {
        let first_seq = pending.changes.iter().map(|c| c.2).min().unwrap_or(0);
        let frame = |after: u64, without: Option<&str>| {
            let (mut joined, mut left) = (Vec::new(), Vec::new());
            for (user, arrived, seq) in &pending.changes {
                if *seq <= after || without == Some(user.id.as_str()) {
                    continue;
                }
                if *arrived {
                    joined.push(user.clone());
                } else {
                    left.push(user.clone());
                }
            }
            (!joined.is_empty() || !left.is_empty()).then(|| {
                encode(&ServerFrame::Presence {
                    room: room.as_str().to_owned(),
                    joined,
                    left,
                })
            })
        };
        let everyone = frame(0, None);
        let rooms = self.room_shard(room);
        let Some(r) = rooms.get(room) else { return };
        let item = |bytes: crate::codec::Wire| {
            Arc::new(Outbound {
                room: r.key.clone(),
                offset: 0,
                frame: bytes,
            })
        };
        let shared = everyone.map(item);
        let mut theirs: HashMap<(u64, Option<&str>), Option<Arc<Outbound>>> = HashMap::new();
        let mut sent = 0u64;
        for member in r.members.values() {
            let id = member.user.id.as_str();
            let mentioned = pending.index.contains_key(id).then_some(id);
            let after = member.presence_from.max(first_seq.saturating_sub(1));
            let out = if mentioned.is_none() && after < first_seq {
                shared.clone()
            } else {
                theirs
                    .entry((after, mentioned))
                    .or_insert_with(|| frame(after, mentioned).map(item))
                    .clone()
            };
            if let Some(out) = out {
                r.push(member, out);
                sent += 1;
            }
        }
        metrics::counter!(m::PRESENCE_FRAMES).increment(sent);
    }

    /// Typing goes to every local member but the connections of the typing
    /// user.
    fn fan_out_ephemeral(&self, room: &RoomName, frame: &ServerFrame) {
        let about = match frame {
            ServerFrame::Typing { user, .. } => Some(user.id.as_str()),
            _ => None,
        };
        let frame = encode(frame);
        let rooms = self.room_shard(room);
        let Some(r) = rooms.get(room) else { return };
        let item = Arc::new(Outbound {
            room: r.key.clone(),
            offset: 0,
            frame,
        });
        r.fan_out(&item, about);
    }

    /// A stored message of a subscribed room arrived: the delivery rule.
    fn on_stored(&self, room: &RoomName, epoch: Arc<str>, message: ChatMessage) {
        let offset = message.offset;
        // Encoded before taking the lock: joins and leaves of every room wait
        // on this mutex, and serialising is the slowest step here.
        let delivery = Delivery {
            epoch,
            offset,
            id: room::id_hash(&message.id),
            frame: encode(&ServerFrame::Message(message)),
        };
        let catch_up = {
            let mut rooms = self.room_shard(room);
            let Some(r) = rooms.get_mut(room) else { return };
            r.arrive(delivery)
        };
        if catch_up {
            metrics::counter!(m::GAP_FILLS).increment(1);
            self.start_catch_up(room.clone());
        }
    }

    /// The transport may have lost events: every local room of shard
    /// `shard` (of every shard: `None`) catches up from the store (a room
    /// already catching up reads the store once more).
    fn resync(&self, shard: Option<usize>) {
        match shard {
            Some(i) => self.resync_shard(i),
            None => (0..self.shards.len()).for_each(|i| self.resync_shard(i)),
        }
    }

    fn resync_shard(&self, shard: usize) {
        let start: Vec<RoomName> = {
            let mut rooms = self.shard(shard);
            rooms
                .iter_mut()
                .filter_map(|(name, r)| match &mut r.catching_up {
                    Some(held) => {
                        held.stale = true;
                        None
                    }
                    None => {
                        r.catching_up = Some(Default::default());
                        Some(name.clone())
                    }
                })
                .collect()
        };
        for room in start {
            self.start_catch_up(room);
        }
    }

    fn start_catch_up(&self, room: RoomName) {
        self.tracker.spawn(Hub::catch_up(self.me.clone(), room));
    }
}

#[cfg(test)]
mod tests;
