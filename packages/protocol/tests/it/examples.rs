//! Every JSON example of PROTOCOL.md, copied verbatim (placeholder strings
//! such as `"u_…"` are valid JSON and kept as is). Where the contract writes
//! `[message…]` or `[user…]`, which is not JSON, a complete message or user
//! object stands in; where it writes `"code":"…"`, a real code stands in.

use crate::{assert_client_example, assert_server_example, message_at, user};
use protocol::{ClientFrame, ErrorCode, ReconnectReason, RoomInfo, ServerFrame, Since};

// --- Session -------------------------------------------------------------

#[test]
fn hello_without_token() {
    assert_client_example(
        r#"{"type":"hello","name":"alice"}"#,
        ClientFrame::Hello {
            name: "alice".to_owned(),
            token: None,
        },
    );
}

#[test]
fn hello_with_token() {
    assert_client_example(
        r#"{"type":"hello","name":"alice","token":"…"}"#,
        ClientFrame::Hello {
            name: "alice".to_owned(),
            token: Some("…".to_owned()),
        },
    );
}

#[test]
fn welcome() {
    assert_server_example(
        r#"{"type":"welcome","protocol":1,"user":{"id":"u_…","name":"alice"},"token":"…","server":"server-a"}"#,
        ServerFrame::Welcome {
            protocol: 1,
            user: user("u_…", "alice"),
            token: "…".to_owned(),
            server: "server-a".to_owned(),
        },
    );
}

#[test]
fn welcome_announces_the_crate_protocol_version() {
    let frame = ServerFrame::Welcome {
        protocol: protocol::PROTOCOL_VERSION,
        user: user("u_1", "alice"),
        token: "t".to_owned(),
        server: "server-a".to_owned(),
    };
    assert_eq!(crate::json(&frame.to_json())["protocol"], 1);
}

// --- Rooms and messages --------------------------------------------------

#[test]
fn join_without_since() {
    assert_client_example(
        r#"{"type":"join","room":"general"}"#,
        ClientFrame::Join {
            room: "general".to_owned(),
            since: None,
        },
    );
}

#[test]
fn join_with_since() {
    assert_client_example(
        r#"{"type":"join","room":"general","since":{"epoch":"…","offset":41}}"#,
        ClientFrame::Join {
            room: "general".to_owned(),
            since: Some(Since {
                epoch: "…".to_owned(),
                offset: 41,
            }),
        },
    );
}

#[test]
fn joined() {
    assert_server_example(
        r#"{"type":"joined","room":"general","epoch":"…","offset":57,"members":[{"id":"u_…","name":"bob"}],"history":[{"room":"general","offset":57,"id":"m_…","client_id":"c-17","from":{"id":"u_…","name":"alice"},"body":"hi","ts":1763800000000}],"recovered":true}"#,
        ServerFrame::Joined {
            room: "general".to_owned(),
            epoch: "…".to_owned(),
            offset: 57,
            members: vec![user("u_…", "bob")],
            history: vec![message_at(57)],
            recovered: true,
        },
    );
}

#[test]
fn joined_empty_room_not_recovered() {
    assert_server_example(
        r#"{"type":"joined","room":"general","epoch":"e1","offset":0,"members":[],"history":[],"recovered":false}"#,
        ServerFrame::Joined {
            room: "general".to_owned(),
            epoch: "e1".to_owned(),
            offset: 0,
            members: vec![],
            history: vec![],
            recovered: false,
        },
    );
}

#[test]
fn leave() {
    assert_client_example(
        r#"{"type":"leave","room":"general"}"#,
        ClientFrame::Leave {
            room: "general".to_owned(),
        },
    );
}

#[test]
fn left() {
    assert_server_example(
        r#"{"type":"left","room":"general"}"#,
        ServerFrame::Left {
            room: "general".to_owned(),
        },
    );
}

#[test]
fn send() {
    assert_client_example(
        r#"{"type":"send","room":"general","id":"c-17","body":"hi"}"#,
        ClientFrame::Send {
            room: "general".to_owned(),
            id: "c-17".to_owned(),
            body: "hi".to_owned(),
        },
    );
}

