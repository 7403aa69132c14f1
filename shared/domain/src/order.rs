//! The order aggregate: an order with lines that carry the quantities.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ContactId, CourierId, CustomerId, MerchantId, OrderId, OrderNumber, WarehouseId};
use crate::quantity::{Dimension, Fen, Price, Quantity, Unit, div_round};

/// Where an order is in its life. Wire names are SCREAMING_SNAKE as in the
/// requirements (`DELIVERING`, `EXCEPTION_HANDLING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Placed, payment not yet secured.
    Created,
    /// Payment secured (paid, or credit terms); the stock check follows.
    Paid,
    /// Every line is covered by reserved stock; waiting for a picker.
    AwaitingPick,
    /// At least one line is short; it waits for substitution, short-shipping or cancellation.
    OutOfStock,
    /// Being picked and weighed in the warehouse.
    Picking,
    /// Picked and packed, ready for a courier.
    Packed,
    /// With the courier.
    Delivering,
    /// The courier could not hand it over (customer absent, closed).
    DeliveryFailed,
    /// Something went wrong on the road; the merchant decides what happens next.
    ExceptionHandling,
    /// Refused: the goods are on their way back.
    Returning,
    /// Back at the warehouse; the customer is refunded.
    Returned,
    /// Damaged in transit: a claim is open.
    ClaimOpen,
    /// The claim is settled.
    ClaimSettled,
    /// Signed for (possibly with lines partly rejected). Ends the delivery.
    Signed,
    /// Cancelled before dispatch; stock returns and payment is refunded.
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 15] = [
        Status::Created,
        Status::Paid,
        Status::AwaitingPick,
        Status::OutOfStock,
        Status::Picking,
        Status::Packed,
        Status::Delivering,
        Status::DeliveryFailed,
        Status::ExceptionHandling,
        Status::Returning,
        Status::Returned,
        Status::ClaimOpen,
        Status::ClaimSettled,
        Status::Signed,
        Status::Cancelled,
    ];

    pub const fn is_terminal(self) -> bool {
        matches!(self, Status::Signed | Status::Returned | Status::ClaimSettled | Status::Cancelled)
    }

    /// Before the goods leave with a courier: the order can still be cancelled.
    pub const fn is_before_dispatch(self) -> bool {
        matches!(
            self,
            Status::Created
                | Status::Paid
                | Status::AwaitingPick
                | Status::OutOfStock
                | Status::Picking
                | Status::Packed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "CREATED",
            Status::Paid => "PAID",
            Status::AwaitingPick => "AWAITING_PICK",
            Status::OutOfStock => "OUT_OF_STOCK",
            Status::Picking => "PICKING",
            Status::Packed => "PACKED",
            Status::Delivering => "DELIVERING",
            Status::DeliveryFailed => "DELIVERY_FAILED",
            Status::ExceptionHandling => "EXCEPTION_HANDLING",
            Status::Returning => "RETURNING",
            Status::Returned => "RETURNED",
            Status::ClaimOpen => "CLAIM_OPEN",
            Status::ClaimSettled => "CLAIM_SETTLED",
            Status::Signed => "SIGNED",
            Status::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every edge the state machine may take (self-loops are changes within a
/// state, such as recording a picked line).
pub const LEGAL_EDGES: &[(Status, Status)] = {
    use Status::*;
    &[
        (Created, Paid),
        (Created, Created),
        (Created, Cancelled),
        (Paid, AwaitingPick),
        (Paid, OutOfStock),
        (Paid, Paid),
        (Paid, Cancelled),
        (OutOfStock, OutOfStock),
        (OutOfStock, AwaitingPick),
        (OutOfStock, Cancelled),
        (AwaitingPick, AwaitingPick),
        (AwaitingPick, Picking),
        (AwaitingPick, Cancelled),
        (Picking, Picking),
        (Picking, Packed),
        (Picking, Cancelled),
        (Packed, Packed),
        (Packed, Delivering),
        (Packed, Cancelled),
        (Delivering, Signed),
        (Delivering, ExceptionHandling),
        (Delivering, DeliveryFailed),
        (ExceptionHandling, Delivering),
        (ExceptionHandling, Returning),
        (ExceptionHandling, ClaimOpen),
        (DeliveryFailed, Delivering),
        (DeliveryFailed, Packed),
        (DeliveryFailed, Signed),
        (DeliveryFailed, Returning),
        (Returning, Returned),
        (ClaimOpen, ClaimSettled),
    ]
};

pub fn is_legal_edge(from: Status, to: Status) -> bool {
    LEGAL_EDGES.contains(&(from, to))
}

/// A span of time, such as the delivery window promised to the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// How the customer pays. Many B2B customers settle monthly, so "paid" means
/// payment is *secured*: prepaid, or on credit terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum PaymentTerms {
    Prepaid,
    Credit {
        #[serde(rename = "days")]
        days: u16,
    },
}

/// How payment was secured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum PaymentMethod {
    /// Confirmed by a payment gateway's signed notification.
    Gateway { gateway: String, reference: String },
    /// Marked paid by an administrator (bank transfer, cash).
    Admin { note: String },
    /// The customer buys on credit terms; nothing is collected now.
    CreditTerms,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub method: PaymentMethod,
    /// What was collected (0 on credit terms).
    pub paid_fen: Fen,
    pub at: DateTime<Utc>,
}

/// Storage temperature a line needs; decides which vehicles may carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TemperatureClass {
    #[default]
    Ambient,
    Chilled,
    Frozen,
}

