//! An order at a glance: number, status, estimate against the promised
//! window, the courier (phone as the viewer may see it), the items.

use dioxus::prelude::*;
use xianlu_domain::TimeWindow;
use xianlu_domain::wire::OrderView;

use crate::i18n::{Key, Lang};
use crate::timeline::clock;

pub fn window_text(window: &TimeWindow) -> String {
    format!("{}–{}", clock(window.start), clock(window.end))
}

#[component]
pub fn OrderCard(view: OrderView, lang: Lang) -> Element {
    let status = lang.status(view.status);
    let promised = window_text(&view.order.requested_window);
    let eta = view.eta_window.as_ref().map(|e| window_text(&e.window)).or_else(|| view.eta.map(clock));
    rsx! {
        article { class: "xl-order",
            header {
                span { class: "xl-order-number", "{view.order_id}" }
                span { id: "xl-status", class: "xl-status xl-status-{view.status.as_str()}", "{status}" }
            }
            if let Some(customer) = view.customer.as_ref() {
                p { class: "xl-order-to", {lang.t(Key::Deliver)} ": " strong { "{customer.business_name}" } " · {customer.address}" }
            }
            dl { class: "xl-order-times",
                if let Some(eta) = eta {
                    dt { {lang.t(Key::Eta)} }
                    dd { id: "xl-eta", "{eta}" }
                }
                dt { {lang.t(Key::Promised)} }
                dd { id: "xl-promised", "{promised}" }
            }
            if let Some(driver) = view.driver_info.as_ref() {
                p { class: "xl-order-courier", {lang.t(Key::Courier)} ": {driver.name} · "
                    a { href: "tel:{driver.phone}", "{driver.phone}" }
                }
            }
            h3 { {lang.t(Key::Items)} }
            ul { class: "xl-items",
                for (n, item) in view.items.iter().enumerate() {
                    li { key: "{n}", span { "{item.name}" } span { class: "xl-qty", "{item.quantity} {lang.unit(item.unit)}" } }
                }
            }
        }
    }
}
