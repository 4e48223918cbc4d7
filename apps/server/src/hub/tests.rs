//! The hub's rules against the in-process engine. Each test names the rule
//! it pins. The tests stand in for the transport between the engine and
//! the hub: they take the engine's events off its channel and hand the hub
//! the ones they choose (dropping some is Redis pub/sub losing them).
//! Store faults (a failing or slow read) come from [`Faulty`], a broker
//! that passes every call to the memory engine unless told otherwise.

use super::room::{Cursor, Step};
use super::*;
use crate::engine::memory::MemoryEngine;
use crate::engine::Position;
use async_trait::async_trait;
use protocol::CloseCode;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

const LIMITS: RecoveryLimits = RecoveryLimits {
    recent: 50,
    max_replay: 1000,
};

/// Joins refused at once (the tests of waiting joins set their own).
const NO_WAIT: JoinWaits = JoinWaits {
    wait: Duration::ZERO,
    waiters: 0,
};

/// A broker that fails the next `failures` position reads, and blocks the
/// range reads of room `slow` until `release` is notified.
struct Faulty {
    inner: Arc<MemoryEngine>,
    failures: AtomicUsize,
    slow: std::sync::Mutex<Option<RoomName>>,
    release: Notify,
    /// Position reads that reached the store (counting the failed ones).
    reads: AtomicUsize,
}

#[async_trait]
impl Broker for Faulty {
    fn kind(&self) -> &'static str {
        "faulty"
    }
    async fn publish(
        &self,
        room: &RoomName,
        msg: Publication,
        seen: Option<&Position>,
    ) -> Result<Published, EngineError> {
        self.inner.publish(room, msg, seen).await
    }
    async fn reset_epoch(&self, room: &RoomName, lost: &str) -> Result<(), EngineError> {
        self.inner.reset_epoch(room, lost).await
    }
    async fn position(&self, room: &RoomName) -> Result<Position, EngineError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(EngineError::Unavailable("injected".into()));
        }
        self.inner.position(room).await
    }
    async fn range(
        &self,
        room: &RoomName,
        after: u64,
        upto: u64,
    ) -> Result<Vec<ChatMessage>, EngineError> {
        let slow = self.slow.lock().unwrap().as_ref() == Some(room);
        if slow {
            self.release.notified().await;
        }
        self.inner.range(room, after, upto).await
    }
    async fn before(
        &self,
        room: &RoomName,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, EngineError> {
        self.inner.before(room, before, limit).await
    }
    async fn subscribe(&self, room: &RoomName) -> Result<(), EngineError> {
        self.inner.subscribe(room).await
    }
    async fn unsubscribe(&self, room: &RoomName) {
        self.inner.unsubscribe(room).await
    }
    async fn typing(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        self.inner.typing(room, user).await
    }
    async fn reachable(&self) -> Result<(), EngineError> {
        self.inner.reachable().await
    }
}

