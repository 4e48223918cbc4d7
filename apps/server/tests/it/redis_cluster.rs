//! A real local Redis Cluster (issue 12): 3 masters (with replicas where
//! a test fails one over) started by the test, and real server processes.
//! Rooms spread over every master; fan-out is sharded pub/sub; a slot that
//! moves under traffic and a master killed with -9 lose nothing.

use crate::cluster::{login, messages, saw_joins, send_until_acked, wait_ready, FAST, SLOW};
use crate::costs::all_rooms;
use crate::procs::{RedisCluster, ServerProc, TempDir, Tls};
use crate::support::{offsets, unique_id, Incoming};
use protocol::ServerFrame;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// The slot of a room (every key of it shares the hash tag `{room}`).
async fn slot_of_room(cluster: &RedisCluster, room: &str) -> u16 {
    cluster.slot_of(&format!("chat:{{{room}}}:meta")).await
}

/// `count` rooms on each master: names `<prefix>-<n>` taken in order until
/// every master has its share. Answers (room, master port) pairs.
pub(crate) async fn rooms_on_every_master(
    cluster: &RedisCluster,
    prefix: &str,
    count: usize,
) -> Vec<(String, u16)> {
    let masters: BTreeSet<u16> = cluster.slots().await.iter().map(|r| r.master).collect();
    assert_eq!(masters.len(), 3, "three masters");
    let mut per: HashMap<u16, usize> = HashMap::new();
    let mut rooms = Vec::new();
    for n in 0.. {
        let room = format!("{prefix}-{n}");
        let owner = cluster.owner(slot_of_room(cluster, &room).await).await;
        let have = per.entry(owner).or_default();
        if *have < count {
            *have += 1;
            rooms.push((room, owner));
        }
        if per.len() == masters.len() && per.values().all(|&n| n == count) {
            return rooms;
        }
    }
    unreachable!()
}

/// Subscribers of `channel` on the node on `port` (`PUBSUB SHARDNUMSUB`
/// answers for the node's own shard only).
async fn shard_subscribers(cluster: &RedisCluster, port: u16, channel: &str) -> i64 {
    let node = cluster.nodes.iter().find(|n| n.port == port).expect("node");
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query_async(&mut node.conn().await)
        .await
        .expect("PUBSUB SHARDNUMSUB");
    n
}

