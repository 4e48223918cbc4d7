//! Sharded pub/sub on a Redis Cluster: every room's channel is a shard
//! channel in the room's slot (`SSUBSCRIBE`, Redis 7.0), so a message goes
//! only to the master that owns the room, and from it only to the
//! instances subscribed there.
//!
//! **One connection per master** (RESP3; made when a channel it owns is
//! first wanted), owned here, so that it is known exactly which channels
//! each one carries and when it dies. The slot map comes from
//! `CLUSTER SLOTS` ([`Topology`]), read at start, every
//! [`TOPOLOGY_EVERY`], and at once after a node is lost or a subscribe is
//! redirected (`MOVED`). What a node pushes arrives in [`on_push`]:
//! messages go to the hub's intake; confirmations keep [`Shared`], the
//! truth of what is subscribed where.
//!
//! **Level-triggered:** the loop compares what is wanted (the counted
//! channels) with what is confirmed and subscribes or unsubscribes the
//! difference on the owner of each channel's slot, whatever made them
//! differ. Commands run beside the loop ([`Running`]), so a join of a
//! room on a healthy master never waits behind a failed one.
//!
//! **A gap is always filled from the stream.** A channel loses its
//! subscription when its slot moves (the old owner pushes an unrequested
//! `sunsubscribe`) or its node's connection dies (a failed master, a
//! network fault). Until it is subscribed again on the slot's owner,
//! messages published to it reach no instance; so when the new
//! confirmation arrives the room is owed an
//! [`crate::engine::EngineEvent::Dropped`], and the hub's catch-up reads
//! the stream from its cursor before anything newer.

use super::archiver::{receive, Tail};
use super::connections::{Seeds, COMMAND_TIMEOUT};
use super::pubsub::{intake, Core, SubRequest, PUBSUB_PING_EVERY};
use crate::engine::EngineError;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use protocol::RoomName;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// How often wanted and confirmed channels are compared in full (a
/// subscribe that failed is retried this often).
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// How often the slot map is read even when nothing suggested a change.
const TOPOLOGY_EVERY: Duration = Duration::from_secs(5);

/// A node, as `CLUSTER SLOTS` names it.
type Addr = (String, u16);
type Answer = oneshot::Sender<Result<(), EngineError>>;

/// What the nodes confirmed, shared between the loop and [`on_push`].
#[derive(Default)]
struct Shared {
    /// Channels with subscribers (and the probe channel): a mirror of the
    /// counts, for the push handler.
    wanted: HashSet<String>,
    /// Channels a node confirmed (`ssubscribe` push) and has not dropped
    /// since, with that node.
    confirmed: HashMap<String, Addr>,
    /// Channels whose next confirmation follows a time without a
    /// subscription: their room is owed a catch-up when it comes.
    gap: HashSet<String>,
    /// Joins waiting for their channel's confirmation.
    pending: HashMap<String, Vec<Answer>>,
    /// Channels whose waiting join gave up (its count is to be taken back).
    gave_up: Vec<String>,
    /// Channels to reconcile at once (changed since the last look).
    dirty: HashSet<String>,
    /// Nodes whose connection ended.
    lost: HashSet<Addr>,
    /// The slot map is to be read again.
    stale: bool,
}

impl Shared {
    /// `addr`'s connection is gone: its channels are not subscribed any
    /// more, and each has a gap.
    fn node_lost(&mut self, addr: &Addr) {
        let gone: Vec<String> = self
            .confirmed
            .iter()
            .filter(|(_, a)| *a == addr)
            .map(|(c, _)| c.clone())
            .collect();
        for channel in gone {
            self.confirmed.remove(&channel);
            self.gap.insert(channel.clone());
            self.dirty.insert(channel);
        }
        self.stale = true;
    }
}

/// The slot map: ranges of slots and the master serving each.
#[derive(Default)]
struct Topology {
    ranges: Vec<(u16, u16, Addr)>,
}

impl Topology {
    fn owner(&self, slot: u16) -> Option<&Addr> {
        self.ranges
            .iter()
            .find(|(start, end, _)| *start <= slot && slot <= *end)
            .map(|(_, _, addr)| addr)
    }

