//! The documentation site, for people who run or extend the chat. Pages are
//! Leptos components rendered to static HTML on the server (no hydration:
//! docs need no client code) and served by `apps/server` under `/docs`.
//!
//! Nothing here is typed twice: frame examples are serialised from the real
//! `protocol` types, error and close codes and limits come from `protocol`,
//! benchmark figures from a results file, and the configuration flags and
//! metric names from the server, which passes them in through
//! [`DocsContext`] (this crate must not depend on the server: the server
//! depends on it).
//!
//! Modules, in reading order: [`pages`] (the page list and the shared
//! layout pieces), then one module per page.

// Without `ssr` nothing renders the page components.
#![cfg_attr(not(feature = "ssr"), allow(dead_code))]

// Leptos's `#[component]` gives a component's generated props `pub`
// visibility whatever the function's, which `unreachable_pub` flags in
// these private modules.
#[allow(unreachable_pub)]
mod bench;
#[allow(unreachable_pub)]
mod config;
#[allow(unreachable_pub)]
mod internals;
#[allow(unreachable_pub)]
mod operations;
#[allow(unreachable_pub)]
mod overview;
#[allow(unreachable_pub)]
mod pages;
#[allow(unreachable_pub)]
mod protocol_ref;
#[allow(unreachable_pub)]
mod quick_start;

pub use bench::{bench_meta, bench_runs, BenchRun, RESULTS_JSON};
pub use pages::{href, Page, PageId, PAGES};
pub use protocol_ref::frame_examples;

/// One command-line flag of the server, as its `--help` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOption {
    /// The long flag with its dashes, e.g. `--port`.
    pub flag: String,
    /// The environment variable read when the flag is absent.
    pub env: Option<String>,
    /// The default value, if the flag has one.
    pub default: Option<String>,
    /// The help text (the flag's doc comment).
    pub help: String,
}

/// One Prometheus metric the server exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    /// What it measures, its kind and its labels.
    pub help: &'static str,
}

/// What the server knows and the docs show: built once by the server from
/// its own definitions (`config::Args`, `metrics::ALL`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocsContext {
    pub config: Vec<ConfigOption>,
    pub metrics: Vec<Metric>,
    /// The app's stylesheet as pages link it: `/pkg/chat.css`, or
    /// `/pkg/chat.<hash>.css` when the build hashed the asset names.
    pub stylesheet: String,
}

