//! Catch-ups: filling a room's gap from the store, beside the hub's event
//! loop. One task per room at most (the room's `catching_up` says one
//! runs), spawned on the instance's tracker; at most [`CONCURRENT`] read
//! the store at once, so a resync of many rooms does not flood it. While a
//! room's catch-up runs, that room's messages wait in it; other rooms are
//! delivered as they arrive.

use super::room::{id_hash, Delivery};
use super::Hub;
use crate::codec::encode;
use crate::engine::EngineError;
use protocol::{RoomName, ServerFrame};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Catch-ups reading the store at once.
pub(super) const CONCURRENT: usize = 16;
/// Backoff between attempts of a failing catch-up (the store is coming
/// back); it retries while the room has local members.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How one round of a catch-up ended.
enum Round {
    /// The room is caught up (or gone, or reset).
    Done,
    /// The cursor moved and a gap remains (messages arrived during the
    /// read): read the store again at once.
    Again,
    /// A gap remains and the read moved nothing (the store holds nothing
    /// past the cursor): read again after a backoff, never in a busy loop.
    Stuck,
}

impl Hub {
    /// Runs `room`'s catch-up to its end: rounds until caught up, retrying
    /// failed or fruitless reads with backoff until the room has no local
    /// member left or the instance stops.
    pub(super) async fn catch_up(hub: Weak<Hub>, room: RoomName) {
        let mut delay = RETRY_MIN;
        loop {
            let Some(strong) = hub.upgrade() else { return };
            let round = {
                let Ok(_permit) = strong.catch_ups.acquire().await else {
                    return;
                };
                strong.catch_up_round(&room).await
            };
            let failed = match round {
                Ok(Round::Done) => return,
                Ok(Round::Again) => {
                    delay = RETRY_MIN;
                    continue;
                }
                Ok(Round::Stuck) => {
                    EngineError::Internal("the store holds nothing past the gap".into())
                }
                Err(e) => e,
            };
            tracing::warn!(room = %room, error = %failed, "catch-up incomplete; retrying");
            let stop = strong.stop.clone();
            drop(strong);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// One round: reads everything after the room's cursor up to the
    /// store's position, then delivers it and the held messages in order.
    /// A store behind what this instance saw in the same epoch (below the
    /// cursor, or below a message held before the read), holding another
    /// message at the cursor's offset than the one delivered there, or a
    /// divergence the transport showed, gives the room a new epoch instead.
    /// Nothing read is delivered if the room was reset meanwhile.
    async fn catch_up_round(&self, room: &RoomName) -> Result<Round, EngineError> {
        let (cursor, diverged, held_max, resets) = {
            let rooms = self.room_shard(room);
            match rooms.get(room) {
                None => return Ok(Round::Done),
                Some(r) => (
                    r.cursor.clone(),
                    r.catching_up.as_ref().is_some_and(|h| h.diverged),
                    r.held_max(),
                    r.resets,
                ),
            }
        };
        let read = match cursor {
            // Nothing was delivered or answered here yet: nothing to read.
            None => Vec::new(),
            Some(cursor) => {
                if diverged {
                    self.diverged(room, &cursor.epoch, resets).await?;
                    return Ok(Round::Done);
                }
                let pos = self.broker.position(room).await?;
                if pos.epoch != cursor.epoch {
                    self.reset_room(room, resets, "epoch");
                    return Ok(Round::Done);
                }
                if pos.offset < cursor.offset.max(held_max) {
                    self.diverged(room, &cursor.epoch, resets).await?;
                    return Ok(Round::Done);
                }
                // Read from the cursor's own offset when its message is
                // known, to compare ids.
                let check = cursor.id.filter(|_| cursor.offset > 0);
                let from = cursor.offset - u64::from(check.is_some());
                let mut read = self.broker.range(room, from, pos.offset).await?;
                if let Some(id) = check {
                    match read.first() {
                        Some(m) if m.offset == cursor.offset && id_hash(&m.id) != id => {
                            self.diverged(room, &cursor.epoch, resets).await?;
                            return Ok(Round::Done);
                        }
                        Some(m) if m.offset == cursor.offset => {
                            read.remove(0);
                        }
                        // Trimmed already: the length check below decides.
                        _ => {}
                    }
                }
                if read.len() as u64 != pos.offset - cursor.offset {
                    // The history was trimmed past the cursor (the room
                    // outran its retention while this catch-up waited):
                    // what is missing cannot be delivered, so the members
                    // re-join and get `recovered: false`. Never a gap.
                    self.reset_room(room, resets, "trimmed");
                    return Ok(Round::Done);
                }
                read.into_iter()
                    .map(|message| Delivery {
                        epoch: pos.epoch.clone(),
                        offset: message.offset,
                        id: id_hash(&message.id),
                        frame: encode(&ServerFrame::Message(message)),
                    })
                    .collect()
            }
        };
        let mut rooms = self.room_shard(room);
        let Some(r) = rooms.get_mut(room) else {
            return Ok(Round::Done);
        };
        if r.resets != resets {
            // Reset while reading: what was read belongs to the old epoch.
            return Ok(Round::Done);
        }
        let before = r.cursor.clone();
        Ok(match r.finish_catch_up(&read) {
            false => Round::Done,
            // Divergence seen meanwhile: the next round resets at once.
            true if r.catching_up.as_ref().is_some_and(|h| h.diverged) => Round::Again,
            true if r.cursor == before => Round::Stuck,
            true => Round::Again,
        })
    }

    /// Resets `room`'s members, unless it was reset since generation
    /// `resets` (its members may be new and in the new epoch).
    fn reset_room(&self, room: &RoomName, resets: u64, reason: &'static str) {
        let mut rooms = self.room_shard(room);
        if let Some(r) = rooms.get_mut(room).filter(|r| r.resets == resets) {
            r.reset(reason);
        }
    }

    /// The store lost messages of `room` that were delivered here under
    /// `epoch`: the room gets a new epoch in the store (so every instance
    /// agrees; [`crate::engine::Broker::reset_epoch`]) and its local members
    /// are reset, to re-join with `recovered: false`.
    async fn diverged(
        &self,
        room: &RoomName,
        epoch: &Arc<str>,
        resets: u64,
    ) -> Result<(), EngineError> {
        tracing::warn!(room = %room, epoch = %epoch, "the store lost messages of the room");
        self.broker.reset_epoch(room, epoch).await?;
        self.reset_room(room, resets, "diverged");
        Ok(())
    }
}
