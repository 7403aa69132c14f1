//! The map providers at their boundary: the AMap adapter against a stand-in
//! AMap on a real port serving recorded answers (`tests/recorded/`), and the
//! local road graph on a generated city.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router as Routes;
use axum::extract::{Query, State};
use axum::routing::get;
use xianlu_domain::wire::LatLng;
use xianlu_maps::{AMap, AMapConfig, LocalRoads, MapError, MapProvider};
use xianlu_roads::generate::{CitySpec, city};
use xianlu_roads::{Router, distance_m};

const KEY: &str = "test-key-0123456789abcdef";

// Two Beijing positions whose GCJ-02 images are published test vectors
// (googollee/eviltransform go/transform_test.go; wyxloading/coordtransform-rs
// tests/tests.rs), so the stand-in checks the conversion independently of ours.
const XIDAN: LatLng = LatLng { lat: 39.911954, lng: 116.377817 };
const XIDAN_GCJ: &str = "116.384047,39.913345";
const DENGSHIKOU: LatLng = LatLng { lat: 39.915, lng: 116.404 };
const DENGSHIKOU_GCJ: &str = "116.410244,39.916404";
// Further positions, their GCJ-02 images computed with the same published formula.
const KUNMING_LAKE: LatLng = LatLng { lat: 39.9937, lng: 116.2702 };
const KUNMING_LAKE_GCJ: &str = "116.276245,39.994927";
const TIANANMEN: LatLng = LatLng { lat: 39.9087, lng: 116.3975 };
const TIANANMEN_GCJ: &str = "116.403744,39.910103";
const WANGFUJING: LatLng = LatLng { lat: 39.9140, lng: 116.4110 };
const WANGFUJING_GCJ: &str = "116.417242,39.915403";

/// What the stand-in answers on an endpoint.
#[derive(Clone, Copy)]
enum Answer {
    /// A recorded answer from `tests/recorded/`.
    Recorded(&'static str),
    /// The recorded distance answer for the requested destination.
    RecordedByDestination,
    /// A distance result for every origin asked about, its duration rising
    /// with the origin's latitude (so placement in the matrix can be checked).
    DurationsByLatitude,
    /// Never answers.
    Hang,
}

struct StandIn {
    driving: Answer,
    distance: Answer,
    /// Every request's path and query, in arrival order.
    seen: Mutex<Vec<(String, HashMap<String, String>)>>,
}

/// A stand-in AMap on 127.0.0.1; stops when dropped.
struct MockAMap {
    base: String,
    state: Arc<StandIn>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockAMap {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl MockAMap {
    async fn start(driving: Answer, distance: Answer) -> MockAMap {
        let state = Arc::new(StandIn { driving, distance, seen: Mutex::new(Vec::new()) });
        let routes = Routes::new()
            .route("/v3/direction/driving", get(driving_handler))
            .route("/v3/distance", get(distance_handler))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, routes).await.expect("stand-in AMap");
        });
        MockAMap { base, state, server }
    }

    fn client(&self) -> AMap {
        AMap::new(AMapConfig { base_url: self.base.clone(), ..AMapConfig::new(KEY) }).expect("client")
    }

    fn requests(&self) -> Vec<(String, HashMap<String, String>)> {
        self.state.seen.lock().expect("seen").clone()
    }
}

fn recorded(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/recorded").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_reply(body: String) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "application/json;charset=UTF-8")], body)
}

