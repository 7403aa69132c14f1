//! Courier operations as the parties see them: what the server observes
//! about an order on the road (geofence arrivals, the courier's position,
//! the live ETA window, the "arriving soon" notice, alerts), and the
//! thresholds a merchant sets for them.
//!
//! Observations are events that change no state: they keep the order's
//! status and version, so they never race a courier's or a clerk's command.
//! [`observe`] says whether one fits the order as it is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::machine::{Event, EventKind, Rejection};
use crate::order::{Order, Status, TimeWindow};
use crate::wire::LatLng;
use crate::{CourierId, CustomerId, MerchantId, OrderId, OrderNumber};

/// What a rule watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertRule {
    /// The ETA is past the end of the promised window (before lateness happens).
    PredictedLate,
    /// The promised window ended this many minutes ago and the order is not delivered.
    Overdue,
    PickingTooLong,
    /// Packed and not collected by a courier.
    NotCollected,
    /// No position from the courier while delivering.
    NoPosition,
    ShortUnresolved,
    /// A courier reported an exception that nobody has resolved yet.
    ExceptionOpen,
}

impl AlertRule {
    pub const ALL: [AlertRule; 7] = [
        AlertRule::PredictedLate,
        AlertRule::Overdue,
        AlertRule::PickingTooLong,
        AlertRule::NotCollected,
        AlertRule::NoPosition,
        AlertRule::ShortUnresolved,
        AlertRule::ExceptionOpen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertRule::PredictedLate => "PREDICTED_LATE",
            AlertRule::Overdue => "OVERDUE",
            AlertRule::PickingTooLong => "PICKING_TOO_LONG",
            AlertRule::NotCollected => "NOT_COLLECTED",
            AlertRule::NoPosition => "NO_POSITION",
            AlertRule::ShortUnresolved => "SHORT_UNRESOLVED",
            AlertRule::ExceptionOpen => "EXCEPTION_OPEN",
        }
    }

    pub fn parse(s: &str) -> Option<AlertRule> {
        AlertRule::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn severity(self) -> Severity {
        match self {
            AlertRule::Overdue | AlertRule::ExceptionOpen => Severity::High,
            AlertRule::PredictedLate | AlertRule::NoPosition | AlertRule::ShortUnresolved => Severity::Medium,
            AlertRule::PickingTooLong | AlertRule::NotCollected => Severity::Low,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Low,
    Medium,
    High,
}

/// An alert: one per rule per order until its condition clears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub id: Uuid,
    pub merchant_id: MerchantId,
    pub order_id: OrderId,
    pub order_number: OrderNumber,
    pub rule: AlertRule,
    pub severity: Severity,
    pub reason: String,
    pub raised_at: DateTime<Utc>,
    pub cleared_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Who acknowledged it (a user id, never a name).
    pub acknowledged_by: Option<String>,
}

impl Alert {
    /// Still holding and nobody has acknowledged it.
    pub fn is_open(&self) -> bool {
        self.cleared_at.is_none() && self.acknowledged_at.is_none()
    }
}

/// The thresholds of a merchant's rules, in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RuleThresholds {
    pub overdue_minutes: u32,
    pub picking_minutes: u32,
    pub not_collected_minutes: u32,
    pub no_position_minutes: u32,
    pub short_unresolved_minutes: u32,
}

impl Default for RuleThresholds {
    fn default() -> Self {
        RuleThresholds {
            overdue_minutes: 30,
            picking_minutes: 30,
            not_collected_minutes: 20,
            no_position_minutes: 10,
            short_unresolved_minutes: 15,
        }
    }
}