struct Rig {
    hub: Arc<Hub>,
    broker: Arc<Faulty>,
    /// The receivers of the hub's shards ([`RIG_SHARDS`]).
    events: Vec<mpsc::Receiver<EngineEvent>>,
    tracker: TaskTracker,
    next_conn: ConnId,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_waits(NO_WAIT)
    }

    fn with_waits(waits: JoinWaits) -> Rig {
        Rig::with(waits, Duration::ZERO)
    }

    fn with(waits: JoinWaits, grace: Duration) -> Rig {
        Rig::with_timing(
            waits,
            PresenceTiming {
                grace,
                window: Duration::ZERO,
            },
        )
    }

    fn with_timing(waits: JoinWaits, timing: PresenceTiming) -> Rig {
        let (tx, events) = Events::channel(RIG_SHARDS, 4096);
        let memory = Arc::new(MemoryEngine::new(tx, 10_000));
        let broker = Arc::new(Faulty {
            inner: memory.clone(),
            failures: AtomicUsize::new(0),
            slow: std::sync::Mutex::new(None),
            release: Notify::new(),
            reads: AtomicUsize::new(0),
        });
        let tracker = TaskTracker::new();
        let hub = Hub::new(
            RIG_SHARDS,
            broker.clone(),
            memory,
            LIMITS,
            waits,
            timing,
            tracker.clone(),
            CancellationToken::new(),
        );
        Rig {
            hub,
            broker,
            events,
            tracker,
            next_conn: 1,
        }
    }

    /// From now on, range reads of `name` wait for `release`.
    fn slow_down(&self, name: &str) {
        *self.broker.slow.lock().unwrap() = Some(room(name));
    }

    /// Range reads of the slow room go on, the waiting one included.
    fn speed_up(&self) {
        *self.broker.slow.lock().unwrap() = None;
        self.broker.release.notify_one();
    }

    /// Joins a new connection of `user` to `room`; returns its outbox.
    async fn join(&mut self, name: &str, user: &Arc<User>) -> Arc<Outbox> {
        let outbox = Outbox::detached(10_000);
        let member = Member {
            conn: self.next_conn,
            user: user.clone(),
            outbox: outbox.clone(),
            presence_from: 0,
        };
        self.next_conn += 1;
        self.hub
            .join(&room(name), member, None)
            .await
            .expect("join");
        outbox
    }

    async fn publish(&self, name: &str, n: usize) {
        let from = User {
            id: "u_sender".into(),
            name: "sender".into(),
        };
        for i in 0..n {
            let msg = Publication {
                id: format!("m_{i}"),
                client_id: format!("c-{}", rand::random::<u64>()),
                from: from.clone(),
                body: format!("body {i}"),
                ts: 0,
                trace: None,
            };
            self.hub.publish(&room(name), msg).await.expect("publish");
        }
    }

    /// Takes the events the engine emitted so far.
    fn take_events(&mut self) -> Vec<EngineEvent> {
        let mut out = Vec::new();
        for shard in &mut self.events {
            while let Ok(e) = shard.try_recv() {
                out.push(e);
            }
        }
        out
    }

    /// Hands every emitted event to the hub.
    fn pump(&mut self) {
        for e in self.take_events() {
            self.hub.handle(e);
        }
    }

    /// Waits until every catch-up task has ended.
    async fn caught_up(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }
}

/// Shards of the rigs' hubs: more than one, so rooms of a test land on
/// different shards (each with its own lock), as on a multi-core instance.
const RIG_SHARDS: usize = 3;

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn user(id: &str) -> Arc<User> {
    Arc::new(User {
        id: id.into(),
        name: id.into(),
    })
}

/// What a member's outbox holds: offsets of messages, 0 for other frames.
fn drained(outbox: &Outbox) -> (Vec<u64>, Option<CloseCode>) {
    let mut batch = VecDeque::new();
    let kick = outbox.drain(&mut batch);
    (batch.iter().map(|i| i.offset).collect(), kick)
}

fn frames(outbox: &Outbox) -> Vec<String> {
    let mut batch = VecDeque::new();
    outbox.drain(&mut batch);
    batch.iter().map(|i| i.frame.text().to_owned()).collect()
}

fn message_event(name: &str, epoch: &str, offset: u64) -> EngineEvent {
    EngineEvent::Message {
        trace: None,
        room: room(name),
        epoch: Arc::from(epoch),
        message: ChatMessage {
            room: name.into(),
            offset,
            id: format!("m_{offset}"),
            client_id: format!("c-{offset}"),
            from: User::clone(&user("u_x")),
            body: "b".into(),
            ts: 0,
        },
    }
}

fn cursor(epoch: &str, offset: u64) -> Cursor {
    Cursor {
        epoch: Arc::from(epoch),
        offset,
        id: None,
        provisional: false,
    }
}

/// Rule: the delivery decision of each (cursor, message) pair.
#[test]
fn the_delivery_rule_decides_by_epoch_and_offset() {
    let c = cursor("e1", 5);
    assert_eq!(Step::of(None, "e1", 9), Step::Deliver);
    assert_eq!(Step::of(Some(&c), "e1", 6), Step::Deliver);
    assert_eq!(Step::of(Some(&c), "e1", 5), Step::Skip);
    assert_eq!(Step::of(Some(&c), "e1", 1), Step::Skip);
    assert_eq!(Step::of(Some(&c), "e1", 7), Step::Fill);
    assert_eq!(Step::of(Some(&c), "e2", 6), Step::NewEpoch);
    assert_eq!(Step::of(Some(&c), "e2", 1), Step::NewEpoch);
}

