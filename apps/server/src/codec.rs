//! Codec: one WebSocket message in, a [`ClientFrame`] or a typed error
//! out; a [`ServerFrame`] in, the text of one WebSocket message out. Pure,
//! no socket: size limits and JSON rules are checked here and unit-tested
//! on plain values (the connection task only acts on the result).

use protocol::limits::MAX_CLIENT_FRAME_BYTES;
use protocol::{ClientFrame, ServerFrame};
use tungstenite::{Bytes, Message};

/// Encodes a server frame as one whole WebSocket text frame, header and
/// JSON payload, ready for the socket. The hub calls it once per room
/// message and shares the bytes with every member: a delivery is then one
/// write of these bytes, with no per-socket framing or copy.
pub(crate) fn encode(frame: &ServerFrame) -> Wire {
    // Sized for the body: a message frame is about 200 bytes besides its
    // body and author name, so a longer body outgrew a fixed 256 and was
    // copied into a larger buffer, once per message and instance.
    let hint = match frame {
        ServerFrame::Message(m) => m.body.len() + m.from.name.len() + m.room.len() + 224,
        _ => 256,
    };
    let mut buf = Vec::with_capacity(MAX_HEADER + hint);
    buf.extend_from_slice(&[0; MAX_HEADER]);
    serde_json::to_writer(&mut buf, frame).expect("server frames always serialise");
    Wire::framing(buf, OPCODE_TEXT)
}

/// Longest header of a frame the server writes: RFC 6455 §5.2, a 64-bit
/// payload length and no mask (a server never masks).
const MAX_HEADER: usize = 10;
/// The first byte of an unfragmented text frame: FIN and opcode 0x1.
const OPCODE_TEXT: u8 = 0x81;
/// The first byte of a ping (FIN and opcode 0x9).
const OPCODE_PING: u8 = 0x89;
/// The first byte of a close (FIN and opcode 0x8).
const OPCODE_CLOSE: u8 = 0x88;

/// One whole server-to-client WebSocket frame (RFC 6455 §5.2: FIN set,
/// unmasked, the shortest length encoding), as shared bytes: cloning it
/// shares the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wire(Bytes);

impl Wire {
    /// Frames `buf[MAX_HEADER..]` as the payload of a frame whose first
    /// byte is `first`, writing the header into the reserved bytes before it.
    fn framing(mut buf: Vec<u8>, first: u8) -> Wire {
        let len = buf.len() - MAX_HEADER;
        let mut header = [0u8; MAX_HEADER];
        header[0] = first;
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if let Ok(short) = u16::try_from(len) {
            header[1] = 126;
            header[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        let start = MAX_HEADER - header_len;
        buf[start..MAX_HEADER].copy_from_slice(&header[..header_len]);
        Wire(Bytes::from(buf).slice(start..))
    }

    /// A ping with an empty payload.
    pub(crate) fn ping() -> Wire {
        Wire(Bytes::from_static(&[OPCODE_PING, 0]))
    }

    /// A close frame with `code` and `reason` (RFC 6455 §5.5.1; a reason
    /// longer than the 123 bytes a control frame has room for is cut at a
    /// character boundary).
    pub(crate) fn close(code: u16, reason: &str) -> Wire {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = Vec::with_capacity(MAX_HEADER + 2 + end);
        buf.extend_from_slice(&[0; MAX_HEADER]);
        buf.extend_from_slice(&code.to_be_bytes());
        buf.extend_from_slice(&reason.as_bytes()[..end]);
        Wire::framing(buf, OPCODE_CLOSE)
    }

    /// The whole frame, as written to the socket.
    pub(crate) fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Bytes of the payload (the JSON of a text frame).
    pub(crate) fn payload_len(&self) -> usize {
        self.0.len() - self.header_len()
    }

    /// The payload of a text frame, as text.
    #[cfg(test)]
    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.0[self.header_len()..]).expect("text frames hold UTF-8")
    }

    fn header_len(&self) -> usize {
        match self.0[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        }
    }
}

/// Bytes of `value`'s JSON, counted without building it (the byte bound
/// of replies weighs each message this way).
pub(crate) fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("protocol types serialise");
    count.0
}

/// What one incoming WebSocket message is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Frame(ClientFrame),
    /// A control message (ping/pong) or a close: nothing for the protocol.
    Control,
    Close,
}

/// Why an incoming message is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Over the 64 KiB limit: the socket is closed with 1009.
    #[error("frame of {0} bytes is over the {MAX_CLIENT_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not a frame of the protocol: answered `bad_frame`, with the `id` of a
    /// `send` when one could be read.
    #[error("{reason}")]
    BadFrame { reason: String, id: Option<String> },
}

