//! Rooms and messages: ordering and offsets, acks, history in `joined`,
//! recovery with `since`, dedupe of resends, presence, typing, `rooms`,
//! `history` scroll-back and session tokens.

use crate::support::{offsets, presence_joined, presence_left, unthrottled, Client, TestServer};
use protocol::{ChatMessage, ClientFrame, ErrorCode, RoomInfo, ServerFrame, Since, User};
use server::config::Config;

const ROOM: &str = "general";

/// Posts `n` messages to `room` as a new user who then disconnects, so no
/// member is left to receive presence about later joiners. Returns the
/// room's epoch and the messages.
async fn seed(server: &TestServer, room: &str, n: usize) -> (String, Vec<ChatMessage>) {
    let mut poster = server.login("poster").await;
    let epoch = poster.join(room).await.epoch;
    let sent = poster.post_many(room, n).await;
    poster.close().await;
    (epoch, sent)
}

/// Users sorted by id, to compare member lists whatever their order.
fn by_id(users: &[&User]) -> Vec<User> {
    let mut users: Vec<User> = users.iter().map(|u| (*u).clone()).collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    users
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

#[tokio::test]
async fn members_receive_every_message_once_in_one_order_with_contiguous_offsets() {
    const EACH: usize = 10;
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.join(ROOM).await;
    bob.join(ROOM).await;
    assert_eq!(alice.recv().await, presence_joined(ROOM, bob.user()));

    // Both send at once, interleaved, without waiting for any answer.
    let ids = |who: &str| (0..EACH).map(|i| format!("{who}-{i}")).collect::<Vec<_>>();
    let (alice_ids, bob_ids) = (ids("a"), ids("b"));
    for (a, b) in alice_ids.iter().zip(&bob_ids) {
        alice.submit(ROOM, a, &format!("body of {a}")).await;
        bob.submit(ROOM, b, &format!("body of {b}")).await;
    }
    let (alice_acks, alice_seen) = alice.acks_and_messages(EACH, 2 * EACH).await;
    let (bob_acks, bob_seen) = bob.acks_and_messages(EACH, 2 * EACH).await;

    assert_eq!(offsets(&alice_seen), range(1, 2 * EACH as u64));
    assert_eq!(
        alice_seen, bob_seen,
        "every member sees the same messages in the same order"
    );
    for (user, acks, ids) in [
        (alice.user(), &alice_acks, &alice_ids),
        (bob.user(), &bob_acks, &bob_ids),
    ] {
        let acked: Vec<&String> = acks.iter().map(|(id, _)| id).collect();
        assert_eq!(acked, ids.iter().collect::<Vec<_>>(), "acks in send order");
        for (id, offset) in acks {
            let m = &alice_seen[*offset as usize - 1];
            assert_eq!(
                (&m.client_id, &m.from, &m.room),
                (id, user, &ROOM.to_owned())
            );
            assert_eq!(m.body, format!("body of {id}"));
            assert!(m.id.starts_with("m_"), "server message id {:?}", m.id);
        }
    }

    // Nothing was delivered twice: the next thing each sees is a new marker.
    let synced = alice.sync(ROOM).await;
    assert!(synced.before.is_empty(), "{:?}", synced.before);
    assert_eq!(synced.offset, 2 * EACH as u64 + 1);
    assert!(bob.frames_until_message(&synced.marker).await.is_empty());
}

#[tokio::test]
async fn late_joiner_gets_the_newest_50_messages_in_joined() {
    let server = TestServer::start(unthrottled()).await;
    let mut alice = server.login("alice").await;
    alice.join(ROOM).await;
    let sent = alice.post_many(ROOM, 60).await;

    let mut carol = server.login("carol").await;
    let joined = carol.join(ROOM).await;
    assert_eq!(joined.room, ROOM);
    assert_eq!(joined.offset, 60);
    assert!(!joined.recovered, "no since: not a recovery");
    assert_eq!(offsets(&joined.history), range(11, 60));
    assert_eq!(joined.history, sent[10..]);
    assert_eq!(
        by_id(&joined.members.iter().collect::<Vec<_>>()),
        by_id(&[alice.user(), carol.user()])
    );

    // A room with fewer messages than that comes whole.
    let (_, few) = seed(&server, "small", 3).await;
    let joined = carol.join("small").await;
    assert_eq!((joined.offset, joined.history), (3, few));
}

#[tokio::test]
async fn reconnect_with_since_gets_exactly_the_missed_messages() {
    let server = TestServer::start(unthrottled()).await;
    let mut alice = server.login("alice").await;
    alice.join(ROOM).await;
    alice.post_many(ROOM, 5).await;

    let mut reader = server.login("reader").await;
    let seen = reader.join(ROOM).await;
    assert_eq!(seen.offset, 5);
    let reader_user = reader.user().clone();
    let token = reader.token().to_owned();
    assert_eq!(alice.recv().await, presence_joined(ROOM, &reader_user));
    reader.close().await;
    assert_eq!(alice.recv().await, presence_left(ROOM, &reader_user));

    let missed = alice.post_many(ROOM, 3).await;

    let mut back = server.login_as("reader", &token).await;
    let joined = back.join_since(ROOM, seen.since()).await;
    assert!(joined.recovered);
    assert_eq!(joined.offset, 8);
    assert_eq!(
        joined.history, missed,
        "exactly offsets 6..=8, nothing before"
    );

    // Live messages continue right after the recovered ones.
    assert_eq!(alice.recv().await, presence_joined(ROOM, &reader_user));
    let next = alice.post(ROOM, "welcome back").await;
    assert_eq!(next.offset, 9);
    assert_eq!(back.expect_message().await, next);
}

#[tokio::test]
async fn since_at_the_latest_offset_recovers_with_empty_history() {
    let server = TestServer::start(unthrottled()).await;
    let (epoch, _) = seed(&server, ROOM, 5).await;
    let mut reader = server.login("reader").await;
    let joined = reader.join_since(ROOM, Since { epoch, offset: 5 }).await;
    assert!(joined.recovered);
    assert_eq!(joined.offset, 5);
    assert!(joined.history.is_empty());
}

#[tokio::test]
async fn since_from_another_epoch_or_beyond_the_room_is_not_recovered() {
    let server = TestServer::start(unthrottled()).await;
    let (epoch, sent) = seed(&server, ROOM, 8).await;

    let other_epoch = Since {
        epoch: format!("{epoch}-old"),
        offset: 3,
    };
    let beyond = Since { epoch, offset: 9 };
    for since in [other_epoch, beyond] {
        let mut reader = server.login("reader").await;
        let joined = reader.join_since(ROOM, since.clone()).await;
        assert!(!joined.recovered, "{since:?}");
        assert_eq!(joined.offset, 8);
        assert_eq!(
            joined.history, sent,
            "the newest messages, as without since"
        );
    }
}

#[tokio::test]
async fn gap_older_than_the_retained_history_is_not_recovered() {
    let mut cfg = unthrottled();
    cfg.history_cap = 10;
    let server = TestServer::start(cfg).await;
    let (epoch, sent) = seed(&server, ROOM, 25).await;
    let retained = &sent[15..];
    let since = |offset| Since {
        epoch: epoch.clone(),
        offset,
    };

    let mut reader = server.login("reader").await;
    let joined = reader.join_since(ROOM, since(2)).await;
    assert!(!joined.recovered, "offsets 3..=15 are gone");
    assert_eq!(joined.offset, 25);
    assert_eq!(joined.history, retained, "the newest retained messages");

    // One message short of what is kept is still not a full recovery...
    let joined = server.login("r2").await.join_since(ROOM, since(14)).await;
    assert!(!joined.recovered);
    assert_eq!(joined.history, retained);

    // ...while a gap of exactly the retained messages is.
    let joined = server.login("r3").await.join_since(ROOM, since(15)).await;
    assert!(joined.recovered);
    assert_eq!(joined.history, retained);
}

#[tokio::test]
async fn gap_larger_than_max_replay_is_not_recovered() {
    let mut cfg = unthrottled();
    cfg.max_replay = 3;
    let server = TestServer::start(cfg).await;
    let (epoch, sent) = seed(&server, ROOM, 10).await;

    let mut reader = server.login("reader").await;
    let joined = reader
        .join_since(
            ROOM,
            Since {
                epoch: epoch.clone(),
                offset: 7,
            },
        )
        .await;
    assert!(joined.recovered);
    assert_eq!(joined.history, sent[7..]);

    let joined = server
        .login("r2")
        .await
        .join_since(ROOM, Since { epoch, offset: 6 })
        .await;
    assert!(!joined.recovered);
    assert_eq!(
        joined.history, sent,
        "the newest messages, as without since"
    );
}

#[tokio::test]
async fn resent_client_id_is_acked_again_and_delivered_once() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.join(ROOM).await;
    bob.join(ROOM).await;
    assert_eq!(alice.recv().await, presence_joined(ROOM, bob.user()));

    assert_eq!(alice.send_acked(ROOM, "c-1", "hello").await, 1);
    assert_eq!(alice.expect_message().await.client_id, "c-1");
    // A resend (even with an edited body) is the same message.
    assert_eq!(alice.send_acked(ROOM, "c-1", "hello").await, 1);
    assert_eq!(alice.send_acked(ROOM, "c-1", "hello, edited").await, 1);
    assert_eq!(alice.send_acked(ROOM, "c-2", "next").await, 2);
    let next = alice.expect_message().await;
    assert_eq!((next.offset, next.client_id.as_str()), (2, "c-2"));

    let first = bob.expect_message().await;
    assert_eq!((first.offset, first.client_id.as_str()), (1, "c-1"));
    assert_eq!(first.body, "hello");
    assert_eq!(bob.expect_message().await, next, "c-1 arrived once");

    // The same user resending after a reconnect is deduplicated too.
    let alice_user = alice.user().clone();
    let token = alice.token().to_owned();
    alice.close().await;
    assert_eq!(bob.recv().await, presence_left(ROOM, &alice_user));
    let mut again = server.login_as("alice", &token).await;
    again.join(ROOM).await;
    assert_eq!(bob.recv().await, presence_joined(ROOM, &alice_user));
    assert_eq!(again.send_acked(ROOM, "c-1", "hello").await, 1);
    let synced = again.sync(ROOM).await;
    assert!(synced.before.is_empty(), "{:?}", synced.before);
    assert_eq!(synced.offset, 3, "the resend stored nothing");
    assert!(bob.frames_until_message(&synced.marker).await.is_empty());
}

