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
  max_evidence_bytes             largest evidence upload        [6291456]
  map_tile_url                   external tile URL template for the apps (optional)
  customer_web_dir               the customer app's web build, served at /t/{token}
  courier_web_dir                the courier app's web build, served at /courier
                                 (the page a tracking link opens; optional)
  payment_webhook_secret         HMAC secret of the generic payment gateway
  payment_webhook_tolerance_secs replay window of notifications [300]
  idempotency_retention_hours    saved responses kept (>= 24)   [24]
  stream_buffer                  events queued per push client  [256]
  cache_capacity                 orders in the hot cache        [10000]
  audit_anchor_every             audit anchor every N entries   [1000]
  log_format                     text or json                   [text]
  timer_interval_ms              how often timers run           [5000]
  token_secret                   HS256 secret for access tokens (>= 32 bytes;
                                 the same on every replica)     [random per start]
  access_token_ttl_secs          access token lifetime          [900]
  refresh_token_ttl_days         refresh token lifetime         [30]
  tls_cert, tls_key              PEM files: serve HTTPS (with HSTS) instead of HTTP
  tls13_only                     with TLS, accept TLS 1.3 only  [false]
  data_keys_file                 master keys for personal data, outside the
                                 database   [DATA_DIR/keys/personal-data.keys]
  data_keys                      the same keys inline, `ID BASE64` entries split by `;`,
                                 e.g. XIANLU_DATA_KEYS from a secret store

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
    /// Import the road network routes and ETAs use: an OpenStreetMap PBF
    /// extract, or a city generated from a seed.
    ImportMap {
        /// The `.osm.pbf` file.
        #[arg(required_unless_present = "generate")]
        file: Option<std::path::PathBuf>,
        /// Generate a city from this seed instead.
        #[arg(long, conflicts_with = "file")]
        generate: Option<u64>,
        /// Streets in each direction of a generated city.
        #[arg(long, default_value_t = 40)]
        size: u32,
    },
    /// Users: create, reset passwords, revoke sessions, clear lockouts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

/// A role and the objects it works on.
#[derive(Debug, clap::Args)]
pub struct RoleArgs {
    /// admin, merchant_owner, merchant_staff, warehouse_clerk, courier, customer, customer_service
    #[arg(long)]
    role: String,
    #[arg(long)]
    merchant: Option<uuid::Uuid>,
    #[arg(long)]
    warehouse: Option<uuid::Uuid>,
    #[arg(long)]
    courier: Option<uuid::Uuid>,
    #[arg(long)]
    customer: Option<uuid::Uuid>,
}

