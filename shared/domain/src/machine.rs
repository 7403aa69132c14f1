//! The order state machine: one pure function from (order, command, time) to
//! (new order, events) or a typed rejection. The server persists what it
//! returns; the apps call it to predict what a button will do.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use crate::ids::{ContactId, CourierId, CustomerId, MerchantId, OrderId, OrderNumber, WarehouseId};
use crate::operations::{AlertRule, Severity};
use crate::order::*;
use crate::quantity::{Dimension, Fen, Quantity, Unit};
use crate::wire::LatLng;

/// Limits that keep a single order sane.
pub const MAX_LINES: usize = 200;
pub const MAX_TEXT: usize = 1000;
/// 100 t of anything is not a restaurant's order.
pub const MAX_BASE: i64 = 100_000_000;
pub const DEFAULT_TOLERANCE_PERMILLE: u16 = 100;
pub const MAX_TOLERANCE_PERMILLE: u16 = 500;

/// Everything needed to create an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderDraft {
    pub merchant_id: MerchantId,
    pub warehouse_id: WarehouseId,
    pub customer_id: CustomerId,
    #[serde(default)]
    pub contact_id: Option<ContactId>,
    pub requested_window: TimeWindow,
    #[serde(default)]
    pub notes: String,
    pub payment_terms: PaymentTerms,
    pub lines: Vec<LineDraft>,
}

/// Stock the warehouse reserved for one line at the stock check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LineStock {
    pub line_no: u16,
    pub reserved_base: i64,
}

/// What a customer accepted of one line at sign-off. Lines not listed are
/// accepted in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LineAcceptance {
    pub line_no: u16,
    pub rejected_base: i64,
    pub reason: RejectReason,
}

/// A request to change an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum Command {
    /// Payment secured.
    MarkPaid {
        method: PaymentMethod,
    },
    /// The warehouse's answer to the stock check (issued by the server, which
    /// reserves the stock in the same transaction).
    #[serde(rename_all = "camelCase")]
    CheckStock {
        lines: Vec<LineStock>,
    },
    /// Offer the customer a substitute for a short line.
    #[serde(rename_all = "camelCase")]
    ProposeSubstitution {
        line_no: u16,
        substitute: LineDraft,
        respond_by: DateTime<Utc>,
    },
    /// The customer's consent (or refusal) to a proposed substitute.
    #[serde(rename_all = "camelCase")]
    AnswerSubstitution {
        line_no: u16,
        accept: bool,
    },
    /// The consent window passed without an answer: ship short.
    #[serde(rename_all = "camelCase")]
    ExpireSubstitution {
        line_no: u16,
    },
    /// Ship what is available of a short line.
    #[serde(rename_all = "camelCase")]
    ShortShip {
        line_no: u16,
    },
    StartPicking,
    /// A line weighed or counted at picking.
    #[serde(rename_all = "camelCase")]
    RecordPick {
        line_no: u16,
        base: i64,
        #[serde(default)]
        weight_g: Option<i64>,
        #[serde(default)]
        short: bool,
    },
    Pack,
    #[serde(rename_all = "camelCase")]
    AssignCourier {
        courier_id: CourierId,
    },
    /// Hand the packed order to its courier.
    Dispatch,
    ReportException {
        kind: ExceptionKind,
        note: String,
    },
    /// The exception is resolved; delivery goes on, with another courier if given.
    #[serde(rename_all = "camelCase")]
    ResumeDelivery {
        #[serde(default)]
        courier_id: Option<CourierId>,
    },
    RecordFailedAttempt {
        reason: FailedAttemptReason,
    },
    /// Take the goods back and deliver in another window.
    ScheduleRedelivery {
        window: TimeWindow,
    },
    /// Leave the goods at the door with photo proof.
    #[serde(rename_all = "camelCase")]
    DropOffUnattended {
        photo_sha256: String,
    },
    /// The customer signs; lines may be partly rejected.
    #[serde(rename_all = "camelCase")]
    Sign {
        #[serde(default)]
        lines: Vec<LineAcceptance>,
        signature_sha256: String,
    },
    StartReturn {
        reason: String,
    },
    ConfirmReturned,
    OpenClaim {
        lines: Vec<ClaimLine>,
        note: String,
    },
    #[serde(rename_all = "camelCase")]
    SettleClaim {
        amount_fen: Fen,
    },
    Cancel {
        reason: String,
    },
}

