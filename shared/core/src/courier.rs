//! The courier's day as a view-model: the stops in the planner's order, what
//! can be done at each, what is still waiting to reach the server and what
//! needs the courier's attention. Components render a [`CourierDay`] and
//! call a [`CourierSession`]; nothing here draws.
//!
//! Offline first: every action is written to the outbox before it returns
//! and its outcome is shown at once, predicted by the same state machine the
//! server runs, until the server's own answer replaces it. A refused change
//! drops its prediction and is listed with the server's reason.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use xianlu_domain::machine::apply;
use xianlu_domain::operations::{CourierDuty, CourierRoute, DutyChange, EtaView, PlannedKind};
use xianlu_domain::order::TimeWindow;
use xianlu_domain::wire::{LatLng, OrderView, StreamEvent, Topic};
use xianlu_domain::{Command, CourierId, EventKind, Order, OrderId, OrderNumber, Status, TemperatureClass};

use crate::api::{ApiClient, OrderQuery};
use crate::cache::OrderCache;
use crate::error::{CoreError, CoreResult, NextStep};
use crate::live::{Lifecycle, Shared};
use crate::location::{Fix, LocationShipper, Tracker, TrackerSettings};
use crate::outbox::{Operation, Outbox, OutboxItem, OutboxSettings, OutboxStatus};
use crate::push::{ConnectionState, PushEvent, PushSettings};
use crate::report::{AttachedPhoto, ExceptionReport, drop_off_operations, file_report};
use crate::signoff::SignOff;
use crate::store::{ItemState, Store};

/// One stop of the day.
#[derive(Debug, Clone, PartialEq)]
pub struct DayStop {
    pub order_id: OrderId,
    pub order_number: OrderNumber,
    /// Collect the goods from a stopped van, or deliver them.
    pub kind: PlannedKind,
    /// As the server has it, or as predicted while a change waits to be sent.
    pub status: Status,
    pub business_name: String,
    pub address: String,
    pub location: Option<LatLng>,
    /// The window promised to the customer.
    pub window: TimeWindow,
    pub planned_arrival: Option<DateTime<Utc>>,
    /// The live estimate as the customer sees it.
    pub eta: Option<EtaView>,
    /// Chilled or frozen goods aboard.
    pub cold: bool,
    pub weight_g: i64,
    /// The geofence saw the courier at the door.
    pub arrived: bool,
    /// Changes of this order still waiting to reach the server.
    pub waiting: bool,
}

/// What the courier can do with an order now, one tap each (plus a confirmation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Take the packed goods at the warehouse.
    PickUp,
    /// At the customer's door (sends the current position so the server sees it too).
    Arrived,
    /// Check the lines with the customer, who signs on the screen.
    Deliver,
    /// The customer is absent or closed, or the address is wrong.
    FailedAttempt,
    /// Leave the goods with a photo after a failed attempt.
    DropOff,
    /// Something went wrong: accident, breakdown, refusal, damage…
    Report,
}

/// Something the courier should notice.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub order_id: OrderId,
    pub order_number: OrderNumber,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// A new order on this courier's route.
    Assigned,
    /// Another courier's goods, to be collected (after their accident).
    Reassigned,
    /// The order went to another courier.
    TakenAway,
    /// The order was cancelled.
    Cancelled,
}

/// A change the server refused, and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention {
    pub item: i64,
    pub order_id: Option<OrderId>,
    pub order_number: Option<OrderNumber>,
    /// `SIGN`, `DISPATCH`, `EVIDENCE`, `POSITIONS`, `VEHICLE_EXCEPTION`…
    pub what: String,
    /// The server's words.
    pub reason: String,
    pub code: String,
    pub next: NextStep,
}

