//! The customer's tracking page as a customer gets it: the web build served
//! by the server at `/t/{token}`, opened in headless Chromium, following an
//! order live until it is signed; an expired link says so. Screenshots of
//! each state go to `$CARGO_TARGET_DIR/e2e-artifacts/`.
//!
//! Needs the web build (`TEST_XIANLU_CUSTOMER_WEB`) and the browser driver's
//! packages (`tests/e2e/node_modules`): `cargo xtask test` provides both.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use xianlu_tests::{Shop, TestServer};

const PASSWORD: &str = "correct horse battery staple 42";

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

/// The browser script in `mode` against `url`; returns its child with stdout piped.
fn browser(mode: &str, url: &str) -> Result<tokio::process::Child> {
    tokio::process::Command::new("node")
        .arg(e2e_dir().join("customer.mjs"))
        .args([mode, url])
        .arg(xianlu_tests::e2e_artifacts()?)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("node is needed for the browser tests")
}

async fn finished(mut child: tokio::process::Child) -> Result<String> {
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait()).await.context("the browser hung")??;
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut err).await?;
    }
    ensure!(status.success(), "the browser saw something wrong: {err}");
    Ok(err)
}

async fn link(admin: &xianlu_tests::Client, order: &str) -> Result<String> {
    let link = admin.ok(&format!("/api/v1/orders/{order}/tracking-links"), &json!({})).await?;
    Ok(link["path"].as_str().context("path")?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracking_page_follows_an_order_live_in_a_browser() -> Result<()> {
    let server =
        TestServer::serving_apps(env!("CARGO_BIN_EXE_xianlu-server-under-test"), "TEST_XIANLU_CUSTOMER_WEB").await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let courier = shop.couriers[0].clone();
    let order = shop.place(&admin, &shop.spinach()).await?;
    shop.pay(&admin, &order).await?;
    shop.send_out(&admin, &order, &courier).await?;
    // Five seconds on the road, about 9 m/s, then the page opens.
    let at = chrono::Utc::now();
    let fixes: Vec<_> = (0..5)
        .map(|i| {
            json!({"deviceSeq": i + 1, "at": at + chrono::Duration::seconds(i),
                   "lat": 39.96 - 0.00008 * i as f64, "lng": 116.47 - 0.00001 * i as f64, "accuracyM": 6.0})
        })
        .collect();
    admin.ok(&format!("/api/v1/couriers/{courier}/positions"), &json!({"fixes": fixes})).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let path = link(&admin, &order).await?;

    // The server serves the page and its compressed wasm.
    let page = reqwest::get(format!("{}{path}", server.url)).await?;
    ensure!(page.status() == 200, "{}", page.status());
    ensure!(page.headers()["content-type"].to_str()?.starts_with("text/html"));
    let wasm = reqwest::Client::new()
        .get(format!("{}/t/_app/xianlu_customer_bg.wasm", server.url))
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    ensure!(wasm.status() == 200 && wasm.headers().get("content-encoding").is_some_and(|v| v == "gzip"));
    ensure!(reqwest::get(format!("{}/t/_app/..%2Fsecret", server.url)).await?.status() == 404);

    // A browser opens the link: out for delivery, the courier on the map.
    let mut child = browser("live", &format!("{}{path}", server.url))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut hash = None;
    let mut saw = Vec::new();
    let followed = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if line == "READY" {
                // The courier drives on, 150 m in 15 s.
                let fixes: Vec<_> = (1..=3)
                    .map(|i| {
                        json!({"deviceSeq": 10 + i, "at": chrono::Utc::now() + chrono::Duration::seconds(5 * i - 15),
                               "lat": 39.96 - 0.00045 * i as f64, "lng": 116.47, "accuracyM": 6.0})
                    })
                    .collect();
                admin.ok(&format!("/api/v1/couriers/{courier}/positions"), &json!({"fixes": fixes})).await?;
            }
            if let Some(h) = line.strip_prefix("HASH ") {
                hash = Some(h.to_owned());
            }
            saw.push(line);
        }
        anyhow::Ok(())
    })
    .await;
    if !matches!(followed, Ok(Ok(()))) || !saw.iter().any(|l| l == "MOVED") {
        let err = finished(child).await.err().map(|e| e.to_string()).unwrap_or_default();
        bail!("the page did not follow the delivery ({saw:?}): {err}");
    }
    finished(child).await?;
    // Signed through the link: the order holds the signature the page drew.
    let hash = hash.context("no receipt hash printed")?;
    let signed = admin.order(&order).await?;
    ensure!(signed["status"] == "SIGNED", "{}", signed["status"]);
    let event =
        signed["timeline"].as_array().into_iter().flatten().find(|e| e["event"]["kind"]["type"] == "SIGNED").cloned();
    let event = event.context("a SIGNED event")?;
    ensure!(event["event"]["kind"]["evidenceSha256"] == hash.as_str(), "the receipt names the signature signed with");
    ensure!(event["actor"]["kind"] == "visitor", "signed by the link's holder: {}", event["actor"]);
    let evidence = admin.get(&format!("/api/v1/orders/{order}/evidence")).await?.json();
    ensure!(
        evidence.as_array().into_iter().flatten().any(|e| e["sha256"] == hash.as_str() && e["kind"] == "SIGNATURE"),
        "{evidence}"
    );

    // A link that was never made shows "not found" and nothing of any order.
    let mut tampered = path.clone();
    let last = tampered.pop().context("a token")?;
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    finished(browser("tampered", &format!("{}{tampered}", server.url))?).await?;

    // An expired link says so.
    let other = shop.place(&admin, &shop.spinach()).await?;
    let expired = link(&admin, &other).await?;
    server.expire_tracking_links().await?;
    finished(browser("expired", &format!("{}{expired}", server.url))?).await?;

    // The app without a link: the restaurant's owner logs in and signs for
    // an order on their own screen, refusing half a kilo as damaged.
    let third = shop.place(&admin, &shop.spinach()).await?;
    shop.pay(&admin, &third).await?;
    shop.send_out(&admin, &third, &courier).await?;
    let owner = json!({"username": "xiang.owner", "password": PASSWORD, "role": "customer", "customerId": shop.prepaid_customer});
    admin.ok("/api/v1/admin/users", &owner).await?;
    let mut child = tokio::process::Command::new("node")
        .arg(e2e_dir().join("customer.mjs"))
        .args(["signoff", &format!("{}/app", server.url)])
        .arg(xianlu_tests::e2e_artifacts()?)
        .args(["xiang.owner", PASSWORD])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        tokio::time::timeout(Duration::from_secs(90), stdout.read_to_string(&mut out))
            .await
            .context("the browser hung")??;
    }
    finished(child).await?;
    let hash = out.lines().find_map(|l| l.strip_prefix("HASH ")).context("no receipt hash printed")?.to_owned();
    let signed = admin.order(&third).await?;
    ensure!(signed["status"] == "SIGNED", "{}", signed["status"]);
    let event =
        signed["timeline"].as_array().into_iter().flatten().find(|e| e["event"]["kind"]["type"] == "SIGNED").cloned();
    let event = event.context("a SIGNED event")?;
    ensure!(event["event"]["kind"]["evidenceSha256"] == hash.as_str(), "the receipt names the signature signed with");
    let rejected = &event["event"]["kind"]["rejected"];
    ensure!(rejected[0]["rejectedBase"] == 500 && rejected[0]["reason"] == "DAMAGED", "{rejected}");
    let matters = admin.get(&format!("/api/v1/orders/{third}/after-sales")).await?.json();
    ensure!(matters[0]["lines"][0]["base"] == 300 && matters[0]["note"] == "菜叶发黄", "{matters}");
    let photo = matters[0]["photos"][0].as_str().context("the matter's photo")?;
    let evidence = admin.get(&format!("/api/v1/orders/{third}/evidence")).await?.json();
    ensure!(
        evidence.as_array().into_iter().flatten().any(|e| e["sha256"] == photo && e["kind"] == "PHOTO"),
        "the photo is the order's evidence: {evidence}"
    );
    server.stop().await;
    Ok(())
}
