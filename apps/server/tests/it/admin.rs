//! The admin view's API (issue 16): off without `--admin-token`; every
//! route refuses a missing or wrong bearer token; the overview lists each
//! instance's heartbeat and the rooms; actions reach connections on every
//! instance (through the shared store's board).

use crate::cluster::{login, FAST, SLOW};
use crate::procs::{Redis, ServerProc};
use crate::support::{http_request, Client, Incoming, TestServer, BOUND};
use protocol::admin::Overview;
use protocol::{ErrorCode, ServerFrame};
use server::config::Config;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

const TOKEN: &str = "admin-token-for-tests-0123456789";

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Reads the overview until `done` holds (heartbeats come every second).
async fn overview_until(addr: SocketAddr, done: impl Fn(&Overview) -> bool) -> Overview {
    let auth = bearer();
    let until = Instant::now() + SLOW;
    loop {
        let (status, body) = http_request(
            addr,
            "GET",
            "/admin/api/overview",
            &[("Authorization", &auth)],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let overview: Overview = serde_json::from_str(&body).expect("overview JSON");
        if done(&overview) {
            return overview;
        }
        assert!(
            Instant::now() < until,
            "overview never got there: {overview:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads frames until `left` for `room`; presence and typing may come first.
async fn expect_left(client: &mut Client, room: &str) {
    loop {
        match client.recv().await {
            ServerFrame::Left { room: r } if r == room => return,
            ServerFrame::Presence { .. } | ServerFrame::Typing { .. } => {}
            other => panic!("expected left {room}, got {other:?}"),
        }
    }
}

/// Reads frames until the server closes; answers the close code.
async fn closed_with(client: &mut Client, within: Duration) -> u16 {
    let until = Instant::now() + within;
    loop {
        match client.next_within(until - Instant::now()).await {
            Incoming::Close(Some(code)) => return code,
            Incoming::Frame(_) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token_and_refuses_a_wrong_one() {
    let server = TestServer::start(Config::for_tests()).await;
    let (status, body) = http_request(
        server.addr,
        "GET",
        "/admin/api/overview",
        &[("Authorization", &bearer())],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("--admin-token"), "{body}");
    server.stop().await.expect("run returns Ok");

    let mut cfg = Config::for_tests();
    cfg.admin_token = Some(TOKEN.to_owned());
    let server = TestServer::start(cfg).await;
    let wrong = format!("Bearer {TOKEN}x");
    for headers in [
        vec![],
        vec![("Authorization", wrong.as_str())],
        vec![("Authorization", TOKEN)],
        vec![("Authorization", "Bearer ")],
    ] {
        for (method, path) in [
            ("GET", "/admin/api/overview"),
            ("POST", "/admin/api/users/u_1/disconnect"),
            ("POST", "/admin/api/rooms/general/close"),
        ] {
            let (status, body) = http_request(server.addr, method, path, &headers).await;
            assert_eq!(status, 401, "{method} {path} with {headers:?}: {body}");
        }
    }
    let (status, body) = http_request(
        server.addr,
        "POST",
        "/admin/api/rooms/has%20space/close",
        &[("Authorization", &bearer())],
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn the_overview_shows_the_instance_and_its_actions_reach_connections() {
    let mut cfg = Config::for_tests();
    cfg.admin_token = Some(TOKEN.to_owned());
    let server = TestServer::start(cfg).await;
    let mut alice = server.login("alice").await;
    alice.join("general").await;
    alice.post("general", "hello").await;
    let mut bob = server.login("bob").await;
    bob.join("general").await;

    let overview = overview_until(server.addr, |o| {
        o.instances.first().is_some_and(|i| i.connections == 2)
    })
    .await;
    let me = &overview.instances[0];
    assert_eq!((me.id.as_str(), me.rooms, me.ready), ("test", 1, true));
    assert_eq!(overview.server, "test");
    let general = overview
        .rooms
        .iter()
        .find(|r| r.room == "general")
        .expect("general is listed");
    assert_eq!((general.members, general.offset), (2, 1));

    // Closing the room: both members get `left`, and are not in it any more.
    let auth = bearer();
    let (status, body) = http_request(
        server.addr,
        "POST",
        "/admin/api/rooms/general/close",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    expect_left(&mut alice, "general").await;
    expect_left(&mut bob, "general").await;
    alice.submit("general", "after-close", "anyone?").await;
    alice
        .expect_error_skipping(ErrorCode::NotJoined, Some("after-close"))
        .await;
    // It can be joined again.
    alice.join("general").await;

    // Disconnecting bob: his connection closes with 1008, alice's stays.
    let path = format!("/admin/api/users/{}/disconnect", bob.user().id);
    let (status, body) =
        http_request(server.addr, "POST", &path, &[("Authorization", &auth)]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(closed_with(&mut bob, BOUND).await, 1008);
    alice.post("general", "still here").await;
}

#[tokio::test]
async fn admin_actions_reach_every_instance_and_every_heartbeat_is_listed() {
    let redis = Redis::start().await;
    let args: Vec<&str> = FAST
        .iter()
        .copied()
        .chain(["--admin-token", TOKEN])
        .collect();
    let a = ServerProc::start("admin-a", &redis.url(), &args).await;
    let b = ServerProc::start("admin-b", &redis.url(), &args).await;
    let mut carol = login(&b, "carol").await;
    carol.join("lobby").await;

    let overview = overview_until(a.addr, |o| {
        o.instances.len() == 2 && o.instances[1].connections == 1
    })
    .await;
    let ids: Vec<&str> = overview.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["admin-a", "admin-b"]);
    assert!(overview.instances.iter().all(|i| i.ready));

    // Posted on a, applied by b to carol's connection.
    let path = format!("/admin/api/users/{}/disconnect", carol.user().id);
    let (status, body) = http_request(a.addr, "POST", &path, &[("Authorization", &bearer())]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(closed_with(&mut carol, SLOW).await, 1008);
}
