//! Runs a simulated day against the real server: started in this process on
//! its own database with the simulation's clock, seeded through its public
//! API, and driven only through the API and the client core — the office's
//! session (board, outbox), one courier session per courier (outbox, push,
//! location tracker), payments through the gateway's signed notification.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use xianlu_core::board::BoardFilter;
use xianlu_core::courier::{CourierSession, SessionSettings};
use xianlu_core::location::{Fix, advance_along};
use xianlu_core::office::{OfficeSession, OfficeSettings};
use xianlu_core::push::{PushClient, PushEvent, PushSettings};
use xianlu_core::report::{ExceptionReason, ExceptionReport};
use xianlu_core::signature::StrokePoint;
use xianlu_core::signoff::SignOff;
use xianlu_core::store::{MemoryStore, Store};
use xianlu_core::{ApiClient, Backoff, CoreError};
use xianlu_domain::aftersales::{AfterSalesKind, AfterSalesLine, NewAfterSales};
use xianlu_domain::operations::OperationsSettings;
use xianlu_domain::operations::PlannedKind;
use xianlu_domain::wire::{LatLng, StreamEvent, Topic};
use xianlu_domain::{
    Command, CourierId, CustomerId, LineDraft, MerchantId, OrderDraft, OrderId, Price, Quantity, RejectReason, Status,
    TimeWindow, WarehouseId,
};
use xianlu_server::config::Config;
use xianlu_server::identity::{NewUser, Role};
use xianlu_server::parties::{
    Courier, Customer, Merchant, NewContact, NewCourier, NewCustomer, NewMerchant, NewWarehouse, StockCount, Warehouse,
};

use super::clock::SimClock;
use super::world::{AtTheDoor, PlannedOrder, Scale, World};

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub scale: Scale,
    pub rates: super::world::Rates,
    /// The business day (merchant's calendar).
    pub date: chrono::NaiveDate,
    /// `postgres://…`; SQLite in `data_dir` otherwise.
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    /// Simulated time between two rounds of the agents (and between position fixes).
    pub step: TimeDelta,
    /// A progress bar, and a line every simulated hour.
    pub progress: bool,
    /// Business seconds per wall second (60: a day in a quarter of an hour,
    /// for watching in the apps); as fast as possible when `None`.
    pub pace: Option<f64>,
    /// Where the server listens (a free port on loopback otherwise).
    pub listen: Option<std::net::SocketAddr>,
    /// The apps' web builds the server serves (`/app`, `/t/…`, `/courier`).
    pub customer_web_dir: Option<PathBuf>,
    pub courier_web_dir: Option<PathBuf>,
}

impl Options {
    /// A run as fast as it goes, on a fresh SQLite database in `data_dir`.
    pub fn fast(seed: u64, scale: Scale, date: chrono::NaiveDate, data_dir: PathBuf) -> Options {
        Options {
            seed,
            scale,
            rates: super::world::Rates::default(),
            date,
            database_url: None,
            data_dir,
            step: TimeDelta::seconds(30),
            progress: false,
            pace: None,
            listen: None,
            customer_web_dir: None,
            courier_web_dir: None,
        }
    }
}

/// A login the run made, for a person to watch the day in an app.
#[derive(Debug, Clone)]
pub struct Login {
    pub username: String,
    pub role: &'static str,
    pub password: String,
    /// Who or what the login is for.
    pub about: String,
}

/// Orders still on the road at closing get until this much later.
const LAST_DELIVERIES: TimeDelta = TimeDelta::hours(2);

/// The longest a round waits (wall time) for what it sent to reach the server.
const SETTLE: Duration = Duration::from_secs(5);

/// What a day came to.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub orders: usize,
    pub signed: usize,
    pub signed_on_time: usize,
    pub lines_refused_at_door: usize,
    pub returned: usize,
    pub cancelled: usize,
    pub failed_attempts: usize,
    pub open_at_end: BTreeMap<String, usize>,
    pub exceptions: usize,
    pub vehicle_stops: usize,
    pub short_lines: usize,
    /// After-sales complaints raised on signed orders.
    pub complaints: usize,
    pub alerts: usize,
    pub eta_samples: u64,
    pub eta_mae_s: Option<f64>,
    pub charge_fen: i64,
    pub commands: usize,
    /// Changes the server refused (the order had moved on), given up by their senders.
    pub refused: usize,
    pub fixes_offered: u64,
    pub positions_stored: u64,
    pub events: usize,
    /// Courier routes (re)sequenced by the planner.
    pub route_updates: usize,
    pub setup_seconds: f64,
    pub day_seconds: f64,
    pub checks: Vec<(String, bool, String)>,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|(_, ok, _)| *ok)
    }

    pub fn fulfilment_rate(&self) -> f64 {
        ratio(self.signed, self.orders)
    }

    pub fn on_time_rate(&self) -> f64 {
        ratio(self.signed_on_time, self.signed)
    }

    /// Orders lost to the business: returned or cancelled.
    pub fn loss_rate(&self) -> f64 {
        ratio(self.returned + self.cancelled, self.orders)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "orders            {}", self.orders)?;
        writeln!(f, "signed            {} ({:.1} % fulfilled)", self.signed, self.fulfilment_rate() * 100.0)?;
        writeln!(f, "on time           {:.1} % of signed (within the promised window)", self.on_time_rate() * 100.0)?;
        writeln!(
            f,
            "lost              {:.1} % (returned {}, cancelled {})",
            self.loss_rate() * 100.0,
            self.returned,
            self.cancelled
        )?;
        writeln!(f, "failed attempts   {} (left for the office to rebook)", self.failed_attempts)?;
        writeln!(
            f,
            "short lines       {}; lines partly refused at the door {}",
            self.short_lines, self.lines_refused_at_door
        )?;
        writeln!(f, "exceptions        {} ({} vans stopped)", self.exceptions, self.vehicle_stops)?;
        writeln!(f, "complaints        {} after-sales matters raised after signing", self.complaints)?;
        writeln!(f, "alerts raised     {}", self.alerts)?;
        match self.eta_mae_s {
            Some(mae) => writeln!(
                f,
                "ETA error         {:.0} s mean absolute, first estimate vs arrival ({} stops)",
                mae, self.eta_samples
            )?,
            None => writeln!(f, "ETA error         no arrivals measured")?,
        }
        writeln!(f, "charged           ¥{:.2}", self.charge_fen as f64 / 100.0)?;
        if !self.open_at_end.is_empty() {
            writeln!(f, "open at the end   {:?}", self.open_at_end)?;
        }
        writeln!(
            f,
            "throughput        {} commands ({} refused and given up), {} events, {} route updates, {} fixes offered, {} positions stored",
            self.commands, self.refused, self.events, self.route_updates, self.fixes_offered, self.positions_stored
        )?;
        writeln!(
            f,
            "wall time         {:.1} s setting up, {:.1} s for the day ({:.0} orders/s)",
            self.setup_seconds,
            self.day_seconds,
            self.orders as f64 / self.day_seconds.max(0.001)
        )?;
        writeln!(f, "checks")?;
        for (name, ok, detail) in &self.checks {
            writeln!(
                f,
                "  [{}] {name}{}",
                if *ok { "ok" } else { "FAILED" },
                if detail.is_empty() { String::new() } else { format!(": {detail}") }
            )?;
        }
        Ok(())
    }
}

