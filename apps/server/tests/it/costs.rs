//! Abuse costs (issue 17, PROTOCOL.md v1.1 "Costs" and "Bounds"): every
//! frame costs units from the connection's, the user's and the address's
//! buckets; a replay costs by its size; replies are bounded in bytes;
//! presence changes are coalesced; `rooms` is paged.

use crate::support::{unique_id, unthrottled, Client, TestServer};
use protocol::{ClientFrame, ErrorCode, ServerFrame, Since};
use server::config::Config;
use server::cost::Rate;
use std::time::{Duration, Instant};

const ROOM: &str = "general";

/// Reads frames until `n` direct answers (anything but room traffic) came;
/// returns them and the presence frames seen meanwhile.
async fn answers(client: &mut Client, n: usize) -> (Vec<ServerFrame>, Vec<ServerFrame>) {
    let mut answered = Vec::new();
    let mut presence = Vec::new();
    while answered.len() < n {
        match client.recv().await {
            f @ ServerFrame::Presence { .. } => presence.push(f),
            ServerFrame::Message(_) | ServerFrame::Typing { .. } => {}
            other => answered.push(other),
        }
    }
    (answered, presence)
}

fn is_rate_limited(f: &ServerFrame) -> bool {
    matches!(
        f,
        ServerFrame::Error {
            code: ErrorCode::RateLimited,
            ..
        }
    )
}

/// Units the answered frames of a join/leave toggler took: 2 per join
/// answered `joined`, 1 per leave answered `left` or `not_joined`.
fn toggle_units(answered: &[ServerFrame]) -> u64 {
    answered
        .iter()
        .map(|f| match f {
            ServerFrame::Joined { .. } => 2,
            ServerFrame::Left { .. }
            | ServerFrame::Error {
                code: ErrorCode::NotJoined,
                ..
            } => 1,
            _ => 0,
        })
        .sum()
}

/// Input 1: one socket alternates `join`/`leave` of a room 300 times. The
/// toggles cost units: a refused one pauses the socket's reading until the
/// bucket holds it again, so the toggler goes no faster than its rate (the
/// socket stays open); what gets through reaches the other member as one
/// presence frame per window, not 600 frames. Presence grace is 0 here:
/// the window and the costs alone hold.
#[tokio::test]
async fn join_leave_toggles_reach_other_members_as_a_few_coalesced_presence_frames() {
    let mut config = Config::for_tests();
    // Faster than the default (20/s) only so that 900 units take seconds.
    config.connection_rate = Rate {
        per_sec: 300,
        burst: 40,
    };
    let rate = config.connection_rate;
    let window = config.presence_window;
    assert!(!window.is_zero(), "the default coalesces");
    let server = TestServer::start(config).await;
    let mut observer = server.login("observer").await;
    observer.join(ROOM).await;
    let mut toggler = server.login("toggler").await;
    let started = Instant::now();
    for _ in 0..300 {
        toggler
            .send(&ClientFrame::Join {
                room: ROOM.into(),
                since: None,
            })
            .await;
        toggler
            .send(&ClientFrame::Leave { room: ROOM.into() })
            .await;
    }
    let (answered, _) = answers(&mut toggler, 600).await;
    let elapsed = started.elapsed();
    let limited = answered.iter().filter(|f| is_rate_limited(f)).count();
    assert!(limited > 0, "the toggles went over the limit");
    // The bucket held: no more units than its burst plus what refilled.
    let units = toggle_units(&answered);
    let allowed = f64::from(rate.burst) + f64::from(rate.per_sec) * elapsed.as_secs_f64() + 3.0;
    assert!(
        units as f64 <= allowed,
        "{units} units in {elapsed:?}, at most {allowed}"
    );
    // Refused, not closed: the socket still answers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    toggler.ping().await;
    tokio::time::sleep(window * 3).await;
    let synced = observer.sync(ROOM).await;
    let presence: Vec<&ServerFrame> = synced
        .before
        .iter()
        .filter(|f| matches!(f, ServerFrame::Presence { .. }))
        .collect();
    // At most one frame per window the toggles lasted, plus the last.
    let windows = (elapsed.as_millis() / window.as_millis()) as usize + 2;
    assert!(
        !presence.is_empty() && presence.len() <= windows && windows < 600,
        "{} presence frames over {elapsed:?} (window {window:?})",
        presence.len()
    );
    for f in &presence {
        let ServerFrame::Presence { joined, left, .. } = f else {
            unreachable!()
        };
        assert_eq!(
            joined.len() + left.len(),
            1,
            "the toggler once per frame, in its latest state: {f:?}"
        );
    }
}

