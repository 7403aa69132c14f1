//! The courier app's view-model (`xianlu_core::courier`) against a real
//! server on a real port: a whole delivery, an accident that hands the goods
//! to another courier, and a day's work done offline and replayed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chrono::Utc;
use serde_json::json;
use xianlu_core::courier::{Action, CourierDay, CourierSession, NoticeKind, SessionSettings};
use xianlu_core::error::NextStep;
use xianlu_core::outbox::OutboxSettings;
use xianlu_core::push::PushSettings;
use xianlu_core::report::{ExceptionReason, ExceptionReport};
use xianlu_core::signature::StrokePoint;
use xianlu_core::signoff::SignOff;
use xianlu_core::store::{SqliteStore, Store};
use xianlu_core::{ApiClient, Backoff};
use xianlu_domain::operations::PlannedKind;
use xianlu_domain::{OrderId, RejectReason, Status};
use xianlu_tests::chaos::{ChaosProxy, Faults};
use xianlu_tests::{Backend, Shop, TestServer};

const PASSWORD: &str = "菠菜-spinach-2030!";

xianlu_tests::on_both_backends!(
    a_courier_picks_up_and_delivers_from_the_day_view_with_a_drawn_signature,
    after_an_accident_the_goods_move_to_another_couriers_day_as_a_pickup_first,
    a_day_worked_offline_survives_a_restart_and_lands_once_with_refusals_listed,
);

fn settings() -> SessionSettings {
    SessionSettings {
        outbox: OutboxSettings { backoff: Backoff::fast(), ..OutboxSettings::default() },
        push: PushSettings { backoff: Backoff::fast(), ..PushSettings::default() },
        refresh: Duration::from_millis(500),
        ..SessionSettings::default()
    }
}

async fn session(base: &str, username: &str, store: Arc<dyn Store>) -> Result<CourierSession> {
    let api = ApiClient::new(base)?;
    api.login(username, PASSWORD).await?;
    Ok(CourierSession::start(api, store, settings())?)
}

fn store(server: &TestServer, name: &str) -> Result<Arc<dyn Store>> {
    let dir = server.db.dir.clone().context("test dir")?;
    Ok(Arc::new(SqliteStore::open(&dir.join(format!("{name}.db")))?))
}

/// Waits until the day satisfies `ok`; fails with the day as it was.
async fn until(session: &CourierSession, what: &str, ok: impl Fn(&CourierDay) -> bool) -> Result<CourierDay> {
    let mut rx = session.watch();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let day = rx.borrow_and_update().clone();
        if ok(&day) {
            return Ok(day);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => anyhow::bail!(
                "{what}: stops {:?}, waiting {}, attention {:?}, notices {:?}, problem {:?}",
                day.stops.iter().map(|s| (s.order_number.to_string(), s.status, s.kind)).collect::<Vec<_>>(),
                day.waiting,
                day.attention,
                day.notices,
                day.problem
            ),
        }
    }
}

fn id(text: &str) -> Result<OrderId> {
    text.parse().map_err(|_| anyhow::anyhow!("order id {text}"))
}

/// Draws a signature on a sign-off's pad, as a finger would.
fn draw(sign_off: &mut SignOff, seed: u32) {
    sign_off.signature.begin_stroke();
    for i in 0..25u32 {
        let y = if (i + seed).is_multiple_of(2) { 60.0 } else { 140.0 };
        sign_off.signature.add_point(StrokePoint { x: 20.0 + i as f32 * 14.0, y, t_ms: i * 16, pressure: 0.5 });
    }
}

