//! Steady: a load that rides out faults, for `make chaos`. One sender per
//! room sends at a fixed rate, each message until it is acked: an `error`
//! answer or a lost connection sends it again with the same client id, as
//! the web client does (the server deduplicates). Receivers reconnect with
//! their token and `since` after any close, to the next instance, and count
//! the rooms reset under them (`recovered: false` after a re-join with
//! `since`). Reports what was acked, what reached the receivers, what was
//! lost (acked, yet missing at a receiver of the room), duplicates, resets,
//! and the longest a sender waited for one ack.

use crate::{now_us, recv, rejoin, send, Seen, Ws};
use anyhow::bail;
use futures_util::StreamExt;
use protocol::{ClientFrame, ServerFrame, Since};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The `steady` mode's settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct SteadyArgs {
    /// Receivers, spread over the rooms and the instances.
    #[arg(long, default_value_t = 200)]
    pub(crate) clients: usize,
    #[arg(long, default_value_t = 10)]
    pub(crate) rooms: usize,
    /// Messages per second of each room's sender.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) rate: f64,
    #[arg(long, default_value_t = 20)]
    pub(crate) duration: u64,
}

/// One receiver: connected until `until`, reconnecting after every close.
async fn receive(urls: Vec<String>, i: usize, room: String, until: Instant) -> Seen {
    let mut seen = Seen::default();
    let name = format!("r{i}");
    let mut token = None;
    let mut since: Option<Since> = None;
    let mut attempt = i;
    while Instant::now() < until {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let (mut ws, t, pos) =
            match rejoin(url, &name, token.clone(), &room, since.clone(), &mut seen).await {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
        token = Some(t);
        if since.is_some() {
            seen.reconnects += 1;
        }
        let mut last = pos.offset;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until.into(), ws.next()).await {
            if let Message::Text(text) = msg {
                if let Ok(ServerFrame::Message(m)) = ServerFrame::from_json(&text) {
                    seen.take(&m.body);
                    last = last.max(m.offset);
                }
            }
        }
        since = Some(Since {
            epoch: pos.epoch,
            offset: last,
        });
    }
    seen
}

/// What one sender got acked, and its longest wait for one ack.
struct Sent {
    acked: HashSet<u64>,
    longest_wait: Duration,
}

/// One sender: message `seq` goes (again) until acked, then `seq + 1` at
/// the next tick, until `stop_at`.
async fn sender(urls: Vec<String>, me: u32, room: String, rate: f64, stop_at: Instant) -> Sent {
    let mut out = Sent {
        acked: HashSet::new(),
        longest_wait: Duration::ZERO,
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut token = None;
    let mut attempt = me as usize;
    let mut seq = 1u64;
    let mut ws: Option<Ws> = None;
    'messages: while Instant::now() < stop_at {
        tick.tick().await;
        let first_try = Instant::now();
        let id = format!("{me}-{seq}");
        let body = format!("ld {me} {seq} {}", now_us());
        loop {
            if ws.is_none() {
                let url = &urls[attempt % urls.len()];
                attempt += 1;
                let mut ignored = Seen::default();
                match rejoin(
                    url,
                    &format!("s{me}"),
                    token.clone(),
                    &room,
                    None,
                    &mut ignored,
                )
                .await
                {
                    Ok((w, t, _)) => {
                        ws = Some(w);
                        token = Some(t);
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if Instant::now() > stop_at + Duration::from_secs(30) {
                            break 'messages;
                        }
                        continue;
                    }
                }
            }
            let w = ws.as_mut().expect("connected");
            let frame = ClientFrame::Send {
                room: room.clone(),
                id: id.clone(),
                body: body.clone(),
            };
            if send(w, &frame).await.is_err() {
                ws = None;
                continue;
            }
            let answer = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match recv(w).await? {
                        ServerFrame::Ack { id: acked, .. } if acked == id => {
                            return anyhow::Ok(true)
                        }
                        // Refused (`unavailable` while the store is away,
                        // `rate_limited`): the same id again shortly.
                        ServerFrame::Error { id: Some(e), .. } if e == id => return Ok(false),
                        _ => {}
                    }
                }
            })
            .await;
            match answer {
                Ok(Ok(true)) => {
                    out.acked.insert(seq);
                    out.longest_wait = out.longest_wait.max(first_try.elapsed());
                    seq += 1;
                    continue 'messages;
                }
                Ok(Ok(false)) => tokio::time::sleep(Duration::from_millis(100)).await,
                // Closed or silent: reconnect and send the same id again.
                _ => ws = None,
            }
        }
    }
    out
}

pub(crate) async fn run(urls: &[String], args: &SteadyArgs) -> anyhow::Result<serde_json::Value> {
    let SteadyArgs {
        clients,
        rooms,
        rate,
        duration,
    } = *args;
    if rooms == 0 || clients < rooms || rate <= 0.0 {
        bail!("need clients >= rooms > 0 and a positive rate");
    }
    let prefix = format!("steady{}", now_us() % 1_000_000);
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(duration);
    // Receivers stay until senders are done and their last messages had
    // time to arrive (a sender may wait out a fault past `stop_at`).
    let drain = Duration::from_secs(15);
    let sent = Arc::new(AtomicU64::new(0));
    let progress = crate::progress::start(duration, vec![("sent", sent.clone())]);

    let mut receivers = Vec::with_capacity(clients);
    for i in 0..clients {
        let room = format!("{prefix}-{}", i % rooms);
        receivers.push(tokio::spawn(receive(
            urls.to_vec(),
            i,
            room,
            stop_at + drain,
        )));
    }
    // Let the receivers join before anything is sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut senders = Vec::with_capacity(rooms);
    for r in 0..rooms {
        let room = format!("{prefix}-{r}");
        senders.push(tokio::spawn(sender(
            urls.to_vec(),
            1_000_000 + r as u32,
            room,
            rate,
            stop_at,
        )));
    }
    let mut acked_per_room = Vec::with_capacity(rooms);
    let mut longest_wait = Duration::ZERO;
    for t in senders {
        let s = t.await?;
        sent.fetch_add(s.acked.len() as u64, Ordering::Relaxed);
        longest_wait = longest_wait.max(s.longest_wait);
        acked_per_room.push(s.acked);
    }
    let (mut expected, mut delivered, mut lost, mut duplicates) = (0u64, 0u64, 0u64, 0u64);
    let (mut resets, mut reconnects) = (0u64, 0u64);
    for (i, t) in receivers.into_iter().enumerate() {
        let seen = t.await?;
        let r = i % rooms;
        let acked = &acked_per_room[r];
        let got = seen.by_sender.get(&(1_000_000 + r as u32));
        let have = got.map_or(0, |g| acked.iter().filter(|s| g.contains(s)).count() as u64);
        expected += acked.len() as u64;
        delivered += have;
        lost += acked.len() as u64 - have;
        duplicates += seen.duplicates;
        resets += seen.resets;
        reconnects += seen.reconnects;
    }
    progress.finish();
    Ok(serde_json::json!({
        "mode": "steady", "clients": clients, "rooms": rooms, "rate": rate,
        "duration_s": duration, "instances": urls.len(),
        "acked": acked_per_room.iter().map(|a| a.len() as u64).sum::<u64>(),
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": lost,
        "duplicates": duplicates,
        "reconnects": reconnects,
        "resets": resets,
        "longest_ack_wait_ms": longest_wait.as_millis() as u64,
    }))
}
