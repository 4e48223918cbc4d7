//! What the views read of the model, derived on demand and never stored:
//! the rows of a message list ([`Row`], grouped by [`groups_with`]), the
//! typing line, the sorted member list, the room list ([`RoomEntry`]) and
//! the unread total. Nothing here changes the state.

use super::{ChatState, Pending, SendState};
use protocol::User;
use std::collections::BTreeMap;

/// Consecutive messages of one sender closer than this are grouped.
pub const GROUP_WINDOW_MS: i64 = 5 * 60 * 1_000;

/// How a displayed message is doing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowStatus {
    /// In the room (or acked: stored, its echo on the way).
    Sent,
    /// Ours, not yet stored.
    Pending,
    /// Ours, refused; `retry` says whether it is tried again.
    Failed { reason: String, retry: bool },
}

/// One line of the message list, ready to render.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Row {
    /// Stable identity: the server's message id, or our client id.
    pub key: String,
    pub offset: Option<u64>,
    pub client_id: String,
    pub from: User,
    pub body: String,
    pub ts: i64,
    /// Same sender as the row above, within [`GROUP_WINDOW_MS`]: shown
    /// without avatar and name.
    pub grouped: bool,
    pub mine: bool,
    pub status: RowStatus,
}

/// One entry of the room list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomEntry {
    pub name: String,
    /// Members across all instances, from the last `rooms` frame (or the
    /// member list of a live room when it is fresher).
    pub members: Option<u64>,
    pub unread: u32,
    /// This tab is in the room (live or to be joined).
    pub in_tab: bool,
    pub current: bool,
}

impl ChatState {
    /// The rows of `room`'s message list: stored messages by offset, then our
    /// pending ones (acked by offset, the rest in the order composed).
    pub fn rows(&self, room: &str) -> Vec<Row> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let me_id = self.me.as_ref().map(|m| m.id.as_str());
        let mut rows: Vec<Row> = r
            .messages
            .iter()
            .map(|m| Row {
                key: m.id.clone(),
                offset: Some(m.offset),
                client_id: m.client_id.clone(),
                from: m.from.clone(),
                body: m.body.clone(),
                ts: m.ts,
                grouped: false,
                mine: Some(m.from.id.as_str()) == me_id,
                status: RowStatus::Sent,
            })
            .collect();
        let me = self.me.clone().unwrap_or_else(|| User {
            id: String::new(),
            name: self.name.clone().unwrap_or_default(),
        });
        let mut pending: Vec<&Pending> = r.pending.iter().collect();
        pending.sort_by_key(|p| match p.state {
            SendState::Acked(o) => (0, o),
            _ => (1, 0),
        });
        rows.extend(pending.into_iter().map(|p| Row {
            key: p.client_id.clone(),
            offset: match p.state {
                SendState::Acked(o) => Some(o),
                _ => None,
            },
            client_id: p.client_id.clone(),
            from: me.clone(),
            body: p.body.clone(),
            ts: p.created_ms,
            grouped: false,
            mine: true,
            status: match &p.state {
                SendState::Acked(_) => RowStatus::Sent,
                SendState::Queued | SendState::Sent => RowStatus::Pending,
                SendState::Failed { reason, retry } => RowStatus::Failed {
                    reason: reason.clone(),
                    retry: *retry,
                },
            },
        }));
        for i in 1..rows.len() {
            let grouped = groups_with(&rows[i - 1], &rows[i]);
            rows[i].grouped = grouped;
        }
        rows
    }

    /// "alice is typing…" for `room` at `now`, if anyone is.
    pub fn typing_line(&self, room: &str, now: i64) -> Option<String> {
        let parts = self.typing_parts(room, now)?;
        Some(
            parts
                .into_iter()
                .map(|p| match p {
                    TypingPart::Name(s) | TypingPart::Text(s) => s,
                })
                .collect(),
        )
    }

    /// [`ChatState::typing_line`] in parts, so a view isolates each name
    /// (`<bdi>`): a name in a right-to-left script must not reorder the
    /// words around it.
    pub fn typing_parts(&self, room: &str, now: i64) -> Option<Vec<TypingPart>> {
        let r = self.rooms.get(room)?;
        let names: Vec<&str> = r
            .typing
            .values()
            .filter(|(_, until)| *until > now)
            .map(|(u, _)| u.name.as_str())
            .collect();
        let name = |n: &str| TypingPart::Name(n.to_owned());
        let text = |t: &str| TypingPart::Text(t.to_owned());
        match names.as_slice() {
            [] => None,
            [one] => Some(vec![name(one), text(" is typing…")]),
            [a, b] => Some(vec![name(a), text(" and "), name(b), text(" are typing…")]),
            [a, b, c] => Some(vec![
                name(a),
                text(", "),
                name(b),
                text(" and "),
                name(c),
                text(" are typing…"),
            ]),
            more => Some(vec![text(&format!("{} people are typing…", more.len()))]),
        }
    }

    /// The members of `room`, sorted by name.
    pub fn members(&self, room: &str) -> Vec<User> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let mut users: Vec<User> = r.members.values().cloned().collect();
        users.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then_with(|| a.id.cmp(&b.id))
        });
        users
    }

    /// The room list: this tab's rooms and the active ones, by name.
    pub fn room_list(&self) -> Vec<RoomEntry> {
        let mut list: BTreeMap<&str, RoomEntry> = BTreeMap::new();
        for info in &self.directory {
            list.insert(
                info.room.as_str(),
                RoomEntry {
                    name: info.room.clone(),
                    members: Some(info.members),
                    unread: 0,
                    in_tab: false,
                    current: false,
                },
            );
        }
        for r in self.rooms.values() {
            let e = list.entry(r.name.as_str()).or_insert_with(|| RoomEntry {
                name: r.name.clone(),
                members: None,
                unread: 0,
                in_tab: true,
                current: false,
            });
            e.in_tab = true;
            e.unread = r.unread;
            e.current = self.current.as_deref() == Some(r.name.as_str());
            if r.live {
                e.members = Some(r.members.len() as u64);
            }
        }
        list.into_values().collect()
    }

    /// Unread messages over all rooms.
    pub fn total_unread(&self) -> u32 {
        self.rooms.values().map(|r| r.unread).sum()
    }
}

/// Whether `row` continues `prev`'s group: same sender, both delivered or
/// pending alike, close in time.
pub fn groups_with(prev: &Row, row: &Row) -> bool {
    prev.from.id == row.from.id
        && prev.from.name == row.from.name
        && !matches!(prev.status, RowStatus::Failed { .. })
        && (0..GROUP_WINDOW_MS).contains(&(row.ts - prev.ts))
}

/// A piece of the "is typing" line: a user's name, to be isolated, or the
/// words between names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypingPart {
    Name(String),
    Text(String),
}
