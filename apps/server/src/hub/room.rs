//! One room as this instance's hub holds it: its local members, its
//! cursor (the last message delivered here), and the messages held while
//! a catch-up fills a gap. Pure and synchronous: every method runs under
//! the hub's lock and never waits.

use super::{ConnId, Member};
use crate::metrics as m;
use crate::outbox::Outbound;
use protocol::{CloseCode, User};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Messages a room holds while its catch-up runs; past this the newest are
/// dropped and the catch-up reads the store once more instead (they are
/// stored: nothing is lost).
pub(super) const HELD_MAX: usize = 1024;

/// A stored message on its way to local members, encoded once.
#[derive(Debug, Clone)]
pub(super) struct Delivery {
    pub(super) epoch: Arc<str>,
    pub(super) offset: u64,
    /// [`id_hash`] of the message's id: kept without allocating per message.
    pub(super) id: u64,
    pub(super) frame: crate::codec::Wire,
}

/// The last message delivered in a room, or the lowest position a joiner
/// was answered with while nothing was delivered yet (`provisional`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) epoch: Arc<str>,
    pub(super) offset: u64,
    /// [`id_hash`] of the message delivered at `offset` (`None` for a
    /// provisional cursor): a catch-up compares it with the store's message
    /// at that offset, so a range the store replaced with other messages
    /// (history lost, then rewritten by an instance that could not tell)
    /// is caught even when the offsets look fine.
    pub(super) id: Option<u64>,
    pub(super) provisional: bool,
}

/// A message id as the cursor keeps it: a 64-bit hash (two different ids
/// colliding is a 2^-64 chance, and would only miss a divergence).
pub(super) fn id_hash(id: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id)
}

/// What the hub does with a stored message of a room, by the room's cursor
/// (the delivery rule of the hub's module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The next offset (or the room has no cursor): deliver it.
    Deliver,
    /// At or below the cursor: delivered already (or in a joiner's history).
    Skip,
    /// Beyond the next offset: the messages between are missing; hold it and
    /// fill the gap from the store first.
    Fill,
    /// Another epoch: the room's history was lost; reset the members.
    NewEpoch,
}

impl Step {
    pub(super) fn of(cursor: Option<&Cursor>, epoch: &str, offset: u64) -> Step {
        match cursor {
            None => Step::Deliver,
            Some(c) if *c.epoch != *epoch => Step::NewEpoch,
            Some(c) if offset <= c.offset => Step::Skip,
            Some(c) if offset == c.offset + 1 => Step::Deliver,
            Some(_) => Step::Fill,
        }
    }
}

/// Messages that arrived while the room's catch-up ran, in arrival order.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub(super) messages: VecDeque<Delivery>,
    /// The store may hold messages that neither the catch-up's read nor
    /// `messages` has (some were dropped past [`HELD_MAX`], or the transport
    /// lost events meanwhile): read the store once more.
    pub(super) stale: bool,
    /// An offset went back within the cursor's epoch: the store lost
    /// messages members were given. The catch-up gives the room a new epoch
    /// and resets its members instead of reading.
    pub(super) diverged: bool,
}

pub(super) struct LocalRoom {
    /// The room's name as the `Arc` every [`Outbound`] of the room carries.
    pub(super) key: Arc<str>,
    pub(super) members: HashMap<ConnId, Member>,
    /// Local connections per user id: presence changes at 0 ↔ 1. The user
    /// is the first connection's (what presence was told).
    pub(super) users: HashMap<String, (Arc<User>, usize)>,
    pub(super) cursor: Option<Cursor>,
    /// The epoch and offset of the last message the transport brought for
    /// this room. The transport delivers a room's messages in the order
    /// they were stored (one script appends and publishes), so a later one
    /// at or below it in the same epoch means the store lost history.
    pub(super) transport: Option<(Arc<str>, u64)>,
    /// How many times the room was reset: a catch-up that started before a
    /// reset delivers nothing of what it read.
    pub(super) resets: u64,
    /// Some while a catch-up of this room runs: every message of the room
    /// waits here until it is done, so members get them in order.
    pub(super) catching_up: Option<Held>,
    /// Presence changes of the current window (`--presence-window-ms`):
    /// Some from the first change until the window's frame goes out.
    pub(super) presence: Option<PendingPresence>,
    /// Presence changes of the room handled so far (see
    /// [`super::Member::presence_from`]).
    pub(super) presence_seq: u64,
    /// The hub's count of messages written to outboxes (the admin view's
    /// deliveries/s), shared by every room of the hub.
    pub(super) delivered: Arc<std::sync::atomic::AtomicU64>,
}

