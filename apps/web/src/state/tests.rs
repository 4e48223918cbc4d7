//! Unit tests of the model: each drives a [`ChatState`] with server frames
//! and user actions, as the driver and the views do, and checks the frames
//! it answers and what the views would show.

use super::*;
use protocol::{Body, Since};

fn user(id: &str) -> User {
    User {
        id: format!("u_{id}"),
        name: id.to_owned(),
    }
}

fn msg(room: &str, offset: u64, from: &str, client_id: &str, ts: i64) -> ChatMessage {
    ChatMessage {
        room: room.to_owned(),
        offset,
        id: format!("m_{offset}"),
        client_id: client_id.to_owned(),
        from: user(from),
        body: format!("body {offset}"),
        ts,
    }
}

fn welcome(state: &mut ChatState) -> Outcome {
    state.apply(
        ServerFrame::Welcome {
            protocol: 1,
            user: user("me"),
            token: "tok".to_owned(),
            server: "server-a".to_owned(),
        },
        0,
    )
}

fn joined_frame(
    room: &str,
    epoch: &str,
    offset: u64,
    history: Vec<ChatMessage>,
    recovered: bool,
) -> ServerFrame {
    ServerFrame::Joined {
        room: room.to_owned(),
        epoch: epoch.to_owned(),
        offset,
        members: vec![user("me"), user("bob")],
        history,
        recovered,
    }
}

/// A state connected, with `general` live at offset 3.
fn connected() -> ChatState {
    let mut s = ChatState::new("t");
    s.set_name(protocol::Name::parse("me").unwrap());
    s.connecting();
    welcome(&mut s);
    let history = (1..=3)
        .map(|o| msg("general", o, "bob", &format!("b{o}"), o as i64))
        .collect();
    s.apply(joined_frame("general", "e1", 3, history, false), 0);
    s
}

fn offsets(s: &ChatState, room: &str) -> Vec<u64> {
    s.rooms[room].messages.iter().map(|m| m.offset).collect()
}

#[test]
fn welcome_joins_the_default_room_and_asks_for_rooms() {
    let mut s = ChatState::new("t");
    s.set_name(protocol::Name::parse("me").unwrap());
    assert_eq!(
        s.hello(),
        Some(ClientFrame::Hello {
            name: "me".to_owned(),
            token: None
        })
    );
    let out = welcome(&mut s);
    assert!(out.session_changed);
    assert_eq!(
        out.send,
        vec![
            ClientFrame::Join {
                room: "general".to_owned(),
                since: None
            },
            ClientFrame::Rooms {
                cursor: None,
                limit: None
            }
        ]
    );
    assert_eq!(s.current.as_deref(), Some("general"));
    assert_eq!(
        s.conn,
        Conn::Connected {
            server: "server-a".to_owned()
        }
    );
    assert_eq!(s.token.as_deref(), Some("tok"));
}

#[test]
fn live_messages_are_deduplicated_by_offset() {
    let mut s = connected();
    s.apply(ServerFrame::Message(msg("general", 4, "bob", "b4", 4)), 0);
    s.apply(ServerFrame::Message(msg("general", 4, "bob", "b4", 4)), 0);
    s.apply(ServerFrame::Message(msg("general", 2, "bob", "b2", 2)), 0);
    assert_eq!(offsets(&s, "general"), vec![1, 2, 3, 4]);
    assert_eq!(s.rooms["general"].last_seen, 4);
}

#[test]
fn pending_becomes_sent_on_ack_and_is_replaced_by_its_echo() {
    let mut s = connected();
    let frames = s.compose("general", Body::parse(" hi ").unwrap(), 100);
    let ClientFrame::Send { id, body, .. } = &frames[0] else {
        panic!("expected a send, got {frames:?}");
    };
    assert_eq!(body, "hi");
    assert!(id.starts_with("c-t-"));
    let id = id.clone();
    assert_eq!(s.rows("general").last().unwrap().status, RowStatus::Pending);

    s.apply(
        ServerFrame::Ack {
            id: id.clone(),
            room: "general".to_owned(),
            offset: 4,
        },
        0,
    );
    let last = s.rows("general").pop().unwrap();
    assert_eq!((last.status, last.offset), (RowStatus::Sent, Some(4)));

    let mut echo = msg("general", 4, "me", &id, 150);
    echo.body = "hi".to_owned();
    s.apply(ServerFrame::Message(echo), 0);
    let rows = s.rows("general");
    assert_eq!(rows.iter().filter(|r| r.client_id == id).count(), 1);
    assert!(s.rooms["general"].pending.is_empty());
    assert_eq!(rows.len(), 4);
}

