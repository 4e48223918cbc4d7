//! The value rules of protocol v1, as constructors of validated newtypes.
//! A value of [`Name`], [`RoomName`], [`Body`] or [`ClientId`] has passed
//! its rule; each error says which rule failed and maps to the error code a
//! server answers with.

use crate::codes::ErrorCode;
use crate::limits::{BODY_MAX_CHARS, CLIENT_ID_MAX_CHARS, NAME_MAX_CHARS, ROOM_MAX_CHARS};
use std::fmt;
use thiserror::Error;

/// Why a user name was refused (`bad_name`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name shows nothing: it has no visible character")]
    Blank,
    #[error("name is longer than {NAME_MAX_CHARS} characters")]
    TooLong,
    #[error("name contains a control character")]
    ControlChar,
    #[error("name contains a bidirectional control character (U+{0:04X})")]
    BidiControl(u32),
}

/// Why a room name was refused (`bad_room`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoomError {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than {ROOM_MAX_CHARS} characters")]
    TooLong,
    #[error("room names hold only a-z, 0-9, '_' and '-' (found {0:?})")]
    BadChar(char),
}

/// Why a message body was refused (`too_large` when too long, `bad_frame`
/// otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BodyError {
    #[error("message is empty")]
    Empty,
    #[error("message shows nothing: it has no visible character")]
    Blank,
    #[error("message is longer than {BODY_MAX_CHARS} characters")]
    TooLong,
    #[error("message contains a control character other than newline or tab")]
    ControlChar,
}

/// Why a client message id was refused (`bad_frame`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientIdError {
    #[error("message id is empty")]
    Empty,
    #[error("message id is longer than {CLIENT_ID_MAX_CHARS} characters")]
    TooLong,
}

impl NameError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadName
    }
}

impl RoomError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadRoom
    }
}

impl BodyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BodyError::TooLong => ErrorCode::TooLarge,
            BodyError::Empty | BodyError::Blank | BodyError::ControlChar => ErrorCode::BadFrame,
        }
    }
}

impl ClientIdError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadFrame
    }
}

/// Whether `c` draws nothing: white space (`White_Space`), characters
/// that are invisible unless a renderer chooses otherwise
/// (`Default_Ignorable_Code_Point`: zero-width spaces and joiners,
/// variation selectors, tag characters, the Hangul fillers, …), format
/// and control characters (general categories `Cf`, `Cc`), and U+2800
/// BRAILLE PATTERN BLANK, the one symbol whose glyph is defined as empty
/// (no Unicode property marks it: it is `So`, like every Braille pattern).
pub fn is_invisible(c: char) -> bool {
    use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory, WhiteSpace};
    use icu_properties::{CodePointMapData, CodePointSetData};
    c == '\u{2800}'
        || CodePointSetData::new::<WhiteSpace>().contains(c)
        || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || matches!(
            CodePointMapData::<GeneralCategory>::new().get(c),
            GeneralCategory::Format | GeneralCategory::Control
        )
}

/// Whether `s` shows nothing at all ([`is_invisible`] for every character).
pub fn is_blank(s: &str) -> bool {
    s.chars().all(is_invisible)
}

/// Whether `c` is a bidirectional control (`Bidi_Control`: the embedding,
/// override and isolate controls and the directional marks), which would
/// reorder the text around a name it appears in.
fn is_bidi_control(c: char) -> bool {
    use icu_properties::props::BidiControl;
    icu_properties::CodePointSetData::new::<BidiControl>().contains(c)
}

/// Checks a length in Unicode scalar values without counting past `max + 1`.
fn longer_than(s: &str, max: usize) -> bool {
    s.chars().nth(max).is_some()
}

/// A display name: trimmed, 1–32 scalar values, at least one visible
/// character ([`is_blank`]), no control characters (Cc), no bidirectional
/// controls (they would turn the text around the name, as U+202E does to
/// an "is typing" line).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    pub fn parse(raw: &str) -> Result<Name, NameError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if longer_than(name, NAME_MAX_CHARS) {
            return Err(NameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::ControlChar);
        }
        if let Some(c) = name.chars().find(|&c| is_bidi_control(c)) {
            return Err(NameError::BidiControl(c as u32));
        }
        if is_blank(name) {
            return Err(NameError::Blank);
        }
        Ok(Name(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A room name: 1–64 characters of `[a-z0-9_-]`. Not trimmed: a room name
/// with spaces is refused, not silently changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

impl RoomName {
    pub fn parse(raw: &str) -> Result<RoomName, RoomError> {
        if raw.is_empty() {
            return Err(RoomError::Empty);
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
        {
            return Err(RoomError::BadChar(bad));
        }
        // Only ASCII is left, so bytes are characters.
        if raw.len() > ROOM_MAX_CHARS {
            return Err(RoomError::TooLong);
        }
        Ok(RoomName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RoomName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A message body: trimmed, 1–4000 scalar values, at least one visible
/// character ([`is_blank`]), newlines and tabs allowed, no other control
/// characters. Bidirectional controls are allowed (right-to-left text
/// needs them); clients isolate every body when they show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body(String);

impl Body {
    pub fn parse(raw: &str) -> Result<Body, BodyError> {
        let body = raw.trim();
        if body.is_empty() {
            return Err(BodyError::Empty);
        }
        if body
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(BodyError::ControlChar);
        }
        if longer_than(body, BODY_MAX_CHARS) {
            return Err(BodyError::TooLong);
        }
        if is_blank(body) {
            return Err(BodyError::Blank);
        }
        Ok(Body(body.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A client-chosen message id: 1–64 scalar values, taken as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(raw: &str) -> Result<ClientId, ClientIdError> {
        if raw.is_empty() {
            return Err(ClientIdError::Empty);
        }
        if longer_than(raw, CLIENT_ID_MAX_CHARS) {
            return Err(ClientIdError::TooLong);
        }
        Ok(ClientId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}
