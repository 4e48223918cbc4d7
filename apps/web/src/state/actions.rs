//! What the user's actions do to the model and which frames they send:
//! join, leave and select a room, compose a message, retry or discard a
//! refused one, say we are typing, ask for older history. Those that send
//! return the frames to write, and none while there is no connection: what
//! must go later (joins, pending sends) goes after `welcome` and `joined`.

use super::{ChatState, Pending, Room, SendState, HISTORY_PAGE, TYPING_SEND_EVERY_MS};
use protocol::{Body, ClientFrame, RoomName};

impl ChatState {
    /// Joins `room` (or just shows it if this tab is already in it).
    pub fn join(&mut self, room: &RoomName) -> Vec<ClientFrame> {
        let name = room.as_str();
        self.select(name);
        if self.rooms.contains_key(name) {
            return Vec::new();
        }
        let r = Room::new(name);
        let frame = r.join_frame();
        self.rooms.insert(name.to_owned(), r);
        self.current = Some(name.to_owned());
        if !self.is_connected() {
            return Vec::new();
        }
        self.joins_in_flight.push_back(name.to_owned());
        vec![frame]
    }

    /// Leaves `room`, dropping what this tab held of it.
    pub fn leave(&mut self, room: &str) -> Vec<ClientFrame> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let was_live = r.live;
        self.remove_room(room);
        if was_live && self.is_connected() {
            vec![
                ClientFrame::Leave {
                    room: room.to_owned(),
                },
                ClientFrame::Rooms {
                    cursor: None,
                    limit: None,
                },
            ]
        } else {
            Vec::new()
        }
    }

    /// Shows `room` and marks it read.
    pub fn select(&mut self, room: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.unread = 0;
            self.current = Some(room.to_owned());
        }
    }

    /// Posts `body` to `room`: it shows at once as pending and goes on the
    /// wire now if the room is live, else after the next `joined`.
    pub fn compose(&mut self, room: &str, body: Body, now: i64) -> Vec<ClientFrame> {
        self.next_id += 1;
        let client_id = format!("c-{}-{}", self.id_prefix, self.next_id);
        let connected = self.is_connected();
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        r.pending.push(Pending {
            client_id,
            body: body.into_string(),
            created_ms: now,
            state: SendState::Queued,
        });
        r.last_typing_sent = None;
        if connected && r.live {
            r.resend(false)
        } else {
            Vec::new()
        }
    }

    /// Sends failed-but-retriable messages again (called periodically).
    pub fn retry_failed(&mut self) -> Vec<ClientFrame> {
        if !self.is_connected() {
            return Vec::new();
        }
        self.rooms
            .values_mut()
            .filter(|r| r.live)
            .flat_map(|r| r.resend(true))
            .collect()
    }

    /// Forgets a pending message (after a refusal that will not pass).
    pub fn discard(&mut self, room: &str, client_id: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.pending.retain(|p| p.client_id != client_id);
        }
    }

    /// The user typed in `room`: a `typing` frame for it if we have not
    /// sent one recently.
    pub fn typed(&mut self, room: &str, now: i64) -> Option<ClientFrame> {
        if !self.is_connected() {
            return None;
        }
        let r = self.rooms.get_mut(room).filter(|r| r.live)?;
        if r.last_typing_sent
            .is_some_and(|t| now - t < TYPING_SEND_EVERY_MS && now >= t)
        {
            return None;
        }
        r.last_typing_sent = Some(now);
        Some(ClientFrame::Typing {
            room: room.to_owned(),
        })
    }

    /// A `history` request for the page before the oldest message shown, if
    /// there may be one and none is outstanding.
    pub fn older(&mut self, room: &str) -> Option<ClientFrame> {
        if !self.is_connected() {
            return None;
        }
        let r = self.rooms.get_mut(room).filter(|r| r.live)?;
        if r.loading_older || r.complete {
            return None;
        }
        let before = r.first_offset()?;
        r.loading_older = true;
        Some(ClientFrame::History {
            room: room.to_owned(),
            before: Some(before),
            limit: Some(HISTORY_PAGE),
        })
    }

    /// Drops the notice.
    pub fn dismiss_notice(&mut self) {
        self.notice = None;
    }
}
