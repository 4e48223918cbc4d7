//! The pub/sub side of the Redis engine: [`PubSub`], the handle the broker
//! subscribes through, and the task behind it. The task waits until a
//! connection has told whether the seeds are one Redis or a cluster, then
//! runs one of two loops ([`super::run_pubsub`]): [`Single`] here (one
//! pub/sub connection, channels subscribed with `SUBSCRIBE`), or the
//! sharded one (shard channels on the cluster's nodes). Both share [`Core`]: the subscription counts, the
//! waiting subscribers and what the hub is owed.
//!
//! **Invariant:** subscriptions are counted here and only here: the task
//! handles subscribe and unsubscribe requests one at a time, in the order
//! they were made, so a leave's unsubscribe racing the next join's
//! subscribe leaves the channel subscribed.
//!
//! **The intake never waits for the hub**: when the hub's channel is full
//! an event is dropped, counted, and a message's room is owed an
//! [`EngineEvent::Dropped`], so its catch-up reads what was dropped from
//! the stream ([`intake`]).

use super::archiver::{receive, Tail};
use super::connections::{Mode, Seeds, COMMAND_TIMEOUT};
use super::keys::Keys;
use crate::engine::{EngineError, EngineEvent, Events};
use crate::metrics as m;
use futures_util::StreamExt;
use protocol::RoomName;
use redis::aio::PubSubSink;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the pub/sub connection is pinged; an idle subscription can die
/// silently behind proxies.
pub(super) const PUBSUB_PING_EVERY: Duration = Duration::from_secs(5);
/// Backoff bounds between pub/sub reconnects.
pub(super) const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Subscription requests waiting for the pub/sub task. A join waits for its
/// request's answer, so this bounds only how many joins wait at once.
const SUB_REQUESTS: usize = 1024;

/// A request to the pub/sub task.
pub(super) enum SubRequest {
    /// Count one more subscriber of the channel; answered once the channel
    /// is subscribed on the live connection. A dropped answer (the caller
    /// gave up) takes the count back.
    Subscribe(String, oneshot::Sender<Result<(), EngineError>>),
    /// Count one subscriber less; the last one unsubscribes the channel.
    Unsubscribe(String),
}

/// The handle of the pub/sub task.
pub(super) struct PubSub {
    requests: mpsc::Sender<SubRequest>,
    /// `Ok` while the connection is up and subscribed; otherwise why not.
    state: Arc<Mutex<Result<(), String>>>,
}

impl PubSub {
    /// Starts the pub/sub task on `tracker`; it forwards what arrives on the
    /// subscribed channels to `events` and ends when `stop` is cancelled.
    ///
    /// The connection also stays subscribed to `probe_channel`, so that it
    /// counts as up only when the user may subscribe.
    pub(super) fn start(
        seeds: Arc<Seeds>,
        keys: Keys,
        probe_channel: String,
        tail: Option<Arc<Tail>>,
        events: Events,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> PubSub {
        let (requests, rx) = mpsc::channel(SUB_REQUESTS);
        let state = Arc::new(Mutex::new(Err("pub/sub not connected yet".to_owned())));
        let core = Core {
            keys,
            probe_channel,
            tail,
            requests: rx,
            events,
            stop,
            counts: HashMap::new(),
            waiting: Vec::new(),
            backoff: RECONNECT_MIN,
            state: state.clone(),
            owed: Arc::new(Mutex::new(Owed::default())),
            wake: Arc::new(Notify::new()),
        };
        tracker.spawn(super::run_pubsub(seeds, core));
        PubSub { requests, state }
    }

    /// Whether the connection is up and subscribed (for readiness).
    pub(super) fn connected(&self) -> Result<(), EngineError> {
        self.state
            .lock()
            .expect("pub/sub state lock")
            .clone()
            .map_err(EngineError::Unavailable)
    }

    /// See [`crate::engine::Broker::subscribe`].
    pub(super) async fn subscribe(&self, channel: String) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(SubRequest::Subscribe(channel, tx))
            .await
            .map_err(|_| EngineError::Internal("pub/sub task stopped".into()))?;
        match tokio::time::timeout(COMMAND_TIMEOUT * 2, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(EngineError::Internal("pub/sub task stopped".into())),
            Err(_) => Err(EngineError::Unavailable("subscribe timed out".into())),
        }
    }

