//! Name entry, the first thing a new visitor sees (and what "Change name"
//! comes back to): validates the name as it is typed, stores it and
//! connects.

use super::use_chat;
use crate::platform;
use leptos::prelude::*;
use protocol::Name;
use ui::{Avatar, Button, Card, TextInput};

/// Name entry: the first thing a new visitor sees.
#[component]
pub fn NameForm() -> impl IntoView {
    let chat = use_chat();
    let draft = RwSignal::new(chat.last_name.get_untracked());
    let tried = RwSignal::new(false);
    let checked = Memo::new(move |_| draft.with(|d| Name::parse(d)));
    let show_error = move || tried.get() || !draft.with(String::is_empty);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        tried.set(true);
        if let Ok(name) = checked.get_untracked() {
            platform::persist_name(Some(name.as_str()));
            chat.state.update(|s| s.set_name(name));
            platform::connect();
        }
    };
    view! {
        <main class="web-name-page">
            <Card title="Join the conversation">
                <form class="web-name-form" on:submit=submit novalidate>
                    <TextInput
                        id="name"
                        label="Your name"
                        value=draft
                        on_input=move |v: String| draft.set(v)
                        autocomplete="nickname"
                        maxlength=64
                        autofocus=true
                        invalid=Signal::derive(move || show_error() && checked.with(Result::is_err))
                        described_by="name-hint"
                    />
                    <p class="web-hint" id="name-hint" aria-live="polite">
                        {move || match checked.get() {
                            Ok(n) => {
                                view! {
                                    <span class="web-preview">
                                        <Avatar name=n.as_str().to_owned() seed=n.as_str().to_owned()/>
                                        {n.as_str().to_owned()}
                                    </span>
                                }
                                    .into_any()
                            }
                            Err(e) if show_error() => {
                                view! { <span class="web-error">{e.to_string()}</span> }.into_any()
                            }
                            Err(_) => view! { <span>"1 to 32 characters."</span> }.into_any(),
                        }}
                    </p>
                    <Button kind="submit" attr:id="name-submit">
                        "Start chatting"
                    </Button>
                </form>
            </Card>
        </main>
    }
}
