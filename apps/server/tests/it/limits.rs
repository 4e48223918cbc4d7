//! Refusals: every error code from the input that causes it (and whether
//! the socket survives it), the `bad_frame` flood rule, the 64 KiB frame
//! limit, the rate limit, slow consumers, and the checks on the upgrade
//! (connections per IP, origin).

use crate::support::{
    offsets, presence_joined, presence_left, unique_id, unthrottled, Client, TestServer,
};
use protocol::limits::{DEFAULT_RATE_BURST, MAX_CLIENT_FRAME_BYTES};
use protocol::{ClientFrame, ErrorCode, ServerFrame};
use server::config::{Config, OriginPolicy};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "general";

/// A user logged in and joined to [`ROOM`].
async fn member(server: &TestServer, name: &str) -> Client {
    let mut client = server.login(name).await;
    client.join(ROOM).await;
    client
}

/// A `ping` padded with an unknown field to exactly `len` bytes of JSON.
fn padded_ping(len: usize) -> String {
    let mut frame = serde_json::to_value(ClientFrame::Ping).expect("ping as JSON");
    frame["pad"] = "".into();
    let pad = len - frame.to_string().len();
    frame["pad"] = "a".repeat(pad).into();
    let text = frame.to_string();
    assert_eq!(text.len(), len);
    text
}

#[tokio::test]
async fn malformed_frames_are_bad_frames_and_the_socket_survives() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = member(&server, "alice").await;

    let malformed = [
        "not json",
        r#"{"type":"dance"}"#,
        r#"{"type":"join"}"#,
        r#"["ping"]"#,
    ];
    for text in malformed {
        alice.send_text(text).await;
        alice.expect_error(ErrorCode::BadFrame, None).await;
    }
    alice.send_raw(Message::binary(b"{}".to_vec())).await;
    alice.expect_error(ErrorCode::BadFrame, None).await;
    alice
        .send(&ClientFrame::Hello {
            name: "again".to_owned(),
            token: None,
        })
        .await;
    alice.expect_error(ErrorCode::BadFrame, None).await;
    alice.ping().await;
}

#[tokio::test]
async fn invalid_sends_are_bad_frames_with_their_id_and_not_stored() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = member(&server, "alice").await;

    let long_id = "i".repeat(65);
    let cases = [
        ("", "hi"),
        (long_id.as_str(), "hi"),
        ("c-blank", " \n\t "),
        ("c-bell", "ding\u{7}"),
        ("c-escape", "a\u{1b}[31mred"),
    ];
    for (id, body) in cases {
        alice.submit(ROOM, id, body).await;
        alice.expect_error(ErrorCode::BadFrame, Some(id)).await;
    }
    // A send missing its body still names its id.
    alice
        .send_text(r#"{"type":"send","room":"general","id":"c-nobody"}"#)
        .await;
    alice
        .expect_error(ErrorCode::BadFrame, Some("c-nobody"))
        .await;

    alice.ping().await;
    assert_eq!(alice.post(ROOM, "first stored").await.offset, 1);
}

/// v1.1: bodies that show nothing, of any kind (white space, zero-width
/// and other default-ignorable characters, the blank Braille pattern) are
/// refused like an empty one, and not stored.
#[tokio::test]
async fn bodies_that_show_nothing_are_bad_frames_and_not_stored() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = member(&server, "alice").await;
    for (id, body) in [
        ("c-braille-blank", "\u{2800}"),
        ("c-zero-width", "\u{200b}\u{200b}"),
        ("c-hangul-filler", "\u{3164}"),
        ("c-word-joiner", " \u{2060}\u{feff} "),
    ] {
        alice.submit(ROOM, id, body).await;
        alice.expect_error(ErrorCode::BadFrame, Some(id)).await;
    }
    assert_eq!(alice.post(ROOM, "\u{200b}visible").await.offset, 1);
}

#[tokio::test]
async fn bodies_are_trimmed_and_may_hold_newlines_and_tabs() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = member(&server, "alice").await;
    let said = alice.post(ROOM, "  line one\n\tline two \n").await;
    assert_eq!(said.body, "line one\n\tline two");
}

#[tokio::test]
async fn bad_room_names_are_refused_and_the_socket_survives() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = server.login("alice").await;

    let too_long = "a".repeat(65);
    for room in ["General", "two words", "", "café", too_long.as_str()] {
        alice
            .send(&ClientFrame::Join {
                room: room.to_owned(),
                since: None,
            })
            .await;
        alice.expect_error(ErrorCode::BadRoom, None).await;
    }
    alice.submit("No Such Room", "c-1", "hi").await;
    alice.expect_error(ErrorCode::BadRoom, Some("c-1")).await;

    let longest = "a".repeat(64);
    assert_eq!(alice.join(&longest).await.room, longest);
    alice.join("with_under-score9").await;
    alice.ping().await;
}

