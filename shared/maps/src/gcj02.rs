//! WGS-84 ⇄ GCJ-02 ("Mars coordinates"), the obfuscated datum Chinese map
//! services (AMap among them) require by law.
//!
//! The forward transform is the widely published one (the same constants and
//! polynomial as googollee/eviltransform and wandergis/coordtransform): an
//! offset of a few hundred metres that varies smoothly with position, applied
//! only inside a bounding box around mainland China. The inverse has no
//! closed form; [`gcj02_to_wgs84`] solves for it by fixed-point iteration to
//! well under a centimetre, where the common one-step approximation is off by
//! one to two metres.
//!
//! No maintained crate offers an iterative inverse (the small crates on
//! crates.io stop at the one-step approximation), hence these few lines.
//!
//! Only the AMap adapter uses this module: everything else in Xianlu is WGS-84.

use xianlu_domain::wire::LatLng;

/// Semi-major axis of the Krasovsky 1940 ellipsoid, as in the published transform.
const A: f64 = 6_378_245.0;
/// Its first eccentricity squared (0.00669342162296594323, to f64 precision).
const EE: f64 = 0.006_693_421_622_965_943;

/// Iterations of the inverse are stopped once a step moves less than this (≈ 0.1 mm).
const INVERSE_TOLERANCE_DEG: f64 = 1e-9;
/// The inverse converges in three or four steps; this only bounds a pathological input.
const INVERSE_MAX_STEPS: usize = 20;

/// Whether a position lies outside the box where GCJ-02 applies an offset.
/// This is the standard coarse box every implementation (and AMap itself)
/// uses, not China's border: positions outside it are left unchanged.
pub fn out_of_china(p: LatLng) -> bool {
    !((72.004..=137.8347).contains(&p.lng) && (0.8293..=55.8271).contains(&p.lat))
}

/// WGS-84 → GCJ-02. Positions outside the box are returned unchanged.
pub fn wgs84_to_gcj02(wgs: LatLng) -> LatLng {
    if out_of_china(wgs) {
        return wgs;
    }
    let (d_lat, d_lng) = offset(wgs);
    LatLng { lat: wgs.lat + d_lat, lng: wgs.lng + d_lng }
}

/// GCJ-02 → WGS-84, accurate to well under a centimetre (solves
/// `wgs84_to_gcj02(x) = gcj` by fixed-point iteration). Positions outside the
/// box are returned unchanged.
pub fn gcj02_to_wgs84(gcj: LatLng) -> LatLng {
    if out_of_china(gcj) {
        return gcj;
    }
    // The offset changes by a few millimetres per metre, so x ← gcj − offset(x)
    // is a strong contraction: each step gains two to three orders of magnitude.
    let mut wgs = gcj;
    for _ in 0..INVERSE_MAX_STEPS {
        let (d_lat, d_lng) = offset(wgs);
        let next = LatLng { lat: gcj.lat - d_lat, lng: gcj.lng - d_lng };
        let moved = (next.lat - wgs.lat).abs().max((next.lng - wgs.lng).abs());
        wgs = next;
        if moved < INVERSE_TOLERANCE_DEG {
            break;
        }
    }
    wgs
}

/// The GCJ-02 offset (degrees of latitude, degrees of longitude) at a WGS-84 position.
fn offset(p: LatLng) -> (f64, f64) {
    let (x, y) = (p.lng - 105.0, p.lat - 35.0);
    let (d_lat, d_lng) = (transform_lat(x, y), transform_lng(x, y));
    let rad_lat = p.lat.to_radians();
    let magic = 1.0 - EE * rad_lat.sin().powi(2);
    let sqrt_magic = magic.sqrt();
    let d_lat = (d_lat * 180.0) / ((A * (1.0 - EE)) / (magic * sqrt_magic) * std::f64::consts::PI);
    let d_lng = (d_lng * 180.0) / (A / sqrt_magic * rad_lat.cos() * std::f64::consts::PI);
    (d_lat, d_lng)
}

