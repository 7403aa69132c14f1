//! An independent feasibility checker: it replays every route from the
//! problem alone (travel times from the matrix, waiting for windows to open)
//! and reports every rule a plan breaks.

use std::collections::{HashMap, HashSet};

use crate::model::{Job, Plan, Problem, StopKind, Task};

/// Slack for floating-point travel sums.
const EPSILON: f64 = 1e-6;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Violation {
    #[error("route of unknown vehicle {0}")]
    UnknownVehicle(String),
    #[error("vehicle {0} has more than one route")]
    VehicleTwice(String),
    #[error("stop of unknown job {0}")]
    UnknownJob(String),
    #[error("job {0} is planned twice, or neither planned nor reported unassigned")]
    NotOnce(String),
    #[error("job {job}: stop at location {location}, but the job is elsewhere")]
    WrongLocation { job: String, location: usize },
    #[error("job {job}: service can start only at {start:.1}, after every window")]
    TimeWindow { job: String, start: f64 },
    #[error("vehicle {vehicle}: load {load} exceeds capacity {capacity} in dimension {dimension}")]
    Capacity { vehicle: String, dimension: usize, load: i64, capacity: i64 },
    #[error("job {job} needs {skill}, which vehicle {vehicle} lacks")]
    Skill { job: String, vehicle: String, skill: String },
    #[error("job {job} is pinned to {pinned}, planned on {vehicle}")]
    Pinned { job: String, vehicle: String, pinned: String },
    #[error("job {0}: delivered before it was picked up, or on another route")]
    PickupOrder(String),
    #[error("vehicle {vehicle} is back at {arrival:.1}, after its shift ends at {end:.1}")]
    ShiftEnd { vehicle: String, arrival: f64, end: f64 },
    #[error("vehicle {vehicle} leaves at {departure:.1}, before its shift starts at {start:.1}")]
    ShiftStart { vehicle: String, departure: f64, start: f64 },
    #[error("job {job}: {exposure:.0} s out of the cold, limit {limit:.0} s")]
    Exposure { job: String, exposure: f64, limit: f64 },
    #[error("vehicle {vehicle}: reported {reported:.2} m, the matrix says {actual:.2} m")]
    Distance { vehicle: String, reported: f64, actual: f64 },
}

