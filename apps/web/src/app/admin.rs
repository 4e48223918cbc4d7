//! The admin view at `/admin`: sign in with the admin token (kept in the
//! tab's session storage), then every instance's last heartbeat, a live
//! chart of deliveries/s per instance, the busiest rooms with members and
//! messages/s, and two actions (disconnect a user, close a room). Reads
//! `/admin/api/overview` every second (`platform::admin_request`); the
//! shapes are `protocol::admin`'s.
//!
//! Stable hooks for browser tests: `#admin-token`, `#admin-sign-in`,
//! `#admin-error`, `#admin-instances` (rows `tr[data-instance]`),
//! `#admin-rooms` (rows `tr[data-room]`), `#admin-chart`, `#admin-user`,
//! `#admin-disconnect`, `#admin-notice`.

use crate::platform;
use leptos::prelude::*;
use protocol::admin::{AdminRoom, InstanceStatus, Overview};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Points of the live chart (one per overview read: a minute).
const CHART_POINTS: usize = 60;

/// Line colours of the chart, by instance (in id order), as hues.
const HUES: [u32; 6] = [232, 150, 20, 290, 45, 190];

/// What the page holds between reads.
#[derive(Debug, Clone, Default, PartialEq)]
struct AdminView {
    overview: Option<Overview>,
    /// Deliveries/s per instance, oldest first.
    chart: VecDeque<BTreeMap<String, f64>>,
    /// Messages/s per room, from the offsets of the last two reads.
    rates: HashMap<String, f64>,
    /// The previous read's offsets and time.
    last: Option<(i64, HashMap<String, u64>)>,
}

impl AdminView {
    /// Takes a new overview: chart point, room rates.
    fn take(&mut self, overview: Overview) {
        self.chart.push_back(
            overview
                .instances
                .iter()
                .map(|i| (i.id.clone(), i.deliveries_per_s))
                .collect(),
        );
        while self.chart.len() > CHART_POINTS {
            self.chart.pop_front();
        }
        let offsets: HashMap<String, u64> = overview
            .rooms
            .iter()
            .map(|r| (r.room.clone(), r.offset))
            .collect();
        self.rates.clear();
        if let Some((at, before)) = &self.last {
            let secs = (overview.at_ms - at) as f64 / 1000.0;
            if secs > 0.0 {
                for (room, offset) in &offsets {
                    if let Some(b) = before.get(room) {
                        self.rates
                            .insert(room.clone(), offset.saturating_sub(*b) as f64 / secs);
                    }
                }
            }
        }
        self.last = Some((overview.at_ms, offsets));
        self.overview = Some(overview);
    }
}

/// The admin page.
#[component]
pub fn AdminPage() -> impl IntoView {
    let token = RwSignal::new(None::<String>);
    let view_state = RwSignal::new(AdminView::default());
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<String>);
    let draft = RwSignal::new(String::new());
    // False while rendering on the server and until hydration: the form
    // appears only then, so a token typed early is never submitted as a
    // plain GET (into the URL).
    let booted = RwSignal::new(false);

    // In the browser: the stored token, then a read every second.
    Effect::new(move |_| {
        booted.set(true);
        if let Some(t) = platform::admin_token() {
            token.set(Some(t));
        }
        platform::every_second(move || {
            if let Some(t) = token.get_untracked() {
                refresh(t, token, view_state, error);
            }
        });
    });
    Effect::new(move |_| {
        if let Some(t) = token.get() {
            refresh(t, token, view_state, error);
        }
    });

    let sign_in = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let t = draft.get_untracked().trim().to_owned();
        if t.is_empty() {
            error.set(Some("Enter the admin token.".to_owned()));
            return;
        }
        error.set(None);
        platform::store_admin_token(Some(&t));
        token.set(Some(t));
    };
    let sign_out = move |_| {
        platform::store_admin_token(None);
        token.set(None);
        view_state.set(AdminView::default());
    };

    view! {
        <main class="admin">
            <header class="admin-top">
                <h1>"Chat admin"</h1>
                <Show when=move || token.with(Option::is_some)>
                    <button class="ui-button ui-button-ghost" id="admin-sign-out" on:click=sign_out>
                        "Sign out"
                    </button>
                </Show>
            </header>
            <p id="admin-error" class="admin-error" role="alert" hidden=move || error.with(Option::is_none)>
                {move || error.get().unwrap_or_default()}
            </p>
            <Show
                when=move || token.with(Option::is_some)
                fallback=move || view! {
                    <Show when=move || booted.get() fallback=|| view! { <p class="admin-muted">"Loading…"</p> }>
                    <form id="admin-sign-in" class="admin-sign-in" method="post" on:submit=sign_in>
                        // For password managers: the token is the password of "admin".
                        <input type="text" name="username" value="admin" autocomplete="username" hidden/>
                        <label for="admin-token">"Admin token"</label>
                        <input id="admin-token" class="ui-input" type="password" autocomplete="current-password"
                            prop:value=move || draft.get()
                            on:input=move |ev| draft.set(event_target_value(&ev))/>
                        <button class="ui-button" type="submit">"Sign in"</button>
                    </form>
                    </Show>
                }
            >
                <Dashboard view_state token notice/>
            </Show>
        </main>
    }
}

