//! Tracking links through the public surface, on SQLite and PostgreSQL: a
//! link shows its one order (phones masked, nothing internal) to whoever
//! holds it, over REST and the push stream, and nothing else; it expires.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use xianlu_core::Backoff;
use xianlu_core::api::ApiClient;
use xianlu_core::track::{Phase, TrackingScreen, follow_link};
use xianlu_domain::Status;
use xianlu_tests::{Backend, Client, Shop, Stream, TestServer};

xianlu_tests::on_both_backends!(
    a_tracking_link_shows_one_order_live_to_whoever_holds_it_until_it_expires,
    the_tracking_screen_follows_an_order_from_its_link_to_sign_off,
    a_customer_signs_on_their_own_screen_refusing_part_of_a_line_and_keeps_a_receipt_that_checks_out,
);

const PASSWORD: &str = "correct horse battery staple 42";

/// The audit log's sharing entries: (subject, after).
async fn audit_of_sharing(url: &str) -> Result<Vec<(String, String)>> {
    let sql = "SELECT subject_id, after_state FROM audit_log WHERE action = 'CREATE_TRACKING_LINK'";
    Ok(if url.starts_with("sqlite") {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(url).await?;
        sqlx::query_as(sql).fetch_all(&mut conn).await?
    } else {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
        sqlx::query_as(sql).fetch_all(&mut conn).await?
    })
}

