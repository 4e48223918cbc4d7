//! The value rules of `protocol::validate` at their edges, and the error code
//! a server answers each refusal with.
//!
//! Lengths are in Unicode scalar values: the cases use 'é' (2 bytes in UTF-8)
//! and '😀' (4 bytes) so that counting bytes would give a different answer.

use protocol::limits::{BODY_MAX_CHARS, CLIENT_ID_MAX_CHARS, NAME_MAX_CHARS, ROOM_MAX_CHARS};
use protocol::validate::{BodyError, ClientIdError, NameError, RoomError};
use protocol::{Body, ClientId, ErrorCode, Name, RoomName};

/// `n` copies of `c`.
fn rep(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// Control characters (Unicode category Cc) that are not white space, so
/// trimming never removes them.
const NON_SPACE_CONTROLS: [char; 5] = ['\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{9f}'];

/// Control characters that are also white space: trimming removes them at the
/// edges, but inside a value they are control characters.
const SPACE_CONTROLS: [char; 4] = ['\r', '\u{85}', '\u{b}', '\u{c}'];

// --- Name ----------------------------------------------------------------------

fn name_ok(raw: &str) -> String {
    Name::parse(raw)
        .unwrap_or_else(|e| panic!("name {raw:?} refused: {e}"))
        .into_string()
}

fn name_err(raw: &str) -> NameError {
    match Name::parse(raw) {
        Ok(name) => panic!("name {raw:?} accepted as {name:?}"),
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::BadName, "code of {e:?}");
            e
        }
    }
}

#[test]
fn name_accepts_ordinary_names() {
    assert_eq!(name_ok("alice"), "alice");
    assert_eq!(name_ok("a"), "a");
    assert_eq!(name_ok("Alice Smith"), "Alice Smith");
    assert_eq!(name_ok("Zoë 😀"), "Zoë 😀");
    assert_eq!(Name::parse("bob").expect("valid").as_str(), "bob");
}

#[test]
fn name_is_trimmed() {
    assert_eq!(name_ok("  alice  "), "alice");
    assert_eq!(name_ok("\talice\n"), "alice");
    assert_eq!(name_ok("\r\nalice\r\n"), "alice");
    assert_eq!(name_ok("\u{85}alice\u{a0}"), "alice");
    assert_eq!(
        name_ok(" Alice  Smith "),
        "Alice  Smith",
        "inner space kept"
    );
}

#[test]
fn name_refuses_empty_and_blank() {
    assert_eq!(name_err(""), NameError::Empty);
    assert_eq!(name_err(" "), NameError::Empty);
    assert_eq!(name_err(" \t\n\r "), NameError::Empty);
    assert_eq!(name_err("\u{85}\u{a0}\u{3000}"), NameError::Empty);
}

#[test]
fn name_length_counts_scalar_values() {
    assert_eq!(NAME_MAX_CHARS, 32);
    for c in ['a', 'é', '😀'] {
        let max = rep(c, NAME_MAX_CHARS);
        assert_eq!(name_ok(&max), max, "{NAME_MAX_CHARS} x {c:?}");
        assert_eq!(
            name_err(&rep(c, NAME_MAX_CHARS + 1)),
            NameError::TooLong,
            "{} x {c:?}",
            NAME_MAX_CHARS + 1
        );
    }
    // 32 x 'é' is 64 bytes, 32 x '😀' is 128 bytes: well over 32 bytes.
    assert_eq!(rep('😀', NAME_MAX_CHARS).len(), 4 * NAME_MAX_CHARS);
}

#[test]
fn name_length_is_measured_after_trimming() {
    let max = rep('é', NAME_MAX_CHARS);
    assert_eq!(name_ok(&format!("   {max}\t\n")), max);
    assert_eq!(
        name_err(&format!(" {} ", rep('é', NAME_MAX_CHARS + 1))),
        NameError::TooLong
    );
}

#[test]
fn name_refuses_control_characters() {
    for c in NON_SPACE_CONTROLS {
        assert_eq!(
            name_err(&format!("al{c}ice")),
            NameError::ControlChar,
            "{c:?}"
        );
        assert_eq!(
            name_err(&format!("alice{c}")),
            NameError::ControlChar,
            "{c:?}"
        );
        assert_eq!(name_err(&c.to_string()), NameError::ControlChar, "{c:?}");
    }
    for c in SPACE_CONTROLS {
        assert_eq!(
            name_err(&format!("al{c}ice")),
            NameError::ControlChar,
            "{c:?}"
        );
    }
}

#[test]
fn name_refuses_newline_and_tab_inside() {
    assert_eq!(name_err("al\nice"), NameError::ControlChar);
    assert_eq!(name_err("al\tice"), NameError::ControlChar);
    assert_eq!(name_err("al\r\nice"), NameError::ControlChar);
}

