//! The archive (issue 14) behind the in-process engine: a real SQLite
//! file in a temporary directory, as `make run` keeps one under
//! `--data-dir`, and a real PostgreSQL the test starts itself. The server
//! restarted keeps history, epochs and offsets; scroll-back and recovery
//! reach past the hot store's cap.

use crate::cluster::{login, saw_join, send_until_acked, wait_ready, FAST, SLOW};
use crate::faults::{messages_within, redis_cmd};
use crate::procs::{Postgres, Proxy, Redis, RedisCluster, ServerProc, TempDir};
use crate::redis_cluster::rooms_on_every_master;
use crate::support::{offsets, unthrottled, Client, TestServer};
use protocol::{ChatMessage, ClientFrame, ServerFrame, Since};
use server::config::Config;
use std::time::Duration;

const ROOM: &str = "lobby";

fn archived_at(dir: &TempDir) -> Config {
    let mut cfg = unthrottled();
    cfg.database_url = Some(format!(
        "sqlite://{}",
        dir.path().join("nested/chat.db").display()
    ));
    cfg
}

/// One `history` page of `room`: the newest `limit` messages before `before`.
async fn history(
    client: &mut Client,
    room: &str,
    before: Option<u64>,
    limit: u64,
) -> Vec<ChatMessage> {
    client
        .send(&ClientFrame::History {
            room: room.to_owned(),
            before,
            limit: Some(limit),
        })
        .await;
    // Presence of the room's other members may come first.
    loop {
        match client.recv().await {
            ServerFrame::History { messages, .. } => return messages,
            ServerFrame::Presence { .. } | ServerFrame::Typing { .. } => {}
            other => panic!("expected history, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_restarted_server_keeps_history_epochs_and_offsets() {
    let dir = TempDir::new("archive-restart");
    let server = TestServer::start(archived_at(&dir)).await;
    let mut alice = server.login("alice").await;
    let first = alice.join(ROOM).await;
    let sent = alice.post_many(ROOM, 5).await;
    let since = Since {
        epoch: first.epoch.clone(),
        offset: 2,
    };
    alice.close().await;
    server.stop().await.expect("graceful stop");

    // The file was created, directory and all, on first start.
    assert!(dir.path().join("nested/chat.db").is_file());

    let server = TestServer::start(archived_at(&dir)).await;
    let mut bob = server.login("bob").await;
    let joined = bob.join_since(ROOM, since).await;
    assert!(joined.recovered, "the same epoch, every message since 2");
    assert_eq!(joined.epoch, first.epoch);
    assert_eq!(joined.offset, 5);
    assert_eq!(joined.history, sent[2..]);
    // Offsets continue.
    assert_eq!(bob.post(ROOM, "after the restart").await.offset, 6);
    // A plain join sees the messages from before the restart.
    let mut carol = server.login("carol").await;
    let plain = carol.join(ROOM).await;
    assert_eq!(offsets(&plain.history), vec![1, 2, 3, 4, 5, 6]);
    server.stop().await.expect("graceful stop");

    // And a third start still has all of it.
    let server = TestServer::start(archived_at(&dir)).await;
    let mut dave = server.login("dave").await;
    let again = dave.join(ROOM).await;
    assert_eq!(
        (again.epoch.as_str(), again.offset),
        (first.epoch.as_str(), 6)
    );
    assert_eq!(again.history[..5], sent[..]);
}

#[tokio::test]
async fn scroll_back_reaches_the_first_of_2500_messages() {
    let dir = TempDir::new("archive-scroll");
    let mut cfg = archived_at(&dir);
    cfg.history_cap = 1000;
    let server = TestServer::start(cfg).await;
    let mut alice = server.login("alice").await;
    alice.join(ROOM).await;
    let sent = alice.post_many(ROOM, 2500).await;

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = history(&mut alice, ROOM, before, 200).await;
        let Some(first) = page.first() else { break };
        before = Some(first.offset);
        pages.push(page);
    }
    let got: Vec<ChatMessage> = pages.into_iter().rev().flatten().collect();
    assert_eq!(offsets(&got), (1..=2500).collect::<Vec<u64>>());
    assert_eq!(
        got, sent,
        "the archive gives the messages back as they were"
    );
}

#[tokio::test]
async fn recovery_reaches_past_the_hot_store_cap() {
    let dir = TempDir::new("archive-recover");
    let mut cfg = archived_at(&dir);
    cfg.history_cap = 100;
    let server = TestServer::start(cfg).await;
    let mut alice = server.login("alice").await;
    let joined = alice.join(ROOM).await;
    let sent = alice.post_many(ROOM, 600).await;

    let mut bob = server.login("bob").await;
    let back = bob
        .join_since(
            ROOM,
            Since {
                epoch: joined.epoch.clone(),
                offset: 10,
            },
        )
        .await;
    assert!(
        back.recovered,
        "590 messages, 500 of them only in the archive"
    );
    assert_eq!(back.history, sent[10..]);
}

#[tokio::test]
async fn without_an_archive_the_cap_still_bounds_history() {
    let mut cfg = unthrottled();
    cfg.history_cap = 100;
    let server = TestServer::start(cfg).await;
    let mut alice = server.login("alice").await;
    let joined = alice.join(ROOM).await;
    alice.post_many(ROOM, 300).await;
    let page = history(&mut alice, ROOM, Some(150), 200).await;
    assert_eq!(offsets(&page), Vec::<u64>::new(), "1 to 200 are gone");
    let mut bob = server.login("bob").await;
    let back = bob
        .join_since(
            ROOM,
            Since {
                epoch: joined.epoch,
                offset: 10,
            },
        )
        .await;
    assert!(
        !back.recovered,
        "the messages after 10 are gone from memory"
    );
}

#[tokio::test]
async fn a_postgres_archive_keeps_history_epochs_and_offsets_across_restarts() {
    let postgres = crate::procs::Postgres::start().await;
    let mut cfg = unthrottled();
    cfg.history_cap = 50;
    cfg.database_url = Some(postgres.url());
    let server = TestServer::start(cfg.clone()).await;
    let mut alice = server.login("alice").await;
    let first = alice.join(ROOM).await;
    let sent = alice.post_many(ROOM, 300).await;
    alice.close().await;
    server.stop().await.expect("graceful stop");

    let server = TestServer::start(cfg).await;
    let mut bob = server.login("bob").await;
    let back = bob
        .join_since(
            ROOM,
            Since {
                epoch: first.epoch.clone(),
                offset: 100,
            },
        )
        .await;
    assert!(back.recovered);
    assert_eq!(
        (back.epoch.as_str(), back.offset),
        (first.epoch.as_str(), 300)
    );
    assert_eq!(back.history, sent[100..]);
    assert_eq!(bob.post(ROOM, "continued").await.offset, 301);
    let oldest = history(&mut bob, ROOM, Some(3), 10).await;
    assert_eq!(oldest, sent[..2]);
}

// The archive behind Redis: the streams moved into a real PostgreSQL by
// the instances' archivers (a consumer group per stream), real
// `redis-server` and real server processes, faults injected for real.

/// Flags of an instance archiving into `database`, with a small stream cap
/// so that reads go past it, taking over another instance's pending
/// messages after `claim_after` seconds.
fn archiving(database: &str, claim_after: u64) -> Vec<String> {
    let mut args: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "--database-url",
            database,
            "--history-cap",
            "50",
            "--archive-claim-after-secs",
            &claim_after.to_string(),
        ]
        .map(str::to_owned),
    );
    args
}