#[tokio::test]
async fn frames_for_a_room_not_joined_are_refused() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = member(&server, "alice").await;
    let other = || "elsewhere".to_owned();

    alice.submit(&other(), "c-1", "hi").await;
    alice.expect_error(ErrorCode::NotJoined, Some("c-1")).await;
    for frame in [
        ClientFrame::Typing { room: other() },
        ClientFrame::Leave { room: other() },
        ClientFrame::History {
            room: other(),
            before: None,
            limit: None,
        },
    ] {
        alice.send(&frame).await;
        alice.expect_error(ErrorCode::NotJoined, None).await;
    }
    alice.ping().await;
    assert_eq!(alice.post(ROOM, "still a member here").await.offset, 1);
}

#[tokio::test]
async fn body_over_4000_characters_is_too_large() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = member(&server, "alice").await;

    // Characters, not bytes: 4000 two-byte characters are fine.
    alice.submit(ROOM, "c-long", &"é".repeat(4001)).await;
    alice
        .expect_error(ErrorCode::TooLarge, Some("c-long"))
        .await;
    alice.ping().await;
    let longest = format!(" {} ", "é".repeat(4000));
    let said = alice.post(ROOM, &longest).await;
    assert_eq!((said.offset, said.body.chars().count()), (1, 4000));
}

#[tokio::test]
async fn sends_beyond_the_rate_limit_are_refused_and_not_delivered() {
    const SENDS: usize = 60;
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = member(&server, "alice").await;
    let mut bob = member(&server, "bob").await;
    assert_eq!(alice.recv().await, presence_joined(ROOM, bob.user()));

    let ids: Vec<String> = (0..SENDS).map(|i| format!("burst-{i}")).collect();
    for id in &ids {
        alice.submit(ROOM, id, "spam").await;
    }
    // Acks and errors are direct replies, in send order; alice's own
    // messages arrive in between and are checked through bob instead.
    let mut answered = Vec::new();
    let mut acked = Vec::new();
    let mut own = Vec::new();
    let mut limited = 0;
    while answered.len() < SENDS {
        match alice.recv().await {
            ServerFrame::Ack { id, offset, .. } => {
                answered.push(id.clone());
                acked.push((id, offset));
            }
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                id: Some(id),
                ..
            } => {
                answered.push(id);
                limited += 1;
            }
            ServerFrame::Message(m) => own.push(m),
            other => panic!("expected ack or rate_limited, got {other:?}"),
        }
    }
    assert_eq!(answered, ids, "every send answered once, in order");
    // The bucket was full before alice's join, which cost 2 units of it.
    assert!(
        acked.len() >= DEFAULT_RATE_BURST as usize - 2,
        "a full bucket lets a burst through: {} acked",
        acked.len()
    );
    assert!(limited > 0, "60 sends at once go beyond the bucket");
    let acked_offsets: Vec<u64> = acked.iter().map(|(_, o)| *o).collect();
    assert_eq!(acked_offsets, (1..=acked.len() as u64).collect::<Vec<_>>());

    // Exactly the accepted messages were delivered, to alice and to bob.
    own.extend(alice.messages(acked.len() - own.len()).await);
    let delivered: Vec<(String, u64)> = own.into_iter().map(|m| (m.client_id, m.offset)).collect();
    assert_eq!(delivered, acked);
    let synced = bob.sync(ROOM).await;
    let delivered: Vec<(String, u64)> = synced
        .before
        .into_iter()
        .map(|f| match f {
            ServerFrame::Message(m) => (m.client_id, m.offset),
            other => panic!("expected messages, got {other:?}"),
        })
        .collect();
    assert_eq!(delivered, acked);
    assert!(alice.frames_until_message(&synced.marker).await.is_empty());
    // The socket stays open: once the bucket refilled, a ping is answered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice.ping().await;
}

#[tokio::test]
async fn joining_more_rooms_than_allowed_is_refused() {
    let mut cfg = Config::for_tests();
    cfg.max_rooms_per_conn = 2;
    let server = TestServer::start(cfg).await;
    let mut alice = server.login("alice").await;
    alice.join("one").await;
    alice.join("two").await;

    let three = ClientFrame::Join {
        room: "three".to_owned(),
        since: None,
    };
    alice.send(&three).await;
    alice.expect_error(ErrorCode::TooManyRooms, None).await;
    // Joining a room already joined is not one more room.
    alice.join("one").await;
    alice.leave("two").await;
    assert_eq!(alice.join("three").await.room, "three");
    alice.ping().await;
}

