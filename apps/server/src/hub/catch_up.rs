//! Catch-ups: filling a room's gap from the store, beside the hub's event
//! loop. One task per room at most (the room's `catching_up` says one
//! runs), spawned on the instance's tracker; at most [`CONCURRENT`] read
//! the store at once, so a resync of many rooms does not flood it. While a
//! room's catch-up runs, that room's messages wait in it; other rooms are
//! delivered as they arrive.

use super::room::Delivery;
use super::Hub;
use crate::codec::encode;
use crate::engine::EngineError;
use protocol::{RoomName, ServerFrame};
use std::sync::Weak;
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
    async fn catch_up_round(&self, room: &RoomName) -> Result<Round, EngineError> {
        let cursor = {
            let rooms = self.rooms.lock().expect("hub lock");
            match rooms.get(room) {
                None => return Ok(Round::Done),
                Some(r) => r.cursor.clone(),
            }
        };
        let read = match cursor {
            // Nothing was delivered or answered here yet: nothing to read.
            None => Vec::new(),
            Some(cursor) => {
                let pos = self.broker.position(room).await?;
                if pos.epoch != cursor.epoch {
                    let mut rooms = self.rooms.lock().expect("hub lock");
                    if let Some(r) = rooms.get_mut(room) {
                        r.reset();
                    }
                    return Ok(Round::Done);
                }
                self.broker
                    .range(room, cursor.offset, pos.offset)
                    .await?
                    .into_iter()
                    .map(|message| Delivery {
                        epoch: pos.epoch.clone(),
                        offset: message.offset,
                        frame: encode(&ServerFrame::Message(message)),
                    })
                    .collect()
            }
        };
        let mut rooms = self.rooms.lock().expect("hub lock");
        let Some(r) = rooms.get_mut(room) else {
            return Ok(Round::Done);
        };
        let before = r.cursor.clone();
        Ok(match r.finish_catch_up(&read) {
            false => Round::Done,
            true if r.cursor == before => Round::Stuck,
            true => Round::Again,
        })
    }
}
