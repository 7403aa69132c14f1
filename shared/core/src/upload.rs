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

/// Raises an after-sales matter with photos as they are: each photo goes up
/// as the order's evidence first (content-addressed, so a retry re-sends
/// nothing new), then the matter names them, under one idempotency key.
pub async fn open_after_sales_with_photos(
    api: &crate::api::ApiClient,
    order: xianlu_domain::OrderId,
    mut matter: xianlu_domain::aftersales::NewAfterSales,
    photos: &[Vec<u8>],
    now: DateTime<Utc>,
    key: &str,
) -> crate::error::CoreResult<xianlu_domain::aftersales::AfterSales> {
    for bytes in photos {
        let (digest, upload) = raw_photo(bytes, now).ok_or_else(|| {
            crate::error::CoreError::Refused(format!("a photo must be 1 byte to {} MB", MAX_RAW_PHOTO >> 20))
        })?;
        api.put_evidence(order, &digest, &upload).await?;
        matter.photos.push(digest);
    }
    api.open_after_sales(order, &matter, key).await
}
