//! `xianlu-sim`: a simulated day of a whole city against the real server.
//!
//! `xianlu-sim day --fast` runs one day as fast as it goes and prints what it
//! came to, with the checks; the exit code says whether the checks passed.

use anyhow::Result;
use clap::{Parser, Subcommand};
use xianlu_tests::sim::{Options, Rates, Scale};

#[derive(Debug, Parser)]
#[command(name = "xianlu-sim", about = "A simulated city driving the real Xianlu server")]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// One business day, then a summary and the checks.
    Day {
        /// As fast as possible (business time waits for each round).
        #[arg(long)]
        fast: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `small` (20 couriers, 300 orders) or `city` (200 couriers, 5 000 orders).
        #[arg(long, default_value = "small")]
        scale: String,
        /// Couriers and orders instead of the scale's.
        #[arg(long)]
        couriers: Option<usize>,
        #[arg(long)]
        orders: Option<usize>,
        /// PostgreSQL (`postgres://…`); a fresh SQLite file otherwise.
        #[arg(long, env = "XIANLU_SIM_DATABASE_URL")]
        database_url: Option<String>,
        /// Seconds of business time between two rounds (and position fixes).
        #[arg(long, default_value_t = 30)]
        step: i64,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let Mode::Day { fast, seed, scale, couriers, orders, database_url, step } = Cli::parse().command;
    if !fast {
        anyhow::bail!("only `day --fast` runs a day for now");
    }
    let mut scale = match scale.as_str() {
        "small" => Scale::SMALL,
        "city" => Scale::CITY,
        other => anyhow::bail!("unknown scale {other}: small or city"),
    };
    if let Some(n) = couriers {
        scale.couriers = n;
    }
    if let Some(n) = orders {
        scale.orders = n;
    }
    let dir = std::env::temp_dir().join(format!("xianlu-sim-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    let date = (chrono::Utc::now() + chrono::TimeDelta::hours(8)).date_naive();
    let options = Options {
        seed,
        scale,
        rates: Rates::default(),
        date,
        database_url,
        data_dir: dir.clone(),
        step: chrono::TimeDelta::seconds(step.max(1)),
        progress: true,
    };
    println!(
        "鲜路 city simulation, seed {seed}: {} couriers, {} orders, {} customers, {} warehouses, a {}×{} street city",
        scale.couriers, scale.orders, scale.customers, scale.warehouses, scale.city_size, scale.city_size
    );
    let summary = xianlu_tests::sim::run(&options).await;
    let _ = std::fs::remove_dir_all(&dir);
    let summary = summary?;
    println!("\n{summary}");
    println!("positions: one fix every {step} simulated seconds, thinned by the client core's tracker before upload");
    if !summary.passed() {
        std::process::exit(1);
    }
    Ok(())
}
