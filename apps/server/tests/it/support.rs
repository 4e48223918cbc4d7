//! The harness: a server instance on port 0, a WebSocket client that speaks
//! the protocol through `protocol`'s frame types, and a raw HTTP GET.
//!
//! Waiting is always on an observable event (a frame, a close, the end of a
//! stream), bounded by [`BOUND`] so that a missing event fails the test
//! instead of hanging it. Nothing here sleeps to let the server catch up.
//!
//! Ordering facts the helpers rely on: a connection answers its frames in
//! the order it reads them, so a `ping` answered by the next frame proves no
//! reply was queued before it; and every room event (message, presence,
//! typing) reaches a member through one FIFO (engine → hub → outbox), so a
//! marker message published after an event arrives after it
//! ([`Client::sync`]).

use futures_util::{SinkExt, StreamExt};
use protocol::{ChatMessage, ClientFrame, ErrorCode, ServerFrame, Since, User};
use server::config::Config;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// Longest wait for anything a test expects. A failure bound, never a way
/// to synchronise: every wait ends as soon as the awaited event happens.
pub(crate) const BOUND: Duration = Duration::from_secs(5);

/// A unique string, for message ids: the server dedupes (user, id) pairs,
/// so ids must not repeat even across connections of one user.
pub(crate) fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The test defaults with a rate limit no test reaches unless it means to
/// (tests that fill rooms send hundreds of messages in milliseconds).
pub(crate) fn unthrottled() -> Config {
    let mut cfg = Config::for_tests();
    let unlimited = server::cost::Rate {
        per_sec: 1_000_000,
        burst: 1_000_000,
    };
    cfg.connection_rate = unlimited;
    cfg.user_rate = unlimited;
    cfg.address_rate = unlimited;
    cfg
}

/// The offsets of `messages`, in order.
pub(crate) fn offsets(messages: &[ChatMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.offset).collect()
}

/// `presence` announcing that `user` joined `room`.
pub(crate) fn presence_joined(room: &str, user: &User) -> ServerFrame {
    ServerFrame::Presence {
        room: room.to_owned(),
        joined: vec![user.clone()],
        left: vec![],
    }
}

/// `presence` announcing that `user` left `room`.
pub(crate) fn presence_left(room: &str, user: &User) -> ServerFrame {
    ServerFrame::Presence {
        room: room.to_owned(),
        joined: vec![],
        left: vec![user.clone()],
    }
}

/// One server instance, serving until [`TestServer::stop`] or drop.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Binds 127.0.0.1:0 and runs `server::run` on it, as `main` does.
    pub(crate) async fn start(config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(server::run(config, listener, shutdown.clone()));
        TestServer {
            addr,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Signals the server to stop (its drain begins) without waiting.
    pub(crate) fn begin_stop(&self) {
        self.shutdown.cancel();
    }

    /// Cancels the server and waits (bounded) for `run` to return.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("the server runs");
        tokio::time::timeout(BOUND, handle)
            .await
            .expect("server::run did not return after shutdown")
            .expect("server task panicked")
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Opens a WebSocket with extra request headers; `Err` holds the HTTP
    /// status of a refused upgrade.
    pub(crate) async fn try_connect(&self, headers: &[(&str, &str)]) -> Result<Client, u16> {
        Client::try_connect_url(&self.ws_url(), headers).await
    }

    /// Opens a WebSocket (no `hello` yet).
    pub(crate) async fn connect(&self) -> Client {
        Client::connect_url(&self.ws_url()).await
    }

    /// Opens a WebSocket and says `hello` as a new user.
    pub(crate) async fn login(&self, name: &str) -> Client {
        let mut client = self.connect().await;
        client.hello(name).await;
        client
    }

    /// Opens a WebSocket and says `hello` with `token`: the same user again.
    pub(crate) async fn login_as(&self, name: &str, token: &str) -> Client {
        let mut client = self.connect().await;
        client.hello_with_token(name, token).await;
        client
    }

    /// `GET path` over a fresh TCP connection: (status, body).
    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        tokio::time::timeout(BOUND, http_get(self.addr, path))
            .await
            .unwrap_or_else(|_| panic!("GET {path}: no answer in time"))
    }

    /// The value of an unlabelled counter or gauge in `/metrics` (0 when it
    /// was never recorded).
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics");
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map(|value| value.trim().parse::<f64>().expect("metric value"))
            .next()
            .unwrap_or(0.0)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `GET path` on `addr` over a fresh TCP connection: (status, body).
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[]).await
}