/// Everything the courier app shows.
#[derive(Debug, Clone, PartialEq)]
pub struct CourierDay {
    pub courier_id: CourierId,
    pub duty: Option<CourierDuty>,
    /// Open stops: the planned route first, in its order, then assigned
    /// orders the plan does not hold (waiting for the office, say).
    pub stops: Vec<DayStop>,
    /// Orders finished today (signed, returned…), latest first.
    pub done: Vec<DayStop>,
    pub route: Option<CourierRoute>,
    pub notices: Vec<Notice>,
    pub attention: Vec<Attention>,
    /// Changes waiting to be sent (including those needing attention).
    pub waiting: usize,
    /// Whether the server answered the last time it was asked.
    pub online: bool,
    pub connection: ConnectionState,
    pub position: Option<LatLng>,
    /// Why the day could not be loaded or refreshed, if it could not.
    pub problem: Option<String>,
    known: BTreeMap<OrderId, OrderView>,
    /// Predicted orders, until the server's copy catches up.
    predicted: HashMap<OrderId, Prediction>,
    /// Lanes with changes still to send (not refused).
    sending: HashSet<String>,
    /// Lanes held by a refused change.
    refused: HashSet<String>,
    arrived: HashSet<OrderId>,
    /// Orders whose goods this courier has collected from a stopped van.
    collected: HashSet<OrderId>,
    /// Numbers of every order seen, also after it left this device (to name refusals).
    numbers: HashMap<OrderId, OrderNumber>,
}

/// An order as it will be once a change waiting in the outbox lands.
#[derive(Debug, Clone, PartialEq)]
struct Prediction {
    /// The outbox lane that carries the change.
    lane: String,
    order: Order,
    /// The version the change was predicted from: a server copy newer than
    /// this has seen it (or something else happened first).
    base: u64,
}

/// What an event asks the session to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fetch {
    pub order: Option<(OrderId, u64)>,
    pub route: bool,
}

fn lane_of(order: OrderId) -> String {
    format!("order:{order}")
}

impl CourierDay {
    pub fn new(courier_id: CourierId) -> CourierDay {
        CourierDay {
            courier_id,
            duty: None,
            stops: Vec::new(),
            done: Vec::new(),
            route: None,
            notices: Vec::new(),
            attention: Vec::new(),
            waiting: 0,
            online: false,
            connection: ConnectionState::Connecting { attempt: 0 },
            position: None,
            problem: None,
            known: BTreeMap::new(),
            predicted: HashMap::new(),
            sending: HashSet::new(),
            refused: HashSet::new(),
            arrived: HashSet::new(),
            collected: HashSet::new(),
            numbers: HashMap::new(),
        }
    }

