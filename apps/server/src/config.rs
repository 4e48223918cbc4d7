//! Configuration: every flag has an environment fallback, is parsed once in
//! `main` (clap), validated into [`Config`] and passed down. No other module
//! reads the environment.

use crate::cost::{FrameCosts, Rate};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line flags and their environment variables. Each default says
/// what changing it does.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "server",
    version,
    about = "Horizontally scalable real-time chat server"
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Redis/Valkey URL (`redis://` or `rediss://`, with password or ACL user).
    /// A Redis Cluster is detected (the node reports `cluster_enabled`);
    /// several seed nodes of one may be given, comma-separated.
    /// Unset: the in-process engine, for a single instance.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// PEM file of the CA that signed the Redis server's TLS certificate
    /// (managed services hand one out). Unset: the system's roots.
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,

    /// Prefix of every Redis key and channel, so several deployments can
    /// share one Redis.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "chat")]
    pub redis_key_prefix: String,

    /// Name of this instance, shown to clients in `welcome` and in logs.
    /// Default: `server-` and 64 random bits in hex, unique in practice
    /// (16 bits collided between instances of one deployment).
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Secret that signs session tokens (at least 16 bytes); every instance
    /// of a cluster needs the same one, so it is required with
    /// `--redis-url`. Unset with the in-process engine: a random
    /// per-process secret (tokens do not survive a restart) and a warning.
    #[arg(long, env = "SESSION_SECRET", hide_env_values = true)]
    pub session_secret: Option<String>,

    /// Lifetime of a session token, in seconds.
    #[arg(long, env = "TOKEN_TTL_SECS", default_value_t = protocol::limits::DEFAULT_TOKEN_TTL_SECS)]
    pub token_ttl_secs: u64,

    /// How long a session may last across renewals, in seconds from its
    /// first token: every `welcome` renews the token, never past this, so a
    /// stolen token cannot be renewed for ever. Then `hello` with it is
    /// refused `unauthorized` and the client signs in anew.
    #[arg(long, env = "SESSION_MAX_LIFETIME_SECS", default_value_t = protocol::limits::DEFAULT_SESSION_MAX_LIFETIME_SECS)]
    pub session_max_lifetime_secs: u64,

    /// Origins allowed to open a WebSocket, comma-separated (e.g.
    /// `https://chat.example.com`), or `*` for any. Empty: same origin only
    /// (the Origin's host must equal the Host header). Requests without an
    /// Origin header (non-browser clients) are always accepted.
    #[arg(
        long,
        env = "ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_origins: Vec<String>,

    /// Messages kept per room (the in-process engine's history and the Redis
    /// stream cap). More: longer recovery window, more memory.
    #[arg(long, env = "HISTORY_CAP", default_value_t = 1000)]
    pub history_cap: usize,

    /// How long a room is kept with no member and no new message, in
    /// seconds: then its history, epoch and every key are dropped (Redis
    /// keys expire, refreshed by activity; the in-process engine forgets
    /// the room). A later join starts it afresh, in a new epoch, unless
    /// the archive (`--database-url`) keeps it: then it continues.
    #[arg(long, env = "ROOM_RETENTION_SECS", default_value_t = 30 * 24 * 3600)]
    pub room_retention_secs: u64,

    /// Where every message is kept beyond the hot store (the in-process
    /// engine's memory, the Redis streams): `sqlite://<path>` for one
    /// process, `postgres://…` for a cluster, or `none`. Unset: with the
    /// in-process engine, `sqlite://<data-dir>/chat.db`; with Redis, none.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory of the default SQLite archive (created on first start).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Messages waiting to be archived at most; past it, publishers wait
    /// for the archive (the hot store keeps what is not archived yet).
    #[arg(long, env = "ARCHIVE_QUEUE", default_value_t = 65_536)]
    pub archive_queue: usize,

    /// How long archived messages are kept: `unlimited`, `<days>d`, or a
    /// number of messages per room, then `pattern=value` overrides for
    /// rooms whose names match (`*` matches any run of characters; the
    /// first match wins), comma-separated: `90d,announce-*=unlimited,scratch=1000`.
    #[arg(long, env = "ARCHIVE_RETENTION", default_value = "unlimited")]
    pub archive_retention: String,

    /// With Redis and an archive: seconds a message may stay read but not
    /// archived by one instance before another takes it over (the first
    /// died mid-batch; `XCLAIM` on the stream's consumer group).
    #[arg(long, env = "ARCHIVE_CLAIM_AFTER_SECS", default_value_t = 30)]
    pub archive_claim_after_secs: u64,

    /// Messages in `joined.history` without `since`.
    #[arg(long, env = "JOIN_HISTORY", default_value_t = protocol::limits::DEFAULT_JOIN_HISTORY)]
    pub join_history: usize,

    /// Largest gap a `join` with `since` replays; beyond it the client gets
    /// the newest messages and `recovered: false`.
    #[arg(long, env = "MAX_REPLAY", default_value_t = protocol::limits::DEFAULT_MAX_REPLAY)]
    pub max_replay: u64,

    /// How long a `join` that meets a briefly unavailable store (Redis
    /// restarting, loading its data, failing over) waits for it before it
    /// is refused `unavailable`, in ms. 0: refuse at once.
    #[arg(long, env = "JOIN_WAIT_MS", default_value_t = 10_000)]
    pub join_wait_ms: u64,

    /// Joins that may wait for the store at once (see `--join-wait-ms`);
    /// past this, joins are refused `unavailable` at once instead of
    /// queueing without bound.
    #[arg(long, env = "JOIN_WAITERS", default_value_t = 10_000)]
    pub join_waiters: usize,

    /// Refill of each connection's token bucket, in cost units per second
    /// (every client frame after `hello` costs units: `--frame-costs`).
    #[arg(long, env = "RATE_PER_SEC", default_value_t = protocol::limits::DEFAULT_RATE_PER_SEC)]
    pub rate_per_sec: u32,

    /// Units a connection's bucket holds when full (its burst).
    #[arg(long, env = "RATE_BURST", default_value_t = protocol::limits::DEFAULT_RATE_BURST)]
    pub rate_burst: u32,

    /// Refill of each user's bucket (all of the user's connections on this
    /// instance), in units per second.
    #[arg(long, env = "USER_RATE_PER_SEC", default_value_t = protocol::limits::DEFAULT_USER_RATE_PER_SEC)]
    pub user_rate_per_sec: u32,

    /// Units a user's bucket holds when full.
    #[arg(long, env = "USER_RATE_BURST", default_value_t = protocol::limits::DEFAULT_USER_RATE_BURST)]
    pub user_rate_burst: u32,

    /// Refill of each client address's bucket (an IPv4 address or an IPv6
    /// /64: every connection from it to this instance), in units per second.
    #[arg(long, env = "ADDRESS_RATE_PER_SEC", default_value_t = protocol::limits::DEFAULT_ADDRESS_RATE_PER_SEC)]
    pub address_rate_per_sec: u32,

    /// Units an address's bucket holds when full.
    #[arg(long, env = "ADDRESS_RATE_BURST", default_value_t = protocol::limits::DEFAULT_ADDRESS_RATE_BURST)]
    pub address_rate_burst: u32,

    /// Cost of each client frame in units, as `type=units` pairs over the
    /// defaults (`ping=1,typing=1,send=1,leave=1,join=2,history=2,rooms=5`).
    #[arg(long, env = "FRAME_COSTS", default_value = "")]
    pub frame_costs: String,

    /// A `joined` or `history` reply costs one unit more per this many
    /// bytes it carries, charged after it is sent (a large replay puts the
    /// buckets into debt).
    #[arg(long, env = "REPLY_BYTES_PER_UNIT", default_value_t = protocol::limits::DEFAULT_REPLY_BYTES_PER_UNIT)]
    pub reply_bytes_per_unit: usize,

    /// Bound of a `joined` or `history` reply, in bytes: the newest
    /// messages that fit are sent (always at least one), the client
    /// scrolls back for the rest; a cut `joined` says `recovered: false`.
    #[arg(long, env = "MAX_REPLY_BYTES", default_value_t = protocol::limits::DEFAULT_MAX_REPLY_BYTES)]
    pub max_reply_bytes: usize,

    /// Rooms one connection may be joined to at once.
    #[arg(long, env = "MAX_ROOMS_PER_CONN", default_value_t = 100)]
    pub max_rooms_per_conn: usize,

    /// Concurrent WebSockets per client IP; more are refused with HTTP 429.
    #[arg(long, env = "MAX_CONNS_PER_IP", default_value_t = 1000)]
    pub max_conns_per_ip: usize,

    /// Trust `X-Real-IP` and `X-Forwarded-Host` from every peer, as if
    /// `--trusted-proxies 0.0.0.0/0,::/0`. Only when no client can reach the
    /// instances but through the proxy; prefer `--trusted-proxies`.
    #[arg(long, env = "TRUST_PROXY_HEADERS", default_value_t = false)]
    pub trust_proxy_headers: bool,

    /// The proxies in front of the instances, as CIDRs, comma-separated
    /// (`10.0.0.0/8,127.0.0.1/32`): from a peer in one of them,
    /// `X-Real-IP` is the client's address (for the per-IP and per-address
    /// limits) and `X-Forwarded-Host` the host the browser used (for the
    /// Origin check). From any other peer these headers are ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// The origin browsers open the chat at (`https://chat.example.com`),
    /// which a WebSocket's `Origin` may always be (same-origin policy):
    /// for proxies that rewrite the Host header or drop its port.
    #[arg(long, env = "PUBLIC_ORIGIN")]
    pub public_origin: Option<String>,

    /// Frames queued for one client before it counts as too slow and is closed
    /// with 1013. Larger: more memory per slow client, fewer reconnects on bursts.
    #[arg(long, env = "OUTBOX_CAPACITY", default_value_t = 1024)]
    pub outbox_capacity: usize,

    /// Engine events (stored messages, presence, typing) queued for each
    /// shard of this instance's hub (one shard per worker thread). When a
    /// shard falls this far behind, the Redis
    /// engine drops what arrives and the rooms concerned catch up from
    /// their streams (`chat_intake_dropped_total`); the in-process engine
    /// makes publishers wait instead.
    #[arg(long, env = "INTAKE_CAPACITY", default_value_t = 8192)]
    pub intake_capacity: usize,

    /// Interval of server pings, in milliseconds.
    #[arg(long, env = "PING_INTERVAL_MS", default_value_t = 15_000)]
    pub ping_interval_ms: u64,

    /// A connection silent (no frame, no pong) for this long is dropped, in ms.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 45_000)]
    pub idle_timeout_ms: u64,

    /// Time a new connection has to send `hello`, in ms.
    #[arg(long, env = "HELLO_TIMEOUT_MS", default_value_t = 10_000)]
    pub hello_timeout_ms: u64,

    /// Time one write to a client may take before the client is dropped, in ms.
    #[arg(long, env = "WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,

    /// Time a graceful shutdown may take, in ms; connections still open then
    /// are dropped.
    #[arg(long, env = "SHUTDOWN_DEADLINE_MS", default_value_t = 10_000)]
    pub shutdown_deadline_ms: u64,

    /// On SIGTERM, how long the instance keeps serving while `/readyz`
    /// reports it not ready (503 `draining`), in ms, before it asks its
    /// clients to reconnect: time for the load balancer to stop sending it
    /// new connections (Kubernetes removes a pod from its Service's
    /// endpoints a moment after the signal).
    #[arg(long, env = "DRAIN_DELAY_MS", default_value_t = 0)]
    pub drain_delay_ms: u64,

    /// Over how long, in ms, a stopping instance spreads its clients'
    /// reconnects: each gets its own `delay_ms` in the `reconnect` frame,
    /// evenly over the window (PROTOCOL.md, "Drain"), so the instances
    /// left are not hit by every client at once. 0: all at once.
    #[arg(long, env = "DRAIN_WINDOW_MS", default_value_t = 0)]
    pub drain_window_ms: u64,

    /// Turns the admin view on (`/admin`, `/admin/api/…`): the token its
    /// users sign in with (at least 16 characters; keep it secret). Off
    /// when unset.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// The HS256 key of the host app's tokens (PROTOCOL.md "Host
    /// identity"): a `hello` whose token is a JWT signed with it signs in
    /// as its `sub` (at least 16 characters).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// The public keys of the host app's tokens (RS256, ES256, EdDSA, …): a
    /// JWK set at an `http(s)://` URL or in a file, read at the first such
    /// token and again for a `kid` it does not hold (at most every 10 s).
    #[arg(long, env = "JWKS_URL")]
    pub jwks_url: Option<String>,

    /// A host token's `aud` must hold this (unchecked when unset).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// A host token's `iss` must be this (unchecked when unset).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Rooms only a host token whose `rooms` claim lists them may join
    /// (others get `forbidden`): comma-separated patterns, `*` any run of
    /// characters, e.g. `team-*,dm-*`.
    #[arg(long, env = "PRIVATE_ROOMS", value_delimiter = ',')]
    pub private_rooms: Vec<String>,

    /// Whether a `hello` without a host token signs in with a name alone
    /// (a guest). `false` needs `--jwt-secret` or `--jwks-url`.
    #[arg(long, env = "ALLOW_GUESTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_guests: bool,

    /// Keys of the HTTP API for the host app's backends (`/api/v1`,
    /// `Authorization: Bearer <key>`): comma-separated, each at least 16
    /// characters. The API is off when unset.
    #[arg(long, env = "API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,

    /// A request head (request line and headers) must arrive whole within
    /// this, in ms, or the connection is closed; also how long a keep-alive
    /// connection may wait idle for its next request (hyper's
    /// `header_read_timeout`).
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// `Strict-Transport-Security: max-age=<this>` on every response, in
    /// seconds: set it only when browsers reach the chat over HTTPS (at a
    /// proxy that terminates TLS, say). 0: no HSTS header.
    #[arg(long, env = "HSTS_MAX_AGE_SECS", default_value_t = 0)]
    pub hsts_max_age_secs: u64,

    /// TCP connections served as HTTP at once (WebSockets that upgraded no
    /// longer count); past it a new connection is closed at accept.
    #[arg(long, env = "MAX_HTTP_CONNECTIONS", default_value_t = 10_000)]
    pub max_http_connections: usize,

    /// Largest HTTP request body accepted, in bytes; a larger one is
    /// answered 413 Payload Too Large before it is read (a
    /// `Content-Length` over it at once, a chunked body when it passes it).
    #[arg(long, env = "MAX_REQUEST_BODY_BYTES", default_value_t = 65_536)]
    pub max_request_body_bytes: usize,

    /// A user whose last connection in a room closes is announced as left
    /// only after this long, in ms, and not at all if they come back
    /// meanwhile (a page reload, a reconnect to another instance): no
    /// left/joined pair for the others. 0: at once.
    #[arg(long, env = "PRESENCE_GRACE_MS", default_value_t = 5_000)]
    pub presence_grace_ms: u64,

    /// Presence changes of a room are gathered for this long, in ms, then
    /// go out as one `presence` frame with every join and leave (each user
    /// once, in their latest state). 0: a frame per change.
    #[arg(long, env = "PRESENCE_WINDOW_MS", default_value_t = 200)]
    pub presence_window_ms: u64,

    /// Presence entries of an instance expire this long after its last
    /// refresh (Redis engine): how fast a crashed instance's users leave.
    #[arg(long, env = "PRESENCE_TTL_MS", default_value_t = 30_000)]
    pub presence_ttl_ms: u64,

    /// Directory of the built web app (`cargo leptos build` output).
    #[arg(long, env = "LEPTOS_SITE_ROOT", default_value = "target/site")]
    pub site_root: PathBuf,

    /// `DEV` (live-reload script in pages, set by `cargo leptos watch`) or
    /// `PROD`.
    #[arg(long, env = "LEPTOS_ENV", default_value = "PROD", hide = true)]
    pub leptos_env: String,

    /// Port of cargo-leptos's live-reload server (`cargo leptos watch` only).
    #[arg(long, env = "LEPTOS_RELOAD_PORT", default_value_t = 3010, hide = true)]
    pub reload_port: u32,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,

    /// Log lines as `text` (for people) or `json` (one object per line, the
    /// event's fields at the top level with `timestamp`, `level`, `target`,
    /// `message` and the current `span`: for log collectors).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Export traces (spans `conn`, `join`, `publish`, `deliver`) over
    /// OTLP/HTTP protobuf to this OpenTelemetry Collector, e.g.
    /// `http://otel-collector:4318` (`/v1/traces` is appended). Off when
    /// unset. The standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated configuration, passed down from `main` (or a test).
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub redis: Option<RedisConfig>,
    pub instance_id: String,
    /// `None`: a random per-process secret is drawn at start.
    pub session_secret: Option<String>,
    pub token_ttl: Duration,
    /// `--session-max-lifetime-secs`.
    pub session_max_lifetime: Duration,
    pub origins: OriginPolicy,
    pub history_cap: usize,
    pub room_retention: Duration,
    /// `--database-url`, resolved: `None` keeps nothing beyond the hot store.
    pub database_url: Option<String>,
    pub archive_queue: usize,
    pub archive_retention: Retention,
    pub archive_claim_after: Duration,
    pub join_history: usize,
    pub max_replay: u64,
    pub join_wait: Duration,
    pub join_waiters: usize,
    /// What each frame costs (`--frame-costs`, `--reply-bytes-per-unit`).
    pub frame_costs: FrameCosts,
    /// Each connection's bucket.
    pub connection_rate: Rate,
    /// Each user's bucket (per instance).
    pub user_rate: Rate,
    /// Each client address's bucket (per instance).
    pub address_rate: Rate,
    pub max_reply_bytes: usize,
    pub max_rooms_per_conn: usize,
    pub max_conns_per_ip: usize,
    /// `--trusted-proxies` (every address with `--trust-proxy-headers`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `--public-origin`, lowercased, without a trailing slash.
    pub public_origin: Option<String>,
    pub outbox_capacity: usize,
    pub intake_capacity: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub hello_timeout: Duration,
    pub write_timeout: Duration,
    pub shutdown_deadline: Duration,
    /// `--drain-delay-ms`.
    pub drain_delay: Duration,
    /// `--drain-window-ms`.
    pub drain_window: Duration,
    /// `--admin-token`: the admin view is off without it.
    pub admin_token: Option<String>,
    /// `--jwt-*`, `--jwks-url`, `--private-rooms`, `--allow-guests`.
    pub identity: IdentityConfig,
    /// `--api-keys` (none: the HTTP API is off).
    pub api_keys: Vec<String>,
    /// `--header-read-timeout-ms`.
    pub header_read_timeout: Duration,
    /// `--max-http-connections`.
    pub max_http_connections: usize,
    /// `--hsts-max-age-secs` (0: no HSTS).
    pub hsts_max_age_secs: u64,
    /// `--max-request-body-bytes`.
    pub max_request_body_bytes: usize,
    pub presence_ttl: Duration,
    pub presence_grace: Duration,
    pub presence_window: Duration,
    pub site_root: PathBuf,
    /// Whether pages carry cargo-leptos's live-reload script.
    pub dev_reload: bool,
    pub reload_port: u32,
}

