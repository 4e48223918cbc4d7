//! Error codes, close codes and frame `type` tags against PROTOCOL.md.

use crate::{json, message_at, user};
use protocol::frames::{CLIENT_FRAME_TYPES, SERVER_FRAME_TYPES};
use protocol::{ClientFrame, CloseCode, ErrorCode, ReconnectReason, RoomInfo, ServerFrame, Since};
use serde_json::Value;
use std::collections::BTreeSet;

// --- ErrorCode -----------------------------------------------------------------

/// The codes of PROTOCOL.md ("Codes: `bad_frame`, …, `unauthorized`") plus
/// the crate's documented v1 extension `too_many_rooms`.
const WIRE_CODES: [(ErrorCode, &str); 10] = [
    (ErrorCode::BadFrame, "bad_frame"),
    (ErrorCode::BadName, "bad_name"),
    (ErrorCode::BadRoom, "bad_room"),
    (ErrorCode::NotJoined, "not_joined"),
    (ErrorCode::TooLarge, "too_large"),
    (ErrorCode::RateLimited, "rate_limited"),
    (ErrorCode::Unavailable, "unavailable"),
    (ErrorCode::Unauthorized, "unauthorized"),
    (ErrorCode::TooManyRooms, "too_many_rooms"),
    (ErrorCode::Forbidden, "forbidden"),
];

#[test]
fn error_codes_serialise_to_their_wire_names_and_back() {
    for (code, wire) in WIRE_CODES {
        assert_eq!(
            serde_json::to_value(code).expect("serialises"),
            Value::String(wire.to_owned()),
            "{code:?}"
        );
        assert_eq!(
            serde_json::from_value::<ErrorCode>(Value::String(wire.to_owned())).expect("parses"),
            code,
            "{wire}"
        );
        assert_eq!(code.as_str(), wire);
        assert_eq!(code.to_string(), wire, "Display");
    }
}

