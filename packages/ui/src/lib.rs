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