/// A merchant's settings for courier operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct OperationsSettings {
    /// Radius of the circle around each customer's door.
    pub customer_fence_m: u32,
    /// A warehouse without a drawn polygon is a circle of this radius.
    pub warehouse_fence_m: u32,
    /// Subscribers of an order get the courier's position at most this often.
    pub position_push_seconds: u32,
    /// An ETA is pushed again only when it moved by more than this.
    pub eta_push_threshold_seconds: u32,
    /// Unloading at a stop, until history says otherwise.
    pub service_seconds: u32,
    /// The customer is told "arriving in about N minutes" once the ETA is this close.
    pub arriving_soon_minutes: u32,
    /// ... and told again only if the ETA first moves back out by this much.
    pub arriving_soon_rearm_minutes: u32,
    /// Chilled and frozen goods reach the customer within this many minutes
    /// of leaving the cold room (the planner holds routes to it).
    pub cold_exposure_minutes: u32,
    /// Re-plan by itself when orders are paid or cancelled and when couriers
    /// report exceptions (otherwise plans are asked for).
    pub auto_plan: bool,
    /// A burst of changes within this many seconds causes one re-plan.
    pub plan_debounce_seconds: u32,
    /// The time a re-plan may take.
    pub plan_seconds: u32,
    /// Customers may raise after-sales matters for this many hours after signing.
    pub after_sales_hours: u32,
    pub rules: RuleThresholds,
}

impl Default for OperationsSettings {
    fn default() -> Self {
        OperationsSettings {
            customer_fence_m: 80,
            warehouse_fence_m: 60,
            position_push_seconds: 5,
            eta_push_threshold_seconds: 120,
            service_seconds: 300,
            arriving_soon_minutes: 10,
            arriving_soon_rearm_minutes: 5,
            cold_exposure_minutes: 240,
            auto_plan: false,
            plan_debounce_seconds: 3,
            plan_seconds: 2,
            after_sales_hours: 48,
            rules: RuleThresholds::default(),
        }
    }
}

impl OperationsSettings {
    /// Every value within what a deployment can sensibly use.
    pub fn check(&self) -> Result<(), Rejection> {
        let bad = |field: &str, reason: &str| Err(Rejection::Invalid { field: field.into(), reason: reason.into() });
        if !(10..=2000).contains(&self.customer_fence_m) {
            return bad("customerFenceM", "between 10 and 2000 metres");
        }
        if !(10..=2000).contains(&self.warehouse_fence_m) {
            return bad("warehouseFenceM", "between 10 and 2000 metres");
        }
        if !(1..=3600).contains(&self.position_push_seconds) {
            return bad("positionPushSeconds", "between 1 and 3600 seconds");
        }
        if self.eta_push_threshold_seconds > 3600 {
            return bad("etaPushThresholdSeconds", "at most 3600 seconds");
        }
        if self.service_seconds > 7200 {
            return bad("serviceSeconds", "at most 7200 seconds");
        }
        if !(1..=120).contains(&self.arriving_soon_minutes) {
            return bad("arrivingSoonMinutes", "between 1 and 120 minutes");
        }
        if !(10..=1440).contains(&self.cold_exposure_minutes) {
            return bad("coldExposureMinutes", "between 10 and 1440 minutes");
        }
        if self.plan_debounce_seconds > 600 {
            return bad("planDebounceSeconds", "at most 600 seconds");
        }
        if !(1..=60).contains(&self.plan_seconds) {
            return bad("planSeconds", "between 1 and 60 seconds");
        }
        if !(1..=720).contains(&self.after_sales_hours) {
            return bad("afterSalesHours", "between 1 and 720 hours");
        }
        let r = &self.rules;
        for (field, v) in [
            ("rules.overdueMinutes", r.overdue_minutes),
            ("rules.pickingMinutes", r.picking_minutes),
            ("rules.notCollectedMinutes", r.not_collected_minutes),
            ("rules.noPositionMinutes", r.no_position_minutes),
            ("rules.shortUnresolvedMinutes", r.short_unresolved_minutes),
        ] {
            if !(1..=1440).contains(&v) {
                return bad(field, "between 1 and 1440 minutes");
            }
        }
        Ok(())
    }
}