    /// Parses `CLUSTER SLOTS`: `[[start, end, [host, port, id, …], replicas…], …]`.
    fn parse(value: Value) -> Option<Topology> {
        let Value::Array(rows) = value else {
            return None;
        };
        let mut ranges = Vec::new();
        for row in rows {
            let Value::Array(items) = row else {
                return None;
            };
            let int = |v: Option<&Value>| match v {
                Some(Value::Int(n)) => u16::try_from(*n).ok(),
                _ => None,
            };
            let Some(Value::Array(master)) = items.get(2) else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            ranges.push((
                int(items.first())?,
                int(items.get(1))?,
                (host, int(master.get(1))?),
            ));
        }
        Some(Topology { ranges })
    }
}

/// The slot of a key or channel (Redis Cluster specification, "Key
/// distribution model"): CRC16 (XMODEM) of the hash tag, the first
/// non-empty `{…}`, or of the whole name, modulo 16384.
pub(super) fn slot(name: &str) -> u16 {
    let bytes = name.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(bytes) {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A command running beside the loop.
enum Op {
    Subscribe(String, redis::RedisResult<()>),
    Unsubscribe(String, redis::RedisResult<()>),
    Connected(Addr, redis::RedisResult<MultiplexedConnection>),
    Topology(Result<Topology, String>),
    Ping(Addr, redis::RedisResult<()>),
}

type Running = FuturesUnordered<Pin<Box<dyn Future<Output = Op> + Send>>>;

/// A node's connection, or the attempt to make one.
enum NodeConn {
    Connecting,
    Up(MultiplexedConnection),
}

/// The loop's own state.
struct Sharded {
    seeds: Arc<Seeds>,
    shared: Arc<Mutex<Shared>>,
    target: Arc<PushTarget>,
    topology: Topology,
    nodes: HashMap<Addr, NodeConn>,
    running: Running,
    /// Channels with a subscribe or unsubscribe running.
    in_flight: HashSet<String>,
    /// Nodes a connection to failed, and when to try again (the next full
    /// reconcile after it: one attempt per node per [`RECONCILE_EVERY`]).
    retry_at: HashMap<Addr, tokio::time::Instant>,
    reading_topology: bool,
}

/// Runs the sharded loop until the instance stops.
pub(super) async fn run(seeds: Arc<Seeds>, mut core: Core) {
    let shared = Arc::new(Mutex::new(Shared {
        stale: true,
        ..Shared::default()
    }));
    {
        let mut s = shared.lock().expect("shared lock");
        s.wanted = core.counts.keys().cloned().collect();
        s.wanted.insert(core.probe_channel.clone());
        s.dirty = s.wanted.clone();
        for (channel, answer) in std::mem::take(&mut core.waiting) {
            s.pending.entry(channel).or_default().push(answer);
        }
    }
    let target = Arc::new(PushTarget {
        keys: core.keys.clone(),
        events: core.events.clone(),
        owed: core.owed.clone(),
        wake: core.wake.clone(),
        shared: shared.clone(),
        tail: core.tail.clone(),
    });
    let mut sharded = Sharded {
        seeds,
        shared,
        target,
        topology: Topology::default(),
        nodes: HashMap::new(),
        running: FuturesUnordered::new(),
        in_flight: HashSet::new(),
        retry_at: HashMap::new(),
        reading_topology: false,
    };
    sharded.serve(&mut core).await;
}

impl Sharded {
    async fn serve(&mut self, core: &mut Core) {
        let events = core.events.clone();
        let (owed, wake) = (core.owed.clone(), core.wake.clone());
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        let every =
            |period: Duration| (period.as_millis() / RECONCILE_EVERY.as_millis()).max(1) as u64;
        let (ping_every, topology_every) = (every(PUBSUB_PING_EVERY), every(TOPOLOGY_EVERY));
        let mut ticks = 0u64;
        loop {
            self.step(core, false);
            let owes = core.owes();
            tokio::select! {
                _ = core.stop.cancelled() => return,
                _ = wake.notified() => {}
                ready = events.ready(), if owes => {
                    if !ready { return };
                    owed.lock().expect("owed lock").pay(&events);
                }
                request = core.requests.recv() => {
                    let Some(request) = request else { return };
                    self.apply(core, request);
                }
                Some(op) = self.running.next(), if !self.running.is_empty() => {
                    self.finished(core, op);
                }
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(topology_every) {
                        self.shared.lock().expect("shared lock").stale = true;
                    }
                    if ticks.is_multiple_of(ping_every) {
                        self.ping_all();
                    }
                    self.step(core, true);
                }
            }
        }
    }

    /// Brings everything one step closer to what is wanted: lost nodes
    /// forgotten, the slot map read when stale, channels (the dirty ones, or
    /// all when `full`) subscribed or unsubscribed on their owners, the
    /// counts of joins that gave up taken back; readiness updated.
    fn step(&mut self, core: &mut Core, full: bool) {
        let (lost, stale, gave_up, candidates) = {
            let mut s = self.shared.lock().expect("shared lock");
            let mut gave_up = std::mem::take(&mut s.gave_up);
            if full {
                for (channel, answers) in s.pending.iter_mut() {
                    let before = answers.len();
                    answers.retain(|a| !a.is_closed());
                    gave_up.extend(std::iter::repeat_n(channel.clone(), before - answers.len()));
                }
                s.pending.retain(|_, answers| !answers.is_empty());
            }
            let mut candidates: Vec<String> = std::mem::take(&mut s.dirty).into_iter().collect();
            if full {
                candidates.extend(
                    s.wanted
                        .iter()
                        .filter(|c| !s.confirmed.contains_key(*c))
                        .cloned(),
                );
                candidates.extend(
                    s.confirmed
                        .keys()
                        .filter(|c| !s.wanted.contains(*c))
                        .cloned(),
                );
            }
            let lost: Vec<Addr> = s.lost.drain().collect();
            (lost, std::mem::take(&mut s.stale), gave_up, candidates)
        };
        for addr in lost {
            tracing::warn!(node = %format!("{}:{}", addr.0, addr.1), "sharded pub/sub: a node's connection ended; its channels are subscribed again and caught up");
            self.nodes.remove(&addr);
            self.shared.lock().expect("shared lock").node_lost(&addr);
        }
        if stale && !self.reading_topology {
            self.read_topology();
        } else if stale {
            self.shared.lock().expect("shared lock").stale = true;
        }
        for channel in gave_up {
            self.give_back(core, &channel);
        }
        for channel in candidates {
            self.reconcile(&channel);
        }
        let ready = self
            .shared
            .lock()
            .expect("shared lock")
            .confirmed
            .contains_key(&core.probe_channel);
        core.set_state(if ready {
            Ok(())
        } else {
            Err("sharded pub/sub: the probe channel is not subscribed".into())
        });
    }

    /// Subscribes `channel` on its slot's owner, or unsubscribes it from the
    /// node it is confirmed on, as wanted.
    fn reconcile(&mut self, channel: &str) {
        if self.in_flight.contains(channel) {
            return;
        }
        let (want, have) = {
            let s = self.shared.lock().expect("shared lock");
            (
                s.wanted.contains(channel),
                s.confirmed.get(channel).cloned(),
            )
        };
        let (addr, subscribe) = match (want, have) {
            (true, None) => match self.topology.owner(slot(channel)) {
                Some(owner) => (owner.clone(), true),
                None => return,
            },
            (false, Some(node)) => (node, false),
            _ => return,
        };
        let conn = match self.nodes.get(&addr) {
            Some(NodeConn::Up(conn)) => conn.clone(),
            Some(NodeConn::Connecting) => return,
            None => {
                let now = tokio::time::Instant::now();
                if self.retry_at.get(&addr).is_none_or(|at| *at <= now) {
                    self.retry_at.insert(addr.clone(), now + RECONCILE_EVERY);
                    self.connect(addr);
                }
                return;
            }
        };
        self.in_flight.insert(channel.to_owned());
        let channel = channel.to_owned();
        let mut conn = conn;
        self.running.push(Box::pin(async move {
            // One channel per command: its one confirmation (a push) is
            // the reply.
            let command = if subscribe {
                "SSUBSCRIBE"
            } else {
                "SUNSUBSCRIBE"
            };
            let r = redis::cmd(command)
                .arg(&channel)
                .query_async::<Value>(&mut conn)
                .await
                .map(|_| ());
            if subscribe {
                Op::Subscribe(channel, r)
            } else {
                Op::Unsubscribe(channel, r)
            }
        }));
    }

    /// Opens a connection to `addr`; its pushes go to [`on_push`].
    fn connect(&mut self, addr: Addr) {
        self.nodes.insert(addr.clone(), NodeConn::Connecting);
        let client = self.seeds.node_client(&addr.0, addr.1);
        let push = {
            let (addr, target) = (addr.clone(), self.target.clone());
            move |info: PushInfo| -> Result<(), std::convert::Infallible> {
                on_push(info, &addr, &target);
                Ok(())
            }
        };
        self.running.push(Box::pin(async move {
            let made = match client {
                Ok(client) => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(COMMAND_TIMEOUT))
                        .set_response_timeout(Some(COMMAND_TIMEOUT))
                        .set_push_sender(push);
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                }
                Err(e) => Err(e),
            };
            Op::Connected(addr, made)
        }));
    }

    /// Reads `CLUSTER SLOTS` from a connected node, else from a seed.
    fn read_topology(&mut self) {
        self.reading_topology = true;
        let mut up: Vec<MultiplexedConnection> = self
            .nodes
            .values()
            .filter_map(|n| match n {
                NodeConn::Up(conn) => Some(conn.clone()),
                NodeConn::Connecting => None,
            })
            .collect();
        let seeds = self.seeds.clone();
        self.running.push(Box::pin(async move {
            let slots = redis::cmd("CLUSTER").arg("SLOTS").clone();
            for conn in &mut up {
                if let Ok(v) = slots.query_async::<Value>(conn).await {
                    if let Some(t) = Topology::parse(v) {
                        return Op::Topology(Ok(t));
                    }
                }
            }
            let read = async {
                let (mut conn, _) = seeds.connect().await.map_err(|e| e.to_string())?;
                let v: Value = slots
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                Topology::parse(v).ok_or_else(|| "unreadable CLUSTER SLOTS".to_owned())
            };
            Op::Topology(read.await)
        }));
    }

    fn ping_all(&mut self) {
        for (addr, node) in &self.nodes {
            if let NodeConn::Up(conn) = node {
                let (addr, mut conn) = (addr.clone(), conn.clone());
                self.running.push(Box::pin(async move {
                    let r = redis::cmd("PING")
                        .query_async::<Value>(&mut conn)
                        .await
                        .map(|_| ());
                    Op::Ping(addr, r)
                }));
            }
        }
    }

    /// Counts one request; a join is answered at once when its channel is
    /// confirmed already, otherwise when the confirmation arrives.
    fn apply(&mut self, core: &mut Core, request: SubRequest) {
        match request {
            SubRequest::Subscribe(channel, answer) => {
                let first = core.count(&channel);
                let mut s = self.shared.lock().expect("shared lock");
                if first {
                    s.wanted.insert(channel.clone());
                    s.dirty.insert(channel.clone());
                }
                if !s.confirmed.contains_key(&channel) {
                    s.pending.entry(channel).or_default().push(answer);
                    return;
                }
                drop(s);
                if answer.send(Ok(())).is_err() {
                    self.give_back(core, &channel);
                }
            }
            SubRequest::Unsubscribe(channel) => self.give_back(core, &channel),
        }
    }

    /// Takes one subscriber of `channel` back; the last one makes the
    /// channel unwanted.
    fn give_back(&mut self, core: &mut Core, channel: &str) {
        if core.release(channel) {
            let mut s = self.shared.lock().expect("shared lock");
            s.wanted.remove(channel);
            s.gap.remove(channel);
            s.dirty.insert(channel.to_owned());
        }
    }

    /// A command beside the loop ended.
    fn finished(&mut self, core: &mut Core, op: Op) {
        match op {
            Op::Subscribe(channel, result) => {
                self.in_flight.remove(&channel);
                match result {
                    // The confirmation (a push) already did the rest.
                    Ok(()) => {}
                    Err(e)
                        if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved) =>
                    {
                        // The slot moved: read the map, then subscribe there.
                        let mut s = self.shared.lock().expect("shared lock");
                        s.stale = true;
                        s.dirty.insert(channel);
                    }
                    Err(e) => {
                        tracing::warn!(channel, error = %e, "shard channel subscribe failed; retried");
                        let answers = {
                            let mut s = self.shared.lock().expect("shared lock");
                            s.gap.insert(channel.clone());
                            s.stale = true;
                            s.pending.remove(&channel).unwrap_or_default()
                        };
                        for answer in answers {
                            let _ = answer.send(Err(EngineError::Unavailable(format!(
                                "shard channel subscribe failed: {e}"
                            ))));
                            self.give_back(core, &channel);
                        }
                    }
                }
            }
            Op::Unsubscribe(channel, result) => {
                self.in_flight.remove(&channel);
                if let Err(e) = result {
                    tracing::debug!(channel, error = %e, "shard channel unsubscribe failed; retried");
                }
                self.shared
                    .lock()
                    .expect("shared lock")
                    .dirty
                    .insert(channel);
            }
            Op::Connected(addr, Ok(conn)) => {
                self.retry_at.remove(&addr);
                self.nodes.insert(addr.clone(), NodeConn::Up(conn));
                let mut s = self.shared.lock().expect("shared lock");
                let owned: Vec<String> = s
                    .wanted
                    .iter()
                    .filter(|c| !s.confirmed.contains_key(*c))
                    .filter(|c| self.topology.owner(slot(c)) == Some(&addr))
                    .cloned()
                    .collect();
                s.dirty.extend(owned);
            }
            Op::Connected(addr, Err(e)) => {
                tracing::warn!(node = %format!("{}:{}", addr.0, addr.1), error = %e, "sharded pub/sub: connecting to a node failed");
                self.nodes.remove(&addr);
                self.shared.lock().expect("shared lock").stale = true;
            }
            Op::Topology(result) => {
                self.reading_topology = false;
                match result {
                    Ok(topology) => {
                        self.topology = topology;
                        let mut s = self.shared.lock().expect("shared lock");
                        let unconfirmed: Vec<String> = s
                            .wanted
                            .iter()
                            .filter(|c| !s.confirmed.contains_key(*c))
                            .cloned()
                            .collect();
                        s.dirty.extend(unconfirmed);
                        // Connections to nodes that serve no slot any more
                        // (a demoted master) are closed; their channels moved.
                        let masters: HashSet<&Addr> =
                            self.topology.ranges.iter().map(|(_, _, a)| a).collect();
                        let gone: Vec<Addr> = self
                            .nodes
                            .keys()
                            .filter(|a| !masters.contains(a))
                            .cloned()
                            .collect();
                        s.lost.extend(gone);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sharded pub/sub: reading the slot map failed");
                        core.set_state(Err(format!("sharded pub/sub: no slot map: {e}")));
                    }
                }
            }
            Op::Ping(addr, result) => {
                if let Err(e) = result {
                    tracing::warn!(node = %format!("{}:{}", addr.0, addr.1), error = %e, "sharded pub/sub: a node did not answer PING");
                    self.shared.lock().expect("shared lock").lost.insert(addr);
                }
            }
        }
        core.wake.notify_one();
    }
}