impl Command {
    /// The wire name of the command, for errors, metrics and audit.
    pub fn name(&self) -> &'static str {
        match self {
            Command::MarkPaid { .. } => "MARK_PAID",
            Command::CheckStock { .. } => "CHECK_STOCK",
            Command::ProposeSubstitution { .. } => "PROPOSE_SUBSTITUTION",
            Command::AnswerSubstitution { .. } => "ANSWER_SUBSTITUTION",
            Command::ExpireSubstitution { .. } => "EXPIRE_SUBSTITUTION",
            Command::ShortShip { .. } => "SHORT_SHIP",
            Command::StartPicking => "START_PICKING",
            Command::RecordPick { .. } => "RECORD_PICK",
            Command::Pack => "PACK",
            Command::AssignCourier { .. } => "ASSIGN_COURIER",
            Command::Dispatch => "DISPATCH",
            Command::ReportException { .. } => "REPORT_EXCEPTION",
            Command::ResumeDelivery { .. } => "RESUME_DELIVERY",
            Command::RecordFailedAttempt { .. } => "RECORD_FAILED_ATTEMPT",
            Command::ScheduleRedelivery { .. } => "SCHEDULE_REDELIVERY",
            Command::DropOffUnattended { .. } => "DROP_OFF_UNATTENDED",
            Command::Sign { .. } => "SIGN",
            Command::StartReturn { .. } => "START_RETURN",
            Command::ConfirmReturned => "CONFIRM_RETURNED",
            Command::OpenClaim { .. } => "OPEN_CLAIM",
            Command::SettleClaim { .. } => "SETTLE_CLAIM",
            Command::Cancel { .. } => "CANCEL",
        }
    }

    /// Commands only the server itself issues (it computes their data).
    pub fn is_internal(&self) -> bool {
        matches!(self, Command::CheckStock { .. })
    }
}

