//! The frames of a signed-in client (PROTOCOL.md, "Client frames"): each
//! checked (room name, membership, value rules, rate limit), then done
//! through the hub and answered.

use super::{Connection, End, JoinedRoom};
use crate::codec::{self, DecodeError, Decoded};
use crate::engine::{now_ms, Publication, RoomsCursor};
use crate::hub::Member;
use crate::metrics as m;
use crate::telemetry::{self, FrameSpan};
use protocol::limits::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, ROOMS_PAGE_MAX};
use protocol::{
    Body, ChatMessage, ClientFrame, ClientId, CloseCode, ErrorCode, RoomName, ServerFrame, Since,
    User,
};
use std::time::Instant;
use tracing::Instrument as _;
use tungstenite::Message;

impl Connection {
    /// One message read from the socket: a frame to act on, a control
    /// message, or the end of the peer.
    pub(super) async fn on_socket_message(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), End> {
        let Some(Ok(msg)) = msg else {
            return Err(End::Gone);
        };
        self.outbox.heard();
        match codec::decode(&msg) {
            Ok(Decoded::Control) => Ok(()),
            Ok(Decoded::Close) => Err(End::Gone),
            Ok(Decoded::Frame(frame)) => {
                self.count_in(frame.kind());
                self.on_frame(frame).await
            }
            Err(DecodeError::TooLarge(_)) => {
                self.count_in("invalid");
                metrics::counter!(m::REJECTED_FRAMES, "code" => ErrorCode::TooLarge.as_str())
                    .increment(1);
                Err(End::Close(CloseCode::MessageTooBig, "frame over 64 KiB"))
            }
            Err(DecodeError::BadFrame { reason, id }) => {
                self.count_in("invalid");
                self.error(ErrorCode::BadFrame, &reason, id).await
            }
        }
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Result<(), End> {
        let units = self.ctx.costs.frames.of(&frame);
        if units > 0 {
            let user = &self.user.as_ref().expect("user is set after hello").id;
            if let Err(refusal) = self.ctx.costs.admit(&mut self.payer, user, units) {
                let id = match &frame {
                    ClientFrame::Send { id, .. } => Some(id.clone()),
                    _ => None,
                };
                let bucket = refusal.bucket;
                metrics::counter!(m::RATE_LIMITED, "bucket" => bucket.bucket(), "type" => frame.kind())
                    .increment(1);
                self.paused = Some(Box::pin(tokio::time::sleep(
                    refusal.wait.min(super::MAX_READ_PAUSE),
                )));
                return self
                    .error(ErrorCode::RateLimited, bucket.message(), id)
                    .await;
            }
        }
        // The frames most clients send often (send, typing, ping) run in
        // this future; the others are boxed, each for its moment, so this
        // future (allocated per frame, see `Connection::run`) stays small:
        // a block of a kilobyte or more costs glibc's malloc a sweep of its
        // fast bins each time (`malloc_consolidate`, issue 18's profile).
        match frame {
            ClientFrame::Hello { .. } => {
                self.error(ErrorCode::BadFrame, "hello was already said", None)
                    .await
            }
            ClientFrame::Join { room, since } => {
                let span = telemetry::frame_span(FrameSpan::Join, &room);
                Box::pin(self.join(&room, since).instrument(span)).await
            }
            ClientFrame::Leave { room } => Box::pin(self.leave(&room)).await,
            ClientFrame::Send { room, id, body } => {
                let span = telemetry::frame_span(FrameSpan::Publish, &room);
                self.send(&room, id, &body).instrument(span).await
            }
            ClientFrame::History {
                room,
                before,
                limit,
            } => Box::pin(self.history(&room, before, limit)).await,
            ClientFrame::Typing { room } => self.typing(&room).await,
            ClientFrame::Rooms { cursor, limit } => Box::pin(self.list_rooms(cursor, limit)).await,
            ClientFrame::Ping => self.reply(&ServerFrame::Pong).await,
            ClientFrame::Refresh { token } => Box::pin(self.refresh(&token)).await,
        }
    }

    /// Index of a joined room by name.
    fn room_index(&self, room: &str) -> Option<usize> {
        self.rooms.iter().position(|r| r.name.as_str() == room)
    }

    fn user(&self) -> &User {
        self.user.as_ref().expect("user is set after hello")
    }

    /// Parses a room name, answering `bad_room` when it is not one.
    async fn room_name(&mut self, room: &str, id: Option<&str>) -> Result<Option<RoomName>, End> {
        match RoomName::parse(room) {
            Ok(name) => Ok(Some(name)),
            Err(e) => {
                self.error(e.code(), &e.to_string(), id.map(str::to_owned))
                    .await?;
                Ok(None)
            }
        }
    }

    /// A joined room's name, answering `bad_room` or `not_joined` otherwise.
    async fn member_room(&mut self, room: &str, id: Option<&str>) -> Result<Option<RoomName>, End> {
        let Some(name) = self.room_name(room, id).await? else {
            return Ok(None);
        };
        if self.room_index(name.as_str()).is_none() {
            self.error(
                ErrorCode::NotJoined,
                &format!("join room {name:?} first"),
                id.map(str::to_owned),
            )
            .await?;
            return Ok(None);
        }
        Ok(Some(name))
    }

    /// `refresh` (PROTOCOL.md "Host identity"): a fresh host token for
    /// the same user moves the session's end to its `exp` and its rooms
    /// claim to the new one. Refused `unauthorized` (the connection stays
    /// until the old token's end) when this session did not sign in with a
    /// host token, or the token is invalid or names another user.
    async fn refresh(&mut self, token: &str) -> Result<(), End> {
        if self.host.is_none() {
            return self
                .error(
                    ErrorCode::Unauthorized,
                    "refresh is for sessions signed in with a host-app token",
                    None,
                )
                .await;
        }
        let host = match self.ctx.identity.verify(token).await {
            Ok(host) => host,
            Err(e) => {
                return self
                    .error(ErrorCode::Unauthorized, &e.to_string(), None)
                    .await
            }
        };
        if host.user_id != self.user().id {
            return self
                .error(
                    ErrorCode::Unauthorized,
                    "the new token is for another user (sub)",
                    None,
                )
                .await;
        }
        self.hold_host_session(host);
        Ok(())
    }

    async fn join(&mut self, room: &str, since: Option<Since>) -> Result<(), End> {
        let Some(name) = self.room_name(room, None).await? else {
            return Ok(());
        };
        if !self.ctx.identity.may_join(name.as_str(), self.host_rooms()) {
            return self
                .error(
                    ErrorCode::Forbidden,
                    &format!(
                        "{name:?} is a private room, and this session's token does not list it"
                    ),
                    None,
                )
                .await;
        }
        let max = self.ctx.config.max_rooms_per_conn;
        if self.room_index(name.as_str()).is_none() && self.rooms.len() >= max {
            return self
                .error(
                    ErrorCode::TooManyRooms,
                    &format!("a connection may join at most {max} rooms; leave one first"),
                    None,
                )
                .await;
        }
        let member = Member {
            conn: self.id,
            user: self.user.clone().expect("user is set after hello"),
            outbox: self.outbox.clone(),
            presence_from: 0,
        };
        // A room joined again waits for its new `joined` like a new one:
        // its messages until then queue in the outbox.
        let rejoined = self
            .room_index(name.as_str())
            .map(|i| self.rooms[i].key.clone())
            .and_then(|key| Some((self.outbox.close_room(&key)?, key)));
        let joined = match self.ctx.hub.join(&name, member, since.as_ref()).await {
            Ok(joined) => joined,
            Err(e) => {
                if let Some((delivered, key)) = rejoined {
                    self.outbox.open_room(&key, delivered);
                }
                return self.unavailable(e, None).await;
            }
        };
        let offset = joined.recovery.position.offset;
        let key = joined.key.clone();
        match self.room_index(name.as_str()) {
            Some(i) => self.rooms[i].key = key.clone(),
            None => {
                // Exactly: most connections join one or two rooms.
                self.rooms.reserve_exact(1);
                self.rooms.push(JoinedRoom {
                    name: name.clone(),
                    key: key.clone(),
                });
            }
        }
        let delivered = rejoined.map_or(offset, |(d, _)| d.max(offset));
        let mut history = joined.recovery.history;
        let cut = keep_newest_within(&mut history, self.ctx.config.max_reply_bytes);
        let frame = ServerFrame::Joined {
            room: name.into_string(),
            epoch: joined.recovery.position.epoch.to_string(),
            offset,
            members: joined.members,
            history,
            recovered: joined.recovery.recovered && !cut,
        };
        let bytes = self.reply_len(&frame).await?;
        // Now its messages after the history go out, those that waited first.
        self.outbox.open_room(&key, delivered);
        self.forward().await?;
        self.charge_reply(bytes);
        Ok(())
    }

    /// Charges a sent `joined` or `history` reply by its size.
    fn charge_reply(&mut self, bytes: usize) {
        let units = self.ctx.costs.frames.of_reply(bytes);
        let user = &self.user.as_ref().expect("user is set after hello").id;
        self.ctx.costs.charge(&mut self.payer, user, units);
    }

    /// One page of the active rooms (PROTOCOL.md v1.1 "Bounds").
    async fn list_rooms(&mut self, cursor: Option<String>, limit: Option<u64>) -> Result<(), End> {
        let after = match cursor.as_deref().map(RoomsCursor::parse) {
            None => None,
            Some(Some(after)) => Some(after),
            Some(None) => {
                return self
                    .error(
                        ErrorCode::BadFrame,
                        "rooms: cursor is not one this server gave",
                        None,
                    )
                    .await
            }
        };
        let limit = limit.unwrap_or(ROOMS_PAGE_MAX).clamp(1, ROOMS_PAGE_MAX) as usize;
        match self.ctx.hub.rooms(after.as_ref(), limit).await {
            Ok(page) => {
                let next = page
                    .more
                    .then(|| page.rooms.last().map(|r| RoomsCursor::at(r).encode()))
                    .flatten();
                self.reply(&ServerFrame::Rooms {
                    rooms: page.rooms,
                    next,
                })
                .await
            }
            Err(e) => self.unavailable(e, None).await,
        }
    }

    async fn leave(&mut self, room: &str) -> Result<(), End> {
        let Some(name) = self.member_room(room, None).await? else {
            return Ok(());
        };
        if let Some(i) = self.room_index(name.as_str()) {
            let room = self.rooms.swap_remove(i);
            self.outbox.close_room(&room.key);
        }
        self.ctx.hub.leave(&name, self.id).await;
        self.reply(&ServerFrame::Left {
            room: name.into_string(),
        })
        .await
    }

    async fn send(&mut self, room: &str, id: String, body: &str) -> Result<(), End> {
        let client_id = match ClientId::parse(&id) {
            Ok(c) => c,
            Err(e) => return self.error(e.code(), &e.to_string(), Some(id)).await,
        };
        let Some(name) = self.member_room(room, Some(&id)).await? else {
            return Ok(());
        };
        let body = match Body::parse(body) {
            Ok(b) => b,
            Err(e) => return self.error(e.code(), &e.to_string(), Some(id)).await,
        };
        let msg = Publication {
            id: message_id(),
            client_id: client_id.into_string(),
            from: User::clone(self.user()),
            body: body.into_string(),
            ts: now_ms(),
            trace: telemetry::traceparent(),
        };
        // The sender's `ack` comes before its own message (which the hub
        // may deliver before the publish is answered here): the outbox
        // keeps this connection's room frames until the ack went out.
        self.outbox.hold();
        let acked = self.publish(name, id, msg).await;
        self.outbox.release();
        acked?;
        self.forward().await
    }

    /// Publishes `msg` in `name` and answers the `ack` of `id` (or the error).
    async fn publish(&mut self, name: RoomName, id: String, msg: Publication) -> Result<(), End> {
        let started = Instant::now();
        match self.ctx.hub.publish(&name, msg).await {
            Ok(published) => {
                m::published(started.elapsed().as_secs_f64(), published.duplicate);
                self.reply(&ServerFrame::Ack {
                    id,
                    room: name.into_string(),
                    offset: published.offset,
                })
                .await
            }
            Err(e) => self.unavailable(e, Some(id)).await,
        }
    }

    async fn history(
        &mut self,
        room: &str,
        before: Option<u64>,
        limit: Option<u64>,
    ) -> Result<(), End> {
        let Some(name) = self.member_room(room, None).await? else {
            return Ok(());
        };
        let limit = limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
            .min(MAX_HISTORY_LIMIT) as usize;
        match self.ctx.hub.history(&name, before, limit).await {
            Ok(mut messages) => {
                keep_newest_within(&mut messages, self.ctx.config.max_reply_bytes);
                let bytes = self
                    .reply_len(&ServerFrame::History {
                        room: name.into_string(),
                        messages,
                    })
                    .await?;
                self.charge_reply(bytes);
                Ok(())
            }
            Err(e) => self.unavailable(e, None).await,
        }
    }

    async fn typing(&mut self, room: &str) -> Result<(), End> {
        let Some(name) = self.member_room(room, None).await? else {
            return Ok(());
        };
        let user = self.user.clone().expect("user is set after hello");
        match self.ctx.hub.typing(&name, &user).await {
            Ok(()) => Ok(()),
            Err(e) => self.unavailable(e, None).await,
        }
    }
}

/// Keeps the newest of `messages` (ascending offsets) whose JSON fits in
/// `budget` bytes, always at least one; returns whether any was dropped.
/// The bound of `joined.history` and `history` replies (PROTOCOL.md v1.1
/// "Bounds"): the client scrolls back for the rest.
fn keep_newest_within(messages: &mut Vec<ChatMessage>, budget: usize) -> bool {
    // The array's brackets, then each message's JSON and a comma.
    let mut used = 2usize;
    let mut keep = 0usize;
    for m in messages.iter().rev() {
        let size = codec::encoded_len(m) + 1;
        if keep > 0 && used + size > budget {
            break;
        }
        used += size;
        keep += 1;
    }
    let cut = messages.len() - keep;
    messages.drain(..cut);
    cut > 0
}

/// A new message id (the `id` of PROTOCOL.md's `message` frame): `m_` and
/// a UUIDv7's 32 lowercase hex digits, time ordered; written straight into its string
/// (`format!` cost about 940 instructions per message: callgrind).
fn message_id() -> String {
    let mut digits = uuid::Uuid::encode_buffer();
    let uuid = uuid::Uuid::now_v7();
    let mut id = String::with_capacity(2 + uuid::fmt::Simple::LENGTH);
    id.push_str("m_");
    id.push_str(uuid.simple().encode_lower(&mut digits));
    id
}

#[cfg(test)]
mod tests {
    use super::keep_newest_within;
    use protocol::{ChatMessage, User};

