//! The merchant app (Tauri v2) as the office uses it, in a real window under
//! Xvfb driven through WebDriver (`tauri-driver` in front of Debian's
//! `WebKitWebDriver`), against a real server: log in, watch a new paid order
//! appear on the board, pick and pack it, hand it to a courier and dispatch
//! it, see the exception alert arrive live when the courier reports damage,
//! acknowledge it and resume the delivery, offer a substitute for a short
//! line — each step checked on the server; the exception alert also reaches
//! a real notification daemon on the virtual display.
//! Screenshots go to `$CARGO_TARGET_DIR/e2e-artifacts/merchant-*.png`.
//!
//! Needs the app (`TEST_XIANLU_MERCHANT_APP`), `tauri-driver` and Xvfb:
//! `cargo xtask test` provides them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use serde_json::{Value, json};
use xianlu_tests::{Backend, Client, KillOnDrop, Shop, TestServer, VirtualDisplay};

const PASSWORD: &str = "owner-wang-2030";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A W3C WebDriver session with the app.
struct Driver {
    http: reqwest::Client,
    url: String,
}

impl Driver {
    async fn start(port: u16, application: &str) -> Result<Driver> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {"tauri:options": {"application": application}}}});
        let started = Instant::now();
        let reply: Value = loop {
            match http.post(format!("{base}/session")).json(&caps).send().await {
                Ok(reply) => break reply.json().await?,
                Err(_) if started.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => bail!("tauri-driver did not answer: {e}"),
            }
        };
        let session = reply["value"]["sessionId"].as_str().with_context(|| format!("no session: {reply}"))?;
        Ok(Driver { http, url: format!("{base}/session/{session}") })
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let reply: Value = self.http.post(format!("{}{path}", self.url)).json(&body).send().await?.json().await?;
        if reply["value"]["error"].is_string() {
            bail!("{path}: {}", reply["value"]);
        }
        Ok(reply["value"].clone())
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let reply: Value = self.http.get(format!("{}{path}", self.url)).send().await?.json().await?;
        Ok(reply["value"].clone())
    }

    /// The first element matching `css`, waiting up to 20 s for it.
    async fn find(&self, css: &str) -> Result<String> {
        let started = Instant::now();
        loop {
            let found = self.post("/element", json!({"using": "css selector", "value": css})).await;
            if let Ok(element) = &found
                && let Some(id) = element[ELEMENT].as_str()
            {
                return Ok(id.to_owned());
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("no {css} on the screen: {found:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn click(&self, css: &str) -> Result<()> {
        eprintln!("click {css}");
        let element = self.find(css).await?;
        self.post(&format!("/element/{element}/click"), json!({})).await?;
        Ok(())
    }

    async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        eprintln!("type into {css}");
        let element = self.find(css).await?;
        self.post(&format!("/element/{element}/clear"), json!({})).await?;
        self.post(&format!("/element/{element}/value"), json!({"text": text})).await?;
        Ok(())
    }

    async fn text(&self, css: &str) -> Result<String> {
        let element = self.find(css).await?;
        Ok(self.get(&format!("/element/{element}/text")).await?.as_str().unwrap_or_default().to_owned())
    }

    /// Waits until the text of `css` satisfies `ok`.
    async fn until_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> Result<String> {
        let started = Instant::now();
        loop {
            let text = self.text(css).await.unwrap_or_default();
            if ok(&text) {
                return Ok(text);
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("{css} reads {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> Result<()> {
        // The window may not have drawn the last change yet.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let data = self.get("/screenshot").await?;
        let png = base64::engine::general_purpose::STANDARD.decode(data.as_str().unwrap_or_default())?;
        std::fs::write(xianlu_tests::e2e_artifacts()?.join(format!("{name}.png")), png)?;
        Ok(())
    }

    async fn quit(&self) {
        let _ = self.http.delete(&self.url).send().await;
    }
}

/// Waits until the order's server-side JSON satisfies `ok`.
async fn until_order(admin: &Client, order: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
    let started = Instant::now();
    loop {
        let view = admin.order(order).await?;
        if ok(&view) {
            return Ok(view);
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("{what}: the server has {}", view["status"]);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Resident memory of the app and the WebKit processes it started, in KiB.
fn app_rss_kib() -> u64 {
    let read = |pid: &str, file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.parse::<u32>().is_ok()).collect()
        })
        .unwrap_or_default();
    let parent = |pid: &str| {
        read(pid, "status")
            .lines()
            .find_map(|l| l.strip_prefix("PPid:").map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let apps: Vec<&String> = pids.iter().filter(|p| read(p, "comm").trim() == "xianlu-merchant").collect();
    pids.iter()
        .filter(|p| apps.contains(p) || apps.iter().any(|a| **a == parent(p)))
        .map(|p| {
            read(p, "status")
                .lines()
                .find_map(|l| {
                    l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
                .unwrap_or(0)
        })
        .sum()
}

/// A session bus of the test's own with a real notification daemon (dunst)
/// on the virtual display: what the app's desktop notifications reach.
struct Notifications {
    bus: String,
    _daemon: KillOnDrop,
    _dunst: KillOnDrop,
}

impl Notifications {
    fn start(display: &str) -> Result<Notifications> {
        use std::io::BufRead;
        let mut daemon = std::process::Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("dbus-daemon")?;
        let mut bus = String::new();
        std::io::BufReader::new(daemon.stdout.take().context("the bus's address")?).read_line(&mut bus)?;
        let daemon = KillOnDrop(daemon);
        let bus = bus.trim().to_owned();
        let dunst = std::process::Command::new("dunst")
            .env("DISPLAY", display)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("dunst (cargo xtask setup installs it)")?;
        Ok(Notifications { bus, _daemon: daemon, _dunst: KillOnDrop(dunst) })
    }

    /// Every notification shown so far, as dunst's history (those still on
    /// screen are closed first, which moves them there).
    fn shown(&self) -> String {
        let dunstctl = |args: &[&str]| {
            std::process::Command::new("dunstctl")
                .args(args)
                .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        dunstctl(&["close-all"]);
        dunstctl(&["history"])
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_office_follows_an_order_on_the_board_and_handles_its_exception_alert() -> Result<()> {
    let Ok(app) = std::env::var("TEST_XIANLU_MERCHANT_APP") else {
        bail!("TEST_XIANLU_MERCHANT_APP is not set: run `cargo xtask test`, which builds the merchant app first");
    };
    let server = TestServer::spawn(Backend::Sqlite).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let courier = shop.couriers[0].clone();
    let owner =
        json!({"username": "owner.wang", "password": PASSWORD, "role": "merchant_owner", "merchantId": shop.merchant});
    admin.ok("/api/v1/admin/users", &owner).await?;

    let screen = VirtualDisplay::start("1280x800x24").await?;
    let display = screen.name.clone();
    let notifications = Notifications::start(&display)?;
    let (port, native) = (free_port()?, free_port()?);
    let data: PathBuf = server.db.dir.clone().context("test dir")?.join("merchant-app");
    let _driver = KillOnDrop(
        std::process::Command::new("tauri-driver")
            .args(["--port", &port.to_string(), "--native-port", &native.to_string()])
            .env("DISPLAY", &display)
            .env("XIANLU_SERVER", &server.url)
            .env("XIANLU_MERCHANT_DATA", &data)
            .env("DBUS_SESSION_BUS_ADDRESS", &notifications.bus)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("tauri-driver is needed (cargo xtask setup installs it)")?,
    );
    let launched = Instant::now();
    let ui = Driver::start(port, &app).await?;
    let result = async {
        // Log in as the owner. How long the window took to show the form, and its memory, for the benchmarks.
        ui.find("#xl-login").await?;
        let started = launched.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let figures = format!(
            "cold start to the log-in form: {:.2} s; resident memory (app + WebKit): {} MiB\n",
            started.as_secs_f64(),
            app_rss_kib() / 1024
        );
        eprint!("{figures}");
        std::fs::write(xianlu_tests::e2e_artifacts()?.join("merchant-startup.txt"), figures)?;
        ui.screenshot("merchant-login").await?;
        ui.type_into("#xl-server", &server.url).await?;
        ui.type_into("#xl-username", "owner.wang").await?;
        ui.type_into("#xl-password", PASSWORD).await?;
        ui.click("#xl-login").await?;
        ui.find("#xl-board").await?;

        // A new paid order appears on the board, live.
        let order = shop.place(&admin, &shop.spinach()).await?;
        shop.pay(&admin, &order).await?;
        let number = admin.order(&order).await?["orderId"].as_str().context("number")?.to_owned();
        let card = format!("[data-column=\"Paid\"] .xl-card[data-order=\"{number}\"]");
        ui.find(&card).await?;
        ui.until_text("[data-column=\"Paid\"] .xl-count", |t| t == "1").await?;
        ui.screenshot("merchant-board").await?;

        // Picked, packed, handed to a courier and dispatched from its detail.
        ui.click(&card).await?;
        ui.click("#xl-do-start-picking").await?;
        until_order(&admin, &order, "picking", |v| v["status"] == "PICKING").await?;
        ui.click(".xl-do-record-pick").await?;
        until_order(&admin, &order, "picked", |v| v["order"]["lines"][0]["picked"].is_object()).await?;
        ui.click("#xl-do-pack").await?;
        until_order(&admin, &order, "packed", |v| v["status"] == "PACKED").await?;
        ui.click(&format!("#xl-courier-pick option[value=\"{courier}\"]")).await?;
        ui.click("#xl-do-assign").await?;
        until_order(&admin, &order, "assigned", |v| v["order"]["courierId"] == courier.as_str()).await?;
        ui.click("#xl-do-dispatch").await?;
        until_order(&admin, &order, "out for delivery", |v| v["status"] == "DELIVERING").await?;
        ui.find(&format!("[data-column=\"Delivering\"] .xl-card[data-order=\"{number}\"]")).await?;
        ui.screenshot("merchant-detail").await?;

        // The courier reports damage: the alert arrives live.
        let courier_client = server.client(&format!("courier:{courier}"));
        courier_client
            .command(&order, json!({"type": "REPORT_EXCEPTION", "kind": "DAMAGED_IN_TRANSIT", "note": "箱子压坏"}))
            .await?;
        ensure!(admin.post("/api/v1/admin/rules/sweep", &json!({})).await?.status == 204);
        ui.find(&format!("[data-column=\"Exception\"] .xl-card[data-order=\"{number}\"] .xl-alert-count")).await?;
        ui.until_text("#xl-tab-alerts", |t| t.contains("(1)")).await?;
        ui.click("#xl-tab-alerts").await?;
        ui.find(".xl-ack").await?;
        ui.screenshot("merchant-alerts").await?;
        // A high-severity alert also reaches the desktop's notification daemon.
        let started = Instant::now();
        loop {
            let shown = notifications.shown();
            if shown.contains(&number) && shown.contains("鲜路") {
                break;
            }
            ensure!(started.elapsed() < Duration::from_secs(20), "no desktop notification for {number}: {shown}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ui.click(".xl-ack").await?;
        let alerts = format!("/api/v1/merchants/{}/alerts", shop.merchant);
        let started = Instant::now();
        loop {
            let list = admin.get(&alerts).await?.json();
            let acknowledged = list
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["orderId"] == order.as_str() && x["acknowledgedAt"].is_string()));
            if acknowledged {
                break;
            }
            ensure!(started.elapsed() < Duration::from_secs(20), "not acknowledged: {list}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ui.until_text("#xl-tab-alerts", |t| t.contains("(0)")).await?;

        // Resolved: the delivery goes on.
        ui.click("#xl-tab-board").await?;
        ui.click(&format!("[data-column=\"Exception\"] .xl-card[data-order=\"{number}\"]")).await?;
        ui.click("#xl-do-resume").await?;
        until_order(&admin, &order, "resumed", |v| v["status"] == "DELIVERING").await?;
        ui.find(&format!("[data-column=\"Delivering\"] .xl-card[data-order=\"{number}\"]")).await?;
        ui.screenshot("merchant-resolved").await?;

        // The couriers on the map: the one with the order aboard, whose route is locked from here.
        let fix = json!({"fixes": [{"deviceSeq": 1, "at": chrono::Utc::now(), "lat": 39.95, "lng": 116.46, "accuracyM": 5.0}]});
        courier_client.ok(&format!("/api/v1/couriers/{courier}/positions"), &fix).await?;
        ui.click("#xl-tab-couriers").await?;
        let row = format!("#xl-couriers li[data-courier=\"{courier}\"]");
        ui.until_text(&row, |t| t.contains("张三")).await?;
        ui.click(&row).await?;
        ui.click(&format!("{row} .xl-lock")).await?;
        let couriers = format!("/api/v1/merchants/{}/couriers", shop.merchant);
        let started = Instant::now();
        loop {
            let list = admin.get(&couriers).await?.json();
            let locked = list
                .as_array()
                .is_some_and(|a| a.iter().any(|c| c["courierId"] == courier.as_str() && c["locked"] == true));
            if locked {
                break;
            }
            ensure!(started.elapsed() < Duration::from_secs(20), "the route was not locked: {list}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ui.find("#xl-map").await?;
        ui.screenshot("merchant-couriers").await?;

        // Nobody at the door: the office sends it again tomorrow, same window.
        let window = admin.order(&order).await?["order"]["requestedWindow"]["start"].clone();
        courier_client.command(&order, json!({"type": "RECORD_FAILED_ATTEMPT", "reason": "CUSTOMER_ABSENT"})).await?;
        ui.click("#xl-tab-board").await?;
        ui.click(&format!("[data-column=\"Exception\"] .xl-card[data-order=\"{number}\"]")).await?;
        ui.click("#xl-do-redeliver").await?;
        let again = until_order(&admin, &order, "redelivery", |v| v["status"] == "PACKED").await?;
        let (before, after): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = (
            serde_json::from_value(window)?,
            serde_json::from_value(again["order"]["requestedWindow"]["start"].clone())?,
        );
        ensure!(after - before == chrono::Duration::days(1), "{before} → {after}");

        // 60 kg of spinach with less on hand: the office offers bok choy instead, at its own price.
        admin
            .put(
                &format!("/api/v1/warehouses/{}/stock/BOK-CHOY", shop.warehouse),
                &json!({"name": "上海青", "dimension": "grams", "onHandBase": 80_000}),
            )
            .await?;
        let short = shop
            .place(
                &admin,
                &shop.draft(json!([{"sku": "SPINACH", "name": "有机菠菜", "quantity": 60, "unit": "kg", "price": {"fen": 350, "per": "jin"}}])),
            )
            .await?;
        shop.pay(&admin, &short).await?;
        let short_number = admin.order(&short).await?["orderId"].as_str().context("number")?.to_owned();
        ui.click(&format!("[data-column=\"OutOfStock\"] .xl-card[data-order=\"{short_number}\"]")).await?;
        ui.until_text(".xl-shortfall", |t| t.contains("订 60 公斤 · 可拣")).await?;
        ui.until_text(".xl-substitute-sku", |t| t.contains("上海青")).await?;
        ui.type_into(".xl-substitute-price", "320").await?;
        ui.screenshot("merchant-substitute").await?;
        ui.click(".xl-do-substitute").await?;
        let offered = until_order(&admin, &short, "substitute offered", |v| {
            v["order"]["lines"][0]["shortage"]["resolution"].to_string().contains("BOK-CHOY")
        })
        .await?;
        let resolution = &offered["order"]["lines"][0]["shortage"]["resolution"];
        ensure!(resolution.to_string().contains("320"), "the price the clerk typed: {resolution}");
        ui.until_text(".xl-substitute-offered", |t| t.contains("有机菠菜 → 上海青")).await?;
        ui.screenshot("merchant-substitute-offered").await?;
        let after = format!("resident memory after the steps above: {} MiB\n", app_rss_kib() / 1024);
        eprint!("{after}");
        let path = xianlu_tests::e2e_artifacts()?.join("merchant-startup.txt");
        let before = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, before + &after)?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if result.is_err() {
        let _ = ui.screenshot("merchant-failure").await;
    }
    ui.quit().await;
    server.stop().await;
    result
}