#[tokio::test]
async fn joining_is_announced_to_the_others_but_not_to_the_joiner() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = server.login("alice").await;
    let joined = alice.join(ROOM).await;
    assert_eq!(joined.members, vec![alice.user().clone()]);

    let mut bob = server.login("bob").await;
    let joined = bob.join(ROOM).await;
    assert_eq!(
        by_id(&joined.members.iter().collect::<Vec<_>>()),
        by_id(&[alice.user(), bob.user()])
    );
    assert_eq!(alice.recv().await, presence_joined(ROOM, bob.user()));

    let synced = bob.sync(ROOM).await;
    assert!(
        synced.before.is_empty(),
        "no presence about oneself: {:?}",
        synced.before
    );
    assert!(alice.frames_until_message(&synced.marker).await.is_empty());
}

#[tokio::test]
async fn a_users_second_connection_changes_no_presence() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.join(ROOM).await;
    bob.join(ROOM).await;
    assert_eq!(alice.recv().await, presence_joined(ROOM, bob.user()));
    let bob_user = bob.user().clone();

    let mut bob_tab = server.login_as("bob", bob.token()).await;
    assert_eq!(bob_tab.user(), &bob_user, "same token, same user");
    let joined = bob_tab.join(ROOM).await;
    assert_eq!(
        by_id(&joined.members.iter().collect::<Vec<_>>()),
        by_id(&[alice.user(), &bob_user]),
        "a user counts once however many connections"
    );
    let synced = alice.sync(ROOM).await;
    assert!(synced.before.is_empty(), "{:?}", synced.before);
    for tab in [&mut bob, &mut bob_tab] {
        assert!(tab.frames_until_message(&synced.marker).await.is_empty());
    }

    // Closing one of bob's connections changes nothing either...
    bob_tab.close().await;
    let synced = alice.sync(ROOM).await;
    assert!(synced.before.is_empty(), "{:?}", synced.before);
    assert!(bob.frames_until_message(&synced.marker).await.is_empty());

    // ...closing his last one is a leave.
    bob.close().await;
    assert_eq!(alice.recv().await, presence_left(ROOM, &bob_user));
}

