//! The registry of this instance's open connections, through which
//! shutdown and the keepalive reach each of them.

use crate::codec::Wire;
use crate::hub::ConnId;
use crate::outbox::Outbox;
use protocol::{CloseCode, User};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Connections pinged in one go before the keepalive yields (a ping is one
/// `write(2)`, a few µs): a pass over many connections does not hold a
/// worker thread for long.
const KEEPALIVE_BATCH: usize = 256;

/// The instance's keepalive, until `stop`: every `interval`, each open
/// connection whose peer was heard from within `idle_timeout` gets a ping
/// (RFC 6455 §5.5.2: its pong, like any frame, counts as heard), and the
/// others are dropped (their clients reconnect and recover by offset).
///
/// One task for the instance instead of a timer per connection: an idle
/// connection then costs no timer entry and no wake-up of its own.
pub(crate) async fn keepalive(
    ctx: Arc<super::ConnContext>,
    interval: Duration,
    idle_timeout: Duration,
    stop: CancellationToken,
) {
    let ping = Wire::ping();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let outboxes = ctx.live.outboxes();
        for batch in outboxes.chunks(KEEPALIVE_BATCH) {
            for outbox in batch {
                outbox.keepalive(&ping, idle_timeout);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// The outboxes of this instance's open connections, and whether it is
/// shutting down. Shutdown reaches each connection, in `hello` or after,
/// through the outbox it already watches (a kick with 1012: it sends
/// `reconnect` and closes). Polling a shutdown token instead meant locking a
/// mutex per connection on every delivery (one shared mutex for clones of
/// the token; fan-out 1 × 1000 p99 went from ~17 to ~14 ms without it).
#[derive(Debug, Default)]
pub(crate) struct Live {
    state: std::sync::Mutex<LiveState>,
}

#[derive(Debug, Default)]
struct LiveState {
    outboxes: std::collections::HashMap<ConnId, Arc<Outbox>>,
    /// The user of each connection past `hello` (the connection's own
    /// `Arc`, not a copy).
    users: std::collections::HashMap<ConnId, Arc<User>>,
    closing: bool,
    /// Set when a drain began: `/readyz` answers 503.
    draining: bool,
}

impl Live {
    /// Registers a connection; one that arrives during shutdown is told at
    /// once.
    pub(super) fn add(&self, id: ConnId, outbox: Arc<Outbox>) {
        let mut state = self.state.lock().expect("live lock");
        if state.closing {
            outbox.kick(CloseCode::ServiceRestart);
        }
        state.outboxes.insert(id, outbox);
    }

    pub(super) fn remove(&self, id: ConnId) {
        let mut state = self.state.lock().expect("live lock");
        state.outboxes.remove(&id);
        state.users.remove(&id);
    }

    /// Connection `id` signed in as `user` (its `welcome` went out).
    pub(super) fn signed_in(&self, id: ConnId, user: Arc<User>) {
        self.state.lock().expect("live lock").users.insert(id, user);
    }

    /// Closes every connection of `user` here with 1008 (the admin view's
    /// "disconnect a user": the client does not reconnect on its own).
    /// Answers how many.
    pub(crate) fn disconnect_user(&self, user: &str) -> usize {
        let state = self.state.lock().expect("live lock");
        let mut n = 0;
        for (id, _) in state.users.iter().filter(|(_, u)| u.id == user) {
            if let Some(outbox) = state.outboxes.get(id) {
                outbox.kick(CloseCode::PolicyViolation);
                n += 1;
            }
        }
        n
    }

    /// The drain began: the instance reports not ready from now on.
    pub(crate) fn start_draining(&self) {
        self.state.lock().expect("live lock").draining = true;
    }

    /// Whether a drain began (`/readyz`).
    pub(crate) fn draining(&self) -> bool {
        self.state.lock().expect("live lock").draining
    }

    /// The outboxes of the open connections, at this moment.
    fn outboxes(&self) -> Vec<Arc<Outbox>> {
        let state = self.state.lock().expect("live lock");
        state.outboxes.values().cloned().collect()
    }

    /// Open connections.
    pub(crate) fn count(&self) -> usize {
        self.state.lock().expect("live lock").outboxes.len()
    }

    /// Asks every open connection to tell its client to reconnect, each
    /// after its own delay: in random order, evenly over `window` (the
    /// i-th of n after i·window/n). Later connections are closed with
    /// 1012 at once, as during shutdown. Returns how many were asked.
    pub(crate) fn spread_reconnects(&self, window: std::time::Duration) -> usize {
        use rand::seq::SliceRandom as _;
        let mut state = self.state.lock().expect("live lock");
        state.closing = true;
        let mut outboxes: Vec<&Arc<Outbox>> = state.outboxes.values().collect();
        outboxes.shuffle(&mut rand::rng());
        let n = outboxes.len();
        for (i, outbox) in outboxes.into_iter().enumerate() {
            outbox.ask_reconnect(window.mul_f64(i as f64 / n as f64));
        }
        n
    }

    /// Asks every open connection, and every later one, to send
    /// `reconnect` and close with 1012.
    pub(crate) fn shut_down(&self) {
        let mut state = self.state.lock().expect("live lock");
        state.closing = true;
        for outbox in state.outboxes.values() {
            outbox.kick(CloseCode::ServiceRestart);
        }
    }
}