/// What happened to an order. Events carry ids and business facts only, never
/// personal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    #[serde(rename_all = "camelCase")]
    Created {
        number: OrderNumber,
        line_count: u16,
        ordered_fen: Fen,
    },
    #[serde(rename_all = "camelCase")]
    Paid {
        method: PaymentMethod,
        paid_fen: Fen,
    },
    /// Stock reserved; `short` lists the lines that could not be covered.
    #[serde(rename_all = "camelCase")]
    StockChecked {
        short: Vec<LineStock>,
    },
    #[serde(rename_all = "camelCase")]
    SubstitutionProposed {
        line_no: u16,
        sku: String,
        name: String,
        quantity: Quantity,
        unit: Unit,
        respond_by: DateTime<Utc>,
    },
    #[serde(rename_all = "camelCase")]
    SubstitutionAccepted {
        line_no: u16,
        substitute_line_no: u16,
    },
    #[serde(rename_all = "camelCase")]
    SubstitutionDeclined {
        line_no: u16,
        expired: bool,
    },
    #[serde(rename_all = "camelCase")]
    LineShortShipped {
        line_no: u16,
        base_to_ship: i64,
    },
    /// Every short line is resolved; the order goes on to picking.
    StockResolved,
    PickingStarted,
    #[serde(rename_all = "camelCase")]
    LinePicked {
        line_no: u16,
        base: i64,
        weight_g: Option<i64>,
        short: bool,
        amount_fen: Fen,
    },
    #[serde(rename_all = "camelCase")]
    Packed {
        charge_fen: Fen,
        balance_fen: Fen,
    },
    #[serde(rename_all = "camelCase")]
    CourierAssigned {
        courier_id: CourierId,
        previous: Option<CourierId>,
    },
    #[serde(rename_all = "camelCase")]
    Dispatched {
        courier_id: CourierId,
    },
    ExceptionReported {
        kind: ExceptionKind,
        note: String,
    },
    #[serde(rename_all = "camelCase")]
    DeliveryResumed {
        courier_id: CourierId,
        reassigned: bool,
    },
    DeliveryAttemptFailed {
        reason: FailedAttemptReason,
        attempt: u16,
    },
    RedeliveryScheduled {
        window: TimeWindow,
    },
    #[serde(rename_all = "camelCase")]
    Signed {
        evidence_sha256: String,
        unattended: bool,
        rejected: Vec<LineAcceptance>,
        charge_fen: Fen,
        balance_fen: Fen,
    },
    ReturnStarted {
        reason: String,
    },
    #[serde(rename_all = "camelCase")]
    Returned {
        refund_fen: Fen,
    },
    #[serde(rename_all = "camelCase")]
    ClaimOpened {
        lines: Vec<ClaimLine>,
        note: String,
        claimed_fen: Fen,
    },
    #[serde(rename_all = "camelCase")]
    ClaimSettled {
        amount_fen: Fen,
    },
    #[serde(rename_all = "camelCase")]
    Cancelled {
        reason: String,
        refund_fen: Fen,
    },
    // Observations: what the server saw on the road. They keep the order's
    // status and version (see `operations::observe`).
    /// The assigned courier has been inside the warehouse's fence long enough.
    #[serde(rename_all = "camelCase")]
    ArrivedAtWarehouse {
        courier_id: CourierId,
        warehouse_id: WarehouseId,
    },
    #[serde(rename_all = "camelCase")]
    LeftWarehouse {
        courier_id: CourierId,
        warehouse_id: WarehouseId,
    },
    #[serde(rename_all = "camelCase")]
    ArrivedAtCustomer {
        courier_id: CourierId,
    },
    /// The carrying courier's position, at the merchant's push rate.
    #[serde(rename_all = "camelCase")]
    CourierPosition {
        courier_id: CourierId,
        position: LatLng,
        fix_at: DateTime<Utc>,
        speed_mps: Option<f32>,
        heading_deg: Option<f32>,
    },
    /// The live estimate moved by more than the merchant's threshold.
    #[serde(rename_all = "camelCase")]
    EtaUpdated {
        courier_id: CourierId,
        eta: DateTime<Utc>,
        window: TimeWindow,
        stops_before: u16,
    },
    /// "Arriving in about N minutes", sent to the customer once.
    #[serde(rename_all = "camelCase")]
    ArrivingSoon {
        minutes: u16,
        eta: DateTime<Utc>,
    },
    /// The goods moved to another courier's van (told to the one they left).
    #[serde(rename_all = "camelCase")]
    HandedOver {
        from: CourierId,
        to: CourierId,
    },
    /// The rescuing courier reached the stopped van and took the goods over.
    #[serde(rename_all = "camelCase")]
    GoodsCollected {
        courier_id: CourierId,
    },
    /// The customer raised an after-sales matter (its own record; the order stays signed).
    #[serde(rename_all = "camelCase")]
    AfterSalesOpened {
        after_sales_id: Uuid,
        kind: crate::aftersales::AfterSalesKind,
    },
    /// A new plan put the order at another place on its courier's route.
    #[serde(rename_all = "camelCase")]
    RouteSequenced {
        courier_id: CourierId,
        plan_id: Uuid,
        /// 1-based place among the route's stops.
        stop: u16,
        stops: u16,
        planned_arrival: DateTime<Utc>,
    },
    #[serde(rename_all = "camelCase")]
    AlertRaised {
        alert_id: Uuid,
        rule: AlertRule,
        severity: Severity,
        reason: String,
    },
    #[serde(rename_all = "camelCase")]
    AlertCleared {
        alert_id: Uuid,
        rule: AlertRule,
    },
    #[serde(rename_all = "camelCase")]
    AlertAcknowledged {
        alert_id: Uuid,
        rule: AlertRule,
    },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Created { .. } => "CREATED",
            EventKind::Paid { .. } => "PAID",
            EventKind::StockChecked { .. } => "STOCK_CHECKED",
            EventKind::SubstitutionProposed { .. } => "SUBSTITUTION_PROPOSED",
            EventKind::SubstitutionAccepted { .. } => "SUBSTITUTION_ACCEPTED",
            EventKind::SubstitutionDeclined { .. } => "SUBSTITUTION_DECLINED",
            EventKind::LineShortShipped { .. } => "LINE_SHORT_SHIPPED",
            EventKind::StockResolved => "STOCK_RESOLVED",
            EventKind::PickingStarted => "PICKING_STARTED",
            EventKind::LinePicked { .. } => "LINE_PICKED",
            EventKind::Packed { .. } => "PACKED",
            EventKind::CourierAssigned { .. } => "COURIER_ASSIGNED",
            EventKind::Dispatched { .. } => "DISPATCHED",
            EventKind::ExceptionReported { .. } => "EXCEPTION_REPORTED",
            EventKind::DeliveryResumed { .. } => "DELIVERY_RESUMED",
            EventKind::DeliveryAttemptFailed { .. } => "DELIVERY_ATTEMPT_FAILED",
            EventKind::RedeliveryScheduled { .. } => "REDELIVERY_SCHEDULED",
            EventKind::Signed { .. } => "SIGNED",
            EventKind::ReturnStarted { .. } => "RETURN_STARTED",
            EventKind::Returned { .. } => "RETURNED",
            EventKind::ClaimOpened { .. } => "CLAIM_OPENED",
            EventKind::ClaimSettled { .. } => "CLAIM_SETTLED",
            EventKind::Cancelled { .. } => "CANCELLED",
            EventKind::ArrivedAtWarehouse { .. } => "ARRIVED_AT_WAREHOUSE",
            EventKind::LeftWarehouse { .. } => "LEFT_WAREHOUSE",
            EventKind::ArrivedAtCustomer { .. } => "ARRIVED_AT_CUSTOMER",
            EventKind::CourierPosition { .. } => "COURIER_POSITION",
            EventKind::EtaUpdated { .. } => "ETA_UPDATED",
            EventKind::ArrivingSoon { .. } => "ARRIVING_SOON",
            EventKind::HandedOver { .. } => "HANDED_OVER",
            EventKind::GoodsCollected { .. } => "GOODS_COLLECTED",
            EventKind::AfterSalesOpened { .. } => "AFTER_SALES_OPENED",
            EventKind::RouteSequenced { .. } => "ROUTE_SEQUENCED",
            EventKind::AlertRaised { .. } => "ALERT_RAISED",
            EventKind::AlertCleared { .. } => "ALERT_CLEARED",
            EventKind::AlertAcknowledged { .. } => "ALERT_ACKNOWLEDGED",
        }
    }

    /// An observation of the road, not a change of the order.
    pub fn is_observation(&self) -> bool {
        matches!(
            self,
            EventKind::ArrivedAtWarehouse { .. }
                | EventKind::LeftWarehouse { .. }
                | EventKind::ArrivedAtCustomer { .. }
                | EventKind::CourierPosition { .. }
                | EventKind::EtaUpdated { .. }
                | EventKind::ArrivingSoon { .. }
                | EventKind::HandedOver { .. }
                | EventKind::GoodsCollected { .. }
                | EventKind::AfterSalesOpened { .. }
                | EventKind::RouteSequenced { .. }
                | EventKind::AlertRaised { .. }
                | EventKind::AlertCleared { .. }
                | EventKind::AlertAcknowledged { .. }
        )
    }

    /// Frequent updates a timeline leaves out (the latest is shown apart).
    pub fn is_live_update(&self) -> bool {
        matches!(
            self,
            EventKind::CourierPosition { .. } | EventKind::EtaUpdated { .. } | EventKind::RouteSequenced { .. }
        )
    }

    /// For the merchant's staff only: customers and couriers never see it.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            EventKind::AlertRaised { .. } | EventKind::AlertCleared { .. } | EventKind::AlertAcknowledged { .. }
        )
    }
}

