//! Integration tests of the `protocol` crate against the wire contract
//! (PROTOCOL.md, protocol v1). One test binary; the modules split it by topic:
//!
//! - `examples`: every JSON example of the contract parses into the expected
//!   value and serialises back to the same JSON.
//! - `serde_rules`: unknown fields, unknown or missing `type`, missing and
//!   mistyped fields, omitted optional fields.
//! - `rules`: the value rules of `protocol::validate` at their edges, and the
//!   error code each refusal maps to.
//! - `codes`: error codes, close codes and frame `type` tags.
//! - `limits`: the documented limits.

mod codes;
mod examples;
mod limits;
mod rules;
mod serde_rules;

use protocol::{ChatMessage, ClientFrame, ServerFrame, User};
use serde_json::Value;

/// Parses a JSON literal written by a test; panics on a typo in the test.
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON in test: {e}: {text}"))
}

/// A user object with the given id and name.
fn user(id: &str, name: &str) -> User {
    User {
        id: id.to_owned(),
        name: name.to_owned(),
    }
}

/// The message of the `message` example of PROTOCOL.md, at `offset`.
fn message_at(offset: u64) -> ChatMessage {
    ChatMessage {
        room: "general".to_owned(),
        offset,
        id: "m_…".to_owned(),
        client_id: "c-17".to_owned(),
        from: user("u_…", "alice"),
        body: "hi".to_owned(),
        ts: 1_763_800_000_000,
    }
}

/// Checks one client frame example both ways: `text` parses (with
/// `ClientFrame::from_json`) into `expected`, and `expected` serialises (with
/// `to_json`) to JSON equal to `text`. Also checks that `kind()` names the tag.
fn assert_client_example(text: &str, expected: ClientFrame) {
    let parsed = ClientFrame::from_json(text)
        .unwrap_or_else(|e| panic!("client example does not parse: {e}: {text}"));
    assert_eq!(parsed, expected, "parsed value of {text}");
    let back = json(&expected.to_json());
    assert_eq!(back, json(text), "serialised form of {expected:?}");
    assert_eq!(
        serde_json::to_value(&expected).expect("serialises"),
        back,
        "to_json agrees with serde_json::to_value"
    );
    assert_eq!(back["type"], expected.kind(), "kind() of {expected:?}");
}

/// Checks one server frame example both ways, like [`assert_client_example`].
fn assert_server_example(text: &str, expected: ServerFrame) {
    let parsed = ServerFrame::from_json(text)
        .unwrap_or_else(|e| panic!("server example does not parse: {e}: {text}"));
    assert_eq!(parsed, expected, "parsed value of {text}");
    let back = json(&expected.to_json());
    assert_eq!(back, json(text), "serialised form of {expected:?}");
    assert_eq!(
        serde_json::to_value(&expected).expect("serialises"),
        back,
        "to_json agrees with serde_json::to_value"
    );
    assert_eq!(back["type"], expected.kind(), "kind() of {expected:?}");
}

/// Asserts that `text` is refused as a client frame.
fn assert_client_rejects(text: &str) {
    if let Ok(frame) = ClientFrame::from_json(text) {
        panic!("client frame should be refused: {text} parsed as {frame:?}");
    }
}

/// Asserts that `text` is refused as a server frame.
fn assert_server_rejects(text: &str) {
    if let Ok(frame) = ServerFrame::from_json(text) {
        panic!("server frame should be refused: {text} parsed as {frame:?}");
    }
}
