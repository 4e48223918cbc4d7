//! The `joined` history rule ([`recover`], PROTOCOL.md "Recovery") against
//! the in-process engine; each test names the branch it pins.

use super::memory::MemoryEngine;
use super::*;
use tokio::sync::mpsc;

const LIMITS: RecoveryLimits = RecoveryLimits {
    recent: 3,
    max_replay: 5,
};

/// The events of a test's engine, kept open (and unread) for the test.
type Events = mpsc::Receiver<EngineEvent>;

/// An engine with `n` messages in room `lobby`, keeping `cap`.
async fn engine_with(n: u64, cap: usize) -> (MemoryEngine, RoomName, Arc<str>, Events) {
    let (tx, mut events) = crate::engine::Events::channel(1, 1024);
    let events = events.remove(0);
    let engine = MemoryEngine::new(tx, cap);
    let room = RoomName::parse("lobby").unwrap();
    for i in 1..=n {
        let msg = Publication {
            id: format!("m_{i}"),
            client_id: format!("c-{i}"),
            from: User {
                id: "u_a".into(),
                name: "a".into(),
            },
            body: format!("{i}"),
            ts: 0,
            trace: None,
        };
        engine.publish(&room, msg, None).await.unwrap();
    }
    let epoch = engine.position(&room).await.unwrap().epoch;
    (engine, room, epoch, events)
}

fn since(epoch: &str, offset: u64) -> Since {
    Since {
        epoch: epoch.to_owned(),
        offset,
    }
}

fn offsets(r: &Recovery) -> Vec<u64> {
    r.history.iter().map(|m| m.offset).collect()
}

/// No `since`: the newest `recent` messages, not recovered.
#[tokio::test]
async fn without_since_the_newest_messages_are_returned() {
    let (engine, room, _, _events) = engine_with(10, 100).await;
    let r = recover(&engine, &room, None, LIMITS).await.unwrap();
    assert_eq!((offsets(&r), r.recovered), (vec![8, 9, 10], false));
    assert_eq!(r.position.offset, 10);
}

/// Same epoch, gap within `max_replay` and retained: exactly the missed
/// messages, recovered — even more than `recent`.
#[tokio::test]
async fn a_retained_gap_is_replayed_exactly() {
    let (engine, room, epoch, _events) = engine_with(10, 100).await;
    let r = recover(&engine, &room, Some(&since(&epoch, 6)), LIMITS)
        .await
        .unwrap();
    assert_eq!((offsets(&r), r.recovered), (vec![7, 8, 9, 10], true));
    let r = recover(&engine, &room, Some(&since(&epoch, 10)), LIMITS)
        .await
        .unwrap();
    assert_eq!((offsets(&r), r.recovered), (vec![], true));
}

/// Each reason recovery is impossible answers the newest messages,
/// `recovered: false`: another epoch, an offset beyond the room's, a gap
/// over `max_replay`, a gap trimmed from the history.
#[tokio::test]
async fn an_unrecoverable_since_gets_the_newest_messages() {
    let (engine, room, epoch, _events) = engine_with(10, 100).await;
    for s in [since("other", 9), since(&epoch, 11), since(&epoch, 4)] {
        let r = recover(&engine, &room, Some(&s), LIMITS).await.unwrap();
        assert_eq!((offsets(&r), r.recovered), (vec![8, 9, 10], false), "{s:?}");
    }
    let (engine, room, epoch, _events) = engine_with(10, 4).await;
    let r = recover(&engine, &room, Some(&since(&epoch, 5)), LIMITS)
        .await
        .unwrap();
    assert_eq!((offsets(&r), r.recovered), (vec![8, 9, 10], false));
}