/// Reads the overview with `t` into `view_state`; a refused token is
/// forgotten (the sign-in form shows again with the reason).
fn refresh(
    t: String,
    token: RwSignal<Option<String>>,
    view_state: RwSignal<AdminView>,
    error: RwSignal<Option<String>>,
) {
    platform::admin_request(
        "GET",
        "/admin/api/overview",
        t,
        move |result| match result {
            Ok(body) => match serde_json::from_str::<Overview>(&body) {
                Ok(overview) => {
                    error.set(None);
                    view_state.update(|v| v.take(overview));
                }
                Err(e) => error.set(Some(format!("Unreadable overview: {e}"))),
            },
            Err((401, _)) => {
                platform::store_admin_token(None);
                token.set(None);
                error.set(Some("That admin token was refused.".to_owned()));
            }
            Err((404, body)) => {
                token.set(None);
                error.set(Some(body));
            }
            Err((status, body)) => error.set(Some(format!("The server answered {status}: {body}"))),
        },
    );
}

#[component]
fn Dashboard(
    view_state: RwSignal<AdminView>,
    token: RwSignal<Option<String>>,
    notice: RwSignal<Option<String>>,
) -> impl IntoView {
    let instances = Memo::new(move |_| {
        view_state.with(|v| {
            v.overview
                .as_ref()
                .map(|o| o.instances.clone())
                .unwrap_or_default()
        })
    });
    let rooms = Memo::new(move |_| {
        view_state.with(|v| {
            v.overview
                .as_ref()
                .map(|o| {
                    o.rooms
                        .iter()
                        .map(|r| (r.clone(), v.rates.get(&r.room).copied()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
    });
    let answered = move || {
        view_state.with(|v| {
            v.overview.as_ref().map(|o| {
                format!(
                    "Answered by {} at {}",
                    o.server,
                    platform::local_time(o.at_ms)
                )
            })
        })
    };
    let user = RwSignal::new(String::new());
    let act = move |path: String, done: String| {
        let Some(t) = token.get_untracked() else {
            return;
        };
        platform::admin_request("POST", &path, t, move |result| {
            notice.set(Some(match result {
                Ok(_) => done,
                Err((status, body)) => format!("Refused ({status}): {body}"),
            }));
        });
    };
    let disconnect = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let id = user.get_untracked().trim().to_owned();
        if id.is_empty() {
            notice.set(Some("Enter a user id.".to_owned()));
            return;
        }
        act(
            format!("/admin/api/users/{}/disconnect", encode_segment(&id)),
            format!("Disconnecting {id} on every instance."),
        );
    };

    view! {
        <p id="admin-server" class="admin-muted">{answered}</p>
        <p id="admin-notice" class="admin-notice" role="status" hidden=move || notice.with(Option::is_none)>
            {move || notice.get().unwrap_or_default()}
        </p>
        <section class="admin-section">
            <h2>"Instances"</h2>
            <table id="admin-instances" class="admin-table">
                <thead><tr>
                    <th>"instance"</th><th>"version"</th><th>"up"</th><th class="admin-num">"connections"</th>
                    <th class="admin-num">"rooms"</th><th class="admin-num">"deliveries/s"</th><th>"ready"</th>
                </tr></thead>
                <tbody>
                    <For each=move || instances.get() key=|i| (i.id.clone(), i.at_ms) let:i>
                        <InstanceRow i/>
                    </For>
                </tbody>
            </table>
        </section>
        <section class="admin-section">
            <h2>"Deliveries per second"</h2>
            <Chart view_state/>
        </section>
        <section class="admin-section">
            <h2>"Rooms"</h2>
            <table id="admin-rooms" class="admin-table">
                <thead><tr><th>"room"</th><th class="admin-num">"members"</th><th class="admin-num">"offset"</th><th class="admin-num">"messages/s"</th><th></th></tr></thead>
                <tbody>
                    <For each=move || rooms.get() key=|(r, rate)| (r.clone(), rate.map(f64::to_bits)) let:((room, rate))>
                        <RoomRow room rate on_close=move |name: String| act(
                            format!("/admin/api/rooms/{}/close", encode_segment(&name)),
                            format!("Closing {name}: every member leaves it."),
                        )/>
                    </For>
                </tbody>
            </table>
        </section>
        <section class="admin-section">
            <h2>"Disconnect a user"</h2>
            <form id="admin-disconnect" class="admin-inline" on:submit=disconnect>
                <input id="admin-user" class="ui-input" placeholder="user id (u_…)"
                    prop:value=move || user.get()
                    on:input=move |ev| user.set(event_target_value(&ev))/>
                <button class="ui-button ui-button-danger" type="submit">"Disconnect"</button>
            </form>
        </section>
    }
}

#[component]
fn InstanceRow(i: InstanceStatus) -> impl IntoView {
    let up_s = ((i.at_ms - i.started_ms) / 1000).max(0);
    let up = if up_s >= 3600 {
        format!("{} h {} min", up_s / 3600, up_s % 3600 / 60)
    } else {
        format!("{} min {} s", up_s / 60, up_s % 60)
    };
    view! {
        <tr data-instance=i.id.clone() data-ready=i.ready.to_string()>
            <td>{i.id.clone()}</td>
            <td>{i.version}</td>
            <td>{up}</td>
            <td class="admin-num">{i.connections}</td>
            <td class="admin-num">{i.rooms}</td>
            <td class="admin-num">{format!("{:.0}", i.deliveries_per_s)}</td>
            <td>{if i.ready { "ready" } else { "not ready" }}</td>
        </tr>
    }
}

#[component]
fn RoomRow(
    room: AdminRoom,
    rate: Option<f64>,
    on_close: impl Fn(String) + Copy + 'static,
) -> impl IntoView {
    let name = room.room.clone();
    view! {
        <tr data-room=room.room.clone()>
            <td>{room.room.clone()}</td>
            <td class="admin-num">{room.members}</td>
            <td class="admin-num">{room.offset}</td>
            <td class="admin-num">{rate.map_or("—".to_owned(), |r| format!("{r:.1}"))}</td>
            <td><button class="ui-button ui-button-ghost admin-close" on:click=move |_| on_close(name.clone())>"Close"</button></td>
        </tr>
    }
}

/// Deliveries/s per instance over the last reads, one line each.
#[component]
fn Chart(view_state: RwSignal<AdminView>) -> impl IntoView {
    const W: f64 = 600.0;
    const H: f64 = 160.0;
    let lines = Memo::new(move |_| {
        view_state.with(|v| {
            let top = v
                .chart
                .iter()
                .flat_map(|p| p.values().copied())
                .fold(1.0f64, f64::max);
            let ids: std::collections::BTreeSet<&String> =
                v.chart.iter().flat_map(|p| p.keys()).collect();
            let step = W / (CHART_POINTS - 1) as f64;
            // The newest read at the right edge.
            let first = CHART_POINTS - v.chart.len();
            let lines: Vec<(String, String, String, u32)> = ids
                .into_iter()
                .enumerate()
                .map(|(n, id)| {
                    let points = v
                        .chart
                        .iter()
                        .enumerate()
                        .filter_map(|(x, p)| {
                            p.get(id).map(|y| {
                                // 0 on a visible baseline 2 units above the edge.
                                format!(
                                    "{:.1},{:.1}",
                                    (first + x) as f64 * step,
                                    H - 2.0 - y / top * (H - 8.0)
                                )
                            })
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    (
                        id.clone(),
                        points,
                        format!("{id} (scale: {top:.0}/s)"),
                        HUES[n % HUES.len()],
                    )
                })
                .collect();
            lines
        })
    });
    view! {
        <svg id="admin-chart" class="admin-chart" viewBox=format!("0 0 {W} {H}") role="img"
            aria-label="Deliveries per second per instance">
            <For each=move || lines.get() key=|l| l.clone() let:line>
                <polyline data-instance=line.0.clone() points=line.1
                    style=format!("stroke: hsl({}, 70%, 50%)", line.3)/>
            </For>
        </svg>
        <ul class="admin-legend">
            <For each=move || lines.get() key=|l| l.clone() let:line>
                <li style=format!("color: hsl({}, 70%, 45%)", line.3)>
                    {line.2.clone()}
                </li>
            </For>
        </ul>
    }
}

/// A path segment with `/`, `%`, `?`, `#` and spaces escaped.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