#[test]
fn an_echo_before_the_ack_also_settles_the_pending_send() {
    let mut s = connected();
    s.compose("general", Body::parse("yo").unwrap(), 0);
    let id = s.rooms["general"].pending[0].client_id.clone();
    s.apply(ServerFrame::Message(msg("general", 4, "me", &id, 0)), 0);
    s.apply(
        ServerFrame::Ack {
            id,
            room: "general".to_owned(),
            offset: 4,
        },
        0,
    );
    assert!(s.rooms["general"].pending.is_empty());
    assert_eq!(s.rows("general").len(), 4);
}

#[test]
fn another_users_message_with_our_client_id_does_not_settle_ours() {
    let mut s = connected();
    s.compose("general", Body::parse("yo").unwrap(), 0);
    let id = s.rooms["general"].pending[0].client_id.clone();
    s.apply(ServerFrame::Message(msg("general", 4, "bob", &id, 0)), 0);
    assert_eq!(s.rooms["general"].pending.len(), 1);
}

#[test]
fn offline_sends_stay_pending_and_go_with_the_same_id_after_rejoin() {
    let mut s = connected();
    let first = s.compose("general", Body::parse("one").unwrap(), 0);
    assert_eq!(first.len(), 1);
    assert_eq!(s.apply_close(1006, 0, 0.5), CloseAction::ReconnectIn(250));
    assert!(s
        .compose("general", Body::parse("two").unwrap(), 0)
        .is_empty());
    assert!(s
        .rows("general")
        .iter()
        .rev()
        .take(2)
        .all(|r| r.status == RowStatus::Pending));

    s.connecting();
    let out = welcome(&mut s);
    assert_eq!(
        out.send[0],
        ClientFrame::Join {
            room: "general".to_owned(),
            since: Some(Since {
                epoch: "e1".to_owned(),
                offset: 3
            })
        }
    );
    let out = s.apply(joined_frame("general", "e1", 3, vec![], true), 0);
    let ids: Vec<&str> = out
        .send
        .iter()
        .filter_map(|f| match f {
            ClientFrame::Send { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let pending: Vec<&str> = s.rooms["general"]
        .pending
        .iter()
        .map(|p| p.client_id.as_str())
        .collect();
    assert_eq!(ids, pending);
    assert_eq!(ids.len(), 2);
    let ClientFrame::Send { id, .. } = &first[0] else {
        panic!()
    };
    assert_eq!(ids[0], id);
}

#[test]
fn a_send_stored_before_the_drop_is_settled_by_recovered_history() {
    let mut s = connected();
    s.compose("general", Body::parse("one").unwrap(), 0);
    let id = s.rooms["general"].pending[0].client_id.clone();
    s.apply_close(1012, 0, 0.5);
    welcome(&mut s);
    let out = s.apply(
        joined_frame(
            "general",
            "e1",
            4,
            vec![msg("general", 4, "me", &id, 0)],
            true,
        ),
        0,
    );
    assert!(s.rooms["general"].pending.is_empty());
    assert!(!out
        .send
        .iter()
        .any(|f| matches!(f, ClientFrame::Send { .. })));
    assert_eq!(offsets(&s, "general"), vec![1, 2, 3, 4]);
}

#[test]
fn recovered_history_appends_only_what_is_new() {
    let mut s = connected();
    s.apply_close(1006, 0, 0.0);
    welcome(&mut s);
    let history = (3..=5)
        .map(|o| msg("general", o, "bob", "x", o as i64))
        .collect();
    s.apply(joined_frame("general", "e1", 5, history, true), 0);
    assert_eq!(offsets(&s, "general"), vec![1, 2, 3, 4, 5]);
    assert_eq!(s.rooms["general"].last_seen, 5);
}

#[test]
fn unrecovered_join_replaces_the_history() {
    let mut s = connected();
    s.apply_close(1006, 0, 0.0);
    welcome(&mut s);
    let history = (1..=2)
        .map(|o| msg("general", o, "bob", "x", o as i64))
        .collect();
    s.apply(joined_frame("general", "e2", 2, history, false), 0);
    assert_eq!(offsets(&s, "general"), vec![1, 2]);
    assert_eq!(s.rooms["general"].last_seen, 2);
    assert_eq!(s.rooms["general"].epoch.as_deref(), Some("e2"));
    // A live message at the new epoch's next offset is accepted.
    s.apply(ServerFrame::Message(msg("general", 3, "bob", "y", 3)), 0);
    assert_eq!(offsets(&s, "general"), vec![1, 2, 3]);
}

#[test]
fn a_gap_too_large_replaces_and_allows_scrolling_back() {
    let mut s = connected();
    s.apply_close(1006, 0, 0.0);
    welcome(&mut s);
    let history = (2000..2050)
        .map(|o| msg("general", o, "bob", "x", o as i64))
        .collect();
    s.apply(joined_frame("general", "e1", 2049, history, false), 0);
    assert_eq!(s.rooms["general"].messages.len(), 50);
    assert!(!s.rooms["general"].complete);
    assert_eq!(
        s.older("general"),
        Some(ClientFrame::History {
            room: "general".to_owned(),
            before: Some(2000),
            limit: Some(HISTORY_PAGE)
        })
    );
    assert_eq!(s.older("general"), None, "one request at a time");
    let page = (1950..2000)
        .map(|o| msg("general", o, "bob", "x", o as i64))
        .collect();
    s.apply(
        ServerFrame::History {
            room: "general".to_owned(),
            messages: page,
        },
        0,
    );
    assert_eq!(s.rooms["general"].messages.len(), 100);
    assert_eq!(s.rooms["general"].messages[0].offset, 1950);
    assert!(!s.rooms["general"].complete);
    s.apply(
        ServerFrame::History {
            room: "general".to_owned(),
            messages: vec![],
        },
        0,
    );
    assert!(s.rooms["general"].complete);
    assert_eq!(s.older("general"), None);
}

#[test]
fn presence_is_a_set() {
    let mut s = connected();
    let p = |arrived: Vec<User>, departed: Vec<User>| ServerFrame::Presence {
        room: "general".to_owned(),
        joined: arrived,
        left: departed,
    };
    s.apply(p(vec![user("carol")], vec![]), 0);
    s.apply(p(vec![user("carol"), user("bob")], vec![]), 0);
    assert_eq!(s.members("general").len(), 3);
    s.apply(p(vec![], vec![user("bob")]), 0);
    s.apply(p(vec![], vec![user("bob"), user("zed")]), 0);
    let names: Vec<String> = s.members("general").into_iter().map(|u| u.name).collect();
    assert_eq!(names, vec!["carol", "me"]);
}

#[test]
fn unread_counts_others_messages_in_rooms_not_shown() {
    let mut s = connected();
    s.join(&RoomName::parse("dev").unwrap());
    s.apply(joined_frame("dev", "d", 0, vec![], false), 0);
    assert_eq!(s.current.as_deref(), Some("dev"));
    s.apply(ServerFrame::Message(msg("general", 4, "bob", "b", 0)), 0);
    s.apply(ServerFrame::Message(msg("general", 5, "me", "m", 0)), 0);
    s.apply(ServerFrame::Message(msg("dev", 1, "bob", "b", 0)), 0);
    assert_eq!(s.rooms["general"].unread, 1);
    assert_eq!(s.rooms["dev"].unread, 0);
    assert_eq!(s.total_unread(), 1);
    let general = s
        .room_list()
        .into_iter()
        .find(|e| e.name == "general")
        .unwrap();
    assert_eq!(general.unread, 1);
    s.select("general");
    assert_eq!(s.total_unread(), 0);
}

#[test]
fn consecutive_messages_group_by_sender_within_the_window() {
    let mut s = connected();
    let t = 1_000_000;
    for (o, from, ts) in [
        (4, "bob", t),
        (5, "bob", t + 60_000),
        (6, "me", t + 61_000),
        (7, "me", t + 61_000 + GROUP_WINDOW_MS),
    ] {
        s.apply(ServerFrame::Message(msg("general", o, from, "x", ts)), 0);
    }
    let grouped: Vec<bool> = s
        .rows("general")
        .iter()
        .skip(3)
        .map(|r| r.grouped)
        .collect();
    // Offset 4 follows bob's offset 3 but far earlier in time (ts 3).
    assert_eq!(grouped, vec![false, true, false, false]);
}

#[test]
fn typing_shows_for_a_while_and_is_throttled_when_sent() {
    let mut s = connected();
    s.apply(
        ServerFrame::Typing {
            room: "general".to_owned(),
            user: user("bob"),
        },
        1_000,
    );
    assert_eq!(
        s.typing_line("general", 1_500).as_deref(),
        Some("bob is typing…")
    );
    assert_eq!(s.typing_line("general", 1_000 + TYPING_SHOW_MS), None);
    s.apply(
        ServerFrame::Typing {
            room: "general".to_owned(),
            user: user("me"),
        },
        1_000,
    );
    assert_eq!(
        s.rooms["general"].typing.len(),
        1,
        "our own typing is not shown"
    );
    s.apply(
        ServerFrame::Message(msg("general", 4, "bob", "x", 0)),
        1_100,
    );
    assert_eq!(
        s.typing_line("general", 1_200),
        None,
        "a message ends typing"
    );

    assert!(s.typed("general", 10_000).is_some());
    assert!(s.typed("general", 11_000).is_none());
    assert!(s.typed("general", 10_000 + TYPING_SEND_EVERY_MS).is_some());
}

#[test]
fn close_codes_choose_the_reconnect() {
    let mut s = connected();
    assert_eq!(s.apply_close(1012, 0, 0.9), CloseAction::ReconnectIn(0));
    assert_eq!(
        s.apply_close(1006, 1_000, 0.5),
        CloseAction::ReconnectIn(250)
    );
    assert_eq!(
        s.conn,
        Conn::Reconnecting {
            attempt: 1,
            at_ms: 1_250
        }
    );
    assert_eq!(s.apply_close(1011, 0, 0.5), CloseAction::ReconnectIn(500));
    assert_eq!(
        s.apply_close(1013, 0, 0.999_999),
        CloseAction::ReconnectIn(1_999)
    );
    s.apply(
        ServerFrame::error(ErrorCode::BadFrame, "too many bad frames", None),
        0,
    );
    assert_eq!(s.apply_close(1008, 0, 0.5), CloseAction::Stop);
    assert_eq!(s.conn.name(), "offline");
    assert_eq!(s.apply_close(1009, 0, 0.5), CloseAction::Stop);
}

#[test]
fn backoff_doubles_to_a_cap_with_full_jitter() {
    assert_eq!(backoff_ms(1, 1.0), 500);
    assert_eq!(backoff_ms(2, 1.0), 1_000);
    assert_eq!(backoff_ms(6, 1.0), 15_000);
    assert_eq!(backoff_ms(60, 1.0), 15_000);
    assert_eq!(backoff_ms(3, 0.0), 0);
    assert_eq!(backoff_ms(3, 0.5), 1_000);
}

#[test]
fn a_rejected_token_is_dropped_and_retried_at_once() {
    let mut s = ChatState::new("t");
    s.restore(Some("me".to_owned()), Some("old".to_owned()), &[], None);
    s.connecting();
    s.apply(
        ServerFrame::error(ErrorCode::Unauthorized, "token expired", None),
        0,
    );
    assert_eq!(s.apply_close(1008, 0, 0.5), CloseAction::ReconnectIn(0));
    assert_eq!(s.token, None);
    assert_eq!(
        s.hello(),
        Some(ClientFrame::Hello {
            name: "me".to_owned(),
            token: None
        })
    );
}

#[test]
fn bad_room_errors_drop_the_room_being_joined() {
    let mut s = connected();
    // The server may refuse a name the client accepts (e.g. a reserved one).
    let frames = s.join(&RoomName::parse("nope").unwrap());
    assert_eq!(frames.len(), 1);
    s.apply(ServerFrame::error(ErrorCode::BadRoom, "reserved", None), 0);
    assert!(!s.rooms.contains_key("nope"));
    assert_eq!(s.current.as_deref(), Some("general"));
    assert_eq!(s.notice.as_ref().map(|n| n.text.as_str()), Some("reserved"));
}

#[test]
fn refused_sends_fail_visibly_and_transient_ones_retry() {
    let mut s = connected();
    s.compose("general", Body::parse("a").unwrap(), 0);
    s.compose("general", Body::parse("b").unwrap(), 0);
    let ids: Vec<String> = s.rooms["general"]
        .pending
        .iter()
        .map(|p| p.client_id.clone())
        .collect();
    s.apply(
        ServerFrame::error(ErrorCode::RateLimited, "slow down", Some(ids[0].clone())),
        0,
    );
    s.apply(
        ServerFrame::error(ErrorCode::BadFrame, "bad", Some(ids[1].clone())),
        0,
    );
    let retry = s.retry_failed();
    assert_eq!(retry.len(), 1);
    assert!(matches!(&retry[0], ClientFrame::Send { id, .. } if *id == ids[0]));
    let failed = s.rows("general").pop().unwrap();
    assert_eq!(
        failed.status,
        RowStatus::Failed {
            reason: "bad".to_owned(),
            retry: false
        }
    );
    s.discard("general", &ids[1]);
    assert_eq!(s.rooms["general"].pending.len(), 1);
}

#[test]
fn leaving_forgets_the_room_and_restore_skips_bad_names() {
    let mut s = connected();
    s.join(&RoomName::parse("dev").unwrap());
    s.apply(joined_frame("dev", "d", 0, vec![], false), 0);
    assert_eq!(s.leave("dev").len(), 2);
    assert_eq!(s.current.as_deref(), Some("general"));
    assert_eq!(s.room_names(), vec!["general"]);

    let mut r = ChatState::new("t");
    r.restore(
        None,
        None,
        &["ok".to_owned(), "Not Ok".to_owned()],
        Some("gone".to_owned()),
    );
    assert_eq!(r.room_names(), vec!["ok"]);
    assert_eq!(r.current.as_deref(), Some("ok"));
}

/// A join refused `unavailable` (the store is briefly away) is sent again
/// after a backoff that grows and differs between tabs, until `joined`.
#[test]
fn a_join_refused_unavailable_is_retried_with_backoff_and_jitter() {
    let mut s = ChatState::new("tab-one");
    s.set_name(protocol::Name::parse("me").unwrap());
    s.connecting();
    let first = welcome(&mut s);
    assert!(first
        .send
        .iter()
        .any(|f| matches!(f, ClientFrame::Join { .. })));
    let refused = |s: &mut ChatState, now| {
        s.apply(
            ServerFrame::error(ErrorCode::Unavailable, "the store is unavailable", None),
            now,
        )
        .retry_joins_in
        .expect("a retry is scheduled")
    };
    let d1 = refused(&mut s, 0);
    assert!(d1 <= BACKOFF_BASE_MS, "{d1}");
    assert_eq!(
        s.retry_joins(d1 as i64 - 1),
        (Vec::new(), Some(1)),
        "not yet"
    );
    let (frames, next) = s.retry_joins(d1 as i64);
    assert_eq!(
        frames,
        vec![ClientFrame::Join {
            room: "general".into(),
            since: None
        }]
    );
    assert_eq!(next, None);
    let d2 = refused(&mut s, 1_000);
    assert!(
        d2 > BACKOFF_BASE_MS / 2 && d2 <= 2 * BACKOFF_BASE_MS,
        "{d2}"
    );
    let (frames, _) = s.retry_joins(1_000 + d2 as i64);
    assert_eq!(frames.len(), 1);
    s.apply(joined_frame("general", "e1", 0, vec![], false), 5_000);
    assert!(s.rooms["general"].live);
    assert_eq!(
        s.retry_joins(1_000_000),
        (Vec::new(), None),
        "joined: nothing left"
    );

    // Another tab refused at the same moment waits another time.
    let mut other = ChatState::new("tab-two");
    other.set_name(protocol::Name::parse("me").unwrap());
    other.connecting();
    welcome(&mut other);
    let o1 = refused(&mut other, 0);
    assert_ne!(o1, d1, "jitter comes from the tab's random id");
}

/// v1.1: every frame has a cost, so a join may be refused `rate_limited`
/// (a tab re-joining many rooms at once): it is retried like one refused
/// `unavailable`; a `rate_limited` with no join in flight (a typing notice
/// over the limit) schedules nothing.
#[test]
fn a_join_refused_rate_limited_is_retried_and_other_refusals_are_not() {
    let mut s = ChatState::new("tab-one");
    s.set_name(protocol::Name::parse("me").unwrap());
    s.connecting();
    welcome(&mut s);
    let limited = || ServerFrame::error(ErrorCode::RateLimited, "slow down", None);
    let delay = s
        .apply(limited(), 0)
        .retry_joins_in
        .expect("a retry is scheduled");
    let (frames, _) = s.retry_joins(delay as i64);
    assert_eq!(
        frames,
        vec![ClientFrame::Join {
            room: "general".into(),
            since: None
        }]
    );
    s.apply(joined_frame("general", "e1", 0, vec![], false), 5_000);
    assert!(s.rooms["general"].live);
    assert_eq!(s.apply(limited(), 6_000).retry_joins_in, None);
    assert_eq!(s.retry_joins(1_000_000), (Vec::new(), None));
}

/// The typing line comes in parts, so that a view isolates every name.
#[test]
fn the_typing_line_keeps_names_apart_from_the_words() {
    let mut s = connected();
    s.apply(
        ServerFrame::Typing {
            room: "general".into(),
            user: user("עדי"),
        },
        1_000,
    );
    assert_eq!(
        s.typing_parts("general", 1_500),
        Some(vec![
            TypingPart::Name("עדי".into()),
            TypingPart::Text(" is typing…".into())
        ])
    );
    assert_eq!(
        s.typing_line("general", 1_500).as_deref(),
        Some("עדי is typing…")
    );
}

#[test]
fn a_drains_reconnect_keeps_the_socket_until_its_delay_then_reconnects_at_once() {
    let mut s = connected();
    let outcome = s.apply(
        ServerFrame::Reconnect {
            reason: protocol::ReconnectReason::Shutdown,
            delay_ms: 4200,
        },
        0,
    );
    assert_eq!(outcome.reconnect_in, Some(4200));
    assert!(s.is_connected(), "the socket is used until the delay is up");
    assert_eq!(s.last_error, None, "nothing to tell the user yet");
    // At its turn the driver closes the socket as a 1012 would.
    assert_eq!(s.apply_close(1012, 4200, 0.9), CloseAction::ReconnectIn(0));

    // Without a delay the close follows; nothing is scheduled.
    let mut s = connected();
    let outcome = s.apply(
        ServerFrame::Reconnect {
            reason: protocol::ReconnectReason::Shutdown,
            delay_ms: 0,
        },
        0,
    );
    assert_eq!(outcome.reconnect_in, None);
}

#[test]
fn a_host_token_signs_in_with_its_name_claim_and_is_not_dropped_for_a_guest() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwt = |claims: &str| {
        format!(
            "{}.{}.sig",
            b64.encode(r#"{"alg":"HS256"}"#),
            b64.encode(claims)
        )
    };
    let mut s = ChatState::new("t");
    assert!(s.sign_in_with_host_token(&jwt(r#"{"sub":"u42","name":"Dora"}"#)));
    assert_eq!(s.name.as_deref(), Some("Dora"));
    assert!(
        matches!(s.hello(), Some(ClientFrame::Hello { token: Some(t), .. }) if t.starts_with("eyJ"))
    );
    assert!(
        s.sign_in_with_host_token(&jwt(r#"{"sub":"ed"}"#)),
        "sub when no name"
    );
    assert_eq!(s.name.as_deref(), Some("ed"));
    assert!(
        !s.sign_in_with_host_token("u_abc.123.mac"),
        "a session token is not one"
    );
    assert!(!s.sign_in_with_host_token(&jwt("not json")));

    // Refused at hello: the host token is kept and the close is terminal.
    s.apply(
        ServerFrame::Error {
            code: ErrorCode::Unauthorized,
            message: "the token is not a valid JWT: ExpiredSignature".into(),
            id: None,
        },
        0,
    );
    assert_eq!(s.apply_close(1008, 0, 0.5), CloseAction::Stop);
    assert!(s.token.is_some());
}
