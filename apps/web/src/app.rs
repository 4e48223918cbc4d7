//! The application shell and routes.

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;
use protocol::validate::Name;
use ui::{Avatar, Card, TopBar};

/// The HTML document around the app, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The root component.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/chat.css"/>
        <Title text="Chat"/>
        <Router>
            <TopBar title="Chat">
                <a href="/docs">"Docs"</a>
            </TopBar>
            <main class="web-main">
                <Routes fallback=|| view! { <p class="web-notfound">"Page not found."</p> }>
                    <Route path=path!("") view=Welcome/>
                </Routes>
            </main>
        </Router>
    }
}

/// Name entry: the first thing a visitor sees.
#[component]
fn Welcome() -> impl IntoView {
    let (name, set_name) = signal(String::new());
    let checked = move || Name::parse(&name.get());
    view! {
        <Card title="Join the conversation">
            <form class="web-name-form" on:submit=|ev| ev.prevent_default()>
                <label for="name">"Your name"</label>
                <input
                    id="name"
                    class="ui-input"
                    autocomplete="nickname"
                    maxlength="64"
                    prop:value=name
                    on:input=move |ev| set_name.set(event_target_value(&ev))
                />
                <p class="web-hint" aria-live="polite">
                    {move || match checked() {
                        Ok(n) => {
                            view! {
                                <span class="web-preview">
                                    <Avatar name=n.as_str().to_owned() seed=n.as_str().to_owned()/>
                                    {n.as_str().to_owned()}
                                </span>
                            }
                                .into_any()
                        }
                        Err(e) if !name.get().is_empty() => {
                            view! { <span class="web-error">{e.to_string()}</span> }.into_any()
                        }
                        Err(_) => view! { <span>"1 to 32 characters."</span> }.into_any(),
                    }}
                </p>
            </form>
        </Card>
    }
}
