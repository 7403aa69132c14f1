//! The courier app as a courier uses it, in two real windows:
//!
//! - its web build, served by the server at `/courier` and driven in
//!   headless Chromium (`tests/e2e/courier.mjs`): log in, go on duty, see a new
//!   order arrive, pick up, look at the map, deliver with a signature drawn on
//!   the pad and a photo of the signed note, report the next order damaged —
//!   while this test checks each step on the server;
//! - its desktop build in a window under Xvfb, typed into with xdotool: it
//!   logs in and keeps the day on the device.
//!
//! Screenshots go to `$CARGO_TARGET_DIR/e2e-artifacts/`. Needs the web build
//! (`TEST_XIANLU_COURIER_WEB`), the desktop build (`TEST_XIANLU_COURIER_DESKTOP`)
//! and the browser driver (`tests/e2e/node_modules`): `cargo xtask test` provides them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use xianlu_tests::{Backend, KillOnDrop, Shop, TestServer, VirtualDisplay};

const PASSWORD: &str = "菠菜-spinach-2030!";
/// What a keyboard under Xvfb types (xdotool has no input method for 菠菜).
const TYPED_PASSWORD: &str = "spinach-2030-li";

fn evidence_kinds(evidence: &Value) -> Vec<String> {
    evidence
        .as_array()
        .map_or_else(Vec::new, |e| e.iter().filter_map(|r| r["kind"].as_str().map(str::to_owned)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_courier_delivers_in_the_browser_with_a_drawn_signature_and_reports_damage() -> Result<()> {
    let server =
        TestServer::serving_apps(env!("CARGO_BIN_EXE_xianlu-server-under-test"), "TEST_XIANLU_COURIER_WEB").await?;
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e");
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let courier = shop.couriers[0].clone();
    shop.courier_login(&admin, &courier, "zhang.san", PASSWORD).await?;
    let first = shop.packed(&admin, &courier).await?;
    // The courier starts the day off duty; the app puts them on.
    ensure!(admin.put(&format!("/api/v1/couriers/{courier}/duty"), &json!({"onDuty": false})).await?.status == 200);
    let page = reqwest::get(format!("{}/courier", server.url)).await?;
    ensure!(page.status() == 200 && page.headers()["content-type"].to_str()?.starts_with("text/html"));

    // The signed paper note, as the phone's camera would give it.
    let note = server.db.dir.clone().context("test dir")?.join("delivery-note.png");
    image::RgbImage::from_fn(320, 200, |x, y| {
        let ink = (y % 24 < 2 && x > 20 && x < 300) || (x % 97 < 2);
        if ink { image::Rgb([40, 40, 60]) } else { image::Rgb([246, 244, 236]) }
    })
    .save(&note)?;

    let mut child = tokio::process::Command::new("node")
        .arg(e2e.join("courier.mjs"))
        .args([format!("{}/courier", server.url), xianlu_tests::e2e_artifacts()?.display().to_string()])
        .args(["zhang.san", PASSWORD])
        .arg(&note)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("node is needed for the browser tests")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut second = None;
    let mut seen = Vec::new();
    let drove = tokio::time::timeout(Duration::from_secs(150), async {
        while let Some(line) = lines.next_line().await? {
            seen.push(line.clone());
            match line.as_str() {
                "READY" => {
                    let duty = admin.get(&format!("/api/v1/couriers/{courier}/duty")).await?.json();
                    ensure!(duty["onDuty"] == true, "the app put the courier on duty: {duty}");
                    second = Some(shop.packed(&admin, &courier).await?);
                }
                "SIGNED" => {
                    let order = admin.order(&first).await?;
                    ensure!(order["status"] == "SIGNED", "{}", order["status"]);
                    let signature = order["order"]["signOff"]["evidenceSha256"].as_str().context("signed with")?;
                    let evidence = admin.get(&format!("/api/v1/orders/{first}/evidence")).await?.json();
                    let stored = evidence.as_array().context("evidence")?;
                    ensure!(
                        stored.iter().any(|r| r["sha256"] == signature && r["kind"] == "SIGNATURE"),
                        "the pad's signature is stored: {evidence}"
                    );
                    ensure!(evidence_kinds(&evidence).contains(&"DELIVERY_NOTE".to_owned()), "{evidence}");
                    let timeline = admin.get(&format!("/api/v1/orders/{first}/events")).await?.json();
                    let signed: Vec<&Value> = timeline
                        .as_array()
                        .context("events")?
                        .iter()
                        .filter(|e| e["event"]["kind"]["type"] == "SIGNED")
                        .collect();
                    ensure!(signed.len() == 1 && signed[0]["actor"]["kind"] == "courier", "{signed:?}");
                }
                "REPORTED" => {
                    let id = second.as_ref().context("the second order")?;
                    let order = admin.order(id).await?;
                    ensure!(order["status"] == "EXCEPTION_HANDLING", "{}", order["status"]);
                    ensure!(
                        order["order"]["exception"]["kind"] == "DAMAGED_IN_TRANSIT",
                        "{}",
                        order["order"]["exception"]
                    );
                    ensure!(order["order"]["exception"]["note"] == "箱子压坏");
                }
                _ => {}
            }
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.context("the browser hung")??;
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut err).await?;
    }
    drove.context("the browser run took too long")??;
    ensure!(status.success(), "the browser saw something wrong: {err} (saw {seen:?})");
    for step in ["READY", "NOTICED", "SIGNED", "REPORTED"] {
        ensure!(seen.iter().any(|l| l == step), "never got to {step}: {seen:?} {err}");
    }
    server.stop().await;
    Ok(())
}

/// Turns an `xwd` capture (ZPixmap, 24 or 32 bits per pixel, as Xvfb gives) into a PNG.
fn xwd_to_png(xwd: &[u8], png: &Path) -> Result<()> {
    let word = |i: usize| -> Result<u32> {
        let b = xwd.get(i * 4..i * 4 + 4).context("short xwd header")?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (header, width, height) = (word(0)? as usize, word(4)?, word(5)?);
    let (bits_per_pixel, bytes_per_line, ncolors) = (word(11)?, word(12)? as usize, word(19)? as usize);
    let (red_mask, byte_order) = (word(14)?, word(7)?);
    ensure!(bits_per_pixel == 24 || bits_per_pixel == 32, "{bits_per_pixel} bits per pixel");
    let step = bits_per_pixel as usize / 8;
    let data = xwd.get(header + ncolors * 12..).context("no pixels")?;
    let mut image = image::RgbImage::new(width, height);
    for (y, row) in data.chunks(bytes_per_line).take(height as usize).enumerate() {
        for x in 0..width as usize {
            let p = row.get(x * step..x * step + step).context("short row")?;
            let v = p.iter().enumerate().fold(0u32, |v, (i, b)| {
                if byte_order == 0 { v | u32::from(*b) << (8 * i) } else { v << 8 | u32::from(*b) }
            });
            let (r, g, b) = if red_mask == 0xff0000 {
                ((v >> 16) as u8, (v >> 8) as u8, v as u8)
            } else {
                (v as u8, (v >> 8) as u8, (v >> 16) as u8)
            };
            image.put_pixel(x as u32, y as u32, image::Rgb([r, g, b]));
        }
    }
    image.save(png)?;
    Ok(())
}

/// Captures the virtual display into `name`.png; returns how many distinct colours it shows.
fn screenshot(display: &str, name: &str) -> Result<usize> {
    let out = std::process::Command::new("xwd").args(["-root", "-silent", "-display", display]).output()?;
    ensure!(out.status.success(), "xwd: {}", String::from_utf8_lossy(&out.stderr));
    let path = xianlu_tests::e2e_artifacts()?.join(format!("{name}.png"));
    xwd_to_png(&out.stdout, &path)?;
    let image = image::open(&path)?.to_rgb8();
    let colours: std::collections::HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    Ok(colours.len())
}

fn xdotool(display: &str, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("xdotool").args(args).env("DISPLAY", display).output()?;
    ensure!(out.status.success(), "xdotool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desktop_app_logs_in_under_xvfb_and_keeps_the_day_on_the_device() -> Result<()> {
    let Ok(app) = std::env::var("TEST_XIANLU_COURIER_DESKTOP") else {
        bail!("TEST_XIANLU_COURIER_DESKTOP is not set: run `cargo xtask test`, which builds the desktop app first");
    };
    let server = TestServer::spawn(Backend::Sqlite).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let courier = shop.couriers[0].clone();
    shop.courier_login(&admin, &courier, "li.si", TYPED_PASSWORD).await?;
    let order = shop.packed(&admin, &courier).await?;
    let data = server.db.dir.clone().context("test dir")?.join("courier-desktop");

    let screen = VirtualDisplay::start("480x900x24").await?;
    let display = screen.name.clone();
    let _app = KillOnDrop(
        std::process::Command::new(&app)
            .env("DISPLAY", &display)
            .env("XIANLU_SERVER", &server.url)
            .env("XIANLU_COURIER_DATA", &data)
            .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("the desktop app")?,
    );
    // The window opens with the login form.
    let mut window = String::new();
    for _ in 0..120 {
        if let Ok(found) = xdotool(&display, &["search", "--name", "Xianlu courier"]) {
            window = found.lines().next().unwrap_or_default().to_owned();
            if !window.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ensure!(!window.is_empty(), "no window titled 'Xianlu courier' appeared");
    // Time for the webview to draw the form.
    tokio::time::sleep(Duration::from_secs(4)).await;
    ensure!(screenshot(&display, "courier-desktop-login")? > 8, "the window shows something");

    // A courier types like one: a click into each field (where the form
    // draws it in the 420-wide window), the text, then the button.
    xdotool(&display, &["windowmove", "--sync", &window, "0", "0"]).ok();
    for (x, y, text) in [("180", "154", "li.si"), ("170", "199", TYPED_PASSWORD)] {
        xdotool(&display, &["mousemove", "--sync", x, y, "click", "1"])?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        xdotool(&display, &["type", "--delay", "60", text])?;
    }
    screenshot(&display, "courier-desktop-typed")?;
    xdotool(&display, &["mousemove", "--sync", "210", "250", "click", "1"])?;

    // The day reaches the device: the login is kept, the order is cached for offline use.
    let db = data.join("courier.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let cached = loop {
        let found = db.exists()
            && rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map(|c| {
                    let session: Option<String> =
                        c.query_row("SELECT value FROM meta WHERE key = 'courier.session'", [], |r| r.get(0)).ok();
                    let orders: i64 = c
                        .query_row("SELECT count(*) FROM order_cache WHERE id = ?1", [&order], |r| r.get(0))
                        .unwrap_or(0);
                    session.is_some_and(|s| !s.is_empty()) && orders == 1
                })
                .unwrap_or(false);
        if found || std::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let colours = screenshot(&display, "courier-desktop-today")?;
    ensure!(cached, "the desktop app logged in and cached the day in {}", db.display());
    ensure!(colours > 8, "the day is drawn");
    server.stop().await;
    Ok(())
}