/// Renders the page at `path` (relative to `/docs`, slashes at either end
/// ignored) as a complete HTML document, or `None` if there is none.
#[cfg(feature = "ssr")]
pub fn render(path: &str, ctx: &DocsContext) -> Option<String> {
    use leptos::prelude::*;
    use {
        bench::Benchmarks, config::Configuration, internals::Internals, operations::Operations,
        overview::Overview, pages::Layout, protocol_ref::ProtocolReference,
        quick_start::QuickStart,
    };

    let page = *PAGES.iter().find(|p| p.slug == path.trim_matches('/'))?;
    let body = match page.id {
        PageId::Overview => view! { <Overview/> }.into_any(),
        PageId::QuickStart => view! { <QuickStart/> }.into_any(),
        PageId::Protocol => view! { <ProtocolReference/> }.into_any(),
        PageId::Configuration => view! { <Configuration options=ctx.config.clone()/> }.into_any(),
        PageId::Operations => view! { <Operations metrics=ctx.metrics.clone()/> }.into_any(),
        PageId::Internals => view! { <Internals/> }.into_any(),
        PageId::Benchmarks => view! { <Benchmarks/> }.into_any(),
    };
    let html = view! { <Layout current=page>{body}</Layout> }.to_html();
    Some(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"description\" content=\"{} — documentation of the horizontally scalable chat: protocol, configuration, operations, benchmarks.\">\
         <title>{} · Chat docs</title><link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"{}\"></head>\
         <body>{html}</body></html>",
        page.title, page.title, ctx.stylesheet
    ))
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use protocol::frames::{CLIENT_FRAME_TYPES, SERVER_FRAME_TYPES};
    use protocol::{ClientFrame, CloseCode, ErrorCode, ServerFrame};

    fn ctx() -> DocsContext {
        DocsContext {
            config: vec![ConfigOption {
                flag: "--port".to_owned(),
                env: Some("PORT".to_owned()),
                default: Some("3000".to_owned()),
                help: "Port to listen on (`0` picks a free one).".to_owned(),
            }],
            metrics: vec![Metric {
                name: "chat_connections",
                help: "Open WebSocket connections (gauge).",
            }],
            stylesheet: "/pkg/chat.css".to_owned(),
        }
    }

    fn page(slug: &str) -> String {
        render(slug, &ctx()).unwrap_or_else(|| panic!("page {slug:?} renders"))
    }

    /// Undoes the escaping of HTML text and attribute values.
    fn unescape(s: &str) -> String {
        s.replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    /// The text of the element with `id="{id}"` (up to its closing tag).
    fn element_text(html: &str, id: &str) -> Option<String> {
        let start = html.find(&format!("id=\"{id}\""))?;
        let open_end = start + html[start..].find('>')? + 1;
        let close = open_end + html[open_end..].find("</")?;
        Some(unescape(&html[open_end..close]))
    }

    #[test]
    fn every_page_renders_with_its_title_and_unknown_paths_do_not() {
        for p in PAGES {
            let html = page(p.slug);
            assert!(
                html.contains(&format!("<h1>{}</h1>", p.title)),
                "{}",
                p.title
            );
            assert!(html.contains(&format!("<title>{} · Chat docs</title>", p.title)));
            // Without an icon the browser asks for /favicon.ico: a 404 in the console.
            assert!(html.contains("<link rel=\"icon\" href=\"/favicon.svg\""));
            // Search results show it (Lighthouse's SEO audit asks for one).
            assert!(html.contains(&format!(
                "<meta name=\"description\" content=\"{} — ",
                p.title
            )));
            for other in PAGES {
                assert!(html.contains(&format!("href=\"{}\"", href(other))));
            }
            assert!(
                html.contains("href=\"/\""),
                "{}: no link to the chat",
                p.title
            );
        }
        assert_eq!(render("/protocol/", &ctx()), render("protocol", &ctx()));
        assert!(render("no-such-page", &ctx()).is_none());
        assert!(render("protocol/extra", &ctx()).is_none());
    }

    #[test]
    fn every_internal_link_resolves() {
        for p in PAGES {
            let html = page(p.slug);
            let mut links = 0;
            for chunk in html.split("href=\"").skip(1) {
                let target = &chunk[..chunk.find('"').expect("closed attribute")];
                let target = target.split('#').next().unwrap_or_default();
                if !target.starts_with('/') {
                    continue;
                }
                links += 1;
                // The app's own files (apps/web/public, the site's pkg).
                if ["/", "/pkg/chat.css", "/favicon.svg"].contains(&target) {
                    continue;
                }
                let rest = target
                    .strip_prefix("/docs")
                    .unwrap_or_else(|| panic!("{}: link {target} leaves the docs", p.title));
                assert!(
                    render(rest, &ctx()).is_some(),
                    "{}: broken link {target}",
                    p.title
                );
            }
            assert!(links > PAGES.len(), "{}: navigation missing", p.title);
        }
    }

    #[test]
    fn every_frame_type_has_an_example_that_parses_back() {
        let html = page("protocol");
        let (client, server) = frame_examples();
        assert_eq!(client.len(), CLIENT_FRAME_TYPES.len());
        assert_eq!(server.len(), SERVER_FRAME_TYPES.len());
        for kind in CLIENT_FRAME_TYPES {
            let json = element_text(&html, &format!("client-{kind}"))
                .unwrap_or_else(|| panic!("no example of client frame {kind}"));
            let frame = ClientFrame::from_json(&json).expect("example parses");
            assert_eq!(frame.kind(), kind);
            assert!(client.contains(&frame));
        }
        for kind in SERVER_FRAME_TYPES {
            let json = element_text(&html, &format!("server-{kind}"))
                .unwrap_or_else(|| panic!("no example of server frame {kind}"));
            let frame = ServerFrame::from_json(&json).expect("example parses");
            assert_eq!(frame.kind(), kind);
            assert!(server.contains(&frame));
        }
    }

    #[test]
    fn protocol_page_lists_every_code_and_limit() {
        let html = page("protocol");
        for code in ErrorCode::ALL {
            assert!(html.contains(&format!("<code>{}</code>", code.as_str())));
        }
        assert!(html.contains("extension of v1"));
        for code in CloseCode::ALL {
            assert!(html.contains(&format!("<td>{}</td>", code.code())));
        }
        assert!(html.contains("MAX_CLIENT_FRAME_BYTES"));
        assert!(html.contains(&protocol::limits::MAX_CLIENT_FRAME_BYTES.to_string()));
    }

    #[test]
    fn every_limits_constant_is_on_the_protocol_page() {
        let html = page("protocol");
        let source = include_str!("../../../packages/protocol/src/limits.rs");
        let names: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter_map(|l| l.split(':').next())
            .collect();
        assert!(names.len() >= 10, "{names:?}");
        for name in names {
            assert!(
                html.contains(&format!("<code>{name}</code>")),
                "{name} missing"
            );
        }
    }

    #[test]
    fn context_reaches_configuration_and_operations() {
        let config = page("configuration");
        assert!(config.contains("--port") && config.contains("PORT") && config.contains("3000"));
        assert!(config.contains("<code>0</code>"), "backticks become code");
        assert!(page("operations").contains("chat_connections"));
    }

    #[test]
    fn benchmark_figures_come_from_the_results_file() {
        let runs = bench_runs();
        let file: serde_json::Value = serde_json::from_str(RESULTS_JSON).expect("results parse");
        assert_eq!(runs.len(), file["runs"].as_array().expect("runs").len());
        assert!(!runs.is_empty(), "make bench wrote runs");
        let html = page("benchmarks");
        for run in &runs {
            assert!(html.contains(&pages::escape(&run.label)), "{}", run.label);
        }
        assert!(html.contains("make bench"));
        assert!(html.contains("<svg"));
        let commit = bench_meta()["commit"].as_str().expect("commit").to_owned();
        assert!(html.contains(&commit), "the page names the measured commit");
        // The drain's runs, from their own file.
        let avalanche: Vec<serde_json::Value> = bench::AVALANCHE_JSON
            .lines()
            .map(|l| serde_json::from_str(l).expect("avalanche run parses"))
            .collect();
        assert!(avalanche.len() >= 2, "with and without a drain window");
        for run in &avalanche {
            let label = run["label"].as_str().expect("label");
            assert!(html.contains(&pages::escape(label)), "{label}");
        }
    }
}
