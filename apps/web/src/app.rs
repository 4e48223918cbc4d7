//! The application shell and the chat views.
//!
//! Views read one `RwSignal<ChatState>` through memos (so a row re-renders
//! only when it changed) and act through [`ChatState`]'s methods, writing
//! the frames those return with [`platform::send`]. They hold only view
//! state of their own: drafts, scroll position, which drawer is open.
//! Text from the network is rendered as text nodes only, never as HTML.
//!
//! Stable hooks for browser tests: `#name`, `#room-input`, `#rooms`,
//! `.web-message[data-offset][data-pending]`, `#status[data-state][data-server]`,
//! `#composer`, `#members`, `#typing`, `#new-messages`, `#notice`.

use crate::platform;
use crate::state::{ChatState, Conn, Row, RowStatus};
use leptos::html::Div;
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;
use protocol::validate::BodyError;
use protocol::{Body, ClientFrame, ErrorCode, Name, RoomName};
use ui::{
    Avatar, Badge, Button, ButtonVariant, Card, Delivery, EmptyState, MessageBubble,
    SidebarSection, StatusDot, TextArea, TextInput, Tone, TopBar,
};

/// The HTML document around the app, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The root component.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/chat.css"/>
        <Router>
            <Routes fallback=|| view! { <p class="web-notfound">"Page not found."</p> }>
                <Route path=path!("") view=ChatPage/>
            </Routes>
        </Router>
    }
}

/// Which drawer is open on a narrow screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drawer {
    None,
    Rooms,
    Members,
}

impl Drawer {
    fn as_str(self) -> &'static str {
        match self {
            Drawer::None => "none",
            Drawer::Rooms => "rooms",
            Drawer::Members => "members",
        }
    }
}

/// What every view of the page shares (all `Copy` handles).
#[derive(Clone, Copy)]
struct Chat {
    state: RwSignal<ChatState>,
    /// Wall clock in ms, ticking every second in the browser (typing notices
    /// expire and the reconnect countdown moves on it).
    clock: RwSignal<i64>,
    /// The browser has restored the stored session (false while rendering
    /// on the server and until hydration).
    booted: RwSignal<bool>,
    drawer: RwSignal<Drawer>,
    /// The name to offer when the user changes it.
    last_name: RwSignal<String>,
}

impl Chat {
    /// Runs an action on the state and writes the frames it returns.
    fn act(self, f: impl FnOnce(&mut ChatState) -> Vec<ClientFrame>) {
        if let Some(frames) = self.state.try_update(f) {
            platform::send(frames);
        }
    }

    fn current(self) -> Option<String> {
        self.state.with_untracked(|s| s.current.clone())
    }
}

fn use_chat() -> Chat {
    expect_context::<Chat>()
}

/// The chat: name entry until there is a name, then rooms, messages and
/// members.
#[component]
fn ChatPage() -> impl IntoView {
    let chat = Chat {
        state: RwSignal::new(ChatState::new(platform::random_tag())),
        clock: RwSignal::new(0),
        booted: RwSignal::new(false),
        drawer: RwSignal::new(Drawer::None),
        last_name: RwSignal::new(String::new()),
    };
    provide_context(chat);

    // Effects run only in the browser, once hydrated.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        crate::client::start(chat.state, chat.clock);
        chat.booted.set(true);
    });
    let remembered = Memo::new(move |_| {
        chat.state
            .with(|s| (s.name.is_some(), s.room_names(), s.current.clone()))
    });
    Effect::new(move |_| {
        let (named, rooms, current) = remembered.get();
        if chat.booted.get() && named {
            platform::persist_rooms(&rooms, current.as_deref());
        }
    });

    let need_name = Memo::new(move |_| chat.booted.get() && chat.state.with(|s| s.name.is_none()));
    let title = move || {
        chat.state.with(|s| {
            let unread = s.total_unread();
            match (&s.current, unread) {
                (Some(room), 0) => format!("#{room} · Chat"),
                (Some(room), n) => format!("({n}) #{room} · Chat"),
                (None, _) => "Chat".to_owned(),
            }
        })
    };

    view! {
        <Title text=title/>
        <div class="web-app" data-drawer=move || chat.drawer.get().as_str()>
            <Header/>
            {move || {
                if need_name.get() {
                    view! { <NameForm/> }.into_any()
                } else {
                    view! { <ChatLayout/> }.into_any()
                }
            }}
        </div>
    }
}

