//! The overview page: the cross-server problem, the pub/sub solution, the
//! architecture diagram and the path of one message.

use crate::pages::{link, PageId};
use leptos::prelude::*;
use ui::Card;

/// Browsers → nginx → instances A and B → Redis pub/sub and streams.
/// Colours come from the theme through `docs-diagram-*` classes.
const DIAGRAM: &str = r##"<svg class="docs-diagram" viewBox="0 0 760 330" role="img" aria-labelledby="docs-diagram-title">
<title id="docs-diagram-title">Browsers connect through nginx to instances A and B, which share Redis pub/sub and streams</title>
<defs><marker id="docs-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" class="docs-diagram-arrowhead"/></marker></defs>
<g class="docs-diagram-box"><rect x="10" y="40" width="110" height="44" rx="8"/><rect x="10" y="140" width="110" height="44" rx="8"/><rect x="10" y="240" width="110" height="44" rx="8"/></g>
<g class="docs-diagram-label"><text x="65" y="67">browser</text><text x="65" y="167">browser</text><text x="65" y="267">browser</text></g>
<g class="docs-diagram-box"><rect x="180" y="130" width="120" height="64" rx="8"/></g>
<text class="docs-diagram-label" x="240" y="158">nginx</text><text class="docs-diagram-note" x="240" y="178">no stickiness</text>
<g class="docs-diagram-box docs-diagram-instance"><rect x="370" y="50" width="150" height="80" rx="8"/><rect x="370" y="200" width="150" height="80" rx="8"/></g>
<text class="docs-diagram-label" x="445" y="82">instance A</text><text class="docs-diagram-note" x="445" y="104">hub · engine</text>
<text class="docs-diagram-label" x="445" y="232">instance B</text><text class="docs-diagram-note" x="445" y="254">hub · engine</text>
<g class="docs-diagram-box docs-diagram-store"><rect x="590" y="40" width="160" height="250" rx="8"/></g>
<text class="docs-diagram-label" x="670" y="66">Redis / Valkey</text>
<g class="docs-diagram-box"><rect x="605" y="85" width="130" height="80" rx="6"/><rect x="605" y="190" width="130" height="80" rx="6"/></g>
<text class="docs-diagram-label" x="670" y="115">pub/sub</text><text class="docs-diagram-note" x="670" y="135">room channels</text><text class="docs-diagram-note" x="670" y="151">(fan-out)</text>
<text class="docs-diagram-label" x="670" y="220">streams</text><text class="docs-diagram-note" x="670" y="240">room history</text><text class="docs-diagram-note" x="670" y="256">(recovery)</text>
<g class="docs-diagram-line" marker-end="url(#docs-arrow)"><path d="M120 62L180 150"/><path d="M120 162L180 162"/><path d="M120 262L180 175"/><path d="M300 150L370 95"/><path d="M300 175L370 235"/></g>
<g class="docs-diagram-line docs-diagram-both" marker-start="url(#docs-arrow)" marker-end="url(#docs-arrow)"><path d="M520 90L605 120"/><path d="M520 240L605 135"/><path d="M520 105L605 225"/><path d="M520 255L605 240"/></g>
<text class="docs-diagram-note" x="150" y="22">WebSocket /ws</text><text class="docs-diagram-note" x="560" y="318">publish (Lua: dedupe, offset, XADD, PUBLISH)</text>
</svg>"##;

#[component]
pub(crate) fn Overview() -> impl IntoView {
    view! {
        <p class="docs-lead">
            "A real-time chat that runs as one process, then as many identical instances "
            "behind a load balancer when one is not enough. Users in a room see each other's "
            "messages, presence and typing at once, in the same order, whichever instance "
            "serves them, and lose nothing when a connection drops or an instance restarts."
        </p>
        <h2>"The cross-server problem"</h2>
        <p>
            "A WebSocket server keeps every connection in its own memory. When Alice on "
            "instance A posts to a room, only A's sockets could see it: Bob, whose browser "
            "the load balancer sent to instance B, would not. Instances need a shared bus, "
            "and a client that reconnects to another instance needs to find what it missed."
        </p>
        <h2>"The solution: pub/sub plus history"</h2>
        <p>
            "Redis (or Valkey, the same protocol) is that bus. One Lua script gives each "
            "message the room's next " <strong>"offset"</strong> " (1, 2, 3, … with no gaps), "
            "appends it to the room's capped stream and publishes it on the room's channel. "
            "Every instance with local members in the room is subscribed to that channel. "
            "Because the stream keeps each room's recent history, any instance can replay "
            "what a client missed: a client that reconnects re-joins with "
            <code>"since: {epoch, offset}"</code> " and receives exactly the messages after it. "
            "With no Redis, one instance runs an in-process engine with the same behaviour."
        </p>
        <figure class="docs-figure">
            <div inner_html=DIAGRAM></div>
            <figcaption>
                "Browsers reach any instance through nginx; instances share Redis pub/sub "
                "(fan-out) and streams (history for recovery)."
            </figcaption>
        </figure>
        <h2>"How one message flows"</h2>
        <ol class="docs-steps">
            <li>
                "The sender's connection task reads a text frame; the codec turns it into a "
                <code>"ClientFrame"</code> " (size limit, JSON shape), then the value rules and the "
                "rate limit are checked."
            </li>
            <li>
                "The hub calls the engine's " <code>"publish"</code> ": the message gets the room's "
                "next offset, is stored in the room's capped history and fanned out to every "
                "instance subscribed to the room. Only then does the sender get its "
                <code>"ack"</code> "."
            </li>
            <li>
                "On each instance the engine's event reaches the hub through a bounded channel. "
                "The hub checks the offset against the room's cursor (filling a gap from the "
                "history first), encodes the " <code>"message"</code> " frame once and hands the "
                "shared bytes to every local member's bounded outbox."
            </li>
            <li>
                "Each connection writes its outbox to its socket, skipping messages it already "
                "delivered in " <code>"joined.history"</code> "."
            </li>
        </ol>
        <p>
            "Even on one instance the message takes this path (the memory engine loops back): "
            "there is one delivery path, so nothing arrives twice."
        </p>
        <Card title="Where next">
            <ul>
                <li><a href=link(PageId::QuickStart)>"Quick start"</a> ": run it, test it, run a cluster."</li>
                <li><a href=link(PageId::Protocol)>"Protocol reference"</a> ": every frame, code and limit."</li>
                <li><a href=link(PageId::Operations)>"Operations"</a> ": Redis over TLS, health, metrics, restarts."</li>
                <li><a href=link(PageId::Internals)>"Internals"</a> ": engines, recovery, gap filling, backpressure."</li>
            </ul>
        </Card>
    }
}