/// What [`on_push`] needs: where events go and the shared state.
struct PushTarget {
    keys: super::keys::Keys,
    events: crate::engine::Events,
    owed: Arc<Mutex<super::pubsub::Owed>>,
    wake: Arc<tokio::sync::Notify>,
    shared: Arc<Mutex<Shared>>,
    tail: Option<Arc<Tail>>,
}

/// What one push from node `addr` means. Messages go to the hub's intake;
/// confirmations update [`Shared`]; the loop is woken for the rest.
fn on_push(info: PushInfo, addr: &Addr, to: &PushTarget) {
    let text = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    };
    let channel = text(info.data.first());
    match info.kind {
        PushKind::SMessage => {
            let (Some(channel), Some(payload)) = (channel, text(info.data.get(1))) else {
                return;
            };
            let Some(room) = to.keys.room_of_channel(&channel) else {
                return;
            };
            if let Some(event) = receive(to.tail.as_deref(), room, &payload) {
                intake(&to.events, &to.owed, &to.wake, event);
            }
            return;
        }
        PushKind::SSubscribe => {
            let Some(channel) = channel else { return };
            let mut s = to.shared.lock().expect("shared lock");
            let again = s.confirmed.insert(channel.clone(), addr.clone()).is_some();
            let after_gap = s.gap.remove(&channel);
            if again || after_gap {
                if let Some(room) = to.keys.room_of_channel(&channel) {
                    tracing::debug!(room = %room, "shard channel subscribed again; catching up");
                    owe(&to.owed, room);
                }
            }
            for answer in s.pending.remove(&channel).unwrap_or_default() {
                if answer.send(Ok(())).is_err() {
                    s.gave_up.push(channel.clone());
                }
            }
        }
        PushKind::SUnsubscribe => {
            let Some(channel) = channel else { return };
            let mut s = to.shared.lock().expect("shared lock");
            if s.confirmed.get(&channel) == Some(addr) {
                s.confirmed.remove(&channel);
            }
            if s.wanted.contains(&channel) {
                // Not ours: the slot moved (or the node dropped it).
                tracing::info!(channel, "a node dropped a shard channel (its slot moved); subscribing it on the new owner");
                s.gap.insert(channel.clone());
                s.dirty.insert(channel);
                s.stale = true;
            }
        }
        PushKind::Disconnection => {
            to.shared
                .lock()
                .expect("shared lock")
                .lost
                .insert(addr.clone());
        }
        _ => return,
    }
    to.wake.notify_one();
}

