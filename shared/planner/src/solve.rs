//! Solving with `vrp-core`: the planner's model becomes vrp-core jobs,
//! vehicles and a goal; the best solution found within the time budget comes
//! back as a [`Plan`] (times and distances recomputed from our own matrix).
//!
//! Pinning an order to a courier is a skill only that courier's vehicle
//! has, so the solver's own skills constraint keeps it there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use vrp_core::construction::features::{
    JobSkills, JobSkillsDimension, VehicleSkillsDimension, create_locked_jobs_feature, create_minimize_tours_feature,
    create_skills_feature,
};
use vrp_core::construction::heuristics::UnassignmentInfo;
use vrp_core::models::common::{MultiDimLoad, TimeWindow};
use vrp_core::models::problem::Actor;
use vrp_core::models::problem::{JobIdDimension, VehicleIdDimension};
use vrp_core::models::{Lock, LockDetail, LockOrder, LockPosition};
use vrp_core::prelude::*;
use vrp_core::rosomaxa::evolution::TelemetryMode;
use vrp_core::utils::{Parallelism, TimeQuota};

use crate::cold::{ColdExposure, ColdLimitDimension};
use crate::model::{Plan, Problem as PlanProblem, Route, Stop, StopKind, Task, Unassigned};

const TIME_CODE: ViolationCode = ViolationCode(1);
const CAPACITY_CODE: ViolationCode = ViolationCode(2);
const SKILL_CODE: ViolationCode = ViolationCode(3);
const COLD_CODE: ViolationCode = ViolationCode(4);
const LOCK_CODE: ViolationCode = ViolationCode(5);
const PIN_PREFIX: &str = "vehicle:";
const PICKUP_SUFFIX: &str = "#pickup";

/// What the plan minimises first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Unassigned jobs, then distance (the fleet is an upper bound).
    Distance,
    /// Unassigned jobs, then vehicles used, then distance.
    VehiclesFirst,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub objective: Objective,
    /// Wall-clock budget, preparing the problem included.
    pub seconds: f64,
    /// Stop after this many generations even if time is left.
    pub max_generations: Option<usize>,
    /// The same search for the same input (the solver's fixed seed).
    pub repeatable: bool,
    /// Shapes the search's population (not the thread count).
    pub search_width: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            objective: Objective::Distance,
            seconds: 5.0,
            max_generations: None,
            repeatable: false,
            search_width: 4,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the solver refused the problem: {0}")]
pub struct SolveError(String);

fn err(e: impl std::fmt::Display) -> SolveError {
    SolveError(e.to_string())
}

fn load(demand: &[i64]) -> Result<MultiDimLoad, SolveError> {
    let values: Vec<i32> = demand.iter().map(|d| i32::try_from(*d).map_err(err)).collect::<Result<_, _>>()?;
    Ok(MultiDimLoad::new(values))
}