#[test]
fn name_allows_non_control_format_characters() {
    // Only category Cc is refused; a zero-width joiner (Cf) is not a control.
    assert_eq!(name_ok("a\u{200d}b"), "a\u{200d}b");
}

// --- RoomName ----------------------------------------------------------------

fn room_ok(raw: &str) -> String {
    let room = RoomName::parse(raw).unwrap_or_else(|e| panic!("room {raw:?} refused: {e}"));
    assert_eq!(room.as_str(), raw, "room names are taken as is");
    assert_eq!(room.to_string(), raw, "Display");
    assert_eq!(room.as_ref(), raw, "AsRef<str>");
    room.into_string()
}

fn room_err(raw: &str) -> RoomError {
    match RoomName::parse(raw) {
        Ok(room) => panic!("room {raw:?} accepted as {room:?}"),
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::BadRoom, "code of {e:?}");
            e
        }
    }
}

#[test]
fn room_accepts_lowercase_digits_dash_underscore() {
    assert_eq!(room_ok("general"), "general");
    assert_eq!(room_ok("a"), "a");
    assert_eq!(room_ok("0"), "0");
    assert_eq!(room_ok("-"), "-");
    assert_eq!(room_ok("_"), "_");
    assert_eq!(room_ok("rust-lang_2024"), "rust-lang_2024");
    assert_eq!(
        room_ok("abcdefghijklmnopqrstuvwxyz0123456789-_"),
        "abcdefghijklmnopqrstuvwxyz0123456789-_"
    );
}

#[test]
fn room_refuses_empty() {
    assert_eq!(room_err(""), RoomError::Empty);
}

#[test]
fn room_length_edges() {
    assert_eq!(ROOM_MAX_CHARS, 64);
    let max = rep('a', ROOM_MAX_CHARS);
    assert_eq!(room_ok(&max), max);
    assert_eq!(room_ok(&rep('-', ROOM_MAX_CHARS)), rep('-', ROOM_MAX_CHARS));
    assert_eq!(room_err(&rep('a', ROOM_MAX_CHARS + 1)), RoomError::TooLong);
    assert_eq!(room_err(&rep('9', 1000)), RoomError::TooLong);
}

#[test]
fn room_refuses_uppercase() {
    assert_eq!(room_err("General"), RoomError::BadChar('G'));
    assert_eq!(room_err("GENERAL"), RoomError::BadChar('G'));
    assert_eq!(room_err("genEral"), RoomError::BadChar('E'));
}

#[test]
fn room_refuses_spaces_and_is_not_trimmed() {
    assert_eq!(room_err(" "), RoomError::BadChar(' '));
    assert_eq!(room_err("gen eral"), RoomError::BadChar(' '));
    assert_eq!(room_err(" general"), RoomError::BadChar(' '));
    assert_eq!(room_err("general "), RoomError::BadChar(' '));
    assert_eq!(room_err("general\n"), RoomError::BadChar('\n'));
    assert_eq!(room_err("\tgeneral"), RoomError::BadChar('\t'));
}

#[test]
fn room_refuses_punctuation() {
    for c in ['.', '/', ':', '#', '@', '+', '~', '*', '\\', '\'', '"'] {
        assert_eq!(
            room_err(&format!("gen{c}eral")),
            RoomError::BadChar(c),
            "{c:?}"
        );
    }
}

#[test]
fn room_refuses_unicode_letters_and_digits() {
    assert_eq!(room_err("café"), RoomError::BadChar('é'));
    assert_eq!(room_err("ǅ"), RoomError::BadChar('ǅ'));
    assert_eq!(room_err("комната"), RoomError::BadChar('к'));
    assert_eq!(room_err("room٣"), RoomError::BadChar('٣'));
    assert_eq!(room_err("😀"), RoomError::BadChar('😀'));
    // Fullwidth 'ａ' looks like 'a' but is not ASCII.
    assert_eq!(room_err("\u{ff41}"), RoomError::BadChar('\u{ff41}'));
}

#[test]
fn room_refuses_control_characters() {
    for c in NON_SPACE_CONTROLS.into_iter().chain(SPACE_CONTROLS) {
        assert_eq!(
            room_err(&format!("gen{c}eral")),
            RoomError::BadChar(c),
            "{c:?}"
        );
    }
}

#[test]
fn room_reports_the_first_bad_character() {
    assert_eq!(room_err("a.B c"), RoomError::BadChar('.'));
    // A long name that also has a bad character is refused either way.
    assert!(matches!(
        room_err(&rep('é', ROOM_MAX_CHARS + 1)),
        RoomError::BadChar('é') | RoomError::TooLong
    ));
}

// --- Body --------------------------------------------------------------------

fn body_ok(raw: &str) -> String {
    Body::parse(raw)
        .unwrap_or_else(|e| panic!("body {raw:?} refused: {e}"))
        .into_string()
}

