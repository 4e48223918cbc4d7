//! The room on screen, above the composer: its header (name, member count,
//! members drawer toggle), the notice bar, the message list (scrolling,
//! loading older history, the "new messages" button) with its items, and
//! the typing line.

use super::{use_chat, Drawer};
use crate::platform;
use crate::state::{ChatState, Row, RowStatus, TypingPart};
use leptos::html::Div;
use leptos::prelude::*;
use protocol::ErrorCode;
use ui::{Button, ButtonVariant, Delivery, EmptyState, MessageBubble};

#[component]
pub fn RoomHeader() -> impl IntoView {
    let chat = use_chat();
    let info = Memo::new(move |_| {
        chat.state.with(|s| {
            s.current_room()
                .map(|r| (r.name.clone(), r.live.then_some(r.members.len())))
        })
    });
    let toggle_members = move |_| {
        chat.drawer.update(|d| {
            *d = if *d == Drawer::Members {
                Drawer::None
            } else {
                Drawer::Members
            }
        })
    };
    let members_text = move || match info.get().and_then(|(_, n)| n) {
        Some(1) => "1 member".to_owned(),
        Some(n) => format!("{n} members"),
        None => "Members".to_owned(),
    };
    view! {
        <header class="web-room-header">
            <h1 class="web-room-title" id="room-title">
                {move || match info.get() {
                    Some((name, _)) => format!("#{name}"),
                    None => "No room".to_owned(),
                }}
            </h1>
            <span class="web-room-meta">{move || members_text()}</span>
            <button
                type="button"
                class="web-members-toggle"
                aria-controls="members-panel"
                aria-expanded=move || (chat.drawer.get() == Drawer::Members).to_string()
                on:click=toggle_members
            >
                {members_text}
            </button>
        </header>
    }
}

/// Errors that are not about a message or the join form.
#[component]
pub fn NoticeBar() -> impl IntoView {
    let chat = use_chat();
    let notice = Memo::new(move |_| {
        chat.state.with(|s| {
            s.notice
                .as_ref()
                .filter(|n| {
                    !matches!(
                        n.code,
                        Some(ErrorCode::BadRoom | ErrorCode::TooManyRooms | ErrorCode::Forbidden)
                    )
                })
                .map(|n| n.text.clone())
        })
    });
    move || {
        notice.get().map(|text| {
            view! {
                <div class="web-notice" id="notice" role="alert">
                    <span>{text}</span>
                    <button
                        type="button"
                        class="web-notice-close"
                        aria-label="Dismiss"
                        on:click=move |_| chat.state.update(ChatState::dismiss_notice)
                    >
                        "×"
                    </button>
                </div>
            }
        })
    }
}

/// What the message list's last change was, to decide how to scroll.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListShape {
    room: Option<String>,
    first: Option<String>,
    last: Option<String>,
    last_mine: bool,
    len: usize,
}

