//! Where the Redis engine connects ([`Seeds`]: the `--redis-url` seeds and
//! whether they are one Redis or a Redis Cluster) and [`Commands`], the
//! connection every command goes through. The pub/sub connections are in
//! [`super::pubsub`] (one Redis) and [`super::sharded`] (a cluster).
//!
//! **Mode**: a seed that reports `cluster_enabled:1` (`INFO cluster`) is a
//! node of a Redis Cluster: commands then go through the redis crate's
//! cluster connection (one connection per node, `MOVED`/`ASK` followed,
//! the slot map refreshed on a redirect or a failed node), scripts publish
//! with `SPUBLISH` (sharded pub/sub, Redis 7.0) and subscriptions are
//! shard channels. Otherwise one multiplexed connection to one server.
//! The mode is decided on the first connection that succeeds, so an
//! instance starts while Redis is down.
//!
//! **Dead connections** are found and replaced, never waited on: every
//! socket has TCP keepalive and `TCP_USER_TIMEOUT` ([`tcp_settings`]), so
//! the kernel drops a flow a NAT or proxy forgot; with one Redis, a command
//! that times out, fails on the socket, or is answered by a node that
//! cannot take it (`READONLY`: a demoted primary; `MASTERDOWN`) drops the
//! command connection, and the next command makes a new one (resolving the
//! name again, so a DNS name or proxy that moved to the new primary is
//! followed). A cluster connection repairs itself (it reconnects a node and
//! re-reads the slot map when a node fails or answers `MOVED`).

use crate::engine::EngineError;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{socket2, TcpSettings};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisFuture,
    ServerErrorKind,
};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How long one Redis command may take before its connection counts as
/// dead (and the store as unavailable, if a new one fails too).
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP keepalive: first probe after this much idleness, then every
/// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_RETRIES`] unanswered probes drop the
/// flow (25 s in all).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
/// `TCP_USER_TIMEOUT`: data unacknowledged for this long drops the flow.
const USER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the cluster connection retries a command that met a failed
/// node or a redirect (it re-reads the slot map in between).
const CLUSTER_RETRIES: u32 = 3;

/// The socket options of every Redis connection: keepalive probes and a
/// user timeout, so a flow that a NAT or proxy forgot (no RST) ends.
pub(super) fn tcp_settings() -> TcpSettings {
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(
            socket2::TcpKeepalive::new()
                .with_time(KEEPALIVE_IDLE)
                .with_interval(KEEPALIVE_INTERVAL)
                .with_retries(KEEPALIVE_RETRIES),
        )
        .set_user_timeout(USER_TIMEOUT)
}

/// One Redis, or a Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Single,
    Cluster,
}

impl Mode {
    /// The publish command of this mode: `SPUBLISH` in a cluster (the
    /// message goes only to the shard that owns the channel's slot).
    pub(super) fn publish_command(self) -> &'static str {
        match self {
            Mode::Single => "PUBLISH",
            Mode::Cluster => "SPUBLISH",
        }
    }
}

/// The seed nodes of `--redis-url` and what they turned out to be.
pub(super) struct Seeds {
    infos: Vec<ConnectionInfo>,
    /// PEM of `--redis-ca-cert`.
    ca: Option<Vec<u8>>,
    /// Decided on the first connection that succeeds.
    mode: std::sync::OnceLock<Mode>,
}