/// Rule: deliver — the next offset reaches every member, in order, once.
#[tokio::test]
async fn the_next_offset_reaches_every_member_in_order() {
    let mut rig = Rig::new();
    let a = rig.join("lobby", &user("u_a")).await;
    let b = rig.join("lobby", &user("u_b")).await;
    rig.take_events(); // presence
    rig.publish("lobby", 3).await;
    rig.pump();
    assert_eq!(drained(&a), (vec![1, 2, 3], None));
    assert_eq!(drained(&b), (vec![1, 2, 3], None));
}

/// Rule: skip — an event at or below the cursor (the transport bringing
/// what a joiner's history or a catch-up's read held already) is not
/// delivered again.
#[tokio::test]
async fn an_offset_at_or_below_the_cursor_is_skipped() {
    let mut rig = Rig::new();
    let a = rig.join("lobby", &user("u_a")).await;
    rig.take_events();
    rig.publish("lobby", 2).await;
    rig.pump();
    assert_eq!(drained(&a), (vec![1, 2], None));
    // A resync's catch-up reads 3 and 4 from the store while the
    // transport brings them too.
    rig.slow_down("lobby");
    rig.publish("lobby", 2).await;
    let events = rig.take_events();
    rig.hub.handle(EngineEvent::Resync);
    tokio::task::yield_now().await;
    for e in events {
        rig.hub.handle(e); // held while the catch-up reads
    }
    rig.speed_up();
    rig.caught_up().await;
    // Delivered from the read; the held copies are skipped.
    assert_eq!(drained(&a), (vec![3, 4], None));
}

/// Rule: fill — after a gap the message waits until the missing ones are
/// read from the store; members get all of them in offset order.
#[tokio::test]
async fn a_gap_is_filled_from_the_store_before_the_later_message() {
    let mut rig = Rig::new();
    let a = rig.join("lobby", &user("u_a")).await;
    rig.take_events();
    rig.publish("lobby", 5).await;
    let events = rig.take_events();
    // The transport lost offsets 2..=4.
    rig.hub.handle(events[0].clone());
    rig.hub.handle(events[4].clone());
    rig.caught_up().await;
    assert_eq!(drained(&a), (vec![1, 2, 3, 4, 5], None));
    rig.publish("lobby", 1).await;
    rig.pump();
    assert_eq!(drained(&a), (vec![6], None));
}

/// Rule: new epoch — a message of another epoch means the room's history
/// was lost: members are asked to reconnect (1013) and nothing is delivered.
#[tokio::test]
async fn another_epoch_resets_the_members() {
    let mut rig = Rig::new();
    let a = rig.join("lobby", &user("u_a")).await;
    rig.take_events();
    rig.publish("lobby", 1).await;
    rig.pump();
    assert_eq!(drained(&a), (vec![1], None));
    rig.hub.handle(message_event("lobby", "another-epoch", 2));
    assert_eq!(drained(&a), (vec![], Some(CloseCode::TryAgainLater)));
}

/// Rule: new epoch, found by a catch-up — the store answers another epoch
/// than the room's cursor: members reset, nothing of the old epoch held.
#[tokio::test]
async fn a_catch_up_that_finds_another_epoch_resets_the_members() {
    let mut rig = Rig::new();
    let a = rig.join("lobby", &user("u_a")).await;
    rig.take_events();
    // The room's cursor is in an epoch the store no longer has; a message
    // of that epoch opens a gap, and the catch-up finds the store elsewhere.
    {
        let mut rooms = rig.hub.room_shard(&room("lobby"));
        rooms.get_mut(&room("lobby")).unwrap().cursor = Some(cursor("stale-epoch", 0));
    }
    rig.hub.handle(message_event("lobby", "stale-epoch", 3));
    rig.caught_up().await;
    assert_eq!(drained(&a), (vec![], Some(CloseCode::TryAgainLater)));
}

/// A room whose members were given offsets 1..=8, and a store that then
/// lost everything after 5 (restored from an older snapshot).
async fn diverged_rig() -> (Rig, Arc<Outbox>, Arc<str>) {
    let mut rig = Rig::new();
    let a = rig.join("lobby", &user("u_a")).await;
    rig.take_events();
    rig.publish("lobby", 8).await;
    rig.pump();
    assert_eq!(drained(&a), ((1..=8).collect(), None));
    let epoch = rig
        .broker
        .inner
        .position(&room("lobby"))
        .await
        .unwrap()
        .epoch;
    rig.broker.inner.lose_history_after(&room("lobby"), 5).await;
    (rig, a, epoch)
}

