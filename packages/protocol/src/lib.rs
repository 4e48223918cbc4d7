//! The chat wire protocol, v1: the one definition of every frame that crosses
//! a WebSocket between a client and a server instance.
//!
//! This crate owns the JSON shape of frames ([`frames`]), the rules a value
//! must follow to be accepted ([`validate`]), the error and close codes a
//! client acts on ([`codes`]) and the documented limits ([`limits`]). It owns
//! no IO: no tokio, axum or redis, so the WASM client, the server, the load
//! generator and the docs all compile it (it builds for
//! `wasm32-unknown-unknown`).
//!
//! Server-internal types (room state, the instance-to-instance envelope) are
//! not here; the server converts them into these frames explicitly.

pub mod admin;
pub mod codes;
pub mod frames;
pub mod limits;
pub mod validate;

pub use codes::{CloseCode, ErrorCode};
pub use frames::{ChatMessage, ClientFrame, ReconnectReason, RoomInfo, ServerFrame, Since, User};
pub use validate::{Body, ClientId, Name, RoomName};

/// The protocol version a server announces in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
