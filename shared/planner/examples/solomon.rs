//! Plans one Solomon instance and prints its distance, vehicles and any
//! violation: `cargo run --release -p xianlu-planner --example solomon -- FILE [SECONDS] [vehicles]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let file = args.get(1).ok_or("usage: solomon FILE [SECONDS] [vehicles]")?;
    let seconds: f64 = args.get(2).map_or(Ok(10.0), |s| s.parse())?;
    let objective = if args.get(3).is_some_and(|a| a == "vehicles") {
        xianlu_planner::Objective::VehiclesFirst
    } else {
        xianlu_planner::Objective::Distance
    };
    let width: usize = std::env::var("XIANLU_SEARCH_WIDTH").ok().and_then(|w| w.parse().ok()).unwrap_or(4);
    let problem = xianlu_planner::solomon::parse(&std::fs::read_to_string(file)?)?;
    let settings = xianlu_planner::Settings { objective, seconds, search_width: width, ..Default::default() };
    let plan = xianlu_planner::solve(&problem, &settings)?;
    let violations = xianlu_planner::check(&problem, &plan);
    println!(
        "{file}: {:.2} with {} vehicles, {} unassigned, {} violations",
        plan.metres(),
        plan.vehicles_used(),
        plan.unassigned.len(),
        violations.len()
    );
    Ok(())
}