/// A message in the room as another instance publishes it: it has seen
/// nothing of the room, so its publish cannot tell the store went back.
async fn publish_unseen(rig: &Rig, body: &str) -> Published {
    let msg = Publication {
        id: format!("m_{body}"),
        client_id: format!("c-{body}"),
        from: User::clone(&user("u_other")),
        body: body.into(),
        ts: 0,
        trace: None,
    };
    rig.broker
        .inner
        .publish(&room("lobby"), msg, None)
        .await
        .unwrap()
}

/// Rule: divergence, seen on publish — the store's offset is below what
/// this instance delivered in the same epoch: the message is stored in a
/// new epoch, announced, and the members are reset; the new epoch's
/// history holds the message (acked, not lost).
#[tokio::test]
async fn a_publish_that_finds_the_store_behind_starts_a_new_epoch() {
    let (mut rig, a, lost) = diverged_rig().await;
    rig.publish("lobby", 1).await;
    rig.pump();
    assert_eq!(drained(&a).1, Some(CloseCode::TryAgainLater));
    rig.caught_up().await;
    let pos = rig.broker.inner.position(&room("lobby")).await.unwrap();
    assert_ne!(pos.epoch, lost);
    assert_eq!(pos.offset, 6);
    let history = rig.broker.inner.range(&room("lobby"), 5, 6).await.unwrap();
    assert_eq!(history.len(), 1, "the acked message is in the new epoch");
}

/// Rule: divergence, seen on the transport — another instance's publish
/// (it joined after the loss) brings an offset at or below the previous
/// one: the room gets a new epoch in the store and the members are reset.
#[tokio::test]
async fn an_offset_that_goes_back_on_the_transport_starts_a_new_epoch() {
    let (mut rig, a, lost) = diverged_rig().await;
    let published = publish_unseen(&rig, "after-restore").await;
    assert_eq!(
        (published.offset, &published.epoch),
        (6, &lost),
        "the store cannot tell"
    );
    rig.pump();
    rig.caught_up().await;
    assert_eq!(drained(&a), (vec![], Some(CloseCode::TryAgainLater)));
    let pos = rig.broker.inner.position(&room("lobby")).await.unwrap();
    assert_ne!(pos.epoch, lost, "written to the store, for every instance");
    assert_eq!(pos.offset, 6);
}

/// Rule: divergence, seen on catch-up — a resync finds the store behind
/// the room's cursor: new epoch, members reset.
#[tokio::test]
async fn a_catch_up_that_finds_the_store_behind_starts_a_new_epoch() {
    let (rig, a, lost) = diverged_rig().await;
    rig.hub.handle(EngineEvent::Resync);
    rig.caught_up().await;
    assert_eq!(drained(&a), (vec![], Some(CloseCode::TryAgainLater)));
    let pos = rig.broker.inner.position(&room("lobby")).await.unwrap();
    assert_ne!(pos.epoch, lost);
    assert_eq!(pos.offset, 5);
}

/// Rule: an epoch announced by the store (another instance found the
/// divergence) resets this instance's members of the room too.
#[tokio::test]
async fn an_announced_epoch_resets_the_members() {
    let (mut rig, a, lost) = diverged_rig().await;
    rig.broker
        .inner
        .reset_epoch(&room("lobby"), &lost)
        .await
        .unwrap();
    let events = rig.take_events();
    assert!(
        matches!(events.as_slice(), [EngineEvent::Epoch { .. }]),
        "{events:?}"
    );
    for e in events {
        rig.hub.handle(e);
    }
    assert_eq!(drained(&a), (vec![], Some(CloseCode::TryAgainLater)));
    // A second announcement of a stale epoch changes nothing.
    rig.broker
        .inner
        .reset_epoch(&room("lobby"), &lost)
        .await
        .unwrap();
    assert!(rig.take_events().is_empty());
}

