//! The browser side of the connection (feature `hydrate` only): one
//! `WebSocket` to `/ws` on the page's host, its event handlers, reconnect
//! timers and the localStorage that keeps a session across reloads.
//!
//! Owns IO and time, nothing else: every decision (what a frame means, what
//! to send back, how long to wait before reconnecting) is made by
//! [`ChatState`]; this module feeds it events and carries out its answers.
//! The views reach it only from effects and event handlers, so server-side
//! rendering never runs it.
//!
//! **Invariant:** events of a socket that is no longer the current one are
//! ignored (each socket carries the generation it was opened in), so a late
//! `close` of a replaced socket never schedules a second connection.

use crate::state::{ChatState, CloseAction};
use leptos::prelude::*;
use protocol::{ClientFrame, CloseCode, ServerFrame};
use std::cell::RefCell;
use std::time::Duration;
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

/// localStorage keys.
const KEY_NAME: &str = "chat.name";
const KEY_TOKEN: &str = "chat.token";
const KEY_ROOMS: &str = "chat.rooms";
const KEY_CURRENT: &str = "chat.current";

/// How often the connection is probed (`ping`) and refused sends are
/// retried.
const PERIOD: Duration = Duration::from_secs(5);
/// A connection whose `ping` (sent every [`PERIOD`]) has gone unanswered
/// this long is taken as dead and replaced. Measured from the probe, not
/// from the last frame, because a hidden tab's timers may run only once a
/// minute. The probe is `ping`, which costs the server nothing; `rooms`
/// costs a store read and goes only every [`ROOMS_EVERY`] periods.
const PROBE_TIMEOUT_MS: f64 = 10_000.0;
/// The room directory is refreshed every this many periods (30 s), and
/// after every join and leave.
const ROOMS_EVERY: u32 = 6;