/// An event with the edge it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub from: Status,
    pub to: Status,
    pub kind: EventKind,
}

/// Why a command was refused. Each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{command} is not possible while the order is {status}")]
    IllegalTransition { command: &'static str, status: Status },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("the order has no line {0}")]
    UnknownLine(u16),
    #[error("line {line_no}: picked {picked} is outside the tolerance around {expected}; weigh again or mark it short")]
    OutOfTolerance { line_no: u16, picked: i64, expected: i64 },
    #[error("lines still to pick: {0:?}")]
    LinesNotPicked(Vec<u16>),
    #[error("the order has no courier assigned")]
    NoCourier,
    #[error("the consent window for line {line_no} is still open until {respond_by}")]
    ConsentWindowOpen { line_no: u16, respond_by: DateTime<Utc> },
    #[error("nothing would be shipped; cancel the order instead")]
    NothingToShip,
}

impl Rejection {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::IllegalTransition { .. } => "illegal_transition",
            Rejection::Invalid { .. } => "invalid_command",
            Rejection::UnknownLine(_) => "unknown_line",
            Rejection::OutOfTolerance { .. } => "pick_out_of_tolerance",
            Rejection::LinesNotPicked(_) => "lines_not_picked",
            Rejection::NoCourier => "no_courier",
            Rejection::ConsentWindowOpen { .. } => "consent_window_open",
            Rejection::NothingToShip => "nothing_to_ship",
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Rejection {
    Rejection::Invalid { field: field.into(), reason: reason.into() }
}

fn check_text(field: &str, text: &str, required: bool) -> Result<(), Rejection> {
    if required && text.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(invalid(field, format!("at most {MAX_TEXT} characters")));
    }
    Ok(())
}

fn check_sha256(field: &str, hex: &str) -> Result<(), Rejection> {
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(invalid(field, "must be 64 hexadecimal digits (a SHA-256)"))
    }
}

/// Validates a draft line and turns it into an order line.
fn build_line(line_no: u16, draft: &LineDraft, field: &str) -> Result<OrderLine, Rejection> {
    check_text(&format!("{field}.sku"), &draft.sku, true)?;
    if draft.sku.len() > 64 {
        return Err(invalid(format!("{field}.sku"), "at most 64 characters"));
    }
    check_text(&format!("{field}.name"), &draft.name, true)?;
    if draft.quantity.milli() <= 0 {
        return Err(invalid(format!("{field}.quantity"), "must be greater than zero"));
    }
    let base = draft.quantity.to_base(draft.unit).ok_or_else(|| {
        invalid(
            format!("{field}.quantity"),
            format!("{} {:?} is not a whole number of grams or pieces", draft.quantity, draft.unit),
        )
    })?;
    if base > MAX_BASE {
        return Err(invalid(format!("{field}.quantity"), "too large"));
    }
    let dimension = draft.unit.dimension();
    match (dimension, draft.nominal_g) {
        (Dimension::Pieces, None) => {
            return Err(invalid(format!("{field}.nominalG"), "required for pieces and boxes"));
        }
        (Dimension::Pieces, Some(g)) if !(1..=MAX_BASE).contains(&g) => {
            return Err(invalid(format!("{field}.nominalG"), "must be between 1 g and 100 t"));
        }
        // Like a line by weight, a counted line weighs at most 100 t; beyond
        // that its amount no longer fits the totals.
        (Dimension::Pieces, Some(g)) if base.saturating_mul(g) > MAX_BASE => {
            return Err(invalid(format!("{field}.quantity"), "too large"));
        }
        (Dimension::Grams, Some(_)) => {
            return Err(invalid(format!("{field}.nominalG"), "only for pieces and boxes"));
        }
        _ => {}
    }
    if draft.price.fen < 0 || draft.price.fen > 100_000_000 {
        return Err(invalid(format!("{field}.price.fen"), "must be between 0 and 1 000 000 CNY"));
    }
    if dimension == Dimension::Grams && draft.price.per.dimension() == Dimension::Pieces {
        return Err(invalid(format!("{field}.price.per"), "a line ordered by weight is priced by weight"));
    }
    let tolerance = draft.tolerance_permille.unwrap_or(DEFAULT_TOLERANCE_PERMILLE);
    if tolerance > MAX_TOLERANCE_PERMILLE {
        return Err(invalid(format!("{field}.tolerancePermille"), "at most 500 (50 %)"));
    }
    let mut line = OrderLine {
        line_no,
        sku: draft.sku.clone(),
        name: draft.name.clone(),
        quantity: draft.quantity,
        unit: draft.unit,
        nominal_g: draft.nominal_g,
        price: draft.price,
        tolerance_permille: tolerance,
        temperature: draft.temperature,
        base_ordered: base,
        dimension,
        base_reserved: 0,
        base_to_ship: base,
        shortage: None,
        substitute_for: None,
        picked: None,
        acceptance: None,
        amount_ordered_fen: 0,
        amount_fen: 0,
    };
    line.price_ordered();
    line.reprice();
    Ok(line)
}

