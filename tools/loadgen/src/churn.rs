//! Churn: receivers are force-closed and reconnect (to the next instance)
//! with their token and `since` while senders keep sending. Measures what
//! recovery by offset promises: every message delivered once, and how long
//! a replay takes from the reconnect to the `joined` frame.

use crate::{now_us, percentile, rejoin, send_load, Seen};
use anyhow::bail;
use futures_util::StreamExt;
use protocol::{ServerFrame, Since};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The `churn` mode's settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct ChurnArgs {
    #[arg(long, default_value_t = 1000)]
    pub(crate) clients: usize,
    #[arg(long, default_value_t = 10)]
    pub(crate) rooms: usize,
    /// Senders per room (extra connections, not churned).
    #[arg(long, default_value_t = 1)]
    pub(crate) senders: usize,
    #[arg(long, default_value_t = 5.0)]
    pub(crate) rate: f64,
    /// Mean seconds between forced reconnects of one client.
    #[arg(long, default_value_t = 15.0)]
    pub(crate) every: f64,
    #[arg(long, default_value_t = 30)]
    pub(crate) duration: u64,
}

pub(crate) async fn run(urls: &[String], args: &ChurnArgs) -> anyhow::Result<serde_json::Value> {
    let ChurnArgs {
        clients,
        rooms,
        senders,
        rate,
        every,
        duration,
    } = *args;
    if rooms == 0 || clients < rooms || rate <= 0.0 || every <= 0.0 {
        bail!("need clients >= rooms > 0 and positive rate and interval");
    }
    let prefix = format!("churn{}", now_us() % 1_000_000);
    let stop_at = Instant::now() + Duration::from_secs(duration);
    let drain = Duration::from_secs(3);
    let reconnects = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let progress = crate::progress::start(
        duration + 3,
        vec![("sent", sent.clone()), ("reconnects", reconnects.clone())],
    );

    let mut receivers = Vec::with_capacity(clients);
    for i in 0..clients {
        let urls = urls.to_vec();
        let room = format!("{prefix}-{}", i % rooms);
        let reconnects = reconnects.clone();
        receivers.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let name = format!("r{i}");
            let mut token = None;
            let mut since: Option<Since> = None;
            let mut attempt = i;
            while Instant::now() < stop_at + drain {
                let started = Instant::now();
                let url = &urls[attempt % urls.len()];
                attempt += 1;
                let (mut ws, t, pos) = match rejoin(
                    url,
                    &name,
                    token.clone(),
                    &room,
                    since.clone(),
                    &mut seen,
                )
                .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("receiver {i}: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                if since.is_some() {
                    seen.replays_us.push(started.elapsed().as_micros() as u64);
                    seen.reconnects += 1;
                    reconnects.fetch_add(1, Ordering::Relaxed);
                }
                token = Some(t);
                let mut last = pos.offset;
                let epoch = pos.epoch;
                let jitter = 0.5 + rand_unit(i as u64 ^ now_us());
                let until =
                    (Instant::now() + Duration::from_secs_f64(every * jitter)).min(stop_at + drain);
                while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until.into(), ws.next()).await
                {
                    if let Message::Text(text) = msg {
                        if let Ok(ServerFrame::Message(m)) = ServerFrame::from_json(&text) {
                            seen.take(&m.body);
                            last = last.max(m.offset);
                        }
                    }
                }
                since = Some(Since {
                    epoch,
                    offset: last,
                });
                // Force-close: drop the socket without a close handshake.
                drop(ws);
            }
            seen
        }));
    }

    let mut sender_tasks = Vec::new();
    for r in 0..rooms {
        for s in 0..senders {
            let url = urls[(r + s) % urls.len()].clone();
            let room = format!("{prefix}-{r}");
            let me = (1_000_000 + r * senders + s) as u32;
            let sent = sent.clone();
            let ws = crate::client(&url, &format!("s{me}"), &room).await?;
            sender_tasks.push(tokio::spawn(async move {
                let (mut tx, mut rx) = ws.split();
                tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
                (
                    r,
                    send_load(&mut tx, &room, me, rate, Duration::ZERO, stop_at, &sent).await,
                )
            }));
        }
    }
    let mut sent_per_room = vec![0u64; rooms];
    for t in sender_tasks {
        let (r, n) = t.await?;
        sent_per_room[r] += n;
    }
    let mut expected = 0u64;
    let mut delivered = 0u64;
    let mut duplicates = 0u64;
    let mut replays = Vec::new();
    let mut reconnected = 0u64;
    for (i, t) in receivers.into_iter().enumerate() {
        let seen = t.await?;
        expected += sent_per_room[i % rooms];
        delivered += seen.by_sender.values().map(|s| s.len() as u64).sum::<u64>();
        duplicates += seen.duplicates;
        reconnected += seen.reconnects;
        replays.extend(seen.replays_us);
    }
    progress.finish();
    replays.sort_unstable();
    Ok(serde_json::json!({
        "mode": "churn", "clients": clients, "rooms": rooms, "senders": senders,
        "rate": rate, "every_s": every, "duration_s": duration, "instances": urls.len(),
        "sent": sent.load(Ordering::Relaxed),
        "expected_deliveries": expected,
        "delivered": delivered,
        "delivered_pct": if expected == 0 { 100.0 } else { delivered as f64 * 100.0 / expected as f64 },
        "duplicates": duplicates,
        "reconnects": reconnected,
        "replay_ms": {
            "p50": percentile(&replays, 0.5), "p99": percentile(&replays, 0.99),
            "max": percentile(&replays, 1.0),
        },
    }))
}

/// A number in [0, 1) from a seed (splitmix64), for reconnect jitter.
fn rand_unit(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
