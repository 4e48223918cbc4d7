//! The chat UI. Rendered on the server by `apps/server` (feature `ssr`,
//! through leptos_axum) and hydrated in the browser (feature `hydrate`,
//! compiled to WASM by cargo-leptos). Every frame it exchanges is a type of
//! `packages/protocol`; its components come from `packages/ui`.
//!
//! Modules in reading order:
//! - [`state`]: the client's model and every protocol decision, plain Rust,
//!   unit-tested natively (a folder: frames, actions, connection, room,
//!   what the views read);
//! - `client` (hydrate only): the WebSocket driver, timers and storage;
//!   `admin_client` (hydrate only): the admin page's token and requests;
//! - `platform`: what the views call of the browser, inert on the server;
//! - [`app`]: the views, one module per screen area.

// The view types of a whole page nest deeper than the default allows.
#![recursion_limit = "256"]

pub mod state;

#[cfg(feature = "hydrate")]
mod admin_client;
#[cfg(feature = "hydrate")]
mod client;
mod platform;

pub mod app;

pub use app::{shell, App};

/// The WASM entry point: attaches the reactive app to the server-rendered HTML.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