/// Why a quantity was refused at sign-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectReason {
    Shortage,
    Damaged,
    Quality,
    WrongItem,
    Other,
}

/// A line as the customer orders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LineDraft {
    pub sku: String,
    pub name: String,
    pub quantity: Quantity,
    pub unit: Unit,
    /// Nominal grams per piece or box; required for counted units.
    #[serde(default)]
    pub nominal_g: Option<i64>,
    pub price: Price,
    /// Allowed deviation of the picked weight, in permille (default 100 = 10 %).
    #[serde(default)]
    pub tolerance_permille: Option<u16>,
    #[serde(default)]
    pub temperature: TemperatureClass,
}

/// A short line and how it is being resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Shortage {
    /// What the warehouse could reserve, in base units.
    pub available_base: i64,
    pub resolution: ShortageResolution,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShortageResolution {
    /// Nobody has decided yet.
    Open,
    /// A substitute was offered; the customer has until `respond_by` to consent.
    SubstitutionProposed { substitute: LineDraft, respond_by: DateTime<Utc> },
    /// The customer accepted; `line_no` is the substitute line.
    Substituted { line_no: u16 },
    /// Ship what there is.
    ShortShipped,
}

impl ShortageResolution {
    pub const fn is_resolved(&self) -> bool {
        matches!(self, ShortageResolution::Substituted { .. } | ShortageResolution::ShortShipped)
    }
}

/// What the scale said when the line was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Picked {
    /// Grams for lines in weight units; pieces for counted lines.
    pub base: i64,
    /// Scale weight of counted lines priced by weight (catch weight).
    pub weight_g: Option<i64>,
    /// Picked knowingly below the tolerance (short at picking).
    pub short: bool,
}

/// What the customer accepted at sign-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Acceptance {
    pub accepted_base: i64,
    pub rejected_base: i64,
    pub reason: Option<RejectReason>,
}