async fn a_courier_picks_up_and_delivers_from_the_day_view_with_a_drawn_signature(backend: Backend) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let courier = shop.couriers[0].clone();
    shop.courier_login(&admin, &courier, "zhang.san", PASSWORD).await?;
    let first = shop.packed(&admin, &courier).await?;
    let first_id = id(&first)?;

    let app = session(&server.url, "zhang.san", store(&server, "zhang")?).await?;
    let day = until(&app, "the day loads", |d| d.stops.len() == 1 && d.duty.is_some()).await?;
    ensure!(day.stops[0].business_name == "老王饭店" && day.stops[0].status == Status::Packed);
    ensure!(day.actions(id(&first)?) == vec![Action::PickUp], "{:?}", day.actions(id(&first)?));
    app.set_duty(false, None).await?;
    ensure!(app.day().duty.is_some_and(|d| !d.on_duty));
    app.set_duty(true, Some(Utc::now() + chrono::Duration::hours(8))).await?;

    // A second order is given to the courier while the app is open: it appears with a notice.
    let second = id(&shop.packed(&admin, &courier).await?)?;
    let day = until(&app, "the new order appears live", |d| d.stops.len() == 2).await?;
    ensure!(day.notices.iter().any(|n| n.kind == NoticeKind::Assigned && n.order_id == second), "{:?}", day.notices);
    app.dismiss_notices();
    ensure!(app.day().notices.is_empty());

    // Picked up: shown at once, then confirmed by the server.
    app.pick_up(id(&first)?)?;
    let shown = app.day();
    let stop = shown.stops.iter().find(|s| s.order_id == first_id).context("first stop")?;
    ensure!(stop.status == Status::Delivering, "predicted at once: {:?}", stop.status);
    until(&app, "the pick-up reaches the server", |d| d.waiting == 0).await?;
    ensure!(admin.order(&first).await?["status"] == "DELIVERING");
    ensure!(app.pick_up(id(&first)?).is_err(), "a second pick-up is refused on the device");
    app.arrived(id(&first)?)?;
    let day = app.day();
    ensure!(day.actions(id(&first)?) == vec![Action::Deliver, Action::FailedAttempt, Action::Report]);

    // At the door: the customer refuses 500 g as damaged and signs on the screen.
    let view = day.order(id(&first)?).context("the order")?;
    let mut sign_off = SignOff::for_order(&view, 400.0, 200.0)?;
    sign_off.reject(1, 500, RejectReason::Damaged)?;
    ensure!(!sign_off.ready(), "nothing signed yet");
    draw(&mut sign_off, 3);
    app.sign(&sign_off, None)?;
    until(&app, "signed, and off the list", |d| {
        d.waiting == 0 && d.stops.len() == 1 && d.done.iter().any(|s| s.status == Status::Signed)
    })
    .await?;
    let order = admin.order(&first).await?;
    ensure!(order["status"] == "SIGNED", "{}", order["status"]);
    let signature = order["order"]["signOff"]["evidenceSha256"].as_str().context("signature named")?.to_owned();
    let evidence = admin.get(&format!("/api/v1/orders/{first}/evidence")).await?.json();
    ensure!(
        evidence
            .as_array()
            .is_some_and(|e| e.iter().any(|r| r["sha256"] == signature.as_str() && r["kind"] == "SIGNATURE")),
        "the drawn signature is stored: {evidence}"
    );
    ensure!(order["order"]["lines"][0]["acceptance"]["rejectedBase"] == 500, "{}", order["order"]["lines"][0]);
    app.stop();
    server.stop().await;
    Ok(())
}

