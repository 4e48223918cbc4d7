//! View tests, rendered on the server (feature `ssr`): text from the
//! network stays text, and the composer says why it cannot send.

use super::composer::{composer_state, ComposerState};
use crate::state::ChatState;
use leptos::prelude::*;
use protocol::{Name, ServerFrame};
use ui::MessageBubble;

#[test]
fn bodies_and_names_render_as_text() {
    let owner = Owner::new();
    let html = owner.with(|| {
        view! {
            <MessageBubble
                name="<b>mallory</b>"
                seed="u_1"
                time="10:00"
                datetime="10:00"
                body="<img src=x onerror=alert(1)>"
            />
        }
        .to_html()
    });
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(html.contains("&lt;b&gt;mallory&lt;/b&gt;"), "{html}");
    assert!(!html.contains("<img") && !html.contains("<b>"), "{html}");
}

#[test]
fn the_composer_says_why_it_cannot_send() {
    let mut s = ChatState::new("t");
    assert!(composer_state(&s, false).disabled);
    assert!(composer_state(&s, true).disabled, "offline");

    s.set_name(Name::parse("me").unwrap());
    s.connecting();
    s.apply(
        ServerFrame::Welcome {
            protocol: 1,
            user: protocol::User {
                id: "u_me".to_owned(),
                name: "me".to_owned(),
            },
            token: "t".to_owned(),
            server: "a".to_owned(),
        },
        0,
    );
    let joining = composer_state(&s, true);
    assert!(joining.disabled);
    assert_eq!(joining.note.as_deref(), Some("Joining #general…"));

    s.apply(
        ServerFrame::Joined {
            room: "general".to_owned(),
            epoch: "e".to_owned(),
            offset: 0,
            members: vec![],
            history: vec![],
            recovered: false,
        },
        0,
    );
    assert_eq!(
        composer_state(&s, true),
        ComposerState {
            room: Some("general".to_owned()),
            disabled: false,
            note: None
        }
    );

    // Reconnecting: still writable; messages queue as pending.
    s.apply_close(1006, 0, 0.5);
    let queued = composer_state(&s, true);
    assert!(!queued.disabled);
    assert!(queued.note.is_some_and(|n| n.contains("will be sent")));

    // A terminal close disables it, with the reason.
    s.apply_close(1008, 0, 0.5);
    let offline = composer_state(&s, true);
    assert!(offline.disabled);
    assert!(offline.note.is_some_and(|n| n.starts_with("Offline")));
}

/// User-supplied text is isolated: a right-to-left or bidi-control name or
/// body orders itself, not the text around it (`<bdi>`, `dir="auto"`).
#[test]
fn names_and_bodies_are_isolated() {
    let owner = Owner::new();
    let html = owner.with(|| {
        view! {
            <MessageBubble name="עדי" seed="u_1" time="10:00" datetime="10:00" body="שלום abc"/>
        }
        .to_html()
    });
    assert!(
        html.contains(r#"<bdi class="ui-msg-name">עדי</bdi>"#),
        "{html}"
    );
    assert!(html.contains(r#"dir="auto""#), "{html}");
}
