//! Integration tests of the server over real sockets. Each test starts its
//! own instance on port 0 with `server::run` (as `main` does) and talks to
//! it as a client would, in the frame types of `protocol`.
//!
//! - `support`: the harness (test server, WebSocket client, raw HTTP GET).
//! - `chat`: ordering and offsets, acks, history, recovery with `since`,
//!   dedupe, presence, typing, `rooms`, session tokens.
//! - `limits`: every error code, the flood rule, the frame size limit, the
//!   rate limit, slow consumers, per-IP and origin checks on the upgrade.
//! - `costs`: what frames cost (connection, user and address buckets, a
//!   replay by its size), replies bounded in bytes, presence coalesced,
//!   `rooms` paged (issue 17).
//! - `edge`: the HTTP edge (issue 13): header-read and keep-alive
//!   timeouts, the cap on connections not yet upgraded, shutdown within
//!   its deadline.
//! - `archive`: the archive (issue 14) behind the in-process engine, on a
//!   real SQLite file: restarts keep history, epochs and offsets;
//!   scroll-back and recovery reach past the hot store's cap.
//! - `lifecycle`: shutdown, heartbeats, the hello deadline, HTTP routes.
//! - `transport`: the upgrade's answers and whole frames, on the wire.
//! - `procs` + `cluster`: real `redis-server` and `server` processes; the
//!   Redis engine across instances (ordering, kill -9, Redis restarts and
//!   wipes, pub/sub loss, presence expiry, TLS).
//! - `redis_cluster`: a real local Redis Cluster (issue 12): rooms on
//!   every master, sharded pub/sub, a slot moved under traffic, a master
//!   killed and failed over.
//! - `faults`: Redis misbehaving (issue 19): restores from older snapshots,
//!   failovers, silent drops, join bursts, old servers, skewed clocks.
//! - `admin`: the admin view's API (issue 16): its token, the overview,
//!   actions on one instance and across two.
//! - `traces`: OpenTelemetry traces exported over OTLP by two instances,
//!   one trace per message across them.
//! - `api`: the HTTP API for backends (issue 15): keys, a post reaching
//!   two instances in order, reads, disconnect, rate limit, OpenAPI.
//! - `identity`: host-app tokens (issue 15): HS256 and ES256 with a JWKS
//!   over HTTP or from a file, refusals, private rooms, expiry and refresh.
//! - `deploy_files`: the Grafana dashboard and the Kubernetes autoscaler in
//!   `deploy/` query only metrics the server exports.

mod admin;
mod api;
mod archive;
mod chat;
mod cluster;
mod costs;
mod deploy_files;
mod edge;
mod faults;
mod identity;
mod lifecycle;
mod limits;
mod procs;
mod redis_cluster;
mod support;
mod traces;
mod transport;