async fn after_an_accident_the_goods_move_to_another_couriers_day_as_a_pickup_first(backend: Backend) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let (stopped, rescuer) = (shop.couriers[0].clone(), shop.couriers[1].clone());
    shop.courier_login(&admin, &stopped, "zhang.san", PASSWORD).await?;
    shop.courier_login(&admin, &rescuer, "li.si", PASSWORD).await?;
    let today =
        json!({"start": Utc::now() + chrono::Duration::hours(1), "end": Utc::now() + chrono::Duration::hours(4)});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut draft = shop.spinach();
        draft["requestedWindow"] = today.clone();
        let order = shop.place(&admin, &draft).await?;
        shop.pay(&admin, &order).await?;
        shop.send_out(&admin, &order, &stopped).await?;
        ids.push(id(&order)?);
    }
    shop.plan_by_itself(&admin, 1).await?;
    // Both were seen lately: the van on the road, the other courier at the warehouse.
    for (courier, lat, lng) in [(&stopped, 39.95, 116.46), (&rescuer, 39.9701, 116.4901)] {
        let batch = json!({"fixes": [{"deviceSeq": 1, "at": Utc::now() - chrono::Duration::seconds(600),
            "lat": lat, "lng": lng, "accuracyM": 5.0}]});
        admin.ok(&format!("/api/v1/couriers/{courier}/positions"), &batch).await?;
    }

    let van = session(&server.url, "zhang.san", store(&server, "zhang")?).await?;
    let helper = session(&server.url, "li.si", store(&server, "li")?).await?;
    until(&van, "two orders aboard", |d| d.stops.len() == 2 && d.stops.iter().all(|s| s.status == Status::Delivering))
        .await?;
    until(&helper, "nothing yet", |d| d.duty.is_some()).await?;

    // The van is hit: one report covers both orders aboard.
    let report = ExceptionReport {
        reason: ExceptionReason::TrafficAccident,
        note: "追尾，车辆无法行驶".into(),
        photos: Vec::new(),
        position: Some(xianlu_domain::wire::LatLng { lat: 39.95, lng: 116.46 }),
        at: Utc::now(),
    };
    van.report(ids[0], &report)?;
    let shown = van.day();
    ensure!(
        ids.iter().all(|o| shown.order(*o).is_some_and(|v| v.status == Status::ExceptionHandling)),
        "both shown stopped at once"
    );

    // The re-plan hands the goods over: the stopped courier's day empties with
    // a notice per order; the helper's day starts with collecting them at the van.
    let day = until(&helper, "the helper's day has the pickup", |d| {
        d.stops.first().is_some_and(|s| s.kind == PlannedKind::Pickup)
            && ids.iter().all(|o| d.stops.iter().any(|s| s.order_id == *o))
    })
    .await?;
    let pickup = day.stops[0].location.context("pickup place")?;
    ensure!((pickup.lat - 39.95).abs() < 1e-6 && (pickup.lng - 116.46).abs() < 1e-6, "at the van: {pickup:?}");
    ensure!(
        ids.iter().all(|o| day.notices.iter().any(|n| n.order_id == *o && n.kind == NoticeKind::Reassigned)),
        "{:?}",
        day.notices
    );
    let left = until(&van, "the stopped van's day empties", |d| d.stops.is_empty()).await?;
    ensure!(
        ids.iter().all(|o| left.notices.iter().any(|n| n.order_id == *o && n.kind == NoticeKind::TakenAway)),
        "{:?}",
        left.notices
    );

    // The helper drives to the van and waits there a minute: the goods are aboard, the pickup is done.
    let (from, site) = ((39.9701, 116.4901), (39.95, 116.46));
    let start = Utc::now() - chrono::Duration::seconds(200);
    let mut fixes = Vec::new();
    for i in 0..17i64 {
        let f = (i as f64 / 10.0).min(1.0);
        fixes.push(json!({"deviceSeq": 2 + i, "at": start + chrono::Duration::seconds(i * 10),
            "lat": from.0 + (site.0 - from.0) * f, "lng": from.1 + (site.1 - from.1) * f, "accuracyM": 5.0}));
    }
    admin.ok(&format!("/api/v1/couriers/{rescuer}/positions"), &json!({"fixes": fixes})).await?;
    until(&helper, "the goods collected at the van", |d| {
        d.stops.len() == 2 && d.stops.iter().all(|s| s.kind == PlannedKind::Delivery)
    })
    .await?;

    // The helper delivers both.
    for (n, order) in ids.iter().enumerate() {
        let view = helper.day().order(*order).context("order on the helper's device")?;
        ensure!(view.status == Status::Delivering);
        let mut sign_off = SignOff::for_order(&view, 400.0, 200.0)?;
        draw(&mut sign_off, n as u32);
        helper.sign(&sign_off, None)?;
    }
    until(&helper, "both signed", |d| d.waiting == 0 && d.done.len() == 2).await?;
    for order in &ids {
        let view = admin.order(&order.to_string()).await?;
        ensure!(view["status"] == "SIGNED" && view["order"]["courierId"] == rescuer.as_str(), "{}", view["status"]);
    }
    van.stop();
    helper.stop();
    server.stop().await;
    Ok(())
}

