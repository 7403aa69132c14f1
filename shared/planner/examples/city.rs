//! A city-scale plan on the generated city: couriers from four warehouses,
//! deliveries with two-hour windows, a fifth of them chilled.
//! `cargo run --release -p xianlu-planner --example city -- [COURIERS] [ORDERS] [SECONDS]`

use std::time::Instant;

use xianlu_planner::{Job, Matrix, Problem, Settings, Task, Vehicle, check, solve};
use xianlu_roads::Router;
use xianlu_roads::generate::{CitySpec, city};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let couriers: usize = args.get(1).map_or(Ok(200), |s| s.parse())?;
    let orders: usize = args.get(2).map_or(Ok(2000), |s| s.parse())?;
    let seconds: f64 = args.get(3).map_or(Ok(10.0), |s| s.parse())?;
    let t = Instant::now();
    let router = Router::new(city(CitySpec::new(42, 150)))?;
    eprintln!("city prepared in {:.1} s", t.elapsed().as_secs_f64());
    let nodes = &router.network().nodes;
    let mut seed = 11u64;
    let mut next = move |m: usize| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as usize % m
    };
    let warehouses: Vec<_> = (0..4).map(|i| nodes[(nodes.len() / 5) * (i + 1)]).collect();
    let stops: Vec<_> = (0..orders).map(|_| nodes[next(nodes.len())]).collect();
    let points: Vec<_> = warehouses.iter().chain(&stops).copied().collect();
    let t = Instant::now();
    let seconds_matrix = router.matrix(&points, &points);
    let n = points.len();
    let mut flat = vec![0.0; n * n];
    for (i, row) in seconds_matrix.iter().enumerate() {
        for (j, cell) in row.iter().enumerate() {
            flat[i * n + j] = cell.unwrap_or(1e7);
        }
    }
    eprintln!("{n} × {n} matrix in {:.2} s", t.elapsed().as_secs_f64());
    let matrix = Matrix { size: n, metres: flat.iter().map(|s| s * 8.0).collect(), seconds: flat };
    let hour = 3600.0;
    let vehicles = (0..couriers)
        .map(|i| Vehicle {
            id: format!("c{i}"),
            start: i % 4,
            end: Some(i % 4),
            shift: (7.0 * hour, 17.0 * hour),
            capacity: vec![600_000],
            skills: if i % 2 == 0 { vec!["refrigerated".into()] } else { Vec::new() },
            committed: Vec::new(),
            planned: Vec::new(),
        })
        .collect();
    let jobs = (0..orders)
        .map(|k| {
            let open = (8 + next(5)) as f64 * hour;
            Job {
                id: format!("o{k}"),
                task: Task::Delivery { location: 4 + k },
                demand: vec![5_000 + next(45_000) as i64],
                windows: vec![(open, open + 2.0 * hour)],
                service: 300.0,
                pickup_service: 0.0,
                skills: if k % 5 == 0 { vec!["refrigerated".into()] } else { Vec::new() },
                max_exposure: (k % 5 == 0).then_some(7.0 * hour),
                pinned_to: None,
            }
        })
        .collect();
    let problem = Problem { matrix, vehicles, jobs };
    let t = Instant::now();
    let plan = solve(&problem, &Settings { seconds, ..Default::default() })?;
    let took = t.elapsed().as_secs_f64();
    let violations = check(&problem, &plan);
    println!(
        "{couriers} couriers, {orders} orders: planned in {took:.1} s; {} routes used, {} unassigned, {:.0} km, {} violations",
        plan.vehicles_used(),
        plan.unassigned.len(),
        plan.metres() / 1000.0,
        violations.len()
    );
    // A breakdown: the busiest courier's van stops at its third stop. Its
    // other orders are picked up there by others (their cold limit becomes a
    // deadline); everyone else keeps the stop they are driving to first and
    // the order of the rest, so only what must change changes.
    let Some(broken) = plan.routes.iter().filter(|r| r.stops.len() > 3).max_by_key(|r| r.stops.len()) else {
        return Ok(());
    };
    let site = broken.stops[2].location;
    let stranded: Vec<String> = broken.stops[3..].iter().map(|s| s.job.clone()).collect();
    let mut replan = problem.clone();
    replan.vehicles.retain(|v| v.id != broken.vehicle);
    for route in plan.routes.iter().filter(|r| r.vehicle != broken.vehicle && !r.stops.is_empty()) {
        if let Some(v) = replan.vehicles.iter_mut().find(|v| v.id == route.vehicle) {
            v.committed = vec![route.stops[0].job.clone()];
            v.planned = route.stops[1..].iter().map(|s| s.job.clone()).collect();
        }
    }
    let delivered: Vec<String> = broken.stops[..3].iter().map(|s| s.job.clone()).collect();
    replan.jobs.retain(|j| !delivered.contains(&j.id));
    for job in replan.jobs.iter_mut().filter(|j| stranded.contains(&j.id)) {
        if let Task::Delivery { location } = job.task {
            job.task = Task::PickupDelivery { pickup: site, delivery: location };
            job.pickup_service = 600.0;
            if let Some(limit) = job.max_exposure.take() {
                let deadline = 7.0 * hour + limit;
                for w in &mut job.windows {
                    w.1 = w.1.min(deadline);
                }
            }
        }
    }
    let t = Instant::now();
    let again = solve(&replan, &Settings { seconds: 1.0, ..Default::default() })?;
    let took = t.elapsed().as_secs_f64();
    let violations = check(&replan, &again);
    let moved = again
        .routes
        .iter()
        .filter(|r| r.stops.iter().any(|s| stranded.contains(&s.job)))
        .map(|r| r.vehicle.as_str())
        .collect::<std::collections::BTreeSet<_>>();
    println!(
        "breakdown of {} with {} orders aboard: re-planned in {took:.2} s onto {} couriers; {} unassigned, {} violations",
        broken.vehicle,
        stranded.len(),
        moved.len(),
        again.unassigned.len(),
        violations.len()
    );
    for v in violations.iter().take(3) {
        println!("  {v}");
    }
    Ok(())
}
