//! The `xianlu-server` command line.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::Config;
use crate::db::{Db, DbOptions};

const CONFIG_HELP: &str = "\
Configuration is layered: built-in defaults, then a TOML file (--config FILE,
or ./xianlu.toml when present), then environment variables XIANLU_<KEY>
(e.g. XIANLU_LISTEN=0.0.0.0:8080). Keys:

  listen                         address to serve on            [127.0.0.1:8080]
  data_dir                       where the SQLite file lives    [data]
  database_url                   sqlite://PATH or postgres://USER@HOST/DB
                                 (default: SQLite in data_dir)
  sqlite_synchronous             FULL or NORMAL (WAL either way) [FULL]
  max_connections                database pool size             [16]
  max_body_bytes                 largest request body           [262144]
  payment_webhook_secret         HMAC secret of the generic payment gateway
  payment_webhook_tolerance_secs replay window of notifications [300]
  idempotency_retention_hours    saved responses kept (>= 24)   [24]
  stream_buffer                  events queued per push client  [256]
  cache_capacity                 orders in the hot cache        [10000]
  audit_anchor_every             audit anchor every N entries   [1000]
  dev_actor_header               trust X-Xianlu-Dev-Actor       [true]
  log_format                     text or json                   [text]
  timer_interval_ms              how often timers run           [5000]

Run `xianlu-server print-config` to see the result (secrets redacted).
Logs go to stderr; RUST_LOG filters them (default info).";

#[derive(Debug, Parser)]
#[command(name = "xianlu-server", version, about = "鲜路 Xianlu order lifecycle server", after_help = CONFIG_HELP)]
pub struct Cli {
    /// A TOML configuration file.
    #[arg(long, global = true, env = "XIANLU_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the effective configuration with secrets redacted.
    PrintConfig,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every merchant's hash chain; exits 1 if any row was edited, inserted or deleted.
    Verify,
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if config.log_format == "json" { builder.json().try_init() } else { builder.try_init() };
}

async fn open(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&DbOptions {
        url: config.database_url(),
        sqlite_synchronous: config.sqlite_synchronous.clone(),
        max_connections: 2,
    })
    .await?;
    db.migrate().await?;
    Ok(db)
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let config = Config::load(cli.config.as_deref())?;
    init_logging(&config);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let server = crate::Server::start(config, Arc::new(SystemClock)).await?;
            println!("xianlu-server listening on {}", server.url());
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate() => {}
            }
            tracing::info!("shutting down");
            server.stop().await;
            Ok(0)
        }
        Command::Migrate => {
            let db = open(&config).await?;
            db.close().await;
            println!("migrations applied to {}", crate::service::backend_name(&db));
            Ok(0)
        }
        Command::Audit { command: AuditCommand::Verify } => {
            let db = open(&config).await?;
            let report = crate::audit::verify(&db).await?;
            db.close().await;
            println!("{} merchants, {} entries, {} anchors checked", report.merchants, report.entries, report.anchors);
            for problem in &report.problems {
                println!("BROKEN: {problem}");
            }
            if report.ok() {
                println!("audit log intact");
                Ok(0)
            } else {
                Ok(1)
            }
        }
        Command::PrintConfig => {
            print!("{}", config.redacted());
            Ok(0)
        }
    }
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending().await
}

/// The whole program: parse arguments, run, map the outcome to an exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("xianlu-server: cannot start the async runtime: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("xianlu-server: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