/// Decodes one WebSocket message.
pub(crate) fn decode(msg: &Message) -> Result<Decoded, DecodeError> {
    match msg {
        Message::Text(text) => decode_text(text.as_str()).map(Decoded::Frame),
        Message::Binary(bytes) => {
            if bytes.len() > MAX_CLIENT_FRAME_BYTES {
                return Err(DecodeError::TooLarge(bytes.len()));
            }
            Err(DecodeError::BadFrame {
                reason: "frames are JSON text messages, not binary".into(),
                id: None,
            })
        }
        // Raw frames are only ever written; a read yields whole messages.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(Decoded::Control),
        Message::Close(_) => Ok(Decoded::Close),
    }
}

/// Decodes one text frame.
pub(crate) fn decode_text(text: &str) -> Result<ClientFrame, DecodeError> {
    if text.len() > MAX_CLIENT_FRAME_BYTES {
        return Err(DecodeError::TooLarge(text.len()));
    }
    ClientFrame::from_json(text).map_err(|e| DecodeError::BadFrame {
        reason: describe(text, &e),
        id: send_id(text),
    })
}

/// Whether a frame serde refused is a `hello` whose `name` is what cannot
/// be read (a lone surrogate escape such as `"ab\ud83d"`, a number): the
/// frame parses with the name skipped, not with it read as a string. Such
/// a hello is answered `bad_name`, not `unauthorized`.
pub(crate) fn hello_with_bad_name(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Skipped {
        #[serde(rename = "type")]
        kind: String,
        #[allow(dead_code)]
        name: serde::de::IgnoredAny,
    }
    #[derive(serde::Deserialize)]
    struct Read {
        #[allow(dead_code)]
        name: String,
    }
    serde_json::from_str::<Skipped>(text).is_ok_and(|p| p.kind == "hello")
        && serde_json::from_str::<Read>(text).is_err()
}

/// A human reason for a frame serde refused.
fn describe(text: &str, err: &serde_json::Error) -> String {
    #[derive(serde::Deserialize)]
    struct Tag {
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
    }
    match serde_json::from_str::<Tag>(text) {
        Err(_) => format!("not a JSON object: {err}"),
        Ok(Tag { kind: None }) => "the frame has no \"type\"".to_owned(),
        Ok(Tag {
            kind: Some(serde_json::Value::String(t)),
        }) if !protocol::frames::CLIENT_FRAME_TYPES.contains(&t.as_str()) => {
            format!("unknown frame type {t:?}")
        }
        Ok(_) => format!("invalid frame: {err}"),
    }
}