/// A socket and the closures the browser calls; dropping the closures while
/// the socket can still call them would throw, so handlers are detached first.
struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    fn detach(&self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

struct Driver {
    state: RwSignal<ChatState>,
    socket: Option<Socket>,
    /// A socket whose own handler found it closed: it cannot be dropped from
    /// inside that handler, so it is parked here until the next connection.
    parked: Option<Socket>,
    /// Generation of the current socket.
    generation: u64,
    /// The timer that reconnects after a backoff, if one is set.
    reconnect_timer: Option<TimeoutHandle>,
    /// When the current socket last received a frame (ms).
    last_rx: f64,
    /// When the last liveness probe was sent on the current socket.
    probe_at: Option<f64>,
    /// Periods since the room directory was last asked for.
    since_rooms: u32,
}

thread_local! {
    static DRIVER: RefCell<Option<Driver>> = const { RefCell::new(None) };
}

fn now() -> f64 {
    js_sys::Date::now()
}

fn storage() -> Option<web_sys::Storage> {
    window().local_storage().ok().flatten()
}

/// A random tag for this tab's client ids.
pub(crate) fn random_tag() -> String {
    let n = (js_sys::Math::random() * 36f64.powi(8)) as u64;
    let mut n = n;
    let mut tag = String::new();
    for _ in 0..8 {
        tag.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
    }
    tag
}

/// Restores the stored session into `state`, starts the periodic work and,
/// when a name is known, connects at once. Called once, after hydration.
pub(crate) fn start(state: RwSignal<ChatState>, clock: RwSignal<i64>) {
    let stored = storage();
    let get = |key: &str| stored.as_ref().and_then(|s| s.get_item(key).ok().flatten());
    let rooms: Vec<String> = get(KEY_ROOMS)
        .map(|r| r.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    state.update(|s| s.restore(get(KEY_NAME), get(KEY_TOKEN), &rooms, get(KEY_CURRENT)));
    // A token from the host app (PROTOCOL.md "Host identity"): in the
    // URL's fragment (`#token=…`, taken out of the address bar at once), or
    // in the host's `chat_token` cookie when it differs from the stored one.
    let host = fragment_token()
        .or_else(|| cookie_token().filter(|t| get(KEY_TOKEN).as_deref() != Some(t.as_str())));
    if let Some(token) = host {
        if state.try_update(|s| s.sign_in_with_host_token(&token)) == Some(true) {
            state.with_untracked(persist_session);
        }
    }
    DRIVER.with_borrow_mut(|d| {
        *d = Some(Driver {
            state,
            socket: None,
            parked: None,
            generation: 0,
            reconnect_timer: None,
            last_rx: now(),
            probe_at: None,
            since_rooms: 0,
        })
    });

    clock.set(now() as i64);
    let _ = set_interval_with_handle(move || clock.set(now() as i64), Duration::from_secs(1));
    let _ = set_interval_with_handle(periodic, PERIOD);
    // Back online: do not wait for the backoff timer.
    let on_online = Closure::<dyn FnMut()>::new(|| {
        let waiting = with_state(|s| s.conn.name() == "reconnecting").unwrap_or(false);
        if waiting {
            connect();
        }
    });
    let _ = window().add_event_listener_with_callback("online", on_online.as_ref().unchecked_ref());
    on_online.forget();

    if state.with_untracked(|s| s.name.is_some()) {
        connect();
    }
}

fn with_state<T>(f: impl FnOnce(&ChatState) -> T) -> Option<T> {
    let state = DRIVER.with_borrow(|d| d.as_ref().map(|d| d.state))?;
    state.try_with_untracked(f)
}

fn state_signal() -> Option<RwSignal<ChatState>> {
    DRIVER.with_borrow(|d| d.as_ref().map(|d| d.state))
}

/// Every [`PERIOD`]: refresh the room list (which probes the connection),
/// retry refused sends, and replace a connection that stopped answering.
fn periodic() {
    let Some(state) = state_signal() else { return };
    if !state.with_untracked(ChatState::is_connected) {
        return;
    }
    enum Probe {
        Send,
        Wait,
        Dead,
    }
    let (probe, rooms) = DRIVER.with_borrow_mut(|d| {
        let Some(d) = d.as_mut() else {
            return (Probe::Wait, false);
        };
        d.since_rooms += 1;
        let rooms = d.since_rooms >= ROOMS_EVERY;
        if rooms {
            d.since_rooms = 0;
        }
        let t = now();
        let probe = match d.probe_at.filter(|&p| d.last_rx < p) {
            Some(p) if t - p > PROBE_TIMEOUT_MS => Probe::Dead,
            Some(_) => Probe::Wait,
            None => {
                d.probe_at = Some(t);
                Probe::Send
            }
        };
        (probe, rooms)
    });
    let mut frames = match probe {
        Probe::Dead => {
            drop_socket();
            closed(1006);
            return;
        }
        Probe::Send => vec![ClientFrame::Ping],
        Probe::Wait => Vec::new(),
    };
    if rooms {
        frames.push(ClientFrame::Rooms {
            cursor: None,
            limit: None,
        });
    }
    // Untracked: most of the time nothing is retried and nothing must re-render.
    if let Some(resends) = state.try_update_untracked(ChatState::retry_failed) {
        if !resends.is_empty() {
            state.notify();
            frames.extend(resends);
        }
    }
    send(frames);
}

/// Opens a new socket now, replacing any current one.
pub(crate) fn connect() {
    let Some(state) = state_signal() else { return };
    drop_socket();
    state.update(ChatState::connecting);
    let generation = DRIVER.with_borrow_mut(|d| {
        let d = d.as_mut().expect("driver started");
        if let Some(t) = d.reconnect_timer.take() {
            t.clear();
        }
        if let Some(old) = d.parked.take() {
            old.detach();
        }
        d.generation += 1;
        d.last_rx = now();
        d.probe_at = None;
        d.generation
    });

    let location = window().location();
    let scheme = match location.protocol().as_deref() {
        Ok("https:") => "wss:",
        _ => "ws:",
    };
    let host = location.host().unwrap_or_default();
    let ws = match WebSocket::new(&format!("{scheme}//{host}/ws")) {
        Ok(ws) => ws,
        Err(_) => {
            closed_later(generation, 1006);
            return;
        }
    };

    let on_open = Closure::<dyn FnMut()>::new(move || {
        if !is_current_socket(generation) {
            return;
        }
        if let Some(hello) = with_state(ChatState::hello).flatten() {
            send(vec![hello]);
        } else {
            stop(None);
        }
    });
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        if !is_current_socket(generation) {
            return;
        }
        let Some(text) = ev.data().as_string() else {
            return;
        };
        DRIVER.with_borrow_mut(|d| {
            if let Some(d) = d.as_mut() {
                d.last_rx = now();
            }
        });
        let Ok(frame) = ServerFrame::from_json(&text) else {
            leptos::logging::warn!("ignoring a frame that does not parse: {text}");
            return;
        };
        let Some(state) = state_signal() else { return };
        let Some(outcome) = state.try_update(|s| s.apply(frame, now() as i64)) else {
            return;
        };
        send(outcome.send);
        if outcome.session_changed {
            state.with_untracked(persist_session);
        }
        if let Some(ms) = outcome.retry_joins_in {
            set_timeout(retry_joins, Duration::from_millis(ms));
        }
        if let Some(ms) = outcome.reconnect_in {
            // A drain spreads its clients: leave this socket at our turn,
            // as if it closed with 1012 (reconnect at once, re-join with
            // `since`), unless it is gone by then.
            set_timeout(
                move || {
                    if is_current_socket(generation) {
                        drop_socket();
                        closed(CloseCode::ServiceRestart.code());
                    }
                },
                Duration::from_millis(ms),
            );
        }
    });
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |ev: CloseEvent| {
        if !is_current_socket(generation) {
            return;
        }
        // This handler belongs to the socket: park it, drop it later.
        DRIVER.with_borrow_mut(|d| {
            if let Some(d) = d.as_mut() {
                d.parked = d.socket.take();
            }
        });
        closed(ev.code());
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    DRIVER.with_borrow_mut(|d| {
        if let Some(d) = d.as_mut() {
            d.socket = Some(Socket {
                ws,
                _on_open: on_open,
                _on_message: on_message,
                _on_close: on_close,
            });
        }
    });
}

fn is_current_socket(generation: u64) -> bool {
    DRIVER.with_borrow(|d| d.as_ref().is_some_and(|d| d.generation == generation))
}

/// Detaches and closes the current socket, if any; its events are ignored
/// from now on.
fn drop_socket() {
    let old = DRIVER.with_borrow_mut(|d| {
        d.as_mut().and_then(|d| {
            d.generation += 1;
            d.socket.take()
        })
    });
    if let Some(old) = old {
        old.detach();
    }
}

/// Sends the refused joins whose backoff ran out; schedules itself for
/// those that still wait.
fn retry_joins() {
    let Some(state) = state_signal() else { return };
    let Some((frames, next)) = state.try_update(|s| s.retry_joins(now() as i64)) else {
        return;
    };
    send(frames);
    if let Some(ms) = next {
        set_timeout(retry_joins, Duration::from_millis(ms));
    }
}

fn closed_later(generation: u64, code: u16) {
    set_timeout(
        move || {
            if is_current_socket(generation) {
                closed(code);
            }
        },
        Duration::ZERO,
    );
}

/// The host token in the URL's fragment (`#token=<jwt>`), removed from
/// the address bar so that it is not bookmarked or shared.
fn fragment_token() -> Option<String> {
    let location = window().location();
    let hash = location.hash().ok()?;
    let token = hash.strip_prefix("#token=")?.to_owned();
    if let (Ok(path), Ok(search)) = (location.pathname(), location.search()) {
        let _ = window().history().and_then(|h| {
            h.replace_state_with_url(&JsValue::NULL, "", Some(&format!("{path}{search}")))
        });
    }
    (!token.is_empty()).then_some(token)
}

/// The host token in the host app's `chat_token` cookie (same site, not
/// HttpOnly), if any.
fn cookie_token() -> Option<String> {
    let document: web_sys::HtmlDocument = window().document()?.dyn_into().ok()?;
    let cookies = document.cookie().ok()?;
    cookies
        .split(';')
        .filter_map(|c| c.trim().strip_prefix("chat_token="))
        .map(str::to_owned)
        .find(|t| !t.is_empty())
}

/// The current connection ended with `code`: ask the state what to do.
fn closed(code: u16) {
    let Some(state) = state_signal() else { return };
    // The host token expired (4001): a fresher one in the host's cookie
    // signs in again at once.
    if code == CloseCode::TokenExpired.code() {
        let current = state.with_untracked(|s| s.token.clone());
        if let Some(fresh) = cookie_token().filter(|t| Some(t) != current.as_ref()) {
            if state.try_update(|s| s.sign_in_with_host_token(&fresh)) == Some(true) {
                state.with_untracked(persist_session);
                connect();
                return;
            }
        }
    }
    let jitter = js_sys::Math::random();
    let Some(action) = state.try_update(|s| s.apply_close(code, now() as i64, jitter)) else {
        return;
    };
    if state.with_untracked(|s| s.token.is_none()) {
        state.with_untracked(persist_session);
    }
    match action {
        CloseAction::Stop => {}
        CloseAction::ReconnectIn(ms) => {
            let handle = set_timeout_with_handle(connect, Duration::from_millis(ms)).ok();
            DRIVER.with_borrow_mut(|d| {
                if let Some(d) = d.as_mut() {
                    if let Some(old) = std::mem::replace(&mut d.reconnect_timer, handle) {
                        old.clear();
                    }
                }
            });
        }
    }
}

/// Closes the connection for good (until [`connect`] is called again).
pub(crate) fn stop(reason: Option<String>) {
    drop_socket();
    DRIVER.with_borrow_mut(|d| {
        if let Some(t) = d.as_mut().and_then(|d| d.reconnect_timer.take()) {
            t.clear();
        }
    });
    if let Some(state) = state_signal() {
        state.update(|s| s.go_offline(reason));
    }
}

/// Writes frames on the current socket if it is open. Frames that cannot be
/// written are not lost where it matters: pending sends stay in the state
/// and go again after the next `joined`; joins are redone after `welcome`.
pub(crate) fn send(frames: Vec<ClientFrame>) {
    if frames.is_empty() {
        return;
    }
    DRIVER.with_borrow(|d| {
        let Some(socket) = d.as_ref().and_then(|d| d.socket.as_ref()) else {
            return;
        };
        if socket.ws.ready_state() != WebSocket::OPEN {
            return;
        }
        for frame in frames {
            let _ = socket.ws.send_with_str(&frame.to_json());
        }
    });
}

fn set_item(key: &str, value: Option<&str>) {
    if let Some(s) = storage() {
        let _ = match value {
            Some(v) => s.set_item(key, v),
            None => s.remove_item(key),
        };
    }
}

/// Stores the name and token, so a reload comes back as the same user.
fn persist_session(state: &ChatState) {
    set_item(KEY_NAME, state.name.as_deref());
    set_item(KEY_TOKEN, state.token.as_deref());
}

/// Stores the rooms this tab is in and the one on screen.
pub(crate) fn persist_rooms(rooms: &[String], current: Option<&str>) {
    set_item(KEY_ROOMS, Some(&rooms.join(",")));
    set_item(KEY_CURRENT, current);
}

/// Stores the name (after the user entered or changed it).
pub(crate) fn persist_name(name: Option<&str>) {
    set_item(KEY_NAME, name);
}

/// Local wall-clock "HH:MM" of a timestamp.
pub(crate) fn local_time(ts: i64) -> String {
    let d = js_sys::Date::new(&JsValue::from_f64(ts as f64));
    format!("{:02}:{:02}", d.get_hours(), d.get_minutes())
}

/// Local date and time, for the `title` of a timestamp.
pub(crate) fn local_datetime(ts: i64) -> String {
    let d = js_sys::Date::new(&JsValue::from_f64(ts as f64));
    d.to_locale_string("default", &JsValue::UNDEFINED).into()
}
