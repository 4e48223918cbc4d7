//! The Redis engine's two connections: [`Commands`], one multiplexed
//! connection for every command, and [`PubSub`], one pub/sub connection per
//! instance owned by a task that keeps it subscribed to the channels of
//! rooms with local members, pings it, and re-makes it with backoff.
//!
//! **Dead connections** are found and replaced, never waited on: every
//! socket has TCP keepalive and `TCP_USER_TIMEOUT` ([`tcp_settings`]), so
//! the kernel drops a flow a NAT or proxy forgot; a command that times out,
//! fails on the socket, or is answered by a node that cannot take it
//! (`READONLY`: a demoted primary; `MASTERDOWN`) drops the command
//! connection, and the next command makes a new one (resolving the name
//! again, so a DNS name or proxy that moved to the new primary is followed).
//! The pub/sub connection is pinged every [`PUBSUB_PING_EVERY`]; a ping
//! that times out re-makes it.
//!
//! **Invariant:** subscriptions are counted here and only here: the task
//! handles subscribe and unsubscribe requests one at a time, in the order
//! they were made, so a leave's unsubscribe racing the next join's
//! subscribe leaves the channel subscribed.

use super::keys::Keys;
use super::parse_payload;
use crate::engine::{EngineError, EngineEvent};
use crate::metrics as m;
use futures_util::StreamExt;
use protocol::RoomName;
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::io::tcp::{socket2, TcpSettings};
use redis::{AsyncConnectionConfig, Client, ServerErrorKind};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one Redis command may take before its connection counts as
/// dead (and the store as unavailable, if a new one fails too).
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the pub/sub connection is pinged; an idle subscription can die
/// silently behind proxies.
pub(super) const PUBSUB_PING_EVERY: Duration = Duration::from_secs(5);
/// Backoff bounds between pub/sub reconnects.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Subscription requests waiting for the pub/sub task. A join waits for its
/// request's answer, so this bounds only how many joins wait at once.
const SUB_REQUESTS: usize = 1024;
/// TCP keepalive: first probe after this much idleness, then every
/// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_RETRIES`] unanswered probes drop the
/// flow (25 s in all).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
/// `TCP_USER_TIMEOUT`: data unacknowledged for this long drops the flow.
const USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket options of every Redis connection: keepalive probes and a
/// user timeout, so a flow that a NAT or proxy forgot (no RST) ends.
pub(super) fn tcp_settings() -> TcpSettings {
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(
            socket2::TcpKeepalive::new()
                .with_time(KEEPALIVE_IDLE)
                .with_interval(KEEPALIVE_INTERVAL)
                .with_retries(KEEPALIVE_RETRIES),
        )
        .set_user_timeout(USER_TIMEOUT)
}

