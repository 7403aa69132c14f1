//! The client core against a real server on a real port, with the real
//! outbox (SQLite files), through a proxy that breaks the network on purpose.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use serde_json::{Value, json};
use xianlu_core::error::NextStep;
use xianlu_core::outbox::{Blocked, Operation, OutboxSettings};
use xianlu_core::push::{PushEvent, PushSettings};
use xianlu_core::store::{ItemState, SqliteStore, Store};
use xianlu_core::{ApiClient, Backoff, CoreError, Outbox, PushClient};
use xianlu_domain::evidence::{EvidenceKind, PositionBatch, PositionFix};
use xianlu_domain::wire::Topic;
use xianlu_domain::{Command, CourierId, FailedAttemptReason, MerchantId, OrderId};
use xianlu_tests::chaos::{ChaosProxy, Faults};
use xianlu_tests::{Backend, Client, Shop, TestServer};

const PASSWORD: &str = "菠菜-spinach-2030!";

xianlu_tests::on_both_backends!(
    two_thousand_changes_through_cuts_lost_responses_and_restarts_land_exactly_once,
    a_push_subscriber_gets_every_event_once_in_order_through_a_thousand_disconnects,
    a_killed_client_drains_its_outbox_on_restart_without_duplicates,
    a_stale_change_needs_attention_while_the_couriers_other_orders_sync,
    evidence_is_content_addressed_reencoded_private_and_erased_with_personal_data,
    location_batches_wait_offline_and_drain_once_the_server_takes_them,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_and_unknown_protocol_versions_are_reported_never_lost() -> Result<()> {
    corrupt_rows_and_unknown_protocol_versions(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accident_reported_on_one_order_covers_every_order_aboard() -> Result<()> {
    let world = World::new(Backend::Sqlite, 2).await?;
    let (username, courier) = world.couriers[0].clone();
    let aboard = world.packed_orders(&courier, 3).await?;
    let elsewhere = world.packed_order(&world.couriers[1].1).await?;
    world.admin.command(&elsewhere, json!({"type": "DISPATCH"})).await?;
    let api = logged_in(&world.server.url, &username).await?;
    let store = world.store("aboard")?;
    let outbox = Outbox::start(store.clone(), api.clone(), fast());
    for id in &aboard {
        outbox.enqueue(Operation::Command {
            order_id: order_id(id)?,
            command: Command::Dispatch,
            expected_version: None,
        })?;
    }
    tokio::time::timeout(Duration::from_secs(30), outbox.settled()).await?;
    // The courier's device knows what it carries from its cache.
    let cache = xianlu_core::cache::OrderCache::new(store);
    for id in &aboard {
        cache.load(&api, order_id(id)?).await?;
    }
    let known: Vec<xianlu_domain::Order> = cache.all()?.into_iter().map(|v| v.order).collect();
    let report = xianlu_core::report::ExceptionReport {
        reason: xianlu_core::report::ExceptionReason::TrafficAccident,
        note: "东三环追尾".into(),
        photos: vec![photo(90)?],
        position: Some(xianlu_domain::wire::LatLng { lat: 39.92, lng: 116.46 }),
        at: Utc::now(),
    };
    let affected =
        xianlu_core::report::affected_orders(report.reason, order_id(&aboard[1])?, courier_id(&courier)?, &known);
    ensure!(affected.len() == 3, "{affected:?}");
    // Meanwhile the office hands this courier one more order the device has not heard of.
    let late = world.packed_order(&courier).await?;
    world.admin.command(&late, json!({"type": "DISPATCH"})).await?;
    outbox.enqueue_all(xianlu_core::report::file_report(
        &report,
        order_id(&aboard[1])?,
        courier_id(&courier)?,
        &known,
    ))?;
    let status = tokio::time::timeout(Duration::from_secs(30), outbox.settled()).await?;
    ensure!(status.waiting == 0, "{status:?}");
    for id in &aboard {
        let view = world.admin.order(id).await?;
        ensure!(
            view["status"] == "EXCEPTION_HANDLING" && view["order"]["exception"]["kind"] == "TRAFFIC_ACCIDENT",
            "{id}"
        );
        let evidence = world.admin.get(&format!("/api/v1/orders/{id}/evidence")).await?.json();
        ensure!(
            evidence[0]["exceptionKind"] == "TRAFFIC_ACCIDENT" && evidence[0]["position"]["lat"] == 39.93,
            "{evidence}"
        );
    }
    ensure!(world.admin.order(&late).await?["status"] == "EXCEPTION_HANDLING", "the server covers every order aboard");
    ensure!(world.admin.order(&elsewhere).await?["status"] == "DELIVERING", "another courier's order is untouched");
    // Only accidents and breakdowns cover a vehicle.
    match api.vehicle_exception(courier_id(&courier)?, xianlu_domain::ExceptionKind::Delay, "堵车", "k-delay").await {
        Err(CoreError::Server { problem }) => ensure!(problem.code == "not_vehicle_level", "{problem:?}"),
        other => bail!("{other:?}"),
    }
    world.server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_refresh_transparently_and_an_ended_session_pauses_the_outbox() -> Result<()> {
    tokens_refresh_transparently(Backend::Sqlite).await
}

/// A shop with couriers who can log in, and plenty of stock.
struct World {
    server: TestServer,
    admin: Client,
    shop: Shop,
    /// (username, courier id)
    couriers: Vec<(String, String)>,
    dir: PathBuf,
}

impl World {
    async fn new(backend: Backend, couriers: usize) -> Result<World> {
        let server = TestServer::spawn(backend).await?;
        let admin = server.client("admin:root");
        let mut shop = Shop::open(&admin).await?;
        while shop.couriers.len() < couriers {
            let n = shop.couriers.len();
            let c = admin
                .ok(
                    &format!("/api/v1/merchants/{}/couriers", shop.merchant),
                    &json!({"name": format!("骑手{n}"), "phone": format!("1390000{n:04}"), "vehicle": "三轮车", "refrigerated": false}),
                )
                .await?;
            shop.couriers.push(c["id"].as_str().context("courier id")?.to_owned());
        }
        let reply = admin
            .put(
                &format!("/api/v1/warehouses/{}/stock/SPINACH", shop.warehouse),
                &json!({"name": "有机菠菜", "dimension": "grams", "onHandBase": 100_000_000}),
            )
            .await?;
        ensure!(reply.status == 200, "stock: {}", reply.status);
        let mut users = Vec::new();
        for (i, courier) in shop.couriers.iter().take(couriers).enumerate() {
            let username = format!("courier.{i}");
            admin
                .ok(
                    "/api/v1/admin/users",
                    &json!({"username": username, "password": PASSWORD, "role": "courier", "courierId": courier}),
                )
                .await?;
            users.push((username, courier.clone()));
        }
        let dir = server.db.dir.clone().context("test dir")?;
        Ok(World { server, admin, shop, couriers: users, dir })
    }

    /// An order packed and assigned to the courier, ready for them to take.
    async fn packed_order(&self, courier: &str) -> Result<String> {
        let id = self.shop.place(&self.admin, &self.shop.spinach()).await?;
        for command in [
            json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}}),
            json!({"type": "START_PICKING"}),
            json!({"type": "RECORD_PICK", "lineNo": 1, "base": 2000}),
            json!({"type": "PACK"}),
            json!({"type": "ASSIGN_COURIER", "courierId": courier}),
        ] {
            self.admin.command(&id, command).await?;
        }
        Ok(id)
    }

    async fn packed_orders(&self, courier: &str, n: usize) -> Result<Vec<String>> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.packed_order(courier).await?);
        }
        Ok(ids)
    }

    fn store(&self, name: &str) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(SqliteStore::open(&self.dir.join(format!("{name}.db")))?))
    }
}