fn transform_lat(x: f64, y: f64) -> f64 {
    use std::f64::consts::PI;
    let mut ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    ret += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    ret += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    ret += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
    ret
}

fn transform_lng(x: f64, y: f64) -> f64 {
    use std::f64::consts::PI;
    let mut ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    ret += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    ret += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    ret += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
    ret
}

#[cfg(test)]
mod tests {
    use super::*;
    use xianlu_roads::distance_m;

    fn at(lat: f64, lng: f64) -> LatLng {
        LatLng { lat, lng }
    }

    /// (WGS-84, GCJ-02) pairs published as test vectors by other
    /// implementations of the same transform:
    /// - googollee/eviltransform, go/transform_test.go (Shanghai, Shenzhen, Beijing);
    /// - wyxloading/coordtransform-rs, tests/tests.rs (`wgs84_to_gcj02(116.404, 39.915)`, near Tiananmen).
    const REFERENCE: [(LatLng, LatLng); 4] = [
        (LatLng { lat: 31.1774276, lng: 121.5272106 }, LatLng { lat: 31.17530398364597, lng: 121.531541859215 }),
        (LatLng { lat: 22.543847, lng: 113.912316 }, LatLng { lat: 22.540796131694766, lng: 113.9171764808363 }),
        (LatLng { lat: 39.911954, lng: 116.377817 }, LatLng { lat: 39.91334545536069, lng: 116.38404722455657 }),
        (LatLng { lat: 39.915, lng: 116.404 }, LatLng { lat: 39.91640428150164, lng: 116.41024449916938 }),
    ];

    #[test]
    fn forward_transform_matches_published_reference_pairs() {
        for (wgs, gcj) in REFERENCE {
            let got = wgs84_to_gcj02(wgs);
            // 1e-9° is ~0.1 mm: the same formula, to rounding.
            assert!(
                (got.lat - gcj.lat).abs() < 1e-9 && (got.lng - gcj.lng).abs() < 1e-9,
                "{wgs:?} → {got:?}, expected {gcj:?}"
            );
        }
    }

    #[test]
    fn inverse_recovers_the_wgs84_position_to_well_under_half_a_metre() {
        for (wgs, gcj) in REFERENCE {
            let back = gcj02_to_wgs84(gcj);
            let error = distance_m(back, wgs);
            assert!(error < 0.01, "{gcj:?} → {back:?} is {error} m from {wgs:?}");
        }
    }

    #[test]
    fn the_offset_in_beijing_is_hundreds_of_metres() {
        // Tiananmen: the shift that makes an unconverted AMap route visibly wrong.
        let tiananmen = at(39.9087, 116.3975);
        let shift = distance_m(tiananmen, wgs84_to_gcj02(tiananmen));
        assert!((400.0..800.0).contains(&shift), "{shift} m");
    }

    #[test]
    fn round_trips_across_china_stay_within_a_centimetre() {
        // A grid over the whole box, edges included (Hainan to Heilongjiang, Xinjiang to the coast).
        let mut worst: f64 = 0.0;
        for i in 0..=40 {
            for j in 0..=40 {
                let wgs = at(18.0 + f64::from(i) * (53.0 - 18.0) / 40.0, 74.0 + f64::from(j) * (134.0 - 74.0) / 40.0);
                let back = gcj02_to_wgs84(wgs84_to_gcj02(wgs));
                worst = worst.max(distance_m(back, wgs));
            }
        }
        assert!(worst < 0.01, "worst round trip {worst} m");
    }

    #[test]
    fn positions_outside_china_are_left_alone() {
        for p in [at(52.52, 13.405), at(-33.8688, 151.2093), at(40.7128, -74.006), at(60.1699, 24.9384)] {
            assert!(out_of_china(p));
            assert_eq!(wgs84_to_gcj02(p), p);
            assert_eq!(gcj02_to_wgs84(p), p);
        }
        assert!(!out_of_china(at(39.9087, 116.3975)));
    }
}
