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
    #[cfg(feature = "desktop")]
    {
        use dioxus::desktop::{Config, LogicalSize, WindowBuilder};
        // A phone-sized window: the installed app's stand-in.
        let window = WindowBuilder::new().with_title("鲜路 Xianlu").with_inner_size(LogicalSize::new(420.0, 860.0));
        dioxus::LaunchBuilder::desktop().with_cfg(Config::new().with_window(window)).launch(App);
    }
    #[cfg(not(feature = "desktop"))]
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

mod installed;

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Roads {
    lines: Vec<(String, Vec<xianlu_domain::wire::LatLng>)>,
    attribution: Option<String>,
    tile_url: Option<String>,
    /// The road from the courier to the door, while out for delivery.
    route: Vec<xianlu_domain::wire::LatLng>,
}

#[component]
fn App() -> Element {
    let lang = use_signal(Lang::default);
    let link = use_hook(|| opened_link().and_then(|l| split_link(&l)));
    rsx! {
        style { {STYLE} }
        match link {
            Some((base, token)) => rsx! { LinkPage { base, token, lang } },
            None => rsx! { installed::Installed { lang } },
        }
    }
}

/// The bar at the top: the name and the language switch.
#[component]
fn Bar(lang: Signal<Lang>) -> Element {
    let l = lang();
    rsx! {
        div { class: "xl-bar",
            h1 { "鲜路 Xianlu" }
            button { id: "xl-lang", onclick: move |_| lang.set(l.other()), {l.other().name()} }
        }
    }
}

/// What a tracking link's page is doing.
#[derive(Debug, Clone, PartialEq)]
enum LinkStage {
    Watching,
    /// At the door: signing on this screen.
    Signing,
    Signed(Box<xianlu_core::signoff::Receipt>),
}

/// One order from a tracking link; at the door, its holder signs for it here.
#[component]
fn LinkPage(base: String, token: String, lang: Signal<Lang>) -> Element {
    let screen = use_signal(TrackingScreen::default);
    let roads = use_signal(Roads::default);
    let mut stage = use_signal(|| LinkStage::Watching);
    let api = use_hook(move || {
        let api = ApiClient::for_tracking_link(&base, &token).ok();
        match &api {
            Some(api) => follow_screen(api.clone(), None, screen, roads),
            None => {
                let mut screen = screen;
                screen.write().phase = Phase::NotFound;
            }
        }
        api
    });
    let l = lang();
    let order = screen.read().view.as_ref().map(|v| (v.order.id, v.status));
    rsx! {
        main { class: "xl-page",
            Bar { lang }
            match (stage(), api.clone(), order) {
                (LinkStage::Signing, Some(api), Some((id, _))) => rsx! {
                    installed::SignOffScreen {
                        api: installed::Client(api), id, lang: l,
                        on_back: move |_| stage.set(LinkStage::Watching),
                        on_signed: move |receipt| stage.set(LinkStage::Signed(Box::new(receipt))),
                    }
                },
                (LinkStage::Signed(receipt), Some(api), _) => rsx! {
                    installed::ReceiptScreen {
                        api: installed::Client(api), receipt: *receipt, lang: l,
                        on_done: move |_| stage.set(LinkStage::Watching),
                    }
                },
                (_, _, status) => rsx! {
                    if matches!(status, Some((_, xianlu_domain::Status::Delivering))) {
                        button { id: "xl-sign", class: "xl-primary", onclick: move |_| stage.set(LinkStage::Signing), {l.t(Key::SignFor)} }
                    }
                    OrderScreen { screen: screen(), roads: roads(), lang: l }
                },
            }
        }
    }
}

