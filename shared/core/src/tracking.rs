//! The customer's map as data: the courier's trail (simplified), where they
//! are, how long ago they were seen, the route left and the ETA. The apps
//! draw it; nothing here draws.

use chrono::{DateTime, Utc};
use geo::{Coord, LineString, Simplify};
use xianlu_domain::evidence::PositionFix;
use xianlu_domain::wire::{LatLng, OrderView, StreamEvent};
use xianlu_domain::{EventKind, TimeWindow};

/// Simplifies a trail with Douglas–Peucker at a tolerance in metres. The
/// points are projected to local metres first (an equirectangular
/// projection around the trail), since degrees of longitude shrink towards
/// the poles.
pub fn simplify_trail(points: &[LatLng], tolerance_m: f64) -> Vec<LatLng> {
    let Some(origin) = points.first() else { return Vec::new() };
    const METRES_PER_DEGREE: f64 = 111_320.0;
    let scale_x = METRES_PER_DEGREE * origin.lat.to_radians().cos();
    let projected: LineString<f64> = points
        .iter()
        .map(|p| Coord { x: (p.lng - origin.lng) * scale_x, y: (p.lat - origin.lat) * METRES_PER_DEGREE })
        .collect();
    projected
        .simplify(tolerance_m)
        .coords()
        .map(|c| LatLng { lat: origin.lat + c.y / METRES_PER_DEGREE, lng: origin.lng + c.x / scale_x })
        .collect()
}

/// The road lines of a map tile, decoded: (class, points).
pub fn road_lines(tile: &xianlu_domain::wire::RoadTile) -> Vec<(String, Vec<LatLng>)> {
    tile.roads
        .iter()
        .filter_map(|r| {
            let line = polyline::decode_polyline(&r.polyline, 5).ok()?;
            Some((r.class.clone(), line.coords().map(|c| LatLng { lat: c.y, lng: c.x }).collect()))
        })
        .collect()
}

/// What the tracking map shows.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackingModel {
    /// The courier's trail, simplified.
    pub trail: Vec<LatLng>,
    pub position: Option<LatLng>,
    pub last_seen: Option<DateTime<Utc>>,
    /// The planned route from the courier to the destination, when known.
    pub remaining_route: Vec<LatLng>,
    pub destination: Option<LatLng>,
    pub eta: Option<DateTime<Utc>>,
    /// The window shown to the customer around the ETA.
    pub eta_window: Option<TimeWindow>,
    /// "Arriving in about N minutes", once the server said so.
    pub arriving_in_minutes: Option<u16>,
    pub promised: Option<TimeWindow>,
    /// The order's place on the courier's planned route: (stop, of stops).
    pub stop: Option<(u16, u16)>,
    /// Simplification tolerance, metres.
    pub tolerance_m: f64,
    raw: Vec<LatLng>,
}

impl TrackingModel {
    /// The model for an order as served (destination, ETA, promised window).
    pub fn for_order(view: &OrderView) -> TrackingModel {
        TrackingModel {
            trail: Vec::new(),
            position: view.driver_info.as_ref().and_then(|d| d.location),
            last_seen: None,
            remaining_route: Vec::new(),
            destination: view.customer.as_ref().map(|c| c.location),
            eta: view.eta,
            eta_window: view.eta_window.map(|e| e.window),
            arriving_in_minutes: None,
            promised: Some(view.order.requested_window),
            stop: None,
            tolerance_m: 8.0,
            raw: Vec::new(),
        }
    }

    /// A map with nothing on it yet.
    pub fn empty() -> TrackingModel {
        TrackingModel {
            trail: Vec::new(),
            position: None,
            last_seen: None,
            remaining_route: Vec::new(),
            destination: None,
            eta: None,
            eta_window: None,
            arriving_in_minutes: None,
            promised: None,
            stop: None,
            tolerance_m: 8.0,
            raw: Vec::new(),
        }
    }

    /// The trail so far, as the server keeps it (oldest first); live
    /// positions extend it.
    pub fn set_trail(&mut self, points: Vec<LatLng>) {
        self.raw = points;
        if let Some(last) = self.raw.last()
            && self.position.is_none()
        {
            self.position = Some(*last);
        }
        self.trail = simplify_trail(&self.raw, self.tolerance_m);
    }

    /// Adds fixes (in any order; older ones than the newest are ignored for
    /// the position, but join the trail in time order).
    pub fn add_fixes(&mut self, fixes: &[PositionFix]) {
        let mut fixes: Vec<&PositionFix> = fixes.iter().collect();
        fixes.sort_by_key(|f| (f.at, f.device_seq));
        for fix in fixes {
            let point = LatLng { lat: fix.lat, lng: fix.lng };
            if self.last_seen.is_none_or(|seen| fix.at >= seen) {
                self.position = Some(point);
                self.last_seen = Some(fix.at);
                self.raw.push(point);
            }
        }
        self.trail = simplify_trail(&self.raw, self.tolerance_m);
    }

    /// Follows the order's push stream: the courier's position (throttled by
    /// the server), new estimates and the arriving-soon notice. Other events
    /// leave the map as it is.
    pub fn apply(&mut self, event: &StreamEvent) {
        match &event.event.kind {
            EventKind::CourierPosition { position, fix_at, .. }
                if self.last_seen.is_none_or(|seen| *fix_at >= seen) =>
            {
                self.position = Some(*position);
                self.last_seen = Some(*fix_at);
                self.raw.push(*position);
                self.trail = simplify_trail(&self.raw, self.tolerance_m);
            }
            EventKind::EtaUpdated { eta, window, .. } => {
                self.eta = Some(*eta);
                self.eta_window = Some(*window);
            }
            EventKind::ArrivingSoon { minutes, .. } => self.arriving_in_minutes = Some(*minutes),
            EventKind::RouteSequenced { stop, stops, .. } => self.stop = Some((*stop, *stops)),
            EventKind::ArrivedAtCustomer { .. } | EventKind::Signed { .. } => {
                self.eta = None;
                self.eta_window = None;
                self.remaining_route.clear();
            }
            _ => {}
        }
    }

    /// The route left, e.g. from the planner; trimmed as the courier moves.
    pub fn set_remaining_route(&mut self, route: Vec<LatLng>) {
        self.remaining_route = route;
    }

    pub fn set_eta(&mut self, eta: Option<DateTime<Utc>>) {
        self.eta = eta;
    }

    /// Seconds since the last position ("last seen 40 s ago").
    pub fn seconds_since_seen(&self, now: DateTime<Utc>) -> Option<i64> {
        self.last_seen.map(|seen| (now - seen).num_seconds().max(0))
    }

    /// Whether the ETA falls outside the promised window (late, or early).
    pub fn eta_outside_window(&self) -> bool {
        match (self.eta, self.promised) {
            (Some(eta), Some(window)) => eta > window.end || eta < window.start,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn straight_runs_collapse_and_corners_stay() {
        // East 1 km in 100 steps, then north 1 km, with 1 m of wobble.
        let mut points = Vec::new();
        for i in 0..=100 {
            let wobble = if i % 2 == 0 { 0.000009 } else { -0.000009 };
            points.push(LatLng { lat: 60.0 + wobble, lng: 24.0 + 0.018 * f64::from(i) / 100.0 });
        }
        for i in 1..=100 {
            points.push(LatLng { lat: 60.0 + 0.009 * f64::from(i) / 100.0, lng: 24.018 });
        }
        let simplified = simplify_trail(&points, 5.0);
        assert_eq!(simplified.len(), 3, "{simplified:?}");
        assert!((simplified[1].lng - 24.018).abs() < 1e-6);
    }
}
