//! Sign-off on a screen, for the customer's own phone and the courier's at
//! the door: each line accepted or partly refused with a reason, and a
//! drawing pad whose strokes go to the core's signature capture.

use dioxus::prelude::*;
use xianlu_core::signature::{SignatureCapture, StrokePoint};
use xianlu_core::signoff::{LineCheck, SignOff};
use xianlu_domain::{Dimension, RejectReason, Unit};

use crate::i18n::{Key, Lang};

pub const REASONS: [RejectReason; 5] = [
    RejectReason::Shortage,
    RejectReason::Damaged,
    RejectReason::Quality,
    RejectReason::WrongItem,
    RejectReason::Other,
];

/// The unit of a base quantity: grams or pieces.
pub fn base_unit(lang: Lang, dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::Grams => lang.unit(Unit::G),
        Dimension::Pieces => lang.unit(Unit::Piece),
    }
}

/// The drawing pad's size, in its own units (the signature's coordinates).
pub const PAD_WIDTH: f32 = 400.0;
pub const PAD_HEIGHT: f32 = 200.0;

/// The lines to check and the pad to sign on, feeding a sign-off being
/// prepared; a refusal the sign-off does not take goes to `error`.
#[component]
pub fn SignOffForm(sign_off: Signal<Option<SignOff>>, error: Signal<Option<String>>, lang: Lang) -> Element {
    let lines = sign_off.read().as_ref().map(|s| s.lines.clone()).unwrap_or_default();
    rsx! {
        LineChecks {
            lines, lang,
            on_change: move |(line_no, base, reason): Refusal| {
                if let Some(s) = sign_off.write().as_mut()
                    && let Err(problem) = s.reject(line_no, base, reason)
                {
                    error.set(Some(problem.to_string()));
                }
            },
        }
        SignaturePad {
            width: PAD_WIDTH, height: PAD_HEIGHT, lang,
            on_point: move |p: PadPoint| {
                if let Some(s) = sign_off.write().as_mut() {
                    draw_on(&mut s.signature, p);
                }
            },
            on_clear: move |_| {
                if let Some(s) = sign_off.write().as_mut() {
                    s.signature.clear();
                }
            },
        }
    }
}

/// A line refused in part: (line, grams or pieces refused, reason).
pub type Refusal = (u16, i64, RejectReason);

/// The lines to check: for each, how much is refused and why.
#[component]
pub fn LineChecks(lines: Vec<LineCheck>, lang: Lang, on_change: EventHandler<Refusal>) -> Element {
    rsx! {
        p { class: "xl-muted", {lang.t(Key::CheckLines)} }
        for line in lines {
            div { class: "xl-line-check", key: "{line.line_no}",
                span { "{line.name} · {line.delivered_base} {base_unit(lang, line.dimension)}" }
                input {
                    class: "xl-refuse", r#type: "number", min: "0", max: "{line.delivered_base}", value: "{line.rejected_base}",
                    "aria-label": lang.t(Key::Refuse),
                    oninput: move |e| {
                        let base = e.value().parse::<i64>().unwrap_or(0);
                        on_change.call((line.line_no, base, line.reason.unwrap_or(RejectReason::Shortage)));
                    }
                }
                select {
                    class: "xl-refuse-reason",
                    onchange: move |e| {
                        let reason = REASONS.get(e.value().parse::<usize>().unwrap_or(0)).copied().unwrap_or(RejectReason::Other);
                        on_change.call((line.line_no, line.rejected_base, reason));
                    },
                    for (n, reason) in REASONS.iter().enumerate() {
                        option { value: "{n}", selected: line.reason == Some(*reason), {lang.reason(*reason)} }
                    }
                }
            }
        }
    }
}

/// A point of a stroke on the pad, in the pad's own coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PadPoint {
    pub x: f32,
    pub y: f32,
    /// The first point of a new stroke.
    pub begin: bool,
    /// Milliseconds since the stroke began.
    pub t_ms: u32,
}

/// Adds a point from the pad to a signature being captured.
pub fn draw_on(signature: &mut SignatureCapture, p: PadPoint) {
    if p.begin {
        signature.begin_stroke();
    }
    signature.add_point(StrokePoint { x: p.x, y: p.y, t_ms: p.t_ms, pressure: 0.5 });
}

/// A drawing pad of `width` × `height` units: every point of every stroke
/// is passed on (to the core's `SignatureCapture`) and drawn.
#[component]
pub fn SignaturePad(
    width: f32,
    height: f32,
    lang: Lang,
    on_point: EventHandler<PadPoint>,
    on_clear: EventHandler<()>,
) -> Element {
    let mut strokes: Signal<Vec<Vec<(f32, f32)>>> = use_signal(Vec::new);
    let mut drawing = use_signal(|| false);
    let mut began = use_signal(|| 0i64);
    let mut add = move |x: f64, y: f64, begin: bool| {
        let (x, y) = (x as f32, y as f32);
        let now = chrono::Utc::now().timestamp_millis();
        if begin {
            began.set(now);
        }
        let t_ms = u32::try_from((now - began()).max(0)).unwrap_or(u32::MAX);
        on_point.call(PadPoint { x, y, begin, t_ms });
        let mut all = strokes.write();
        if begin {
            all.push(Vec::new());
        }
        if let Some(last) = all.last_mut() {
            last.push((x, y));
        }
    };
    let lines: Vec<String> = strokes
        .read()
        .iter()
        .map(|s| s.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect::<Vec<_>>().join(" "))
        .collect();
    rsx! {
        p { {lang.t(Key::SignHere)} }
        svg {
            id: "xl-pad", class: "xl-pad", view_box: "0 0 {width} {height}",
            onpointerdown: move |e| {
                drawing.set(true);
                let p = e.element_coordinates();
                add(p.x, p.y, true);
            },
            onpointermove: move |e| {
                if drawing() {
                    let p = e.element_coordinates();
                    add(p.x, p.y, false);
                }
            },
            onpointerup: move |_| drawing.set(false),
            onpointerleave: move |_| drawing.set(false),
            for (n, points) in lines.into_iter().enumerate() {
                polyline { key: "{n}", points: "{points}" }
            }
        }
        button {
            id: "xl-pad-clear",
            onclick: move |_| {
                strokes.set(Vec::new());
                on_clear.call(());
            },
            {lang.t(Key::Clear)}
        }
    }
}

/// The log-in form: server, user name, password. `on_submit` gets the three.
#[component]
pub fn LogInForm(
    lang: Lang,
    server: String,
    busy: bool,
    error: Option<String>,
    on_submit: EventHandler<(String, String, String)>,
) -> Element {
    let mut server = use_signal(|| server);
    let mut username = use_signal(String::new);
    let mut password = use_signal(String::new);
    rsx! {
        div { class: "xl-form",
            label { {lang.t(Key::Server)} input { id: "xl-server", initial_value: "{server}", oninput: move |e| server.set(e.value()) } }
            label { {lang.t(Key::Username)} input { id: "xl-username", oninput: move |e| username.set(e.value()) } }
            label { {lang.t(Key::Password)}
                input { id: "xl-password", r#type: "password", oninput: move |e| password.set(e.value()) }
            }
            button {
                id: "xl-login", class: "xl-primary", disabled: busy,
                onclick: move |_| on_submit.call((server(), username(), password())),
                {lang.t(Key::LogIn)}
            }
            if let Some(message) = error {
                p { class: "xl-error", "{message}" }
            }
        }
    }
}
