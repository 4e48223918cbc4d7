//! Redis misbehaving, on real `redis-server` and real server processes:
//! each test injects one fault of issue 19 for real and asserts that every
//! acked message reaches every connected member once, in order, or that
//! the members are reset and re-join with `recovered: false`; never a gap.

use crate::cluster::{
    collect, login, login_as, messages, saw_join, send_until_acked, wait_ready, FAST, SLOW,
};
use crate::procs::{Redis, ServerProc};
use crate::support::{offsets, Client, Incoming, Joined};
use protocol::{ServerFrame, Since};

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

/// A room with Alice on instance A and Bob on instance B, who both got
/// offsets 1..=8; returns the epoch.
async fn eight_messages(a: &ServerProc, b: &ServerProc) -> (Client, Client, String) {
    let mut alice = login(a, "alice").await;
    let joined = alice.join("ops").await;
    let mut bob = login(b, "bob").await;
    bob.join("ops").await;
    saw_join(&mut alice, bob.user()).await;
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
    let mut alice = login(&a, "alice").await;
    let joined = alice.join("ops").await;
    let mut bob = login(&b, "bob").await;
    bob.join("ops").await;
    saw_join(&mut alice, bob.user()).await;
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
