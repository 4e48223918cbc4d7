//! The HTTP API for the host app's backends (`/api/v1`, issue 15): post a
//! message as any user (a bot, a system notice) with the same ordering,
//! dedupe by `id` and fan-out as a socket's `send`; read a room's history
//! and presence; list the active rooms; disconnect a user everywhere. Off
//! unless `--api-keys` is set; every route needs `Authorization: Bearer
//! <key>` with one of them (compared in constant time, never logged), and
//! pays like a socket's frame of the same kind from the key's own bucket,
//! a user bucket `api:<n>` and its address's (`--frame-costs`, the
//! `--rate-*` flags): 429 with `Retry-After` when one is empty. The
//! OpenAPI document (`GET /api/v1/openapi.json`) is generated from the
//! handlers below ([`ApiDoc`]).

use crate::admin::Admin;
use crate::cost::{AddressKey, Bucket, Payer};
use crate::engine::{now_ms, EngineError, Publication, RoomsCursor};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::admin::AdminAction;
use protocol::limits::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, ROOMS_PAGE_MAX};
use protocol::{Body, ChatMessage, ClientId, Name, RoomInfo, RoomName, User};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use subtle::ConstantTimeEq as _;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// What the API routes share.
pub(crate) struct Api {
    admin: Arc<Admin>,
    /// `--api-keys`.
    keys: Vec<String>,
    /// Each key's own bucket (a socket's, at `--rate-per-sec`).
    buckets: Mutex<Vec<Bucket>>,
}

impl Api {
    pub(crate) fn new(admin: Arc<Admin>) -> Api {
        let keys = admin.ctx.config.api_keys.clone();
        let now = Instant::now();
        let buckets = Mutex::new(keys.iter().map(|_| Bucket::new(now)).collect());
        Api {
            admin,
            keys,
            buckets,
        }
    }
}

/// The API's routes (see the module doc), with their state.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(api: Arc<Api>) -> Router<S> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/rooms", get(list_rooms))
        .route(
            "/api/v1/rooms/{room}/messages",
            post(post_message).get(read_messages),
        )
        .route("/api/v1/rooms/{room}/presence", get(presence))
        .route("/api/v1/users/{user}/disconnect", post(disconnect_user))
        .with_state(api)
}

/// The OpenAPI document of `/api/v1`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chat HTTP API",
        description = "For the host app's backends: post as any user, read history and presence, list rooms, disconnect a user. Authorization: Bearer <one of --api-keys>."
    ),
    paths(post_message, read_messages, presence, list_rooms, disconnect_user),
    components(schemas(
        NewMessage, Posted, Messages, Presence, Rooms, Disconnected, ApiError, ChatMessage, User,
        RoomInfo
    )),
    modifiers(&BearerAuth)
)]
pub(crate) struct ApiDoc;

/// The `bearer` security scheme every path uses.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let requirement = utoipa::openapi::security::SecurityRequirement::new::<
            &str,
            [&str; 0],
            &str,
        >("bearer", []);
        openapi.security = Some(vec![requirement]);
    }
}

/// `POST /api/v1/rooms/{room}/messages`: a message to post.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewMessage {
    /// The caller's id of the message (1–64 characters): the same `from.id`
    /// posting the same `id` in the room again is the same message.
    pub(crate) id: String,
    /// 1–4000 characters after trimming, at least one visible.
    pub(crate) body: String,
    /// Who the message is from (a user of the host app, or a bot).
    pub(crate) from: User,
}

/// The posted message's place in the room.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Posted {
    /// Its offset in the room (the same message posted again: the first
    /// one's).
    pub(crate) offset: u64,
}

/// Messages of a room, ascending offsets.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Messages {
    pub(crate) room: String,
    pub(crate) messages: Vec<ChatMessage>,
}

/// Who is in a room, on any instance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Presence {
    pub(crate) room: String,
    pub(crate) members: Vec<User>,
}

/// One page of the active rooms, the busiest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Rooms {
    pub(crate) rooms: Vec<RoomInfo>,
    /// The `cursor` of the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<String>,
}

/// The user's connections are being closed on every instance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Disconnected {
    pub(crate) user: String,
}

/// Every refusal: `code` is one of the protocol's error codes
/// (`bad_room`, `bad_frame`, `too_large`, `unauthorized`, `rate_limited`,
/// `unavailable`), `message` is for humans.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ApiError {
    pub(crate) code: String,
    pub(crate) message: String,
}