    fn message(offset: u64, body_bytes: usize) -> ChatMessage {
        ChatMessage {
            room: "r".into(),
            offset,
            id: format!("m_{offset}"),
            client_id: format!("c-{offset}"),
            from: User {
                id: "u_1".into(),
                name: "alice".into(),
            },
            body: "x".repeat(body_bytes),
            ts: 0,
        }
    }

    #[test]
    fn replies_keep_the_newest_messages_that_fit_and_always_one() {
        let mut all: Vec<ChatMessage> = (1..=10).map(|o| message(o, 1000)).collect();
        let one = crate::codec::encoded_len(&all[0]) + 1;
        assert!(keep_newest_within(&mut all, 3 * one + 10));
        assert_eq!(all.iter().map(|m| m.offset).collect::<Vec<_>>(), [8, 9, 10]);

        let mut huge = vec![message(1, 1000), message(2, 100_000)];
        assert!(keep_newest_within(&mut huge, 500));
        assert_eq!(
            huge.len(),
            1,
            "the newest is sent even when it alone is over"
        );
        assert_eq!(huge[0].offset, 2);

        let mut small: Vec<ChatMessage> = (1..=3).map(|o| message(o, 10)).collect();
        assert!(!keep_newest_within(&mut small, 100_000));
        assert_eq!(small.len(), 3);
    }
}
