//! The in-process engine: one instance, no Redis. The default behind
//! `make run`, and the double the hub and connection tests run on.
//!
//! It follows the same contract as the Redis engine: publishes get
//! contiguous offsets per room and loop back to the hub through the event
//! channel (there is no "deliver locally" shortcut), history is capped,
//! (user, client id) pairs are deduplicated for the dedupe window, and a
//! room with no member and no new message for the retention is forgotten.
//!
//! With an archive (`--database-url`, a SQLite file by default), every
//! message is also written there in batches, off the publish path; the
//! history keeps a message past its cap until it is archived, reads older
//! than the history fall through to the archive, and a room this process
//! does not hold (after a restart, or forgotten while idle) takes its epoch
//! and offset from the archive, so they continue.

use super::{
    new_epoch, AdminBoard, Broker, EngineError, EngineEvent, Events, LocalPresence, Position,
    PresenceStore, Publication, Published, RoomsCursor, RoomsPage,
};
use crate::archive::writer::ArchiveWriter;
use crate::archive::Archived;
use async_trait::async_trait;
use protocol::admin::{AdminAction, InstanceStatus};
use protocol::{ChatMessage, RoomInfo, RoomName, User};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The in-process engine.
pub(crate) struct MemoryEngine {
    /// Every room that was ever used in this process. A std mutex: held only
    /// to look a room up, never across an await.
    rooms: Mutex<HashMap<RoomName, Arc<MemRoom>>>,
    /// To the hub. Bounded: a hub that falls behind slows publishers down
    /// instead of growing memory.
    events: Events,
    history_cap: usize,
    dedupe_window: Duration,
    /// How long a room with no member and no new message is kept
    /// (`--room-retention-secs`); swept on every presence refresh.
    retention: Mutex<Duration>,
    /// Where every message is kept too, when configured.
    archive: Option<ArchiveWriter>,
    /// The admin view's board: this one instance's heartbeat and the
    /// actions posted (numbered from 1; the cursor is the last number).
    board: Mutex<MemBoard>,
}

#[derive(Default)]
struct MemBoard {
    instances: HashMap<String, InstanceStatus>,
    actions: VecDeque<(u64, AdminAction)>,
    next: u64,
}

/// Admin actions a board keeps ([`AdminBoard::post_action`]).
const KEPT_ACTIONS: usize = 1000;

struct MemRoom {
    /// Serialises publishes of the room so that its events reach the channel
    /// in offset order. Async because the send may wait for channel space.
    publish: tokio::sync::Mutex<()>,
    state: Mutex<RoomState>,
    /// Highest offset written to the archive: the history may drop
    /// messages up to it once past its cap, and no further.
    archived: Arc<AtomicU64>,
}

struct RoomState {
    epoch: Arc<str>,
    /// Latest offset (0: none yet).
    offset: u64,
    /// The newest `history_cap` messages, ascending.
    history: VecDeque<ChatMessage>,
    /// (user id, client id) → offset, for resends.
    dedupe: HashMap<(String, String), u64>,
    /// Dedupe keys in insertion order with their time, to expire them.
    dedupe_order: VecDeque<(Instant, (String, String))>,
    /// Users present in the room.
    members: HashMap<String, User>,
    /// The last publish or join.
    last_active: Instant,
}

impl MemoryEngine {
    pub(crate) fn new(events: Events, history_cap: usize) -> MemoryEngine {
        MemoryEngine {
            rooms: Mutex::new(HashMap::new()),
            events,
            history_cap: history_cap.max(1),
            dedupe_window: Duration::from_secs(protocol::limits::DEDUPE_WINDOW_SECS),
            retention: Mutex::new(Duration::from_secs(30 * 24 * 3600)),
            archive: None,
            board: Mutex::default(),
        }
    }

    /// Keeps every message in `archive` too (see the module doc).
    pub(crate) fn with_archive(mut self, archive: Option<ArchiveWriter>) -> MemoryEngine {
        self.archive = archive;
        self
    }

    /// How long a room with no member and no new message is kept (default
    /// 30 days): after that its history and epoch are forgotten.
    pub(crate) fn set_retention(&self, retention: Duration) {
        *self.retention.lock().expect("retention lock") = retention;
    }