/// Changes of several users within one window go out as one frame, and no
/// member is told about their own user.
#[tokio::test]
async fn presence_changes_within_a_window_go_out_as_one_frame() {
    let mut config = unthrottled();
    // Long enough that the three joins below fall in one window however
    // loaded the machine is.
    config.presence_window = Duration::from_millis(1500);
    let server = TestServer::start(config).await;
    let mut observer = server.login("observer").await;
    observer.join(ROOM).await;
    let mut arrivals = Vec::new();
    for name in ["ann", "ben", "cy"] {
        let mut c = server.login(name).await;
        c.join(ROOM).await;
        arrivals.push(c);
    }
    let first = observer.recv().await;
    let ServerFrame::Presence { joined, left, .. } = &first else {
        panic!("expected presence, got {first:?}")
    };
    let mut names: Vec<&str> = joined.iter().map(|u| u.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["ann", "ben", "cy"], "{first:?}");
    assert!(left.is_empty());
    // ann joined before ben and cy, inside the same window: her frame
    // names the two others and not herself.
    let ann_first = loop {
        if let f @ ServerFrame::Presence { .. } = arrivals[0].recv().await {
            break f;
        }
    };
    let ServerFrame::Presence { joined, .. } = &ann_first else {
        unreachable!()
    };
    assert!(
        joined.iter().all(|u| u.name != "ann"),
        "ann is not told about herself: {ann_first:?}"
    );
    // cy, the last, was answered `joined` with everyone already handled:
    // the window's frame leaves them out, and cy itself, so it tells cy
    // nothing and is not sent.
    let synced = arrivals[2].sync(ROOM).await;
    assert!(
        synced
            .before
            .iter()
            .all(|f| !matches!(f, ServerFrame::Presence { .. })),
        "{:?}",
        synced.before
    );
}

/// Sends `n` pings and reads their answers: (pongs, refusals, the
/// refusals' messages).
async fn pings(client: &mut Client, n: usize) -> (usize, usize, Vec<String>) {
    for _ in 0..n {
        client.send(&ClientFrame::Ping).await;
    }
    let (answered, _) = answers(client, n).await;
    let pongs = answered.iter().filter(|f| **f == ServerFrame::Pong).count();
    let messages: Vec<String> = answered
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                message,
                ..
            } => Some(message.clone()),
            _ => None,
        })
        .collect();
    (pongs, messages.len(), messages)
}

