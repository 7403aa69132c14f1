//! `cargo xtask bench` (courier operations): position ingest through the
//! HTTP API against a raw insert loop on the same database; geofence and ETA
//! cost per position; shortest paths and a planner-sized matrix on the
//! generated city against a plain Dijkstra; and ETA error on held-out
//! simulated days against straight-line distance ÷ average speed. Prints a
//! Markdown report for docs/benchmarks.md. Figures, not assertions.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::json;
use xianlu_domain::wire::LatLng;
use xianlu_roads::fence::{FenceSettings, Geofences, Shape};
use xianlu_roads::generate::{CitySpec, city};
use xianlu_roads::{RoadNetwork, Router, distance_m};
use xianlu_server::db::{Db, DbOptions};
use xianlu_server::on_tx;
use xianlu_server::operations::eta::{self, Leg, Observation, SpeedModel};
use xianlu_tests::{Backend, Client, ServerProcess, Shop, TestDb};

struct Settings {
    seconds: u64,
    couriers: usize,
    batch: usize,
    city_size: u32,
    queries: usize,
    matrix: (usize, usize),
    legs_per_day: usize,
    training_days: usize,
}

impl Settings {
    fn from_args() -> Settings {
        if std::env::args().any(|a| a == "--quick") {
            Settings {
                seconds: 3,
                couriers: 8,
                batch: 200,
                city_size: 80,
                queries: 2000,
                matrix: (50, 500),
                legs_per_day: 300,
                training_days: 5,
            }
        } else {
            Settings {
                seconds: 10,
                couriers: 16,
                batch: 200,
                city_size: 150,
                queries: 20_000,
                matrix: (200, 2000),
                legs_per_day: 2000,
                training_days: 20,
            }
        }
    }
}

/// A courier's fixes: a slow walk north-east, one per second, dated in the past.
fn batch(courier: usize, first_seq: u64, count: usize, start: DateTime<Utc>) -> Vec<serde_json::Value> {
    (0..count as u64)
        .map(|i| {
            let seq = first_seq + i;
            let p = (39.90 + courier as f64 * 0.001 + seq as f64 * 2e-6, 116.40 + seq as f64 * 2e-6);
            json!({"deviceSeq": seq, "at": start + chrono::Duration::seconds(seq as i64),
                   "lat": p.0, "lng": p.1, "accuracyM": 6.0, "speedMps": 0.3, "headingDeg": 45.0})
        })
        .collect()
}

struct Ingest {
    positions: u64,
    per_second: f64,
    p99_ms: f64,
}

/// Batches of fixes from one HTTP client per courier, as fast as they go.
async fn ingest_api(url: &str, couriers: &[String], size: usize, seconds: u64) -> Result<Ingest> {
    let http = xianlu_tests::http_client();
    let start = Utc::now() - chrono::Duration::days(2);
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, courier) in couriers.iter().enumerate() {
        let (http, url) = (http.clone(), format!("{url}/api/v1/couriers/{courier}/positions"));
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut seq, mut sent) = (Vec::new(), 1u64, 0u64);
            while tokio::time::Instant::now() < end {
                let body = json!({"fixes": batch(i, seq, size, start)}).to_string();
                let t = Instant::now();
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-xianlu-dev-actor", "admin:bench")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let receipt: serde_json::Value = response.json().await?;
                anyhow::ensure!(status == 200 && receipt["accepted"] == size, "{status} {receipt}");
                latencies.push(t.elapsed().as_micros() as u64);
                seq += size as u64;
                sent += size as u64;
            }
            anyhow::Ok((latencies, sent))
        }));
    }
    gather(tasks, started).await
}