/// Quiet hours of a customer, in the merchant's time zone: no notices from
/// `from` until `to` (which may be past midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuietHours {
    /// `HH:MM`
    pub from: chrono::NaiveTime,
    /// `HH:MM`
    pub to: chrono::NaiveTime,
}

impl QuietHours {
    pub fn contains(&self, local: chrono::NaiveTime) -> bool {
        if self.from <= self.to { local >= self.from && local < self.to } else { local >= self.from || local < self.to }
    }
}

/// The live estimate of an order, next to its promise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EtaView {
    pub eta: DateTime<Utc>,
    /// What the customer is shown, e.g. 14:20–14:35.
    pub window: TimeWindow,
    /// Stops the courier makes before this one.
    pub stops_before: u16,
    pub computed_at: DateTime<Utc>,
}

/// A courier's latest trusted position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CourierLocation {
    pub courier_id: CourierId,
    pub at: DateTime<Utc>,
    pub position: crate::wire::LatLng,
    pub accuracy_m: f32,
    pub speed_mps: Option<f32>,
    pub heading_deg: Option<f32>,
}

/// Whether a courier works now: the planner gives work only to couriers on
/// duty, and plans their stops to end by the shift's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CourierDuty {
    pub courier_id: CourierId,
    pub on_duty: bool,
    /// When the courier last went on or off duty.
    pub since: Option<DateTime<Utc>>,
    pub shift_ends_at: Option<DateTime<Utc>>,
}

/// Going on duty (with the shift's end, if known) or off duty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DutyChange {
    pub on_duty: bool,
    #[serde(default)]
    pub shift_ends_at: Option<DateTime<Utc>>,
}

impl DutyChange {
    /// Whether the change makes sense at business time `now`: a shift ends
    /// within a day from now, and only a courier going on duty has one.
    pub fn check(&self, now: DateTime<Utc>) -> Result<(), &'static str> {
        match (self.on_duty, self.shift_ends_at) {
            (false, Some(_)) => Err("shiftEndsAt: only when going on duty"),
            (true, Some(end)) if end <= now => Err("shiftEndsAt: already past"),
            (true, Some(end)) if end - now > chrono::TimeDelta::hours(24) => {
                Err("shiftEndsAt: within 24 hours from now")
            }
            _ => Ok(()),
        }
    }
}

/// ETA accuracy over delivered stops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EtaAccuracy {
    pub stops: u64,
    /// Mean absolute error of the first estimate made on the road, seconds.
    pub mae_seconds: f64,
    pub p90_seconds: f64,
    /// The share of stops that arrived inside the window shown.
    pub within_window: f64,
}

/// A customer's own notice, as the notification channels carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub order_id: OrderId,
    pub order_number: OrderNumber,
    pub customer_id: CustomerId,
    pub minutes: u16,
    pub eta: DateTime<Utc>,
}

