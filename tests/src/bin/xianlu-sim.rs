//! `xianlu-sim`: a simulated day of a whole city against the real server.
//!
//! `xianlu-sim day --fast` runs one day as fast as it goes and prints what it
//! came to, with the checks; the exit code says whether the checks passed.
//! `xianlu-sim demo` runs the day at 60× on a fixed address for people to
//! watch in the apps, prints the logins, and keeps serving until Ctrl-C.
//! `xianlu-sim history --days N` runs N days up to yesterday into one
//! database and keeps it, for what learns from history.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use xianlu_tests::sim::{Options, Scale, Sim, Summary};

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
        #[command(flatten)]
        world: WorldArgs,
        /// PostgreSQL (`postgres://…`); a fresh SQLite file otherwise.
        #[arg(long, env = "XIANLU_SIM_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// A day at `--pace`× on SQLite for watching in the apps; serves until Ctrl-C.
    Demo {
        #[command(flatten)]
        world: WorldArgs,
        /// Business seconds per wall second.
        #[arg(long, default_value_t = 60.0)]
        pace: f64,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the SQLite database and evidence go (emptied first).
        #[arg(long, default_value = "data/demo")]
        data_dir: PathBuf,
        /// The customer app's web build (served at `/app` and `/t/…`).
        #[arg(long)]
        customer_web_dir: Option<PathBuf>,
        /// The courier app's web build (served at `/courier`).
        #[arg(long)]
        courier_web_dir: Option<PathBuf>,
    },
    /// Several business days into one database, kept for the models and KPIs.
    History(HistoryArgs),
}

#[derive(Debug, Args)]
struct HistoryArgs {
    /// How many business days, ending yesterday.
    #[arg(long)]
    days: u32,
    #[command(flatten)]
    world: WorldArgs,
    /// PostgreSQL (`postgres://…`, the database should be empty); SQLite in `--data-dir` otherwise.
    #[arg(long, env = "XIANLU_SIM_DATABASE_URL")]
    database_url: Option<String>,
    /// Where the SQLite database and evidence go (emptied first, kept afterwards).
    #[arg(long, default_value = "data/history")]
    data_dir: PathBuf,
}

#[derive(Debug, Args)]
struct WorldArgs {
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
    /// Seconds of business time between two rounds (and position fixes).
    #[arg(long, default_value_t = 30)]
    step: i64,
}

impl WorldArgs {
    fn options(&self, data_dir: PathBuf) -> Result<Options> {
        let mut scale = match self.scale.as_str() {
            "small" => Scale::SMALL,
            "city" => Scale::CITY,
            other => anyhow::bail!("unknown scale {other}: small or city"),
        };
        if let Some(n) = self.couriers {
            scale.couriers = n;
        }
        if let Some(n) = self.orders {
            scale.orders = n;
        }
        // Today in the merchant's zone (Beijing, UTC+8).
        let date = (chrono::Utc::now() + chrono::TimeDelta::hours(8)).date_naive();
        let mut options = Options::fast(self.seed, scale, date, data_dir);
        options.step = chrono::TimeDelta::seconds(self.step.max(1));
        options.progress = true;
        Ok(options)
    }
}

fn describe(options: &Options) {
    let scale = options.scale;
    println!(
        "鲜路 city simulation, seed {}: {} couriers, {} orders, {} customers, {} warehouses, a {}×{} street city",
        options.seed, scale.couriers, scale.orders, scale.customers, scale.warehouses, scale.city_size, scale.city_size
    );
}

