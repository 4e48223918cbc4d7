//! The archive (issue 14) behind the in-process engine: a real SQLite
//! file in a temporary directory, as `make run` keeps one under
//! `--data-dir`, and a real PostgreSQL the test starts itself. The server
//! restarted keeps history, epochs and offsets; scroll-back and recovery
//! reach past the hot store's cap.

use crate::procs::TempDir;
use crate::support::{offsets, unthrottled, Client, TestServer};
use protocol::{ChatMessage, ClientFrame, ServerFrame, Since};
use server::config::Config;

const ROOM: &str = "lobby";

fn archived_at(dir: &TempDir) -> Config {
    let mut cfg = unthrottled();
    cfg.database_url = Some(format!(
        "sqlite://{}",
        dir.path().join("nested/chat.db").display()
    ));
    cfg
}

/// One `history` page: the newest `limit` messages before `before`.
async fn history(client: &mut Client, before: Option<u64>, limit: u64) -> Vec<ChatMessage> {
    client
        .send(&ClientFrame::History {
            room: ROOM.to_owned(),
            before,
            limit: Some(limit),
        })
        .await;
    match client.recv().await {
        ServerFrame::History { messages, .. } => messages,
        other => panic!("expected history, got {other:?}"),
    }
}

#[tokio::test]
async fn a_restarted_server_keeps_history_epochs_and_offsets() {
    let dir = TempDir::new("archive-restart");
    let server = TestServer::start(archived_at(&dir)).await;
    let mut alice = server.login("alice").await;
    let first = alice.join(ROOM).await;
    let sent = alice.post_many(ROOM, 5).await;
    let since = Since {
        epoch: first.epoch.clone(),
        offset: 2,
    };
    alice.close().await;
    server.stop().await.expect("graceful stop");

    // The file was created, directory and all, on first start.
    assert!(dir.path().join("nested/chat.db").is_file());

    let server = TestServer::start(archived_at(&dir)).await;
    let mut bob = server.login("bob").await;
    let joined = bob.join_since(ROOM, since).await;
    assert!(joined.recovered, "the same epoch, every message since 2");
    assert_eq!(joined.epoch, first.epoch);
    assert_eq!(joined.offset, 5);
    assert_eq!(joined.history, sent[2..]);
    // Offsets continue.
    assert_eq!(bob.post(ROOM, "after the restart").await.offset, 6);
    // A plain join sees the messages from before the restart.
    let mut carol = server.login("carol").await;
    let plain = carol.join(ROOM).await;
    assert_eq!(offsets(&plain.history), vec![1, 2, 3, 4, 5, 6]);
    server.stop().await.expect("graceful stop");

    // And a third start still has all of it.
    let server = TestServer::start(archived_at(&dir)).await;
    let mut dave = server.login("dave").await;
    let again = dave.join(ROOM).await;
    assert_eq!(
        (again.epoch.as_str(), again.offset),
        (first.epoch.as_str(), 6)
    );
    assert_eq!(again.history[..5], sent[..]);
}

#[tokio::test]
async fn scroll_back_reaches_the_first_of_2500_messages() {
    let dir = TempDir::new("archive-scroll");
    let mut cfg = archived_at(&dir);
    cfg.history_cap = 1000;
    let server = TestServer::start(cfg).await;
    let mut alice = server.login("alice").await;
    alice.join(ROOM).await;
    let sent = alice.post_many(ROOM, 2500).await;

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = history(&mut alice, before, 200).await;
        let Some(first) = page.first() else { break };
        before = Some(first.offset);
        pages.push(page);
    }
    let got: Vec<ChatMessage> = pages.into_iter().rev().flatten().collect();
    assert_eq!(offsets(&got), (1..=2500).collect::<Vec<u64>>());
    assert_eq!(
        got, sent,
        "the archive gives the messages back as they were"
    );
}

#[tokio::test]
async fn recovery_reaches_past_the_hot_store_cap() {
    let dir = TempDir::new("archive-recover");
    let mut cfg = archived_at(&dir);
    cfg.history_cap = 100;
    let server = TestServer::start(cfg).await;
    let mut alice = server.login("alice").await;
    let joined = alice.join(ROOM).await;
    let sent = alice.post_many(ROOM, 600).await;

    let mut bob = server.login("bob").await;
    let back = bob
        .join_since(
            ROOM,
            Since {
                epoch: joined.epoch.clone(),
                offset: 10,
            },
        )
        .await;
    assert!(
        back.recovered,
        "590 messages, 500 of them only in the archive"
    );
    assert_eq!(back.history, sent[10..]);
}

#[tokio::test]
async fn without_an_archive_the_cap_still_bounds_history() {
    let mut cfg = unthrottled();
    cfg.history_cap = 100;
    let server = TestServer::start(cfg).await;
    let mut alice = server.login("alice").await;
    let joined = alice.join(ROOM).await;
    alice.post_many(ROOM, 300).await;
    let page = history(&mut alice, Some(150), 200).await;
    assert_eq!(offsets(&page), Vec::<u64>::new(), "1 to 200 are gone");
    let mut bob = server.login("bob").await;
    let back = bob
        .join_since(
            ROOM,
            Since {
                epoch: joined.epoch,
                offset: 10,
            },
        )
        .await;
    assert!(
        !back.recovered,
        "the messages after 10 are gone from memory"
    );
}

#[tokio::test]
async fn a_postgres_archive_keeps_history_epochs_and_offsets_across_restarts() {
    let postgres = crate::procs::Postgres::start().await;
    let mut cfg = unthrottled();
    cfg.history_cap = 50;
    cfg.database_url = Some(postgres.url());
    let server = TestServer::start(cfg.clone()).await;
    let mut alice = server.login("alice").await;
    let first = alice.join(ROOM).await;
    let sent = alice.post_many(ROOM, 300).await;
    alice.close().await;
    server.stop().await.expect("graceful stop");

    let server = TestServer::start(cfg).await;
    let mut bob = server.login("bob").await;
    let back = bob
        .join_since(
            ROOM,
            Since {
                epoch: first.epoch.clone(),
                offset: 100,
            },
        )
        .await;
    assert!(back.recovered);
    assert_eq!(
        (back.epoch.as_str(), back.offset),
        (first.epoch.as_str(), 300)
    );
    assert_eq!(back.history, sent[100..]);
    assert_eq!(bob.post(ROOM, "continued").await.offset, 301);
    let oldest = history(&mut bob, Some(3), 10).await;
    assert_eq!(oldest, sent[..2]);
}
