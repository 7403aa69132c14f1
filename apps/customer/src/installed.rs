//! The installed app: log in, my orders, one order live, sign-off on this
//! screen with a receipt that can be checked later. Every call goes through
//! the client core; these components render and dispatch.

use dioxus::prelude::*;
use xianlu_core::api::OrderQuery;
use xianlu_core::signoff::{Receipt, ReceiptCheck, SignOff, check_receipt};
use xianlu_core::substitute;
use xianlu_core::track::TrackingScreen;
use xianlu_core::{ApiClient, CoreError};
use xianlu_domain::aftersales::{AfterSalesKind, AfterSalesLine, NewAfterSales};
use xianlu_domain::{OrderId, Status};
use xianlu_ui::Lang;
use xianlu_ui::i18n::Key;
use xianlu_ui::signoff::{LogInForm, PAD_HEIGHT, PAD_WIDTH, SignOffForm};

use crate::{Bar, OrderScreen, Roads, follow_screen};

#[derive(Debug, Clone, PartialEq)]
enum View {
    LogIn,
    Orders,
    Order(OrderId),
    SignOff(OrderId),
    Receipt(Box<Receipt>),
    AfterSales(OrderId),
}

fn default_server() -> String {
    #[cfg(feature = "web")]
    if let Some(origin) = web_sys::window().and_then(|w| w.location().origin().ok()) {
        return origin;
    }
    std::env::var("XIANLU_SERVER").unwrap_or_else(|_| "http://127.0.0.1:8080".into())
}

#[component]
pub fn Installed(lang: Signal<Lang>) -> Element {
    let api: Signal<Option<ApiClient>> = use_signal(|| None);
    let mut view = use_signal(|| View::LogIn);
    let l = lang();
    let current = view();
    rsx! {
        main { class: "xl-page",
            Bar { lang }
            match (current, api()) {
                (View::LogIn, _) | (_, None) => rsx! { LogIn { api, view, lang: l } },
                (View::Orders, Some(client)) => rsx! { Orders { api: Client(client), view, lang: l } },
                (View::Order(id), Some(client)) => rsx! { OwnOrder { api: Client(client), id, view, lang: l } },
                (View::SignOff(id), Some(client)) => rsx! {
                    SignOffScreen {
                        api: Client(client), id, lang: l,
                        on_back: move |_| view.set(View::Order(id)),
                        on_signed: move |receipt| view.set(View::Receipt(Box::new(receipt))),
                    }
                },
                (View::AfterSales(id), Some(client)) => rsx! { AfterSalesScreen { api: Client(client), id, view, lang: l } },
                (View::Receipt(receipt), Some(client)) => rsx! {
                    ReceiptScreen { api: Client(client), receipt: *receipt, lang: l, on_done: move |_| view.set(View::Orders) }
                },
            }
        }
    }
}

/// The API client as a component property (one client, compared by identity of its server).
#[derive(Clone)]
pub(crate) struct Client(pub(crate) ApiClient);

impl PartialEq for Client {
    fn eq(&self, other: &Self) -> bool {
        self.0.base() == other.0.base()
    }
}

#[component]
fn LogIn(api: Signal<Option<ApiClient>>, view: Signal<View>, lang: Lang) -> Element {
    let mut error = use_signal(|| None::<String>);
    let mut busy = use_signal(|| false);
    let submit = move |(server, username, password): (String, String, String)| {
        busy.set(true);
        spawn(async move {
            let result = async {
                let client = ApiClient::new(&server)?;
                client.login(&username, &password).await?;
                Ok::<_, CoreError>(client)
            }
            .await;
            match result {
                Ok(client) => {
                    api.set(Some(client));
                    view.set(View::Orders);
                }
                Err(e) => error.set(Some(e.to_string())),
            }
            busy.set(false);
        });
    };
    rsx! { LogInForm { lang, server: default_server(), busy: busy(), error: error(), on_submit: submit } }
}