/// The running system and the people in it.
pub struct Sim {
    world: World,
    clock: Arc<SimClock>,
    server: xianlu_server::Server,
    base: String,
    gateway_secret: String,
    office: OfficeSession,
    merchant: MerchantId,
    warehouses: Vec<WarehouseId>,
    depots: HashMap<WarehouseId, LatLng>,
    customers: Vec<CustomerId>,
    couriers: Vec<CourierAgent>,
    observers: Vec<Observer>,
    /// The server's id of a placed order → what was planned for it.
    placed: HashMap<OrderId, PlannedOrder>,
    /// Vans that stopped on the road (accident or breakdown), every day so far.
    vans_stopped: usize,
    /// Orders being picked: when the picker is done (`None` once recorded).
    picking: HashMap<OrderId, Option<DateTime<Utc>>>,
    /// What happens at each order's door.
    doors: HashMap<OrderId, AtTheDoor>,
    /// Order versions the office has dealt with (a change is made once per version seen).
    handled: HashSet<(OrderId, u64)>,
    /// When the office last asked the planner itself.
    asked_plan: Option<DateTime<Utc>>,
    /// Signed orders a complaint was raised on.
    complained: HashSet<OrderId>,
    logins: Vec<Login>,
    commands: usize,
    /// Changes the server refused, which their senders gave up.
    refused: usize,
    rng: StdRng,
}

struct CourierAgent {
    id: CourierId,
    session: CourierSession,
    store: Arc<MemoryStore>,
    home: LatLng,
    position: LatLng,
    leg: Option<Leg>,
    busy_until: Option<DateTime<Utc>>,
    /// Delivering at the door: what happens when the service time is over.
    at_door: Option<OrderId>,
    on_duty: bool,
    stopped: bool,
    shift: (DateTime<Utc>, DateTime<Utc>),
    stop_at: Option<DateTime<Utc>>,
    fixes: u64,
    rng: StdRng,
}

impl CourierAgent {
    /// Files a report on `order` from where the van is.
    fn report(&self, order: OrderId, reason: ExceptionReason, note: &str, t: DateTime<Utc>) -> Result<()> {
        let report =
            ExceptionReport { reason, note: note.into(), photos: Vec::new(), position: Some(self.position), at: t };
        self.session.report(order, &report)?;
        Ok(())
    }

