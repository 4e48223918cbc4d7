//! The admin view's server side: each instance's heartbeat in the shared
//! store, the actions every instance applies to its own connections, and
//! the JSON routes under `/admin/api` that the `/admin` page (apps/web)
//! reads. Off unless `--admin-token` is set; every route then needs
//! `Authorization: Bearer <token>` (compared in constant time).
//!
//! Routes (all JSON, shapes in [`protocol::admin`]):
//! - `GET /admin/api/overview` → [`Overview`]: every instance with a fresh
//!   heartbeat, the busiest rooms with members and latest offset.
//! - `POST /admin/api/users/{user}/disconnect` → 202 [`ActionAccepted`]:
//!   every connection of the user id, on every instance, closes with 1008.
//! - `POST /admin/api/rooms/{room}/close` → 202 [`ActionAccepted`]: every
//!   member leaves the room (each gets `left`); history stays.
//!
//! Errors: 404 when the admin view is off, 401 (with `WWW-Authenticate:
//! Bearer`) without the right token, 400 for a room name the protocol
//! refuses, 503 when the store cannot be read or written.

use crate::connection::ConnContext;
use crate::engine::{now_ms, AdminBoard};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::admin::{
    ActionAccepted, AdminAction, AdminRoom, InstanceStatus, Overview, HEARTBEAT_MS, OVERVIEW_ROOMS,
};
use protocol::RoomName;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;

/// What the admin routes and the heartbeat share.
pub(crate) struct Admin {
    pub(crate) ctx: Arc<ConnContext>,
    pub(crate) board: Arc<dyn AdminBoard>,
    /// When the process started, ms since the Unix epoch.
    pub(crate) started_ms: i64,
}

/// The admin routes (see the module doc), with their state.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(admin: Arc<Admin>) -> Router<S> {
    Router::new()
        .route("/admin/api/overview", get(overview))
        .route("/admin/api/users/{user}/disconnect", post(disconnect_user))
        .route("/admin/api/rooms/{room}/close", post(close_room))
        .with_state(admin)
}

/// Writes this instance's heartbeat every [`HEARTBEAT_MS`] and applies the
/// actions posted since the last one, until `stop`. A failed beat is tried
/// again at the next one; the first failure after a success is logged as a
/// warning (an ACL user may lack the board's commands), the recovery too.
pub(crate) async fn heartbeat(admin: Arc<Admin>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut cursor: Option<String> = None;
    let mut last = (Instant::now(), admin.ctx.hub.delivered());
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let status = admin.status(&mut last).await;
        let beat = match admin.board.heartbeat(&status).await {
            Ok(()) => admin.board.actions(cursor.as_deref()).await,
            Err(e) => Err(e),
        };
        match beat {
            Ok((actions, next)) => {
                for action in &actions {
                    admin.apply(action).await;
                }
                cursor = Some(next);
                if failing {
                    tracing::info!("admin heartbeat written again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "admin heartbeat failed: the admin view misses this instance and its actions until it works");
                }
                failing = true;
            }
        }
    }
}

impl Admin {
    /// This instance now; `last` is the previous beat's (time, delivered),
    /// for the rate, and is moved on.
    async fn status(&self, last: &mut (Instant, u64)) -> InstanceStatus {
        let delivered = self.ctx.hub.delivered();
        let now = Instant::now();
        let elapsed = now.duration_since(last.0).as_secs_f64();
        let rate = if elapsed > 0.0 {
            delivered.saturating_sub(last.1) as f64 / elapsed
        } else {
            0.0
        };
        *last = (now, delivered);
        InstanceStatus {
            id: self.ctx.config.instance_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_ms: self.started_ms,
            at_ms: now_ms(),
            connections: self.ctx.live.count() as u64,
            rooms: self.ctx.hub.local_rooms() as u64,
            delivered,
            deliveries_per_s: rate,
            ready: !self.ctx.live.draining() && self.ctx.hub.reachable().await.is_ok(),
        }
    }

    /// Applies `action` to this instance's connections.
    async fn apply(&self, action: &AdminAction) {
        match action {
            AdminAction::DisconnectUser { user } => {
                let n = self.ctx.live.disconnect_user(user);
                tracing::info!(user = %user, connections = n, "admin: user disconnected");
            }
            AdminAction::CloseRoom { room } => match RoomName::parse(room) {
                Ok(name) => {
                    let n = self.ctx.hub.close_room(&name).await;
                    tracing::info!(room = %room, connections = n, "admin: room closed");
                }
                Err(e) => tracing::warn!(room = %room, error = %e, "admin: no such room name"),
            },
        }
    }

    /// Whether `headers` carry the admin token.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let Some(token) = self.ctx.config.admin_token.as_deref() else {
            return Err(Refused::Off);
        };
        if bool::from(bearer(headers).as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(Refused::Unauthorized)
        }
    }

    /// Records `action` for every instance.
    async fn post(&self, headers: &HeaderMap, action: AdminAction) -> Response {
        if let Err(refused) = self.authorize(headers) {
            return refused.into_response();
        }
        match self.board.post_action(&action).await {
            Ok(()) => (StatusCode::ACCEPTED, Json(ActionAccepted { action })).into_response(),
            Err(e) => unavailable(&e),
        }
    }
}

/// The credential of `Authorization: Bearer <credential>` (empty without
/// one): the admin token here, an API key for [`crate::api`].
pub(crate) fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Why an admin route refused a request.
enum Refused {
    /// No `--admin-token`: 404.
    Off,
    /// No token, or not the admin token: 401.
    Unauthorized,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Off => (
                StatusCode::NOT_FOUND,
                "the admin view is off: set --admin-token (ADMIN_TOKEN)",
            )
                .into_response(),
            Refused::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid admin token is needed (Authorization: Bearer <token>)",
            )
                .into_response(),
        }
    }
}

fn unavailable(e: &crate::engine::EngineError) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
}

async fn overview(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Err(refused) = admin.authorize(&headers) {
        return refused.into_response();
    }
    let now = now_ms();
    let instances = match admin.board.instances(now).await {
        Ok(i) => i,
        Err(e) => return unavailable(&e),
    };
    let page = match admin.ctx.hub.rooms(None, OVERVIEW_ROOMS).await {
        Ok(p) => p,
        Err(e) => return unavailable(&e),
    };
    let offsets = futures_util::future::join_all(page.rooms.iter().map(|r| async {
        match RoomName::parse(&r.room) {
            Ok(name) => admin.ctx.hub.latest_offset(&name).await.unwrap_or(0),
            Err(_) => 0,
        }
    }))
    .await;
    let rooms = page
        .rooms
        .into_iter()
        .zip(offsets)
        .map(|(r, offset)| AdminRoom {
            room: r.room,
            members: r.members,
            offset,
        })
        .collect();
    Json(Overview {
        server: admin.ctx.config.instance_id.clone(),
        instances,
        rooms,
        at_ms: now,
    })
    .into_response()
}

async fn disconnect_user(
    State(admin): State<Arc<Admin>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    admin
        .post(&headers, AdminAction::DisconnectUser { user })
        .await
}

async fn close_room(
    State(admin): State<Arc<Admin>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = admin.authorize(&headers) {
        return refused.into_response();
    }
    if let Err(e) = RoomName::parse(&room) {
        return (StatusCode::BAD_REQUEST, format!("bad room name: {e}")).into_response();
    }
    admin.post(&headers, AdminAction::CloseRoom { room }).await
}