/// The same rows inserted one statement per fix, one transaction per batch.
async fn ingest_raw(db: &TestDb, couriers: &[String], size: usize, seconds: u64) -> Result<Ingest> {
    let pool =
        Db::connect(&DbOptions { url: db.url.clone(), sqlite_synchronous: "NORMAL".into(), max_connections: 16 })
            .await?;
    let start = Utc::now() - chrono::Duration::days(2);
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, courier) in couriers.iter().enumerate() {
        let pool = pool.clone();
        let courier: uuid::Uuid = courier.parse()?;
        tasks.push(tokio::spawn(async move {
            // Past the API run's sequences.
            let (mut latencies, mut seq, mut sent) = (Vec::new(), 1u64 << 40, 0u64);
            while tokio::time::Instant::now() < end {
                let t = Instant::now();
                let mut tx = pool.begin().await?;
                for k in 0..size as u64 {
                    let s = seq + k;
                    let at = start + chrono::Duration::seconds((s % 100_000_000) as i64);
                    on_tx!(&mut tx, c => {
                        sqlx::query(
                            "INSERT INTO courier_positions (courier_id, device_seq, at, lat, lng, accuracy_m, speed_mps, \
                             heading_deg, flagged, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE, $9) \
                             ON CONFLICT (courier_id, device_seq) DO NOTHING",
                        )
                        .bind(courier)
                        .bind(s as i64)
                        .bind(at)
                        .bind(39.9 + i as f64 * 0.001)
                        .bind(116.4)
                        .bind(6.0f32)
                        .bind(Some(0.3f32))
                        .bind(Some(45.0f32))
                        .bind(Utc::now())
                        .execute(&mut *c)
                        .await?;
                    });
                }
                tx.commit().await?;
                latencies.push(t.elapsed().as_micros() as u64);
                seq += size as u64;
                sent += size as u64;
            }
            anyhow::Ok((latencies, sent))
        }));
    }
    let ingest = gather(tasks, started).await;
    pool.close().await;
    ingest
}

/// One sender's batch latencies (µs) and the positions it sent.
type Sender = tokio::task::JoinHandle<Result<(Vec<u64>, u64)>>;

/// Every sender's figures as one.
async fn gather(tasks: Vec<Sender>, started: Instant) -> Result<Ingest> {
    let (mut all, mut positions) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, sent) = task.await??;
        all.extend(latencies);
        positions += sent;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(Ingest { positions, per_second: positions as f64 / elapsed, p99_ms: xianlu_tests::percentile_ms(&all, 0.99) })
}

/// Returns the microseconds per stored position: the raw loop's and the API's (SQLite).
async fn ingest(settings: &Settings, report: &mut String) -> Result<(f64, f64)> {
    report.push_str("### Position ingest\n\n");
    report.push_str(&format!(
        "{} couriers, each sending batches of {} fixes (one HTTP client per courier, as fast as they go), \
         through `POST /couriers/{{id}}/positions`: JSON decoding, checks, replay detection, jump flagging, storage \
         in one transaction, then fences, pushes and ETAs. Raw baseline: the same rows inserted straight into the \
         same table with one `INSERT` per fix, one transaction per batch, same concurrency and durability.\n\n",
        settings.couriers, settings.batch
    ));
    report.push_str("| database | API positions/s | p99 ms per batch | raw loop positions/s | raw p99 ms | API ÷ raw |\n|---|---|---|---|---|---|\n");
    let (mut insert_us, mut api_us) = (f64::NAN, f64::NAN);
    for (label, backend) in [("SQLite, WAL, synchronous=NORMAL", Backend::Sqlite), ("PostgreSQL 15", Backend::Postgres)]
    {
        eprintln!("ingest: {label}");
        let db = TestDb::create(backend).await?;
        let process = ServerProcess::start(
            &xianlu_tests::server_under_test()?,
            &[
                ("XIANLU_DATABASE_URL", db.url.as_str()),
                ("XIANLU_SQLITE_SYNCHRONOUS", "NORMAL"),
                ("XIANLU_MAX_CONNECTIONS", "16"),
            ],
        )
        .await?;
        let admin = Client::new(&process.url, "admin:bench");
        let shop = Shop::open(&admin).await?;
        let mut couriers = Vec::new();
        for i in 0..settings.couriers {
            let c = admin
                .ok(
                    &format!("/api/v1/merchants/{}/couriers", shop.merchant),
                    &json!({"name": format!("骑手{i}"), "phone": format!("139{i:08}"), "vehicle": "van"}),
                )
                .await?;
            couriers.push(c["id"].as_str().context("courier id")?.to_owned());
        }
        let api = ingest_api(&process.url, &couriers, settings.batch, settings.seconds).await?;
        process.stop().await;
        let raw = ingest_raw(&db, &couriers, settings.batch, settings.seconds).await?;
        if backend == Backend::Sqlite {
            insert_us = 1e6 / raw.per_second;
            api_us = 1e6 / api.per_second;
        }
        let line = format!(
            "| {label} | {:.0} | {:.1} | {:.0} | {:.1} | {:.0} % |\n",
            api.per_second,
            api.p99_ms,
            raw.per_second,
            raw.p99_ms,
            100.0 * api.per_second / raw.per_second
        );
        eprint!("{line}");
        eprintln!("({} positions through the API, {} raw)", api.positions, raw.positions);
        report.push_str(&line);
    }
    Ok((insert_us, api_us))
}

