//! The merchant app's screens, Dioxus in the Tauri webview: the live order
//! board, an order's detail with its evidence and the actions the role
//! allows, the alerts, and the warehouse clerk's pick list. Every call goes
//! through [`bridge`] to the native side, which does it with the client core.

mod bridge;

use dioxus::prelude::*;
use serde_json::json;
use xianlu_core::api::Me;
use xianlu_core::board::{BoardFilter, Card, ColumnView};
use xianlu_core::office::{OfficeView, OrderDetail};
use xianlu_core::substitute::{propose_substitute, substitutes};
use xianlu_domain::evidence::EvidenceRecord;
use xianlu_domain::operations::{Alert, CourierStatus};
use xianlu_domain::wire::{LatLng, OrderView, StockLevel};
use xianlu_domain::{Command, CourierId, Dimension, Order, OrderId, ShortageResolution, Status, Unit, WarehouseId};
use xianlu_ui::i18n::Key;
use xianlu_ui::order::window_text;
use xianlu_ui::signoff::LogInForm;
use xianlu_ui::timeline::clock;
use xianlu_ui::{Lang, MapLayers, MapView, OrderCard, STYLE, Timeline};

use crate::bridge::{UiError, call};

const MERCHANT_STYLE: &str = r#"
.xl-page { max-width: none; }
.xl-board { display: grid; grid-template-columns: repeat(7, minmax(104px, 1fr)); gap: 6px; align-items: start; overflow-x: auto; }
.xl-column { background: #e9eee8; border-radius: 10px; padding: 6px; min-height: 120px; }
.xl-column h3 { font-size: 14px; margin: 4px; display: flex; justify-content: space-between; }
.xl-card { background: #fff; border-radius: 8px; padding: 6px; margin: 6px 0; cursor: pointer; font-size: 12px; box-shadow: 0 1px 2px rgba(0,0,0,.08); overflow-wrap: anywhere; }
.xl-card strong { display: block; }
.xl-card .xl-alert-count { background: #c0392b; color: #fff; border-radius: 10px; padding: 0 6px; float: right; }
.xl-filters { display: flex; gap: 8px; margin: 8px 0; flex-wrap: wrap; }
.xl-filters input, .xl-filters select { padding: 6px; font-size: 14px; }
.xl-tabs button { margin-right: 6px; }
.xl-split { display: grid; grid-template-columns: minmax(0, 1fr) 380px; gap: 12px; }
.xl-alert { background: #fff; border-radius: 8px; padding: 8px; margin: 6px 0; border-left: 4px solid #c0392b; }
.xl-alert-done { border-left-color: #cfd6cc; opacity: .7; }
.xl-evidence img { max-width: 100%; border: 1px solid #cfd6cc; border-radius: 6px; background: #fff; }
.xl-pick { background: #fff; border-radius: 10px; padding: 16px; margin: 10px 0; font-size: 20px; }
.xl-pick input { font-size: 22px; width: 8em; padding: 8px; }
.xl-pick button { font-size: 20px; padding: 12px 18px; margin: 6px 6px 0 0; }
.xl-courier { align-items: center; }
.xl-courier-on { outline: 2px solid var(--xl-green); }
.xl-map svg { max-height: 52vh; }
"#;

fn main() {
    dioxus::launch(App);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tab {
    Board,
    Alerts,
    Couriers,
}

#[component]
fn App() -> Element {
    let mut lang = use_signal(Lang::default);
    let mut me: Signal<Option<Me>> = use_signal(|| None);
    let mut error = use_signal(|| None::<String>);
    let mut busy = use_signal(|| false);
    let server = use_resource(|| async { call::<String>("default_server", json!({})).await.ok() });
    let l = lang();
    let login = move |(server, username, password): (String, String, String)| {
        busy.set(true);
        spawn(async move {
            match call::<Me>("login", json!({"server": server, "username": username, "password": password})).await {
                Ok(who) => me.set(Some(who)),
                Err(e) => error.set(Some(e.message)),
            }
            busy.set(false);
        });
    };
    rsx! {
        style { {STYLE} }
        style { {MERCHANT_STYLE} }
        main { class: "xl-page",
            div { class: "xl-bar",
                h1 { "鲜路 · 商家" }
                if let Some(who) = me() { span { id: "xl-who", class: "xl-muted", "{who.username} · {who.role}" } }
                button { id: "xl-lang", onclick: move |_| lang.set(l.other()), {l.other().name()} }
            }
            match me() {
                None => match server.read().clone() {
                    Some(found) => rsx! {
                        LogInForm {
                            lang: l, server: found.unwrap_or_else(|| "http://127.0.0.1:8080".to_owned()),
                            busy: busy(), error: error(), on_submit: login,
                        }
                    },
                    None => rsx! { p { class: "xl-muted", {l.t(Key::Loading)} } },
                },
                Some(who) => rsx! { Office { me: who, lang: l } },
            }
        }
    }
}

/// The office: follows the native side's office session, one long poll after another.
#[component]
fn Office(me: Me, lang: Lang) -> Element {
    let mut office: Signal<Option<OfficeView>> = use_signal(|| None);
    let filter = use_signal(BoardFilter::default);
    let mut problem = use_signal(|| None::<String>);
    let tab = use_signal(|| Tab::Board);
    let selected = use_signal(|| None::<OrderId>);
    // The board follows the office; a new filter asks again at once.
    use_effect(move || {
        let wanted = filter();
        spawn(async move {
            let mut since = 0;
            loop {
                if filter.peek().clone() != wanted {
                    return;
                }
                match call::<OfficeView>("office", json!({"filter": wanted, "since": since})).await {
                    Ok(view) => {
                        since = view.revision;
                        if filter.peek().clone() == wanted {
                            office.set(Some(view));
                        }
                        problem.set(None);
                    }
                    Err(e) => {
                        problem.set(Some(e.to_string()));
                        xianlu_core::rt::sleep(std::time::Duration::from_secs(2)).await;
                    }
                }
            }
        });
    });
    let clerk = me.role == "warehouse_clerk";
    let Some(current) = office() else {
        return rsx! { p { class: "xl-banner", {lang.t(Key::Loading)} } };
    };
    let open_alerts = current.alerts.iter().filter(|a| a.cleared_at.is_none() && a.acknowledged_at.is_none()).count();
    let mut tab = tab;
    rsx! {
        if current.behind {
            p { id: "xl-behind", class: "xl-banner", "{lang.t(Key::Behind)} · {current.waiting}" }
        }
        if let Some(message) = problem().or(current.problem.clone()) {
            p { class: "xl-banner xl-banner-bad", "{message}" }
        }
        if clerk {
            PickList { cards: current.pick_list.clone(), lang }
        } else {
            nav { class: "xl-tabs",
                button { id: "xl-tab-board", class: if tab() == Tab::Board { "xl-tab xl-tab-on" } else { "xl-tab" },
                    onclick: move |_| tab.set(Tab::Board), {lang.t(Key::Board)} }
                button { id: "xl-tab-alerts", class: if tab() == Tab::Alerts { "xl-tab xl-tab-on" } else { "xl-tab" },
                    onclick: move |_| tab.set(Tab::Alerts), "{lang.t(Key::Alerts)} ({open_alerts})" }
                button { id: "xl-tab-couriers", class: if tab() == Tab::Couriers { "xl-tab xl-tab-on" } else { "xl-tab" },
                    onclick: move |_| tab.set(Tab::Couriers), {lang.t(Key::Couriers)} }
            }
            div { class: "xl-split",
                div {
                    match tab() {
                        Tab::Board => rsx! { BoardView { columns: current.columns.clone(), filter, selected, lang } },
                        Tab::Alerts => rsx! { AlertList { alerts: current.alerts.clone(), selected, lang } },
                        Tab::Couriers => rsx! { Couriers { revision: current.revision, columns: current.columns.clone(), lang } },
                    }
                }
                div {
                    if let Some(id) = selected() {
                        // Loaded again whenever the order changes.
                        Detail { key: "{id}-{version_of(&current.columns, id)}", id, lang }
                    }
                }
            }
        }
    }
}

/// The version of an order on the board (0 if it is not there).
fn version_of(columns: &[ColumnView], id: OrderId) -> u64 {
    columns.iter().flat_map(|c| c.cards.iter()).find(|c| c.order_id == id).map_or(0, |c| c.version)
}

#[component]
fn BoardView(
    columns: Vec<ColumnView>,
    filter: Signal<BoardFilter>,
    selected: Signal<Option<OrderId>>,
    lang: Lang,
) -> Element {
    let mut filter = filter;
    let mut selected = selected;
    let cards: Vec<&Card> = columns.iter().flat_map(|c| c.cards.iter()).collect();
    let mut couriers: Vec<CourierId> = cards.iter().filter_map(|c| c.courier_id).collect();
    couriers.sort();
    couriers.dedup();
    let mut warehouses: Vec<WarehouseId> = cards.iter().map(|c| c.warehouse_id).collect();
    warehouses.sort();
    warehouses.dedup();
    // The promised window's filter: from–to on today's date, on this computer's clock.
    let mut from = use_signal(String::new);
    let mut to = use_signal(String::new);
    let mut window = move || {
        let today = chrono::Local::now().date_naive();
        let at = |t: &str| {
            chrono::NaiveTime::parse_from_str(t, "%H:%M")
                .ok()
                .and_then(|t| today.and_time(t).and_local_timezone(chrono::Local).single())
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        filter.write().window = match (at(&from()), at(&to())) {
            (Some(start), Some(end)) if start < end => Some(xianlu_domain::TimeWindow { start, end }),
            _ => None,
        };
    };
    rsx! {
        div { class: "xl-filters",
            input {
                id: "xl-search", placeholder: lang.t(Key::Search),
                oninput: move |e| filter.write().search = e.value(),
            }
            select {
                id: "xl-filter-warehouse",
                onchange: move |e| filter.write().warehouse = e.value().parse().ok(),
                option { value: "", {lang.t(Key::AllWarehouses)} }
                for w in warehouses {
                    option { value: "{w}", {w.to_string()[..8].to_owned()} }
                }
            }
            label { class: "xl-muted", {lang.t(Key::From)}
                input { id: "xl-filter-from", r#type: "time", oninput: move |e| { from.set(e.value()); window(); } }
            }
            label { class: "xl-muted", {lang.t(Key::To)}
                input { id: "xl-filter-to", r#type: "time", oninput: move |e| { to.set(e.value()); window(); } }
            }
            select {
                id: "xl-filter-courier",
                onchange: move |e| filter.write().courier = e.value().parse().ok(),
                option { value: "", {lang.t(Key::AllCouriers)} }
                for c in couriers {
                    option { value: "{c}", {c.to_string()[..8].to_owned()} }
                }
            }
            select {
                id: "xl-filter-status",
                onchange: move |e| filter.write().status = serde_json::from_value(json!(e.value())).ok(),
                option { value: "", {lang.t(Key::AllStatuses)} }
                for s in Status::ALL {
                    option { value: "{s.as_str()}", {lang.status(s)} }
                }
            }
        }
        div { id: "xl-board", class: "xl-board",
            for column in columns {
                section { class: "xl-column", key: "{column.column:?}", "data-column": "{column.column:?}",
                    h3 { span { {lang.column(column.column)} } span { class: "xl-count", "{column.count}" } }
                    for card in column.cards.iter() {
                        div { class: "xl-card", key: "{card.order_id}", "data-order": "{card.number}",
                            onclick: { let id = card.order_id; move |_| selected.set(Some(id)) },
                            if card.alerts > 0 { span { class: "xl-alert-count", "{card.alerts}" } }
                            strong { "{card.number}" }
                            span { "{card.customer}" }
                            p { class: "xl-muted", "{window_text(&card.window)} · ¥{card.charge_fen as f64 / 100.0:.2}" }
                        }
                    }
                }
            }
        }
    }
}

#[component]
fn AlertList(alerts: Vec<Alert>, selected: Signal<Option<OrderId>>, lang: Lang) -> Element {
    let mut selected = selected;
    let mut error = use_signal(|| None::<String>);
    rsx! {
        if alerts.is_empty() {
            p { class: "xl-muted", {lang.t(Key::NoAlerts)} }
        }
        if let Some(message) = error() { p { class: "xl-error", "{message}" } }
        ul { id: "xl-alerts", class: "xl-list",
            for alert in alerts {
                li {
                    key: "{alert.id}",
                    class: if alert.cleared_at.is_some() || alert.acknowledged_at.is_some() { "xl-alert xl-alert-done" } else { "xl-alert" },
                    "data-rule": "{alert.rule:?}",
                    div { onclick: { let id = alert.order_id; move |_| selected.set(Some(id)) },
                        strong { "{alert.order_number} · {lang.rule(alert.rule)} · {alert.severity:?}" }
                        p { class: "xl-muted", "{alert.reason}" }
                        p { class: "xl-muted", "{clock(alert.raised_at)}" }
                    }
                    if alert.cleared_at.is_none() && alert.acknowledged_at.is_none() {
                        button {
                            class: "xl-ack",
                            onclick: { let id = alert.id; move |_| { spawn(async move {
                                if let Err(e) = call::<()>("acknowledge", json!({"alert": id})).await {
                                    error.set(Some(e.to_string()));
                                }
                            }); } },
                            {lang.t(Key::Acknowledge)}
                        }
                    } else if alert.acknowledged_at.is_some() {
                        span { class: "xl-muted", {lang.t(Key::Acknowledged)} }
                    } else {
                        span { class: "xl-muted", {lang.t(Key::Cleared)} }
                    }
                }
            }
        }
    }
}

/// Sends a change to an order (through the core's outbox on the native side).
async fn send(id: OrderId, command: Command, version: Option<u64>) -> Result<(), UiError> {
    call::<()>("command", json!({"change": {"id": id, "command": command, "expectedVersion": version}})).await
}

#[component]
fn Detail(id: OrderId, lang: Lang) -> Element {
    let detail = use_resource(move || async move { call::<OrderDetail>("order", json!({"id": id})).await });
    let mut error = use_signal(|| None::<String>);
    let mut courier = use_signal(String::new);
    let mut reason = use_signal(String::new);
    let mut amount = use_signal(String::new);
    let couriers = use_resource(|| async { call::<Vec<CourierStatus>>("couriers", json!({})).await });
    let act = move |command: Command, version: u64| {
        spawn(async move {
            if let Err(e) = send(id, command, Some(version)).await {
                error.set(Some(e.to_string()));
            }
        });
    };
    let Some(loaded) = detail.read().clone() else {
        return rsx! { p { {lang.t(Key::Loading)} } };
    };
    let OrderDetail { view, evidence } = match loaded {
        Ok(d) => d,
        Err(e) => return rsx! { p { class: "xl-error", "{e}" } },
    };
    let order = view.order.clone();
    let version = order.version;
    let status = view.status;

    rsx! {
        div { id: "xl-detail",
            OrderCard { view: view.clone(), lang }
            div { class: "xl-order",
                h3 { {lang.t(Key::Lines)} }
                for line in order.lines.iter() {
                    p { key: "{line.line_no}",
                        "{line.name} · {line.quantity} {lang.unit(line.unit)}"
                        if let Some(p) = line.picked.as_ref() { " · {lang.t(Key::Picked)} {p.base}" }
                        if let Some(a) = line.acceptance.as_ref().filter(|a| a.rejected_base > 0) { " · {lang.t(Key::Refuse)} {a.rejected_base}" }
                    }
                }
            }
            div { class: "xl-actions",
                if matches!(status, Status::Paid | Status::AwaitingPick) {
                    button { id: "xl-do-start-picking", class: "xl-primary", onclick: move |_| act(Command::StartPicking, version), {lang.t(Key::StartPicking)} }
                }
                if status == Status::Picking {
                    for line in order.lines.iter().filter(|l| l.picked.is_none() && l.base_to_ship > 0).cloned() {
                        button {
                            key: "{line.line_no}", class: "xl-primary xl-do-record-pick",
                            onclick: move |_| act(Command::RecordPick { line_no: line.line_no, base: line.base_to_ship, weight_g: None, short: false }, version),
                            "{lang.t(Key::RecordPick)} · {line.name} {line.base_to_ship}"
                        }
                    }
                    if order.lines.iter().all(|l| l.picked.is_some() || l.base_to_ship == 0) {
                        button { id: "xl-do-pack", class: "xl-primary", onclick: move |_| act(Command::Pack, version), {lang.t(Key::Pack)} }
                    }
                }
                if status == Status::Packed {
                    select {
                        id: "xl-courier-pick",
                        onchange: move |e| courier.set(e.value()),
                        option { value: "", {lang.t(Key::Couriers)} }
                        for c in couriers.read().clone().and_then(Result::ok).unwrap_or_default() {
                            option { value: "{c.courier_id}", selected: courier() == c.courier_id.to_string(),
                                "{c.name} · {c.vehicle}"
                                if c.refrigerated { " ❄" }
                                if !c.on_duty { " · {lang.t(Key::OffDuty)}" }
                            }
                        }
                    }
                    button {
                        id: "xl-do-assign", class: "xl-primary",
                        onclick: move |_| match courier().trim().parse::<CourierId>() {
                            Ok(c) => act(Command::AssignCourier { courier_id: c }, version),
                            Err(_) => error.set(Some(lang.t(Key::Couriers).to_owned())),
                        },
                        {lang.t(Key::HandToCourier)}
                    }
                    if order.courier_id.is_some() {
                        button { id: "xl-do-dispatch", class: "xl-primary", onclick: move |_| act(Command::Dispatch, version), {lang.t(Key::DispatchNow)} }
                    }
                }
                if status == Status::DeliveryFailed {
                    // The same window on the next day; the planner takes it from there.
                    button {
                        id: "xl-do-redeliver", class: "xl-primary",
                        onclick: {
                            let w = order.requested_window;
                            let next = xianlu_domain::TimeWindow { start: w.start + chrono::TimeDelta::days(1), end: w.end + chrono::TimeDelta::days(1) };
                            move |_| act(Command::ScheduleRedelivery { window: next }, version)
                        },
                        {lang.t(Key::RedeliverTomorrow)}
                    }
                }
                if matches!(status, Status::ExceptionHandling | Status::DeliveryFailed) {
                    button { id: "xl-do-resume", class: "xl-primary", onclick: move |_| act(Command::ResumeDelivery { courier_id: None }, version), {lang.t(Key::ResumeDelivery)} }
                    input { id: "xl-return-reason", placeholder: lang.t(Key::Reason), value: "{reason}", oninput: move |e| reason.set(e.value()) }
                    button { id: "xl-do-return", onclick: move |_| act(Command::StartReturn { reason: reason() }, version), {lang.t(Key::StartReturn)} }
                }
                if status == Status::OutOfStock {
                    for line in order.lines.iter().filter(|l| l.shortage.as_ref().is_some_and(|s| !s.resolution.is_resolved())).cloned() {
                        div { key: "{line.line_no}", class: "xl-short",
                            SubstituteForm { order: order.clone(), line_no: line.line_no, lang }
                            button {
                                class: "xl-primary xl-do-short-ship",
                                onclick: move |_| act(Command::ShortShip { line_no: line.line_no }, version),
                                "{lang.t(Key::ShortShip)} · {line.name}"
                            }
                        }
                    }
                }
                if matches!(status, Status::Created | Status::Paid | Status::OutOfStock | Status::AwaitingPick | Status::Picking | Status::Packed) {
                    input { id: "xl-cancel-reason", placeholder: lang.t(Key::Reason), value: "{reason}", oninput: move |e| reason.set(e.value()) }
                    button {
                        id: "xl-do-cancel",
                        onclick: move |_| if reason().trim().is_empty() { error.set(Some(lang.t(Key::Reason).to_owned())) } else { act(Command::Cancel { reason: reason() }, version) },
                        {lang.t(Key::CancelOrder)}
                    }
                }
                if status == Status::ExceptionHandling {
                    // The whole of each line delivered, as damaged; the amount is settled next.
                    button {
                        id: "xl-do-claim",
                        onclick: {
                            let lines: Vec<xianlu_domain::ClaimLine> = order.lines.iter()
                                .filter(|l| l.base_delivered() > 0)
                                .map(|l| xianlu_domain::ClaimLine { line_no: l.line_no, base: l.base_delivered() })
                                .collect();
                            move |_| act(Command::OpenClaim { lines: lines.clone(), note: reason() }, version)
                        },
                        {lang.t(Key::OpenClaim)}
                    }
                }
                if status == Status::ClaimOpen {
                    input { id: "xl-claim-amount", r#type: "number", placeholder: lang.t(Key::Amount), value: "{amount}", oninput: move |e| amount.set(e.value()) }
                    button {
                        id: "xl-do-settle", class: "xl-primary",
                        onclick: move |_| match amount().trim().parse::<i64>() {
                            Ok(fen) => act(Command::SettleClaim { amount_fen: fen }, version),
                            Err(_) => error.set(Some(lang.t(Key::Amount).to_owned())),
                        },
                        {lang.t(Key::SettleClaim)}
                    }
                }
                if status == Status::Returning {
                    button { id: "xl-do-returned", class: "xl-primary", onclick: move |_| act(Command::ConfirmReturned, version), {lang.t(Key::ConfirmReturned)} }
                }
            }
            if let Some(message) = error() { p { class: "xl-error", "{message}" } }
            DeliveryMap { id, view: view.clone() }
            if !evidence.is_empty() {
                div { class: "xl-order xl-evidence",
                    h3 { {lang.t(Key::Evidence)} }
                    for record in evidence {
                        EvidenceImage { key: "{record.sha256}", id, record }
                    }
                }
            }
            Timeline { events: view.timeline.clone(), lang, who: true }
        }
    }
}

/// A substitute for a short line, from the warehouse's free stock; once
/// offered, until when the customer may answer.
#[component]
fn SubstituteForm(order: Order, line_no: u16, lang: Lang) -> Element {
    let warehouse = order.warehouse_id;
    let stock =
        use_resource(move || async move { call::<Vec<StockLevel>>("stock", json!({"warehouse": warehouse})).await });
    let mut sku = use_signal(String::new);
    let mut price = use_signal(String::new);
    let mut error = use_signal(|| None::<String>);
    let Some(line) = order.line(line_no).cloned() else {
        return rsx! {};
    };
    if let Some(ShortageResolution::SubstitutionProposed { substitute, respond_by }) =
        line.shortage.as_ref().map(|s| &s.resolution)
    {
        return rsx! {
            p { class: "xl-muted xl-substitute-offered",
                "{line.name} → {substitute.name} · {lang.t(Key::AnswerBy)} {clock(*respond_by)}"
            }
        };
    }
    let levels = stock.read().clone().and_then(Result::ok).unwrap_or_default();
    let options: Vec<StockLevel> = substitutes(&line, &levels).into_iter().cloned().collect();
    let choices = options.clone();
    // How short the line is: what was ordered against what the warehouse could reserve.
    let available = line.shortage.as_ref().map_or(0, |s| s.available_base);
    let shortfall = rsx! {
        p { class: "xl-shortfall",
            "{line.name} · {lang.t(Key::OrderedQuantity)} {measure(lang, line.base_ordered, line.dimension)} · "
            "{lang.t(Key::CanPick)} {measure(lang, available, line.dimension)}"
        }
    };
    if options.is_empty() {
        return rsx! {
            {shortfall}
            p { class: "xl-muted", "{lang.t(Key::NothingToSubstitute)}" }
        };
    }
    let version = order.version;
    let id = order.id;
    let listed = line.price.fen;
    let propose = move |_| {
        let chosen = options.iter().find(|o| o.sku == sku()).or(options.first()).cloned();
        let fen = if price().trim().is_empty() { Ok(listed) } else { price().trim().parse::<i64>() };
        let command = match (chosen, fen) {
            (Some(stock), Ok(fen)) => propose_substitute(&order, line_no, &stock, fen, xianlu_core::rt::now()),
            _ => Err(lang.t(Key::PricePerUnit).to_owned()),
        };
        match command {
            Ok(command) => {
                spawn(async move {
                    if let Err(e) = send(id, command, Some(version)).await {
                        error.set(Some(e.to_string()));
                    }
                });
            }
            Err(message) => error.set(Some(message)),
        }
    };
    rsx! {
        {shortfall}
        div { class: "xl-filters",
            select {
                class: "xl-substitute-sku",
                onchange: move |e| sku.set(e.value()),
                for option in choices {
                    option { value: "{option.sku}", "{option.name}" }
                }
            }
            label { "{lang.t(Key::PricePerUnit)} {lang.unit(line.price.per)} "
                input {
                    class: "xl-substitute-price", r#type: "number", initial_value: "{listed}",
                    oninput: move |e| price.set(e.value()),
                }
            }
            button { class: "xl-primary xl-do-substitute", onclick: propose, "{lang.t(Key::ProposeSubstitute)} · {line.name}" }
        }
        if let Some(message) = error() { p { class: "xl-error", "{message}" } }
    }
}

/// A base quantity as a person reads it: kilograms from a kilogram up, else grams or pieces.
fn measure(lang: Lang, base: i64, dimension: Dimension) -> String {
    match dimension {
        Dimension::Grams if base.abs() >= 1000 => {
            let kg = format!("{:.3}", base as f64 / 1000.0);
            format!("{} {}", kg.trim_end_matches('0').trim_end_matches('.'), lang.unit(Unit::Kg))
        }
        Dimension::Grams => format!("{base} {}", lang.unit(Unit::G)),
        Dimension::Pieces => format!("{base} {}", lang.unit(Unit::Piece)),
    }
}

#[component]
fn EvidenceImage(id: OrderId, record: EvidenceRecord) -> Element {
    let sha = record.sha256.clone();
    let image = use_resource(move || {
        let sha = sha.clone();
        async move { call::<String>("evidence_image", json!({"id": id, "sha256": sha})).await.ok() }
    });
    rsx! {
        figure { class: "xl-evidence-item", "data-kind": "{record.kind:?}",
            if let Some(Some(src)) = image.read().clone() { img { src: "{src}", alt: "{record.kind:?}" } }
            figcaption { class: "xl-hash", "{record.kind:?} · {record.sha256}" }
        }
    }
}

/// The warehouse clerk's screen: paid orders to pick, big rows, one tap per step.
#[component]
fn PickList(cards: Vec<Card>, lang: Lang) -> Element {
    rsx! {
        h2 { {lang.t(Key::PickList)} }
        div { id: "xl-picklist",
            for card in cards {
                PickRow { key: "{card.order_id}-{card.version}", card, lang }
            }
        }
    }
}

#[component]
fn PickRow(card: Card, lang: Lang) -> Element {
    let id = card.order_id;
    let detail = use_resource(move || async move { call::<OrderDetail>("order", json!({"id": id})).await });
    let mut weights = use_signal(std::collections::HashMap::<u16, String>::new);
    let mut error = use_signal(|| None::<String>);
    let Some(Ok(loaded)) = detail.read().clone() else {
        return rsx! { div { class: "xl-pick", "{card.number}" } };
    };
    let order = loaded.view.order;
    let version = order.version;
    let go = move |command: Command| {
        spawn(async move {
            if let Err(e) = send(id, command, Some(version)).await {
                error.set(Some(e.to_string()));
            }
        });
    };

    rsx! {
        div { class: "xl-pick", "data-order": "{card.number}",
            strong { "{card.number} · {card.customer}" }
            if order.status != Status::Picking {
                div { button { class: "xl-primary xl-pick-start", onclick: move |_| go(Command::StartPicking), {lang.t(Key::StartPicking)} } }
            } else {
                for line in order.lines.iter().filter(|l| l.base_to_ship > 0).cloned() {
                    div { key: "{line.line_no}",
                        "{line.name} · {line.quantity} {lang.unit(line.unit)} "
                        if let Some(p) = line.picked.as_ref() {
                            span { class: "xl-muted", "✓ {p.base}" }
                        } else {
                            input {
                                class: "xl-pick-weight", r#type: "number", placeholder: "{line.base_to_ship}",
                                oninput: move |e| { weights.write().insert(line.line_no, e.value()); }
                            }
                            button {
                                class: "xl-primary xl-pick-record",
                                onclick: move |_| {
                                    let base = weights.read().get(&line.line_no).and_then(|w| w.parse().ok()).unwrap_or(line.base_to_ship);
                                    go(Command::RecordPick { line_no: line.line_no, base, weight_g: None, short: false });
                                },
                                {lang.t(Key::RecordPick)}
                            }
                        }
                    }
                }
                if order.lines.iter().all(|l| l.picked.is_some() || l.base_to_ship == 0) {
                    button { class: "xl-primary xl-pick-pack", onclick: move |_| go(Command::Pack), {lang.t(Key::Pack)} }
                }
            }
            if let Some(message) = error() { p { class: "xl-error", "{message}" } }
        }
    }
}

/// Everyone on duty on the map with their load, route and next stop; pin an
/// order to a courier or lock a route (the planner respects both).
#[component]
fn Couriers(revision: u64, columns: Vec<ColumnView>, lang: Lang) -> Element {
    // Fetched again as the office changes (positions and plans move with it).
    let mut couriers = use_resource(use_reactive!(|revision| async move {
        let _ = revision;
        call::<Vec<CourierStatus>>("couriers", json!({})).await
    }));
    let mut chosen = use_signal(|| None::<CourierId>);
    let mut roads: Signal<Vec<(String, Vec<LatLng>)>> = use_signal(Vec::new);
    let mut attribution = use_signal(|| None::<String>);
    let mut framed = use_signal(|| None::<[f64; 4]>);
    let mut pin_number = use_signal(String::new);
    let mut error = use_signal(|| None::<String>);
    let mut path: Signal<(Vec<LatLng>, Vec<LatLng>)> = use_signal(Default::default);
    let list = match couriers.read().clone() {
        Some(Ok(list)) => list,
        Some(Err(e)) => return rsx! { p { class: "xl-error", "{e}" } },
        None => return rsx! { p { {lang.t(Key::Loading)} } },
    };
    let on_duty: Vec<CourierStatus> = list.iter().filter(|c| c.on_duty).cloned().collect();
    let current = chosen().and_then(|id| list.iter().find(|c| c.courier_id == id).cloned());
    let mut focus: Vec<LatLng> = on_duty.iter().filter_map(|c| c.position.map(|p| p.position)).collect();
    focus.extend(on_duty.iter().flat_map(|c| c.stops.iter().map(|s| s.location)));
    let frame = xianlu_ui::map::frame(&focus, 0.2);
    if frame.is_some() && framed() != frame {
        framed.set(frame);
        if let Some(bbox) = frame {
            spawn(async move {
                if let Ok(tile) =
                    call::<xianlu_domain::wire::RoadTile>("roads", json!({"bbox": bbox, "zoom": 14})).await
                {
                    roads.set(xianlu_core::tracking::road_lines(&tile));
                    attribution.set(tile.attribution);
                }
            });
        }
    }
    // The chosen courier's way along the roads: from where they are through their stops.
    let waypoints: Vec<LatLng> = current
        .as_ref()
        .map(|c| c.position.map(|p| p.position).into_iter().chain(c.stops.iter().map(|s| s.location)).collect())
        .unwrap_or_default();
    if path.peek().0 != waypoints {
        path.set((waypoints.clone(), waypoints.clone()));
        if waypoints.len() > 1 {
            spawn(async move {
                if let Ok(line) = call::<Vec<LatLng>>("path", json!({"points": waypoints})).await {
                    path.with_mut(|p| {
                        if p.0 == waypoints {
                            p.1 = line
                        }
                    });
                }
            });
        }
    }
    let layers = MapLayers {
        roads: roads(),
        trail: Vec::new(),
        route: path().1,
        courier: current.as_ref().and_then(|c| c.position.map(|p| p.position)),
        destination: current.as_ref().and_then(|c| c.stops.first().map(|s| s.location)),
        stops: on_duty
            .iter()
            .filter(|c| Some(c.courier_id) != chosen())
            .filter_map(|c| c.position.map(|p| p.position))
            .collect(),
        attribution: attribution(),
        tile_url: None,
    };
    let numbers: Vec<(String, OrderId)> =
        columns.iter().flat_map(|c| c.cards.iter()).map(|c| (c.number.to_string(), c.order_id)).collect();
    rsx! {
        MapView { layers, focus, label: lang.t(Key::Couriers).to_owned() }
        if let Some(message) = error() { p { class: "xl-error", "{message}" } }
        ul { id: "xl-couriers", class: "xl-list",
            for c in on_duty {
                li {
                    key: "{c.courier_id}", "data-courier": "{c.courier_id}",
                    class: if Some(c.courier_id) == chosen() { "xl-courier xl-courier-on" } else { "xl-courier" },
                    onclick: { let id = c.courier_id; move |_| chosen.set(Some(id)) },
                    div {
                        strong { "{c.name} · {c.vehicle}" }
                        if c.refrigerated { span { class: "xl-badge xl-badge-cold", "❄" } }
                        p { class: "xl-muted",
                            "{lang.t(Key::Aboard)} {c.aboard} · {c.load_g as f64 / 1000.0:.1} kg / {c.capacity_kg} kg"
                            if let Some(next) = c.stops.first() { " · {lang.t(Key::NextStop)} {next.order_number} {clock(next.planned_arrival)}" }
                        }
                    }
                    button {
                        class: "xl-lock",
                        onclick: { let id = c.courier_id; let locked = c.locked; move |e: MouseEvent| {
                            e.stop_propagation();
                            spawn(async move {
                                if let Err(err) = call::<()>("lock", json!({"courier": id, "locked": !locked})).await {
                                    error.set(Some(err.to_string()));
                                }
                                couriers.restart();
                            });
                        } },
                        if c.locked { {lang.t(Key::Unlock)} } else { {lang.t(Key::LockRoute)} }
                    }
                }
            }
        }
        if let Some(c) = current {
            div { class: "xl-filters",
                input { id: "xl-pin-number", placeholder: lang.t(Key::Search), value: "{pin_number}", oninput: move |e| pin_number.set(e.value()) }
                button {
                    id: "xl-pin",
                    onclick: move |_| {
                        let wanted = pin_number().trim().to_owned();
                        match numbers.iter().find(|(n, _)| *n == wanted) {
                            Some((_, order)) => {
                                let (order, courier) = (*order, c.courier_id);
                                spawn(async move {
                                    if let Err(err) = call::<()>("pin", json!({"order": order, "courier": courier})).await {
                                        error.set(Some(err.to_string()));
                                    }
                                });
                            }
                            None => error.set(Some(format!("{wanted}?"))),
                        }
                    },
                    "{lang.t(Key::PinTo)} {c.name}"
                }
            }
        }
    }
}

/// The delivery on the map: where the courier drove, where they are, the door.
#[component]
fn DeliveryMap(id: OrderId, view: OrderView) -> Element {
    let trail =
        use_resource(move || async move { call::<Vec<LatLng>>("trail", json!({"id": id})).await.unwrap_or_default() });
    let mut roads: Signal<Vec<(String, Vec<LatLng>)>> = use_signal(Vec::new);
    let mut attribution = use_signal(|| None::<String>);
    let destination = view.customer.as_ref().map(|c| c.location);
    let courier = view.driver_info.as_ref().and_then(|d| d.location);
    let trail = trail.read().clone().unwrap_or_default();
    let mut focus: Vec<LatLng> = destination.into_iter().chain(courier).collect();
    focus.extend(trail.iter().copied());
    let frame = xianlu_ui::map::frame(&focus, 0.4);
    use_effect(use_reactive!(|frame| {
        if let Some(bbox) = frame {
            spawn(async move {
                if let Ok(tile) =
                    call::<xianlu_domain::wire::RoadTile>("roads", json!({"bbox": bbox, "zoom": 15})).await
                {
                    roads.set(xianlu_core::tracking::road_lines(&tile));
                    attribution.set(tile.attribution);
                }
            });
        }
    }));
    let layers = MapLayers {
        roads: roads(),
        trail,
        route: Vec::new(),
        courier,
        destination,
        stops: Vec::new(),
        attribution: attribution(),
        tile_url: None,
    };
    rsx! { MapView { layers, focus, label: view.order_id.to_string() } }
}