/// AMap's own refusal of a request it cannot read.
fn invalid_params(why: &str) -> ([(&'static str, &'static str); 1], String) {
    eprintln!("stand-in AMap refused a request: {why}");
    json_reply(r#"{"status":"0","info":"INVALID_PARAMS","infocode":"20000"}"#.to_owned())
}

/// A `lng,lat` pair with six decimals at most, inside China: lng comes first
/// (no Chinese latitude exceeds 54°, no longitude is below 73°).
fn checked_position(text: &str) -> Result<(f64, f64), String> {
    let (lng, lat) = text.split_once(',').ok_or(format!("{text:?} is not lng,lat"))?;
    if lng.split('.').nth(1).map_or(0, str::len) > 6 || lat.split('.').nth(1).map_or(0, str::len) > 6 {
        return Err(format!("{text:?} has more than six decimals"));
    }
    let (lng, lat): (f64, f64) = (lng.parse().map_err(|_| text.to_owned())?, lat.parse().map_err(|_| text.to_owned())?);
    if !((73.0..136.0).contains(&lng) && (3.0..54.0).contains(&lat)) {
        return Err(format!("{text:?} is not lng,lat in China"));
    }
    Ok((lng, lat))
}

fn check_common(query: &HashMap<String, String>) -> Result<(), String> {
    if query.get("key").map(String::as_str) != Some(KEY) {
        return Err("no key or the wrong key".into());
    }
    if query.get("output").map(String::as_str) != Some("json") {
        return Err("output is not json".into());
    }
    Ok(())
}

async fn driving_handler(
    State(state): State<Arc<StandIn>>,
    Query(query): Query<HashMap<String, String>>,
) -> ([(&'static str, &'static str); 1], String) {
    state.seen.lock().expect("seen").push(("/v3/direction/driving".into(), query.clone()));
    let checked = check_common(&query).and_then(|()| {
        checked_position(query.get("origin").ok_or("no origin")?)?;
        checked_position(query.get("destination").ok_or("no destination")?)?;
        Ok(())
    });
    if let Err(why) = checked {
        return invalid_params(&why);
    }
    answer(state.driving, &query).await
}

async fn distance_handler(
    State(state): State<Arc<StandIn>>,
    Query(query): Query<HashMap<String, String>>,
) -> ([(&'static str, &'static str); 1], String) {
    state.seen.lock().expect("seen").push(("/v3/distance".into(), query.clone()));
    let checked = check_common(&query).and_then(|()| {
        if query.get("type").map(String::as_str) != Some("1") {
            return Err("type is not 1 (driving)".to_owned());
        }
        let origins = query.get("origins").ok_or("no origins")?;
        if origins.split('|').count() > 100 {
            return Err("more than 100 origins".into());
        }
        origins.split('|').try_for_each(|o| checked_position(o).map(|_| ()))?;
        checked_position(query.get("destination").ok_or("no destination")?)?;
        Ok(())
    });
    if let Err(why) = checked {
        return invalid_params(&why);
    }
    answer(state.distance, &query).await
}

async fn answer(answer: Answer, query: &HashMap<String, String>) -> ([(&'static str, &'static str); 1], String) {
    match answer {
        Answer::Recorded(name) => json_reply(recorded(name)),
        Answer::RecordedByDestination => match query.get("destination").map(String::as_str) {
            Some(TIANANMEN_GCJ) => json_reply(recorded("distance_to_tiananmen.json")),
            Some(WANGFUJING_GCJ) => json_reply(recorded("distance_to_wangfujing.json")),
            other => invalid_params(&format!("no recording for destination {other:?}")),
        },
        Answer::DurationsByLatitude => {
            let results: Vec<String> = query["origins"]
                .split('|')
                .enumerate()
                .map(|(i, origin)| {
                    let (_, lat) = checked_position(origin).expect("checked");
                    let seconds = ((lat - 39.0) * 100_000.0).round();
                    format!(
                        r#"{{"origin_id":"{}","dest_id":"1","distance":"{}","duration":"{seconds}"}}"#,
                        i + 1,
                        seconds * 8.0
                    )
                })
                .collect();
            json_reply(format!(
                r#"{{"status":"1","info":"OK","infocode":"10000","count":"{}","results":[{}]}}"#,
                results.len(),
                results.join(",")
            ))
        }
        Answer::Hang => std::future::pending().await,
    }
}

#[tokio::test]
async fn a_route_is_asked_in_gcj02_and_returned_in_wgs84() {
    let amap = MockAMap::start(Answer::Recorded("driving_beijing.json"), Answer::Hang).await;
    let route = amap.client().route(XIDAN, DENGSHIKOU).await.expect("route");

    // What was sent: the key, and both positions shifted into GCJ-02, lng first.
    let requests = amap.requests();
    assert_eq!(requests.len(), 1);
    let (path, query) = &requests[0];
    assert_eq!(path, "/v3/direction/driving");
    assert_eq!(query["key"], KEY);
    assert_eq!(query["origin"], XIDAN_GCJ);
    assert_eq!(query["destination"], DENGSHIKOU_GCJ);
    assert_eq!(query["strategy"], "0");
    let (lng, lat) = checked_position(&query["origin"]).expect("origin");
    let shift = distance_m(XIDAN, LatLng { lat, lng });
    assert!((400.0..800.0).contains(&shift), "the origin was sent shifted by {shift} m, not the GCJ-02 offset");

    // What came back: AMap's distance and duration, geometry in WGS-84.
    assert_eq!(route.meters, 3894.0);
    assert_eq!(route.seconds, 859.0);
    assert!(route.points.len() > 20, "{} points", route.points.len());
    assert!(route.points.windows(2).all(|w| w[0] != w[1]), "steps' shared points are not repeated");
    let (first, last) = (route.points[0], route.points[route.points.len() - 1]);
    assert!(distance_m(first, XIDAN) < 5.0, "the route starts {} m from its origin", distance_m(first, XIDAN));
    assert!(
        distance_m(last, DENGSHIKOU) < 5.0,
        "the route ends {} m from its destination",
        distance_m(last, DENGSHIKOU)
    );
    let length: f64 = route.points.windows(2).map(|w| distance_m(w[0], w[1])).sum();
    assert!((length - route.meters).abs() < 0.02 * route.meters, "geometry {length} m for {} m", route.meters);
}

#[tokio::test]
async fn a_matrix_asks_once_per_destination_and_marks_the_unreachable() {
    let amap = MockAMap::start(Answer::Hang, Answer::RecordedByDestination).await;
    let sources = [XIDAN, DENGSHIKOU, KUNMING_LAKE];
    let matrix = amap.client().matrix(&sources, &[TIANANMEN, WANGFUJING]).await.expect("matrix");

    assert_eq!(
        matrix,
        vec![vec![Some(421.0), Some(815.0)], vec![Some(383.0), Some(296.0)], vec![None, None]],
        "rows are sources, columns targets; a result with a code or -1 is unreachable"
    );
    let mut requests = amap.requests();
    assert_eq!(requests.len(), 2);
    requests.sort_by(|a, b| a.1["destination"].cmp(&b.1["destination"]));
    for (path, query) in &requests {
        assert_eq!(path, "/v3/distance");
        assert_eq!(query["key"], KEY);
        assert_eq!(query["type"], "1");
        assert_eq!(query["origins"], format!("{XIDAN_GCJ}|{DENGSHIKOU_GCJ}|{KUNMING_LAKE_GCJ}"));
    }
    assert_eq!(requests[0].1["destination"], TIANANMEN_GCJ);
    assert_eq!(requests[1].1["destination"], WANGFUJING_GCJ);
}

#[tokio::test]
async fn a_matrix_of_150_origins_is_asked_in_chunks_of_at_most_100() {
    let amap = MockAMap::start(Answer::Hang, Answer::DurationsByLatitude).await;
    // Northwards from Tiananmen, ~110 m apart.
    let sources: Vec<LatLng> = (0..150).map(|i| LatLng { lat: 39.90 + f64::from(i) * 0.001, lng: 116.39 }).collect();
    let matrix = amap.client().matrix(&sources, &[TIANANMEN]).await.expect("matrix");

    assert_eq!(matrix.len(), 150);
    assert!(matrix.iter().all(|row| row.len() == 1 && row[0].is_some()));
    // Each answer landed in its own row: the stand-in's durations rise with latitude.
    assert!(matrix.windows(2).all(|w| w[0][0] < w[1][0]), "rows out of order");
    let mut chunks: Vec<usize> = amap.requests().iter().map(|(_, q)| q["origins"].split('|').count()).collect();
    chunks.sort_unstable();
    assert_eq!(chunks, [50, 100]);
}

#[tokio::test]
async fn empty_matrices_need_no_request() {
    let amap = MockAMap::start(Answer::Hang, Answer::Hang).await;
    let client = amap.client();
    assert_eq!(client.matrix(&[], &[TIANANMEN]).await.expect("no sources"), Vec::<Vec<Option<f64>>>::new());
    assert_eq!(client.matrix(&[XIDAN, DENGSHIKOU], &[]).await.expect("no targets"), vec![vec![], vec![]]);
    assert!(amap.requests().is_empty());
}

#[tokio::test]
async fn each_refusal_maps_to_its_own_error() {
    type Expected = fn(&MapError) -> bool;
    let cases: [(&str, Expected); 5] = [
        ("invalid_user_key.json", |e| matches!(e, MapError::Unauthorized { info } if info == "INVALID_USER_KEY")),
        (
            "cuqps_has_exceeded_the_limit.json",
            |e| matches!(e, MapError::RateLimited { info } if info == "CUQPS_HAS_EXCEEDED_THE_LIMIT"),
        ),
        ("daily_query_over_limit.json", |e| matches!(e, MapError::QuotaExhausted { .. })),
        ("no_route.json", |e| matches!(e, MapError::NoRoute)),
        ("truncated_route.json", |e| matches!(e, MapError::Malformed(_))),
    ];
    for (file, expected) in cases {
        let amap = MockAMap::start(Answer::Recorded(file), Answer::Recorded(file)).await;
        let client = amap.client();
        let error = client.route(XIDAN, DENGSHIKOU).await.expect_err(file);
        assert!(expected(&error), "{file}: route gave {error:?}");
        assert!(!error.to_string().contains(KEY), "{file}: the key leaked into {error}");
        if file != "no_route.json" {
            let error = client.matrix(&[XIDAN], &[TIANANMEN]).await.expect_err(file);
            assert!(expected(&error), "{file}: matrix gave {error:?}");
        }
    }
}

#[tokio::test]
async fn a_hung_server_times_out() {
    let amap = MockAMap::start(Answer::Hang, Answer::Hang).await;
    let config =
        AMapConfig { base_url: amap.base.clone(), timeout: Duration::from_millis(300), ..AMapConfig::new(KEY) };
    let client = AMap::new(config).expect("client");
    let started = Instant::now();
    assert_eq!(client.route(XIDAN, DENGSHIKOU).await, Err(MapError::Timeout));
    assert_eq!(client.matrix(&[XIDAN], &[TIANANMEN]).await, Err(MapError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn an_unreachable_service_is_a_network_error_without_the_key() {
    // A port that was just free: nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let client = AMap::new(AMapConfig { base_url: base, ..AMapConfig::new(KEY) }).expect("client");
    let error = client.route(XIDAN, DENGSHIKOU).await.expect_err("nothing listens");
    assert!(matches!(error, MapError::Network(_)), "{error:?}");
    assert!(error.is_transient());
    assert!(!error.to_string().contains(KEY) && !format!("{error:?}").contains(KEY), "{error}");
}

#[tokio::test]
async fn positions_that_are_not_wgs84_are_refused_before_any_request() {
    let amap = MockAMap::start(Answer::Hang, Answer::Hang).await;
    let client = amap.client();
    let nowhere = LatLng { lat: f64::NAN, lng: 116.4 };
    let swapped = LatLng { lat: 116.4, lng: 39.9 };
    assert!(matches!(client.route(nowhere, XIDAN).await, Err(MapError::InvalidPosition(p)) if p.lat.is_nan()));
    assert!(matches!(client.route(swapped, XIDAN).await, Err(MapError::InvalidPosition(p)) if p == swapped));
    assert!(matches!(client.matrix(&[XIDAN], &[swapped]).await, Err(MapError::InvalidPosition(_))));
    assert!(amap.requests().is_empty());
}

#[tokio::test]
async fn the_local_road_graph_answers_routes_and_matrices() {
    let router = Router::new(city(CitySpec::new(11, 20))).expect("router");
    let local = LocalRoads::new(Arc::new(router));
    assert_eq!(local.name(), "local-roads");
    assert_eq!(local.attribution(), "", "a generated city owes no credit");

    // Across the generated city (its south-west corner is 39.85, 116.30; streets 200 m apart).
    let (from, to) = (LatLng { lat: 39.8515, lng: 116.3021 }, LatLng { lat: 39.8790, lng: 116.3330 });
    let route = local.route(from, to).await.expect("route");
    let straight = distance_m(from, to);
    assert!(route.meters > straight && route.meters < straight * 2.0, "{} m for {straight} m", route.meters);
    assert!(route.seconds > route.meters / (80.0 / 3.6), "no faster than 80 km/h");
    assert!(distance_m(route.points[0], from) < 200.0 && distance_m(route.points[route.points.len() - 1], to) < 200.0);

    // Repeated queries reuse calculators and agree.
    let again = local.route(from, to).await.expect("route again");
    assert_eq!(again, route);

    let matrix = local.matrix(&[from, to, from], &[to, from]).await.expect("matrix");
    assert_eq!(matrix.len(), 3);
    assert!(matrix.iter().all(|row| row.len() == 2));
    assert_eq!(matrix[0][0], Some(route.seconds), "the matrix and the route agree");
    assert_eq!(matrix[1][0], Some(0.0));
    assert_eq!(matrix[0], matrix[2]);
    assert!(matches!(local.route(LatLng { lat: 91.0, lng: 0.0 }, to).await, Err(MapError::InvalidPosition(_))));
}

#[tokio::test]
async fn providers_are_interchangeable_behind_a_shared_pointer() {
    let amap = MockAMap::start(Answer::Recorded("driving_beijing.json"), Answer::RecordedByDestination).await;
    let router = Router::new(city(CitySpec::new(3, 6))).expect("router");
    let providers: Vec<Arc<dyn MapProvider>> =
        vec![Arc::new(LocalRoads::new(Arc::new(router))), Arc::new(amap.client())];
    // An async handler holds one across awaits on a multi-threaded runtime.
    fn spawnable<T: Send + 'static>(_: &T) {}
    for provider in providers {
        let task = tokio::spawn(async move { provider.route(XIDAN, DENGSHIKOU).await });
        spawnable(&task);
        let route = task.await.expect("task").expect("route");
        assert!(!route.points.is_empty());
    }
    assert_eq!(amap.client().attribution(), "© AutoNavi (AMap)");
}