/// Waits until `port` holds `want` shard subscribers of `channel`.
async fn wait_shard_subscribers(cluster: &RedisCluster, port: u16, channel: &str, want: i64) {
    let deadline = Instant::now() + SLOW;
    loop {
        let n = shard_subscribers(cluster, port, channel).await;
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel} on :{port} has {n} subscribers, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Messages `client` receives until it holds `want[room]` of each room,
/// grouped by room (presence, typing and acks skipped).
async fn messages_by_room(
    client: &mut crate::support::Client,
    want: &HashMap<String, usize>,
) -> HashMap<String, Vec<protocol::ChatMessage>> {
    let mut got: HashMap<String, Vec<protocol::ChatMessage>> = HashMap::new();
    let done = |got: &HashMap<String, Vec<protocol::ChatMessage>>| {
        want.iter()
            .all(|(room, n)| got.get(room).map_or(0, Vec::len) >= *n)
    };
    while !done(&got) {
        let next = tokio::time::timeout(SLOW, client.next_within(SLOW * 2)).await;
        match next.unwrap_or(Incoming::Ended) {
            Incoming::Frame(ServerFrame::Message(m)) => {
                got.entry(m.room.clone()).or_default().push(m)
            }
            Incoming::Frame(
                ServerFrame::Ack { .. } | ServerFrame::Presence { .. } | ServerFrame::Typing { .. },
            ) => {}
            other => {
                let have: HashMap<&String, Vec<u64>> =
                    got.iter().map(|(r, m)| (r, offsets(m))).collect();
                panic!("wanted {want:?}, have {have:?}, then {other:?}")
            }
        }
    }
    got
}

#[tokio::test]
async fn rooms_spread_over_every_master_with_one_order_and_presence_across_nodes() {
    let cluster = RedisCluster::start(3, 0).await;
    // One instance finds the cluster from one node, the other from all.
    let a = ServerProc::start("rc-a", &cluster.nodes[0].url(), FAST).await;
    let b = ServerProc::start("rc-b", &cluster.urls(), FAST).await;
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let rooms = rooms_on_every_master(&cluster, "spread", 2).await;

    let mut alice = login(&a, "alice").await;
    let mut bob = login(&b, "bob").await;
    for (room, _) in &rooms {
        alice.join(room).await;
    }
    for (room, _) in &rooms {
        let joined = bob.join(room).await;
        assert_eq!(
            joined.members.len(),
            2,
            "{room}: alice is present through another node"
        );
    }
    // Presence crosses instances through each room's own master: one
    // frame per room.
    let bobs = [bob.user().clone()];
    for _ in &rooms {
        saw_joins(&mut alice, &bobs).await;
    }

    // Each room lives on its master, and its channel is subscribed there,
    // once per instance.
    for (room, owner) in &rooms {
        wait_shard_subscribers(&cluster, *owner, &format!("chat:{{{room}}}:ch"), 2).await;
    }

    // Both send at once, without waiting for acks: the store orders.
    const N: usize = 20;
    for i in 0..N {
        for (room, _) in &rooms {
            let sender = if i % 2 == 0 { &mut alice } else { &mut bob };
            sender
                .submit(room, &format!("{room}-{i}"), &format!("{room} {i}"))
                .await;
        }
    }
    let want: HashMap<String, usize> = rooms.iter().map(|(r, _)| (r.clone(), N)).collect();
    let seen_by_alice = messages_by_room(&mut alice, &want).await;
    let seen_by_bob = messages_by_room(&mut bob, &want).await;
    for (room, _) in &rooms {
        let order = |msgs: &[protocol::ChatMessage]| -> Vec<(u64, String)> {
            msgs.iter().map(|m| (m.offset, m.body.clone())).collect()
        };
        let (a_seen, b_seen) = (order(&seen_by_alice[room]), order(&seen_by_bob[room]));
        assert_eq!(
            a_seen.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            (1..=N as u64).collect::<Vec<_>>(),
            "{room}: every offset once"
        );
        assert_eq!(a_seen, b_seen, "{room}: one order on both instances");
        // Each sender's messages keep the order they were sent in.
        for parity in [0, 1] {
            let mine: Vec<String> = a_seen
                .iter()
                .map(|(_, b)| b.clone())
                .filter(|b| b.rsplit(' ').next().unwrap().parse::<usize>().unwrap() % 2 == parity)
                .collect();
            let sent: Vec<String> = (0..N)
                .filter(|i| i % 2 == parity)
                .map(|i| format!("{room} {i}"))
                .collect();
            assert_eq!(mine, sent, "{room}");
        }
    }
    for (room, owner) in &rooms {
        let node = cluster.nodes.iter().find(|n| n.port == *owner).unwrap();
        let exists: i64 = redis::cmd("EXISTS")
            .arg(format!("chat:{{{room}}}:log"))
            .query_async(&mut node.conn().await)
            .await
            .expect("the owner answers for its own slot");
        assert_eq!(exists, 1, "{room}'s stream is on its master :{owner}");
    }

    // The rooms list merges the index partitions of every master.
    let listed = all_rooms(&mut alice, 4).await;
    let mut expected: Vec<(String, u64)> = rooms.iter().map(|(r, _)| (r.clone(), 2)).collect();
    expected.sort();
    assert_eq!(
        listed, expected,
        "every room once, busiest first then by name"
    );
}

#[tokio::test]
async fn a_room_resharded_under_traffic_loses_nothing_and_keeps_its_order() {
    let cluster = RedisCluster::start(3, 0).await;
    let a = ServerProc::start("rs-a", &cluster.urls(), FAST).await;
    let b = ServerProc::start("rs-b", &cluster.urls(), FAST).await;
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let room = "moving";
    let slot = slot_of_room(&cluster, room).await;
    let from = cluster.owner(slot).await;
    let to = cluster
        .slots()
        .await
        .iter()
        .map(|r| r.master)
        .find(|&m| m != from)
        .expect("another master");

    let mut alice = login(&a, "alice").await;
    let mut bob = login(&b, "bob").await;
    let mut carol = login(&a, "carol").await;
    alice.join(room).await;
    bob.join(room).await;
    carol.join(room).await;
    let channel = format!("chat:{{{room}}}:ch");
    wait_shard_subscribers(&cluster, from, &channel, 2).await;

    // Carol sends one message after another (each acked) while the slot
    // moves: the moment it moves, the old master drops the instances'
    // shard subscriptions, and what is published meanwhile reaches them
    // only through the stream.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("c-{sent}");
                send_until_acked(&mut carol, room, &id, &format!("m {sent}")).await;
                sent += 1;
            }
            sent
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.move_slot(slot, to).await;
    assert_eq!(cluster.owner(slot).await, to);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = sender.await.expect("sender");
    assert!(n > 100, "the slot moved under traffic ({n} messages)");

    for client in [&mut alice, &mut bob] {
        let got = messages(client, n).await;
        assert_eq!(
            offsets(&got),
            (1..=n as u64).collect::<Vec<_>>(),
            "none lost or doubled"
        );
        let bodies: Vec<String> = got.iter().map(|m| m.body.clone()).collect();
        assert_eq!(bodies, (0..n).map(|i| format!("m {i}")).collect::<Vec<_>>());
    }
    // The subscriptions followed the slot.
    wait_shard_subscribers(&cluster, to, &channel, 2).await;
    assert_eq!(shard_subscribers(&cluster, from, &channel).await, 0);
    // And the room goes on from the new master.
    alice.submit(room, "after", "after the move").await;
    alice.expect_ack_skipping("after").await;
    let m = bob.expect_message().await;
    assert_eq!(
        (m.offset, m.body.as_str()),
        (n as u64 + 1, "after the move")
    );
}

