//! Shared Leptos components and theme for the chat app and the docs site.
//!
//! Components are presentational: they take data and callbacks and know
//! nothing of WebSockets or the protocol. Styling lives in
//! `style/theme.css` (classes prefixed `ui-`), which both apps load; it has
//! light and dark themes through `prefers-color-scheme`.

use leptos::prelude::*;

/// The top bar: product name, optional status content on the right.
#[component]
pub fn TopBar(
    /// Title shown at the left.
    #[prop(into)]
    title: String,
    /// Where the title links to.
    #[prop(into, default = "/".to_owned())]
    href: String,
    children: Children,
) -> impl IntoView {
    view! {
        <header class="ui-topbar">
            <a class="ui-topbar-title" href=href>{title}</a>
            <nav class="ui-topbar-nav">{children()}</nav>
        </header>
    }
}

/// Up to two initials of a name, upper-cased ("Ada Lovelace" → "AL").
pub fn initials(name: &str) -> String {
    let mut words = name.split_whitespace();
    let first = words.next().and_then(|w| w.chars().next());
    let second = words.last().and_then(|w| w.chars().next());
    first
        .into_iter()
        .chain(second)
        .flat_map(char::to_uppercase)
        .collect()
}

/// A stable hue for a name, so the same user always gets the same colour.
pub fn hue(seed: &str) -> u32 {
    seed.bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 360
}

/// A round avatar with the initials of `name`, coloured by `seed`.
#[component]
pub fn Avatar(#[prop(into)] name: String, #[prop(into)] seed: String) -> impl IntoView {
    let style = format!("--ui-avatar-hue: {}", hue(&seed));
    view! {
        <span class="ui-avatar" style=style aria-hidden="true">
            {initials(&name)}
        </span>
    }
}

/// A small count or label badge.
#[component]
pub fn Badge(children: Children) -> impl IntoView {
    view! { <span class="ui-badge">{children()}</span> }
}

/// A titled card of content.
#[component]
pub fn Card(#[prop(into)] title: String, children: Children) -> impl IntoView {
    view! {
        <section class="ui-card">
            <h2 class="ui-card-title">{title}</h2>
            {children()}
        </section>
    }
}

/// How a [`Button`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ButtonVariant {
    /// The main action of a form.
    #[default]
    Primary,
    /// A quiet action beside content.
    Ghost,
    /// A destructive or cancelling action.
    Danger,
}

impl ButtonVariant {
    fn class(self) -> &'static str {
        match self {
            ButtonVariant::Primary => "ui-button",
            ButtonVariant::Ghost => "ui-button ui-button-ghost",
            ButtonVariant::Danger => "ui-button ui-button-danger",
        }
    }
}

/// A button. Attributes and event handlers given on the component
/// (`attr:id`, `on:click`) go to the `<button>` itself.
#[component]
pub fn Button(
    #[prop(optional)] variant: ButtonVariant,
    /// `button` (default) or `submit`.
    #[prop(default = "button")]
    kind: &'static str,
    #[prop(into, optional)] disabled: Signal<bool>,
    /// Accessible name, for buttons whose content is only a symbol.
    #[prop(into, optional)]
    label: Option<String>,
    /// Tooltip.
    #[prop(into, optional)]
    title: Option<String>,
    children: Children,
) -> impl IntoView {
    view! {
        <button
            type=kind
            class=variant.class()
            disabled=move || disabled.get()
            aria-label=label
            title=title
        >
            {children()}
        </button>
    }
}

/// A labelled single-line text field. `hint` is tied to the input with
/// `aria-describedby` (give it an element id through `hint_id`).
#[component]
pub fn TextInput(
    /// The input's id (also the label's `for`).
    id: &'static str,
    #[prop(into)] label: String,
    #[prop(into)] value: Signal<String>,
    #[prop(into)] on_input: Callback<String>,
    #[prop(into, optional)] placeholder: Option<String>,
    #[prop(into, optional)] autocomplete: Option<String>,
    #[prop(optional)] maxlength: Option<usize>,
    /// Show the label only to assistive technology.
    #[prop(optional)]
    hide_label: bool,
    #[prop(into, optional)] invalid: Signal<bool>,
    /// Id of the element that describes the field (hint or error).
    #[prop(optional)]
    described_by: Option<&'static str>,
    #[prop(optional)] autofocus: bool,
) -> impl IntoView {
    view! {
        <div class="ui-field">
            <label for=id class:ui-visually-hidden=hide_label class="ui-label">
                {label}
            </label>
            <input
                id=id
                class="ui-input"
                type="text"
                placeholder=placeholder
                autocomplete=autocomplete
                maxlength=maxlength
                autofocus=autofocus
                aria-invalid=move || if invalid.get() { "true" } else { "false" }
                aria-describedby=described_by
                prop:value=move || value.get()
                on:input=move |ev| on_input.run(event_target_value(&ev))
            />
        </div>
    }
}

