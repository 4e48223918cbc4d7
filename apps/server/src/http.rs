//! The HTTP edge: routes, the WebSocket upgrade (origin check, per-IP
//! limit), health, readiness, metrics, the web app (SSR) and the docs.
//!
//! Owns the axum router and what is checked before a socket is handed to
//! [`crate::connection`]. **API boundary:** the routes below; everything a
//! client does after the upgrade is protocol, not HTTP.

use crate::config::{Args, OriginPolicy};
use crate::connection::{self, ConnContext};
use crate::cost::AddressKey;
use crate::metrics as m;
use crate::ws;
use axum::extract::{ConnectInfo, FromRef, Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::FutureExt as _;
use leptos::config::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::task::TaskTracker;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

/// State of the router.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) leptos: LeptosOptions,
    pub(crate) conn: Arc<ConnContext>,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) ip_limits: Arc<IpLimits>,
    /// Every connection task runs on this tracker, so shutdown can wait for
    /// upgraded sockets (axum's graceful shutdown does not).
    pub(crate) tracker: TaskTracker,
    pub(crate) next_conn: Arc<AtomicU64>,
    /// What the docs pages show of this server, built once at start.
    pub(crate) docs: Arc<docs::DocsContext>,
    /// The admin view's routes' state.
    pub(crate) admin: Arc<crate::admin::Admin>,
    /// The HTTP API's state.
    pub(crate) api: Arc<crate::api::Api>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> LeptosOptions {
        state.leptos.clone()
    }
}

/// The Content-Security-Policy of every page: scripts only from this
/// origin (with `nonce`, the chat page's hydration script, which carries
/// it, and WebAssembly compilation), styles from this origin (a `style`
/// attribute may set a colour), the WebSocket to this origin only
/// (`connect-src 'self'` covers `ws:`/`wss:` of the same host), never
/// framed, no plugins, no `<base>`. `reload_port`: the dev server's
/// live-reload socket (`cargo leptos watch`), allowed in development only.
pub(crate) fn content_security_policy(nonce: Option<&str>, reload_port: Option<u32>) -> String {
    let scripts = match nonce {
        Some(nonce) => format!("'self' 'nonce-{nonce}' 'wasm-unsafe-eval'"),
        None => "'self'".to_owned(),
    };
    let connect = match reload_port {
        Some(port) => format!("'self' ws://127.0.0.1:{port} ws://localhost:{port}"),
        None => "'self'".to_owned(),
    };
    format!(
        "default-src 'self'; script-src {scripts}; style-src 'self'; \
         style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src {connect}; \
         frame-ancestors 'none'; base-uri 'none'; object-src 'none'; form-action 'self'"
    )
}

/// A page of the web app (the chat, or its not-found page): the shell,
/// with a CSP header that names the nonce leptos_axum gave this render
/// (its hydration script carries it).
fn page(options: LeptosOptions) -> impl leptos::IntoView {
    let reload_port = (options.env == leptos::config::Env::DEV).then_some(options.reload_port);
    if let (Some(nonce), Some(response)) = (
        leptos::nonce::use_nonce(),
        leptos::prelude::use_context::<leptos_axum::ResponseOptions>(),
    ) {
        if let Ok(csp) = HeaderValue::from_str(&content_security_policy(Some(&nonce), reload_port))
        {
            response.insert_header(header::CONTENT_SECURITY_POLICY, csp);
        }
    }
    web::shell(options)
}

