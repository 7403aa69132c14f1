//! Travel times learned from history, and ETA windows. Pure: no I/O, time
//! comes in as an argument.
//!
//! A leg's time is the road's free-flow time × a factor for the hour of day
//! (merchant's time zone) and the zone of the destination, learned from
//! completed legs (actual ÷ free-flow). Where history is thin the model
//! falls back from (hour, zone) to the hour, to everything, to a fixed
//! urban factor. The spread of what was observed widens the window the
//! customer is shown.

use std::collections::HashMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use xianlu_domain::TimeWindow;
use xianlu_domain::wire::LatLng;

/// Observations needed before a group is trusted.
pub const MIN_SAMPLES: usize = 8;
/// Free-flow road speeds are rarely reached in a city: without history, 30 % slower.
pub const FALLBACK_FACTOR: f64 = 1.3;
/// A zone is a cell of this many degrees (about 2 km).
const ZONE_DEGREES: f64 = 0.02;
/// Ratios outside this are not a drive (a lunch break, a wrong fence) and are not learned from.
pub const PLAUSIBLE_RATIO: (f64, f64) = (0.4, 6.0);

/// The zone a position falls in.
pub fn zone_of(p: LatLng) -> String {
    format!("{}:{}", (p.lat / ZONE_DEGREES).floor() as i64, (p.lng / ZONE_DEGREES).floor() as i64)
}

/// One completed leg.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub hour: u8,
    pub zone: String,
    pub free_flow_s: f64,
    pub actual_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factor {
    /// Multiply free-flow time by this.
    pub median: f64,
    /// The 10th and 90th percentile ratios, relative to the median.
    pub low: f64,
    pub high: f64,
    /// Which level of history answered.
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    HourAndZone,
    Hour,
    All,
    Fallback,
}

fn summarise(ratios: &mut [f64], source: Source) -> Option<Factor> {
    if ratios.len() < MIN_SAMPLES {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let q = |p: f64| ratios[((ratios.len() - 1) as f64 * p).round() as usize];
    let median = q(0.5);
    Some(Factor { median, low: q(0.1) / median, high: q(0.9) / median, source })
}

/// Factors by (hour, zone), by hour and overall.
#[derive(Debug, Clone, Default)]
pub struct SpeedModel {
    by_hour_zone: HashMap<(u8, String), Factor>,
    by_hour: HashMap<u8, Factor>,
    all: Option<Factor>,
}

impl SpeedModel {
    pub fn learn(observations: &[Observation]) -> SpeedModel {
        let mut groups: HashMap<(u8, String), Vec<f64>> = HashMap::new();
        let mut hours: HashMap<u8, Vec<f64>> = HashMap::new();
        let mut all = Vec::new();
        for o in observations {
            if o.free_flow_s <= 0.0 {
                continue;
            }
            let ratio = o.actual_s / o.free_flow_s;
            if !(PLAUSIBLE_RATIO.0..=PLAUSIBLE_RATIO.1).contains(&ratio) {
                continue;
            }
            groups.entry((o.hour, o.zone.clone())).or_default().push(ratio);
            hours.entry(o.hour).or_default().push(ratio);
            all.push(ratio);
        }
        SpeedModel {
            by_hour_zone: groups
                .into_iter()
                .filter_map(|(k, mut v)| summarise(&mut v, Source::HourAndZone).map(|f| (k, f)))
                .collect(),
            by_hour: hours
                .into_iter()
                .filter_map(|(k, mut v)| summarise(&mut v, Source::Hour).map(|f| (k, f)))
                .collect(),
            all: summarise(&mut all, Source::All),
        }
    }

    /// The factor for driving towards `zone` at `hour`.
    pub fn factor(&self, hour: u8, zone: &str) -> Factor {
        self.by_hour_zone
            .get(&(hour, zone.to_owned()))
            .or_else(|| self.by_hour.get(&hour))
            .or(self.all.as_ref())
            .copied()
            .unwrap_or(Factor { median: FALLBACK_FACTOR, low: 0.85, high: 1.3, source: Source::Fallback })
    }
}

/// A stop on the courier's way, in the order they will make them.
#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    /// Driving seconds to this stop from the one before, factor applied.
    pub seconds: f64,
    /// The factor's spread for this leg.
    pub low: f64,
    pub high: f64,
}

/// An estimate for one stop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub eta: DateTime<Utc>,
    pub window: TimeWindow,
    pub stops_before: u16,
}

/// Arrival at each stop: the legs before it, and the service time of every
/// stop before it (`service_s[i]` at stop `i`).
pub fn estimates(now: DateTime<Utc>, legs: &[Leg], service_s: &[f64]) -> Vec<Estimate> {
    let mut out = Vec::with_capacity(legs.len());
    let (mut mid, mut early, mut late) = (0.0, 0.0, 0.0);
    for (i, leg) in legs.iter().enumerate() {
        if i > 0 {
            let service_s = service_s.get(i - 1).copied().unwrap_or_default();
            mid += service_s;
            early += service_s * 0.7;
            late += service_s * 1.5;
        }
        mid += leg.seconds;
        early += leg.seconds * leg.low;
        late += leg.seconds * leg.high;
        let eta = now + seconds(mid);
        out.push(Estimate { eta, window: window(now, eta, early, late), stops_before: i as u16 });
    }
    out
}