/// Rule: presence counts a user once per instance — a second tab of the
/// same user announces nothing, and only the last tab's leave does.
#[tokio::test]
async fn two_tabs_of_one_user_are_present_once() {
    let mut rig = Rig::new();
    let bob = user("u_bob");
    let observer = rig.join("lobby", &user("u_obs")).await;
    rig.pump();
    drained(&observer);
    let tab1 = rig.join("lobby", &bob).await;
    let tab2 = rig.join("lobby", &bob).await;
    rig.pump();
    let seen = frames(&observer);
    assert_eq!(seen.len(), 1, "one presence join: {seen:?}");
    assert!(
        seen[0].contains("\"joined\":[{\"id\":\"u_bob\""),
        "{}",
        seen[0]
    );
    let members = rig.hub.store.members(&room("lobby")).await.unwrap();
    assert_eq!(members.iter().filter(|u| u.id == "u_bob").count(), 1);

    // Both tabs get every message.
    rig.publish("lobby", 2).await;
    rig.pump();
    assert_eq!(drained(&tab1).0, [1, 2]);
    assert_eq!(drained(&tab2).0, [1, 2]);
    drained(&observer);

    rig.hub.leave(&room("lobby"), 2).await;
    rig.pump();
    assert_eq!(frames(&observer), Vec::<String>::new(), "one tab is left");
    rig.hub.leave(&room("lobby"), 3).await;
    rig.pump();
    let seen = frames(&observer);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].contains("\"left\":[{\"id\":\"u_bob\""),
        "{}",
        seen[0]
    );
}

/// Rule: a room's presence changes within the window go out as one frame,
/// each user once in their latest state (one who joined and left is in
/// `left`), and none before the window ends.
#[tokio::test(start_paused = true)]
async fn presence_changes_within_the_window_go_out_as_one_frame() {
    let mut rig = Rig::with_timing(
        NO_WAIT,
        PresenceTiming {
            grace: Duration::ZERO,
            window: Duration::from_millis(200),
        },
    );
    let observer = rig.join("lobby", &user("u_obs")).await;
    rig.pump();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        frames(&observer),
        Vec::<String>::new(),
        "not told of itself"
    );
    let _ann = rig.join("lobby", &user("u_ann")).await;
    let _ben = rig.join("lobby", &user("u_ben")).await;
    rig.hub.leave(&room("lobby"), 2).await;
    rig.pump();
    assert_eq!(
        frames(&observer),
        Vec::<String>::new(),
        "the window is open"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let seen = frames(&observer);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].contains("\"joined\":[{\"id\":\"u_ben\"")
            && seen[0].contains("\"left\":[{\"id\":\"u_ann\""),
        "{}",
        seen[0]
    );
}

/// Rule: a failed catch-up is retried with backoff until it succeeds;
/// meanwhile the room's later messages wait, and nothing is lost.
#[tokio::test(start_paused = true)]
async fn a_catch_up_that_fails_is_retried_until_it_succeeds() {
    let mut rig = Rig::new();
    let a = rig.join("lobby", &user("u_a")).await;
    rig.take_events();
    rig.broker.failures.store(3, Ordering::SeqCst);
    rig.broker.reads.store(0, Ordering::SeqCst);
    rig.publish("lobby", 4).await;
    let events = rig.take_events();
    rig.hub.handle(events[0].clone());
    rig.hub.handle(events[3].clone());
    assert_eq!(drained(&a), (vec![1], None));
    rig.publish("lobby", 1).await;
    rig.pump(); // offset 5 arrives while the catch-up fails: it waits
    assert_eq!(drained(&a), (vec![], None));
    rig.caught_up().await;
    assert_eq!(
        rig.broker.reads.load(Ordering::SeqCst),
        4,
        "3 failures, then success"
    );
    assert_eq!(drained(&a), (vec![2, 3, 4, 5], None));
}

/// Rule: the event loop never waits for the store — while one room's
/// catch-up is stuck on a slow read, other rooms are delivered at once,
/// and the slow room's later messages wait for its catch-up only.
#[tokio::test]
async fn a_slow_rooms_catch_up_does_not_stall_another_room() {
    let mut rig = Rig::new();
    let s = rig.join("slow", &user("u_s")).await;
    let f = rig.join("fast", &user("u_f")).await;
    rig.take_events();
    rig.slow_down("slow");
    rig.publish("slow", 3).await;
    let events = rig.take_events();
    rig.hub.handle(events[0].clone());
    rig.hub.handle(events[2].clone()); // gap: catch-up starts, blocks
    tokio::task::yield_now().await;

    rig.publish("fast", 2).await;
    rig.publish("slow", 1).await;
    rig.pump(); // returns without waiting for the slow read
    assert_eq!(drained(&f), (vec![1, 2], None));
    assert_eq!(
        drained(&s),
        (vec![1], None),
        "slow room's later messages wait"
    );

    rig.speed_up();
    rig.caught_up().await;
    assert_eq!(drained(&s), (vec![2, 3, 4], None));
}