    /// Forgets the rooms with no member whose last publish or join is
    /// older than the retention, and at once those that never had a
    /// message (nothing to keep: a join of a fresh name must not cost the
    /// process memory for the retention). Returns how many.
    fn sweep(&self) -> usize {
        let retention = *self.retention.lock().expect("retention lock");
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let before = rooms.len();
        rooms.retain(|_, r| {
            let st = r.state.lock().expect("room lock");
            !st.members.is_empty() || (st.offset > 0 && st.last_active.elapsed() < retention)
        });
        before - rooms.len()
    }

    /// Rooms this engine holds (for tests of what rooms cost in memory).
    #[cfg(test)]
    pub(crate) fn held_rooms(&self) -> usize {
        self.rooms.lock().expect("rooms lock").len()
    }

    /// The room, made when this process does not hold it: in the epoch
    /// and at the offset the archive has for it, else in a new epoch at 0.
    /// Errors: the archive cannot be read (`Unavailable`).
    async fn room(&self, room: &RoomName) -> Result<Arc<MemRoom>, EngineError> {
        if let Some(held) = self.rooms.lock().expect("rooms lock").get(room) {
            return Ok(held.clone());
        }
        let archived = match &self.archive {
            Some(writer) => writer
                .archive()
                .position(room)
                .await
                .map_err(EngineError::archive)?,
            None => None,
        };
        let mut rooms = self.rooms.lock().expect("rooms lock");
        // Another task may have made it while the archive answered: the
        // first one made is the room.
        Ok(rooms
            .entry(room.clone())
            .or_insert_with(|| {
                let (epoch, offset) = archived.unwrap_or_else(|| (new_epoch(), 0));
                Arc::new(MemRoom {
                    publish: tokio::sync::Mutex::new(()),
                    state: Mutex::new(RoomState {
                        epoch,
                        offset,
                        history: VecDeque::new(),
                        dedupe: HashMap::new(),
                        dedupe_order: VecDeque::new(),
                        members: HashMap::new(),
                        last_active: Instant::now(),
                    }),
                    archived: Arc::new(AtomicU64::new(offset)),
                })
            })
            .clone())
    }

    /// Highest offset the history may drop (everything without an archive).
    fn droppable(&self, r: &MemRoom) -> u64 {
        match self.archive {
            Some(_) => r.archived.load(Ordering::Acquire),
            None => u64::MAX,
        }
    }

    /// The archive behind the history, if any.
    fn archived_in(&self) -> Option<&crate::archive::Archive> {
        self.archive.as_ref().map(ArchiveWriter::archive)
    }

    /// Forgets the room's messages after `offset`, keeping its epoch: what a
    /// Redis restored from an older snapshot does (tests of the hub's
    /// divergence rule).
    #[cfg(test)]
    pub(crate) async fn lose_history_after(&self, room: &RoomName, offset: u64) {
        let r = self.room(room).await.expect("a held room");
        let mut st = r.state.lock().expect("room lock");
        st.offset = st.offset.min(offset);
        st.history.retain(|m| m.offset <= offset);
        st.dedupe.retain(|_, o| *o <= offset);
    }

    async fn emit(&self, event: EngineEvent) -> Result<(), EngineError> {
        self.events
            .send(event)
            .await
            .map_err(|_| EngineError::Internal("the hub has stopped".into()))
    }
}

