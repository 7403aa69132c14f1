//! Evidence: signatures, photos, photographed delivery notes.
//!
//! Evidence is content-addressed (within its order) by the digest the device computed
//! (`xianlu_domain::evidence::evidence_digest`); the server recomputes it and
//! refuses a mismatch, so an upload is idempotent by its hash. Images are
//! decoded under size limits and re-encoded (signatures as PNG, photos as
//! JPEG), which drops every metadata block the device wrote: what is served
//! is never what was uploaded. Each stored piece is recorded in the
//! merchant's audit chain, readable only by those who may read its order,
//! and deleted when the customer's personal data is erased.

use std::io::Cursor;

use base64::Engine;
use chrono::{DateTime, Utc};
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use xianlu_domain::evidence::{EvidenceKind, EvidenceRecord, EvidenceUpload, evidence_digest, is_digest};
use xianlu_domain::wire::LatLng;
use xianlu_domain::{ExceptionKind, OrderId};

use crate::error::{ApiError, ApiResult};
use crate::policy::{self, Action, Scope};
use crate::service::{OrderService, RequestCtx};
use crate::{audit, on_db, on_tx};

/// The largest image accepted, before and after decoding.
pub const MAX_IMAGE_BYTES: usize = 4 * 1024 * 1024;
const MAX_SIDE: u32 = 6000;
const MAX_STROKES_BYTES: usize = 256 * 1024;
/// Photos are served at most this wide or high.
const SERVED_MAX_SIDE: u32 = 2048;

type EvidenceRow = (
    String,
    Uuid,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    DateTime<Utc>,
    Option<f64>,
    Option<f64>,
    DateTime<Utc>,
);

const EVIDENCE_COLUMNS: &str = "sha256, order_id, kind, content_type, image_sha256, width, height, \
    CAST(length(image) AS BIGINT), line_no, exception_kind, taken_at, lat, lng, uploaded_at";

fn record_of(row: EvidenceRow) -> ApiResult<EvidenceRecord> {
    let (
        sha256,
        order,
        kind,
        content_type,
        image_sha256,
        width,
        height,
        bytes,
        line_no,
        exception,
        taken_at,
        lat,
        lng,
        uploaded_at,
    ) = row;
    let exception_kind = match exception {
        Some(text) => Some(
            serde_json::from_value::<ExceptionKind>(serde_json::Value::String(text))
                .map_err(|e| ApiError::Internal(e.into()))?,
        ),
        None => None,
    };
    Ok(EvidenceRecord {
        sha256,
        order_id: OrderId(order),
        kind: EvidenceKind::parse(&kind).ok_or_else(|| ApiError::Internal(anyhow::anyhow!("evidence kind {kind}")))?,
        content_type,
        image_sha256,
        width: width as u32,
        height: height as u32,
        bytes: bytes as u64,
        line_no: line_no.map(|n| n as u16),
        exception_kind,
        taken_at,
        position: lat.zip(lng).map(|(lat, lng)| LatLng { lat, lng }),
        uploaded_at,
    })
}

/// Decodes under limits and re-encodes: PNG for signatures, JPEG for photos.
fn reencode(kind: EvidenceKind, bytes: &[u8]) -> ApiResult<(Vec<u8>, &'static str, u32, u32)> {
    let unreadable = |detail: String| ApiError::unprocessable("unreadable_image", detail);
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| unreadable(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        _ => return Err(unreadable("the image must be a PNG or a JPEG".into())),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(256 * 1024 * 1024);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| unreadable(e.to_string()))?;
    let (encoded, content_type) = match kind {
        EvidenceKind::Signature => (DynamicImage::ImageLumaA8(image.to_luma_alpha8()), "image/png"),
        EvidenceKind::Photo | EvidenceKind::DeliveryNote => {
            let image = if image.width().max(image.height()) > SERVED_MAX_SIDE {
                image.resize(SERVED_MAX_SIDE, SERVED_MAX_SIDE, image::imageops::FilterType::Triangle)
            } else {
                image
            };
            (DynamicImage::ImageRgb8(image.to_rgb8()), "image/jpeg")
        }
    };
    let mut out = Vec::new();
    let written = if kind == EvidenceKind::Signature {
        encoded.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
    } else {
        encoded.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85))
    };
    written.map_err(|e| ApiError::Internal(e.into()))?;
    let (width, height) = (encoded.width(), encoded.height());
    Ok((out, content_type, width, height))
}