    /// Off duty, unless the server still counts goods aboard (a report or a
    /// delivery still in the outbox, an order the day has not heard of yet):
    /// then the courier stays on and asks again the next round.
    async fn off_duty(&mut self) -> Result<bool> {
        match self.session.set_duty(false, None).await {
            Ok(_) => {
                self.on_duty = false;
                Ok(true)
            }
            Err(CoreError::Server { problem }) if problem.code == "goods_aboard" => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A GPS fix of where the van is, with a few metres of noise.
    fn fix(&mut self, t: DateTime<Utc>, speed: f32) -> Result<()> {
        let position = LatLng {
            lat: self.position.lat + self.rng.random_range(-4.0..4.0) / 111_320.0,
            lng: self.position.lng + self.rng.random_range(-4.0..4.0) / 85_000.0,
        };
        self.session.offer_fix(Fix { at: t, position, accuracy_m: 6.0, speed_mps: Some(speed), heading_deg: None })?;
        self.fixes += 1;
        Ok(())
    }
}

/// The road ahead of a van: the points still to pass, and its free-flow speed.
struct Leg {
    to: LatLng,
    ahead: Vec<LatLng>,
    speed_mps: f64,
}

/// Traffic by hour: the morning rush slows vans down.
fn traffic(hour: u32) -> f64 {
    match hour {
        7..=9 => 0.6,
        17..=19 => 0.65,
        10..=16 => 0.85,
        _ => 1.0,
    }
}

fn local_hour(t: DateTime<Utc>) -> u32 {
    use chrono::Timelike;
    super::world::local_time(t).hour()
}

/// Sets up the world in a fresh server, runs the day and stops.
pub async fn run(options: &Options) -> Result<Summary> {
    let started = Instant::now();
    let mut sim = Sim::start(options).await?;
    let setup_seconds = started.elapsed().as_secs_f64();
    let day = Instant::now();
    sim.day(options).await?;
    let day_seconds = day.elapsed().as_secs_f64();
    let summary = sim.finish().await;
    sim.stop().await;
    let mut summary = summary?;
    summary.setup_seconds = setup_seconds;
    summary.day_seconds = day_seconds;
    Ok(summary)
}

impl Sim {
    /// The server's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// When the business day starts, and when the last van is due back.
    pub fn business_day(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let (open, close) = self.world.day();
        (open, close + LAST_DELIVERIES)
    }

    /// Turns to the next business day: the same city, people and stock, the
    /// day's own orders; every courier starts the shift at their warehouse.
    pub fn next_day(&mut self) {
        self.world.next_day();
        let world = &self.world;
        for (i, c) in self.couriers.iter_mut().enumerate() {
            let planned = &world.couriers[i];
            let shift = (
                super::world::local(world.date, planned.shift.0, 0),
                super::world::local(world.date, planned.shift.1, 0),
            );
            c.shift = shift;
            c.position = c.home;
            c.leg = None;
            c.busy_until = None;
            c.at_door = None;
            c.stopped = false;
            c.stop_at = world.vehicle_stops[i].map(|m| shift.0 + TimeDelta::minutes(i64::from(m)));
        }
    }

    /// The business day being run.
    pub fn date(&self) -> chrono::NaiveDate {
        self.world.date
    }

    /// The logins made for people to watch the day in the apps.
    pub fn logins(&self) -> &[Login] {
        &self.logins
    }

    /// The world of `options`' seed in a fresh server, seeded through its API.
    pub async fn start(options: &Options) -> Result<Sim> {
        let world = World::generate(options.seed, options.scale, options.rates, options.date)?;
        let gateway_secret = crate::random_secret();
        let config = Config {
            listen: options.listen.unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            customer_web_dir: options.customer_web_dir.clone(),
            courier_web_dir: options.courier_web_dir.clone(),
            data_dir: options.data_dir.clone(),
            database_url: options.database_url.clone(),
            sqlite_synchronous: "NORMAL".into(),
            payment_webhook_secret: Some(gateway_secret.clone()),
            timer_interval_ms: 500,
            log_format: "text".into(),
            ..Config::default()
        };
        xianlu_server::cli::import_network(&config, world.network.clone()).await?;
        let admin_password = crate::random_secret();
        xianlu_server::cli::create_user(
            &config,
            NewUser {
                username: "sim.admin".into(),
                password: admin_password.clone(),
                role: Role::Admin,
                merchant_id: None,
                warehouse_id: None,
                courier_id: None,
                customer_id: None,
            },
        )
        .await?;
        let (open, _) = world.day();
        let clock = Arc::new(SimClock::new(open));
        let server = xianlu_server::Server::start(config, clock.clone()).await?;
        let base = server.url();
        let admin = ApiClient::new(&base)?;
        admin.login("sim.admin", &admin_password).await?;
        // Seeded through the public API, with the server's own request types.
        async fn create<T: Serialize, R: DeserializeOwned>(api: &ApiClient, path: &str, new: &T) -> Result<R> {
            api.call(Method::POST, path, Some(new), None).await.with_context(|| path.to_owned())
        }
        let new_merchant = NewMerchant {
            name: "鲜路城市配送".into(),
            order_prefix: "XL".into(),
            time_zone: super::world::TIME_ZONE.into(),
        };
        let merchant: Merchant = create(&admin, "/api/v1/merchants", &new_merchant).await?;
        let merchant = merchant.id;
        // The planner plans by itself, a burst of changes at a time.
        let settings_path = format!("/api/v1/merchants/{merchant}/operations");
        let mut settings: OperationsSettings = admin.call(Method::GET, &settings_path, None::<&()>, None).await?;
        settings.auto_plan = true;
        settings.plan_debounce_seconds = 1;
        settings.plan_seconds = if world.scale.orders > 1000 { 3 } else { 1 };
        let _: OperationsSettings = admin.call(Method::PUT, &settings_path, Some(&settings), None).await?;
        let mut warehouses = Vec::new();
        for w in &world.warehouses {
            let new = NewWarehouse { name: w.name.clone(), address: w.address.clone(), location: w.location };
            let made: Warehouse = create(&admin, &format!("/api/v1/merchants/{merchant}/warehouses"), &new).await?;
            // Plenty of everything but the scarce product, which runs out in the morning.
            for (i, product) in world.catalogue.iter().enumerate() {
                let scarce = i + 1 == world.catalogue.len();
                let on_hand_base = match (product.dimension(), scarce) {
                    (_, true) => (world.scale.orders as i64 / 40).max(2) * 500,
                    (xianlu_domain::Dimension::Grams, false) => 50_000_000,
                    (xianlu_domain::Dimension::Pieces, false) => 100_000,
                };
                let count = StockCount {
                    name: product.name.into(),
                    dimension: product.dimension(),
                    on_hand_base,
                    volume_ml: None,
                };
                let path = format!("/api/v1/warehouses/{}/stock/{}", made.id, product.sku);
                let _: serde::de::IgnoredAny = admin.call(Method::PUT, &path, Some(&count), None).await?;
            }
            warehouses.push(made.id);
        }
        let mut customers = Vec::new();
        for c in &world.customers {
            let new = NewCustomer {
                business_name: c.business_name.clone(),
                kind: c.kind,
                address: c.address.clone(),
                location: c.location,
                payment_terms: c.terms(),
                contacts: vec![NewContact { name: c.contact_name.clone(), phone: c.contact_phone.clone() }],
            };
            let made: Customer = create(&admin, &format!("/api/v1/merchants/{merchant}/customers"), &new).await?;
            customers.push(made.id);
        }
        let user = |username: String, password: String, role: Role| NewUser {
            username,
            password,
            role,
            merchant_id: None,
            warehouse_id: None,
            courier_id: None,
            customer_id: None,
        };
        // The office: the merchant's owner, on the board.
        let owner_password = crate::random_secret();
        let owner = NewUser {
            merchant_id: Some(merchant),
            ..user("sim.owner".into(), owner_password.clone(), Role::MerchantOwner)
        };
        let _: serde::de::IgnoredAny = create(&admin, "/api/v1/admin/users", &owner).await?;
        let mut watchers = vec![
            Login {
                username: "sim.admin".into(),
                role: "admin",
                password: admin_password.clone(),
                about: "the server's administrator".into(),
            },
            Login {
                username: "sim.owner".into(),
                role: "merchant_owner",
                password: owner_password.clone(),
                about: format!("{} (the simulated office works as this user too)", new_merchant.name),
            },
        ];
        // People who only watch: the first warehouse's clerk, customer service,
        // and the customer who orders first.
        let first_customer = world.orders.first().map_or(0, |o| o.customer);
        let people = [
            ("sim.clerk", "warehouse_clerk", format!("{}'s pick list", world.warehouses[0].name), Role::WarehouseClerk),
            ("sim.service", "customer_service", "alerts and exceptions".into(), Role::CustomerService),
            ("sim.customer", "customer", world.customers[first_customer].business_name.clone(), Role::Customer),
        ];
        for (username, role_name, about, role) in people {
            let password = crate::random_secret();
            let mut new = user(username.into(), password.clone(), role);
            match role {
                Role::Customer => new.customer_id = Some(customers[first_customer]),
                Role::WarehouseClerk => {
                    new.merchant_id = Some(merchant);
                    new.warehouse_id = Some(warehouses[0]);
                }
                _ => new.merchant_id = Some(merchant),
            }
            let _: serde::de::IgnoredAny = create(&admin, "/api/v1/admin/users", &new).await?;
            watchers.push(Login { username: username.into(), role: role_name, password, about });
        }
        let owner = ApiClient::new(&base)?;
        owner.login("sim.owner", &owner_password).await?;
        let office = OfficeSession::start(
            owner,
            None,
            Arc::new(MemoryStore::default()),
            OfficeSettings {
                outbox: xianlu_core::outbox::OutboxSettings { backoff: Backoff::fast(), ..Default::default() },
                push: PushSettings { backoff: Backoff::fast(), ..PushSettings::default() },
            },
        )?;
        let mut couriers = Vec::new();
        let mut logins = Vec::new();
        for (i, c) in world.couriers.iter().enumerate() {
            let new = NewCourier {
                name: c.name.clone(),
                phone: c.phone.clone(),
                vehicle: c.vehicle.into(),
                refrigerated: c.refrigerated,
                capacity_kg: Some(c.capacity_kg),
                capacity_l: None,
            };
            let made: Courier = create(&admin, &format!("/api/v1/merchants/{merchant}/couriers"), &new).await?;
            let cid = made.id;
            let password = crate::random_secret();
            let username = format!("sim.courier.{i}");
            let login = NewUser { courier_id: Some(cid), ..user(username.clone(), password.clone(), Role::Courier) };
            let _: serde::de::IgnoredAny = create(&admin, "/api/v1/admin/users", &login).await?;
            watchers.push(Login {
                username: username.clone(),
                role: "courier",
                password: password.clone(),
                about: format!(
                    "{}{}, {:02}:00–{:02}:00 from {}",
                    c.vehicle,
                    if c.refrigerated { " (refrigerated)" } else { "" },
                    c.shift.0,
                    c.shift.1,
                    world.warehouses[c.home].name
                ),
            });
            // Each courier's phone has an address of its own (login attempts are limited per address).
            let address = std::net::IpAddr::from([127, 1, (i / 250) as u8, (i % 250 + 1) as u8]);
            logins.push((cid, username, password, address));
        }
        // Logins hash passwords: two at a time, one per core.
        let mut sessions = Vec::new();
        for pair in logins.chunks(2) {
            let mut tasks = Vec::new();
            for (cid, username, password, address) in pair.iter().cloned() {
                let base = base.clone();
                tasks.push(tokio::spawn(async move {
                    let api = ApiClient::from_address(&base, address)?;
                    api.login(&username, &password).await?;
                    Ok::<_, anyhow::Error>((cid, api))
                }));
            }
            for task in tasks {
                sessions.push(task.await??);
            }
        }
        for (i, (cid, api)) in sessions.into_iter().enumerate() {
            let c = &world.couriers[i];
            let store = Arc::new(MemoryStore::default());
            let settings = SessionSettings {
                outbox: xianlu_core::outbox::OutboxSettings { backoff: Backoff::fast(), ..Default::default() },
                push: PushSettings { backoff: Backoff::fast(), ..PushSettings::default() },
                ..SessionSettings::default()
            };
            let session = CourierSession::start(api, store.clone(), settings)?;
            let home = world.warehouses[c.home].location;
            let shift = (super::world::local(world.date, c.shift.0, 0), super::world::local(world.date, c.shift.1, 0));
            couriers.push(CourierAgent {
                id: cid,
                session,
                store,
                home,
                position: home,
                leg: None,
                busy_until: None,
                at_door: None,
                on_duty: false,
                stopped: false,
                shift,
                stop_at: world.vehicle_stops[i].map(|m| shift.0 + TimeDelta::minutes(i64::from(m))),
                fixes: 0,
                rng: StdRng::seed_from_u64(world.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9)),
            });
        }
        let depots = warehouses.iter().copied().zip(world.warehouses.iter().map(|w| w.location)).collect();
        // Subscribers that only listen: the office's screen and each courier's second device.
        let mut observers = vec![Observer::start(office.api(), Topic::Merchant(merchant))?];
        for c in &couriers {
            observers.push(Observer::start(c.session.api(), Topic::Courier(c.id))?);
        }
        let rng = StdRng::seed_from_u64(world.seed.wrapping_add(17));
        Ok(Sim {
            world,
            clock,
            server,
            base,
            gateway_secret,
            office,
            merchant,
            depots,
            observers,
            warehouses,
            customers,
            couriers,
            placed: HashMap::new(),
            vans_stopped: 0,
            picking: HashMap::new(),
            doors: HashMap::new(),
            handled: HashSet::new(),
            asked_plan: None,
            complained: HashSet::new(),
            logins: watchers,
            commands: 0,
            refused: 0,
            rng,
        })
    }

    /// The day, round by round: orders come in, the office picks and packs,
    /// couriers drive, deliver and report; then the clock moves on.
    pub async fn day(&mut self, options: &Options) -> Result<()> {
        let (open, close) = self.world.day();
        let last = close + LAST_DELIVERIES;
        let mut t = open;
        let mut next_order = 0;
        let mut hour_mark = open;
        let wall = tokio::time::Instant::now();
        let bar = if options.progress {
            let bar = indicatif::ProgressBar::new((last - open).num_minutes().max(1) as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix} [{bar:32}] {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        while t <= last {
            self.clock.advance_to(t);
            while next_order < self.world.orders.len() && self.world.orders[next_order].placed_at <= t {
                self.place(next_order).await?;
                next_order += 1;
            }
            self.office_round(t).await?;
            for i in 0..self.couriers.len() {
                self.courier_round(i, t, options.step).await?;
            }
            self.settle().await;
            if options.progress {
                let board = self.office.office();
                let columns = board.columns(&BoardFilter::default());
                let counts: Vec<String> = columns.iter().map(|c| format!("{:?} {}", c.column, c.count)).collect();
                let clock = super::world::local_time(t).format("%H:%M").to_string();
                if t >= hour_mark {
                    let line = format!("{clock}  placed {next_order:>5}  {}", counts.join("  "));
                    // A hidden bar (no terminal) prints nothing of its own.
                    if bar.is_hidden() {
                        println!("{line}")
                    } else {
                        bar.println(line)
                    }
                    hour_mark += TimeDelta::hours(1);
                }
                bar.set_prefix(clock);
                bar.set_position((t - open).num_minutes().max(0) as u64);
                bar.set_message(format!("{next_order} orders placed"));
            }
            // Watching: business time runs `pace` times the wall clock.
            if let Some(pace) = options.pace.filter(|p| *p > 0.0) {
                let due = ((t + options.step - open).num_milliseconds() as f64 / pace).max(0.0);
                tokio::time::sleep_until(wall + Duration::from_millis(due as u64)).await;
            }
            if next_order == self.world.orders.len() && t > close && self.all_settled() {
                break;
            }
            t += options.step;
        }
        bar.finish_and_clear();
        for courier in &mut self.couriers {
            if courier.on_duty {
                let _ = courier.session.set_duty(false, None).await;
                courier.on_duty = false;
            }
        }
        self.settle().await;
        Ok(())
    }

    fn all_settled(&self) -> bool {
        self.office.watch().borrow().board.cards().all(|c| c.status.is_terminal() || c.status == Status::DeliveryFailed)
    }

    /// Waits (wall time, bounded) until every outbox has sent what it holds.
    async fn settle(&self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            // Sent, or held for attention (the checks at the end report those).
            let done = |o: &xianlu_core::outbox::Outbox| {
                let status = o.status();
                status.sendable == 0 && status.in_flight == 0
            };
            let office = done(self.office.outbox());
            let couriers = self.couriers.iter().all(|c| done(c.session.outbox()));
            if (office && couriers) || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The office takes the order (by phone or message); a prepaid customer
    /// pays through the gateway at once.
    async fn place(&mut self, index: usize) -> Result<()> {
        let planned = &self.world.orders[index];
        let customer = &self.world.customers[planned.customer];
        let lines = planned
            .lines
            .iter()
            .map(|l| {
                let p = &self.world.catalogue[l.product];
                LineDraft {
                    sku: p.sku.into(),
                    name: p.name.into(),
                    quantity: Quantity::whole(i64::from(l.quantity)),
                    unit: p.unit,
                    nominal_g: p.nominal_g,
                    price: Price { fen: p.price_fen, per: p.price_per },
                    tolerance_permille: None,
                    temperature: p.temperature,
                }
            })
            .collect();
        let draft = OrderDraft {
            merchant_id: self.merchant,
            warehouse_id: self.warehouses[planned.warehouse],
            customer_id: self.customers[planned.customer],
            contact_id: None,
            requested_window: TimeWindow { start: planned.window.0, end: planned.window.1 },
            notes: String::new(),
            payment_terms: customer.terms(),
            lines,
        };
        let key = format!("sim-{}-{}-order-{index}", self.world.seed, self.world.date);
        let order = self.office.api().create_order(&draft, &key).await?;
        self.commands += 1;
        let id = order.id;
        self.placed.insert(id, planned.clone());
        self.doors.insert(id, planned.door);
        if customer.prepaid {
            let due = order.totals.charge_fen;
            let reference = format!("sim-pay-{}-{index}", self.world.date);
            crate::pay_by_gateway(&self.base, &self.gateway_secret, &id.to_string(), due, &reference).await?;
            self.commands += 1;
        }
        Ok(())
    }

    fn planned(&self, id: OrderId) -> Option<&PlannedOrder> {
        self.placed.get(&id)
    }

    fn send(&mut self, id: OrderId, command: Command) -> Result<()> {
        self.commands += 1;
        self.office.command(id, command, None)?;
        Ok(())
    }

    /// The warehouse and the office: pick what is due (weighing catch-weight
    /// lines), ship short lines short, take refused goods back.
    async fn office_round(&mut self, t: DateTime<Utc>) -> Result<()> {
        if self.office.outbox().status().needs_attention > 0 {
            for item in self.office.outbox().items()? {
                if item.state == xianlu_core::store::ItemState::Attention
                    && self.office.outbox().cancel(item.id).is_ok()
                {
                    self.refused += 1;
                }
            }
        }
        let cards: Vec<_> = self.office.watch().borrow().board.cards().cloned().collect();
        // Orders due soon with nobody to take them: the office asks the planner
        // again (couriers have moved on since the last plan), every quarter hour.
        let stranded = cards.iter().any(|c| {
            matches!(c.status, Status::AwaitingPick | Status::Picking | Status::Packed)
                && c.courier_id.is_none()
                && c.window.start - TimeDelta::hours(2) <= t
        });
        if stranded && self.asked_plan.is_none_or(|at| at + TimeDelta::minutes(15) <= t) {
            self.asked_plan = Some(t);
            self.office.api().request_plan(self.merchant, 1.0).await?;
            self.commands += 1;
        }
        for card in cards {
            let id = card.order_id;
            match card.status {
                // Picking starts ahead of the window, so the van can leave in time.
                Status::AwaitingPick
                    if !self.picking.contains_key(&id) && card.window.start - TimeDelta::minutes(120) <= t =>
                {
                    self.send(id, Command::StartPicking)?;
                    let planned = self.planned(id);
                    let lines = planned.map_or(1, |p| p.lines.len()) as i64;
                    let slow = if planned.is_some_and(|p| p.slow_pick) { 3 } else { 1 };
                    self.picking.insert(id, Some(t + TimeDelta::minutes((5 + 2 * lines) * slow)));
                }
                Status::Picking if self.picking.get(&id).copied().flatten().is_some_and(|due| due <= t) => {
                    self.picking.insert(id, None);
                    let view = self.office.order(id).await?;
                    for line in view.order.lines.iter().filter(|l| l.picked.is_none() && l.base_to_ship > 0) {
                        let spread = self.world.rates.catch_weight;
                        let noise = 1.0 + self.rng.random_range(-spread..=spread);
                        let (base, weight_g) = if line.dimension == xianlu_domain::Dimension::Grams {
                            (((line.base_to_ship as f64) * noise).round() as i64, None)
                        } else if line.price.per.dimension() == xianlu_domain::Dimension::Grams {
                            // Boxes sold by weight go on the scale too.
                            let nominal = line.nominal_g.unwrap_or(1000) * line.base_to_ship;
                            (line.base_to_ship, Some(((nominal as f64) * noise).round() as i64))
                        } else {
                            (line.base_to_ship, None)
                        };
                        self.send(id, Command::RecordPick { line_no: line.line_no, base, weight_g, short: false })?;
                    }
                    self.send(id, Command::Pack)?;
                }
                Status::OutOfStock if self.handled.insert((id, card.version)) => {
                    let view = self.office.order(id).await?;
                    let open = view
                        .order
                        .lines
                        .iter()
                        .filter(|l| l.shortage.as_ref().is_some_and(|s| !s.resolution.is_resolved()));
                    for line in open.map(|l| l.line_no).collect::<Vec<_>>() {
                        self.send(id, Command::ShortShip { line_no: line })?;
                    }
                }
                Status::ExceptionHandling if self.handled.insert((id, card.version)) => {
                    let view = self.office.order(id).await?;
                    let refused = view
                        .order
                        .exception
                        .as_ref()
                        .is_some_and(|e| e.kind == xianlu_domain::ExceptionKind::CustomerRefused);
                    if refused {
                        self.send(id, Command::StartReturn { reason: "客户拒收".into() })?;
                    }
                }
                // A complaint about a signed order comes in by phone within the afternoon.
                Status::Signed
                    if card.updated_at + TimeDelta::hours(1) <= t
                        && self.planned(id).is_some_and(|p| p.complaint)
                        && self.complained.insert(id) =>
                {
                    self.complain(id).await?;
                }
                // Back on the shelf once the van is back; half an hour will do.
                Status::Returning
                    if card.updated_at + TimeDelta::minutes(30) <= t && self.handled.insert((id, card.version)) =>
                {
                    self.send(id, Command::ConfirmReturned)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The office records a customer's quality complaint about the first
    /// accepted line: a tenth of what was accepted.
    async fn complain(&mut self, id: OrderId) -> Result<()> {
        let view = self.office.order(id).await?;
        let received = |l: &xianlu_domain::OrderLine| l.acceptance.map_or(l.base_delivered(), |a| a.accepted_base);
        let Some(line) = view.order.lines.iter().find(|l| received(l) > 0) else {
            return Ok(());
        };
        let base = (received(line) / 10).max(1);
        let matter = NewAfterSales {
            kind: AfterSalesKind::QualityComplaint,
            lines: vec![AfterSalesLine { line_no: line.line_no, base }],
            note: "部分叶子发黄".into(),
            photos: Vec::new(),
        };
        self.office.api().open_after_sales(id, &matter, &format!("sim-{}-complaint-{id}", self.world.seed)).await?;
        self.commands += 1;
        Ok(())
    }

    /// One courier for one step: on or off duty, deliver what is aboard in
    /// the route's order, load at the warehouse, stop for an accident.
    async fn courier_round(&mut self, i: usize, t: DateTime<Utc>, step: TimeDelta) -> Result<()> {
        let router = &self.world.router;
        let doors = &self.doors;
        let depots = &self.depots;
        let commands = &mut self.commands;
        let refused = &mut self.refused;
        let vans_stopped = &mut self.vans_stopped;
        let c = &mut self.couriers[i];
        if !c.on_duty && !c.stopped && t >= c.shift.0 && t < c.shift.1 {
            c.session.set_duty(true, Some(c.shift.1)).await?;
            c.on_duty = true;
        }
        if !c.on_duty {
            return Ok(());
        }
        if c.stopped {
            // The van stays put until the server has the report and lets go.
            c.fix(t, 0.0)?;
            c.off_duty().await?;
            return Ok(());
        }
        let day = c.session.day();
        // A change the server refused (the order went to someone else, say):
        // the courier reads why and gives it up; the server's state stands.
        for attention in &day.attention {
            if c.session.cancel(attention.item).is_ok() {
                *refused += 1;
            }
        }
        let aboard = day.stops.iter().any(|s| s.status == Status::Delivering);
        if t >= c.shift.1 && !aboard && c.busy_until.is_none() && c.off_duty().await? {
            return Ok(());
        }
        // An accident or a breakdown: every order aboard is covered, the van stays put.
        if c.stop_at.is_some_and(|at| at <= t)
            && c.busy_until.is_none()
            && let Some(first) =
                day.stops.iter().find(|s| s.status == Status::Delivering && s.kind == PlannedKind::Delivery)
        {
            let reason = if c.rng.random_bool(0.5) {
                ExceptionReason::TrafficAccident
            } else {
                ExceptionReason::VehicleBreakdown
            };
            c.fix(t, 0.0)?;
            c.report(first.order_id, reason, "车辆无法继续行驶", t)?;
            *commands += 1;
            c.stop_at = None;
            c.stopped = true;
            *vans_stopped += 1;
            c.leg = None;
            c.off_duty().await?;
            return Ok(());
        }
        // At the door or loading: the outcome once the time is up.
        if let Some(until) = c.busy_until {
            c.fix(t, 0.0)?;
            if until > t {
                return Ok(());
            }
            c.busy_until = None;
            if let Some(id) = c.at_door.take()
                && let Some(view) = day.order(id)
                && view.status == Status::Delivering
            {
                match doors.get(&id).copied().unwrap_or(AtTheDoor::Signed) {
                    AtTheDoor::Absent => c.report(id, ExceptionReason::CustomerAbsent, "电话无人接听", t)?,
                    AtTheDoor::Refused => c.report(id, ExceptionReason::CustomerRefused, "店长说今天没订货", t)?,
                    door => {
                        let mut sign_off = SignOff::for_order(&view, 400.0, 200.0)?;
                        if door == AtTheDoor::Damaged
                            && let Some(line) = view.order.lines.iter().find(|l| l.base_to_ship > 1)
                        {
                            sign_off.reject(line.line_no, (line.base_to_ship / 4).max(1), RejectReason::Damaged)?;
                        }
                        sign_off.signature.begin_stroke();
                        for k in 0..24u32 {
                            let x = 30.0 + k as f32 * 14.0;
                            let y = 100.0 + (k as f32 / 3.0).sin() * 40.0;
                            sign_off.signature.add_point(StrokePoint { x, y, t_ms: k * 16, pressure: 0.5 });
                        }
                        c.session.sign(&sign_off, None)?;
                    }
                }
                *commands += 1;
            }
            return Ok(());
        }
        // What is aboard first, in the route's order (and goods to collect from a stopped van);
        // then what is packed for this courier, at its warehouse.
        let next = day
            .stops
            .iter()
            .find(|s| s.location.is_some() && (s.kind == PlannedKind::Pickup || s.status == Status::Delivering))
            .cloned();
        let packed: Vec<(OrderId, LatLng)> = day
            .stops
            .iter()
            .filter(|s| s.status == Status::Packed)
            .filter_map(|s| {
                day.order(s.order_id).and_then(|v| depots.get(&v.order.warehouse_id)).map(|at| (s.order_id, *at))
            })
            .collect();
        let waiting =
            day.stops.iter().any(|s| matches!(s.status, Status::AwaitingPick | Status::Picking | Status::Packed));
        let target = match (&next, packed.first()) {
            (Some(stop), _) => stop.location,
            (None, Some((_, depot))) => Some(*depot),
            (None, None) if waiting || xianlu_roads::distance_m(c.position, c.home) > 60.0 => Some(c.home),
            (None, None) => None,
        };
        let Some(target) = target else {
            c.fix(t, 0.0)?;
            return Ok(());
        };
        if xianlu_roads::distance_m(c.position, target) < 25.0 {
            c.leg = None;
            c.position = target;
            match &next {
                Some(stop) if stop.kind == PlannedKind::Delivery => {
                    c.session.arrived(stop.order_id)?;
                    c.at_door = Some(stop.order_id);
                    c.busy_until = Some(t + TimeDelta::minutes(c.rng.random_range(3..8)));
                }
                // Collecting from a stopped van: the geofence sees the courier wait beside it.
                Some(_) => {}
                None => {
                    let here: Vec<OrderId> = packed.iter().filter(|(_, at)| *at == target).map(|(id, _)| *id).collect();
                    for id in &here {
                        c.session.pick_up(*id)?;
                        *commands += 1;
                    }
                    if !here.is_empty() {
                        c.busy_until = Some(t + TimeDelta::minutes(5));
                    }
                }
            }
            c.fix(t, 0.0)?;
            return Ok(());
        }
        if c.leg.as_ref().is_none_or(|l| l.to != target) {
            let mut calculator = router.calculator();
            let mut ahead = Vec::new();
            let mut speed_mps = 8.0;
            if let Some(route) = router.route(&mut calculator, c.position, target) {
                ahead = route.points;
                if route.seconds > 0.0 && route.meters > 0.0 {
                    speed_mps = route.meters / route.seconds;
                }
            }
            ahead.push(target);
            c.leg = Some(Leg { to: target, ahead, speed_mps });
        }
        let factor = traffic(local_hour(t)) * c.rng.random_range(0.85..1.1);
        let mut speed = 0.0;
        if let Some(leg) = c.leg.as_mut() {
            speed = leg.speed_mps * factor;
            c.position = advance_along(&mut leg.ahead, c.position, speed * step.num_milliseconds() as f64 / 1000.0);
        }
        c.fix(t, speed as f32)?;
        Ok(())
    }

    /// The checks and the figures, then the server stops.
    /// What the day came to, with the checks; the server keeps running.
    pub async fn finish(&self) -> Result<Summary> {
        let mut summary =
            Summary { orders: self.placed.len(), commands: self.commands, refused: self.refused, ..Summary::default() };
        let api = self.office.api().clone();
        // Every event of the merchant, replayed from the start by a new subscriber.
        let events = replay(&api, self.merchant).await?;
        summary.events = events.len();
        let mut by_order: HashMap<OrderId, Vec<&StreamEvent>> = HashMap::new();
        for e in &events {
            by_order.entry(e.order_id).or_default().push(e);
        }
        // No event sequence breaks the state machine: each changes from where the last left.
        let mut broken = Vec::new();
        for (id, list) in &by_order {
            // The status now, and the version and starting status of the last change.
            let mut status: Option<Status> = None;
            let mut change: Option<(u64, Status)> = None;
            for e in list {
                let (from, to) = (e.event.from, e.event.to);
                let fits = match change {
                    // Another event of the same change, or an observation (nothing changes).
                    Some((version, started)) if version == e.version => {
                        from == started || (from == to && Some(to) == status)
                    }
                    _ => status.is_none_or(|s| s == from),
                };
                if !fits || (from != to && !xianlu_domain::is_legal_edge(from, to)) {
                    broken.push(format!("{id}: {} {from:?} → {to:?} while {status:?}", e.event.kind.name()));
                    break;
                }
                if change.is_none_or(|(version, _)| version != e.version) {
                    change = Some((e.version, from));
                }
                status = Some(to);
            }
        }
        summary.checks.push((
            "every order's events follow the state machine".into(),
            broken.is_empty(),
            broken.iter().take(3).cloned().collect::<Vec<_>>().join("; "),
        ));
        // Final states.
        let mut explained = Vec::new();
        for (id, planned) in &self.placed {
            let view = api.order(*id).await?;
            let order = &view.order;
            match order.status {
                Status::Signed => {
                    summary.signed += 1;
                    let signed_at = order.sign_off.as_ref().map(|s| s.at);
                    if signed_at.is_some_and(|s| s <= planned.window.1 + TimeDelta::minutes(5)) {
                        summary.signed_on_time += 1;
                    }
                    summary.lines_refused_at_door += order
                        .lines
                        .iter()
                        .filter(|l| l.acceptance.as_ref().is_some_and(|a| a.rejected_base > 0))
                        .count();
                    summary.charge_fen += order.totals.charge_fen;
                }
                Status::Returned => summary.returned += 1,
                Status::Cancelled => summary.cancelled += 1,
                Status::DeliveryFailed if order.failed_attempts > 0 => summary.failed_attempts += 1,
                other => {
                    *summary.open_at_end.entry(format!("{other:?}")).or_default() += 1;
                    if !matches!(other, Status::ExceptionHandling | Status::DeliveryFailed) {
                        let courier = order.courier_id.map(|c| {
                            let duty = self.couriers.iter().find(|a| a.id == c).map(|a| (a.on_duty, a.shift.1));
                            format!("{c} {duty:?}")
                        });
                        explained.push(format!(
                            "{} {other:?} window {}–{} courier {courier:?}",
                            order.number, order.requested_window.start, order.requested_window.end
                        ));
                    }
                }
            }
            summary.short_lines += order.lines.iter().filter(|l| l.shortage.is_some()).count();
            if order.failed_attempts > 0 && order.status != Status::DeliveryFailed {
                summary.failed_attempts += 1;
            }
        }
        summary.exceptions = events
            .iter()
            .filter(|e| matches!(e.event.kind, xianlu_domain::EventKind::ExceptionReported { .. }))
            .count();
        summary.complaints =
            events.iter().filter(|e| matches!(e.event.kind, xianlu_domain::EventKind::AfterSalesOpened { .. })).count();
        summary.vehicle_stops = self.vans_stopped;
        summary.checks.push((
            "every order reached a terminal or explainable state".into(),
            explained.is_empty(),
            explained.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
        ));
        // Every push subscriber saw every event of its topic exactly once, in order.
        let mut missed = Vec::new();
        for observer in &self.observers {
            // Alerts are the office's: a courier's subscription leaves them out.
            let shown = |e: &StreamEvent| observer.topic.matches(e) && (observer.office || !e.event.kind.is_internal());
            let wanted: Vec<u64> = events.iter().filter(|e| shown(e)).map(|e| e.seq).collect();
            let deadline = Instant::now() + Duration::from_secs(10);
            while observer.seen().iter().filter(|s| wanted.binary_search(s).is_ok()).count() < wanted.len()
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // What came after the replay was read is for the next check.
            let head = events.last().map_or(0, |e| e.seq);
            let seen: Vec<u64> = observer.seen().into_iter().filter(|s| *s <= head).collect();
            if seen != wanted {
                let heard: HashSet<u64> = seen.iter().copied().collect();
                let first: Vec<String> = events
                    .iter()
                    .filter(|e| shown(e) && !heard.contains(&e.seq))
                    .take(3)
                    .map(|e| format!("#{} {}", e.seq, e.event.kind.name()))
                    .collect();
                missed.push(format!(
                    "{:?}: saw {} events, {} wanted, missing {first:?}",
                    observer.topic,
                    seen.len(),
                    wanted.len()
                ));
            }
        }
        summary.checks.push((
            format!("each of {} push subscribers saw every event of its topic once, in order", self.observers.len()),
            missed.is_empty(),
            missed.iter().take(3).cloned().collect::<Vec<_>>().join("; "),
        ));
        // Outboxes empty, positions all stored.
        let mut left = Vec::new();
        for outbox in std::iter::once(self.office.outbox()).chain(self.couriers.iter().map(|c| c.session.outbox())) {
            for item in outbox.items()? {
                let what = match &item.operation {
                    Ok(xianlu_core::outbox::Operation::Command { command, .. }) => command.name().to_owned(),
                    Ok(_) => item.lane.clone(),
                    Err(e) => e.clone(),
                };
                left.push(format!("{what} ({:?}: {:?})", item.state, item.error.map(|e| e.code)));
            }
        }
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for item in &left {
            *kinds.entry(item.as_str()).or_default() += 1;
        }
        summary.checks.push((
            "every outbox is empty".into(),
            left.is_empty(),
            format!("{} left: {kinds:?}", left.len()),
        ));
        let mut short = Vec::new();
        for c in &self.couriers {
            summary.fixes_offered += c.fixes;
            let shipped = c.store.reserve(&format!("device_seq:{}", c.id), 0)?.saturating_sub(1);
            let stored = api.positions(c.id, 0).await?.len() as u64;
            summary.positions_stored += stored;
            if stored != shipped {
                short.push(format!("{}: shipped {shipped}, stored {stored}", c.id));
            }
        }
        summary.checks.push(("every position a device shipped is stored".into(), short.is_empty(), short.join("; ")));
        summary.alerts = api.alerts(self.merchant, false).await?.len();
        let accuracy = api.eta_accuracy(self.merchant).await?;
        summary.eta_samples = accuracy.stops;
        summary.eta_mae_s = (accuracy.stops > 0).then_some(accuracy.mae_seconds);
        summary.route_updates =
            events.iter().filter(|e| matches!(e.event.kind, xianlu_domain::EventKind::RouteSequenced { .. })).count();
        Ok(summary)
    }

    /// Stops every session and the server.
    pub async fn stop(self) {
        for observer in &self.observers {
            observer.push.stop();
        }
        self.office.stop();
        for c in &self.couriers {
            c.session.stop();
        }
        self.server.stop().await;
    }
}

/// A subscriber that only listens, and what it heard.
struct Observer {
    topic: Topic,
    /// Listening as the office (alerts included), or as a courier.
    office: bool,
    push: PushClient,
    seen: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Observer {
    fn start(api: &ApiClient, topic: Topic) -> Result<Observer> {
        let (push, mut events) = PushClient::start_after(
            api.clone(),
            Arc::new(MemoryStore::default()),
            vec![topic],
            0,
            PushSettings { backoff: Backoff::fast(), ..PushSettings::default() },
        )?;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let heard = seen.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let PushEvent::Event(event) = event {
                    heard.lock().unwrap_or_else(|e| e.into_inner()).push(event.seq);
                }
            }
        });
        let office = matches!(topic, Topic::Merchant(_));
        Ok(Observer { topic, office, push, seen })
    }

    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Every event of a merchant, as a new subscriber replays it from the start.
async fn replay(api: &ApiClient, merchant: MerchantId) -> Result<Vec<StreamEvent>> {
    let (push, mut events) = PushClient::start_after(
        api.clone(),
        Arc::new(MemoryStore::default()),
        vec![Topic::Merchant(merchant)],
        0,
        PushSettings { backoff: Backoff::fast(), ..PushSettings::default() },
    )?;
    let mut all = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(PushEvent::Event(event))) => all.push(*event),
            Ok(Some(PushEvent::CaughtUp { .. })) => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => anyhow::bail!("the replay of the merchant's stream did not finish"),
        }
    }
    push.stop();
    Ok(all)
}