/// Plans `problem` within the settings' budget.
pub fn solve(problem: &PlanProblem, settings: &Settings) -> Result<Plan, SolveError> {
    // The budget covers building the problem (vrp-core indexes job neighbourhoods) too.
    let started = std::time::Instant::now();
    if problem.vehicles.is_empty() {
        // Nobody to give the work to.
        let unassigned =
            problem.jobs.iter().map(|j| Unassigned { job: j.id.clone(), reason: "no_courier".to_owned() }).collect();
        return Ok(Plan { routes: Vec::new(), unassigned });
    }
    let n = problem.matrix.size;
    // An open route ends at its last stop, which vrp-core cannot bound in
    // time; so open routes end at a place no time or distance away from
    // anywhere (one more row and column of zeros), by their shift's end.
    let sink = problem.vehicles.iter().any(|v| v.end.is_none()).then_some(n);
    let transport: Arc<dyn TransportCost> = Arc::new(
        match sink {
            None => SimpleTransportCost::new(problem.matrix.seconds.clone(), problem.matrix.metres.clone()),
            Some(_) => {
                SimpleTransportCost::new(with_sink(&problem.matrix.seconds, n), with_sink(&problem.matrix.metres, n))
            }
        }
        .map_err(err)?,
    );
    let zero = MultiDimLoad::new(vec![0; problem.vehicles.first().map_or(1, |v| v.capacity.len().max(1))]);
    let mut jobs = Vec::with_capacity(problem.jobs.len());
    // Locks name the very `Job` values the problem holds (they compare by identity).
    let mut by_id: HashMap<&str, Job> = HashMap::new();
    for job in &problem.jobs {
        let mut skills: Vec<String> = job.skills.clone();
        if let Some(vehicle) = &job.pinned_to {
            skills.push(format!("{PIN_PREFIX}{vehicle}"));
        }
        let windows: Vec<TimeWindow> = job.windows.iter().map(|(a, b)| TimeWindow::new(*a, *b)).collect();
        let windows = if windows.is_empty() { vec![TimeWindow::max()] } else { windows };
        let demand = load(&job.demand)?;
        let with_skills = |d: &mut Dimensions| {
            if !skills.is_empty() {
                d.set_job_skills(JobSkills::new(Some(skills.clone()), None, None));
            }
        };
        let exposure = job.max_exposure;
        let built = match &job.task {
            Task::Delivery { location } => {
                check_location(*location, n)?;
                SingleBuilder::default()
                    .id(&job.id)
                    .demand(Demand { pickup: (zero, zero), delivery: (demand, zero) })
                    .location(*location)
                    .and_then(|b| b.duration(job.service))
                    .and_then(|b| b.times(windows))
                    .map(|b| b.dimension(with_skills))
                    .map(|b| {
                        b.dimension(|d| {
                            if let Some(limit) = exposure {
                                d.set_cold_limit(limit);
                            }
                        })
                    })
                    .and_then(SingleBuilder::build_as_job)
                    .map_err(err)?
            }
            Task::PickupDelivery { pickup, delivery } => {
                if exposure.is_some() {
                    return Err(SolveError(format!(
                        "{}: goods already out of the cold room carry their limit as a time window, not max_exposure",
                        job.id
                    )));
                }
                check_location(*pickup, n)?;
                check_location(*delivery, n)?;
                let pick = SingleBuilder::default()
                    .id(&format!("{}{PICKUP_SUFFIX}", job.id))
                    .demand(Demand { pickup: (zero, demand), delivery: (zero, zero) })
                    .location(*pickup)
                    .and_then(|b| b.duration(job.pickup_service))
                    .and_then(SingleBuilder::build)
                    .map_err(err)?;
                let drop = SingleBuilder::default()
                    .id(&job.id)
                    .demand(Demand { pickup: (zero, zero), delivery: (zero, demand) })
                    .location(*delivery)
                    .and_then(|b| b.duration(job.service))
                    .and_then(|b| b.times(windows))
                    .and_then(SingleBuilder::build)
                    .map_err(err)?;
                MultiBuilder::default()
                    .id(&job.id)
                    .add_job(pick)
                    .add_job(drop)
                    .dimension(with_skills)
                    .build_as_job()
                    .map_err(err)?
            }
        };
        by_id.insert(job.id.as_str(), built.clone());
        jobs.push(built);
    }
    let mut vehicles = Vec::with_capacity(problem.vehicles.len());
    for v in &problem.vehicles {
        check_location(v.start, n)?;
        let mut detail = VehicleDetailBuilder::default().set_start_location(v.start).set_start_time(v.shift.0);
        detail = match v.end {
            Some(end) => {
                check_location(end, n)?;
                detail.set_end_location(end).set_end_time(v.shift.1)
            }
            None => match sink {
                Some(sink) => detail.set_end_location(sink).set_end_time(v.shift.1),
                None => detail,
            },
        };
        let mut skills: HashSet<String> = v.skills.iter().cloned().collect();
        skills.insert(format!("{PIN_PREFIX}{}", v.id));
        let vehicle = VehicleBuilder::default()
            .id(&v.id)
            .add_detail(detail.build().map_err(err)?)
            .capacity(load(&v.capacity)?)
            .dimension(|d| {
                d.set_vehicle_skills(skills);
            })
            .build()
            .map_err(err)?;
        vehicles.push(vehicle);
    }
    let mut features = vec![MinimizeUnassignedBuilder::new("min-unassigned").build().map_err(err)?];
    if settings.objective == Objective::VehiclesFirst {
        features.push(create_minimize_tours_feature("min-tours").map_err(err)?);
    }
    features.push(
        TransportFeatureBuilder::new("min-distance")
            .set_transport_cost(transport.clone())
            .set_time_constrained(true)
            .set_violation_code(TIME_CODE)
            .build_minimize_distance()
            .map_err(err)?,
    );
    features.push(
        CapacityFeatureBuilder::<MultiDimLoad>::new("capacity")
            .set_violation_code(CAPACITY_CODE)
            .build()
            .map_err(err)?,
    );
    features.push(create_skills_feature("skills", SKILL_CODE).map_err(err)?);
    // After the transport feature, whose state refreshes the schedule it reads.
    if problem.jobs.iter().any(|j| j.max_exposure.is_some()) {
        let cold = || ColdExposure { code: COLD_CODE, transport: transport.clone() };
        features.push(
            FeatureBuilder::default()
                .with_name("cold-chain")
                .with_constraint(cold())
                .with_state(cold())
                .build()
                .map_err(err)?,
        );
    }
    let goal = GoalContextBuilder::with_features(&features).map_err(err)?.build().map_err(err)?;
    let draft = ProblemBuilder::default()
        .add_jobs(jobs.into_iter())
        .add_vehicles(vehicles.into_iter())
        .with_goal(goal)
        .with_transport_cost(transport)
        // The server's log says what a plan did; vrp-core would print to stdout.
        .with_logger(Arc::new(|_: &str| {}))
        .build()
        .map_err(err)?;
    let locks = committed_locks(problem, &by_id)?;
    let core = if locks.is_empty() {
        Arc::new(draft)
    } else {
        // The lock feature needs the built fleet: the goal is built again with it.
        features.push(create_locked_jobs_feature("committed", draft.fleet.as_ref(), &locks, LOCK_CODE).map_err(err)?);
        let goal = GoalContextBuilder::with_features(&features).map_err(err)?.build().map_err(err)?;
        Arc::new(vrp_core::models::Problem { goal: Arc::new(goal), locks, ..draft })
    };
    let random: Arc<dyn Random> = if settings.repeatable {
        Arc::new(DefaultRandom::new_repeatable())
    } else {
        Arc::new(DefaultRandom::default())
    };
    let environment = Arc::new(Environment::new(
        random,
        Some(Arc::new(TimeQuota::new((settings.seconds - started.elapsed().as_secs_f64()).max(0.05)))),
        Parallelism::new_with_cpus(settings.search_width.max(1)),
        Arc::new(|_: &str| {}),
        false,
    ));
    let config = VrpConfigBuilder::new(core.clone())
        .set_environment(environment)
        .set_telemetry_mode(if std::env::var_os("XIANLU_PLANNER_TRACE").is_some() {
            // For tuning: the search's progress on stderr.
            TelemetryMode::OnlyLogging {
                logger: Arc::new(|m: &str| eprintln!("{m}")),
                log_best: 500,
                log_population: 5000,
            }
        } else {
            TelemetryMode::None
        })
        .prebuild()
        .map_err(err)?
        .with_max_time(Some(settings.seconds.ceil() as usize))
        .with_max_generations(settings.max_generations)
        .build()
        .map_err(err)?;
    let solution = Solver::new(core, config).solve().map_err(err)?;
    Ok(to_plan(problem, &solution))
}

