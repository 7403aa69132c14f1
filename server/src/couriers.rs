//! Courier operations: position ingest, an order's trail, and exceptions
//! that cover a whole vehicle.
//!
//! Positions: replayed fixes (same device sequence) are counted, not stored
//! again; fixes may arrive in any order; a fix implying an impossible speed
//! from its predecessor in time is stored flagged, kept but never trusted.
//! An order's trail is the positions of the courier(s) who carried it, from
//! dispatch until it was signed for, returned or cancelled, as GeoJSON or
//! GPX; after a hand-over (an accident, a re-assignment) each courier's part
//! comes from their own positions.

use chrono::{DateTime, Utc};
use xianlu_domain::evidence::{PositionBatch, PositionFix, PositionReceipt};
use xianlu_domain::wire::LatLng;
use xianlu_domain::{CourierId, EventKind, OrderId, Status};
use xianlu_roads::distance_m;

use crate::error::{ApiError, ApiResult};
use crate::policy::{self, Scope};
use crate::service::{OrderService, RequestCtx};
use crate::{on_db, on_tx};

/// Fixes in one batch.
pub const MAX_FIXES: usize = 1000;
/// How far ahead of the server a device's clock may be.
const MAX_CLOCK_AHEAD_MINUTES: i64 = 5;
/// Faster than this between two fixes is a GPS jump, not a courier (250 km/h).
const MAX_PLAUSIBLE_MPS: f64 = 70.0;