/// `GET /api/v1/rooms/{room}/messages` parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct HistoryQuery {
    /// Messages with an offset below this (the newest when absent).
    pub(crate) before: Option<u64>,
    /// How many (default 50, at most 200).
    pub(crate) limit: Option<u64>,
}

/// `GET /api/v1/rooms` parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct RoomsQuery {
    /// The `next` of the previous page.
    pub(crate) cursor: Option<String>,
    /// Rooms per page (default and most: 100).
    pub(crate) limit: Option<u64>,
}

/// A refused request: its status, [`ApiError`] body and headers.
struct Refused {
    status: StatusCode,
    error: ApiError,
    /// `Retry-After`, in seconds (429).
    retry_after: Option<u64>,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.error)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("ASCII"));
        }
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                secs.to_string().parse().expect("digits"),
            );
        }
        r
    }
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Refused {
    Refused {
        status,
        error: ApiError {
            code: code.to_owned(),
            message: message.into(),
        },
        retry_after: None,
    }
}

fn unavailable(e: &EngineError) -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
    .into_response()
}

impl Api {
    /// Which key `headers` carry (its index), compared in constant time
    /// with every configured key; the refusal otherwise.
    fn key(&self, headers: &HeaderMap) -> Result<usize, Refused> {
        if self.keys.is_empty() {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "unauthorized",
                "the HTTP API is off: set --api-keys (API_KEYS)",
            ));
        }
        let given = crate::admin::bearer(headers);
        let mut found = None;
        for (i, key) in self.keys.iter().enumerate() {
            if bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
                found = Some(i);
            }
        }
        found.ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is needed (Authorization: Bearer <key>)",
            )
        })
    }

    /// Authorizes the request and takes `units` from the key's buckets.
    fn admit(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        units: impl Fn(&crate::cost::FrameCosts) -> u32,
    ) -> Result<usize, Refused> {
        let k = self.key(headers)?;
        let ctx = &self.admin.ctx;
        let trusted = ctx.config.trusts_proxy(peer.ip());
        let ip = crate::cost::client_ip(
            trusted,
            peer.ip(),
            headers.get("x-real-ip").and_then(|v| v.to_str().ok()),
        );
        let mut buckets = self.buckets.lock().expect("api buckets");
        let mut payer = Payer {
            bucket: buckets[k],
            address: AddressKey::of(ip),
        };
        let result = ctx
            .costs
            .admit(&mut payer, &format!("api:{k}"), units(&ctx.costs.frames));
        buckets[k] = payer.bucket;
        match result {
            Ok(()) => Ok(k),
            Err(refusal) => {
                let mut r = refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    refusal.bucket.message(),
                );
                r.retry_after = Some(refusal.wait.as_secs_f64().ceil().max(1.0) as u64);
                Err(r)
            }
        }
    }
}

fn room_name(room: &str) -> Result<RoomName, Refused> {
    RoomName::parse(room)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.code().as_str(), e.to_string()))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the document serialises"),
    )
        .into_response()
}

