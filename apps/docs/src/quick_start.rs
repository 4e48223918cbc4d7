//! The quick start page: the make targets and what each one serves.

use crate::pages::{link, PageId};
use leptos::prelude::*;

/// `(command, what it does, what it serves)`.
const TARGETS: &[(&str, &str, &str)] = &[
    (
        "make run",
        "Builds everything in release mode and starts one instance with the in-process engine (no Redis).",
        "http://127.0.0.1:3000/ (chat), /docs, ws://127.0.0.1:3000/ws, /healthz, /readyz, /metrics",
    ),
    (
        "make test",
        "What CI runs: format check, clippy with warnings denied, WASM builds, unit and integration tests (real redis-server and server processes), the compose file check and the browser tests.",
        "nothing; screenshots of the browser tests land in target/e2e/",
    ),
    (
        "make cluster",
        "Starts redis-server on :6390, two instances on :3001 and :3002 and nginx in front of them.",
        "http://127.0.0.1:3000/ through nginx; each tab's header shows which instance serves it",
    ),
    (
        "make dev",
        "cargo leptos watch: the full stack rebuilt and reloaded on every change.",
        "http://127.0.0.1:3000/ with live reload",
    ),
    (
        "make bench",
        "redis-server plus two release instances under the load generator's standard suite; prints figures and writes bench/results.json (shown on the benchmarks page) and bench/results.svg.",
        "nothing; see the benchmarks page",
    ),
];

#[component]
pub(crate) fn QuickStart() -> impl IntoView {
    view! {
        <p class="docs-lead">
            "Two commands cover most needs: " <code>"make run"</code> " and " <code>"make test"</code>
            ". Every target installs what it needs first (the wasm32 target, cargo-leptos, "
            "wasm-bindgen-cli, redis-server, nginx, chromium…) and skips what is present. "
            "The first build compiles the tool chain and the app: expect 20–30 minutes on two "
            "cores; later runs take seconds."
        </p>
        <pre class="docs-code"><code>"make run      # the chat on http://127.0.0.1:3000, one instance, no Redis\nmake test     # every check CI runs\nmake cluster  # redis + two instances behind nginx on :3000\nmake dev      # live reload while editing"</code></pre>
        <table class="docs-table">
            <thead>
                <tr><th>"command"</th><th>"what it does"</th><th>"what it serves"</th></tr>
            </thead>
            <tbody>
                {TARGETS
                    .iter()
                    .map(|(cmd, what, serves)| {
                        view! {
                            <tr>
                                <td><code>{*cmd}</code></td>
                                <td>{*what}</td>
                                <td>{*serves}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
        <h2>"Try the cluster"</h2>
        <p>
            "After " <code>"make cluster"</code> ", open http://127.0.0.1:3000 in two browsers: "
            "nginx spreads them over the two instances and they chat through Redis. Kill one "
            "instance: its tabs reconnect to the other and recover what they missed."
        </p>
        <p>
            "Every flag of the server is on the " <a href=link(PageId::Configuration)>"configuration"</a>
            " page; production deployments are on the " <a href=link(PageId::Operations)>"operations"</a>
            " page."
        </p>
    }
}