#[tokio::test]
async fn a_killed_master_stops_only_its_rooms_until_its_replica_takes_over() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let a = ServerProc::start("kf-a", &cluster.urls(), FAST).await;
    let b = ServerProc::start("kf-b", &cluster.urls(), FAST).await;
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let rooms = rooms_on_every_master(&cluster, "kill", 1).await;
    let (victim_room, victim) = rooms[0].clone();
    let others: Vec<String> = rooms[1..].iter().map(|(r, _)| r.clone()).collect();

    let mut alice = login(&a, "alice").await;
    let mut bob = login(&b, "bob").await;
    for (room, _) in &rooms {
        alice.join(room).await;
        bob.join(room).await;
    }
    for (room, _) in &rooms {
        let id = unique_id("first");
        alice.submit(room, &id, "before").await;
        alice.expect_ack_skipping(&id).await;
    }
    let want: HashMap<String, usize> = rooms.iter().map(|(r, _)| (r.clone(), 1)).collect();
    messages_by_room(&mut bob, &want).await;
    // The replicas hold what was acked (replication is asynchronous; the
    // test waits for it so that nothing is lost and nothing reset).
    tokio::time::sleep(Duration::from_millis(300)).await;

    cluster.node(victim).kill9().await;
    // Rooms on the other masters are served throughout: until the victim's
    // replica is promoted (cluster-node-timeout 1.5 s) and after.
    let mut sent_others = 0;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(4) {
        for room in &others {
            let id = unique_id("during");
            alice.submit(room, &id, "during").await;
            loop {
                match alice.recv_slow(SLOW).await {
                    ServerFrame::Ack { id: acked, .. } if acked == id => break,
                    ServerFrame::Message(_) | ServerFrame::Presence { .. } => {}
                    other => panic!("{room} is on a live master; got {other:?}"),
                }
            }
            sent_others += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The victim's room answers `unavailable` until the promotion, then
    // takes messages again.
    let offset = send_until_acked(&mut alice, &victim_room, "after-failover", "after").await;
    assert_eq!(
        offset, 2,
        "the promoted replica had the room's first message"
    );

    // Bob got everything, in order, without a reset.
    let mut want: HashMap<String, usize> = HashMap::new();
    want.insert(victim_room.clone(), 1);
    let per_room = sent_others / others.len();
    for room in &others {
        want.insert(room.clone(), per_room);
    }
    let got = messages_by_room(&mut bob, &want).await;
    assert_eq!(offsets(&got[&victim_room]), vec![2]);
    for room in &others {
        assert_eq!(
            offsets(&got[room]),
            (2..=per_room as u64 + 1).collect::<Vec<_>>(),
            "{room}"
        );
    }
}

#[tokio::test]
async fn a_cluster_over_tls_with_a_password_and_a_private_ca_works() {
    let dir = TempDir::new("cluster-tls");
    let tls = Tls::make(dir.path());
    let cluster = RedisCluster::start_tls(3, 0, "s3cret-pass", &tls).await;
    let ca = tls.ca.to_string_lossy().into_owned();
    let mut args = FAST.to_vec();
    args.extend(["--redis-ca-cert", ca.as_str()]);
    // One TLS seed: the other nodes are found from it (their TLS ports).
    let seed = cluster.tls_urls().split(',').next().unwrap().to_owned();
    let a = ServerProc::start("tls-a", &seed, &args).await;
    let b = ServerProc::start("tls-b", &cluster.tls_urls(), &args).await;
    wait_ready(&a, 200).await;
    wait_ready(&b, 200).await;
    let rooms = rooms_on_every_master(&cluster, "secure", 1).await;
    let mut x = login(&a, "x").await;
    let mut y = login(&b, "y").await;
    for (room, _) in &rooms {
        x.join(room).await;
        y.join(room).await;
    }
    for (room, _) in &rooms {
        x.submit(room, &format!("{room}-tls"), "over TLS").await;
    }
    let want: HashMap<String, usize> = rooms.iter().map(|(r, _)| (r.clone(), 1)).collect();
    let got = messages_by_room(&mut y, &want).await;
    for (room, _) in &rooms {
        assert_eq!(offsets(&got[room]), vec![1], "{room}");
    }
}