#[async_trait]
impl Broker for MemoryEngine {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn publish(
        &self,
        room: &RoomName,
        msg: Publication,
        seen: Option<&Position>,
    ) -> Result<Published, EngineError> {
        let trace = msg.trace.clone();
        let r = self.room(room).await?;
        let _order = r.publish.lock().await;
        let mut new_epoch_of = None;
        let result = {
            let mut st = r.state.lock().expect("room lock");
            if seen.is_some_and(|s| s.epoch == st.epoch && st.offset < s.offset) {
                st.epoch = new_epoch();
                new_epoch_of = Some(st.epoch.clone());
            }
            let now = Instant::now();
            while let Some((t, _)) = st.dedupe_order.front() {
                if now.duration_since(*t) < self.dedupe_window {
                    break;
                }
                let (_, key) = st.dedupe_order.pop_front().expect("front exists");
                st.dedupe.remove(&key);
            }
            let key = (msg.from.id.clone(), msg.client_id.clone());
            if let Some(&offset) = st.dedupe.get(&key) {
                Err(Published {
                    epoch: st.epoch.clone(),
                    offset,
                    duplicate: true,
                })
            } else {
                st.offset += 1;
                st.last_active = now;
                let offset = st.offset;
                st.dedupe.insert(key.clone(), offset);
                st.dedupe_order.push_back((now, key));
                let message = msg.into_message(room, offset);
                st.history.push_back(message.clone());
                let droppable = self.droppable(&r);
                while st.history.len() > self.history_cap
                    && st.history.front().is_some_and(|m| m.offset <= droppable)
                {
                    st.history.pop_front();
                }
                Ok((st.epoch.clone(), message))
            }
        };
        if let Some(epoch) = new_epoch_of {
            self.emit(EngineEvent::Epoch {
                room: room.clone(),
                epoch,
            })
            .await?;
        }
        let (epoch, message) = match result {
            Ok(stored) => stored,
            Err(duplicate) => return Ok(duplicate),
        };
        let offset = message.offset;
        if let Some(writer) = &self.archive {
            // Under the room's publish lock: the archive gets a room's
            // messages in offset order.
            writer
                .push(
                    Archived {
                        room: room.clone(),
                        epoch: epoch.clone(),
                        message: message.clone(),
                    },
                    r.archived.clone(),
                )
                .await;
        }
        self.emit(EngineEvent::Message {
            room: room.clone(),
            epoch: epoch.clone(),
            message,
            trace,
        })
        .await?;
        Ok(Published {
            epoch,
            offset,
            duplicate: false,
        })
    }

    async fn position(&self, room: &RoomName) -> Result<Position, EngineError> {
        let r = self.room(room).await?;
        let st = r.state.lock().expect("room lock");
        Ok(Position {
            epoch: st.epoch.clone(),
            offset: st.offset,
        })
    }

    async fn reset_epoch(&self, room: &RoomName, lost: &str) -> Result<(), EngineError> {
        let r = self.room(room).await?;
        let _order = r.publish.lock().await;
        let epoch = {
            let mut st = r.state.lock().expect("room lock");
            if *st.epoch != *lost {
                return Ok(());
            }
            st.epoch = new_epoch();
            st.epoch.clone()
        };
        self.emit(EngineEvent::Epoch {
            room: room.clone(),
            epoch,
        })
        .await
    }

    async fn range(
        &self,
        room: &RoomName,
        after: u64,
        upto: u64,
    ) -> Result<Vec<ChatMessage>, EngineError> {
        let r = self.room(room).await?;
        let held: Vec<ChatMessage> = {
            let st = r.state.lock().expect("room lock");
            st.history
                .iter()
                .filter(|m| m.offset > after && m.offset <= upto)
                .cloned()
                .collect()
        };
        // Older than the history: in the archive, which holds every
        // message the history dropped.
        super::range_through(self.archived_in(), room, after, upto, held).await
    }

