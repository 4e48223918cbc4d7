//! Redis misbehaving, on real `redis-server` and real server processes:
//! each test injects one fault of issue 19 for real and asserts that every
//! acked message reaches every connected member once, in order, or that
//! the members are reset and re-join with `recovered: false`; never a gap.

use crate::cluster::{
    collect, login, login_as, messages, saw_join, send_until_acked, wait_ready, FAST, SLOW,
};
use crate::procs::{Proxy, Redis, ServerProc};
use crate::support::{offsets, Client, Incoming, Joined};
use protocol::{ServerFrame, Since};
use std::time::Duration;

/// Reads until the server closes the connection; returns the close code.
/// Frames before it may be anything a live room sends.
async fn closed(client: &mut Client) -> Option<u16> {
    loop {
        match client.next_within(SLOW).await {
            Incoming::Close(code) => return code,
            Incoming::Ended => return None,
            Incoming::Frame(_) => {}
        }
    }
}

/// Logs `client`'s user in again on `server` and re-joins `room` from
/// `since`, as the web client does after a 1013.
async fn rejoin(
    server: &ServerProc,
    client: &Client,
    room: &str,
    since: Since,
) -> (Client, Joined) {
    let mut back = login_as(server, &client.user().name, client.token()).await;
    let joined = back.join_since(room, since).await;
    (back, joined)
}

/// Alice on instance `a` and Bob on instance `b`, both in room `ops`,
/// Alice having seen Bob arrive; returns Alice's `joined` too.
async fn alice_and_bob(a: &ServerProc, b: &ServerProc) -> (Client, Joined, Client) {
    let mut alice = login(a, "alice").await;
    let joined = alice.join("ops").await;
    let mut bob = login(b, "bob").await;
    bob.join("ops").await;
    saw_join(&mut alice, bob.user()).await;
    (alice, joined, bob)
}

/// Alice sends `m<i>` for each offset of `range`, each acked at that offset
/// (retrying `unavailable`); returns what Bob then receives, which must be
/// those offsets in order.
async fn exchange(
    alice: &mut Client,
    bob: &mut Client,
    range: std::ops::RangeInclusive<u64>,
    body: &str,
) -> Vec<protocol::ChatMessage> {
    let want: Vec<u64> = range.collect();
    for &i in &want {
        assert_eq!(
            send_until_acked(alice, "ops", &format!("m{i}"), body).await,
            i
        );
    }
    let got = messages_within(bob, want.len()).await;
    assert_eq!(offsets(&got), want);
    got
}

/// A room with Alice on instance A and Bob on instance B, who both got
/// offsets 1..=8; returns the epoch.
async fn eight_messages(a: &ServerProc, b: &ServerProc) -> (Client, Client, String) {
    let (mut alice, joined, mut bob) = alice_and_bob(a, b).await;
    for i in 1..=8 {
        alice.submit("ops", &format!("m{i}"), "before").await;
    }
    let (acks, _) = collect(&mut alice, 8, 8).await;
    assert_eq!(acks, (1..=8).collect::<Vec<_>>());
    assert_eq!(
        offsets(&messages(&mut bob, 8).await),
        (1..=8).collect::<Vec<_>>()
    );
    (alice, bob, joined.epoch)
}

