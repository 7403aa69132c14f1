//! The planner on small problems whose answers are known, and on a Solomon
//! instance; every plan passes the independent checker.

use xianlu_planner::{Job, Matrix, Objective, Plan, Problem, Settings, StopKind, Task, Vehicle, check, solomon, solve};

fn quick() -> Settings {
    Settings { seconds: 1.0, max_generations: Some(300), repeatable: true, ..Settings::default() }
}

/// Points on a line, one unit apart: travel time = distance.
fn line(points: usize) -> Matrix {
    let mut seconds = vec![0.0; points * points];
    for i in 0..points {
        for j in 0..points {
            seconds[i * points + j] = (i as f64 - j as f64).abs() * 60.0;
        }
    }
    Matrix { size: points, metres: seconds.iter().map(|s| s * 10.0).collect(), seconds }
}

fn van(id: &str, skills: &[&str]) -> Vehicle {
    Vehicle {
        id: id.into(),
        start: 0,
        end: Some(0),
        shift: (0.0, 10_000.0),
        capacity: vec![100],
        skills: skills.iter().map(|s| (*s).to_owned()).collect(),
        committed: Vec::new(),
        planned: Vec::new(),
    }
}

fn delivery(id: &str, location: usize) -> Job {
    Job {
        id: id.into(),
        task: Task::Delivery { location },
        demand: vec![10],
        windows: Vec::new(),
        service: 30.0,
        pickup_service: 0.0,
        skills: Vec::new(),
        max_exposure: None,
        pinned_to: None,
    }
}

fn on<'a>(plan: &'a Plan, job: &str) -> Option<&'a str> {
    plan.routes.iter().find(|r| r.stops.iter().any(|s| s.job == job)).map(|r| r.vehicle.as_str())
}

#[test]
fn one_van_along_a_line_visits_in_order() {
    let problem = Problem {
        matrix: line(5),
        vehicles: vec![van("a", &[])],
        jobs: vec![delivery("j3", 3), delivery("j1", 1), delivery("j4", 4), delivery("j2", 2)],
    };
    let plan = solve(&problem, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&problem, &plan), Vec::new());
    let order: Vec<&str> = plan.routes[0].stops.iter().map(|s| s.job.as_str()).collect();
    assert!(order == ["j1", "j2", "j3", "j4"] || order == ["j4", "j3", "j2", "j1"], "{order:?}");
    assert!((plan.metres() - 4800.0).abs() < 1e-6, "out and back: {}", plan.metres());
}

#[test]
fn frozen_goods_go_only_in_the_refrigerated_van_and_a_pinned_order_stays_pinned() {
    let mut frozen = delivery("frozen", 1);
    frozen.skills = vec!["refrigerated".into()];
    let mut pinned = delivery("pinned", 1);
    pinned.pinned_to = Some("plain".into());
    let problem = Problem {
        matrix: line(4),
        vehicles: vec![van("plain", &[]), van("cold", &["refrigerated"])],
        jobs: vec![frozen, pinned, delivery("any", 3)],
    };
    let plan = solve(&problem, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&problem, &plan), Vec::new());
    assert_eq!(on(&plan, "frozen"), Some("cold"));
    assert_eq!(on(&plan, "pinned"), Some("plain"));
    // Frozen goods with no refrigerated van at all are reported, with the reason.
    let mut frozen = delivery("frozen", 1);
    frozen.skills = vec!["refrigerated".into()];
    let problem = Problem { matrix: line(2), vehicles: vec![van("plain", &[])], jobs: vec![frozen] };
    let plan = solve(&problem, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&problem, &plan), Vec::new());
    assert_eq!(plan.unassigned.len(), 1);
    assert_eq!(plan.unassigned[0].reason, "skill");
}

#[test]
fn goods_left_at_a_breakdown_are_picked_up_before_they_are_delivered() {
    // A van broke down at 4; its order goes to 2. The rescuer starts at 0.
    let mut rescue = delivery("rescued", 2);
    rescue.task = Task::PickupDelivery { pickup: 4, delivery: 2 };
    rescue.pickup_service = 120.0;
    let problem =
        Problem { matrix: line(5), vehicles: vec![van("rescuer", &[])], jobs: vec![rescue, delivery("own", 1)] };
    let plan = solve(&problem, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&problem, &plan), Vec::new());
    let stops: Vec<(String, StopKind)> = plan.routes[0].stops.iter().map(|s| (s.job.clone(), s.kind)).collect();
    let pickup = stops.iter().position(|s| *s == ("rescued".to_owned(), StopKind::Pickup));
    let drop = stops.iter().position(|s| *s == ("rescued".to_owned(), StopKind::Delivery));
    assert!(pickup.is_some() && pickup < drop, "{stops:?}");
}

#[test]
fn a_shift_that_ends_too_soon_leaves_the_far_stop_and_no_fleet_leaves_all() {
    let mut short = van("a", &[]);
    short.end = None;
    // The far stop is reached at 240 s and takes 30 s: past a 200 s shift.
    short.shift = (0.0, 200.0);
    let problem =
        Problem { matrix: line(5), vehicles: vec![short], jobs: vec![delivery("near", 1), delivery("far", 4)] };
    let plan = solve(&problem, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&problem, &plan), Vec::new());
    assert_eq!(on(&plan, "near"), Some("a"));
    assert_eq!(plan.unassigned.iter().map(|u| u.job.as_str()).collect::<Vec<_>>(), vec!["far"]);
    let empty = Problem { vehicles: Vec::new(), ..problem };
    let plan = solve(&empty, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert!(plan.routes.is_empty());
    assert!(plan.unassigned.iter().all(|u| u.reason == "no_courier") && plan.unassigned.len() == 2, "{plan:?}");
}