#[component]
fn Orders(api: Client, view: Signal<View>, lang: Lang) -> Element {
    let client = api.0.clone();
    let orders = use_resource(move || {
        let client = client.clone();
        async move { client.orders(&OrderQuery { limit: Some(50), ..OrderQuery::default() }).await }
    });
    let mut view = view;
    rsx! {
        h2 { {lang.t(Key::MyOrders)} }
        match &*orders.read() {
            None => rsx! { p { class: "xl-banner", {lang.t(Key::Loading)} } },
            Some(Err(e)) => rsx! { p { class: "xl-banner xl-banner-bad", "{e}" } },
            Some(Ok(page)) => rsx! {
                ul { id: "xl-orders", class: "xl-list",
                    for order in page.items.iter() {
                        li { key: "{order.id}", onclick: { let id = order.id; move |_| view.set(View::Order(id)) },
                            span { "{order.number}" }
                            span { class: "xl-status xl-status-{order.status.as_str()}", {lang.status(order.status)} }
                        }
                    }
                }
            },
        }
    }
}

#[component]
fn OwnOrder(api: Client, id: OrderId, view: Signal<View>, lang: Lang) -> Element {
    let screen = use_signal(TrackingScreen::default);
    let roads = use_signal(Roads::default);
    let client = api.0.clone();
    use_hook(move || follow_screen(client, Some(id), screen, roads));
    let mut view = view;
    // Substitutes the merchant offers for short lines, until their answer-by time.
    let offers = screen.read().view.as_ref().map(|v| substitute::offers(&v.order)).unwrap_or_default();
    let mut answer_error = use_signal(|| None::<String>);
    let answer_api = api.0.clone();
    let answer = use_callback(move |(offer, accept): (substitute::Offer, bool)| {
        let client = answer_api.clone();
        spawn(async move {
            if let Err(e) = substitute::answer(&client, &offer, accept).await {
                answer_error.set(Some(e.to_string()));
            }
        });
    });
    let delivering = screen.read().view.as_ref().is_some_and(|v| v.status == Status::Delivering);
    let signed = screen.read().view.as_ref().is_some_and(|v| v.status == Status::Signed);
    rsx! {
        button { onclick: move |_| view.set(View::Orders), {lang.t(Key::Back)} }
        if delivering {
            button { id: "xl-sign", class: "xl-primary", onclick: move |_| view.set(View::SignOff(id)), {lang.t(Key::SignFor)} }
        }
        for offer in offers {
            div { key: "{offer.line_no}", class: "xl-banner xl-substitute",
                p { "{offer.short} · {lang.t(Key::SubstituteOffered)} {offer.offered} {offer.quantity} {lang.unit(offer.unit)} · {lang.t(Key::AnswerBy)} {xianlu_ui::timeline::clock(offer.respond_by)}" }
                button { class: "xl-primary xl-accept-substitute", onclick: { let offer = offer.clone(); move |_| answer((offer.clone(), true)) }, {lang.t(Key::Accept)} }
                button { class: "xl-decline-substitute", onclick: move |_| answer((offer.clone(), false)), {lang.t(Key::Decline)} }
            }
        }
        if let Some(message) = answer_error() { p { class: "xl-banner xl-banner-bad", "{message}" } }
        if signed {
            button { id: "xl-after-sales", class: "xl-primary", onclick: move |_| view.set(View::AfterSales(id)), {lang.t(Key::AfterSales)} }
        }
        OrderScreen { screen: screen(), roads: roads(), lang }
    }
}

const KINDS: [AfterSalesKind; 3] =
    [AfterSalesKind::QualityComplaint, AfterSalesKind::ShortageFoundLater, AfterSalesKind::Exchange];