async fn a_tracking_link_shows_one_order_live_to_whoever_holds_it_until_it_expires(backend: Backend) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let courier = shop.couriers[0].clone();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = shop.place(&admin, &shop.spinach()).await?;
        admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
        ids.push(id);
    }
    let (tracked, other) = (&ids[0], &ids[1]);
    shop.send_out(&admin, tracked, &courier).await?;

    // The merchant's office shares the order; the link is shown once.
    let link = admin.post(&format!("/api/v1/orders/{tracked}/tracking-links"), &json!({"hours": 2})).await?;
    ensure!(link.status == 201, "{}", link.status);
    let link = link.json();
    let token = link["token"].as_str().context("token")?.to_owned();
    ensure!(token.starts_with("t.") && token.len() > 40, "{token}");
    ensure!(link["path"] == format!("/t/{token}") && link["orderId"] == tracked.as_str(), "{link}");

    // Anyone with the link, no login: the order, phones masked.
    let anonymous = Client::with_token(&server.url, "");
    let shown = anonymous.get(&format!("/api/v1/tracking/{token}")).await?;
    ensure!(shown.status == 200, "{}", shown.status);
    let shown = shown.json();
    ensure!(shown["order"]["id"] == tracked.as_str() && shown["status"] == "DELIVERING", "{shown}");
    let courier_phone = shown["driverInfo"]["phone"].as_str().unwrap_or_default();
    ensure!(courier_phone.contains('*') && !courier_phone.contains("13812340001"), "courier phone: {courier_phone}");
    let contact_phone = shown["contact"]["phone"].as_str().context("the contact, masked")?;
    ensure!(contact_phone.contains('*'), "contact phone: {contact_phone}");

    // The token is a credential for that order and nothing else.
    let visitor = Client::with_token(&server.url, &token);
    ensure!(visitor.get(&format!("/api/v1/orders/{tracked}")).await?.status == 200);
    ensure!(visitor.get(&format!("/api/v1/orders/{tracked}/trail")).await?.status == 200);
    ensure!(visitor.get(&format!("/api/v1/orders/{other}")).await?.status == 404, "another order");
    ensure!(visitor.get("/api/v1/orders").await?.status == 404, "no lists");
    let cancel = visitor.command_reply(tracked, json!({"type": "CANCEL", "reason": "不要了"}), None).await?;
    ensure!(cancel.status == 403, "no cancelling through a link: {}", cancel.status);
    let photo = json!({"kind": "PHOTO", "image": "AAAA", "takenAt": chrono::Utc::now()});
    let upload = visitor.put(&format!("/api/v1/orders/{tracked}/evidence/{}", "c".repeat(64)), &photo).await?;
    ensure!(upload.status == 403, "a link uploads signatures only: {}", upload.status);
    ensure!(visitor.post(&format!("/api/v1/orders/{tracked}/tracking-links"), &json!({})).await?.status == 403);
    ensure!(anonymous.get("/api/v1/tracking/t.nonsense").await?.status == 404);

    // The stream: the order's events live, and no other topic.
    let mut stream = Stream::connect_with_token(&server.url, &token).await?;
    ensure!(stream.subscribe(json!([{"order": tracked}]), None).await?["type"] == "SUBSCRIBED");
    let positions =
        json!({"fixes": [{"deviceSeq": 1, "at": chrono::Utc::now(), "lat": 39.95, "lng": 116.45, "accuracyM": 6.0}]});
    admin.ok(&format!("/api/v1/couriers/{courier}/positions"), &positions).await?;
    let mut seen = Vec::new();
    while let Ok(message) = stream.next_within(Duration::from_secs(3)).await {
        if message["type"] == "EVENT" {
            seen.push(message["event"]["kind"]["type"].as_str().unwrap_or_default().to_owned());
        }
        if seen.iter().any(|k| k == "COURIER_POSITION") {
            break;
        }
    }
    ensure!(seen.iter().any(|k| k == "COURIER_POSITION"), "live positions: {seen:?}");
    let mut other_stream = Stream::connect_with_token(&server.url, &token).await?;
    other_stream.send(json!({"type": "SUBSCRIBE", "topics": [{"order": other}]})).await?;
    ensure!(other_stream.next().await?["code"] == "unknown_topic");
    other_stream.send(json!({"type": "SUBSCRIBE", "topics": [{"merchant": shop.merchant}]})).await?;
    ensure!(other_stream.next().await?["code"] == "unknown_topic");

    // The customer may share their own order too; a warehouse clerk may not.
    let owner = json!({"username": "xiang.owner", "password": PASSWORD, "role": "customer", "customerId": shop.prepaid_customer});
    admin.ok("/api/v1/admin/users", &owner).await?;
    let (owner, _) = Client::login(&server.url, "xiang.owner", PASSWORD).await?;
    ensure!(owner.post(&format!("/api/v1/orders/{other}/tracking-links"), &json!({})).await?.status == 201);
    let clerk = json!({"username": "clerk.wang", "password": PASSWORD, "role": "warehouse_clerk",
                       "merchantId": shop.merchant, "warehouseId": shop.warehouse});
    admin.ok("/api/v1/admin/users", &clerk).await?;
    let (clerk, _) = Client::login(&server.url, "clerk.wang", PASSWORD).await?;
    ensure!(clerk.post(&format!("/api/v1/orders/{other}/tracking-links"), &json!({})).await?.status == 403);
    let bad = admin.post(&format!("/api/v1/orders/{tracked}/tracking-links"), &json!({"hours": 0})).await?;
    ensure!(bad.status == 422, "{}", bad.status);

    // Sharing is audited, without the token.
    let shared = audit_of_sharing(&server.db.url).await?;
    ensure!(shared.len() == 2, "{shared:?}");
    ensure!(shared.iter().all(|(subject, after)| !after.contains(&token) && (subject == tracked || subject == other)));

    // Expired: gone, everywhere.
    server.expire_tracking_links().await?;
    let gone = anonymous.get(&format!("/api/v1/tracking/{token}")).await?;
    ensure!(gone.status == 410 && gone.json()["code"] == "link_expired", "{}", gone.status);
    ensure!(visitor.get(&format!("/api/v1/orders/{tracked}")).await?.status == 410);
    server.stop().await;
    Ok(())
}

/// Runs the core's tracking page against `token` until `until` holds of a published screen.
async fn screen_until(
    server_url: &str,
    token: &str,
    until: impl Fn(&TrackingScreen) -> bool + Send + 'static,
) -> Result<TrackingScreen> {
    let api = ApiClient::for_tracking_link(server_url, token)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(follow_link(api, Backoff::fast(), move |screen| {
        let _ = tx.send(screen.clone());
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut last = None;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(screen)) => {
                if until(&screen) {
                    task.abort();
                    return Ok(screen);
                }
                last = Some(screen);
            }
            _ => {
                task.abort();
                anyhow::bail!("the screen never got there; last: {last:?}");
            }
        }
    }
}

