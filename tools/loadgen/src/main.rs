//! `loadgen`: drives real WebSocket clients against chat instances and
//! prints what they measured. Modes:
//! - `fanout`: R rooms × M members spread over the instance URLs; S members
//!   of each room send at a fixed rate for D seconds after a warm-up. Each
//!   body carries the sender, a per-sender sequence number and the send
//!   instant, so every receiver measures end-to-end latency and counts lost,
//!   duplicated and out-of-order deliveries.
//! - `steady`: a load that rides out faults, for `make chaos`: acked,
//!   delivered, lost, rooms reset, the longest wait for an ack.
//! - `hostile`: honest users while one address runs each abuse pattern
//!   (join/leave toggles, reloads, fresh rooms, blank frames, bad hellos,
//!   `rooms` and replay floods) in turn; honest delivered %, p99 and the
//!   servers' memory, with and without the attacker.
//! - `avalanche`: every receiver on one instance, which is stopped under a
//!   steady load: time until all are back on the other, delivered %,
//!   replay p99, the survivor's peak CPU.
//! - `idle`: holds C connections joined to rooms and reports the servers'
//!   resident memory per connection (read from `/proc/<pid>/status`).
//! - `joinburst`: C clients connect, say hello and join at once, spread
//!   over the instances and R rooms; p50/p99/max of the join (`join` sent →
//!   `joined` read) and of the whole sign-in (connect → `joined`).
//!
//! Prints a table for people and, with `--json`, one JSON line for machines.

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use protocol::{ClientFrame, ServerFrame, Since};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod avalanche;
mod churn;
mod hostile;
mod progress;
mod steady;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Load generator for the chat")]
struct Cli {
    /// WebSocket URLs of the instances (ws://host:port/ws); clients are
    /// spread over them round-robin.
    #[arg(long, value_delimiter = ',', required = true)]
    urls: Vec<String>,
    /// Print one JSON line with the figures after the table.
    #[arg(long)]
    json: bool,
    /// Label of this run in the output.
    #[arg(long, default_value = "run")]
    label: String,
    /// Spread client sockets over this many source addresses 127.0.0.1,
    /// 127.0.0.2, … (ws:// to a loopback server only). Each source address
    /// has its own ~28k ephemeral ports per server address, so use it when
    /// one runs short (tens of thousands of connections).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    source_ips: u8,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Fixed-rate fan-out: latency, loss, duplicates, order.
    Fanout {
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 20)]
        members: usize,
        /// Senders per room (the first S members of each room).
        #[arg(long, default_value_t = 2)]
        senders: usize,
        /// Messages per second per sender.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Seconds of traffic before measuring.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Server processes whose CPU (utime + stime) over the measured
        /// seconds is reported, per delivery.
        #[arg(long, value_delimiter = ',')]
        pids: Vec<u32>,
        /// Every sender sends at the same instant of each period (a burst
        /// of all rooms' deliveries at once), instead of at its own phase
        /// (independent users: the deliveries spread over the period).
        #[arg(long)]
        aligned: bool,
    },
    /// Raise the per-sender rate step by step (fresh rooms each step);
    /// report the highest step with zero loss and p99 under the bound.
    Saturation(SaturationArgs),
    /// Every receiver on the first instance, which is then stopped
    /// (SIGTERM) under a steady load: time until all are back on the
    /// second, delivered %, replay p99, the survivor's peak CPU.
    Avalanche(avalanche::AvalancheArgs),
    /// Every receiver is force-closed and reconnects with `since` about every
    /// `every` seconds while senders keep sending: delivered %, duplicates,
    /// and how long the replay (reconnect → `joined`) takes.
    Churn(churn::ChurnArgs),
    /// A load that rides out faults (`make chaos`): senders resend until
    /// acked, receivers reconnect with `since`; acked, delivered, lost,
    /// rooms reset, longest wait for an ack.
    Steady(steady::SteadyArgs),
    /// Honest users at a steady rate while one address runs each abuse
    /// pattern in turn: honest delivered % and p99 with and without the
    /// attacker, and the servers' memory before, during and after.
    Hostile(hostile::HostileArgs),
    /// One abuse pattern from one address (what `hostile` runs in a child
    /// process); prints its tally as JSON.
    #[command(hide = true)]
    Attack(hostile::AttackArgs),
    /// C clients connect and join at the same moment: join latency
    /// percentiles.
    Joinburst {
        #[arg(long, default_value_t = 5000)]
        connections: usize,
        #[arg(long, default_value_t = 500)]
        rooms: usize,
    },
    /// Hold connections and report server memory per connection.
    Idle {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        /// PIDs of the server processes whose RSS is read.
        #[arg(long, value_delimiter = ',', required = true)]
        pids: Vec<u32>,
        /// Seconds to hold the connections before reading memory.
        #[arg(long, default_value_t = 3)]
        settle: u64,
    },
}

