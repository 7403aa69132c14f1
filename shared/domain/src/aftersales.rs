//! After-sales matters: what a customer raises about an order after signing
//! for it (a quality complaint, a shortage found later, an exchange), within
//! the merchant's window. `SIGNED` ends the delivery, not the relationship:
//! a matter is its own record, and the order's status stays as it is.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::OrderId;
use crate::machine::Rejection;
use crate::order::{Order, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AfterSalesKind {
    QualityComplaint,
    ShortageFoundLater,
    Exchange,
}

/// A quantity of a line the matter is about, in grams or pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AfterSalesLine {
    pub line_no: u16,
    pub base: i64,
}

/// A matter as raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAfterSales {
    pub kind: AfterSalesKind,
    pub lines: Vec<AfterSalesLine>,
    #[serde(default)]
    pub note: String,
    /// Photos uploaded to the order as evidence first, by digest.
    #[serde(default)]
    pub photos: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AfterSalesStatus {
    Open,
    Resolved,
}

/// A matter as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AfterSales {
    pub id: Uuid,
    pub order_id: OrderId,
    pub kind: AfterSalesKind,
    pub lines: Vec<AfterSalesLine>,
    pub note: String,
    pub photos: Vec<String>,
    pub status: AfterSalesStatus,
    pub opened_at: DateTime<Utc>,
}

/// Whether a matter can be raised on `order`, signed at `signed_at`, at
/// business time `now`, with the merchant's window of `window_hours`.
pub fn check_new(
    order: &Order,
    signed_at: DateTime<Utc>,
    now: DateTime<Utc>,
    window_hours: u32,
    new: &NewAfterSales,
) -> Result<(), Rejection> {
    let bad = |field: &str, reason: String| Err(Rejection::Invalid { field: field.into(), reason });
    if order.status != Status::Signed {
        return Err(Rejection::IllegalTransition { command: "OPEN_AFTER_SALES", status: order.status });
    }
    if now > signed_at + TimeDelta::hours(i64::from(window_hours)) {
        return bad("window", format!("after-sales matters are taken within {window_hours} hours of signing"));
    }
    if new.lines.is_empty() || new.lines.len() > order.lines.len() {
        return bad("lines", "name the lines the matter is about".into());
    }
    for line in &new.lines {
        let Some(ordered) = order.lines.iter().find(|l| l.line_no == line.line_no) else {
            return Err(Rejection::UnknownLine(line.line_no));
        };
        let received = match &ordered.acceptance {
            Some(a) => a.accepted_base,
            None => ordered.picked.as_ref().map_or(ordered.base_to_ship, |p| p.base),
        };
        if !(1..=received.max(0)).contains(&line.base) {
            return bad("lines", format!("line {}: between 1 and {received} (what was received)", line.line_no));
        }
    }
    if new.note.chars().count() > 1000 {
        return bad("note", "at most 1000 characters".into());
    }
    if new.photos.len() > 10 || new.photos.iter().any(|p| p.len() != 64 || !p.bytes().all(|b| b.is_ascii_hexdigit())) {
        return bad("photos", "up to 10 evidence digests (64 hex digits each)".into());
    }
    Ok(())
}