#[tokio::test]
async fn frame_before_hello_is_unauthorized_and_closes_with_1008() {
    let server = TestServer::start(Config::for_tests()).await;
    let join = ClientFrame::Join {
        room: ROOM.to_owned(),
        since: None,
    };
    let mut client = server.connect().await;
    client.send(&join).await;
    client.expect_error(ErrorCode::Unauthorized, None).await;
    assert_eq!(client.expect_close().await, 1008);

    let mut client = server.connect().await;
    client.send_text("garbage").await;
    client.expect_error(ErrorCode::Unauthorized, None).await;
    assert_eq!(client.expect_close().await, 1008);
}

/// Says `hello` with `token` and asserts `unauthorized` then close 1008.
async fn refused_token(server: &TestServer, token: &str) {
    let mut client = server.connect().await;
    client
        .send(&ClientFrame::Hello {
            name: "mallory".to_owned(),
            token: Some(token.to_owned()),
        })
        .await;
    client.expect_error(ErrorCode::Unauthorized, None).await;
    assert_eq!(client.expect_close().await, 1008, "token {token:?}");
}

#[tokio::test]
async fn forged_or_foreign_token_is_unauthorized_and_closes_with_1008() {
    let server = TestServer::start(Config::for_tests()).await;
    let alice = server.login("alice").await;
    let forged = alice
        .token()
        .replacen(&alice.user().id, "u_AAAAAAAAAAAAAAAAAAAAAA", 1);
    assert_ne!(forged, alice.token());
    // Signed with another secret (each test server draws its own).
    let other = TestServer::start(Config::for_tests()).await;
    let foreign = other.login("alice").await.token().to_owned();

    for token in ["garbage", forged.as_str(), foreign.as_str()] {
        refused_token(&server, token).await;
    }
    // The genuine token still works.
    server.login_as("alice", alice.token()).await;
}

#[tokio::test]
async fn expired_token_is_unauthorized_and_closes_with_1008() {
    let mut cfg = Config::for_tests();
    cfg.token_ttl = Duration::ZERO;
    let server = TestServer::start(cfg).await;
    let alice = server.login("alice").await;
    refused_token(&server, alice.token()).await;
}

#[tokio::test]
async fn bad_names_are_refused_and_close_with_1008() {
    let server = TestServer::start(Config::for_tests()).await;
    let too_long = "n".repeat(33);
    for name in [
        "",
        "   ",
        too_long.as_str(),
        "al\u{7}ice",
        "tab\there",
        // v1.1: names that show nothing, and bidirectional controls.
        "\u{200b}",
        "\u{2800}\u{3164}",
        "al\u{202e}ice",
        "\u{2067}bob\u{2069}",
    ] {
        let mut client = server.connect().await;
        client
            .send(&ClientFrame::Hello {
                name: name.to_owned(),
                token: None,
            })
            .await;
        client.expect_error(ErrorCode::BadName, None).await;
        assert_eq!(client.expect_close().await, 1008, "name {name:?}");
    }

    // v1.1: a hello whose name cannot be read (a lone surrogate escape,
    // not a Unicode string; a number) names the field: `bad_name`, not
    // `unauthorized`.
    for hello in [
        r#"{"type":"hello","name":"ab\ud83d"}"#,
        r#"{"type":"hello","name":"\udc00"}"#,
        r#"{"type":"hello","name":42}"#,
    ] {
        let mut client = server.connect().await;
        client.send_text(hello).await;
        client.expect_error(ErrorCode::BadName, None).await;
        assert_eq!(client.expect_close().await, 1008, "{hello}");
    }

    // The edges that pass: 32 characters (not bytes), surrounding space trimmed.
    let longest = "é".repeat(32);
    assert_eq!(server.login(&longest).await.user().name, longest);
    assert_eq!(server.login("  bob  ").await.user().name, "bob");
}

#[tokio::test]
async fn ten_bad_frames_within_ten_seconds_close_with_1008() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = server.login("alice").await;
    for _ in 0..9 {
        alice.send_text("nope").await;
        alice.expect_error(ErrorCode::BadFrame, None).await;
    }
    alice.ping().await;
    alice.send_text("nope").await;
    alice.expect_error(ErrorCode::BadFrame, None).await;
    assert_eq!(alice.expect_close().await, 1008);
}

#[tokio::test]
async fn frame_of_exactly_64_kib_is_accepted() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = server.login("alice").await;
    alice.send_text(&padded_ping(MAX_CLIENT_FRAME_BYTES)).await;
    assert_eq!(alice.recv().await, ServerFrame::Pong);
}

