//! The chat server: one instance of a horizontally scalable chat.
//!
//! Modules, in reading order:
//! - [`config`]: flags and env, validated once into [`config::Config`].
//! - `http`: routes, the WebSocket upgrade, health, metrics, web UI, docs.
//! - `ws`: the WebSocket upgrade; the socket split into tungstenite's
//!   reading side and the outbox.
//! - `connection`: one task per socket; the protocol session.
//! - `codec`: WebSocket message ↔ protocol frame, pure; server frames
//!   encoded once as whole WebSocket frames.
//! - `session`: signed session tokens.
//! - `hub`: local rooms and members; in-order fan-out of engine events.
//! - `outbox`: a connection's write side: the hub's deliveries written
//!   at once, what the socket did not take kept for the connection.
//! - `engine`: what instances share: a broker (history, fan-out) and a
//!   presence store, in memory or on Redis.
//! - `archive`: every message kept in SQLite or PostgreSQL behind the
//!   engine's hot store.
//! - [`metrics`]: metric names and the Prometheus recorder.
//! - [`telemetry`]: OpenTelemetry traces over OTLP (`--otlp-endpoint`).
//! - `admin`: the admin view's routes, instance heartbeats and actions.
//! - `api`: the HTTP API for backends (`/api/v1`) and its OpenAPI
//!   document.
//!
//! Dependencies point one way: http → api → admin → connection, http → ws →
//! outbox, connection → hub → outbox, engine → archive; every module may use codec,
//! config and metrics, which use none of the others. Only `config`, `cost`,
//! `metrics`, `archive` and `telemetry` are public (for `main`, the
//! integration tests, the docs' tables and the archive's benchmark).

mod admin;
mod api;
pub mod archive;
mod codec;
pub mod config;
mod connection;
pub mod cost;
mod engine;
mod http;
mod hub;
mod identity;
pub mod metrics;
mod outbox;
mod serve;
mod session;
pub mod telemetry;
mod ws;

