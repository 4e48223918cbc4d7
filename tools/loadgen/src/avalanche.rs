//! Avalanche: every receiver on the first instance, which is then stopped
//! (SIGTERM to `--drain-pid`) while one sender per room keeps sending on the
//! second. Receivers do what the web client does: a `reconnect` with
//! `delay_ms` keeps the socket until then (PROTOCOL.md, "Drain"); at their
//! turn, or at a close, they reconnect to the second instance with their
//! token and `since`. Reports how long until every receiver is back, what
//! reached them (delivered %, duplicates), how long each replay took
//! (reconnect → `joined`), and the survivor's CPU, sampled from
//! `/proc/<pid>/stat`: its peak over any one sampling interval.

use crate::{cpu_ticks, now_us, percentile, rejoin, send_load_until, Seen, CLK_TCK};
use anyhow::{bail, Context as _};
use futures_util::StreamExt;
use protocol::{ServerFrame, Since};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// The `avalanche` mode's settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct AvalancheArgs {
    /// Receivers, all on the first instance, spread over the rooms.
    #[arg(long, default_value_t = 5000)]
    pub(crate) clients: usize,
    #[arg(long, default_value_t = 500)]
    pub(crate) rooms: usize,
    /// Messages per second of each room's sender (on the second instance).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) rate: f64,
    /// The first instance's process: it gets SIGTERM after the warm-up.
    #[arg(long)]
    pub(crate) drain_pid: u32,
    /// The second instance's process: its CPU is sampled.
    #[arg(long)]
    pub(crate) survivor_pid: u32,
    /// Seconds of load before the SIGTERM.
    #[arg(long, default_value_t = 3)]
    pub(crate) warmup: u64,
    /// Seconds of load after every receiver is back.
    #[arg(long, default_value_t = 3)]
    pub(crate) after: u64,
    /// Longest wait for every receiver to be back, in seconds.
    #[arg(long, default_value_t = 90)]
    pub(crate) timeout: u64,
}

/// The survivor's CPU sampling interval.
const SAMPLE: Duration = Duration::from_millis(500);