#[test]
fn capacity_and_time_windows_split_the_work_or_leave_it_unassigned() {
    let mut heavy = delivery("heavy", 1);
    heavy.demand = vec![80];
    let mut also_heavy = delivery("also-heavy", 2);
    also_heavy.demand = vec![80];
    let mut too_late = delivery("too-late", 3);
    too_late.windows = vec![(0.0, 60.0)]; // 3 units away = 180 s
    let problem = Problem {
        matrix: line(4),
        vehicles: vec![van("a", &[]), van("b", &[])],
        jobs: vec![heavy, also_heavy, too_late],
    };
    let plan = solve(&problem, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&problem, &plan), Vec::new());
    assert_ne!(on(&plan, "heavy"), on(&plan, "also-heavy"), "80 + 80 > 100");
    assert_eq!(plan.unassigned.len(), 1);
    assert_eq!((plan.unassigned[0].job.as_str(), plan.unassigned[0].reason.as_str()), ("too-late", "time_window"));
}

#[test]
fn chilled_goods_go_first_when_their_limit_demands_it() {
    // An open route along a line: the near stop first is shorter (5 units
    // against 9), but the chilled order at 5 must arrive within 310 s of
    // leaving (300 s straight there).
    let mut open_van = van("a", &[]);
    open_van.end = None;
    let mut chilled = delivery("chilled", 5);
    chilled.max_exposure = Some(310.0);
    let problem =
        Problem { matrix: line(6), vehicles: vec![open_van.clone()], jobs: vec![delivery("near", 1), chilled] };
    let plan = solve(&problem, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&problem, &plan), Vec::new());
    let order: Vec<&str> = plan.routes[0].stops.iter().map(|s| s.job.as_str()).collect();
    assert_eq!(order, ["chilled", "near"]);
    // Without the limit the shorter order wins, which the checker would refuse with it.
    let mut relaxed = problem.clone();
    relaxed.jobs[1].max_exposure = None;
    let plan = solve(&relaxed, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.routes[0].stops.iter().map(|s| s.job.as_str()).collect::<Vec<_>>(), ["near", "chilled"]);
    assert!(matches!(check(&problem, &plan).as_slice(), [xianlu_planner::Violation::Exposure { .. }]));
    // A limit no route can keep leaves the order unassigned, saying why.
    let mut impossible = problem.clone();
    impossible.jobs[1].max_exposure = Some(200.0);
    let plan = solve(&impossible, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&impossible, &plan), Vec::new());
    assert_eq!(
        plan.unassigned.iter().map(|u| (u.job.as_str(), u.reason.as_str())).collect::<Vec<_>>(),
        [("chilled", "cold_exposure")]
    );
}

#[test]
fn a_replan_keeps_the_stop_a_courier_is_driving_to() {
    // Open routes: left alone, a van goes 1, 2, 3, 4 (4 units); van a is
    // already on its way to 4.
    let open = |id: &str| Vehicle { end: None, ..van(id, &[]) };
    let jobs = vec![delivery("j1", 1), delivery("j2", 2), delivery("j3", 3), delivery("j4", 4)];
    let free = Problem { matrix: line(5), vehicles: vec![open("a")], jobs: jobs.clone() };
    let plan = solve(&free, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.routes[0].stops.first().map(|s| s.job.as_str()), Some("j1"));
    let mut busy = open("a");
    busy.committed = vec!["j4".into()];
    let problem = Problem { matrix: line(5), vehicles: vec![busy, open("b")], jobs };
    let plan = solve(&problem, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&problem, &plan), Vec::new());
    let a = plan.routes.iter().find(|r| r.vehicle == "a").unwrap_or_else(|| panic!("route a"));
    assert_eq!(a.stops.first().map(|s| s.job.as_str()), Some("j4"), "{:?}", a.stops);
    // Committing a stop that is not in the problem is refused, not ignored.
    let mut wrong = problem.clone();
    wrong.vehicles[0].committed = vec!["nowhere".into()];
    assert!(solve(&wrong, &quick()).is_err());
}

#[test]
fn a_replan_keeps_the_order_of_the_planned_route_and_fits_new_orders_in() {
    // The current route goes 3 then 1 (not the shortest): a re-plan keeps that
    // order and fits the new order at 2 in somewhere.
    let mut a = van("a", &[]);
    a.planned = vec!["j3".into(), "j1".into()];
    let problem = Problem {
        matrix: line(4),
        vehicles: vec![a],
        jobs: vec![delivery("j1", 1), delivery("new", 2), delivery("j3", 3)],
    };
    let plan = solve(&problem, &quick()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&problem, &plan), Vec::new());
    let order: Vec<&str> = plan.routes[0].stops.iter().map(|s| s.job.as_str()).collect();
    let (three, one) = (order.iter().position(|j| *j == "j3"), order.iter().position(|j| *j == "j1"));
    assert!(three < one && order.contains(&"new"), "{order:?}");
    // One order kept on two routes is refused.
    let mut twice = problem.clone();
    let mut b = van("b", &[]);
    b.planned = vec!["j1".into()];
    twice.vehicles.push(b);
    assert!(solve(&twice, &quick()).is_err());
}

#[test]
fn a_solomon_instance_is_planned_feasibly_near_its_best_known_distance() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/vrp/solomon/C101.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let problem = solomon::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let settings =
        Settings { objective: Objective::VehiclesFirst, seconds: 5.0, max_generations: Some(500), ..quick() };
    let plan = solve(&problem, &settings).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check(&problem, &plan), Vec::new());
    assert!(plan.unassigned.is_empty());
    // Best known: 10 vehicles, 828.94.
    assert_eq!(plan.vehicles_used(), 10);
    assert!(plan.metres() < 828.94 * 1.02, "{}", plan.metres());
}
