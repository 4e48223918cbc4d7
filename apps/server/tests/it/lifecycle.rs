//! The life of connections and of the instance: graceful shutdown,
//! heartbeats, the `hello` deadline, and the plain HTTP routes.
//!
//! The time-based rules run with intervals of a few hundred milliseconds and
//! the tests wait for their observable effect (a frame, a close), bounded.

use crate::support::{presence_joined, presence_left, TestServer};
use protocol::{ErrorCode, ReconnectReason, ServerFrame};
use server::config::Config;
use std::time::{Duration, Instant};

const ROOM: &str = "general";

#[tokio::test]
async fn shutdown_asks_every_client_to_reconnect_then_run_returns() {
    let mut cfg = Config::for_tests();
    // Far beyond the test's bound: `run` must return because every
    // connection is done, not because the deadline cut it short.
    cfg.shutdown_deadline = Duration::from_secs(60);
    let server = TestServer::start(cfg).await;
    let mut member = server.login("alice").await;
    member.join(ROOM).await;
    let mut idle = server.login("bob").await;
    let mut early = server.connect().await; // has not said hello yet

    server.stop().await.expect("run returns Ok");

    for client in [&mut member, &mut idle, &mut early] {
        assert_eq!(
            client.recv().await,
            ServerFrame::Reconnect {
                reason: ReconnectReason::Shutdown,
                delay_ms: 0,
            }
        );
        assert_eq!(client.expect_close().await, 1012);
    }
}

/// A drain (PROTOCOL.md, "Drain"): from the signal `/readyz` answers 503
/// while the instance still serves; after the drain delay each client gets
/// `reconnect` with its own `delay_ms`, evenly over the window, and is
/// still served; one that ignores its delay is closed with 1012 two seconds
/// after it; once every client has left, `run` returns without waiting for
/// the rest of the window.
#[tokio::test]
async fn a_drain_reports_not_ready_then_spreads_reconnects_over_its_window() {
    const N: u64 = 8;
    let mut cfg = Config::for_tests();
    cfg.drain_delay = Duration::from_millis(600);
    cfg.drain_window = Duration::from_secs(4);
    cfg.shutdown_deadline = Duration::from_secs(60);
    let (delay, window) = (cfg.drain_delay, cfg.drain_window);
    let server = TestServer::start(cfg).await;
    let mut clients = Vec::new();
    for i in 0..N {
        let mut client = server.login(&format!("user{i}")).await;
        client.join(&format!("room-{i}")).await;
        clients.push(client);
    }
    assert_eq!(server.get("/readyz").await, (200, "ready".to_owned()));

    let signalled = Instant::now();
    server.begin_stop();
    assert_eq!(server.get("/readyz").await, (503, "draining".to_owned()));
    clients[0].post("room-0", "during the drain delay").await;

    let mut delays = Vec::new();
    for client in &mut clients {
        match client.recv().await {
            ServerFrame::Reconnect {
                reason: ReconnectReason::Shutdown,
                delay_ms,
            } => delays.push(delay_ms),
            other => panic!("expected reconnect, got {other:?}"),
        }
    }
    assert!(
        signalled.elapsed() >= delay,
        "clients were asked to reconnect before the drain delay ended"
    );
    let mut sorted = delays.clone();
    sorted.sort_unstable();
    let window_ms = window.as_millis() as u64;
    let even: Vec<u64> = (0..N).map(|i| window_ms * i / N).collect();
    assert!(
        sorted
            .iter()
            .zip(&even)
            .all(|(got, want)| got.abs_diff(*want) <= 1),
        "delays {sorted:?} are not spread evenly over the window ({even:?})"
    );

    // Still served after the `reconnect`.
    let last = delays
        .iter()
        .position(|&d| d == sorted[N as usize - 1])
        .expect("a last");
    clients[last]
        .post(&format!("room-{last}"), "after the reconnect frame")
        .await;

    // The client whose delay is 0 ignores it: closed with 1012 2 s later.
    let ignoring = delays.iter().position(|&d| d == 0).expect("a first");
    let mut ignorer = clients.swap_remove(ignoring);
    let waited = Instant::now();
    assert_eq!(ignorer.expect_close().await, 1012);
    assert!(
        waited.elapsed() >= Duration::from_millis(1500),
        "closed {:?} after its reconnect frame, before the 2 s linger",
        waited.elapsed()
    );
    for client in clients {
        client.close().await;
    }
    server.stop().await.expect("run returns Ok");
    assert!(
        signalled.elapsed() < delay + window,
        "run waited out the window ({:?}) although every client had left",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn client_that_answers_no_pings_is_dropped_after_the_idle_timeout() {
    let mut cfg = Config::for_tests();
    cfg.ping_interval = Duration::from_millis(100);
    cfg.idle_timeout = Duration::from_millis(400);
    let idle_timeout = cfg.idle_timeout;
    let server = TestServer::start(cfg).await;

    // Alice keeps reading, so her client answers every ping.
    let mut alice = server.login("alice").await;
    alice.join(ROOM).await;
    let mut silent = server.login("silent").await;
    let quiet_since = Instant::now();
    silent.join(ROOM).await;
    // From here `silent` reads nothing, so it answers no ping.
    let silent_user = silent.user().clone();

    assert_eq!(alice.recv().await, presence_joined(ROOM, &silent_user));
    assert_eq!(alice.recv().await, presence_left(ROOM, &silent_user));
    assert!(
        quiet_since.elapsed() >= idle_timeout,
        "dropped after {:?}, before the idle timeout",
        quiet_since.elapsed()
    );
    alice.ping().await;
}

#[tokio::test]
async fn client_without_hello_is_closed_after_the_hello_timeout() {
    let mut cfg = Config::for_tests();
    cfg.hello_timeout = Duration::from_millis(200);
    let server = TestServer::start(cfg).await;
    let mut greeted = server.login("alice").await;

    let mut mute = server.connect().await;
    mute.expect_error(ErrorCode::Unauthorized, None).await;
    assert_eq!(mute.expect_close().await, 1008);
    // The deadline applies before hello only: alice, connected earlier, stays.
    greeted.ping().await;
}

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let server = TestServer::start(Config::for_tests()).await;
    assert_eq!(server.get("/healthz").await, (200, "ok".to_owned()));
    assert_eq!(server.get("/readyz").await.0, 200);
}

#[tokio::test]
async fn metrics_count_connections_and_frames() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut alice = server.login("alice").await;
    alice.ping().await;
    // A publish, and the same client id again (a duplicate: acked with
    // the same offset, published once).
    alice.join("metered").await;
    let offset = alice.send_acked("metered", "c-metered", "one").await;
    alice.expect_message().await;
    assert_eq!(
        alice.send_acked("metered", "c-metered", "one").await,
        offset
    );
    for (series, count) in [
        ("chat_frames_in_total{type=\"send\"}", 2.0),
        ("chat_frames_out_total{type=\"ack\"}", 2.0),
        ("chat_messages_published_total", 1.0),
        ("chat_publish_duration_seconds_count", 2.0),
        // To alice, the room's one member, once.
        ("chat_messages_delivered_total", 1.0),
    ] {
        assert_eq!(server.metric(series).await, count, "{series}");
    }

    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for name in ["chat_connections", "chat_frames_in_total"] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{text}"
        );
    }
    assert!(server.metric("chat_connections").await >= 1.0);
    // Every series has its HELP and TYPE lines (a histogram's series are
    // `<name>_bucket`, `_sum` and `_count` under the name's own).
    let described = |kind: &str, name: &str| {
        text.lines()
            .any(|l| l.starts_with(&format!("# {kind} {name} ")))
    };
    let mut series = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let full = line.split(['{', ' ']).next().unwrap();
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| full.strip_suffix(s).filter(|n| described("TYPE", n)))
            .unwrap_or(full);
        assert!(described("TYPE", name), "no TYPE for {name} in:\n{text}");
        assert!(described("HELP", name), "no HELP for {name} in:\n{text}");
        series += 1;
    }
    assert!(series >= 2, "{text}");
    // The process's own, as every Prometheus client exports them.
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(described("HELP", name), "no {name} in:\n{text}");
    }
}