impl OrderService {
    /// Stores a piece of evidence for an order. Idempotent by digest.
    pub async fn put_evidence(
        &self,
        ctx: &RequestCtx,
        order_id: OrderId,
        sha256: &str,
        upload: EvidenceUpload,
    ) -> ApiResult<(bool, EvidenceRecord)> {
        let view = self.view_for(&ctx.scope, order_id).await?;
        policy::check_order_action(&ctx.scope, &view.order, Action::AttachEvidence)?;
        policy::check_evidence_kind(&ctx.scope, &view.order, upload.kind)?;
        if !is_digest(sha256) {
            return Err(ApiError::bad_request("invalid_digest", "the digest must be 64 lowercase hex digits"));
        }
        if let Some(existing) = self.evidence_record(order_id, sha256).await? {
            return Ok((false, existing));
        }
        let image = base64::engine::general_purpose::STANDARD
            .decode(upload.image.as_bytes())
            .map_err(|_| ApiError::unprocessable("invalid_body", "image must be base64 (standard alphabet)"))?;
        if image.len() > MAX_IMAGE_BYTES {
            return Err(ApiError::TooLarge);
        }
        match (upload.kind, &upload.strokes) {
            (EvidenceKind::Signature, Some(strokes)) if strokes.len() <= MAX_STROKES_BYTES => {}
            (EvidenceKind::Signature, _) => {
                return Err(ApiError::unprocessable(
                    "invalid_body",
                    format!("a signature needs its strokes (at most {MAX_STROKES_BYTES} bytes)"),
                ));
            }
            (_, Some(_)) => return Err(ApiError::unprocessable("invalid_body", "only a signature has strokes")),
            (_, None) => {}
        }
        if upload.position.is_some_and(|p| !p.is_valid()) {
            return Err(ApiError::unprocessable("invalid_location", "position must be WGS-84 latitude and longitude"));
        }
        if let Some(line) = upload.line_no
            && !view.order.lines.iter().any(|l| l.line_no == line)
        {
            return Err(ApiError::unprocessable("unknown_line", format!("the order has no line {line}")));
        }
        let digest = evidence_digest(upload.kind, &image, upload.strokes.as_deref());
        if digest != sha256 {
            return Err(ApiError::unprocessable(
                "digest_mismatch",
                format!("the content's digest is {digest}, not the one in the address"),
            ));
        }
        let kind = upload.kind;
        let (stored, content_type, width, height) = tokio::task::spawn_blocking(move || reencode(kind, &image))
            .await
            .map_err(|e| ApiError::Internal(e.into()))??;
        let image_sha256 = hex::encode(Sha256::digest(&stored));
        let now = self.clock.now();
        let exception = upload.exception_kind.map(|k| serde_json::to_value(k).unwrap_or_default());
        let exception = exception.as_ref().and_then(|v| v.as_str()).map(str::to_owned);
        let order = &view.order;
        let uploaded_by = format!("{}:{}", ctx.actor.kind, ctx.actor.id);
        let mut tx = self.db.begin().await?;
        let inserted = on_tx!(&mut tx, c => {
            sqlx::query(
                "INSERT INTO evidence (sha256, order_id, merchant_id, customer_id, kind, content_type, image, image_sha256, \
                 width, height, strokes, line_no, exception_kind, taken_at, lat, lng, uploaded_by, uploaded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                 ON CONFLICT (order_id, sha256) DO NOTHING",
            )
            .bind(sha256)
            .bind(order.id.uuid())
            .bind(order.merchant_id.uuid())
            .bind(order.customer_id.uuid())
            .bind(kind.as_str())
            .bind(content_type)
            .bind(&stored)
            .bind(&image_sha256)
            .bind(i64::from(width))
            .bind(i64::from(height))
            .bind(upload.strokes.as_deref())
            .bind(upload.line_no.map(i64::from))
            .bind(exception.as_deref())
            .bind(upload.taken_at)
            .bind(upload.position.map(|p| p.lat))
            .bind(upload.position.map(|p| p.lng))
            .bind(&uploaded_by)
            .bind(now)
            .execute(&mut *c)
            .await?
            .rows_affected()
        });
        if inserted == 1 {
            // Ids and digests only: the image may show a person.
            let entry = ctx.audit_entry(
                order.merchant_id.uuid(),
                now,
                "STORE_EVIDENCE",
                order.id.to_string(),
                serde_json::json!({"sha256": sha256, "kind": kind, "imageSha256": image_sha256,
                    "lineNo": upload.line_no, "exceptionKind": exception}),
            );
            audit::append_all(&mut tx, &[entry], self.anchor_every).await?;
        }
        tx.commit().await?;
        let record = self
            .evidence_record(order_id, sha256)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("evidence {sha256} vanished")))?;
        Ok((inserted == 1, record))
    }

    async fn evidence_record(&self, order_id: OrderId, sha256: &str) -> ApiResult<Option<EvidenceRecord>> {
        let row: Option<EvidenceRow> = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {EVIDENCE_COLUMNS} FROM evidence WHERE order_id = $1 AND sha256 = $2"
            )))
                .bind(order_id.uuid())
                .bind(sha256)
                .fetch_optional(pool)
                .await?
        });
        row.map(record_of).transpose()
    }

    /// Whether the order has this evidence (a sign-off must name evidence that exists).
    pub async fn has_evidence(&self, order_id: OrderId, sha256: &str) -> ApiResult<bool> {
        Ok(self.evidence_record(order_id, sha256).await?.is_some())
    }

    /// An order's evidence, for those who may read the order.
    pub async fn list_evidence(&self, scope: &Scope, order_id: OrderId) -> ApiResult<Vec<EvidenceRecord>> {
        self.view_for(scope, order_id).await?;
        let rows: Vec<EvidenceRow> = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {EVIDENCE_COLUMNS} FROM evidence WHERE order_id = $1 ORDER BY uploaded_at, sha256"
            )))
            .bind(order_id.uuid())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(record_of).collect()
    }

    /// The stored (re-encoded) image and its content type.
    pub async fn evidence_image(&self, scope: &Scope, order_id: OrderId, sha256: &str) -> ApiResult<(String, Vec<u8>)> {
        self.view_for(scope, order_id).await?;
        let row: Option<(String, Vec<u8>)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT content_type, image FROM evidence WHERE sha256 = $1 AND order_id = $2")
                .bind(sha256)
                .bind(order_id.uuid())
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| ApiError::NotFound(format!("no evidence {sha256} for this order")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_are_reencoded_without_their_metadata() {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(40, 30, image::Rgb([200, 30, 30]))
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .expect("encode");
        // A text chunk, as cameras and editors write them.
        let marker = b"tEXtComment\0secret-location";
        let mut with_text = png[..33].to_vec();
        with_text.extend_from_slice(&(marker.len() as u32 - 4).to_be_bytes());
        with_text.extend_from_slice(marker);
        with_text.extend_from_slice(&[0, 0, 0, 0]);
        with_text.extend_from_slice(&png[33..]);
        let (out, content_type, width, height) = reencode(EvidenceKind::Photo, &with_text).expect("re-encode");
        assert_eq!((content_type, width, height), ("image/jpeg", 40, 30));
        assert!(!out.windows(6).any(|w| w == b"secret"));
        assert!(reencode(EvidenceKind::Photo, b"GIF89a not an image").is_err());
    }
}
