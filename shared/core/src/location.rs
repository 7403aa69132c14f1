//! The location tracker: raw fixes in, batches of trustworthy, sparse fixes
//! out.
//!
//! 1. **Filter.** A fix is dropped when its accuracy is worse than the gate,
//!    when reaching it from the last accepted fix would take an impossible
//!    speed (a GPS jump), or when it is jitter around a courier standing
//!    still (within the accuracy radius, no speed).
//! 2. **Sample by phase.** At the depot a fix every couple of minutes is
//!    plenty; on the road one every 20 s; approaching a drop-off one every
//!    5 s, because that is when a customer watches the map. A turn is kept
//!    whatever the interval, so the trail keeps its shape.
//! 3. **Batch.** Kept fixes are numbered with a device sequence (stored, so
//!    it never repeats) and shipped through the outbox as one item per
//!    batch: a replayed batch carries the same numbers and the server
//!    recognises it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use xianlu_domain::CourierId;
use xianlu_domain::evidence::{PositionBatch, PositionFix};
use xianlu_domain::wire::LatLng;

use crate::error::CoreResult;
use crate::outbox::{Operation, Outbox};
use crate::store::Store;

/// A raw fix from the platform (GPS, network location, a recorded trail).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub at: DateTime<Utc>,
    pub position: LatLng,
    pub accuracy_m: f32,
    pub speed_mps: Option<f32>,
    pub heading_deg: Option<f32>,
}

/// Where the courier is in their day, which decides how often to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    AtDepot,
    EnRoute,
    /// Within the approach radius of the next drop-off.
    Approaching,
}

/// Why a fix was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Kept,
    Inaccurate,
    ImpossibleJump,
    Stationary,
    /// Good, but not needed at this phase's interval.
    Sampled,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerSettings {
    /// Fixes less accurate than this are dropped.
    pub max_accuracy_m: f32,
    /// Faster than this from the last accepted fix is a jump.
    pub max_speed_mps: f64,
    /// Movement within this radius (or the fix's accuracy, if larger) at
    /// walking speed or less is jitter.
    pub stationary_radius_m: f64,
    pub depot_interval: Duration,
    pub en_route_interval: Duration,
    pub approaching_interval: Duration,
    pub depot_radius_m: f64,
    pub approach_radius_m: f64,
    /// A change of heading above this keeps the fix (a turn).
    pub turn_deg: f64,
    /// Fixes per batch, and the oldest a waiting fix may get before its batch ships.
    pub batch_size: usize,
    pub batch_age: Duration,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        TrackerSettings {
            max_accuracy_m: 50.0,
            max_speed_mps: 55.0,
            stationary_radius_m: 12.0,
            depot_interval: Duration::from_secs(120),
            en_route_interval: Duration::from_secs(20),
            approaching_interval: Duration::from_secs(5),
            depot_radius_m: 150.0,
            approach_radius_m: 500.0,
            turn_deg: 35.0,
            batch_size: 20,
            batch_age: Duration::from_secs(60),
        }
    }
}

/// Great-circle distance in metres.
pub fn distance_m(a: LatLng, b: LatLng) -> f64 {
    use geo::{Distance, Haversine, Point};
    Haversine.distance(Point::new(a.lng, a.lat), Point::new(b.lng, b.lat))
}

fn seconds_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

/// Filter and sampler. Pure: no I/O, time comes with the fixes.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub settings: TrackerSettings,
    depot: Option<LatLng>,
    next_stop: Option<LatLng>,
    last_accepted: Option<Fix>,
    last_kept: Option<Fix>,
    last_phase: Option<Phase>,
    waiting: Vec<Fix>,
}

impl Tracker {
    pub fn new(settings: TrackerSettings) -> Tracker {
        Tracker {
            settings,
            depot: None,
            next_stop: None,
            last_accepted: None,
            last_kept: None,
            last_phase: None,
            waiting: Vec::new(),
        }
    }

    /// The warehouse the courier loads at.
    pub fn set_depot(&mut self, depot: Option<LatLng>) {
        self.depot = depot;
    }

    /// The next drop-off on the route.
    pub fn set_next_stop(&mut self, stop: Option<LatLng>) {
        self.next_stop = stop;
    }