/// Each vehicle's stops under way (first, in order, nothing between) and the
/// rest of its current route (in order, others may come between).
fn committed_locks(problem: &PlanProblem, jobs: &HashMap<&str, Job>) -> Result<Vec<Arc<Lock>>, SolveError> {
    let mut locks = Vec::new();
    let mut held_anywhere = std::collections::HashSet::new();
    for vehicle in problem.vehicles.iter().filter(|v| !v.committed.is_empty() || !v.planned.is_empty()) {
        let mut details = Vec::new();
        for (ids, order, position) in [
            (&vehicle.committed, LockOrder::Strict, LockPosition::Departure),
            (&vehicle.planned, LockOrder::Sequence, LockPosition::Any),
        ] {
            if ids.is_empty() {
                continue;
            }
            let mut held = Vec::with_capacity(ids.len());
            for id in ids {
                if !held_anywhere.insert(id.as_str()) {
                    return Err(SolveError(format!("{id}: kept on more than one route")));
                }
                match problem.jobs.iter().find(|j| &j.id == id) {
                    Some(job) if matches!(job.task, Task::Delivery { .. }) && job.windows.len() <= 1 => {}
                    Some(_) => {
                        return Err(SolveError(format!(
                            "{id}: a kept stop is a delivery with at most one window (pickups are planned afresh)"
                        )));
                    }
                    None => return Err(SolveError(format!("{id}: kept on {} but not in the problem", vehicle.id))),
                }
                held.push(jobs.get(id.as_str()).cloned().ok_or_else(|| SolveError(format!("{id}: not built")))?);
            }
            details.push(LockDetail::new(order, position, held));
        }
        let owner = vehicle.id.clone();
        locks.push(Arc::new(Lock::new(
            Arc::new(move |actor: &Actor| actor.vehicle.dimens.get_vehicle_id().is_some_and(|id| *id == owner)),
            details,
            false,
        )));
    }
    Ok(locks)
}