    /// The order as shown: predicted while a change of it waits to be sent.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        let mut view = self.known.get(&id)?.clone();
        if let Some(p) = self.predicted.get(&id) {
            view.status = p.order.status;
            view.order = p.order.clone();
        }
        Some(view)
    }

    /// The orders this device knows the courier holds.
    pub fn orders(&self) -> Vec<Order> {
        self.known.keys().filter_map(|id| self.order(*id)).map(|v| v.order).collect()
    }

    /// Takes the server's copy of an order (an older copy never replaces a newer one).
    pub fn upsert(&mut self, view: OrderView) {
        if self.known.get(&view.order.id).is_some_and(|k| k.order.version > view.order.version) {
            return;
        }
        for event in &view.timeline {
            match event.event.kind {
                EventKind::ArrivedAtCustomer { courier_id } if courier_id == self.courier_id => {
                    self.arrived.insert(view.order.id);
                }
                EventKind::GoodsCollected { courier_id, .. } if courier_id == self.courier_id => {
                    self.collected.insert(view.order.id);
                }
                _ => {}
            }
        }
        self.numbers.insert(view.order.id, view.order.number.clone());
        self.known.insert(view.order.id, view);
        self.settle();
        self.rebuild();
    }

    /// Keeps only these orders (a fresh list from the server), and takes them.
    pub fn replace_orders(&mut self, views: Vec<OrderView>) {
        let ids: HashSet<OrderId> = views.iter().map(|v| v.order.id).collect();
        self.known.retain(|id, _| ids.contains(id));
        for view in views {
            self.upsert(view);
        }
        self.rebuild();
    }

    pub fn set_route(&mut self, route: Option<CourierRoute>) {
        self.route = route;
        self.rebuild();
    }

    /// The outbox as it is now: how many changes wait, which lanes are still
    /// sending (their predictions stay) and which were refused.
    pub fn set_outbox(&mut self, status: &OutboxStatus, items: &[OutboxItem]) {
        self.waiting = status.waiting;
        self.online = status.online || self.online && status.waiting == 0;
        self.sending = items.iter().filter(|i| i.state != ItemState::Attention).map(|i| i.lane.clone()).collect();
        self.attention = items
            .iter()
            .filter(|i| i.state == ItemState::Attention)
            .map(|item| {
                let (order_id, what) = match &item.operation {
                    Ok(Operation::Command { order_id, command, .. }) => (Some(*order_id), command.name().to_owned()),
                    Ok(Operation::Evidence { order_id, .. }) => (Some(*order_id), "EVIDENCE".to_owned()),
                    Ok(Operation::Positions { .. }) => (None, "POSITIONS".to_owned()),
                    Ok(Operation::VehicleException { .. }) => (None, "VEHICLE_EXCEPTION".to_owned()),
                    Ok(Operation::CreateOrder { .. }) => (None, "CREATE_ORDER".to_owned()),
                    Err(_) => (None, "UNREADABLE".to_owned()),
                };
                let error = item.error.clone();
                Attention {
                    item: item.id,
                    order_number: order_id.and_then(|id| self.numbers.get(&id)).cloned(),
                    order_id,
                    what,
                    reason: error.as_ref().map_or_else(String::new, |e| e.detail.clone()),
                    code: error.as_ref().map_or_else(String::new, |e| e.code.clone()),
                    next: error.as_ref().map_or(NextStep::RetryLater, |e| e.next_step()),
                }
            })
            .collect();
        self.refused = items.iter().filter(|i| i.state == ItemState::Attention).map(|i| i.lane.clone()).collect();
        self.settle();
        self.rebuild();
    }

    /// Drops predictions the server has caught up with, or refused.
    fn settle(&mut self) {
        let (known, sending, refused) = (&self.known, &self.sending, &self.refused);
        self.predicted.retain(|id, p| {
            let behind = known.get(id).is_none_or(|v| v.order.version <= p.base);
            sending.contains(&p.lane) || (behind && !refused.contains(&p.lane))
        });
    }

    /// Shows the outcome of a command at once, as the server's state machine
    /// will decide it; `Err` if it cannot apply to the order as known.
    pub fn predict(&mut self, id: OrderId, command: &Command, lane: String, at: DateTime<Utc>) -> CoreResult<()> {
        let (base, order) = self.outcome(id, command, at)?;
        self.sending.insert(lane.clone());
        self.predicted.insert(id, Prediction { lane, order, base });
        self.rebuild();
        Ok(())
    }

    /// The order as the command would leave it, and the version it starts
    /// from; `Err` if the command cannot apply to the order as shown.
    pub fn outcome(&self, id: OrderId, command: &Command, at: DateTime<Utc>) -> CoreResult<(u64, Order)> {
        let view = self.order(id).ok_or_else(|| CoreError::Refused(format!("order {id} is not on this device")))?;
        let next = apply(&view.order, command, at).map_err(|r| CoreError::Refused(r.to_string()))?;
        Ok((view.order.version, next.order))
    }

    /// One event from the courier's stream: updates what it can in place and
    /// says what to fetch.
    pub fn apply_event(&mut self, event: &StreamEvent) -> Fetch {
        let id = event.order_id;
        let me = self.courier_id;
        let notice = |kind| Notice { kind, order_id: id, order_number: event.order_number.clone(), at: event.at };
        let mut fetch = Fetch::default();
        self.numbers.insert(id, event.order_number.clone());
        match &event.event.kind {
            EventKind::ArrivedAtCustomer { courier_id } if *courier_id == me => {
                self.arrived.insert(id);
            }
            EventKind::EtaUpdated { eta, window, stops_before, .. } => {
                if let Some(view) = self.known.get_mut(&id) {
                    view.eta = Some(*eta);
                    view.eta_window = Some(EtaView {
                        eta: *eta,
                        window: *window,
                        stops_before: *stops_before,
                        computed_at: event.at,
                    });
                }
            }
            EventKind::GoodsCollected { courier_id, .. } if *courier_id == me => {
                self.collected.insert(id);
                fetch.route = true;
            }
            EventKind::RouteSequenced { courier_id, .. } => {
                fetch.route = *courier_id == me;
            }
            EventKind::CourierAssigned { courier_id, previous } => {
                if *courier_id == me && *previous != Some(me) {
                    self.notices.push(notice(NoticeKind::Assigned));
                } else if *courier_id != me && *previous == Some(me) {
                    self.notices.push(notice(NoticeKind::TakenAway));
                }
                fetch.route = true;
            }
            EventKind::DeliveryResumed { courier_id, reassigned: true } if *courier_id == me => {
                self.notices.push(notice(NoticeKind::Reassigned));
                fetch.route = true;
            }
            EventKind::HandedOver { from, to } if *from == me && *to != me => {
                self.notices.push(notice(NoticeKind::TakenAway));
                fetch.route = true;
            }
            EventKind::Cancelled { .. } => {
                self.notices.push(notice(NoticeKind::Cancelled));
                fetch.route = true;
            }
            _ => {}
        }
        let newer = self.known.get(&id).is_none_or(|v| v.order.version < event.version);
        if !event.event.kind.is_live_update() && newer {
            fetch.order = Some((id, event.version));
        }
        self.rebuild();
        fetch
    }

    /// Drops the order if it is no longer this courier's.
    fn forget(&mut self, id: OrderId) {
        self.known.remove(&id);
        self.predicted.remove(&id);
        self.rebuild();
    }

    pub fn dismiss_notices(&mut self) {
        self.notices.clear();
    }

    /// What the courier can do with the order now.
    pub fn actions(&self, id: OrderId) -> Vec<Action> {
        let Some(view) = self.order(id) else { return Vec::new() };
        let waiting = self.sending.contains(&lane_of(id));
        match view.status {
            Status::Packed => vec![Action::PickUp],
            Status::Delivering if self.arrived.contains(&id) => {
                vec![Action::Deliver, Action::FailedAttempt, Action::Report]
            }
            Status::Delivering => vec![Action::Arrived, Action::Deliver, Action::FailedAttempt, Action::Report],
            Status::DeliveryFailed if !waiting => vec![Action::DropOff],
            _ => Vec::new(),
        }
    }

    fn stop_of(&self, view: &OrderView, kind: PlannedKind, planned: Option<DateTime<Utc>>) -> DayStop {
        let order = self.predicted.get(&view.order.id).map_or(&view.order, |p| &p.order);
        let customer = view.customer.as_ref();
        let location = match kind {
            PlannedKind::Delivery => customer.map(|c| c.location),
            PlannedKind::Pickup => self
                .route
                .as_ref()
                .and_then(|r| r.stops.iter().find(|s| s.order_id == order.id && s.kind == PlannedKind::Pickup))
                .map(|s| s.location),
        };
        DayStop {
            order_id: order.id,
            order_number: order.number.clone(),
            kind,
            status: order.status,
            business_name: customer.map_or_else(String::new, |c| c.business_name.clone()),
            address: customer.map_or_else(String::new, |c| c.address.clone()),
            location,
            window: order.requested_window,
            planned_arrival: planned,
            eta: view.eta_window,
            cold: order.temperature() > TemperatureClass::Ambient,
            weight_g: order.shipping_weight_g(),
            arrived: self.arrived.contains(&order.id),
            waiting: self.sending.contains(&lane_of(order.id)),
        }
    }

    fn rebuild(&mut self) {
        let mut stops = Vec::new();
        let mut placed = HashSet::new();
        let mine = |v: &OrderView, predicted: Option<&Order>| {
            let order = predicted.unwrap_or(&v.order);
            order.courier_id == Some(self.courier_id) && !order.status.is_terminal()
        };
        if let Some(route) = &self.route {
            for planned in &route.stops {
                let Some(view) = self.known.get(&planned.order_id) else { continue };
                if !mine(view, self.predicted.get(&planned.order_id).map(|p| &p.order)) {
                    continue;
                }
                // A pickup is done once the goods are aboard.
                if planned.kind == PlannedKind::Pickup && self.collected.contains(&planned.order_id) {
                    continue;
                }
                stops.push(self.stop_of(view, planned.kind, Some(planned.planned_arrival)));
                placed.insert(planned.order_id);
            }
        }
        let mut rest: Vec<DayStop> = self
            .known
            .values()
            .filter(|v| !placed.contains(&v.order.id) && mine(v, self.predicted.get(&v.order.id).map(|p| &p.order)))
            .map(|v| self.stop_of(v, PlannedKind::Delivery, None))
            .collect();
        rest.sort_by_key(|s| (s.window.start, s.order_number.to_string()));
        stops.extend(rest);
        let mut done: Vec<(DateTime<Utc>, DayStop)> = self
            .known
            .values()
            .filter(|v| self.predicted.get(&v.order.id).map_or(v.order.status, |p| p.order.status).is_terminal())
            .map(|v| (v.order.updated_at, self.stop_of(v, PlannedKind::Delivery, None)))
            .collect();
        done.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        self.stops = stops;
        self.done = done.into_iter().map(|(_, s)| s).collect();
    }

    /// The next place to drive to.
    pub fn next_stop(&self) -> Option<&DayStop> {
        self.stops.iter().find(|s| s.location.is_some() && s.status != Status::Packed)
    }
}