/// Posts a message in a room, as `from`: stored at the room's next
/// offset and delivered to every member on every instance, like a
/// socket's `send` (the same `from.id` and `id` again is the same
/// message).
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room}/messages",
    params(("room" = String, Path, description = "1–64 characters of [a-z0-9_-]")),
    request_body = NewMessage,
    responses(
        (status = 200, description = "Stored and published", body = Posted),
        (status = 400, description = "A bad room, id, body or user", body = ApiError),
        (status = 401, description = "No valid API key", body = ApiError),
        (status = 429, description = "Over the rate limit (Retry-After)", body = ApiError),
        (status = 503, description = "The shared store is unavailable", body = ApiError),
    )
)]
async fn post_message(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
    Json(new): Json<NewMessage>,
) -> Response {
    if let Err(r) = api.admit(&headers, peer, |c| c.send) {
        return r.into_response();
    }
    let room = match room_name(&room) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let bad = |code: &str, message: String| {
        refuse(StatusCode::BAD_REQUEST, code, message).into_response()
    };
    let client_id = match ClientId::parse(&new.id) {
        Ok(id) => id,
        Err(e) => return bad(e.code().as_str(), e.to_string()),
    };
    let body = match Body::parse(&new.body) {
        Ok(b) => b,
        Err(e) => return bad(e.code().as_str(), e.to_string()),
    };
    let name = match Name::parse(&new.from.name) {
        Ok(n) => n,
        Err(e) => return bad(e.code().as_str(), format!("from.name: {e}")),
    };
    if new.from.id.is_empty() || new.from.id.chars().count() > 128 {
        return bad("bad_frame", "from.id must be 1–128 characters".into());
    }
    let msg = Publication {
        id: format!("m_{}", uuid::Uuid::now_v7().simple()),
        client_id: client_id.into_string(),
        from: User {
            id: new.from.id,
            name: name.into_string(),
        },
        body: body.into_string(),
        ts: now_ms(),
        trace: crate::telemetry::traceparent(),
    };
    match api.admin.ctx.hub.publish(&room, msg).await {
        Ok(published) => {
            if !published.duplicate {
                metrics::counter!(crate::metrics::MESSAGES_PUBLISHED).increment(1);
            }
            Json(Posted {
                offset: published.offset,
            })
            .into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// A room's messages: the newest `limit` with an offset below `before`,
/// ascending (the archive's too, when there is one).
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room}/messages",
    params(("room" = String, Path, description = "The room"), HistoryQuery),
    responses(
        (status = 200, description = "Ascending offsets", body = Messages),
        (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 429, body = ApiError), (status = 503, body = ApiError),
    )
)]
async fn read_messages(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    Query(q): Query<HistoryQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.admit(&headers, peer, |c| c.history) {
        return r.into_response();
    }
    let room = match room_name(&room) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let limit = q
        .limit
        .unwrap_or(DEFAULT_HISTORY_LIMIT)
        .clamp(1, MAX_HISTORY_LIMIT) as usize;
    match api.admin.ctx.hub.history(&room, q.before, limit).await {
        Ok(messages) => Json(Messages {
            room: room.into_string(),
            messages,
        })
        .into_response(),
        Err(e) => unavailable(&e),
    }
}

/// Who is in a room, on any instance (each user once).
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room}/presence",
    params(("room" = String, Path, description = "The room")),
    responses(
        (status = 200, body = Presence), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 429, body = ApiError),
        (status = 503, body = ApiError),
    )
)]
async fn presence(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.admit(&headers, peer, |c| c.join) {
        return r.into_response();
    }
    let room = match room_name(&room) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    match api.admin.ctx.hub.members(&room).await {
        Ok(members) => Json(Presence {
            room: room.into_string(),
            members,
        })
        .into_response(),
        Err(e) => unavailable(&e),
    }
}

/// The active rooms (at least one member on some instance), the busiest
/// first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/rooms",
    params(RoomsQuery),
    responses(
        (status = 200, body = Rooms), (status = 400, body = ApiError),
        (status = 401, body = ApiError), (status = 429, body = ApiError),
        (status = 503, body = ApiError),
    )
)]
async fn list_rooms(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<RoomsQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.admit(&headers, peer, |c| c.rooms) {
        return r.into_response();
    }
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => match RoomsCursor::parse(c) {
            Some(c) => Some(c),
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_frame",
                    "cursor must be the next of a previous page",
                )
                .into_response()
            }
        },
    };
    let limit = q.limit.unwrap_or(ROOMS_PAGE_MAX).clamp(1, ROOMS_PAGE_MAX) as usize;
    match api.admin.ctx.hub.rooms(after.as_ref(), limit).await {
        Ok(page) => {
            let next = page
                .more
                .then(|| page.rooms.last().map(|r| RoomsCursor::at(r).encode()))
                .flatten();
            Json(Rooms {
                rooms: page.rooms,
                next,
            })
            .into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// Closes every connection of the user, on every instance (close 1008:
/// the client does not reconnect on its own), within about a second.
#[utoipa::path(
    post,
    path = "/api/v1/users/{user}/disconnect",
    params(("user" = String, Path, description = "The user id")),
    responses(
        (status = 202, body = Disconnected), (status = 401, body = ApiError),
        (status = 429, body = ApiError), (status = 503, body = ApiError),
    )
)]
async fn disconnect_user(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = api.admit(&headers, peer, |c| c.join) {
        return r.into_response();
    }
    let action = AdminAction::DisconnectUser { user: user.clone() };
    match api.admin.board.post_action(&action).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(Disconnected { user })).into_response(),
        Err(e) => unavailable(&e),
    }
}