fn body_err(raw: &str) -> BodyError {
    match Body::parse(raw) {
        Ok(body) => panic!("body {raw:?} accepted as {body:?}"),
        Err(e) => e,
    }
}

#[test]
fn body_accepts_ordinary_text() {
    assert_eq!(body_ok("hi"), "hi");
    assert_eq!(body_ok("x"), "x");
    assert_eq!(body_ok("héllo 😀 世界"), "héllo 😀 世界");
    assert_eq!(Body::parse("hi").expect("valid").as_str(), "hi");
}

#[test]
fn body_is_trimmed() {
    assert_eq!(body_ok("  hi  "), "hi");
    assert_eq!(body_ok("\n\thi\r\n"), "hi");
    assert_eq!(body_ok("\u{85}hi\u{a0}\u{3000}"), "hi");
    assert_eq!(body_ok(" a  b "), "a  b", "inner space kept");
}

#[test]
fn body_allows_newlines_and_tabs_inside() {
    assert_eq!(body_ok("line 1\nline 2"), "line 1\nline 2");
    assert_eq!(body_ok("a\tb"), "a\tb");
    assert_eq!(body_ok("a\n\n\tb"), "a\n\n\tb");
    assert_eq!(body_ok("  a\nb  \n"), "a\nb");
}

#[test]
fn body_refuses_empty_and_blank() {
    for raw in ["", " ", "\n", "\t", " \n\t\r\n ", "\u{85}\u{a0}\u{3000}"] {
        let e = body_err(raw);
        assert_eq!(e, BodyError::Empty, "{raw:?}");
        assert_eq!(e.code(), ErrorCode::BadFrame);
    }
}

#[test]
fn body_refuses_other_control_characters() {
    for c in NON_SPACE_CONTROLS {
        for raw in [
            format!("a{c}b"),
            format!("hi{c}"),
            format!("{c}hi"),
            c.to_string(),
        ] {
            let e = body_err(&raw);
            assert_eq!(e, BodyError::ControlChar, "{raw:?}");
            assert_eq!(e.code(), ErrorCode::BadFrame);
        }
    }
    // Carriage return and NEL are white space (trimmed at the edges) but not
    // allowed inside: only newline and tab are.
    for c in SPACE_CONTROLS {
        let e = body_err(&format!("a{c}b"));
        assert_eq!(e, BodyError::ControlChar, "{c:?}");
        assert_eq!(e.code(), ErrorCode::BadFrame);
    }
    assert_eq!(body_err("line 1\r\nline 2"), BodyError::ControlChar);
}

#[test]
fn body_length_counts_scalar_values() {
    assert_eq!(BODY_MAX_CHARS, 4000);
    for c in ['a', 'é', '😀'] {
        let max = rep(c, BODY_MAX_CHARS);
        assert_eq!(body_ok(&max), max, "{BODY_MAX_CHARS} x {c:?}");
        let e = body_err(&rep(c, BODY_MAX_CHARS + 1));
        assert_eq!(e, BodyError::TooLong, "{} x {c:?}", BODY_MAX_CHARS + 1);
        assert_eq!(e.code(), ErrorCode::TooLarge);
    }
}

#[test]
fn body_length_is_measured_after_trimming() {
    let max = rep('é', BODY_MAX_CHARS);
    assert_eq!(body_ok(&format!("\n  {max}  \n")), max);
    let e = body_err(&format!(" {} ", rep('é', BODY_MAX_CHARS + 1)));
    assert_eq!(e, BodyError::TooLong);
    assert_eq!(e.code(), ErrorCode::TooLarge);
}

#[test]
fn body_newlines_count_towards_length() {
    let max = format!("a{}a", rep('\n', BODY_MAX_CHARS - 2));
    assert_eq!(body_ok(&max), max);
    assert_eq!(
        body_err(&format!("a{}a", rep('\n', BODY_MAX_CHARS - 1))),
        BodyError::TooLong
    );
}

// --- ClientId ----------------------------------------------------------------

fn client_id_ok(raw: &str) -> String {
    ClientId::parse(raw)
        .unwrap_or_else(|e| panic!("client id {raw:?} refused: {e}"))
        .into_string()
}

fn client_id_err(raw: &str) -> ClientIdError {
    match ClientId::parse(raw) {
        Ok(id) => panic!("client id {raw:?} accepted as {id:?}"),
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::BadFrame, "code of {e:?}");
            e
        }
    }
}

