//! The documentation site. Pages are Leptos components rendered to static
//! HTML on the server (no hydration: docs need no client code) and served
//! by `apps/server` under `/docs`. Examples of frames are produced from the
//! real `protocol` types, so the docs cannot drift from the code.

use leptos::prelude::*;
use protocol::{ChatMessage, ClientFrame, ServerFrame, User};
use ui::{Card, TopBar};

/// One page of the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Path under `/docs` (`""` is the index).
    pub slug: &'static str,
    pub title: &'static str,
}

/// Every page, in navigation order.
pub const PAGES: &[Page] = &[
    Page {
        slug: "",
        title: "Overview",
    },
    Page {
        slug: "protocol",
        title: "Protocol",
    },
];

/// Renders the page at `path` (relative to `/docs`, without slashes at
/// either end) as a complete HTML document, or `None` if there is none.
#[cfg(feature = "ssr")]
pub fn render(path: &str) -> Option<String> {
    let page = *PAGES.iter().find(|p| p.slug == path.trim_matches('/'))?;
    let body = match page.slug {
        "" => view! { <Overview/> }.into_any(),
        "protocol" => view! { <Protocol/> }.into_any(),
        _ => return None,
    };
    let html = view! {
        <TopBar title="Chat docs" href="/docs">
            {PAGES
                .iter()
                .map(|p| view! { <a href=href(p)>{p.title}</a> })
                .collect_view()}
            <a href="/">"Open the chat"</a>
        </TopBar>
        <main class="docs-main">{body}</main>
    }
    .to_html();
    Some(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Chat docs</title><link rel=\"stylesheet\" href=\"/pkg/chat.css\"></head>\
         <body>{html}</body></html>",
        page.title
    ))
}

/// The URL of a page.
pub fn href(page: &Page) -> String {
    if page.slug.is_empty() {
        "/docs".to_owned()
    } else {
        format!("/docs/{}", page.slug)
    }
}

#[component]
fn Overview() -> impl IntoView {
    view! {
        <h1>"Chat that scales out"</h1>
        <p>
            "Browsers hold a WebSocket to any of N identical server instances behind a load balancer. "
            "Redis (or Valkey) carries each room's messages between instances over pub/sub and keeps "
            "each room's recent history in a capped stream, so a client that reconnects to any "
            "instance recovers exactly what it missed by epoch and offset."
        </p>
        <Card title="Run it">
            <pre><code>"make run    # one instance, in-process engine, http://127.0.0.1:3000\nmake test   # every check CI runs"</code></pre>
        </Card>
    }
}

/// One example per frame type, produced from the real types.
pub fn frame_examples() -> (Vec<ClientFrame>, Vec<ServerFrame>) {
    let alice = User {
        id: "u_alice".to_owned(),
        name: "alice".to_owned(),
    };
    let message = ChatMessage {
        room: "general".to_owned(),
        offset: 58,
        id: "m_0192".to_owned(),
        client_id: "c-17".to_owned(),
        from: alice.clone(),
        body: "hi".to_owned(),
        ts: 1_763_800_000_000,
    };
    let client = vec![
        ClientFrame::Hello {
            name: "alice".to_owned(),
            token: None,
        },
        ClientFrame::Join {
            room: "general".to_owned(),
            since: None,
        },
        ClientFrame::Send {
            room: "general".to_owned(),
            id: "c-17".to_owned(),
            body: "hi".to_owned(),
        },
        ClientFrame::Ping,
    ];
    let server = vec![
        ServerFrame::Ack {
            id: "c-17".to_owned(),
            room: "general".to_owned(),
            offset: 58,
        },
        ServerFrame::Message(message),
        ServerFrame::Pong,
    ];
    (client, server)
}

#[component]
fn Protocol() -> impl IntoView {
    let (client, server) = frame_examples();
    let row = |kind: &'static str, json: String| {
        view! {
            <tr>
                <td><code>{kind}</code></td>
                <td><pre><code>{json}</code></pre></td>
            </tr>
        }
    };
    view! {
        <h1>"Protocol v1"</h1>
        <p>"Every frame is one JSON text message with a \"type\" tag. Examples below are serialised from the protocol crate's types."</p>
        <h2>"Client → server"</h2>
        <table class="docs-frames">
            {client.iter().map(|f| row(f.kind(), f.to_json())).collect_view()}
        </table>
        <h2>"Server → client"</h2>
        <table class="docs-frames">
            {server.iter().map(|f| row(f.kind(), f.to_json())).collect_view()}
        </table>
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;

    #[test]
    fn every_page_renders_and_unknown_paths_do_not() {
        for page in PAGES {
            let html = render(page.slug).expect("page renders");
            assert!(html.contains(page.title), "{}", page.title);
        }
        assert!(render("no-such-page").is_none());
    }

    #[test]
    fn protocol_page_examples_parse_back() {
        let html = render("protocol").unwrap();
        let (client, server) = frame_examples();
        for f in &client {
            assert_eq!(&ClientFrame::from_json(&f.to_json()).unwrap(), f);
            assert!(html.contains(f.kind()));
        }
        for f in &server {
            assert_eq!(&ServerFrame::from_json(&f.to_json()).unwrap(), f);
        }
    }
}