#[tokio::test]
async fn frame_over_64_kib_closes_with_1009() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = server.login("alice").await;
    alice
        .send_text(&padded_ping(MAX_CLIENT_FRAME_BYTES + 1))
        .await;
    assert_eq!(alice.expect_close().await, 1009);

    let mut bob = server.login("bob").await;
    bob.send_raw(Message::binary(vec![b'a'; MAX_CLIENT_FRAME_BYTES + 1]))
        .await;
    assert_eq!(bob.expect_close().await, 1009);
}

#[tokio::test]
async fn slow_reader_is_closed_with_1013_and_the_others_miss_nothing() {
    /// Sends between two looks at the slow-consumer counter.
    const BATCH: u64 = 16;
    /// Far more than loopback buffers hold; reaching it fails the test.
    const MAX_MESSAGES: u64 = 40_000;
    let mut cfg = unthrottled();
    cfg.outbox_capacity = 16;
    // The slow client's socket stays stalled while the test keeps sending;
    // it must end for its full outbox (1013), not for a timed-out write.
    cfg.write_timeout = Duration::from_secs(60);
    let server = TestServer::start(cfg).await;

    let mut alice = member(&server, "alice").await;
    let mut bob = member(&server, "bob").await;
    assert_eq!(alice.recv().await, presence_joined(ROOM, bob.user()));
    let mut slow = member(&server, "slow").await;
    let slow_user = slow.user().clone();
    for reader in [&mut alice, &mut bob] {
        assert_eq!(reader.recv().await, presence_joined(ROOM, &slow_user));
    }

    // From here `slow` reads nothing until the server gave up on it.
    let body = "x".repeat(3900);
    let mut published = 0;
    while server.metric("chat_slow_consumer_closes_total").await == 0.0 {
        assert!(
            published < MAX_MESSAGES,
            "{published} messages and the slow reader is still served"
        );
        for _ in 0..BATCH {
            alice.submit(ROOM, &unique_id("bulk"), &body).await;
        }
        let expected: Vec<u64> = (published + 1..=published + BATCH).collect();
        let (acks, own) = alice
            .acks_and_messages(BATCH as usize, BATCH as usize)
            .await;
        let acked: Vec<u64> = acks.iter().map(|(_, o)| *o).collect();
        assert_eq!(acked, expected);
        assert_eq!(offsets(&own), expected);
        let seen = bob.messages(BATCH as usize).await;
        assert_eq!(offsets(&seen), expected, "bob misses nothing");
        published += BATCH;
    }

    let (frames, code) = slow.frames_until_close().await;
    assert_eq!(code, 1013);
    let received: Vec<u64> = frames
        .iter()
        .map(|f| match f {
            ServerFrame::Message(m) => m.offset,
            other => panic!("expected messages, got {other:?}"),
        })
        .collect();
    assert!(
        received.len() < published as usize,
        "the slow reader lost the rest"
    );
    assert_eq!(
        received,
        (1..=received.len() as u64).collect::<Vec<_>>(),
        "what it got is in order with no gap"
    );
    // It left the room; the others are still served.
    for reader in [&mut alice, &mut bob] {
        assert_eq!(reader.recv().await, presence_left(ROOM, &slow_user));
        reader.ping().await;
    }
}

#[tokio::test]
async fn connections_beyond_the_per_ip_limit_are_refused_with_429() {
    let mut cfg = Config::for_tests();
    cfg.max_conns_per_ip = 2;
    let server = TestServer::start(cfg).await;
    let mut first = server.connect().await;
    let _second = server.connect().await;
    assert_eq!(server.try_connect(&[]).await.err(), Some(429));
    first.hello("alice").await;
    first.ping().await;
}

#[tokio::test]
async fn cross_origin_upgrade_is_refused_with_403() {
    let server = TestServer::start(Config::for_tests()).await;
    let evil = [("origin", "http://evil.example")];
    assert_eq!(server.try_connect(&evil).await.err(), Some(403));
    let other_port = format!("http://{}:1", server.addr.ip());
    assert_eq!(
        server.try_connect(&[("origin", &other_port)]).await.err(),
        Some(403)
    );

    let same = format!("http://{}", server.addr);
    let mut browser = server
        .try_connect(&[("origin", &same)])
        .await
        .expect("same origin is accepted");
    browser.hello("alice").await;
    let mut tool = server.connect().await;
    tool.hello("bob").await;
}

#[tokio::test]
async fn listed_origins_are_the_only_ones_accepted() {
    let mut cfg = Config::for_tests();
    cfg.origins = OriginPolicy::List(vec!["https://chat.example.com".to_owned()]);
    let server = TestServer::start(cfg).await;
    assert!(server
        .try_connect(&[("origin", "https://chat.example.com")])
        .await
        .is_ok());
    let same = format!("http://{}", server.addr);
    assert_eq!(
        server.try_connect(&[("origin", &same)]).await.err(),
        Some(403)
    );
}