/// A textbook Dijkstra over the network's edges: the baseline the contraction
/// hierarchy is measured against (never used by the server).
struct Plain {
    adjacency: Vec<Vec<(u32, f32)>>,
}

impl Plain {
    fn new(network: &RoadNetwork) -> Plain {
        let mut adjacency = vec![Vec::new(); network.nodes.len()];
        for e in &network.edges {
            adjacency[e.from as usize].push((e.to, e.seconds()));
        }
        Plain { adjacency }
    }

    /// Seconds from `source` to every node (to `target` only, if given).
    fn run(&self, source: u32, target: Option<u32>) -> Vec<f32> {
        let mut dist = vec![f32::INFINITY; self.adjacency.len()];
        let mut heap = BinaryHeap::new();
        dist[source as usize] = 0.0;
        heap.push(Reverse(((0.0f32).to_bits(), source)));
        while let Some(Reverse((bits, node))) = heap.pop() {
            let d = f32::from_bits(bits);
            if d > dist[node as usize] {
                continue;
            }
            if Some(node) == target {
                break;
            }
            for &(next, w) in &self.adjacency[node as usize] {
                let nd = d + w;
                if nd < dist[next as usize] {
                    dist[next as usize] = nd;
                    heap.push(Reverse((nd.to_bits(), next)));
                }
            }
        }
        dist
    }
}

/// Deterministic positions inside the city.
struct Points(u64);