/// Rule: held messages are bounded — past the bound the catch-up reads the
/// store again instead, and still delivers every message once, in order.
#[tokio::test]
async fn more_messages_than_a_room_holds_during_a_catch_up_are_read_again() {
    let mut rig = Rig::new();
    let s = rig.join("slow", &user("u_s")).await;
    rig.take_events();
    rig.slow_down("slow");
    rig.publish("slow", 3).await;
    let events = rig.take_events();
    rig.hub.handle(events[0].clone());
    rig.hub.handle(events[2].clone());
    // The catch-up reads the position (3), then waits in its range read.
    tokio::task::yield_now().await;
    let more = room::HELD_MAX + 10;
    rig.publish("slow", more).await;
    rig.pump();
    {
        let rooms = rig.hub.room_shard(&room("slow"));
        let held = rooms[&room("slow")].catching_up.as_ref().unwrap();
        assert_eq!(held.messages.len(), room::HELD_MAX);
        assert!(held.stale, "what was not held must be read from the store");
    }
    rig.speed_up();
    rig.caught_up().await;
    let total = 3 + more as u64;
    assert_eq!(drained(&s), ((1..=total).collect(), None));
}

/// Rule: a resync (the transport may have lost events) catches every local
/// room up from the store.
#[tokio::test]
async fn a_resync_catches_every_room_up() {
    let mut rig = Rig::new();
    let a = rig.join("one", &user("u_a")).await;
    let b = rig.join("two", &user("u_b")).await;
    rig.take_events();
    rig.publish("one", 2).await;
    rig.publish("two", 3).await;
    rig.take_events(); // all lost
    rig.hub.handle(EngineEvent::Resync);
    rig.caught_up().await;
    assert_eq!(drained(&a), (vec![1, 2], None));
    assert_eq!(drained(&b), (vec![1, 2, 3], None));
}

/// Rule: one broker subscription per local membership, ended by its leave
/// — a member whose join failed leaves no membership behind.
#[tokio::test]
async fn a_failed_join_leaves_no_member_behind() {
    let mut rig = Rig::new();
    rig.broker.failures.store(1, Ordering::SeqCst);
    let outbox = Outbox::detached(16);
    let member = Member {
        conn: 99,
        user: user("u_a"),
        outbox,
        presence_from: 0,
    };
    assert!(rig.hub.join(&room("lobby"), member, None).await.is_err());
    assert_eq!(rig.hub.local_rooms(), 0);
    rig.take_events();
    assert!(rig.hub.local_presence().is_empty());
}

/// Rule: divergence, seen on catch-up — the transport brought a message
/// (so the store held it) that the store no longer has when the catch-up
/// reads it: the store lost it. New epoch, members reset.
#[tokio::test]
async fn a_held_message_the_store_no_longer_has_starts_a_new_epoch() {
    let mut rig = Rig::new();
    let a = rig.join("lobby", &user("u_a")).await;
    rig.take_events();
    rig.publish("lobby", 2).await;
    rig.pump();
    assert_eq!(drained(&a), (vec![1, 2], None));
    let epoch = rig.hub.broker.position(&room("lobby")).await.unwrap().epoch;
    rig.hub.handle(message_event("lobby", &epoch, 5));
    rig.caught_up().await;
    assert_eq!(drained(&a), (vec![], Some(CloseCode::TryAgainLater)));
    let pos = rig.broker.inner.position(&room("lobby")).await.unwrap();
    assert_ne!(pos.epoch, epoch);
}