/// Follows an order (a link's, or a logged-in customer's own) into `screen`,
/// fetching the map's roads once the destination is known.
pub(crate) fn follow_screen(
    api: ApiClient,
    order: Option<xianlu_domain::OrderId>,
    mut screen: Signal<TrackingScreen>,
    mut roads: Signal<Roads>,
) {
    let map_api = api.clone();
    let route_api = api.clone();
    let mut roads_box: Option<[f64; 4]> = None;
    let mut routed_from: Option<xianlu_domain::wire::LatLng> = None;
    let publish = move |s: &TrackingScreen| {
        // The map's roads around the destination and the courier, again
        // whenever the courier drives out of the box already fetched.
        let inside = |b: [f64; 4], p: xianlu_domain::wire::LatLng| {
            (b[0]..=b[2]).contains(&p.lng) && (b[1]..=b[3]).contains(&p.lat)
        };
        let covered = roads_box.is_some_and(|b| s.map.position.is_none_or(|p| inside(b, p)));
        if let (false, Some(destination)) = (covered, s.map.destination) {
            let api = map_api.clone();
            let points: Vec<_> = std::iter::once(destination).chain(s.map.position).collect();
            let frame = xianlu_ui::map::frame(&points, 0.6);
            roads_box = frame;
            spawn(async move {
                let Some(bbox) = frame else { return };
                // Side streets when the map is a neighbourhood, main roads when it is a district.
                let span = (bbox[2] - bbox[0]).max(bbox[3] - bbox[1]);
                let zoom = if span < 0.03 {
                    16
                } else if span < 0.08 {
                    15
                } else {
                    14
                };
                if let Ok(tile) = api.map_roads(bbox, zoom).await {
                    let mut r = roads.write();
                    r.lines = xianlu_core::tracking::road_lines(&tile);
                    r.attribution = tile.attribution.clone();
                    r.tile_url = tile.tile_url.clone();
                }
            });
        }
        // The road left to the door, again whenever the courier has moved on.
        let out = s.view.as_ref().is_some_and(|v| v.status == xianlu_domain::Status::Delivering);
        if let (true, Some(from), Some(to)) = (out, s.map.position, s.map.destination) {
            let moved = routed_from.is_none_or(|p| xianlu_core::location::distance_m(p, from) > 50.0);
            if moved {
                routed_from = Some(from);
                let api = route_api.clone();
                spawn(async move {
                    if let Ok(line) = api.map_route(from, to).await {
                        roads.write().route = line;
                    }
                });
            }
        } else if !out && !roads.peek().route.is_empty() {
            roads.write().route.clear();
        }
        screen.set(s.clone());
    };
    spawn(async move {
        match order {
            Some(id) => xianlu_core::track::follow_order(api, id, Backoff::default(), publish).await,
            None => follow_link(api, Backoff::default(), publish).await,
        }
    });
}

/// The order screen for whatever phase it is in.
#[component]
pub(crate) fn OrderScreen(screen: TrackingScreen, roads: Roads, lang: Lang) -> Element {
    let mut now = use_signal(chrono::Utc::now);
    use_hook(move || {
        // "Last seen N s ago" keeps counting between positions.
        spawn(async move {
            loop {
                xianlu_core::rt::sleep(Duration::from_secs(5)).await;
                now.set(chrono::Utc::now());
            }
        });
    });
    let l = lang;
    rsx! {
        match &screen.phase {
            Phase::Loading => rsx! { p { id: "xl-loading", class: "xl-banner", {l.t(Key::Loading)} } },
            Phase::Expired => rsx! { p { id: "xl-expired", class: "xl-banner xl-banner-bad", {l.t(Key::Expired)} } },
            Phase::NotFound => rsx! { p { id: "xl-not-found", class: "xl-banner xl-banner-bad", {l.t(Key::NotFound)} } },
            Phase::Unreachable { attempt, .. } => rsx! {
                p { id: "xl-unreachable", class: "xl-banner", "{l.t(Key::Unreachable)} ({attempt})…" }
            },
            Phase::Ready => rsx! { Tracked { screen: screen.clone(), roads, lang: l, now: now() } },
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
        route: if roads.route.is_empty() { map.remaining_route.clone() } else { roads.route.clone() },
        courier: map.position,
        destination: map.destination,
        stops: Vec::new(),
        attribution: roads.attribution.clone(),
        tile_url: roads.tile_url.clone(),
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