fn report(summary: &Summary, options: &Options) {
    println!("\n{summary}");
    println!(
        "positions: one fix every {} simulated seconds, thinned by the client core's tracker before upload",
        options.step.num_seconds()
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Mode::Day { fast, world, database_url } => {
            if !fast {
                anyhow::bail!("`day` runs as fast as possible (`--fast`); `demo` runs a day at a watching pace");
            }
            let dir = std::env::temp_dir().join(format!("xianlu-sim-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&dir)?;
            let mut options = world.options(dir.clone())?;
            options.database_url = database_url;
            describe(&options);
            let summary = xianlu_tests::sim::run(&options).await;
            let _ = std::fs::remove_dir_all(&dir);
            let summary = summary?;
            report(&summary, &options);
            if !summary.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Mode::Demo { world, pace, listen, data_dir, customer_web_dir, courier_web_dir } => {
            if data_dir.exists() {
                std::fs::remove_dir_all(&data_dir)?;
            }
            std::fs::create_dir_all(&data_dir)?;
            let mut options = world.options(data_dir)?;
            options.pace = Some(pace);
            options.listen = Some(listen);
            options.customer_web_dir = customer_web_dir;
            options.courier_web_dir = courier_web_dir;
            describe(&options);
            let started = std::time::Instant::now();
            let sim = Sim::start(&options).await?;
            let setup = started.elapsed().as_secs_f64();
            welcome(&sim, &options);
            demo(sim, &options, setup).await
        }
        Mode::History(args) => history(args).await,
    }
}

async fn history(args: HistoryArgs) -> Result<()> {
    anyhow::ensure!(args.days > 0, "at least one day");
    if args.database_url.is_none() && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)?;
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let mut options = args.world.options(args.data_dir.clone())?;
    options.date -= chrono::TimeDelta::days(i64::from(args.days));
    options.database_url = args.database_url.clone();
    describe(&options);
    println!("{} days from {}", args.days, options.date);
    let mut sim = Sim::start(&options).await?;
    let started = std::time::Instant::now();
    for day in 0..args.days {
        if day > 0 {
            sim.next_day();
        }
        let wall = std::time::Instant::now();
        sim.day(&options).await?;
        println!("{}  done in {:.1} s", sim.date(), wall.elapsed().as_secs_f64());
    }
    let summary = sim.finish().await;
    sim.stop().await;
    let summary = Summary { day_seconds: started.elapsed().as_secs_f64(), ..summary? };
    report(&summary, &options);
    match &args.database_url {
        Some(_) => println!("\nThe history is in the PostgreSQL database given."),
        None => println!(
            "\nThe history is in {}: XIANLU_DATA_DIR={} cargo run -p xianlu-server serves it.",
            args.data_dir.display(),
            args.data_dir.display()
        ),
    }
    if !summary.passed() {
        std::process::exit(1);
    }
    Ok(())
}

/// Runs the day (Ctrl-C stops it), then keeps serving until Ctrl-C.
async fn demo(mut sim: Sim, options: &Options, setup_seconds: f64) -> Result<()> {
    let started = std::time::Instant::now();
    let stopped = tokio::select! {
        day = sim.day(options) => { day?; false }
        _ = tokio::signal::ctrl_c() => true,
    };
    if !stopped {
        let summary = Summary { setup_seconds, day_seconds: started.elapsed().as_secs_f64(), ..sim.finish().await? };
        report(&summary, options);
        println!("\nThe day is over; the server keeps serving it at {} until Ctrl-C.", sim.base());
        let _ = tokio::signal::ctrl_c().await;
    }
    sim.stop().await;
    Ok(())
}

fn welcome(sim: &Sim, options: &Options) {
    let base = sim.base();
    let pace = options.pace.unwrap_or(1.0).max(0.01);
    let (open, last) = sim.business_day();
    let local = |t: chrono::DateTime<chrono::Utc>| xianlu_tests::sim::world::local_time(t).format("%H:%M");
    println!(
        "\nThe server is at {base}. Business time runs {pace}× from {} to {} (Beijing time): about {:.0} minutes.",
        local(open),
        local(last),
        (last - open).num_seconds() as f64 / pace / 60.0
    );
    println!("\nLogins (made anew on every run):");
    let mut couriers = 0;
    for login in sim.logins() {
        if login.role == "courier" {
            couriers += 1;
            if couriers > 3 {
                continue;
            }
        }
        println!("  {:<16} {:<17} {}   {}", login.username, login.role, login.password, login.about);
    }
    if couriers > 3 {
        println!("  … and {} more couriers, sim.courier.3 onwards (the simulation drives them all)", couriers - 3);
    }
    println!(
        "\nThe apps:\n  \
         cargo xtask merchant                  the merchant app (Tauri): log in as sim.owner, sim.clerk or sim.service\n  \
         {base}/courier   the courier app in a browser: log in as a courier and watch the route move\n  \
         {base}/app       the customer app in a browser: log in as sim.customer\n  \
         XIANLU_SERVER={base} cargo run -p xianlu-courier    the courier app's desktop window\n  \
         {base}/api/v1/docs   the API\n"
    );
}