/// `method path` (no body) with extra `headers` on `addr` over a fresh TCP
/// connection: (status, body).
pub(crate) async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (status, _, body) = http_call(addr, method, path, headers, None).await;
    (status, body)
}

/// `method path` with extra `headers` and a JSON `body` on `addr` over a
/// fresh TCP connection: (status, response head lowercased, body).
pub(crate) async fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let body = body.unwrap_or("");
    let kind = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{kind}Content-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status");
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, String::from_utf8(body).expect("UTF-8 body"))
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = std::str::from_utf8(&raw[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// What a client reads next, control frames aside.
#[derive(Debug)]
pub(crate) enum Incoming {
    Frame(ServerFrame),
    /// A close frame, with its code if it carried one.
    Close(Option<u16>),
    /// The stream ended (or failed) without a close frame.
    Ended,
}

/// The fields of a `joined` frame.
#[derive(Debug, Clone)]
pub(crate) struct Joined {
    pub(crate) room: String,
    pub(crate) epoch: String,
    pub(crate) offset: u64,
    pub(crate) members: Vec<User>,
    pub(crate) history: Vec<ChatMessage>,
    pub(crate) recovered: bool,
}

impl Joined {
    /// Where this join left the client: what it passes as `since` later.
    pub(crate) fn since(&self) -> Since {
        Since {
            epoch: self.epoch.clone(),
            offset: self.offset,
        }
    }
}

/// What [`Client::sync`] saw.
#[derive(Debug)]
pub(crate) struct Synced {
    /// The marker message's client id; other members wait for it with
    /// [`Client::frames_until_message`].
    pub(crate) marker: String,
    /// The marker message's offset.
    pub(crate) offset: u64,
    /// Every frame that reached this client before the marker, its ack aside.
    pub(crate) before: Vec<ServerFrame>,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One WebSocket client.
pub(crate) struct Client {
    ws: Ws,
    user: Option<User>,
    token: Option<String>,
    server: Option<String>,
}

impl Client {
    /// Opens a WebSocket to `url` with extra request headers; `Err` holds
    /// the HTTP status of a refused upgrade.
    pub(crate) async fn try_connect_url(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, u16> {
        let mut request = url.into_client_request().expect("request");
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        // No Nagle: tests wait on many small request/answer round trips.
        let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
        let connected = tokio::time::timeout(BOUND, connect)
            .await
            .expect("no upgrade answer in time");
        match connected {
            Ok((ws, _)) => Ok(Client {
                ws,
                user: None,
                token: None,
                server: None,
            }),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("connecting to {url}: {e}"),
        }
    }

    /// Opens a WebSocket to `url` (no `hello` yet).
    pub(crate) async fn connect_url(url: &str) -> Client {
        Client::try_connect_url(url, &[])
            .await
            .unwrap_or_else(|status| panic!("upgrade refused with HTTP {status}"))
    }

    /// The user from `welcome`.
    pub(crate) fn user(&self) -> &User {
        self.user.as_ref().expect("hello was said")
    }

    /// The session token from `welcome`.
    pub(crate) fn token(&self) -> &str {
        self.token.as_deref().expect("hello was said")
    }

    /// The instance name from `welcome`.
    pub(crate) fn server(&self) -> &str {
        self.server.as_deref().expect("hello was said")
    }

    /// Says `hello` as a new user; returns the `welcome`'s user and token.
    pub(crate) async fn hello(&mut self, name: &str) -> (User, String) {
        self.send_hello(name, None).await
    }

    /// Says `hello` with a session token.
    pub(crate) async fn hello_with_token(&mut self, name: &str, token: &str) -> (User, String) {
        self.send_hello(name, Some(token)).await
    }

    /// Says `hello` with a host-app token (PROTOCOL.md "Host identity"):
    /// the `welcome` must name the token's user and hand the token back.
    pub(crate) async fn hello_host(&mut self, name: &str, jwt: &str) -> User {
        self.send(&ClientFrame::Hello {
            name: name.to_owned(),
            token: Some(jwt.to_owned()),
        })
        .await;
        match self.recv().await {
            ServerFrame::Welcome {
                user,
                token,
                server,
                ..
            } => {
                assert_eq!(token, jwt, "welcome hands the host token back");
                self.user = Some(user.clone());
                self.token = Some(token);
                self.server = Some(server);
                user
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    async fn send_hello(&mut self, name: &str, token: Option<&str>) -> (User, String) {
        self.send(&ClientFrame::Hello {
            name: name.to_owned(),
            token: token.map(str::to_owned),
        })
        .await;
        match self.recv().await {
            ServerFrame::Welcome {
                protocol,
                user,
                token,
                server,
            } => {
                assert_eq!(protocol, protocol::PROTOCOL_VERSION);
                assert!(!server.is_empty(), "welcome names the instance");
                assert!(user.id.starts_with("u_"), "user id {:?}", user.id);
                self.user = Some(user.clone());
                self.token = Some(token.clone());
                self.server = Some(server);
                (user, token)
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Sends one frame.
    pub(crate) async fn send(&mut self, frame: &ClientFrame) {
        self.send_raw(Message::text(frame.to_json())).await;
    }

    /// Sends text as is: for deliberately malformed frames only.
    pub(crate) async fn send_text(&mut self, text: &str) {
        self.send_raw(Message::text(text)).await;
    }

    /// Sends one WebSocket message as is.
    pub(crate) async fn send_raw(&mut self, msg: Message) {
        tokio::time::timeout(BOUND, self.ws.send(msg))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    /// The next frame, close or end of stream; pings and pongs are skipped.
    pub(crate) async fn next(&mut self) -> Incoming {
        self.next_within(BOUND).await
    }

    /// Like [`Client::next`], waiting up to `bound` (for events that follow
    /// reconnect backoffs or expiries).
    pub(crate) async fn next_within(&mut self, bound: Duration) -> Incoming {
        // One deadline for the whole wait: server pings must not extend it.
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("nothing from the server in time");
            return match next {
                Some(Ok(Message::Text(text))) => Incoming::Frame(
                    ServerFrame::from_json(&text)
                        .unwrap_or_else(|e| panic!("server sent an invalid frame ({e}): {text}")),
                ),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(frame))) => Incoming::Close(frame.map(|f| f.code.into())),
                Some(Ok(other)) => panic!("server sent a non-text message: {other:?}"),
                Some(Err(_)) | None => Incoming::Ended,
            };
        }
    }

    /// The next frame; anything else fails the test.
    pub(crate) async fn recv(&mut self) -> ServerFrame {
        match self.next().await {
            Incoming::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Asserts the next frame is a `message` and returns it.
    pub(crate) async fn expect_message(&mut self) -> ChatMessage {
        match self.recv().await {
            ServerFrame::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next frame, waiting up to `bound`.
    pub(crate) async fn recv_slow(&mut self, bound: Duration) -> ServerFrame {
        match self.next_within(bound).await {
            Incoming::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Reads until the `ack` of `id`, skipping room traffic (messages,
    /// presence, typing) a busy room interleaves; returns the offset.
    pub(crate) async fn expect_ack_skipping(&mut self, id: &str) -> u64 {
        loop {
            match self.recv().await {
                ServerFrame::Ack {
                    id: acked, offset, ..
                } if acked == id => return offset,
                ServerFrame::Message(_)
                | ServerFrame::Presence { .. }
                | ServerFrame::Typing { .. } => {}
                other => panic!("expected the ack of {id:?}, got {other:?}"),
            }
        }
    }

    /// Reads until an `error`, skipping room traffic, and asserts its code and id.
    pub(crate) async fn expect_error_skipping(&mut self, code: ErrorCode, id: Option<&str>) {
        loop {
            match self.recv().await {
                ServerFrame::Error {
                    code: got,
                    id: got_id,
                    ..
                } => {
                    assert_eq!((got, got_id.as_deref()), (code, id));
                    return;
                }
                ServerFrame::Message(_)
                | ServerFrame::Presence { .. }
                | ServerFrame::Typing { .. } => {}
                other => panic!("expected error {code}, got {other:?}"),
            }
        }
    }

    /// Asserts the next frame is the `ack` of `id` and returns its offset.
    pub(crate) async fn expect_ack(&mut self, id: &str) -> u64 {
        match self.recv().await {
            ServerFrame::Ack {
                id: acked, offset, ..
            } if acked == id => offset,
            other => panic!("expected the ack of {id:?}, got {other:?}"),
        }
    }

    /// Asserts the next frame is an `error` with `code` and `id`.
    pub(crate) async fn expect_error(&mut self, code: ErrorCode, id: Option<&str>) {
        match self.recv().await {
            ServerFrame::Error {
                code: got,
                id: got_id,
                message,
            } => {
                assert_eq!((got, got_id.as_deref()), (code, id), "error: {message}");
                assert!(!message.is_empty(), "errors carry a human message");
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Asserts the server closes the socket next, and returns the close code.
    pub(crate) async fn expect_close(&mut self) -> u16 {
        match self.next().await {
            Incoming::Close(Some(code)) => code,
            other => panic!("expected a close frame with a code, got {other:?}"),
        }
    }

    /// Reads every frame up to the server's close frame: (frames, code).
    pub(crate) async fn frames_until_close(&mut self) -> (Vec<ServerFrame>, u16) {
        let mut frames = Vec::new();
        loop {
            match self.next().await {
                Incoming::Frame(frame) => frames.push(frame),
                Incoming::Close(Some(code)) => return (frames, code),
                other => panic!("expected frames then a close code, got {other:?}"),
            }
        }
    }

    /// Sends `ping` and asserts the very next frame is `pong`: the socket is
    /// open and no direct reply was pending.
    pub(crate) async fn ping(&mut self) {
        self.send(&ClientFrame::Ping).await;
        assert_eq!(self.recv().await, ServerFrame::Pong);
    }

    /// Joins `room` without `since`.
    pub(crate) async fn join(&mut self, room: &str) -> Joined {
        self.join_with(room, None).await
    }

    /// Joins `room` recovering from `since`.
    pub(crate) async fn join_since(&mut self, room: &str, since: Since) -> Joined {
        self.join_with(room, Some(since)).await
    }

    async fn join_with(&mut self, room: &str, since: Option<Since>) -> Joined {
        self.send(&ClientFrame::Join {
            room: room.to_owned(),
            since,
        })
        .await;
        match self.recv().await {
            ServerFrame::Joined {
                room,
                epoch,
                offset,
                members,
                history,
                recovered,
            } => Joined {
                room,
                epoch,
                offset,
                members,
                history,
                recovered,
            },
            other => panic!("expected joined, got {other:?}"),
        }
    }

    /// Sends `leave` and asserts the answer is `left`.
    pub(crate) async fn leave(&mut self, room: &str) {
        self.send(&ClientFrame::Leave {
            room: room.to_owned(),
        })
        .await;
        assert_eq!(
            self.recv().await,
            ServerFrame::Left {
                room: room.to_owned()
            }
        );
    }

    /// Sends a `send` frame without waiting for anything.
    pub(crate) async fn submit(&mut self, room: &str, id: &str, body: &str) {
        self.send(&ClientFrame::Send {
            room: room.to_owned(),
            id: id.to_owned(),
            body: body.to_owned(),
        })
        .await;
    }

    /// Sends a message and asserts the next frame is its `ack`; returns the
    /// acked offset. The message itself arrives later, through the room.
    pub(crate) async fn send_acked(&mut self, room: &str, id: &str, body: &str) -> u64 {
        self.submit(room, id, body).await;
        self.expect_ack(id).await
    }

    /// Sends a message and reads its ack and its own delivery, which must be
    /// the next two frames (nothing else pending for this client).
    pub(crate) async fn post(&mut self, room: &str, body: &str) -> ChatMessage {
        let id = unique_id("post");
        let offset = self.send_acked(room, &id, body).await;
        let message = self.expect_message().await;
        assert_eq!(
            (
                message.room.as_str(),
                message.offset,
                message.client_id.as_str()
            ),
            (room, offset, id.as_str()),
            "the sender receives its own message at the acked offset"
        );
        assert_eq!(&message.from, self.user());
        message
    }

    /// Posts `n` messages at once (without waiting in between) and returns
    /// them as delivered; they must be the only frames coming.
    pub(crate) async fn post_many(&mut self, room: &str, n: usize) -> Vec<ChatMessage> {
        let ids: Vec<String> = (0..n).map(|_| unique_id("post")).collect();
        for (i, id) in ids.iter().enumerate() {
            self.submit(room, id, &format!("message {i}")).await;
        }
        let (acks, messages) = self.acks_and_messages(n, n).await;
        let acked: Vec<(&str, u64)> = acks.iter().map(|(id, o)| (id.as_str(), *o)).collect();
        let delivered: Vec<(&str, u64)> = messages
            .iter()
            .map(|m| (m.client_id.as_str(), m.offset))
            .collect();
        assert_eq!(
            acked, delivered,
            "acked in send order, delivered at the acked offsets"
        );
        assert_eq!(
            acked.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            ids.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(messages.iter().all(|m| &m.from == self.user()));
        messages
    }

    /// Reads exactly `acks` acks and `messages` messages, in whatever
    /// interleaving they come; any other frame fails the test.
    pub(crate) async fn acks_and_messages(
        &mut self,
        acks: usize,
        messages: usize,
    ) -> (Vec<(String, u64)>, Vec<ChatMessage>) {
        let mut got_acks = Vec::with_capacity(acks);
        let mut got_messages = Vec::with_capacity(messages);
        while got_acks.len() < acks || got_messages.len() < messages {
            match self.recv().await {
                ServerFrame::Ack { id, offset, .. } if got_acks.len() < acks => {
                    got_acks.push((id, offset));
                }
                ServerFrame::Message(m) if got_messages.len() < messages => got_messages.push(m),
                other => panic!(
                    "expected {acks} acks and {messages} messages, got {other:?} after {} and {}",
                    got_acks.len(),
                    got_messages.len()
                ),
            }
        }
        (got_acks, got_messages)
    }

    /// Reads exactly `n` messages; any other frame fails the test.
    pub(crate) async fn messages(&mut self, n: usize) -> Vec<ChatMessage> {
        self.acks_and_messages(0, n).await.1
    }

    /// Publishes a marker message to `room` and returns what arrived before
    /// it. Every room event queued for this client before the marker was
    /// published comes first, so `before` is empty exactly when nothing was.
    /// Adds one message to the room.
    pub(crate) async fn sync(&mut self, room: &str) -> Synced {
        let marker = unique_id("sync");
        self.submit(room, &marker, "sync").await;
        let mut before = Vec::new();
        let mut acked = false;
        loop {
            match self.recv().await {
                ServerFrame::Ack { id, .. } if id == marker && !acked => acked = true,
                ServerFrame::Message(m) if m.client_id == marker => {
                    assert!(acked, "the marker's ack comes before its delivery");
                    return Synced {
                        marker,
                        offset: m.offset,
                        before,
                    };
                }
                other => before.push(other),
            }
        }
    }

    /// Every frame before the message with client id `marker` (which is
    /// consumed).
    pub(crate) async fn frames_until_message(&mut self, marker: &str) -> Vec<ServerFrame> {
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                ServerFrame::Message(m) if m.client_id == marker => return before,
                other => before.push(other),
            }
        }
    }

    /// Closes the socket from this side and waits until the server has
    /// dropped it, which it does only after leaving every room.
    pub(crate) async fn close(mut self) {
        tokio::time::timeout(BOUND, self.ws.close(None))
            .await
            .expect("close timed out")
            .expect("close failed");
        // Frames still in flight and the server's close reply, if its
        // transport sends one, are skipped.
        while !matches!(self.next().await, Incoming::Ended) {}
    }
}
