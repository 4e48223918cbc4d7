//! A connection's outbox: the write side of its socket, shared by the hub
//! (which delivers room frames) and the connection task (which replies).
//!
//! **A delivery is one write, made by whoever delivers.** When nothing
//! waits before it, a room frame the hub delivers is written to the socket
//! right there, with a non-blocking `write(2)` of bytes encoded once for
//! every member ([`crate::codec::Wire`]): no task is woken, nothing is
//! copied or framed per socket. Only what cannot be written at once waits
//! here: the bytes the kernel did not take (the connection task writes
//! them when the socket is writable again), and the frames of a room whose
//! `joined` has not gone out yet (the connection passes them through its
//! room's filter when it has), and a sender's own message that came back
//! before its `ack` (written behind the ack, in the same `writev`).
//!
//! Why not a channel to the connection task, as before: each delivery then
//! woke the task, which polled its socket future and copied the frame into
//! tungstenite's write buffer; that was most of our CPU per delivery above
//! the kernel's cost of the write (issue 18's profile). Why not
//! `tokio::sync::mpsc` for what waits: a bounded tokio channel allocates
//! ~2 KB per connection before anything is sent; this costs nothing while
//! empty.
//!
//! **Invariant:** frames reach the socket in the order they were handed in:
//! one lock covers the decision and the write, a frame is written at once
//! only when nothing waits before it (no queued frame, no unwritten
//! bytes), and unwritten bytes are whole frames or their tails.
//! **Invariant:** [`Outbox::push`] never waits; past `capacity` waiting
//! frames it refuses, and the hub then kicks the member.
//! **Invariant:** for each open room the client sees `joined` first, then
//! the room's messages in offset order, each once: a message at or below
//! the room's `delivered` offset (already in `joined.history`) is skipped.
//! **Invariant:** whatever waits wakes the connection: `notify_one` keeps a
//! permit when the task is not waiting, so no wake-up is lost.

use crate::codec::Wire;
use protocol::CloseCode;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tungstenite::Bytes;

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
    pub(crate) frame: Wire,
}

impl Outbound {
    /// The [`Outbound::offset`] of a `left` the hub sends when it removed
    /// the member itself (the admin closed the room): the connection
    /// forgets the room after writing it.
    pub(crate) const CLOSES_ROOM: u64 = u64::MAX;
}

/// The write side of one connection; see the module doc.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    capacity: usize,
    /// A drain's request to reconnect after this many ms
    /// ([`NO_RECONNECT`]: none). An atomic beside the lock: read once per
    /// wake-up, set once in the connection's life.
    reconnect_ms: AtomicU64,
    /// When the peer was last heard from (any frame read, a pong too), in
    /// ms of [`clock_ms`]: the instance's keepalive drops the connection
    /// when it is older than the idle timeout ([`Outbox::keepalive`]).
    heard_ms: AtomicU64,
}

/// Milliseconds since the first call in this process: a coarse monotonic
/// clock (an `Instant` is 16 bytes; an outbox keeps 8).
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// [`Outbox::reconnect_ms`] when no reconnect was asked.
const NO_RECONNECT: u64 = u64::MAX;

/// Buffers one vectored write takes at most (Linux's `UIO_MAXIOV` is 1024;
/// a few dozen cover any backlog a chat builds between two wake-ups).
const WRITE_SLICES: usize = 64;

#[derive(Debug, Default)]
struct State {
    /// The socket; `None` for an outbox without one (the hub's unit
    /// tests, which read what waits) and after [`Outbox::close`].
    socket: Option<Arc<TcpStream>>,
    /// Frames waiting for the connection task to pass them through its
    /// rooms' filter (their room is not open yet, or a frame before them
    /// waits).
    queue: VecDeque<Arc<Outbound>>,
    /// Rooms whose `joined` went out, with the last message offset written.
    open: Vec<OpenRoom>,
    /// Bytes written to the outbox that the socket has not taken yet.
    unsent: VecDeque<Bytes>,
    kicked: Option<CloseCode>,
    /// A write failed: the peer is gone.
    failed: bool,
    /// Set while the connection handles a `send`: room frames wait, so
    /// that its `ack` goes out before its own message ([`Outbox::hold`]).
    held: bool,
    /// The keepalive found the peer silent past the idle timeout.
    silent: bool,
}

#[derive(Debug)]
struct OpenRoom {
    room: Arc<str>,
    delivered: u64,
}

