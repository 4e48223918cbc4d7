//! The HTTP API page: the endpoints as the server's OpenAPI document
//! (generated from its handlers, passed in as JSON) lists them, then curl
//! examples of each.

use crate::pages::rich_text;
use leptos::prelude::*;
use serde_json::Value;

/// `(method, path, summary)` of every operation in `openapi` (JSON text),
/// in document order.
pub fn operations(openapi: &str) -> Vec<(String, String, String)> {
    let doc: Value = serde_json::from_str(openapi).unwrap_or(Value::Null);
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let summary = op["summary"]
                .as_str()
                .or_else(|| op["description"].as_str())
                .unwrap_or("")
                .to_owned();
            out.push((method.to_uppercase(), path.clone(), summary));
        }
    }
    out
}

#[component]
pub(crate) fn HttpApi(openapi: String) -> impl IntoView {
    let rows = operations(&openapi)
        .into_iter()
        .map(|(method, path, summary)| {
            view! { <tr><td><code>{method}</code></td><td><code>{path}</code></td><td>{summary}</td></tr> }
        })
        .collect_view();
    view! {
        <p class="docs-lead">
            {rich_text("For the host app's backends: post a message as any user (a bot, a system notice) with the same ordering, dedupe and fan-out as a socket's `send`; read a room's history and presence; list the active rooms; disconnect a user on every instance. Turn it on with `--api-keys` (`API_KEYS`, comma-separated keys of 16 characters or more) and send one as `Authorization: Bearer <key>`. Each key pays like a socket (`--rate-per-sec`, `--frame-costs`): past its bucket the answer is 429 with `Retry-After`.")}
        </p>
        <h2 id="endpoints">"Endpoints"</h2>
        <p>{rich_text("From the OpenAPI document the server generates from its code, served at `/api/v1/openapi.json` (no key needed).")}</p>
        <table class="docs-table">
            <thead><tr><th>"method"</th><th>"path"</th><th>"what"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        <h2 id="examples">"Examples"</h2>
        <pre class="docs-code"><code>"export CHAT=https://chat.example.com KEY=$API_KEY\n\n# Post as a bot (the same id again is the same message)\ncurl -s -X POST $CHAT/api/v1/rooms/ops/messages -H \"Authorization: Bearer $KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d '{\"id\":\"deploy-42\",\"body\":\"Deploy 42 is live\",\"from\":{\"id\":\"bot-deploy\",\"name\":\"Deploy bot\"}}'\n# {\"offset\":57}\n\n# The newest 50 messages, then older ones\ncurl -s \"$CHAT/api/v1/rooms/ops/messages?limit=50\" -H \"Authorization: Bearer $KEY\"\ncurl -s \"$CHAT/api/v1/rooms/ops/messages?before=8&limit=50\" -H \"Authorization: Bearer $KEY\"\n\n# Who is in the room, on any instance\ncurl -s $CHAT/api/v1/rooms/ops/presence -H \"Authorization: Bearer $KEY\"\n\n# Active rooms, busiest first (pass next as cursor for the next page)\ncurl -s \"$CHAT/api/v1/rooms?limit=20\" -H \"Authorization: Bearer $KEY\"\n\n# Close every connection of a user, everywhere\ncurl -s -X POST $CHAT/api/v1/users/alice-42/disconnect -H \"Authorization: Bearer $KEY\""</code></pre>
        <h2 id="errors">"Errors"</h2>
        <p>{rich_text("Every refusal is `{\"code\":…,\"message\":…}` with the protocol's codes: 400 `bad_room` or `bad_frame` (a bad id, body or user), 401 `unauthorized` (no or a wrong key; `WWW-Authenticate: Bearer`), 404 when the API is off, 429 `rate_limited`, 503 `unavailable` (the shared store cannot be reached; retry).")}</p>
    }
}