async fn a_day_worked_offline_survives_a_restart_and_lands_once_with_refusals_listed(backend: Backend) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let courier = shop.couriers[0].clone();
    shop.courier_login(&admin, &courier, "zhang.san", PASSWORD).await?;
    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(id(&shop.packed(&admin, &courier).await?)?);
    }
    let proxy = ChaosProxy::start(&server.url, Faults::NONE).await?;
    let dir = server.db.dir.clone().context("test dir")?;
    let path = dir.join("phone.db");
    let app = session(&proxy.url, "zhang.san", Arc::new(SqliteStore::open(&path)?)).await?;
    until(&app, "the day loads", |d| d.stops.len() == 3 && d.online).await?;

    // The basement garage: everything works, nothing reaches the server.
    proxy.set_dark(true);
    for order in &orders {
        app.pick_up(*order)?;
    }
    let view = app.day().order(orders[0]).context("cached order")?;
    let mut sign_off = SignOff::for_order(&view, 400.0, 200.0)?;
    draw(&mut sign_off, 1);
    app.sign(&sign_off, None)?;
    let day = until(&app, "offline with changes waiting", |d| !d.online && d.waiting >= 5).await?;
    ensure!(day.done.iter().any(|s| s.order_id == orders[0] && s.status == Status::Signed), "signed on the device");
    ensure!(day.stops.iter().all(|s| s.waiting && s.status == Status::Delivering), "the rest out for delivery");
    // Meanwhile the office gives the third order to the other courier.
    admin.command(&orders[2].to_string(), json!({"type": "ASSIGN_COURIER", "courierId": shop.couriers[1]})).await?;

    // The phone restarts, still without network: the day and what was done are still there.
    app.stop();
    drop(app);
    let api = ApiClient::new(&proxy.url)?;
    let saved = {
        let probe = ApiClient::new(&server.url)?;
        probe.login("zhang.san", PASSWORD).await?;
        probe.session().context("session")?
    };
    api.restore(saved);
    let app = CourierSession::start(api, Arc::new(SqliteStore::open(&path)?), settings())?;
    let day = app.day();
    ensure!(day.waiting >= 5, "the changes survived: {}", day.waiting);
    ensure!(day.done.iter().any(|s| s.order_id == orders[0] && s.status == Status::Signed), "still signed on screen");
    ensure!(day.stops.len() == 2 && day.stops.iter().all(|s| s.status == Status::Delivering), "{:?}", day.stops);

    // Back online: everything lands once; the order given away needs attention.
    proxy.set_dark(false);
    let day =
        until(&app, "synced, one refusal listed", |d| d.online && d.attention.len() == 1 && d.waiting == 1).await?;
    let refused = &day.attention[0];
    ensure!(refused.order_id == Some(orders[2]) && refused.what == "DISPATCH", "{refused:?}");
    ensure!(refused.next == NextStep::Gone, "{refused:?}");
    ensure!(refused.order_number.is_some(), "named by its number");
    for (order, status) in [(orders[0], "SIGNED"), (orders[1], "DELIVERING"), (orders[2], "PACKED")] {
        let view = admin.order(&order.to_string()).await?;
        ensure!(view["status"] == status, "{order}: {}", view["status"]);
        let timeline = admin.get(&format!("/api/v1/orders/{order}/events")).await?.json();
        let count = |kind: &str| {
            timeline.as_array().map_or(0, |e| e.iter().filter(|e| e["event"]["kind"]["type"] == kind).count())
        };
        ensure!(count("DISPATCHED") <= 1 && count("SIGNED") <= 1, "{order}: each change once");
    }
    app.cancel(refused.item)?;
    let day = until(&app, "given up, gone from the list", |d| {
        d.attention.is_empty() && d.waiting == 0 && d.stops.iter().all(|s| s.order_id != orders[2])
    })
    .await?;
    ensure!(day.stops.len() == 1 && day.stops[0].order_id == orders[1], "{:?}", day.stops);
    app.stop();
    server.stop().await;
    Ok(())
}
