//! The admin page's browser side: its token in the tab's session storage
//! (gone when the tab closes), a timer, and `fetch` with the token as a
//! bearer credential.

use leptos::prelude::*;
use std::time::Duration;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, RequestInit, Response};

/// Session-storage key of the admin token.
const KEY_TOKEN: &str = "chat.admin_token";

fn session() -> Option<web_sys::Storage> {
    window().session_storage().ok().flatten()
}

/// The admin token this tab signed in with, if any.
pub(crate) fn admin_token() -> Option<String> {
    session()?.get_item(KEY_TOKEN).ok().flatten()
}

/// Keeps (or, with `None`, forgets) the admin token for this tab.
pub(crate) fn store_admin_token(token: Option<&str>) {
    let Some(s) = session() else { return };
    let _ = match token {
        Some(t) => s.set_item(KEY_TOKEN, t),
        None => s.remove_item(KEY_TOKEN),
    };
}

/// Calls `f` every second for the page's life.
pub(crate) fn every_second(f: impl Fn() + 'static) {
    let _ = set_interval_with_handle(f, Duration::from_secs(1));
}

/// `method path` with `Authorization: Bearer <token>`; `done` gets the
/// body, or the status and body of a refusal (status 0: no answer).
pub(crate) fn admin_request(
    method: &str,
    path: &str,
    token: String,
    done: impl FnOnce(Result<String, (u16, String)>) + 'static,
) {
    let request = (|| {
        let init = RequestInit::new();
        init.set_method(method);
        let headers = Headers::new()?;
        headers.set("Authorization", &format!("Bearer {token}"))?;
        init.set_headers(&headers);
        Request::new_with_str_and_init(path, &init)
    })();
    leptos::task::spawn_local(async move {
        let result = match request {
            Ok(request) => fetch(&request).await,
            Err(e) => Err((0, format!("{e:?}"))),
        };
        done(result);
    });
}

async fn fetch(request: &Request) -> Result<String, (u16, String)> {
    let network = |e: JsValue| (0u16, format!("no answer: {e:?}"));
    let response: Response = JsFuture::from(window().fetch_with_request(request))
        .await
        .map_err(network)?
        .dyn_into()
        .map_err(network)?;
    let body = JsFuture::from(response.text().map_err(network)?)
        .await
        .map_err(network)?
        .as_string()
        .unwrap_or_default();
    if response.ok() {
        Ok(body)
    } else {
        Err((response.status(), body))
    }
}