#[test]
fn ack() {
    assert_server_example(
        r#"{"type":"ack","id":"c-17","room":"general","offset":58}"#,
        ServerFrame::Ack {
            id: "c-17".to_owned(),
            room: "general".to_owned(),
            offset: 58,
        },
    );
}

#[test]
fn message() {
    assert_server_example(
        r#"{"type":"message","room":"general","offset":58,"id":"m_…","client_id":"c-17","from":{"id":"u_…","name":"alice"},"body":"hi","ts":1763800000000}"#,
        ServerFrame::Message(message_at(58)),
    );
}

#[test]
fn history_request() {
    assert_client_example(
        r#"{"type":"history","room":"general","before":58,"limit":50}"#,
        ClientFrame::History {
            room: "general".to_owned(),
            before: Some(58),
            limit: Some(50),
        },
    );
}

#[test]
fn history_response() {
    assert_server_example(
        r#"{"type":"history","room":"general","messages":[{"room":"general","offset":56,"id":"m_…","client_id":"c-17","from":{"id":"u_…","name":"alice"},"body":"hi","ts":1763800000000},{"room":"general","offset":57,"id":"m_…","client_id":"c-17","from":{"id":"u_…","name":"alice"},"body":"hi","ts":1763800000000}]}"#,
        ServerFrame::History {
            room: "general".to_owned(),
            messages: vec![message_at(56), message_at(57)],
        },
    );
}

#[test]
fn typing_request() {
    assert_client_example(
        r#"{"type":"typing","room":"general"}"#,
        ClientFrame::Typing {
            room: "general".to_owned(),
        },
    );
}

#[test]
fn typing_broadcast() {
    assert_server_example(
        r#"{"type":"typing","room":"general","user":{"id":"u_…","name":"alice"}}"#,
        ServerFrame::Typing {
            room: "general".to_owned(),
            user: user("u_…", "alice"),
        },
    );
}

#[test]
fn presence() {
    assert_server_example(
        r#"{"type":"presence","room":"general","joined":[{"id":"u_1","name":"bob"}],"left":[{"id":"u_2","name":"carol"}]}"#,
        ServerFrame::Presence {
            room: "general".to_owned(),
            joined: vec![user("u_1", "bob")],
            left: vec![user("u_2", "carol")],
        },
    );
}

#[test]
fn presence_keeps_empty_arrays() {
    // "`presence` always has both `joined` and `left` arrays (either may be
    // empty)": an empty side is serialised, not omitted.
    assert_server_example(
        r#"{"type":"presence","room":"general","joined":[{"id":"u_1","name":"bob"}],"left":[]}"#,
        ServerFrame::Presence {
            room: "general".to_owned(),
            joined: vec![user("u_1", "bob")],
            left: vec![],
        },
    );
}

#[test]
fn rooms_request() {
    assert_client_example(
        r#"{"type":"rooms"}"#,
        ClientFrame::Rooms {
            cursor: None,
            limit: None,
        },
    );
}

#[test]
fn rooms_response() {
    assert_server_example(
        r#"{"type":"rooms","rooms":[{"room":"general","members":12}]}"#,
        ServerFrame::Rooms {
            rooms: vec![RoomInfo {
                room: "general".to_owned(),
                members: 12,
            }],
            next: None,
        },
    );
}