/// Every violation of `plan` against `problem` (empty: feasible).
pub fn check(problem: &Problem, plan: &Plan) -> Vec<Violation> {
    let mut violations = Vec::new();
    let jobs: HashMap<&str, &Job> = problem.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let vehicles: HashMap<&str, _> = problem.vehicles.iter().map(|v| (v.id.as_str(), v)).collect();
    let mut seen_vehicles = HashSet::new();
    let mut planned: HashMap<&str, usize> = HashMap::new();
    let m = &problem.matrix;
    for route in &plan.routes {
        let Some(vehicle) = vehicles.get(route.vehicle.as_str()) else {
            violations.push(Violation::UnknownVehicle(route.vehicle.clone()));
            continue;
        };
        if !seen_vehicles.insert(route.vehicle.as_str()) {
            violations.push(Violation::VehicleTwice(route.vehicle.clone()));
        }
        if route.stops.is_empty() {
            continue;
        }
        if route.departure + EPSILON < vehicle.shift.0 {
            violations.push(Violation::ShiftStart {
                vehicle: vehicle.id.clone(),
                departure: route.departure,
                start: vehicle.shift.0,
            });
        }
        // Goods for plain deliveries are aboard from the start.
        let dims = vehicle.capacity.len();
        let mut load = vec![0i64; dims];
        for stop in &route.stops {
            if let Some(job) = jobs.get(stop.job.as_str())
                && matches!(job.task, Task::Delivery { .. })
                && stop.kind == StopKind::Delivery
            {
                for (d, l) in load.iter_mut().enumerate() {
                    *l += job.demand.get(d).copied().unwrap_or(0);
                }
            }
        }
        let over = |load: &[i64], violations: &mut Vec<Violation>| {
            for (d, (&l, &c)) in load.iter().zip(&vehicle.capacity).enumerate() {
                if l > c {
                    violations.push(Violation::Capacity {
                        vehicle: vehicle.id.clone(),
                        dimension: d,
                        load: l,
                        capacity: c,
                    });
                }
            }
        };
        over(&load, &mut violations);
        let mut t = route.departure.max(vehicle.shift.0);
        let departure = t;
        let mut at = vehicle.start;
        let mut metres = 0.0;
        let mut picked_up: HashMap<&str, f64> = HashMap::new();
        for stop in &route.stops {
            let Some(job) = jobs.get(stop.job.as_str()) else {
                violations.push(Violation::UnknownJob(stop.job.clone()));
                continue;
            };
            let expected = match (&job.task, stop.kind) {
                (Task::Delivery { location }, StopKind::Delivery) => Some(*location),
                (Task::PickupDelivery { pickup, .. }, StopKind::Pickup) => Some(*pickup),
                (Task::PickupDelivery { delivery, .. }, StopKind::Delivery) => Some(*delivery),
                (Task::Delivery { .. }, StopKind::Pickup) => None,
            };
            if expected != Some(stop.location) {
                violations.push(Violation::WrongLocation { job: job.id.clone(), location: stop.location });
                continue;
            }
            if stop.kind == StopKind::Delivery {
                *planned.entry(job.id.as_str()).or_default() += 1;
            }
            for skill in &job.skills {
                if !vehicle.skills.contains(skill) {
                    violations.push(Violation::Skill {
                        job: job.id.clone(),
                        vehicle: vehicle.id.clone(),
                        skill: skill.clone(),
                    });
                }
            }
            if let Some(pinned) = &job.pinned_to
                && pinned != &vehicle.id
            {
                violations.push(Violation::Pinned {
                    job: job.id.clone(),
                    vehicle: vehicle.id.clone(),
                    pinned: pinned.clone(),
                });
            }
            metres += m.metres(at, stop.location);
            let arrival = t + m.seconds(at, stop.location);
            at = stop.location;
            let (start, service) = match stop.kind {
                // A pickup waits for nothing: the goods are there.
                StopKind::Pickup => (arrival, job.pickup_service),
                StopKind::Delivery => {
                    let open = job
                        .windows
                        .iter()
                        .filter(|(_, end)| arrival <= end + EPSILON)
                        .map(|(begin, _)| arrival.max(*begin))
                        .fold(f64::INFINITY, f64::min);
                    if job.windows.is_empty() {
                        (arrival, job.service)
                    } else if open.is_finite() {
                        (open, job.service)
                    } else {
                        violations.push(Violation::TimeWindow { job: job.id.clone(), start: arrival });
                        (arrival, job.service)
                    }
                }
            };
            t = start + service;
            match (stop.kind, &job.task) {
                (StopKind::Pickup, _) => {
                    picked_up.insert(job.id.as_str(), t);
                    for (d, l) in load.iter_mut().enumerate() {
                        *l += job.demand.get(d).copied().unwrap_or(0);
                    }
                    over(&load, &mut violations);
                }
                (StopKind::Delivery, task) => {
                    let cold_since = match task {
                        Task::Delivery { .. } => Some(departure),
                        Task::PickupDelivery { .. } => picked_up.get(job.id.as_str()).copied(),
                    };
                    match cold_since {
                        None => violations.push(Violation::PickupOrder(job.id.clone())),
                        Some(since) => {
                            if let Some(limit) = job.max_exposure
                                && start - since > limit + EPSILON
                            {
                                violations.push(Violation::Exposure {
                                    job: job.id.clone(),
                                    exposure: start - since,
                                    limit,
                                });
                            }
                        }
                    }
                    for (d, l) in load.iter_mut().enumerate() {
                        *l -= job.demand.get(d).copied().unwrap_or(0);
                    }
                }
            }
        }
        let back = match vehicle.end {
            Some(end) => {
                metres += m.metres(at, end);
                t + m.seconds(at, end)
            }
            None => t,
        };
        if back > vehicle.shift.1 + EPSILON {
            violations.push(Violation::ShiftEnd { vehicle: vehicle.id.clone(), arrival: back, end: vehicle.shift.1 });
        }
        if (metres - route.metres).abs() > 1e-3 * metres.max(1.0) {
            violations.push(Violation::Distance {
                vehicle: vehicle.id.clone(),
                reported: route.metres,
                actual: metres,
            });
        }
    }
    for u in &plan.unassigned {
        *planned.entry(u.job.as_str()).or_default() += 1;
    }
    for job in &problem.jobs {
        if planned.get(job.id.as_str()).copied().unwrap_or(0) != 1 {
            violations.push(Violation::NotOnce(job.id.clone()));
        }
    }
    violations
}
