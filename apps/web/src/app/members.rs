//! The member list of the room on screen, with who is "you"; dimmed while
//! the room is not live.

use super::use_chat;
use leptos::prelude::*;
use ui::{Avatar, SidebarSection, StatusDot, Tone};

#[component]
pub fn MemberList() -> impl IntoView {
    let chat = use_chat();
    let members = Memo::new(move |_| {
        chat.state
            .with(|s| s.current.as_ref().map(|c| s.members(c)).unwrap_or_default())
    });
    let me = Memo::new(move |_| chat.state.with(|s| s.me.as_ref().map(|m| m.id.clone())));
    // While the room is not live the list is what it was: shown, but dimmed.
    let live = Memo::new(move |_| {
        chat.state
            .with(|s| s.current_room().is_some_and(|r| r.live))
    });
    let tone = Signal::derive(move || if live.get() { Tone::Ok } else { Tone::Muted });
    view! {
        <SidebarSection title="Members" heading_id="members-title">
            <ul class="web-members" id="members" data-live=move || live.get().to_string()>
                <For each=move || members.get() key=|u| u.clone() let:user>
                    {
                        let you = me.with_untracked(|m| m.as_deref() == Some(user.id.as_str()));
                        view! {
                            <li class="web-member" data-user=user.id.clone()>
                                <Avatar name=user.name.clone() seed=user.id.clone()/>
                                <bdi class="web-member-name">{user.name.clone()}</bdi>
                                {you.then(|| view! { <span class="web-muted">" (you)"</span> })}
                                <StatusDot tone=tone/>
                            </li>
                        }
                    }
                </For>
            </ul>
        </SidebarSection>
    }
}
