//! Many instances, one chat: real `redis-server` processes and real server
//! processes (the `server` binary), talking through the Redis engine.

use crate::procs::{Redis, ServerProc, TempDir, Tls};
use crate::support::{http_get, offsets, unique_id, Client, Incoming};
use protocol::{ChatMessage, ErrorCode, ServerFrame, Since};
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// Bound for things that wait on reconnect backoffs and expiries.
pub(crate) const SLOW: Duration = Duration::from_secs(20);

/// Flags that let tests send as fast as they like.
/// Rate limits no test reaches unless it means to (every frame has a cost,
/// and tests send hundreds in milliseconds from one address).
pub(crate) const FAST: &[&str] = &[
    "--rate-per-sec",
    "100000",
    "--rate-burst",
    "100000",
    "--user-rate-per-sec",
    "100000",
    "--user-rate-burst",
    "100000",
    "--address-rate-per-sec",
    "100000",
    "--address-rate-burst",
    "100000",
];

pub(crate) async fn login(server: &ServerProc, name: &str) -> Client {
    let mut c = Client::connect_url(&server.ws_url()).await;
    c.hello(name).await;
    c
}

pub(crate) async fn login_as(server: &ServerProc, name: &str, token: &str) -> Client {
    let mut c = Client::connect_url(&server.ws_url()).await;
    c.hello_with_token(name, token).await;
    c
}

/// Reads until `presence` says `user` joined: cross-instance presence
/// arrives through Redis, after the join that caused it was answered.
pub(crate) async fn saw_join(client: &mut Client, user: &protocol::User) {
    saw_joins(client, std::slice::from_ref(user)).await
}

/// Reads presence (and typing) frames until each of `users` was announced
/// as joined; a presence window may announce several in one frame.
pub(crate) async fn saw_joins(client: &mut Client, users: &[protocol::User]) {
    let mut waiting: Vec<&protocol::User> = users.iter().collect();
    while !waiting.is_empty() {
        match client.recv().await {
            ServerFrame::Presence { joined, .. } => waiting.retain(|u| !joined.contains(u)),
            ServerFrame::Typing { .. } => {}
            other => panic!("expected presence of {waiting:?}, got {other:?}"),
        }
    }
}