/// The command connection.
pub(super) struct Commands {
    client: Client,
    /// The live connection and its generation; `None` until the first
    /// command and after one was found dead, so an instance starts (and
    /// reports not ready) while Redis is down.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Serialises connecting, so a burst of commands makes one connection.
    connecting: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

impl Commands {
    pub(super) fn new(client: Client) -> Commands {
        Commands {
            client,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    fn live(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().expect("connection lock").clone()
    }

    async fn conn(&self) -> Result<(u64, MultiplexedConnection), EngineError> {
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let _one = self.connecting.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)?;
        check_version(&mut conn).await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().expect("connection lock") = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Forgets connection `generation` (unless it was replaced already):
    /// the next command makes a new one.
    fn drop_dead(&self, generation: u64, error: &redis::RedisError) {
        let mut current = self.current.lock().expect("connection lock");
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            tracing::warn!(error = %error, "redis command connection is dead; reconnecting");
            *current = None;
        }
    }

    /// Runs `op` on the shared connection; when the connection turned out
    /// to be dead ([`is_dead`]), once more on a new one. Safe for every
    /// command of this engine: reads are idempotent, and a publish that did
    /// run the first time is answered as a duplicate with its offset the
    /// second time.
    pub(super) async fn run<T, F, Fut>(&self, op: F) -> Result<T, EngineError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (generation, conn) = self.conn().await?;
        match op(conn).await {
            Ok(v) => Ok(v),
            Err(e) if is_dead(&e) => {
                self.drop_dead(generation, &e);
                let (generation, conn) = self.conn().await?;
                op(conn).await.map_err(|e| {
                    if is_dead(&e) {
                        self.drop_dead(generation, &e);
                    }
                    unavailable(e)
                })
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// The oldest server the engine works on: streams came with Redis 5.0
/// (tested on 5.0.6; nothing newer is needed: `ZADD GT`, 6.2, is written
/// out in `lua/rooms_index.lua`).
const MIN_VERSION: (u32, u32) = (5, 0);

/// Refuses a server older than [`MIN_VERSION`], naming both versions, so
/// that every command (and `/readyz`) says why instead of each join failing
/// on an unknown command. A user not allowed `INFO` (it is in the
/// `@dangerous` ACL category) is not checked.
async fn check_version(conn: &mut MultiplexedConnection) -> Result<(), EngineError> {
    let info: String = match redis::cmd("INFO").arg("server").query_async(conn).await {
        Ok(info) => info,
        Err(e) if matches!(e.kind(), redis::ErrorKind::Server(ServerErrorKind::NoPerm)) => {
            return Ok(());
        }
        Err(e) => return Err(unavailable(e)),
    };
    let Some(version) = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
    else {
        return Ok(());
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_VERSION {
        return Err(EngineError::Internal(format!(
            "Redis {version} found; the chat needs Redis {}.{} or newer (streams)",
            MIN_VERSION.0, MIN_VERSION.1
        )));
    }
    Ok(())
}

/// Whether `e` means the connection cannot serve commands any more: the
/// socket failed or timed out, or the node it reaches cannot take writes
/// (`READONLY`: a primary demoted to replica; `MASTERDOWN`: a replica that
/// lost its primary). Another connection may reach a node that can.
fn is_dead(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
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
        client: Client,
        keys: Keys,
        probe_channel: String,
        events: mpsc::Sender<EngineEvent>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> PubSub {
        let (requests, rx) = mpsc::channel(SUB_REQUESTS);
        let state = Arc::new(Mutex::new(Err("pub/sub not connected yet".to_owned())));
        let task = Task {
            client,
            keys,
            probe_channel,
            requests: rx,
            events,
            stop,
            counts: HashMap::new(),
            waiting: Vec::new(),
            backoff: RECONNECT_MIN,
            state: state.clone(),
            dropped: HashSet::new(),
            resync: false,
        };
        tracker.spawn(task.run());
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
    probe_channel: String,
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
    state: Arc<Mutex<Result<(), String>>>,
    /// Rooms whose messages were dropped at the intake (the hub's channel
    /// was full): each gets [`EngineEvent::Dropped`] once there is room.
    dropped: HashSet<RoomName>,
    /// A [`EngineEvent::Resync`] is owed to the hub.
    resync: bool,
}

impl Task {
    async fn run(mut self) {
        let mut connected_before = false;
        loop {
            if let Some(mut sink) = self.connect().await {
                self.backoff = RECONNECT_MIN;
                self.set_state(Ok(()));
                if connected_before {
                    tracing::info!(
                        rooms = self.counts.len(),
                        "pub/sub reconnected; resyncing rooms"
                    );
                    self.resync = true;
                }
                connected_before = true;
                let lost = self.connected(&mut sink).await;
                self.set_state(Err("pub/sub connection lost".into()));
                if let Lost::Stop = lost {
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
                self.set_state(Err(format!("pub/sub connect failed: {e}")));
                return None;
            }
            Err(_) => {
                tracing::warn!("pub/sub connect timed out");
                self.set_state(Err("pub/sub connect timed out".into()));
                return None;
            }
        };
        let mut channels: Vec<&String> = self.counts.keys().collect();
        channels.push(&self.probe_channel);
        let subscribed = tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(channels)).await;
        if !matches!(subscribed, Ok(Ok(()))) {
            let reason = match subscribed {
                Ok(Err(e)) => format!("pub/sub subscribe failed: {e}"),
                _ => "pub/sub subscribe timed out".to_owned(),
            };
            tracing::warn!(reason, "pub/sub connection not usable");
            self.set_state(Err(reason));
            return None;
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
        // Its own handle: a reserved slot borrows it across the select.
        let events = self.events.clone();
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
                            if !self.intake(event) {
                                return Lost::Stop;
                            }
                        }
                        None => tracing::warn!(payload, "unreadable channel payload"),
                    }
                }
                permit = events.reserve(), if self.resync || !self.dropped.is_empty() => {
                    let Ok(permit) = permit else { return Lost::Stop };
                    if std::mem::take(&mut self.resync) {
                        // Covers every room, the dropped ones included.
                        self.dropped.clear();
                        permit.send(EngineEvent::Resync);
                    } else if let Some(room) = self.dropped.iter().next().cloned() {
                        self.dropped.remove(&room);
                        permit.send(EngineEvent::Dropped { room });
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

    /// Hands one event to the hub without waiting: when the hub's channel
    /// is full the event is dropped here (the redis crate's buffer behind
    /// this task must not grow without bound instead), counted, and for a
    /// message the room is owed an [`EngineEvent::Dropped`], so its
    /// catch-up reads what was dropped from the stream. Typing and presence
    /// notices are not stored: a dropped one is gone (counted). False when
    /// the hub has stopped.
    fn intake(&mut self, event: EngineEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(event)) => {
                let kind = match &event {
                    EngineEvent::Message { room, .. } | EngineEvent::Epoch { room, .. } => {
                        self.dropped.insert(room.clone());
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

    fn set_state(&self, state: Result<(), String>) {
        *self.state.lock().expect("pub/sub state lock") = state;
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