#[component]
fn Header() -> impl IntoView {
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

/// Name entry: the first thing a new visitor sees.
#[component]
fn NameForm() -> impl IntoView {
    let chat = use_chat();
    let draft = RwSignal::new(chat.last_name.get_untracked());
    let tried = RwSignal::new(false);
    let checked = Memo::new(move |_| draft.with(|d| Name::parse(d)));
    let show_error = move || tried.get() || !draft.with(String::is_empty);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        tried.set(true);
        if let Ok(name) = checked.get_untracked() {
            platform::persist_name(Some(name.as_str()));
            chat.state.update(|s| s.set_name(name));
            platform::connect();
        }
    };
    view! {
        <main class="web-name-page">
            <Card title="Join the conversation">
                <form class="web-name-form" on:submit=submit novalidate>
                    <TextInput
                        id="name"
                        label="Your name"
                        value=draft
                        on_input=move |v: String| draft.set(v)
                        autocomplete="nickname"
                        maxlength=64
                        autofocus=true
                        invalid=Signal::derive(move || show_error() && checked.with(Result::is_err))
                        described_by="name-hint"
                    />
                    <p class="web-hint" id="name-hint" aria-live="polite">
                        {move || match checked.get() {
                            Ok(n) => {
                                view! {
                                    <span class="web-preview">
                                        <Avatar name=n.as_str().to_owned() seed=n.as_str().to_owned()/>
                                        {n.as_str().to_owned()}
                                    </span>
                                }
                                    .into_any()
                            }
                            Err(e) if show_error() => {
                                view! { <span class="web-error">{e.to_string()}</span> }.into_any()
                            }
                            Err(_) => view! { <span>"1 to 32 characters."</span> }.into_any(),
                        }}
                    </p>
                    <Button kind="submit" attr:id="name-submit">
                        "Start chatting"
                    </Button>
                </form>
            </Card>
        </main>
    }
}

/// Rooms, the current room, and its members.
#[component]
fn ChatLayout() -> impl IntoView {
    let chat = use_chat();
    let close_drawer = move |_| chat.drawer.set(Drawer::None);
    view! {
        <div class="web-layout">
            <aside class="web-sidebar" id="sidebar" aria-label="Rooms">
                <SidebarSection title="Rooms" heading_id="rooms-title">
                    <RoomList/>
                </SidebarSection>
                <JoinForm/>
            </aside>
            <main class="web-room" aria-labelledby="room-title">
                <RoomHeader/>
                <NoticeBar/>
                <MessageList/>
                <TypingLine/>
                <Composer/>
            </main>
            <aside class="web-members-panel" id="members-panel" aria-labelledby="members-title">
                <MemberList/>
            </aside>
            <div class="web-scrim" aria-hidden="true" on:click=close_drawer></div>
        </div>
    }
}

