//! The customer's view of one order as a view-model: what the tracking page
//! (a link opened in any browser) and the installed app's order screen show,
//! and how it follows the server. Components render a [`TrackingScreen`];
//! nothing here draws.

use std::sync::Arc;

use xianlu_domain::wire::{OrderView, StreamEvent, Topic};
use xianlu_domain::{EventKind, OrderId, Status};

use crate::api::ApiClient;
use crate::error::{CoreError, CoreResult, NextStep};
use crate::push::{ConnectionState, PushClient, PushEvent, PushSettings};
use crate::retry::Backoff;
use crate::store::MemoryStore;
use crate::tracking::TrackingModel;

/// Where the page is.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Loading,
    /// The order is shown (and followed live while the stream is up).
    Ready,
    /// The link worked once and has expired.
    Expired,
    /// No such link or order (or not this viewer's).
    NotFound,
    /// The server cannot be reached; the page keeps trying.
    Unreachable {
        attempt: u32,
        reason: String,
    },
}

/// Everything the order screen shows.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackingScreen {
    pub phase: Phase,
    pub view: Option<OrderView>,
    /// The map: trail, position, last seen, ETA, the arriving-soon notice.
    pub map: TrackingModel,
    /// Changes of the order, oldest first (positions and estimates are shown
    /// on the map, not listed).
    pub timeline: Vec<StreamEvent>,
    /// The push stream, as a banner shows it.
    pub connection: ConnectionState,
}

impl Default for TrackingScreen {
    fn default() -> Self {
        TrackingScreen {
            phase: Phase::Loading,
            view: None,
            map: TrackingModel::empty(),
            timeline: Vec::new(),
            connection: ConnectionState::Connecting { attempt: 0 },
        }
    }
}

impl TrackingScreen {
    /// The order as loaded.
    pub fn loaded(&mut self, view: OrderView) {
        self.map = TrackingModel::for_order(&view);
        self.timeline = view.timeline.iter().filter(|e| !e.event.kind.is_live_update()).cloned().collect();
        // What the timeline holds (estimates, positions, the notice) seeds the map.
        for event in &view.timeline {
            self.map.apply(event);
        }
        self.view = Some(view);
        self.phase = Phase::Ready;
    }

    /// The order read again after a change the stream announced: its lines
    /// and version (an older copy never replaces a newer one); the map and
    /// the timeline keep what the stream built.
    pub fn refreshed(&mut self, fresh: OrderView) {
        if let Some(view) = self.view.as_mut().filter(|v| v.order.version <= fresh.order.version) {
            view.order = fresh.order;
            view.status = fresh.status;
        }
    }

    /// A load that failed: expired, not found, or not reachable (attempt `attempt`).
    pub fn failed(&mut self, error: &CoreError, attempt: u32) {
        self.phase = match (error.next_step(), error.code()) {
            (_, Some("link_expired")) => Phase::Expired,
            (NextStep::RetryLater, _) => Phase::Unreachable { attempt, reason: error.to_string() },
            _ => Phase::NotFound,
        };
    }

    /// One event of the order from the push stream.
    pub fn apply(&mut self, event: &StreamEvent) {
        let Some(view) = self.view.as_mut() else { return };
        if event.order_id != view.order.id || self.timeline.iter().any(|e| e.seq == event.seq) {
            return;
        }
        self.map.apply(event);
        match &event.event.kind {
            EventKind::EtaUpdated { eta, window, stops_before, .. } => {
                view.eta = Some(*eta);
                view.eta_window = Some(xianlu_domain::operations::EtaView {
                    eta: *eta,
                    window: *window,
                    stops_before: *stops_before,
                    computed_at: event.at,
                });
            }
            EventKind::CourierPosition { position, .. } => {
                if let Some(driver) = view.driver_info.as_mut() {
                    driver.location = Some(*position);
                }
            }
            _ => {}
        }
        if event.event.kind.is_live_update() {
            return;
        }
        view.status = event.event.to;
        view.order.status = event.event.to;
        if matches!(event.event.to, Status::Signed | Status::Cancelled | Status::Returned) {
            view.eta = None;
            view.eta_window = None;
        }
        self.timeline.push(event.clone());
    }

    pub fn cancelled(&self) -> bool {
        self.view.as_ref().is_some_and(|v| v.status == Status::Cancelled)
    }

    /// Whether the page has reached a state it cannot leave by waiting.
    pub fn settled(&self) -> bool {
        matches!(self.phase, Phase::Expired | Phase::NotFound)
    }
}

/// Follows the order of a tracking-link client: loads it (retrying while the
/// server cannot be reached), then its trail, then its events live, calling
/// `publish` with the screen after every change. Returns when the link turns
/// out expired or unknown; otherwise runs until the stream stops for good.
pub async fn follow_link(api: ApiClient, backoff: Backoff, publish: impl FnMut(&TrackingScreen)) {
    follow(api, None, backoff, publish).await;
}

/// As [`follow_link`], for a logged-in customer's own order `order`.
pub async fn follow_order(api: ApiClient, order: OrderId, backoff: Backoff, publish: impl FnMut(&TrackingScreen)) {
    follow(api, Some(order), backoff, publish).await;
}

/// The order: the logged-in customer's own, or the tracking link's.
async fn read(api: &ApiClient, order: Option<OrderId>) -> CoreResult<OrderView> {
    match order {
        Some(id) => api.order(id).await,
        None => api.tracked_order().await,
    }
}

async fn follow(api: ApiClient, order: Option<OrderId>, backoff: Backoff, mut publish: impl FnMut(&TrackingScreen)) {
    let mut screen = TrackingScreen::default();
    publish(&screen);
    let mut attempt = 0;
    loop {
        match read(&api, order).await {
            Ok(view) => {
                screen.loaded(view);
                break;
            }
            Err(error) => {
                attempt += 1;
                screen.failed(&error, attempt);
                publish(&screen);
                if screen.settled() {
                    return;
                }
                crate::rt::sleep(backoff.delay(attempt)).await;
            }
        }
    }
    let Some(id) = screen.view.as_ref().map(|v| v.order.id) else { return };
    if let Ok(trail) = api.trail(id).await {
        screen.map.set_trail(trail);
    }
    publish(&screen);
    let store = Arc::new(MemoryStore::default());
    let (push, mut events) = PushClient::start(
        api.clone(),
        store,
        vec![Topic::Order(id)],
        PushSettings { backoff, ..PushSettings::default() },
    );
    let mut state = push.watch();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(PushEvent::Event(event)) => {
                    screen.apply(&event);
                    // A change's event names it; the lines come with the order.
                    if !event.event.kind.is_live_update() {
                        publish(&screen);
                        if let Ok(fresh) = read(&api, order).await {
                            screen.refreshed(fresh);
                        }
                    }
                }
                Some(_) => {}
                None => return,
            },
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = state.borrow().clone();
                let stopped = matches!(now, ConnectionState::Stopped { .. });
                screen.connection = now;
                if stopped {
                    publish(&screen);
                    return;
                }
            }
        }
        publish(&screen);
    }
}
