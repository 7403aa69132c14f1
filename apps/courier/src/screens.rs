//! The screens of a courier's day. They render the [`CourierDay`] the core
//! publishes and call the session; no screen talks to the network itself.

use dioxus::prelude::*;
use xianlu_core::ConnectionState;
use xianlu_core::courier::{Action, CourierDay, DayStop, NoticeKind};
use xianlu_core::report::{AttachedPhoto, ExceptionReason, ExceptionReport};
use xianlu_core::signoff::SignOff;
use xianlu_domain::evidence::EvidenceKind;
use xianlu_domain::operations::PlannedKind;
use xianlu_domain::wire::LatLng;
use xianlu_domain::{OrderId, Status};
use xianlu_ui::i18n::Key;
use xianlu_ui::order::window_text;
use xianlu_ui::signoff::{PAD_HEIGHT, PAD_WIDTH, SignOffForm};
use xianlu_ui::timeline::clock;
use xianlu_ui::{Lang, MapLayers, MapView, OrderCard, Timeline};

use crate::{Bar, Session, platform};

#[derive(Debug, Clone, Copy, PartialEq)]
enum View {
    Today,
    Map,
    Stop(OrderId),
    Deliver(OrderId),
    /// Report a problem; `true` lists only the reasons of a failed attempt.
    Report(OrderId, bool),
    DropOff(OrderId),
}