#[component]
fn RoomList() -> impl IntoView {
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
                            class:web-room-mine=e.mine
                            data-room=name.clone()
                            data-unread=e.unread
                        >
                            <button
                                type="button"
                                class="web-room-button"
                                aria-current=e.current.then_some("page")
                                on:click=open
                                title=if e.mine { "Open" } else { "Join" }
                            >
                                <span class="web-room-hash" aria-hidden="true">
                                    "#"
                                </span>
                                <span class="web-room-name">{name.clone()}</span>
                                {unread}
                                {members}
                            </button>
                            {e
                                .mine
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
fn JoinForm() -> impl IntoView {
    let chat = use_chat();
    let draft = RwSignal::new(String::new());
    let local_error = RwSignal::new(None::<String>);
    let server_error = Memo::new(move |_| {
        chat.state.with(|s| {
            s.notice
                .as_ref()
                .filter(|n| matches!(n.code, Some(ErrorCode::BadRoom | ErrorCode::TooManyRooms)))
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

#[component]
fn RoomHeader() -> impl IntoView {
    let chat = use_chat();
    let info = Memo::new(move |_| {
        chat.state.with(|s| {
            s.current_room()
                .map(|r| (r.name.clone(), r.joined.then_some(r.members.len())))
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
fn NoticeBar() -> impl IntoView {
    let chat = use_chat();
    let notice = Memo::new(move |_| {
        chat.state.with(|s| {
            s.notice
                .as_ref()
                .filter(|n| !matches!(n.code, Some(ErrorCode::BadRoom | ErrorCode::TooManyRooms)))
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
fn MessageList() -> impl IntoView {
    let chat = use_chat();
    let rows = Memo::new(move |_| {
        chat.state
            .with(|s| s.current.as_ref().map(|c| s.rows(c)).unwrap_or_default())
    });
    let room = Memo::new(move |_| {
        chat.state.with(|s| {
            s.current_room()
                .map(|r| (r.name.clone(), r.joined, r.loading_older, r.complete))
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
fn TypingLine() -> impl IntoView {
    let chat = use_chat();
    let line = Memo::new(move |_| {
        let now = chat.clock.get();
        chat.state.with(|s| {
            s.current
                .as_ref()
                .and_then(|c| s.typing_line(c, now))
                .unwrap_or_default()
        })
    });
    view! {
        <p class="web-typing" id="typing">
            {move || line.get()}
        </p>
    }
}

/// Why the composer cannot send right now, or a note about how it will.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ComposerState {
    room: Option<String>,
    disabled: bool,
    note: Option<String>,
}

fn composer_state(s: &ChatState, booted: bool) -> ComposerState {
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
        (Conn::Connected { .. }, Some(r)) if !r.joined && r.epoch.is_none() => {
            (true, Some(format!("Joining #{}…", r.name)))
        }
        (Conn::Connected { .. }, Some(r)) if !r.joined => {
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
fn Composer() -> impl IntoView {
    let chat = use_chat();
    let draft = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let state = Memo::new(move |_| {
        let booted = chat.booted.get();
        chat.state.with(|s| composer_state(s, booted))
    });
    let disabled = Signal::derive(move || state.with(|c| c.disabled));
    let textarea = NodeRef::<leptos::html::Textarea>::new();

    let submit = move || {
        let Some(room) = state.with_untracked(|c| (!c.disabled).then(|| c.room.clone()).flatten())
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
        let typing = !v.trim().is_empty();
        draft.set(v);
        if typing {
            if let Some(room) = chat.current() {
                let now = platform::now_ms();
                // Only the throttle's clock changes: nothing to re-render.
                if let Some(frame) = chat
                    .state
                    .try_update_untracked(|s| s.typing(&room, now))
                    .flatten()
                {
                    platform::send(vec![frame]);
                }
            }
        }
    };
    let label = move || match state.with(|c| c.room.clone()) {
        Some(room) => format!("Message #{room}"),
        None => "Message".to_owned(),
    };
    let hint = move || {
        error
            .get()
            .or_else(|| state.with(|c| c.note.clone()))
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

#[component]
fn MemberList() -> impl IntoView {
    let chat = use_chat();
    let members = Memo::new(move |_| {
        chat.state
            .with(|s| s.current.as_ref().map(|c| s.members(c)).unwrap_or_default())
    });
    let me = Memo::new(move |_| chat.state.with(|s| s.me.as_ref().map(|m| m.id.clone())));
    // While the room is not joined the list is what it was: shown, but dimmed.
    let live = Memo::new(move |_| {
        chat.state
            .with(|s| s.current_room().is_some_and(|r| r.joined))
    });
    let tone = Signal::derive(move || if live.get() { Tone::Ok } else { Tone::Muted });
    view! {
        <SidebarSection title="Members" heading_id="members-title">
            <ul class="web-members" id="members" data-live=move || live.get().to_string()>
                <For each=move || members.get() key=|u| u.clone() let:user>
                    {
                        let you = me.with_untracked(|m| m.as_deref() == Some(user.id.as_str()));
                        view! {
                            <li class="web-member" data-user=user.id.clone()>
                                <Avatar name=user.name.clone() seed=user.id.clone()/>
                                <span class="web-member-name">{user.name.clone()}</span>
                                {you.then(|| view! { <span class="web-muted">" (you)"</span> })}
                                <StatusDot tone=tone/>
                            </li>
                        }
                    }
                </For>
            </ul>
        </SidebarSection>
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use protocol::ServerFrame;

    #[test]
    fn bodies_and_names_render_as_text() {
        let owner = Owner::new();
        let html = owner.with(|| {
            view! {
                <MessageBubble
                    name="<b>mallory</b>"
                    seed="u_1"
                    time="10:00"
                    datetime="10:00"
                    body="<img src=x onerror=alert(1)>"
                />
            }
            .to_html()
        });
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        assert!(html.contains("&lt;b&gt;mallory&lt;/b&gt;"), "{html}");
        assert!(!html.contains("<img") && !html.contains("<b>"), "{html}");
    }

    #[test]
    fn the_composer_says_why_it_cannot_send() {
        let mut s = ChatState::new("t");
        assert!(composer_state(&s, false).disabled);
        assert!(composer_state(&s, true).disabled, "offline");

        s.set_name(Name::parse("me").unwrap());
        s.connecting();
        s.apply(
            ServerFrame::Welcome {
                protocol: 1,
                user: protocol::User {
                    id: "u_me".to_owned(),
                    name: "me".to_owned(),
                },
                token: "t".to_owned(),
                server: "a".to_owned(),
            },
            0,
        );
        let joining = composer_state(&s, true);
        assert!(joining.disabled);
        assert_eq!(joining.note.as_deref(), Some("Joining #general…"));

        s.apply(
            ServerFrame::Joined {
                room: "general".to_owned(),
                epoch: "e".to_owned(),
                offset: 0,
                members: vec![],
                history: vec![],
                recovered: false,
            },
            0,
        );
        assert_eq!(
            composer_state(&s, true),
            ComposerState {
                room: Some("general".to_owned()),
                disabled: false,
                note: None
            }
        );

        // Reconnecting: still writable; messages queue as pending.
        s.on_close(1006, 0, 0.5);
        let queued = composer_state(&s, true);
        assert!(!queued.disabled);
        assert!(queued.note.is_some_and(|n| n.contains("will be sent")));

        // A terminal close disables it, with the reason.
        s.on_close(1008, 0, 0.5);
        let offline = composer_state(&s, true);
        assert!(offline.disabled);
        assert!(offline.note.is_some_and(|n| n.starts_with("Offline")));
    }
}
