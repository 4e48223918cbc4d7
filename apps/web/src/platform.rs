//! The few browser services the views call (the socket driver, the clock,
//! local time formatting, storage), with inert stand-ins when rendering on
//! the server. The views call these only from effects and event handlers,
//! so the stand-ins never matter to what a page shows.

#[cfg(feature = "hydrate")]
pub(crate) use crate::client::{
    connect, local_datetime, local_time, persist_name, persist_rooms, random_tag, send, stop,
};

#[cfg(feature = "hydrate")]
pub(crate) use crate::admin_client::{admin_request, admin_token, every_second, store_admin_token};

/// Milliseconds since the Unix epoch.
#[cfg(feature = "hydrate")]
pub(crate) fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

#[cfg(not(feature = "hydrate"))]
mod inert {
    use protocol::ClientFrame;

    pub(crate) fn connect() {}
    pub(crate) fn stop(_reason: Option<String>) {}
    pub(crate) fn send(_frames: Vec<ClientFrame>) {}
    pub(crate) fn persist_name(_name: Option<&str>) {}
    pub(crate) fn persist_rooms(_rooms: &[String], _current: Option<&str>) {}

    pub(crate) fn admin_token() -> Option<String> {
        None
    }
    pub(crate) fn store_admin_token(_token: Option<&str>) {}
    pub(crate) fn every_second(_f: impl Fn() + 'static) {}
    pub(crate) fn admin_request(
        _method: &str,
        _path: &str,
        _token: String,
        _done: impl FnOnce(Result<String, (u16, String)>) + 'static,
    ) {
    }

    pub(crate) fn random_tag() -> String {
        "server".to_owned()
    }

    pub(crate) fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default()
    }

    /// UTC "HH:MM" (the browser shows local time).
    pub(crate) fn local_time(ts: i64) -> String {
        let minutes = ts.div_euclid(60_000).rem_euclid(24 * 60);
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    }

    pub(crate) fn local_datetime(ts: i64) -> String {
        local_time(ts)
    }
}

#[cfg(not(feature = "hydrate"))]
pub(crate) use inert::*;