#[component]
pub fn Day(session: Session, lang: Signal<Lang>, on_out: EventHandler<()>) -> Element {
    let courier = session.0.clone();
    let mut day = use_signal(|| courier.day());
    let view = use_signal(|| View::Today);
    let mut saved = use_signal(|| false);
    use_hook(|| {
        let watched = courier.clone();
        spawn(async move {
            let mut rx = watched.watch();
            loop {
                let now = rx.borrow_and_update().clone();
                day.set(now);
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
        let tracked = courier.clone();
        spawn(platform::track(tracked, move || day.peek().duty.is_some_and(|d| d.on_duty)));
    });
    let l = lang();
    let current = day();
    let on_duty = current.duty.is_some_and(|d| d.on_duty);
    let duty_session = courier.clone();
    let mut duty_error = use_signal(|| None::<String>);
    let toggle = move |_| {
        let s = duty_session.clone();
        spawn(async move {
            match s.set_duty(!on_duty, None).await {
                Ok(_) => duty_error.set(None),
                Err(e) => duty_error.set(Some(e.to_string())),
            }
        });
    };
    let done = move |_| {
        saved.set(true);
        let mut view = view;
        view.set(View::Today);
    };
    rsx! {
        Bar { lang,
            button { id: "xl-duty", class: if on_duty { "xl-duty xl-duty-on" } else { "xl-duty" }, onclick: toggle,
                if on_duty { {l.t(Key::GoOffDuty)} } else { {l.t(Key::GoOnDuty)} }
            }
        }
        if on_duty {
            p { id: "xl-tracking", class: "xl-tracking", "● {l.t(Key::OnDuty)} · {l.t(Key::SharingLocation)}" }
        } else {
            p { class: "xl-muted", {l.t(Key::OffDuty)} }
        }
        if let Some(message) = duty_error() {
            p { class: "xl-error", "{message}" }
        }
        Banners { day: current.clone(), session: session.clone(), lang: l }
        if saved() && current.waiting > 0 {
            p { id: "xl-saved", class: "xl-banner xl-banner-good", onclick: move |_| saved.set(false), {l.t(Key::Saved)} }
        }
        match view() {
            View::Today => rsx! {
                Today { day: current.clone(), view, lang: l }
                LogOut { session: session.clone(), waiting: current.waiting, lang: l, on_out }
            },
            View::Map => rsx! { DayMap { day: current, session: session.clone(), view, lang: l } },
            View::Stop(id) => rsx! { StopScreen { day: current, session: session.clone(), id, view, lang: l } },
            View::Deliver(id) => rsx! { DeliverScreen { day: current, session: session.clone(), id, view, lang: l, on_done: done } },
            View::Report(id, failed) => rsx! {
                ReportScreen { day: current, session: session.clone(), id, failed_attempt: failed, view, lang: l, on_done: done }
            },
            View::DropOff(id) => rsx! { DropOffScreen { day: current, session: session.clone(), id, view, lang: l, on_done: done } },
        }
    }
}

/// Offline, changes waiting, what is new, what the server refused.
#[component]
fn Banners(day: CourierDay, session: Session, lang: Lang) -> Element {
    let offline = !day.online || matches!(day.connection, ConnectionState::Offline { .. });
    let dismiss = session.0.clone();
    rsx! {
        if offline {
            p { id: "xl-offline", class: "xl-banner xl-banner-bad",
                "{lang.t(Key::OfflineBanner)} · {day.waiting} {lang.t(Key::ChangesWaiting)}"
            }
        } else if day.waiting > 0 {
            p { id: "xl-waiting", class: "xl-banner", "{day.waiting} {lang.t(Key::ChangesWaiting)}" }
        }
        if !day.notices.is_empty() {
            div { id: "xl-notices", class: "xl-banner xl-banner-good",
                for notice in day.notices.iter() {
                    p { key: "{notice.order_id}-{notice.at}",
                        match notice.kind {
                            NoticeKind::Assigned => lang.t(Key::NewOrder),
                            NoticeKind::Reassigned => lang.t(Key::HandedToYou),
                            NoticeKind::TakenAway => lang.t(Key::TakenAway),
                            NoticeKind::Cancelled => lang.t(Key::Cancelled),
                        }
                        ": {notice.order_number}"
                    }
                }
                button { id: "xl-dismiss", onclick: move |_| dismiss.dismiss_notices(), {lang.t(Key::Dismiss)} }
            }
        }
        if !day.attention.is_empty() {
            div { id: "xl-attention", class: "xl-banner xl-banner-bad",
                h3 { {lang.t(Key::NeedsAttention)} }
                for item in day.attention.iter() {
                    div { key: "{item.item}", class: "xl-attention-item",
                        p { strong { {item.order_number.as_ref().map(|n| n.to_string()).unwrap_or_default()} " {item.what}" } }
                        p { "{item.reason}" }
                        p { class: "xl-muted", "{lang.t(Key::WhatToDo)}: {lang.next_step(item.next)}" }
                        button { onclick: { let s = session.0.clone(); let id = item.item; move |_| { let _ = s.retry(id); } }, {lang.t(Key::Retry)} }
                        button { onclick: { let s = session.0.clone(); let id = item.item; move |_| { let _ = s.cancel(id); } }, {lang.t(Key::Discard)} }
                    }
                }
            }
        }
    }
}

fn stop_label(lang: Lang, stop: &DayStop) -> String {
    match (stop.kind, stop.status) {
        (PlannedKind::Pickup, _) => lang.t(Key::Collect).to_owned(),
        (_, Status::Returning) => lang.t(Key::ReturnToWarehouse).to_owned(),
        (_, status) => lang.status(status).to_owned(),
    }
}

#[component]
fn Today(day: CourierDay, view: Signal<View>, lang: Lang) -> Element {
    let mut view = view;
    rsx! {
        nav { class: "xl-tabs",
            button { class: "xl-tab xl-tab-on", {lang.t(Key::Today)} }
            button { id: "xl-tab-map", class: "xl-tab", onclick: move |_| view.set(View::Map), {lang.t(Key::Map)} }
        }
        if day.stops.is_empty() {
            p { id: "xl-no-stops", class: "xl-muted", {lang.t(Key::NoStops)} }
        }
        ol { id: "xl-stops", class: "xl-list xl-stops",
            for (n, stop) in day.stops.iter().enumerate() {
                li { key: "{stop.order_id}-{n}", "data-order": "{stop.order_number}",
                    onclick: { let id = stop.order_id; move |_| view.set(View::Stop(id)) },
                    div { class: "xl-stop-main",
                        span { class: "xl-stop-n", "{n + 1}" }
                        div {
                            strong { "{stop.business_name}" }
                            p { class: "xl-muted", "{stop.address}" }
                            p { class: "xl-muted",
                                "{stop.order_number} · {lang.t(Key::Promised)} {window_text(&stop.window)}"
                                if let Some(eta) = stop.eta.as_ref() { " · {lang.t(Key::Eta)} {window_text(&eta.window)}" }
                                else if let Some(at) = stop.planned_arrival { " · {lang.t(Key::Planned)} {clock(at)}" }
                            }
                        }
                    }
                    div { class: "xl-stop-badges",
                        span { class: "xl-status xl-status-{stop.status.as_str()}", {stop_label(lang, stop)} }
                        if stop.cold { span { class: "xl-badge xl-badge-cold", "❄ {lang.t(Key::Cold)}" } }
                        if stop.waiting { span { class: "xl-badge xl-badge-waiting", {lang.t(Key::Waiting)} } }
                        if stop.arrived { span { class: "xl-badge", {lang.t(Key::Arrived)} } }
                    }
                }
            }
        }
        if !day.done.is_empty() {
            h3 { {lang.t(Key::Done)} }
            ul { id: "xl-done", class: "xl-list",
                for stop in day.done.iter() {
                    li { key: "{stop.order_id}", onclick: { let id = stop.order_id; move |_| view.set(View::Stop(id)) },
                        span { "{stop.order_number} · {stop.business_name}" }
                        span { class: "xl-status xl-status-{stop.status.as_str()}", {lang.status(stop.status)} }
                    }
                }
            }
        }
    }
}

/// Road lines by class, the credit their data asks for, the deployment's tile service.
type Roads = (Vec<(String, Vec<LatLng>)>, Option<String>, Option<String>);
/// The road from where the courier was to the next stop: (from, to), line.
type Leg = (Option<(LatLng, LatLng)>, Vec<LatLng>);

/// The day on the map: where the courier is, the road to the next stop, the stops.
#[component]
fn DayMap(day: CourierDay, session: Session, view: Signal<View>, lang: Lang) -> Element {
    let mut view = view;
    let mut roads: Signal<Roads> = use_signal(|| (Vec::new(), None, None));
    let mut route: Signal<Leg> = use_signal(|| (None, Vec::new()));
    let stops: Vec<LatLng> = day.stops.iter().filter_map(|s| s.location).collect();
    let next = day.next_stop().and_then(|s| s.location);
    let mut focus: Vec<LatLng> = stops.clone();
    focus.extend(day.position);
    let frame = xianlu_ui::map::frame(&focus, 0.3);
    let api = session.0.api().clone();
    use_effect(use_reactive!(|frame| {
        let api = api.clone();
        if let Some(bbox) = frame {
            spawn(async move {
                if let Ok(tile) = api.map_roads(bbox, 15).await {
                    roads.set((
                        xianlu_core::tracking::road_lines(&tile),
                        tile.attribution.clone(),
                        tile.tile_url.clone(),
                    ));
                }
            });
        }
    }));
    // The road to the next stop, again once the courier has moved on.
    let api = session.0.api().clone();
    if let (Some(from), Some(to)) = (day.position, next) {
        let stale = route.peek().0.is_none_or(|(f, t)| t != to || xianlu_core::location::distance_m(f, from) > 80.0);
        if stale {
            route.write().0 = Some((from, to));
            spawn(async move {
                if let Ok(line) = api.map_route(from, to).await {
                    route.write().1 = line;
                }
            });
        }
    }
    let (lines, attribution, tile_url) = roads();
    let layers = MapLayers {
        roads: lines,
        trail: Vec::new(),
        route: route().1,
        courier: day.position,
        destination: next,
        stops,
        attribution,
        tile_url,
    };
    rsx! {
        nav { class: "xl-tabs",
            button { id: "xl-tab-today", class: "xl-tab", onclick: move |_| view.set(View::Today), {lang.t(Key::Today)} }
            button { class: "xl-tab xl-tab-on", {lang.t(Key::Map)} }
        }
        MapView { layers, focus, label: day.next_stop().map(|s| s.business_name.clone()).unwrap_or_default() }
        if let Some(p) = day.position {
            p { class: "xl-muted", "{lang.t(Key::Position)}: {p.lat:.5}, {p.lng:.5}" }
        }
    }
}

/// Two taps for anything that reaches the customer or the office.
#[component]
fn Confirm(lang: Lang, label: String, on_yes: EventHandler<()>, on_no: EventHandler<()>) -> Element {
    rsx! {
        div { id: "xl-confirm-box", class: "xl-banner",
            p { "{label} — {lang.t(Key::ConfirmQuestion)}" }
            button { id: "xl-yes", class: "xl-primary", onclick: move |_| on_yes.call(()), {lang.t(Key::Yes)} }
            button { id: "xl-no", onclick: move |_| on_no.call(()), {lang.t(Key::Cancel)} }
        }
    }
}

fn action_label(lang: Lang, action: Action) -> &'static str {
    match action {
        Action::PickUp => lang.t(Key::PickUp),
        Action::Arrived => lang.t(Key::Arrived),
        Action::Deliver => lang.t(Key::DeliverNow),
        Action::FailedAttempt => lang.t(Key::FailedAttempt),
        Action::DropOff => lang.t(Key::DropOff),
        Action::Report => lang.t(Key::Report),
    }
}

#[component]
fn StopScreen(day: CourierDay, session: Session, id: OrderId, view: Signal<View>, lang: Lang) -> Element {
    let mut view = view;
    let mut confirm = use_signal(|| None::<Action>);
    let mut error = use_signal(|| None::<String>);
    let s = session.0.clone();
    let run = use_callback(move |action: Action| {
        confirm.set(None);
        let result = match action {
            Action::PickUp => s.pick_up(id),
            Action::Arrived => s.arrived(id),
            Action::Deliver => {
                view.set(View::Deliver(id));
                Ok(())
            }
            Action::FailedAttempt => {
                view.set(View::Report(id, true));
                Ok(())
            }
            Action::Report => {
                view.set(View::Report(id, false));
                Ok(())
            }
            Action::DropOff => {
                view.set(View::DropOff(id));
                Ok(())
            }
        };
        if let Err(e) = result {
            error.set(Some(e.to_string()));
        }
    });
    let Some(order) = day.order(id) else {
        return rsx! {
            button { onclick: move |_| view.set(View::Today), {lang.t(Key::Back)} }
            p { class: "xl-muted", {lang.t(Key::TakenAway)} }
        };
    };
    let actions = day.actions(id);
    let location = order.customer.as_ref().map(|c| c.location);
    let timeline: Vec<_> = order.timeline.iter().filter(|e| !e.event.kind.is_live_update()).cloned().collect();
    rsx! {
        button { id: "xl-back", onclick: move |_| view.set(View::Today), {lang.t(Key::Back)} }
        OrderCard { view: order.clone(), lang }
        div { class: "xl-order",
            if let Some(contact) = order.contact.as_ref() {
                p { {lang.t(Key::Contact)} ": {contact.name} · "
                    // The full number only while this courier is delivering the order.
                    if contact.phone.contains('*') {
                        span { class: "xl-muted", "{contact.phone}" }
                    } else {
                        a { id: "xl-call", href: platform::dial_link(&contact.phone), "{lang.t(Key::Call)} {contact.phone}" }
                    }
                }
            }
            if let Some(at) = location {
                p { a { id: "xl-navigate", href: platform::navigation_link(at), {lang.t(Key::Navigate)} } }
            }
            if !order.order.notes.is_empty() {
                p { {lang.t(Key::Notes)} ": " strong { "{order.order.notes}" } }
            }
            if order.status == Status::DeliveryFailed {
                p { class: "xl-muted", {lang.t(Key::WaitingForOffice)} }
            }
        }
        match confirm() {
            Some(action) => rsx! {
                Confirm {
                    lang, label: action_label(lang, action).to_owned(),
                    on_yes: move |_| run.call(action),
                    on_no: move |_| confirm.set(None),
                }
            },
            None => rsx! {
                div { class: "xl-actions",
                    for action in actions {
                        button {
                            id: "xl-act-{action:?}", class: "xl-primary xl-action",
                            onclick: move |_| {
                                // Screens that follow are their own confirmation.
                                if matches!(action, Action::PickUp | Action::Arrived) {
                                    confirm.set(Some(action));
                                } else {
                                    run.call(action);
                                }
                            },
                            {action_label(lang, action)}
                        }
                    }
                }
            },
        }
        if let Some(message) = error() {
            p { class: "xl-error", "{message}" }
        }
        Timeline { events: timeline, lang }
    }
}

/// A camera (here: a file picker) whose photos become evidence.
#[component]
fn PhotoPicker(
    id: String,
    label: String,
    kind: EvidenceKind,
    position: Option<LatLng>,
    multiple: bool,
    on_photos: EventHandler<Vec<AttachedPhoto>>,
    on_error: EventHandler<String>,
) -> Element {
    rsx! {
        label { class: "xl-photo", "{label}"
            input {
                id, r#type: "file", accept: "image/*", multiple,
                onchange: move |evt: FormEvent| async move {
                    let mut photos = Vec::new();
                    for file in evt.files() {
                        match file.read_bytes().await.map_err(|e| e.to_string()).and_then(|b| platform::photo(&b, kind, position)) {
                            Ok(photo) => photos.push(photo),
                            Err(e) => return on_error.call(e),
                        }
                    }
                    on_photos.call(photos);
                }
            }
        }
    }
}

#[component]
fn DeliverScreen(
    day: CourierDay,
    session: Session,
    id: OrderId,
    view: Signal<View>,
    lang: Lang,
    on_done: EventHandler<()>,
) -> Element {
    let mut view = view;
    let order = day.order(id);
    let sign_off = use_signal(|| order.as_ref().and_then(|v| SignOff::for_order(v, PAD_WIDTH, PAD_HEIGHT).ok()));
    let mut note_photo = use_signal(|| None::<AttachedPhoto>);
    let mut error = use_signal(|| None::<String>);
    let position = day.position;
    let Some(current) = sign_off() else {
        return rsx! {
            button { onclick: move |_| view.set(View::Stop(id)), {lang.t(Key::Back)} }
            p { class: "xl-error", {lang.t(Key::NotFound)} }
        };
    };
    let s = session.0.clone();
    let submit = move |_| {
        let Some(ready) = sign_off() else { return };
        match s.sign(&ready, note_photo().as_ref()) {
            Ok(()) => on_done.call(()),
            Err(e) => error.set(Some(e.to_string())),
        }
    };
    rsx! {
        button { onclick: move |_| view.set(View::Stop(id)), {lang.t(Key::Back)} }
        h2 { "{current.order_number}" }
        if let Some(o) = order.as_ref().and_then(|o| o.customer.clone()) { p { strong { "{o.business_name}" } } }
        SignOffForm { sign_off, error, lang }
        PhotoPicker {
            id: "xl-note-photo", kind: EvidenceKind::DeliveryNote, position, multiple: false,
            label: format!("{}{}", lang.t(Key::DeliveryNotePhoto), if note_photo.read().is_some() { " ✓" } else { "" }),
            on_photos: move |mut photos: Vec<AttachedPhoto>| note_photo.set(photos.pop()),
            on_error: move |e| error.set(Some(e)),
        }
        button { id: "xl-confirm", class: "xl-primary", disabled: !current.ready(), onclick: submit, {lang.t(Key::Confirm)} }
        if let Some(message) = error() {
            p { class: "xl-error", "{message}" }
        }
    }
}

const ATTEMPT_REASONS: [ExceptionReason; 3] =
    [ExceptionReason::CustomerAbsent, ExceptionReason::CustomerClosed, ExceptionReason::WrongAddress];

#[component]
fn ReportScreen(
    day: CourierDay,
    session: Session,
    id: OrderId,
    failed_attempt: bool,
    view: Signal<View>,
    lang: Lang,
    on_done: EventHandler<()>,
) -> Element {
    let mut view = view;
    let reasons: Vec<ExceptionReason> = if failed_attempt {
        ATTEMPT_REASONS.to_vec()
    } else {
        ExceptionReason::ALL.into_iter().filter(|r| !ATTEMPT_REASONS.contains(r)).collect()
    };
    let mut reason = use_signal(|| None::<ExceptionReason>);
    let mut note = use_signal(String::new);
    let mut photos: Signal<Vec<AttachedPhoto>> = use_signal(Vec::new);
    let mut error = use_signal(|| None::<String>);
    let position = day.position;
    let s = session.0.clone();
    let submit = move |_| {
        let Some(chosen) = reason() else { return };
        let report =
            ExceptionReport { reason: chosen, note: note(), photos: photos(), position, at: chrono::Utc::now() };
        match s.report(id, &report) {
            Ok(()) => on_done.call(()),
            Err(e) => error.set(Some(e.to_string())),
        }
    };
    rsx! {
        button { onclick: move |_| view.set(View::Stop(id)), {lang.t(Key::Back)} }
        h2 { if failed_attempt { {lang.t(Key::FailedAttempt)} } else { {lang.t(Key::Report)} } }
        div { id: "xl-reasons", class: "xl-reasons",
            for r in reasons {
                button {
                    key: "{r:?}", id: "xl-reason-{r:?}",
                    class: if reason() == Some(r) { "xl-reason xl-reason-on" } else { "xl-reason" },
                    onclick: move |_| reason.set(Some(r)),
                    {lang.report_reason(r)}
                }
            }
        }
        div { class: "xl-form",
            label { {lang.t(Key::Note)} textarea { id: "xl-report-note", value: "{note}", oninput: move |e| note.set(e.value()) } }
            PhotoPicker {
                id: "xl-report-photo", kind: EvidenceKind::Photo, position, multiple: true,
                label: format!("{} ({})", lang.t(Key::Photos), photos.read().len()),
                on_photos: move |more: Vec<AttachedPhoto>| photos.write().extend(more),
                on_error: move |e| error.set(Some(e)),
            }
            button { id: "xl-report-send", class: "xl-primary", disabled: reason().is_none(), onclick: submit, {lang.t(Key::Send)} }
        }
        if let Some(message) = error() {
            p { class: "xl-error", "{message}" }
        }
    }
}

#[component]
fn DropOffScreen(
    day: CourierDay,
    session: Session,
    id: OrderId,
    view: Signal<View>,
    lang: Lang,
    on_done: EventHandler<()>,
) -> Element {
    let mut view = view;
    let mut photo = use_signal(|| None::<AttachedPhoto>);
    let mut error = use_signal(|| None::<String>);
    let position = day.position;
    let s = session.0.clone();
    let submit = move |_| {
        let Some(taken) = photo() else { return };
        match s.drop_off(id, &taken) {
            Ok(()) => on_done.call(()),
            Err(e) => error.set(Some(e.to_string())),
        }
    };
    rsx! {
        button { onclick: move |_| view.set(View::Stop(id)), {lang.t(Key::Back)} }
        h2 { {lang.t(Key::DropOff)} }
        PhotoPicker {
            id: "xl-drop-photo", kind: EvidenceKind::Photo, position, multiple: false,
            label: format!("{}{}", lang.t(Key::Photos), if photo.read().is_some() { " ✓" } else { "" }),
            on_photos: move |mut photos: Vec<AttachedPhoto>| photo.set(photos.pop()),
            on_error: move |e| error.set(Some(e)),
        }
        button { id: "xl-drop-send", class: "xl-primary", disabled: photo.read().is_none(), onclick: submit, {lang.t(Key::Send)} }
        if let Some(message) = error() {
            p { class: "xl-error", "{message}" }
        }
    }
}

/// Logs out, once nothing is waiting to be sent (the changes belong to this courier).
#[component]
fn LogOut(session: Session, waiting: usize, lang: Lang, on_out: EventHandler<()>) -> Element {
    let out = move |_| {
        let s = session.0.clone();
        spawn(async move {
            s.stop();
            let _ = s.api().logout().await;
            if let Ok(store) = platform::open_store() {
                let _ = store.set_meta(crate::SAVED_SESSION, "");
            }
            on_out.call(());
        });
    };
    rsx! {
        if waiting > 0 {
            p { class: "xl-muted", "{waiting} {lang.t(Key::ChangesWaiting)}" }
        } else {
            button { id: "xl-logout", class: "xl-logout", onclick: out, {lang.t(Key::LogOut)} }
        }
    }
}
