//! The composer: the draft, sending on Enter, `typing` frames while the
//! user types, and `composer_state`, which says why it cannot send right
//! now (or how it will).

use super::use_chat;
use crate::platform;
use crate::state::{ChatState, Conn};
use leptos::prelude::*;
use protocol::validate::BodyError;
use protocol::Body;
use ui::{Button, TextArea};

/// Why the composer cannot send right now, or a note about how it will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ComposerState {
    pub(super) room: Option<String>,
    pub(super) disabled: bool,
    pub(super) note: Option<String>,
}

pub(super) fn composer_state(s: &ChatState, booted: bool) -> ComposerState {
    let room = s.current_room();
    let name = room.map(|r| r.name.clone());
    let (disabled, note) = match (&s.conn, room) {
        _ if !booted => (true, Some("Loading…".to_owned())),
        (Conn::Offline { reason }, _) => (
            true,
            Some(match reason {
                Some(r) => format!("Offline: {r}. Reconnect to send messages."),
                None => "Offline. Reconnect to send messages.".to_owned(),
            }),
        ),
        (_, None) => (true, Some("Join a room to start chatting.".to_owned())),
        (Conn::Connected { .. }, Some(r)) if !r.live && r.epoch.is_none() => {
            (true, Some(format!("Joining #{}…", r.name)))
        }
        (Conn::Connected { .. }, Some(r)) if !r.live => {
            (false, Some(format!("Re-joining #{}…", r.name)))
        }
        (Conn::Connected { .. }, Some(_)) => (false, None),
        (_, Some(r)) if r.epoch.is_none() => (true, Some("Connecting…".to_owned())),
        (_, Some(_)) => (
            false,
            Some("Not connected: messages will be sent when the connection is back.".to_owned()),
        ),
    };
    ComposerState {
        room: name,
        disabled,
        note,
    }
}

#[component]
pub fn Composer() -> impl IntoView {
    let chat = use_chat();
    let draft = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let composer = Memo::new(move |_| {
        let booted = chat.booted.get();
        chat.state.with(|s| composer_state(s, booted))
    });
    let disabled = Signal::derive(move || composer.with(|c| c.disabled));
    let textarea = NodeRef::<leptos::html::Textarea>::new();

    let submit = move || {
        let Some(room) =
            composer.with_untracked(|c| (!c.disabled).then(|| c.room.clone()).flatten())
        else {
            return;
        };
        match Body::parse(&draft.get_untracked()) {
            Ok(body) => {
                let now = platform::now_ms();
                chat.act(|s| s.compose(&room, body, now));
                draft.set(String::new());
                error.set(None);
            }
            Err(BodyError::Empty) => {}
            Err(e) => error.set(Some(e.to_string())),
        }
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            submit();
        }
    };
    let on_input = move |v: String| {
        error.set(None);
        let has_text = !v.trim().is_empty();
        draft.set(v);
        if has_text {
            if let Some(room) = chat.current() {
                let now = platform::now_ms();
                // Only the throttle's clock changes: nothing to re-render.
                if let Some(frame) = chat
                    .state
                    .try_update_untracked(|s| s.typed(&room, now))
                    .flatten()
                {
                    platform::send(vec![frame]);
                }
            }
        }
    };
    let label = move || match composer.with(|c| c.room.clone()) {
        Some(room) => format!("Message #{room}"),
        None => "Message".to_owned(),
    };
    let hint = move || {
        error
            .get()
            .or_else(|| composer.with(|c| c.note.clone()))
            .unwrap_or_else(|| "Enter to send · Shift+Enter for a new line".to_owned())
    };
    view! {
        <form
            class="web-composer"
            id="composer-form"
            on:submit=move |ev| {
                ev.prevent_default();
                submit();
                if let Some(el) = textarea.get_untracked() {
                    let _ = el.focus();
                }
            }
        >
            <div class="web-composer-row">
                <TextArea
                    id="composer"
                    label=Signal::derive(label)
                    hide_label=true
                    value=draft
                    on_input=on_input
                    on_keydown=on_keydown
                    placeholder=Signal::derive(label)
                    disabled=disabled
                    described_by="composer-hint"
                    node_ref=textarea
                />
                <Button kind="submit" disabled=disabled attr:id="send">
                    "Send"
                </Button>
            </div>
            <p
                class="web-composer-hint"
                class:web-error=move || error.with(Option::is_some)
                id="composer-hint"
                aria-live="polite"
            >
                {hint}
            </p>
        </form>
    }
}