/// The header that names a request in every trace of it: taken from the
/// request when a proxy set it, made (a UUID) otherwise, and sent back.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The router of one instance. Bodies are compressed (br or gzip) when the
/// client accepts it; `/pkg` files are served precompressed when the build
/// made `.br`/`.gz` siblings. Every response carries
/// `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, a
/// Content-Security-Policy (the chat page's names its nonce; every other
/// gets the policy without one), `X-Request-Id`, a `Cache-Control`
/// (immutable for hashed asset names, `no-cache` for everything else, so
/// pages are revalidated) and, when configured,
/// `Strict-Transport-Security`. A request body over
/// `--max-request-body-bytes` is answered 413.
pub(crate) fn router(state: AppState) -> Router {
    let config = state.conn.config.clone();
    let leptos = state.leptos.clone();
    let reload_port = (leptos.env == leptos::config::Env::DEV).then_some(leptos.reload_port);
    let routes = generate_route_list(web::App);
    let default_csp = HeaderValue::from_str(&content_security_policy(None, reload_port))
        .expect("the policy is ASCII");
    let pkg_dir = std::path::Path::new(&*leptos.site_root).join(&*leptos.site_pkg_dir);
    let pkg = tower::ServiceBuilder::new()
        .layer(axum::middleware::map_response(asset_cache_control))
        .service(
            ServeDir::new(pkg_dir)
                .precompressed_br()
                .precompressed_gzip(),
        );
    let router = Router::new()
        .nest_service("/pkg", pkg)
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(crate::admin::router(state.admin.clone()))
        .merge(crate::api::router(state.api.clone()))
        .route("/docs", get(docs_index))
        .route("/docs/", get(docs_index))
        .route("/docs/{*path}", get(docs_page))
        .leptos_routes(&state, routes, move || page(leptos.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(page))
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(config.max_request_body_bytes))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            default_csp,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        // Brotli or gzip, as the client accepts, for every body over 32
        // bytes that is not an image: HTML, CSS, JS, the WebAssembly
        // (980 KB, a third of it gzipped), metrics. Quality 4: a first
        // load's WASM costs milliseconds to compress, not the seconds of
        // brotli's best.
        .layer(
            CompressionLayer::new()
                .br(true)
                .gzip(true)
                .quality(CompressionLevel::Precise(4)),
        )
        // Outermost: the id exists before the trace span is made, and
        // every log line of the request (a refused upgrade, a connection's
        // whole life: its span is a child of this one) carries it.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
    match config.hsts_max_age_secs {
        0 => router,
        age => router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_str(&format!("max-age={age}")).expect("a number"),
        )),
    }
}

/// The span of one HTTP request: method, path (never the query, which
/// may carry a token) and request id.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "http",
        method = %request.method(),
        path = request.uri().path(),
        request_id = id
    )
}

/// `Cache-Control` and `Vary` of a `/pkg` file: a name that carries its content's
/// hash (cargo-leptos `hash-files`: `chat.<22 base64url chars>.wasm`)
/// never changes, so browsers keep it for a year without asking; any
/// other name is revalidated.
async fn asset_cache_control<B>(
    uri: axum::http::Uri,
    mut response: axum::http::Response<B>,
) -> axum::http::Response<B> {
    let value = if response.status().is_success() && is_hashed_asset_name(uri.path()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    // The body depends on Accept-Encoding (a `.br` or `.gz` file): a
    // shared cache must not give one client's encoding to another.
    if !headers.contains_key(header::VARY) {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// Whether the last segment of `path` is `<stem>.<hash>.<ext>` with the
/// 22-character unpadded base64url MD5 that cargo-leptos puts in names.
pub(crate) fn is_hashed_asset_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut parts = name.rsplit('.');
    let (Some(_ext), Some(hash), Some(stem)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !stem.is_empty()
        && hash.len() == 22
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.conn.live.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    match state.conn.hub.reachable().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    m::collect_process();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn docs_index(State(state): State<AppState>) -> Response {
    docs_response(&state, "")
}

async fn docs_page(State(state): State<AppState>, Path(path): Path<String>) -> Response {
    docs_response(&state, &path)
}

fn docs_response(state: &AppState, path: &str) -> Response {
    match docs::render(path, &state.docs) {
        Some(html) => Html(html).into_response(),
        None => (StatusCode::NOT_FOUND, "no such docs page").into_response(),
    }
}

/// What the docs show of this server: its flags (from the clap definition
/// of [`Args`], so the configuration page cannot drift), its metrics, and
/// the app's stylesheet (`stylesheet`: its href, [`AssetNames::css`]).
pub(crate) fn docs_context(stylesheet: String) -> docs::DocsContext {
    docs::DocsContext {
        config: config_options(),
        metrics: m::ALL
            .iter()
            .map(|&(name, help)| docs::Metric { name, help })
            .collect(),
        stylesheet,
        openapi: {
            use utoipa::OpenApi as _;
            crate::api::ApiDoc::openapi()
                .to_json()
                .expect("the document serialises")
        },
    }
}

/// The names the build gave the web app's files. cargo-leptos with
/// `hash-files` (the workspace Cargo.toml) names them
/// `chat.<hash>.{js,wasm,css}` and writes the hashes to `hash.txt`
/// (lines `js: <hash>`, `wasm: <hash>`, `css: <hash>`) beside the server
/// binary; a deploy that ships the binary alone puts it in the site root
/// (the Dockerfile does), which is looked at first. A hash file whose
/// files are not all in `<site root>/pkg` is ignored, with a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AssetNames {
    /// The hash file to give leptos (its `hash_file`: an absolute path
    /// replaces the executable's directory it is joined to), or `None`:
    /// the names are not hashed.
    pub(crate) hash_file: Option<std::path::PathBuf>,
    /// The stylesheet's href: `/pkg/chat.<hash>.css` or `/pkg/chat.css`.
    pub(crate) css: String,
}

impl AssetNames {
    pub(crate) fn find(site_root: &std::path::Path, output_name: &str) -> AssetNames {
        let beside_exe = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("hash.txt")));
        for path in [Some(site_root.join("hash.txt")), beside_exe]
            .into_iter()
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let hashes: HashMap<&str, &str> = text
                .lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(kind, hash)| (kind.trim(), hash.trim()))
                .collect();
            let names = ["js", "wasm", "css"].map(|ext| {
                hashes
                    .get(ext)
                    .map(|hash| format!("{output_name}.{hash}.{ext}"))
            });
            if names.iter().all(|name| {
                name.as_ref()
                    .is_some_and(|n| site_root.join("pkg").join(n).is_file())
            }) {
                let css = names[2].as_deref().unwrap_or_default();
                return AssetNames {
                    css: format!("/pkg/{css}"),
                    hash_file: Some(path),
                };
            }
            tracing::warn!(
                hash_file = %path.display(),
                site_root = %site_root.display(),
                "the hash file names files the site root does not have (a build of another \
                 profile?): ignored; rebuild with cargo leptos build"
            );
        }
        AssetNames {
            hash_file: None,
            css: format!("/pkg/{output_name}.css"),
        }
    }
}