/// The presence changes of a room within one window: each user once, in
/// their latest state, in the order they first changed. A user who joined
/// and left within the window is announced as left (a member who joined
/// meanwhile may have been told they were there).
#[derive(Debug, Default)]
pub(super) struct PendingPresence {
    /// (user, joined, the change's number in the room) triples.
    pub(super) changes: Vec<(User, bool, u64)>,
    /// User id → index in `changes`.
    pub(super) index: HashMap<String, usize>,
}

impl PendingPresence {
    pub(super) fn one(user: User, joined: bool, seq: u64) -> PendingPresence {
        let mut p = PendingPresence::default();
        p.add(user, joined, seq);
        p
    }

    pub(super) fn add(&mut self, user: User, joined: bool, seq: u64) {
        match self.index.get(&user.id) {
            Some(&i) => self.changes[i] = (user, joined, seq),
            None => {
                self.index.insert(user.id.clone(), self.changes.len());
                self.changes.push((user, joined, seq));
            }
        }
    }
}

impl LocalRoom {
    pub(super) fn new(key: Arc<str>, delivered: Arc<std::sync::atomic::AtomicU64>) -> LocalRoom {
        LocalRoom {
            delivered,
            key,
            members: HashMap::new(),
            users: HashMap::new(),
            cursor: None,
            transport: None,
            resets: 0,
            catching_up: None,
            presence: None,
            presence_seq: 0,
        }
    }

    /// Pushes `item` to every member except the connections of user
    /// `except`. A full outbox kicks its member (close 1013).
    pub(super) fn fan_out(&self, item: &Arc<Outbound>, except: Option<&str>) {
        for member in self.members.values() {
            if except.is_some_and(|id| id == member.user.id) {
                continue;
            }
            self.push(member, item.clone());
        }
    }

    /// Pushes `item` to one member; a full outbox kicks it (close 1013).
    pub(super) fn push(&self, member: &Member, item: Arc<Outbound>) {
        // A kicked member stays until its connection leaves; count it once.
        if member.outbox.push(item).is_err() && member.outbox.kick(CloseCode::TryAgainLater) {
            metrics::counter!(m::SLOW_CONSUMER_CLOSES).increment(1);
        }
    }

