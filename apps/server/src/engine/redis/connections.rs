//! The Redis engine's two connections: [`Commands`], one multiplexed
//! connection for every command (made lazily, re-made by the redis crate's
//! `ConnectionManager`), and [`PubSub`], one pub/sub connection per
//! instance owned by a task that keeps it subscribed to the channels of
//! rooms with local members, pings it, and re-makes it with backoff.
//!
//! **Invariant:** subscriptions are counted here and only here: the task
//! handles subscribe and unsubscribe requests one at a time, in the order
//! they were made, so a leave's unsubscribe racing the next join's
//! subscribe leaves the channel subscribed.

use super::keys::Keys;
use super::parse_payload;
use crate::engine::{EngineError, EngineEvent};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::Client;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OnceCell};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one Redis command may take before the store counts as unavailable.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the pub/sub connection is pinged; an idle subscription can die
/// silently behind proxies.
const PUBSUB_PING_EVERY: Duration = Duration::from_secs(5);
/// Backoff bounds between pub/sub reconnects.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Subscription requests waiting for the pub/sub task. A join waits for its
/// request's answer, so this bounds only how many joins wait at once.
const SUB_REQUESTS: usize = 1024;

/// The command connection.
pub(super) struct Commands {
    client: Client,
    /// Made on first use, so an instance starts (and reports not ready)
    /// while Redis is down. The manager reconnects by itself afterwards.
    conn: OnceCell<ConnectionManager>,
}

impl Commands {
    pub(super) fn new(client: Client) -> Commands {
        Commands {
            client,
            conn: OnceCell::new(),
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, EngineError> {
        self.conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_with_config(self.client.clone(), config)
                    .await
                    .map_err(unavailable)
            })
            .await
            .cloned()
    }

    /// Runs `op` on the shared connection; once more when the connection
    /// turned out to be dead (Redis restarted while it was idle: the first
    /// command fails, then the manager reconnects). Safe for every command
    /// of this engine: reads are idempotent, and a publish that did run the
    /// first time is answered as a duplicate with its offset the second time.
    pub(super) async fn run<T, F, Fut>(&self, op: F) -> Result<T, EngineError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match op(self.conn().await?).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                tracing::debug!(error = %e, "redis command failed on a dead connection; retrying once");
                op(self.conn().await?).await.map_err(unavailable)
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// A Redis error as the engine reports it: the store is unavailable.
pub(super) fn unavailable(e: redis::RedisError) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

/// A request to the pub/sub task.
enum SubRequest {
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
}

impl PubSub {
    /// Starts the pub/sub task on `tracker`; it forwards what arrives on the
    /// subscribed channels to `events` and ends when `stop` is cancelled.
    pub(super) fn start(
        client: Client,
        keys: Keys,
        events: mpsc::Sender<EngineEvent>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> PubSub {
        let (requests, rx) = mpsc::channel(SUB_REQUESTS);
        let task = Task {
            client,
            keys,
            requests: rx,
            events,
            stop,
            counts: HashMap::new(),
            waiting: Vec::new(),
            backoff: RECONNECT_MIN,
        };
        tracker.spawn(task.run());
        PubSub { requests }
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

/// Why the connected loop ended.
enum Lost {
    /// Reconnect after the backoff.
    Connection,
    /// The instance stops.
    Stop,
}

/// The state of the pub/sub task.
struct Task {
    client: Client,
    keys: Keys,
    requests: mpsc::Receiver<SubRequest>,
    events: mpsc::Sender<EngineEvent>,
    stop: CancellationToken,
    /// Subscribers per channel (always > 0): the channels the connection
    /// must hold.
    counts: HashMap<String, usize>,
    /// Subscribers counted while no connection was up, answered on the
    /// next connection.
    waiting: Vec<(String, oneshot::Sender<Result<(), EngineError>>)>,
    backoff: Duration,
}

impl Task {
    async fn run(mut self) {
        let mut connected_before = false;
        loop {
            if let Some(mut sink) = self.connect().await {
                self.backoff = RECONNECT_MIN;
                if connected_before {
                    tracing::info!(
                        rooms = self.counts.len(),
                        "pub/sub reconnected; resyncing rooms"
                    );
                    if self.events.send(EngineEvent::Resync).await.is_err() {
                        return;
                    }
                }
                connected_before = true;
                if let Lost::Stop = self.connected(&mut sink).await {
                    return;
                }
            }
            if !self.wait_backoff().await {
                return;
            }
        }
    }

    /// Opens the connection, subscribes every counted channel and answers
    /// the waiting subscribers. `None` when that failed.
    async fn connect(&mut self) -> Option<(PubSubSink, redis::aio::PubSubStream)> {
        let connect = tokio::time::timeout(COMMAND_TIMEOUT, self.client.get_async_pubsub());
        let pubsub = tokio::select! {
            _ = self.stop.cancelled() => return None,
            r = connect => r,
        };
        let (mut sink, stream) = match pubsub {
            Ok(Ok(p)) => p.split(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "pub/sub connect failed");
                return None;
            }
            Err(_) => {
                tracing::warn!("pub/sub connect timed out");
                return None;
            }
        };
        if !self.counts.is_empty() {
            let channels: Vec<&String> = self.counts.keys().collect();
            if let Err(e) = sink.subscribe(channels).await {
                tracing::warn!(error = %e, "resubscribe failed");
                return None;
            }
        }
        for (channel, answer) in std::mem::take(&mut self.waiting) {
            if answer.send(Ok(())).is_err() && self.release(&channel) {
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
        let mut ping = tokio::time::interval(PUBSUB_PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Lost::Stop,
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        tracing::warn!("pub/sub connection lost");
                        return Lost::Connection;
                    };
                    let Some(room) = self.keys.room_of_channel(msg.get_channel_name()) else { continue };
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match parse_payload(room, &payload) {
                        Some(event) => {
                            if self.events.send(event).await.is_err() {
                                return Lost::Stop;
                            }
                        }
                        None => tracing::warn!(payload, "unreadable channel payload"),
                    }
                }
                request = self.requests.recv() => {
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
        match request {
            SubRequest::Subscribe(channel, answer) => {
                let n = self.counts.entry(channel.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    if let Err(e) = sink.subscribe(&channel).await {
                        tracing::warn!(error = %e, "subscribe failed");
                        self.waiting.push((channel, answer));
                        return false;
                    }
                }
                if answer.send(Ok(())).is_err() && self.release(&channel) {
                    return sink.unsubscribe(&channel).await.is_ok();
                }
                true
            }
            SubRequest::Unsubscribe(channel) => {
                !self.release(&channel) || sink.unsubscribe(&channel).await.is_ok()
            }
        }
    }

    /// Takes one subscriber of `channel` back; true when it was the last.
    fn release(&mut self, channel: &str) -> bool {
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
    async fn wait_backoff(&mut self) -> bool {
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
                        *self.counts.entry(channel.clone()).or_insert(0) += 1;
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
