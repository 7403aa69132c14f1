//! Geofences that do not flap. A courier is *at* a warehouse or a customer
//! only after the position has been inside the fence for a minimum dwell;
//! they have *left* only once they are beyond the fence plus a margin
//! (hysteresis); a fix whose accuracy circle is larger than the fence says
//! nothing either way. Pure: time comes with the fixes.

use std::collections::HashMap;

use geo::{Contains, Distance, Euclidean, Point, Polygon, Validation};
use rstar::{AABB, RTree, RTreeObject};
use xianlu_domain::wire::LatLng;

use crate::{degrees_for, distance_m, local_xy};

/// A fence's shape (WGS-84).
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Circle {
        center: LatLng,
        radius_m: f64,
    },
    /// A closed ring of at least three points (the first need not be repeated).
    Polygon(Vec<LatLng>),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FenceError {
    #[error("a circle needs a WGS-84 center and a radius between 5 m and 5 km")]
    BadCircle,
    #[error("a polygon needs at least three WGS-84 points and must not cross itself")]
    BadPolygon,
}

/// What crossing a fence means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    Arrived,
    Left,
}

/// A transition, with the time spent inside for `Left`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FenceEvent<K> {
    pub fence: K,
    pub transition: Transition,
    /// The first fix inside (arrival) or the fix that left.
    pub at: i64,
    /// Seconds between arrival and leaving.
    pub dwell_s: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct FenceSettings {
    /// Leaving means being this far beyond the fence.
    pub exit_margin_m: f64,
    /// Seconds inside before "arrived".
    pub min_dwell_s: i64,
}

impl Default for FenceSettings {
    fn default() -> Self {
        FenceSettings { exit_margin_m: 35.0, min_dwell_s: 45 }
    }
}

fn project(p: LatLng, lat0: f64) -> Point<f64> {
    Point::from(local_xy(p, lat0))
}

struct Prepared<K> {
    key: K,
    shape: Shape,
    polygon: Option<Polygon<f64>>,
    lat0: f64,
    /// Half the fence's smallest size: fixes less accurate than this are ignored.
    size_m: f64,
}

impl<K> Prepared<K> {
    /// Metres outside the fence (0 inside).
    fn outside_m(&self, p: LatLng) -> f64 {
        match (&self.shape, &self.polygon) {
            (Shape::Circle { center, radius_m }, _) => (distance_m(p, *center) - radius_m).max(0.0),
            (_, Some(polygon)) => {
                let point = project(p, self.lat0);
                if polygon.contains(&point) { 0.0 } else { Euclidean.distance(&point, polygon) }
            }
            _ => f64::INFINITY,
        }
    }
}

struct Entry(usize, AABB<[f64; 2]>);

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.1
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Inside since, not yet long enough.
    Entering(i64),
    /// Arrived at.
    Inside(i64),
}

/// Fences in an R-tree and each subject's state per fence.
pub struct Geofences<K, S> {
    settings: FenceSettings,
    fences: Vec<Prepared<K>>,
    index: RTree<Entry>,
    states: HashMap<(S, usize), State>,
}

impl<K, S> std::fmt::Debug for Geofences<K, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geofences").field("fences", &self.fences.len()).finish()
    }
}

impl<K: Clone, S: Clone + Eq + std::hash::Hash> Geofences<K, S> {
    pub fn new(settings: FenceSettings) -> Self {
        Geofences { settings, fences: Vec::new(), index: RTree::new(), states: HashMap::new() }
    }