pub(crate) async fn run(
    urls: &[String],
    args: &AvalancheArgs,
) -> anyhow::Result<serde_json::Value> {
    let AvalancheArgs {
        clients,
        rooms,
        rate,
        drain_pid,
        survivor_pid,
        warmup,
        after,
        timeout,
    } = *args;
    let [victim, survivor] = urls else {
        bail!("avalanche needs two --urls: the instance to stop, then the survivor");
    };
    if rooms == 0 || clients < rooms || rate <= 0.0 {
        bail!("need clients >= rooms > 0 and a positive rate");
    }
    cpu_ticks(survivor_pid).context("reading the survivor's /proc/<pid>/stat")?;
    let prefix = format!("aval{}", now_us() % 1_000_000);
    let connected = Arc::new(AtomicU64::new(0));
    let back = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    // When the SIGTERM went, and when each receiver was back (µs after it).
    let signalled: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut receivers = Vec::with_capacity(clients);
    for i in 0..clients {
        let (victim, survivor) = (victim.clone(), survivor.clone());
        let room = format!("{prefix}-{}", i % rooms);
        let (connected, back, failures, signalled) = (
            connected.clone(),
            back.clone(),
            failures.clone(),
            signalled.clone(),
        );
        let mut stop = stop_rx.clone();
        receivers.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let name = format!("r{i}");
            let first = loop {
                match rejoin(&victim, &name, None, &room, None, &mut seen).await {
                    Ok(c) => break c,
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let (mut ws, token, mut since) = first;
            // On the victim: read until our turn or its close.
            let mut turn: Option<tokio::time::Instant> = None;
            loop {
                let until =
                    turn.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
                let msg = tokio::select! {
                    msg = ws.next() => msg,
                    () = tokio::time::sleep_until(until) => break,
                    _ = stop.changed() => return (seen, None),
                };
                match msg {
                    Some(Ok(Message::Text(text))) => match ServerFrame::from_json(&text) {
                        Ok(ServerFrame::Message(m)) => {
                            seen.take(&m.body);
                            since.offset = since.offset.max(m.offset);
                        }
                        Ok(ServerFrame::Reconnect { delay_ms, .. }) if delay_ms > 0 => {
                            turn =
                                Some(tokio::time::Instant::now() + Duration::from_millis(delay_ms));
                        }
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
            drop(ws);
            // To the survivor, with our token and `since`.
            let started = Instant::now();
            let (mut ws, _, mut since) = loop {
                match rejoin(
                    &survivor,
                    &name,
                    Some(token.clone()),
                    &room,
                    Some(since.clone()),
                    &mut seen,
                )
                .await
                {
                    Ok(c) => break c,
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            seen.replays_us.push(started.elapsed().as_micros() as u64);
            seen.reconnects += 1;
            let back_at = signalled
                .lock()
                .expect("signal time")
                .map(|t| t.elapsed().as_micros() as u64);
            back.fetch_add(1, Ordering::Relaxed);
            loop {
                let msg = tokio::select! {
                    msg = ws.next() => msg,
                    _ = stop.changed() => break,
                };
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Ok(ServerFrame::Message(m)) = ServerFrame::from_json(&text) {
                            seen.take(&m.body);
                            since = Since {
                                epoch: since.epoch,
                                offset: since.offset.max(m.offset),
                            };
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
            (seen, back_at)
        }));
    }
    let progress = crate::progress::start(
        timeout + warmup + after + 60,
        vec![
            ("connected", connected.clone()),
            ("sent", sent.clone()),
            ("back", back.clone()),
        ],
    );
    while connected.load(Ordering::Relaxed) < clients as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One sender per room on the survivor, until told to stop.
    let senders_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut sender_tasks = Vec::new();
    for r in 0..rooms {
        let room = format!("{prefix}-{r}");
        let me = (1_000_000 + r) as u32;
        let ws = crate::client(survivor, &format!("s{me}"), &room).await?;
        let (sent, senders_stop) = (sent.clone(), senders_stop.clone());
        sender_tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
            (
                r,
                send_load_until(
                    &mut tx,
                    &room,
                    me,
                    rate,
                    Duration::ZERO,
                    || senders_stop.load(Ordering::Relaxed),
                    &sent,
                )
                .await,
            )
        }));
    }
    tokio::time::sleep(Duration::from_secs(warmup)).await;

    let (cpu_tx, cpu_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample_cpu(survivor_pid, cpu_rx));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &drain_pid.to_string()])
        .status()
        .context("running kill")?;
    *signalled.lock().expect("signal time") = Some(Instant::now());
    if !status.success() {
        bail!("kill -TERM {drain_pid} failed: {status}");
    }
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while back.load(Ordering::Relaxed) < clients as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(after)).await;
    senders_stop.store(true, Ordering::Relaxed);
    let _ = cpu_tx.send(true);
    let mut sent_per_room = vec![0u64; rooms];
    for t in sender_tasks {
        let (r, n) = t.await?;
        sent_per_room[r] += n;
    }
    // What is in flight arrives, then the receivers stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);

    let (mut expected, mut delivered, mut duplicates) = (0u64, 0u64, 0u64);
    let (mut replays, mut backs) = (Vec::new(), Vec::new());
    for (i, t) in receivers.into_iter().enumerate() {
        let (seen, back_at) = t.await?;
        expected += sent_per_room[i % rooms];
        delivered += seen.by_sender.values().map(|s| s.len() as u64).sum::<u64>();
        duplicates += seen.duplicates;
        replays.extend(seen.replays_us);
        backs.extend(back_at);
    }
    let (peak, mean) = sampler.await?;
    progress.finish();
    replays.sort_unstable();
    backs.sort_unstable();
    Ok(serde_json::json!({
        "mode": "avalanche", "clients": clients, "rooms": rooms, "rate": rate,
        "sent": sent.load(Ordering::Relaxed),
        "expected_deliveries": expected,
        "delivered": delivered,
        "delivered_pct": if expected == 0 { 100.0 } else { delivered as f64 * 100.0 / expected as f64 },
        "duplicates": duplicates,
        "back": backs.len(),
        "all_back_s": if backs.len() == clients { backs.last().map(|&us| us as f64 / 1e6) } else { None },
        "half_back_s": percentile(&backs, 0.5) / 1e3,
        "replay_ms": {
            "p50": percentile(&replays, 0.5), "p99": percentile(&replays, 0.99),
            "max": percentile(&replays, 1.0),
        },
        "connect_failures": failures.load(Ordering::Relaxed),
        "survivor_cpu_pct": { "peak": peak, "mean": mean },
    }))
}

/// Samples `pid`'s CPU every [`SAMPLE`] until `stop`: (peak, mean) in
/// percent of one core.
async fn sample_cpu(pid: u32, mut stop: watch::Receiver<bool>) -> (f64, f64) {
    let start = Instant::now();
    let first = cpu_ticks(pid).unwrap_or(0);
    let (mut last_ticks, mut last_at) = (first, start);
    let mut peak = 0.0f64;
    loop {
        tokio::select! {
            () = tokio::time::sleep(SAMPLE) => {}
            _ = stop.changed() => break,
        }
        let Ok(ticks) = cpu_ticks(pid) else { break };
        let now = Instant::now();
        let pct = (ticks - last_ticks) as f64 / CLK_TCK / (now - last_at).as_secs_f64() * 100.0;
        peak = peak.max(pct);
        (last_ticks, last_at) = (ticks, now);
    }
    let total = cpu_ticks(pid).unwrap_or(last_ticks) - first;
    let mean = total as f64 / CLK_TCK / start.elapsed().as_secs_f64() * 100.0;
    (peak, mean)
}