async fn the_tracking_screen_follows_an_order_from_its_link_to_sign_off(backend: Backend) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let courier = shop.couriers[0].clone();
    let id = shop.place(&admin, &shop.spinach()).await?;
    admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    let link = admin.ok(&format!("/api/v1/orders/{id}/tracking-links"), &json!({})).await?;
    let token = link["token"].as_str().context("token")?.to_owned();

    // The page opens on the paid order and follows it live.
    let url = server.url.clone();
    let following = {
        let token = token.clone();
        tokio::spawn(async move {
            screen_until(&url, &token, |s| s.view.as_ref().is_some_and(|v| v.status == Status::Signed)).await
        })
    };
    let ready = screen_until(&server.url, &token, |s| s.phase == Phase::Ready).await?;
    ensure!(
        ready.view.as_ref().is_some_and(|v| v.status == Status::AwaitingPick),
        "{:?}",
        ready.view.map(|v| v.status)
    );
    ensure!(ready.map.destination.is_some() && ready.map.promised.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    shop.send_out(&admin, &id, &courier).await?;
    let positions =
        json!({"fixes": [{"deviceSeq": 1, "at": chrono::Utc::now(), "lat": 39.95, "lng": 116.45, "accuracyM": 6.0}]});
    admin.ok(&format!("/api/v1/couriers/{courier}/positions"), &positions).await?;
    let signer = server.client(&format!("courier:{courier}"));
    let signature = xianlu_tests::upload_signature(&signer, &id, 7).await?;
    signer.command(&id, json!({"type": "SIGN", "signatureSha256": signature})).await?;
    let signed = following.await??;
    let kinds: Vec<&str> = signed.timeline.iter().map(|e| e.event.kind.name()).collect();
    for kind in ["PAID", "PICKING_STARTED", "PACKED", "DISPATCHED", "SIGNED"] {
        ensure!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    ensure!(!kinds.contains(&"COURIER_POSITION"), "positions go on the map, not the timeline");
    ensure!(signed.map.position.is_some_and(|p| (p.lat - 39.95).abs() < 1e-9), "{:?}", signed.map.position);
    ensure!(signed.view.as_ref().is_some_and(|v| v.eta.is_none() && v.eta_window.is_none()), "no estimate once signed");

    // A link that does not exist, and one that expired.
    let unknown = screen_until(&server.url, "t.doesnotexist", TrackingScreen::settled).await?;
    ensure!(unknown.phase == Phase::NotFound, "{:?}", unknown.phase);
    server.expire_tracking_links().await?;
    let expired = screen_until(&server.url, &token, TrackingScreen::settled).await?;
    ensure!(expired.phase == Phase::Expired, "{:?}", expired.phase);
    let url = server.url.clone();
    server.stop().await;

    // No server at all: the page says so and keeps trying.
    let down =
        screen_until(&url, &token, |s| matches!(s.phase, Phase::Unreachable { attempt, .. } if attempt >= 2)).await?;
    ensure!(matches!(down.phase, Phase::Unreachable { .. }));
    Ok(())
}

async fn a_customer_signs_on_their_own_screen_refusing_part_of_a_line_and_keeps_a_receipt_that_checks_out(
    backend: Backend,
) -> Result<()> {
    use xianlu_core::signature::StrokePoint;
    use xianlu_core::signoff::{ReceiptCheck, SignOff, check_receipt};
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let id = shop.place(&admin, &shop.spinach()).await?;
    for command in [
        json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}}),
        json!({"type": "START_PICKING"}),
        json!({"type": "RECORD_PICK", "lineNo": 1, "base": 2000}),
        json!({"type": "PACK"}),
    ] {
        admin.command(&id, command).await?;
    }
    let owner = json!({"username": "xiang.owner", "password": PASSWORD, "role": "customer", "customerId": shop.prepaid_customer});
    admin.ok("/api/v1/admin/users", &owner).await?;
    let api = ApiClient::new(&server.url)?;
    api.login("xiang.owner", PASSWORD).await?;
    let order_id: xianlu_domain::OrderId = id.parse().map_err(|_| anyhow::anyhow!("order id"))?;
    // Not yet: an order is signed for when it is delivered.
    ensure!(SignOff::for_order(&api.order(order_id).await?, 400.0, 200.0).is_err());
    admin.command(&id, json!({"type": "ASSIGN_COURIER", "courierId": shop.couriers[0]})).await?;
    admin.command(&id, json!({"type": "DISPATCH"})).await?;

    let mut sign_off = SignOff::for_order(&api.order(order_id).await?, 400.0, 200.0)?;
    ensure!(sign_off.lines.len() == 1 && sign_off.lines[0].delivered_base == 2000, "{:?}", sign_off.lines);
    ensure!(sign_off.reject(1, 2001, xianlu_domain::RejectReason::Damaged).is_err(), "more than was delivered");
    // Half a kilo arrived crushed.
    sign_off.reject(1, 500, xianlu_domain::RejectReason::Damaged)?;
    ensure!(!sign_off.ready(), "nothing signed yet");
    let now = chrono::Utc::now();
    ensure!(sign_off.submit(&api, now, "sign-1").await.is_err(), "an empty signature is refused");
    sign_off.signature.begin_stroke();
    for i in 0..40u32 {
        let y = 100.0 + 60.0 * ((i as f32) / 4.0).sin();
        sign_off.signature.add_point(StrokePoint { x: 30.0 + 8.0 * i as f32, y, t_ms: 20 * i, pressure: 0.6 });
    }
    ensure!(sign_off.ready());
    let receipt = sign_off.submit(&api, now, "sign-2").await?;
    ensure!(receipt.rejected.len() == 1 && receipt.rejected[0].rejected_base == 500);
    let view = api.order(order_id).await?;
    ensure!(view.status == Status::Signed, "{}", view.status);
    // 1.5 kg at 3.50 a jin: 10.50 charged; 14.00 was paid, so 3.50 comes back.
    ensure!(receipt.charge_fen == 1050 && receipt.balance_fen == -350, "{receipt:?}");
    // Sent again (a lost answer): signed once, the same receipt.
    let again = sign_off.submit(&api, now, "sign-2").await?;
    ensure!(again == receipt, "{again:?}");
    // Later, the receipt checks out against the server; a made-up one does not.
    ensure!(check_receipt(&api, &receipt).await? == ReceiptCheck::Verified);
    let forged = xianlu_core::signoff::Receipt { signature_sha256: "0".repeat(64), ..receipt.clone() };
    ensure!(check_receipt(&api, &forged).await? == ReceiptCheck::Missing);

    // The next morning the rest of the spinach turns out yellow: an after-sales
    // matter, its own record; the order stays signed and the office hears of it.
    use xianlu_domain::aftersales::{AfterSalesKind, AfterSalesLine, NewAfterSales};
    let mut office = Stream::connect(&server.url, "admin:root").await?;
    office.subscribe(json!([{"merchant": shop.merchant}]), None).await?;
    let complaint = |base| NewAfterSales {
        kind: AfterSalesKind::QualityComplaint,
        lines: vec![AfterSalesLine { line_no: 1, base }],
        note: "菜叶发黄".into(),
        photos: Vec::new(),
    };
    let too_much = api.open_after_sales(order_id, &complaint(1501), "as-0").await;
    ensure!(too_much.as_ref().err().and_then(|e| e.code()) == Some("invalid_command"), "{too_much:?}");
    let mut with_photo = complaint(500);
    with_photo.photos = vec!["b".repeat(64)];
    let unknown = api.open_after_sales(order_id, &with_photo, "as-1").await;
    ensure!(unknown.as_ref().err().and_then(|e| e.code()) == Some("unknown_evidence"), "{unknown:?}");
    server.advance_clock(chrono::Duration::hours(20));
    let matter = api.open_after_sales(order_id, &complaint(500), "as-2").await?;
    ensure!(matter.kind == AfterSalesKind::QualityComplaint && matter.lines[0].base == 500);
    ensure!(api.after_sales(order_id).await? == vec![matter.clone()]);
    ensure!(api.order(order_id).await?.status == Status::Signed);
    let mut heard = false;
    while let Ok(message) = office.next_within(Duration::from_secs(2)).await {
        heard |= message["event"]["kind"]["type"] == "AFTER_SALES_OPENED" && message["orderId"] == id.as_str();
    }
    ensure!(heard, "the office hears of the matter live");
    // Past the merchant's window (48 hours): closed.
    server.advance_clock(chrono::Duration::hours(30));
    let late = api.open_after_sales(order_id, &complaint(100), "as-3").await;
    ensure!(late.as_ref().err().and_then(|e| e.code()) == Some("after_sales_window_closed"), "{late:?}");
    server.stop().await;
    Ok(())
}
