//! The operations page: running a cluster, managed Redis over TLS, health
//! and readiness, metrics (names passed in by the server), graceful
//! restarts (the drain), the admin view, Kubernetes, traces and dashboards,
//! scaling out, the archive and Redis Cluster (sharded pub/sub, the rooms
//! index partitions, resharding and failover).

use crate::pages::{link, rich_text, PageId};
use crate::Metric;
use leptos::prelude::*;

#[component]
pub(crate) fn Operations(metrics: Vec<Metric>) -> impl IntoView {
    view! {
        <p class="docs-lead">
            "Instances are identical and stateless: every piece of shared state (room history, "
            "offsets, presence, dedupe) lives in Redis or Valkey. Any instance serves any client, "
            "so the load balancer needs no sticky sessions."
        </p>
        <h2 id="cluster">"Running a cluster"</h2>
        <p>
            {rich_text("`make cluster` starts redis-server on :6390, instances on :3001 and :3002 and nginx on :3000, from the same nginx template (`deploy/nginx.conf.template`) that `docker-compose.yml` uses. The compose file describes Valkey (append-only, password), two instances and nginx; it requires `SESSION_SECRET` (no default: a public one would let anyone sign session tokens); check it without a container engine with `SESSION_SECRET=… docker-compose -f docker-compose.yml config`. The image runs as user 65532, not root, with a `HEALTHCHECK` on `/readyz`. A production instance looks like this:")}
        </p>
        <pre class="docs-code"><code>"REDIS_URL=rediss://chat:password@valkey.example.com:6380 \\\nREDIS_CA_CERT=/etc/chat/valkey-ca.pem \\\nSESSION_SECRET=$(cat /etc/chat/secret) \\\nTRUSTED_PROXIES=10.0.0.0/8 PUBLIC_ORIGIN=https://chat.example.com INSTANCE_ID=$(hostname) \\\nserver --bind 0.0.0.0 --port 3000"</code></pre>
        <h2 id="tls">"Managed Valkey or Redis over TLS"</h2>
        <ul>
            <li>{rich_text("`rediss://` URLs connect over TLS (rustls). A password goes in the URL (`rediss://:password@host:port`), an ACL user with it (`rediss://user:password@host:port`).")}</li>
            <li>{rich_text("`REDIS_CA_CERT` names a PEM file of the CA that signed the server's certificate, for services that hand out their own CA; unset, the system's roots are used.")}</li>
            <li>{rich_text("`REDIS_KEY_PREFIX` (default `chat`) lets several deployments share one Redis.")}</li>
            <li>{rich_text("For strict durability of acknowledged messages across a Redis crash, run Redis with `appendonly yes` and `appendfsync always`.")}</li>
            <li>{rich_text("An instance starts while Redis is down and reports not ready until it can reach it.")}</li>
            <li>{rich_text("Oldest server: Redis 5.0 (streams). The tests run the engine on Redis 5.0.6 as well as 7.0, so every 6.0 a managed service still offers works; an older server makes every command (and `/readyz`) answer `Redis 4.x found; the chat needs Redis 5.0 or newer`.")}</li>
            <li>{rich_text("An ACL user needs, on the keys and channels under `REDIS_KEY_PREFIX`: `evalsha`, `script`, `xrange`, `xrevrange`, `zrangebyscore`, `zrangebylex`, `zcount`, `publish`, `subscribe`, `unsubscribe`, `ping`, `time`, `info` (optional: it checks the version), and inside the scripts `get`, `set`, `del`, `hget`, `hset`, `hsetnx`, `hmget`, `hincrby`, `hdel`, `hvals`, `xadd`, `zadd`, `zscore`, `zrem`, `zrangebyscore`, `zremrangebyscore`, `pexpire`, `pexpireat`, `time`, `publish`. `/readyz` runs each of them (`lua/probe.lua`), so a missing one makes the instance not ready, and the log names it. With an archive (`--database-url`) also `zadd`, `zrange`, `xreadgroup`, `xpending`, and inside the scripts `exists`, `hexists`, `xtrim`, `xgroup`, `xpending`, `xclaim`, `xack`, `zrange` (checked by `/readyz` too). The admin view's heartbeats and actions use `hset`, `hgetall`, `hdel`, `xadd`, `xread` and `xrevrange` on `<prefix>:{admin}:…` (not checked by `/readyz`: a missing one only stops the admin view, and the log says so).")}</li>
        </ul>
        <h2 id="faults">"When Redis misbehaves"</h2>
        <ul>
            <li>{rich_text("Every Redis socket has TCP keepalive (probes after 10 s idle, every 5 s, 3 of them) and `TCP_USER_TIMEOUT` of 10 s, so a flow a NAT or proxy forgot ends. A command that takes longer than 2 s, fails on the socket, or meets `READONLY`/`MASTERDOWN` drops the command connection; the next command makes a new one, resolving the name again, so a DNS name or proxy that moved to a promoted replica is followed without a restart. The pub/sub connection is pinged every 5 s and re-made when a ping fails; the rooms then catch up from their streams.")}</li>
            <li>{rich_text("A join that meets an unavailable store (restarting, loading a large data set, failing over) waits for it, up to `--join-wait-ms` (10 s), while at most `--join-waiters` (10,000) joins wait; past either it is refused `unavailable`, and the web client tries again with backoff and jitter.")}</li>
            <li>{rich_text("A Redis restored from an older backup, or a lagging replica promoted, has lost messages members were given: the first instance to see an offset go back gives the room a new epoch, and members everywhere re-join with `recovered: false` (`chat_room_resets_total`).")}</li>
            <li>{rich_text("When an instance's hub falls behind, Redis pub/sub messages are dropped at the intake instead of buffered without bound, and the rooms catch up from their streams (`chat_intake_dropped_total`).")}</li>
        </ul>
        <h2 id="health">"Health and readiness"</h2>
        <table class="docs-table">
            <thead><tr><th>"path"</th><th>"answers"</th><th>"use it for"</th></tr></thead>
            <tbody>
                <tr><td><code>"/healthz"</code></td><td>"200 " <code>"ok"</code> " while the process serves HTTP"</td><td>"liveness: restart the process if it fails"</td></tr>
                <tr><td><code>"/readyz"</code></td><td>"200 " <code>"ready"</code> " when the engine takes every kind of write this instance makes (a Redis replica answers but refuses them; an ACL user may lack one) and its pub/sub connection is up, else 503 with the reason (" <code>"draining"</code> " from a SIGTERM on)"</td><td>"readiness: send traffic only to ready instances"</td></tr>
                <tr><td><code>"/metrics"</code></td><td>"Prometheus text format, every series with its " <code>"# HELP"</code> " and " <code>"# TYPE"</code> "; the chat's metrics (below) and the process's own (" <code>"process_cpu_seconds_total"</code> ", " <code>"process_resident_memory_bytes"</code> ", open file descriptors, threads)"</td><td>"scraping (below)"</td></tr>
            </tbody>
        </table>
        <h2 id="metrics">"Metrics"</h2>
        <p>
            "Labels have low cardinality only (frame type, error code, engine kind, refusal "
            "reason; never a room or user id). The list is the server's own table of metric names."
        </p>
        <table class="docs-table">
            <thead><tr><th>"metric"</th><th>"meaning"</th></tr></thead>
            <tbody>
                {metrics
                    .into_iter()
                    .map(|m| view! { <tr><td><code>{m.name}</code></td><td>{rich_text(m.help)}</td></tr> })
                    .collect_view()}
            </tbody>
        </table>
        <h2 id="restarts">"Graceful restarts: the drain"</h2>
        <p>
            {rich_text("On SIGTERM or SIGINT an instance drains. `/readyz` answers 503 `draining` at once while the instance keeps serving for `--drain-delay-ms` (time for the load balancer, or Kubernetes' endpoints, to stop sending it new connections). Then it asks its clients to reconnect spread over `--drain-window-ms`: each gets `{\"type\":\"reconnect\",\"reason\":\"shutdown\",\"delay_ms\":…}` with its own delay, evenly over the window in random order, keeps using its connection until then, and reconnects at its turn (to another instance) re-joining its rooms with `since`, so nothing is lost and the instances left take the clients a few at a time instead of all at once. A client still connected 2 s after its turn is closed with 1012; one that arrives meanwhile is closed at once. The instance then exits within `--shutdown-deadline-ms`. With both at 0 (the defaults, for `make run`) every client is told at once, as in protocol v1. Give the orchestrator a grace period longer than delay + window + 2 s + the deadline; the Kubernetes manifests below set 5 s, 10 s and 10 s within 40 s. Roll a deployment one instance at a time. `make bench-avalanche` measures it: 5,000 clients leaving one of two instances, with and without a window.")}
        </p>
        <h2 id="identity">"Identity from the host app, private rooms"</h2>
        <ul>
            <li>{rich_text("By default anyone signs in with a name (a guest, with the server's own session token). A product that has its users already gives the chat its identity instead: its backend signs a JWT for the signed-in user — `sub` (the user id), `name` (the display name), `exp`, optionally `rooms` (the private rooms they may join) — and the page passes it as the `hello` token (PROTOCOL.md, \"Host identity\").")}</li>
            <li>{rich_text("Keys: `--jwt-secret` (HS256, shared with the host backend), or `--jwks-url` with the host's public keys (RS256, ES256, EdDSA…) as a JWK set, at an `https://` URL or in a mounted file; keys are cached by `kid` and read again when a token names a new one (at most every 10 s). `--jwt-audience` and `--jwt-issuer` add those checks. `--allow-guests false` refuses a `hello` without a host token.")}</li>
            <li>{rich_text("A session ends at its token's `exp` with close 4001 unless the client sent `{\"type\":\"refresh\",\"token\":…}` with a fresh token for the same user first. The welcome hands the host token back, so a reconnect uses it; after it expired, the page needs a fresh one from the host.")}</li>
            <li>{rich_text("`--private-rooms team-*,dm-*` makes matching rooms private: only a session whose token's `rooms` claim lists them (names or `*` patterns) may join; anyone else gets `forbidden`. Direct messages are a convention: `dm-<a>-<b>` with the two user ids in byte order, listed in both users' tokens.")}</li>
            <li>{rich_text("The web UI signs in with a host token when the page is opened as `https://chat.example.com/#token=<jwt>` (the fragment never reaches a server or its logs, and the page takes it out of the address bar at once), or when the host app set a `chat_token` cookie on the chat's site (not `HttpOnly`: the page reads it). It then asks for no name, keeps the token for reconnects, and after a 4001 signs in again at once with a fresher `chat_token` if the host app has renewed it.")}</li>
            <li>{rich_text("Issuing a token, in the host backend (Node): `jwt.sign({ sub: user.id, name: user.name, rooms: ['team-red'] }, process.env.JWT_SECRET, { expiresIn: '1h' })`; in Rust, jsonwebtoken's `encode`.")}</li>
        </ul>
        <h2 id="admin">"The admin view"</h2>
        <ul>
            <li>{rich_text("`--admin-token` (`ADMIN_TOKEN`, at least 16 characters) turns on `/admin`, a page that signs in with that token (kept in the tab's session storage) and shows every instance (id, version, uptime, connections, rooms, deliveries/s, ready or not), a live chart of deliveries/s per instance, and the busiest rooms with their members and messages/s. It can disconnect a user (every connection of that user id, on every instance, is closed with 1008: the web client stops and says so) and close a room (every member leaves it and gets `left`; its history stays and it can be joined again). Off without the token: `/admin/api/…` answers 404.")}</li>
            <li>{rich_text("Each instance writes a heartbeat to the shared store every second (`<prefix>:{admin}:instances`; in memory with the in-process engine) and applies the actions posted since its last beat (`<prefix>:{admin}:actions`, a stream of the last 1,000), so an action reaches every instance within about a second. An instance silent for 5 s leaves the list.")}</li>
            <li>{rich_text("The same JSON for scripts: `curl -H \"Authorization: Bearer $ADMIN_TOKEN\" https://chat.example.com/admin/api/overview`; `POST /admin/api/users/<user id>/disconnect`; `POST /admin/api/rooms/<room>/close`. A wrong or missing token is answered 401; the token is compared in constant time and never logged.")}</li>
        </ul>
        <h2 id="kubernetes">"Kubernetes"</h2>
        <p>
            {rich_text("`deploy/k8s/` holds a Deployment (readiness on `/readyz`, liveness on `/healthz`, the drain's settings and a grace period that covers them, `INSTANCE_ID` from the pod name, a non-root read-only container), a Service, a PodDisruptionBudget (one pod down at a time), a HorizontalPodAutoscaler on connections per pod (`chat_connections`, which needs a custom-metrics adapter such as prometheus-adapter), a Secret to fill (`SESSION_SECRET`, `ADMIN_TOKEN`) and a demo Valkey without persistence (in production, a managed one over `rediss://`). `kubectl apply -k deploy/k8s` applies them; `make k8s-check` (part of `make test`) validates them against the Kubernetes API's schemas offline. No `preStop` hook is needed: the server drains itself on SIGTERM.")}
        </p>
        <h2 id="traces">"Traces and dashboards"</h2>
        <ul>
            <li>{rich_text("`--otlp-endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`, an `http://` OpenTelemetry Collector such as `http://otel-collector:4318`) exports traces over OTLP/HTTP (protobuf, in batches): a `conn` span per WebSocket, `join` and `publish` spans per frame, and a `deliver` span on every instance that delivers a message, the child of its `publish` span on the sender's instance (the trace context travels with the message through Redis), so one trace follows a message across the cluster. Spans name their service `chat-server` and their instance `service.instance.id`. Off, none of this costs anything.")}</li>
            <li>{rich_text("`--log-format json` writes one JSON object per line for log collectors.")}</li>
            <li>{rich_text("`deploy/grafana/chat-dashboard.json` is a Grafana dashboard built on the metric names below (connections, deliveries/s, publish latency, trouble counters, the archive, CPU and memory per instance, CPU per delivery); import it and pick the Prometheus data source.")}</li>
        </ul>
        <h2 id="scaling">"Scaling out"</h2>
        <ul>
            <li>{rich_text("Add instances with the same `REDIS_URL`, `REDIS_KEY_PREFIX` and `SESSION_SECRET`, and register them with the load balancer once `/readyz` answers 200.")}</li>
            <li>{rich_text("An instance subscribes to a room's channel only while it has local members there, so pub/sub traffic grows with the rooms each instance actually serves.")}</li>
            <li>{rich_text("Per-connection limits (`--rate-per-sec`, `--max-rooms-per-conn`, `--outbox-capacity`), the per-user and per-address buckets (`--user-rate-per-sec`, `--address-rate-per-sec`) and the per-IP limit (`--max-conns-per-ip`) apply per instance; see ")}<a href=link(PageId::Configuration)>"configuration"</a>"."</li>
            <li>{rich_text("Every client frame costs units (`--frame-costs`; a `joined` or `history` reply one more per `--reply-bytes-per-unit` bytes, so a replay costs by its size), paid from the connection's, the user's and the address's (IPv4 address or IPv6 /64) token buckets: one socket, one user or one address cannot make the others' chat worse. Refusals are counted in `chat_rate_limited_total` by bucket. Behind a proxy, the address is the proxy's unless the proxy is listed in `--trusted-proxies` (CIDRs; only from those peers is `X-Real-IP` believed): otherwise give the per-address bucket room for everyone behind it. Replies are bounded (`--max-reply-bytes`) and `rooms` is paged from one index. A room's presence changes within `--presence-window-ms` go out as one frame.")}</li>
            <li>{rich_text("Presence of a crashed instance's users expires after `--presence-ttl-ms`. A user who closes their last connection in a room is announced as left only after `--presence-grace-ms` (5 s), and not at all if they come back meanwhile, on any instance: reloads and reconnects do not flicker in the member lists.")}</li>
            <li>{rich_text("Rooms end: a room with no member and no new message for `--room-retention-secs` (default 30 days) is dropped with its history — its Redis keys expire (every publish, join and member's presence refresh pushes the expiry back), the in-process engine forgets it. A room that never had a message ends one presence TTL after its last member leaves, so joins of fresh names cost the store nothing for long. Without an archive, history is therefore kept at most that long after the last activity, and at most `--history-cap` messages; with one (below), the archive keeps it and the room continues where it was.")}</li>
        </ul>
        <h2 id="archive">"The archive: every message kept"</h2>
        <ul>
            <li>{rich_text("`--database-url` (`DATABASE_URL`) names a database that keeps every message beyond the hot store: `sqlite://<path>` for one process, `postgres://user:password@host/db` for a cluster (TLS as the URL's `sslmode` says), or `none`. Unset, the in-process engine keeps a SQLite file, `<data-dir>/chat.db` (`--data-dir`, default `data`, created on first start): `make run` keeps its chat across restarts. The schema is created and migrated at start.")}</li>
            <li>{rich_text("Members get messages from the hot store exactly as without an archive; the archive is written off that path, in batches (one transaction for whatever is waiting, up to 4,096 messages). A batch that fails is retried with backoff until it is written; meanwhile up to `--archive-queue` messages wait (`chat_archive_queue`), and past that publishers wait. A graceful stop writes everything queued before it exits.")}</li>
            <li>{rich_text("Reads fall through: `history` pages and recovery with `since` read the hot store first and then the archive, so scroll-back reaches a room's first message and recovery works past `--history-cap`. A room the process does not hold (after a restart, or forgotten while idle) continues at the epoch and offset the archive has for it: clients recover with `recovered: true` and offsets continue.")}</li>
            <li>{rich_text("Retention: `--archive-retention` keeps everything (`unlimited`, the default), the messages of the last N days (`30d`: each room's oldest messages are deleted in offset order up to the first one younger than that), or the newest N messages of each room (`5000`), with per-room rules after the default: `90d,announce-*=unlimited,scratch-*=1000` (the first matching pattern wins; `*` matches any run of characters). It is applied at start and hourly (`chat_archive_expired_total`); a room's offsets continue after its old messages are deleted.")}</li>
            <li>{rich_text("With Redis, every instance points `--database-url` at the same PostgreSQL. The instances move the room streams into it through a consumer group on each stream (`archive`, one consumer per instance id): the instance that published a message reads it within a cycle (`XREADGROUP`), writes the batch and then acknowledges it (`XACK`). An instance that dies between reading and acknowledging leaves its messages pending; after `--archive-claim-after-secs` (default 30) another instance claims them (`XCLAIM`) on its sweep (every 5 s, over the rooms marked in `{archive:<p>}:dirty`) and writes them. Writing a message twice changes nothing: each is kept once per room and offset.")}</li>
            <li>{rich_text("A stream is trimmed to `--history-cap` or to the oldest message not archived yet, whichever keeps more: while PostgreSQL is down the streams grow (and Redis memory with them) instead of dropping anything. Every archived batch is announced on the room's channel, and until then each instance holds the messages it received of its rooms.")}</li>
            <li>{rich_text("A wiped or replaced Redis (`FLUSHALL`, a failover to an empty node, a restore, keys expired) loses nothing: a room that Redis does not know is restored before it is used, with the epoch and offset the archive has for it and the messages the instance held that were not archived yet (written to the archive first; `chat_archive_restored_total`). Offsets continue and members recover with `recovered: true`. Only messages no instance with members in the room had received yet, and no archive had, can be lost; then the room's members are reset as after any loss (a new epoch).")}</li>
            <li>{rich_text("SQLite with Redis suits one instance only: each instance would keep its own file.")}</li>
        </ul>
        <h2 id="redis-cluster">"Redis Cluster"</h2>
        <p>
            {rich_text("When one Redis is not enough, point `REDIS_URL` at a node of a Redis Cluster (Redis or Valkey 7.0 or newer: sharded pub/sub). The instance detects it (the node reports `cluster_enabled:1` in `INFO cluster`); several seed nodes may be given, comma-separated, so that the instance finds the cluster while one of them is down: `REDIS_URL=rediss://:pw@node-1:6379,rediss://:pw@node-2:6379`. Managed clusters (ElastiCache, Memorystore, Aiven) use TLS the same way as one Redis: `rediss://` and `REDIS_CA_CERT`. `make cluster REDIS=cluster` runs the whole picture on one machine: 3 masters on :6390–:6392, a replica of each on :6393–:6395, two instances and nginx.")}
        </p>
        <ul>
            <li>{rich_text("One slot per room: Every key and the channel of a room share the hash tag `{room}`, so a room lives in one slot on one master: its epoch and offset, its stream, its dedupe keys, its presence and its shard channel. Publishing stays one atomic Lua script in that slot, and fans out with `SPUBLISH`: a message goes only to the master that owns the room and, from it, only to the instances with members there.")}</li>
            <li>{rich_text("Nothing global in one slot: The active-rooms index is 16 partitions (`{rooms:0}` … `{rooms:15}`, a room in the partition its name hashes to), spread over the masters; a `rooms` page reads one `ZRANGEBYLEX` from each and merges them. The only other keys outside rooms are each instance's own (its id claim and its readiness probe) and the admin view's two (one write per instance per second).")}</li>
            <li>{rich_text("Connections: Commands go through the redis crate's cluster client (one connection per node; `MOVED` and `ASK` followed, the slot map re-read on a redirect or a failed node). Subscriptions take one RESP3 connection per master, made when a channel it owns is first needed.")}</li>
            <li>{rich_text("Resharding: When a slot moves, its old master drops the shard channels of that slot (an unrequested `sunsubscribe`); the instance subscribes them on the new owner and the rooms catch up from their streams before anything newer, so a reshard under traffic loses and doubles nothing.")}</li>
            <li>{rich_text("A failed master: Run every node with `cluster-require-full-coverage no`: the rooms on the other masters are then served throughout, while the failed master's rooms answer `unavailable` (clients retry) until its replica is promoted, `cluster-node-timeout` later. Messages the master acknowledged but had not yet replicated are lost with it; the first instance to see an offset go back gives the room a new epoch and members re-join with `recovered: false`, never with a silent gap. With `min-replicas-to-write 1` a master refuses writes no replica has.")}</li>
            <li>{rich_text("Sizing: A room's traffic is served by one master, so the busiest room is bounded by one Redis core (the benchmarks page compares one Redis with a 3-master cluster at the same load). Rooms spread over the slots by name; each master holds about its share of rooms, their streams (`--history-cap` messages each) and their presence. Give each master a replica in another zone.")}</li>
            <li>{rich_text("ACL: On a cluster the user also needs `spublish` (in the scripts too), `ssubscribe`, `sunsubscribe` and `cluster` (`CLUSTER SLOTS`), and `info` is required: it is how the cluster is detected.")}</li>
        </ul>
    }
}