/// The `saturation` mode's settings.
#[derive(Debug, Clone, Copy, clap::Args)]
struct SaturationArgs {
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    #[arg(long, default_value_t = 10)]
    members: usize,
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Rate of the first step, messages per second per sender.
    #[arg(long, default_value_t = 1.0)]
    start_rate: f64,
    /// Each step multiplies the rate by this.
    #[arg(long, default_value_t = 2.0)]
    factor: f64,
    #[arg(long, default_value_t = 8)]
    max_steps: usize,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 5)]
    step_duration: u64,
    /// A step passes only with p99 latency under this, in ms.
    #[arg(long, default_value_t = 100.0)]
    p99_bound_ms: f64,
    /// After the first failing step, this many bisection steps between
    /// the last passing rate and the failing one.
    #[arg(long, default_value_t = 2)]
    refine: usize,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

async fn send(ws: &mut Ws, frame: &ClientFrame) -> anyhow::Result<()> {
    ws.send(Message::Text(frame.to_json().into())).await?;
    Ok(())
}

async fn recv(ws: &mut Ws) -> anyhow::Result<ServerFrame> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(ServerFrame::from_json(&t)?),
            Some(Ok(Message::Close(c))) => bail!("closed by the server: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Opens a WebSocket with Nagle's algorithm off, as browsers do: a small
/// frame is sent at once, not held back for an earlier one's ACK. The read
/// buffer is small: tungstenite zero-fills the free part of it before every
/// read, and at its 128 KiB default that memset was 30 % of this program's
/// CPU in a fan-out run (perf), time taken from the servers it measures.
async fn open(url: &str) -> anyhow::Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(1024);
    let sources = SOURCE_IPS.get().copied().unwrap_or(1);
    if sources == 1 {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        return Ok(ws);
    }
    // Round-robin over 127.0.0.1..=127.0.0.N as the source address.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % u64::from(sources);
    open_from(url, std::net::Ipv4Addr::new(127, 0, 0, 1 + n as u8)).await
}

/// [`open`] from the loopback source address `source`.
async fn open_from(url: &str, source: std::net::Ipv4Addr) -> anyhow::Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(1024);
    let target = loopback_target(url)?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let stream = socket
        .connect(target)
        .await
        .with_context(|| format!("connecting to {url} from {source}"))?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .with_context(|| format!("upgrading {url}"))?;
    Ok(ws)
}

/// How many source addresses [`open`] spreads sockets over (`--source-ips`).
static SOURCE_IPS: std::sync::OnceLock<u8> = std::sync::OnceLock::new();