/// Rooms end: a room that never had a message is forgotten once it has no
/// member, at the next sweep.
#[tokio::test]
async fn rooms_without_messages_are_forgotten_once_left() {
    let (engine, _room, _epoch, _events) = engine_with(3, 10).await;
    // Issue 17, input 3: 300 rooms with fresh names, joined and left, cost
    // nothing once swept; the room with messages is kept for the retention.
    let visitor = User {
        id: "u_v".into(),
        name: "v".into(),
    };
    for i in 0..300 {
        let fresh = RoomName::parse(&format!("fresh-{i}")).unwrap();
        engine.join(&fresh, &visitor).await.unwrap();
        engine.position(&fresh).await.unwrap();
        engine.leave(&fresh, &visitor).await.unwrap();
    }
    assert_eq!(engine.held_rooms(), 301);
    engine.refresh(&[]).await.unwrap();
    assert_eq!(
        engine.held_rooms(),
        1,
        "only the room with messages is kept"
    );
}

/// A room with no member and no new message for the retention period
/// is forgotten (history and epoch); one with a member is kept however
/// long it is quiet; a later join starts a forgotten room afresh.
#[tokio::test]
async fn rooms_with_messages_are_forgotten_after_the_retention() {
    let (engine, room, epoch, _events) = engine_with(3, 10).await;
    let kept = RoomName::parse("kept").unwrap();
    let member = User {
        id: "u_m".into(),
        name: "m".into(),
    };
    engine.join(&kept, &member).await.unwrap();
    engine.set_retention(std::time::Duration::from_millis(50));
    engine.refresh(&[]).await.unwrap();
    assert_eq!(engine.position(&room).await.unwrap().offset, 3, "not yet");
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    engine.refresh(&[]).await.unwrap();
    let fresh = engine.position(&room).await.unwrap();
    assert_eq!(fresh.offset, 0, "history forgotten");
    assert_ne!(fresh.epoch, epoch, "a new epoch: old offsets mean nothing");
    let members = engine.members(&kept).await.unwrap();
    assert_eq!(members.len(), 1, "a room with a member stays");
}

/// The hub's shards: a room's events all reach one shard's channel, in
/// order; rooms spread over the shards; a resync reaches every shard.
#[tokio::test]
async fn events_go_to_their_rooms_shard_in_order_and_a_resync_to_every_shard() {
    let (tx, mut shards) = crate::engine::Events::channel(4, 1024);
    let engine = MemoryEngine::new(tx.clone(), 100);
    let rooms: Vec<RoomName> = (0..32)
        .map(|i| RoomName::parse(&format!("room-{i}")).unwrap())
        .collect();
    for round in 1..=3u64 {
        for room in &rooms {
            let msg = Publication {
                id: format!("m_{round}"),
                client_id: format!("c-{room}-{round}"),
                from: User {
                    id: "u_a".into(),
                    name: "a".into(),
                },
                body: "x".into(),
                ts: 0,
                trace: None,
            };
            engine.publish(room, msg, None).await.unwrap();
        }
    }
    let mut used = 0;
    for (i, shard) in shards.iter_mut().enumerate() {
        let mut seen: std::collections::HashMap<String, Vec<u64>> = Default::default();
        while let Ok(event) = shard.try_recv() {
            if let EngineEvent::Message { room, message, .. } = event {
                assert_eq!(crate::engine::Events::shard_of(room.as_str(), 4), i);
                seen.entry(room.into_string())
                    .or_default()
                    .push(message.offset);
            }
        }
        for offsets in seen.values() {
            assert_eq!(offsets, &[1, 2, 3], "one room's messages, in order");
        }
        used += usize::from(!seen.is_empty());
    }
    assert!(used >= 3, "32 rooms use most of 4 shards, not {used}");
    tx.try_send(EngineEvent::Resync).unwrap();
    for shard in &mut shards {
        assert!(matches!(shard.try_recv(), Ok(EngineEvent::Resync)));
    }
}

#[test]
fn epochs_are_16_lowercase_hex_digits_and_differ() {
    let a = new_epoch_digits();
    let b = new_epoch_digits();
    for e in [a.as_str(), b.as_str(), &new_epoch()] {
        assert_eq!(e.len(), 16, "{e}");
        assert!(
            e.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{e}"
        );
    }
    assert_ne!(a.as_str(), b.as_str());
    // The digits are the u64's, most significant first (as `{:016x}`).
    let n = u64::from_str_radix(a.as_str(), 16).unwrap();
    assert_eq!(format!("{n:016x}"), a.as_str());
}
