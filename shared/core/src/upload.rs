//! Evidence taken as it is, on platforms where the core does not re-encode
//! photos itself (the browser): the server re-encodes every image it keeps,
//! which also strips camera metadata, and recomputes the digest named here.

use chrono::{DateTime, Utc};
use xianlu_domain::evidence::{EvidenceKind, EvidenceUpload, evidence_digest};

/// The largest photo sent as it is, in bytes (the server's default limit is 6 MiB of base64).
pub const MAX_RAW_PHOTO: usize = 4 * 1024 * 1024;

/// A photo's digest and upload, for `PUT /orders/{id}/evidence/{digest}`.
pub fn raw_photo(bytes: &[u8], taken_at: DateTime<Utc>) -> Option<(String, EvidenceUpload)> {
    use base64::Engine;
    if bytes.is_empty() || bytes.len() > MAX_RAW_PHOTO {
        return None;
    }
    let digest = evidence_digest(EvidenceKind::Photo, bytes, None);
    let upload = EvidenceUpload {
        kind: EvidenceKind::Photo,
        image: base64::engine::general_purpose::STANDARD.encode(bytes),
        strokes: None,
        line_no: None,
        exception_kind: None,
        taken_at,
        position: None,
    };
    Some((digest, upload))
}
