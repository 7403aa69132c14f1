//! What a courier reports, in their words, turned into the commands and
//! evidence the server takes — always through the outbox.

use chrono::{DateTime, Utc};
use xianlu_domain::evidence::{EvidenceKind, EvidenceUpload};
use xianlu_domain::wire::LatLng;
use xianlu_domain::{Command, CourierId, ExceptionKind, FailedAttemptReason, LineAcceptance, Order, OrderId, Status};

use crate::outbox::Operation;
use crate::signature::SignatureEvidence;

/// The reasons on the courier's "report a problem" list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionReason {
    TrafficAccident,
    VehicleBreakdown,
    CustomerAbsent,
    CustomerClosed,
    CustomerRefused,
    GoodsDamaged,
    TemperatureProblem,
    WrongAddress,
    Other,
}

impl ExceptionReason {
    pub const ALL: [ExceptionReason; 9] = [
        ExceptionReason::TrafficAccident,
        ExceptionReason::VehicleBreakdown,
        ExceptionReason::CustomerAbsent,
        ExceptionReason::CustomerClosed,
        ExceptionReason::CustomerRefused,
        ExceptionReason::GoodsDamaged,
        ExceptionReason::TemperatureProblem,
        ExceptionReason::WrongAddress,
        ExceptionReason::Other,
    ];

    /// An accident or a breakdown stops the vehicle: every order aboard is affected.
    pub fn is_vehicle_level(self) -> bool {
        matches!(self, ExceptionReason::TrafficAccident | ExceptionReason::VehicleBreakdown)
    }

    /// The exception kind it is recorded as, if it is an exception (absent,
    /// closed and wrong address are failed delivery attempts).
    pub fn exception_kind(self) -> Option<ExceptionKind> {
        match self {
            ExceptionReason::TrafficAccident => Some(ExceptionKind::TrafficAccident),
            ExceptionReason::VehicleBreakdown => Some(ExceptionKind::VehicleBreakdown),
            ExceptionReason::CustomerRefused => Some(ExceptionKind::CustomerRefused),
            ExceptionReason::GoodsDamaged => Some(ExceptionKind::DamagedInTransit),
            ExceptionReason::TemperatureProblem => Some(ExceptionKind::TemperatureExcursion),
            ExceptionReason::Other => Some(ExceptionKind::Other),
            ExceptionReason::CustomerAbsent | ExceptionReason::CustomerClosed | ExceptionReason::WrongAddress => None,
        }
    }

    /// The command that records it on one order.
    pub fn command(self, note: &str) -> Command {
        let failed = |reason| Command::RecordFailedAttempt { reason };
        match self {
            ExceptionReason::CustomerAbsent => failed(FailedAttemptReason::CustomerAbsent),
            ExceptionReason::CustomerClosed => failed(FailedAttemptReason::Closed),
            ExceptionReason::WrongAddress => failed(FailedAttemptReason::AddressProblem),
            other => Command::ReportException {
                kind: other.exception_kind().unwrap_or(ExceptionKind::Other),
                note: note.to_owned(),
            },
        }
    }
}

/// A photo to attach: an upload prepared by `photo::prepare` (or the browser).
#[derive(Debug, Clone, PartialEq)]
pub struct AttachedPhoto {
    pub sha256: String,
    pub upload: EvidenceUpload,
}

/// An exception report as the courier files it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionReport {
    pub reason: ExceptionReason,
    pub note: String,
    pub photos: Vec<AttachedPhoto>,
    pub position: Option<LatLng>,
    pub at: DateTime<Utc>,
}

/// The orders a report covers: the one it was filed on, or — for an
/// accident or breakdown — every order aboard the courier's vehicle.
pub fn affected_orders(reason: ExceptionReason, order: OrderId, courier: CourierId, known: &[Order]) -> Vec<OrderId> {
    if !reason.is_vehicle_level() {
        return vec![order];
    }
    let mut aboard: Vec<OrderId> = known
        .iter()
        .filter(|o| o.courier_id == Some(courier) && o.status == Status::Delivering)
        .map(|o| o.id)
        .collect();
    if !aboard.contains(&order) {
        aboard.insert(0, order);
    }
    aboard
}

/// The outbox operations of a report on these orders: each order's photos
/// first, then its command, so the evidence lands before what it documents.
pub fn report_operations(report: &ExceptionReport, orders: &[OrderId]) -> Vec<Operation> {
    let mut operations = Vec::new();
    for &order_id in orders {
        for photo in &report.photos {
            let mut upload = photo.upload.clone();
            upload.exception_kind = report.reason.exception_kind();
            upload.position = upload.position.or(report.position);
            operations.push(Operation::Evidence { order_id, sha256: photo.sha256.clone(), upload });
        }
        operations.push(Operation::Command {
            order_id,
            command: report.reason.command(&report.note),
            expected_version: None,
        });
    }
    operations
}

/// The outbox operations of a report filed from one order: for an accident
/// or breakdown, the photos go to every order this device knows is aboard
/// and one vehicle-level operation lets the server cover every order aboard
/// (also those assigned since this device last heard); otherwise the
/// photos and the command go to the one order.
pub fn file_report(report: &ExceptionReport, order: OrderId, courier: CourierId, known: &[Order]) -> Vec<Operation> {
    if !report.reason.is_vehicle_level() {
        return report_operations(report, &[order]);
    }
    let aboard = affected_orders(report.reason, order, courier, known);
    let mut operations: Vec<Operation> =
        report_operations(report, &aboard).into_iter().filter(|op| matches!(op, Operation::Evidence { .. })).collect();
    operations.push(Operation::VehicleException {
        courier_id: courier,
        kind: report.reason.exception_kind().unwrap_or(ExceptionKind::Other),
        note: report.note.clone(),
    });
    operations
}

/// A sign-off: the signature (and a photo of the signed paper note, if
/// taken) uploaded before the `SIGN` command that names it.
pub fn sign_off_operations(
    order_id: OrderId,
    signature: &SignatureEvidence,
    lines: Vec<LineAcceptance>,
    delivery_note: Option<&AttachedPhoto>,
) -> Vec<Operation> {
    let mut operations =
        vec![Operation::Evidence { order_id, sha256: signature.sha256.clone(), upload: signature.upload() }];
    if let Some(note) = delivery_note {
        let mut upload = note.upload.clone();
        upload.kind = EvidenceKind::DeliveryNote;
        operations.push(Operation::Evidence { order_id, sha256: note.sha256.clone(), upload });
    }
    operations.push(Operation::Command {
        order_id,
        command: Command::Sign { lines, signature_sha256: signature.sha256.clone() },
        expected_version: None,
    });
    operations
}

/// An unattended drop-off: the photo of the goods at the door, then the command.
pub fn drop_off_operations(order_id: OrderId, photo: &AttachedPhoto) -> Vec<Operation> {
    vec![
        Operation::Evidence { order_id, sha256: photo.sha256.clone(), upload: photo.upload.clone() },
        Operation::Command {
            order_id,
            command: Command::DropOffUnattended { photo_sha256: photo.sha256.clone() },
            expected_version: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_maps_to_a_command() {
        for reason in ExceptionReason::ALL {
            let command = reason.command("note");
            match reason.exception_kind() {
                Some(kind) => assert!(matches!(command, Command::ReportException { kind: k, .. } if k == kind)),
                None => assert!(matches!(command, Command::RecordFailedAttempt { .. })),
            }
            assert_eq!(reason.is_vehicle_level(), reason.exception_kind().is_some_and(|k| k.is_vehicle_level()));
        }
    }
}
