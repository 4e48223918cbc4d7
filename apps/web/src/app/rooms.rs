//! The rooms sidebar: the room list (this tab's rooms and the active ones,
//! with unread and member counts; open, join or leave) and the form that
//! joins or creates a room by name.

use super::{use_chat, Drawer};
use crate::state::ChatState;
use leptos::prelude::*;
use protocol::{ErrorCode, RoomName};
use ui::{Badge, Button, TextInput};

#[component]
pub fn RoomList() -> impl IntoView {
    let chat = use_chat();
    let entries = Memo::new(move |_| chat.state.with(ChatState::room_list));
    view! {
        <ul class="web-rooms" id="rooms">
            <For each=move || entries.get() key=|e| e.clone() let:e>
                {
                    let name = e.name.clone();
                    let open = {
                        let name = name.clone();
                        move |_| {
                            chat.drawer.set(Drawer::None);
                            let Ok(room) = RoomName::parse(&name) else { return };
                            chat.act(|s| s.join(&room));
                        }
                    };
                    let leave = {
                        let name = name.clone();
                        move |_| chat.act(|s| s.leave(&name))
                    };
                    let members = e.members.map(|n| {
                        view! {
                            <span class="web-room-count" title="Members">
                                <PersonIcon/>
                                {n}
                                <span class="ui-visually-hidden">" members"</span>
                            </span>
                        }
                    });
                    let unread = (e.unread > 0)
                        .then(|| {
                            view! {
                                <Badge>{e.unread}</Badge>
                                <span class="ui-visually-hidden">" unread"</span>
                            }
                        });
                    view! {
                        <li
                            class="web-room-entry"
                            class:web-room-current=e.current
                            class:web-room-mine=e.in_tab
                            data-room=name.clone()
                            data-unread=e.unread
                        >
                            <button
                                type="button"
                                class="web-room-button"
                                aria-current=e.current.then_some("page")
                                on:click=open
                                title=if e.in_tab { "Open" } else { "Join" }
                            >
                                <span class="web-room-hash" aria-hidden="true">
                                    "#"
                                </span>
                                <span class="web-room-name">{name.clone()}</span>
                                {unread}
                                {members}
                            </button>
                            {e
                                .in_tab
                                .then(|| {
                                    view! {
                                        <button
                                            type="button"
                                            class="web-room-leave"
                                            aria-label=format!("Leave #{name}")
                                            title="Leave"
                                            on:click=leave
                                        >
                                            "×"
                                        </button>
                                    }
                                })}
                        </li>
                    }
                }
            </For>
        </ul>
    }
}

/// A small person outline, beside member counts.
#[component]
fn PersonIcon() -> impl IntoView {
    view! {
        <svg class="web-icon" viewBox="0 0 16 16" aria-hidden="true">
            <circle cx="8" cy="5" r="3"></circle>
            <path d="M2 15c0-3.3 2.7-5.5 6-5.5s6 2.2 6 5.5z"></path>
        </svg>
    }
}

/// Join or create a room by name.
#[component]
pub fn JoinForm() -> impl IntoView {
    let chat = use_chat();
    let draft = RwSignal::new(String::new());
    let local_error = RwSignal::new(None::<String>);
    let server_error = Memo::new(move |_| {
        chat.state.with(|s| {
            s.notice
                .as_ref()
                .filter(|n| {
                    matches!(
                        n.code,
                        Some(ErrorCode::BadRoom | ErrorCode::TooManyRooms | ErrorCode::Forbidden)
                    )
                })
                .map(|n| n.text.clone())
        })
    });
    let error = move || local_error.get().or_else(|| server_error.get());
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let raw = draft.get_untracked();
        let raw = raw.trim().trim_start_matches('#');
        match RoomName::parse(raw) {
            Ok(room) => {
                local_error.set(None);
                draft.set(String::new());
                chat.drawer.set(Drawer::None);
                chat.state.update(ChatState::dismiss_notice);
                chat.act(|s| s.join(&room));
            }
            Err(e) => local_error.set(Some(e.to_string())),
        }
    };
    let on_input = move |v: String| {
        local_error.set(None);
        draft.set(v);
    };
    view! {
        <form class="web-join-form" id="join-form" on:submit=submit novalidate>
            <TextInput
                id="room-input"
                label="Join or create a room"
                value=draft
                on_input=on_input
                placeholder="room-name"
                autocomplete="off"
                maxlength=65
                invalid=Signal::derive(move || error().is_some())
                described_by="room-error"
            />
            <Button kind="submit" attr:id="join-button">
                "Join"
            </Button>
            <p class="web-field-error" id="room-error" aria-live="polite">
                {error}
            </p>
        </form>
    }
}