#[tokio::test]
async fn leave_answers_left_and_the_users_last_leave_is_announced() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = server.login("alice").await;
    let mut carol = server.login("carol").await;
    alice.join(ROOM).await;
    carol.join(ROOM).await;
    assert_eq!(alice.recv().await, presence_joined(ROOM, carol.user()));
    let mut carol_tab = server.login_as("carol", carol.token()).await;
    carol_tab.join(ROOM).await;

    carol_tab.leave(ROOM).await;
    let synced = alice.sync(ROOM).await;
    assert!(
        synced.before.is_empty(),
        "carol is still here: {:?}",
        synced.before
    );
    assert!(carol.frames_until_message(&synced.marker).await.is_empty());

    carol.leave(ROOM).await;
    assert_eq!(alice.recv().await, presence_left(ROOM, carol.user()));

    // After leaving, the room's messages no longer reach her: room events
    // share one queue, so anything from `general` would come before her
    // marker in another room.
    alice.post(ROOM, "carol is gone").await;
    carol.join("elsewhere").await;
    let synced = carol.sync("elsewhere").await;
    assert!(synced.before.is_empty(), "{:?}", synced.before);
}

#[tokio::test]
async fn typing_reaches_the_other_members_but_none_of_the_typists_connections() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    alice.join(ROOM).await;
    bob.join(ROOM).await;
    assert_eq!(alice.recv().await, presence_joined(ROOM, bob.user()));
    let mut bob_tab = server.login_as("bob", bob.token()).await;
    bob_tab.join(ROOM).await;
    carol.join(ROOM).await;
    for member in [&mut alice, &mut bob, &mut bob_tab] {
        assert_eq!(member.recv().await, presence_joined(ROOM, carol.user()));
    }

    bob.send(&ClientFrame::Typing {
        room: ROOM.to_owned(),
    })
    .await;
    // Bob's marker follows his typing on the same connection, so it is
    // published after the typing notice went out.
    let synced = bob.sync(ROOM).await;
    assert!(synced.before.is_empty(), "{:?}", synced.before);
    assert!(bob_tab
        .frames_until_message(&synced.marker)
        .await
        .is_empty());
    let typing = ServerFrame::Typing {
        room: ROOM.to_owned(),
        user: bob.user().clone(),
    };
    for other in [&mut alice, &mut carol] {
        assert_eq!(
            other.frames_until_message(&synced.marker).await,
            vec![typing.clone()]
        );
    }
}

