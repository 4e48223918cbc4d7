//! The list of pages, their URLs, and the layout every page shares: the top
//! bar (link to the chat) and the sidebar with every page.

use leptos::prelude::*;
use ui::TopBar;

/// Which page, so that rendering matches over every page exhaustively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageId {
    Overview,
    QuickStart,
    Protocol,
    Configuration,
    Operations,
    HttpApi,
    Internals,
    Benchmarks,
}

/// One page of the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub id: PageId,
    /// Path under `/docs` (`""` is the index).
    pub slug: &'static str,
    /// The page's `<h1>`, its `<title>` and its name in the navigation.
    pub title: &'static str,
}

/// Every page, in navigation order.
pub const PAGES: &[Page] = &[
    Page {
        id: PageId::Overview,
        slug: "",
        title: "Overview",
    },
    Page {
        id: PageId::QuickStart,
        slug: "quick-start",
        title: "Quick start",
    },
    Page {
        id: PageId::Protocol,
        slug: "protocol",
        title: "Protocol reference",
    },
    Page {
        id: PageId::Configuration,
        slug: "configuration",
        title: "Configuration",
    },
    Page {
        id: PageId::Operations,
        slug: "operations",
        title: "Operations",
    },
    Page {
        id: PageId::HttpApi,
        slug: "http-api",
        title: "HTTP API",
    },
    Page {
        id: PageId::Internals,
        slug: "internals",
        title: "Internals",
    },
    Page {
        id: PageId::Benchmarks,
        slug: "benchmarks",
        title: "Benchmarks",
    },
];

/// The URL of a page.
pub fn href(page: &Page) -> String {
    if page.slug.is_empty() {
        "/docs".to_owned()
    } else {
        format!("/docs/{}", page.slug)
    }
}

/// The URL of the page with this id (pages link to each other through it,
/// so a renamed slug cannot leave a dead link).
pub(crate) fn link(id: PageId) -> String {
    href(
        PAGES
            .iter()
            .find(|p| p.id == id)
            .expect("every PageId is in PAGES"),
    )
}

/// Top bar, sidebar with every page, and the page's content.
#[component]
pub(crate) fn Layout(current: Page, children: Children) -> impl IntoView {
    view! {
        <div class="docs-app">
            <TopBar title="Chat docs" href="/docs">
                <a href="/">"Open the chat"</a>
            </TopBar>
            <div class="docs-layout">
                <nav class="docs-sidebar" aria-label="Documentation">
                    <ul>
                        {PAGES
                            .iter()
                            .map(|p| {
                                view! {
                                    <li>
                                        <a
                                            href=href(p)
                                            aria-current=(p.id == current.id).then_some("page")
                                        >
                                            {p.title}
                                        </a>
                                    </li>
                                }
                            })
                            .collect_view()}
                    </ul>
                </nav>
                <main class="docs-main">
                    <h1>{current.title}</h1>
                    {children()}
                </main>
            </div>
        </div>
    }
}

/// Text whose `backtick` spans (as in doc comments) become `<code>`.
pub(crate) fn rich_text(text: &str) -> impl IntoView {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                view! { <code>{part.to_owned()}</code> }.into_any()
            } else {
                part.to_owned().into_any()
            }
        })
        .collect_view()
}

/// Escapes text for inclusion in hand-built SVG markup.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
