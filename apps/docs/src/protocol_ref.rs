//! The protocol reference, generated from `packages/protocol`: one example
//! per frame variant serialised from a real value, the error and close codes
//! from their `ALL` lists, and the limits constants.
//!
//! The notes below match over every variant without a wildcard, so a new
//! frame or code fails to compile until it is documented here.

use crate::pages::rich_text;
use leptos::prelude::*;
use protocol::limits as l;
use protocol::{
    ChatMessage, ClientFrame, CloseCode, ErrorCode, ReconnectReason, RoomInfo, ServerFrame, Since,
    User,
};

/// One example per frame variant, both directions, produced from the real
/// types. Optional fields are filled in, to show them.
pub fn frame_examples() -> (Vec<ClientFrame>, Vec<ServerFrame>) {
    let room = || "general".to_owned();
    let alice = User {
        id: "u_alice".to_owned(),
        name: "alice".to_owned(),
    };
    let bob = User {
        id: "u_bob".to_owned(),
        name: "bob".to_owned(),
    };
    let message = ChatMessage {
        room: room(),
        offset: 58,
        id: "m_0192".to_owned(),
        client_id: "c-17".to_owned(),
        from: alice.clone(),
        body: "hi".to_owned(),
        ts: 1_763_800_000_000,
    };
    let epoch = "e_7f3a".to_owned();
    let client = vec![
        ClientFrame::Hello {
            name: "alice".to_owned(),
            token: Some("u_alice.1764404800.mac".to_owned()),
        },
        ClientFrame::Join {
            room: room(),
            since: Some(Since {
                epoch: epoch.clone(),
                offset: 57,
            }),
        },
        ClientFrame::Leave { room: room() },
        ClientFrame::Send {
            room: room(),
            id: "c-17".to_owned(),
            body: "hi".to_owned(),
        },
        ClientFrame::History {
            room: room(),
            before: Some(58),
            limit: Some(50),
        },
        ClientFrame::Typing { room: room() },
        ClientFrame::Rooms {
            cursor: None,
            limit: None,
        },
        ClientFrame::Ping,
        ClientFrame::Refresh {
            token: "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.c2ln".to_owned(),
        },
    ];
    let server = vec![
        ServerFrame::Welcome {
            protocol: protocol::PROTOCOL_VERSION,
            user: alice.clone(),
            token: "u_alice.1764404800.mac".to_owned(),
            server: "server-a".to_owned(),
        },
        ServerFrame::Joined {
            room: room(),
            epoch,
            offset: 58,
            members: vec![bob.clone()],
            history: vec![message.clone()],
            recovered: true,
        },
        ServerFrame::Left { room: room() },
        ServerFrame::Ack {
            id: "c-17".to_owned(),
            room: room(),
            offset: 58,
        },
        ServerFrame::Message(message.clone()),
        ServerFrame::History {
            room: room(),
            messages: vec![message],
        },
        ServerFrame::Typing {
            room: room(),
            user: alice.clone(),
        },
        ServerFrame::Presence {
            room: room(),
            joined: vec![bob],
            left: vec![],
        },
        ServerFrame::Rooms {
            rooms: vec![RoomInfo {
                room: room(),
                members: 12,
            }],
            next: None,
        },
        ServerFrame::Pong,
        ServerFrame::error(
            ErrorCode::RateLimited,
            "too many frames, slow down",
            Some("c-17".to_owned()),
        ),
        ServerFrame::Reconnect {
            reason: ReconnectReason::Shutdown,
            delay_ms: 4200,
        },
    ];
    (client, server)
}

fn client_note(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Hello { .. } => "Must be the first frame. `name`: 1–32 characters after trimming, at least one visible, no control or bidirectional control characters (v1.1). Optional `token` (from an earlier `welcome`) to come back as the same user, on any instance.",
        ClientFrame::Join { .. } => "Join a room (`[a-z0-9_-]`, 1–64). Optional `since` recovers every message after that offset of that epoch.",
        ClientFrame::Leave { .. } => "Leave a joined room; answered with `left` (or `not_joined`).",
        ClientFrame::Send { .. } => "Post a message. `id` is client-chosen (1–64 characters): the same user resending the same `id` in the room is the same message. `body`: 1–4000 characters after trimming, at least one visible (v1.1: white space, zero-width and other invisible characters alone are blank).",
        ClientFrame::History { .. } => "Scroll back: the newest `limit` messages with offset below `before`, ascending. `limit` defaults to 50, capped at 200.",
        ClientFrame::Typing { .. } => "Ephemeral typing notice, not stored; costs one unit like every frame.",
        ClientFrame::Rooms { .. } => "List active rooms across all instances, the busiest first, a page at a time (v1.1: optional `limit`, at most 100, and `cursor`, the `next` of the previous page).",
        ClientFrame::Ping => "Application-level ping; answered with `pong`.",
        ClientFrame::Refresh { .. } => "Extension (host identity): a fresh token from the host app for the same user (`sub`), sent before the one the session signed in with expires; the connection then lasts until the new `exp`, with the new `rooms` claim. No answer when accepted; `unauthorized` (the connection stays until the old token ends) when not. Costs as a `join`.",
    }
}