    /// See [`crate::engine::Broker::unsubscribe`].
    pub(super) async fn unsubscribe(&self, channel: String) {
        // A stopped pub/sub task (the instance is shutting down) holds no
        // subscription any more: there is nothing to undo.
        if self
            .requests
            .send(SubRequest::Unsubscribe(channel))
            .await
            .is_err()
        {
            tracing::debug!("pub/sub task stopped; nothing to unsubscribe");
        }
    }
}

/// Waits until a connection told the mode (the backoff between tries is
/// the pub/sub one); `None` when the instance stops first.
pub(super) async fn wait_for_mode(seeds: &Seeds, core: &mut Core) -> Option<Mode> {
    loop {
        if let Some(mode) = seeds.mode() {
            return Some(mode);
        }
        match seeds.connect().await {
            Ok((_, mode)) => return Some(mode),
            Err(e) => {
                tracing::warn!(error = %e, "pub/sub connect failed");
                core.set_state(Err(format!("pub/sub connect failed: {e}")));
                if !core.wait_backoff().await {
                    return None;
                }
            }
        }
    }
}

/// The loop on one Redis.
pub(super) async fn run_single(seeds: Arc<Seeds>, core: Core) {
    Single { seeds, core }.run().await
}

/// What the hub is owed by the intake.
#[derive(Default)]
pub(super) struct Owed {
    /// Rooms whose messages may be missing (dropped at the intake, or a
    /// subscription re-made): each gets [`EngineEvent::Dropped`].
    pub(super) dropped: HashSet<RoomName>,
    /// An [`EngineEvent::Resync`] (every room) is owed.
    pub(super) resync: bool,
}

impl Owed {
    pub(super) fn any(&self) -> bool {
        self.resync || !self.dropped.is_empty()
    }

    /// Sends one owed event, if the hub's channels take it now (call it
    /// once [`Events::ready`] says they have room); what they do not take
    /// stays owed.
    pub(super) fn pay(&mut self, events: &Events) {
        if self.resync {
            if events.try_send(EngineEvent::Resync).is_ok() {
                // Covers every room, the dropped ones included.
                self.resync = false;
                self.dropped.clear();
            }
        } else if let Some(room) = self.dropped.iter().next().cloned() {
            if events
                .try_send(EngineEvent::Dropped { room: room.clone() })
                .is_ok()
            {
                self.dropped.remove(&room);
            }
        }
    }
}

