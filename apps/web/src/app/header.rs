//! The title bar: the rooms drawer toggle with the unread total, the
//! connection status (with its retry button and a summary for assistive
//! technology), who we are and the "Change name" button, the docs link.

use super::{use_chat, Drawer};
use crate::platform;
use crate::state::{ChatState, Conn};
use leptos::prelude::*;
use ui::{Avatar, Badge, Button, ButtonVariant, StatusDot, Tone, TopBar};

#[component]
pub fn Header() -> impl IntoView {
    let chat = use_chat();
    let me = Memo::new(move |_| {
        chat.state.with(|s| {
            s.name
                .clone()
                .map(|n| (n, s.me.as_ref().map(|m| m.id.clone())))
        })
    });
    let toggle_rooms = move |_| {
        chat.drawer.update(|d| {
            *d = if *d == Drawer::Rooms {
                Drawer::None
            } else {
                Drawer::Rooms
            }
        })
    };
    let host_signed_in = Memo::new(move |_| {
        chat.state
            .with(|s| s.token.as_deref().is_some_and(crate::state::is_host_token))
    });
    let change_name = move |_| {
        let old = chat
            .state
            .with_untracked(|s| s.name.clone())
            .unwrap_or_default();
        chat.last_name.set(old);
        platform::stop(None);
        chat.state.update(|s| s.name = None);
        platform::persist_name(None);
    };
    view! {
        <TopBar title="Chat">
            <Show when=move || me.with(Option::is_some)>
                <button
                    type="button"
                    class="web-drawer-toggle"
                    aria-controls="sidebar"
                    aria-expanded=move || (chat.drawer.get() == Drawer::Rooms).to_string()
                    on:click=toggle_rooms
                >
                    "Rooms"
                    <UnreadTotal/>
                </button>
            </Show>
            <Status/>
            {move || {
                me.get()
                    .map(|(name, id)| {
                        view! {
                            <span class="web-me">
                                <Avatar name=name.clone() seed=id.unwrap_or_else(|| name.clone())/>
                                <span class="web-me-name">{name}</span>
                            </span>
                            // The host app names a user signed in with its
                            // token: there is no name to change here.
                            <Show when=move || !host_signed_in.get()>
                            <Button
                                variant=ButtonVariant::Ghost
                                label="Change name"
                                title="Change name"
                                on:click=change_name
                                attr:id="change-name"
                            >
                                <span class="web-wide-only">"Change name"</span>
                                <span class="web-narrow-only" aria-hidden="true">
                                    "✎"
                                </span>
                            </Button>
                            </Show>
                        }
                    })
            }}
            <a href="/docs" class="web-docs-link">
                "Docs"
            </a>
        </TopBar>
    }
}

#[component]
fn UnreadTotal() -> impl IntoView {
    let chat = use_chat();
    let total = Memo::new(move |_| chat.state.with(ChatState::total_unread));
    move || {
        let n = total.get();
        (n > 0).then(|| {
            view! {
                <Badge>{n}</Badge>
                <span class="ui-visually-hidden">" unread"</span>
            }
        })
    }
}

/// The connection state, naming the instance that serves this tab.
#[component]
fn Status() -> impl IntoView {
    let chat = use_chat();
    let conn = Memo::new(move |_| chat.state.with(|s| s.conn.clone()));
    let named = Memo::new(move |_| chat.state.with(|s| s.name.is_some()));
    let booting = move || !chat.booted.get();
    let state_name = move || {
        if booting() {
            "connecting"
        } else {
            conn.with(Conn::name)
        }
    };
    let server = move || match conn.get() {
        Conn::Connected { server } => server,
        _ => String::new(),
    };
    let tone = Signal::derive(move || match conn.get() {
        Conn::Connected { .. } => Tone::Ok,
        Conn::Connecting { .. } | Conn::Reconnecting { .. } => Tone::Busy,
        Conn::Offline { reason: Some(_) } => Tone::Danger,
        Conn::Offline { reason: None } if booting() => Tone::Busy,
        Conn::Offline { reason: None } => Tone::Muted,
    });
    // Said once per change to assistive technology (no countdown).
    let summary = move || match conn.get() {
        _ if booting() => "Loading".to_owned(),
        Conn::Connected { server } => format!("Connected to {server}"),
        Conn::Connecting { .. } => "Connecting".to_owned(),
        Conn::Reconnecting { .. } => "Connection lost, reconnecting".to_owned(),
        Conn::Offline { reason: Some(r) } => format!("Offline: {r}"),
        Conn::Offline { reason: None } => "Offline".to_owned(),
    };
    let text = move || match conn.get() {
        _ if booting() => "Loading…".to_owned(),
        Conn::Connected { server } => format!("Connected to {server}"),
        Conn::Connecting { attempt } if attempt > 1 => format!("Connecting… (attempt {attempt})"),
        Conn::Connecting { .. } => "Connecting…".to_owned(),
        Conn::Reconnecting { attempt, at_ms } => {
            let secs = ((at_ms - chat.clock.get()) as f64 / 1000.0).ceil().max(0.0);
            format!("Reconnecting in {secs} s (attempt {})", attempt + 1)
        }
        Conn::Offline { reason: Some(r) } => format!("Offline: {r}"),
        Conn::Offline { reason: None } => "Not connected".to_owned(),
    };
    let can_retry = move || {
        named.get() && matches!(conn.get(), Conn::Reconnecting { .. } | Conn::Offline { .. })
    };
    view! {
        <div
            id="status"
            class="web-status"
            class:web-status-failed=move || matches!(conn.get(), Conn::Offline { reason: Some(_) })
            data-state=state_name
            data-server=server
        >
            <StatusDot tone=tone/>
            <span class="web-status-text">{text}</span>
            <Show when=can_retry>
                <Button variant=ButtonVariant::Ghost on:click=move |_| platform::connect()>
                    {move || {
                        if matches!(conn.get(), Conn::Offline { .. }) {
                            "Reconnect"
                        } else {
                            "Retry now"
                        }
                    }}
                </Button>
            </Show>
        </div>
        <span class="ui-visually-hidden" aria-live="polite">
            {summary}
        </span>
    }
}