/// One line of an order. The quantities live here, not on the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub line_no: u16,
    pub sku: String,
    pub name: String,
    /// As ordered, in `unit`.
    pub quantity: Quantity,
    pub unit: Unit,
    pub nominal_g: Option<i64>,
    pub price: Price,
    pub tolerance_permille: u16,
    pub temperature: TemperatureClass,
    /// Grams or pieces (see `dimension`) as ordered.
    pub base_ordered: i64,
    pub dimension: Dimension,
    /// Held in the warehouse's stock for this line.
    pub base_reserved: i64,
    /// What will be shipped: the ordered base, or less after short-shipping.
    pub base_to_ship: i64,
    pub shortage: Option<Shortage>,
    /// This line replaces the short line with that number.
    pub substitute_for: Option<u16>,
    pub picked: Option<Picked>,
    pub acceptance: Option<Acceptance>,
    /// The amount at the ordered quantity.
    pub amount_ordered_fen: Fen,
    /// The amount now: ordered → picked (re-priced on actual weight) → accepted.
    pub amount_fen: Fen,
}

impl OrderLine {
    /// The measure the price applies to: grams when priced by weight (the
    /// scale weight for catch-weight pieces), pieces when priced per piece.
    fn priced_measure(&self, base: i64, weight_g: Option<i64>) -> i64 {
        match (self.dimension, self.price.per.dimension()) {
            (Dimension::Pieces, Dimension::Grams) => {
                weight_g.unwrap_or_else(|| base.saturating_mul(self.nominal_g.unwrap_or(0)))
            }
            _ => base,
        }
    }

    /// Re-computes `amount_fen` from the most advanced quantity known.
    pub(crate) fn reprice(&mut self) {
        self.amount_fen = match (self.picked, self.acceptance) {
            (Some(picked), Some(acceptance)) => {
                let weight = picked.weight_g.map(|w| {
                    if picked.base == 0 {
                        0
                    } else {
                        let w =
                            div_round(i128::from(w) * i128::from(acceptance.accepted_base), i128::from(picked.base));
                        i64::try_from(w).unwrap_or(i64::MAX)
                    }
                });
                self.price.amount(self.priced_measure(acceptance.accepted_base, weight))
            }
            (Some(picked), None) => self.price.amount(self.priced_measure(picked.base, picked.weight_g)),
            _ => self.price.amount(self.priced_measure(self.base_to_ship, None)),
        };
    }

    /// The ordered amount, at creation.
    pub(crate) fn price_ordered(&mut self) {
        self.amount_ordered_fen = self.price.amount(self.priced_measure(self.base_ordered, None));
    }

    pub fn is_short_unresolved(&self) -> bool {
        self.shortage.as_ref().is_some_and(|s| !s.resolution.is_resolved())
    }

    /// Goods that physically left (or will leave) the warehouse for this line.
    pub fn base_delivered(&self) -> i64 {
        self.picked.map_or(0, |p| p.base)
    }
}

/// An exception reported on the road.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExceptionKind {
    TrafficAccident,
    VehicleBreakdown,
    Delay,
    DamagedInTransit,
    CustomerRefused,
    TemperatureExcursion,
    Other,
}

