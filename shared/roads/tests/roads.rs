//! The road network on real OpenStreetMap data (central Helsinki, © OpenStreetMap
//! contributors) and on a generated city.

use std::path::PathBuf;

use xianlu_domain::wire::LatLng;
use xianlu_roads::generate::{CitySpec, city};
use xianlu_roads::{RoadError, Router, distance_m, osm};

fn helsinki() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/maps/helsinki-center.osm.pbf")
}

#[test]
fn central_helsinki_imports_and_routes_along_its_streets() {
    let network = osm::import(&helsinki()).expect("import");
    assert!(network.osm && network.source.contains("helsinki-center"));
    let router = Router::new(network).expect("router");
    let prepared = router.network();
    assert!(prepared.nodes.len() > 1000, "{} nodes", prepared.nodes.len());
    assert!(prepared.kilometres() > 20.0, "{} km", prepared.kilometres());
    // Every node is inside the extract's bounding box.
    assert!(prepared.nodes.iter().all(|p| (60.15..60.19).contains(&p.lat) && (24.92..24.97).contains(&p.lng)));

    // From near the railway station to near the Esplanadi park.
    let (a, b) = (LatLng { lat: 60.1710, lng: 24.9410 }, LatLng { lat: 60.1675, lng: 24.9480 });
    let mut calculator = router.calculator();
    let route = router.route(&mut calculator, a, b).expect("a route");
    let straight = distance_m(a, b);
    assert!(route.snap_m.0 < 100.0 && route.snap_m.1 < 100.0, "{:?}", route.snap_m);
    assert!(route.meters >= straight * 0.8 && route.meters < straight * 3.0, "{} m for {straight} m", route.meters);
    assert!(route.seconds > route.meters / (80.0 / 3.6), "no faster than 80 km/h");
    assert!(route.points.len() > 3);
    // The path follows roads: consecutive points are close.
    assert!(route.points.windows(2).all(|w| distance_m(w[0], w[1]) < 500.0));
}

#[test]
fn a_generated_city_is_the_same_for_a_seed_and_answers_matrices() {
    let one = city(CitySpec::new(7, 30));
    assert_eq!(one, city(CitySpec::new(7, 30)), "deterministic");
    assert_ne!(one, city(CitySpec::new(8, 30)));
    let router = Router::new(one).expect("router");
    let spec = CitySpec::new(7, 30);
    let corner = |dx: f64, dy: f64| LatLng {
        lat: spec.origin.lat + dy * 29.0 * 200.0 / 111_320.0,
        lng: spec.origin.lng + dx * 29.0 * 200.0 / (111_320.0 * spec.origin.lat.to_radians().cos()),
    };
    let sources = [corner(0.1, 0.1), corner(0.5, 0.5)];
    let targets = [corner(0.9, 0.9), corner(0.1, 0.9), corner(0.5, 0.5)];
    let matrix = router.matrix(&sources, &targets);
    assert_eq!(matrix.len(), 2);
    assert!(matrix.iter().flatten().all(Option::is_some), "{matrix:?}");
    assert_eq!(matrix[1][2], Some(0.0));
    // Across town takes longer than to the middle.
    assert!(matrix[0][0] > matrix[0][2]);
    // The triangle inequality holds (shortest paths).
    let mut calculator = router.calculator();
    let via = router.route(&mut calculator, sources[0], targets[2]).expect("route").seconds
        + router.route(&mut calculator, targets[2], targets[0]).expect("route").seconds;
    assert!(matrix[0][0].unwrap_or(f64::MAX) <= via + 0.5);
}

#[test]
fn matrices_agree_with_point_to_point_routes_cell_by_cell() {
    // Two engines answer: contraction hierarchies pair by pair (routes) and a
    // customizable hierarchy many-to-many (matrices). They must agree.
    let router = Router::new(city(CitySpec::new(3, 40))).expect("router");
    let nodes = &router.network().nodes;
    let pick = |i: usize| nodes[(i * 7919) % nodes.len()];
    let sources: Vec<LatLng> = (0..30).map(pick).collect();
    let targets: Vec<LatLng> = (30..330).map(pick).collect();
    let matrix = router.matrix(&sources, &targets);
    let mut calculator = router.calculator();
    let mut compared = 0;
    for (i, s) in sources.iter().enumerate() {
        for (j, t) in targets.iter().enumerate() {
            let route = router.route(&mut calculator, *s, *t).map(|r| r.seconds);
            match (matrix[i][j], route) {
                (Some(a), Some(b)) => {
                    assert!((a - b).abs() < 0.051, "{i} → {j}: matrix {a}, route {b}");
                    compared += 1;
                }
                (a, b) => assert_eq!(a.is_some(), b.is_some(), "{i} → {j}: matrix {a:?}, route {b:?}"),
            }
        }
    }
    assert!(compared > 8000, "{compared} cells compared");
}

#[test]
fn a_file_that_is_not_a_pbf_is_refused() {
    let dir = std::env::temp_dir().join(format!("xianlu-roads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bogus = dir.join("not-a-map.osm.pbf");
    std::fs::write(&bogus, b"<?xml version='1.0'?><osm></osm>").expect("write");
    assert!(matches!(osm::import(&bogus), Err(RoadError::Unreadable(_))));
    assert!(matches!(osm::import(&dir.join("missing.osm.pbf")), Err(RoadError::Unreadable(_))));
    let _ = std::fs::remove_dir_all(dir);
}
