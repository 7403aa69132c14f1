//! A generated city for demos, tests and benchmarks at city scale: a grid
//! of side streets, an arterial every fifth street, a ring road around it,
//! some one-way and some missing side streets — the same for the same seed.

use xianlu_domain::wire::LatLng;

use crate::{RoadClass, RoadEdge, RoadNetwork, distance_m};

/// SplitMix64: small, and stable across library versions (a seed must give
/// the same city forever).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Settings of a generated city.
#[derive(Debug, Clone, Copy)]
pub struct CitySpec {
    pub seed: u64,
    /// Streets in each direction (the grid has `size × size` crossings).
    pub size: u32,
    /// Metres between neighbouring streets.
    pub spacing_m: f64,
    /// The south-west corner.
    pub origin: LatLng,
}

impl CitySpec {
    pub fn new(seed: u64, size: u32) -> CitySpec {
        CitySpec { seed, size, spacing_m: 200.0, origin: LatLng { lat: 39.85, lng: 116.30 } }
    }
}

/// Builds the city.
pub fn city(spec: CitySpec) -> RoadNetwork {
    let mut rng = SplitMix(spec.seed);
    let n = spec.size.max(2);
    let dlat = spec.spacing_m / 111_320.0;
    let dlng = spec.spacing_m / (111_320.0 * spec.origin.lat.to_radians().cos());
    let mut nodes = Vec::with_capacity((n * n) as usize);
    for row in 0..n {
        for col in 0..n {
            // A little irregularity, as real blocks have.
            let jitter_lat = (rng.next() % 21) as f64 - 10.0;
            let jitter_lng = (rng.next() % 21) as f64 - 10.0;
            nodes.push(LatLng {
                lat: spec.origin.lat + f64::from(row) * dlat + jitter_lat / 111_320.0,
                lng: spec.origin.lng + f64::from(col) * dlng + jitter_lng / 111_320.0,
            });
        }
    }
    let id = |row: u32, col: u32| row * n + col;
    let mut edges = Vec::new();
    let street = |a: u32, b: u32, class: RoadClass, rng: &mut SplitMix, edges: &mut Vec<RoadEdge>| {
        let side = class == RoadClass::Residential;
        if side && rng.chance(0.05) {
            return; // a missing link: a park, a building site
        }
        let meters = distance_m(nodes[a as usize], nodes[b as usize]) as f32;
        let edge = RoadEdge { from: a, to: b, meters, kmh: class.default_kmh(), class };
        let oneway = side && rng.chance(0.10);
        edges.push(edge);
        if !oneway {
            edges.push(RoadEdge { from: b, to: a, ..edge });
        }
    };
    // A street's class from its index across the grid: the outermost ones
    // form the ring road, every fifth is an arterial.
    let class_of = |index: u32| match index {
        i if i == 0 || i == n - 1 => RoadClass::Trunk,
        i if i % 5 == 0 => RoadClass::Primary,
        _ => RoadClass::Residential,
    };
    for row in 0..n {
        for col in 0..n {
            if col + 1 < n {
                street(id(row, col), id(row, col + 1), class_of(row), &mut rng, &mut edges);
            }
            if row + 1 < n {
                street(id(row, col), id(row + 1, col), class_of(col), &mut rng, &mut edges);
            }
        }
    }
    RoadNetwork { source: format!("generated: seed {}, {n}×{n} streets", spec.seed), osm: false, nodes, edges }
}
