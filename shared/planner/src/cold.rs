//! The cold-exposure limit as a hard constraint for vrp-core: chilled or
//! frozen goods must be delivered within a number of seconds of the vehicle
//! leaving the cold room (the start of its route).
//!
//! Each route keeps, per activity, the *slack*: how much later the service
//! of any cold delivery from there on could start without breaking its
//! limit. An insertion is refused if it breaks the inserted job's own limit
//! or delays the next stop by more than that slack (conservative: waiting
//! further down could absorb part of the delay).

use std::sync::Arc;

use vrp_core::models::problem::TravelTime;
use vrp_core::models::solution::{Activity, Route};
use vrp_core::prelude::*;

custom_dimension!(ColdLimit typeof f64);
custom_activity_state!(ColdSlack typeof f64);

pub struct ColdExposure {
    pub code: ViolationCode,
    pub transport: Arc<dyn TransportCost>,
}

fn service_start(a: &Activity) -> f64 {
    a.schedule.arrival.max(a.place.time.start)
}

fn slacks(route: &Route) -> Vec<f64> {
    let t0 = route.tour.start().map_or(0.0, |s| s.schedule.departure);
    let activities: Vec<&Activity> = route.tour.all_activities().collect();
    let (mut out, mut run) = (vec![f64::MAX; activities.len()], f64::MAX);
    for (i, a) in activities.iter().enumerate().rev() {
        if let Some(limit) = a.job.as_ref().and_then(|s| s.dimens.get_cold_limit()) {
            run = run.min(t0 + limit - service_start(a));
        }
        out[i] = run;
    }
    out
}

impl FeatureState for ColdExposure {
    fn accept_insertion(&self, solution_ctx: &mut SolutionContext, route_index: usize, _job: &Job) {
        if let Some(route_ctx) = solution_ctx.routes.get_mut(route_index) {
            self.accept_route_state(route_ctx);
        }
    }

    fn accept_route_state(&self, route_ctx: &mut RouteContext) {
        let values = slacks(route_ctx.route());
        route_ctx.state_mut().set_cold_slack_states(values);
    }

    fn accept_solution_state(&self, solution_ctx: &mut SolutionContext) {
        // Only routes that changed: touching a route's state marks it changed for every feature.
        solution_ctx.routes.iter_mut().filter(|r| r.is_stale()).for_each(|r| self.accept_route_state(r));
    }
}

impl FeatureConstraint for ColdExposure {
    fn evaluate(&self, move_ctx: &MoveContext<'_>) -> Option<ConstraintViolation> {
        let MoveContext::Activity { route_ctx, activity_ctx: a, .. } = move_ctx else { return None };
        let route = route_ctx.route();
        let t0 = route.tour.start()?.schedule.departure;
        let leave = a.prev.schedule.departure;
        let arrival = leave
            + self.transport.duration(
                route,
                a.prev.place.location,
                a.target.place.location,
                TravelTime::Departure(leave),
            );
        let start = arrival.max(a.target.place.time.start);
        if a.target.job.as_ref().and_then(|s| s.dimens.get_cold_limit()).is_some_and(|limit| start - t0 > *limit) {
            return ConstraintViolation::skip(self.code);
        }
        if let Some(next) = a.next {
            let done = start + a.target.place.duration;
            let next_arrival = done
                + self.transport.duration(
                    route,
                    a.target.place.location,
                    next.place.location,
                    TravelTime::Departure(done),
                );
            let delay = next_arrival.max(next.place.time.start) - service_start(next);
            let slack = route_ctx.state().get_cold_slack_at(a.index + 1).copied().unwrap_or(f64::MAX);
            if delay > slack {
                return ConstraintViolation::skip(self.code);
            }
        }
        None
    }
}