/// The `id` of a malformed `send`, so its error can name the message.
fn send_id(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct SendProbe {
        #[serde(rename = "type")]
        kind: String,
        id: String,
    }
    serde_json::from_str::<SendProbe>(text)
        .ok()
        .filter(|p| p.kind == "send")
        .map(|p| p.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
    use tungstenite::protocol::frame::FrameHeader;

    /// tungstenite's own parser (what a Rust client reads with) reads the
    /// header: FIN, opcode, no mask, and the payload length, at each length
    /// encoding's edges (RFC 6455 §5.2: 7 bits up to 125, 16 up to 65,535,
    /// 64 beyond).
    fn parsed(wire: &Wire) -> (FrameHeader, usize) {
        let mut cursor = std::io::Cursor::new(wire.bytes().as_ref());
        let (header, len) = FrameHeader::parse(&mut cursor)
            .expect("a valid header")
            .expect("a whole header");
        assert_eq!(
            cursor.position() as usize + len as usize,
            wire.bytes().len(),
            "the header's length is the payload's"
        );
        (header, len as usize)
    }

    #[test]
    fn frames_are_whole_unmasked_and_use_the_shortest_length_encoding() {
        for body_len in [0, 50, 125, 126, 65_535, 65_536, 70_000] {
            let frame = ServerFrame::error(
                protocol::ErrorCode::BadFrame,
                "é".repeat(body_len / 2),
                None,
            );
            let wire = encode(&frame);
            let json = frame.to_json();
            assert_eq!(wire.text(), json);
            assert_eq!(wire.payload_len(), json.len());
            let (header, len) = parsed(&wire);
            assert!(header.is_final);
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert_eq!(header.mask, None);
            assert_eq!(len, json.len());
            let header_len = wire.bytes().len() - json.len();
            let expected = match json.len() {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            assert_eq!(header_len, expected, "payload of {} bytes", json.len());
        }
    }

    #[test]
    fn pings_and_closes_are_control_frames_with_the_code_and_a_cut_reason() {
        let (header, len) = parsed(&Wire::ping());
        assert_eq!(header.opcode, OpCode::Control(Control::Ping));
        assert_eq!(len, 0);
        let close = Wire::close(1012, "server shutting down");
        let (header, len) = parsed(&close);
        assert_eq!(header.opcode, OpCode::Control(Control::Close));
        assert_eq!(&close.bytes()[2..4], &1012u16.to_be_bytes());
        assert_eq!(&close.bytes()[4..], b"server shutting down");
        assert_eq!(len, 2 + "server shutting down".len());
        // A control frame's payload is at most 125 bytes; 'é' is two bytes,
        // so 123 falls inside one and the cut moves back to 122.
        let long = Wire::close(1000, &"é".repeat(100));
        let (_, len) = parsed(&long);
        assert_eq!(len, 2 + 122);
        assert!(std::str::from_utf8(&long.bytes()[4..]).is_ok());
    }

    #[test]
    fn text_frame_decodes() {
        let msg = Message::Text(r#"{"type":"ping"}"#.into());
        assert_eq!(decode(&msg), Ok(Decoded::Frame(ClientFrame::Ping)));
    }

    #[test]
    fn frame_at_the_limit_is_read_and_one_byte_more_is_too_large() {
        let pad = |n: usize| {
            let base = r#"{"type":"ping","x":""}"#.len();
            format!(r#"{{"type":"ping","x":"{}"}}"#, "a".repeat(n - base))
        };
        let at = pad(MAX_CLIENT_FRAME_BYTES);
        assert_eq!(at.len(), MAX_CLIENT_FRAME_BYTES);
        assert_eq!(decode_text(&at), Ok(ClientFrame::Ping));
        let over = pad(MAX_CLIENT_FRAME_BYTES + 1);
        assert_eq!(
            decode_text(&over),
            Err(DecodeError::TooLarge(MAX_CLIENT_FRAME_BYTES + 1))
        );
    }

    #[test]
    fn binary_is_a_bad_frame_and_oversized_binary_too_large() {
        let small = Message::Binary(vec![1, 2, 3].into());
        assert!(matches!(decode(&small), Err(DecodeError::BadFrame { .. })));
        let big = Message::Binary(vec![0; MAX_CLIENT_FRAME_BYTES + 1].into());
        assert_eq!(
            decode(&big),
            Err(DecodeError::TooLarge(MAX_CLIENT_FRAME_BYTES + 1))
        );
    }

    #[test]
    fn a_hello_whose_name_cannot_be_read_is_told_apart() {
        assert!(hello_with_bad_name(r#"{"type":"hello","name":"ab\ud83d"}"#));
        assert!(hello_with_bad_name(r#"{"type":"hello","name":"\udc00x"}"#));
        assert!(hello_with_bad_name(r#"{"type":"hello","name":7}"#));
        assert!(!hello_with_bad_name(r#"{"type":"hello","name":"ab"}"#));
        assert!(!hello_with_bad_name(r#"{"type":"hello"}"#));
        assert!(!hello_with_bad_name(r#"{"type":"join","name":7}"#));
        assert!(!hello_with_bad_name("not json"));
    }

    #[test]
    fn unknown_type_names_the_type() {
        let err = decode_text(r#"{"type":"dance"}"#).unwrap_err();
        assert_eq!(
            err,
            DecodeError::BadFrame {
                reason: "unknown frame type \"dance\"".into(),
                id: None
            }
        );
    }

    #[test]
    fn garbage_and_missing_type_are_bad_frames() {
        for text in ["not json", "[1,2]", "{}", r#"{"room":"a"}"#] {
            assert!(
                matches!(
                    decode_text(text),
                    Err(DecodeError::BadFrame { id: None, .. })
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_send_keeps_its_id() {
        let err = decode_text(r#"{"type":"send","id":"c-1","room":"a"}"#).unwrap_err();
        assert!(matches!(err, DecodeError::BadFrame { id: Some(ref id), .. } if id == "c-1"));
    }

    #[test]
    fn control_and_close_are_not_frames() {
        assert_eq!(decode(&Message::Ping(vec![].into())), Ok(Decoded::Control));
        assert_eq!(decode(&Message::Pong(vec![].into())), Ok(Decoded::Control));
        assert_eq!(decode(&Message::Close(None)), Ok(Decoded::Close));
    }
}