    /// Adds a fence, refusing shapes that cannot be right.
    pub fn add(&mut self, key: K, shape: Shape) -> Result<(), FenceError> {
        let (polygon, lat0, size_m, (min, max)) = match &shape {
            Shape::Circle { center, radius_m } => {
                if !center.is_valid() || !(5.0..=5000.0).contains(radius_m) {
                    return Err(FenceError::BadCircle);
                }
                let (d, dl) = degrees_for(*radius_m, center.lat);
                (None, center.lat, *radius_m, ([center.lng - dl, center.lat - d], [center.lng + dl, center.lat + d]))
            }
            Shape::Polygon(points) => {
                if points.len() < 3 || !points.iter().all(|p| p.is_valid()) {
                    return Err(FenceError::BadPolygon);
                }
                let lat0 = points[0].lat;
                let polygon = Polygon::new(points.iter().map(|p| project(*p, lat0)).collect(), vec![]);
                if !polygon.is_valid() {
                    return Err(FenceError::BadPolygon);
                }
                let (mut min, mut max) = ([f64::MAX; 2], [f64::MIN; 2]);
                for p in points {
                    min = [min[0].min(p.lng), min[1].min(p.lat)];
                    max = [max[0].max(p.lng), max[1].max(p.lat)];
                }
                let size_m = (distance_m(LatLng { lat: min[1], lng: min[0] }, LatLng { lat: min[1], lng: max[0] }))
                    .min(distance_m(LatLng { lat: min[1], lng: min[0] }, LatLng { lat: max[1], lng: min[0] }))
                    / 2.0;
                (Some(polygon), lat0, size_m, (min, max))
            }
        };
        // Fixes this close are judged against the fence (beyond the exit margin, with room to spare).
        let (dlat, dlng) = degrees_for(self.settings.exit_margin_m + 100.0, lat0);
        let envelope = AABB::from_corners([min[0] - dlng, min[1] - dlat], [max[0] + dlng, max[1] + dlat]);
        let i = self.fences.len();
        self.fences.push(Prepared { key, shape, polygon, lat0, size_m });
        self.index.insert(Entry(i, envelope));
        Ok(())
    }

    /// Feeds one fix of a subject (a courier); returns the transitions it causes.
    pub fn observe(&mut self, subject: &S, at: i64, position: LatLng, accuracy_m: f64) -> Vec<FenceEvent<K>> {
        let mut events = Vec::new();
        let point = [position.lng, position.lat];
        let near: Vec<usize> =
            self.index.locate_in_envelope_intersecting(&AABB::from_point(point)).map(|e| e.0).collect();
        // Fences the subject is in or entering but is no longer near count as far away.
        let mut tracked: Vec<usize> =
            self.states.keys().filter(|(s, _)| s == subject).map(|(_, i)| *i).filter(|i| !near.contains(i)).collect();
        tracked.extend(near);
        for i in tracked {
            let fence = &self.fences[i];
            if !accuracy_m.is_finite() || accuracy_m > fence.size_m {
                continue; // the accuracy circle is larger than the fence: no evidence either way
            }
            let outside = fence.outside_m(position);
            let key = (subject.clone(), i);
            let state = self.states.get(&key).copied();
            match state {
                None if outside == 0.0 => {
                    self.states.insert(key.clone(), State::Entering(at));
                    if self.settings.min_dwell_s == 0 {
                        self.states.insert(key, State::Inside(at));
                        events.push(FenceEvent {
                            fence: fence.key.clone(),
                            transition: Transition::Arrived,
                            at,
                            dwell_s: None,
                        });
                    }
                }
                None => {}
                Some(State::Entering(since)) => {
                    if outside > self.settings.exit_margin_m {
                        self.states.remove(&key); // passed by: never arrived
                    } else if at - since >= self.settings.min_dwell_s {
                        self.states.insert(key, State::Inside(since));
                        events.push(FenceEvent {
                            fence: fence.key.clone(),
                            transition: Transition::Arrived,
                            at: since,
                            dwell_s: None,
                        });
                    }
                }
                Some(State::Inside(since)) if outside > self.settings.exit_margin_m => {
                    self.states.remove(&key);
                    events.push(FenceEvent {
                        fence: fence.key.clone(),
                        transition: Transition::Left,
                        at,
                        dwell_s: Some(at - since),
                    });
                }
                Some(State::Inside(_)) => {}
            }
        }
        events
    }
}