/// Every flag of [`Args`] that `--help` shows, with its env var, default
/// and help text (the long help when the doc comment has several paragraphs).
pub(crate) fn config_options() -> Vec<docs::ConfigOption> {
    <Args as clap::CommandFactory>::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| {
            let flag = format!("--{}", a.get_long()?);
            let default = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy())
                .collect::<Vec<_>>();
            Some(docs::ConfigOption {
                flag,
                env: a.get_env().map(|e| e.to_string_lossy().into_owned()),
                default: (!default.is_empty()).then(|| default.join(",")),
                help: a
                    .get_long_help()
                    .or(a.get_help())
                    .map(|h| {
                        h.to_string()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

async fn ws_upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: ws::Upgrade,
) -> Response {
    let config = &state.conn.config;
    let trusted = config.trusts_proxy(peer.ip());
    if let Err(reason) = check_origin(
        &config.origins,
        config.public_origin.as_deref(),
        trusted,
        &headers,
    ) {
        metrics::counter!(m::UPGRADES_REFUSED, "reason" => "origin").increment(1);
        tracing::info!(%peer, reason, "websocket upgrade refused");
        return (StatusCode::FORBIDDEN, reason).into_response();
    }
    let ip = client_ip(trusted, peer.ip(), &headers);
    let Some(slot) = state.ip_limits.acquire(ip) else {
        metrics::counter!(m::UPGRADES_REFUSED, "reason" => "per_ip").increment(1);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many connections from {ip} (limit {})",
                config.max_conns_per_ip
            ),
        )
            .into_response();
    };
    if let Err(refusal) = state.conn.costs.connect(AddressKey::of(ip)) {
        metrics::counter!(m::UPGRADES_REFUSED, "reason" => "connect_rate").increment(1);
        let retry = refusal.wait.as_secs().max(1).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry)],
            format!("too many new connections from {ip}; retry later"),
        )
            .into_response();
    }
    let id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let ctx = state.conn.clone();
    // The upgrade request's id names the connection in its logs.
    let request_id = headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let capacity = ctx.config.outbox_capacity;
    upgrade.on_upgrade(&state.tracker, capacity, move |socket, outbox| {
        connection_task(socket, outbox, ctx, id, ip, request_id, slot)
    })
}

/// The task of one upgraded connection: [`connection::serve`], then its
/// per-address slot is given back.
///
/// Not an `async` block: one would keep room for what it captured (the
/// socket, or the whole connection future) beside the future it awaits,
/// for the connection's whole life (1.3 to 1.7 KB per connection, where
/// the connection future is ~0.7 KB).
fn connection_task(
    socket: ws::Socket,
    outbox: Arc<crate::outbox::Outbox>,
    ctx: Arc<ConnContext>,
    id: u64,
    ip: IpAddr,
    request_id: String,
    slot: IpSlot,
) -> impl std::future::Future<Output = ()> + Send {
    connection::serve(socket, outbox, ctx, id, ip, request_id).map(move |()| drop(slot))
}