#[component]
pub fn MessageList() -> impl IntoView {
    let chat = use_chat();
    let rows = Memo::new(move |_| {
        chat.state
            .with(|s| s.current.as_ref().map(|c| s.rows(c)).unwrap_or_default())
    });
    let room = Memo::new(move |_| {
        chat.state.with(|s| {
            s.current_room()
                .map(|r| (r.name.clone(), r.live, r.loading_older, r.complete))
        })
    });
    let scroller = NodeRef::<Div>::new();
    // Scroll position, updated by scroll events (not by content changes).
    let at_bottom = StoredValue::new(true);
    let from_bottom = StoredValue::new(0i32);
    let unseen = RwSignal::new(0usize);

    // Called on every scroll event near the top: the state is touched (and
    // its readers notified) only when a request actually goes out.
    let load_older = move || {
        let Some(room) = chat.current() else { return };
        if let Some(frame) = chat
            .state
            .try_update_untracked(|s| s.older(&room))
            .flatten()
        {
            chat.state.notify();
            platform::send(vec![frame]);
        }
    };
    let scroll_to_bottom = move || {
        if let Some(el) = scroller.get_untracked() {
            el.set_scroll_top(el.scroll_height());
        }
        at_bottom.set_value(true);
        unseen.set(0);
    };
    let on_scroll = move |_| {
        let Some(el) = scroller.get_untracked() else {
            return;
        };
        let top = el.scroll_top();
        let height = el.scroll_height();
        let near_bottom = height - top - el.client_height() < 48;
        at_bottom.set_value(near_bottom);
        from_bottom.set_value(height - top);
        if near_bottom && unseen.get_untracked() > 0 {
            unseen.set(0);
        }
        if top < 80 {
            load_older();
        }
    };

    Effect::new(move |prev: Option<ListShape>| {
        let shape = rows.with(|r| ListShape {
            room: chat.state.with_untracked(|s| s.current.clone()),
            first: r.first().map(|r| r.key.clone()),
            last: r.last().map(|r| r.key.clone()),
            last_mine: r.last().is_some_and(|r| r.mine),
            len: r.len(),
        });
        enum Scroll {
            Bottom,
            Keep,
            None,
        }
        let scroll = match &prev {
            None => Scroll::Bottom,
            Some(p) if p.room != shape.room => {
                unseen.set(0);
                Scroll::Bottom
            }
            Some(p) if p.last != shape.last => {
                if at_bottom.get_value() || shape.last_mine {
                    Scroll::Bottom
                } else {
                    unseen.update(|n| *n += shape.len.saturating_sub(p.len).max(1));
                    Scroll::None
                }
            }
            Some(p) if p.first != shape.first => Scroll::Keep,
            Some(_) => Scroll::None,
        };
        request_animation_frame(move || {
            // The list may have been unmounted before the frame.
            let Some(el) = scroller.try_get_untracked().flatten() else {
                return;
            };
            match scroll {
                Scroll::Bottom => scroll_to_bottom(),
                Scroll::Keep => el.set_scroll_top(el.scroll_height() - from_bottom.get_value()),
                Scroll::None => {}
            }
            from_bottom.set_value(el.scroll_height() - el.scroll_top());
            // A list too short to scroll cannot be scrolled to the top.
            if el.scroll_height() <= el.client_height() + 8 {
                load_older();
            }
        });
        shape
    });

    let label = move || match room.get() {
        Some((name, ..)) => format!("Messages in #{name}"),
        None => "Messages".to_owned(),
    };
    view! {
        <div class="web-messages-wrap">
            <div
                class="web-messages"
                id="messages"
                node_ref=scroller
                on:scroll=on_scroll
                role="log"
                aria-live="polite"
                aria-relevant="additions"
                aria-label=label
                tabindex="0"
            >
                <div class="web-history-edge">
                    {move || match room.get() {
                        None => {
                            view! {
                                <EmptyState title="No room open">
                                    <p>"Join a room from the list, or create one."</p>
                                </EmptyState>
                            }
                                .into_any()
                        }
                        Some((_, false, ..)) if rows.with(Vec::is_empty) => {
                            view! { <p class="web-muted">"Loading messages…"</p> }.into_any()
                        }
                        Some((_, _, true, _)) => {
                            view! { <p class="web-muted">"Loading older messages…"</p> }.into_any()
                        }
                        Some((name, _, _, true)) => {
                            view! {
                                <p class="web-muted">
                                    "This is the beginning of #" {name} "."
                                </p>
                            }
                                .into_any()
                        }
                        Some(_) => {
                            view! {
                                <Button variant=ButtonVariant::Ghost on:click=move |_| load_older()>
                                    "Load older messages"
                                </Button>
                            }
                                .into_any()
                        }
                    }}
                </div>
                <ol class="web-message-list">
                    <For each=move || rows.get() key=|row| row.clone() let:row>
                        <MessageItem row=row/>
                    </For>
                </ol>
            </div>
            <Show when=move || { unseen.get() > 0 }>
                <button
                    type="button"
                    id="new-messages"
                    class="web-new-messages"
                    on:click=move |_| scroll_to_bottom()
                >
                    {move || match unseen.get() {
                        1 => "1 new message ↓".to_owned(),
                        n => format!("{n} new messages ↓"),
                    }}
                </button>
            </Show>
        </div>
    }
}

#[component]
fn MessageItem(row: Row) -> impl IntoView {
    let chat = use_chat();
    let pending = row.status == RowStatus::Pending;
    let failed = matches!(row.status, RowStatus::Failed { .. });
    let delivery = match &row.status {
        RowStatus::Sent => Delivery::Sent,
        RowStatus::Pending => Delivery::Pending,
        RowStatus::Failed { reason, retry } => Delivery::Failed(if *retry {
            format!("{reason} (will retry)")
        } else {
            reason.clone()
        }),
    };
    let discard = {
        let client_id = row.client_id.clone();
        move |_| {
            if let Some(room) = chat.current() {
                chat.state.update(|s| s.discard(&room, &client_id));
            }
        }
    };
    view! {
        <li
            class="web-message"
            data-offset=row.offset.map(|o| o.to_string())
            data-pending=pending.to_string()
            data-failed=failed.to_string()
            data-client-id=row.client_id.clone()
            data-from=row.from.id.clone()
        >
            <MessageBubble
                name=row.from.name.clone()
                seed=row.from.id.clone()
                time=platform::local_time(row.ts)
                datetime=platform::local_datetime(row.ts)
                body=row.body.clone()
                grouped=row.grouped
                mine=row.mine
                delivery=delivery
            >
                {failed
                    .then(|| {
                        view! {
                            <Button variant=ButtonVariant::Ghost on:click=discard>
                                "Dismiss"
                            </Button>
                        }
                    })}
            </MessageBubble>
        </li>
    }
}

#[component]
pub fn TypingLine() -> impl IntoView {
    let chat = use_chat();
    let parts = Memo::new(move |_| {
        let now = chat.clock.get();
        chat.state.with(|s| {
            s.current
                .as_ref()
                .and_then(|c| s.typing_parts(c, now))
                .unwrap_or_default()
        })
    });
    view! {
        <p class="web-typing" id="typing">
            {move || {
                parts
                    .get()
                    .into_iter()
                    .map(|p| match p {
                        TypingPart::Name(n) => view! { <bdi>{n}</bdi> }.into_any(),
                        TypingPart::Text(t) => t.into_any(),
                    })
                    .collect_view()
            }}
        </p>
    }
}