impl<K: Clone + Eq + std::hash::Hash, S: Clone + Eq + std::hash::Hash> Geofences<K, S> {
    /// Moves every subject's state onto a new set of fences, by key: a fence
    /// redrawn or a customer added does not make a parked courier arrive twice.
    pub fn carry_states_to(self, mut next: Geofences<K, S>) -> Geofences<K, S> {
        let index: HashMap<K, usize> = next.fences.iter().enumerate().map(|(i, f)| (f.key.clone(), i)).collect();
        for ((subject, i), state) in self.states {
            if let Some(j) = index.get(&self.fences[i].key) {
                next.states.insert((subject, *j), state);
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOOR: LatLng = LatLng { lat: 60.1700, lng: 24.9450 };

    fn offset(p: LatLng, north_m: f64, east_m: f64) -> LatLng {
        LatLng { lat: p.lat + north_m / 111_320.0, lng: p.lng + east_m / (111_320.0 * p.lat.to_radians().cos()) }
    }

    /// A deterministic wobble of ±`amplitude` metres.
    fn wobble(t: i64, amplitude: f64) -> (f64, f64) {
        let x = ((t * 7919) % 200) as f64 / 100.0 - 1.0;
        let y = ((t * 104_729) % 200) as f64 / 100.0 - 1.0;
        (x * amplitude, y * amplitude)
    }

    #[test]
    fn parking_at_the_fence_edge_with_jitter_arrives_once_and_never_flaps() {
        let mut fences: Geofences<&str, u8> = Geofences::new(FenceSettings::default());
        fences.add("customer", Shape::Circle { center: DOOR, radius_m: 50.0 }).expect("fence");
        let mut events = Vec::new();
        // Drive in from 600 m west at 10 m/s.
        for t in 0..55 {
            events.extend(fences.observe(&1, t, offset(DOOR, 0.0, -600.0 + 10.0 * t as f64), 5.0));
        }
        // Park 48 m from the door — right at the 50 m edge — for 10 minutes, GPS wobbling ±15 m.
        for t in 55..655 {
            let (n, e) = wobble(t, 15.0);
            events.extend(fences.observe(&1, t, offset(DOOR, n, -48.0 + e), 6.0));
        }
        // A terrible fix (300 m off, 400 m accuracy) changes nothing.
        events.extend(fences.observe(&1, 655, offset(DOOR, 0.0, 300.0), 400.0));
        // Drive away east.
        for t in 656..740 {
            events.extend(fences.observe(&1, t, offset(DOOR, 0.0, 10.0 * (t - 656) as f64), 5.0));
        }
        let kinds: Vec<Transition> = events.iter().map(|e| e.transition).collect();
        assert_eq!(kinds, [Transition::Arrived, Transition::Left], "{events:?}");
        let dwell = events[1].dwell_s.unwrap_or_default();
        assert!((600..700).contains(&dwell), "dwell {dwell} s");
    }

    #[test]
    fn driving_past_is_not_arriving_and_polygons_are_checked() {
        let mut fences: Geofences<u32, u8> = Geofences::new(FenceSettings::default());
        let square = [
            offset(DOOR, -40.0, -40.0),
            offset(DOOR, -40.0, 40.0),
            offset(DOOR, 40.0, 40.0),
            offset(DOOR, 40.0, -40.0),
        ];
        fences.add(7, Shape::Polygon(square.to_vec())).expect("warehouse");
        let mut events = Vec::new();
        for t in 0..120 {
            events.extend(fences.observe(&1, t, offset(DOOR, 0.0, -600.0 + 10.0 * t as f64), 5.0));
        }
        assert!(events.is_empty(), "passing through in 8 s is not an arrival: {events:?}");
        // A bow tie crosses itself.
        let bow = vec![square[0], square[2], square[1], square[3]];
        assert_eq!(fences.add(8, Shape::Polygon(bow)), Err(FenceError::BadPolygon));
        assert_eq!(fences.add(9, Shape::Circle { center: DOOR, radius_m: f64::NAN }), Err(FenceError::BadCircle));
    }
}
