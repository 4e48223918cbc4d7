//! Codec: one WebSocket message in, a [`ClientFrame`] or a typed error
//! out; a [`ServerFrame`] in, the text of one WebSocket message out. Pure,
//! no socket: size limits and JSON rules are checked here and unit-tested
//! on plain values (the connection task only acts on the result).

use protocol::limits::MAX_CLIENT_FRAME_BYTES;
use protocol::{ClientFrame, ServerFrame};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Encodes a server frame as the text of one WebSocket message. The hub
/// calls it once per room message and shares the bytes with every member.
pub(crate) fn encode(frame: &ServerFrame) -> Utf8Bytes {
    Utf8Bytes::from(frame.to_json())
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
