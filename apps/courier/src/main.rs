//! The courier app: the day's stops in the planner's order, the map, and
//! one tap (plus a confirmation) for each step of a delivery. Components
//! render the client core's [`CourierDay`] and call its [`CourierSession`];
//! the core does every request and keeps every change on the device until
//! the server has it. Platform differences live in [`platform`].

mod platform;
mod screens;

use dioxus::prelude::*;
use xianlu_core::ApiClient;
use xianlu_core::courier::{CourierSession, SessionSettings};
use xianlu_ui::signoff::LogInForm;
use xianlu_ui::{Lang, STYLE};

fn main() {
    #[cfg(feature = "desktop")]
    {
        use dioxus::desktop::{Config, LogicalSize, WindowBuilder};
        // A phone-sized window: the phone app's stand-in.
        let window = WindowBuilder::new()
            .with_title("鲜路 · 骑手 Xianlu courier")
            .with_inner_size(LogicalSize::new(420.0, 860.0));
        dioxus::LaunchBuilder::desktop().with_cfg(Config::new().with_window(window)).launch(App);
    }
    #[cfg(not(feature = "desktop"))]
    dioxus::launch(App);
}

/// The running session as a component property (compared by courier).
#[derive(Clone)]
pub(crate) struct Session(pub(crate) CourierSession);

impl PartialEq for Session {
    fn eq(&self, other: &Self) -> bool {
        self.0.courier() == other.0.courier()
    }
}

/// The store key of the saved login (natively: in the app's own SQLite file).
pub(crate) const SAVED_SESSION: &str = "courier.session";

fn default_server() -> String {
    #[cfg(feature = "web")]
    if let Some(origin) = web_sys::window().and_then(|w| w.location().origin().ok()) {
        return origin;
    }
    std::env::var("XIANLU_SERVER").unwrap_or_else(|_| "http://127.0.0.1:8080".into())
}

/// Starts the day of a logged-in client and keeps the login for the next start.
fn start(api: ApiClient) -> Result<Session, String> {
    let store = platform::open_store()?;
    if let Some(saved) = api.session().and_then(|s| serde_json::to_string(&s).ok()) {
        store.set_meta(SAVED_SESSION, &saved).map_err(|e| e.to_string())?;
    }
    CourierSession::start(api, store, SessionSettings::default()).map(Session).map_err(|e| e.to_string())
}

/// The login an earlier run kept: the app opens on the day even with no network.
fn restore() -> Option<Session> {
    let store = platform::open_store().ok()?;
    // Empty once the courier logged out.
    let saved: xianlu_core::Session = serde_json::from_str(&store.meta(SAVED_SESSION).ok()??).ok()?;
    let server = store.meta("courier.server").ok()??;
    let api = ApiClient::new(&server).ok()?;
    api.restore(saved);
    start(api).ok()
}

#[component]
fn App() -> Element {
    let lang = use_signal(Lang::default);
    let mut session: Signal<Option<Session>> = use_signal(|| if cfg!(feature = "web") { None } else { restore() });
    rsx! {
        style { {STYLE} }
        main { class: "xl-page",
            match session() {
                None => rsx! { Bar { lang } LogIn { session, lang: lang() } },
                Some(s) => rsx! { screens::Day { session: s, lang, on_out: move |_| session.set(None) } },
            }
        }
    }
}

/// The bar at the top: the name and the language switch.
#[component]
pub(crate) fn Bar(lang: Signal<Lang>, children: Element) -> Element {
    let l = lang();
    rsx! {
        div { class: "xl-bar",
            h1 { "鲜路 · 骑手" }
            {children}
            button { id: "xl-lang", onclick: move |_| lang.set(l.other()), {l.other().name()} }
        }
    }
}

#[component]
fn LogIn(session: Signal<Option<Session>>, lang: Lang) -> Element {
    let mut error = use_signal(|| None::<String>);
    let mut busy = use_signal(|| false);
    let submit = move |(server, username, password): (String, String, String)| {
        busy.set(true);
        spawn(async move {
            let result = async {
                let api = ApiClient::new(&server).map_err(|e| e.to_string())?;
                api.login(&username, &password).await.map_err(|e| e.to_string())?;
                if let Ok(store) = platform::open_store() {
                    let _ = store.set_meta("courier.server", &server);
                }
                start(api)
            }
            .await;
            match result {
                Ok(s) => session.set(Some(s)),
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    rsx! { LogInForm { lang, server: default_server(), busy: busy(), error: error(), on_submit: submit } }
}