use crate::config::Config;
use crate::connection::{ConnContext, Live};
use crate::engine::memory::MemoryEngine;
use crate::engine::redis::RedisEngine;
use crate::engine::{AdminBoard, Broker, PresenceStore, RecoveryLimits};
use crate::hub::Hub;
use crate::session::Sessions;
use anyhow::Context as _;
use leptos::config::{Env, LeptosOptions};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves the chat on `listener` until `stop` is cancelled, then drains
/// (see [`drain`]: not ready, the drain delay, reconnects spread over the
/// drain window), closes every WebSocket left with `reconnect` + 1012 and
/// returns within the configured deadline. Tests call this with a listener
/// on port 0.
pub async fn run(
    config: Config,
    listener: TcpListener,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    install_crypto_provider();
    // What every part of the instance stops on: cancelled when the drain
    // that `stop` starts is over.
    let shutdown = CancellationToken::new();
    let local = listener.local_addr().context("listener address")?;
    let metrics = metrics::install();
    let tracker = TaskTracker::new();

    let archive = match &config.database_url {
        Some(url) => {
            let archive = archive::Archive::connect(url)
                .await
                .context("opening the archive (--database-url)")?;
            tracing::info!(kind = archive.kind(), "archive open");
            tracker.spawn(archive::retention::run(
                archive.clone(),
                config.archive_retention.clone(),
                engine::now_ms,
                shutdown.child_token(),
            ));
            Some(archive)
        }
        None => None,
    };
    // The in-process engine writes the archive through this queue; the
    // Redis engine moves its streams into the archive itself.
    let writer = match (&archive, &config.redis) {
        (Some(archive), None) => Some(archive::writer::ArchiveWriter::start(
            archive.clone(),
            config.archive_queue,
        )),
        _ => None,
    };
    // One hub shard per worker thread of the runtime (issue 18): each has
    // its own event loop, so deliveries run on every core.
    let shards = tokio::runtime::Handle::current().metrics().num_workers();
    let (events_tx, events_rx) = engine::Events::channel(shards, config.intake_capacity);
    let (broker, presence, board): (Arc<dyn Broker>, Arc<dyn PresenceStore>, Arc<dyn AdminBoard>) =
        match &config.redis {
            None => {
                let engine = Arc::new(
                    MemoryEngine::new(events_tx, config.history_cap).with_archive(writer.clone()),
                );
                engine.set_retention(config.room_retention);
                (engine.clone(), engine.clone(), engine)
            }
            Some(redis) => {
                let engine = RedisEngine::start(
                    redis,
                    config.instance_id.clone(),
                    engine::redis::RoomLimits {
                        history_cap: config.history_cap,
                        presence_ttl: config.presence_ttl,
                        retention: config.room_retention,
                    },
                    archive.map(|archive| (archive, config.archive_claim_after)),
                    events_tx,
                    &tracker,
                    shutdown.child_token(),
                )
                .context("starting the Redis engine")?;
                (engine.clone(), engine.clone(), engine)
            }
        };
    if config.redis.is_some() {
        claim_instance_id(&*presence, &config.instance_id, config.presence_ttl).await?;
    }
    // Released once every connection is gone (a successor with the same
    // id must not start while this one's leaves still run). Held for Redis
    // only: the in-process engine owns the hub's event channel, and a
    // reference kept to the end would keep the hub's event loop alive.
    let registry = config.redis.is_some().then(|| presence.clone());
    let hub = Hub::new(
        shards,
        broker,
        presence,
        RecoveryLimits {
            recent: config.join_history,
            max_replay: config.max_replay,
        },
        hub::JoinWaits {
            wait: config.join_wait,
            waiters: config.join_waiters,
        },
        hub::PresenceTiming {
            grace: config.presence_grace,
            window: config.presence_window,
        },
        tracker.clone(),
        shutdown.clone(),
    );
    for (shard, events) in events_rx.into_iter().enumerate() {
        tracker.spawn(Hub::run(Arc::downgrade(&hub), shard, events));
    }
    tracker.spawn(Hub::refresh_presence(
        Arc::downgrade(&hub),
        (config.presence_ttl / 3).max(std::time::Duration::from_millis(50)),
        shutdown.clone(),
    ));

    let secret = match &config.session_secret {
        Some(s) => s.as_bytes().to_vec(),
        None => {
            tracing::warn!(
                "SESSION_SECRET is not set: using a random per-process secret; \
                 sessions will not survive a restart or move between instances"
            );
            rand::random::<[u8; 32]>().to_vec()
        }
    };
    let conn = Arc::new(ConnContext {
        config: config.clone(),
        hub,
        sessions: Sessions::new(&secret, config.token_ttl, config.session_max_lifetime),
        live: Live::default(),
        costs: cost::Costs::new(
            config.frame_costs.clone(),
            config.connection_rate,
            config.user_rate,
            config.address_rate,
        ),
        identity: identity::Identity::new(config.identity.clone()),
    });
    tracker.spawn(connection::keepalive(
        conn.clone(),
        config.ping_interval,
        config.idle_timeout,
        shutdown.clone(),
    ));
    // Connections learn of the drain and the shutdown through their outbox.
    tracker.spawn({
        let conn = conn.clone();
        let shutdown = shutdown.clone();
        let config = config.clone();
        async move {
            stop.cancelled().await;
            drain(&conn.live, config.drain_delay, config.drain_window).await;
            shutdown.cancel();
            conn.live.shut_down();
        }
    });
    let admin = Arc::new(admin::Admin {
        ctx: conn.clone(),
        board,
        started_ms: engine::now_ms(),
    });
    tracker.spawn(admin::heartbeat(admin.clone(), shutdown.clone()));
    let api = Arc::new(api::Api::new(admin.clone()));
    let assets = http::AssetNames::find(&config.site_root, OUTPUT_NAME);
    let state = http::AppState {
        leptos: leptos_options(&config, local, &assets),
        docs: Arc::new(http::docs_context(assets.css)),
        conn,
        metrics,
        ip_limits: http::IpLimits::new(config.max_conns_per_ip),
        tracker: tracker.clone(),
        next_conn: Arc::new(AtomicU64::new(1)),
        admin,
        api,
    };
    tracing::info!(
        addr = %local,
        instance = %config.instance_id,
        engine = state.conn.hub.engine_kind(),
        "listening"
    );
    serve::serve(
        listener,
        http::router(state),
        serve::EdgeLimits {
            header_read_timeout: config.header_read_timeout,
            max_http_connections: config.max_http_connections,
            shutdown_deadline: config.shutdown_deadline,
        },
        shutdown.clone(),
    )
    .await
    .context("http server")?;

    // Upgraded sockets are not covered by axum's graceful shutdown: each
    // connection was told through its outbox, sent `reconnect` and closes;
    // wait for them.
    tracker.close();
    if tokio::time::timeout(config.shutdown_deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed with connections still open");
    }
    if let Some(registry) = registry {
        registry.release_instance().await;
    }
    // Every message stored is archived before the process ends.
    if let Some(writer) = writer {
        if tokio::time::timeout(config.shutdown_deadline, writer.flush())
            .await
            .is_err()
        {
            tracing::error!(
                "shutdown deadline passed before the archive took every message: the last \
                 ones are in no store now"
            );
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The drain of a stopping instance: `/readyz` answers 503 at once; the
/// instance keeps serving for `delay` (the load balancer stops sending it
/// new connections meanwhile); then every client is asked to reconnect,
/// each after its own delay spread over `window` (PROTOCOL.md, "Drain").
/// Returns when every connection has gone or when the last one's time is
/// up (`window` + [`connection::DRAIN_LINGER`]); the shutdown then closes
/// whatever is left.
async fn drain(live: &Live, delay: std::time::Duration, window: std::time::Duration) {
    live.start_draining();
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        window_ms = window.as_millis() as u64,
        connections = live.count(),
        "draining: not ready"
    );
    tokio::time::sleep(delay).await;
    if window.is_zero() {
        return;
    }
    let asked = live.spread_reconnects(window);
    tracing::info!(connections = asked, "draining: clients asked to reconnect");
    let until = tokio::time::Instant::now() + window + connection::DRAIN_LINGER;
    while live.count() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Installs rustls's ring provider as the process's crypto provider, which
/// every TLS client of the server uses (rediss://, the JWKS over https, the
/// OTLP exporter's HTTP client): `main` calls it first, `run` again (for
/// tests); a second install is a no-op.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Refuses to start when another live process uses this instance id
/// ([`PresenceStore::claim_instance`]). A crashed predecessor's claim
/// expires within one presence TTL, so a held id is waited for that long
/// before it counts as live. With the store unreachable the instance starts
/// anyway: its presence refresh claims the id later, and a conflict then
/// makes it not ready.
async fn claim_instance_id(
    presence: &dyn PresenceStore,
    instance: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + ttl + std::time::Duration::from_secs(1);
    let mut told = false;
    loop {
        match presence.claim_instance().await {
            Ok(true) => return Ok(()),
            Ok(false) if tokio::time::Instant::now() < deadline => {
                if !told {
                    tracing::info!(
                        instance,
                        "the instance id is held; waiting up to one presence TTL for a crashed predecessor's claim to expire"
                    );
                    told = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Ok(false) => anyhow::bail!(
                "instance id {instance:?} is in use by another live instance (its claim in Redis \
                 keeps being renewed): give every instance its own --instance-id (INSTANCE_ID), or \
                 leave it unset for a random one"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check that the instance id is unique now; the presence refresh will");
                return Ok(());
            }
        }
    }
}

/// The web app's file names begin with this (cargo-leptos `output-name`,
/// and `LEPTOS_OUTPUT_NAME` in .cargo/config.toml).
const OUTPUT_NAME: &str = "chat";

/// Where the web app's built assets are and what they are called. Built
/// here from the config rather than from cargo-leptos's environment, so a
/// binary started by hand serves correct `/pkg` URLs.
fn leptos_options(config: &Config, local: SocketAddr, assets: &http::AssetNames) -> LeptosOptions {
    let hash_file = assets
        .hash_file
        .as_ref()
        .map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_else(|| "hash.txt".to_owned());
    LeptosOptions::builder()
        .output_name(OUTPUT_NAME)
        .hash_files(assets.hash_file.is_some())
        .hash_file(Arc::<str>::from(hash_file))
        .site_root(config.site_root.to_string_lossy().into_owned())
        .site_pkg_dir("pkg")
        .site_addr(local)
        .env(if config.dev_reload {
            Env::DEV
        } else {
            Env::PROD
        })
        .reload_port(config.reload_port)
        .build()
}