/// The outbox already holds `capacity` waiting frames.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// What the connection task finds when it is woken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Carry on; `unsent` says whether bytes wait for the socket.
    Ready { unsent: bool },
    /// The hub (or shutdown) kicked the connection: close with this code.
    Kicked(CloseCode),
    /// A write failed: the peer is gone.
    Failed,
    /// The peer was silent past the idle timeout ([`Outbox::keepalive`]).
    Silent,
}

impl State {
    /// Whether `item` goes to the client, by its room's filter; moves the
    /// room's offset. `None`: its room is not open.
    fn admit(&mut self, item: &Outbound) -> Option<bool> {
        let at = self
            .open
            .iter()
            .position(|r| Arc::ptr_eq(&r.room, &item.room))?;
        if item.offset == Outbound::CLOSES_ROOM {
            self.open.swap_remove(at);
            return Some(true);
        }
        let room = &mut self.open[at];
        if item.offset != 0 {
            if item.offset <= room.delivered {
                return Some(false);
            }
            room.delivered = item.offset;
        }
        Some(true)
    }

    /// Passes the queued frames through their rooms' filter, in order,
    /// writing those it admits after what waits. The rooms a frame closes
    /// ([`Outbound::CLOSES_ROOM`]) go to `closed`; without it (a write
    /// outside the connection's wake-up) the frames from the first such
    /// frame on stay queued for [`Outbox::on_wake`].
    fn pass_queued(&mut self, mut closed: Option<&mut Vec<Arc<str>>>) {
        while let Some(item) = self.queue.front() {
            if item.offset == Outbound::CLOSES_ROOM && closed.is_none() {
                return;
            }
            let item = self.queue.pop_front().expect("a queued frame");
            if self.admit(&item) == Some(true) {
                if item.offset == Outbound::CLOSES_ROOM {
                    if let Some(closed) = closed.as_deref_mut() {
                        closed.push(item.room.clone());
                    }
                }
                self.write(item.frame.bytes());
            }
        }
    }