/// How far a vehicle got with a job before the constraint with this code refused it.
fn progress(code: ViolationCode) -> u8 {
    match code {
        SKILL_CODE | LOCK_CODE => 0,
        CAPACITY_CODE => 1,
        _ => 2,
    }
}

/// Why no vehicle could take a job the search gave no reason for: the
/// furthest any vehicle gets through skills, capacity and time alone.
fn explain(problem: &PlanProblem, job: &crate::model::Job) -> &'static str {
    let m = &problem.matrix;
    let (first, last) = match job.task {
        Task::Delivery { location } => (location, location),
        Task::PickupDelivery { pickup, delivery } => (pickup, delivery),
    };
    let reasons = problem.vehicles.iter().map(|v| {
        let offered: HashSet<&str> = v.skills.iter().map(String::as_str).collect();
        if job.skills.iter().any(|s| !offered.contains(s.as_str()))
            || job.pinned_to.as_ref().is_some_and(|p| *p != v.id)
        {
            return 0;
        }
        if job.demand.iter().zip(v.capacity.iter().chain(std::iter::repeat(&0))).any(|(d, c)| d > c) {
            return 1;
        }
        // Straight there and back within the job's windows and the shift.
        let reach = v.shift.0 + m.seconds(v.start, first);
        let deliver = reach + job.pickup_service + m.seconds(first, last);
        let start = if job.windows.is_empty() {
            Some(deliver)
        } else {
            job.windows.iter().filter(|(_, b)| deliver <= *b).map(|(a, _)| deliver.max(*a)).reduce(f64::min)
        };
        let back = v.end.map_or(0.0, |e| m.seconds(last, e));
        match start {
            Some(start) if start + job.service + back <= v.shift.1 => 3,
            _ => 2,
        }
    });
    match reasons.max() {
        Some(0) => {
            if job.pinned_to.is_some() {
                "pinned_elsewhere"
            } else {
                "skill"
            }
        }
        Some(1) => "capacity",
        Some(2) => "time_window",
        _ => "no_feasible_route",
    }
}

