//! How frames parse beyond the happy path: "Unknown fields are ignored by
//! both sides; an unknown `type` from a client is answered with an `error`
//! frame" (so it must fail to parse), required fields are required, and
//! optional fields are omitted when absent.

use crate::{assert_client_rejects, assert_server_rejects, json, message_at, user};
use protocol::{ClientFrame, ErrorCode, ServerFrame, Since};

// --- Unknown fields --------------------------------------------------------

#[test]
fn client_frames_ignore_unknown_fields() {
    let cases = [
        (
            r#"{"type":"hello","name":"alice","color":"red","v":2}"#,
            ClientFrame::Hello {
                name: "alice".to_owned(),
                token: None,
            },
        ),
        (
            r#"{"extra":null,"type":"hello","token":"t","name":"alice"}"#,
            ClientFrame::Hello {
                name: "alice".to_owned(),
                token: Some("t".to_owned()),
            },
        ),
        (
            r#"{"type":"join","room":"general","since":{"epoch":"e","offset":41,"x":[1]},"y":{}}"#,
            ClientFrame::Join {
                room: "general".to_owned(),
                since: Some(Since {
                    epoch: "e".to_owned(),
                    offset: 41,
                }),
            },
        ),
        (
            r#"{"type":"leave","room":"general","why":"bored"}"#,
            ClientFrame::Leave {
                room: "general".to_owned(),
            },
        ),
        (
            r#"{"type":"send","room":"general","id":"c-17","body":"hi","format":"md"}"#,
            ClientFrame::Send {
                room: "general".to_owned(),
                id: "c-17".to_owned(),
                body: "hi".to_owned(),
            },
        ),
        (
            r#"{"type":"history","room":"general","before":58,"limit":50,"after":3}"#,
            ClientFrame::History {
                room: "general".to_owned(),
                before: Some(58),
                limit: Some(50),
            },
        ),
        (
            r#"{"type":"typing","room":"general","state":"start"}"#,
            ClientFrame::Typing {
                room: "general".to_owned(),
            },
        ),
        (
            r#"{"type":"rooms","filter":"gen"}"#,
            ClientFrame::Rooms {
                cursor: None,
                limit: None,
            },
        ),
        (r#"{"type":"ping","nonce":7}"#, ClientFrame::Ping),
    ];
    for (text, expected) in cases {
        assert_eq!(
            ClientFrame::from_json(text).unwrap_or_else(|e| panic!("{e}: {text}")),
            expected,
            "{text}"
        );
    }
}

#[test]
fn server_frames_ignore_unknown_fields() {
    let cases = [
        (
            r#"{"type":"welcome","protocol":1,"user":{"id":"u_1","name":"alice","avatar":"a.png"},"token":"t","server":"server-a","region":"eu"}"#,
            ServerFrame::Welcome {
                protocol: 1,
                user: user("u_1", "alice"),
                token: "t".to_owned(),
                server: "server-a".to_owned(),
            },
        ),
        (
            r#"{"type":"message","room":"general","offset":58,"id":"m_…","client_id":"c-17","from":{"id":"u_…","name":"alice","x":1},"body":"hi","ts":1763800000000,"edited":false}"#,
            ServerFrame::Message(message_at(58)),
        ),
        (
            r#"{"type":"rooms","rooms":[{"room":"general","members":12,"topic":"x"}],"total":1}"#,
            ServerFrame::Rooms {
                rooms: vec![protocol::RoomInfo {
                    room: "general".to_owned(),
                    members: 12,
                }],
                next: None,
            },
        ),
        (
            r#"{"type":"error","code":"bad_room","message":"m","retry_after":5}"#,
            ServerFrame::Error {
                code: ErrorCode::BadRoom,
                message: "m".to_owned(),
                id: None,
            },
        ),
        (r#"{"type":"pong","ts":1}"#, ServerFrame::Pong),
        (
            r#"{"type":"reconnect","reason":"shutdown","after_ms":100}"#,
            ServerFrame::Reconnect {
                reason: protocol::ReconnectReason::Shutdown,
                delay_ms: 0,
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(
            ServerFrame::from_json(text).unwrap_or_else(|e| panic!("{e}: {text}")),
            expected,
            "{text}"
        );
    }
}

// --- The type tag ------------------------------------------------------------

#[test]
fn unknown_type_is_refused() {
    assert_client_rejects(r#"{"type":"shout","room":"general"}"#);
    assert_client_rejects(r#"{"type":"","room":"general"}"#);
    assert_server_rejects(r#"{"type":"shout","room":"general"}"#);
}

#[test]
fn server_only_types_are_not_client_frames() {
    for text in [
        r#"{"type":"pong"}"#,
        r#"{"type":"left","room":"general"}"#,
        r#"{"type":"reconnect","reason":"shutdown"}"#,
        r#"{"type":"ack","id":"c-17","room":"general","offset":58}"#,
        r#"{"type":"welcome","protocol":1,"user":{"id":"u_…","name":"alice"},"token":"…","server":"server-a"}"#,
    ] {
        assert_client_rejects(text);
    }
}

#[test]
fn client_only_types_are_not_server_frames() {
    for text in [
        r#"{"type":"ping"}"#,
        r#"{"type":"hello","name":"alice"}"#,
        r#"{"type":"send","room":"general","id":"c-17","body":"hi"}"#,
        r#"{"type":"leave","room":"general"}"#,
    ] {
        assert_server_rejects(text);
    }
}

#[test]
fn type_tag_is_snake_case_and_case_sensitive() {
    assert_client_rejects(r#"{"type":"Hello","name":"alice"}"#);
    assert_client_rejects(r#"{"type":"HELLO","name":"alice"}"#);
    assert_client_rejects(r#"{"type":"Ping"}"#);
    assert_server_rejects(r#"{"type":"Pong"}"#);
}

#[test]
fn missing_type_is_refused() {
    assert_client_rejects(r#"{"name":"alice"}"#);
    assert_client_rejects(r#"{"room":"general","id":"c-17","body":"hi"}"#);
    assert_client_rejects(r#"{}"#);
    assert_server_rejects(r#"{"room":"general"}"#);
}

#[test]
fn type_of_wrong_json_type_is_refused() {
    assert_client_rejects(r#"{"type":null}"#);
    assert_client_rejects(r#"{"type":1}"#);
    assert_client_rejects(r#"{"type":["ping"]}"#);
}

#[test]
fn non_objects_and_malformed_json_are_refused() {
    for text in [
        "",
        "ping",
        r#""ping""#,
        "null",
        "42",
        r#"["ping"]"#,
        r#"["hello","alice"]"#,
        r#"["leave","general"]"#,
        r#"["send","general","c-17","hi"]"#,
        r#" ["ping"]"#,
        r#"{"type":"ping""#,
        r#"{"type":"ping"} {"type":"ping"}"#,
        r#"{'type':'ping'}"#,
    ] {
        assert_client_rejects(text);
    }
    for text in [r#"["pong"]"#, r#"["left","general"]"#, "null", ""] {
        assert_server_rejects(text);
    }
}

#[test]
fn surrounding_json_whitespace_is_allowed() {
    assert_eq!(
        ClientFrame::from_json(" \t\r\n{\"type\":\"ping\"}\n").expect("parses"),
        ClientFrame::Ping
    );
    assert_eq!(
        ServerFrame::from_json("\n{ \"type\" : \"pong\" } ").expect("parses"),
        ServerFrame::Pong
    );
}

// --- Required fields ---------------------------------------------------------

#[test]
fn missing_required_client_fields_are_refused() {
    for text in [
        r#"{"type":"hello"}"#,
        r#"{"type":"hello","token":"t"}"#,
        r#"{"type":"join"}"#,
        r#"{"type":"join","since":{"epoch":"e","offset":41}}"#,
        r#"{"type":"join","room":"general","since":{"offset":41}}"#,
        r#"{"type":"join","room":"general","since":{"epoch":"e"}}"#,
        r#"{"type":"leave"}"#,
        r#"{"type":"send","id":"c-17","body":"hi"}"#,
        r#"{"type":"send","room":"general","body":"hi"}"#,
        r#"{"type":"send","room":"general","id":"c-17"}"#,
        r#"{"type":"history","before":58,"limit":50}"#,
        r#"{"type":"typing"}"#,
    ] {
        assert_client_rejects(text);
    }
}

#[test]
fn missing_required_server_fields_are_refused() {
    for text in [
        // `joined.recovered` is always present.
        r#"{"type":"joined","room":"general","epoch":"e","offset":57,"members":[],"history":[]}"#,
        r#"{"type":"joined","room":"general","epoch":"e","offset":57,"members":[],"recovered":true}"#,
        r#"{"type":"joined","room":"general","offset":57,"members":[],"history":[],"recovered":true}"#,
        // `presence` always has both `joined` and `left`.
        r#"{"type":"presence","room":"general","joined":[]}"#,
        r#"{"type":"presence","room":"general","left":[]}"#,
        r#"{"type":"welcome","protocol":1,"user":{"id":"u_1","name":"alice"},"server":"server-a"}"#,
        r#"{"type":"welcome","protocol":1,"user":{"id":"u_1"},"token":"t","server":"server-a"}"#,
        r#"{"type":"ack","id":"c-17","room":"general"}"#,
        r#"{"type":"message","room":"general","offset":58,"id":"m_1","from":{"id":"u_1","name":"alice"},"body":"hi","ts":1}"#,
        r#"{"type":"message","room":"general","offset":58,"id":"m_1","client_id":"c-17","from":{"id":"u_1","name":"alice"},"body":"hi"}"#,
        r#"{"type":"history","room":"general"}"#,
        r#"{"type":"typing","room":"general"}"#,
        r#"{"type":"rooms"}"#,
        r#"{"type":"rooms","rooms":[{"room":"general"}]}"#,
        r#"{"type":"error","message":"m"}"#,
        r#"{"type":"error","code":"bad_frame"}"#,
        r#"{"type":"reconnect"}"#,
    ] {
        assert_server_rejects(text);
    }
}

// --- Wrong JSON types --------------------------------------------------------

#[test]
fn wrong_json_types_in_client_frames_are_refused() {
    for text in [
        r#"{"type":"hello","name":42}"#,
        r#"{"type":"hello","name":null}"#,
        r#"{"type":"hello","name":"alice","token":7}"#,
        r#"{"type":"join","room":["general"]}"#,
        r#"{"type":"join","room":"general","since":{"epoch":"e","offset":"41"}}"#,
        r#"{"type":"join","room":"general","since":{"epoch":"e","offset":-1}}"#,
        r#"{"type":"join","room":"general","since":{"epoch":"e","offset":41.5}}"#,
        r#"{"type":"join","room":"general","since":{"epoch":1,"offset":41}}"#,
        r#"{"type":"join","room":"general","since":41}"#,
        r#"{"type":"join","room":"general","since":"e:41"}"#,
        r#"{"type":"send","room":"general","id":17,"body":"hi"}"#,
        r#"{"type":"send","room":"general","id":"c-17","body":["hi"]}"#,
        r#"{"type":"history","room":"general","before":"58"}"#,
        r#"{"type":"history","room":"general","before":-1}"#,
        r#"{"type":"history","room":"general","limit":"50"}"#,
        r#"{"type":"history","room":"general","limit":-50}"#,
        r#"{"type":"history","room":"general","limit":18446744073709551616}"#,
    ] {
        assert_client_rejects(text);
    }
}

#[test]
fn wrong_json_types_in_server_frames_are_refused() {
    for text in [
        r#"{"type":"welcome","protocol":"1","user":{"id":"u_1","name":"alice"},"token":"t","server":"s"}"#,
        r#"{"type":"welcome","protocol":-1,"user":{"id":"u_1","name":"alice"},"token":"t","server":"s"}"#,
        r#"{"type":"joined","room":"general","epoch":"e","offset":"57","members":[],"history":[],"recovered":true}"#,
        r#"{"type":"joined","room":"general","epoch":"e","offset":-57,"members":[],"history":[],"recovered":true}"#,
        r#"{"type":"joined","room":"general","epoch":"e","offset":57,"members":[],"history":[],"recovered":"true"}"#,
        r#"{"type":"joined","room":"general","epoch":"e","offset":57,"members":{},"history":[],"recovered":true}"#,
        r#"{"type":"ack","id":"c-17","room":"general","offset":"58"}"#,
        r#"{"type":"ack","id":"c-17","room":"general","offset":-58}"#,
        r#"{"type":"message","room":"general","offset":58,"id":"m_1","client_id":"c-17","from":{"id":"u_1","name":"alice"},"body":"hi","ts":"1763800000000"}"#,
        r#"{"type":"message","room":"general","offset":58,"id":"m_1","client_id":"c-17","from":"alice","body":"hi","ts":1}"#,
        r#"{"type":"rooms","rooms":[{"room":"general","members":-1}]}"#,
        // A code of another JSON type is refused; an unknown string code
        // parses as `Unknown` (v1.1, codes.rs).
        r#"{"type":"error","code":1008,"message":"m"}"#,
        r#"{"type":"reconnect","reason":"Shutdown"}"#,
    ] {
        assert_server_rejects(text);
    }
}

#[test]
fn large_integers_within_range_are_accepted() {
    let frame = ClientFrame::from_json(
        r#"{"type":"join","room":"general","since":{"epoch":"e","offset":18446744073709551615}}"#,
    )
    .expect("u64::MAX offset parses");
    assert_eq!(
        frame,
        ClientFrame::Join {
            room: "general".to_owned(),
            since: Some(Since {
                epoch: "e".to_owned(),
                offset: u64::MAX,
            }),
        }
    );
}

// --- Optional fields ---------------------------------------------------------

#[test]
fn optional_client_fields_are_omitted_when_none() {
    let hello = json(
        &ClientFrame::Hello {
            name: "alice".to_owned(),
            token: None,
        }
        .to_json(),
    );
    assert_eq!(hello, json(r#"{"type":"hello","name":"alice"}"#));
    assert!(hello.get("token").is_none());

    let join = json(
        &ClientFrame::Join {
            room: "general".to_owned(),
            since: None,
        }
        .to_json(),
    );
    assert_eq!(join, json(r#"{"type":"join","room":"general"}"#));
    assert!(join.get("since").is_none());

    let history = json(
        &ClientFrame::History {
            room: "general".to_owned(),
            before: None,
            limit: None,
        }
        .to_json(),
    );
    assert_eq!(history, json(r#"{"type":"history","room":"general"}"#));

    let only_before = json(
        &ClientFrame::History {
            room: "general".to_owned(),
            before: Some(58),
            limit: None,
        }
        .to_json(),
    );
    assert_eq!(
        only_before,
        json(r#"{"type":"history","room":"general","before":58}"#)
    );

    let only_limit = json(
        &ClientFrame::History {
            room: "general".to_owned(),
            before: None,
            limit: Some(50),
        }
        .to_json(),
    );
    assert_eq!(
        only_limit,
        json(r#"{"type":"history","room":"general","limit":50}"#)
    );
}

#[test]
fn error_id_is_omitted_when_none() {
    let error = json(&ServerFrame::error(ErrorCode::Unavailable, "store down", None).to_json());
    assert_eq!(
        error,
        json(r#"{"type":"error","code":"unavailable","message":"store down"}"#)
    );
    assert!(error.get("id").is_none());
}

#[test]
fn absent_optional_fields_parse_as_none() {
    assert_eq!(
        ClientFrame::from_json(r#"{"type":"history","room":"general"}"#).expect("parses"),
        ClientFrame::History {
            room: "general".to_owned(),
            before: None,
            limit: None,
        }
    );
    assert_eq!(
        ClientFrame::from_json(r#"{"type":"history","room":"general","limit":500}"#)
            .expect("parses"),
        ClientFrame::History {
            room: "general".to_owned(),
            before: None,
            limit: Some(500),
        },
        "a limit over the cap parses: it is capped by the server, not refused"
    );
}

#[test]
fn null_optional_fields_parse_as_none() {
    assert_eq!(
        ClientFrame::from_json(r#"{"type":"hello","name":"alice","token":null}"#).expect("parses"),
        ClientFrame::Hello {
            name: "alice".to_owned(),
            token: None,
        }
    );
    assert_eq!(
        ClientFrame::from_json(r#"{"type":"join","room":"general","since":null}"#).expect("parses"),
        ClientFrame::Join {
            room: "general".to_owned(),
            since: None,
        }
    );
    assert_eq!(
        ServerFrame::from_json(r#"{"type":"error","code":"bad_frame","message":"m","id":null}"#)
            .expect("parses"),
        ServerFrame::error(ErrorCode::BadFrame, "m", None)
    );
}

#[test]
fn frames_carry_strings_unvalidated() {
    // Parsing does not apply the value rules: the server validates later so
    // it can answer `bad_room` / `bad_name` / echo the send's `id`.
    assert_eq!(
        ClientFrame::from_json(r#"{"type":"send","room":"Not A Room","id":"","body":"  "}"#)
            .expect("parses"),
        ClientFrame::Send {
            room: "Not A Room".to_owned(),
            id: String::new(),
            body: "  ".to_owned(),
        }
    );
}

#[test]
fn string_escapes_round_trip() {
    let frame = ClientFrame::Send {
        room: "general".to_owned(),
        id: "c-\"1\"".to_owned(),
        body: "line 1\nline 2\t\u{e9}\u{1f600} \\ </script>".to_owned(),
    };
    assert_eq!(
        ClientFrame::from_json(&frame.to_json()).expect("parses"),
        frame
    );
    assert_eq!(
        ClientFrame::from_json(
            r#"{"type":"send","room":"general","id":"c","body":"a\nb\u00e9\ud83d\ude00"}"#
        )
        .expect("parses"),
        ClientFrame::Send {
            room: "general".to_owned(),
            id: "c".to_owned(),
            body: "a\nb\u{e9}\u{1f600}".to_owned(),
        }
    );
}
