//! The HTTP edge (issue 13): hyper's header-read timeout (also the
//! keep-alive idle bound), the cap on connections not yet upgraded, and a
//! graceful shutdown that ends within its deadline whatever the peers do.
//! Each test talks raw TCP, as a slow or hostile peer would.

use crate::procs::TempDir;
use crate::support::TestServer;
use server::config::Config;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Half of a request head: the line and one header, no blank line.
const HALF_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";

/// Waits until the server closes `tcp` (EOF or reset), up to `bound`;
/// answers how long it took, `None` when it stayed open.
async fn closed_within(tcp: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + bound).into(), tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            // A 408 or other answer before the close: keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn connections_that_send_half_a_request_head_are_closed_after_the_timeout() {
    let mut cfg = Config::for_tests();
    cfg.header_read_timeout = Duration::from_millis(500);
    let server = TestServer::start(cfg).await;
    let mut peers = Vec::new();
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        tcp.write_all(HALF_HEAD).await.expect("write");
        peers.push(tcp);
    }
    // And one that sends nothing at all.
    peers.push(TcpStream::connect(server.addr).await.expect("connect"));
    let sent = Instant::now();
    for tcp in &mut peers {
        closed_within(tcp, Duration::from_secs(5))
            .await
            .expect("a half-sent head is not kept open");
        assert!(
            sent.elapsed() >= Duration::from_millis(300),
            "closed {:?} after the half head: before the timeout",
            sent.elapsed()
        );
    }
    // The server still serves.
    assert_eq!(server.get("/healthz").await, (200, "ok".to_owned()));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_timeout() {
    let mut cfg = Config::for_tests();
    cfg.header_read_timeout = Duration::from_millis(500);
    let server = TestServer::start(cfg).await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.expect("answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive, then idle: closed once the timeout passes.
    closed_within(&mut tcp, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection is not kept for ever");
}

#[tokio::test]
async fn past_the_cap_new_http_connections_are_closed_and_upgrades_free_their_slot() {
    let mut cfg = Config::for_tests();
    cfg.max_http_connections = 2;
    cfg.header_read_timeout = Duration::from_secs(30);
    let server = TestServer::start(cfg).await;
    let mut first = TcpStream::connect(server.addr).await.expect("connect");
    let mut second = TcpStream::connect(server.addr).await.expect("connect");
    first.write_all(HALF_HEAD).await.expect("write");
    second.write_all(HALF_HEAD).await.expect("write");
    // Both are being served; a third is closed at once.
    let mut third = TcpStream::connect(server.addr).await.expect("connect");
    closed_within(&mut third, Duration::from_secs(2))
        .await
        .expect("past the cap a connection is closed at accept");
    // One of them goes away: its slot is free again (a GET that a full
    // server resets panics in its task, and is tried again).
    drop(first);
    let mut refused = None;
    for _ in 0..100 {
        let get = tokio::spawn(crate::support::http_get(server.addr, "/metrics"));
        if let Ok(Ok((200, text))) = tokio::time::timeout(Duration::from_millis(500), get).await {
            refused = text
                .lines()
                .find(|l| l.starts_with("chat_http_refused_total{reason=\"max_http_connections\"}"))
                .map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("a slot freed by a closed connection, and the refusal counted");
    assert!(!refused.ends_with(" 0"), "{refused}");
    // A WebSocket that upgrades gives its slot back too.
    let mut client = server.connect().await;
    client.hello("ws-user").await;
    let mut fourth = TcpStream::connect(server.addr).await.expect("connect");
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    fourth.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(second);
}

#[tokio::test]
async fn shutdown_ends_within_its_deadline_whatever_the_peers_do() {
    let mut cfg = Config::for_tests();
    // Far beyond the deadline: only the deadline can end these peers.
    cfg.header_read_timeout = Duration::from_secs(60);
    cfg.shutdown_deadline = Duration::from_millis(500);
    let server = TestServer::start(cfg).await;
    let mut half = TcpStream::connect(server.addr).await.expect("connect");
    half.write_all(HALF_HEAD).await.expect("write");
    let _silent = TcpStream::connect(server.addr).await.expect("connect");
    let mut ws = server.login("stays").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    server.stop().await.expect("run returns Ok");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        start.elapsed()
    );
    // The WebSocket was told, as always.
    assert!(matches!(
        ws.recv().await,
        protocol::ServerFrame::Reconnect { .. }
    ));
}

/// `GET path` over a fresh connection: (status, headers lowercased by
/// name, body).
async fn get_with_headers(
    addr: std::net::SocketAddr,
    path: &str,
) -> (u16, std::collections::HashMap<String, String>, String) {
    let (status, headers, body) = exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_the_chat_page_names_its_nonce() {
    let server = TestServer::start(Config::for_tests()).await;
    let (status, headers, body) = get_with_headers(server.addr, "/").await;
    assert_eq!(status, 200);
    let csp = &headers["content-security-policy"];
    // The page's scripts carry the nonce the policy names, and nothing
    // inline runs without it.
    let nonce = body
        .split("nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the hydration script carries a nonce");
    assert!(
        csp.contains(&format!(
            "script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'"
        )),
        "{csp}"
    );
    for part in [
        "frame-ancestors 'none'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{part} in {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline;") && !csp.contains("script-src 'self' 'unsafe-inline'"),
        "{csp}"
    );
    // A second render gets a fresh nonce.
    let (_, again, _) = get_with_headers(server.addr, "/").await;
    assert_ne!(&again["content-security-policy"], csp);

    for path in [
        "/",
        "/docs/",
        "/docs/operations",
        "/healthz",
        "/metrics",
        "/no-such-page",
    ] {
        let (_, headers, _) = get_with_headers(server.addr, path).await;
        assert_eq!(
            headers.get("x-content-type-options").map(String::as_str),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            headers.get("referrer-policy").map(String::as_str),
            Some("no-referrer"),
            "{path}"
        );
        let csp = headers.get("content-security-policy").expect(path);
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            !headers.contains_key("strict-transport-security"),
            "{path}: HSTS only when configured"
        );
    }
    let (_, docs, _) = get_with_headers(server.addr, "/docs/operations").await;
    assert!(
        docs["content-security-policy"].contains("script-src 'self';"),
        "docs run no inline script"
    );
}

#[tokio::test]
async fn hsts_is_sent_when_configured() {
    let mut cfg = Config::for_tests();
    cfg.hsts_max_age_secs = 31_536_000;
    let server = TestServer::start(cfg).await;
    for path in ["/", "/healthz"] {
        let (_, headers, _) = get_with_headers(server.addr, path).await;
        assert_eq!(
            headers.get("strict-transport-security").map(String::as_str),
            Some("max-age=31536000"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn pages_are_compressed_as_the_client_accepts() {
    let server = TestServer::start(Config::for_tests()).await;
    let raw = |encoding: &'static str| {
        let addr = server.addr;
        async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(
                format!(
                    "GET /docs/operations HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: {encoding}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .expect("write");
            let mut bytes = Vec::new();
            tcp.read_to_end(&mut bytes).await.expect("read");
            let split = bytes
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("head")
                + 4;
            let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
            (head, bytes.len() - split)
        }
    };
    let (plain_head, plain_len) = raw("identity").await;
    assert!(!plain_head.contains("content-encoding"), "{plain_head}");
    for (accept, want) in [("br", "br"), ("gzip", "gzip"), ("gzip, deflate, br", "br")] {
        let (head, len) = raw(accept).await;
        assert!(
            head.contains(&format!("content-encoding: {want}\r\n")),
            "{accept}: {head}"
        );
        assert!(head.contains("vary: accept-encoding"), "{head}");
        assert!(len * 2 < plain_len, "{accept}: {len} bytes of {plain_len}");
    }
    // Tiny bodies are sent as they are.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.expect("read");
    assert!(
        answer.ends_with("\r\n\r\nok") && !answer.to_ascii_lowercase().contains("content-encoding"),
        "{answer}"
    );
}

/// Sends `request` (a whole HTTP/1.1 request) and reads the answer to the
/// close: status, headers (names lower-cased), body bytes.
async fn exchange(
    addr: std::net::SocketAddr,
    request: &str,
) -> (u16, std::collections::HashMap<String, String>, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, raw[split..].to_vec())
}

#[tokio::test]
async fn every_response_names_its_request_id_and_keeps_one_a_proxy_set() {
    let server = TestServer::start(Config::for_tests()).await;
    let mut seen = std::collections::HashSet::new();
    for path in [
        "/healthz",
        "/",
        "/docs/",
        "/no-such-page",
        "/pkg/nothing.js",
    ] {
        let (_, headers, _) = get_with_headers(server.addr, path).await;
        let id = headers.get("x-request-id").expect(path);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{path}: {id}");
        assert!(seen.insert(id.clone()), "{path}: {id} repeated");
    }
    let (status, headers, _) = exchange(
        server.addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: edge-7f3a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "edge-7f3a");
}

#[tokio::test]
async fn a_request_body_over_the_limit_is_refused_before_it_is_read() {
    let mut cfg = Config::for_tests();
    cfg.max_request_body_bytes = 1_000;
    let server = TestServer::start(cfg).await;
    // Declared too long: refused at once, the body never sent.
    for path in ["/", "/healthz", "/docs/", "/ws"] {
        let (status, _, _) = exchange(
            server.addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(status, 413, "POST {path}");
    }
    // At the limit: not refused for its size.
    let (status, _, _) = exchange(
        server.addr,
        &format!(
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{}",
            "x".repeat(1000)
        ),
    )
    .await;
    assert_eq!(
        status, 405,
        "POST /healthz under the limit is only the wrong method"
    );
}

/// A site root as `cargo leptos build --release --precompress` leaves it
/// with `hash-files`: hashed names, `.br`/`.gz` siblings, and the hash
/// file (here in the site root, where the Dockerfile puts it).
fn hashed_site() -> TempDir {
    let dir = TempDir::new("site");
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(&pkg).expect("mkdir");
    for (name, body) in [
        (
            "chat.JSJSJSJSJSJSJSJSJSJSJS.js",
            "export default function init() {}",
        ),
        ("chat.WASMWASMWASMWASMWASMWA.wasm", "\0asm plain"),
        ("chat.WASMWASMWASMWASMWASMWA.wasm.br", "brotli bytes"),
        ("chat.WASMWASMWASMWASMWASMWA.wasm.gz", "gzip bytes"),
        ("chat.CSSCSSCSSCSSCSSCSSCSSC.css", "body{}"),
        ("unhashed.js", "// a snippet"),
    ] {
        std::fs::write(pkg.join(name), body).expect("write");
    }
    std::fs::write(
        dir.path().join("hash.txt"),
        "js: JSJSJSJSJSJSJSJSJSJSJS\nwasm: WASMWASMWASMWASMWASMWA\ncss: CSSCSSCSSCSSCSSCSSCSSC\n",
    )
    .expect("write");
    dir
}

#[tokio::test]
async fn hashed_assets_are_immutable_precompressed_and_named_by_the_pages() {
    let site = hashed_site();
    let mut cfg = Config::for_tests();
    cfg.site_root = site.path().to_path_buf();
    let server = TestServer::start(cfg).await;

    // The pages name the hashed files.
    let (status, headers, body) = get_with_headers(server.addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["cache-control"], "no-cache",
        "pages are revalidated"
    );
    for name in [
        "/pkg/chat.CSSCSSCSSCSSCSSCSSCSSC.css",
        "chat.JSJSJSJSJSJSJSJSJSJSJS",
        "chat.WASMWASMWASMWASMWASMWA",
    ] {
        assert!(
            body.contains(name),
            "{name} missing from the chat page:\n{body}"
        );
    }
    let (_, headers, docs) = get_with_headers(server.addr, "/docs/").await;
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(
        docs.contains("href=\"/pkg/chat.CSSCSSCSSCSSCSSCSSCSSC.css\""),
        "{docs}"
    );

    let get = |path: &str, accept: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {accept}\r\nConnection: close\r\n\r\n")
    };
    let wasm = "/pkg/chat.WASMWASMWASMWASMWASMWA.wasm";
    for (accept, encoding, body) in [
        ("br", Some("br"), &b"brotli bytes"[..]),
        ("gzip, br", Some("br"), b"brotli bytes"),
        ("gzip", Some("gzip"), b"gzip bytes"),
        ("identity", None, b"\0asm plain"),
    ] {
        let (status, headers, got) = exchange(server.addr, &get(wasm, accept)).await;
        assert_eq!(status, 200, "{accept}");
        assert_eq!(
            headers.get("content-encoding").map(String::as_str),
            encoding,
            "{accept}"
        );
        assert_eq!(
            got, body,
            "{accept}: the file the build compressed, sent as it is"
        );
        assert_eq!(
            headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(headers["content-type"], "application/wasm");
        assert_eq!(headers["vary"], "accept-encoding", "{accept}");
    }
    for path in [
        "/pkg/chat.CSSCSSCSSCSSCSSCSSCSSC.css",
        "/pkg/chat.JSJSJSJSJSJSJSJSJSJSJS.js",
    ] {
        let (status, headers, _) = exchange(server.addr, &get(path, "identity")).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            headers["cache-control"], "public, max-age=31536000, immutable",
            "{path}"
        );
    }
    // A name without a hash may change under the same name; a missing
    // file is not cached for a year.
    for (path, want) in [
        ("/pkg/unhashed.js", 200),
        ("/pkg/chat.AAAAAAAAAAAAAAAAAAAAAA.js", 404),
    ] {
        let (status, headers, _) = exchange(server.addr, &get(path, "identity")).await;
        assert_eq!(status, want, "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
    }
}

#[tokio::test]
async fn a_hash_file_that_names_missing_files_is_ignored() {
    let site = hashed_site();
    std::fs::remove_file(site.path().join("pkg/chat.CSSCSSCSSCSSCSSCSSCSSC.css")).expect("rm");
    let mut cfg = Config::for_tests();
    cfg.site_root = site.path().to_path_buf();
    let server = TestServer::start(cfg).await;
    let (_, _, docs) = get_with_headers(server.addr, "/docs/").await;
    assert!(docs.contains("href=\"/pkg/chat.css\""), "{docs}");
}
