//! A connection's outbox: the bounded queue the hub fills and the
//! connection task drains, and the hub's way to close a connection it cannot
//! serve (a kick).
//!
//! Why not `tokio::sync::mpsc`: a bounded tokio channel allocates its first
//! 32-slot block and cache-padded counters when it is made, ~2 KB per
//! connection before anything is sent, and a kick needed a second shared
//! object. Most connections of a chat are idle most of the time; this queue
//! is a `VecDeque` that costs nothing while empty, and one `Arc` carries
//! both the queue and the kick.
//!
//! **Invariant:** [`Outbox::push`] never waits; it refuses an item once
//! `capacity` items are waiting, and the hub then kicks the member.
//! **Invariant:** a push or a kick wakes the connection: `notify_one` keeps a
//! permit when the task is not waiting, so no wake-up is lost between a
//! drain and the next wait.

use protocol::CloseCode;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One item of a connection's outbox: a frame encoded once, behind one
/// `Arc` shared by every local recipient (a queue slot is a pointer).
#[derive(Debug)]
pub(crate) struct Outbound {
    /// The hub's key of the room (the same `Arc` for every item of the
    /// room, so a connection matches it by pointer).
    pub(crate) room: Arc<str>,
    /// The message's offset, or 0 for frames that are not stored messages
    /// (typing, presence), or [`Outbound::CLOSES_ROOM`].
    pub(crate) offset: u64,
    pub(crate) frame: Utf8Bytes,
}

impl Outbound {
    /// The [`Outbound::offset`] of a `left` the hub sends when it removed
    /// the member itself (the admin closed the room): the connection
    /// forgets the room after writing it.
    pub(crate) const CLOSES_ROOM: u64 = u64::MAX;
}

/// The queue and kick of one connection; see the module doc.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    capacity: usize,
    /// A drain's request to reconnect after this many ms
    /// ([`NO_RECONNECT`]: none). An atomic beside the lock: read once per
    /// drain of the queue, set once in the connection's life.
    reconnect_ms: AtomicU64,
}

/// [`Outbox::reconnect_ms`] when no reconnect was asked.
const NO_RECONNECT: u64 = u64::MAX;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Arc<Outbound>>,
    kicked: Option<CloseCode>,
}

/// The outbox already holds `capacity` items.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            capacity,
            reconnect_ms: AtomicU64::new(NO_RECONNECT),
        })
    }

    /// Queues an item for the connection, without waiting.
    pub(crate) fn push(&self, item: Arc<Outbound>) -> Result<(), Full> {
        {
            let mut state = self.state.lock().expect("outbox lock");
            if state.queue.len() >= self.capacity {
                return Err(Full);
            }
            state.queue.push_back(item);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Asks the connection to close with `code` (the first reason wins).
    /// Returns whether this was the first kick.
    pub(crate) fn kick(&self, code: CloseCode) -> bool {
        let first = {
            let mut state = self.state.lock().expect("outbox lock");
            let first = state.kicked.is_none();
            if first {
                state.kicked = Some(code);
            }
            first
        };
        self.wake.notify_one();
        first
    }

    /// Asks the connection to tell its client to reconnect after `delay`
    /// (a drain, PROTOCOL.md "Drain"); the connection stays served meanwhile.
    pub(crate) fn ask_reconnect(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(NO_RECONNECT - 1);
        self.reconnect_ms
            .store(ms.min(NO_RECONNECT - 1), Ordering::Release);
        self.wake.notify_one();
    }

    /// The reconnect asked by [`Outbox::ask_reconnect`], once.
    pub(crate) fn take_reconnect(&self) -> Option<Duration> {
        if self.reconnect_ms.load(Ordering::Relaxed) == NO_RECONNECT {
            return None;
        }
        match self.reconnect_ms.swap(NO_RECONNECT, Ordering::Acquire) {
            NO_RECONNECT => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Resolves when something was pushed or a kick came since the last
    /// drain (possibly spuriously: the queue may be empty by then).
    pub(crate) async fn changed(&self) {
        self.wake.notified().await
    }

    /// Moves every waiting item into `into` (which must be empty) and
    /// returns the kick, if the hub kicked the connection: it then closes
    /// with that code before writing anything else. Swapping buffers keeps
    /// the steady state free of allocation; the caller bounds what it keeps.
    pub(crate) fn drain(&self, into: &mut VecDeque<Arc<Outbound>>) -> Option<CloseCode> {
        debug_assert!(into.is_empty());
        let mut state = self.state.lock().expect("outbox lock");
        std::mem::swap(&mut state.queue, into);
        state.kicked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn item(offset: u64) -> Arc<Outbound> {
        Arc::new(Outbound {
            room: Arc::from("lobby"),
            offset,
            frame: Utf8Bytes::from_static("{}"),
        })
    }

    #[test]
    fn refuses_past_capacity_and_accepts_again_after_a_drain() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(item(1)), Ok(()));
        assert_eq!(outbox.push(item(2)), Ok(()));
        assert_eq!(outbox.push(item(3)), Err(Full));
        let mut batch = VecDeque::new();
        assert_eq!(outbox.drain(&mut batch), None);
        let offsets: Vec<u64> = batch.iter().map(|i| i.offset).collect();
        assert_eq!(offsets, [1, 2]);
        batch.clear();
        assert_eq!(outbox.drain(&mut batch), None);
        assert!(batch.is_empty(), "a drain empties the queue");
        assert_eq!(outbox.push(item(4)), Ok(()));
        outbox.drain(&mut batch);
        assert_eq!(batch.iter().map(|i| i.offset).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn the_first_kick_wins() {
        let outbox = Outbox::new(4);
        assert!(outbox.kick(CloseCode::TryAgainLater));
        assert!(!outbox.kick(CloseCode::InternalError));
        let mut batch = VecDeque::new();
        assert_eq!(outbox.drain(&mut batch), Some(CloseCode::TryAgainLater));
    }

    #[tokio::test]
    async fn a_push_before_the_wait_is_not_lost() {
        let outbox = Outbox::new(4);
        outbox.push(item(1)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), outbox.changed())
            .await
            .expect("the permit of the earlier push wakes the waiter");
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_task() {
        let outbox = Outbox::new(4);
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                outbox.changed().await;
                let mut batch = VecDeque::new();
                outbox.drain(&mut batch);
                batch.len()
            }
        });
        tokio::task::yield_now().await;
        outbox.push(item(7)).unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn a_kick_wakes_a_waiting_task() {
        let outbox = Outbox::new(4);
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                outbox.changed().await;
                outbox.drain(&mut VecDeque::new())
            }
        });
        tokio::task::yield_now().await;
        outbox.kick(CloseCode::TryAgainLater);
        let kicked = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(kicked, Some(CloseCode::TryAgainLater));
    }
}