/// Hands one event to the hub without waiting: when the hub's channel
/// is full the event is dropped here (the redis crate's buffer behind
/// the intake must not grow without bound instead), counted, and for a
/// message the room is owed an [`EngineEvent::Dropped`], so its
/// catch-up reads what was dropped from the stream. Typing and presence
/// notices are not stored: a dropped one is gone (counted). False when
/// the hub has stopped.
pub(super) fn intake(
    events: &Events,
    owed: &Mutex<Owed>,
    wake: &Notify,
    event: EngineEvent,
) -> bool {
    match events.try_send(event) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(event)) => {
            let kind = match &event {
                EngineEvent::Message { room, .. } | EngineEvent::Epoch { room, .. } => {
                    owed.lock().expect("owed lock").dropped.insert(room.clone());
                    wake.notify_one();
                    "message"
                }
                EngineEvent::Typing { .. } => "typing",
                EngineEvent::Presence { .. } => "presence",
                EngineEvent::Dropped { .. } | EngineEvent::Resync => "resync",
            };
            metrics::counter!(m::INTAKE_DROPPED, "kind" => kind).increment(1);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Why the connected loop ended.
pub(super) enum Lost {
    /// Reconnect after the backoff.
    Connection,
    /// The instance stops.
    Stop,
}

/// The state both loops share.
pub(super) struct Core {
    pub(super) keys: Keys,
    pub(super) probe_channel: String,
    /// With an archive: what the rooms' channels brought that the archive
    /// may not hold yet.
    pub(super) tail: Option<Arc<Tail>>,
    pub(super) requests: mpsc::Receiver<SubRequest>,
    pub(super) events: Events,
    pub(super) stop: CancellationToken,
    /// Subscribers per channel (always > 0): the channels the connection
    /// must hold.
    pub(super) counts: HashMap<String, usize>,
    /// Subscribers counted while no connection was up, answered on the
    /// next connection.
    pub(super) waiting: Vec<(String, oneshot::Sender<Result<(), EngineError>>)>,
    pub(super) backoff: Duration,
    pub(super) state: Arc<Mutex<Result<(), String>>>,
    /// What the hub is owed; written by the intake too.
    pub(super) owed: Arc<Mutex<Owed>>,
    /// Wakes the loop when something became owed outside it.
    pub(super) wake: Arc<Notify>,
}

impl Core {
    pub(super) fn set_state(&self, state: Result<(), String>) {
        *self.state.lock().expect("pub/sub state lock") = state;
    }

    pub(super) fn owes(&self) -> bool {
        self.owed.lock().expect("owed lock").any()
    }

    /// Counts one more subscriber; true when it is the channel's first.
    pub(super) fn count(&mut self, channel: &str) -> bool {
        let n = self.counts.entry(channel.to_owned()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Takes one subscriber of `channel` back; true when it was the last.
    pub(super) fn release(&mut self, channel: &str) -> bool {
        match self.counts.get_mut(channel) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.counts.remove(channel);
                true
            }
            None => false,
        }
    }

    /// Sleeps the backoff (with jitter) while still counting requests;
    /// subscribers wait for the next connection. False when stopping.
    pub(super) async fn wait_backoff(&mut self) -> bool {
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let sleep = tokio::time::sleep(self.backoff.mul_f64(jitter));
        tokio::pin!(sleep);
        self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = &mut sleep => return true,
                request = self.requests.recv() => match request {
                    None => return false,
                    Some(SubRequest::Subscribe(channel, answer)) => {
                        self.count(&channel);
                        self.waiting.push((channel, answer));
                    }
                    Some(SubRequest::Unsubscribe(channel)) => {
                        self.release(&channel);
                    }
                },
            }
        }
    }
}

/// The loop on one Redis: one pub/sub connection, re-made with backoff;
/// after a reconnect the hub is owed a [`EngineEvent::Resync`].
struct Single {
    seeds: Arc<Seeds>,
    core: Core,
}

impl Single {
    async fn run(mut self) {
        let mut connected_before = false;
        loop {
            if let Some(mut sink) = self.connect().await {
                self.core.backoff = RECONNECT_MIN;
                self.core.set_state(Ok(()));
                if connected_before {
                    tracing::info!(
                        rooms = self.core.counts.len(),
                        "pub/sub reconnected; resyncing rooms"
                    );
                    self.core.owed.lock().expect("owed lock").resync = true;
                }
                connected_before = true;
                let lost = self.connected(&mut sink).await;
                self.core.set_state(Err("pub/sub connection lost".into()));
                if let Lost::Stop = lost {
                    return;
                }
            }
            if !self.core.wait_backoff().await {
                return;
            }
        }
    }