impl Points {
    fn next(&mut self, network: &RoadNetwork) -> LatLng {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        network.nodes[(self.0 >> 33) as usize % network.nodes.len()]
    }

    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn routing(settings: &Settings, router: &Router, report: &mut String) {
    let network = router.network();
    let plain = Plain::new(network);
    let mut points = Points(7);
    let pairs: Vec<(LatLng, LatLng)> =
        (0..settings.queries).map(|_| (points.next(network), points.next(network))).collect();
    let mut calculator = router.calculator();
    let t = Instant::now();
    let mut found = 0;
    for (a, b) in &pairs {
        found += usize::from(router.route(&mut calculator, *a, *b).is_some());
    }
    let ch_per_s = pairs.len() as f64 / t.elapsed().as_secs_f64();
    let baseline_pairs = &pairs[..pairs.len().min(500)];
    let t = Instant::now();
    for (a, b) in baseline_pairs {
        let (Some((s, _)), Some((g, _))) = (router.snap(*a), router.snap(*b)) else { continue };
        let _ = plain.run(s, Some(g));
    }
    let plain_per_s = baseline_pairs.len() as f64 / t.elapsed().as_secs_f64();

    let (rows, cols) = settings.matrix;
    let sources: Vec<LatLng> = (0..rows).map(|_| points.next(network)).collect();
    let targets: Vec<LatLng> = (0..cols).map(|_| points.next(network)).collect();
    let t = Instant::now();
    let matrix = router.matrix(&sources, &targets);
    let matrix_s = t.elapsed().as_secs_f64();
    let reachable = matrix.iter().flatten().filter(|c| c.is_some()).count();
    let t = Instant::now();
    for s in &sources {
        if let Some((node, _)) = router.snap(*s) {
            let _ = plain.run(node, None);
        }
    }
    let plain_matrix_s = t.elapsed().as_secs_f64();
    report.push_str("\n### Shortest paths on the generated city\n\n");
    report.push_str(&format!(
        "Generated city, size {} ({} nodes, {} directed edges, {:.0} km of road counting each direction), prepared at load with \
         contraction hierarchies (`fast_paths`) for point-to-point routes, which include snapping both ends (R-tree) \
         and the path's geometry, and a customizable contraction hierarchy (`cch`) for many-to-many matrices. Baseline: a textbook binary-heap Dijkstra over the same edges, stopping at the target \
         (routes) or settling the whole city once per source (matrix). Matrix rows are shared over the cores; the baseline runs on one.\n\n",
        settings.city_size,
        network.nodes.len(),
        network.edges.len(),
        network.kilometres()
    ));
    report.push_str("| query | ours | plain Dijkstra | speed-up |\n|---|---|---|---|\n");
    let line = format!(
        "| routes/s (random pairs, {found} of {} found) | {ch_per_s:.0} | {plain_per_s:.0} | {:.0}× faster |\n",
        pairs.len(),
        ch_per_s / plain_per_s
    );
    eprint!("{line}");
    report.push_str(&line);
    let line = format!(
        "| {rows} × {cols} matrix, seconds ({reachable} cells reachable) | {matrix_s:.3} | {plain_matrix_s:.2} | {:.1}× |\n",
        plain_matrix_s / matrix_s
    );
    eprint!("{line}");
    report.push_str(&line);
}

/// Fence checks with 1 000 customer fences and 500 couriers moving, and ETA
/// refreshes of five stops each.
fn fences_and_etas(router: &Router, (insert_us, api_us): (f64, f64), report: &mut String) {
    let network = router.network();
    let mut points = Points(11);
    let mut fences: Geofences<usize, usize> = Geofences::new(FenceSettings::default());
    for i in 0..1000 {
        let _ = fences.add(i, Shape::Circle { center: points.next(network), radius_m: 80.0 });
    }
    let couriers: Vec<(LatLng, LatLng)> = (0..500).map(|_| (points.next(network), points.next(network))).collect();
    let steps = 200;
    let t = Instant::now();
    let mut transitions = 0;
    for step in 0..steps {
        let f = step as f64 / steps as f64;
        for (c, (a, b)) in couriers.iter().enumerate() {
            let p = LatLng { lat: a.lat + (b.lat - a.lat) * f, lng: a.lng + (b.lng - a.lng) * f };
            transitions += fences.observe(&c, step * 5, p, 8.0).len();
        }
    }
    let fence_us = t.elapsed().as_secs_f64() * 1e6 / (steps as f64 * couriers.len() as f64);
    let model = SpeedModel::learn(&[]);
    let mut calculator = router.calculator();
    let refreshes = 500;
    let t = Instant::now();
    for _ in 0..refreshes {
        let mut at = points.next(network);
        let mut legs = Vec::new();
        for _ in 0..5 {
            let stop = points.next(network);
            let seconds = router.route(&mut calculator, at, stop).map_or(0.0, |r| r.seconds);
            let factor = model.factor(8, &eta::zone_of(stop));
            legs.push(Leg { seconds: seconds * factor.median, low: factor.low, high: factor.high });
            at = stop;
        }
        let _ = eta::estimates(Utc::now(), &legs, &vec![300.0; legs.len()]);
    }
    let eta_us = t.elapsed().as_secs_f64() * 1e6 / refreshes as f64;
    // As the server does it: the legs between stops are routed once and remembered, so a
    // refresh routes only from the courier to the next stop.
    let t = Instant::now();
    for _ in 0..refreshes {
        let (at, stop) = (points.next(network), points.next(network));
        let first = router.route(&mut calculator, at, stop).map_or(0.0, |r| r.seconds);
        let factor = model.factor(8, &eta::zone_of(stop));
        let mut legs = vec![Leg { seconds: first * factor.median, low: factor.low, high: factor.high }];
        legs.extend((0..4).map(|i| Leg { seconds: 600.0 + f64::from(i), low: factor.low, high: factor.high }));
        let _ = eta::estimates(Utc::now(), &legs, &vec![300.0; legs.len()]);
    }
    let cached_us = t.elapsed().as_secs_f64() * 1e6 / refreshes as f64;
    // An ETA refresh runs at most once per push interval (5 s) per courier; fixes come about once a second.
    let per_position = fence_us + cached_us / 5.0;
    report.push_str("\n### Geofences and ETAs per position\n\n");
    report.push_str(&format!(
        "1 000 customer fences (80 m circles) in the R-tree, 500 couriers crossing the city, {steps} fixes each \
         ({transitions} transitions). An ETA refresh routes five stops on the road graph and builds their windows; \
         it runs at most once per push interval (5 s) per courier, i.e. once per five fixes at one fix a second. \
         Compared with the cost of storing one position on SQLite (previous table).\n\n"
    ));
    report.push_str("| work | µs |\n|---|---|\n");
    for (label, us) in [
        ("fence check, per fix".to_owned(), fence_us),
        ("ETA refresh, five stops, every leg routed".to_owned(), eta_us),
        ("ETA refresh, five stops, legs between stops remembered (the server)".to_owned(), cached_us),
        ("both, per position".to_owned(), per_position),
        ("storing a position, raw insert loop".to_owned(), insert_us),
        ("storing a position through the API, batched".to_owned(), api_us),
    ] {
        let line = format!("| {label} | {us:.1} |\n");
        eprint!("{line}");
        report.push_str(&line);
    }
    report.push_str(&format!(
        "\nFences and ETAs cost {:.0} % of a raw insert of the position, {:.0} % of storing it through the batched API.\n",
        100.0 * per_position / insert_us,
        100.0 * per_position / api_us
    ));
}

/// Simulated days: the world's real travel time is the free-flow road time ×
/// rush hours that differ by district × per-trip noise. The model learns from
/// `training_days`; both estimators are scored on a held-out day.
fn eta_accuracy(settings: &Settings, router: &Router, report: &mut String) {
    let network = router.network();
    let mut rng = Points(2026);
    let centre = network.nodes[network.nodes.len() / 2];
    let congestion = |hour: u8, p: LatLng| {
        let central = (1.0 - (distance_m(p, centre) / 15_000.0).min(1.0)).max(0.0);
        let rush = match hour {
            7..=9 => 0.9,
            17..=19 => 0.7,
            11..=13 => 0.3,
            _ => 0.05,
        };
        1.15 + rush * (0.4 + central)
    };
    let mut calculator = router.calculator();
    let mut day = |legs: usize, rng: &mut Points| {
        let mut out = Vec::with_capacity(legs);
        while out.len() < legs {
            let (a, b) = (rng.next(network), rng.next(network));
            let Some(route) = router.route(&mut calculator, a, b) else { continue };
            if route.seconds < 120.0 {
                continue;
            }
            let hour = 6 + (rng.unit() * 14.0) as u8;
            // Log-normal-ish noise: most trips close to typical, some much slower.
            let noise = (1.0 + 0.25 * (rng.unit() - 0.5)) * if rng.unit() < 0.08 { 1.5 } else { 1.0 };
            let actual = route.seconds * congestion(hour, b) * noise;
            out.push((a, b, hour, route.seconds, actual));
        }
        out
    };
    let mut training = Vec::new();
    for _ in 0..settings.training_days {
        training.extend(day(settings.legs_per_day, &mut rng));
    }
    let held_out = day(settings.legs_per_day, &mut rng);
    let observations: Vec<Observation> = training
        .iter()
        .map(|(_, b, hour, free, actual)| Observation {
            hour: *hour,
            zone: eta::zone_of(*b),
            free_flow_s: *free,
            actual_s: *actual,
        })
        .collect();
    let model = SpeedModel::learn(&observations);
    // The baseline's one parameter, fitted on the same history: metres per second, door to door, straight line.
    let (metres, seconds) =
        training.iter().fold((0.0, 0.0), |(m, s), (a, b, _, _, actual)| (m + distance_m(*a, *b), s + actual));
    let average_speed = metres / seconds;
    let (mut ours, mut baseline, mut fallback) = (Vec::new(), Vec::new(), Vec::new());
    let fixed = SpeedModel::learn(&[]);
    for (a, b, hour, free, actual) in &held_out {
        ours.push((free * model.factor(*hour, &eta::zone_of(*b)).median - actual).abs());
        baseline.push((distance_m(*a, *b) / average_speed - actual).abs());
        fallback.push((free * fixed.factor(*hour, &eta::zone_of(*b)).median - actual).abs());
    }
    let mae = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let p90 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * 0.9).round() as usize]
    };
    report.push_str("\n### ETA error on a held-out simulated day\n\n");
    report.push_str(&format!(
        "The simulated world: a leg's real time is its free-flow road time × congestion that depends on the hour \
         (morning and evening rush, lunch) and on how central the destination is × per-trip noise (±12 %, and 8 % of \
         trips half as slow again). {} training days of {} legs teach the speed model (`operations::eta`: factor by \
         hour and 2 km zone, falling back to the hour, then everything); the baseline is straight-line distance ÷ the \
         average door-to-door speed of the same history. Scored on {} legs of a held-out day. Service time at stops \
         is left out of both.\n\n",
        settings.training_days,
        settings.legs_per_day,
        held_out.len()
    ));
    report.push_str("| estimator | MAE s | p90 s |\n|---|---|---|\n");
    let ours_mae = mae(&ours);
    let base_mae = mae(&baseline);
    for (label, mut v) in [
        ("road time × learned factor (ours)", ours),
        ("road time × fixed factor (no history)", fallback),
        ("straight line ÷ average speed (baseline)", baseline),
    ] {
        let line = format!("| {label} | {:.0} | {:.0} |\n", mae(&v), p90(&mut v));
        eprint!("{line}");
        report.push_str(&line);
    }
    report.push_str(&format!("\nOur MAE is {:.0} % lower than the baseline's.\n", 100.0 * (1.0 - ours_mae / base_mae)));
}

#[tokio::main]
async fn main() -> Result<()> {
    let settings = Settings::from_args();
    let mut report = String::new();
    report.push_str(&format!("Machine: {}. Release build.\n\n", xianlu_tests::machine()));
    let storage = ingest(&settings, &mut report).await?;
    eprintln!("city: size {}", settings.city_size);
    let t = Instant::now();
    let router = Arc::new(Router::new(city(CitySpec::new(42, settings.city_size)))?);
    let prepared = t.elapsed().as_secs_f64();
    eprintln!("prepared in {prepared:.1} s");
    routing(&settings, &router, &mut report);
    report.push_str(&format!("\nPreparing both hierarchies took {prepared:.1} s.\n"));
    fences_and_etas(&router, storage, &mut report);
    eta_accuracy(&settings, &router, &mut report);
    println!("{report}");
    Ok(())
}