/// A labelled multi-line text field that grows with its content.
#[component]
pub fn TextArea(
    id: &'static str,
    #[prop(into)] label: Signal<String>,
    #[prop(into)] value: Signal<String>,
    #[prop(into)] on_input: Callback<String>,
    /// Key presses (e.g. Enter to submit), before the browser acts on them.
    #[prop(into, optional)]
    on_keydown: Option<Callback<leptos::ev::KeyboardEvent>>,
    #[prop(into, optional)] placeholder: Signal<String>,
    #[prop(into, optional)] disabled: Signal<bool>,
    #[prop(optional)] hide_label: bool,
    #[prop(optional)] described_by: Option<&'static str>,
    #[prop(optional)] node_ref: NodeRef<leptos::html::Textarea>,
) -> impl IntoView {
    view! {
        <label for=id class:ui-visually-hidden=hide_label class="ui-label">
            {move || label.get()}
        </label>
        <textarea
            id=id
            class="ui-input ui-textarea"
            rows="1"
            node_ref=node_ref
            placeholder=move || placeholder.get()
            disabled=move || disabled.get()
            aria-describedby=described_by
            prop:value=move || value.get()
            on:input=move |ev| on_input.run(event_target_value(&ev))
            on:keydown=move |ev| {
                if let Some(cb) = on_keydown {
                    cb.run(ev);
                }
            }
        ></textarea>
    }
}

/// The colour of a [`StatusDot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tone {
    Ok,
    Busy,
    Danger,
    #[default]
    Muted,
}

impl Tone {
    fn as_str(self) -> &'static str {
        match self {
            Tone::Ok => "ok",
            Tone::Busy => "busy",
            Tone::Danger => "danger",
            Tone::Muted => "muted",
        }
    }
}

/// A small round status light; decorative (say the status in text beside it).
#[component]
pub fn StatusDot(#[prop(into)] tone: Signal<Tone>) -> impl IntoView {
    view! { <span class="ui-dot" data-tone=move || tone.get().as_str() aria-hidden="true"></span> }
}

/// Where a [`MessageBubble`]'s message is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Delivery {
    #[default]
    Sent,
    /// Ours, on its way: greyed with "sending…".
    Pending,
    /// Ours, refused, with the reason.
    Failed(String),
}

/// One chat message: avatar, name and time, then the body as plain text
/// (never HTML). A `grouped` message continues the previous sender's group
/// and shows only its body. `children` go under the body (actions).
#[component]
pub fn MessageBubble(
    #[prop(into)] name: String,
    /// Seed of the avatar colour (the user id).
    #[prop(into)]
    seed: String,
    /// Short time shown ("14:05").
    #[prop(into)]
    time: String,
    /// Full date and time, shown on hover and given to assistive technology.
    #[prop(into)]
    datetime: String,
    #[prop(into)] body: String,
    #[prop(optional)] grouped: bool,
    #[prop(optional)] mine: bool,
    #[prop(optional)] delivery: Delivery,
    #[prop(optional)] children: Option<Children>,
) -> impl IntoView {
    let pending = delivery == Delivery::Pending;
    let failed = matches!(delivery, Delivery::Failed(_));
    let status = match delivery {
        Delivery::Sent => None,
        Delivery::Pending => {
            Some(view! { <span class="ui-msg-status">"sending…"</span> }.into_any())
        }
        Delivery::Failed(reason) => Some(
            view! { <span class="ui-msg-status ui-msg-status-failed">"not sent: " {reason}</span> }
                .into_any(),
        ),
    };
    let head = (!grouped).then(|| {
        view! {
            <div class="ui-msg-head">
                <bdi class="ui-msg-name">{name.clone()}</bdi>
                <time class="ui-msg-time" title=datetime.clone()>
                    {time.clone()}
                </time>
            </div>
        }
    });
    let gutter = if grouped {
        view! {
            <time class="ui-msg-time ui-msg-time-side" title=datetime>
                {time}
            </time>
        }
        .into_any()
    } else {
        view! { <Avatar name=name seed=seed/> }.into_any()
    };
    view! {
        <div
            class="ui-msg"
            class:ui-msg-grouped=grouped
            class:ui-msg-mine=mine
            class:ui-msg-pending=pending
            class:ui-msg-failed=failed
        >
            <div class="ui-msg-gutter">{gutter}</div>
            <div class="ui-msg-main">
                {head}
                // Isolated: a right-to-left body (or one holding bidi
                // controls) orders itself, not the text around it.
                <p class="ui-msg-body" dir="auto">{body}</p>
                {status}
                {children.map(|c| c())}
            </div>
        </div>
    }
}

/// A side column with a heading per section.
#[component]
pub fn SidebarSection(
    #[prop(into)] title: String,
    /// Id of the heading, for `aria-labelledby`.
    heading_id: &'static str,
    children: Children,
) -> impl IntoView {
    view! {
        <section class="ui-sidebar-section" aria-labelledby=heading_id>
            <h2 class="ui-sidebar-title" id=heading_id>
                {title}
            </h2>
            {children()}
        </section>
    }
}

/// A calm placeholder for an empty area.
#[component]
pub fn EmptyState(#[prop(into)] title: String, children: Children) -> impl IntoView {
    view! {
        <div class="ui-empty">
            <p class="ui-empty-title">{title}</p>
            {children()}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_take_first_and_last_word() {
        assert_eq!(initials("ada lovelace"), "AL");
        assert_eq!(initials("Grace Brewster Hopper"), "GH");
        assert_eq!(initials("bob"), "B");
        assert_eq!(initials("  "), "");
        assert_eq!(initials("élodie"), "É");
    }

    #[test]
    fn hue_is_stable_and_in_range() {
        assert_eq!(hue("u_abc"), hue("u_abc"));
        assert!(hue("anything") < 360);
        assert_ne!(hue("u_a"), hue("u_b"));
    }
}