/// The socket address of a `ws://` URL to a loopback server.
fn loopback_target(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .with_context(|| format!("--source-ips needs ws:// URLs, not {url}"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr: std::net::SocketAddr = authority
        .parse()
        .with_context(|| format!("--source-ips needs an IP:port in {url}"))?;
    if !addr.ip().is_loopback() {
        bail!("--source-ips spreads over 127.0.0.x: {url} is not a loopback server");
    }
    Ok(addr)
}

/// Connects, says hello and joins `room`; returns the socket.
async fn client(url: &str, name: &str, room: &str) -> anyhow::Result<Ws> {
    let mut ws = open(url).await?;
    send(
        &mut ws,
        &ClientFrame::Hello {
            name: name.to_owned(),
            token: None,
        },
    )
    .await?;
    match recv(&mut ws).await? {
        ServerFrame::Welcome { .. } => {}
        other => bail!("expected welcome, got {other:?}"),
    }
    send(
        &mut ws,
        &ClientFrame::Join {
            room: room.to_owned(),
            since: None,
        },
    )
    .await?;
    loop {
        match recv(&mut ws).await? {
            ServerFrame::Joined { .. } => return Ok(ws),
            ServerFrame::Presence { .. } => {}
            other => bail!("expected joined, got {other:?}"),
        }
    }
}

/// What one receiver saw over all its connections (`churn`, `steady`).
#[derive(Default)]
pub(crate) struct Seen {
    /// Sequence numbers seen, per sender.
    pub(crate) by_sender: HashMap<u32, HashSet<u64>>,
    pub(crate) duplicates: u64,
    /// Reconnect → `joined`, per re-join.
    pub(crate) replays_us: Vec<u64>,
    /// Re-joins with `since`, and those answered `recovered: false`.
    pub(crate) reconnects: u64,
    pub(crate) resets: u64,
}

impl Seen {
    /// Counts a load message; a second sight of it is a duplicate.
    pub(crate) fn take(&mut self, body: &str) {
        if let Some((sender, seq, _)) = parse_body(body) {
            if !self.by_sender.entry(sender).or_default().insert(seq) {
                self.duplicates += 1;
            }
        }
    }

    /// A message of a history that replaces the client's view (an
    /// unrecovered join, the room was reset): not a duplicate delivery.
    fn take_again(&mut self, body: &str) {
        if let Some((sender, seq, _)) = parse_body(body) {
            self.by_sender.entry(sender).or_default().insert(seq);
        }
    }
}

/// Connects with `token`, says hello and joins `room` from `since`, as a
/// reconnecting client does; takes the `joined` history (and messages that
/// came before it) into `seen`, counting a re-join answered
/// `recovered: false` as a reset. Returns the socket, the new token and
/// where the client stands.
pub(crate) async fn rejoin(
    url: &str,
    name: &str,
    token: Option<String>,
    room: &str,
    since: Option<Since>,
    seen: &mut Seen,
) -> anyhow::Result<(Ws, String, Since)> {
    let mut ws = tokio::time::timeout(Duration::from_secs(5), open(url)).await??;
    send(
        &mut ws,
        &ClientFrame::Hello {
            name: name.to_owned(),
            token,
        },
    )
    .await?;
    let token = match recv(&mut ws).await? {
        ServerFrame::Welcome { token, .. } => token,
        other => bail!("expected welcome, got {other:?}"),
    };
    let rejoining = since.is_some();
    send(
        &mut ws,
        &ClientFrame::Join {
            room: room.to_owned(),
            since,
        },
    )
    .await?;
    let joined = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match recv(&mut ws).await? {
                joined @ ServerFrame::Joined { .. } => return anyhow::Ok(joined),
                ServerFrame::Presence { .. } | ServerFrame::Typing { .. } => {}
                ServerFrame::Message(m) => seen.take(&m.body),
                other => bail!("expected joined, got {other:?}"),
            }
        }
    })
    .await??;
    let ServerFrame::Joined {
        epoch,
        offset,
        history,
        recovered,
        ..
    } = joined
    else {
        unreachable!("the loop returns joined only")
    };
    if rejoining && !recovered {
        seen.resets += 1;
    }
    let mut last = offset;
    for m in history {
        if recovered || !rejoining {
            seen.take(&m.body);
        } else {
            seen.take_again(&m.body);
        }
        last = last.max(m.offset);
    }
    Ok((
        ws,
        token,
        Since {
            epoch,
            offset: last,
        },
    ))
}

/// Sends load messages (`ld <me> <seq> <sent_us>`, client id `<me>-<seq>`)
/// to `room` at `rate` per second until `stop_at`; returns how many it sent.
pub(crate) async fn send_load<S>(
    tx: &mut S,
    room: &str,
    me: u32,
    rate: f64,
    phase: Duration,
    stop_at: Instant,
    sent: &AtomicU64,
) -> u64
where
    S: futures_util::Sink<Message> + Unpin,
{
    send_load_until(
        tx,
        room,
        me,
        rate,
        phase,
        || Instant::now() >= stop_at,
        sent,
    )
    .await
}