/// Checks the upgrade's `Origin` against the policy. No `Origin` header: a
/// non-browser client, accepted. Same origin: the Origin is
/// `public_origin`, or its host (with port) is the request's `Host`, or,
/// from a `trusted` proxy, its `X-Forwarded-Host`.
pub(crate) fn check_origin(
    policy: &OriginPolicy,
    public_origin: Option<&str>,
    trusted: bool,
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .map_err(|_| "Origin header is not text")?
        .trim_end_matches('/')
        .to_ascii_lowercase();
    match policy {
        OriginPolicy::Any => Ok(()),
        OriginPolicy::List(allowed) => {
            if allowed.contains(&origin) {
                Ok(())
            } else {
                Err("origin not allowed")
            }
        }
        OriginPolicy::SameOrigin => {
            if public_origin == Some(origin.as_str()) {
                return Ok(());
            }
            let origin_host = origin
                .split_once("://")
                .map(|(_, rest)| rest)
                .ok_or("Origin is not a URL")?;
            let header_value = |name: &str| {
                headers
                    .get(name)
                    .and_then(|h| h.to_str().ok())
                    .map(|h| h.trim().to_ascii_lowercase())
            };
            let host = header_value(header::HOST.as_str());
            let forwarded = trusted.then(|| header_value("x-forwarded-host")).flatten();
            if host.is_none() && forwarded.is_none() {
                return Err("no Host header to compare the Origin with");
            }
            if [host, forwarded].iter().flatten().any(|h| h == origin_host) {
                Ok(())
            } else {
                Err("cross-origin WebSocket refused")
            }
        }
    }
}

/// The client's address ([`crate::cost::client_ip`]).
fn client_ip(trusted: bool, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    crate::cost::client_ip(
        trusted,
        peer,
        headers.get("x-real-ip").and_then(|v| v.to_str().ok()),
    )
}

/// Open WebSockets per client IP.
pub(crate) struct IpLimits {
    max: usize,
    /// A std mutex: one map update per connect and disconnect.
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl IpLimits {
    pub(crate) fn new(max: usize) -> Arc<IpLimits> {
        Arc::new(IpLimits {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, released on drop, or `None`
    /// at the limit.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().expect("ip limits lock");
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            limits: self.clone(),
            ip,
        })
    }
}

/// One open connection counted against its IP.
pub(crate) struct IpSlot {
    limits: Arc<IpLimits>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("ip limits lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    /// Every open connection keeps its task's future for its whole life: it
    /// is the connection's future and the address slot, nothing beside
    /// (an `async` block here kept room for its captures too: 1.3-1.7 KB).
    #[test]
    fn a_connection_task_is_its_connection_future_and_its_slot() {
        fn task_size<A, B, C, D, E, G, H, F: std::future::Future>(
            _: fn(A, B, C, D, E, G, H) -> F,
        ) -> usize {
            std::mem::size_of::<F>()
        }
        fn serve_size<A, B, C, D, E, G, F: std::future::Future>(
            _: fn(A, B, C, D, E, G) -> F,
        ) -> usize {
            std::mem::size_of::<F>()
        }
        let (task, serve) = (task_size(connection_task), serve_size(connection::serve));
        let slot = std::mem::size_of::<IpSlot>();
        assert!(
            task <= serve + slot + 16,
            "the task's future is {task} bytes for a connection future of {serve} and a slot of {slot}"
        );
    }

    /// The policy's answer with no public origin, from an untrusted peer.
    fn plain(p: &OriginPolicy, h: &HeaderMap) -> Result<(), &'static str> {
        check_origin(p, None, false, h)
    }

    #[test]
    fn same_origin_policy() {
        let p = OriginPolicy::SameOrigin;
        assert!(plain(&p, &headers(None, "chat.example:3000")).is_ok());
        assert!(plain(
            &p,
            &headers(Some("http://chat.example:3000"), "chat.example:3000")
        )
        .is_ok());
        assert!(plain(
            &p,
            &headers(Some("https://CHAT.example:3000/"), "chat.example:3000")
        )
        .is_ok());
        assert!(plain(
            &p,
            &headers(Some("http://evil.example"), "chat.example:3000")
        )
        .is_err());
        assert!(plain(
            &p,
            &headers(Some("http://chat.example:3001"), "chat.example:3000")
        )
        .is_err());
        assert!(plain(&p, &headers(Some("null"), "chat.example:3000")).is_err());
    }

