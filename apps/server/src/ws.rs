//! The WebSocket transport: the HTTP/1.1 upgrade (RFC 6455 §4.2) on hyper,
//! and the socket split into its two sides.
//!
//! Reading is tungstenite's (frame parsing, unmasking, reassembly, the
//! pong it owes a ping, the close handshake). Writing is the connection's
//! [`Outbox`]: every frame the server writes is encoded whole once
//! ([`crate::codec::Wire`]) and written with one non-blocking write, by
//! the hub for room frames. tungstenite's own few writes (pongs, the close
//! reply) go through the same outbox, so frames never interleave.
//!
//! Why not axum's `WebSocketUpgrade`: its socket owns the TCP stream, so
//! every write had to go through the connection task and tungstenite's
//! write buffer (a task wake-up and a copy per delivered message).
//!
//! Owns nothing past the upgrade: the socket and its outbox go to the
//! callback, which is [`crate::connection::serve`].

use crate::outbox::Outbox;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Bytes, Message, WebSocket};

/// Largest WebSocket message the transport reads at all. Frames between the
/// protocol's 64 KiB and this are read, then refused with close 1009 by the
/// codec; beyond it the transport itself gives up on the socket.
const MAX_MESSAGE: usize = 1024 * 1024;

/// Read buffer of each socket, and the most one read takes. tungstenite
/// allocates it up front (128 KiB by default, which made an idle connection
/// cost ~145 KB); a chat frame (a `send` of a line of text) fits in one
/// read, and the buffer still grows for a large one (up to the 64 KiB
/// limit, tested), read in pieces of this size.
const READ_BUFFER: usize = 512;

/// The socket settings every connection gets. tungstenite's write buffer
/// holds only its own control frames, handed to the outbox at once.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
}

/// An upgraded connection, as the connection task reads it: a stream of
/// the client's messages (tungstenite's, over the non-blocking socket).
///
/// Why not tokio-tungstenite's `WebSocketStream`: it bridges tungstenite's
/// blocking-style reads to a task with two `Arc`-ed waker proxies per
/// socket, and it would also own the write side. Here the socket is shared
/// with the outbox (`Arc<TcpStream>`: tokio's readiness calls take
/// `&self`), a read is `try_read`, and a `WouldBlock` registers the task
/// with the socket's read readiness.
pub(crate) struct Socket {
    ws: WebSocket<Side>,
}

/// The stream tungstenite is given: it reads the TCP socket (after the
/// bytes hyper had read past the upgrade request, handed to tungstenite
/// first), and what tungstenite writes (its pongs, its close reply) goes to
/// the connection's outbox, after what waits there.
struct Side {
    tcp: Arc<TcpStream>,
    outbox: Arc<Outbox>,
}

impl io::Read for Side {
    /// Never blocks: `WouldBlock` when the socket has nothing. A short read
    /// (fewer bytes than asked, not 0) also clears the socket's read
    /// readiness, as tokio's own `poll_read` does: the socket was drained,
    /// and the next read waits for the next edge instead of a `recvfrom`
    /// that answers `EAGAIN` (one per inbound frame, issue 18's perf
    /// counts). The readiness cleared is the one seen before the read
    /// (`try_io`'s tick), so data arriving after it still wakes the task.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (tcp, len) = (&self.tcp, buf.len());
        let mut short = 0;
        let read = tcp.try_io(Interest::READABLE, || {
            let n = tcp.try_read(buf)?;
            if n > 0 && n < len {
                short = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
            read => read,
        }
    }
}

impl io::Write for Side {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Whole frames: tungstenite hands over its buffer of complete
        // frames, and the outbox takes it all (what the socket does not take
        // waits there, and the connection task flushes it).
        if self.outbox.write(&Bytes::copy_from_slice(buf)) {
            self.outbox.wake();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Socket {
    type Item = Result<Message, tungstenite::Error>;

    /// The next message; `None` once the socket is closed (after the close
    /// handshake, or read again after an error).
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let ws = &mut self.get_mut().ws;
        loop {
            match ws.read() {
                Ok(msg) => return Poll::Ready(Some(Ok(msg))),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing to read: wait for the socket's read readiness
                    // (already set again: read at once).
                    match ws.get_ref().tcp.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Poll::Ready(None)
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
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
    /// Answers 101 and runs `serve` on the socket and its outbox (of
    /// `outbox_capacity` waiting frames) once hyper hands it over, as a
    /// task of `tracker` (so shutdown waits for it).
    pub(crate) fn on_upgrade<F, Fut>(
        self,
        tracker: &TaskTracker,
        outbox_capacity: usize,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Socket, Arc<Outbox>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        let connections = tracker.clone();
        tracker.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => return tracing::debug!(error = %e, "websocket upgrade failed"),
            };
            match split(upgraded, outbox_capacity) {
                // A task of its own: this one's state (the upgrade, the
                // split) would otherwise stay in the allocation every open
                // connection keeps.
                Ok((socket, outbox)) => drop(connections.spawn(serve(socket, outbox))),
                Err(e) => tracing::error!(error = %e, "websocket upgrade failed"),
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

/// The TCP stream under hyper's upgraded connection, as a socket to read
/// and an outbox to write, sharing it. Errors: the connection is not a
/// plain TCP stream (the server accepts nothing else: TLS ends at the
/// proxy).
fn split(
    upgraded: Upgraded,
    outbox_capacity: usize,
) -> Result<(Socket, Arc<Outbox>), &'static str> {
    let parts = upgraded
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| "the upgraded connection is not a TCP stream")?;
    let tcp = Arc::new(parts.io.into_inner());
    let outbox = Outbox::new(outbox_capacity, tcp.clone());
    let side = Side {
        tcp,
        outbox: outbox.clone(),
    };
    // Copied: hyper's bytes are a view of its whole read buffer (8 KiB),
    // which an idle connection would otherwise keep for its life.
    let early = parts.read_buf.to_vec();
    let ws = WebSocket::from_partially_read(side, early, Role::Server, Some(config()));
    Ok((Socket { ws }, outbox))
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
}
