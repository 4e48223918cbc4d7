//! The HTTP/1.1 server under the router: hyper's own connection settings,
//! not axum's `serve` (which sets no timer, so a peer that sends half a
//! request head keeps its connection, and graceful shutdown waiting, for
//! ever).
//!
//! - **Header-read timeout** (`--header-read-timeout-ms`): a request head
//!   must arrive whole within it, or the connection is closed. hyper starts
//!   the same timer while a keep-alive connection waits for its next
//!   request, so it is the idle keep-alive timeout too.
//! - **Connections not yet upgraded** are capped (`--max-http-connections`):
//!   past the cap a new TCP connection is closed at once (counted in
//!   `chat_http_refused_total`). An upgraded WebSocket leaves the count: it
//!   has its own limits (per IP, per connection, the cost buckets).
//! - **Graceful shutdown** stops accepting, lets requests in flight finish,
//!   and ends within `--shutdown-deadline-ms` whatever the peers do.

use crate::metrics as m;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The edge's limits (from [`crate::config::Config`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EdgeLimits {
    /// Whole request head within this, and the keep-alive idle bound.
    pub(crate) header_read_timeout: Duration,
    /// TCP connections served as HTTP (not yet upgraded) at once.
    pub(crate) max_http_connections: usize,
    /// How long graceful shutdown waits for HTTP connections.
    pub(crate) shutdown_deadline: Duration,
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then shuts the
/// HTTP connections down gracefully, waiting at most the deadline.
/// Errors: only a listener that stopped accepting for good.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: EdgeLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_http_connections));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: wait a moment, go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(m::HTTP_REFUSED, "reason" => "max_http_connections").increment(1);
            drop(tcp);
            continue;
        };
        // Small frames (acks, messages) must leave at once, not wait for
        // the peer's delayed ACK (Nagle), which costs ~40 ms per reply.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        );
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
            .with_upgrades();
        let stop = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            // Ends at the upgrade too: the socket then belongs to the
            // WebSocket task, and the slot is free.
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stop.cancelled() => {
                    // Finish the request in flight, take no other.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "http connection ended");
            }
            drop(slot);
        });
    }
    connections.close();
    if tokio::time::timeout(limits.shutdown_deadline, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed with HTTP connections still open");
    }
    Ok(())
}
