//! Test helpers that read like the user: spawn a real server on a real port
//! (SQLite in a temporary directory, or a fresh PostgreSQL database), talk to
//! it over HTTP and WebSocket, and clean up afterwards.

pub mod chaos;
pub mod sim;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use xianlu_server::Server;
use xianlu_server::clock::ShiftedClock;
use xianlu_server::config::Config;

/// An HTTP client. The workspace's reqwest uses rustls without a built-in
/// crypto provider (the client core brings ring, as the server does).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Runs each named `async fn(Backend) -> Result<()>` of the calling test
/// file as two tests, `sqlite::NAME` and `postgres::NAME`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(xianlu_tests::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(xianlu_tests::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Where browser and window tests put their screenshots: `$CARGO_TARGET_DIR/e2e-artifacts`.
pub fn e2e_artifacts() -> Result<PathBuf> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    let dir = target.join("e2e-artifacts");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A child process killed (and reaped) when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An Xvfb display of its own for a window test; closed when dropped.
pub struct VirtualDisplay {
    _xvfb: KillOnDrop,
    /// `:N`, for `DISPLAY`.
    pub name: String,
}

impl VirtualDisplay {
    /// Starts Xvfb on the first display number it can take (Xvfb's own lock
    /// decides, so tests running side by side never share one).
    pub async fn start(size: &str) -> Result<VirtualDisplay> {
        for n in 50..250u32 {
            if std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists() {
                continue;
            }
            let name = format!(":{n}");
            let mut child = std::process::Command::new("Xvfb")
                .args([name.as_str(), "-screen", "0", size, "-nolisten", "tcp"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("Xvfb is needed (cargo xtask setup installs it)")?;
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
            for _ in 0..100 {
                if child.try_wait()?.is_some() {
                    break;
                }
                if socket.exists() {
                    return Ok(VirtualDisplay { _xvfb: KillOnDrop(child), name });
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!("no free X display")
    }
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const PAYMENT_SECRET: &str = "test-gateway-secret";

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_XIANLU_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    pub dir: Option<PathBuf>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn create(backend: Backend) -> Result<TestDb> {
        let unique = uuid::Uuid::now_v7().simple().to_string();
        // Every test server gets its own directory (the SQLite file, the personal-data key file).
        let dir = std::env::temp_dir().join(format!("xianlu-test-{unique}"));
        std::fs::create_dir_all(&dir)?;
        match backend {
            Backend::Sqlite => Ok(TestDb {
                url: format!("sqlite://{}", dir.join("xianlu.db").display()),
                dir: Some(dir),
                pg_name: None,
            }),
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let prefix = std::env::var("TEST_XIANLU_DB_PREFIX").unwrap_or_else(|_| "xianlu_t".into());
                let name = format!("{prefix}_{unique}");
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.with_context(|| {
                    format!("PostgreSQL at {admin} does not answer; start it or set TEST_XIANLU_POSTGRES_URL")
                })?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
                let url = match admin.rfind('/') {
                    Some(i) => format!("{}/{name}", &admin[..i]),
                    None => bail!("TEST_XIANLU_POSTGRES_URL must end in /DATABASE"),
                };
                Ok(TestDb { url, dir: Some(dir), pg_name: Some(name) })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside async code: use a thread with its own runtime.
            let admin = postgres_admin_url();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async move {
                    if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
                        let _ =
                            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                                .execute(&mut conn)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Configuration for a test server on `db`.
pub fn test_config(db: &TestDb) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("a valid address"),
        data_dir: db.dir.clone().unwrap_or_else(std::env::temp_dir),
        database_url: Some(db.url.clone()),
        payment_webhook_secret: Some(PAYMENT_SECRET.into()),
        sqlite_synchronous: "NORMAL".into(),
        // The test profile: requests may name their actor in the development header.
        dev_actor_header: true,
        ..Config::default()
    }
}

/// A real server on a real port. Stop it with [`TestServer::stop`]; the
/// database goes when the value is dropped.
pub struct TestServer {
    pub server: Option<Server>,
    pub url: String,
    pub db: TestDb,
    pub config: Config,
    /// Business time, which a test may move forward (`advance_clock`).
    pub clock: Arc<ShiftedClock>,
}

impl TestServer {
    pub async fn spawn(backend: Backend) -> Result<TestServer> {
        let db = TestDb::create(backend).await?;
        Self::spawn_with(db, |_| {}).await
    }

    pub async fn spawn_with(db: TestDb, adjust: impl FnOnce(&mut Config)) -> Result<TestServer> {
        // `XIANLU_TEST_LOG=debug` shows the server's log while a test runs.
        if let Ok(filter) = std::env::var("XIANLU_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let mut config = test_config(&db);
        adjust(&mut config);
        let clock = Arc::new(ShiftedClock::default());
        let server = Server::start(config.clone(), clock.clone()).await?;
        let url = server.url();
        Ok(TestServer { server: Some(server), url, db, config, clock })
    }

    /// Stops the server and starts it again on the same database (on a new port).
    pub async fn restart(&mut self) -> Result<()> {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        let server = Server::start(self.config.clone(), self.clock.clone()).await?;
        self.url = server.url();
        self.server = Some(server);
        Ok(())
    }

    pub fn client(&self, actor: &str) -> Client {
        Client::new(&self.url, actor)
    }

    /// Moves the server's business time forward (windows, rules, ETAs; never tokens).
    /// Imports a road network with the server's command line (`exe`: the
    /// server under test, `env!("CARGO_BIN_EXE_xianlu-server-under-test")`)
    /// into this server's database, and restarts the server to load it.
    pub async fn import_map(&mut self, exe: &str, args: &[&str]) -> Result<()> {
        let imported = tokio::process::Command::new(exe)
            .arg("import-map")
            .args(args)
            .env("XIANLU_DATABASE_URL", &self.db.url)
            .env("RUST_LOG", "warn")
            .output()
            .await?;
        ensure!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
        self.restart().await
    }

    /// A server on SQLite that serves the apps' web builds (from
    /// `TEST_XIANLU_CUSTOMER_WEB` and `TEST_XIANLU_COURIER_WEB`, which `cargo
    /// xtask test` sets; `needed` names the one the test cannot do without)
    /// over a generated city on this part of Beijing, for the maps' roads.
    /// `exe` is the server under test, as for [`TestServer::import_map`].
    pub async fn serving_apps(exe: &str, needed: &str) -> Result<TestServer> {
        let dir = |name: &str| std::env::var(name).ok().map(PathBuf::from);
        if dir(needed).is_none() {
            bail!("{needed} is not set: run `cargo xtask test`, which builds the apps' web builds first");
        }
        let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/node_modules/playwright-core");
        ensure!(e2e.exists(), "run `npm ci --prefix tests/e2e` (cargo xtask test does)");
        let db = TestDb::create(Backend::Sqlite).await?;
        let mut server = TestServer::spawn_with(db, |c| {
            c.customer_web_dir = dir("TEST_XIANLU_CUSTOMER_WEB");
            c.courier_web_dir = dir("TEST_XIANLU_COURIER_WEB");
        })
        .await?;
        server.import_map(exe, &["--generate", "7", "--size", "100"]).await?;
        Ok(server)
    }

    /// Makes every tracking link of this server's database expire now
    /// (links expire on wall-clock time, which tests cannot move).
    pub async fn expire_tracking_links(&self) -> Result<()> {
        let sql = "UPDATE tracking_links SET expires_at = created_at";
        if self.db.url.starts_with("sqlite") {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.db.url).await?;
            sqlx::query(sql).execute(&mut conn).await?;
        } else {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.db.url).await?;
            sqlx::query(sql).execute(&mut conn).await?;
        }
        Ok(())
    }

    pub fn advance_clock(&self, by: chrono::Duration) {
        self.clock.advance(by);
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

/// An HTTP response as a test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub bytes: Vec<u8>,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Result<Reply> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let bytes = response.bytes().await?.to_vec();
        Ok(Reply { status, content_type, bytes, headers })
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    /// The problem document's code, if this is one.
    pub fn code(&self) -> String {
        assert_eq!(self.content_type, "application/problem+json", "expected a problem document: {self:?}");
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// How a client says who it is.
#[derive(Clone)]
enum Credential {
    /// The development header of a server started for tests.
    DevActor(String),
    /// An access token from logging in.
    Bearer(String),
}

/// A client that speaks for one actor.
#[derive(Clone)]
pub struct Client {
    base: String,
    credential: Credential,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, actor: &str) -> Client {
        Client { base: base.to_owned(), credential: Credential::DevActor(actor.to_owned()), http: http_client() }
    }

    pub fn with_token(base: &str, access_token: &str) -> Client {
        Client { base: base.to_owned(), credential: Credential::Bearer(access_token.to_owned()), http: http_client() }
    }

    /// Logs in and returns a client that uses the access token, with the whole answer.
    pub async fn login(base: &str, username: &str, password: &str) -> Result<(Client, Value)> {
        let response = http_client()
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("login as {username} answered {status}: {body}");
        }
        let token = body["accessToken"].as_str().context("access token")?.to_owned();
        Ok((Client::with_token(base, &token), body))
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Credential::DevActor(actor) => request.header("x-xianlu-dev-actor", actor),
            Credential::Bearer(token) => request.bearer_auth(token),
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Result<Reply> {
        let mut request = self.authorize(self.http.request(method, format!("{}{path}", self.base)));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        Reply::from(response).await
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &'static str,
        content_type: &str,
    ) -> Result<Reply> {
        let response = self
            .authorize(self.http.request(method, format!("{}{path}", self.base)))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        Reply::from(response).await
    }

    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply> {
        self.send(reqwest::Method::POST, path, Some(body), None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Reply> {
        self.send(reqwest::Method::PUT, path, Some(body), None).await
    }

    /// POSTs and insists on a 2xx answer, returning its JSON.
    pub async fn ok(&self, path: &str, body: &Value) -> Result<Value> {
        let reply = self.post(path, body).await?;
        if !(200..300).contains(&reply.status) {
            bail!("POST {path} answered {}: {}", reply.status, String::from_utf8_lossy(&reply.bytes));
        }
        Ok(reply.json())
    }

    /// Sends a command to an order and insists that it is accepted.
    pub async fn command(&self, order: &str, command: Value) -> Result<Value> {
        self.ok(&format!("/api/v1/orders/{order}/commands"), &json!({ "command": command })).await
    }

    pub async fn command_reply(&self, order: &str, command: Value, expected_version: Option<u64>) -> Result<Reply> {
        let mut body = json!({ "command": command });
        if let Some(v) = expected_version {
            body["expectedVersion"] = json!(v);
        }
        self.post(&format!("/api/v1/orders/{order}/commands"), &body).await
    }

    pub async fn order(&self, order: &str) -> Result<Value> {
        let reply = self.get(&format!("/api/v1/orders/{order}")).await?;
        if reply.status != 200 {
            bail!("GET order answered {}", reply.status);
        }
        Ok(reply.json())
    }
}

/// A merchant with a warehouse, stock, two customers (prepaid and on credit)
/// and two couriers, created through the API.
pub struct Shop {
    pub merchant: String,
    pub warehouse: String,
    pub prepaid_customer: String,
    pub credit_customer: String,
    pub contact: String,
    pub couriers: Vec<String>,
}

/// Captures a signature with the client core and uploads it to the order;
/// returns its digest, for the `SIGN` command. `seed` varies the strokes.
pub async fn upload_signature(client: &Client, order: &str, seed: u32) -> Result<String> {
    let mut capture = xianlu_core::signature::SignatureCapture::new(400.0, 200.0);
    capture.begin_stroke();
    for i in 0..30u32 {
        let y = if (i + seed).is_multiple_of(2) { 50.0 } else { 150.0 } + (seed % 7) as f32;
        capture.add_point(xianlu_core::signature::StrokePoint {
            x: 20.0 + i as f32 * 12.0,
            y,
            t_ms: i * 15,
            pressure: 0.5,
        });
    }
    let evidence = capture.finish(chrono::Utc::now(), None)?;
    let reply = client
        .put(&format!("/api/v1/orders/{order}/evidence/{}", evidence.sha256), &serde_json::to_value(evidence.upload())?)
        .await?;
    if !(reply.status == 201 || reply.status == 200) {
        bail!("signature upload answered {}: {}", reply.status, reply.json());
    }
    Ok(evidence.sha256)
}

impl Shop {
    pub async fn open(admin: &Client) -> Result<Shop> {
        Self::open_with_vans(admin, true).await
    }

    /// A shop whose two couriers drive refrigerated vans or plain ones.
    pub async fn open_with_vans(admin: &Client, refrigerated: bool) -> Result<Shop> {
        let merchant = admin
            .ok("/api/v1/merchants", &json!({"name": "快驴鲜品", "orderPrefix": "KL", "timeZone": "Asia/Shanghai"}))
            .await?["id"]
            .as_str()
            .context("merchant id")?
            .to_owned();
        let warehouse = admin
            .ok(
                &format!("/api/v1/merchants/{merchant}/warehouses"),
                &json!({"name": "北京一号仓", "address": "北京市朝阳区酒仙桥路 1 号", "location": {"lat": 39.97, "lng": 116.49}}),
            )
            .await?["id"]
            .as_str()
            .context("warehouse id")?
            .to_owned();
        let prepaid = admin
            .ok(
                &format!("/api/v1/merchants/{merchant}/customers"),
                &json!({"businessName": "老王饭店", "kind": "RESTAURANT", "address": "北京市东城区东四北大街 8 号",
                        "location": {"lat": 39.93, "lng": 116.42}, "paymentTerms": {"kind": "PREPAID"},
                        "contacts": [{"name": "王五", "phone": "13800000001"}]}),
            )
            .await?;
        let credit = admin
            .ok(
                &format!("/api/v1/merchants/{merchant}/customers"),
                &json!({"businessName": "湘味小馆", "kind": "RESTAURANT", "address": "北京市西城区西单北大街 2 号",
                        "location": {"lat": 39.91, "lng": 116.37}, "paymentTerms": {"kind": "CREDIT", "days": 30}}),
            )
            .await?;
        let mut couriers = Vec::new();
        for (name, phone) in [("张三", "13812340001"), ("李四", "13812340002")] {
            let c = admin
                .ok(
                    &format!("/api/v1/merchants/{merchant}/couriers"),
                    &json!({"name": name, "phone": phone, "vehicle": if refrigerated { "冷藏三轮车" } else { "三轮车" },
                            "refrigerated": refrigerated}),
                )
                .await?;
            let id = c["id"].as_str().context("courier id")?.to_owned();
            // At work, so plans may give them orders.
            let duty = admin.put(&format!("/api/v1/couriers/{id}/duty"), &json!({"onDuty": true})).await?;
            ensure!(duty.status == 200, "on duty: {}", duty.status);
            couriers.push(id);
        }
        for (sku, name, dimension, on_hand) in [
            ("SPINACH", "有机菠菜", "grams", 50_000),
            ("PORK-BELLY", "五花肉", "grams", 20_000),
            ("EGG-TRAY", "鸡蛋 (30 枚/盘)", "pieces", 40),
            ("RIBS-BOX", "猪肋排 (5 kg/箱)", "pieces", 10),
            ("BOK-CHOY", "上海青", "grams", 30_000),
        ] {
            let reply = admin
                .put(
                    &format!("/api/v1/warehouses/{warehouse}/stock/{sku}"),
                    &json!({"name": name, "dimension": dimension, "onHandBase": on_hand}),
                )
                .await?;
            if reply.status != 200 {
                bail!("stock {sku}: {}", reply.status);
            }
        }
        Ok(Shop {
            merchant,
            warehouse,
            prepaid_customer: prepaid["id"].as_str().context("customer id")?.to_owned(),
            contact: prepaid["contactIds"][0].as_str().context("contact id")?.to_owned(),
            credit_customer: credit["id"].as_str().context("customer id")?.to_owned(),
            couriers,
        })
    }

    /// An order draft for the prepaid customer.
    pub fn draft(&self, lines: Value) -> Value {
        json!({
            "merchantId": self.merchant,
            "warehouseId": self.warehouse,
            "customerId": self.prepaid_customer,
            "contactId": self.contact,
            "requestedWindow": {"start": "2030-06-01T01:00:00Z", "end": "2030-06-01T03:00:00Z"},
            "notes": "后门卸货",
            "paymentTerms": {"kind": "PREPAID"},
            "lines": lines,
        })
    }

    /// Two kilograms of spinach priced per 斤.
    pub fn spinach(&self) -> Value {
        self.draft(json!([{"sku": "SPINACH", "name": "有机菠菜", "quantity": 2, "unit": "kg", "price": {"fen": 350, "per": "jin"}}]))
    }

    /// Pays an order as the office does (cash, by the admin).
    pub async fn pay(&self, admin: &Client, order: &str) -> Result<()> {
        admin.command(order, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
        Ok(())
    }

    /// Takes a paid 2 kg spinach order through picking and packing to
    /// `courier`, and out for delivery.
    pub async fn send_out(&self, admin: &Client, order: &str, courier: &str) -> Result<()> {
        for command in [
            json!({"type": "START_PICKING"}),
            json!({"type": "RECORD_PICK", "lineNo": 1, "base": 2000}),
            json!({"type": "PACK"}),
            json!({"type": "ASSIGN_COURIER", "courierId": courier}),
            json!({"type": "DISPATCH"}),
        ] {
            admin.command(order, command).await?;
        }
        Ok(())
    }

    /// A paid 2 kg spinach order, picked, packed and assigned to `courier`.
    pub async fn packed(&self, admin: &Client, courier: &str) -> Result<String> {
        let order = self.place(admin, &self.spinach()).await?;
        self.pay(admin, &order).await?;
        for command in [
            json!({"type": "START_PICKING"}),
            json!({"type": "RECORD_PICK", "lineNo": 1, "base": 2000}),
            json!({"type": "PACK"}),
            json!({"type": "ASSIGN_COURIER", "courierId": courier}),
        ] {
            admin.command(&order, command).await?;
        }
        Ok(order)
    }

    /// The merchant plans by itself from now on: a re-plan `debounce_s` after
    /// a change, one second to plan.
    pub async fn plan_by_itself(&self, admin: &Client, debounce_s: u32) -> Result<()> {
        let settings = format!("/api/v1/merchants/{}/operations", self.merchant);
        let mut automatic = admin.get(&settings).await?.json();
        automatic["autoPlan"] = json!(true);
        automatic["planDebounceSeconds"] = json!(debounce_s);
        automatic["planSeconds"] = json!(1);
        ensure!(admin.put(&settings, &automatic).await?.status == 200, "operations settings");
        Ok(())
    }

    /// A login for one of the couriers.
    pub async fn courier_login(&self, admin: &Client, courier: &str, username: &str, password: &str) -> Result<()> {
        let user = json!({"username": username, "password": password, "role": "courier", "courierId": courier});
        admin.ok("/api/v1/admin/users", &user).await?;
        Ok(())
    }

    pub async fn place(&self, client: &Client, draft: &Value) -> Result<String> {
        let order = client.ok("/api/v1/orders", draft).await?;
        Ok(order["id"].as_str().context("order id")?.to_owned())
    }
}

/// A push-stream connection.
pub struct Stream {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Stream {
    /// Connects as a development actor (servers started for tests).
    pub async fn connect(base: &str, actor: &str) -> Result<Stream> {
        Self::open(format!("{}/api/v1/stream?actor={actor}", base.replacen("http://", "ws://", 1))).await
    }

    /// Connects with an access token.
    pub async fn connect_with_token(base: &str, access_token: &str) -> Result<Stream> {
        Self::open(format!("{}/api/v1/stream?token={access_token}", base.replacen("http://", "ws://", 1))).await
    }

    async fn open(url: String) -> Result<Stream> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Stream { ws })
    }

    pub async fn send(&mut self, message: Value) -> Result<()> {
        self.ws.send(Message::Text(message.to_string().into())).await?;
        Ok(())
    }

    pub async fn subscribe(&mut self, topics: Value, after: Option<u64>) -> Result<Value> {
        let mut message = json!({"type": "SUBSCRIBE", "topics": topics});
        if let Some(after) = after {
            message["after"] = json!(after);
        }
        self.send(message).await?;
        let reply = self.next().await?;
        if reply["type"] != "SUBSCRIBED" {
            bail!("expected SUBSCRIBED, got {reply}");
        }
        Ok(reply)
    }

    /// The next message, or an error after five seconds of silence.
    pub async fn next(&mut self) -> Result<Value> {
        self.next_within(Duration::from_secs(5)).await
    }

    pub async fn next_within(&mut self, wait: Duration) -> Result<Value> {
        loop {
            let message = tokio::time::timeout(wait, self.ws.next())
                .await
                .context("no message from the stream in time")?
                .context("the stream closed")??;
            if let Message::Text(text) = message {
                return Ok(serde_json::from_str(text.as_str())?);
            }
        }
    }

    /// Collects EVENT messages until `count` arrived.
    pub async fn events(&mut self, count: usize) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        while out.len() < count {
            let message = self.next().await?;
            match message["type"].as_str() {
                Some("EVENT") => out.push(message),
                Some("CAUGHT_UP") | Some("PONG") => {}
                _ => bail!("unexpected message {message}"),
            }
        }
        Ok(out)
    }

    /// True if nothing arrives within `wait`.
    pub async fn is_quiet(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.ws.next()).await.is_err()
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Signs a generic-gateway payment notification.
pub fn signed_notification(body: &str, timestamp: i64) -> String {
    xianlu_server::payments::sign(PAYMENT_SECRET, timestamp, body.as_bytes())
}

/// A fresh random secret (passwords, shared keys), hex.
pub fn random_secret() -> String {
    use rand::Rng;
    let mut bytes = [0u8; 24];
    rand::rng().fill(&mut bytes);
    hex::encode(bytes)
}

/// Pays an order as the payment gateway does: a notification signed with
/// the gateway's shared `secret`, sent to the server at `base`.
pub async fn pay_by_gateway(base: &str, secret: &str, order: &str, amount_fen: i64, reference: &str) -> Result<()> {
    let body =
        json!({"orderId": order, "reference": reference, "amountFen": amount_fen, "status": "SUCCEEDED"}).to_string();
    // The gateway's clock: notifications are checked against the wall clock.
    let now = chrono::Utc::now().timestamp();
    let signature = xianlu_server::payments::sign(secret, now, body.as_bytes());
    let reply = http_client()
        .post(format!("{base}/api/v1/payments/generic/notifications"))
        .header("content-type", "application/json")
        .header("x-xianlu-timestamp", now.to_string())
        .header("x-xianlu-signature", signature)
        .body(body)
        .send()
        .await?;
    ensure!(reply.status().is_success(), "the payment notification was refused: {}", reply.text().await?);
    Ok(())
}

/// A real `xianlu-server` process, killed when dropped.
pub struct ServerProcess {
    process: tokio::process::Child,
    pub url: String,
    logs: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Starts `program` listening on a free port with the given `XIANLU_…` settings.
    pub async fn start(program: &std::path::Path, settings: &[(&str, &str)]) -> Result<ServerProcess> {
        use tokio::io::AsyncBufReadExt;
        let dir = std::env::temp_dir().join(format!("xianlu-process-{}", uuid::Uuid::now_v7().simple()));
        let mut command = tokio::process::Command::new(program);
        command
            .env("XIANLU_LISTEN", "127.0.0.1:0")
            .env("XIANLU_DATA_DIR", &dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in settings {
            command.env(key, value);
        }
        let mut process = command.spawn().with_context(|| format!("starting {}", program.display()))?;
        // Everything the server logs, kept for inspection.
        let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = process.stderr.take().context("no stderr")?;
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut logs = sink.lock().unwrap_or_else(|e| e.into_inner());
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let stdout = process.stdout.take().context("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .context("the server exited before listening")?;
        let url = line.rsplit(' ').next().unwrap_or_default().to_owned();
        ensure!(url.starts_with("http://"), "unexpected first line {line}");
        Ok(ServerProcess { process, url, logs })
    }

    /// What the server has written to its log so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// Resident memory of the process, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    pub async fn stop(mut self) {
        let _ = self.process.kill().await;
    }
}

/// The machine, for benchmark reports.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok()))
        .map_or(0, |kib| kib / 1024 / 1024);
    format!("{cores} cores ({cpu}), {memory} GiB, {}", std::env::consts::OS)
}

/// The server binary built next to a benchmark binary (the test build, which
/// takes the development actor header).
pub fn server_under_test() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("bench binary has a directory")?.join("xianlu-server-under-test"))
}

/// The `p` quantile of sorted microsecond latencies, in milliseconds.
pub fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
}