/// Validates a draft and creates the order in `CREATED`.
pub fn create(
    id: OrderId,
    number: OrderNumber,
    draft: &OrderDraft,
    at: DateTime<Utc>,
) -> Result<(Order, Event), Rejection> {
    if draft.lines.is_empty() {
        return Err(invalid("lines", "an order needs at least one line"));
    }
    if draft.lines.len() > MAX_LINES {
        return Err(invalid("lines", format!("at most {MAX_LINES} lines")));
    }
    if draft.requested_window.start >= draft.requested_window.end {
        return Err(invalid("requestedWindow", "start must be before end"));
    }
    check_text("notes", &draft.notes, false)?;
    let lines = draft
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| build_line((i + 1) as u16, l, &format!("lines[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut order = Order {
        id,
        number: number.clone(),
        merchant_id: draft.merchant_id,
        warehouse_id: draft.warehouse_id,
        customer_id: draft.customer_id,
        contact_id: draft.contact_id,
        courier_id: None,
        status: Status::Created,
        version: 1,
        created_at: at,
        updated_at: at,
        requested_window: draft.requested_window,
        notes: draft.notes.clone(),
        payment_terms: draft.payment_terms,
        payment: None,
        lines,
        exception: None,
        failed_attempts: 0,
        sign_off: None,
        claim: None,
        cancellation: None,
        totals: Totals::default(),
    };
    order.recompute_totals();
    let event = Event {
        from: Status::Created,
        to: Status::Created,
        kind: EventKind::Created {
            number,
            line_count: order.lines.len() as u16,
            ordered_fen: order.totals.ordered_fen,
        },
    };
    Ok((order, event))
}

/// The result of an accepted command.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub order: Order,
    pub events: Vec<Event>,
}

/// Applies `command` to `order` at time `at`.
pub fn apply(order: &Order, command: &Command, at: DateTime<Utc>) -> Result<Transition, Rejection> {
    let mut next = order.clone();
    let mut kinds = Vec::new();
    step(&mut next, command, at, &mut kinds)?;
    next.version = order.version + 1;
    next.updated_at = at;
    next.recompute_totals();
    // Each event takes the edge from the status before to the status after.
    // A command that yields two events (stock checked, then resolved) moves once.
    let events = kinds.into_iter().map(|kind| Event { from: order.status, to: next.status, kind }).collect();
    Ok(Transition { order: next, events })
}

fn require(order: &Order, command: &Command, allowed: &[Status]) -> Result<(), Rejection> {
    if allowed.contains(&order.status) {
        Ok(())
    } else {
        Err(Rejection::IllegalTransition { command: command.name(), status: order.status })
    }
}

fn line_mut(order: &mut Order, line_no: u16) -> Result<&mut OrderLine, Rejection> {
    order.line_mut(line_no).ok_or(Rejection::UnknownLine(line_no))
}

fn open_shortage(order: &Order, line_no: u16) -> Result<&Shortage, Rejection> {
    let line = order.line(line_no).ok_or(Rejection::UnknownLine(line_no))?;
    match &line.shortage {
        Some(s) if !s.resolution.is_resolved() => Ok(s),
        _ => Err(invalid("lineNo", format!("line {line_no} has no open shortage"))),
    }
}

/// After a shortage is resolved: go on to picking when none is open, or
/// cancel when nothing is left to ship.
fn settle_shortages(order: &mut Order, at: DateTime<Utc>, kinds: &mut Vec<EventKind>) {
    if order.lines.iter().any(OrderLine::is_short_unresolved) {
        return;
    }
    if order.lines.iter().all(|l| l.base_to_ship == 0) {
        cancel(order, "nothing left to ship after stock shortages".into(), at, kinds);
    } else {
        order.status = Status::AwaitingPick;
        kinds.push(EventKind::StockResolved);
    }
}

fn cancel(order: &mut Order, reason: String, at: DateTime<Utc>, kinds: &mut Vec<EventKind>) {
    order.cancellation = Some(Cancellation { reason: reason.clone(), from: order.status, at });
    order.status = Status::Cancelled;
    let refund_fen = order.payment.as_ref().map_or(0, |p| p.paid_fen);
    kinds.push(EventKind::Cancelled { reason, refund_fen });
}

fn short_ship(line: &mut OrderLine, available: i64) -> EventKind {
    line.base_to_ship = available;
    if let Some(s) = line.shortage.as_mut() {
        s.resolution = ShortageResolution::ShortShipped;
    }
    line.reprice();
    EventKind::LineShortShipped { line_no: line.line_no, base_to_ship: available }
}

