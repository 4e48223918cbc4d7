//! `hostile`: what one abusive address costs everyone else. Honest users
//! (spread over `--source-ips` addresses) sit in rooms and send at a steady
//! rate through a baseline phase, an attack and a recovery phase; the
//! attacker, from its own address, runs each abuse pattern in turn for one
//! phase each. Every load message carries its send instant, so honest
//! delivery and latency are counted per phase; the servers' resident
//! memory is read before, at the end of, and after the attack.

use super::{client, now_us, open_from, percentile, recv, rss_kib, send, Ws};
use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use protocol::{ClientFrame, ErrorCode, ServerFrame, Since};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HostileArgs {
    /// Honest users (one connection each).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Rooms the honest users are spread over.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Messages per second of each honest user.
    #[arg(long, default_value_t = 0.2)]
    rate: f64,
    /// Seconds of each phase: the baseline, each attack pattern, the
    /// recovery.
    #[arg(long, default_value_t = 10)]
    phase: u64,
    /// The attacker's source address (loopback, not one of the honest
    /// `--source-ips` addresses 127.0.0.1..N).
    #[arg(long, default_value = "127.0.0.250")]
    attacker_ip: Ipv4Addr,
    /// Sockets the attacker runs each pattern on at once.
    #[arg(long, default_value_t = 20)]
    attacker_sockets: usize,
    /// Seconds after the recovery phase before memory is read again (the
    /// servers forget idle buckets and rooms meanwhile).
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Times the whole list of patterns runs: the servers' memory is read
    /// after each round, so a second round that ends where the first did
    /// shows memory flat (the first one's growth is the allocator keeping
    /// what it was given, not a leak).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// The abuse patterns to run, in order (default: every one).
    #[arg(long, value_delimiter = ',', default_values_t = PATTERNS.iter().map(|p| p.to_string()))]
    patterns: Vec<String>,
    /// PIDs of the server processes whose resident memory is read.
    #[arg(long, value_delimiter = ',', required = true)]
    pids: Vec<u32>,
}

/// The abuse patterns, in the order they run (issue 17's inputs and the
/// costs they are answered with).
const PATTERNS: &[&str] = &[
    "toggle",      // join/leave of an honest room as fast as answered
    "reload",      // close, reconnect with the same token, re-join
    "fresh_rooms", // join and leave rooms with new names
    "blank",       // blank bodies (U+2800, zero-width spaces) and names
    "bad_hello",   // hello with a lone surrogate in the name
    "rooms",       // the rooms list as fast as answered
    "replay",      // re-join from offset 0 and scroll back, for big replies
];

/// What the attacker did and got in one pattern.
#[derive(Default)]
struct Attack {
    frames: AtomicU64,
    rate_limited: AtomicU64,
    other_errors: AtomicU64,
    connections: AtomicU64,
}

/// Per phase: deliveries and latencies seen by honest readers, sends by
/// honest senders.
struct Phases {
    /// Start of each phase (µs since the Unix epoch); the last entry is
    /// the end of the last phase.
    bounds: Vec<u64>,
    delivered: Vec<AtomicU64>,
    /// Sent in the phase, times the members of the sender's room.
    expected: Vec<AtomicU64>,
    latencies_us: Mutex<Vec<Vec<u64>>>,
}

impl Phases {
    fn of(&self, at_us: u64) -> Option<usize> {
        (0..self.bounds.len() - 1).find(|&i| at_us >= self.bounds[i] && at_us < self.bounds[i + 1])
    }
}