/// How a session talks to the server (tests pass faster retries).
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    pub outbox: OutboxSettings,
    pub push: PushSettings,
    pub tracker: TrackerSettings,
    /// How often the day is fetched again while the stream is down.
    pub refresh: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            outbox: OutboxSettings::default(),
            push: PushSettings::default(),
            tracker: TrackerSettings::default(),
            refresh: Duration::from_secs(30),
        }
    }
}

/// A logged-in courier's running day. Cheap to clone.
#[derive(Clone)]
pub struct CourierSession {
    inner: Arc<Inner>,
}

struct Inner {
    api: ApiClient,
    courier: CourierId,
    outbox: Outbox,
    cache: OrderCache,
    day: Shared<CourierDay>,
    shipper: Mutex<LocationShipper>,
    life: Lifecycle,
    settings: SessionSettings,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for CourierSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CourierSession").field("courier", &self.inner.courier).finish_non_exhaustive()
    }
}

impl CourierSession {
    /// Starts the day of the logged-in courier over a store (the app's SQLite
    /// file; memory in a browser): the orders cached by an earlier run are
    /// shown at once, changes left in the outbox are sent, then the day is
    /// fetched and followed live.
    pub fn start(api: ApiClient, store: Arc<dyn Store>, settings: SessionSettings) -> CoreResult<CourierSession> {
        let courier = api
            .me()
            .and_then(|me| me.courier_id)
            .ok_or_else(|| CoreError::Refused("this account is not a courier's".into()))?;
        let outbox = Outbox::start(store.clone(), api.clone(), settings.outbox);
        let cache = OrderCache::new(store.clone());
        let mut day = CourierDay::new(courier);
        let cached: Vec<OrderView> = cache.all()?.into_iter().filter(|v| v.order.courier_id == Some(courier)).collect();
        day.replace_orders(cached);
        let shipper = LocationShipper::new(Tracker::new(settings.tracker), courier, outbox.clone(), store.clone());
        let session = CourierSession {
            inner: Arc::new(Inner {
                api,
                courier,
                outbox,
                cache,
                day: Shared::new(day),
                shipper: Mutex::new(shipper),
                life: Lifecycle::default(),
                settings,
                store,
            }),
        };
        session.sync_outbox();
        session.predict_waiting();
        let runner = session.clone();
        crate::rt::spawn(async move { runner.run().await });
        Ok(session)
    }

