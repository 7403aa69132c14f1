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
