//! A short line's substitute, from both sides: the office offers one of the
//! warehouse's products in its place, the customer accepts or declines it
//! before the answer-by time (after which the server ships the line short).

use chrono::{DateTime, TimeDelta, Utc};
use xianlu_domain::wire::{CommandRequest, StockLevel};
use xianlu_domain::{Command, Fen, LineDraft, Order, OrderId, OrderLine, Price, Quantity, ShortageResolution, Unit};

use crate::api::ApiClient;
use crate::error::CoreResult;

/// How long a customer has to answer a proposed substitute.
pub const SUBSTITUTE_CONSENT_MINUTES: i64 = 30;

/// What the warehouse could put in place of a short line: SKUs of the same
/// kind of measure (weighed or counted) with enough free stock for the
/// ordered quantity, the line's own SKU excepted.
pub fn substitutes<'a>(line: &OrderLine, stock: &'a [StockLevel]) -> Vec<&'a StockLevel> {
    stock
        .iter()
        .filter(|s| s.sku != line.sku && s.dimension == line.dimension)
        .filter(|s| s.on_hand_base - s.reserved_base >= line.base_ordered)
        .collect()
}

/// Proposes `stock` in place of the short line `line_no`: the quantity and
/// unit ordered, at `price_fen` per that unit, kept as cold as the original.
/// The customer may answer until [`SUBSTITUTE_CONSENT_MINUTES`] past the
/// later of `now` and the order's last change (business time may run ahead
/// of this device's clock).
pub fn propose_substitute(
    order: &Order,
    line_no: u16,
    stock: &StockLevel,
    price_fen: Fen,
    now: DateTime<Utc>,
) -> Result<Command, String> {
    let line = order.line(line_no).ok_or_else(|| format!("the order has no line {line_no}"))?;
    if line.shortage.as_ref().is_none_or(|s| s.resolution != ShortageResolution::Open) {
        return Err(format!("line {line_no} has no open shortage"));
    }
    if stock.dimension != line.dimension {
        return Err(format!("{} is not measured like {}", stock.name, line.name));
    }
    if price_fen <= 0 {
        return Err("the price must be above zero".into());
    }
    let substitute = LineDraft {
        sku: stock.sku.clone(),
        name: stock.name.clone(),
        quantity: line.quantity,
        unit: line.unit,
        nominal_g: line.nominal_g,
        price: Price { fen: price_fen, per: line.price.per },
        tolerance_permille: Some(line.tolerance_permille),
        temperature: line.temperature,
    };
    let respond_by = now.max(order.updated_at) + TimeDelta::minutes(SUBSTITUTE_CONSENT_MINUTES);
    Ok(Command::ProposeSubstitution { line_no, substitute, respond_by })
}

/// A substitute offered to the customer, as their screen shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub order_id: OrderId,
    /// The order's version the offer was seen at: the answer is checked against it.
    pub version: u64,
    pub line_no: u16,
    /// The short line's product, and what is offered instead.
    pub short: String,
    pub offered: String,
    pub quantity: Quantity,
    pub unit: Unit,
    pub respond_by: DateTime<Utc>,
}

/// The substitutes an order offers its customer now.
pub fn offers(order: &Order) -> Vec<Offer> {
    order
        .lines
        .iter()
        .filter_map(|line| match &line.shortage.as_ref()?.resolution {
            ShortageResolution::SubstitutionProposed { substitute, respond_by } => Some(Offer {
                order_id: order.id,
                version: order.version,
                line_no: line.line_no,
                short: line.name.clone(),
                offered: substitute.name.clone(),
                quantity: substitute.quantity,
                unit: substitute.unit,
                respond_by: *respond_by,
            }),
            _ => None,
        })
        .collect()
}

/// The customer's answer to an offer, at the version it was seen: one key
/// per offer, so a second tap is the same answer, not another.
pub async fn answer(api: &ApiClient, offer: &Offer, accept: bool) -> CoreResult<Order> {
    let request = CommandRequest {
        expected_version: Some(offer.version),
        command: Command::AnswerSubstitution { line_no: offer.line_no, accept },
    };
    let key = format!("substitute-{}-{}-{}", offer.order_id, offer.line_no, offer.version);
    api.command(offer.order_id, &request, &key).await
}