/// Issue 19, input 1: Redis restored from a backup taken at offset 5 while
/// members were given 1..=8. Whether the instances see it first on
/// catch-up (their pub/sub reconnects) or on Alice's publish, the room gets
/// a new epoch and both members are reset; they re-join with
/// `recovered: false` and get the store's history, holding every message
/// acked after the restore; the next message reaches Bob.
#[tokio::test]
async fn a_restore_from_an_older_snapshot_resets_the_room_and_loses_no_acked_message() {
    let mut redis = Redis::start().await;
    let a = ServerProc::start("server-a", &redis.url(), FAST).await;
    let b = ServerProc::start("server-b", &redis.url(), FAST).await;
    wait_ready(&a, 200).await;
    let (mut alice, joined, mut bob) = alice_and_bob(&a, &b).await;
    for i in 1..=5 {
        alice.submit("ops", &format!("m{i}"), "before").await;
    }
    collect(&mut alice, 5, 5).await;
    messages(&mut bob, 5).await;
    let backup = redis.snapshot().await;
    for i in 6..=8 {
        alice.submit("ops", &format!("m{i}"), "lost").await;
    }
    collect(&mut alice, 3, 3).await;
    assert_eq!(offsets(&messages(&mut bob, 3).await), vec![6, 7, 8]);

    redis.kill9().await;
    redis.restore(&backup);
    redis.restart().await;
    wait_ready(&a, 200).await;
    // As the issue tells it: Alice sends at once. Acked or not (her room
    // may be reset first), it must not be lost if acked.
    alice.submit("ops", "after-restore", "after restore").await;
    let mut acked = None;
    let code = loop {
        match alice.next_within(SLOW).await {
            Incoming::Frame(ServerFrame::Ack { id, offset, .. }) if id == "after-restore" => {
                acked = Some(offset)
            }
            Incoming::Frame(_) => {}
            Incoming::Close(code) => break code,
            Incoming::Ended => break None,
        }
    };
    assert_eq!(code, Some(1013), "alice's room is reset");
    assert_eq!(closed(&mut bob).await, Some(1013), "bob's room is reset");

    let since = Since {
        epoch: joined.epoch.clone(),
        offset: 8,
    };
    let (mut alice, a_joined) = rejoin(&a, &alice, "ops", since.clone()).await;
    let (mut bob, b_joined) = rejoin(&b, &bob, "ops", since).await;
    for j in [&a_joined, &b_joined] {
        assert!(!j.recovered);
        assert_ne!(j.epoch, joined.epoch, "a new epoch, the same on both");
        assert_eq!(j.epoch, a_joined.epoch);
        let bodies: Vec<&str> = j.history.iter().map(|m| m.client_id.as_str()).collect();
        let mut want = vec!["m1", "m2", "m3", "m4", "m5"];
        if acked.is_some() {
            want.push("after-restore");
        }
        assert_eq!(bodies, want, "the store's history, acked messages included");
    }
    // The resend of an unacked message (or a duplicate of an acked one)
    // lands once; Bob gets it live.
    let offset = send_until_acked(&mut alice, "ops", "after-restore", "after restore").await;
    assert_eq!(Some(offset), acked.or(Some(6)));
    send_until_acked(&mut alice, "ops", "next", "next").await;
    let live = messages(&mut bob, if acked.is_some() { 1 } else { 2 }).await;
    assert_eq!(live.last().unwrap().client_id, "next");
    assert_eq!(live.last().unwrap().offset, 7);
}

