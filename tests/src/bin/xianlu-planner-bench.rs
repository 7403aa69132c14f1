//! `cargo xtask bench` (route planner): our planner (vrp-core) against PyVRP
//! on the Solomon VRPTW instances, both for the same wall time on one thread
//! in the same run; every plan of ours is verified by the independent
//! checker. Prints a Markdown report for docs/benchmarks.md. Figures, not
//! assertions.
//!
//! `xianlu-planner-bench [--quick] [--seconds S] [--runs N] [--python PATH]`;
//! each of our runs is a fresh process (`--one FILE OBJECTIVE SECONDS`), so
//! runs do not share the solver's random state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use xianlu_planner::{Objective, Settings, check, solomon, solve};

const QUICK: [&str; 8] = ["C101", "C201", "R101", "R109", "R201", "RC101", "RC201", "RC208"];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/vrp")
}

/// One solve in this process: prints a JSON line.
fn one(file: &str, objective: &str, seconds: f64) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| file.to_owned())?;
    let problem = solomon::parse(&text)?;
    let objective = if objective == "vehicles" { Objective::VehiclesFirst } else { Objective::Distance };
    let started = std::time::Instant::now();
    let plan =
        solve(&problem, &Settings { objective, seconds, max_generations: None, repeatable: false, search_width: 4 })?;
    let elapsed = started.elapsed().as_secs_f64();
    let violations = check(&problem, &plan);
    println!(
        "{}",
        json!({
            "cost": (plan.metres() * 100.0).round() / 100.0,
            "vehicles": plan.vehicles_used(),
            "unassigned": plan.unassigned.len(),
            "feasible": violations.is_empty() && plan.unassigned.is_empty(),
            "violations": violations.iter().take(3).map(ToString::to_string).collect::<Vec<_>>(),
            "seconds": elapsed,
        })
    );
    Ok(())
}

fn ours(file: &Path, objective: &str, seconds: f64) -> Result<Value> {
    let output = Command::new(std::env::current_exe()?)
        .args(["--one", &file.display().to_string(), objective, &seconds.to_string()])
        .env("RAYON_NUM_THREADS", "1")
        .output()?;
    if !output.status.success() {
        bail!("{}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
    }
    let line = String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().to_owned();
    Ok(serde_json::from_str(&line)?)
}

fn pyvrp(python: &str, files: &[PathBuf], seconds: f64, seed: u32) -> Result<BTreeMap<String, Value>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/pyvrp_solomon.py");
    let output = Command::new(python)
        .arg(script)
        .args(["--seconds", &seconds.to_string(), "--seed", &seed.to_string()])
        .args(files)
        .output()
        .with_context(|| format!("running {python}"))?;
    if !output.status.success() {
        bail!("PyVRP: {}", String::from_utf8_lossy(&output.stderr));
    }
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let v: Value = serde_json::from_str(line)?;
        out.insert(v["instance"].as_str().unwrap_or_default().to_owned(), v);
    }
    Ok(out)
}