#[test]
fn ping() {
    assert_client_example(r#"{"type":"ping"}"#, ClientFrame::Ping);
}

#[test]
fn pong() {
    assert_server_example(r#"{"type":"pong"}"#, ServerFrame::Pong);
}

// --- Errors, limits, shutdown --------------------------------------------

#[test]
fn error_with_id() {
    assert_server_example(
        r#"{"type":"error","code":"bad_frame","message":"human text","id":"c-17"}"#,
        ServerFrame::Error {
            code: ErrorCode::BadFrame,
            message: "human text".to_owned(),
            id: Some("c-17".to_owned()),
        },
    );
}

#[test]
fn error_without_id() {
    assert_server_example(
        r#"{"type":"error","code":"unauthorized","message":"human text"}"#,
        ServerFrame::Error {
            code: ErrorCode::Unauthorized,
            message: "human text".to_owned(),
            id: None,
        },
    );
}

#[test]
fn error_constructor_builds_the_error_frame() {
    assert_eq!(
        ServerFrame::error(ErrorCode::RateLimited, "slow down", Some("c-1".to_owned())),
        ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: "slow down".to_owned(),
            id: Some("c-1".to_owned()),
        }
    );
    assert_server_example(
        r#"{"type":"error","code":"not_joined","message":"join first"}"#,
        ServerFrame::error(ErrorCode::NotJoined, "join first", None),
    );
}

#[test]
fn error_with_every_code() {
    for code in ErrorCode::ALL {
        let text = format!(
            r#"{{"type":"error","code":"{}","message":"human text","id":"c-17"}}"#,
            code.as_str()
        );
        assert_server_example(
            &text,
            ServerFrame::Error {
                code,
                message: "human text".to_owned(),
                id: Some("c-17".to_owned()),
            },
        );
    }
}

#[test]
fn reconnect() {
    assert_server_example(
        r#"{"type":"reconnect","reason":"shutdown"}"#,
        ServerFrame::Reconnect {
            reason: ReconnectReason::Shutdown,
            delay_ms: 0,
        },
    );
}

#[test]
fn reconnect_spread_by_a_drain() {
    assert_server_example(
        r#"{"type":"reconnect","reason":"shutdown","delay_ms":4200}"#,
        ServerFrame::Reconnect {
            reason: ReconnectReason::Shutdown,
            delay_ms: 4200,
        },
    );
}

/// The repository's PROTOCOL.md is the normative text: every JSON example
/// in it that is complete JSON is one of the examples tested above, word
/// for word (the rest write `[message…]`, `[user…]` or `"code":"…"`, and
/// their stand-ins are documented at the top of this file).
#[test]
fn every_example_of_protocol_md_is_tested_here() {
    let spec = include_str!("../../PROTOCOL.md");
    let tests = include_str!("examples.rs");
    let mut checked = 0;
    for span in spec.split('`').skip(1).step_by(2) {
        if !span.starts_with("{\"type\"") {
            continue;
        }
        if serde_json::from_str::<serde_json::Value>(span).is_err()
            || span.contains("\"code\":\"…\"")
        {
            continue;
        }
        assert!(
            tests.contains(span),
            "the example {span} of PROTOCOL.md is not tested in examples.rs"
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} examples found in PROTOCOL.md"
    );
}

// --- v1.1 --------------------------------------------------------------

#[test]
fn rooms_page_request_and_response() {
    assert_client_example(
        r#"{"type":"rooms","cursor":"12:general","limit":50}"#,
        ClientFrame::Rooms {
            cursor: Some("12:general".to_owned()),
            limit: Some(50),
        },
    );
    assert_server_example(
        r#"{"type":"rooms","rooms":[{"room":"general","members":12}],"next":"12:general"}"#,
        ServerFrame::Rooms {
            rooms: vec![RoomInfo {
                room: "general".to_owned(),
                members: 12,
            }],
            next: Some("12:general".to_owned()),
        },
    );
}

#[test]
fn coalesced_presence() {
    assert_server_example(
        r#"{"type":"presence","room":"general","joined":[{"id":"u_2","name":"bob"}],"left":[{"id":"u_3","name":"carol"}]}"#,
        ServerFrame::Presence {
            room: "general".to_owned(),
            joined: vec![user("u_2", "bob")],
            left: vec![user("u_3", "carol")],
        },
    );
}

// --- Host identity ------------------------------------------------------

#[test]
fn hello_with_a_host_token() {
    assert_client_example(
        r#"{"type":"hello","name":"alice","token":"eyJ…"}"#,
        ClientFrame::Hello {
            name: "alice".to_owned(),
            token: Some("eyJ…".to_owned()),
        },
    );
}

#[test]
fn refresh() {
    assert_client_example(
        r#"{"type":"refresh","token":"eyJ…"}"#,
        ClientFrame::Refresh {
            token: "eyJ…".to_owned(),
        },
    );
}

#[test]
fn forbidden() {
    assert_server_example(
        r#"{"type":"error","code":"forbidden","message":"…"}"#,
        ServerFrame::Error {
            code: ErrorCode::Forbidden,
            message: "…".to_owned(),
            id: None,
        },
    );
}