/// [`send_load`] until `stop()` answers true. The first message goes
/// `phase` from now, then one every `1 / rate` seconds.
pub(crate) async fn send_load_until<S>(
    tx: &mut S,
    room: &str,
    me: u32,
    rate: f64,
    phase: Duration,
    stop: impl Fn() -> bool,
    sent: &AtomicU64,
) -> u64
where
    S: futures_util::Sink<Message> + Unpin,
{
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval_at((Instant::now() + phase).into(), period);
    let mut seq = 0u64;
    while !stop() {
        tick.tick().await;
        seq += 1;
        let frame = ClientFrame::Send {
            room: room.to_owned(),
            id: format!("{me}-{seq}"),
            body: format!("ld {me} {seq} {}", now_us()),
        };
        if tx
            .send(Message::Text(frame.to_json().into()))
            .await
            .is_err()
        {
            break;
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    seq
}

/// When sender `k` of `n` first sends, in a period of `1 / rate` seconds:
/// spread evenly over the period, as independent users would send (their
/// deliveries then arrive at a steady rate), or all at once when
/// `aligned` (every period starts with a burst of every room's messages).
fn phase(k: usize, n: usize, rate: f64, aligned: bool) -> Duration {
    if aligned || n == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(k as f64 / n as f64 / rate)
}

/// What one receiver counted.
#[derive(Default)]
struct Tally {
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Highest sequence seen per sender.
    last: HashMap<u32, u64>,
    latencies_us: Vec<u64>,
}

/// The load body of a `message` frame, read without building the whole
/// frame: the receivers of a fan-out share the cores with the servers, so
/// they parse only what they measure.
fn load_body(text: &str) -> Option<(u32, u64, u64)> {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(borrow, default)]
        body: Option<std::borrow::Cow<'a, str>>,
    }
    let probe: Probe<'_> = serde_json::from_str(text).ok()?;
    if probe.kind != "message" {
        return None;
    }
    parse_body(&probe.body?)
}