impl RoleArgs {
    fn assignment(&self) -> anyhow::Result<crate::identity::RoleAssignment> {
        use xianlu_domain::{CourierId, CustomerId, MerchantId, WarehouseId};
        Ok(crate::identity::RoleAssignment {
            role: crate::identity::Role::parse(&self.role)
                .ok_or_else(|| anyhow::anyhow!("unknown role {}", self.role))?,
            merchant_id: self.merchant.map(MerchantId),
            warehouse_id: self.warehouse.map(WarehouseId),
            courier_id: self.courier.map(CourierId),
            customer_id: self.customer.map(CustomerId),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. Without --password-stdin a random password is made and printed once.
    Create {
        username: String,
        #[command(flatten)]
        grant: RoleArgs,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (first line of standard input) and end the user's sessions.
    SetPassword { username: String },
    /// Give the user another role (and the links the role needs).
    Role {
        username: String,
        #[command(flatten)]
        grant: RoleArgs,
    },
    /// End every session of the user at once.
    Revoke { username: String },
    /// Clear a lockout after repeated failed logins.
    Unlock { username: String },
    /// List users.
    List,
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

/// Users managed from the command line: signing no tokens, any key will do.
fn user_admin(db: &Db) -> crate::identity::Identity {
    crate::identity::Identity::new(db.clone(), &[0u8; 32], 60, 1)
}

/// Stores a road network in the configured database, as `import-map` does;
/// the server loads the newest one when it starts.
pub async fn import_network(
    config: &Config,
    network: xianlu_roads::RoadNetwork,
) -> anyhow::Result<crate::roads::StoredNetwork> {
    let db = open(config).await?;
    let stored = crate::roads::store(&db, network).await.map(|(stored, _)| stored);
    db.close().await;
    stored
}

/// Creates a user in the configured database, as `user create` does (the
/// first administrator of a deployment or a simulation).
pub async fn create_user(config: &Config, user: crate::identity::NewUser) -> anyhow::Result<()> {
    let db = open(config).await?;
    let created = user_admin(&db).create_user(user).await.map(|_| ()).map_err(|e| anyhow::anyhow!("{e}"));
    db.close().await;
    created
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    run_with(cli, Profile::Normal).await
}

/// How the program was built to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Normal,
    /// The test build: requests may also name their actor in the development header.
    Test,
}

pub async fn run_with(cli: Cli, profile: Profile) -> anyhow::Result<i32> {
    let mut config = Config::load(cli.config.as_deref())?;
    config.dev_actor_header = profile == Profile::Test;
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
        Command::ImportMap { file, generate, size } => {
            let network = match (generate, file) {
                (Some(seed), _) => xianlu_roads::generate::city(xianlu_roads::generate::CitySpec::new(seed, size)),
                (None, Some(file)) => {
                    let read = file.clone();
                    match tokio::task::spawn_blocking(move || xianlu_roads::osm::import(&read)).await? {
                        Ok(network) => network,
                        Err(error) => {
                            eprintln!("{}: {error}", file.display());
                            return Ok(2);
                        }
                    }
                }
                (None, None) => anyhow::bail!("give a .osm.pbf file or --generate SEED"),
            };
            let stored = import_network(&config, network).await?;
            println!(
                "imported {}: {} road nodes, {} directed edges, {:.1} km of road (largest connected part), id {}",
                stored.source, stored.nodes, stored.edges, stored.kilometres, stored.id
            );
            if stored.osm {
                println!("map data {}", xianlu_roads::osm::ATTRIBUTION);
            }
            Ok(0)
        }
        Command::User { command } => {
            let db = open(&config).await?;
            let result = user_command(&user_admin(&db), command).await;
            db.close().await;
            result
        }
    }
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn user_command(identity: &crate::identity::Identity, command: UserCommand) -> anyhow::Result<i32> {
    use crate::identity::NewUser;
    let fail = |e: crate::error::ApiError| anyhow::anyhow!("{e}");
    match command {
        UserCommand::Create { username, grant, password_stdin } => {
            let grant = grant.assignment()?;
            let (password, generated) =
                if password_stdin { (read_password()?, false) } else { (crate::identity::random_token(), true) };
            let user = identity
                .create_user(NewUser {
                    username,
                    password: password.clone(),
                    role: grant.role,
                    merchant_id: grant.merchant_id,
                    warehouse_id: grant.warehouse_id,
                    courier_id: grant.courier_id,
                    customer_id: grant.customer_id,
                })
                .await
                .map_err(fail)?;
            println!("created {} ({}) {}", user.username, user.role.as_str(), user.id);
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::SetPassword { username } => {
            let user = identity.find(&username).await.map_err(fail)?;
            identity.set_password(user.id, &read_password()?).await.map_err(fail)?;
            println!("password of {username} changed; its sessions ended");
        }
        UserCommand::Role { username, grant } => {
            let assignment = grant.assignment()?;
            let user = identity.find(&username).await.map_err(fail)?;
            let user = identity.assign_role(user.id, assignment).await.map_err(fail)?;
            println!("{username} is now {}", user.role.as_str());
        }
        UserCommand::Revoke { username } => {
            let user = identity.find(&username).await.map_err(fail)?;
            identity.revoke_user(user.id).await.map_err(fail)?;
            println!("every session of {username} ended");
        }
        UserCommand::Unlock { username } => {
            let user = identity.find(&username).await.map_err(fail)?;
            identity.unlock(user.id).await.map_err(fail)?;
            println!("{username} unlocked");
        }
        UserCommand::List => {
            for user in identity.users().await.map_err(fail)? {
                let lock = if user.locked { "  (locked)" } else { "" };
                println!("{:<24} {:<17} {}{lock}", user.username, user.role.as_str(), user.id);
            }
        }
    }
    Ok(0)
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
    main_with(Profile::Normal)
}

pub fn main_with(profile: Profile) -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("xianlu-server: cannot start the async runtime: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run_with(cli, profile)) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("xianlu-server: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