fn server_note(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome { .. } => "Answers `hello`. `token` is signed by a secret all instances share; `server` names the instance.",
        ServerFrame::Joined { .. } => "Answers `join`: the room's epoch and latest offset, its members, and history. `recovered` is true only when `history` holds every message after `since`.",
        ServerFrame::Left { .. } => "Answers `leave`.",
        ServerFrame::Ack { .. } => "The message with client id `id` is durably stored at `offset` and published to every instance.",
        ServerFrame::Message(_) => "A stored message, to every member of the room on every instance, the sender included, in offset order.",
        ServerFrame::History { .. } => "Answers a `history` request: ascending offsets, all below `before`.",
        ServerFrame::Typing { .. } => "Someone is typing; sent to every socket in the room except the typing user's.",
        ServerFrame::Presence { .. } => "Membership changed on some instance. Both arrays are always present; a user counts once however many tabs or instances they are on.",
        ServerFrame::Rooms { .. } => "Active rooms with the number of distinct users in each.",
        ServerFrame::Pong => "Answers `ping`.",
        ServerFrame::Error { .. } => "Something the client must act on; `code` is what it branches on, `message` is for humans, `id` is present when it answers a `send`.",
        ServerFrame::Reconnect { .. } => "The instance is shutting down: reconnect (to any instance) and re-join with `since`. With `delay_ms` (a drain spreading its clients' reconnects), keep using this connection that many milliseconds first, then close it and reconnect; without it, the close (1012) follows at once.",
    }
}

fn error_meaning(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadFrame => "Malformed JSON, unknown `type`, missing field, invalid body or client id, or a second `hello`. 10 within 10 s close the socket with 1008.",
        ErrorCode::BadName => "The `hello` name is empty, blank, too long, holds control or bidirectional control characters, or cannot be read (v1.1); the socket is closed with 1008.",
        ErrorCode::BadRoom => "The room name is not 1–64 characters of `[a-z0-9_-]`.",
        ErrorCode::NotJoined => "The frame names a room this connection has not joined.",
        ErrorCode::TooLarge => "A body longer than the limit.",
        ErrorCode::RateLimited => "The per-connection token bucket is empty; the frame was not stored, the socket stays open.",
        ErrorCode::Unavailable => "The shared store is unreachable; the client may retry.",
        ErrorCode::Unauthorized => "A frame before `hello`, or an invalid or expired token; the socket is closed with 1008.",
        ErrorCode::TooManyRooms => "The connection already holds the server's maximum of joined rooms (`--max-rooms-per-conn`); leave one first.",
        ErrorCode::Forbidden => "The room is private (`--private-rooms`) and this session's host token does not list it in its `rooms` claim (a guest has none).",
        ErrorCode::Unknown => "Never sent: what a client reads a code it does not know as (v1.1), a refusal with a message for humans.",
    }
}

/// `(when the server sends it, what the client does)`.
fn close_meaning(code: CloseCode) -> (&'static str, &'static str) {
    match code {
        CloseCode::PolicyViolation => (
            "frame before `hello`, bad name, bad token, `bad_frame` flood",
            "fix the cause; do not retry blindly",
        ),
        CloseCode::MessageTooBig => ("a frame over 64 KiB", "do not resend that frame"),
        CloseCode::InternalError => (
            "the instance hit an internal error",
            "reconnect with backoff, re-join with `since`",
        ),
        CloseCode::ServiceRestart => (
            "the instance is shutting down",
            "reconnect at once (any instance), re-join with `since`",
        ),
        CloseCode::TryAgainLater => (
            "the client read too slowly and its queue filled",
            "reconnect with backoff, re-join with `since`",
        ),
        CloseCode::TokenExpired => (
            "the host-app token the session signed in with expired, and no `refresh` replaced it (extension)",
            "get a fresh token from the host app, then reconnect with it",
        ),
    }
}