/// Marks `room` owed a catch-up.
fn owe(owed: &Mutex<super::pubsub::Owed>, room: RoomName) {
    owed.lock().expect("owed lock").dropped.insert(room);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineEvent;

    #[test]
    fn slots_follow_the_cluster_specification() {
        // The specification's CRC16 check value, and its hash tag examples.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        // An empty tag does not count: the whole name is hashed (`CLUSTER KEYSLOT`).
        assert_eq!(slot("foo{}{bar}"), 8363);
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
        assert_eq!(slot("chat:{general}:ch"), slot("chat:{general}:meta"));
    }

    fn target() -> (PushTarget, tokio::sync::mpsc::Receiver<EngineEvent>) {
        let (events, mut rx) = crate::engine::Events::channel(1, 8);
        let rx = rx.remove(0);
        let target = PushTarget {
            keys: super::super::keys::Keys::new("chat"),
            events,
            owed: Arc::new(Mutex::new(super::super::pubsub::Owed::default())),
            wake: Arc::new(tokio::sync::Notify::new()),
            shared: Arc::new(Mutex::new(Shared::default())),
            tail: None,
        };
        (target, rx)
    }

    fn push(kind: PushKind, channel: &str, extra: Value) -> PushInfo {
        PushInfo {
            kind,
            data: vec![Value::BulkString(channel.as_bytes().to_vec()), extra],
        }
    }

    fn owed_rooms(to: &PushTarget) -> Vec<String> {
        let owed = to.owed.lock().unwrap();
        owed.dropped.iter().map(|r| r.as_str().to_owned()).collect()
    }

    #[test]
    fn a_channel_dropped_by_its_node_is_subscribed_again_and_caught_up() {
        let (to, _rx) = target();
        let (a, b) = (("127.0.0.1".to_owned(), 1), ("127.0.0.1".to_owned(), 2));
        let ch = "chat:{moving}:ch";
        to.shared.lock().unwrap().wanted.insert(ch.to_owned());
        on_push(push(PushKind::SSubscribe, ch, Value::Int(1)), &a, &to);
        assert!(
            owed_rooms(&to).is_empty(),
            "a first subscription owes nothing"
        );
        // The slot moved: node a drops the channel unasked.
        on_push(push(PushKind::SUnsubscribe, ch, Value::Int(0)), &a, &to);
        {
            let s = to.shared.lock().unwrap();
            assert!(!s.confirmed.contains_key(ch));
            assert!(s.dirty.contains(ch) && s.gap.contains(ch) && s.stale);
        }
        // Confirmed on the new owner: the room is owed its catch-up.
        on_push(push(PushKind::SSubscribe, ch, Value::Int(1)), &b, &to);
        assert_eq!(owed_rooms(&to), ["moving"]);
        assert_eq!(to.shared.lock().unwrap().confirmed.get(ch), Some(&b));
    }

    #[test]
    fn an_unsubscribe_we_asked_for_owes_nothing() {
        let (to, _rx) = target();
        let a = ("127.0.0.1".to_owned(), 1);
        let ch = "chat:{quiet}:ch";
        on_push(push(PushKind::SSubscribe, ch, Value::Int(1)), &a, &to);
        // Not wanted any more: the loop unsubscribed it.
        on_push(push(PushKind::SUnsubscribe, ch, Value::Int(0)), &a, &to);
        let s = to.shared.lock().unwrap();
        assert!(s.confirmed.is_empty() && s.gap.is_empty() && s.dirty.is_empty());
        drop(s);
        assert!(owed_rooms(&to).is_empty());
    }

    #[test]
    fn a_lost_node_takes_its_channels_and_they_are_caught_up_when_back() {
        let (to, _rx) = target();
        let (a, b) = (("127.0.0.1".to_owned(), 1), ("127.0.0.1".to_owned(), 2));
        for (ch, node) in [("chat:{x}:ch", &a), ("chat:{y}:ch", &b)] {
            to.shared.lock().unwrap().wanted.insert(ch.to_owned());
            on_push(push(PushKind::SSubscribe, ch, Value::Int(1)), node, &to);
        }
        on_push(
            PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            },
            &a,
            &to,
        );
        let lost: Vec<Addr> = to.shared.lock().unwrap().lost.iter().cloned().collect();
        assert_eq!(lost, std::slice::from_ref(&a));
        to.shared.lock().unwrap().node_lost(&a);
        {
            let s = to.shared.lock().unwrap();
            assert!(!s.confirmed.contains_key("chat:{x}:ch"));
            assert_eq!(
                s.confirmed.get("chat:{y}:ch"),
                Some(&b),
                "other nodes keep theirs"
            );
        }
        // The promoted replica confirms it.
        let promoted = ("127.0.0.1".to_owned(), 3);
        on_push(
            push(PushKind::SSubscribe, "chat:{x}:ch", Value::Int(1)),
            &promoted,
            &to,
        );
        assert_eq!(owed_rooms(&to), ["x"]);
    }

    #[tokio::test]
    async fn shard_messages_reach_the_intake() {
        let (to, mut rx) = target();
        let a = ("127.0.0.1".to_owned(), 1);
        on_push(
            push(
                PushKind::SMessage,
                "chat:{general}:ch",
                Value::BulkString(b"e ep2".to_vec()),
            ),
            &a,
            &to,
        );
        match rx.recv().await {
            Some(EngineEvent::Epoch { room, epoch }) => {
                assert_eq!((room.as_str(), &*epoch), ("general", "ep2"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cluster_slots_parse_into_owners() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let t = Topology::parse(Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("10.0.0.2", 7001),
            ]),
        ]))
        .unwrap();
        assert_eq!(t.owner(0), Some(&("10.0.0.1".to_owned(), 7000)));
        assert_eq!(t.owner(5461), Some(&("10.0.0.2".to_owned(), 7001)));
        assert!(Topology::parse(Value::Int(1)).is_none());
    }
}
