//! The limits PROTOCOL.md states, as the crate's constants.

use protocol::limits::*;

#[test]
fn value_limits_match_the_contract() {
    assert_eq!(MAX_CLIENT_FRAME_BYTES, 65_536, "64 KiB client frames");
    assert_eq!(NAME_MAX_CHARS, 32, "names: 1–32");
    assert_eq!(ROOM_MAX_CHARS, 64, "room names: 1–64");
    assert_eq!(BODY_MAX_CHARS, 4000, "bodies: 1–4000");
    assert_eq!(CLIENT_ID_MAX_CHARS, 64, "client ids: 1–64");
}

#[test]
fn history_limits_match_the_contract() {
    assert_eq!(DEFAULT_JOIN_HISTORY, 50, "joined.history: default up to 50");
    assert_eq!(DEFAULT_HISTORY_LIMIT, 50, "history limit defaults to 50");
    assert_eq!(MAX_HISTORY_LIMIT, 200, "history limit capped at 200");
    assert_eq!(DEFAULT_MAX_REPLAY, 1000, "replay at most 1000 messages");
}

#[test]
fn rate_and_session_limits_match_the_contract() {
    assert_eq!(DEFAULT_RATE_PER_SEC, 20);
    assert_eq!(DEFAULT_RATE_BURST, 40);
    assert_eq!(BAD_FRAME_LIMIT, 10, "10 bad_frame errors …");
    assert_eq!(BAD_FRAME_WINDOW_SECS, 10, "… within 10 seconds");
    assert_eq!(DEDUPE_WINDOW_SECS, 300, "dedupe for at least 5 minutes");
    assert_eq!(
        DEFAULT_TOKEN_TTL_SECS, 604_800,
        "tokens expire after 7 days"
    );
}

#[test]
fn protocol_version_is_one() {
    assert_eq!(protocol::PROTOCOL_VERSION, 1);
}