/// `(constant, value, meaning)` for every constant of `protocol::limits`.
fn limits() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "MAX_CLIENT_FRAME_BYTES",
            l::MAX_CLIENT_FRAME_BYTES.to_string(),
            "Largest frame a client may send, in bytes; larger closes the socket with 1009.",
        ),
        (
            "NAME_MAX_CHARS",
            l::NAME_MAX_CHARS.to_string(),
            "Longest user name, in characters after trimming.",
        ),
        (
            "ROOM_MAX_CHARS",
            l::ROOM_MAX_CHARS.to_string(),
            "Longest room name (ASCII `[a-z0-9_-]`).",
        ),
        (
            "BODY_MAX_CHARS",
            l::BODY_MAX_CHARS.to_string(),
            "Longest message body, in characters after trimming.",
        ),
        (
            "CLIENT_ID_MAX_CHARS",
            l::CLIENT_ID_MAX_CHARS.to_string(),
            "Longest client-chosen message id.",
        ),
        (
            "DEFAULT_JOIN_HISTORY",
            l::DEFAULT_JOIN_HISTORY.to_string(),
            "Messages in `joined.history` without `since` (`--join-history`).",
        ),
        (
            "DEFAULT_HISTORY_LIMIT",
            l::DEFAULT_HISTORY_LIMIT.to_string(),
            "Default `limit` of a `history` request.",
        ),
        (
            "MAX_HISTORY_LIMIT",
            l::MAX_HISTORY_LIMIT.to_string(),
            "Largest `limit` of a `history` request; larger is capped, not refused.",
        ),
        (
            "DEFAULT_MAX_REPLAY",
            l::DEFAULT_MAX_REPLAY.to_string(),
            "Largest gap a `join` with `since` replays by default (`--max-replay`).",
        ),
        (
            "DEFAULT_RATE_PER_SEC",
            l::DEFAULT_RATE_PER_SEC.to_string(),
            "Default refill of each connection's token bucket, in cost units per second (v1.1: every frame after `hello` costs units).",
        ),
        (
            "DEFAULT_RATE_BURST",
            l::DEFAULT_RATE_BURST.to_string(),
            "Default burst of the per-connection token bucket, in units.",
        ),
        (
            "DEFAULT_USER_RATE_PER_SEC",
            l::DEFAULT_USER_RATE_PER_SEC.to_string(),
            "Default refill of each user's bucket (all of the user's connections on one instance), units per second.",
        ),
        (
            "DEFAULT_USER_RATE_BURST",
            l::DEFAULT_USER_RATE_BURST.to_string(),
            "Default burst of each user's bucket.",
        ),
        (
            "DEFAULT_ADDRESS_RATE_PER_SEC",
            l::DEFAULT_ADDRESS_RATE_PER_SEC.to_string(),
            "Default refill of each address's bucket (an IPv4 address or an IPv6 /64, on one instance), units per second.",
        ),
        (
            "DEFAULT_ADDRESS_RATE_BURST",
            l::DEFAULT_ADDRESS_RATE_BURST.to_string(),
            "Default burst of each address's bucket.",
        ),
        (
            "DEFAULT_FRAME_COSTS",
            l::DEFAULT_FRAME_COSTS.to_owned(),
            "Default units of each frame (`--frame-costs`).",
        ),
        (
            "DEFAULT_REPLY_BYTES_PER_UNIT",
            l::DEFAULT_REPLY_BYTES_PER_UNIT.to_string(),
            "A `joined` or `history` reply costs one unit more per this many bytes, charged after it is sent.",
        ),
        (
            "DEFAULT_MAX_REPLY_BYTES",
            l::DEFAULT_MAX_REPLY_BYTES.to_string(),
            "Default bound of a `joined` or `history` reply, in bytes: the newest messages that fit, at least one.",
        ),
        (
            "ROOMS_PAGE_MAX",
            l::ROOMS_PAGE_MAX.to_string(),
            "Largest page of a `rooms` reply, also the default `limit`.",
        ),
        (
            "BAD_FRAME_LIMIT",
            l::BAD_FRAME_LIMIT.to_string(),
            "`bad_frame` errors tolerated within the window before close 1008.",
        ),
        (
            "BAD_FRAME_WINDOW_SECS",
            l::BAD_FRAME_WINDOW_SECS.to_string(),
            "Window of the `bad_frame` flood rule, in seconds.",
        ),
        (
            "DEDUPE_WINDOW_SECS",
            l::DEDUPE_WINDOW_SECS.to_string(),
            "How long a (user, client id) pair is remembered for dedupe, at least, in seconds.",
        ),
        (
            "DEFAULT_TOKEN_TTL_SECS",
            l::DEFAULT_TOKEN_TTL_SECS.to_string(),
            "Default lifetime of a session token, in seconds (7 days).",
        ),
        (
            "DEFAULT_SESSION_MAX_LIFETIME_SECS",
            l::DEFAULT_SESSION_MAX_LIFETIME_SECS.to_string(),
            "Default maximum lifetime of a session across token renewals, in seconds (30 days).",
        ),
    ]
}