/// Polls `/readyz` until it answers `want`.
pub(crate) async fn wait_ready(server: &ServerProc, want: u16) {
    let deadline = Instant::now() + SLOW;
    loop {
        let (status, _) = http_get(server.addr, "/readyz").await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads messages until `n` arrived, failing on anything but messages,
/// acks, presence and typing (which a busy room may interleave).
pub(crate) async fn messages(client: &mut Client, n: usize) -> Vec<ChatMessage> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match client.recv().await {
            ServerFrame::Message(m) => got.push(m),
            ServerFrame::Ack { .. } | ServerFrame::Presence { .. } | ServerFrame::Typing { .. } => {
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    got
}

/// Sends until acked, retrying `unavailable` (the store coming back).
pub(crate) async fn send_until_acked(client: &mut Client, room: &str, id: &str, body: &str) -> u64 {
    let deadline = Instant::now() + SLOW;
    loop {
        client.submit(room, id, body).await;
        loop {
            match client.recv().await {
                ServerFrame::Ack {
                    id: acked, offset, ..
                } if acked == id => return offset,
                ServerFrame::Error {
                    code: ErrorCode::Unavailable,
                    ..
                } => break,
                ServerFrame::Message(_) | ServerFrame::Presence { .. } => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert!(Instant::now() < deadline, "the store did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn clients_on_three_instances_receive_every_message_in_one_order() {
    let redis = Redis::start().await;
    let servers = [
        ServerProc::start("server-a", &redis.url(), FAST).await,
        ServerProc::start("server-b", &redis.url(), FAST).await,
        ServerProc::start("server-c", &redis.url(), FAST).await,
    ];
    let mut clients = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let mut c = login(server, &format!("user{i}")).await;
        c.join("town").await;
        clients.push(c);
    }
    // Everyone joined: take the presence frames about later joiners.
    let users: Vec<protocol::User> = clients.iter().map(|c| c.user().clone()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        saw_joins(c, &users[i + 1..]).await;
    }
    const EACH: usize = 30;
    for round in 0..EACH {
        for (i, c) in clients.iter_mut().enumerate() {
            c.submit(
                "town",
                &format!("c{i}-{round}"),
                &format!("{i} says {round}"),
            )
            .await;
        }
    }
    let mut orders = Vec::new();
    for c in &mut clients {
        let (acks, msgs) = collect(c, EACH, 3 * EACH).await;
        assert_eq!(acks.len(), EACH);
        assert_eq!(offsets(&msgs), (1..=(3 * EACH) as u64).collect::<Vec<_>>());
        orders.push(msgs.iter().map(|m| m.client_id.clone()).collect::<Vec<_>>());
    }
    assert_eq!(
        orders[0], orders[1],
        "instances a and b deliver in one order"
    );
    assert_eq!(
        orders[0], orders[2],
        "instances a and c deliver in one order"
    );
}

/// Reads `acks` acks and `msgs` messages, skipping presence.
pub(crate) async fn collect(
    c: &mut Client,
    acks: usize,
    msgs: usize,
) -> (Vec<u64>, Vec<ChatMessage>) {
    let (mut a, mut m) = (Vec::new(), Vec::new());
    while a.len() < acks || m.len() < msgs {
        match c.recv().await {
            ServerFrame::Ack { offset, .. } => a.push(offset),
            ServerFrame::Message(msg) => m.push(msg),
            ServerFrame::Presence { .. } => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    (a, m)
}

#[tokio::test]
async fn killed_instance_clients_recover_every_message_once_on_another() {
    let redis = Redis::start().await;
    let mut a = ServerProc::start("server-a", &redis.url(), FAST).await;
    let b = ServerProc::start("server-b", &redis.url(), FAST).await;
    let mut reader = login(&a, "reader").await;
    let joined = reader.join("news").await;
    let mut writer = login(&b, "writer").await;
    writer.join("news").await;

    const TOTAL: u64 = 300;
    let sender = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..TOTAL {
            let id = format!("w-{i}");
            writer.submit("news", &id, &format!("item {i}")).await;
            acked.push(writer.expect_ack_skipping(&id).await);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        acked
    });

    // Read part of the stream, then kill the instance under the reader.
    let mut seen: Vec<u64> = Vec::new();
    while seen.len() < 50 {
        if let ServerFrame::Message(m) = reader.recv().await {
            seen.push(m.offset);
        }
    }
    a.kill9().await;
    loop {
        match reader.next().await {
            Incoming::Frame(ServerFrame::Message(m)) => seen.push(m.offset),
            Incoming::Frame(_) => {}
            Incoming::Close(_) | Incoming::Ended => break,
        }
    }
    let last = *seen.last().expect("some messages");
    let mut back = login_as(&b, "reader", reader.token()).await;
    assert_eq!(back.user(), reader.user(), "the token keeps the identity");
    let rejoined = back
        .join_since(
            "news",
            Since {
                epoch: joined.epoch.clone(),
                offset: last,
            },
        )
        .await;
    assert!(rejoined.recovered, "the gap is replayed");
    seen.extend(offsets(&rejoined.history));
    while (seen.len() as u64) < TOTAL {
        if let ServerFrame::Message(m) = back.recv().await {
            seen.push(m.offset);
        }
    }
    let acked = sender.await.expect("sender");
    assert_eq!(acked, (1..=TOTAL).collect::<Vec<_>>());
    assert_eq!(
        seen,
        (1..=TOTAL).collect::<Vec<_>>(),
        "every message once, in order"
    );
}

#[tokio::test]
async fn resend_through_another_instance_is_deduplicated() {
    let redis = Redis::start().await;
    let a = ServerProc::start("server-a", &redis.url(), FAST).await;
    let b = ServerProc::start("server-b", &redis.url(), FAST).await;
    let mut on_a = login(&a, "sam").await;
    on_a.join("dm").await;
    let first = on_a.send_acked("dm", "c-1", "hello").await;
    let mut on_b = login_as(&b, "sam", on_a.token()).await;
    on_b.join("dm").await;
    assert_eq!(
        on_b.send_acked("dm", "c-1", "hello").await,
        first,
        "same offset"
    );
    let next = on_b.send_acked("dm", "c-2", "next").await;
    assert_eq!(next, first + 1, "the resend stored nothing");
}

#[tokio::test]
async fn redis_restart_on_the_same_data_loses_no_acked_message() {
    let mut redis = Redis::start().await;
    let a = ServerProc::start("server-a", &redis.url(), FAST).await;
    let b = ServerProc::start("server-b", &redis.url(), FAST).await;
    wait_ready(&a, 200).await;
    let mut x = login(&a, "x").await;
    x.join("ops").await;
    let mut y = login(&b, "y").await;
    y.join("ops").await;
    saw_join(&mut x, y.user()).await;
    for i in 0..5 {
        x.submit("ops", &format!("before-{i}"), "before").await;
    }
    collect(&mut x, 5, 5).await;
    assert_eq!(offsets(&messages(&mut y, 5).await), vec![1, 2, 3, 4, 5]);

    redis.shutdown().await;
    wait_ready(&a, 503).await;
    wait_ready(&b, 503).await;
    x.submit("ops", "down-1", "while down").await;
    x.expect_error_skipping(ErrorCode::Unavailable, Some("down-1"))
        .await;
    x.ping().await;

    redis.restart().await;
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let offset = send_until_acked(&mut x, "ops", "after-1", "after").await;
    assert_eq!(
        offset, 6,
        "nothing acked was lost, nothing unacked was stored"
    );
    let delivered = messages(&mut y, 1).await;
    assert_eq!(delivered[0].client_id, "after-1", "fan-out works again");
    y.send(&protocol::ClientFrame::History {
        room: "ops".into(),
        before: None,
        limit: None,
    })
    .await;
    match y.recv().await {
        ServerFrame::History { messages, .. } => {
            assert_eq!(offsets(&messages), vec![1, 2, 3, 4, 5, 6]);
        }
        other => panic!("expected history, got {other:?}"),
    }
}

#[tokio::test]
async fn wiped_redis_gives_rooms_a_new_epoch_and_clients_recovered_false() {
    let mut redis = Redis::start().await;
    let a = ServerProc::start("server-a", &redis.url(), FAST).await;
    let mut x = login(&a, "x").await;
    let joined = x.join("ops").await;
    for i in 0..3 {
        x.submit("ops", &format!("m{i}"), "hi").await;
    }
    collect(&mut x, 3, 3).await;
    redis.shutdown().await;
    redis.wipe();
    redis.restart().await;
    // The instance notices the new epoch when its subscription comes back
    // and asks the room's members to reconnect.
    let code = loop {
        match x.next_within(SLOW).await {
            Incoming::Close(code) => break code,
            Incoming::Ended => break None,
            Incoming::Frame(_) => {}
        }
    };
    assert_eq!(code, Some(1013));
    let mut back = login_as(&a, "x", x.token()).await;
    let rejoined = back
        .join_since(
            "ops",
            Since {
                epoch: joined.epoch.clone(),
                offset: 3,
            },
        )
        .await;
    assert!(!rejoined.recovered);
    assert_ne!(rejoined.epoch, joined.epoch, "a new epoch");
    assert_eq!(rejoined.offset, 0);
    assert!(rejoined.history.is_empty());
    assert_eq!(back.send_acked("ops", "new-1", "fresh").await, 1);
}

#[tokio::test]
async fn killed_pubsub_connection_loses_nothing() {
    let redis = Redis::start().await;
    let a = ServerProc::start("server-a", &redis.url(), FAST).await;
    let b = ServerProc::start("server-b", &redis.url(), FAST).await;
    let mut writer = login(&a, "writer").await;
    writer.join("feed").await;
    let mut reader = login(&b, "reader").await;
    reader.join("feed").await;
    saw_join(&mut writer, reader.user()).await;

    const TOTAL: u64 = 200;
    let sender = tokio::spawn(async move {
        for i in 0..TOTAL {
            let id = format!("f-{i}");
            writer.submit("feed", &id, "x").await;
            writer.expect_ack_skipping(&id).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut seen = Vec::new();
    let mut killed = false;
    while (seen.len() as u64) < TOTAL {
        if let ServerFrame::Message(m) = reader.recv().await {
            seen.push(m.offset);
        }
        if !killed && seen.len() == 40 {
            let mut conn = redis.conn().await;
            let n: u64 = redis::cmd("CLIENT")
                .arg(&["KILL", "TYPE", "pubsub"])
                .query_async(&mut conn)
                .await
                .expect("client kill");
            assert!(n >= 2, "both instances' pub/sub connections were killed");
            killed = true;
        }
    }
    sender.await.expect("sender");
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_killed_instance_users_leave_presence_within_the_ttl() {
    let redis = Redis::start().await;
    let ttl = ["--presence-ttl-ms", "1500"];
    let mut a = ServerProc::start("server-a", &redis.url(), &ttl).await;
    let b = ServerProc::start("server-b", &redis.url(), &ttl).await;
    let mut gone = login(&a, "gone").await;
    gone.join("lobby").await;
    let mut stays = login(&b, "stays").await;
    let joined = stays.join("lobby").await;
    assert!(joined.members.iter().any(|u| u == gone.user()));
    let killed_at = Instant::now();
    a.kill9().await;
    let left = timeout(SLOW, async {
        loop {
            if let ServerFrame::Presence { left, .. } = stays.recv_slow(SLOW).await {
                if left.iter().any(|u| u.id == gone.user().id) {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        left.is_ok(),
        "no presence left for the killed instance's user"
    );
    assert!(
        killed_at.elapsed() < Duration::from_millis(1500 * 3),
        "left after {:?}",
        killed_at.elapsed()
    );
    // The rooms index follows within one refresh (the sweep that announced
    // the leave counts the room, then writes the index).
    let counted = timeout(SLOW, async {
        loop {
            let rooms = crate::costs::all_rooms(&mut stays, 100).await;
            if rooms == [("lobby".to_owned(), 1)] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "lobby not counted 1 after the sweep");
}

/// Issue 17, input 6: `rooms` reads one index in Redis, a bounded page at a
/// time, the busiest first across instances; a leave updates it.
#[tokio::test]
async fn rooms_pages_come_from_the_partitioned_index_across_instances() {
    let redis = Redis::start().await;
    let a = ServerProc::start("server-a", &redis.url(), FAST).await;
    let b = ServerProc::start("server-b", &redis.url(), FAST).await;
    let mut clients = Vec::new();
    for k in 1..=4u64 {
        for m in 0..k {
            let server = if m % 2 == 0 { &a } else { &b };
            let mut c = login(server, &format!("u{k}-{m}")).await;
            c.join(&format!("busy{k}")).await;
            clients.push(c);
        }
    }
    let mut lister = login(&b, "lister").await;
    let want: Vec<(String, u64)> = (1..=4u64).rev().map(|k| (format!("busy{k}"), k)).collect();
    assert_eq!(crate::costs::all_rooms(&mut lister, 3).await, want);
    let mut conn = redis.conn().await;
    let mut indexed = [0u64; 3];
    for p in 0..16 {
        for (i, (kind, what)) in [("ZCARD", "active"), ("ZCARD", "order"), ("HLEN", "count")]
            .into_iter()
            .enumerate()
        {
            let n: u64 = redis::cmd(kind)
                .arg(format!("chat:{{rooms:{p}}}:{what}"))
                .query_async(&mut conn)
                .await
                .unwrap();
            indexed[i] += n;
        }
    }
    assert_eq!(
        indexed,
        [4, 4, 4],
        "one index entry per active room, over the partitions"
    );
    // The last of busy1 leaves: the room is gone from the index.
    let last = clients.remove(0);
    last.close().await;
    let gone = timeout(SLOW, async {
        loop {
            let rooms = crate::costs::all_rooms(&mut lister, 3).await;
            if rooms.len() == 3 {
                return rooms;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("busy1 left the index");
    assert_eq!(gone, want[..3]);
}

#[tokio::test]
async fn rediss_with_a_password_and_a_private_ca_works() {
    let dir = TempDir::new("tls");
    let tls = Tls::make(dir.path());
    let redis = Redis::start_tls("s3cret-pass", &tls).await;
    let ca = tls.ca.to_string_lossy().into_owned();
    let a = ServerProc::start("server-a", &redis.tls_url(), &["--redis-ca-cert", &ca]).await;
    let b = ServerProc::start("server-b", &redis.tls_url(), &["--redis-ca-cert", &ca]).await;
    wait_ready(&a, 200).await;
    let mut x = login(&a, "x").await;
    x.join("secure").await;
    let mut y = login(&b, "y").await;
    y.join("secure").await;
    saw_join(&mut x, y.user()).await;
    let id = unique_id("tls");
    x.send_acked("secure", &id, "over TLS").await;
    let got = messages(&mut y, 1).await;
    assert_eq!(got[0].body, "over TLS");

    // The password is really checked: a wrong one is not ready.
    let wrong = redis.tls_url().replace("s3cret-pass", "wrong-pass");
    let c = ServerProc::start("server-c", &wrong, &["--redis-ca-cert", &ca]).await;
    wait_ready(&c, 503).await;
}

/// Issue 19, input 2: a primary demoted to a replica (`REPLICAOF`) still
/// answers PING, but refuses writes; the instance is not ready while it
/// cannot write, and ready again once it can.
#[tokio::test]
async fn a_demoted_primary_makes_the_instance_not_ready_until_writes_succeed() {
    let primary = Redis::start().await;
    let other = Redis::start().await;
    let server = ServerProc::start("server-a", &primary.url(), &[]).await;
    wait_ready(&server, 200).await;
    let mut conn = primary.conn().await;
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(other.port)
        .query_async::<()>(&mut conn)
        .await
        .expect("REPLICAOF");
    wait_ready(&server, 503).await;
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async::<()>(&mut conn)
        .await
        .expect("REPLICAOF NO ONE");
    wait_ready(&server, 200).await;
}

/// Issue 19, input 6: presence expires by the store's clock. With one
/// instance's clock 40 s ahead of or behind the other's (Debian's
/// libfaketime), sweeps compared the other instance's entries with their
/// own clock and made users leave and come back on every refresh; now
/// nobody's presence changes, whichever way the clock is off.
#[tokio::test]
async fn an_instance_whose_clock_is_40_s_off_makes_no_presence_flap() {
    for offset in ["+40s", "-40s"] {
        let redis = Redis::start().await;
        let ttl = ["--presence-ttl-ms", "1500"];
        let a = ServerProc::start("server-a", &redis.url(), &ttl).await;
        let b = ServerProc::start_skewed("server-b", &redis.url(), &ttl, offset).await;
        let mut alice = login(&a, "alice").await;
        alice.join("lobby").await;
        let mut bob = login(&b, "bob").await;
        let joined = bob.join("lobby").await;
        assert!(
            joined.members.contains(alice.user()),
            "{offset}: {:?}",
            joined.members
        );
        saw_join(&mut alice, bob.user()).await;
        // Six refresh cycles of each instance (every 500 ms).
        for client in [&mut alice, &mut bob] {
            let heard = timeout(Duration::from_secs(3), client.recv_slow(SLOW)).await;
            assert!(heard.is_err(), "{offset}: presence changed: {heard:?}");
        }
        let joined = alice.join("lobby").await;
        assert_eq!(joined.members.len(), 2, "{offset}: {:?}", joined.members);
    }
}

/// The keys of rooms `fresh-*`, and the rooms index entries naming them.
async fn fresh_room_keys(redis: &Redis) -> (Vec<String>, Vec<String>) {
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("chat:{fresh-*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let indexed: Vec<String> = redis::cmd("ZRANGE")
        .arg("chat:rooms")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("ZRANGE");
    (
        keys,
        indexed
            .into_iter()
            .filter(|r| r.starts_with("fresh-"))
            .collect(),
    )
}

/// Issue 17, input 3: one socket joins and leaves 300 rooms with fresh
/// names (posting in the last). Every key those rooms left in Redis expires: the
/// rooms that never had a message one presence TTL after their last member
/// left, the one with a message once the retention has passed without
/// activity; then none is left, nor any entry of the rooms index.
#[tokio::test]
async fn rooms_left_idle_leave_nothing_in_redis_after_the_retention() {
    let redis = Redis::start().await;
    let args = [
        FAST,
        &["--room-retention-secs", "2", "--presence-ttl-ms", "1000"],
    ]
    .concat();
    let a = ServerProc::start("server-a", &redis.url(), &args).await;
    let mut roamer = login(&a, "roamer").await;
    for i in 0..300 {
        let room = format!("fresh-{i}");
        roamer.join(&room).await;
        // The last room gets a message: created last, its retention has
        // not run out when the keys are read, however slow the loop was.
        if i == 299 {
            roamer.post(&room, "hello").await;
        }
        roamer.leave(&room).await;
    }
    let (keys, _) = fresh_room_keys(&redis).await;
    let kept = |key: &str| key.starts_with("chat:{fresh-299}:");
    assert!(keys.iter().any(|k| kept(k)), "{keys:?}");
    let mut conn = redis.conn().await;
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // -2: expired since KEYS (on a slow run), 0: expiring this very
        // millisecond; -1 would be a key kept for ever. A room without
        // messages lives one presence TTL.
        let most = if kept(key) { 2_000 } else { 1_000 };
        assert!(
            ttl == -2 || (0..=most).contains(&ttl),
            "{key} has PTTL {ttl}"
        );
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (keys, _) = fresh_room_keys(&redis).await;
    assert!(
        keys.iter().all(|k| kept(k)),
        "only the room with a message is kept: {keys:?}"
    );
    tokio::time::sleep(Duration::from_millis(1_400)).await;
    assert_eq!(
        fresh_room_keys(&redis).await,
        (vec![], vec![]),
        "nothing left"
    );
}

/// Issue 17, inputs 1 and 2, with the default presence grace (5 s): a user
/// who reloads (the socket closes, the same token reconnects within a
/// second, to the other instance, and re-joins) and one who toggles
/// join/leave 300 times change nothing the other members see.
#[tokio::test]
async fn reloads_and_toggles_within_the_grace_change_no_presence() {
    let redis = Redis::start().await;
    let grace = [FAST, &["--presence-grace-ms", "5000"]].concat();
    let a = ServerProc::start("server-a", &redis.url(), &grace).await;
    let b = ServerProc::start("server-b", &redis.url(), &grace).await;
    let mut bob = login(&b, "bob").await;
    bob.join("ops").await;
    let mut alice = login(&a, "alice").await;
    alice.join("ops").await;
    saw_join(&mut bob, alice.user()).await;
    let mut carol = login(&a, "carol").await;
    carol.join("ops").await;
    saw_join(&mut bob, carol.user()).await;

    // A reload, onto the other instance.
    let token = alice.token().to_owned();
    drop(alice);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut alice = login_as(&b, "alice", &token).await;
    alice.join("ops").await;
    // 300 toggles.
    for _ in 0..300 {
        carol.leave("ops").await;
        carol.join("ops").await;
    }
    // Past the grace of every leave: none was announced.
    tokio::time::sleep(Duration::from_secs(6)).await;
    bob.ping().await;
    alice.ping().await;
}