#[component]
fn AfterSalesScreen(api: Client, id: OrderId, view: Signal<View>, lang: Lang) -> Element {
    let client = api.0.clone();
    let mut kind = use_signal(|| AfterSalesKind::QualityComplaint);
    let mut amounts: Signal<Vec<(u16, String, i64)>> = use_signal(Vec::new);
    let mut note = use_signal(String::new);
    let mut error = use_signal(|| None::<String>);
    let mut sent = use_signal(|| false);
    let mut matters = use_signal(Vec::new);
    let mut photos: Signal<Vec<Vec<u8>>> = use_signal(Vec::new);
    let loader = client.clone();
    use_hook(move || {
        spawn(async move {
            if let Ok(view) = loader.order(id).await {
                amounts.set(view.order.lines.iter().map(|l| (l.line_no, l.name.clone(), 0)).collect());
            }
            if let Ok(found) = loader.after_sales(id).await {
                matters.set(found);
            }
        });
    });
    let key = use_hook(|| format!("after-sales-{id}-{}", chrono::Utc::now().timestamp_micros()));
    let submit = move |_| {
        let client = client.clone();
        let key = key.clone();
        spawn(async move {
            let new = NewAfterSales {
                kind: kind(),
                lines: amounts()
                    .iter()
                    .filter(|(_, _, b)| *b > 0)
                    .map(|(n, _, b)| AfterSalesLine { line_no: *n, base: *b })
                    .collect(),
                note: note(),
                photos: Vec::new(),
            };
            let pictures = photos();
            let sent_matter = xianlu_core::upload::open_after_sales_with_photos(
                &client,
                id,
                new,
                &pictures,
                chrono::Utc::now(),
                &key,
            );
            match sent_matter.await {
                Ok(matter) => {
                    sent.set(true);
                    matters.write().push(matter);
                }
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    let mut view = view;
    rsx! {
        button { onclick: move |_| view.set(View::Order(id)), {lang.t(Key::Back)} }
        h2 { {lang.t(Key::AfterSales)} }
        div { class: "xl-form",
            select {
                id: "xl-as-kind",
                onchange: move |e| kind.set(KINDS.get(e.value().parse::<usize>().unwrap_or(0)).copied().unwrap_or(AfterSalesKind::QualityComplaint)),
                for (n, k) in KINDS.iter().enumerate() {
                    option { value: "{n}", selected: kind() == *k, {lang.after_sales(*k)} }
                }
            }
            for (i, (line_no, name, base)) in amounts().into_iter().enumerate() {
                label { key: "{line_no}", "{name}"
                    input {
                        class: "xl-as-amount", r#type: "number", min: "0", value: "{base}",
                        oninput: move |e| {
                            if let Some(row) = amounts.write().get_mut(i) {
                                row.2 = e.value().parse().unwrap_or(0);
                            }
                        }
                    }
                }
            }
            label { {lang.t(Key::Note)} textarea { id: "xl-as-note", value: "{note}", oninput: move |e| note.set(e.value()) } }
            label { {lang.t(Key::Photos)} " ({photos.read().len()})"
                input {
                    id: "xl-as-photo", r#type: "file", accept: "image/*", multiple: true,
                    onchange: move |evt| async move {
                        for file in evt.files() {
                            if let Ok(bytes) = file.read_bytes().await {
                                photos.write().push(bytes.to_vec());
                            }
                        }
                    }
                }
            }
            button { id: "xl-as-submit", class: "xl-primary", disabled: sent(), onclick: submit, {lang.t(Key::Submit)} }
            if sent() {
                p { id: "xl-as-sent", class: "xl-banner xl-banner-good", {lang.t(Key::Submitted)} }
            }
            if let Some(message) = error() {
                p { class: "xl-error", "{message}" }
            }
        }
        h3 { {lang.t(Key::Matters)} }
        ul { id: "xl-matters", class: "xl-list",
            for matter in matters.read().iter() {
                li { key: "{matter.id}", span { {lang.after_sales(matter.kind)} } span { class: "xl-muted", "{matter.note}" } }
            }
        }
    }
}

/// Sign-off on this screen: each line accepted or partly refused, a drawn
/// signature, then the receipt. Used by the app and by a tracking link at the door.
#[component]
pub(crate) fn SignOffScreen(
    api: Client,
    id: OrderId,
    lang: Lang,
    on_back: EventHandler<()>,
    on_signed: EventHandler<Receipt>,
) -> Element {
    let client = api.0.clone();
    let mut sign_off: Signal<Option<SignOff>> = use_signal(|| None);
    let mut error = use_signal(|| None::<String>);
    let loader = client.clone();
    use_hook(move || {
        spawn(async move {
            match loader.order(id).await.and_then(|v| SignOff::for_order(&v, PAD_WIDTH, PAD_HEIGHT)) {
                Ok(s) => sign_off.set(Some(s)),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    });
    let key = use_hook(|| uuid_key(id));
    let submit = move |_| {
        let client = client.clone();
        let key = key.clone();
        spawn(async move {
            let Some(s) = sign_off() else { return };
            match s.submit(&client, chrono::Utc::now(), &key).await {
                Ok(receipt) => on_signed.call(receipt),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    let Some(current) = sign_off() else {
        return rsx! {
            button { onclick: move |_| on_back.call(()), {lang.t(Key::Back)} }
            if let Some(message) = error() { p { class: "xl-error", "{message}" } } else { p { {lang.t(Key::Loading)} } }
        };
    };
    rsx! {
        button { onclick: move |_| on_back.call(()), {lang.t(Key::Back)} }
        h2 { "{current.order_number}" }
        SignOffForm { sign_off, error, lang }
        button { id: "xl-confirm", class: "xl-primary", disabled: !current.ready(), onclick: submit, {lang.t(Key::Confirm)} }
        if let Some(message) = error() {
            p { class: "xl-error", "{message}" }
        }
    }
}

#[component]
pub(crate) fn ReceiptScreen(api: Client, receipt: Receipt, lang: Lang, on_done: EventHandler<()>) -> Element {
    let mut check = use_signal(|| None::<ReceiptCheck>);
    let shown = receipt.clone();
    let verify = move |_| {
        let client = api.0.clone();
        let receipt = receipt.clone();
        spawn(async move {
            if let Ok(found) = check_receipt(&client, &receipt).await {
                check.set(Some(found));
            }
        });
    };
    let yuan = |fen: i64| {
        let text = format!("¥{:.2}", fen.abs() as f64 / 100.0);
        match (fen < 0, lang) {
            (false, _) => text,
            (true, Lang::Zh) => format!("退 {text}"),
            (true, Lang::En) => format!("{text} back"),
        }
    };
    rsx! {
        h2 { {lang.t(Key::Receipt)} }
        dl { class: "xl-order xl-order-times",
            dt { "#" } dd { "{shown.order_number}" }
            dt { {lang.t(Key::Charge)} } dd { {yuan(shown.charge_fen)} }
            dt { {lang.t(Key::Balance)} } dd { {yuan(shown.balance_fen)} }
            dt { {lang.t(Key::Hash)} } dd { id: "xl-receipt-hash", class: "xl-hash", "{shown.signature_sha256}" }
        }
        button { id: "xl-verify", class: "xl-primary", onclick: verify, {lang.t(Key::Verify)} }
        match check() {
            Some(ReceiptCheck::Verified) => rsx! { p { id: "xl-verified", class: "xl-banner xl-banner-good", {lang.t(Key::Verified)} } },
            Some(ReceiptCheck::Missing) => rsx! { p { class: "xl-banner xl-banner-bad", {lang.t(Key::Missing)} } },
            Some(ReceiptCheck::Altered) => rsx! { p { class: "xl-banner xl-banner-bad", {lang.t(Key::Altered)} } },
            None => rsx! {},
        }
        button { id: "xl-receipt-done", onclick: move |_| on_done.call(()), {lang.t(Key::Back)} }
    }
}

/// One idempotency key per sign-off screen of an order.
fn uuid_key(id: OrderId) -> String {
    format!("sign-{id}-{}", chrono::Utc::now().timestamp_micros())
}