async fn start_archiving(instance: &str, redis: &Redis, database: &str) -> ServerProc {
    start_archiving_with(instance, &redis.url(), database, 1).await
}

async fn start_archiving_with(
    instance: &str,
    redis_url: &str,
    database: &str,
    claim_after: u64,
) -> ServerProc {
    let args = archiving(database, claim_after);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProc::start(instance, redis_url, &args).await;
    wait_ready(&server, 200).await;
    server
}

/// What PostgreSQL holds of `room`: (rows, distinct offsets, distinct
/// message ids, lowest offset, highest offset).
async fn archived_rows(postgres: &Postgres, room: &str) -> (i64, i64, i64, i64, i64) {
    let pool = sqlx::PgPool::connect(&postgres.url())
        .await
        .expect("test connection");
    let row: (i64, i64, i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT msg_offset), count(DISTINCT id), \
         min(msg_offset), max(msg_offset) FROM chat_messages WHERE room = $1",
    )
    .bind(room)
    .fetch_one(&pool)
    .await
    .expect("archive query");
    pool.close().await;
    (row.0, row.1, row.2, row.3.unwrap_or(0), row.4.unwrap_or(0))
}

/// Waits until PostgreSQL holds offsets 1..=n of `room`, each once, and
/// nothing else.
async fn archived_exactly(postgres: &Postgres, room: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let got = archived_rows(postgres, room).await;
        if got == (n, n, n, 1, n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the archive holds (rows, offsets, ids, min, max) = {got:?} of {room}, not 1..={n} once each"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Instances A and B on `redis_url`, archiving into `database_a` and
/// `database_b` (one PostgreSQL, maybe through a proxy); Alice on A and Bob
/// on B in room `ops`, Alice having seen Bob arrive. Returns them and the
/// room's epoch.
async fn two_members(
    redis_url: &str,
    database_a: &str,
    database_b: &str,
    claim_after: u64,
) -> (ServerProc, ServerProc, Client, Client, String) {
    let a = start_archiving_with("archive-a", redis_url, database_a, claim_after).await;
    let b = start_archiving_with("archive-b", redis_url, database_b, claim_after).await;
    let mut alice = login(&a, "alice").await;
    let epoch = alice.join("ops").await.epoch;
    let mut bob = login(&b, "bob").await;
    bob.join("ops").await;
    saw_join(&mut alice, bob.user()).await;
    (a, b, alice, bob, epoch)
}

/// Sends `m<i>` for each offset `i` of `range` into `ops`, each acked at
/// that offset (retrying `unavailable`).
async fn send_numbered(client: &mut Client, range: std::ops::RangeInclusive<u64>, body: &str) {
    for i in range {
        assert_eq!(
            send_until_acked(client, "ops", &format!("m{i}"), body).await,
            i
        );
    }
}

/// A new member `name` on `server` joins `ops` from (`epoch`, `since`) and
/// recovers every message up to `upto`.
async fn recovers(server: &ServerProc, name: &str, epoch: String, since: u64, upto: u64) {
    let mut member = login(server, name).await;
    let back = member
        .join_since(
            "ops",
            Since {
                epoch,
                offset: since,
            },
        )
        .await;
    assert!(back.recovered, "{name} recovers from {since}");
    assert_eq!(
        offsets(&back.history),
        (since + 1..=upto).collect::<Vec<u64>>()
    );
}

/// Reads acks of `ids`, in order, skipping every other frame (the room's
/// messages come between them); returns their offsets.
async fn acks_of(client: &mut Client, ids: &[String]) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(ids.len());
    for id in ids {
        offsets.push(client.expect_ack_skipping(id).await);
    }
    offsets
}

/// Issue 14: `FLUSHALL` while a member sends. Every instance's room comes
/// back from the archive with its epoch and offset (and the messages it
/// held that were not archived yet), so offsets continue: members on both
/// instances get every message once, in order, re-join with
/// `recovered: true`, scroll back to offset 1, and the archive holds each
/// message once.
#[tokio::test]
async fn flushall_during_traffic_loses_nothing() {
    let postgres = Postgres::start().await;
    let redis = Redis::start().await;
    let (a, b, mut alice, mut bob, epoch) =
        two_members(&redis.url(), &postgres.url(), &postgres.url(), 1).await;

    // 100 sends in flight; the store is wiped once half of them are
    // acked, while the rest are being published; 100 more follow.
    let ids: Vec<String> = (1..=200).map(|i| format!("m{i}")).collect();
    for id in &ids[..100] {
        alice.submit("ops", id, "before and during").await;
    }
    let mut acked = acks_of(&mut alice, &ids[..50]).await;
    redis_cmd(&redis, &["FLUSHALL"]).await;
    for id in &ids[100..] {
        alice.submit("ops", id, "during and after").await;
    }
    acked.extend(acks_of(&mut alice, &ids[50..]).await);
    assert_eq!(acked, (1..=200).collect::<Vec<u64>>(), "offsets continue");
    let got = messages_within(&mut bob, 200).await;
    assert_eq!(offsets(&got), (1..=200).collect::<Vec<u64>>());
    assert_eq!(
        got.iter().map(|m| m.client_id.as_str()).collect::<Vec<_>>(),
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "every message once, in the order sent"
    );
    assert!(a.logged(&["restored from the archive"]) || b.logged(&["restored from the archive"]));

    // Members who come back recover: same epoch, nothing missing.
    for (server, name, since) in [(&a, "alice2", 20), (&b, "bob2", 150)] {
        let mut back = login(server, name).await;
        let rejoined = back
            .join_since(
                "ops",
                Since {
                    epoch: epoch.clone(),
                    offset: since,
                },
            )
            .await;
        assert!(rejoined.recovered, "{name} recovers from {since}");
        assert_eq!(rejoined.epoch, epoch);
        assert_eq!(
            offsets(&rejoined.history),
            (since + 1..=200).collect::<Vec<u64>>()
        );
        // Scroll-back reaches the first message through the archive.
        let mut before = None;
        let mut pages = Vec::new();
        loop {
            let page = history(&mut back, "ops", before, 64).await;
            let Some(first) = page.first() else { break };
            before = Some(first.offset);
            pages.push(page);
        }
        let all: Vec<ChatMessage> = pages.into_iter().rev().flatten().collect();
        assert_eq!(all, got, "{name} scrolls back to offset 1");
    }
    // The next message continues too, and reaches the other instance.
    assert_eq!(
        send_until_acked(&mut bob, "ops", "m201", "after").await,
        201
    );
    // Alice's own deliveries came between her acks; the next one is 201.
    let next = loop {
        let m = messages_within(&mut alice, 1).await.remove(0);
        if m.offset > 200 {
            break m;
        }
    };
    assert_eq!((next.offset, next.client_id.as_str()), (201, "m201"));
    archived_exactly(&postgres, "ops", 201).await;
}

/// Issue 14, the sibling of `FLUSHALL`: Redis replaced by an empty one
/// (`kill -9`, its data directory wiped, started again on the same port)
/// between two runs of sends. The pub/sub connections drop and come back;
/// the room comes back from the archive and what the instances held, so
/// offsets continue in the same epoch, Bob on the other instance gets every
/// message once in order, a re-join recovers, and the archive holds each
/// message once. (The kill resets the pub/sub connections: a message the
/// publishing instance had not read from its channel yet is gone from it;
/// the instance holds what it published itself.)
#[tokio::test]
async fn a_redis_replaced_by_an_empty_one_loses_nothing() {
    let postgres = Postgres::start().await;
    let mut redis = Redis::start().await;
    let (_a, b, mut alice, mut bob, epoch) =
        two_members(&redis.url(), &postgres.url(), &postgres.url(), 1).await;
    send_numbered(&mut alice, 1..=30, "before").await;
    redis.kill9().await;
    redis.wipe();
    redis.restart().await;
    send_numbered(&mut alice, 31..=60, "after").await;
    let got = messages_within(&mut bob, 60).await;
    assert_eq!(offsets(&got), (1..=60).collect::<Vec<u64>>());
    archived_exactly(&postgres, "ops", 60).await;
    recovers(&b, "carol", epoch, 10, 60).await;
}

/// Two archiving instances on one Redis, A's database connection through a
/// proxy of the test's own; Alice on A and Bob on B in room `ops`; offsets
/// 1..=10 sent by Alice and archived; then A's database connection stops
/// forwarding (its archive writes hang from now on). Bind every field:
/// one left to `..` is dropped (a server killed, the proxy gone).
struct Lagging {
    postgres: Postgres,
    _proxy: Proxy,
    redis: Redis,
    a: ServerProc,
    b: ServerProc,
    alice: Client,
    bob: Client,
    epoch: String,
}

async fn lagging(claim_after: u64) -> Lagging {
    let postgres = Postgres::start().await;
    let proxy = Proxy::start(postgres.port).await;
    let through_proxy = postgres.url().replace(
        &format!(":{}/", postgres.port),
        &format!(":{}/", proxy.port),
    );
    let redis = Redis::start().await;
    let (a, b, mut alice, bob, epoch) =
        two_members(&redis.url(), &through_proxy, &postgres.url(), claim_after).await;
    send_numbered(&mut alice, 1..=10, "archived").await;
    archived_exactly(&postgres, "ops", 10).await;
    proxy.blackhole();
    Lagging {
        postgres,
        _proxy: proxy,
        redis,
        a,
        b,
        alice,
        bob,
        epoch,
    }
}

/// Issue 14: an instance killed (`kill -9`) while it had read messages
/// from the streams and was writing them: its database connection stops
/// forwarding (a proxy of the test's own), so the messages stay pending to
/// it in the consumer group (70 of them, more than the stream's cap of 50:
/// the stream keeps every message not archived). The other instance claims
/// them once they have been pending `--archive-claim-after-secs`;
/// PostgreSQL ends with every message once.
#[tokio::test]
async fn an_instance_killed_mid_archive_leaves_nothing_missing_or_doubled() {
    let Lagging {
        postgres,
        redis,
        mut a,
        b: _b,
        _proxy,
        mut alice,
        mut bob,
        epoch: _,
    } = lagging(1).await;
    send_numbered(&mut alice, 11..=80, "pending").await;
    // A has read them: they are pending to it in the group.
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let pending = redis_cmd(
            &redis,
            &[
                "XPENDING",
                "chat:{ops}:log",
                "archive",
                "-",
                "+",
                "100",
                "archive-a",
            ],
        )
        .await;
        let redis::Value::Array(entries) = pending else {
            panic!("XPENDING: {pending:?}")
        };
        if !entries.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never read the messages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill9().await;

    // B takes them over, and goes on archiving its own.
    send_numbered(&mut bob, 81..=90, "after").await;
    archived_exactly(&postgres, "ops", 90).await;
}

/// Issue 14: `FLUSHALL` while the archive lags behind. Instance A's
/// database connection stops forwarding after message 10, so 11..=20 are
/// in Redis only (and no instance claims them: 30 s). Redis is wiped.
/// B, where Bob is, restores the room from the archive (10) and from what
/// it received on the room's channel and was not told is archived
/// (11..=20), writing those first: Bob's next message is 21 in the same
/// epoch, and the archive holds 1..=21. Restoring from the archive alone
/// would continue at 11 and give 11..=20 away.
#[tokio::test]
async fn a_wipe_while_the_archive_lags_restores_what_the_instances_held() {
    let Lagging {
        postgres,
        redis,
        a: _a,
        b,
        _proxy,
        mut alice,
        mut bob,
        epoch,
    } = lagging(30).await;
    send_numbered(&mut alice, 11..=20, "held").await;
    assert_eq!(
        offsets(&messages_within(&mut bob, 20).await),
        (1..=20).collect::<Vec<u64>>()
    );
    assert_eq!(
        archived_rows(&postgres, "ops").await.4,
        10,
        "11..=20 are in Redis only"
    );

    redis_cmd(&redis, &["FLUSHALL"]).await;
    assert_eq!(
        send_until_acked(&mut bob, "ops", "m21", "after the wipe").await,
        21
    );
    assert!(b.logged(&["restored from the archive", "offset=20", "from_tail=10"]));
    archived_exactly(&postgres, "ops", 21).await;
    recovers(&b, "carol", epoch, 5, 21).await;
}

/// The archiver's commands on Redis 5.0.6 (the oldest server the engine
/// takes; `XPENDING`'s extended form without `IDLE`, `XCLAIM`, no
/// `XAUTOCLAIM`): ready (the probe runs each of them), archived, and a
/// wipe restored.
#[tokio::test]
async fn the_archiver_works_on_redis_5_0() {
    let postgres = Postgres::start().await;
    let redis = Redis::start_5_0().await;
    let a = start_archiving("archive-a", &redis, &postgres.url()).await;
    let mut alice = login(&a, "alice").await;
    let joined = alice.join("ops").await;
    send_numbered(&mut alice, 1..=60, "hi").await;
    archived_exactly(&postgres, "ops", 60).await;
    redis_cmd(&redis, &["FLUSHALL"]).await;
    assert_eq!(
        send_until_acked(&mut alice, "ops", "m61", "after").await,
        61
    );
    archived_exactly(&postgres, "ops", 61).await;
    recovers(&a, "bob", joined.epoch, 0, 61).await;
}

/// The archiver on a Redis Cluster: a room on each master, messages from
/// instances A and B archived once each; every master wiped (`FLUSHALL`
/// on each) and each room continues at its next offset.
#[tokio::test]
async fn the_archiver_works_on_a_redis_cluster() {
    let postgres = Postgres::start().await;
    let cluster = RedisCluster::start(3, 0).await;
    let a = start_archiving_with("archive-a", &cluster.urls(), &postgres.url(), 1).await;
    let b = start_archiving_with("archive-b", &cluster.urls(), &postgres.url(), 1).await;
    let rooms = rooms_on_every_master(&cluster, "archived", 1).await;
    let mut alice = login(&a, "alice").await;
    let mut bob = login(&b, "bob").await;
    for (room, _) in &rooms {
        alice.join(room).await;
        bob.join(room).await;
    }
    for (room, _) in &rooms {
        for i in 1..=30 {
            let sender = if i % 2 == 0 { &mut alice } else { &mut bob };
            let id = format!("{room}-{i}");
            assert_eq!(send_until_acked(sender, room, &id, "hi").await, i);
        }
    }
    for (room, _) in &rooms {
        archived_exactly(&postgres, room, 30).await;
    }
    for node in &cluster.nodes {
        redis_cmd(node, &["FLUSHALL"]).await;
    }
    for (room, _) in &rooms {
        let id = format!("{room}-31");
        assert_eq!(send_until_acked(&mut alice, room, &id, "after").await, 31);
        archived_exactly(&postgres, room, 31).await;
    }
}