#[tokio::test]
async fn rooms_lists_active_rooms_with_distinct_user_counts() {
    let server = TestServer::start(Config::for_tests()).await;
    // Asks `rooms`; a member of no room, so no room event comes in between.
    let mut observer = server.login("observer").await;
    async fn rooms(observer: &mut Client) -> Vec<RoomInfo> {
        observer
            .send(&ClientFrame::Rooms {
                cursor: None,
                limit: None,
            })
            .await;
        match observer.recv().await {
            ServerFrame::Rooms { mut rooms, .. } => {
                rooms.sort_by(|a, b| a.room.cmp(&b.room));
                rooms
            }
            other => panic!("expected rooms, got {other:?}"),
        }
    }
    let info = |room: &str, members| RoomInfo {
        room: room.to_owned(),
        members,
    };
    assert_eq!(rooms(&mut observer).await, vec![]);

    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut bob_tab = server.login_as("bob", bob.token()).await;
    let mut carol = server.login("carol").await;
    alice.join("alpha").await;
    bob.join("alpha").await;
    bob_tab.join("alpha").await;
    carol.join("beta").await;
    assert_eq!(
        rooms(&mut observer).await,
        vec![info("alpha", 2), info("beta", 1)]
    );

    carol.leave("beta").await;
    assert_eq!(rooms(&mut observer).await, vec![info("alpha", 2)]);
    let bob_user = bob.user().clone();
    bob.close().await;
    bob_tab.close().await;
    assert_eq!(rooms(&mut observer).await, vec![info("alpha", 1)]);
    // Bob came and went: within one presence window that is one frame
    // with bob in `left` (his latest state); across two, joined then left.
    let mut told = Vec::new();
    while !told.contains(&presence_left("alpha", &bob_user)) {
        told.push(alice.recv().await);
    }
    assert!(
        told == [presence_left("alpha", &bob_user)]
            || told
                == [
                    presence_joined("alpha", &bob_user),
                    presence_left("alpha", &bob_user)
                ],
        "{told:?}"
    );
    alice.leave("alpha").await;
    assert_eq!(rooms(&mut observer).await, vec![]);
}