/// Where the Redis engine connects.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Seed URLs: one for a single Redis, one or more nodes of a cluster.
    pub urls: Vec<String>,
    pub ca_cert: Option<PathBuf>,
    pub key_prefix: String,
}

/// Which `Origin` headers may open a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// The Origin's host must equal the request's Host header.
    SameOrigin,
    /// Any origin.
    Any,
    /// Exactly these origins (scheme://host[:port], compared without a
    /// trailing slash, case-insensitively).
    List(Vec<String>),
}

/// How long archived messages are kept (`--archive-retention`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// For rooms no pattern matches.
    pub default: Keep,
    /// `(pattern, keep)` in the order given; the first match wins.
    pub rooms: Vec<(String, Keep)>,
}

/// One rule of [`Retention`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Every message, for ever.
    Unlimited,
    /// Messages younger than this many days (by their `ts`).
    Days(u32),
    /// The newest this many messages of the room.
    Messages(u64),
}

impl Retention {
    /// Parses `unlimited` | `<days>d` | `<messages>`, then
    /// `pattern=value` items, comma-separated, e.g.
    /// `90d,announce-*=unlimited,scratch=1000`. At most one item without a
    /// pattern (the default, `unlimited` when none).
    pub fn parse(text: &str) -> Result<Retention, String> {
        fn keep(value: &str) -> Result<Keep, String> {
            let value = value.trim();
            if value == "unlimited" {
                return Ok(Keep::Unlimited);
            }
            if let Some(days) = value.strip_suffix('d') {
                return match days.parse::<u32>() {
                    Ok(d) if d > 0 => Ok(Keep::Days(d)),
                    _ => Err(format!("{value:?}: days must be a whole number above 0")),
                };
            }
            match value.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Keep::Messages(n)),
                _ => Err(format!(
                    "{value:?} is not `unlimited`, `<days>d` or a number of messages above 0"
                )),
            }
        }
        let mut default = None;
        let mut rooms = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some((pattern, value)) => {
                    let pattern = pattern.trim();
                    if pattern.is_empty() {
                        return Err(format!("{item:?}: an empty room pattern"));
                    }
                    rooms.push((pattern.to_owned(), keep(value)?));
                }
                None if default.is_some() => {
                    return Err(format!(
                        "{item:?}: a second default (give rooms as pattern=value)"
                    ))
                }
                None => default = Some(keep(item)?),
            }
        }
        Ok(Retention {
            default: default.unwrap_or(Keep::Unlimited),
            rooms,
        })
    }

    /// The rule of `room`: the first pattern that matches it, else the default.
    pub fn for_room(&self, room: &str) -> Keep {
        self.rooms
            .iter()
            .find(|(pattern, _)| glob_match(pattern, room))
            .map_or(self.default, |(_, keep)| *keep)
    }

    /// Whether every room keeps everything.
    pub fn is_unlimited(&self) -> bool {
        self.default == Keep::Unlimited && self.rooms.iter().all(|(_, k)| *k == Keep::Unlimited)
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters (also none) and everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// How the host app's tokens are checked (`--jwt-*`, `--jwks-url`,
/// `--private-rooms`).
#[derive(Debug, Clone, Default)]
pub struct IdentityConfig {
    /// `--jwt-secret`: the HS256 key.
    pub secret: Option<String>,
    /// `--jwks-url`: where the public keys are (`http(s)://…` or a path).
    pub jwks: Option<String>,
    /// `--jwt-audience`: a token's `aud` must hold it.
    pub audience: Option<String>,
    /// `--jwt-issuer`: a token's `iss` must be it.
    pub issuer: Option<String>,
    /// `--private-rooms`: rooms only a token listing them may join.
    pub private_rooms: Vec<String>,
    /// `--allow-guests`: a `hello` without a host token signs in with a
    /// name alone.
    pub allow_guests: bool,
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Args {
    /// Checks every value and builds the [`Config`].
    /// The host-token settings, checked.
    fn identity(&self) -> Result<IdentityConfig, ConfigError> {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let secret = set(&self.jwt_secret);
        if secret.as_ref().is_some_and(|s| s.chars().count() < 16) {
            return Err(ConfigError(
                "--jwt-secret must be at least 16 characters".into(),
            ));
        }
        let jwks = set(&self.jwks_url);
        let private_rooms: Vec<String> = self
            .private_rooms
            .iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let verifies = secret.is_some() || jwks.is_some();
        if !verifies && !private_rooms.is_empty() {
            return Err(ConfigError(
                "--private-rooms needs --jwt-secret or --jwks-url: only a host token can list a private room".into(),
            ));
        }
        if !verifies && !self.allow_guests {
            return Err(ConfigError(
                "--allow-guests false needs --jwt-secret or --jwks-url: nobody could sign in"
                    .into(),
            ));
        }
        Ok(IdentityConfig {
            secret,
            jwks,
            audience: set(&self.jwt_audience),
            issuer: set(&self.jwt_issuer),
            private_rooms,
            allow_guests: self.allow_guests,
        })
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let positive = |name: &str, v: u64| {
            if v == 0 {
                Err(ConfigError(format!("{name} must be greater than 0")))
            } else {
                Ok(v)
            }
        };
        positive("--history-cap", self.history_cap as u64)?;
        let identity = self.identity()?;
        let api_keys: Vec<String> = self
            .api_keys
            .iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        if api_keys.iter().any(|k| k.chars().count() < 16) {
            return Err(ConfigError(
                "every --api-keys key must be at least 16 characters".into(),
            ));
        }
        if let Some(t) = self.admin_token.as_deref().filter(|t| !t.is_empty()) {
            if t.chars().count() < 16 {
                return Err(ConfigError(
                    "--admin-token must be at least 16 characters (a guessable token opens \
                     the admin view to anyone)"
                        .into(),
                ));
            }
        }
        positive("--rate-per-sec", u64::from(self.rate_per_sec))?;
        positive("--rate-burst", u64::from(self.rate_burst))?;
        positive("--user-rate-per-sec", u64::from(self.user_rate_per_sec))?;
        positive("--user-rate-burst", u64::from(self.user_rate_burst))?;
        positive(
            "--address-rate-per-sec",
            u64::from(self.address_rate_per_sec),
        )?;
        positive("--address-rate-burst", u64::from(self.address_rate_burst))?;
        positive("--reply-bytes-per-unit", self.reply_bytes_per_unit as u64)?;
        positive("--max-reply-bytes", self.max_reply_bytes as u64)?;
        let frame_costs = FrameCosts::parse(&self.frame_costs, self.reply_bytes_per_unit)
            .map_err(|e| ConfigError(format!("--frame-costs: {e}")))?;
        let burst = |flag: &str, burst: u32| {
            let most = frame_costs
                .join
                .max(frame_costs.rooms)
                .max(frame_costs.history);
            if burst < most {
                Err(ConfigError(format!(
                    "{flag} ({burst}) is below the cost of one frame ({most}): no such frame could ever be sent"
                )))
            } else {
                Ok(burst)
            }
        };
        burst("--rate-burst", self.rate_burst)?;
        burst("--user-rate-burst", self.user_rate_burst)?;
        burst("--address-rate-burst", self.address_rate_burst)?;
        positive("--max-rooms-per-conn", self.max_rooms_per_conn as u64)?;
        positive("--max-conns-per-ip", self.max_conns_per_ip as u64)?;
        positive("--outbox-capacity", self.outbox_capacity as u64)?;
        positive("--intake-capacity", self.intake_capacity as u64)?;
        positive("--ping-interval-ms", self.ping_interval_ms)?;
        positive("--presence-ttl-ms", self.presence_ttl_ms)?;
        if self.presence_grace_ms >= self.presence_ttl_ms {
            return Err(ConfigError(
                "--presence-grace-ms must be shorter than --presence-ttl-ms (the entry a \
                 leaving user keeps during the grace must not expire first)"
                    .into(),
            ));
        }
        if self.room_retention_secs.saturating_mul(1000) <= self.presence_ttl_ms {
            return Err(ConfigError(
                "--room-retention-secs must be longer than --presence-ttl-ms (a room with \
                 members is kept alive by their presence refresh)"
                    .into(),
            ));
        }
        if self.idle_timeout_ms <= self.ping_interval_ms {
            return Err(ConfigError(
                "--idle-timeout-ms must be longer than --ping-interval-ms".into(),
            ));
        }
        if let Some(secret) = &self.session_secret {
            if secret.len() < 16 {
                return Err(ConfigError(
                    "--session-secret must be at least 16 bytes".into(),
                ));
            }
        }
        let archive_retention = Retention::parse(&self.archive_retention)
            .map_err(|e| ConfigError(format!("--archive-retention: {e}")))?;
        positive("--archive-queue", self.archive_queue as u64)?;
        positive("--archive-claim-after-secs", self.archive_claim_after_secs)?;
        let redis_url_set = self
            .redis_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty());
        let database_url = match self.database_url.as_deref().map(str::trim) {
            Some("none") => None,
            Some(url) if !url.is_empty() => {
                // The URL is not echoed: it may hold a password.
                if !(url.starts_with("sqlite://")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"))
                {
                    return Err(ConfigError(
                        "--database-url must be sqlite://<path>, postgres://… or none".into(),
                    ));
                }
                Some(url.to_owned())
            }
            _ if redis_url_set => None,
            _ => Some(format!(
                "sqlite://{}",
                self.data_dir.join("chat.db").display()
            )),
        };
        let redis = match self.redis_url {
            Some(url) if !url.trim().is_empty() => {
                let urls: Vec<String> = url
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect();
                // The URL is not echoed: it may hold a password.
                if let Some(n) = urls
                    .iter()
                    .position(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
                {
                    return Err(ConfigError(format!(
                        "--redis-url must start with redis:// or rediss:// (seed {} of {} does not)",
                        n + 1,
                        urls.len()
                    )));
                }
                if self.session_secret.is_none() {
                    return Err(ConfigError(
                        "--redis-url needs --session-secret (SESSION_SECRET), the same on every \
                         instance: with a per-process secret, a client that reconnects to another \
                         instance becomes a new user and its resent messages are stored twice"
                            .into(),
                    ));
                }
                Some(RedisConfig {
                    urls,
                    ca_cert: self.redis_ca_cert,
                    key_prefix: self.redis_key_prefix,
                })
            }
            _ => None,
        };
        let origins: Vec<String> = self
            .allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        let origins = if origins.iter().any(|o| o == "*") {
            OriginPolicy::Any
        } else if origins.is_empty() {
            OriginPolicy::SameOrigin
        } else {
            OriginPolicy::List(origins)
        };
        let mut trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.parse::<ipnet::IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError(format!(
                            "--trusted-proxies: {c:?} is not an address or a CIDR (10.0.0.0/8)"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.trust_proxy_headers {
            trusted_proxies
                .extend(["0.0.0.0/0", "::/0"].map(|c| c.parse::<ipnet::IpNet>().expect("a CIDR")));
        }
        let public_origin = match self.public_origin.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(o) if o.starts_with("http://") || o.starts_with("https://") => {
                Some(o.trim_end_matches('/').to_ascii_lowercase())
            }
            Some(o) => {
                return Err(ConfigError(format!(
                    "--public-origin must be http(s)://host[:port], not {o:?}"
                )))
            }
        };
        let instance_id = self
            .instance_id
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| format!("server-{:016x}", rand::random::<u64>()));
        if instance_id.contains(['{', '}']) {
            return Err(ConfigError(
                "--instance-id may not contain braces: it is a Redis hash tag in the keys of its \
                 probe and its claim"
                    .into(),
            ));
        }
        Ok(Config {
            listen: SocketAddr::new(self.bind, self.port),
            redis,
            instance_id,
            session_secret: self.session_secret,
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            session_max_lifetime: Duration::from_secs(self.session_max_lifetime_secs),
            origins,
            history_cap: self.history_cap,
            room_retention: Duration::from_secs(self.room_retention_secs),
            database_url,
            archive_queue: self.archive_queue,
            archive_retention,
            archive_claim_after: Duration::from_secs(self.archive_claim_after_secs),
            join_history: self.join_history,
            max_replay: self.max_replay,
            join_wait: Duration::from_millis(self.join_wait_ms),
            join_waiters: self.join_waiters,
            connection_rate: Rate {
                per_sec: self.rate_per_sec,
                burst: self.rate_burst,
            },
            user_rate: Rate {
                per_sec: self.user_rate_per_sec,
                burst: self.user_rate_burst,
            },
            address_rate: Rate {
                per_sec: self.address_rate_per_sec,
                burst: self.address_rate_burst,
            },
            frame_costs,
            max_reply_bytes: self.max_reply_bytes,
            max_rooms_per_conn: self.max_rooms_per_conn,
            max_conns_per_ip: self.max_conns_per_ip,
            trusted_proxies,
            public_origin,
            outbox_capacity: self.outbox_capacity,
            intake_capacity: self.intake_capacity,
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            hello_timeout: Duration::from_millis(self.hello_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            shutdown_deadline: Duration::from_millis(self.shutdown_deadline_ms),
            drain_delay: Duration::from_millis(self.drain_delay_ms),
            drain_window: Duration::from_millis(self.drain_window_ms),
            admin_token: self.admin_token.clone().filter(|t| !t.is_empty()),
            identity,
            api_keys,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms.max(1)),
            max_http_connections: self.max_http_connections.max(1),
            hsts_max_age_secs: self.hsts_max_age_secs,
            max_request_body_bytes: self.max_request_body_bytes,
            presence_ttl: Duration::from_millis(self.presence_ttl_ms),
            presence_grace: Duration::from_millis(self.presence_grace_ms),
            presence_window: Duration::from_millis(self.presence_window_ms),
            site_root: self.site_root,
            dev_reload: self.leptos_env.eq_ignore_ascii_case("dev"),
            reload_port: self.reload_port,
        })
    }
}

impl Config {
    /// Whether `peer` is one of `--trusted-proxies` (its `X-Real-IP` is
    /// believed, and its `Origin` checked against `--public-origin`).
    pub fn trusts_proxy(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    /// The defaults, listening on 127.0.0.1 port 0: what tests start from.
    pub fn for_tests() -> Config {
        // Explicit values for what the environment could otherwise set.
        Args::parse_from([
            "server",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--instance-id",
            "test",
            "--redis-url",
            "",
            // Nothing on disk: the archive's tests give one.
            "--database-url",
            "none",
            "--leptos-env",
            "PROD",
            // Presence changes at once: the tests of the grace set it.
            "--presence-grace-ms",
            "0",
        ])
        .validate()
        .expect("default configuration is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_retention_parses_a_default_and_room_rules() {
        let r = Retention::parse("90d,announce-*=unlimited,scratch=1000,*-tmp=1d").unwrap();
        assert_eq!(r.default, Keep::Days(90));
        assert_eq!(r.for_room("lobby"), Keep::Days(90));
        assert_eq!(r.for_room("announce-all"), Keep::Unlimited);
        assert_eq!(r.for_room("scratch"), Keep::Messages(1000));
        assert_eq!(r.for_room("scratch2"), Keep::Days(90));
        assert_eq!(r.for_room("x-tmp"), Keep::Days(1));
        assert!(!r.is_unlimited());
        assert_eq!(
            Retention::parse("unlimited").unwrap().default,
            Keep::Unlimited
        );
        assert!(Retention::parse("").unwrap().is_unlimited());
        assert_eq!(
            Retention::parse("team-*=5").unwrap().default,
            Keep::Unlimited
        );
        for bad in [
            "0d", "0", "-1", "10x", "d", "1d,2d", "=5", "a=", "a=soon", "1.5d",
        ] {
            assert!(Retention::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn glob_patterns_match_runs_of_any_characters() {
        for (pattern, text) in [
            ("*", ""),
            ("*", "abc"),
            ("team-*", "team-"),
            ("team-*", "team-a"),
            ("*-tmp", "a-tmp"),
            ("a*b*c", "abc"),
            ("a*b*c", "a-b-b-c"),
            ("dm-*-*", "dm-ann-bob"),
            ("lobby", "lobby"),
        ] {
            assert!(glob_match(pattern, text), "{pattern} {text}");
        }
        for (pattern, text) in [
            ("team-*", "team"),
            ("lobby", "lobby2"),
            ("a*b*c", "acb"),
            ("*-tmp", "-tm"),
            ("ab*ba", "aba"),
        ] {
            assert!(!glob_match(pattern, text), "{pattern} {text}");
        }
    }

    #[test]
    fn the_archive_defaults_to_sqlite_in_the_data_dir_without_redis() {
        let cfg = Args::parse_from(["server", "--redis-url", "", "--data-dir", "/tmp/x"])
            .validate()
            .unwrap();
        assert_eq!(cfg.database_url.as_deref(), Some("sqlite:///tmp/x/chat.db"));
        let cfg = Args::parse_from(["server", "--redis-url", "", "--database-url", "none"])
            .validate()
            .unwrap();
        assert_eq!(cfg.database_url, None);
        let cfg = args(
            "redis://127.0.0.1:1",
            &["--session-secret", "0123456789abcdef"],
        )
        .validate()
        .unwrap();
        assert_eq!(
            cfg.database_url, None,
            "Redis keeps no archive unless asked"
        );
        let cfg = args(
            "redis://127.0.0.1:1",
            &[
                "--session-secret",
                "0123456789abcdef",
                "--database-url",
                "postgres://db/chat",
            ],
        )
        .validate()
        .unwrap();
        assert_eq!(
            cfg.database_url.as_deref(),
            Some("postgres://db/chat"),
            "the Redis streams archived into PostgreSQL"
        );
        let err = Args::parse_from(["server", "--redis-url", "", "--database-url", "mysql://x"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--database-url"), "{err}");
    }

    /// Arguments with `--redis-url` given (empty: the in-process engine),
    /// so the environment cannot set it.
    fn args(redis_url: &str, extra: &[&str]) -> Args {
        let mut argv = vec!["server", "--redis-url", redis_url, "--leptos-env", "PROD"];
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["server", "--leptos-env", "PROD"];
            argv.extend_from_slice(extra);
            Args::parse_from(argv).validate()
        };
        let c = parse(&["--trusted-proxies", "10.0.0.0/8, 127.0.0.1,::1"]).unwrap();
        let peer = |ip: &str| {
            c.trusted_proxies
                .iter()
                .any(|n| n.contains(&ip.parse::<std::net::IpAddr>().unwrap()))
        };
        assert!(peer("10.1.2.3") && peer("127.0.0.1") && peer("::1"));
        assert!(!peer("192.168.0.1") && !peer("127.0.0.2"));
        let err = parse(&["--trusted-proxies", "10.0.0.0/33"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--trusted-proxies"), "{err}");
        assert!(parse(&["--trusted-proxies", "proxy.internal"]).is_err());
        // The old flag trusts every peer; none of the two trusts none.
        let all = parse(&["--trust-proxy-headers"]).unwrap();
        assert!(all
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&"198.51.100.1".parse::<std::net::IpAddr>().unwrap())));
        assert!(parse(&[]).unwrap().trusted_proxies.is_empty());
        let o = parse(&["--public-origin", "https://Chat.Example.com/"]).unwrap();
        assert_eq!(o.public_origin.as_deref(), Some("https://chat.example.com"));
        assert!(parse(&["--public-origin", "chat.example.com"]).is_err());
    }

    #[test]
    fn a_redis_url_without_a_session_secret_is_refused() {
        for url in ["redis://127.0.0.1:1", "rediss://u:p@example.com:6380"] {
            let err = args(url, &[]).validate().unwrap_err();
            assert!(err.to_string().contains("--session-secret"), "{err}");
        }
        let ok = args(
            "redis://127.0.0.1:1",
            &["--session-secret", "0123456789abcdef"],
        )
        .validate()
        .expect("valid with a secret");
        assert!(ok.redis.is_some());
        assert!(args("", &[])
            .validate()
            .expect("memory engine")
            .redis
            .is_none());
    }

    #[test]
    fn frame_costs_and_buckets_that_could_never_admit_a_frame_are_refused() {
        let err = args("", &["--frame-costs", "hello=1"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--frame-costs"), "{err}");
        let err = args("", &["--frame-costs", "rooms=50"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--rate-burst (40)"), "{err}");
        let err = args("", &["--user-rate-burst", "1"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--user-rate-burst"), "{err}");
        let ok = args("", &["--frame-costs", "rooms=10,ping=0"])
            .validate()
            .unwrap();
        assert_eq!((ok.frame_costs.rooms, ok.frame_costs.ping), (10, 0));
    }

    #[test]
    fn instance_ids_with_braces_are_refused() {
        let err = args("", &["--instance-id", "a{b}"]).validate().unwrap_err();
        assert!(err.to_string().contains("braces"), "{err}");
    }

    #[test]
    fn default_instance_ids_carry_64_random_bits() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| args("", &[]).validate().unwrap().instance_id)
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let hex = id.strip_prefix("server-").expect("server- prefix");
            assert_eq!(hex.len(), 16, "{id}");
            assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
    }
}