/// Every frame costs: pings from several connections of one user run into
/// the user's bucket, though each connection's own holds them all.
#[tokio::test]
async fn one_users_connections_share_the_user_bucket() {
    let mut config = Config::for_tests();
    let user = Rate {
        per_sec: 10,
        burst: 50,
    };
    config.user_rate = user;
    let server = TestServer::start(config).await;
    let first = server.login("tabs").await;
    let token = first.token().to_owned();
    let mut tabs = vec![first];
    for _ in 0..2 {
        tabs.push(server.login_as("tabs", &token).await);
    }
    let started = Instant::now();
    let (mut pongs, mut limited) = (0, 0);
    let mut messages = Vec::new();
    for tab in &mut tabs {
        // 25 each: within a connection's burst of 40.
        let (p, l, m) = pings(tab, 25).await;
        pongs += p;
        limited += l;
        messages.extend(m);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(pongs + limited, 75);
    assert!(limited > 0, "75 pings are over the user's 50");
    assert!(messages.iter().all(|m| m.contains("user")), "{messages:?}");
    let allowed = f64::from(user.burst) + f64::from(user.per_sec) * elapsed + 1.0;
    assert!(pongs as f64 <= allowed, "{pongs} pongs in {elapsed} s");
    // Another user from the same address is not limited.
    let mut other = server.login("other").await;
    other.ping().await;
}

/// Many users of one address run into the address's bucket.
#[tokio::test]
async fn the_users_of_one_address_share_the_address_bucket() {
    let mut config = Config::for_tests();
    let address = Rate {
        per_sec: 10,
        burst: 60,
    };
    config.address_rate = address;
    // Connections are paid from the address's bucket too.
    config.frame_costs.connect = 0;
    let server = TestServer::start(config).await;
    let started = Instant::now();
    let (mut pongs, mut limited) = (0, 0);
    let mut messages = Vec::new();
    for i in 0..4 {
        let mut c = server.login(&format!("user{i}")).await;
        let (p, l, m) = pings(&mut c, 20).await;
        pongs += p;
        limited += l;
        messages.extend(m);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(pongs + limited, 80);
    assert!(limited > 0, "80 pings are over the address's 60");
    assert!(
        messages.iter().all(|m| m.contains("address")),
        "{messages:?}"
    );
    let allowed = f64::from(address.burst) + f64::from(address.per_sec) * elapsed + 1.0;
    assert!(pongs as f64 <= allowed, "{pongs} pongs in {elapsed} s");
}

/// New connections are paid from the address's bucket: past it, the
/// upgrade is refused with HTTP 429 and a Retry-After.
#[tokio::test]
async fn new_connections_beyond_the_address_bucket_are_refused_429() {
    let mut config = Config::for_tests();
    config.address_rate = Rate {
        per_sec: 1,
        burst: 50,
    };
    let connect = config.frame_costs.connect;
    assert!(connect > 0, "the default charges connections");
    let server = TestServer::start(config).await;
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        match server.try_connect(&[]).await {
            Ok(c) => open.push(c),
            Err(status) => {
                assert_eq!(status, 429);
                refused += 1;
            }
        }
    }
    // 50 units, 5 per connection: 10 (and one more if a unit refilled).
    assert!((10..=11).contains(&open.len()), "{} opened", open.len());
    assert_eq!(open.len() + refused, 20);
}

/// Posts `n` messages of `len` characters to `room` (unthrottled server).
async fn fill(client: &mut Client, room: &str, n: usize, len: usize) {
    for i in 0..n {
        let id = unique_id("fill");
        client
            .send(&ClientFrame::Send {
                room: room.into(),
                id: id.clone(),
                body: format!("{i} {}", "x".repeat(len)),
            })
            .await;
    }
    let mut acks = 0;
    while acks < n {
        if let ServerFrame::Ack { .. } = client.recv().await {
            acks += 1;
        }
    }
}

/// A `join` with `since` costs by the size of its replay: after a replay
/// larger than the bucket, the next frame waits for the debt to refill.
#[tokio::test]
async fn a_join_with_since_costs_by_the_size_of_its_replay() {
    let mut config = Config::for_tests();
    config.connection_rate = Rate {
        per_sec: 1,
        burst: 200,
    };
    config.user_rate = config.connection_rate;
    config.address_rate = Rate {
        per_sec: 1_000,
        burst: 1_000,
    };
    config.frame_costs.reply_bytes_per_unit = 1024;
    config.max_reply_bytes = 1 << 20;
    let server = TestServer::start(config).await;
    let mut poster = server.login("poster").await;
    let joined = poster.join(ROOM).await;
    // 100 messages of ~3 KB: a 300 KB replay, 290-odd units.
    fill(&mut poster, ROOM, 100, 3000).await;

    let mut small = server.login("small").await;
    small.join(ROOM).await;
    small.leave(ROOM).await;
    small.ping().await;

    let mut big = server.login("big").await;
    let replay = big
        .join_since(
            ROOM,
            Since {
                epoch: joined.epoch.clone(),
                offset: 0,
            },
        )
        .await;
    assert!(replay.recovered);
    assert_eq!(replay.history.len(), 100);
    big.send(&ClientFrame::Ping).await;
    let answer = big.recv().await;
    assert!(
        is_rate_limited(&answer),
        "a 300 KB replay left the bucket in debt: {answer:?}"
    );
}

/// `joined.history` and `history` replies are bounded in bytes: the newest
/// messages that fit, the client scrolls back for the rest, and a cut
/// `joined` says `recovered: false`.
#[tokio::test]
async fn joined_and_history_replies_are_bounded_in_bytes() {
    const BUDGET: usize = 20 * 1024;
    let mut config = unthrottled();
    config.max_reply_bytes = BUDGET;
    let server = TestServer::start(config).await;
    let mut poster = server.login("poster").await;
    let joined = poster.join(ROOM).await;
    fill(&mut poster, ROOM, 40, 2000).await;

    let mut reader = server.login("reader").await;
    let fresh = reader.join(ROOM).await;
    let size = |h: &[protocol::ChatMessage]| serde_json::to_string(h).unwrap().len();
    assert!(fresh.history.len() < 40 && !fresh.history.is_empty());
    assert!(size(&fresh.history) <= BUDGET, "{}", size(&fresh.history));
    assert_eq!(fresh.history.last().unwrap().offset, 40, "the newest kept");
    reader.leave(ROOM).await;

    let replay = reader
        .join_since(
            ROOM,
            Since {
                epoch: joined.epoch.clone(),
                offset: 0,
            },
        )
        .await;
    assert!(!replay.recovered, "a cut replay is not a recovery");
    assert!(size(&replay.history) <= BUDGET);
    assert_eq!(replay.history.last().unwrap().offset, 40);

    // Scrolling back reaches the first message, a bounded page at a time.
    let mut before = replay.history[0].offset;
    let mut seen = replay.history.len();
    while before > 1 {
        reader
            .send(&ClientFrame::History {
                room: ROOM.into(),
                before: Some(before),
                limit: Some(200),
            })
            .await;
        let page = loop {
            if let ServerFrame::History { messages, .. } = reader.recv().await {
                break messages;
            }
        };
        assert!(!page.is_empty() && size(&page) <= BUDGET);
        assert_eq!(page.last().unwrap().offset, before - 1, "contiguous pages");
        before = page[0].offset;
        seen += page.len();
    }
    assert_eq!(seen, 40);
}

/// Reads one `rooms` page.
async fn rooms_page(
    client: &mut Client,
    cursor: Option<String>,
    limit: u64,
) -> (Vec<(String, u64)>, Option<String>) {
    client
        .send(&ClientFrame::Rooms {
            cursor,
            limit: Some(limit),
        })
        .await;
    loop {
        if let ServerFrame::Rooms { rooms, next } = client.recv().await {
            return (
                rooms.into_iter().map(|r| (r.room, r.members)).collect(),
                next,
            );
        }
    }
}

/// Pages through every active room, `limit` at a time.
pub(crate) async fn all_rooms(client: &mut Client, limit: u64) -> Vec<(String, u64)> {
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..100 {
        let (page, next) = rooms_page(client, cursor, limit).await;
        assert!(page.len() as u64 <= limit);
        all.extend(page);
        match next {
            Some(n) => cursor = Some(n),
            None => return all,
        }
    }
    panic!("no last page");
}

/// Input 6: `rooms` is bounded and paged, the busiest first (ties by
/// name), and a cursor the server did not give is a `bad_frame`.
#[tokio::test]
async fn rooms_are_listed_a_bounded_page_at_a_time_busiest_first() {
    let server = TestServer::start(unthrottled()).await;
    let mut clients = Vec::new();
    // Room r<k> gets k members.
    for k in 1..=5u64 {
        for m in 0..k {
            let mut c = server.login(&format!("u{k}-{m}")).await;
            c.join(&format!("r{k}")).await;
            clients.push(c);
        }
    }
    let mut c = server.login("lister").await;
    let (first, next) = rooms_page(&mut c, None, 2).await;
    assert_eq!(first, [("r5".to_owned(), 5), ("r4".to_owned(), 4)]);
    assert!(next.is_some());
    let all = all_rooms(&mut c, 2).await;
    let want: Vec<(String, u64)> = (1..=5u64).rev().map(|k| (format!("r{k}"), k)).collect();
    assert_eq!(all, want);
    // A v1 request (no limit) gets at most the largest page.
    c.send(&ClientFrame::Rooms {
        cursor: None,
        limit: None,
    })
    .await;
    let ServerFrame::Rooms { rooms, next } = c.recv().await else {
        panic!("expected rooms")
    };
    assert_eq!((rooms.len(), next), (5, None));
    // Cursors name a place in the order (`<members>:<room>`): a page
    // after one starts past it, whatever came before.
    let (page, _) = rooms_page(&mut c, Some("3:r3".into()), 10).await;
    assert_eq!(page, [("r2".to_owned(), 2), ("r1".to_owned(), 1)]);
    // A place no room holds (r2 has 2 members, not 3) works the same:
    // (3, "r2") comes before (3, "r3").
    let (page, _) = rooms_page(&mut c, Some("3:r2".into()), 10).await;
    let want: Vec<(String, u64)> = (1..=3u64).rev().map(|k| (format!("r{k}"), k)).collect();
    assert_eq!(page, want);
    for bad in [
        "not-a-cursor",
        "150",
        ":r1",
        "x:r1",
        "3:Bad Room",
        "-1:r1",
        "3:",
    ] {
        c.send(&ClientFrame::Rooms {
            cursor: Some(bad.into()),
            limit: None,
        })
        .await;
        c.expect_error(ErrorCode::BadFrame, None).await;
    }
}
