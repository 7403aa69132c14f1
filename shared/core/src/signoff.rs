//! Sign-off on the customer's own screen as a view-model: each line
//! accepted, or a quantity of it rejected with a reason; a signature drawn
//! on the screen; then the signature uploaded as evidence and the order
//! signed, which gives a receipt naming the signature's hash. The receipt
//! can be checked against the server later. Nothing here draws.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use xianlu_domain::wire::{CommandRequest, LatLng, OrderView};
use xianlu_domain::{Command, Dimension, Fen, LineAcceptance, OrderId, OrderNumber, RejectReason, Status, Unit};

use crate::api::ApiClient;
use crate::error::{CoreError, CoreResult};
use crate::outbox::Operation;
use crate::report::{AttachedPhoto, sign_off_operations};
use crate::signature::SignatureCapture;

/// One line as the customer checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct LineCheck {
    pub line_no: u16,
    pub name: String,
    pub unit: Unit,
    pub dimension: Dimension,
    /// What was delivered, grams or pieces.
    pub delivered_base: i64,
    /// What the customer refuses of it, and why.
    pub rejected_base: i64,
    pub reason: Option<RejectReason>,
}

/// The sign-off being prepared.
#[derive(Debug, Clone)]
pub struct SignOff {
    pub order_id: OrderId,
    pub order_number: OrderNumber,
    version: u64,
    pub lines: Vec<LineCheck>,
    pub signature: SignatureCapture,
}

/// What the customer keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub order_id: OrderId,
    pub order_number: OrderNumber,
    pub signed_at: DateTime<Utc>,
    /// The signature's evidence digest, as the server stores and recomputes it.
    pub signature_sha256: String,
    pub rejected: Vec<LineAcceptance>,
    pub charge_fen: Fen,
    pub balance_fen: Fen,
}

/// What a later check of a receipt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptCheck {
    /// The server holds the signature under that digest, and its image is intact.
    Verified,
    /// The server holds no signature with that digest for the order.
    Missing,
    /// The stored image no longer matches its recorded digest.
    Altered,
}

impl SignOff {
    /// A sign-off for an order being delivered, every line accepted, with a
    /// signing area of `width` × `height` pixels.
    pub fn for_order(view: &OrderView, width: f32, height: f32) -> CoreResult<SignOff> {
        if view.status != Status::Delivering {
            return Err(CoreError::Refused(format!("an order is signed for on delivery, not when {}", view.status)));
        }
        let lines = view
            .order
            .lines
            .iter()
            .map(|l| LineCheck {
                line_no: l.line_no,
                name: l.name.clone(),
                unit: l.unit,
                dimension: l.dimension,
                delivered_base: l.picked.as_ref().map_or(l.base_to_ship, |p| p.base),
                rejected_base: 0,
                reason: None,
            })
            .collect();
        Ok(SignOff {
            order_id: view.order.id,
            order_number: view.order.number.clone(),
            version: view.order.version,
            lines,
            signature: SignatureCapture::new(width, height),
        })
    }

    /// Refuses `base` (grams or pieces) of a line, for `reason`; 0 accepts it whole.
    pub fn reject(&mut self, line_no: u16, base: i64, reason: RejectReason) -> CoreResult<()> {
        let line = self
            .lines
            .iter_mut()
            .find(|l| l.line_no == line_no)
            .ok_or_else(|| CoreError::Refused(format!("no line {line_no}")))?;
        if !(0..=line.delivered_base).contains(&base) {
            return Err(CoreError::Refused(format!("between 0 and {} can be refused", line.delivered_base)));
        }
        line.rejected_base = base;
        line.reason = (base > 0).then_some(reason);
        Ok(())
    }

    pub fn accept(&mut self, line_no: u16) {
        if let Some(line) = self.lines.iter_mut().find(|l| l.line_no == line_no) {
            line.rejected_base = 0;
            line.reason = None;
        }
    }

    /// What the sign-off refuses, as the command carries it.
    pub fn rejections(&self) -> Vec<LineAcceptance> {
        self.lines
            .iter()
            .filter_map(|l| {
                l.reason.filter(|_| l.rejected_base > 0).map(|reason| LineAcceptance {
                    line_no: l.line_no,
                    rejected_base: l.rejected_base,
                    reason,
                })
            })
            .collect()
    }

    /// Whether it can be sent: something signed.
    pub fn ready(&self) -> bool {
        !self.signature.is_empty()
    }

    /// The sign-off as outbox operations (a courier's device at the door:
    /// works offline): the signature, the photo of the signed paper note if
    /// taken, then `SIGN` naming the signature.
    pub fn operations(
        &self,
        now: DateTime<Utc>,
        position: Option<LatLng>,
        delivery_note: Option<&AttachedPhoto>,
    ) -> CoreResult<Vec<Operation>> {
        let evidence = self.signature.finish(now, position)?;
        Ok(sign_off_operations(self.order_id, &evidence, self.rejections(), delivery_note))
    }

    /// Uploads the signature and signs the order (one idempotency key for
    /// the whole sign-off, so a retry after a lost answer signs once).
    pub async fn submit(&self, api: &ApiClient, now: DateTime<Utc>, key: &str) -> CoreResult<Receipt> {
        let evidence = self.signature.finish(now, None)?;
        api.put_evidence(self.order_id, &evidence.sha256, &evidence.upload()).await?;
        let command = Command::Sign { lines: self.rejections(), signature_sha256: evidence.sha256.clone() };
        let request = CommandRequest { command, expected_version: Some(self.version) };
        let order = api.command(self.order_id, &request, key).await?;
        Ok(Receipt {
            order_id: order.id,
            order_number: order.number.clone(),
            signed_at: now,
            signature_sha256: evidence.sha256,
            rejected: self.rejections(),
            charge_fen: order.totals.charge_fen,
            balance_fen: order.totals.balance_fen,
        })
    }
}

/// Checks a receipt against what the server holds.
pub async fn check_receipt(api: &ApiClient, receipt: &Receipt) -> CoreResult<ReceiptCheck> {
    let records = api.evidence(receipt.order_id).await?;
    let Some(record) = records.iter().find(|r| r.sha256 == receipt.signature_sha256) else {
        return Ok(ReceiptCheck::Missing);
    };
    let image = api.evidence_image(receipt.order_id, &record.sha256).await?;
    Ok(if hex::encode(Sha256::digest(&image)) == record.image_sha256 {
        ReceiptCheck::Verified
    } else {
        ReceiptCheck::Altered
    })
}