    pub fn phase(&self, at: LatLng) -> Phase {
        let s = &self.settings;
        if self.next_stop.is_some_and(|stop| distance_m(at, stop) <= s.approach_radius_m) {
            Phase::Approaching
        } else if self.depot.is_some_and(|depot| distance_m(at, depot) <= s.depot_radius_m) {
            Phase::AtDepot
        } else {
            Phase::EnRoute
        }
    }

    fn interval(&self, phase: Phase) -> Duration {
        match phase {
            Phase::AtDepot => self.settings.depot_interval,
            Phase::EnRoute => self.settings.en_route_interval,
            Phase::Approaching => self.settings.approaching_interval,
        }
    }

    /// Judges one raw fix; a kept fix waits for the next batch.
    pub fn offer(&mut self, fix: Fix) -> Verdict {
        let s = self.settings;
        if !fix.position.is_valid() || !fix.accuracy_m.is_finite() || fix.accuracy_m > s.max_accuracy_m {
            return Verdict::Inaccurate;
        }
        if let Some(last) = self.last_accepted {
            let dt = seconds_between(last.at, fix.at);
            if dt <= 0.0 {
                return Verdict::Sampled; // out of order or repeated: nothing new
            }
            let moved = distance_m(last.position, fix.position);
            if moved / dt.max(1.0) > s.max_speed_mps {
                return Verdict::ImpossibleJump;
            }
        }
        self.last_accepted = Some(fix);
        let phase = self.phase(fix.position);
        let keep = match self.last_kept {
            None => true,
            Some(kept) => {
                let moved = distance_m(kept.position, fix.position);
                let still =
                    fix.speed_mps.unwrap_or(0.0) < 1.0 && moved <= s.stationary_radius_m.max(f64::from(fix.accuracy_m));
                let elapsed = seconds_between(kept.at, fix.at);
                let due = elapsed >= self.interval(phase).as_secs_f64();
                let heartbeat = elapsed >= s.depot_interval.as_secs_f64();
                let turned = moved > s.stationary_radius_m
                    && match (kept.heading_deg, fix.heading_deg) {
                        (Some(a), Some(b)) => {
                            let d = (f64::from(b) - f64::from(a)).rem_euclid(360.0);
                            d.min(360.0 - d) > s.turn_deg
                        }
                        _ => false,
                    };
                let phase_changed = self.last_phase != Some(phase);
                if still && !heartbeat {
                    self.last_phase = Some(phase);
                    return Verdict::Stationary;
                }
                due || turned || phase_changed
            }
        };
        self.last_phase = Some(phase);
        if !keep {
            return Verdict::Sampled;
        }
        self.last_kept = Some(fix);
        self.waiting.push(fix);
        Verdict::Kept
    }

    /// Whether the waiting fixes should ship now.
    pub fn batch_ready(&self, now: DateTime<Utc>) -> bool {
        match self.waiting.first() {
            None => false,
            Some(first) => {
                self.waiting.len() >= self.settings.batch_size
                    || seconds_between(first.at, now) >= self.settings.batch_age.as_secs_f64()
            }
        }
    }

    /// Takes the waiting fixes.
    pub fn take(&mut self) -> Vec<Fix> {
        std::mem::take(&mut self.waiting)
    }
}

/// Numbers fixes with the device sequence and ships them through the outbox.
#[derive(Debug)]
pub struct LocationShipper {
    pub tracker: Tracker,
    courier: CourierId,
    outbox: Outbox,
    store: Arc<dyn Store>,
}

impl LocationShipper {
    pub fn new(tracker: Tracker, courier: CourierId, outbox: Outbox, store: Arc<dyn Store>) -> LocationShipper {
        LocationShipper { tracker, courier, outbox, store }
    }

    /// Offers a raw fix; ships a batch when one is ready.
    pub fn offer(&mut self, fix: Fix) -> CoreResult<Verdict> {
        let verdict = self.tracker.offer(fix);
        if self.tracker.batch_ready(fix.at) {
            self.flush()?;
        }
        Ok(verdict)
    }

