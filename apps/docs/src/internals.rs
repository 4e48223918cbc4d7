//! The internals page, for people extending the server: the engine's roles,
//! recovery by epoch and offset, the hub's gap filling and resync, presence
//! expiry, backpressure, memory per connection and the one delivery path.

use crate::pages::{link, rich_text, PageId};
use leptos::prelude::*;

/// `(anchor, heading, text with backtick code spans)`.
const SECTIONS: &[(&str, &str, &str)] = &[
    (
        "engine",
        "The engine: a broker and a presence store",
        "The engine is what instances share, in two roles (as the centrifuge library splits its Broker and PresenceManager). `engine::Broker`: `publish` (dedupe, next offset, store, fan out), `position` (epoch and latest offset), `reset_epoch` (after a loss of history), `range` and `before` (history), `subscribe`/`unsubscribe` (counted by the broker, so a leave racing the next join leaves the room subscribed), `typing` and `reachable`. `engine::PresenceStore`: `join`, `leave`, `refresh`, `members` and `rooms`. Two implementations provide both: `MemoryEngine` (in-process, the single-instance default and the test double) and `RedisEngine` (a Lua script does dedupe, offset, `XADD` to the capped stream and `PUBLISH` in one atomic step). The engine never knows the hub: its events (`EngineEvent::Message`, presence, typing, `EngineEvent::Epoch`, `EngineEvent::Resync`) leave through a bounded channel wired in `run`.",
    ),
    (
        "recovery",
        "Recovery by epoch and offset",
        "Each room has an epoch (it changes only if the room's history is lost) and contiguous offsets. `engine::recover` answers a `join` with `since`, written once over the broker so both engines agree: if the epoch matches, the offset is not beyond the room's, and the gap is within `--max-replay` and still retained, `joined.history` holds every message after `since.offset` and `recovered: true`; otherwise the newest messages and `recovered: false`.",
    ),
    (
        "gaps",
        "Gap filling and resync in the hub",
        "The hub keeps a cursor per local room: the last offset it delivered. A message at or below the cursor is a duplicate and is dropped; a message beyond the cursor + 1 means pub/sub lost something: the message is held and the room's catch-up reads the missing offsets with `Broker::range`, then delivers them and the held messages in order (counted by `chat_gap_fills_total`). Pub/sub losing a message therefore never loses it for a client. Catch-ups run per room beside the hub's event loop, which never waits for the store: a slow room delays only its own messages. When the Redis engine re-makes its pub/sub connection it emits `EngineEvent::Resync` and every local room catches up, each retrying with backoff while the store comes back. A catch-up that finds the missing messages already trimmed from the history resets the room's members (close 1013; they re-join with `recovered: false`) rather than deliver past the hole.",
    ),
    (
        "divergence",
        "When the store loses history: a new epoch",
        "Within an epoch the store's offset never goes back, unless the store lost messages: Redis restored from an older snapshot, a replica that lagged promoted by a failover, a truncated append-only file. Offsets after the loss would then repeat ones members were already given, and the hub would skip them as seen: a silent gap. The hub catches it wherever it shows first: the publish script is told the newest position this instance saw of the room and, finding the store below it in the same epoch, stores the message in a new epoch; the transport brings a room's messages in the order they were stored, so one at or below the previous one is proof; a catch-up finds the store's offset below the cursor, or below a message it already brought. Then the room gets a new epoch in the store (`Broker::reset_epoch`, a script that changes it only if nobody did yet, and announces it on the room's channel as `e <epoch>`, so every instance agrees) and the members everywhere are reset: they re-join with `recovered: false` and get the store's history, every message acked since the loss included. A catch-up also compares the id of the message at its cursor with the store's, so a range the store lost and then had rewritten (by an instance that could not tell) is caught too. Counted by `chat_room_resets_total` with `reason` `diverged` on the instance that found it, `epoch` on the others and when the publish script found it.",
    ),
    (
        "presence",
        "Presence expiry",
        "Presence counts a user once however many tabs or instances they use: the hub keeps per-user local counts and tells the presence store only on 0 ↔ 1 changes. In Redis each room has a sorted set of users scored by expiry on the store's clock (`TIME` inside the scripts, so instances whose clocks disagree still agree) plus a per-user hash of instance → expiry; every `presence_ttl / 3` the hub hands the store the users connected here, which refreshes their entries and sweeps the expired ones of those rooms, so a crashed instance's users leave within `--presence-ttl-ms`. A user whose last connection in a room closes leaves presence only after `--presence-grace-ms` (5 s), and not at all if they are back by then, on this instance or another (whose join finds them still present): a page reload or a join/leave toggle shows the others nothing. What does change goes out coalesced: each instance's hub gathers a room's presence events for `--presence-window-ms` (200 ms) and sends one frame with every join and leave, each user once in their latest state, leaving out the recipient's own user and the changes it handled before the recipient joined (its `joined.members` holds them).",
    ),
    (
        "backpressure",
        "Backpressure",
        "No queue is unbounded: the engine → hub channel holds `--intake-capacity` events (8192) and each connection has an outbox of `--outbox-capacity` frames. When the hub falls that far behind, the Redis engine's pub/sub task drops what arrives instead of letting the redis crate buffer it without bound, counts it (`chat_intake_dropped_total`), and owes the room an `EngineEvent::Dropped`: its catch-up reads the dropped messages back from the stream, so they are late, not lost (typing and presence notices are not stored: a dropped one is gone). The hub never awaits a member: it pushes one shared `Arc` of the encoded frame without waiting, and a full outbox closes that connection with 1013 (counted by `chat_slow_consumer_closes_total`). The client reconnects and recovers by offset, so the policy loses nothing. A write slower than `--write-timeout-ms` drops the client too.",
    ),
    (
        "memory",
        "Memory per connection",
        "Most connections of a chat are idle most of the time, so what an idle one costs decides how many an instance holds. `make bench` measures it (10,000 joined connections over two instances, resident memory growth of the servers). What it is made of: the connection task's future (under 1 KB: every step that lives for a moment — hello, writing a batch, handling a frame, a ping, the goodbye — is boxed out of it, and a unit test guards its size); a 1 KiB read buffer (tungstenite's default is 128 KiB, allocated up front); the write buffer, which tungstenite keeps at its largest size for the socket's life, so the server writes long messages (a `joined` with a member list, a long body) as frames of at most 1 KiB that clients reassemble; an outbox that is an empty `VecDeque` until something is queued (a bounded tokio channel allocates ~2 KB up front); and the room membership in the hub and the engine, with the user shared behind one `Arc`.",
    ),
    (
        "one-path",
        "One delivery path",
        "Every message a client receives went through the engine's `publish`, even on one instance: the memory engine loops back. There is no \"deliver locally and also publish\" shortcut, so nothing arrives twice and both engines pass the same tests. The sender's own copy comes back the same way as everyone else's.",
    ),
];

#[component]
pub(crate) fn Internals() -> impl IntoView {
    view! {
        <p class="docs-lead">
            {rich_text("Dependencies point one way: http → connection → hub → engine. Each layer is a module of `apps/server/src`; `ARCHITECTURE.md` has the code map and its invariants.")}
        </p>
        {SECTIONS
            .iter()
            .map(|(id, heading, text)| {
                view! {
                    <h2 id=*id>{*heading}</h2>
                    <p>{rich_text(text)}</p>
                }
            })
            .collect_view()}
        <p>
            "The frames these layers exchange with clients are on the "
            <a href=link(PageId::Protocol)>"protocol reference"</a> "."
        </p>
    }
}
