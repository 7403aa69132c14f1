//! An order's trail: the positions of the courier(s) who carried it, from
//! dispatch until it was signed for, returned or cancelled, as GeoJSON or
//! GPX. After a hand-over (an accident, a re-assignment) each courier's part
//! comes from their own positions.

use chrono::{DateTime, Utc};
use xianlu_domain::{CourierId, EventKind, OrderId, Status};

use crate::error::{ApiError, ApiResult};
use crate::on_db;
use crate::policy::Scope;
use crate::service::OrderService;

/// One trusted (unflagged) position on the trail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrailPoint {
    pub courier: CourierId,
    pub at: DateTime<Utc>,
    pub lat: f64,
    pub lng: f64,
}

impl OrderService {
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
        ctx: &crate::service::RequestCtx,
        courier: CourierId,
        report: VehicleException,
    ) -> ApiResult<VehicleExceptionReport> {
        let merchant =
            self.courier_merchant(courier).await?.ok_or_else(|| ApiError::NotFound("no such courier".into()))?;
        crate::policy::check_own_courier(&ctx.scope, merchant, courier)?;
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