/// Logs in through whatever network there is, retrying what can be retried.
async fn logged_in(base: &str, username: &str) -> Result<ApiClient> {
    let api = ApiClient::new(base)?;
    for _ in 0..200 {
        match api.login(username, PASSWORD).await {
            Ok(_) => return Ok(api),
            Err(error) if error.is_retryable() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(error) => return Err(error.into()),
        }
    }
    bail!("could not log in as {username}")
}

fn fast() -> OutboxSettings {
    OutboxSettings { backoff: Backoff::fast(), concurrency: 4, ..OutboxSettings::default() }
}

fn order_id(id: &str) -> Result<OrderId> {
    id.parse().map_err(|_| anyhow::anyhow!("order id {id}"))
}

fn courier_id(id: &str) -> Result<CourierId> {
    id.parse().map_err(|_| anyhow::anyhow!("courier id {id}"))
}

/// A small photo (a PNG of one colour), prepared as evidence by the core.
fn photo(shade: u8) -> Result<xianlu_core::report::AttachedPhoto> {
    let mut png = Vec::new();
    image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([shade, ((x * 7 + y * 3) % 251) as u8, 90]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    let position = Some(xianlu_domain::wire::LatLng { lat: 39.93, lng: 116.42 });
    let photo = xianlu_core::photo::prepare(&png, EvidenceKind::Photo, Utc::now(), position, Default::default())?;
    Ok(xianlu_core::report::AttachedPhoto { sha256: photo.sha256.clone(), upload: photo.upload() })
}

/// The changes in a timeline (observations of the road — positions, estimates,
/// arrivals, alerts — change nothing and are left out).
fn kinds(timeline: &Value) -> Vec<String> {
    timeline
        .as_array()
        .map(|events| {
            events
                .iter()
                // An event this test cannot read counts as a change, so it is never hidden.
                .filter(|e| {
                    !serde_json::from_value::<xianlu_domain::Event>(e["event"].clone())
                        .is_ok_and(|event| event.kind.is_observation())
                })
                .map(|e| e["event"]["kind"]["type"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn two_thousand_changes_through_cuts_lost_responses_and_restarts_land_exactly_once(
    backend: Backend,
) -> Result<()> {
    const COURIERS: usize = 4;
    const ORDERS_EACH: usize = 110;
    const BATCHES_EACH: u64 = 100;
    const FIXES_PER_BATCH: u64 = 5;
    let mut world = World::new(backend, COURIERS).await?;
    let mut orders: Vec<Vec<String>> = Vec::new();
    for (_, courier) in &world.couriers {
        orders.push(world.packed_orders(courier, ORDERS_EACH).await?);
    }
    let faults = Faults {
        cut: 0.05,
        cut_within: Duration::from_millis(200),
        cut_request: 0.10,
        drop_response: 0.10,
        max_delay: Duration::from_millis(2),
    };
    let proxy = ChaosProxy::start(&world.server.url, faults).await?;
    let door = photo(200)?;

    // Each courier works through their orders: take, nobody home, leave at the door with a photo.
    let mut outboxes = Vec::new();
    let mut enqueued = 0usize;
    for (i, (username, courier)) in world.couriers.iter().enumerate() {
        let api = logged_in(&proxy.url, username).await?;
        let outbox = Outbox::start(world.store(&format!("courier-{i}"))?, api, fast());
        for id in &orders[i] {
            let order_id = order_id(id)?;
            let mut ops = vec![
                Operation::Command { order_id, command: Command::Dispatch, expected_version: None },
                Operation::Command {
                    order_id,
                    command: Command::RecordFailedAttempt { reason: FailedAttemptReason::CustomerAbsent },
                    expected_version: None,
                },
            ];
            ops.extend(xianlu_core::report::drop_off_operations(order_id, &door));
            enqueued += ops.len();
            outbox.enqueue_all(ops)?;
        }
        let courier_id = courier_id(courier)?;
        let start = Utc::now() - chrono::Duration::hours(3);
        for b in 0..BATCHES_EACH {
            let fixes = (0..FIXES_PER_BATCH)
                .map(|f| {
                    let seq = b * FIXES_PER_BATCH + f + 1;
                    PositionFix {
                        device_seq: seq,
                        at: start + chrono::Duration::seconds(seq as i64 * 5),
                        lat: 39.90 + seq as f64 * 0.00005,
                        lng: 116.40,
                        accuracy_m: 6.0,
                        speed_mps: Some(1.1),
                        heading_deg: Some(0.0),
                    }
                })
                .collect();
            outbox.enqueue(Operation::Positions { courier_id, batch: PositionBatch { fixes } })?;
            enqueued += 1;
        }
        outboxes.push(outbox);
    }
    ensure!(enqueued >= 2000, "{enqueued} changes");

    // Two server restarts while the changes flow.
    let started = Instant::now();
    let acknowledged = |outboxes: &[Outbox]| outboxes.iter().map(|o| o.status().acknowledged).sum::<u64>();
    for threshold in [enqueued as u64 / 3, enqueued as u64 * 2 / 3] {
        while acknowledged(&outboxes) < threshold {
            ensure!(started.elapsed() < Duration::from_secs(300), "stuck at {} acknowledged", acknowledged(&outboxes));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        world.server.restart().await?;
        proxy.set_upstream(&world.server.url);
    }
    for outbox in &outboxes {
        let status = tokio::time::timeout(Duration::from_secs(300), outbox.settled()).await?;
        ensure!(status.waiting == 0 && status.needs_attention == 0, "{status:?}: {:?}", outbox.items()?.first());
    }
    let elapsed = started.elapsed();
    let counts = &proxy.counts;
    let (cuts, dropped) = (proxy.cuts(), counts.dropped_responses.load(std::sync::atomic::Ordering::Relaxed));
    println!("{enqueued} changes in {elapsed:?}; {cuts} connections cut, {dropped} responses dropped, 2 restarts");
    ensure!(cuts > 100 && dropped > 100, "the network was not hostile enough: {cuts} cuts, {dropped} dropped");

    // The reference model: every order taken once, failed once, dropped off once.
    let admin = world.server.client("admin:root");
    for id in orders.iter().flatten() {
        let timeline = admin.get(&format!("/api/v1/orders/{id}/events")).await?.json();
        let kinds = kinds(&timeline);
        let tail: Vec<&str> = kinds.iter().rev().take(3).rev().map(String::as_str).collect();
        ensure!(tail == ["DISPATCHED", "DELIVERY_ATTEMPT_FAILED", "SIGNED"], "{id}: {kinds:?}");
        ensure!(kinds.iter().filter(|k| *k == "DISPATCHED").count() == 1, "{id} dispatched twice: {kinds:?}");
        let evidence = admin.get(&format!("/api/v1/orders/{id}/evidence")).await?.json();
        ensure!(evidence.as_array().map_or(0, Vec::len) == 1, "{id}: {evidence}");
    }
    for (_, courier) in &world.couriers {
        let fixes = admin.get(&format!("/api/v1/couriers/{courier}/positions?afterSeq=0")).await?.json();
        let seqs: BTreeSet<u64> =
            fixes.as_array().context("fixes")?.iter().filter_map(|f| f["deviceSeq"].as_u64()).collect();
        ensure!(seqs.len() as u64 == BATCHES_EACH * FIXES_PER_BATCH, "{} fixes stored", seqs.len());
        ensure!(seqs.iter().copied().eq(1..=BATCHES_EACH * FIXES_PER_BATCH));
    }
    drop(admin);
    world.server.stop().await;
    Ok(())
}

async fn a_push_subscriber_gets_every_event_once_in_order_through_a_thousand_disconnects(
    backend: Backend,
) -> Result<()> {
    let world = World::new(backend, 1).await?;
    world
        .admin
        .ok(
            "/api/v1/admin/users",
            &json!({"username": "owner", "password": PASSWORD, "role": "merchant_owner", "merchantId": world.shop.merchant}),
        )
        .await?;
    // Every connection is cut within 15 ms of opening.
    let faults = Faults { cut: 1.0, cut_within: Duration::from_millis(15), ..Faults::NONE };
    let api = logged_in(&world.server.url, "owner").await?;
    let proxy = ChaosProxy::start(&world.server.url, faults).await?;
    let through_proxy = ApiClient::new(&proxy.url)?;
    through_proxy.restore(api.session().context("session")?);
    let merchant: MerchantId = world.shop.merchant.parse().map_err(|_| anyhow::anyhow!("merchant id"))?;
    let settings = PushSettings {
        backoff: Backoff { base: Duration::from_millis(1), max: Duration::from_millis(5) },
        heartbeat: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
    };
    let (push, mut events) =
        PushClient::start(through_proxy, world.store("push")?, vec![Topic::Merchant(merchant)], settings);

    // Orders are created while the connection keeps breaking.
    let producer = {
        let admin = world.server.client("admin:root");
        let draft = world.shop.spinach();
        let shop_orders = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let running = shop_orders.clone();
        let task = tokio::spawn(async move {
            let mut created = 0u64;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                if admin.ok("/api/v1/orders", &draft).await.is_ok() {
                    created += 1;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            created
        });
        (shop_orders, task)
    };
    let started = Instant::now();
    let mut received: Vec<u64> = Vec::new();
    let mut resyncs = 0;
    // Both a thousand cuts and enough events to prove something, however
    // fast the machine creates orders relative to how fast the proxy cuts.
    while proxy.cuts() < 1000 || received.len() < 600 {
        ensure!(
            started.elapsed() < Duration::from_secs(240),
            "only {} disconnects and {} events",
            proxy.cuts(),
            received.len()
        );
        match tokio::time::timeout(Duration::from_millis(50), events.recv()).await {
            Ok(Some(PushEvent::Event(event))) => received.push(event.seq),
            Ok(Some(PushEvent::Resynced { .. })) => resyncs += 1,
            Ok(Some(PushEvent::CaughtUp { .. })) | Err(_) => {}
            Ok(None) => bail!("the push client stopped: {:?}", push.state()),
        }
    }
    producer.0.store(false, std::sync::atomic::Ordering::SeqCst);
    let created = producer.1.await?;
    proxy.set_faults(Faults::NONE);
    // Everything committed for the merchant, from the database's own record.
    let expected = merchant_event_seqs(&world.server.db.url, merchant).await?;
    let first = received.first().copied().context("no events received")?;
    let expected: Vec<u64> = expected.into_iter().filter(|s| *s >= first).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < expected.len() && Instant::now() < deadline {
        if let Ok(Some(PushEvent::Event(event))) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            received.push(event.seq);
        }
    }
    println!(
        "{} disconnects, {created} orders created, {} events received in order, {resyncs} resyncs, in {:?}",
        proxy.cuts(),
        received.len(),
        started.elapsed()
    );
    ensure!(received == expected, "received {} events, expected {}", received.len(), expected.len());
    push.stop();
    world.server.stop().await;
    Ok(())
}

async fn a_killed_client_drains_its_outbox_on_restart_without_duplicates(backend: Backend) -> Result<()> {
    let world = World::new(backend, 1).await?;
    let (username, courier) = world.couriers[0].clone();
    let orders = world.packed_orders(&courier, 60).await?;
    // A slow network, so the kill lands mid-drain.
    let slow = Faults { max_delay: Duration::from_millis(25), ..Faults::NONE };
    let proxy = ChaosProxy::start(&world.server.url, slow).await?;
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_xianlu-courier-client"));
    let store_path = world.dir.join("killed.db");
    let mut child = tokio::process::Command::new(program)
        .args([proxy.url.as_str(), &username, PASSWORD, &store_path.display().to_string(), "enqueue"])
        .args(&orders)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let delivering = |admin: Client, orders: Vec<String>| async move {
        let mut n = 0;
        for id in &orders {
            if admin.order(id).await?["status"] == "DELIVERING" {
                n += 1;
            }
        }
        anyhow::Ok(n)
    };
    let started = Instant::now();
    loop {
        ensure!(started.elapsed() < Duration::from_secs(60), "the client never started sending");
        if delivering(world.admin.clone(), orders.clone()).await? >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill()?; // SIGKILL
    child.wait().await?;
    let sent_before = delivering(world.admin.clone(), orders.clone()).await?;
    let left = SqliteStore::open(&store_path)?.items()?.len();
    println!("killed with {sent_before} of {} sent and {left} left in the outbox", orders.len());
    ensure!(left > 0 && sent_before < orders.len(), "the kill came too late to prove anything");

    let output = tokio::process::Command::new(program)
        .args([world.server.url.as_str(), &username, PASSWORD, &store_path.display().to_string(), "drain"])
        .output()
        .await?;
    ensure!(output.status.success(), "drain failed: {}", String::from_utf8_lossy(&output.stderr));
    let status: Value = serde_json::from_slice(&output.stdout)?;
    ensure!(status["waiting"] == 0 && status["needsAttention"] == 0, "{status}");
    for id in &orders {
        let kinds = kinds(&world.admin.get(&format!("/api/v1/orders/{id}/events")).await?.json());
        ensure!(kinds.iter().filter(|k| *k == "DISPATCHED").count() == 1, "{id}: {kinds:?}");
    }
    world.server.stop().await;
    Ok(())
}

async fn a_stale_change_needs_attention_while_the_couriers_other_orders_sync(backend: Backend) -> Result<()> {
    let world = World::new(backend, 2).await?;
    let (username, courier) = world.couriers[0].clone();
    let (_, other_courier) = world.couriers[1].clone();
    let taken = world.packed_order(&courier).await?;
    let mine = world.packed_orders(&courier, 3).await?;
    let proxy = ChaosProxy::start(&world.server.url, Faults::NONE).await?;
    let api = logged_in(&proxy.url, &username).await?;
    let cache = xianlu_core::cache::OrderCache::new(world.store("courier-cache")?);
    for id in mine.iter().chain([&taken]) {
        cache.load(&api, order_id(id)?).await?;
    }

    // The basement garage: no network.
    proxy.set_dark(true);
    for id in mine.iter().chain([&taken]) {
        let view = cache.load(&api, order_id(id)?).await?;
        ensure!(view.customer.as_ref().is_some_and(|c| c.business_name == "老王饭店"), "cached offline");
        ensure!(view.order.lines.len() == 1 && view.order.status == xianlu_domain::Status::Packed);
    }
    let outbox = Outbox::start(world.store("courier")?, api, fast());
    let stale = outbox.enqueue(Operation::Command {
        order_id: order_id(&taken)?,
        command: Command::Dispatch,
        expected_version: None,
    })?;
    let behind = outbox.enqueue(Operation::Command {
        order_id: order_id(&taken)?,
        command: Command::RecordFailedAttempt { reason: FailedAttemptReason::CustomerAbsent },
        expected_version: None,
    })?;
    for id in &mine {
        outbox.enqueue(Operation::Command {
            order_id: order_id(id)?,
            command: Command::Dispatch,
            expected_version: None,
        })?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let offline = outbox.status();
    ensure!(offline.waiting == 5 && !offline.online, "offline, 5 changes waiting: {offline:?}");
    // Meanwhile the office gives the order to someone else.
    world.admin.command(&taken, json!({"type": "ASSIGN_COURIER", "courierId": other_courier})).await?;

    proxy.set_dark(false);
    outbox.kick();
    let status = tokio::time::timeout(Duration::from_secs(30), outbox.settled()).await?;
    ensure!(status.needs_attention == 1 && status.waiting == 2, "{status:?}");
    for id in &mine {
        ensure!(world.admin.order(id).await?["status"] == "DELIVERING", "{id} synced");
    }
    let items = outbox.items()?;
    let wedged = items.iter().find(|i| i.id == stale).context("the stale change is still there")?;
    ensure!(wedged.state == ItemState::Attention);
    let error = wedged.error.as_ref().context("with the server's reason")?;
    ensure!(error.code == "not_found" && error.status == Some(404) && error.next_step() == NextStep::Gone, "{error:?}");
    let held = items.iter().find(|i| i.id == behind).context("the change behind it")?;
    ensure!(held.state == ItemState::Pending && held.attempts == 0, "held back, never sent: {held:?}");
    ensure!(world.admin.order(&taken).await?["status"] == "PACKED", "the stale change did nothing");

    // A change that reached the server cannot be cancelled; one never sent can.
    outbox.cancel(stale)?;
    let next = tokio::time::timeout(Duration::from_secs(30), outbox.settled()).await?;
    ensure!(next.needs_attention == 1 && next.waiting == 1, "the next change of that order is refused too: {next:?}");
    outbox.cancel(behind)?;
    ensure!(outbox.items()?.is_empty());
    let sent = outbox.enqueue(Operation::Command {
        order_id: order_id(&mine[0])?,
        command: Command::RecordFailedAttempt { reason: FailedAttemptReason::Closed },
        expected_version: None,
    })?;
    tokio::time::timeout(Duration::from_secs(30), outbox.settled()).await?;
    ensure!(outbox.items()?.is_empty(), "sent and acknowledged");
    ensure!(outbox.cancel(sent).is_err(), "an acknowledged change cannot be cancelled");
    world.server.stop().await;
    Ok(())
}

async fn evidence_is_content_addressed_reencoded_private_and_erased_with_personal_data(backend: Backend) -> Result<()> {
    let world = World::new(backend, 2).await?;
    let (username, courier) = world.couriers[0].clone();
    let (other_name, _) = world.couriers[1].clone();
    let id = world.packed_order(&courier).await?;
    let order = order_id(&id)?;
    let api = logged_in(&world.server.url, &username).await?;
    api.command(
        order,
        &xianlu_domain::wire::CommandRequest { expected_version: None, command: Command::Dispatch },
        "k1",
    )
    .await?;

    // Signing with evidence that was never uploaded is refused.
    let mut capture = xianlu_core::signature::SignatureCapture::new(300.0, 150.0);
    for i in 0..25u32 {
        capture.add_point(xianlu_core::signature::StrokePoint {
            x: 10.0 + i as f32 * 10.0,
            y: 40.0 + (i % 3) as f32 * 30.0,
            t_ms: i * 20,
            pressure: 0.7,
        });
    }
    let signature = capture.finish(Utc::now(), Some(xianlu_domain::wire::LatLng { lat: 39.93, lng: 116.42 }))?;
    let sign = xianlu_domain::wire::CommandRequest {
        expected_version: None,
        command: Command::Sign { lines: vec![], signature_sha256: signature.sha256.clone() },
    };
    match api.command(order, &sign, "k2").await {
        Err(CoreError::Server { problem }) => ensure!(problem.code == "evidence_missing", "{problem:?}"),
        other => bail!("signed without evidence: {other:?}"),
    }
    // A digest that does not match the content is refused.
    match api.put_evidence(order, &"0".repeat(64), &signature.upload()).await {
        Err(CoreError::Server { problem }) => ensure!(problem.code == "digest_mismatch", "{problem:?}"),
        other => bail!("{other:?}"),
    }
    // Not an image.
    let mut bogus = photo(10)?.upload;
    bogus.image = base64_of(b"MZ\x90\x00 definitely not a picture");
    let bogus_sha =
        xianlu_domain::evidence::evidence_digest(EvidenceKind::Photo, b"MZ\x90\x00 definitely not a picture", None);
    match api.put_evidence(order, &bogus_sha, &bogus).await {
        Err(CoreError::Server { problem }) => ensure!(problem.code == "unreadable_image", "{problem:?}"),
        other => bail!("{other:?}"),
    }
    // A photo larger than the server's general body limit (256 KiB) goes
    // through the evidence route's own limit; one over that limit does not.
    let mut seed = 9u32;
    let noisy = image::RgbImage::from_fn(700, 500, |_, _| {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        image::Rgb([(seed >> 24) as u8, (seed >> 16) as u8, (seed >> 8) as u8])
    });
    let mut big = Vec::new();
    noisy.write_to(&mut std::io::Cursor::new(&mut big), image::ImageFormat::Png)?;
    ensure!(big.len() > 512 * 1024, "{} bytes", big.len());
    let mut upload = photo(1)?.upload;
    upload.image = base64_of(&big);
    let big_sha = xianlu_domain::evidence::evidence_digest(EvidenceKind::Photo, &big, None);
    let stored = api.put_evidence(order, &big_sha, &upload).await?;
    ensure!(stored.content_type == "image/jpeg" && stored.width == 700);
    upload.image = base64_of(&vec![0u8; 7 * 1024 * 1024]);
    match api.put_evidence(order, &big_sha, &upload).await {
        Err(CoreError::Server { problem }) => ensure!(problem.status == 413, "{problem:?}"),
        other => bail!("a 9 MiB upload was taken: {other:?}"),
    }
    let first = api.put_evidence(order, &signature.sha256, &signature.upload()).await?;
    let again = api.put_evidence(order, &signature.sha256, &signature.upload()).await?;
    ensure!(first == again && first.kind == EvidenceKind::Signature && first.content_type == "image/png");
    ensure!(first.image_sha256 != signature.sha256, "what is served is the server's re-encoding");
    let served = api.evidence_image(order, &signature.sha256).await?;
    ensure!(image::load_from_memory(&served)?.width() == 600);
    api.command(order, &sign, "k2b").await?;
    let view = api.order(order).await?;
    ensure!(view.order.sign_off.as_ref().is_some_and(|s| s.evidence_sha256 == signature.sha256));

    // Another courier cannot see it; the audit chain recorded it.
    let other = logged_in(&world.server.url, &other_name).await?;
    match other.evidence_image(order, &signature.sha256).await {
        Err(CoreError::Server { problem }) => ensure!(problem.status == 404, "{problem:?}"),
        other => bail!("another courier read the signature: {other:?}"),
    }
    let report = world.admin.get("/api/v1/admin/audit/verify").await?.json();
    ensure!(report["problems"] == json!([]), "{report}");

    // Erasing the customer's personal data erases the images.
    let reply =
        world.admin.post(&format!("/api/v1/customers/{}/erase", world.shop.prepaid_customer), &json!({})).await?;
    ensure!(reply.status == 204 || reply.status == 200, "erase: {}", reply.status);
    ensure!(api.evidence(order).await?.is_empty(), "evidence erased");
    ensure!(api.order(order).await?.order.sign_off.is_some(), "the order stays, with its digest");
    world.server.stop().await;
    Ok(())
}

/// The merchant's event sequences, read from the events table itself.
async fn merchant_event_seqs(url: &str, merchant: MerchantId) -> Result<Vec<u64>> {
    const QUERY: &str = "SELECT seq FROM events WHERE merchant_id = $1 ORDER BY seq";
    let rows: Vec<(i64,)> = if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await?;
        let rows = sqlx::query_as(QUERY).bind(merchant.uuid()).fetch_all(&pool).await?;
        pool.close().await;
        rows
    } else {
        let pool = sqlx::PgPool::connect(url).await?;
        let rows = sqlx::query_as(QUERY).bind(merchant.uuid()).fetch_all(&pool).await?;
        pool.close().await;
        rows
    };
    Ok(rows.into_iter().map(|(s,)| s as u64).collect())
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn location_batches_wait_offline_and_drain_once_the_server_takes_them(backend: Backend) -> Result<()> {
    let world = World::new(backend, 1).await?;
    let (username, courier) = world.couriers[0].clone();
    let proxy = ChaosProxy::start(&world.server.url, Faults::NONE).await?;
    let api = logged_in(&proxy.url, &username).await?;
    proxy.set_dark(true);
    let store = world.store("tracker")?;
    let outbox = Outbox::start(store.clone(), api.clone(), fast());
    let mut shipper = xianlu_core::location::LocationShipper::new(
        xianlu_core::location::Tracker::new(Default::default()),
        courier_id(&courier)?,
        outbox.clone(),
        store,
    );
    // Ten minutes of driving east at 8 m/s, one raw fix a second, with a GPS jump.
    let start = Utc::now() - chrono::Duration::minutes(10);
    let mut raw = 0;
    for s in 0..600i64 {
        let mut position = xianlu_domain::wire::LatLng { lat: 39.90, lng: 116.30 + 8.0 * s as f64 / 85_000.0 };
        if s == 300 {
            position.lat += 0.05; // 5 km north for one second
        }
        shipper.offer(xianlu_core::location::Fix {
            at: start + chrono::Duration::seconds(s),
            position,
            accuracy_m: 5.0,
            speed_mps: Some(8.0),
            heading_deg: Some(90.0),
        })?;
        raw += 1;
    }
    shipper.flush()?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = outbox.status().waiting;
    ensure!(waiting > 0, "batches wait in the outbox while offline");
    proxy.set_dark(false);
    outbox.kick();
    let status = tokio::time::timeout(Duration::from_secs(30), outbox.settled()).await?;
    ensure!(status.waiting == 0, "{status:?}");
    let stored = api.positions(courier_id(&courier)?, 0).await?;
    println!("{raw} raw fixes → {} uploaded in {waiting} batches", stored.len());
    ensure!(stored.len() > 20 && stored.len() < 60, "sampled: {} of {raw}", stored.len());
    ensure!(stored.iter().all(|f| f.lat < 39.95), "the jump was dropped on the device");
    // A replayed batch is recognised by its device sequences.
    let replay = PositionBatch { fixes: stored[..5].to_vec() };
    let receipt = api.post_positions(courier_id(&courier)?, &replay, "replay-1").await?;
    ensure!(receipt.duplicates == 5 && receipt.accepted == 0, "{receipt:?}");
    world.server.stop().await;
    Ok(())
}

async fn corrupt_rows_and_unknown_protocol_versions(backend: Backend) -> Result<()> {
    let world = World::new(backend, 1).await?;
    let (username, courier) = world.couriers[0].clone();
    let orders = world.packed_orders(&courier, 2).await?;
    let path = world.dir.join("corrupt.db");
    {
        let store = SqliteStore::open(&path)?;
        let api = ApiClient::new(&world.server.url)?;
        // Stored but not started: then a row is damaged on disk.
        let outbox = Outbox::start(Arc::new(store), api, OutboxSettings { concurrency: 0, ..fast() });
        for id in &orders {
            outbox.enqueue(Operation::Command {
                order_id: order_id(id)?,
                command: Command::Dispatch,
                expected_version: None,
            })?;
        }
        outbox.stop();
    }
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute("UPDATE outbox SET body = '{\"op\":\"command\",\"orderId\":42' WHERE id = 1", [])?;
    drop(conn);
    let api = logged_in(&world.server.url, &username).await?;
    let outbox = Outbox::start(Arc::new(SqliteStore::open(&path)?), api, fast());
    let status = tokio::time::timeout(Duration::from_secs(30), outbox.settled()).await?;
    ensure!(status.needs_attention == 1 && status.waiting == 1, "{status:?}");
    let items = outbox.items()?;
    ensure!(items[0].operation.is_err() && items[0].error.as_ref().is_some_and(|e| e.code == "corrupt_item"));
    ensure!(items[0].error.as_ref().is_some_and(|e| e.next_step() == NextStep::CheckDevice));
    ensure!(world.admin.order(&orders[1]).await?["status"] == "DELIVERING", "the good row was sent");
    world.server.stop().await;

    // A server that speaks protocol version 2.
    let future = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let future_url = format!("http://{}", future.local_addr()?);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = future.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let body = r#"{"accessToken":"a","refreshToken":"r","user":{"id":"00000000-0000-0000-0000-000000000000","username":"x","role":"courier"},"shape":"v2"}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nxianlu-api-version: 2\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    let api = ApiClient::new(&future_url)?;
    match api.login("x", "y").await {
        Err(CoreError::Incompatible { server: 2, ours: 1 }) => {}
        other => bail!("a version-2 answer was not refused: {other:?}"),
    }
    api.restore(xianlu_core::Session {
        access_token: "a".into(),
        refresh_token: "r".into(),
        user: serde_json::from_value(
            json!({"id": "00000000-0000-0000-0000-000000000000", "username": "x", "role": "courier"}),
        )?,
    });
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&world.dir.join("future.db"))?);
    let outbox = Outbox::start(store, api, fast());
    outbox.enqueue(Operation::Command {
        order_id: order_id(&orders[0])?,
        command: Command::Dispatch,
        expected_version: None,
    })?;
    let status = tokio::time::timeout(Duration::from_secs(10), outbox.settled()).await?;
    ensure!(matches!(status.blocked, Some(Blocked::UpdateApp(_))) && status.waiting == 1, "{status:?}");
    ensure!(outbox.items()?[0].state == ItemState::Pending, "kept, to send after an update");
    Ok(())
}

async fn tokens_refresh_transparently(backend: Backend) -> Result<()> {
    let db = xianlu_tests::TestDb::create(backend).await?;
    let server = TestServer::spawn_with(db, |c| c.access_token_ttl_secs = 1).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    admin
        .ok(
            "/api/v1/admin/users",
            &json!({"username": "courier.t", "password": PASSWORD, "role": "courier", "courierId": shop.couriers[0]}),
        )
        .await?;
    let api = logged_in(&server.url, "courier.t").await?;
    let before = api.session().context("session")?;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let page = api.orders(&Default::default()).await?;
    ensure!(page.items.is_empty());
    let after = api.session().context("still logged in")?;
    ensure!(after.access_token != before.access_token && after.refresh_token != before.refresh_token);

    // An ended session pauses the outbox; nothing is dropped.
    let user = before.user.id;
    let reply = admin.post(&format!("/api/v1/admin/users/{user}/revoke"), &json!({})).await?;
    ensure!(reply.status == 204 || reply.status == 200, "revoke: {}", reply.status);
    let order = shop.place(&admin, &shop.spinach()).await?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&server.db.dir.clone().context("dir")?.join("t.db"))?);
    let outbox = Outbox::start(store, api.clone(), fast());
    outbox.enqueue(Operation::Command {
        order_id: order_id(&order)?,
        command: Command::Dispatch,
        expected_version: None,
    })?;
    let status = tokio::time::timeout(Duration::from_secs(10), outbox.settled()).await?;
    ensure!(status.blocked == Some(Blocked::LogIn) && status.waiting == 1, "{status:?}");
    ensure!(api.session().is_none(), "the session is gone");
    let mut attempts = HashMap::new();
    for item in outbox.items()? {
        attempts.insert(item.id, item.state);
    }
    ensure!(attempts.values().all(|s| *s == ItemState::Pending));
    server.stop().await;
    Ok(())
}