pub(crate) async fn run(
    urls: &[String],
    source_ips: u8,
    args: &HostileArgs,
) -> anyhow::Result<serde_json::Value> {
    if args.attacker_ip.octets()[3] <= source_ips && args.attacker_ip.octets()[..3] == [127, 0, 0] {
        bail!("--attacker-ip must not be one of the honest --source-ips addresses");
    }
    if args.users < args.rooms || args.rate <= 0.0 {
        bail!("need at least one user per room and a positive rate");
    }
    let members = args.users / args.rooms;
    eprintln!(
        "connecting {} honest users in {} rooms…",
        members * args.rooms,
        args.rooms
    );
    let mut sockets = Vec::new();
    for i in 0..members * args.rooms {
        let room = format!("h-{}", i % args.rooms);
        let url = &urls[i % urls.len()];
        sockets.push((
            i,
            room.clone(),
            client(url, &format!("honest{i}"), &room).await?,
        ));
    }
    // warm-up, baseline, one phase per pattern, recovery
    let warmup = 2_000_000u64;
    let phase_us = args.phase * 1_000_000;
    let start = now_us() + warmup;
    for p in &args.patterns {
        if !PATTERNS.contains(&p.as_str()) {
            bail!("unknown pattern {p:?}; known: {}", PATTERNS.join(", "));
        }
    }
    let patterns: Vec<String> = (0..args.rounds.max(1))
        .flat_map(|_| args.patterns.iter().cloned())
        .collect();
    let per_round = args.patterns.len();
    let n_phases = 2 + patterns.len();
    let bounds: Vec<u64> = (0..=n_phases as u64)
        .map(|k| start + k * phase_us)
        .collect();
    let stop_at = Instant::now() + Duration::from_micros(warmup + n_phases as u64 * phase_us);
    let phases = Arc::new(Phases {
        bounds,
        delivered: (0..n_phases).map(|_| AtomicU64::new(0)).collect(),
        expected: (0..n_phases).map(|_| AtomicU64::new(0)).collect(),
        latencies_us: Mutex::new(vec![Vec::new(); n_phases]),
    });
    let closed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, room, ws) in sockets {
        let (mut tx, mut rx) = ws.split();
        let phases_r = phases.clone();
        let closed = closed.clone();
        tasks.push(tokio::spawn(async move {
            let drained = tokio::time::sleep_until((stop_at + Duration::from_secs(3)).into());
            tokio::pin!(drained);
            let mut lat: Vec<Vec<u64>> = vec![Vec::new(); phases_r.delivered.len()];
            loop {
                let msg = tokio::select! {
                    biased;
                    msg = rx.next() => msg,
                    () = &mut drained => break,
                };
                let Some(Ok(msg)) = msg else {
                    closed.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                let Message::Text(text) = msg else { continue };
                let Some((_, _, sent_us)) = super::load_body(&text) else {
                    continue;
                };
                if let Some(k) = phases_r.of(sent_us) {
                    phases_r.delivered[k].fetch_add(1, Ordering::Relaxed);
                    lat[k].push(now_us().saturating_sub(sent_us));
                }
            }
            let mut all = phases_r.latencies_us.lock().expect("latencies");
            for (k, l) in lat.into_iter().enumerate() {
                all[k].extend(l);
            }
        }));
        let phases_s = phases.clone();
        let rate = args.rate;
        tasks.push(tokio::spawn(async move {
            // Spread the senders' first sends over one period.
            let period = Duration::from_secs_f64(1.0 / rate);
            tokio::time::sleep(period.mul_f64((i % 1000) as f64 / 1000.0)).await;
            let mut tick = tokio::time::interval(period);
            let mut seq = 0u64;
            while Instant::now() < stop_at {
                tick.tick().await;
                seq += 1;
                let sent_us = now_us();
                let frame = ClientFrame::Send {
                    room: room.clone(),
                    id: format!("{i}-{seq}"),
                    body: format!("ld {i} {seq} {sent_us}"),
                };
                if tx
                    .send(Message::Text(frame.to_json().into()))
                    .await
                    .is_err()
                {
                    break;
                }
                if let Some(k) = phases_s.of(sent_us) {
                    phases_s.expected[k].fetch_add(members as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    let rss = |pids: &[u32]| -> anyhow::Result<u64> { pids.iter().map(|p| rss_kib(*p)).sum() };
    let wait_until = |us: u64| {
        let now = now_us();
        tokio::time::sleep(Duration::from_micros(us.saturating_sub(now)))
    };

    wait_until(phases.bounds[1]).await;
    let rss_before = rss(&args.pids)?;
    let mut attacks = Vec::new();
    let exe = std::env::current_exe()?;
    let mut rss_rounds = Vec::new();
    for (k, pattern) in patterns.iter().enumerate() {
        eprintln!("attack: {pattern}");
        let millis = phases.bounds[k + 2].saturating_sub(now_us()) / 1000;
        // The attacker is its own process, as it would be its own machine:
        // its syscalls (binding and connecting thousands of sockets from
        // one address, with ports in TIME_WAIT) must not stall the honest
        // clients' readers, which would show up as the servers' latency.
        let out = tokio::process::Command::new(&exe)
            .arg("--urls")
            .arg(urls.join(","))
            .arg("attack")
            .arg("--pattern")
            .arg(pattern)
            .arg("--millis")
            .arg(millis.to_string())
            .arg("--ip")
            .arg(args.attacker_ip.to_string())
            .arg("--sockets")
            .arg(args.attacker_sockets.to_string())
            .arg("--rooms")
            .arg(args.rooms.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .await?;
        if !out.status.success() {
            bail!("the attacker process failed: {}", out.status);
        }
        let mut tally: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        tally["round"] = (k / per_round + 1).into();
        attacks.push(tally);
        if (k + 1) % per_round == 0 {
            rss_rounds.push(rss(&args.pids)?);
        }
    }
    let rss_attack_end = rss(&args.pids)?;
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let rss_after = rss(&args.pids)?;

    let summary = |ks: std::ops::Range<usize>| {
        let expected: u64 = ks
            .clone()
            .map(|k| phases.expected[k].load(Ordering::Relaxed))
            .sum();
        let delivered: u64 = ks
            .clone()
            .map(|k| phases.delivered[k].load(Ordering::Relaxed))
            .sum();
        let all = phases.latencies_us.lock().expect("latencies");
        let mut lat: Vec<u64> = ks.flat_map(|k| all[k].iter().copied()).collect();
        lat.sort_unstable();
        serde_json::json!({
            "expected": expected,
            "delivered": delivered,
            "delivered_pct": (if expected == 0 { 0.0 } else { 100.0 * delivered as f64 / expected as f64 }),
            "p50_ms": percentile(&lat, 0.50),
            "p99_ms": percentile(&lat, 0.99),
            "max_ms": percentile(&lat, 1.0),
        })
    };
    for (k, attack) in attacks.iter_mut().enumerate() {
        let honest = summary(k + 1..k + 2);
        attack["honest_p99_ms"] = honest["p99_ms"].clone();
        attack["honest_delivered_pct"] = honest["delivered_pct"].clone();
    }
    let baseline = summary(0..1);
    let attacked = summary(1..1 + patterns.len());
    let recovery = summary(1 + patterns.len()..2 + patterns.len());
    let ratio = attacked["p99_ms"].as_f64().unwrap_or(0.0)
        / baseline["p99_ms"].as_f64().unwrap_or(1.0).max(0.001);
    Ok(serde_json::json!({
        "mode": "hostile",
        "users": members * args.rooms, "rooms": args.rooms, "rate": args.rate,
        "phase_s": args.phase, "instances": urls.len(),
        "attacker": args.attacker_ip.to_string(), "attacker_sockets": args.attacker_sockets,
        "honest_baseline": baseline,
        "honest_under_attack": attacked,
        "honest_after": recovery,
        "p99_ratio_attack_to_baseline": ratio,
        "honest_connections_closed": closed.load(Ordering::Relaxed),
        "attacks": attacks,
        "server_rss_kib": {
            "before_attack": rss_before,
            "after_each_round": rss_rounds,
            "attack_end": rss_attack_end,
            "after_settle": rss_after,
        },
    }))
}

/// The hidden `attack` mode: one pattern from one address for a while.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AttackArgs {
    #[arg(long)]
    pattern: String,
    /// How long, in ms.
    #[arg(long)]
    millis: u64,
    /// Source address (loopback).
    #[arg(long)]
    ip: Ipv4Addr,
    #[arg(long)]
    sockets: usize,
    /// Honest rooms `h-0`.. to aim at.
    #[arg(long)]
    rooms: usize,
}

/// Runs [`AttackArgs`]: `sockets` workers repeat rounds of the pattern
/// until the time is up; returns what they did and got.
pub(crate) async fn attack_for(
    urls: &[String],
    args: &AttackArgs,
) -> anyhow::Result<serde_json::Value> {
    let until = Instant::now() + Duration::from_millis(args.millis);
    let tally = Arc::new(Attack::default());
    let mut workers = Vec::new();
    for w in 0..args.sockets {
        let url = urls[w % urls.len()].clone();
        let tally = tally.clone();
        let ip = args.ip;
        let room = format!("h-{}", w % args.rooms.max(1));
        let pattern = args.pattern.clone();
        workers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let round = tokio::time::timeout_at(
                    until.into(),
                    attack(&pattern, &url, ip, &room, w, &tally),
                )
                .await;
                if let Ok(Err(_)) = round {
                    // Refused or closed: back off a little, as a
                    // reconnecting script would, and go again.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    Ok(serde_json::json!({
        "pattern": args.pattern,
        "frames": tally.frames.load(Ordering::Relaxed),
        "rate_limited": tally.rate_limited.load(Ordering::Relaxed),
        "other_errors": tally.other_errors.load(Ordering::Relaxed),
        "connections": tally.connections.load(Ordering::Relaxed),
    }))
}

/// One round of `pattern` from one attacker socket; returns when the
/// server closed it or the round is over (the caller runs it until the
/// pattern's phase ends).
async fn attack(
    pattern: &str,
    url: &str,
    ip: Ipv4Addr,
    room: &str,
    w: usize,
    tally: &Attack,
) -> anyhow::Result<()> {
    let mut ws = open_from(url, ip).await?;
    tally.connections.fetch_add(1, Ordering::Relaxed);
    let name = match pattern {
        "blank" if w.is_multiple_of(2) => "\u{200b}\u{200b}".to_owned(),
        _ => format!("mallory{w}"),
    };
    if pattern == "bad_hello" {
        // Not expressible as a Rust string: the JSON text itself.
        ws.send(Message::Text(
            r#"{"type":"hello","name":"ab\ud83d"}"#.into(),
        ))
        .await?;
        tally.frames.fetch_add(1, Ordering::Relaxed);
        answer(&mut ws, tally).await?;
        // The server closes after bad_name.
        while recv(&mut ws).await.is_ok() {}
        return Ok(());
    }
    send(&mut ws, &ClientFrame::Hello { name, token: None }).await?;
    let token = match recv(&mut ws).await? {
        ServerFrame::Welcome { token, .. } => token,
        ServerFrame::Error { .. } => {
            tally.other_errors.fetch_add(1, Ordering::Relaxed);
            bail!("hello refused");
        }
        other => bail!("expected welcome, got {other:?}"),
    };
    let mut n = 0u64;
    match pattern {
        "toggle" => loop {
            frame(
                &mut ws,
                tally,
                ClientFrame::Join {
                    room: room.into(),
                    since: None,
                },
            )
            .await?;
            frame(&mut ws, tally, ClientFrame::Leave { room: room.into() }).await?;
        },
        "reload" => loop {
            frame(
                &mut ws,
                tally,
                ClientFrame::Join {
                    room: room.into(),
                    since: None,
                },
            )
            .await?;
            drop(ws);
            ws = open_from(url, ip).await?;
            tally.connections.fetch_add(1, Ordering::Relaxed);
            send(
                &mut ws,
                &ClientFrame::Hello {
                    name: format!("mallory{w}"),
                    token: Some(token.clone()),
                },
            )
            .await?;
            answer(&mut ws, tally).await?;
        },
        "fresh_rooms" => loop {
            n += 1;
            let fresh = format!("x{w}-{n}-{}", now_us() % 1_000_000_000);
            frame(
                &mut ws,
                tally,
                ClientFrame::Join {
                    room: fresh.clone(),
                    since: None,
                },
            )
            .await?;
            frame(&mut ws, tally, ClientFrame::Leave { room: fresh }).await?;
        },
        "blank" => {
            frame(
                &mut ws,
                tally,
                ClientFrame::Join {
                    room: room.into(),
                    since: None,
                },
            )
            .await?;
            loop {
                n += 1;
                let body = if n.is_multiple_of(2) {
                    "\u{2800}"
                } else {
                    "\u{200b}\u{200b}"
                };
                frame(
                    &mut ws,
                    tally,
                    ClientFrame::Send {
                        room: room.into(),
                        id: format!("b{n}"),
                        body: body.into(),
                    },
                )
                .await?;
            }
        }
        "rooms" => loop {
            frame(
                &mut ws,
                tally,
                ClientFrame::Rooms {
                    cursor: None,
                    limit: None,
                },
            )
            .await?;
        },
        "replay" => {
            let epoch = match frame(
                &mut ws,
                tally,
                ClientFrame::Join {
                    room: room.into(),
                    since: None,
                },
            )
            .await?
            {
                Some(ServerFrame::Joined { epoch, .. }) => epoch,
                _ => bail!("join refused"),
            };
            loop {
                frame(&mut ws, tally, ClientFrame::Leave { room: room.into() }).await?;
                let since = Some(Since {
                    epoch: epoch.clone(),
                    offset: 0,
                });
                frame(
                    &mut ws,
                    tally,
                    ClientFrame::Join {
                        room: room.into(),
                        since,
                    },
                )
                .await?;
                frame(
                    &mut ws,
                    tally,
                    ClientFrame::History {
                        room: room.into(),
                        before: None,
                        limit: Some(200),
                    },
                )
                .await?;
            }
        }
        other => bail!("unknown pattern {other}"),
    }
}

/// Sends one frame and reads until its answer.
async fn frame(ws: &mut Ws, tally: &Attack, f: ClientFrame) -> anyhow::Result<Option<ServerFrame>> {
    send(ws, &f).await?;
    tally.frames.fetch_add(1, Ordering::Relaxed);
    answer(ws, tally).await
}

/// Reads until a direct answer (anything but room traffic), counting errors.
async fn answer(ws: &mut Ws, tally: &Attack) -> anyhow::Result<Option<ServerFrame>> {
    loop {
        match recv(ws).await? {
            ServerFrame::Message(_) | ServerFrame::Presence { .. } | ServerFrame::Typing { .. } => {
            }
            ServerFrame::Error { code, .. } => {
                if code == ErrorCode::RateLimited {
                    tally.rate_limited.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.other_errors.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(None);
            }
            other => return Ok(Some(other)),
        }
    }
}
