//! The WebSocket transport: the HTTP/1.1 upgrade (RFC 6455 §4.2) on hyper,
//! and writing a text message as frames of bounded size.
//!
//! Why not axum's `WebSocketUpgrade`: its socket hides tungstenite's raw
//! frames. tungstenite formats each frame whole into a write buffer that
//! keeps its largest size for the life of the socket, so one 3 KB `joined`
//! (a member list) cost an idle connection 3 KB for as long as it stayed.
//! Written in fragments of [`FRAGMENT`] bytes, a message of any size leaves
//! at most about two fragments of buffer behind. Browsers and every client
//! library reassemble fragmented messages (RFC 6455 §5.4).
//!
//! Owns nothing past the upgrade: the socket goes to the callback, which is
//! [`crate::connection::serve`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::future::Future;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

/// An upgraded connection.
pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Largest frame the server writes; longer text messages are fragmented.
/// Also the socket's write-buffer threshold (see [`config`]), so a socket
/// keeps at most about two fragments of write buffer.
pub(crate) const FRAGMENT: usize = 1024;

/// Largest WebSocket message the transport reads at all. Frames between the
/// protocol's 64 KiB and this are read, then refused with close 1009 by the
/// codec; beyond it the transport itself gives up on the socket.
const MAX_MESSAGE: usize = 1024 * 1024;

/// Read buffer of each socket. tungstenite allocates it up front (128 KiB
/// by default, which made an idle connection cost ~145 KB); chat frames are
/// small, and the buffer still grows for a large one (up to the 64 KiB
/// limit, tested).
const READ_BUFFER: usize = 1024;

/// The socket settings every connection gets.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(FRAGMENT)
}

/// A valid upgrade request, not yet answered.
pub(crate) struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket upgrade: the status and a reason.
type Refused = (StatusCode, &'static str);

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Upgrade, Refused> {
        let key = check(&parts.method, &parts.headers)?;
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or((
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded",
        ))?;
        Ok(Upgrade { key, on_upgrade })
    }
}

/// Checks the request line and headers of an upgrade; returns its key.
fn check(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, Refused> {
    if method != Method::GET {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade is a GET",
        ));
    }
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "expected a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err((
            StatusCode::BAD_REQUEST,
            "unsupported Sec-WebSocket-Version (13 expected)",
        ));
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => Ok(key.clone()),
        _ => Err((StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key")),
    }
}

impl Upgrade {
    /// Answers 101 and runs `serve` on the socket once hyper hands it over,
    /// as a task of `tracker` (so shutdown waits for it).
    pub(crate) fn on_upgrade<F, Fut>(self, tracker: &TaskTracker, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tracker.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config()),
                    )
                    .await;
                    serve(socket).await;
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (
                    header::SEC_WEBSOCKET_ACCEPT,
                    HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
                ),
            ],
        )
            .into_response()
    }
}

/// Feeds one text message into the socket (not flushed), as frames of at
/// most [`FRAGMENT`] bytes cut at character boundaries. The payload is
/// shared, not copied, until tungstenite writes it.
pub(crate) async fn feed_text(
    socket: &mut Socket,
    text: Utf8Bytes,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    if text.len() <= FRAGMENT {
        return socket.feed(Message::Text(text)).await;
    }
    let bytes = tokio_tungstenite::tungstenite::Bytes::from(text);
    let mut start = 0;
    let mut opcode = OpCode::Data(Data::Text);
    while start < bytes.len() {
        let end = fragment_end(&bytes, start);
        let last = end == bytes.len();
        let frame = Frame::message(bytes.slice(start..end), opcode, last);
        socket.feed(Message::Frame(frame)).await?;
        opcode = OpCode::Data(Data::Continue);
        start = end;
    }
    Ok(())
}

/// End of the fragment starting at `start`: at most [`FRAGMENT`] bytes, not
/// inside a UTF-8 sequence (continuation bytes are `0b10xx_xxxx`).
fn fragment_end(text: &[u8], start: usize) -> usize {
    let mut end = (start + FRAGMENT).min(text.len());
    while end < text.len() && end > start + 1 && (text[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn upgrade_headers() -> Vec<(header::HeaderName, &'static str)> {
        vec![
            (header::CONNECTION, "keep-alive, Upgrade"),
            (header::UPGRADE, "websocket"),
            (header::SEC_WEBSOCKET_VERSION, "13"),
            (header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="),
        ]
    }

    #[test]
    fn a_browser_upgrade_is_accepted_with_its_key() {
        let key = check(&Method::GET, &headers(&upgrade_headers())).unwrap();
        // The example of RFC 6455 §1.3.
        assert_eq!(
            derive_accept_key(key.as_bytes()),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn each_missing_part_is_refused_with_its_reason() {
        assert_eq!(
            check(&Method::POST, &headers(&upgrade_headers()))
                .unwrap_err()
                .0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        for (drop, status) in [
            (header::CONNECTION, StatusCode::UPGRADE_REQUIRED),
            (header::UPGRADE, StatusCode::UPGRADE_REQUIRED),
            (header::SEC_WEBSOCKET_VERSION, StatusCode::BAD_REQUEST),
            (header::SEC_WEBSOCKET_KEY, StatusCode::BAD_REQUEST),
        ] {
            let pairs: Vec<_> = upgrade_headers()
                .into_iter()
                .filter(|(k, _)| *k != drop)
                .collect();
            assert_eq!(
                check(&Method::GET, &headers(&pairs)).unwrap_err().0,
                status,
                "without {drop}"
            );
        }
        let mut old = upgrade_headers();
        old[2].1 = "8";
        assert_eq!(
            check(&Method::GET, &headers(&old)).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn fragments_are_bounded_and_never_split_a_character() {
        // 'é' is two bytes: an odd FRAGMENT boundary falls inside one.
        let text = format!("x{}", "é".repeat(3000));
        let mut start = 0;
        let mut pieces = Vec::new();
        while start < text.len() {
            let end = fragment_end(text.as_bytes(), start);
            assert!(end - start <= FRAGMENT && end > start);
            // Slicing a str panics off a character boundary.
            pieces.push(&text[start..end]);
            start = end;
        }
        assert!(pieces.len() > 1);
        assert_eq!(pieces.concat(), text);
    }
}