    #[test]
    fn behind_a_proxy_the_public_origin_or_a_trusted_forwarded_host_is_the_same_origin() {
        let p = OriginPolicy::SameOrigin;
        // The proxy rewrote Host to the upstream's and dropped the port.
        let mut h = headers(Some("https://chat.example.com"), "10.0.0.7:3000");
        assert!(plain(&p, &h).is_err(), "refused without configuration");
        assert!(check_origin(&p, Some("https://chat.example.com"), false, &h).is_ok());
        assert!(check_origin(&p, Some("https://other.example.com"), false, &h).is_err());
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("chat.example.com"),
        );
        assert!(
            check_origin(&p, None, true, &h).is_ok(),
            "a trusted proxy's forwarded host"
        );
        assert!(
            check_origin(&p, None, false, &h).is_err(),
            "anyone else's is ignored"
        );
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        assert!(check_origin(&p, None, true, &h).is_err());
    }

    #[test]
    fn the_client_address_comes_from_x_real_ip_only_through_a_trusted_proxy() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let mut h = headers(None, "x");
        h.insert("x-real-ip", HeaderValue::from_static("203.0.113.9"));
        assert_eq!(
            client_ip(true, peer, &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(false, peer, &h), peer);
        h.insert("x-real-ip", HeaderValue::from_static("not an address"));
        assert_eq!(client_ip(true, peer, &h), peer);
    }

    #[test]
    fn listed_and_any_policies() {
        let list = OriginPolicy::List(vec!["https://chat.example.com".into()]);
        assert!(plain(&list, &headers(Some("https://chat.example.com"), "x")).is_ok());
        assert!(plain(&list, &headers(Some("http://chat.example.com"), "x")).is_err());
        assert!(plain(&OriginPolicy::Any, &headers(Some("http://anything"), "x")).is_ok());
    }

    #[test]
    fn docs_get_every_visible_flag_with_its_env_default_and_help() {
        let options = config_options();
        let command = <Args as clap::CommandFactory>::command();
        let visible: Vec<_> = command
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .collect();
        assert_eq!(options.len(), visible.len());
        for o in &options {
            assert!(!o.help.is_empty(), "{} has no help", o.flag);
            assert!(o.env.is_some(), "{} has no env var", o.flag);
        }
        let port = options.iter().find(|o| o.flag == "--port").unwrap();
        assert_eq!(port.env.as_deref(), Some("PORT"));
        assert_eq!(port.default.as_deref(), Some("3000"));
        assert!(options.iter().all(|o| o.flag != "--leptos-env"), "hidden");
        assert_eq!(docs_context(String::new()).metrics.len(), m::ALL.len());
    }

    #[test]
    fn hashed_asset_names_are_those_cargo_leptos_makes() {
        for hashed in [
            "/pkg/chat.7qZ3-x_Kd0aV1bN2cM3eFg.wasm",
            "/pkg/chat.7qZ3-x_Kd0aV1bN2cM3eFg.js",
            "chat.AAAAAAAAAAAAAAAAAAAAAA.css",
            "/pkg/snippets/x/inline.AAAAAAAAAAAAAAAAAAAAAA.js",
        ] {
            assert!(is_hashed_asset_name(hashed), "{hashed}");
        }
        for plain in [
            "/pkg/chat.wasm",
            "/pkg/chat.css",
            "/pkg/.AAAAAAAAAAAAAAAAAAAAAA.js",
            "/pkg/chat.AAAAAAAAAAAAAAAAAAAAA.js",
            "/pkg/chat.AAAAAAAAAAAAAAAAAAAAAAA.js",
            "/pkg/chat.AAAAAAAAAAAAAAAAAAAA+/.js",
            "/pkg/AAAAAAAAAAAAAAAAAAAAAA.js",
            "",
        ] {
            assert!(!is_hashed_asset_name(plain), "{plain}");
        }
    }

    /// README's configuration table is written by hand; this keeps it
    /// listing every visible flag with its env var and default.
    #[test]
    fn readme_lists_every_visible_flag_with_its_env_and_default() {
        const README: &str = include_str!("../../../README.md");
        for o in config_options() {
            let env = o.env.as_deref().unwrap_or_default();
            let row = format!("| `{}` | `{env}` |", o.flag);
            let line = README
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("README has no row starting {row:?}"));
            if let Some(default) = o.default.as_deref().filter(|d| !d.is_empty()) {
                assert!(
                    line.contains(&format!("| {default} |"))
                        || line.contains(&format!("| `{default}` |")),
                    "README's row of {} does not give the default {default:?}: {line}",
                    o.flag
                );
            }
        }
    }

    #[test]
    fn ip_slots_are_counted_and_released() {
        let limits = IpLimits::new(2);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let a = limits.acquire(ip).unwrap();
        let _b = limits.acquire(ip).unwrap();
        assert!(limits.acquire(ip).is_none());
        assert!(limits.acquire("127.0.0.10".parse().unwrap()).is_some());
        drop(a);
        assert!(limits.acquire(ip).is_some());
    }
}