#[test]
fn client_id_accepts_and_keeps_value_as_is() {
    assert_eq!(client_id_ok("c-17"), "c-17");
    assert_eq!(client_id_ok("x"), "x");
    assert_eq!(client_id_ok(" c-17 "), " c-17 ", "not trimmed");
    assert_eq!(client_id_ok(" "), " ", "one scalar value");
    assert_eq!(
        client_id_ok("0195f1c2-7e3a-7b4c-9d2e-1f0a3b5c7d9e"),
        "0195f1c2-7e3a-7b4c-9d2e-1f0a3b5c7d9e"
    );
    assert_eq!(ClientId::parse("c-1").expect("valid").as_str(), "c-1");
}

#[test]
fn client_id_refuses_empty() {
    assert_eq!(client_id_err(""), ClientIdError::Empty);
}

#[test]
fn client_id_length_counts_scalar_values() {
    assert_eq!(CLIENT_ID_MAX_CHARS, 64);
    for c in ['a', 'é', '😀'] {
        let max = rep(c, CLIENT_ID_MAX_CHARS);
        assert_eq!(client_id_ok(&max), max, "{CLIENT_ID_MAX_CHARS} x {c:?}");
        assert_eq!(
            client_id_err(&rep(c, CLIENT_ID_MAX_CHARS + 1)),
            ClientIdError::TooLong,
            "{} x {c:?}",
            CLIENT_ID_MAX_CHARS + 1
        );
    }
}

// --- Error codes of every refusal ----------------------------------------------

#[test]
fn every_error_variant_maps_to_its_code() {
    for e in [NameError::Empty, NameError::TooLong, NameError::ControlChar] {
        assert_eq!(e.code(), ErrorCode::BadName, "{e:?}");
    }
    for e in [
        RoomError::Empty,
        RoomError::TooLong,
        RoomError::BadChar('X'),
    ] {
        assert_eq!(e.code(), ErrorCode::BadRoom, "{e:?}");
    }
    assert_eq!(BodyError::TooLong.code(), ErrorCode::TooLarge);
    assert_eq!(BodyError::Empty.code(), ErrorCode::BadFrame);
    assert_eq!(BodyError::ControlChar.code(), ErrorCode::BadFrame);
    for e in [ClientIdError::Empty, ClientIdError::TooLong] {
        assert_eq!(e.code(), ErrorCode::BadFrame, "{e:?}");
    }
}

#[test]
fn errors_have_human_messages() {
    assert_eq!(
        NameError::TooLong.to_string(),
        "name is longer than 32 characters"
    );
    assert_eq!(
        RoomError::TooLong.to_string(),
        "room name is longer than 64 characters"
    );
    assert_eq!(
        BodyError::TooLong.to_string(),
        "message is longer than 4000 characters"
    );
    assert_eq!(
        ClientIdError::TooLong.to_string(),
        "message id is longer than 64 characters"
    );
    assert!(RoomError::BadChar('.').to_string().contains("'.'"));
}

// --- Text that shows nothing, and bidi controls (v1.1) ------------------------

/// Bodies and names that draw nothing, whatever the script: white space of
/// every kind, zero-width and other default-ignorable characters, format
/// characters, the Hangul fillers, the blank Braille pattern.
const BLANKS: &[&str] = &[
    "\u{2800}",
    "\u{200b}\u{200b}",
    "\u{200b}",
    "\u{2060}",
    "\u{feff}",
    "\u{3164}",
    "\u{115f}\u{1160}",
    "\u{ffa0}",
    "\u{00ad}",
    "\u{180e}",
    "\u{034f}",
    "\u{fe0f}",
    "\u{e0020}\u{e0041}",
    "\u{2028}",
    "\u{3000}\u{200b}\u{2800}",
];

#[test]
fn bodies_that_show_nothing_are_refused() {
    for blank in BLANKS {
        let err = Body::parse(blank).expect_err(blank);
        assert!(
            matches!(err, BodyError::Blank | BodyError::Empty),
            "{blank:?}: {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::BadFrame);
    }
}

#[test]
fn names_that_show_nothing_are_refused() {
    for blank in BLANKS {
        let err = name_err(blank);
        assert!(
            matches!(err, NameError::Blank | NameError::Empty),
            "{blank:?}: {err:?}"
        );
    }
}

#[test]
fn one_visible_character_is_enough() {
    for ok in [
        "\u{200b}a",
        "\u{2800}x",
        "👍",
        "\u{1f469}\u{200d}\u{1f4bb}",
        "ـ",
        "ا",
    ] {
        Body::parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        name_ok(ok);
    }
}

#[test]
fn names_with_bidi_controls_are_refused_and_bodies_keep_them() {
    for c in [
        '\u{202e}', '\u{202a}', '\u{2066}', '\u{2067}', '\u{2069}', '\u{200f}', '\u{061c}',
    ] {
        let raw = format!("ab{c}cd");
        assert_eq!(name_err(&raw), NameError::BidiControl(c as u32), "{raw:?}");
        Body::parse(&raw).unwrap_or_else(|e| panic!("body {raw:?}: {e}"));
    }
}