impl ExceptionKind {
    /// An accident or breakdown stops the vehicle: it covers every order aboard.
    pub fn is_vehicle_level(self) -> bool {
        matches!(self, ExceptionKind::TrafficAccident | ExceptionKind::VehicleBreakdown)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailedAttemptReason {
    CustomerAbsent,
    Closed,
    AddressProblem,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OpenException {
    pub kind: ExceptionKind,
    pub note: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SignOff {
    /// SHA-256 of the signature image (or of the drop-off photo).
    pub evidence_sha256: String,
    pub unattended: bool,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimLine {
    pub line_no: u16,
    /// Damaged grams or pieces.
    pub base: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub lines: Vec<ClaimLine>,
    pub note: String,
    /// The damaged goods' value: the most a settlement can pay.
    pub claimed_fen: Fen,
    pub settled_fen: Option<Fen>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Cancellation {
    pub reason: String,
    /// The status the order was cancelled from (decides what happens to stock).
    pub from: Status,
    pub at: DateTime<Utc>,
}

/// Money owed, derived from the lines. `balance_fen` is 多退少补: positive means
/// the customer owes more, negative that they are refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub ordered_fen: Fen,
    pub charge_fen: Fen,
    pub paid_fen: Fen,
    pub balance_fen: Fen,
}

/// The order aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: OrderId,
    pub number: OrderNumber,
    pub merchant_id: MerchantId,
    pub warehouse_id: WarehouseId,
    pub customer_id: CustomerId,
    pub contact_id: Option<ContactId>,
    pub courier_id: Option<CourierId>,
    pub status: Status,
    /// Grows by one with every accepted command.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The promise to the customer; live estimates are kept apart.
    pub requested_window: TimeWindow,
    pub notes: String,
    pub payment_terms: PaymentTerms,
    pub payment: Option<Payment>,
    pub lines: Vec<OrderLine>,
    pub exception: Option<OpenException>,
    pub failed_attempts: u16,
    pub sign_off: Option<SignOff>,
    pub claim: Option<Claim>,
    pub cancellation: Option<Cancellation>,
    pub totals: Totals,
}

impl Order {
    pub fn line(&self, line_no: u16) -> Option<&OrderLine> {
        self.lines.iter().find(|l| l.line_no == line_no)
    }

    pub(crate) fn line_mut(&mut self, line_no: u16) -> Option<&mut OrderLine> {
        self.lines.iter_mut().find(|l| l.line_no == line_no)
    }

    /// Re-derives the totals from the lines and the order's fate.
    pub(crate) fn recompute_totals(&mut self) {
        let ordered_fen = self.lines.iter().map(|l| l.amount_ordered_fen).sum();
        let lines_fen: Fen = self.lines.iter().map(|l| l.amount_fen).sum();
        let charge_fen = match self.status {
            Status::Cancelled | Status::Returned => 0,
            _ => lines_fen - self.claim.as_ref().and_then(|c| c.settled_fen).unwrap_or(0),
        };
        let paid_fen = self.payment.as_ref().map_or(0, |p| p.paid_fen);
        self.totals = Totals { ordered_fen, charge_fen, paid_fen, balance_fen: charge_fen - paid_fen };
    }

    /// What the goods weigh as they will ship, grams: picked weights where
    /// picked, otherwise the ordered grams or pieces × their nominal weight.
    pub fn shipping_weight_g(&self) -> i64 {
        self.lines
            .iter()
            .map(|l| match (&l.picked, l.dimension) {
                (Some(p), _) if p.weight_g.is_some() => p.weight_g.unwrap_or(0),
                (Some(p), Dimension::Grams) => p.base,
                (Some(p), Dimension::Pieces) => p.base * l.nominal_g.unwrap_or(0),
                (None, Dimension::Grams) => l.base_to_ship,
                (None, Dimension::Pieces) => l.base_to_ship * l.nominal_g.unwrap_or(0),
            })
            .sum()
    }

    /// The room the goods take as they will ship, millilitres, given each
    /// SKU's volume per kilogram (weighed goods) or per piece (counted goods);
    /// lines of unknown volume take none.
    pub fn shipping_volume_ml(&self, ml_per_unit: impl Fn(&str) -> Option<i64>) -> i64 {
        self.lines
            .iter()
            .map(|l| {
                let base = l.picked.as_ref().map_or(l.base_to_ship, |p| p.base);
                let per = ml_per_unit(&l.sku).unwrap_or(0);
                match l.dimension {
                    Dimension::Grams => base.saturating_mul(per) / 1000,
                    Dimension::Pieces => base.saturating_mul(per),
                }
            })
            .sum()
    }

    /// The coldest storage any line needs.
    pub fn temperature(&self) -> TemperatureClass {
        self.lines.iter().map(|l| l.temperature).max().unwrap_or(TemperatureClass::Ambient)
    }

    /// Lines in the seed's compact form.
    pub fn items(&self) -> impl Iterator<Item = (&str, Quantity, Unit)> {
        self.lines.iter().map(|l| (l.name.as_str(), l.quantity, l.unit))
    }
}