/// v1.1: an error frame with a code this side does not know (a newer
/// server's) parses, as `Unknown`, with its message and id intact.
#[test]
fn an_unknown_error_code_parses_as_unknown() {
    let frame = ServerFrame::from_json(
        r#"{"type":"error","code":"costs_too_much","message":"slow down","id":"c-1"}"#,
    )
    .expect("an error frame with a new code still parses");
    match frame {
        ServerFrame::Error { code, message, id } => {
            assert_eq!(code, ErrorCode::Unknown);
            assert_eq!(message, "slow down");
            assert_eq!(id.as_deref(), Some("c-1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!ErrorCode::ALL.contains(&ErrorCode::Unknown), "never sent");
}

#[test]
fn error_code_all_lists_every_code_once() {
    let all: Vec<ErrorCode> = ErrorCode::ALL.to_vec();
    let table: Vec<ErrorCode> = WIRE_CODES.iter().map(|(c, _)| *c).collect();
    assert_eq!(all, table, "ALL is every code, in declaration order");
    let names: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), ErrorCode::ALL.len(), "wire names are distinct");
}

#[test]
fn as_str_agrees_with_serde_for_every_code() {
    for code in ErrorCode::ALL {
        assert_eq!(
            serde_json::to_string(&code).expect("serialises"),
            format!("\"{}\"", code.as_str()),
            "{code:?}"
        );
        let back: ErrorCode =
            serde_json::from_str(&format!("\"{}\"", code.as_str())).expect("parses");
        assert_eq!(back, code);
    }
}

#[test]
fn every_documented_code_is_known() {
    for wire in [
        "bad_frame",
        "bad_name",
        "bad_room",
        "not_joined",
        "too_large",
        "rate_limited",
        "unavailable",
        "unauthorized",
    ] {
        let code: ErrorCode =
            serde_json::from_value(Value::String(wire.to_owned())).expect("documented code");
        assert_eq!(code.as_str(), wire);
    }
}

/// v1.1: a code that is not one of the wire spellings (misspelt, or a
/// newer server's) parses as `Unknown`, never as a known code; a code that
/// is not a string is refused.
#[test]
fn unknown_or_misspelt_error_codes_parse_as_unknown() {
    for wire in ["", "BadFrame", "BAD_FRAME", "bad-frame", "badframe", "nope"] {
        assert_eq!(
            serde_json::from_value::<ErrorCode>(Value::String(wire.to_owned())).expect(wire),
            ErrorCode::Unknown,
            "{wire:?}"
        );
    }
    assert!(serde_json::from_value::<ErrorCode>(serde_json::json!(1008)).is_err());
}

// --- CloseCode -----------------------------------------------------------------

#[test]
fn close_codes_have_their_documented_numbers() {
    assert_eq!(CloseCode::PolicyViolation.code(), 1008);
    assert_eq!(CloseCode::MessageTooBig.code(), 1009);
    assert_eq!(CloseCode::InternalError.code(), 1011);
    assert_eq!(CloseCode::ServiceRestart.code(), 1012);
    assert_eq!(CloseCode::TryAgainLater.code(), 1013);
    assert_eq!(CloseCode::TokenExpired.code(), 4001);
    assert!(
        !CloseCode::TokenExpired.should_reconnect(),
        "a fresh token first"
    );
    let numbers: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(numbers, [1008, 1009, 1011, 1012, 1013, 4001]);
}

#[test]
fn close_code_from_code_round_trips() {
    for code in CloseCode::ALL {
        assert_eq!(CloseCode::from_code(code.code()), Some(code), "{code:?}");
    }
    for n in [
        0,
        1000,
        1001,
        1006,
        1007,
        1010,
        1014,
        1015,
        3000,
        4000,
        u16::MAX,
    ] {
        assert_eq!(CloseCode::from_code(n), None, "{n}");
    }
}

#[test]
fn should_reconnect_exactly_for_1011_to_1013() {
    for code in CloseCode::ALL {
        let n = code.code();
        assert_eq!(
            code.should_reconnect(),
            (1011..=1013).contains(&n),
            "{code:?} ({n})"
        );
    }
    assert!(!CloseCode::PolicyViolation.should_reconnect());
    assert!(!CloseCode::MessageTooBig.should_reconnect());
    assert!(CloseCode::InternalError.should_reconnect());
    assert!(CloseCode::ServiceRestart.should_reconnect());
    assert!(CloseCode::TryAgainLater.should_reconnect());
}

#[test]
fn only_a_restart_reconnects_at_once() {
    for code in CloseCode::ALL {
        assert_eq!(
            code.reconnect_immediately(),
            code == CloseCode::ServiceRestart,
            "{code:?}"
        );
        // Reconnecting at once implies reconnecting.
        assert!(!code.reconnect_immediately() || code.should_reconnect());
    }
}

// --- Frame type tags -------------------------------------------------------------

/// One value of every client frame variant.
fn every_client_frame() -> Vec<ClientFrame> {
    let frames = vec![
        ClientFrame::Hello {
            name: "alice".to_owned(),
            token: Some("t".to_owned()),
        },
        ClientFrame::Join {
            room: "general".to_owned(),
            since: Some(Since {
                epoch: "e".to_owned(),
                offset: 41,
            }),
        },
        ClientFrame::Leave {
            room: "general".to_owned(),
        },
        ClientFrame::Send {
            room: "general".to_owned(),
            id: "c-17".to_owned(),
            body: "hi".to_owned(),
        },
        ClientFrame::History {
            room: "general".to_owned(),
            before: Some(58),
            limit: Some(50),
        },
        ClientFrame::Typing {
            room: "general".to_owned(),
        },
        ClientFrame::Rooms {
            cursor: None,
            limit: None,
        },
        ClientFrame::Ping,
        ClientFrame::Refresh {
            token: "eyJ.x.y".to_owned(),
        },
    ];
    // Exhaustive match: adding a variant breaks the build here until it is
    // added to the list above.
    for frame in &frames {
        match frame {
            ClientFrame::Hello { .. }
            | ClientFrame::Join { .. }
            | ClientFrame::Leave { .. }
            | ClientFrame::Send { .. }
            | ClientFrame::History { .. }
            | ClientFrame::Typing { .. }
            | ClientFrame::Rooms { .. }
            | ClientFrame::Ping
            | ClientFrame::Refresh { .. } => {}
        }
    }
    frames
}

/// One value of every server frame variant.
fn every_server_frame() -> Vec<ServerFrame> {
    let frames = vec![
        ServerFrame::Welcome {
            protocol: 1,
            user: user("u_1", "alice"),
            token: "t".to_owned(),
            server: "server-a".to_owned(),
        },
        ServerFrame::Joined {
            room: "general".to_owned(),
            epoch: "e".to_owned(),
            offset: 57,
            members: vec![user("u_2", "bob")],
            history: vec![message_at(57)],
            recovered: true,
        },
        ServerFrame::Left {
            room: "general".to_owned(),
        },
        ServerFrame::Ack {
            id: "c-17".to_owned(),
            room: "general".to_owned(),
            offset: 58,
        },
        ServerFrame::Message(message_at(58)),
        ServerFrame::History {
            room: "general".to_owned(),
            messages: vec![message_at(56)],
        },
        ServerFrame::Typing {
            room: "general".to_owned(),
            user: user("u_1", "alice"),
        },
        ServerFrame::Presence {
            room: "general".to_owned(),
            joined: vec![user("u_2", "bob")],
            left: vec![],
        },
        ServerFrame::Rooms {
            rooms: vec![RoomInfo {
                room: "general".to_owned(),
                members: 12,
            }],
            next: None,
        },
        ServerFrame::Pong,
        ServerFrame::error(ErrorCode::BadFrame, "m", Some("c-17".to_owned())),
        ServerFrame::Reconnect {
            reason: ReconnectReason::Shutdown,
            delay_ms: 0,
        },
    ];
    for frame in &frames {
        match frame {
            ServerFrame::Welcome { .. }
            | ServerFrame::Joined { .. }
            | ServerFrame::Left { .. }
            | ServerFrame::Ack { .. }
            | ServerFrame::Message(_)
            | ServerFrame::History { .. }
            | ServerFrame::Typing { .. }
            | ServerFrame::Presence { .. }
            | ServerFrame::Rooms { .. }
            | ServerFrame::Pong
            | ServerFrame::Error { .. }
            | ServerFrame::Reconnect { .. } => {}
        }
    }
    frames
}

#[test]
fn client_kind_agrees_with_the_type_tag() {
    let mut kinds = Vec::new();
    for frame in every_client_frame() {
        let value = json(&frame.to_json());
        assert_eq!(value["type"], frame.kind(), "{frame:?}");
        assert_eq!(
            ClientFrame::from_json(&frame.to_json()).expect("round trips"),
            frame
        );
        kinds.push(frame.kind());
    }
    assert_eq!(
        kinds, CLIENT_FRAME_TYPES,
        "one variant per tag, in protocol order"
    );
    let set: BTreeSet<&str> = kinds.into_iter().collect();
    assert_eq!(set, CLIENT_FRAME_TYPES.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(set.len(), CLIENT_FRAME_TYPES.len(), "tags are distinct");
}

#[test]
fn server_kind_agrees_with_the_type_tag() {
    let mut kinds = Vec::new();
    for frame in every_server_frame() {
        let value = json(&frame.to_json());
        assert_eq!(value["type"], frame.kind(), "{frame:?}");
        assert_eq!(
            ServerFrame::from_json(&frame.to_json()).expect("round trips"),
            frame
        );
        kinds.push(frame.kind());
    }
    assert_eq!(
        kinds, SERVER_FRAME_TYPES,
        "one variant per tag, in protocol order"
    );
    let set: BTreeSet<&str> = kinds.into_iter().collect();
    assert_eq!(set, SERVER_FRAME_TYPES.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(set.len(), SERVER_FRAME_TYPES.len(), "tags are distinct");
}

#[test]
fn every_client_type_tag_is_parsed_by_client_frame() {
    // A minimal valid frame per tag, from the tag list itself: the list and
    // the enum cannot drift apart.
    for tag in CLIENT_FRAME_TYPES {
        let text = match tag {
            "hello" => r#"{"type":"hello","name":"alice"}"#.to_owned(),
            "send" => r#"{"type":"send","room":"general","id":"c-17","body":"hi"}"#.to_owned(),
            "rooms" | "ping" => format!(r#"{{"type":"{tag}"}}"#),
            "refresh" => r#"{"type":"refresh","token":"eyJ.x.y"}"#.to_owned(),
            _ => format!(r#"{{"type":"{tag}","room":"general"}}"#),
        };
        let frame = ClientFrame::from_json(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(frame.kind(), tag);
    }
}

#[test]
fn the_documented_tags_are_the_listed_ones() {
    // The `type` tags PROTOCOL.md defines, direction by direction.
    assert_eq!(
        CLIENT_FRAME_TYPES,
        ["hello", "join", "leave", "send", "history", "typing", "rooms", "ping", "refresh"]
    );
    assert_eq!(
        SERVER_FRAME_TYPES,
        [
            "welcome",
            "joined",
            "left",
            "ack",
            "message",
            "history",
            "typing",
            "presence",
            "rooms",
            "pong",
            "error",
            "reconnect"
        ]
    );
}
