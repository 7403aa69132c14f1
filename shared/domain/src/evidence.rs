//! Evidence of what happened at the door or on the road (signatures, photos,
//! photographed delivery notes) and courier positions, as they cross the
//! network. Evidence is content-addressed: the digest below is computed the
//! same way by the device that captured it and by the server that stores it,
//! so a sign-off can name its signature before the upload has landed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::OrderId;
use crate::order::ExceptionKind;
use crate::wire::LatLng;

/// What a piece of evidence shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EvidenceKind {
    /// A signature drawn on a screen: its normalised strokes and a PNG.
    Signature,
    /// A photo: goods, damage, the door of an unattended drop-off.
    Photo,
    /// A photo of the paper delivery note the customer signed.
    DeliveryNote,
}

impl EvidenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Signature => "SIGNATURE",
            EvidenceKind::Photo => "PHOTO",
            EvidenceKind::DeliveryNote => "DELIVERY_NOTE",
        }
    }

    pub fn parse(text: &str) -> Option<EvidenceKind> {
        [EvidenceKind::Signature, EvidenceKind::Photo, EvidenceKind::DeliveryNote]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// Domain separation for signature digests.
const SIGNATURE_DIGEST_TAG: &[u8] = b"xianlu-signature-v1\n";

/// The content address of a piece of evidence, as lowercase hex SHA-256.
///
/// A photo's digest is the SHA-256 of its image bytes as captured. A
/// signature's covers both of its forms — the normalised strokes (UTF-8 JSON,
/// hashed as sent) and the PNG — length-prefixed, so neither can be swapped
/// without changing the digest.
pub fn evidence_digest(kind: EvidenceKind, image: &[u8], strokes: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    if kind == EvidenceKind::Signature {
        let strokes = strokes.unwrap_or_default().as_bytes();
        hasher.update(SIGNATURE_DIGEST_TAG);
        hasher.update((strokes.len() as u64).to_be_bytes());
        hasher.update(strokes);
        hasher.update((image.len() as u64).to_be_bytes());
    }
    hasher.update(image);
    hex::encode(hasher.finalize())
}

/// Whether a text is a digest as [`evidence_digest`] writes them.
pub fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An upload of one piece of evidence for an order (`PUT /orders/{id}/evidence/{sha256}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceUpload {
    pub kind: EvidenceKind,
    /// The image (PNG or JPEG), base64 (standard alphabet, padded).
    pub image: String,
    /// A signature's normalised strokes, exactly the text that was hashed.
    #[serde(default)]
    pub strokes: Option<String>,
    /// The line it concerns (a damaged line, say).
    #[serde(default)]
    pub line_no: Option<u16>,
    /// The exception it documents.
    #[serde(default)]
    pub exception_kind: Option<ExceptionKind>,
    /// When it was captured (device time, UTC).
    pub taken_at: DateTime<Utc>,
    /// Where it was captured, when known.
    #[serde(default)]
    pub position: Option<LatLng>,
}

/// A stored piece of evidence. The image served is the server's re-encoding,
/// never the uploaded bytes; `imageSha256` is the digest of what is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EvidenceRecord {
    pub sha256: String,
    pub order_id: OrderId,
    pub kind: EvidenceKind,
    pub content_type: String,
    pub image_sha256: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub line_no: Option<u16>,
    pub exception_kind: Option<ExceptionKind>,
    pub taken_at: DateTime<Utc>,
    pub position: Option<LatLng>,
    pub uploaded_at: DateTime<Utc>,
}

/// One position fix from a courier's device (WGS-84).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PositionFix {
    /// Increases by one per fix the device keeps; replays are recognised by it.
    pub device_seq: u64,
    pub at: DateTime<Utc>,
    pub lat: f64,
    pub lng: f64,
    /// Horizontal accuracy radius, metres.
    pub accuracy_m: f32,
    #[serde(default)]
    pub speed_mps: Option<f32>,
    #[serde(default)]
    pub heading_deg: Option<f32>,
}

/// A batch of fixes (`POST /couriers/{id}/positions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PositionBatch {
    pub fixes: Vec<PositionFix>,
}

/// What the server made of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PositionReceipt {
    /// Fixes stored now.
    pub accepted: u32,
    /// Fixes already stored (a replayed batch).
    pub duplicates: u32,
    /// Stored, but flagged as an impossible jump and not trusted.
    pub flagged: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_digest_covers_strokes_and_image() {
        let a = evidence_digest(EvidenceKind::Signature, b"png", Some("[1]"));
        assert_ne!(a, evidence_digest(EvidenceKind::Signature, b"png", Some("[2]")));
        assert_ne!(a, evidence_digest(EvidenceKind::Signature, b"pnh", Some("[1]")));
        // Moving a byte across the boundary changes the digest.
        assert_ne!(
            evidence_digest(EvidenceKind::Signature, b"ab", Some("x")),
            evidence_digest(EvidenceKind::Signature, b"b", Some("xa"))
        );
        assert!(is_digest(&a));
    }

    #[test]
    fn photo_digest_is_plain_sha256() {
        assert_eq!(
            evidence_digest(EvidenceKind::Photo, b"abc", None),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!is_digest("BA7816"));
    }
}