    /// Writes `bytes` to the socket now if nothing waits before them and it
    /// takes them; keeps what it does not take. Answers whether bytes wait.
    fn write(&mut self, bytes: &Bytes) -> bool {
        if self.failed {
            return true;
        }
        let waiting = self.held && self.unsent.is_empty() && !self.queue.is_empty();
        if waiting && self.socket.is_some() && self.kicked.is_none() && !self.silent {
            // The connection's reply while it holds its room frames (the
            // `ack` of its `send`), and its own message that the hub
            // delivered before the publish was answered: one vectored
            // write for both instead of two (a `sendto` less per message,
            // and one wake-up of the client less; issue 18's profile).
            self.unsent.push_back(bytes.clone());
            self.pass_queued(None);
            return self.write_unsent();
        }
        if !self.unsent.is_empty() {
            self.unsent.push_back(bytes.clone());
            return true;
        }
        let Some(socket) = &self.socket else {
            return false;
        };
        match socket.try_write(bytes) {
            Ok(n) if n == bytes.len() => false,
            Ok(n) => {
                self.unsent.push_back(bytes.slice(n..));
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.unsent.push_back(bytes.clone());
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "socket write failed");
                self.failed = true;
                true
            }
        }
    }

    /// Writes what waits for the socket, as far as it takes it; answers
    /// whether bytes still wait.
    fn write_unsent(&mut self) -> bool {
        if self.unsent.is_empty() {
            return false;
        }
        let Some(socket) = self.socket.clone() else {
            self.unsent.clear();
            return false;
        };
        while !self.unsent.is_empty() && !self.failed {
            // On the stack: a flush allocates nothing.
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let mut n = 0;
            for (slot, bytes) in slices.iter_mut().zip(&self.unsent) {
                *slot = IoSlice::new(bytes);
                n += 1;
            }
            match socket.try_write_vectored(&slices[..n]) {
                Ok(mut n) => {
                    while n > 0 {
                        let first = self.unsent.front_mut().expect("written bytes were queued");
                        if n >= first.len() {
                            n -= first.len();
                            self.unsent.pop_front();
                        } else {
                            *first = first.slice(n..);
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    tracing::debug!(error = %e, "socket write failed");
                    self.failed = true;
                }
            }
        }
        if self.unsent.capacity() > WRITE_SLICES {
            self.unsent = VecDeque::new();
        }
        !self.unsent.is_empty() && !self.failed
    }
}

impl Outbox {
    /// An outbox writing to `socket`, which the connection reads (the
    /// socket closes when both let go of it: the connection task when it
    /// ends, the outbox at [`Outbox::close`]).
    pub(crate) fn new(capacity: usize, socket: Arc<TcpStream>) -> Arc<Outbox> {
        Outbox::with_socket(capacity, Some(socket))
    }

    /// An outbox without a socket: frames wait in it until
    /// [`Outbox::drain`] takes them (the hub's unit tests).
    #[cfg(test)]
    pub(crate) fn detached(capacity: usize) -> Arc<Outbox> {
        Outbox::with_socket(capacity, None)
    }

    fn with_socket(capacity: usize, socket: Option<Arc<TcpStream>>) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(State {
                socket,
                ..State::default()
            }),
            wake: Notify::new(),
            capacity,
            reconnect_ms: AtomicU64::new(NO_RECONNECT),
            heard_ms: AtomicU64::new(clock_ms()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("outbox lock")
    }

    /// Delivers a room frame without waiting: written at once when its room
    /// is open and nothing waits before it, otherwise kept for the
    /// connection task. `Err(Full)` past `capacity` waiting frames.
    pub(crate) fn push(&self, item: Arc<Outbound>) -> Result<(), Full> {
        let wake = {
            let mut state = self.lock();
            if state.kicked.is_some() {
                return Ok(());
            }
            let direct =
                state.queue.is_empty() && !state.held && item.offset != Outbound::CLOSES_ROOM;
            match if direct { state.admit(&item) } else { None } {
                Some(false) => false,
                Some(true) => {
                    if state.unsent.len() >= self.capacity {
                        return Err(Full);
                    }
                    state.write(item.frame.bytes())
                }
                None => {
                    if state.queue.len() + state.unsent.len() >= self.capacity {
                        return Err(Full);
                    }
                    state.queue.push_back(item);
                    true
                }
            }
        };
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Writes one frame of the connection's own (a reply, a ping, a close),
    /// after whatever waits. Answers whether bytes wait for the socket
    /// (then [`Outbox::flush`] them).
    pub(crate) fn write(&self, bytes: &Bytes) -> bool {
        self.lock().write(bytes)
    }

    /// Keeps room frames waiting (for the connection task) until
    /// [`Outbox::release`] or the connection's next write: while the
    /// connection publishes, so that the sender's `ack` comes before its
    /// own message, as when every frame went through the connection's
    /// task. That write takes the frames that waited along (the ack and
    /// the own message in one `writev`), up to a room's close.
    pub(crate) fn hold(&self) {
        self.lock().held = true;
    }

    /// Ends [`Outbox::hold`]; the connection then writes what waited
    /// ([`Outbox::on_wake`]).
    pub(crate) fn release(&self) {
        self.lock().held = false;
    }

    /// Wakes the connection task (bytes wait for the socket).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Opens `room` for direct delivery once its `joined` went out:
    /// messages up to `delivered` are skipped (the joiner has them).
    /// Reopening keeps the higher of the two offsets.
    pub(crate) fn open_room(&self, room: &Arc<str>, delivered: u64) {
        let mut state = self.lock();
        match state.open.iter_mut().find(|r| Arc::ptr_eq(&r.room, room)) {
            Some(r) => r.delivered = r.delivered.max(delivered),
            None => {
                // Exactly: most connections join one or two rooms.
                state.open.reserve_exact(1);
                state.open.push(OpenRoom {
                    room: room.clone(),
                    delivered,
                });
            }
        }
    }

    /// Stops direct delivery of `room` (a leave, or a join of a room already
    /// open, until its new `joined` went out). Answers its offset.
    pub(crate) fn close_room(&self, room: &Arc<str>) -> Option<u64> {
        let mut state = self.lock();
        let at = state.open.iter().position(|r| Arc::ptr_eq(&r.room, room))?;
        Some(state.open.swap_remove(at).delivered)
    }

    /// The connection task was woken: writes the frames that waited for it
    /// (each through its room's filter; one of a room that is not open is
    /// dropped: the connection left it), then as much of the unsent bytes
    /// as the socket takes. `closed` gets the rooms the hub closed
    /// ([`Outbound::CLOSES_ROOM`]).
    pub(crate) fn on_wake(&self, closed: &mut Vec<Arc<str>>) -> Woken {
        let mut state = self.lock();
        if let Some(code) = state.kicked {
            state.queue.clear();
            return Woken::Kicked(code);
        }
        if state.silent {
            state.queue.clear();
            return Woken::Silent;
        }
        state.pass_queued(Some(closed));
        if state.queue.capacity() > WRITE_SLICES {
            state.queue = VecDeque::new();
        }
        let unsent = state.write_unsent();
        if state.failed {
            return Woken::Failed;
        }
        Woken::Ready { unsent }
    }

    /// Waits until the socket took every unsent byte. Errors: the peer is
    /// gone (a failed write), as `BrokenPipe`.
    pub(crate) async fn flush(&self) -> io::Result<()> {
        loop {
            let socket = {
                let mut state = self.lock();
                if !state.write_unsent() {
                    if state.failed {
                        return Err(io::ErrorKind::BrokenPipe.into());
                    }
                    return Ok(());
                }
                state.socket.clone().expect("unsent bytes have a socket")
            };
            socket.writable().await?;
        }
    }

    /// The peer was heard from (the connection read a frame from it).
    pub(crate) fn heard(&self) {
        self.heard_ms.store(clock_ms(), Ordering::Relaxed);
    }

    /// One keepalive round for this connection (RFC 6455 §5.5.2): when its
    /// peer was silent for longer than `idle_timeout`, the connection is
    /// woken to drop it ([`Woken::Silent`]) and this answers false;
    /// otherwise `ping` (a [`Wire::ping`]) is written after what waits,
    /// the connection woken if bytes are left for it to flush.
    pub(crate) fn keepalive(&self, ping: &Wire, idle_timeout: Duration) -> bool {
        let heard = self.heard_ms.load(Ordering::Relaxed);
        let silent_ms = clock_ms().saturating_sub(heard);
        let alive = u128::from(silent_ms) <= idle_timeout.as_millis();
        let wake = {
            let mut state = self.lock();
            if alive {
                state.write(ping.bytes())
            } else {
                state.silent = true;
                true
            }
        };
        if wake {
            self.wake.notify_one();
        }
        alive
    }

    /// Asks the connection to close with `code` (the first reason wins).
    /// Returns whether this was the first kick.
    pub(crate) fn kick(&self, code: CloseCode) -> bool {
        let first = {
            let mut state = self.lock();
            let first = state.kicked.is_none();
            if first {
                state.kicked = Some(code);
            }
            first
        };
        self.wake.notify_one();
        first
    }

    /// Lets go of the socket once the connection ended: a member entry the
    /// hub still holds then keeps no descriptor open and writes nothing.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.socket = None;
        state.unsent.clear();
        state.queue.clear();
        state.open.clear();
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

    /// Resolves when something waits for the connection task, or a kick or
    /// a reconnect came (possibly spuriously).
    pub(crate) async fn changed(&self) {
        self.wake.notified().await
    }

    /// Takes every frame that waits (into `into`, which must be empty) and
    /// returns the kick: what the hub handed a socket-less outbox.
    #[cfg(test)]
    pub(crate) fn drain(&self, into: &mut VecDeque<Arc<Outbound>>) -> Option<CloseCode> {
        debug_assert!(into.is_empty());
        let mut state = self.lock();
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
            frame: crate::codec::encode(&protocol::ServerFrame::Pong),
        })
    }

    #[test]
    fn refuses_past_capacity_and_accepts_again_after_a_drain() {
        let outbox = Outbox::detached(2);
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
        let outbox = Outbox::detached(4);
        assert!(outbox.kick(CloseCode::TryAgainLater));
        assert!(!outbox.kick(CloseCode::InternalError));
        let mut batch = VecDeque::new();
        assert_eq!(outbox.drain(&mut batch), Some(CloseCode::TryAgainLater));
    }

    #[tokio::test]
    async fn a_push_before_the_wait_is_not_lost() {
        let outbox = Outbox::detached(4);
        outbox.push(item(1)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), outbox.changed())
            .await
            .expect("the permit of the earlier push wakes the waiter");
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_task() {
        let outbox = Outbox::detached(4);
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
        let outbox = Outbox::detached(4);
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

    /// The keepalive writes a ping to a peer heard from within the idle
    /// timeout; a peer silent for longer wakes the connection to drop it.
    #[tokio::test]
    async fn the_keepalive_pings_a_peer_heard_from_and_gives_up_on_a_silent_one() {
        use std::io::Read;
        let (outbox, mut peer) = pair(8).await;
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(outbox.keepalive(&Wire::ping(), Duration::from_secs(60)));
        let mut ping = [0u8; 2];
        peer.read_exact(&mut ping).unwrap();
        assert_eq!(ping, [0x89, 0x00], "an empty ping frame");
        let mut closed = Vec::new();
        assert_eq!(outbox.on_wake(&mut closed), Woken::Ready { unsent: false });

        std::thread::sleep(Duration::from_millis(30));
        // Heard from just now: still alive for a 20 ms timeout.
        outbox.heard();
        assert!(outbox.keepalive(&Wire::ping(), Duration::from_millis(20)));
        peer.read_exact(&mut ping).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(!outbox.keepalive(&Wire::ping(), Duration::from_millis(20)));
        let waiter = outbox.changed();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the silent peer's connection is woken");
        assert_eq!(outbox.on_wake(&mut closed), Woken::Silent);
    }

    /// A connected pair: the outbox's socket (server side) and the peer.
    async fn pair(capacity: usize) -> (Arc<Outbox>, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let server = tokio::net::TcpStream::from_std(server).unwrap();
        // The reactor learns the socket is writable on its first turn.
        server.writable().await.unwrap();
        (Outbox::new(capacity, Arc::new(server)), peer)
    }

    fn message(room: &Arc<str>, offset: u64, text: &str) -> Arc<Outbound> {
        Arc::new(Outbound {
            room: room.clone(),
            offset,
            frame: crate::codec::encode(&protocol::ServerFrame::error(
                protocol::ErrorCode::BadFrame,
                text,
                None,
            )),
        })
    }

    /// Reads whole frames from the peer until `n` came; answers their
    /// messages.
    fn read_frames(peer: &mut std::net::TcpStream, n: usize) -> Vec<String> {
        use std::io::Read;
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut chunk = [0u8; 65536];
        while out.len() < n {
            let got = peer.read(&mut chunk).expect("the frames arrive");
            assert!(got > 0, "the socket closed");
            buf.extend_from_slice(&chunk[..got]);
            loop {
                if buf.len() < 2 {
                    break;
                }
                let (header, len) = match buf[1] & 0x7f {
                    126 if buf.len() >= 4 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
                    127 if buf.len() >= 10 => (
                        10,
                        u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    ),
                    126 | 127 => break,
                    n => (2, n as usize),
                };
                if buf.len() < header + len {
                    break;
                }
                let json: serde_json::Value =
                    serde_json::from_slice(&buf[header..header + len]).expect("a whole JSON frame");
                out.push(json["message"].as_str().unwrap_or_default().to_owned());
                buf.drain(..header + len);
            }
        }
        out
    }

    #[tokio::test]
    async fn an_open_rooms_frame_is_written_at_once_and_a_seen_offset_skipped() {
        let (outbox, mut peer) = pair(16).await;
        let room: Arc<str> = Arc::from("lobby");
        outbox.open_room(&room, 1);
        outbox.push(message(&room, 1, "one")).unwrap();
        outbox.push(message(&room, 2, "two")).unwrap();
        outbox.push(message(&room, 2, "two again")).unwrap();
        outbox.push(message(&room, 0, "typing")).unwrap();
        // Nothing waits for the connection task: the hub wrote them.
        assert_eq!(
            outbox.on_wake(&mut Vec::new()),
            Woken::Ready { unsent: false }
        );
        assert_eq!(read_frames(&mut peer, 2), ["two", "typing"]);
    }

    #[tokio::test]
    async fn a_joining_rooms_frames_wait_for_its_joined_and_keep_later_frames_behind_them() {
        let (outbox, mut peer) = pair(16).await;
        let (lobby, open): (Arc<str>, Arc<str>) = (Arc::from("lobby"), Arc::from("open"));
        outbox.open_room(&open, 0);
        outbox.push(message(&lobby, 3, "in the history")).unwrap();
        outbox
            .push(message(&lobby, 4, "after the history"))
            .unwrap();
        // Behind the lobby's frames, though its own room is open.
        outbox.push(message(&open, 1, "open room")).unwrap();
        assert!(!outbox.write(encode_reply("joined").bytes()));
        outbox.open_room(&lobby, 3);
        assert_eq!(
            outbox.on_wake(&mut Vec::new()),
            Woken::Ready { unsent: false }
        );
        outbox.push(message(&open, 2, "direct again")).unwrap();
        assert_eq!(
            read_frames(&mut peer, 4),
            ["joined", "after the history", "open room", "direct again"]
        );
        // A left room's frames are dropped.
        assert_eq!(outbox.close_room(&lobby), Some(4));
        outbox.push(message(&lobby, 5, "left")).unwrap();
        outbox.on_wake(&mut Vec::new());
        outbox.push(message(&open, 3, "still open")).unwrap();
        assert_eq!(read_frames(&mut peer, 1), ["still open"]);
    }

    #[tokio::test]
    async fn while_held_room_frames_wait_so_a_reply_written_meanwhile_comes_first() {
        let (outbox, mut peer) = pair(16).await;
        let room: Arc<str> = Arc::from("lobby");
        outbox.open_room(&room, 0);
        outbox.hold();
        outbox.push(message(&room, 1, "own message")).unwrap();
        assert!(!outbox.write(encode_reply("ack").bytes()));
        outbox.release();
        assert_eq!(
            outbox.on_wake(&mut Vec::new()),
            Woken::Ready { unsent: false }
        );
        outbox.push(message(&room, 2, "direct")).unwrap();
        assert_eq!(read_frames(&mut peer, 3), ["ack", "own message", "direct"]);
    }

    #[tokio::test]
    async fn a_reply_while_held_takes_what_waited_behind_it_in_the_same_write() {
        let (outbox, mut peer) = pair(16).await;
        let (room, closing): (Arc<str>, Arc<str>) = (Arc::from("lobby"), Arc::from("closing"));
        outbox.open_room(&room, 0);
        outbox.open_room(&closing, 0);
        outbox.hold();
        outbox.push(message(&room, 1, "own message")).unwrap();
        outbox.push(message(&room, 1, "seen")).unwrap();
        outbox.push(message(&room, 0, "typing")).unwrap();
        let closes = Arc::new(Outbound {
            room: closing.clone(),
            offset: Outbound::CLOSES_ROOM,
            frame: encode_reply("left"),
        });
        outbox.push(closes).unwrap();
        outbox.push(message(&room, 2, "after the close")).unwrap();
        // Written with the reply, before the release: no wake-up of the
        // connection between them. The room's close waits for the
        // connection, which must forget the room, and what follows it too.
        assert!(!outbox.write(encode_reply("ack").bytes()));
        assert_eq!(read_frames(&mut peer, 3), ["ack", "own message", "typing"]);
        outbox.release();
        let mut closed = Vec::new();
        assert_eq!(outbox.on_wake(&mut closed), Woken::Ready { unsent: false });
        assert_eq!(closed, [closing]);
        assert_eq!(read_frames(&mut peer, 2), ["left", "after the close"]);
    }

    fn encode_reply(text: &str) -> crate::codec::Wire {
        crate::codec::encode(&protocol::ServerFrame::error(
            protocol::ErrorCode::BadFrame,
            text,
            None,
        ))
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_waits_in_order_and_past_capacity_is_refused() {
        let (outbox, mut peer) = pair(64).await;
        let room: Arc<str> = Arc::from("lobby");
        outbox.open_room(&room, 0);
        // 16 KiB frames until the kernel's buffers are full (the peer does
        // not read yet).
        let big = "x".repeat(16 * 1024);
        let mut offset = 0;
        let mut refused = false;
        while offset < 10_000 {
            offset += 1;
            if outbox.push(message(&room, offset, &big)).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a peer that reads nothing fills the outbox");
        let pushed = offset - 1;
        let flushing = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.flush().await }
        });
        let reader = tokio::task::spawn_blocking(move || read_frames(&mut peer, pushed as usize));
        let frames = reader.await.unwrap();
        assert_eq!(frames.len(), pushed as usize);
        assert!(frames.iter().all(|f| f == &big), "whole frames, in order");
        flushing.await.unwrap().expect("flushed");
    }

    #[tokio::test]
    async fn a_write_to_a_closed_peer_fails_the_connection() {
        let (outbox, peer) = pair(16).await;
        drop(peer);
        let room: Arc<str> = Arc::from("lobby");
        outbox.open_room(&room, 0);
        // The first write may still be taken (the peer's RST comes back);
        // a later one fails.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut offset = 0;
        loop {
            offset += 1;
            let _ = outbox.push(message(&room, offset, "x"));
            if outbox.on_wake(&mut Vec::new()) == Woken::Failed {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the write never failed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(outbox.flush().await.is_err());
    }
}