/// Parses a load body: `ld <sender> <seq> <sent_us>`.
fn parse_body(body: &str) -> Option<(u32, u64, u64)> {
    let mut it = body.strip_prefix("ld ")?.split(' ');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

/// One fixed-rate fan-out run.
#[derive(Debug, Clone)]
struct FanoutSpec {
    rooms: usize,
    members: usize,
    senders: usize,
    rate: f64,
    duration: u64,
    warmup: u64,
    /// Room names are `<prefix>-<n>`: a fresh prefix gives rooms without history.
    prefix: String,
    /// Server processes whose CPU is measured (none: not measured).
    pids: Vec<u32>,
    /// Every sender at the same instant of the period (see [`phase`]).
    aligned: bool,
}

async fn fanout(urls: &[String], spec: &FanoutSpec) -> anyhow::Result<serde_json::Value> {
    let FanoutSpec {
        rooms,
        members,
        senders,
        rate,
        duration,
        warmup,
        ref prefix,
        aligned,
        ..
    } = *spec;
    if senders > members || rate <= 0.0 {
        bail!("need senders <= members and a positive rate");
    }
    let total = rooms * members;
    eprintln!("connecting {total} clients to {} instance(s)…", urls.len());
    let mut sockets = Vec::with_capacity(total);
    for i in 0..total {
        let room = format!("{prefix}-{}", i / members);
        let url = &urls[i % urls.len()];
        sockets.push((i, room.clone(), client(url, &format!("c{i}"), &room).await?));
        if (i + 1) % 500 == 0 {
            eprintln!("  {} connected", i + 1);
        }
    }
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let tallies: Arc<Mutex<Vec<Tally>>> = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + Duration::from_secs(warmup + duration);
    let received = Arc::new(AtomicU64::new(0));
    let progress = progress::start(
        warmup + duration + 3,
        vec![("sent", sent.clone()), ("delivered", received.clone())],
    );
    let mut tasks = Vec::new();
    for (i, room, ws) in sockets {
        let (mut tx, mut rx) = ws.split();
        let is_sender = i % members < senders;
        let tallies = tallies.clone();
        let measuring = measuring.clone();
        let received = received.clone();
        // Reader: counts every load message until the drain after the end.
        let reader = tokio::spawn(async move {
            let mut t = Tally::default();
            // One timer for the whole run: a timeout per message would add
            // and remove a timer entry for every delivery.
            let drained = tokio::time::sleep_until((stop_at + Duration::from_secs(3)).into());
            tokio::pin!(drained);
            loop {
                let msg = tokio::select! {
                    biased;
                    msg = rx.next() => match msg {
                        Some(msg) => msg,
                        None => break,
                    },
                    () = &mut drained => break,
                };
                let Ok(Message::Text(text)) = msg else {
                    continue;
                };
                let Some((sender, seq, sent_us)) = load_body(&text) else {
                    continue;
                };
                let last = t.last.entry(sender).or_insert(0);
                if seq <= *last {
                    if seq == *last {
                        t.duplicates += 1;
                    } else {
                        t.out_of_order += 1;
                    }
                    continue;
                }
                *last = seq;
                t.delivered += 1;
                received.fetch_add(1, Ordering::Relaxed);
                if measuring.load(Ordering::Relaxed) {
                    t.latencies_us.push(now_us().saturating_sub(sent_us));
                }
            }
            tallies.lock().expect("tallies").push(t);
        });
        if is_sender {
            let sent = sent.clone();
            let room = room.clone();
            let me = i as u32;
            // The k-th of the run's senders.
            let k = (i / members) * senders + i % members;
            let phase = phase(k, rooms * senders, rate, aligned);
            tasks.push(tokio::spawn(async move {
                (
                    me,
                    send_load(&mut tx, &room, me, rate, phase, stop_at, &sent).await,
                )
            }));
        }
        tasks.push(tokio::spawn(async move {
            let _ = reader.await;
            (u32::MAX, 0)
        }));
    }
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    // What a script times its own counters by (make profile-delivery).
    eprintln!("measuring for {duration} s");
    let started = Instant::now();
    // The servers' CPU over exactly the measured seconds.
    let cpu = {
        let pids = spec.pids.clone();
        let before = cpu_seconds(&pids)?;
        tokio::spawn(async move {
            tokio::time::sleep_until(stop_at.into()).await;
            cpu_seconds(&pids).map(|after| after - before)
        })
    };
    let mut sent_per_sender: HashMap<u32, u64> = HashMap::new();
    for t in tasks {
        let (me, seq) = t.await?;
        if me != u32::MAX {
            sent_per_sender.insert(me, seq);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.finish();
    let tallies = std::mem::take(&mut *tallies.lock().expect("tallies"));
    let expected: u64 = sent_per_sender.values().sum::<u64>() * members as u64;
    let delivered: u64 = tallies.iter().map(|t| t.delivered).sum();
    let duplicates: u64 = tallies.iter().map(|t| t.duplicates).sum();
    let out_of_order: u64 = tallies.iter().map(|t| t.out_of_order).sum();
    let mut lat: Vec<u64> = tallies.into_iter().flat_map(|t| t.latencies_us).collect();
    lat.sort_unstable();
    let measured_rate = lat.len() as f64 / (duration as f64);
    let cpu_s = cpu.await??;
    let server_cpu = (!spec.pids.is_empty()).then(|| {
        serde_json::json!({
            "cpu_s": cpu_s,
            "us_per_delivery": cpu_s * 1e6 / (measured_rate * duration as f64).max(1.0),
        })
    });
    Ok(serde_json::json!({
        "mode": "fanout",
        "rooms": rooms, "members": members, "senders": senders, "rate": rate,
        "duration_s": duration, "instances": urls.len(),
        "sent": sent.load(Ordering::Relaxed),
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "deliveries_per_s": measured_rate,
        "latency_ms": {
            "p50": percentile(&lat, 0.50), "p90": percentile(&lat, 0.90),
            "p99": percentile(&lat, 0.99), "max": percentile(&lat, 1.0),
        },
        "elapsed_s": elapsed,
        "server_cpu": server_cpu,
    }))
}

async fn saturation(urls: &[String], args: &SaturationArgs) -> anyhow::Result<serde_json::Value> {
    let SaturationArgs {
        rooms,
        members,
        senders,
        start_rate,
        factor,
        max_steps,
        step_duration,
        p99_bound_ms,
        refine,
    } = *args;
    let mut steps = Vec::new();
    let run_id = now_us() % 1_000_000;
    // Runs one step; records it; returns the run when it passed.
    let mut step = async |rate: f64| -> anyhow::Result<Option<serde_json::Value>> {
        let n = steps.len();
        let spec = FanoutSpec {
            rooms,
            members,
            senders,
            rate,
            duration: step_duration,
            warmup: 1,
            prefix: format!("sat{run_id}-{n}"),
            pids: Vec::new(),
            aligned: false,
        };
        eprintln!("saturation step {n}: {rate:.1} msg/s per sender");
        let r = fanout(urls, &spec).await?;
        let p99 = r["latency_ms"]["p99"].as_f64().unwrap_or(f64::MAX);
        let clean = r["lost"] == 0 && r["duplicates"] == 0 && r["out_of_order"] == 0;
        let passed = clean && p99 < p99_bound_ms;
        steps.push(serde_json::json!({
            "rate": rate, "passed": passed, "p99_ms": p99,
            "deliveries_per_s": r["deliveries_per_s"], "lost": r["lost"],
        }));
        Ok(passed.then_some(r))
    };
    let mut best: Option<(f64, serde_json::Value)> = None;
    let mut failed_at = None;
    let mut rate = start_rate;
    for _ in 0..max_steps {
        match step(rate).await? {
            Some(r) => best = Some((rate, r)),
            None => {
                failed_at = Some(rate);
                break;
            }
        }
        rate *= factor;
    }
    // Bisect between the last rate that passed and the one that failed.
    if let (Some(mut low), Some(mut high)) = (best.as_ref().map(|b| b.0), failed_at) {
        for _ in 0..refine {
            let mid = ((low + high) / 2.0).round();
            if mid <= low || mid >= high {
                break;
            }
            match step(mid).await? {
                Some(r) => {
                    best = Some((mid, r));
                    low = mid;
                }
                None => high = mid,
            }
        }
    }
    let best = best.map(|b| b.1);
    Ok(serde_json::json!({
        "mode": "saturation", "rooms": rooms, "members": members, "senders": senders,
        "p99_bound_ms": p99_bound_ms,
        "best_rate_per_sender": best.as_ref().map(|b| b["rate"].clone()),
        "best_deliveries_per_s": best.as_ref().map(|b| b["deliveries_per_s"].clone()),
        "best_latency_ms": best.as_ref().map(|b| b["latency_ms"].clone()),
        "steps": steps,
    }))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

async fn idle(
    urls: &[String],
    connections: usize,
    rooms: usize,
    pids: &[u32],
    settle: u64,
) -> anyhow::Result<serde_json::Value> {
    let rss = |pids: &[u32]| -> anyhow::Result<u64> { pids.iter().map(|p| rss_kib(*p)).sum() };
    let before = rss(pids)?;
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        let url = &urls[i % urls.len()];
        let room = format!("idle-{}", i % rooms.max(1));
        let ws = client(url, &format!("i{i}"), &room).await?;
        // Keep reading (answering pings) without holding the sockets' buffers.
        held.push(tokio::spawn(async move {
            let (_tx, mut rx) = ws.split();
            while let Some(Ok(_)) = rx.next().await {}
        }));
        if (i + 1) % 1000 == 0 {
            eprintln!("  {} connected", i + 1);
        }
    }
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let after = rss(pids)?;
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / connections as f64;
    for h in held {
        h.abort();
    }
    Ok(serde_json::json!({
        "mode": "idle", "connections": connections, "rooms": rooms,
        "rss_before_kib": before, "rss_after_kib": after,
        "bytes_per_connection": per_conn,
    }))
}

/// `joinburst`: every client starts at once (all tasks are spawned, then
/// released together by one barrier); each connects, says hello, then
/// sends `join` and reads until `joined`. Times are per client, in ms.
async fn join_burst(
    urls: &[String],
    connections: usize,
    rooms: usize,
) -> anyhow::Result<serde_json::Value> {
    let start = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let url = urls[i % urls.len()].clone();
        let room = format!("burst-{}", i % rooms.max(1));
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let began = Instant::now();
            let mut ws = open(&url).await?;
            send(
                &mut ws,
                &ClientFrame::Hello {
                    name: format!("b{i}"),
                    token: None,
                },
            )
            .await?;
            match recv(&mut ws).await? {
                ServerFrame::Welcome { .. } => {}
                other => bail!("expected welcome, got {other:?}"),
            }
            let asked = Instant::now();
            send(&mut ws, &ClientFrame::Join { room, since: None }).await?;
            loop {
                match recv(&mut ws).await? {
                    ServerFrame::Joined { .. } => break,
                    ServerFrame::Presence { .. } => {}
                    other => bail!("expected joined, got {other:?}"),
                }
            }
            let done = Instant::now();
            anyhow::Ok((
                ws,
                (done - asked).as_micros() as u64,
                (done - began).as_micros() as u64,
            ))
        }));
    }
    let began = Instant::now();
    start.wait().await;
    let (mut join, mut whole, mut held, mut failed) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for task in tasks {
        match task.await? {
            Ok((ws, j, w)) => {
                join.push(j);
                whole.push(w);
                held.push(ws);
            }
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("  a client failed: {e:#}");
                }
            }
        }
    }
    let all_in = began.elapsed();
    join.sort_unstable();
    whole.sort_unstable();
    drop(held);
    Ok(serde_json::json!({
        "mode": "joinburst", "connections": connections, "rooms": rooms,
        "joined": join.len(), "failed": failed,
        "all_joined_s": all_in.as_secs_f64(),
        "join_ms": {
            "p50": percentile(&join, 0.50), "p99": percentile(&join, 0.99), "max": percentile(&join, 1.0),
        },
        "connect_to_joined_ms": {
            "p50": percentile(&whole, 0.50), "p99": percentile(&whole, 0.99), "max": percentile(&whole, 1.0),
        },
    }))
}