impl Seeds {
    /// Errors: an invalid URL.
    pub(super) fn new(urls: &[String], ca: Option<Vec<u8>>) -> Result<Seeds, EngineError> {
        let infos = urls
            .iter()
            .enumerate()
            .map(|(n, url)| {
                url.as_str()
                    .into_connection_info()
                    .map(|info| info.set_tcp_settings(tcp_settings()))
                    .map_err(|e| {
                        EngineError::Internal(format!(
                            "invalid Redis URL (seed {} of {}): {e}",
                            n + 1,
                            urls.len()
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let seeds = Seeds {
            infos,
            ca,
            mode: std::sync::OnceLock::new(),
        };
        // Refuses an unreadable CA now rather than on every connect.
        seeds.client(&seeds.infos[0]).map_err(|e| {
            EngineError::Internal(format!("invalid Redis URL or CA certificate: {e}"))
        })?;
        Ok(seeds)
    }

    fn client(&self, info: &ConnectionInfo) -> redis::RedisResult<Client> {
        match &self.ca {
            None => Client::open(info.clone()),
            Some(pem) => Client::build_with_tls(
                info.clone(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
        }
    }

    /// A client of the one Redis (the first seed: several name a cluster).
    pub(super) fn single_client(&self) -> redis::RedisResult<Client> {
        self.client(&self.infos[0])
    }

    /// A client of the cluster node at `host:port`, with the first seed's
    /// credentials and TLS, speaking RESP3 (pushes: sharded pub/sub).
    pub(super) fn node_client(&self, host: &str, port: u16) -> redis::RedisResult<Client> {
        let seed = &self.infos[0];
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let redis = seed
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        self.client(&seed.clone().set_addr(addr).set_redis_settings(redis))
    }

    /// The mode, once a connection decided it.
    pub(super) fn mode(&self) -> Option<Mode> {
        self.mode.get().copied()
    }

    /// A connection to the first seed that answers, checked
    /// ([`check_server`]), and the mode it reports.
    pub(super) async fn connect(&self) -> Result<(MultiplexedConnection, Mode), EngineError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let mut last = None;
        for info in &self.infos {
            let conn = match self.client(info) {
                Ok(client) => client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(unavailable),
                Err(e) => Err(unavailable(e)),
            };
            match conn {
                Ok(mut conn) => {
                    let mode = check_server(&mut conn, self.infos.len()).await?;
                    let _ = self.mode.set(mode);
                    return Ok((conn, mode));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| EngineError::Unavailable("no Redis URL".into())))
    }

    /// A cluster client over every seed (the command connection).
    pub(super) fn cluster_client(&self) -> redis::RedisResult<ClusterClient> {
        let mut builder = ClusterClientBuilder::new(self.infos.clone())
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(COMMAND_TIMEOUT)
            .retries(CLUSTER_RETRIES)
            .tcp_settings(tcp_settings());
        if let Some(pem) = &self.ca {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            });
        }
        builder.build()
    }
}

/// A command connection: to one Redis, or to a cluster (routed by slot).
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(super) fn mode(&self) -> Mode {
        match self {
            Conn::Single(_) => Mode::Single,
            Conn::Cluster(_) => Mode::Cluster,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// The command connection.
pub(super) struct Commands {
    seeds: std::sync::Arc<Seeds>,
    /// The live connection and its generation; `None` until the first
    /// command and after one was found dead, so an instance starts (and
    /// reports not ready) while Redis is down.
    current: Mutex<Option<(u64, Conn)>>,
    /// Serialises connecting, so a burst of commands makes one connection.
    connecting: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

impl Commands {
    pub(super) fn new(seeds: std::sync::Arc<Seeds>) -> Commands {
        Commands {
            seeds,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    fn live(&self) -> Option<(u64, Conn)> {
        self.current.lock().expect("connection lock").clone()
    }

    async fn conn(&self) -> Result<(u64, Conn), EngineError> {
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let _one = self.connecting.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let (single, mode) = self.seeds.connect().await?;
        let conn = match mode {
            Mode::Single => Conn::Single(single),
            Mode::Cluster => Conn::Cluster(
                self.seeds
                    .cluster_client()
                    .map_err(unavailable)?
                    .get_async_connection()
                    .await
                    .map_err(unavailable)?,
            ),
        };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().expect("connection lock") = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Forgets connection `generation` (unless it was replaced already):
    /// the next command makes a new one.
    fn drop_dead(&self, generation: u64, error: &redis::RedisError) {
        let mut current = self.current.lock().expect("connection lock");
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            tracing::warn!(error = %error, "redis command connection is dead; reconnecting");
            *current = None;
        }
    }

    /// Runs `op` on the shared connection; with one Redis, when the
    /// connection turned out to be dead ([`is_dead`]), once more on a new
    /// one (a cluster connection retries on its own). Safe for every
    /// command of this engine: reads are idempotent, and a publish that did
    /// run the first time is answered as a duplicate with its offset the
    /// second time.
    pub(super) async fn run<T, F, Fut>(&self, op: F) -> Result<T, EngineError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (generation, conn) = self.conn().await?;
        let single = conn.mode() == Mode::Single;
        match op(conn).await {
            Ok(v) => Ok(v),
            Err(e) if single && is_dead(&e) => {
                self.drop_dead(generation, &e);
                let (generation, conn) = self.conn().await?;
                op(conn).await.map_err(|e| {
                    if is_dead(&e) {
                        self.drop_dead(generation, &e);
                    }
                    unavailable(e)
                })
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// The oldest server the engine works on: streams came with Redis 5.0
/// (tested on 5.0.6; nothing newer is needed: `ZADD GT`, 6.2, is written
/// out in `lua/rooms_index.lua`). A cluster needs 7.0: sharded pub/sub.
const MIN_VERSION: (u32, u32) = (5, 0);
const MIN_CLUSTER_VERSION: (u32, u32) = (7, 0);

/// Refuses a server older than [`MIN_VERSION`] (a cluster node older than
/// [`MIN_CLUSTER_VERSION`]), naming both versions, so that every command
/// (and `/readyz`) says why instead of each join failing on an unknown
/// command; answers whether the node is in cluster mode. `seeds` is how
/// many URLs were given: several name a cluster, so a node that is not in
/// one is refused. A user not allowed `INFO` (it is in the `@dangerous`
/// ACL category) is taken to be on one Redis of a version that works.
async fn check_server(conn: &mut MultiplexedConnection, seeds: usize) -> Result<Mode, EngineError> {
    let info = |section: &'static str| {
        let mut conn = conn.clone();
        async move {
            match redis::cmd("INFO")
                .arg(section)
                .query_async::<String>(&mut conn)
                .await
            {
                Ok(info) => Ok(Some(info)),
                Err(e) if matches!(e.kind(), redis::ErrorKind::Server(ServerErrorKind::NoPerm)) => {
                    Ok(None)
                }
                Err(e) => Err(unavailable(e)),
            }
        }
    };
    let field = |info: &Option<String>, name: &str| -> Option<String> {
        info.as_deref()?
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    let server = info("server").await?;
    let cluster = info("cluster").await?;
    let mode = if field(&cluster, "cluster_enabled").as_deref() == Some("1") {
        Mode::Cluster
    } else {
        Mode::Single
    };
    if mode == Mode::Single && seeds > 1 {
        return Err(EngineError::Internal(format!(
            "{seeds} Redis URLs name the seed nodes of a Redis Cluster, but the node that answered \
             is not in cluster mode; give one URL for a single Redis"
        )));
    }
    let Some(version) = field(&server, "redis_version") else {
        return Ok(mode);
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let (need, why) = match mode {
        Mode::Single => (MIN_VERSION, "streams"),
        Mode::Cluster => (MIN_CLUSTER_VERSION, "sharded pub/sub in a Redis Cluster"),
    };
    if found < need {
        return Err(EngineError::Internal(format!(
            "Redis {version} found; the chat needs Redis {}.{} or newer ({why})",
            need.0, need.1
        )));
    }
    Ok(mode)
}

/// Whether `e` means the connection cannot serve commands any more: the
/// socket failed or timed out, or the node it reaches cannot take writes
/// (`READONLY`: a primary demoted to replica; `MASTERDOWN`: a replica that
/// lost its primary). Another connection may reach a node that can.
fn is_dead(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// A Redis error as the engine reports it: the store is unavailable.
pub(super) fn unavailable(e: redis::RedisError) -> EngineError {
    EngineError::Unavailable(e.to_string())
}