    async fn before(
        &self,
        room: &RoomName,
        before: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, EngineError> {
        let r = self.room(room).await?;
        let held: Vec<ChatMessage> = {
            let st = r.state.lock().expect("room lock");
            let newest: Vec<&ChatMessage> = st
                .history
                .iter()
                .rev()
                .filter(|m| m.offset < before)
                .take(limit)
                .collect();
            newest.into_iter().rev().cloned().collect()
        };
        super::before_through(self.archived_in(), room, before, limit, held).await
    }

    async fn subscribe(&self, _room: &RoomName) -> Result<(), EngineError> {
        // Every event of this process reaches its one hub already.
        Ok(())
    }

    async fn unsubscribe(&self, _room: &RoomName) {}

    async fn typing(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        self.emit(EngineEvent::Typing {
            room: room.clone(),
            user: user.clone(),
        })
        .await
    }

    async fn reachable(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

#[async_trait]
impl AdminBoard for MemoryEngine {
    async fn heartbeat(&self, status: &InstanceStatus) -> Result<(), EngineError> {
        let mut board = self.board.lock().expect("board lock");
        board.instances.insert(status.id.clone(), status.clone());
        Ok(())
    }

    async fn instances(&self, now_ms: i64) -> Result<Vec<InstanceStatus>, EngineError> {
        let mut board = self.board.lock().expect("board lock");
        let (fresh, stale) = super::fresh_instances(board.instances.values().cloned(), now_ms);
        for id in stale {
            board.instances.remove(&id);
        }
        Ok(fresh)
    }

    async fn post_action(&self, action: &AdminAction) -> Result<(), EngineError> {
        let mut board = self.board.lock().expect("board lock");
        board.next += 1;
        let n = board.next;
        board.actions.push_back((n, action.clone()));
        if board.actions.len() > KEPT_ACTIONS {
            board.actions.pop_front();
        }
        Ok(())
    }

    async fn actions(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<AdminAction>, String), EngineError> {
        let board = self.board.lock().expect("board lock");
        let Some(after) = cursor.and_then(|c| c.parse::<u64>().ok()) else {
            return Ok((Vec::new(), board.next.to_string()));
        };
        let actions = board
            .actions
            .iter()
            .filter(|(n, _)| *n > after)
            .map(|(_, a)| a.clone())
            .collect();
        Ok((actions, board.next.to_string()))
    }
}

#[async_trait]
impl PresenceStore for MemoryEngine {
    async fn join(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        let r = self.room(room).await?;
        let new = {
            let mut st = r.state.lock().expect("room lock");
            st.last_active = Instant::now();
            st.members.insert(user.id.clone(), user.clone()).is_none()
        };
        if new {
            self.emit(EngineEvent::Presence {
                room: room.clone(),
                user: user.clone(),
                joined: true,
            })
            .await?;
        }
        Ok(())
    }

    async fn leave(&self, room: &RoomName, user: &User) -> Result<(), EngineError> {
        let r = self.room(room).await?;
        let gone = {
            let mut st = r.state.lock().expect("room lock");
            st.members.remove(&user.id)
        };
        if let Some(user) = gone {
            self.emit(EngineEvent::Presence {
                room: room.clone(),
                user,
                joined: false,
            })
            .await?;
        }
        Ok(())
    }

    async fn members(&self, room: &RoomName) -> Result<Vec<User>, EngineError> {
        let r = self.room(room).await?;
        let st = r.state.lock().expect("room lock");
        Ok(st.members.values().cloned().collect())
    }

    /// Entries here live exactly as long as their connections; the
    /// refresh only forgets rooms idle past the retention.
    async fn refresh(&self, _local: &[LocalPresence]) -> Result<(), EngineError> {
        let forgotten = self.sweep();
        if forgotten > 0 {
            tracing::debug!(forgotten, "idle rooms forgotten");
        }
        Ok(())
    }

    async fn rooms(
        &self,
        after: Option<&RoomsCursor>,
        limit: usize,
    ) -> Result<RoomsPage, EngineError> {
        let rooms: Vec<(RoomName, Arc<MemRoom>)> = {
            let rooms = self.rooms.lock().expect("rooms lock");
            rooms.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        // The index of this engine is the room map itself: one process,
        // every room in memory.
        let mut active: Vec<RoomInfo> = rooms
            .into_iter()
            .filter_map(|(name, r)| {
                let members = r.state.lock().expect("room lock").members.len() as u64;
                let info = RoomInfo {
                    room: name.into_string(),
                    members,
                };
                (members > 0 && after.is_none_or(|c| c.precedes(&info))).then_some(info)
            })
            .collect();
        active.sort_by(|a, b| b.members.cmp(&a.members).then_with(|| a.room.cmp(&b.room)));
        let more = active.len() > limit;
        active.truncate(limit);
        Ok(RoomsPage {
            rooms: active,
            more,
        })
    }

    async fn claim_instance(&self) -> Result<bool, EngineError> {
        Ok(true)
    }

    async fn release_instance(&self) {}
}