#[tokio::test]
async fn web_app_page_is_rendered_on_the_server() {
    let server = TestServer::start(Config::for_tests()).await;
    let (status, body) = server.get("/").await;
    assert_eq!(status, 200);
    // The document shell, the app's own markup and its hydration script:
    // what the server renders whatever the page shows first.
    for part in [
        "<html",
        "<title>Chat</title>",
        "<meta name=\"description\" content=\"A real-time chat",
        "/pkg/chat.css",
        "\"chat\"",
    ] {
        assert!(body.contains(part), "{part:?} missing from:\n{body}");
    }
    assert_eq!(server.get("/no-such-page").await.0, 404);
}

#[tokio::test]
async fn docs_are_served_and_unknown_pages_are_404() {
    let server = TestServer::start(Config::for_tests()).await;
    for page in docs::PAGES {
        let path = docs::href(page);
        let (status, body) = server.get(&path).await;
        assert_eq!(status, 200, "GET {path}");
        assert!(body.contains("Chat docs"), "GET {path}: {body}");
        assert!(body.contains(page.title), "GET {path}: {body}");
    }
    assert_eq!(server.get("/docs/nope").await.0, 404);
}

#[tokio::test]
async fn configuration_page_lists_every_flag_and_env_var() {
    let server = TestServer::start(Config::for_tests()).await;
    let (status, body) = server.get("/docs/configuration").await;
    assert_eq!(status, 200);
    let command = <server::config::Args as clap::CommandFactory>::command();
    let mut flags = 0;
    for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
        let Some(long) = arg.get_long() else { continue };
        flags += 1;
        assert!(
            body.contains(&format!("<code>--{long}</code>")),
            "--{long} missing"
        );
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            assert!(
                body.contains(&format!("<code>{env}</code>")),
                "{env} missing"
            );
        }
    }
    assert!(flags >= 20, "only {flags} flags found");
    let (_, ops) = server.get("/docs/operations").await;
    for (name, _) in server::metrics::ALL {
        assert!(ops.contains(name), "{name} missing from operations");
    }
}

/// `--log-format json`: every line one JSON object, the event's fields at
/// the top level beside `timestamp`, `level`, `target` and `message`.
#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let server = crate::procs::ServerProc::start(
        "json-logs",
        "",
        &["--log-format", "json", "--database-url", "none"],
    )
    .await;
    let mut alice = crate::support::Client::connect_url(&server.ws_url()).await;
    alice.hello("alice").await;
    alice.close().await;
    let lines = server.log_lines();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let listening = events
        .iter()
        .find(|e| e["message"] == "listening")
        .expect("a listening line");
    assert_eq!(listening["message"], "listening");
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["addr"], server.addr.to_string());
    assert_eq!(listening["instance"], "json-logs");
    assert!(listening["timestamp"].is_string() && listening["target"].is_string());
    assert!(events
        .iter()
        .all(|e| e.is_object() && e["level"].is_string()));
}