/// Whether an observation fits the order as it is now, as the event it
/// becomes (same status before and after).
pub fn observe(order: &Order, kind: EventKind) -> Result<Event, Rejection> {
    let on_the_road = order.status == Status::Delivering;
    let allowed = match &kind {
        EventKind::ArrivedAtWarehouse { courier_id, warehouse_id } => {
            order.courier_id == Some(*courier_id)
                && order.warehouse_id == *warehouse_id
                && matches!(order.status, Status::AwaitingPick | Status::Picking | Status::Packed | Status::Delivering)
        }
        EventKind::LeftWarehouse { courier_id, warehouse_id } => {
            on_the_road && order.courier_id == Some(*courier_id) && order.warehouse_id == *warehouse_id
        }
        EventKind::ArrivedAtCustomer { courier_id }
        | EventKind::CourierPosition { courier_id, .. }
        | EventKind::EtaUpdated { courier_id, .. } => on_the_road && order.courier_id == Some(*courier_id),
        EventKind::ArrivingSoon { .. } => on_the_road,
        EventKind::HandedOver { to, .. } => order.courier_id == Some(*to),
        EventKind::GoodsCollected { courier_id, .. } => on_the_road && order.courier_id == Some(*courier_id),
        EventKind::AfterSalesOpened { .. } => order.status == Status::Signed,
        EventKind::RouteSequenced { courier_id, .. } => {
            order.courier_id == Some(*courier_id)
                && matches!(order.status, Status::AwaitingPick | Status::Picking | Status::Packed | Status::Delivering)
        }
        EventKind::AlertRaised { .. } | EventKind::AlertCleared { .. } | EventKind::AlertAcknowledged { .. } => true,
        _ => false,
    };
    if allowed {
        Ok(Event { from: order.status, to: order.status, kind })
    } else {
        Err(Rejection::IllegalTransition { command: kind.name(), status: order.status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hours_may_span_midnight() {
        let t = |h, m| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default();
        let night = QuietHours { from: t(22, 0), to: t(7, 0) };
        assert!(night.contains(t(23, 30)));
        assert!(night.contains(t(6, 59)));
        assert!(!night.contains(t(7, 0)));
        assert!(!night.contains(t(12, 0)));
        let lunch = QuietHours { from: t(12, 0), to: t(13, 30) };
        assert!(lunch.contains(t(12, 0)));
        assert!(!lunch.contains(t(13, 30)));
        assert!(!lunch.contains(t(11, 59)));
    }

    #[test]
    fn settings_out_of_range_are_refused_by_field() {
        assert!(OperationsSettings::default().check().is_ok());
        let zero_fence = OperationsSettings { customer_fence_m: 0, ..Default::default() };
        assert!(matches!(zero_fence.check(), Err(Rejection::Invalid { field, .. }) if field == "customerFenceM"));
        let mut no_overdue = OperationsSettings::default();
        no_overdue.rules.overdue_minutes = 0;
        assert!(matches!(no_overdue.check(), Err(Rejection::Invalid { field, .. }) if field == "rules.overdueMinutes"));
    }

    #[test]
    fn observations_fit_only_the_order_and_courier_they_are_about() {
        use crate::machine::{Command, LineStock};
        use crate::{OrderDraft, PaymentMethod, WarehouseId, create};
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let draft: OrderDraft = serde_json::from_value(serde_json::json!({
            "merchantId": Uuid::nil(), "warehouseId": Uuid::nil(), "customerId": Uuid::nil(),
            "requestedWindow": {"start": "2030-06-01T01:00:00Z", "end": "2030-06-01T03:00:00Z"},
            "paymentTerms": {"kind": "PREPAID"},
            "lines": [{"sku": "S", "name": "菠菜", "quantity": 1, "unit": "kg", "price": {"fen": 100, "per": "kg"}}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let number = OrderNumber::parse("KL20300601001").unwrap_or_else(|| panic!("number"));
        let (order, _) = create(OrderId(Uuid::nil()), number, &draft, at).unwrap_or_else(|e| panic!("{e}"));
        let courier = CourierId(Uuid::from_u128(7));
        let other = CourierId(Uuid::from_u128(8));
        let mut o = order;
        for command in [
            Command::MarkPaid { method: PaymentMethod::Admin { note: String::new() } },
            Command::CheckStock { lines: vec![LineStock { line_no: 1, reserved_base: 1000 }] },
            Command::AssignCourier { courier_id: courier },
        ] {
            o = crate::apply(&o, &command, at).unwrap_or_else(|e| panic!("{e}")).order;
        }
        let warehouse = WarehouseId(Uuid::nil());
        let arrived = EventKind::ArrivedAtWarehouse { courier_id: courier, warehouse_id: warehouse };
        let event = observe(&o, arrived.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((event.from, event.to), (o.status, o.status), "an observation changes nothing");
        assert!(observe(&o, EventKind::ArrivedAtWarehouse { courier_id: other, warehouse_id: warehouse }).is_err());
        assert!(observe(&o, EventKind::ArrivedAtCustomer { courier_id: courier }).is_err(), "not on the road yet");
        let sequenced = |c| EventKind::RouteSequenced {
            courier_id: c,
            plan_id: Uuid::nil(),
            stop: 1,
            stops: 2,
            planned_arrival: at,
        };
        assert!(observe(&o, sequenced(courier)).is_ok(), "its place on the route before loading");
        assert!(observe(&o, sequenced(other)).is_err(), "not on another courier's route");
        let collected = EventKind::GoodsCollected { courier_id: courier };
        assert!(observe(&o, collected.clone()).is_err(), "nothing to collect before the road");
        for command in [
            Command::StartPicking,
            Command::RecordPick { line_no: 1, base: 1000, weight_g: None, short: false },
            Command::Pack,
            Command::Dispatch,
        ] {
            o = crate::apply(&o, &command, at).unwrap_or_else(|e| panic!("{e}")).order;
        }
        assert_eq!(o.status, Status::Delivering);
        assert!(observe(&o, EventKind::ArrivedAtCustomer { courier_id: courier }).is_ok());
        assert!(observe(&o, EventKind::ArrivedAtCustomer { courier_id: other }).is_err(), "another courier's arrival");
        assert!(observe(&o, EventKind::ArrivingSoon { minutes: 5, eta: at }).is_ok());
        assert!(observe(&o, collected).is_ok());
        assert!(observe(&o, EventKind::StockResolved).is_err(), "a change is not an observation");
    }

    #[test]
    fn a_shift_ends_within_a_day_and_only_when_going_on_duty() {
        let now = DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000);
        let on = |hours: Option<i64>| DutyChange {
            on_duty: true,
            shift_ends_at: hours.map(|h| now + chrono::TimeDelta::hours(h)),
        };
        assert!(on(None).check(now).is_ok());
        assert!(on(Some(8)).check(now).is_ok());
        assert!(on(Some(24)).check(now).is_ok());
        assert!(on(Some(25)).check(now).is_err());
        assert!(on(Some(0)).check(now).is_err());
        assert!(on(Some(-1)).check(now).is_err());
        assert!(DutyChange { on_duty: false, shift_ends_at: None }.check(now).is_ok());
        assert!(DutyChange { on_duty: false, shift_ends_at: Some(now) }.check(now).is_err());
    }

    #[test]
    fn every_rule_round_trips_its_name() {
        for rule in AlertRule::ALL {
            assert_eq!(AlertRule::parse(rule.as_str()), Some(rule));
            let json = serde_json::to_string(&rule).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", rule.as_str()));
        }
    }
}

/// What a courier does at a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlannedKind {
    /// Leave the order with its customer.
    #[default]
    Delivery,
    /// Collect the order from a van that stopped.
    Pickup,
}

/// A stop on a courier's planned route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PlannedStop {
    #[serde(default)]
    pub kind: PlannedKind,
    pub order_id: OrderId,
    pub order_number: OrderNumber,
    pub location: LatLng,
    pub planned_arrival: DateTime<Utc>,
    /// When the stop is left again (after unloading).
    pub planned_departure: DateTime<Utc>,
}

/// A courier's route as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CourierRoute {
    pub courier_id: CourierId,
    pub plan_id: Uuid,
    pub planned_at: DateTime<Utc>,
    pub start: LatLng,
    pub stops: Vec<PlannedStop>,
}

/// A courier as the office's map shows them: the van, duty, where they are,
/// what is aboard and the route ahead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CourierStatus {
    pub courier_id: CourierId,
    /// The courier's name (their merchant's office may see it).
    pub name: String,
    pub vehicle: String,
    pub refrigerated: bool,
    pub capacity_kg: i64,
    pub on_duty: bool,
    pub shift_ends_at: Option<DateTime<Utc>>,
    pub position: Option<CourierLocation>,
    /// Orders out for delivery with them, and what they weigh (grams).
    pub aboard: u32,
    pub load_g: i64,
    /// The planned stops ahead, in order (empty without a plan).
    pub stops: Vec<PlannedStop>,
    /// The route is locked as it is.
    pub locked: bool,
}