/// Clock ticks per second of `/proc/<pid>/stat`'s utime and stime
/// (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub(crate) const CLK_TCK: f64 = 100.0;

/// utime + stime of `pid`, in clock ticks (`/proc/<pid>/stat` fields 14
/// and 15, counted after the command name's closing parenthesis).
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no command name in stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": field 3 (state) is index 0, so utime (14) is index 11.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// The summed CPU of `pids`, in seconds.
fn cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    let mut ticks = 0;
    for &pid in pids {
        ticks += cpu_ticks(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
    }
    Ok(ticks as f64 / CLK_TCK)
}

fn print_table(label: &str, v: &serde_json::Value) {
    println!("── {label} ──");
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            println!("{k:>22}  {val}");
        }
    }
}

fn main() -> anyhow::Result<()> {
    // Errors are part of a load (refused frames, closed sockets, the
    // `hostile` mode's attacker): with RUST_BACKTRACE set, anyhow would
    // capture a backtrace for each, and the unwinder's global lock stalled
    // this program's readers by tens of ms (perf: `_Unwind_Find_FDE`),
    // which showed up as the servers' latency. Set before any thread runs.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    SOURCE_IPS.set(cli.source_ips).expect("set once");
    let result = match cli.mode {
        Mode::Fanout {
            rooms,
            members,
            senders,
            rate,
            duration,
            warmup,
            pids,
            aligned,
        } => {
            let spec = FanoutSpec {
                rooms,
                members,
                senders,
                rate,
                duration,
                warmup,
                prefix: format!("load{}", now_us() % 1_000_000),
                pids,
                aligned,
            };
            fanout(&cli.urls, &spec).await?
        }
        Mode::Saturation(args) => saturation(&cli.urls, &args).await?,
        Mode::Avalanche(args) => avalanche::run(&cli.urls, &args).await?,
        Mode::Churn(args) => churn::run(&cli.urls, &args).await?,
        Mode::Steady(args) => steady::run(&cli.urls, &args).await?,
        Mode::Hostile(args) => hostile::run(&cli.urls, cli.source_ips, &args).await?,
        Mode::Attack(args) => {
            // Only the tally, on stdout: the parent reads it.
            println!("{}", hostile::attack_for(&cli.urls, &args).await?);
            return Ok(());
        }
        Mode::Idle {
            connections,
            rooms,
            pids,
            settle,
        } => idle(&cli.urls, connections, rooms, &pids, settle).await?,
        Mode::Joinburst { connections, rooms } => join_burst(&cli.urls, connections, rooms).await?,
    };
    print_table(&cli.label, &result);
    if cli.json {
        let mut line = result;
        line["label"] = serde_json::Value::String(cli.label);
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_need_a_loopback_ws_url_with_an_ip() {
        assert_eq!(
            loopback_target("ws://127.0.0.1:3001/ws").unwrap(),
            "127.0.0.1:3001".parse().unwrap()
        );
        assert!(loopback_target("wss://127.0.0.1:3001/ws").is_err());
        assert!(loopback_target("ws://localhost:3001/ws").is_err());
        assert!(loopback_target("ws://10.0.0.1:3001/ws").is_err());
    }
}