/// Deletes the room's messages after offset 5 on the live store, as a
/// failover to a replica that lagged or a truncated AOF leaves it (the
/// instances' connections stay up: no resync shows it).
async fn lose_history_after_5(redis: &Redis) {
    let mut conn = redis.conn().await;
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg("chat:{ops}:meta")
        .arg("offset")
        .arg(5)
        .ignore()
        .cmd("XDEL")
        .arg("chat:{ops}:log")
        .arg(&["6-0", "7-0", "8-0"][..])
        .ignore()
        .cmd("XSETID")
        .arg("chat:{ops}:log")
        .arg("5-0")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("rewrite the room");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("chat:{ops}:d:*")
        .query_async(&mut conn)
        .await
        .expect("dedupe keys");
    for key in keys {
        let offset: u64 = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if offset > 5 {
            let _: () = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}

async fn store_epoch(redis: &Redis) -> String {
    let mut conn = redis.conn().await;
    redis::cmd("HGET")
        .arg("chat:{ops}:meta")
        .arg("epoch")
        .query_async(&mut conn)
        .await
        .expect("epoch")
}

/// Issue 19, input 1, seen on publish: the store lost 6..=8 while the
/// instances stayed connected. Alice's publish tells the store her
/// instance saw offset 8: the message is stored in a new epoch, and both
/// members are reset.
#[tokio::test]
async fn a_publish_to_a_store_that_lost_history_starts_a_new_epoch() {
    let redis = Redis::start().await;
    let a = ServerProc::start("server-a", &redis.url(), FAST).await;
    let b = ServerProc::start("server-b", &redis.url(), FAST).await;
    let (mut alice, mut bob, epoch) = eight_messages(&a, &b).await;
    lose_history_after_5(&redis).await;
    alice.submit("ops", "after-loss", "after loss").await;
    assert_eq!(closed(&mut alice).await, Some(1013));
    assert_eq!(closed(&mut bob).await, Some(1013));
    let now = store_epoch(&redis).await;
    assert_ne!(now, epoch);
    let since = Since { epoch, offset: 8 };
    let (_bob, joined) = rejoin(&b, &bob, "ops", since).await;
    assert!(!joined.recovered);
    assert_eq!(joined.epoch, now);
    let last = joined.history.last().unwrap();
    assert_eq!((last.offset, last.client_id.as_str()), (6, "after-loss"));
}

/// Issue 19, input 1, seen on the transport: Carol, on an instance that
/// joined after the loss, cannot tell; her message reaches A and B at
/// offset 6, at or below what they delivered: they give the room a new
/// epoch and reset their members, Carol's included by the announcement.
#[tokio::test]
async fn an_offset_that_goes_back_on_pubsub_starts_a_new_epoch() {
    let redis = Redis::start().await;
    let a = ServerProc::start("server-a", &redis.url(), FAST).await;
    let b = ServerProc::start("server-b", &redis.url(), FAST).await;
    let (mut alice, mut bob, epoch) = eight_messages(&a, &b).await;
    lose_history_after_5(&redis).await;
    let c = ServerProc::start("server-c", &redis.url(), FAST).await;
    let mut carol = login(&c, "carol").await;
    let joined = carol.join("ops").await;
    assert_eq!((joined.epoch.as_str(), joined.offset), (epoch.as_str(), 5));
    assert_eq!(
        send_until_acked(&mut carol, "ops", "from-carol", "hi").await,
        6
    );
    assert_eq!(closed(&mut alice).await, Some(1013));
    assert_eq!(closed(&mut bob).await, Some(1013));
    assert_eq!(
        closed(&mut carol).await,
        Some(1013),
        "the announcement resets C too"
    );
    let now = store_epoch(&redis).await;
    assert_ne!(now, epoch);
    let since = Since { epoch, offset: 8 };
    let (_alice, joined) = rejoin(&a, &alice, "ops", since).await;
    assert!(!joined.recovered);
    assert_eq!(joined.epoch, now);
    let last = joined.history.last().unwrap();
    assert_eq!(
        (last.offset, last.client_id.as_str()),
        (6, "from-carol"),
        "acked, kept"
    );
}

/// Reads messages until `n` arrived, waiting up to [`SLOW`] for each (a
/// reconnect's backoff and catch-up come first).
pub(crate) async fn messages_within(client: &mut Client, n: usize) -> Vec<protocol::ChatMessage> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match client.next_within(SLOW).await {
            Incoming::Frame(ServerFrame::Message(m)) => got.push(m),
            Incoming::Frame(_) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
    got
}

/// Runs a command on a control connection of the test's own to `redis`
/// (no response timeout: `DEBUG POPULATE` of millions of keys takes seconds).
pub(crate) async fn redis_cmd(redis: &Redis, args: &[&str]) -> redis::Value {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("control connection");
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Waits until `replica` has synced from its primary.
async fn synced(replica: &Redis) {
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let info: String = match redis_cmd(replica, &["INFO", "replication"]).await {
            redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
            redis::Value::VerbatimString { text, .. } => text,
            other => panic!("{other:?}"),
        };
        if info.contains("master_link_status:up") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica never synced: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 19, input 2: R1 is demoted to a replica of R2 (`REPLICAOF`), as
/// a failover does. While the name the instances use (the test's proxy)
/// still leads to R1, no write can succeed: `/readyz` answers 503. Once it
/// leads to R2, the instances' open connections to R1 answer READONLY,
/// are dropped and re-made through the proxy, and `/readyz` answers 200;
/// every message acked before and after reaches Bob once, in order.
#[tokio::test]
async fn a_demoted_primary_is_left_for_the_new_one_behind_the_same_name() {
    let r1 = Redis::start().await;
    let r2 = Redis::start().await;
    redis_cmd(&r2, &["REPLICAOF", "127.0.0.1", &r1.port.to_string()]).await;
    synced(&r2).await;
    let proxy = Proxy::start(r1.port).await;
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let a = ServerProc::start("server-a", &url, FAST).await;
    let b = ServerProc::start("server-b", &url, FAST).await;
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let (mut alice, _, mut bob) = alice_and_bob(&a, &b).await;
    exchange(&mut alice, &mut bob, 1..=3, "before").await;

    // The failover: R2 promoted, R1 demoted; the name still leads to R1.
    redis_cmd(&r2, &["REPLICAOF", "NO", "ONE"]).await;
    redis_cmd(&r1, &["REPLICAOF", "127.0.0.1", &r2.port.to_string()]).await;
    synced(&r1).await;
    wait_ready(&a, 503).await;
    wait_ready(&b, 503).await;
    // The name moves to R2.
    proxy.switch(r2.port);
    let moved = tokio::time::Instant::now();
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    eprintln!("ready again {:?} after the name moved", moved.elapsed());
    exchange(&mut alice, &mut bob, 4..=6, "after").await;
    // Once each: the next message Bob gets is the next one sent.
    exchange(&mut alice, &mut bob, 7..=7, "last").await;
}

/// Issue 19, input 2, ACL: a Redis user without a command the server's
/// scripts need (here XADD) makes the instance not ready, with a log line
/// naming the command; granting it makes the instance ready.
#[tokio::test]
async fn a_redis_user_missing_a_permission_is_not_ready_and_named_in_the_log() {
    let redis = Redis::start().await;
    redis_cmd(
        &redis,
        &[
            "ACL", "SETUSER", "chat", "on", ">chat-pw", "~*", "&*", "+@all", "-xadd",
        ],
    )
    .await;
    let url = format!("redis://chat:chat-pw@127.0.0.1:{}", redis.port);
    let a = ServerProc::start("server-a", &url, FAST).await;
    wait_ready(&a, 503).await;
    let (_, body) = crate::support::http_get(a.addr, "/readyz").await;
    assert!(body.to_lowercase().contains("xadd"), "{body}");
    let deadline = tokio::time::Instant::now() + SLOW;
    while !a.logged(&["lacks a permission", "XADD"]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line names xadd"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis_cmd(&redis, &["ACL", "SETUSER", "chat", "+xadd"]).await;
    wait_ready(&a, 200).await;
    let mut alice = login(&a, "alice").await;
    alice.join("ops").await;
    assert_eq!(send_until_acked(&mut alice, "ops", "m1", "hi").await, 1);
}

/// The Redis sockets of the server processes talking to `port` that have
/// a keepalive timer (`ss -o` shows `timer:(keepalive,…)`), and all of them.
fn keepalive_sockets(port: u16) -> (usize, usize) {
    let out = std::process::Command::new("ss")
        .args([
            "-tnoH",
            "state",
            "established",
            &format!("( dport = :{port} )"),
        ])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let all = text.lines().count();
    let with = text.lines().filter(|l| l.contains("keepalive")).count();
    (with, all)
}

/// Issue 19, input 3: the flows between the instances and Redis are
/// silently dropped (the proxy stops forwarding both ways, no RST). A
/// command that times out counts as a dead connection: the next is made
/// at once and the send is acked; the pub/sub connection's ping times out
/// and it is re-made, and the room's catch-up delivers what it missed:
/// every message reaches Bob once, in order. Every Redis socket has TCP
/// keepalive.
#[tokio::test]
async fn silently_dropped_redis_connections_are_replaced() {
    let redis = Redis::start().await;
    let proxy = Proxy::start(redis.port).await;
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let a = ServerProc::start("server-a", &url, FAST).await;
    let b = ServerProc::start("server-b", &url, FAST).await;
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let (mut alice, _, mut bob) = alice_and_bob(&a, &b).await;
    exchange(&mut alice, &mut bob, 1..=3, "before").await;
    let (with, all) = keepalive_sockets(proxy.port);
    assert!(all >= 4, "two command and two pub/sub connections: {all}");
    assert_eq!(with, all, "every Redis socket has TCP keepalive");

    proxy.blackhole();
    let dropped = tokio::time::Instant::now();
    for i in 4..=6 {
        assert_eq!(
            send_until_acked(&mut alice, "ops", &format!("m{i}"), "after").await,
            i
        );
    }
    eprintln!("acked 3 sends {:?} after the drop", dropped.elapsed());
    let got = messages_within(&mut bob, 3).await;
    eprintln!("bob had them {:?} after the drop", dropped.elapsed());
    assert_eq!(offsets(&got), vec![4, 5, 6]);
    // Once each: the next message Bob gets is the next one sent.
    exchange(&mut alice, &mut bob, 7..=7, "last").await;
    wait_ready(&a, 200).await;
}

/// Issue 19, input 7: the engine works on Redis 5.0.6 (no `ZADD GT`, no
/// ACL users), so on every 6.0 a managed service offers: two instances,
/// presence both ways, messages across them in order, history, the rooms
/// list, a leave, readiness.
#[tokio::test]
async fn the_engine_works_on_redis_5_0() {
    let redis = Redis::start_5_0().await;
    let version = match redis_cmd(&redis, &["INFO", "server"]).await {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(version.contains("redis_version:5.0.6"), "{version}");
    let a = ServerProc::start("server-a", &redis.url(), FAST).await;
    let b = ServerProc::start("server-b", &redis.url(), FAST).await;
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let mut alice = login(&a, "alice").await;
    alice.join("ops").await;
    let mut bob = login(&b, "bob").await;
    let joined = bob.join("ops").await;
    assert!(
        joined.members.contains(alice.user()),
        "{:?}",
        joined.members
    );
    saw_join(&mut alice, bob.user()).await;
    exchange(&mut alice, &mut bob, 1..=3, "hi").await;
    bob.send(&protocol::ClientFrame::History {
        room: "ops".into(),
        before: None,
        limit: None,
    })
    .await;
    match bob.recv().await {
        ServerFrame::History { messages, .. } => assert_eq!(offsets(&messages), vec![1, 2, 3]),
        other => panic!("expected history, got {other:?}"),
    }
    bob.send(&protocol::ClientFrame::Rooms {
        cursor: None,
        limit: None,
    })
    .await;
    match bob.recv().await {
        ServerFrame::Rooms { rooms, .. } => {
            assert_eq!(rooms.len(), 1, "{rooms:?}");
            assert_eq!((rooms[0].room.as_str(), rooms[0].members), ("ops", 2));
        }
        other => panic!("expected rooms, got {other:?}"),
    }
    bob.send(&protocol::ClientFrame::Leave { room: "ops".into() })
        .await;
    loop {
        match alice.next_within(SLOW).await {
            Incoming::Frame(ServerFrame::Presence { left, .. }) if left.contains(bob.user()) => {
                break
            }
            Incoming::Frame(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// Clients in the join burst, and rooms they spread over.
const BURST: usize = 5_000;
const BURST_ROOMS: usize = 50;
/// Keys of the large data set that makes a restarted Redis answer LOADING
/// for a while.
const LARGE_DATA_SET: &str = "2000000";

/// Issue 19, input 4: 5,000 clients on two instances send `join` while
/// Redis is down and then restarting with a large data set (it refuses
/// connections, then answers LOADING): every join is answered `joined`
/// once the store is back; none is refused, none lost.
#[tokio::test]
async fn a_join_burst_across_a_redis_restart_is_answered_once_the_store_is_back() {
    let mut redis = Redis::start().await;
    redis_cmd(
        &redis,
        &["DEBUG", "POPULATE", LARGE_DATA_SET, "filler", "64"],
    )
    .await;
    redis_cmd(&redis, &["BGREWRITEAOF"]).await;
    loop {
        let info = match redis_cmd(&redis, &["INFO", "persistence"]).await {
            redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        };
        if info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let args = [
        FAST,
        &["--max-conns-per-ip", "10000", "--join-wait-ms", "60000"],
    ]
    .concat();
    let a = ServerProc::start("server-a", &redis.url(), &args).await;
    let b = ServerProc::start("server-b", &redis.url(), &args).await;
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    use futures_util::StreamExt;
    let clients: Vec<Client> = futures_util::stream::iter(0..BURST)
        .map(|i| {
            let url = if i % 2 == 0 { a.ws_url() } else { b.ws_url() };
            async move {
                let mut c = Client::connect_url(&url).await;
                c.hello(&format!("user{i}")).await;
                c
            }
        })
        .buffered(100)
        .collect()
        .await;

    redis.shutdown().await;
    let joins = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| async move {
            c.send(&protocol::ClientFrame::Join {
                room: format!("burst-{}", i % BURST_ROOMS),
                since: None,
            })
            .await;
            loop {
                match c.next_within(Duration::from_secs(90)).await {
                    Incoming::Frame(ServerFrame::Joined { room, .. }) => return (room, c),
                    Incoming::Frame(ServerFrame::Presence { .. }) => {}
                    other => panic!("join {i} answered {other:?}"),
                }
            }
        });
    let burst = tokio::spawn(futures_util::future::join_all(joins));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted = tokio::time::Instant::now();
    redis.restart_nowait();
    redis.wait_answering().await;
    eprintln!("redis loaded its data set in {:?}", restarted.elapsed());
    let answered = burst.await.expect("every join answered");
    eprintln!(
        "{} joins answered {:?} after the restart",
        answered.len(),
        restarted.elapsed()
    );
    assert_eq!(answered.len(), BURST);
    for (i, (room, _)) in answered.iter().enumerate() {
        assert_eq!(*room, format!("burst-{}", i % BURST_ROOMS));
    }
}

/// Issue 19, input 8: a second live instance with the same id refuses to
/// start, saying why; once the first is gone (here killed: its claim
/// expires within one presence TTL), an instance with that id starts.
#[tokio::test]
async fn a_second_live_instance_with_the_same_id_refuses_to_start() {
    let redis = Redis::start().await;
    let ttl = ["--presence-ttl-ms", "2000"];
    let mut first = ServerProc::start("same-id", &redis.url(), &ttl).await;
    wait_ready(&first, 200).await;
    let (ok, output) = ServerProc::run_to_exit("same-id", &redis.url(), &ttl).await;
    assert!(!ok, "{output}");
    assert!(
        output.contains("in use by another live instance"),
        "{output}"
    );
    first.kill9().await;
    let again = ServerProc::start("same-id", &redis.url(), &ttl).await;
    wait_ready(&again, 200).await;
}

/// Messages of the intake burst.
const BURST_MESSAGES: u64 = 1000;

/// The value of a counter in a server's `/metrics`, summed over labels
/// that contain `label`.
async fn counter(server: &ServerProc, name: &str, label: &str) -> f64 {
    let (_, text) = crate::support::http_get(server.addr, "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Issue 19, input 5: instance B's hub can hold one engine event at a time
/// (`--intake-capacity 1`), so a burst of messages overflows it: the
/// pub/sub intake drops instead of buffering without bound (counted), and
/// the room catches up from the stream: Bob gets them all, in order, once.
#[tokio::test]
async fn a_lagging_hub_drops_at_the_intake_and_fills_from_the_stream() {
    let redis = Redis::start().await;
    let a = ServerProc::start("server-a", &redis.url(), FAST).await;
    let small = [
        FAST,
        &["--intake-capacity", "1", "--outbox-capacity", "100000"],
    ]
    .concat();
    let b = ServerProc::start("server-b", &redis.url(), &small).await;
    let mut alice = login(&a, "alice").await;
    alice.join("ops").await;
    // Members on B make each delivery cost its hub more than the intake
    // takes to read a message, so the hub falls behind.
    let mut crowd = Vec::new();
    for i in 0..200 {
        let mut c = login(&b, &format!("crowd{i}")).await;
        c.join("ops").await;
        crowd.push(c);
    }
    let mut bob = login(&b, "bob").await;
    bob.join("ops").await;
    saw_join(&mut alice, bob.user()).await;
    for i in 1..=BURST_MESSAGES {
        alice.submit("ops", &format!("m{i}"), "burst").await;
    }
    let got = messages_within(&mut bob, BURST_MESSAGES as usize).await;
    assert_eq!(offsets(&got), (1..=BURST_MESSAGES).collect::<Vec<_>>());
    let dropped = counter(&b, "chat_intake_dropped_total", "message").await;
    assert!(dropped > 0.0, "the burst overflowed the intake: {dropped}");
    eprintln!("{dropped} messages dropped at the intake, all delivered from the stream");
}