    /// Ships whatever is waiting (going off duty, say).
    pub fn flush(&mut self) -> CoreResult<Option<i64>> {
        let fixes = self.tracker.take();
        if fixes.is_empty() {
            return Ok(None);
        }
        let first = self.store.reserve(&format!("device_seq:{}", self.courier), fixes.len() as u64)?;
        let batch = PositionBatch {
            fixes: fixes
                .iter()
                .zip(first..)
                .map(|(fix, device_seq)| PositionFix {
                    device_seq,
                    at: fix.at,
                    lat: fix.position.lat,
                    lng: fix.position.lng,
                    accuracy_m: fix.accuracy_m,
                    speed_mps: fix.speed_mps,
                    heading_deg: fix.heading_deg,
                })
                .collect(),
        };
        self.outbox.enqueue(Operation::Positions { courier_id: self.courier, batch }).map(Some)
    }
}

/// The bearing from one position to the next, for trails without headings.
pub fn heading(from: LatLng, to: LatLng) -> f32 {
    use geo::{Bearing, Haversine, Point};
    Haversine.bearing(Point::new(from.lng, from.lat), Point::new(to.lng, to.lat)).rem_euclid(360.0) as f32
}

/// Moves `metres` along `path` from `from`, dropping the points passed; the
/// end of the path once it is used up (a simulated drive along a route).
pub fn advance_along(path: &mut Vec<LatLng>, from: LatLng, metres: f64) -> LatLng {
    let mut at = from;
    let mut left = metres;
    while let Some(&next) = path.first() {
        let d = distance_m(at, next);
        if d > left {
            let f = left / d;
            return LatLng { lat: at.lat + (next.lat - at.lat) * f, lng: at.lng + (next.lng - at.lng) * f };
        }
        left -= d;
        at = next;
        path.remove(0);
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drive_moves_along_the_road_and_stops_at_its_end() {
        let a = LatLng { lat: 39.9, lng: 116.4 };
        let b = LatLng { lat: 39.901, lng: 116.4 };
        let c = LatLng { lat: 39.901, lng: 116.401 };
        let mut path = vec![b, c];
        let first = advance_along(&mut path, a, 50.0);
        assert!((distance_m(a, first) - 50.0).abs() < 0.5, "{}", distance_m(a, first));
        assert_eq!(path.len(), 2, "the first corner is still ahead");
        let end = advance_along(&mut path, first, 10_000.0);
        assert_eq!(end, c);
        assert!(path.is_empty());
    }

    fn fix(seconds: i64, lat: f64, lng: f64, accuracy: f32, speed: f32) -> Fix {
        Fix {
            at: DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default(),
            position: LatLng { lat, lng },
            accuracy_m: accuracy,
            speed_mps: Some(speed),
            heading_deg: Some(90.0),
        }
    }

    #[test]
    fn drops_inaccurate_fixes_jumps_and_jitter() {
        let mut t = Tracker::new(TrackerSettings::default());
        assert_eq!(t.offer(fix(0, 60.17, 24.94, 8.0, 0.0)), Verdict::Kept);
        assert_eq!(t.offer(fix(5, 60.17, 24.94, 120.0, 0.0)), Verdict::Inaccurate);
        // 10 km in 10 s.
        assert_eq!(t.offer(fix(10, 60.26, 24.94, 8.0, 9.0)), Verdict::ImpossibleJump);
        // 3 m of wobble while parked.
        assert_eq!(t.offer(fix(15, 60.17003, 24.94, 8.0, 0.2)), Verdict::Stationary);
        // Driving east at 10 m/s: kept at the en-route interval, not before.
        assert_eq!(t.offer(fix(25, 60.17, 24.9418, 8.0, 10.0)), Verdict::Kept);
        assert_eq!(t.offer(fix(30, 60.17, 24.9427, 8.0, 10.0)), Verdict::Sampled);
        assert_eq!(t.offer(fix(46, 60.17, 24.9455, 8.0, 10.0)), Verdict::Kept);
        assert_eq!(t.take().len(), 3);
    }

    #[test]
    fn samples_densely_near_the_drop_off() {
        let mut t = Tracker::new(TrackerSettings::default());
        t.set_next_stop(Some(LatLng { lat: 60.17, lng: 24.95 }));
        let mut kept = 0;
        for s in 0..60 {
            // 10 m/s eastwards, arriving at the stop.
            let lng = 24.945 + 0.00018 * s as f64 / 60.0 * 50.0;
            if t.offer(fix(s, 60.17, lng.min(24.95), 5.0, 10.0)) == Verdict::Kept {
                kept += 1;
            }
        }
        assert!(kept >= 10, "kept {kept} of 60 one-second fixes on the approach");
    }
}