    /// Opens the connection, subscribes every counted channel and answers
    /// the waiting subscribers. `None` when that failed.
    async fn connect(&mut self) -> Option<(PubSubSink, redis::aio::PubSubStream)> {
        let core = &mut self.core;
        let client = match self.seeds.single_client() {
            Ok(client) => client,
            Err(e) => {
                core.set_state(Err(format!("pub/sub connect failed: {e}")));
                return None;
            }
        };
        let connect = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub());
        let pubsub = tokio::select! {
            _ = core.stop.cancelled() => return None,
            r = connect => r,
        };
        let (mut sink, stream) = match pubsub {
            Ok(Ok(p)) => p.split(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "pub/sub connect failed");
                core.set_state(Err(format!("pub/sub connect failed: {e}")));
                return None;
            }
            Err(_) => {
                tracing::warn!("pub/sub connect timed out");
                core.set_state(Err("pub/sub connect timed out".into()));
                return None;
            }
        };
        let mut channels: Vec<&String> = core.counts.keys().collect();
        channels.push(&core.probe_channel);
        let subscribed = tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(channels)).await;
        if !matches!(subscribed, Ok(Ok(()))) {
            let reason = match subscribed {
                Ok(Err(e)) => format!("pub/sub subscribe failed: {e}"),
                _ => "pub/sub subscribe timed out".to_owned(),
            };
            tracing::warn!(reason, "pub/sub connection not usable");
            core.set_state(Err(reason));
            return None;
        }
        for (channel, answer) in std::mem::take(&mut core.waiting) {
            if answer.send(Ok(())).is_err() && core.release(&channel) {
                // The caller gave up: its count is taken back.
                if sink.unsubscribe(&channel).await.is_err() {
                    return None;
                }
            }
        }
        Some((sink, stream))
    }

    /// Serves the live connection until it is lost or the instance stops.
    async fn connected(
        &mut self,
        (sink, stream): &mut (PubSubSink, redis::aio::PubSubStream),
    ) -> Lost {
        // Own handles: a reserved slot borrows them across the select.
        let events = self.core.events.clone();
        let (owed, wake) = (self.core.owed.clone(), self.core.wake.clone());
        let mut ping = tokio::time::interval(PUBSUB_PING_EVERY);
        ping.tick().await;
        loop {
            let owes = self.core.owes();
            tokio::select! {
                _ = self.core.stop.cancelled() => return Lost::Stop,
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        tracing::warn!("pub/sub connection lost");
                        return Lost::Connection;
                    };
                    let Some(room) = self.core.keys.room_of_channel(msg.get_channel_name()) else { continue };
                    // Borrowed: a channel message is read once, here.
                    let Ok(payload) = std::str::from_utf8(msg.get_payload_bytes()) else { continue };
                    if let Some(event) = receive(self.core.tail.as_deref(), room, payload) {
                        if !intake(&events, &owed, &wake, event) {
                            return Lost::Stop;
                        }
                    }
                }
                ready = events.ready(), if owes => {
                    if !ready { return Lost::Stop };
                    owed.lock().expect("owed lock").pay(&events);
                }
                request = self.core.requests.recv() => {
                    let Some(request) = request else { return Lost::Stop };
                    if !self.apply(sink, request).await {
                        return Lost::Connection;
                    }
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        tracing::warn!("pub/sub ping failed; reconnecting");
                        return Lost::Connection;
                    }
                }
            }
        }
    }

    /// Applies one request on the live connection. False when the
    /// connection failed (the counts are already updated; the next
    /// connection subscribes what they hold).
    async fn apply(&mut self, sink: &mut PubSubSink, request: SubRequest) -> bool {
        let core = &mut self.core;
        match request {
            SubRequest::Subscribe(channel, answer) => {
                if core.count(&channel) {
                    if let Err(e) = sink.subscribe(&channel).await {
                        tracing::warn!(error = %e, "subscribe failed");
                        core.waiting.push((channel, answer));
                        return false;
                    }
                }
                if answer.send(Ok(())).is_err() && core.release(&channel) {
                    return sink.unsubscribe(&channel).await.is_ok();
                }
                true
            }
            SubRequest::Unsubscribe(channel) => {
                !core.release(&channel) || sink.unsubscribe(&channel).await.is_ok()
            }
        }
    }
}
