//! The application shell and the page that holds the chat: [`shell`] (the
//! HTML document, rendered on the server), [`App`] (the router), the page
//! (`ChatPage`) with the `Chat` context every view reads, and the layout
//! that places the screen areas. Each area is a module of its own:
//! `header` (title bar, connection status), `sign_in` (name entry), `rooms`
//! (the room sidebar), `messages` (room header, notices, the message list,
//! typing line), `composer` and `members`.
//!
//! Views read one `RwSignal<ChatState>` through memos (so a row re-renders
//! only when it changed) and act through [`ChatState`]'s methods, writing
//! the frames those return with `platform::send`. They hold only view
//! state of their own: drafts, scroll position, which drawer is open.
//! Text from the network is rendered as text nodes only, never as HTML.
//!
//! Stable hooks for browser tests: `#name`, `#room-input`, `#rooms`,
//! `.web-message[data-offset][data-pending]`, `#status[data-state][data-server]`,
//! `#composer`, `#members`, `#typing`, `#new-messages`, `#notice`.

// The areas are `pub` only for the workspace's `unreachable_pub` lint: for a
// component that is not private, `#[component]` also emits a hidden twin
// (`__Header`) as a `pub fn` spanned at the written visibility, so
// `pub(super)` components would be flagged. The page uses them only here.
pub mod admin;
pub mod composer;
pub mod header;
pub mod members;
pub mod messages;
pub mod rooms;
pub mod sign_in;
#[cfg(all(test, feature = "ssr"))]
mod tests;

use crate::platform;
use crate::state::ChatState;
use composer::Composer;
use header::Header;
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;
use members::MemberList;
use messages::{MessageList, NoticeBar, RoomHeader, TypingLine};
use protocol::ClientFrame;
use rooms::{JoinForm, RoomList};
use sign_in::NameForm;
use ui::SidebarSection;

/// The HTML document around the app, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <meta name="description" content="A real-time chat: rooms, presence and typing, the same messages in the same order on every server, nothing lost when a connection drops."/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                // `/pkg/chat.css`, or `/pkg/chat.<hash>.css` when the build
                // hashed the file names (cargo-leptos `hash-files`).
                <HashedStylesheet id="leptos" options=options.clone()/>
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
        <Router>
            <Routes fallback=|| view! { <p class="web-notfound">"Page not found."</p> }>
                <Route path=path!("") view=ChatPage/>
                <Route path=path!("admin") view=admin::AdminPage/>
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
