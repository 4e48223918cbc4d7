//! The WebSocket transport seen from the wire: the upgrade's answers, and
//! long server messages written as frames of at most 1 KiB (so a socket's
//! write buffer stays small), which a client reassembles.

use crate::support::{unthrottled, TestServer, BOUND};
use protocol::{ClientFrame, ServerFrame};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A WebSocket client that sees frames, not messages: it does the
/// handshake by hand and parses each frame header.
struct RawClient {
    stream: TcpStream,
}

/// One frame as it came off the wire.
struct RawFrame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl RawClient {
    async fn connect(addr: SocketAddr) -> RawClient {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        // Read the response head byte by byte: the first frame may follow it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("response head"));
        }
        let head = String::from_utf8(head).expect("UTF-8 head");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // The accept value of RFC 6455 §1.3's example key.
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        RawClient { stream }
    }

    /// Sends a masked text frame (clients must mask; a zero key is valid).
    async fn send(&mut self, frame: &ClientFrame) {
        let payload = frame.to_json().into_bytes();
        let mut wire = vec![0x81];
        match payload.len() {
            n if n < 126 => wire.push(0x80 | n as u8),
            n => {
                wire.push(0x80 | 126);
                wire.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        wire.extend_from_slice(&[0, 0, 0, 0]);
        wire.extend_from_slice(&payload);
        self.stream.write_all(&wire).await.expect("write frame");
    }

    async fn frame(&mut self) -> RawFrame {
        tokio::time::timeout(BOUND, self.read_frame())
            .await
            .expect("a frame in time")
    }

    async fn read_frame(&mut self) -> RawFrame {
        let s = &mut self.stream;
        let b0 = s.read_u8().await.expect("frame header");
        let b1 = s.read_u8().await.expect("frame header");
        assert_eq!(b1 & 0x80, 0, "server frames are not masked");
        let len = match b1 & 0x7f {
            126 => u64::from(s.read_u16().await.expect("length")),
            127 => s.read_u64().await.expect("length"),
            n => u64::from(n),
        };
        let mut payload = vec![0; len as usize];
        s.read_exact(&mut payload).await.expect("payload");
        RawFrame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            payload,
        }
    }

    /// Reads frames until a whole text message; returns it with the sizes
    /// of the frames it came in.
    async fn message(&mut self) -> (ServerFrame, Vec<usize>) {
        let mut sizes = Vec::new();
        let mut text = Vec::new();
        loop {
            let frame = self.frame().await;
            if frame.opcode == 0x9 || frame.opcode == 0xA {
                continue; // ping/pong between fragments is allowed
            }
            let expected = if sizes.is_empty() { 0x1 } else { 0x0 };
            assert_eq!(frame.opcode, expected, "text, then continuations");
            sizes.push(frame.payload.len());
            text.extend_from_slice(&frame.payload);
            if frame.fin {
                let text = String::from_utf8(text).expect("a text message is UTF-8");
                return (
                    ServerFrame::from_json(&text).expect("a server frame"),
                    sizes,
                );
            }
        }
    }
}

#[tokio::test]
async fn a_long_message_comes_as_one_whole_frame_with_the_16_bit_length() {
    let server = TestServer::start(unthrottled()).await;
    let mut raw = RawClient::connect(server.addr).await;
    raw.send(&ClientFrame::Hello {
        name: "raw".into(),
        token: None,
    })
    .await;
    assert!(matches!(raw.message().await.0, ServerFrame::Welcome { .. }));
    raw.send(&ClientFrame::Join {
        room: "wire".into(),
        since: None,
    })
    .await;
    assert!(matches!(raw.message().await.0, ServerFrame::Joined { .. }));

    let mut alice = server.login("alice").await;
    alice.join("wire").await;
    assert!(matches!(
        raw.message().await.0,
        ServerFrame::Presence { .. }
    ));
    // 4000 two-byte characters: 8000 bytes, cut at character boundaries.
    let body = format!("{}!", "é".repeat(3999));
    alice.post("wire", &body).await;

    let (frame, sizes) = raw.message().await;
    let ServerFrame::Message(message) = frame else {
        panic!("expected the message, got {frame:?}");
    };
    assert_eq!(message.body, body);
    // Encoded once for every member as one frame (RFC 6455 §5.2: a
    // payload over 125 bytes and under 64 KiB has a 16-bit length, which
    // read_frame checked against the payload it read).
    assert_eq!(sizes.len(), 1, "one frame: {sizes:?}");
    assert!(sizes[0] > 8000, "{sizes:?}");

    // A short message stays one frame.
    alice.post("wire", "hi").await;
    let (frame, sizes) = raw.message().await;
    assert!(matches!(frame, ServerFrame::Message(m) if m.body == "hi"));
    assert_eq!(sizes.len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_that_is_not_an_upgrade_is_told_so() {
    let server = TestServer::start(unthrottled()).await;
    let (status, body) = server.get("/ws").await;
    assert_eq!(status, 426, "{body}");
    assert!(body.contains("WebSocket upgrade"), "{body}");
    server.stop().await.unwrap();
}