/// An `n`×`n` matrix with one more place, at zero from every other.
fn with_sink(matrix: &[f64], n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity((n + 1) * (n + 1));
    for row in matrix.chunks(n.max(1)).take(n) {
        out.extend_from_slice(row);
        out.push(0.0);
    }
    out.resize((n + 1) * (n + 1), 0.0);
    out
}

fn check_location(location: usize, size: usize) -> Result<(), SolveError> {
    if location < size {
        Ok(())
    } else {
        Err(SolveError(format!("location {location} is outside the {size}-point matrix")))
    }
}

fn to_plan(problem: &PlanProblem, solution: &Solution) -> Plan {
    let m = &problem.matrix;
    let vehicles: HashMap<&str, _> = problem.vehicles.iter().map(|v| (v.id.as_str(), v)).collect();
    let mut routes = Vec::new();
    for route in &solution.routes {
        let vehicle_id = route.actor.vehicle.dimens.get_vehicle_id().cloned().unwrap_or_default();
        let Some(vehicle) = vehicles.get(vehicle_id.as_str()) else { continue };
        let departure = route.tour.start().map_or(vehicle.shift.0, |a| a.schedule.departure);
        let mut stops = Vec::new();
        let mut at = vehicle.start;
        let mut metres = 0.0;
        for activity in route.tour.all_activities() {
            let Some(single) = activity.job.as_ref() else { continue };
            let id = single.dimens.get_job_id().cloned().unwrap_or_default();
            let (job, kind) = match id.strip_suffix(PICKUP_SUFFIX) {
                Some(job) => (job.to_owned(), StopKind::Pickup),
                None => (id, StopKind::Delivery),
            };
            metres += m.metres(at, activity.place.location);
            at = activity.place.location;
            stops.push(Stop {
                job,
                kind,
                location: activity.place.location,
                arrival: activity.schedule.arrival,
                start: activity.schedule.arrival.max(activity.place.time.start),
                departure: activity.schedule.departure,
            });
        }
        let arrival = match vehicle.end {
            Some(end) => {
                metres += m.metres(at, end);
                route.tour.end().map_or(departure, |a| a.schedule.arrival)
            }
            None => stops.last().map_or(departure, |s| s.departure),
        };
        routes.push(Route { vehicle: vehicle_id, departure, stops, arrival, metres });
    }
    let pinned: HashMap<&str, bool> = problem.jobs.iter().map(|j| (j.id.as_str(), j.pinned_to.is_some())).collect();
    let unassigned = solution
        .unassigned
        .iter()
        .map(|(job, info)| {
            let id = job.dimens().get_job_id().cloned().unwrap_or_default();
            let code = match info {
                UnassignmentInfo::Simple(code) => Some(*code),
                // Per vehicle: the one that came furthest says most (a van with
                // the right compartment but too small, rather than a van without it).
                UnassignmentInfo::Detailed(codes) => codes.iter().map(|(_, c)| *c).max_by_key(|c| progress(*c)),
                UnassignmentInfo::Unknown => None,
            };
            let reason = match code {
                Some(TIME_CODE) => "time_window",
                Some(CAPACITY_CODE) => "capacity",
                Some(SKILL_CODE) if pinned.get(id.as_str()).copied().unwrap_or(false) => "pinned_elsewhere",
                Some(SKILL_CODE) => "skill",
                Some(COLD_CODE) => "cold_exposure",
                Some(LOCK_CODE) => "committed_elsewhere",
                _ => problem.jobs.iter().find(|j| j.id == id).map_or("no_feasible_route", |j| explain(problem, j)),
            };
            Unassigned { job: id, reason: reason.to_owned() }
        })
        .collect();
    Plan { routes, unassigned }
}
