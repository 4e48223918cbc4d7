//! The HTTP API for backends (issue 15): off without `--api-keys`, refuses
//! a missing or wrong key; a backend's post reaches members on two
//! instances in order, with its offset, deduplicated by `id`; history,
//! presence, rooms, disconnect; bad input and the rate limit; the OpenAPI
//! document lists every path.

use crate::cluster::{login, saw_join, FAST, SLOW};
use crate::procs::{Redis, ServerProc};
use crate::support::{http_call, Client, Incoming, TestServer};
use protocol::ServerFrame;
use server::config::Config;
use std::net::SocketAddr;
use std::time::Duration;

const KEY: &str = "backend-api-key-0123456789";

fn auth() -> String {
    format!("Bearer {KEY}")
}

/// `method path` with the API key and a JSON body: (status, head, JSON).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, String, serde_json::Value) {
    let body = body.map(|b| b.to_string());
    let (status, head, text) = http_call(
        addr,
        method,
        path,
        &[("Authorization", &auth())],
        body.as_deref(),
    )
    .await;
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, head, json)
}

fn post_body(id: &str, body: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "body": body, "from": {"id": "bot-7", "name": "Build bot"}})
}

#[tokio::test]
async fn the_api_is_off_without_keys_and_refuses_a_missing_or_wrong_key() {
    let server = TestServer::start(Config::for_tests()).await;
    let (status, _, json) = call(server.addr, "GET", "/api/v1/rooms", None).await;
    assert_eq!(status, 404, "{json}");
    server.stop().await.expect("stops");

    let mut cfg = Config::for_tests();
    cfg.api_keys = vec![KEY.to_owned(), "another-backend-key-000".to_owned()];
    let server = TestServer::start(cfg).await;
    let wrong = format!("Bearer {KEY}x");
    for headers in [
        vec![],
        vec![("Authorization", wrong.as_str())],
        vec![("Authorization", KEY)],
    ] {
        for (method, path) in [
            ("GET", "/api/v1/rooms"),
            ("GET", "/api/v1/rooms/general/messages"),
            ("GET", "/api/v1/rooms/general/presence"),
            ("POST", "/api/v1/users/u_1/disconnect"),
        ] {
            let (status, head, body) = http_call(server.addr, method, path, &headers, None).await;
            assert_eq!(status, 401, "{method} {path} {headers:?}: {body}");
            assert!(head.contains("www-authenticate: bearer"), "{head}");
        }
        let body = post_body("x-1", "hi").to_string();
        let (status, _, _) = http_call(
            server.addr,
            "POST",
            "/api/v1/rooms/general/messages",
            &headers,
            Some(&body),
        )
        .await;
        assert_eq!(status, 401);
    }
    // The second key works too.
    let (status, _, _) = http_call(
        server.addr,
        "GET",
        "/api/v1/rooms",
        &[("Authorization", "Bearer another-backend-key-000")],
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Bad input is answered with the protocol's codes.
    for (path, body, code) in [
        (
            "/api/v1/rooms/Not%20A%20Room/messages",
            post_body("x-1", "hi"),
            "bad_room",
        ),
        (
            "/api/v1/rooms/general/messages",
            post_body("x-1", "   "),
            "bad_frame",
        ),
        (
            "/api/v1/rooms/general/messages",
            post_body("", "hi"),
            "bad_frame",
        ),
    ] {
        let (status, _, json) = call(server.addr, "POST", path, Some(body)).await;
        assert_eq!(
            (status, json["code"].as_str()),
            (400, Some(code)),
            "{path}: {json}"
        );
    }
}

#[tokio::test]
async fn a_backend_post_reaches_members_on_two_instances_in_order_with_its_offset() {
    let redis = Redis::start().await;
    let args: Vec<&str> = FAST.iter().copied().chain(["--api-keys", KEY]).collect();
    let a = ServerProc::start("api-a", &redis.url(), &args).await;
    let b = ServerProc::start("api-b", &redis.url(), &args).await;
    let mut alice = login(&a, "alice").await;
    alice.join("ops").await;
    let mut bob = login(&b, "bob").await;
    bob.join("ops").await;
    saw_join(&mut alice, bob.user()).await;
    alice.post("ops", "a member's message first").await;
    let first = bob.expect_message().await;

    let mut offsets = Vec::new();
    for i in 0..3 {
        let (status, _, json) = call(
            a.addr,
            "POST",
            "/api/v1/rooms/ops/messages",
            Some(post_body(
                &format!("deploy-{i}"),
                &format!("deploy {i} done"),
            )),
        )
        .await;
        assert_eq!(status, 200, "{json}");
        offsets.push(json["offset"].as_u64().expect("offset"));
    }
    assert_eq!(
        offsets,
        [first.offset + 1, first.offset + 2, first.offset + 3]
    );
    // The same id again is the same message.
    let (_, _, again) = call(
        a.addr,
        "POST",
        "/api/v1/rooms/ops/messages",
        Some(post_body("deploy-1", "deploy 1 done")),
    )
    .await;
    assert_eq!(again["offset"].as_u64(), Some(offsets[1]));
    for member in [&mut alice, &mut bob] {
        let got = member.messages(3).await;
        let seen: Vec<(u64, &str, &str)> = got
            .iter()
            .map(|m| (m.offset, m.from.id.as_str(), m.body.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (offsets[0], "bot-7", "deploy 0 done"),
                (offsets[1], "bot-7", "deploy 1 done"),
                (offsets[2], "bot-7", "deploy 2 done"),
            ]
        );
        member.ping().await; // and nothing else: the repeat was not delivered
    }

    // Reads, from the other instance.
    let (status, _, history) =
        call(b.addr, "GET", "/api/v1/rooms/ops/messages?limit=2", None).await;
    assert_eq!(status, 200);
    let got: Vec<u64> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(got, [offsets[1], offsets[2]]);
    let (_, _, presence) = call(b.addr, "GET", "/api/v1/rooms/ops/presence", None).await;
    let mut names: Vec<&str> = presence["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|u| u["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["alice", "bob"]);
    let (_, _, rooms) = call(a.addr, "GET", "/api/v1/rooms", None).await;
    assert!(
        rooms["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .any(|r| r["room"] == "ops" && r["members"] == 2),
        "{rooms}"
    );

    // Disconnect bob (on b) through a.
    let path = format!("/api/v1/users/{}/disconnect", bob.user().id);
    let (status, _, _) = call(a.addr, "POST", &path, None).await;
    assert_eq!(status, 202);
    assert_eq!(closed(&mut bob).await, 1008);
}

async fn closed(client: &mut Client) -> u16 {
    loop {
        match client.next_within(SLOW).await {
            Incoming::Close(Some(code)) => return code,
            Incoming::Frame(ServerFrame::Presence { .. }) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_api_is_rate_limited_like_a_socket_and_documents_itself() {
    let mut cfg = Config::for_tests();
    cfg.connection_rate = server::cost::Rate {
        per_sec: 1,
        burst: 10,
    };
    cfg.api_keys = vec![KEY.to_owned()];
    let server = TestServer::start(cfg).await;
    let mut limited = None;
    for i in 0..30 {
        let (status, head, json) = call(
            server.addr,
            "POST",
            "/api/v1/rooms/general/messages",
            Some(post_body(&format!("m-{i}"), "hello")),
        )
        .await;
        if status == 429 {
            limited = Some((i, head, json));
            break;
        }
        assert_eq!(status, 200, "{json}");
    }
    let (i, head, json) = limited.expect("the key's bucket ran out");
    assert!(i >= 5, "refused after {i} posts: the burst holds more");
    assert_eq!(json["code"], "rate_limited");
    assert!(head.contains("retry-after:"), "{head}");
    tokio::time::sleep(Duration::from_millis(10)).await;

    let (status, _, doc) = http_call(server.addr, "GET", "/api/v1/openapi.json", &[], None).await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("OpenAPI JSON");
    for path in [
        "/api/v1/rooms/{room}/messages",
        "/api/v1/rooms/{room}/presence",
        "/api/v1/rooms",
        "/api/v1/users/{user}/disconnect",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing: {doc}");
    }
    assert!(doc["paths"]["/api/v1/rooms/{room}/messages"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/rooms/{room}/messages"]["get"].is_object());
    assert!(doc["components"]["schemas"]["NewMessage"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // The docs' page lists what the document does.
    let (status, html) = server.get("/docs/http-api").await;
    assert_eq!(status, 200);
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            assert!(html.contains(path.as_str()), "{path}");
            assert!(html.contains(&method.to_uppercase()), "{method}");
        }
    }
}