    /// Delivers one message to every member and moves the cursor, unless it
    /// is not newer than the cursor.
    pub(super) fn deliver(&mut self, d: &Delivery) {
        if self
            .cursor
            .as_ref()
            .is_some_and(|c| c.epoch != d.epoch || d.offset <= c.offset)
        {
            return;
        }
        self.cursor = Some(Cursor {
            epoch: d.epoch.clone(),
            offset: d.offset,
            id: Some(d.id),
            provisional: false,
        });
        let item = Arc::new(Outbound {
            room: self.key.clone(),
            offset: d.offset,
            frame: d.frame.clone(),
        });
        m::delivered(self.members.len() as u64);
        self.delivered.fetch_add(
            self.members.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.fan_out(&item, None);
    }

    /// The room's history was lost (new epoch): local members hold offsets
    /// that mean nothing now. They are asked to reconnect (close 1013);
    /// their re-join with the old epoch is answered `recovered: false` with
    /// the new history.
    pub(super) fn reset(&mut self, reason: &'static str) {
        tracing::warn!(room = %self.key, reason, "room epoch changed; members reconnect");
        metrics::counter!(m::ROOM_RESETS, "reason" => reason).increment(1);
        self.cursor = None;
        self.transport = None;
        self.catching_up = None;
        self.resets += 1;
        for member in self.members.values() {
            member.outbox.kick(CloseCode::TryAgainLater);
        }
    }

    /// Lowers a provisional cursor to a joiner's position (or sets one), so
    /// messages after the oldest position any joiner was answered with are
    /// delivered.
    pub(super) fn joined_at(&mut self, epoch: &Arc<str>, offset: u64) {
        match &mut self.cursor {
            None => {
                self.cursor = Some(Cursor {
                    epoch: epoch.clone(),
                    offset,
                    id: None,
                    provisional: true,
                })
            }
            Some(c) if c.provisional && c.epoch == *epoch => c.offset = c.offset.min(offset),
            Some(_) => {}
        }
    }

    /// Applies the delivery rule to one message the transport brought (held
    /// while a catch-up runs). Returns true when the caller must start the
    /// room's catch-up: a gap was found (the message is held), or the
    /// divergence rule holds: a message at or below the previous one the
    /// transport brought, in the cursor's epoch, means the store lost
    /// history, and the catch-up resets the room (`diverged`).
    pub(super) fn arrive(&mut self, d: Delivery) -> bool {
        let went_back = self
            .transport
            .as_ref()
            .is_some_and(|(epoch, offset)| *epoch == d.epoch && d.offset <= *offset)
            && self.cursor.as_ref().is_some_and(|c| c.epoch == d.epoch);
        self.transport = Some((d.epoch.clone(), d.offset));
        if went_back {
            return self.diverge();
        }
        if let Some(held) = &mut self.catching_up {
            hold(held, d);
            return false;
        }
        match Step::of(self.cursor.as_ref(), &d.epoch, d.offset) {
            Step::Skip => false,
            Step::Deliver => {
                self.deliver(&d);
                false
            }
            Step::NewEpoch => {
                self.reset("epoch");
                self.transport = Some((d.epoch.clone(), d.offset));
                false
            }
            Step::Fill => {
                let mut held = Held::default();
                hold(&mut held, d);
                self.catching_up = Some(held);
                true
            }
        }
    }

    /// Marks the room's history as diverged from the store's. True when the
    /// caller must start the room's catch-up (none runs yet).
    pub(super) fn diverge(&mut self) -> bool {
        match &mut self.catching_up {
            Some(held) => {
                held.diverged = true;
                false
            }
            None => {
                self.catching_up = Some(Held {
                    diverged: true,
                    ..Held::default()
                });
                true
            }
        }
    }

    /// What this instance has seen of the room: the cursor, raised to the
    /// last message the transport brought in the same epoch (it may be held).
    pub(super) fn seen(&self) -> Option<(Arc<str>, u64)> {
        let c = self.cursor.as_ref()?;
        let offset = match &self.transport {
            Some((epoch, offset)) if *epoch == c.epoch => c.offset.max(*offset),
            _ => c.offset,
        };
        Some((c.epoch.clone(), offset))
    }

    /// The highest offset held in the cursor's epoch (0: none).
    pub(super) fn held_max(&self) -> u64 {
        let (Some(c), Some(held)) = (&self.cursor, &self.catching_up) else {
            return 0;
        };
        held.messages
            .iter()
            .filter(|d| d.epoch == c.epoch)
            .map(|d| d.offset)
            .max()
            .unwrap_or(0)
    }

    /// Ends a catch-up round: delivers what it read from the store, then the
    /// held messages by the delivery rule. Returns true when the room must
    /// read the store again (a gap remains, or the store may hold more).
    pub(super) fn finish_catch_up(&mut self, read: &[Delivery]) -> bool {
        if self.catching_up.as_ref().is_some_and(|h| h.diverged) {
            // Divergence was seen during the read: what it read may be the
            // lost history's successor; the next round resets the room.
            return true;
        }
        for d in read {
            self.deliver(d);
        }
        let Some(held) = self.catching_up.take() else {
            // Reset meanwhile: nothing to deliver.
            return false;
        };
        let mut messages = held.messages;
        while let Some(d) = messages.pop_front() {
            match Step::of(self.cursor.as_ref(), &d.epoch, d.offset) {
                Step::Skip => {}
                Step::Deliver => self.deliver(&d),
                Step::NewEpoch => {
                    self.reset("epoch");
                    return false;
                }
                Step::Fill => {
                    messages.push_front(d);
                    self.catching_up = Some(Held {
                        messages,
                        stale: held.stale,
                        diverged: false,
                    });
                    return true;
                }
            }
        }
        if held.stale {
            self.catching_up = Some(Held::default());
            return true;
        }
        false
    }
}

fn hold(held: &mut Held, d: Delivery) {
    if held.messages.len() < HELD_MAX {
        held.messages.push_back(d);
    } else {
        held.stale = true;
    }
}
