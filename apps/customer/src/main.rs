//! The customer app: one order, live. On the web it is the page a tracking
//! link opens (`/t/{token}` on the server that serves it); on the desktop
//! (the installed build's stand-in here) it takes the link as its argument.
//! Components render the client core's [`TrackingScreen`]; the core does
//! every request.

use std::time::Duration;

use dioxus::prelude::*;
use xianlu_core::track::{Phase, TrackingScreen, follow_link};
use xianlu_core::{ApiClient, Backoff, ConnectionState};
use xianlu_ui::i18n::Key;
use xianlu_ui::{Lang, MapLayers, MapView, OrderCard, STYLE, Timeline};

fn main() {
    dioxus::launch(App);
}

/// Splits a tracking link `http(s)://host[:port]/t/{token}` into the server and the token.
fn split_link(link: &str) -> Option<(String, String)> {
    let (base, token) = link.split_once("/t/")?;
    let token = token.trim_end_matches('/').split(['?', '#']).next()?.to_owned();
    (!base.is_empty() && !token.is_empty()).then(|| (base.to_owned(), token))
}

/// Where the page was opened: the address bar on the web.
#[cfg(feature = "web")]
fn opened_link() -> Option<String> {
    web_sys::window()?.location().href().ok()
}

/// Where the page was opened: the first argument (or `XIANLU_TRACKING_LINK`) on the desktop.
#[cfg(not(feature = "web"))]
fn opened_link() -> Option<String> {
    std::env::args().nth(1).or_else(|| std::env::var("XIANLU_TRACKING_LINK").ok())
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Roads {
    lines: Vec<(String, Vec<xianlu_domain::wire::LatLng>)>,
    attribution: Option<String>,
}

#[component]
fn App() -> Element {
    let mut screen = use_signal(TrackingScreen::default);
    let mut roads = use_signal(Roads::default);
    let mut lang = use_signal(Lang::default);
    let mut now = use_signal(chrono::Utc::now);
    use_hook(move || {
        let api =
            opened_link().and_then(|l| split_link(&l)).and_then(|(b, t)| ApiClient::for_tracking_link(&b, &t).ok());
        let Some(api) = api else {
            screen.write().phase = Phase::NotFound;
            return;
        };
        let map_api = api.clone();
        let mut asked_for_roads = false;
        spawn(async move {
            follow_link(api, Backoff::default(), move |s| {
                // The map's roads, once: a few kilometres around the destination.
                if let (false, Some(destination)) = (asked_for_roads, s.map.destination) {
                    asked_for_roads = true;
                    let api = map_api.clone();
                    spawn(async move {
                        let d = 0.03;
                        let bbox = [destination.lng - d, destination.lat - d, destination.lng + d, destination.lat + d];
                        if let Ok(tile) = api.map_roads(bbox, 14).await {
                            roads.set(Roads {
                                lines: xianlu_core::tracking::road_lines(&tile),
                                attribution: tile.attribution.clone(),
                            });
                        }
                    });
                }
                screen.set(s.clone());
            })
            .await;
        });
        // "Last seen N s ago" keeps counting between positions.
        spawn(async move {
            loop {
                xianlu_core::rt::sleep(Duration::from_secs(5)).await;
                now.set(chrono::Utc::now());
            }
        });
    });
    let l = lang();
    let s = screen.read();
    rsx! {
        style { {STYLE} }
        main { class: "xl-page",
            div { class: "xl-bar",
                h1 { "鲜路 Xianlu" }
                button { id: "xl-lang", onclick: move |_| lang.set(l.other()), {l.other().name()} }
            }
            match &s.phase {
                Phase::Loading => rsx! { p { id: "xl-loading", class: "xl-banner", {l.t(Key::Loading)} } },
                Phase::Expired => rsx! { p { id: "xl-expired", class: "xl-banner xl-banner-bad", {l.t(Key::Expired)} } },
                Phase::NotFound => rsx! { p { id: "xl-not-found", class: "xl-banner xl-banner-bad", {l.t(Key::NotFound)} } },
                Phase::Unreachable { attempt, .. } => rsx! {
                    p { id: "xl-unreachable", class: "xl-banner", "{l.t(Key::Unreachable)} ({attempt})…" }
                },
                Phase::Ready => rsx! { Tracked { screen: s.clone(), roads: roads(), lang: l, now: now() } },
            }
        }
    }
}

#[component]
fn Tracked(screen: TrackingScreen, roads: Roads, lang: Lang, now: chrono::DateTime<chrono::Utc>) -> Element {
    let Some(view) = screen.view.clone() else { return rsx! {} };
    let map = &screen.map;
    let mut focus: Vec<_> = map.destination.into_iter().chain(map.position).collect();
    focus.extend(map.trail.iter().copied());
    let layers = MapLayers {
        roads: roads.lines.clone(),
        trail: map.trail.clone(),
        route: map.remaining_route.clone(),
        courier: map.position,
        destination: map.destination,
        stops: Vec::new(),
        attribution: roads.attribution.clone(),
    };
    let seen = map.seconds_since_seen(now);
    let reconnecting = !matches!(screen.connection, ConnectionState::Live) && !view.status.is_terminal();
    let label = lang.status(view.status).to_owned();
    rsx! {
        if screen.cancelled() {
            p { id: "xl-cancelled", class: "xl-banner xl-banner-bad", {lang.t(Key::Cancelled)} }
        }
        if let Some(minutes) = map.arriving_in_minutes {
            p { id: "xl-arriving", class: "xl-banner xl-banner-good", "{lang.t(Key::ArrivingIn)} {minutes} {lang.t(Key::Minutes)}" }
        }
        if reconnecting {
            p { id: "xl-reconnecting", class: "xl-banner", {lang.t(Key::Reconnecting)} }
        }
        OrderCard { view: view.clone(), lang }
        MapView { layers, focus, label }
        if let Some(seconds) = seen {
            p { id: "xl-last-seen", class: "xl-muted",
                if seconds < 120 {
                    "{lang.t(Key::LastSeen)}: {seconds} {lang.t(Key::SecondsAgo)}"
                } else {
                    "{lang.t(Key::LastSeen)}: {seconds / 60} {lang.t(Key::MinutesAgo)}"
                }
            }
        }
        if let Some((stop, stops)) = map.stop {
            p { class: "xl-muted", "{lang.t(Key::StopOf)} {stop}/{stops}" }
        }
        Timeline { events: screen.timeline.clone(), lang }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_splits_into_the_server_and_the_token() {
        assert_eq!(
            split_link("https://xianlu.example/t/t.abc_DEF-1?utm=sms"),
            Some(("https://xianlu.example".to_owned(), "t.abc_DEF-1".to_owned()))
        );
        assert_eq!(
            split_link("http://127.0.0.1:8080/t/t.xyz/"),
            Some(("http://127.0.0.1:8080".to_owned(), "t.xyz".to_owned()))
        );
        assert_eq!(split_link("http://127.0.0.1:8080/orders/1"), None);
        assert_eq!(split_link("http://127.0.0.1:8080/t/"), None);
    }
}