fn step(order: &mut Order, command: &Command, at: DateTime<Utc>, kinds: &mut Vec<EventKind>) -> Result<(), Rejection> {
    use Status::*;
    match command {
        Command::MarkPaid { method } => {
            require(order, command, &[Created])?;
            let paid_fen = match method {
                PaymentMethod::CreditTerms => {
                    if !matches!(order.payment_terms, PaymentTerms::Credit { .. }) {
                        return Err(invalid("method", "the customer is not on credit terms"));
                    }
                    0
                }
                PaymentMethod::Gateway { gateway, reference } => {
                    check_text("method.gateway", gateway, true)?;
                    check_text("method.reference", reference, true)?;
                    order.totals.charge_fen
                }
                PaymentMethod::Admin { note } => {
                    check_text("method.note", note, false)?;
                    order.totals.charge_fen
                }
            };
            order.payment = Some(Payment { method: method.clone(), paid_fen, at });
            order.status = Paid;
            kinds.push(EventKind::Paid { method: method.clone(), paid_fen });
        }
        Command::CheckStock { lines } => {
            require(order, command, &[Paid])?;
            let mut short = Vec::new();
            for line in &mut order.lines {
                let reserved = lines.iter().find(|s| s.line_no == line.line_no).map_or(0, |s| s.reserved_base);
                if !(0..=line.base_ordered).contains(&reserved) {
                    return Err(invalid("lines", format!("line {} reserved {reserved}", line.line_no)));
                }
                line.base_reserved = reserved;
                if reserved < line.base_ordered {
                    line.shortage = Some(Shortage { available_base: reserved, resolution: ShortageResolution::Open });
                    short.push(LineStock { line_no: line.line_no, reserved_base: reserved });
                }
            }
            order.status = if short.is_empty() { AwaitingPick } else { OutOfStock };
            kinds.push(EventKind::StockChecked { short });
        }
        Command::ProposeSubstitution { line_no, substitute, respond_by } => {
            require(order, command, &[OutOfStock])?;
            open_shortage(order, *line_no)?;
            if *respond_by <= at {
                return Err(invalid("respondBy", "must be in the future"));
            }
            let next_no = next_line_no(order);
            build_line(next_no, substitute, "substitute")?;
            let line = line_mut(order, *line_no)?;
            if let Some(s) = line.shortage.as_mut() {
                s.resolution = ShortageResolution::SubstitutionProposed {
                    substitute: substitute.clone(),
                    respond_by: *respond_by,
                };
            }
            kinds.push(EventKind::SubstitutionProposed {
                line_no: *line_no,
                sku: substitute.sku.clone(),
                name: substitute.name.clone(),
                quantity: substitute.quantity,
                unit: substitute.unit,
                respond_by: *respond_by,
            });
        }
        Command::AnswerSubstitution { line_no, accept } => {
            require(order, command, &[OutOfStock])?;
            let ShortageResolution::SubstitutionProposed { substitute, respond_by } =
                open_shortage(order, *line_no)?.resolution.clone()
            else {
                return Err(invalid("lineNo", format!("no substitute was proposed for line {line_no}")));
            };
            if at >= respond_by {
                return Err(invalid("accept", format!("the consent window closed at {respond_by}")));
            }
            if *accept {
                let new_no = next_line_no(order);
                let mut new_line = build_line(new_no, &substitute, "substitute")?;
                // The server reserves the substitute's stock before accepting.
                new_line.base_reserved = new_line.base_ordered;
                new_line.substitute_for = Some(*line_no);
                order.lines.push(new_line);
                let line = line_mut(order, *line_no)?;
                line.base_to_ship = 0;
                // Nothing of the original ships: its partial reservation goes back to stock.
                line.base_reserved = 0;
                if let Some(s) = line.shortage.as_mut() {
                    s.resolution = ShortageResolution::Substituted { line_no: new_no };
                }
                line.reprice();
                kinds.push(EventKind::SubstitutionAccepted { line_no: *line_no, substitute_line_no: new_no });
            } else {
                let line = line_mut(order, *line_no)?;
                let available = line.base_reserved;
                kinds.push(EventKind::SubstitutionDeclined { line_no: *line_no, expired: false });
                kinds.push(short_ship(line, available));
            }
            settle_shortages(order, at, kinds);
        }
        Command::ExpireSubstitution { line_no } => {
            require(order, command, &[OutOfStock])?;
            let ShortageResolution::SubstitutionProposed { respond_by, .. } =
                open_shortage(order, *line_no)?.resolution.clone()
            else {
                return Err(invalid("lineNo", format!("no substitute was proposed for line {line_no}")));
            };
            if at < respond_by {
                return Err(Rejection::ConsentWindowOpen { line_no: *line_no, respond_by });
            }
            let line = line_mut(order, *line_no)?;
            let available = line.base_reserved;
            kinds.push(EventKind::SubstitutionDeclined { line_no: *line_no, expired: true });
            kinds.push(short_ship(line, available));
            settle_shortages(order, at, kinds);
        }
        Command::ShortShip { line_no } => {
            require(order, command, &[OutOfStock])?;
            open_shortage(order, *line_no)?;
            let line = line_mut(order, *line_no)?;
            let available = line.base_reserved;
            kinds.push(short_ship(line, available));
            settle_shortages(order, at, kinds);
        }
        Command::StartPicking => {
            require(order, command, &[AwaitingPick])?;
            order.status = Picking;
            kinds.push(EventKind::PickingStarted);
        }
        Command::RecordPick { line_no, base, weight_g, short } => {
            require(order, command, &[Picking])?;
            let line = line_mut(order, *line_no)?;
            if line.base_to_ship == 0 {
                return Err(invalid("lineNo", format!("line {line_no} ships nothing")));
            }
            if *base < 0 || *base > MAX_BASE {
                return Err(invalid("base", "must be between 0 and 100 t"));
            }
            let catch_weight = line.dimension == Dimension::Pieces && line.price.per.dimension() == Dimension::Grams;
            match (catch_weight, weight_g) {
                (true, None) => return Err(invalid("weightG", "this line is priced by weight: weigh it")),
                (false, Some(_)) => return Err(invalid("weightG", "only for pieces priced by weight")),
                (true, Some(w)) if !(0..=MAX_BASE).contains(w) => {
                    return Err(invalid("weightG", "must be between 0 and 100 t"));
                }
                _ => {}
            }
            let tolerance = |expected: i64| expected * i64::from(line.tolerance_permille) / 1000;
            let expected = line.base_to_ship;
            match line.dimension {
                Dimension::Grams => {
                    let (low, high) = (expected - tolerance(expected), expected + tolerance(expected));
                    if *base > high || (*base < low && !short) {
                        return Err(Rejection::OutOfTolerance { line_no: *line_no, picked: *base, expected });
                    }
                }
                Dimension::Pieces => {
                    if *base > expected || (*base < expected && !short) {
                        return Err(Rejection::OutOfTolerance { line_no: *line_no, picked: *base, expected });
                    }
                    if let (Some(w), Some(nominal)) = (weight_g, line.nominal_g) {
                        let expected_g = base.saturating_mul(nominal);
                        let t = tolerance(expected_g);
                        if *w > expected_g + t || *w < expected_g - t {
                            return Err(Rejection::OutOfTolerance {
                                line_no: *line_no,
                                picked: *w,
                                expected: expected_g,
                            });
                        }
                    }
                }
            }
            line.picked = Some(Picked { base: *base, weight_g: *weight_g, short: *short });
            line.reprice();
            kinds.push(EventKind::LinePicked {
                line_no: *line_no,
                base: *base,
                weight_g: *weight_g,
                short: *short,
                amount_fen: line.amount_fen,
            });
        }
        Command::Pack => {
            require(order, command, &[Picking])?;
            let missing: Vec<u16> =
                order.lines.iter().filter(|l| l.base_to_ship > 0 && l.picked.is_none()).map(|l| l.line_no).collect();
            if !missing.is_empty() {
                return Err(Rejection::LinesNotPicked(missing));
            }
            if order.lines.iter().all(|l| l.base_delivered() == 0) {
                return Err(Rejection::NothingToShip);
            }
            order.status = Packed;
            order.recompute_totals();
            kinds
                .push(EventKind::Packed { charge_fen: order.totals.charge_fen, balance_fen: order.totals.balance_fen });
        }
        Command::AssignCourier { courier_id } => {
            require(order, command, &[Created, Paid, OutOfStock, AwaitingPick, Picking, Packed])?;
            let previous = order.courier_id.replace(*courier_id);
            kinds.push(EventKind::CourierAssigned { courier_id: *courier_id, previous });
        }
        Command::Dispatch => {
            require(order, command, &[Packed])?;
            let courier_id = order.courier_id.ok_or(Rejection::NoCourier)?;
            order.status = Delivering;
            kinds.push(EventKind::Dispatched { courier_id });
        }
        Command::ReportException { kind, note } => {
            require(order, command, &[Delivering])?;
            check_text("note", note, false)?;
            order.exception = Some(OpenException { kind: *kind, note: note.clone(), at });
            order.status = ExceptionHandling;
            kinds.push(EventKind::ExceptionReported { kind: *kind, note: note.clone() });
        }
        Command::ResumeDelivery { courier_id } => {
            require(order, command, &[ExceptionHandling, DeliveryFailed])?;
            let reassigned = courier_id.is_some_and(|c| Some(c) != order.courier_id);
            if let Some(c) = courier_id {
                order.courier_id = Some(*c);
            }
            let courier_id = order.courier_id.ok_or(Rejection::NoCourier)?;
            order.exception = None;
            order.status = Delivering;
            kinds.push(EventKind::DeliveryResumed { courier_id, reassigned });
        }
        Command::RecordFailedAttempt { reason } => {
            require(order, command, &[Delivering])?;
            order.failed_attempts = order.failed_attempts.saturating_add(1);
            order.status = DeliveryFailed;
            kinds.push(EventKind::DeliveryAttemptFailed { reason: *reason, attempt: order.failed_attempts });
        }
        Command::ScheduleRedelivery { window } => {
            require(order, command, &[DeliveryFailed])?;
            if window.start >= window.end {
                return Err(invalid("window", "start must be before end"));
            }
            if window.end <= at {
                return Err(invalid("window", "must end in the future"));
            }
            order.requested_window = *window;
            order.status = Packed;
            kinds.push(EventKind::RedeliveryScheduled { window: *window });
        }
        Command::DropOffUnattended { photo_sha256 } => {
            require(order, command, &[DeliveryFailed])?;
            check_sha256("photoSha256", photo_sha256)?;
            sign(order, &[], photo_sha256, true, at, kinds)?;
        }
        Command::Sign { lines, signature_sha256 } => {
            require(order, command, &[Delivering])?;
            check_sha256("signatureSha256", signature_sha256)?;
            sign(order, lines, signature_sha256, false, at, kinds)?;
        }
        Command::StartReturn { reason } => {
            require(order, command, &[ExceptionHandling, DeliveryFailed])?;
            check_text("reason", reason, true)?;
            order.status = Returning;
            kinds.push(EventKind::ReturnStarted { reason: reason.clone() });
        }
        Command::ConfirmReturned => {
            require(order, command, &[Returning])?;
            order.status = Returned;
            order.recompute_totals();
            kinds.push(EventKind::Returned { refund_fen: -order.totals.balance_fen });
        }
        Command::OpenClaim { lines, note } => {
            require(order, command, &[ExceptionHandling])?;
            check_text("note", note, false)?;
            if lines.is_empty() {
                return Err(invalid("lines", "name the damaged lines"));
            }
            let mut claimed_fen = 0;
            for (i, claim) in lines.iter().enumerate() {
                if lines[..i].iter().any(|c| c.line_no == claim.line_no) {
                    return Err(invalid("lines", format!("line {} listed twice", claim.line_no)));
                }
                let line = order.line(claim.line_no).ok_or(Rejection::UnknownLine(claim.line_no))?;
                let delivered = line.base_delivered();
                if claim.base <= 0 || claim.base > delivered {
                    return Err(invalid("lines", format!("line {}: between 1 and {delivered}", claim.line_no)));
                }
                // The claim is worth the damaged share of what the line costs.
                claimed_fen += i64::try_from(crate::quantity::div_round(
                    i128::from(line.amount_fen) * i128::from(claim.base),
                    i128::from(delivered),
                ))
                .unwrap_or(i64::MAX);
            }
            order.claim = Some(Claim { lines: lines.clone(), note: note.clone(), claimed_fen, settled_fen: None });
            order.status = ClaimOpen;
            kinds.push(EventKind::ClaimOpened { lines: lines.clone(), note: note.clone(), claimed_fen });
        }
        Command::SettleClaim { amount_fen } => {
            require(order, command, &[ClaimOpen])?;
            let claimed = order.claim.as_ref().map_or(0, |c| c.claimed_fen);
            if !(0..=claimed).contains(amount_fen) {
                return Err(invalid("amountFen", format!("between 0 and the claimed {claimed}")));
            }
            if let Some(c) = order.claim.as_mut() {
                c.settled_fen = Some(*amount_fen);
            }
            order.status = ClaimSettled;
            kinds.push(EventKind::ClaimSettled { amount_fen: *amount_fen });
        }
        Command::Cancel { reason } => {
            require(order, command, &[Created, Paid, OutOfStock, AwaitingPick, Picking, Packed])?;
            check_text("reason", reason, true)?;
            cancel(order, reason.clone(), at, kinds);
        }
    }
    Ok(())
}