#[tokio::test]
async fn history_scrolls_back_by_offset() {
    let server = TestServer::start(unthrottled()).await;
    let mut alice = server.login("alice").await;
    alice.join(ROOM).await;
    let sent = alice.post_many(ROOM, 260).await;

    async fn history(
        alice: &mut Client,
        before: Option<u64>,
        limit: Option<u64>,
    ) -> Vec<ChatMessage> {
        alice
            .send(&ClientFrame::History {
                room: ROOM.to_owned(),
                before,
                limit,
            })
            .await;
        match alice.recv().await {
            ServerFrame::History { room, messages } => {
                assert_eq!(room, ROOM);
                messages
            }
            other => panic!("expected history, got {other:?}"),
        }
    }
    // (before, limit) → the offsets expected, ascending and all < before.
    let cases = [
        ((None, None), range(211, 260)),
        ((Some(100), Some(10)), range(90, 99)),
        ((Some(100), None), range(50, 99)),
        ((Some(251), Some(1000)), range(51, 250)),
        ((Some(5), Some(10)), range(1, 4)),
        ((Some(1), Some(10)), vec![]),
        ((Some(1000), Some(3)), range(258, 260)),
    ];
    for ((before, limit), expected) in cases {
        let got = history(&mut alice, before, limit).await;
        assert_eq!(
            offsets(&got),
            expected,
            "before {before:?}, limit {limit:?}"
        );
        let first = expected.first().map_or(0, |o| *o as usize - 1);
        assert_eq!(got, sent[first..first + expected.len()]);
    }

    let mut outsider = server.login("outsider").await;
    outsider
        .send(&ClientFrame::History {
            room: ROOM.to_owned(),
            before: None,
            limit: None,
        })
        .await;
    outsider.expect_error(ErrorCode::NotJoined, None).await;
}

#[tokio::test]
async fn session_token_keeps_the_user_and_the_new_name_wins() {
    let server = TestServer::start(Config::for_tests()).await;
    let first = server.login("alice").await;
    assert_eq!(first.server(), "test", "welcome names the instance");
    let alice = first.user().clone();
    let token = first.token().to_owned();
    first.close().await;

    let mut again = server.login_as("alicia", &token).await;
    assert_eq!(
        again.user(),
        &User {
            id: alice.id.clone(),
            name: "alicia".to_owned()
        }
    );
    // Others see the new name.
    let joined = again.join(ROOM).await;
    assert_eq!(joined.members, vec![again.user().clone()]);
    let said = again.post(ROOM, "new name").await;
    assert_eq!(said.from.name, "alicia");

    // The token of the new welcome works as well; no token is a new user.
    let renewed = again.token().to_owned();
    let third = server.login_as("alice", &renewed).await;
    assert_eq!(third.user().id, alice.id);
    let stranger = server.login("alice").await;
    assert_ne!(stranger.user().id, alice.id);
}

#[tokio::test]
async fn a_session_renewed_again_and_again_still_ends_at_its_maximum_lifetime() {
    let mut cfg = Config::for_tests();
    cfg.session_max_lifetime = std::time::Duration::from_secs(2);
    let server = TestServer::start(cfg).await;
    let first = server.login("alice").await;
    let alice = first.user().id.clone();
    let mut token = first.token().to_owned();
    first.close().await;
    // Renewed within the lifetime: the same user each time (the renewed
    // token's expiry is capped at the session's end).
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let again = server.login_as("alice", &token).await;
        assert_eq!(again.user().id, alice);
        token = again.token().to_owned();
        again.close().await;
    }
    // Past the lifetime from the first token, the latest renewal is refused.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let mut late = server.connect().await;
    late.send(&ClientFrame::Hello {
        name: "alice".to_owned(),
        token: Some(token),
    })
    .await;
    late.expect_error(ErrorCode::Unauthorized, None).await;
    assert_eq!(late.expect_close().await, 1008);
}
