//! The configuration reference: every flag of the server with its
//! environment variable, default and help text, as the server's own clap
//! definition states them (passed in through [`crate::DocsContext`]).

use crate::pages::rich_text;
use crate::ConfigOption;
use leptos::prelude::*;

#[component]
pub(crate) fn Configuration(options: Vec<ConfigOption>) -> impl IntoView {
    view! {
        <p class="docs-lead">
            "Every flag has an environment variable, read when the flag is absent. Configuration "
            "is parsed once at start and validated; an invalid value stops the server with a "
            "message. This table is generated from the server's flag definitions, the same ones "
            <code>"server --help"</code> " prints."
        </p>
        <table class="docs-table docs-config">
            <thead>
                <tr><th>"flag"</th><th>"environment"</th><th>"default"</th><th>"meaning"</th></tr>
            </thead>
            <tbody>
                {options
                    .into_iter()
                    .map(|o| {
                        let default = match o.default.as_deref() {
                            None => view! { <span class="docs-muted">"unset"</span> }.into_any(),
                            Some("") => view! { <span class="docs-muted">"empty"</span> }.into_any(),
                            Some(d) => view! { <code>{d.to_owned()}</code> }.into_any(),
                        };
                        let id = o.flag.trim_start_matches('-').to_owned();
                        view! {
                            <tr id=id>
                                <td><code>{o.flag}</code></td>
                                <td>{o.env.map(|e| view! { <code>{e}</code> })}</td>
                                <td>{default}</td>
                                <td>{rich_text(&o.help)}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
        <p>
            "A cluster needs the same " <code>"SESSION_SECRET"</code> " and " <code>"REDIS_URL"</code>
            " on every instance; behind a load balancer that sets " <code>"X-Real-IP"</code>
            ", " <code>"TRUSTED_PROXIES"</code> " with its addresses (CIDRs), and "
            <code>"PUBLIC_ORIGIN"</code> " when it rewrites the Host header."
        </p>
    }
}