fn seconds(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0).round() as i64)
}

/// What the customer sees: at least 15 minutes wide, on 5-minute marks, never
/// starting in the past.
pub fn window(now: DateTime<Utc>, eta: DateTime<Utc>, early_s: f64, late_s: f64) -> TimeWindow {
    let five = Duration::minutes(5);
    let start = (now + seconds(early_s)).min(eta - five);
    let end = (now + seconds(late_s)).max(eta + Duration::minutes(10));
    let start = start.duration_trunc(five).unwrap_or(start).max(now.duration_trunc(five).unwrap_or(now));
    let end_rounded = end.duration_trunc(five).unwrap_or(end);
    let end = if end_rounded < end { end_rounded + five } else { end_rounded };
    TimeWindow { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).single().unwrap_or_default()
    }

    fn obs(hour: u8, zone: &str, ratio: f64, n: usize) -> Vec<Observation> {
        (0..n)
            .map(|i| Observation {
                hour,
                zone: zone.into(),
                free_flow_s: 600.0,
                actual_s: 600.0 * ratio * (1.0 + (i % 3) as f64 * 0.01),
            })
            .collect()
    }

    #[test]
    fn thin_history_falls_back_level_by_level() {
        assert_eq!(SpeedModel::learn(&[]).factor(8, "1:1").source, Source::Fallback);
        let mut history = obs(8, "1:1", 2.0, MIN_SAMPLES);
        history.extend(obs(8, "2:2", 1.5, 3)); // too few for its own zone
        history.extend(obs(14, "1:1", 1.1, MIN_SAMPLES));
        let model = SpeedModel::learn(&history);
        let rush = model.factor(8, "1:1");
        assert_eq!(rush.source, Source::HourAndZone);
        assert!((rush.median - 2.0).abs() < 0.05, "{rush:?}");
        let other_zone = model.factor(8, "2:2");
        assert_eq!(other_zone.source, Source::Hour);
        assert!(other_zone.median > 1.5, "the hour's own history answers: {other_zone:?}");
        assert_eq!(model.factor(3, "9:9").source, Source::All);
        assert!((model.factor(14, "1:1").median - 1.1).abs() < 0.05);
    }

    #[test]
    fn implausible_legs_are_not_learned() {
        let mut history = obs(9, "1:1", 1.2, MIN_SAMPLES);
        history.extend(obs(9, "1:1", 40.0, 50)); // parked for lunch between fences
        let model = SpeedModel::learn(&history);
        assert!((model.factor(9, "1:1").median - 1.2).abs() < 0.05);
    }

    #[test]
    fn later_stops_include_every_earlier_leg_and_service_time() {
        let leg = |s| Leg { seconds: s, low: 0.9, high: 1.2 };
        let out = estimates(at(14, 0), &[leg(600.0), leg(300.0), leg(900.0)], &[240.0; 3]);
        assert_eq!(out[0].eta, at(14, 10));
        assert_eq!(out[1].eta, at(14, 19)); // 10 + 4 service + 5
        assert_eq!(out[2].eta, at(14, 38)); // 19 + 4 + 15
        assert_eq!(out.iter().map(|e| e.stops_before).collect::<Vec<_>>(), vec![0, 1, 2]);
        for e in &out {
            assert!(e.window.start <= e.eta && e.eta < e.window.end, "{e:?}");
            assert!(e.window.end - e.window.start >= Duration::minutes(15));
            assert_eq!(e.window.start.timestamp() % 300, 0);
            assert_eq!(e.window.end.timestamp() % 300, 0);
        }
        // Uncertainty grows along the route.
        let width = |e: &Estimate| e.window.end - e.window.start;
        assert!(width(&out[2]) >= width(&out[0]));
    }

    #[test]
    fn a_transfer_stop_holds_the_courier_for_its_own_time() {
        let leg = |s| Leg { seconds: s, low: 1.0, high: 1.0 };
        // Collect from a stopped van (10 minutes), then deliver (4 minutes), then deliver.
        let out = estimates(at(14, 0), &[leg(600.0), leg(300.0), leg(300.0)], &[600.0, 240.0, 240.0]);
        assert_eq!(out[1].eta, at(14, 25)); // 10 + 10 transfer + 5
        assert_eq!(out[2].eta, at(14, 34)); // 25 + 4 + 5
    }

    #[test]
    fn a_window_never_starts_in_the_past() {
        let w = window(at(14, 2), at(14, 4), 60.0, 300.0);
        assert_eq!(w.start, at(14, 0));
        assert_eq!(w.end, at(14, 15));
    }
}