fn next_line_no(order: &Order) -> u16 {
    order.lines.iter().map(|l| l.line_no).max().unwrap_or(0) + 1
}

fn sign(
    order: &mut Order,
    rejected: &[LineAcceptance],
    evidence_sha256: &str,
    unattended: bool,
    at: DateTime<Utc>,
    kinds: &mut Vec<EventKind>,
) -> Result<(), Rejection> {
    for (i, r) in rejected.iter().enumerate() {
        if rejected[..i].iter().any(|o| o.line_no == r.line_no) {
            return Err(invalid("lines", format!("line {} listed twice", r.line_no)));
        }
        let line = order.line(r.line_no).ok_or(Rejection::UnknownLine(r.line_no))?;
        if r.rejected_base < 0 || r.rejected_base > line.base_delivered() {
            return Err(invalid(
                "lines",
                format!("line {}: rejected must be between 0 and {}", r.line_no, line.base_delivered()),
            ));
        }
    }
    let delivered: i64 = order.lines.iter().map(OrderLine::base_delivered).sum();
    let rejected_total: i64 = rejected.iter().map(|r| r.rejected_base).sum();
    if delivered > 0 && rejected_total == delivered {
        return Err(invalid("lines", "everything is rejected: report a refusal to start the return flow"));
    }
    for line in &mut order.lines {
        let Some(picked) = line.picked else { continue };
        let refusal = rejected.iter().find(|r| r.line_no == line.line_no);
        let rejected_base = refusal.map_or(0, |r| r.rejected_base);
        line.acceptance = Some(Acceptance {
            accepted_base: picked.base - rejected_base,
            rejected_base,
            reason: refusal.filter(|r| r.rejected_base > 0).map(|r| r.reason),
        });
        line.reprice();
    }
    order.sign_off = Some(SignOff { evidence_sha256: evidence_sha256.to_owned(), unattended, at });
    order.status = Status::Signed;
    order.recompute_totals();
    kinds.push(EventKind::Signed {
        evidence_sha256: evidence_sha256.to_owned(),
        unattended,
        rejected: rejected.iter().copied().filter(|r| r.rejected_base > 0).collect(),
        charge_fen: order.totals.charge_fen,
        balance_fen: order.totals.balance_fen,
    });
    Ok(())
}