/// Rule: never a gap — a catch-up that finds the missing messages trimmed
/// from the history resets the members (they re-join with
/// `recovered: false`) instead of delivering past the hole.
#[tokio::test]
async fn a_gap_trimmed_from_the_history_resets_the_members() {
    let (tx, mut events) = Events::channel(1, 4096);
    let mut events = events.remove(0);
    let memory = Arc::new(MemoryEngine::new(tx, 3));
    let tracker = TaskTracker::new();
    let hub = Hub::new(
        1,
        memory.clone(),
        memory.clone(),
        LIMITS,
        NO_WAIT,
        PresenceTiming {
            grace: Duration::ZERO,
            window: Duration::ZERO,
        },
        tracker.clone(),
        CancellationToken::new(),
    );
    let a = Outbox::detached(100);
    let member = Member {
        conn: 1,
        user: user("u_a"),
        outbox: a.clone(),
        presence_from: 0,
    };
    hub.join(&room("lobby"), member, None).await.unwrap();
    let sender = User::clone(&user("u_s"));
    for i in 0..6 {
        let msg = Publication {
            id: format!("m_{i}"),
            client_id: format!("c-{i}"),
            from: sender.clone(),
            body: "b".into(),
            ts: 0,
            trace: None,
        };
        memory.publish(&room("lobby"), msg, None).await.unwrap();
    }
    let mut got = Vec::new();
    while let Ok(e) = events.try_recv() {
        got.push(e);
    }
    let messages: Vec<EngineEvent> = got
        .into_iter()
        .filter(|e| matches!(e, EngineEvent::Message { .. }))
        .collect();
    hub.handle(messages[0].clone());
    // Offsets 2..=5 lost on the transport; the history keeps only 4..=6.
    hub.handle(messages[5].clone());
    tracker.close();
    tracker.wait().await;
    assert_eq!(drained(&a), (vec![1], Some(CloseCode::TryAgainLater)));
}

fn member_of(rig: &mut Rig, id: &str) -> Member {
    rig.next_conn += 1;
    Member {
        conn: rig.next_conn,
        user: user(id),
        outbox: Outbox::detached(100),
        presence_from: 0,
    }
}