#[component]
fn FrameRow(
    direction: &'static str,
    kind: &'static str,
    json: String,
    note: &'static str,
) -> impl IntoView {
    view! {
        <tr>
            <td><code>{kind}</code></td>
            <td>
                <p class="docs-frame-note">{rich_text(note)}</p>
                <pre class="docs-code"><code id=format!("{direction}-{kind}")>{json}</code></pre>
            </td>
        </tr>
    }
}

#[component]
pub(crate) fn ProtocolReference() -> impl IntoView {
    let (client, server) = frame_examples();
    view! {
        <p class="docs-lead">
            "Protocol v" {protocol::PROTOCOL_VERSION} ": one WebSocket per client at "
            <code>"GET /ws"</code> " on any instance. Every frame is a text message holding one JSON "
            "object with a snake_case " <code>"\"type\""</code> " tag; unknown fields are ignored by "
            "both sides. Timestamps are milliseconds since the Unix epoch. Every example below is "
            "serialised from the " <code>"protocol"</code> " crate's types."
        </p>
        <p>
            "The server writes a message longer than 1 KiB as WebSocket fragments (RFC 6455 §5.4), "
            "so that no socket keeps a large write buffer. Browsers and WebSocket libraries "
            "reassemble them; a client that reads raw frames must join continuation frames "
            "until " <code>"FIN"</code> "."
        </p>
        <h2 id="client-frames">"Client → server"</h2>
        <table class="docs-table docs-frames">
            <thead><tr><th>"type"</th><th>"example"</th></tr></thead>
            <tbody>
                {client
                    .iter()
                    .map(|f| view! { <FrameRow direction="client" kind=f.kind() json=f.to_json() note=client_note(f)/> })
                    .collect_view()}
            </tbody>
        </table>
        <h2 id="server-frames">"Server → client"</h2>
        <table class="docs-table docs-frames">
            <thead><tr><th>"type"</th><th>"example"</th></tr></thead>
            <tbody>
                {server
                    .iter()
                    .map(|f| view! { <FrameRow direction="server" kind=f.kind() json=f.to_json() note=server_note(f)/> })
                    .collect_view()}
            </tbody>
        </table>
        <h2 id="error-codes">"Error codes"</h2>
        <p>
            "The " <code>"code"</code> " of an " <code>"error"</code> " frame. "
            <code>"too_many_rooms"</code> " is an extension of v1 (clients that do not know it treat "
            "it as any other refusal)."
        </p>
        <table class="docs-table">
            <thead><tr><th>"code"</th><th>"meaning"</th></tr></thead>
            <tbody>
                {ErrorCode::ALL
                    .into_iter()
                    .map(|c| {
                        let extension = matches!(c, ErrorCode::TooManyRooms | ErrorCode::Forbidden)
                            .then(|| view! { " " <span class="docs-tag">"extension of v1"</span> });
                        view! {
                            <tr>
                                <td><code>{c.as_str()}</code>{extension}</td>
                                <td>{rich_text(error_meaning(c))}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
        <h2 id="close-codes">"Close codes"</h2>
        <table class="docs-table">
            <thead><tr><th>"code"</th><th>"when"</th><th>"reconnect?"</th><th>"client"</th></tr></thead>
            <tbody>
                {CloseCode::ALL
                    .into_iter()
                    .map(|c| {
                        let (when, client) = close_meaning(c);
                        let reconnect = match (c.should_reconnect(), c.reconnect_immediately()) {
                            (true, true) => "yes, at once",
                            (true, false) => "yes, with backoff",
                            (false, _) => "no (terminal)",
                        };
                        view! {
                            <tr>
                                <td>{c.code()}</td>
                                <td>{rich_text(when)}</td>
                                <td>{reconnect}</td>
                                <td>{rich_text(client)}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
        <h2 id="limits">"Limits"</h2>
        <p>"The constants of " <code>"protocol::limits"</code> ". Servers may be configured tighter for rates and counts, never looser for the value rules."</p>
        <table class="docs-table">
            <thead><tr><th>"constant"</th><th>"value"</th><th>"meaning"</th></tr></thead>
            <tbody>
                {limits()
                    .into_iter()
                    .map(|(name, value, meaning)| {
                        view! {
                            <tr>
                                <td><code>{name}</code></td>
                                <td>{value}</td>
                                <td>{rich_text(meaning)}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}
