//! The order's progress, oldest first, as its parties see it.

use dioxus::prelude::*;
use xianlu_domain::wire::StreamEvent;

use crate::i18n::{Key, Lang};

/// Local time of day of an instant, as the viewer's device shows it.
pub fn clock(at: chrono::DateTime<chrono::Utc>) -> String {
    at.with_timezone(&chrono::Local).format("%H:%M").to_string()
}

/// The order's changes, newest first; `who` adds who made each (for the office).
#[component]
pub fn Timeline(events: Vec<StreamEvent>, lang: Lang, #[props(default)] who: bool) -> Element {
    rsx! {
        section { class: "xl-timeline",
            h2 { {lang.t(Key::Timeline)} }
            ol { id: "xl-timeline",
                for event in events.iter().rev() {
                    li { key: "{event.seq}", "data-kind": event.event.kind.name(),
                        time { datetime: "{event.at.to_rfc3339()}", {clock(event.at)} }
                        span { {lang.event(&event.event.kind)} }
                        if who {
                            span { class: "xl-muted xl-actor", {lang.actor(&event.actor.kind)} }
                        }
                    }
                }
            }
        }
    }
}