/// Rule: a join that meets an unavailable store waits for it — an outage
/// shorter than the wait ends in `joined`, not `unavailable`.
#[tokio::test(start_paused = true)]
async fn a_join_waits_for_a_store_that_comes_back() {
    let mut rig = Rig::with_waits(JoinWaits {
        wait: Duration::from_secs(10),
        waiters: 10,
    });
    rig.broker.failures.store(5, Ordering::SeqCst);
    let member = member_of(&mut rig, "u_a");
    let started = tokio::time::Instant::now();
    let joined = rig.hub.join(&room("lobby"), member, None).await;
    assert!(joined.is_ok(), "{joined:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(rig.broker.failures.load(Ordering::SeqCst), 0);
    assert_eq!(rig.hub.local_presence().len(), 1, "joined once");
}

/// Rule: the wait is bounded in time — a store away longer than
/// `--join-wait-ms` gets the join refused `unavailable` when it runs out,
/// and nothing of the member is left behind.
#[tokio::test(start_paused = true)]
async fn a_join_is_refused_when_the_store_stays_away_past_the_wait() {
    let mut rig = Rig::with_waits(JoinWaits {
        wait: Duration::from_secs(3),
        waiters: 10,
    });
    rig.broker.failures.store(usize::MAX, Ordering::SeqCst);
    let member = member_of(&mut rig, "u_a");
    let started = tokio::time::Instant::now();
    let joined = rig.hub.join(&room("lobby"), member, None).await;
    assert!(
        matches!(joined, Err(EngineError::Unavailable(_))),
        "{joined:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(rig.hub.local_rooms(), 0);
}

/// Rule: the wait is bounded in number — past `--join-waiters` waiting
/// joins, a join is refused at once instead of queueing.
#[tokio::test(start_paused = true)]
async fn joins_past_the_waiters_bound_are_refused_at_once() {
    let mut rig = Rig::with_waits(JoinWaits {
        wait: Duration::from_secs(3),
        waiters: 1,
    });
    rig.broker.failures.store(usize::MAX, Ordering::SeqCst);
    let (a, b) = (member_of(&mut rig, "u_a"), member_of(&mut rig, "u_b"));
    let hub = rig.hub.clone();
    let waiting = tokio::spawn(async move { hub.join(&room("lobby"), a, None).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = tokio::time::Instant::now();
    let refused = rig.hub.join(&room("lobby"), b, None).await;
    assert!(matches!(refused, Err(EngineError::Unavailable(_))));
    assert_eq!(started.elapsed(), Duration::ZERO, "refused at once");
    rig.broker.failures.store(0, Ordering::SeqCst);
    assert!(waiting.await.unwrap().is_ok(), "the waiting one joins");
}

/// Rule: divergence, seen by id — the store lost 6..=8 and another
/// instance (which could not tell) wrote other messages at 6..=8 while
/// this one's transport was down: the offsets match the cursor, the
/// message at the cursor's offset does not. A resync resets the room.
#[tokio::test]
async fn a_catch_up_that_finds_another_message_at_the_cursor_starts_a_new_epoch() {
    let (mut rig, a, lost) = diverged_rig().await;
    for body in ["x6", "x7", "x8"] {
        publish_unseen(&rig, body).await;
    }
    rig.take_events(); // lost with the transport
    rig.hub.handle(EngineEvent::Resync);
    rig.caught_up().await;
    assert_eq!(drained(&a), (vec![], Some(CloseCode::TryAgainLater)));
    let pos = rig.broker.inner.position(&room("lobby")).await.unwrap();
    assert_ne!(pos.epoch, lost);
}

/// Rule: a catch-up that read the store before its room was reset
/// delivers nothing of the old epoch to the members who re-joined.
#[tokio::test]
async fn a_catch_up_that_ends_after_a_reset_delivers_nothing() {
    let mut rig = Rig::new();
    let a = rig.join("lobby", &user("u_a")).await;
    rig.take_events();
    rig.publish("lobby", 1).await;
    rig.pump();
    drained(&a);
    rig.slow_down("lobby");
    rig.publish("lobby", 2).await;
    rig.take_events(); // lost: the resync's catch-up reads 2 and 3
    rig.hub.handle(EngineEvent::Resync);
    tokio::task::yield_now().await;
    // Meanwhile the room gets a new epoch in the store (another instance
    // found a divergence): the room is reset, and a member joins in the
    // new epoch, below the offsets the catch-up read.
    let old = rig
        .broker
        .inner
        .position(&room("lobby"))
        .await
        .unwrap()
        .epoch;
    rig.broker
        .inner
        .reset_epoch(&room("lobby"), &old)
        .await
        .unwrap();
    rig.pump();
    assert_eq!(drained(&a).1, Some(CloseCode::TryAgainLater));
    rig.hub
        .room_shard(&room("lobby"))
        .get_mut(&room("lobby"))
        .unwrap()
        .members
        .clear();
    let b = rig.join("lobby", &user("u_b")).await;
    rig.speed_up();
    rig.caught_up().await;
    assert_eq!(drained(&b).0, Vec::<u64>::new(), "nothing of the old epoch");
}

/// Rule: presence grace — a user whose last connection leaves and who comes
/// back within the grace (a reload, 300 join/leave toggles) changes nothing
/// for the others; one who stays away is announced as left once, after it.
#[tokio::test(start_paused = true)]
async fn a_user_back_within_the_grace_is_never_announced_as_left() {
    let mut rig = Rig::with(NO_WAIT, Duration::from_secs(5));
    let observer = rig.join("lobby", &user("u_obs")).await;
    rig.pump();
    let toggler = user("u_t");
    let first = rig.join("lobby", &toggler).await;
    drop(first);
    rig.pump();
    assert_eq!(frames(&observer).len(), 1, "the first join is announced");
    let mut conn = rig.next_conn - 1;
    for _ in 0..300 {
        rig.hub.leave(&room("lobby"), conn).await;
        rig.join("lobby", &toggler).await;
        conn = rig.next_conn - 1;
        rig.pump();
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    rig.caught_up().await;
    rig.pump();
    assert_eq!(
        frames(&observer),
        Vec::<String>::new(),
        "300 toggles: nothing"
    );
    rig.hub.leave(&room("lobby"), conn).await;
    rig.pump();
    assert_eq!(
        frames(&observer),
        Vec::<String>::new(),
        "not yet: within the grace"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    rig.caught_up().await;
    rig.pump();
    let seen = frames(&observer);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].contains("\"left\":[{\"id\":\"u_t\""), "{}", seen[0]);
}