/// A stored batch: the receipt, and the new trusted fixes in time order.
#[derive(Debug)]
pub struct Ingested {
    pub receipt: PositionReceipt,
    pub merchant: xianlu_domain::MerchantId,
    pub trusted: Vec<PositionFix>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrailPoint {
    pub courier: CourierId,
    pub at: DateTime<Utc>,
    pub lat: f64,
    pub lng: f64,
}

impl OrderService {
    /// Stores a batch of a courier's fixes. Replayed fixes (same device
    /// sequence) are counted, not stored again; fixes may arrive in any
    /// order; a fix implying an impossible speed from its predecessor in
    /// time is stored flagged, so it is kept but never trusted.
    pub async fn ingest_positions(
        &self,
        ctx: &RequestCtx,
        courier: CourierId,
        batch: PositionBatch,
    ) -> ApiResult<Ingested> {
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
        let mut trusted = Vec::new();
        // A fix sent twice in one batch counts once.
        let mut seen = std::collections::HashSet::with_capacity(fixes.len());
        let before_dedup = fixes.len();
        fixes.retain(|f| seen.insert(f.device_seq));
        receipt.duplicates += (before_dedup - fixes.len()) as u32;
        let mut tx = self.db.begin().await?;
        // Each fix is checked against the trusted one before it in time: the
        // stored fix just before the batch, then the batch's own.
        let mut before: Option<(DateTime<Utc>, f64, f64)> = match fixes.first() {
            Some(first) => on_tx!(&mut tx, c => {
                sqlx::query_as(
                    "SELECT at, lat, lng FROM courier_positions WHERE courier_id = $1 AND at <= $2 AND NOT flagged \
                     ORDER BY at DESC LIMIT 1",
                )
                .bind(courier.uuid())
                .bind(first.at)
                .fetch_optional(&mut *c)
                .await?
            }),
            None => None,
        };
        let mut rows = Vec::with_capacity(fixes.len());
        for fix in fixes {
            let flagged = before.is_some_and(|(at, lat, lng)| {
                let seconds = ((fix.at - at).num_milliseconds() as f64 / 1000.0).max(1.0);
                distance_m(LatLng { lat, lng }, LatLng { lat: fix.lat, lng: fix.lng }) / seconds > MAX_PLAUSIBLE_MPS
            });
            if !flagged {
                before = Some((fix.at, fix.lat, fix.lng));
            }
            rows.push((fix, flagged));
        }
        // One statement for the batch, whose rows travel as one value (SQLite:
        // a JSON array read by `json_each`; PostgreSQL: arrays and `UNNEST`), so
        // the cost does not grow with a bind per column per fix. A replayed fix
        // (same device sequence) is not stored again.
        let stored: Vec<(i64,)> = match &mut tx {
            crate::db::Tx::Sqlite(t) => {
                let rows_json = serde_json::Value::Array(
                    rows.iter()
                        .map(|(f, flagged)| {
                            serde_json::json!([
                                f.device_seq,
                                // Exactly as sqlx stores a timestamp, so ordering and reading agree.
                                f.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
                                f.lat,
                                f.lng,
                                f.accuracy_m,
                                f.speed_mps,
                                f.heading_deg,
                                i32::from(*flagged)
                            ])
                        })
                        .collect(),
                );
                sqlx::query_as(
                    "INSERT INTO courier_positions (courier_id, device_seq, at, lat, lng, accuracy_m, speed_mps, heading_deg, \
                     flagged, received_at) SELECT $1, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, \
                     j.value ->> 4, j.value ->> 5, j.value ->> 6, j.value ->> 7, $2 FROM json_each($3) AS j WHERE true \
                     ON CONFLICT (courier_id, device_seq) DO NOTHING RETURNING device_seq",
                )
                .bind(courier.uuid())
                .bind(now)
                .bind(rows_json.to_string())
                .fetch_all(&mut **t)
                .await?
            }
            crate::db::Tx::Postgres(t) => {
                sqlx::query_as(
                    "INSERT INTO courier_positions (courier_id, device_seq, at, lat, lng, accuracy_m, speed_mps, heading_deg, \
                     flagged, received_at) SELECT $1, r.seq, r.at, r.lat, r.lng, r.accuracy, r.speed, r.heading, r.flagged, $2 \
                     FROM UNNEST($3::bigint[], $4::timestamptz[], $5::float8[], $6::float8[], $7::real[], $8::real[], \
                     $9::real[], $10::bool[]) AS r(seq, at, lat, lng, accuracy, speed, heading, flagged) \
                     ON CONFLICT (courier_id, device_seq) DO NOTHING RETURNING device_seq",
                )
                .bind(courier.uuid())
                .bind(now)
                .bind(rows.iter().map(|(f, _)| f.device_seq as i64).collect::<Vec<_>>())
                .bind(rows.iter().map(|(f, _)| f.at).collect::<Vec<_>>())
                .bind(rows.iter().map(|(f, _)| f.lat).collect::<Vec<_>>())
                .bind(rows.iter().map(|(f, _)| f.lng).collect::<Vec<_>>())
                .bind(rows.iter().map(|(f, _)| f.accuracy_m).collect::<Vec<_>>())
                .bind(rows.iter().map(|(f, _)| f.speed_mps).collect::<Vec<_>>())
                .bind(rows.iter().map(|(f, _)| f.heading_deg).collect::<Vec<_>>())
                .bind(rows.iter().map(|(_, flagged)| *flagged).collect::<Vec<_>>())
                .fetch_all(&mut **t)
                .await?
            }
        };
        let inserted: std::collections::HashSet<u64> = stored.into_iter().map(|(seq,)| seq as u64).collect();
        for (fix, flagged) in rows {
            match (inserted.contains(&fix.device_seq), flagged) {
                (false, _) => receipt.duplicates += 1,
                (true, true) => {
                    receipt.accepted += 1;
                    receipt.flagged += 1;
                }
                (true, false) => {
                    receipt.accepted += 1;
                    trusted.push(fix);
                }
            }
        }
        tx.commit().await?;
        for (outcome, n) in [
            ("accepted", receipt.accepted - receipt.flagged),
            ("flagged", receipt.flagged),
            ("duplicate", receipt.duplicates),
        ] {
            self.metrics.positions.with_label_values(&[outcome]).inc_by(u64::from(n));
        }
        Ok(Ingested { receipt, merchant, trusted })
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

    /// The order's trail, for those who may read the order.
    pub async fn trail(&self, scope: &Scope, id: OrderId) -> ApiResult<Vec<TrailPoint>> {
        let view = self.view_for(scope, id).await?;
        let mut segments: Vec<(CourierId, DateTime<Utc>, Option<DateTime<Utc>>)> = Vec::new();
        for event in &view.timeline {
            let starts = match &event.event.kind {
                EventKind::Dispatched { courier_id } => Some(*courier_id),
                EventKind::DeliveryResumed { courier_id, .. } => Some(*courier_id),
                _ => None,
            };
            let ends =
                matches!(event.event.to, Status::Signed | Status::Returned | Status::Cancelled | Status::ClaimOpen);
            if let Some(courier) = starts {
                if let Some(last) = segments.last_mut()
                    && last.2.is_none()
                {
                    last.2 = Some(event.at);
                }
                segments.push((courier, event.at, None));
            } else if ends
                && let Some(last) = segments.last_mut()
                && last.2.is_none()
            {
                last.2 = Some(event.at);
            }
        }
        let mut points = Vec::new();
        for (courier, from, to) in segments {
            let to = to.unwrap_or_else(|| self.clock.now().max(from));
            let rows: Vec<(DateTime<Utc>, f64, f64)> = on_db!(&self.db, pool => {
                sqlx::query_as(
                    "SELECT at, lat, lng FROM courier_positions WHERE courier_id = $1 AND at >= $2 AND at <= $3 \
                     AND NOT flagged ORDER BY at, device_seq LIMIT 20000",
                )
                .bind(courier.uuid())
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?
            });
            points.extend(rows.into_iter().map(|(at, lat, lng)| TrailPoint { courier, at, lat, lng }));
        }
        Ok(points)
    }
}

/// GeoJSON: a Feature with a LineString (longitude first, as GeoJSON wants).
pub fn geojson(id: OrderId, points: &[TrailPoint]) -> serde_json::Value {
    serde_json::json!({
        "type": "Feature",
        "geometry": {
            "type": "LineString",
            "coordinates": points.iter().map(|p| [p.lng, p.lat]).collect::<Vec<_>>(),
        },
        "properties": {
            "orderId": id,
            "times": points.iter().map(|p| p.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).collect::<Vec<_>>(),
            "couriers": points.iter().map(|p| p.courier).collect::<std::collections::BTreeSet<_>>(),
        },
    })
}

/// GPX 1.1: one track, one segment per courier.
pub fn gpx(id: OrderId, points: &[TrailPoint]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <gpx version=\"1.1\" creator=\"xianlu\" xmlns=\"http://www.topografix.com/GPX/1/1\">\n",
    );
    out.push_str(&format!("  <trk>\n    <name>order {id}</name>\n"));
    let mut current: Option<CourierId> = None;
    for p in points {
        if current != Some(p.courier) {
            if current.is_some() {
                out.push_str("    </trkseg>\n");
            }
            out.push_str("    <trkseg>\n");
            current = Some(p.courier);
        }
        out.push_str(&format!(
            "      <trkpt lat=\"{:.7}\" lon=\"{:.7}\"><time>{}</time></trkpt>\n",
            p.lat,
            p.lng,
            p.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    if current.is_some() {
        out.push_str("    </trkseg>\n");
    }
    out.push_str("  </trk>\n</gpx>\n");
    out
}

/// Refuses formats other than the two served.
pub fn check_format(format: &str) -> ApiResult<()> {
    match format {
        "geojson" | "gpx" => Ok(()),
        _ => Err(ApiError::bad_request("invalid_format", "format must be geojson or gpx")),
    }
}

/// A vehicle-level exception (accident, breakdown) reported for a courier.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VehicleException {
    /// `TRAFFIC_ACCIDENT` or `VEHICLE_BREAKDOWN`.
    pub kind: xianlu_domain::ExceptionKind,
    pub note: String,
}

/// What a vehicle-level exception reached.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VehicleExceptionReport {
    pub courier_id: CourierId,
    /// Orders aboard that went to `EXCEPTION_HANDLING`.
    pub orders: Vec<OrderId>,
    /// Orders aboard that could not take it (changed meanwhile), with the refusal's code.
    pub skipped: Vec<(OrderId, String)>,
}

impl OrderService {
    /// Reports an accident or breakdown on every order the courier is delivering.
    pub async fn report_vehicle_exception(
        &self,
        ctx: &RequestCtx,
        courier: CourierId,
        report: VehicleException,
    ) -> ApiResult<VehicleExceptionReport> {
        let merchant =
            self.courier_merchant(courier).await?.ok_or_else(|| ApiError::NotFound("no such courier".into()))?;
        policy::check_own_courier(&ctx.scope, merchant, courier)?;
        if !report.kind.is_vehicle_level() {
            return Err(ApiError::unprocessable(
                "not_vehicle_level",
                "only TRAFFIC_ACCIDENT and VEHICLE_BREAKDOWN cover a whole vehicle; report others on the order",
            ));
        }
        let aboard: Vec<(uuid::Uuid,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id FROM orders WHERE courier_id = $1 AND status = $2 ORDER BY id")
                .bind(courier.uuid())
                .bind(Status::Delivering.as_str())
                .fetch_all(pool)
                .await?
        });
        let command = xianlu_domain::Command::ReportException { kind: report.kind, note: report.note };
        let mut result = VehicleExceptionReport { courier_id: courier, orders: Vec::new(), skipped: Vec::new() };
        for (id,) in aboard {
            let id = OrderId(id);
            match self.execute(ctx, id, None, &command).await {
                Ok(_) => result.orders.push(id),
                Err(error @ (ApiError::Rejected(_) | ApiError::VersionConflict { .. })) => {
                    result.skipped.push((id, error.code().to_owned()));
                }
                Err(other) => return Err(other),
            }
        }
        Ok(result)
    }
}
