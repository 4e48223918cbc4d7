//! The archive on a real SQLite file: idempotent writes, one lineage per
//! room, positions, reads, retention.

use super::retention;
use super::{Archive, Archived};
use crate::config::Retention;
use protocol::{ChatMessage, RoomName, User};
use std::sync::Arc;

struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn sqlite() -> (Archive, Scratch) {
    let dir = std::env::temp_dir().join(format!("chat-archive-{:016x}", rand::random::<u64>()));
    let archive = Archive::connect(&format!("sqlite://{}", dir.join("a.db").display()))
        .await
        .expect("open");
    (archive, Scratch(dir))
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("room name")
}

fn archived(room_name: &str, epoch: &str, offset: u64, ts: i64) -> Archived {
    Archived {
        room: room(room_name),
        epoch: Arc::from(epoch),
        message: ChatMessage {
            room: room_name.to_owned(),
            offset,
            id: format!("m_{epoch}_{offset}"),
            client_id: format!("c{offset}"),
            from: User {
                id: "u_1".to_owned(),
                name: "ann".to_owned(),
            },
            body: format!("{epoch} {offset}"),
            ts,
        },
    }
}

fn offsets(messages: &[ChatMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.offset).collect()
}

#[tokio::test]
async fn writes_are_idempotent_and_reads_give_messages_back() {
    let (archive, _dir) = sqlite().await;
    let batch: Vec<Archived> = (1..=10).map(|o| archived("a", "e1", o, o as i64)).collect();
    archive.write(&batch).await.unwrap();
    archive.write(&batch[3..7]).await.unwrap();
    archive.write(&[]).await.unwrap();
    let all = archive.range(&room("a"), 0, u64::MAX).await.unwrap();
    let expected: Vec<ChatMessage> = batch.iter().map(|a| a.message.clone()).collect();
    assert_eq!(all, expected);
    assert_eq!(
        offsets(&archive.range(&room("a"), 3, 6).await.unwrap()),
        [4, 5, 6]
    );
    assert_eq!(
        offsets(&archive.before(&room("a"), 6, 3).await.unwrap()),
        [3, 4, 5]
    );
    assert_eq!(
        offsets(&archive.before(&room("a"), u64::MAX, 2).await.unwrap()),
        [9, 10]
    );
    assert!(archive.before(&room("a"), 1, 5).await.unwrap().is_empty());
    assert_eq!(
        archive.position(&room("a")).await.unwrap(),
        Some((Arc::from("e1"), 10))
    );
    assert_eq!(archive.position(&room("b")).await.unwrap(), None);
}

#[tokio::test]
async fn a_new_epoch_replaces_the_offsets_it_reuses() {
    let (archive, _dir) = sqlite().await;
    let first: Vec<Archived> = (1..=5).map(|o| archived("a", "e1", o, 0)).collect();
    archive.write(&first).await.unwrap();
    // The store lost 4 and 5; the room went on under e2 from 4.
    let second: Vec<Archived> = (4..=6).map(|o| archived("a", "e2", o, 0)).collect();
    archive.write(&second).await.unwrap();
    let all = archive.range(&room("a"), 0, 100).await.unwrap();
    assert_eq!(offsets(&all), [1, 2, 3, 4, 5, 6]);
    let bodies: Vec<&str> = all.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["e1 1", "e1 2", "e1 3", "e2 4", "e2 5", "e2 6"]);
    assert_eq!(
        archive.position(&room("a")).await.unwrap(),
        Some((Arc::from("e2"), 6))
    );
    // Several rooms and a batch past one statement's rows.
    let many: Vec<Archived> = (1..=2_500)
        .map(|o| archived(if o % 2 == 0 { "b" } else { "c" }, "e", o, 0))
        .collect();
    archive.write(&many).await.unwrap();
    assert_eq!(
        archive.range(&room("b"), 0, u64::MAX).await.unwrap().len(),
        1_250
    );
    assert_eq!(
        archive.position(&room("c")).await.unwrap(),
        Some((Arc::from("e"), 2_499))
    );
}

#[tokio::test]
async fn retention_deletes_by_count_and_by_age_per_room() {
    let (archive, _dir) = sqlite().await;
    let day = 86_400_000;
    let now = 100 * day;
    let mut batch = Vec::new();
    for room_name in ["keep-all", "short", "old"] {
        for o in 1..=10u64 {
            // Offset o is (10 - o) days old.
            batch.push(archived(room_name, "e", o, now - (10 - o as i64) * day - 1));
        }
    }
    // A clock that stamped offset 3 late keeps it and everything after.
    for o in 1..=10u64 {
        let age = if o == 3 { 0 } else { (10 - o as i64) * day + 1 };
        batch.push(archived("skewed", "e", o, now - age));
    }
    archive.write(&batch).await.unwrap();
    let rule = Retention::parse("3d,keep-*=unlimited,short=4").unwrap();
    let deleted = retention::apply(&archive, &rule, now).await.unwrap();
    let left = |name: &'static str| {
        let archive = archive.clone();
        async move { offsets(&archive.range(&room(name), 0, u64::MAX).await.unwrap()) }
    };
    assert_eq!(left("keep-all").await, (1..=10).collect::<Vec<u64>>());
    assert_eq!(left("short").await, [7, 8, 9, 10]);
    assert_eq!(left("old").await, [8, 9, 10], "younger than 3 days");
    assert_eq!(left("skewed").await, (3..=10).collect::<Vec<u64>>());
    assert_eq!(deleted, 6 + 7 + 2);
    // Positions stay: offsets continue after a retention.
    assert_eq!(
        archive.position(&room("old")).await.unwrap(),
        Some((Arc::from("e"), 10))
    );
    assert_eq!(retention::apply(&archive, &rule, now).await.unwrap(), 0);
    let unlimited = Retention::parse("unlimited").unwrap();
    assert_eq!(
        retention::apply(&archive, &unlimited, now * 2)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn an_unknown_scheme_is_refused_with_the_accepted_ones() {
    let err = Archive::connect("mysql://localhost/x").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("sqlite://") && text.contains("postgres://"),
        "{text}"
    );
    assert!(!text.contains("localhost"), "the URL is not echoed: {text}");
}