    pub fn courier(&self) -> CourierId {
        self.inner.courier
    }

    pub fn api(&self) -> &ApiClient {
        &self.inner.api
    }

    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// The day as it is now.
    pub fn day(&self) -> CourierDay {
        self.inner.day.get()
    }

    /// The day after every change.
    pub fn watch(&self) -> watch::Receiver<CourierDay> {
        self.inner.day.watch()
    }

    fn lock(&self) -> watch::Ref<'_, CourierDay> {
        self.inner.day.lock()
    }

    fn update<T>(&self, change: impl FnOnce(&mut CourierDay) -> T) -> T {
        self.inner.day.update(change)
    }

    /// Stops following (the outbox keeps what it holds for the next start).
    pub fn stop(&self) {
        self.inner.life.stop();
        self.inner.outbox.stop();
    }

    /// Fetches the day again now.
    pub fn refresh(&self) {
        self.inner.life.reload.notify_one();
    }

    // ---- actions ------------------------------------------------------

    /// Enqueues the operations of an action and shows its predicted outcome
    /// on `orders` at once.
    fn act(&self, operations: Vec<Operation>, predictions: Vec<(OrderId, Command)>, lane: String) -> CoreResult<()> {
        let at = crate::rt::now();
        // Checked against the known order first, so a change that cannot apply is never stored.
        {
            let day = self.lock();
            for (id, command) in &predictions {
                day.outcome(*id, command, at)?;
            }
        }
        self.inner.outbox.enqueue_all(operations)?;
        self.update(|day| {
            for (id, command) in &predictions {
                let lane = if lane.is_empty() { lane_of(*id) } else { lane.clone() };
                let _ = day.predict(*id, command, lane, at);
            }
        });
        self.sync_outbox();
        Ok(())
    }

    /// What an earlier run left in the outbox is shown as done, as when it was done.
    fn predict_waiting(&self) {
        let items = self.inner.outbox.items().unwrap_or_default();
        let at = crate::rt::now();
        self.update(|day| {
            for item in items.iter().filter(|i| i.state == ItemState::Pending) {
                if let Ok(Operation::Command { order_id, command, .. }) = &item.operation {
                    let _ = day.predict(*order_id, command, item.lane.clone(), at);
                }
            }
        });
    }

    /// Takes the packed goods at the warehouse.
    pub fn pick_up(&self, id: OrderId) -> CoreResult<()> {
        let command = Command::Dispatch;
        let operation = Operation::Command { order_id: id, command: command.clone(), expected_version: None };
        self.act(vec![operation], vec![(id, command)], String::new())
    }

    /// At the door: ships the positions waiting so the server's geofence sees it too.
    pub fn arrived(&self, id: OrderId) -> CoreResult<()> {
        self.inner.shipper.lock().unwrap_or_else(|e| e.into_inner()).flush()?;
        self.update(|day| {
            day.arrived.insert(id);
            day.rebuild();
        });
        Ok(())
    }

    /// The customer signed on the screen (lines checked in `sign_off`),
    /// with a photo of the signed paper note if one was taken.
    pub fn sign(&self, sign_off: &SignOff, delivery_note: Option<&AttachedPhoto>) -> CoreResult<()> {
        let position = self.lock().position;
        let at = crate::rt::now();
        let operations = sign_off.operations(at, position, delivery_note)?;
        let command = operations
            .iter()
            .find_map(|op| match op {
                Operation::Command { command, .. } => Some(command.clone()),
                _ => None,
            })
            .ok_or_else(|| CoreError::Refused("nothing to sign".into()))?;
        self.act(operations, vec![(sign_off.order_id, command)], String::new())
    }

    /// Files a report from one order: a failed attempt, a refusal, damage —
    /// or an accident or breakdown, which covers every order aboard.
    pub fn report(&self, id: OrderId, report: &ExceptionReport) -> CoreResult<()> {
        let known = self.lock().orders();
        let operations = file_report(report, id, self.inner.courier, &known);
        let command = report.reason.command(&report.note);
        let (orders, lane) = if report.reason.is_vehicle_level() {
            let aboard = crate::report::affected_orders(report.reason, id, self.inner.courier, &known);
            (aboard, format!("vehicle:{}", self.inner.courier))
        } else {
            (vec![id], String::new())
        };
        let predictions = orders.into_iter().map(|o| (o, command.clone())).collect();
        self.act(operations, predictions, lane)
    }

    /// Leaves the goods at the door with a photo (after a failed attempt).
    pub fn drop_off(&self, id: OrderId, photo: &AttachedPhoto) -> CoreResult<()> {
        let command = Command::DropOffUnattended { photo_sha256: photo.sha256.clone() };
        self.act(drop_off_operations(id, photo), vec![(id, command)], String::new())
    }

    /// Sends a refused change again (under a new key).
    pub fn retry(&self, item: i64) -> CoreResult<()> {
        self.inner.outbox.retry(item)?;
        self.sync_outbox();
        Ok(())
    }

    /// Gives up a refused change; the server's state stands.
    pub fn cancel(&self, item: i64) -> CoreResult<()> {
        self.inner.outbox.cancel(item)?;
        self.sync_outbox();
        self.refresh();
        Ok(())
    }

    pub fn dismiss_notices(&self) {
        self.update(CourierDay::dismiss_notices);
    }

    /// A position from the platform (GPS, or a simulated trail on the desktop).
    pub fn offer_fix(&self, fix: Fix) -> CoreResult<()> {
        let next = self.lock().next_stop().and_then(|s| s.location);
        {
            let mut shipper = self.inner.shipper.lock().unwrap_or_else(|e| e.into_inner());
            shipper.tracker.set_next_stop(next);
            shipper.offer(fix)?;
        }
        self.update(|day| day.position = Some(fix.position));
        self.sync_outbox();
        Ok(())
    }

    /// Goes on or off duty (needs the network: the planner acts on it at once).
    pub async fn set_duty(&self, on_duty: bool, shift_ends_at: Option<DateTime<Utc>>) -> CoreResult<CourierDuty> {
        if !on_duty {
            self.inner.shipper.lock().unwrap_or_else(|e| e.into_inner()).flush()?;
        }
        let duty = self.inner.api.set_duty(self.inner.courier, &DutyChange { on_duty, shift_ends_at }).await?;
        self.update(|day| day.duty = Some(duty));
        Ok(duty)
    }

    // ---- following ----------------------------------------------------

    fn sync_outbox(&self) {
        let status = self.inner.outbox.status();
        let items = self.inner.outbox.items().unwrap_or_default();
        self.update(|day| day.set_outbox(&status, &items));
    }

    /// Fetches duty, the assigned orders and the route.
    async fn load(&self) -> CoreResult<()> {
        let api = &self.inner.api;
        let courier = self.inner.courier;
        let duty = api.duty(courier).await?;
        let mut views = Vec::new();
        let mut cursor = None;
        loop {
            let query = OrderQuery { courier_id: Some(courier), limit: Some(200), cursor, ..OrderQuery::default() };
            let page = api.orders(&query).await?;
            let today = crate::rt::now() - chrono::TimeDelta::hours(18);
            for order in page.items.iter().filter(|o| !o.status.is_terminal() || o.updated_at > today) {
                views.push(self.inner.cache.load(api, order.id).await?);
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let route = api.courier_route(courier).await?;
        self.update(|day| {
            day.duty = Some(duty);
            day.replace_orders(views);
            day.set_route(route);
            day.online = true;
            day.problem = None;
        });
        Ok(())
    }

    async fn fetch(&self, fetch: Fetch) {
        let api = &self.inner.api;
        if let Some((id, version)) = fetch.order {
            match self.inner.cache.refresh_to(api, id, version).await.and_then(|_| self.inner.cache.get(id)) {
                Ok(Some(view)) if view.order.courier_id == Some(self.inner.courier) => self.update(|d| d.upsert(view)),
                Ok(Some(view)) => {
                    let _ = self.inner.cache.put(&view);
                    self.update(|d| d.forget(id));
                }
                // No longer this courier's to see.
                Err(CoreError::Server { problem }) if problem.status == 404 || problem.status == 403 => {
                    self.update(|d| d.forget(id));
                }
                _ => {}
            }
        }
        if fetch.route
            && let Ok(route) = api.courier_route(self.inner.courier).await
        {
            self.update(|d| d.set_route(route));
        }
    }

    async fn run(self) {
        let loaded = self
            .inner
            .life
            .load_until_done(
                self.inner.settings.push.backoff,
                || self.load(),
                |error| {
                    self.update(|d| {
                        d.online = false;
                        d.problem = Some(error.to_string());
                    })
                },
            )
            .await;
        if !loaded {
            return;
        }
        let (mut connection, mut events) = self.inner.life.follow(
            &self.inner.api,
            &self.inner.store,
            vec![Topic::Courier(self.inner.courier)],
            self.inner.settings.push,
        );
        let mut outbox = self.inner.outbox.watch();
        let refresh = self.inner.settings.refresh;
        while !self.inner.life.stopped() {
            tokio::select! {
                event = events.recv() => match event {
                    Some(PushEvent::Event(event)) => {
                        let fetch = self.update(|d| d.apply_event(&event));
                        self.fetch(fetch).await;
                    }
                    Some(PushEvent::Resynced { .. }) => { let _ = self.load().await; }
                    Some(PushEvent::CaughtUp { .. }) => {}
                    None => return,
                },
                changed = connection.changed() => {
                    if changed.is_err() { return; }
                    let state = connection.borrow().clone();
                    let live = state == ConnectionState::Live;
                    self.update(|d| d.connection = state);
                    if live {
                        // Back online: what happened meanwhile is in the stream, but the route may have moved.
                        let _ = self.load().await;
                    }
                }
                changed = outbox.changed() => {
                    if changed.is_err() { return; }
                    self.sync_outbox();
                }
                _ = self.inner.life.reload.notified() => {
                    if let Err(error) = self.load().await {
                        self.update(|d| { d.online = false; d.problem = Some(error.to_string()); });
                    }
                }
                _ = crate::rt::sleep(refresh) => {
                    let live = self.lock().connection == ConnectionState::Live;
                    if !live && self.load().await.is_err() {
                        self.update(|d| d.online = false);
                    }
                }
            }
        }
    }
}
