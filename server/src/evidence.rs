//! Evidence (signatures, photos, photographed delivery notes) and courier
//! positions.
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
use xianlu_domain::evidence::{
    EvidenceKind, EvidenceRecord, EvidenceUpload, PositionBatch, PositionFix, PositionReceipt, evidence_digest,
    is_digest,
};
use xianlu_domain::wire::LatLng;
use xianlu_domain::{CourierId, ExceptionKind, OrderId};

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
/// Fixes in one batch.
pub const MAX_FIXES: usize = 1000;
/// How far ahead of the server a device's clock may be.
const MAX_CLOCK_AHEAD_MINUTES: i64 = 5;
/// Faster than this between two fixes is a GPS jump, not a courier (250 km/h).
const MAX_PLAUSIBLE_MPS: f64 = 70.0;

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
    let mut out = Vec::new();
    let (content_type, image) = match kind {
        EvidenceKind::Signature => {
            DynamicImage::ImageLumaA8(image.to_luma_alpha8())
                .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
                .map_err(|e| ApiError::Internal(e.into()))?;
            ("image/png", None)
        }
        EvidenceKind::Photo | EvidenceKind::DeliveryNote => {
            let image = if image.width().max(image.height()) > SERVED_MAX_SIDE {
                image.resize(SERVED_MAX_SIDE, SERVED_MAX_SIDE, image::imageops::FilterType::Triangle)
            } else {
                image
            };
            let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
            rgb.write_with_encoder(encoder).map_err(|e| ApiError::Internal(e.into()))?;
            ("image/jpeg", Some(rgb))
        }
    };
    let (width, height) = match &image {
        Some(i) => (i.width(), i.height()),
        None => {
            let decoded = image::load_from_memory_with_format(&out, ImageFormat::Png)
                .map_err(|e| ApiError::Internal(e.into()))?;
            (decoded.width(), decoded.height())
        }
    };
    Ok((out, content_type, width, height))
}

fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lng1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lng2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lng2 - lng1) / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * h.sqrt().asin()
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

    /// Stores a batch of a courier's fixes. Replayed fixes (same device
    /// sequence) are counted, not stored again; fixes may arrive in any
    /// order; a fix implying an impossible speed from its predecessor in
    /// time is stored flagged, so it is kept but never trusted.
    pub async fn ingest_positions(
        &self,
        ctx: &RequestCtx,
        courier: CourierId,
        batch: PositionBatch,
    ) -> ApiResult<PositionReceipt> {
        let merchant =
            self.courier_merchant(courier).await?.ok_or_else(|| ApiError::NotFound("no such courier".into()))?;
        policy::check_own_courier(&ctx.scope, merchant, courier)?;
        if batch.fixes.len() > MAX_FIXES {
            return Err(ApiError::unprocessable("too_many_fixes", format!("send at most {MAX_FIXES} fixes per batch")));
        }
        // Device clocks drift a little; a fix from far in the future is a broken clock.
        let latest = self.clock.now() + chrono::Duration::minutes(MAX_CLOCK_AHEAD_MINUTES);
        if let Some(fix) = batch.fixes.iter().find(|f| f.at > latest) {
            return Err(ApiError::unprocessable(
                "fix_in_future",
                format!(
                    "fix {} is dated {}, more than {MAX_CLOCK_AHEAD_MINUTES} minutes ahead of the server; check the device clock",
                    fix.device_seq, fix.at
                ),
            ));
        }
        for fix in &batch.fixes {
            let valid = LatLng { lat: fix.lat, lng: fix.lng }.is_valid()
                && fix.accuracy_m.is_finite()
                && fix.accuracy_m >= 0.0
                && i64::try_from(fix.device_seq).is_ok();
            if !valid {
                return Err(ApiError::unprocessable(
                    "invalid_fix",
                    format!("fix {} must have a WGS-84 position and a non-negative accuracy", fix.device_seq),
                ));
            }
        }
        let mut fixes: Vec<PositionFix> = batch.fixes;
        fixes.sort_by_key(|f| (f.at, f.device_seq));
        let now = self.clock.now();
        let mut receipt = PositionReceipt { accepted: 0, duplicates: 0, flagged: 0 };
        let mut tx = self.db.begin().await?;
        for fix in fixes {
            let before: Option<(DateTime<Utc>, f64, f64)> = on_tx!(&mut tx, c => {
                sqlx::query_as(
                    "SELECT at, lat, lng FROM courier_positions WHERE courier_id = $1 AND at <= $2 AND NOT flagged \
                     AND device_seq <> $3 ORDER BY at DESC LIMIT 1",
                )
                .bind(courier.uuid())
                .bind(fix.at)
                .bind(fix.device_seq as i64)
                .fetch_optional(&mut *c)
                .await?
            });
            let flagged = before.is_some_and(|(at, lat, lng)| {
                let seconds = ((fix.at - at).num_milliseconds() as f64 / 1000.0).max(1.0);
                distance_m((lat, lng), (fix.lat, fix.lng)) / seconds > MAX_PLAUSIBLE_MPS
            });
            let inserted = on_tx!(&mut tx, c => {
                sqlx::query(
                    "INSERT INTO courier_positions (courier_id, device_seq, at, lat, lng, accuracy_m, speed_mps, heading_deg, \
                     flagged, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (courier_id, device_seq) DO NOTHING",
                )
                .bind(courier.uuid())
                .bind(fix.device_seq as i64)
                .bind(fix.at)
                .bind(fix.lat)
                .bind(fix.lng)
                .bind(fix.accuracy_m)
                .bind(fix.speed_mps)
                .bind(fix.heading_deg)
                .bind(flagged)
                .bind(now)
                .execute(&mut *c)
                .await?
                .rows_affected()
            });
            match (inserted, flagged) {
                (0, _) => receipt.duplicates += 1,
                (_, true) => {
                    receipt.accepted += 1;
                    receipt.flagged += 1;
                }
                (_, false) => receipt.accepted += 1,
            }
        }
        tx.commit().await?;
        Ok(receipt)
    }

    /// A courier's stored fixes after a device sequence, in time order.
    pub async fn positions(&self, ctx: &RequestCtx, courier: CourierId, after_seq: u64) -> ApiResult<Vec<PositionFix>> {
        let merchant =
            self.courier_merchant(courier).await?.ok_or_else(|| ApiError::NotFound("no such courier".into()))?;
        policy::check_courier_positions(&ctx.scope, merchant, courier)?;
        type Row = (i64, DateTime<Utc>, f64, f64, f32, Option<f32>, Option<f32>);
        let rows: Vec<Row> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT device_seq, at, lat, lng, accuracy_m, speed_mps, heading_deg FROM courier_positions \
                 WHERE courier_id = $1 AND device_seq > $2 ORDER BY at, device_seq LIMIT 10000",
            )
            .bind(courier.uuid())
            .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(seq, at, lat, lng, accuracy_m, speed_mps, heading_deg)| PositionFix {
                device_seq: seq as u64,
                at,
                lat,
                lng,
                accuracy_m,
                speed_mps,
                heading_deg,
            })
            .collect())
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

    #[test]
    fn distance_is_haversine() {
        let d = distance_m((60.1699, 24.9384), (60.1699, 24.9484));
        assert!((d - 553.0).abs() < 5.0, "{d}");
    }
}