/// One instance's results.
#[derive(Default)]
struct Row {
    /// Our distances, one per run.
    ours: Vec<f64>,
    /// PyVRP's, one per seed.
    peer: Vec<f64>,
    /// Every plan of ours passed the checker.
    feasible: bool,
    /// Vehicles used in the vehicles-first run.
    vehicles: Option<u64>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        let seconds: f64 = args.get(i + 3).context("--one FILE OBJECTIVE SECONDS")?.parse()?;
        return one(&args[i + 1], &args[i + 2], seconds);
    }
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let quick = args.iter().any(|a| a == "--quick");
    let seconds: f64 = flag("--seconds").map_or(Ok(if quick { 5.0 } else { 10.0 }), |s| s.parse())?;
    let runs: u32 = flag("--runs").map_or(Ok(if quick { 1 } else { 3 }), |s| s.parse())?;
    let python = flag("--python").unwrap_or_else(|| "python3".into());

    let bks: BTreeMap<String, (u64, f64)> = std::fs::read_to_string(data_dir().join("bks.csv"))?
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((f.first()?.to_string(), (f.get(5)?.parse().ok()?, f.get(6)?.parse().ok()?)))
        })
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir().join("solomon"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| !quick || QUICK.iter().any(|q| p.file_stem().is_some_and(|s| s == *q)))
        .collect();
    files.sort();

    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for run in 1..=runs {
        eprintln!("run {run}: PyVRP on {} instances, {seconds} s each", files.len());
        let peer = pyvrp(&python, &files, seconds, run)?;
        for file in &files {
            let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let result = ours(file, "distance", seconds)?;
            eprintln!(
                "  {name}: ours {} ({} vehicles, feasible {}), PyVRP {}",
                result["cost"],
                result["vehicles"],
                result["feasible"],
                peer.get(&name).map_or(Value::Null, |p| p["cost"].clone())
            );
            let row = rows.entry(name.clone()).or_insert(Row { feasible: true, ..Row::default() });
            row.ours.push(result["cost"].as_f64().unwrap_or(f64::NAN));
            row.feasible &= result["feasible"].as_bool().unwrap_or(false);
            if let Some(p) = peer.get(&name)
                && p["feasible"].as_bool().unwrap_or(false)
            {
                row.peer.push(p["cost"].as_f64().unwrap_or(f64::NAN));
            }
        }
    }
    eprintln!("vehicles first, one run each");
    for file in &files {
        let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let result = ours(file, "vehicles", seconds)?;
        if let Some(row) = rows.get_mut(&name) {
            row.feasible &= result["feasible"].as_bool().unwrap_or(false);
            row.vehicles = result["vehicles"].as_u64();
        }
    }

    let mut report = String::new();
    report.push_str(&format!(
        "Machine: {}. Release build. {} Solomon instances, {seconds} s per solve on one thread, {runs} run(s) each \
         (our runs: fresh processes with the solver's random seed; PyVRP 0.14.1: seeds 1..{runs}), both in this run. \
         Distances in double precision. Ours: distance objective with the file's fleet as the limit, every plan \
         checked by `xianlu_planner::check`; then one vehicles-first run, compared with the best-known vehicle count.\n\n",
        xianlu_tests::machine(),
        files.len()
    ));
    report.push_str("| instance | ours (mean) | PyVRP (mean) | gap | feasible | vehicles-first: ours / best known |\n|---|---|---|---|---|---|\n");
    let mut by_class: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let (mut within_one, mut counted, mut all_feasible) = (0, 0, true);
    for (name, Row { ours, peer, feasible, vehicles }) in &rows {
        let (o, p) = (mean(ours), mean(peer));
        let gap = 100.0 * (o / p - 1.0);
        let class: String = name.chars().take_while(|c| c.is_alphabetic()).collect::<String>()
            + &name.chars().skip_while(|c| c.is_alphabetic()).take(1).collect::<String>();
        by_class.entry(class).or_default().push(gap);
        all_feasible &= feasible;
        let best = bks.get(name).map(|b| b.0);
        if let (Some(v), Some(b)) = (vehicles, best) {
            counted += 1;
            within_one += usize::from(*v <= b + 1);
        }
        report.push_str(&format!(
            "| {name} | {o:.2} | {p:.2} | {gap:+.2} % | {} | {} / {} |\n",
            if *feasible { "yes" } else { "**no**" },
            vehicles.map_or("–".into(), |v| v.to_string()),
            best.map_or("–".into(), |b| b.to_string())
        ));
    }
    report.push_str("\n| class | instances | mean gap to PyVRP |\n|---|---|---|\n");
    let mut all_gaps = Vec::new();
    for (class, gaps) in &by_class {
        report.push_str(&format!("| {class} | {} | {:+.2} % |\n", gaps.len(), mean(gaps)));
        all_gaps.extend(gaps);
    }
    report.push_str(&format!(
        "\nMean distance gap {:+.2} % over {} instances; all plans feasible: {}; vehicles-first within one vehicle of the \
         best known on {within_one} of {counted}.\n",
        mean(&all_gaps),
        all_gaps.len(),
        if all_feasible { "yes" } else { "**no**" }
    ));
    println!("{report}");
    Ok(())
}
