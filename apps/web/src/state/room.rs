//! One room as this tab holds it ([`Room`]): its messages by offset, the
//! position a re-join resumes from, members, typing users, unread count, and
//! our sends on their way ([`Pending`], [`SendState`]). The rules that only
//! need the room live here: insert without duplicates, settle pending sends
//! the room now holds, (re)send the queue, the `join` frame with `since`.
//! What a server frame means for the tab as a whole is `ChatState`'s.

use protocol::{ChatMessage, ClientFrame, Since, User};
use std::collections::BTreeMap;

/// Where a message of ours is on its way to the room.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SendState {
    /// Not written on the current connection (offline, or before re-join).
    Queued,
    /// Written; no `ack` yet.
    Sent,
    /// Stored by the server at this offset; its `message` has not arrived.
    Acked(u64),
    /// Refused. `retry`: the cause is transient (rate limit, store
    /// unavailable) and the send is tried again later with the same id.
    Failed { reason: String, retry: bool },
}

/// A message this tab sent that the room has not shown back yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub client_id: String,
    pub body: String,
    /// Local time it was composed, for display and grouping.
    pub created_ms: i64,
    pub state: SendState,
}

/// A room this tab is in: live on the current connection, or to be joined
/// once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub name: String,
    /// The current connection has had `joined` for it: live messages are
    /// accepted and sends go out at once.
    pub live: bool,
    /// The epoch of `messages`; `None` until the first `joined`.
    pub epoch: Option<String>,
    /// Highest offset received live or in `joined`; the `since` of a re-join.
    pub last_seen: u64,
    /// Known messages, ascending by offset.
    pub messages: Vec<ChatMessage>,
    /// Our sends not yet shown back, in the order they were composed.
    pub pending: Vec<Pending>,
    /// Current members by user id (a set: duplicates are harmless).
    pub members: BTreeMap<String, User>,
    /// Users typing, by id, with the time their notice expires.
    pub typing: BTreeMap<String, (User, i64)>,
    /// Messages from others that arrived while the room was not shown.
    pub unread: u32,
    /// A `history` request is outstanding.
    pub loading_older: bool,
    /// Nothing older than `messages[0]` exists (or can be fetched).
    pub complete: bool,
    /// When we last sent `typing` here.
    pub(super) last_typing_sent: Option<i64>,
}

impl Room {
    pub(super) fn new(name: &str) -> Room {
        Room {
            name: name.to_owned(),
            live: false,
            epoch: None,
            last_seen: 0,
            messages: Vec::new(),
            pending: Vec::new(),
            members: BTreeMap::new(),
            typing: BTreeMap::new(),
            unread: 0,
            loading_older: false,
            complete: false,
            last_typing_sent: None,
        }
    }

    /// The `join` frame for this room: with `since` when we have a position.
    pub(super) fn join_frame(&self) -> ClientFrame {
        ClientFrame::Join {
            room: self.name.clone(),
            since: self.epoch.as_ref().map(|epoch| Since {
                epoch: epoch.clone(),
                offset: self.last_seen,
            }),
        }
    }

    /// Inserts a message in offset order unless its offset is already there.
    pub(super) fn insert(&mut self, msg: ChatMessage) -> bool {
        match self
            .messages
            .binary_search_by_key(&msg.offset, |m| m.offset)
        {
            Ok(_) => false,
            Err(at) => {
                self.messages.insert(at, msg);
                true
            }
        }
    }

    /// Drops pending sends the room now holds: the server's copy (same client
    /// id, from `me`) is in `messages`, or their acked offset is already seen.
    pub(super) fn settle_pending(&mut self, me: Option<&User>) {
        let Some(me) = me else { return };
        let last_seen = self.last_seen;
        let mine: Vec<&str> = self
            .messages
            .iter()
            .filter(|m| m.from.id == me.id)
            .map(|m| m.client_id.as_str())
            .collect();
        self.pending.retain(|p| {
            let echoed = mine.contains(&p.client_id.as_str());
            let seen = matches!(p.state, SendState::Acked(o) if o <= last_seen);
            !echoed && !seen
        });
    }

    /// `send` frames for every pending message that must (re)go on the wire,
    /// marking them sent.
    pub(super) fn resend(&mut self, include_retry: bool) -> Vec<ClientFrame> {
        let room = self.name.clone();
        self.pending
            .iter_mut()
            .filter(|p| match &p.state {
                SendState::Queued => true,
                SendState::Failed { retry, .. } => *retry && include_retry,
                SendState::Sent | SendState::Acked(_) => false,
            })
            .map(|p| {
                p.state = SendState::Sent;
                ClientFrame::Send {
                    room: room.clone(),
                    id: p.client_id.clone(),
                    body: p.body.clone(),
                }
            })
            .collect()
    }

    pub(super) fn first_offset(&self) -> Option<u64> {
        self.messages.first().map(|m| m.offset)
    }
}
