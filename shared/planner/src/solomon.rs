//! Solomon VRPTW instances (the 1987 text format): one depot, Euclidean
//! distances, travel time = distance, service must start within [ready, due].

use crate::model::{Job, Matrix, Problem, Task, Vehicle};

#[derive(Debug, thiserror::Error)]
#[error("not a Solomon instance: {0}")]
pub struct FormatError(String);

/// Parses an instance; `vehicles` overrides the fleet size in the file.
pub fn parse(text: &str) -> Result<Problem, FormatError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let numbers = |line: &str| -> Vec<f64> { line.split_whitespace().filter_map(|w| w.parse().ok()).collect() };
    let mut fleet = None;
    let mut rows = Vec::new();
    while let Some(line) = lines.next() {
        if line.starts_with("NUMBER") {
            let next = lines.next().ok_or_else(|| FormatError("no fleet line".into()))?;
            let v = numbers(next);
            if v.len() != 2 {
                return Err(FormatError(format!("fleet line {next:?}")));
            }
            fleet = Some((v[0] as usize, v[1] as i64));
        } else {
            let v = numbers(line);
            if v.len() == 7 {
                rows.push(v);
            }
        }
    }
    let (count, capacity) = fleet.ok_or_else(|| FormatError("no VEHICLE section".into()))?;
    if rows.len() < 2 || rows[0][0] != 0.0 {
        return Err(FormatError("no depot row 0 and customers".into()));
    }
    let n = rows.len();
    let mut metres = vec![0.0; n * n];
    for (i, a) in rows.iter().enumerate() {
        for (j, b) in rows.iter().enumerate() {
            metres[i * n + j] = (a[1] - b[1]).hypot(a[2] - b[2]);
        }
    }
    let horizon = rows[0][5];
    let vehicles = (0..count)
        .map(|k| Vehicle {
            id: format!("v{k}"),
            start: 0,
            end: Some(0),
            shift: (rows[0][4], horizon),
            capacity: vec![capacity],
            skills: Vec::new(),
            committed: Vec::new(),
            planned: Vec::new(),
        })
        .collect();
    let jobs = rows
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, r)| Job {
            id: format!("{}", r[0] as i64),
            task: Task::Delivery { location: i },
            demand: vec![r[3] as i64],
            windows: vec![(r[4], r[5])],
            service: r[6],
            pickup_service: 0.0,
            skills: Vec::new(),
            max_exposure: None,
            pinned_to: None,
        })
        .collect();
    Ok(Problem { matrix: Matrix { size: n, seconds: metres.clone(), metres }, vehicles, jobs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Plan, Route, Stop, StopKind};
    use crate::{Violation, check};

    const TINY: &str = "TINY\n\nVEHICLE\nNUMBER     CAPACITY\n  2         10\n\nCUSTOMER\n\
        CUST NO.  XCOORD.  YCOORD.  DEMAND  READY TIME  DUE DATE  SERVICE TIME\n\n\
            0   0   0   0    0  100   0\n\
            1   3   4   4    0   20   2\n\
            2   6   8   5   10   30   2\n\
            3   0   5   6    0   15   1\n";

    fn stop(problem: &Problem, job: &str) -> Stop {
        let location = problem.jobs.iter().position(|j| j.id == job).map_or(0, |i| i + 1);
        Stop { job: job.into(), kind: StopKind::Delivery, location, arrival: 0.0, start: 0.0, departure: 0.0 }
    }

    #[test]
    fn a_known_plan_checks_and_each_broken_rule_is_reported() {
        let problem = parse(TINY).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(problem.jobs.len(), 3);
        assert_eq!(problem.matrix.metres(0, 2), 10.0);
        // v0: 0 → 1 (5) → 2 (5, waits to 10) → 0 (10); v1: 0 → 3 → 0.
        let plan = Plan {
            routes: vec![
                Route {
                    vehicle: "v0".into(),
                    departure: 0.0,
                    stops: vec![stop(&problem, "1"), stop(&problem, "2")],
                    arrival: 0.0,
                    metres: 20.0,
                },
                Route {
                    vehicle: "v1".into(),
                    departure: 0.0,
                    stops: vec![stop(&problem, "3")],
                    arrival: 0.0,
                    metres: 10.0,
                },
            ],
            unassigned: Vec::new(),
        };
        assert_eq!(check(&problem, &plan), Vec::new());
        // All on one vehicle: 15 > 10 of capacity, and job 3 reached at 28 > 15.
        let one = Plan {
            routes: vec![Route {
                vehicle: "v0".into(),
                departure: 0.0,
                stops: vec![stop(&problem, "1"), stop(&problem, "2"), stop(&problem, "3")],
                arrival: 0.0,
                metres: 25.0,
            }],
            unassigned: Vec::new(),
        };
        let found = check(&problem, &one);
        assert!(found.iter().any(|v| matches!(v, Violation::Capacity { load: 15, .. })), "{found:?}");
        assert!(found.iter().any(|v| matches!(v, Violation::TimeWindow { job, .. } if job == "3")), "{found:?}");
        // A job left out and not reported unassigned.
        let missing = Plan { routes: vec![plan.routes[0].clone()], unassigned: Vec::new() };
        assert_eq!(check(&problem, &missing), vec![Violation::NotOnce("3".into())]);
    }

    #[test]
    fn every_shipped_solomon_instance_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/vrp/solomon");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let problem = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
            assert_eq!(problem.jobs.len(), 100, "{}", entry.path().display());
        }
    }
}
