//! Courier operations through the public surface, on SQLite and PostgreSQL:
//! a recorded day on the road (a warehouse, two restaurants, GPS jitter while
//! parked at a fence's edge) and what every party sees of it.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use xianlu_tests::{Backend, Client, Shop, Stream, TestServer};

const PASSWORD: &str = "correct horse battery staple 42";

xianlu_tests::on_both_backends!(
    a_recorded_delivery_round_arrives_once_per_stop_and_keeps_every_party_informed,
    operations_settings_fences_and_alerts_refuse_bad_input,
    each_rule_raises_its_alert_once_when_its_threshold_passes_and_clears_when_resolved,
    the_planner_assigns_open_orders_cold_goods_to_refrigerated_vans_and_keeps_routes,
    a_merchant_that_plans_by_itself_gets_paid_orders_assigned_after_one_debounced_replan,
    after_an_accident_another_courier_collects_the_goods_at_the_van_and_every_party_follows,
    couriers_on_duty_get_the_work_within_their_shift,
);

const WAREHOUSE: (f64, f64) = (39.97, 116.49);
const RESTAURANT: (f64, f64) = (39.93, 116.42);
const CANTEEN: (f64, f64) = (39.91, 116.37);

/// `north` and `east` metres from a point.
fn offset(p: (f64, f64), north: f64, east: f64) -> (f64, f64) {
    (p.0 + north / 111_320.0, p.1 + east / (111_320.0 * p.0.to_radians().cos()))
}

/// A recorded trail: fixes with their device sequence.
struct Trail {
    fixes: Vec<Value>,
    at: DateTime<Utc>,
    seq: u64,
}

impl Trail {
    fn fix(&mut self, p: (f64, f64), accuracy: f64) {
        self.seq += 1;
        self.fixes.push(json!({"deviceSeq": self.seq, "at": self.at, "lat": p.0, "lng": p.1, "accuracyM": accuracy, "speedMps": 8.0}));
    }

    /// Waits around `p`, wobbling by `wobble` metres, one fix per `every` seconds.
    fn stay(&mut self, p: (f64, f64), seconds: i64, every: i64, wobble: f64) {
        for i in 0..seconds / every {
            let w = if i % 2 == 0 { wobble } else { -wobble };
            self.fix(offset(p, w, w / 2.0), 8.0);
            self.at += chrono::Duration::seconds(every);
        }
    }

    /// Drives straight from `a` to `b` at about 8 m/s, one fix per `every` seconds.
    fn drive(&mut self, a: (f64, f64), b: (f64, f64), every: i64) {
        let metres = ((a.0 - b.0) * 111_320.0).hypot((a.1 - b.1) * 111_320.0 * a.0.to_radians().cos());
        let steps = ((metres / 8.0) / every as f64).ceil().max(1.0) as i64;
        for i in 1..=steps {
            let f = i as f64 / steps as f64;
            self.fix((a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f), 8.0);
            self.at += chrono::Duration::seconds(every);
        }
    }

    /// Parks at the edge of a customer's 80 m fence: fixes jump between 70 m
    /// and 100 m from the door (inside, outside), never beyond the exit margin.
    fn park_at_the_edge(&mut self, door: (f64, f64), seconds: i64) {
        for i in 0..seconds / 5 {
            let r = if i % 2 == 0 { 70.0 } else { 100.0 };
            self.fix(offset(door, r, 0.0), 8.0);
            self.at += chrono::Duration::seconds(5);
        }
    }

    /// Sends what was recorded since the last call, in batches of `per_batch`.
    async fn send(&mut self, client: &Client, courier: &str, per_batch: usize) -> Result<()> {
        let fixes = std::mem::take(&mut self.fixes);
        for batch in fixes.chunks(per_batch) {
            client.ok(&format!("/api/v1/couriers/{courier}/positions"), &json!({"fixes": batch})).await?;
        }
        Ok(())
    }
}

fn kinds(timeline: &Value) -> Vec<String> {
    timeline
        .as_array()
        .map(|t| t.iter().map(|e| e["event"]["kind"]["type"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

/// Every EVENT a stream has delivered so far.
async fn drain(stream: &mut Stream) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    while let Ok(message) = stream.next_within(Duration::from_millis(700)).await {
        ensure!(message["type"] != "RESYNC", "the subscriber fell behind: {message}");
        if message["type"] == "EVENT" {
            out.push(message);
        }
    }
    Ok(out)
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"]["kind"]["type"] == kind).collect()
}

async fn packed_for(admin: &Client, shop: &Shop, draft: &Value) -> Result<String> {
    let id = shop.place(admin, draft).await?;
    let order = admin.order(&id).await?;
    if order["status"] == "CREATED" {
        admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    }
    admin.command(&id, json!({"type": "START_PICKING"})).await?;
    admin.command(&id, json!({"type": "RECORD_PICK", "lineNo": 1, "base": 2000})).await?;
    admin.command(&id, json!({"type": "PACK"})).await?;
    admin.command(&id, json!({"type": "ASSIGN_COURIER", "courierId": shop.couriers[0]})).await?;
    Ok(id)
}

async fn a_recorded_delivery_round_arrives_once_per_stop_and_keeps_every_party_informed(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let courier = shop.couriers[0].clone();
    let now = Utc::now();
    // The restaurant's window is far ahead; the canteen's ends in ten minutes,
    // and it is the second stop 12 km away: it will be late, and is told so before.
    let restaurant = packed_for(&admin, &shop, &shop.spinach()).await?;
    let mut canteen_draft = shop.spinach();
    canteen_draft["customerId"] = json!(shop.credit_customer);
    canteen_draft["contactId"] = Value::Null;
    canteen_draft["paymentTerms"] = json!({"kind": "CREDIT", "days": 30});
    canteen_draft["requestedWindow"] =
        json!({"start": now - chrono::Duration::hours(1), "end": now + chrono::Duration::minutes(10)});
    let canteen = packed_for(&admin, &shop, &canteen_draft).await?;
    // The canteen is in its quiet hours now (Beijing time): no notices.
    let beijing = now + chrono::Duration::hours(8);
    let quiet = json!({"quietHours": {
        "from": (beijing - chrono::Duration::hours(2)).format("%H:%M").to_string(),
        "to": (beijing + chrono::Duration::hours(2)).format("%H:%M").to_string()}});
    let reply = admin.put(&format!("/api/v1/customers/{}/quiet-hours", shop.credit_customer), &quiet).await?;
    ensure!(reply.status == 200, "{}", reply.status);

    // The canteen's owner follows their order with a real login (what a customer may see).
    let owner = json!({"username": "canteen.owner", "password": PASSWORD, "role": "customer", "customerId": shop.credit_customer});
    admin.ok("/api/v1/admin/users", &owner).await?;
    let (owner, tokens) = Client::login(&server.url, "canteen.owner", PASSWORD).await?;
    let mut customer =
        Stream::connect_with_token(&server.url, tokens["accessToken"].as_str().unwrap_or_default()).await?;
    customer.subscribe(json!([{"order": canteen}]), None).await?;

    // Two minutes in the yard, picking up: both orders see the courier arrive.
    let mut trail = Trail { fixes: Vec::new(), at: now - chrono::Duration::minutes(50), seq: 0 };
    trail.stay(offset(WAREHOUSE, 20.0, 0.0), 120, 10, 8.0);
    trail.send(&admin, &courier, 6).await?;
    for id in [&restaurant, &canteen] {
        admin.command(id, json!({"type": "DISPATCH"})).await?;
    }
    // Out of the yard and across town, one fix every 2 s in batches of 5 (10 s).
    trail.drive(offset(WAREHOUSE, 20.0, 0.0), offset(RESTAURANT, 200.0, 0.0), 2);
    trail.send(&admin, &courier, 5).await?;

    // Mid-route the rules run: the canteen will be late, and the office hears it before it is.
    admin.ok("/api/v1/admin/rules/sweep", &json!({})).await?;
    admin.ok("/api/v1/admin/rules/sweep", &json!({})).await?; // a second sweep raises nothing again
    let open = admin.get(&format!("/api/v1/merchants/{}/alerts?open=true", shop.merchant)).await?.json();
    let open = open.as_array().cloned().unwrap_or_default();
    let rules = |order: &str| -> Vec<String> {
        let mut r: Vec<String> = open
            .iter()
            .filter(|a| a["orderId"] == order)
            .map(|a| a["rule"].as_str().unwrap_or_default().to_owned())
            .collect();
        r.sort();
        r
    };
    ensure!(rules(&canteen) == ["PREDICTED_LATE"], "canteen alerts: {open:?}");
    ensure!(rules(&restaurant).is_empty(), "restaurant alerts: {open:?}");
    let late = open.iter().find(|a| a["rule"] == "PREDICTED_LATE").context("late alert")?;
    ensure!(late["severity"] == "MEDIUM" && late["acknowledgedAt"].is_null());
    let acked = admin
        .ok(&format!("/api/v1/alerts/{}/acknowledge", late["id"].as_str().unwrap_or_default()), &json!({}))
        .await?;
    ensure!(acked["acknowledgedAt"].is_string() && acked["acknowledgedBy"] == "root", "{acked}");

    // Parked at the fence's edge with GPS jitter, then unloading at the door.
    trail.park_at_the_edge(RESTAURANT, 180);
    trail.stay(offset(RESTAURANT, 10.0, 0.0), 240, 10, 5.0);
    trail.send(&admin, &courier, 6).await?;
    // On to the canteen, which is reached as well.
    trail.drive(offset(RESTAURANT, 10.0, 0.0), offset(CANTEEN, 10.0, 0.0), 5);
    trail.stay(offset(CANTEEN, 10.0, 0.0), 120, 10, 5.0);
    trail.send(&admin, &courier, 6).await?;
    // Arrived in time after all: the prediction clears.
    admin.ok("/api/v1/admin/rules/sweep", &json!({})).await?;
    let open = admin.get(&format!("/api/v1/merchants/{}/alerts?open=true", shop.merchant)).await?.json();
    ensure!(open.as_array().is_some_and(Vec::is_empty), "{open}");

    // The restaurant's timeline: each observation once, in order; live updates kept out.
    let view = admin.order(&restaurant).await?;
    let seen: Vec<String> = kinds(&view["timeline"])
        .into_iter()
        .filter(|k| {
            ["ARRIVED_AT_WAREHOUSE", "DISPATCHED", "LEFT_WAREHOUSE", "ARRIVED_AT_CUSTOMER", "ARRIVING_SOON"]
                .contains(&k.as_str())
        })
        .collect();
    ensure!(
        seen == ["ARRIVED_AT_WAREHOUSE", "DISPATCHED", "LEFT_WAREHOUSE", "ARRIVING_SOON", "ARRIVED_AT_CUSTOMER"],
        "restaurant timeline {seen:?}"
    );
    ensure!(!kinds(&view["timeline"]).iter().any(|k| k == "COURIER_POSITION" || k == "ETA_UPDATED"));
    ensure!(
        view["status"] == "DELIVERING" && view["driverInfo"]["location"]["lat"].is_number(),
        "{}",
        view["driverInfo"]
    );
    let window = &view["etaWindow"]["window"];
    ensure!(window["start"].is_string() && window["end"].is_string() && view["eta"].is_string(), "{view}");

    // The canteen's customer saw positions (throttled), estimates and the arrival; no alert, no notice.
    let events = drain(&mut customer).await?;
    let positions = of_kind(&events, "COURIER_POSITION");
    let fix_times: Vec<DateTime<Utc>> =
        positions.iter().filter_map(|e| e["event"]["kind"]["fixAt"].as_str()?.parse().ok()).collect();
    ensure!(
        positions.len() >= 10,
        "positions pushed: {} of {:?}",
        positions.len(),
        kinds(&Value::Array(events.clone()))
    );
    ensure!(
        fix_times.windows(2).all(|w| w[1] - w[0] >= chrono::Duration::seconds(5)),
        "no two pushes within 5 s of each other: {fix_times:?}"
    );
    let sent = trail.seq as usize;
    ensure!(positions.len() * 2 < sent, "{} pushes for {sent} fixes", positions.len());
    ensure!(!of_kind(&events, "ETA_UPDATED").is_empty(), "estimates pushed");
    ensure!(of_kind(&events, "ARRIVED_AT_CUSTOMER").len() == 1);
    ensure!(of_kind(&events, "ARRIVING_SOON").is_empty(), "quiet hours hold the notice back");
    ensure!(!events.iter().any(|e| e["event"]["kind"]["type"].as_str().is_some_and(|k| k.starts_with("ALERT"))));
    let customer_view = owner.order(&canteen).await?;
    ensure!(!kinds(&customer_view["timeline"]).iter().any(|k| k.starts_with("ALERT")));
    // The client core's tracking map follows the same stream.
    let view: xianlu_domain::wire::OrderView = serde_json::from_value(customer_view.clone())?;
    let mut map = xianlu_core::tracking::TrackingModel::for_order(&view);
    for message in &events {
        if let xianlu_domain::wire::ServerMessage::Event(event) = serde_json::from_value(message.clone())? {
            map.apply(&event);
        }
    }
    let last = positions.last().context("a position")?["event"]["kind"]["position"].clone();
    ensure!(
        map.position.map(|p| (p.lat, p.lng))
            == Some((last["lat"].as_f64().unwrap_or_default(), last["lng"].as_f64().unwrap_or_default()))
    );
    ensure!(
        map.trail.len() >= 2 && map.trail.len() < positions.len(),
        "a simplified trail: {} points",
        map.trail.len()
    );
    ensure!(map.eta.is_none(), "arrived: no estimate any more");

    // The office (replaying its merchant's stream) saw the alert raised once, acknowledged and cleared.
    let mut office = Stream::connect(&server.url, "admin:root").await?;
    office.subscribe(json!([{"merchant": shop.merchant}]), Some(0)).await?;
    let events = drain(&mut office).await?;
    let raised: Vec<(String, String)> = of_kind(&events, "ALERT_RAISED")
        .iter()
        .map(|e| {
            (
                e["orderId"].as_str().unwrap_or_default().to_owned(),
                e["event"]["kind"]["rule"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    ensure!(raised == [(canteen.clone(), "PREDICTED_LATE".to_owned())], "raised once: {raised:?}");
    ensure!(of_kind(&events, "ALERT_ACKNOWLEDGED").len() == 1);
    let cleared: Vec<&str> =
        of_kind(&events, "ALERT_CLEARED").iter().filter_map(|e| e["event"]["kind"]["rule"].as_str()).collect();
    ensure!(cleared == ["PREDICTED_LATE"], "cleared: {cleared:?}");
    let arrivals = of_kind(&events, "ARRIVED_AT_CUSTOMER");
    ensure!(arrivals.len() == 2, "one arrival per stop despite the jitter: {}", arrivals.len());

    // Sign-off ends the estimates; arrivals make the accuracy figures.
    let accuracy = admin.get(&format!("/api/v1/merchants/{}/eta-accuracy", shop.merchant)).await?.json();
    ensure!(accuracy["stops"] == 2, "{accuracy}");
    ensure!(accuracy["maeSeconds"].as_f64().is_some_and(|s| s > 0.0), "{accuracy}");
    let located = admin.get(&format!("/api/v1/merchants/{}/courier-locations", shop.merchant)).await?.json();
    ensure!(located.as_array().is_some_and(|l| l.len() == 1 && l[0]["courierId"] == courier.as_str()), "{located}");
    let metrics = String::from_utf8_lossy(&admin.get("/metrics").await?.bytes).into_owned();
    ensure!(
        metrics.contains("xianlu_customer_notices_total{channel=\"stream\",outcome=\"quiet_hours\"}"),
        "quiet hours counted"
    );
    ensure!(metrics.contains("xianlu_eta_error_seconds_count 2"), "eta error observed per arrival");
    server.stop().await;
    Ok(())
}

async fn operations_settings_fences_and_alerts_refuse_bad_input(backend: Backend) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let settings = format!("/api/v1/merchants/{}/operations", shop.merchant);
    let defaults = admin.get(&settings).await?.json();
    ensure!(defaults["customerFenceM"] == 80 && defaults["rules"]["overdueMinutes"] == 30, "{defaults}");
    let mut changed = defaults.clone();
    changed["customerFenceM"] = json!(120);
    changed["rules"]["overdueMinutes"] = json!(45);
    let reply = admin.put(&settings, &changed).await?;
    ensure!(reply.status == 200, "{}", reply.status);
    ensure!(admin.get(&settings).await?.json()["rules"]["overdueMinutes"] == 45);
    let mut zero = changed.clone();
    zero["customerFenceM"] = json!(0);
    ensure!(admin.put(&settings, &zero).await?.code() == "invalid_settings");
    let mut unknown = changed.clone();
    unknown["sirens"] = json!(true);
    ensure!(admin.put(&settings, &unknown).await?.code() == "invalid_body");

    let fence = format!("/api/v1/warehouses/{}/fence", shop.warehouse);
    let (lat, lng) = WAREHOUSE;
    let bow_tie = json!({"polygon": [
        {"lat": lat, "lng": lng}, {"lat": lat + 0.001, "lng": lng + 0.001},
        {"lat": lat, "lng": lng + 0.001}, {"lat": lat + 0.001, "lng": lng}]});
    ensure!(admin.put(&fence, &bow_tie).await?.code() == "invalid_fence", "a self-intersecting yard is refused");
    let yard = json!({"polygon": [
        {"lat": lat, "lng": lng}, {"lat": lat, "lng": lng + 0.001},
        {"lat": lat + 0.001, "lng": lng + 0.001}, {"lat": lat + 0.001, "lng": lng}]});
    ensure!(admin.put(&fence, &yard).await?.status == 200);
    let quiet = format!("/api/v1/customers/{}/quiet-hours", shop.prepaid_customer);
    ensure!(
        admin.put(&quiet, &json!({"quietHours": {"from": "22:00", "to": "22:00"}})).await?.code()
            == "invalid_quiet_hours"
    );
    ensure!(
        admin.put(&quiet, &json!({"quietHours": {"from": "25:00", "to": "07:00"}})).await?.code() == "invalid_body"
    );
    ensure!(admin.put(&quiet, &json!({"quietHours": {"from": "22:00", "to": "07:00"}})).await?.status == 200);
    // Who may do what is the route matrix's (tests/api.rs); an unknown alert is not found.
    let ack = format!("/api/v1/alerts/{}/acknowledge", uuid::Uuid::now_v7());
    ensure!(admin.post(&ack, &json!({})).await?.status == 404);
    server.stop().await;
    Ok(())
}

async fn each_rule_raises_its_alert_once_when_its_threshold_passes_and_clears_when_resolved(
    backend: Backend,
) -> Result<()> {
    // Rules run only when this test asks (no timer), except what is raised at once.
    let db = xianlu_tests::TestDb::create(backend).await?;
    let server = TestServer::spawn_with(db, |c| c.timer_interval_ms = 3_600_000).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let paid = |id: String| {
        let admin = admin.clone();
        async move {
            admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
            anyhow::Ok(id)
        }
    };
    let picking = paid(shop.place(&admin, &shop.spinach()).await?).await?;
    admin.command(&picking, json!({"type": "START_PICKING"})).await?;
    let uncollected = packed_for(&admin, &shop, &shop.spinach()).await?;
    admin.command(&uncollected, json!({"type": "ASSIGN_COURIER", "courierId": shop.couriers[1]})).await?;
    let silent = packed_for(&admin, &shop, &shop.spinach()).await?;
    admin.command(&silent, json!({"type": "DISPATCH"})).await?;
    let broken = packed_for(&admin, &shop, &shop.spinach()).await?;
    admin.command(&broken, json!({"type": "DISPATCH"})).await?;
    admin
        .command(&broken, json!({"type": "REPORT_EXCEPTION", "kind": "DAMAGED_IN_TRANSIT", "note": "箱子压坏"}))
        .await?;
    let now = Utc::now();
    let mut soon = shop.spinach();
    soon["requestedWindow"] = json!({"start": now, "end": now + chrono::Duration::minutes(5)});
    let overdue = paid(shop.place(&admin, &soon).await?).await?;
    // Last, as it takes what spinach is left.
    let mut too_much = shop.spinach();
    too_much["lines"][0]["quantity"] = json!(120); // 120 kg wanted, 50 kg on hand
    let short = paid(shop.place(&admin, &too_much).await?).await?;

    let open = |admin: Client| {
        let merchant = shop.merchant.clone();
        async move {
            admin.ok("/api/v1/admin/rules/sweep", &json!({})).await?;
            let alerts = admin.get(&format!("/api/v1/merchants/{merchant}/alerts?open=true")).await?.json();
            let mut pairs: Vec<(String, String)> = alerts
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    (
                        a["orderId"].as_str().unwrap_or_default().to_owned(),
                        a["rule"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            pairs.sort();
            anyhow::Ok(pairs)
        }
    };
    let expect = |pairs: &[(&String, &str)]| {
        let mut v: Vec<(String, String)> = pairs.iter().map(|(o, r)| ((*o).clone(), (*r).to_owned())).collect();
        v.sort();
        v
    };
    // An exception reaches customer service at once, before any sweep.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let alerts = admin.get(&format!("/api/v1/merchants/{}/alerts?open=true", shop.merchant)).await?.json();
        if alerts
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["rule"] == "EXCEPTION_OPEN" && a[0]["orderId"] == broken.as_str())
        {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "no exception alert without a sweep: {alerts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And a sweep finds nothing else yet.
    ensure!(open(admin.clone()).await? == expect(&[(&broken, "EXCEPTION_OPEN")]), "{:?}", open(admin.clone()).await?);
    // Twelve minutes on: the courier on the road has not been heard from.
    server.advance_clock(chrono::Duration::minutes(12));
    ensure!(
        open(admin.clone()).await? == expect(&[(&broken, "EXCEPTION_OPEN"), (&silent, "NO_POSITION")]),
        "{:?}",
        open(admin.clone()).await?
    );
    // Forty minutes on: every threshold has passed.
    server.advance_clock(chrono::Duration::minutes(28));
    let all = open(admin.clone()).await?;
    ensure!(
        all == expect(&[
            (&broken, "EXCEPTION_OPEN"),
            (&silent, "NO_POSITION"),
            (&picking, "PICKING_TOO_LONG"),
            (&uncollected, "NOT_COLLECTED"),
            (&short, "SHORT_UNRESOLVED"),
            (&overdue, "OVERDUE"),
        ]),
        "{all:?}"
    );
    // Resolved: the goods go back on the road, the short line ships short, picking ends.
    admin.command(&broken, json!({"type": "RESUME_DELIVERY"})).await?;
    admin.command(&short, json!({"type": "SHORT_SHIP", "lineNo": 1})).await?;
    admin.command(&picking, json!({"type": "RECORD_PICK", "lineNo": 1, "base": 2000})).await?;
    admin.command(&picking, json!({"type": "PACK"})).await?;
    let left = open(admin.clone()).await?;
    ensure!(
        left == expect(&[(&silent, "NO_POSITION"), (&uncollected, "NOT_COLLECTED"), (&overdue, "OVERDUE")]),
        "{left:?}"
    );
    // Everything raised is on record, each once.
    let history = admin.get(&format!("/api/v1/merchants/{}/alerts", shop.merchant)).await?.json();
    let history = history.as_array().cloned().unwrap_or_default();
    ensure!(history.len() == 6, "six raised, none twice: {}", history.len());
    ensure!(
        history.iter().filter(|a| a["orderId"] == broken.as_str() && a["rule"] == "EXCEPTION_OPEN").count() == 1
            && history
                .iter()
                .any(|a| a["rule"] == "EXCEPTION_OPEN" && a["severity"] == "HIGH" && a["clearedAt"].is_string()),
        "{history:?}"
    );
    server.stop().await;
    Ok(())
}

async fn the_planner_assigns_open_orders_cold_goods_to_refrigerated_vans_and_keeps_routes(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let third = admin
        .ok(
            &format!("/api/v1/merchants/{}/couriers", shop.merchant),
            &json!({"name": "冷链王师傅", "phone": "13900000009", "vehicle": "refrigerated van", "refrigerated": true, "capacityKg": 300}),
        )
        .await?;
    ensure!(third["capacityKg"] == 300 && third["refrigerated"] == true, "{third}");
    // Three ordinary orders and one of chilled pork, packed and waiting for a courier.
    let mut ids = Vec::new();
    let today =
        json!({"start": Utc::now() + chrono::Duration::hours(1), "end": Utc::now() + chrono::Duration::hours(4)});
    for i in 0..4 {
        let mut draft = shop.spinach();
        draft["requestedWindow"] = today.clone();
        if i == 3 {
            draft["lines"][0]["temperature"] = json!("CHILLED");
        }
        let id = shop.place(&admin, &draft).await?;
        admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
        admin.command(&id, json!({"type": "START_PICKING"})).await?;
        admin.command(&id, json!({"type": "RECORD_PICK", "lineNo": 1, "base": 2000})).await?;
        admin.command(&id, json!({"type": "PACK"})).await?;
        ids.push(id);
    }
    let chilled = ids[3].clone();
    let view = admin.order(&chilled).await?;
    ensure!(view["order"]["lines"][0]["temperature"] == "CHILLED", "{}", view["order"]["lines"][0]);
    let plan = admin.ok(&format!("/api/v1/merchants/{}/plans", shop.merchant), &json!({"seconds": 1})).await?;
    ensure!(plan["unassigned"].as_array().is_some_and(Vec::is_empty), "{plan}");
    let routes = plan["routes"].as_array().cloned().unwrap_or_default();
    let planned: Vec<String> = routes
        .iter()
        .flat_map(|r| r["stops"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["orderId"].as_str().map(str::to_owned))
        .collect();
    ensure!(ids.iter().all(|id| planned.contains(id)) && planned.len() == 4, "every order planned once: {planned:?}");
    let carrier = |order: &str| {
        routes
            .iter()
            .find(|r| r["stops"].as_array().is_some_and(|s| s.iter().any(|s| s["orderId"] == order)))
            .and_then(|r| r["courierId"].as_str())
            .map(str::to_owned)
    };
    // Every van of this shop is refrigerated; the plain-van case is below.
    ensure!(carrier(&chilled).is_some());
    // The plan is applied through the orders themselves.
    for id in &ids {
        let order = admin.order(id).await?;
        ensure!(
            order["order"]["courierId"].as_str().map(str::to_owned) == carrier(id),
            "{id}: {}",
            order["order"]["courierId"]
        );
    }
    // Each courier's route: stops in order with planned times, as JSON and GeoJSON.
    let cold_van = carrier(&chilled).unwrap_or_default();
    let route = admin.get(&format!("/api/v1/couriers/{cold_van}/route")).await?.json();
    let stops = route["stops"].as_array().cloned().unwrap_or_default();
    ensure!(stops.iter().any(|s| s["orderId"] == chilled.as_str()), "{route}");
    let times: Vec<String> = stops.iter().filter_map(|s| s["plannedArrival"].as_str().map(str::to_owned)).collect();
    ensure!(!times.is_empty() && times.windows(2).all(|w| w[0] <= w[1]), "arrivals in order: {times:?}");
    let geo = admin.get(&format!("/api/v1/couriers/{cold_van}/route?format=geojson")).await?;
    ensure!(geo.content_type == "application/geo+json", "{}", geo.content_type);
    let features = geo.json()["features"].as_array().map(Vec::len).unwrap_or_default();
    ensure!(features == stops.len() + 2, "start, stops and the sequence line: {features}");
    ensure!(admin.get(&format!("/api/v1/couriers/{cold_van}/route?format=kml")).await?.code() == "invalid_format");
    // Merchant staff pin an order to the other courier: a fresh plan respects it.
    let other =
        shop.couriers.iter().find(|c| Some(c.as_str()) != carrier(&ids[0]).as_deref()).cloned().unwrap_or_default();
    let reply = admin.put(&format!("/api/v1/orders/{}/pin", ids[0]), &json!({"courierId": other})).await?;
    ensure!(reply.status == 200, "{}", reply.status);
    let pinned =
        admin.ok(&format!("/api/v1/merchants/{}/plans", shop.merchant), &json!({"seconds": 1, "fresh": true})).await?;
    ensure!(admin.order(&ids[0]).await?["order"]["courierId"] == other.as_str(), "{pinned}");
    // A locked route stays exactly as it is while new orders come.
    let locked_courier = other.clone();
    let before = admin.get(&format!("/api/v1/couriers/{locked_courier}/route")).await?.json()["stops"].clone();
    ensure!(
        admin.put(&format!("/api/v1/couriers/{locked_courier}/route-lock"), &json!({"locked": true})).await?.status
            == 200
    );
    let mut extra = shop.spinach();
    extra["requestedWindow"] = today.clone();
    let newcomer = shop.place(&admin, &extra).await?;
    admin.command(&newcomer, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    admin.ok(&format!("/api/v1/merchants/{}/plans", shop.merchant), &json!({"seconds": 1})).await?;
    let after = admin.get(&format!("/api/v1/couriers/{locked_courier}/route")).await?.json()["stops"].clone();
    let order_ids = |stops: &Value| -> Vec<String> {
        stops
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s["orderId"].as_str().map(str::to_owned))
            .collect()
    };
    ensure!(order_ids(&before) == order_ids(&after), "locked: {before} → {after}");
    ensure!(
        admin.order(&newcomer).await?["order"]["courierId"] != locked_courier.as_str(),
        "nothing new on a locked route"
    );
    let unknown =
        admin.put(&format!("/api/v1/orders/{}/pin", ids[1]), &json!({"courierId": uuid::Uuid::now_v7()})).await?;
    ensure!(unknown.code() == "unknown_courier");
    // An order for another day is not planned today.
    let later = shop.place(&admin, &shop.spinach()).await?;
    admin.command(&later, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    // Planning again with nothing new for today changes nobody's orders.
    let again = admin.ok(&format!("/api/v1/merchants/{}/plans", shop.merchant), &json!({"seconds": 1})).await?;
    ensure!(again["reassigned"] == 0, "{again}");
    ensure!(!again.to_string().contains(later.as_str()), "the 2030 order waits: {again}");
    ensure!(
        admin.post(&format!("/api/v1/merchants/{}/plans", shop.merchant), &json!({"seconds": 600})).await?.code()
            == "invalid_body"
    );

    // A merchant with only plain vans: the frozen order is not planned, and the plan says why.
    let plain = Shop::open_with_vans(&admin, false).await?;
    let merchant = plain.merchant.clone();
    let mut placed = Vec::new();
    for temperature in ["AMBIENT", "FROZEN"] {
        let mut draft = plain.spinach();
        draft["customerId"] = json!(plain.credit_customer);
        draft["contactId"] = Value::Null;
        draft["paymentTerms"] = json!({"kind": "CREDIT", "days": 30});
        draft["requestedWindow"] = today.clone();
        draft["lines"][0]["temperature"] = json!(temperature);
        placed.push(plain.place(&admin, &draft).await?);
    }
    let plan = admin.ok(&format!("/api/v1/merchants/{merchant}/plans"), &json!({"seconds": 1})).await?;
    let unassigned: Vec<(String, String)> = plan["unassigned"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|u| {
            (u["orderId"].as_str().unwrap_or_default().to_owned(), u["reason"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    ensure!(unassigned == [(placed[1].clone(), "skill".to_owned())], "{plan}");
    let carrier = admin.order(&placed[0]).await?["order"]["courierId"].as_str().map(str::to_owned);
    ensure!(carrier.is_some_and(|c| plain.couriers.contains(&c)), "the ambient order goes on a plain van");
    ensure!(
        admin.order(&placed[1]).await?["order"]["courierId"].is_null(),
        "the frozen one waits for a refrigerated van"
    );
    server.stop().await;
    Ok(())
}

async fn a_merchant_that_plans_by_itself_gets_paid_orders_assigned_after_one_debounced_replan(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    shop.plan_by_itself(&admin, 2).await?;
    let today =
        json!({"start": Utc::now() + chrono::Duration::hours(1), "end": Utc::now() + chrono::Duration::hours(4)});
    // A burst of three paid orders.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut draft = shop.spinach();
        draft["requestedWindow"] = today.clone();
        let id = shop.place(&admin, &draft).await?;
        admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
        ids.push(id);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut assigned = 0;
        for id in &ids {
            assigned += usize::from(admin.order(id).await?["order"]["courierId"].is_string());
        }
        if assigned == ids.len() {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "{assigned} of {} assigned by the automatic re-plan", ids.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The couriers' routes hold them.
    let mut routed = 0;
    for courier in &shop.couriers {
        let route = admin.get(&format!("/api/v1/couriers/{courier}/route")).await?;
        if route.status == 200 {
            routed += route.json()["stops"].as_array().map(Vec::len).unwrap_or_default();
        }
    }
    ensure!(routed == ids.len(), "{routed} stops on routes");
    let metrics = String::from_utf8_lossy(&admin.get("/metrics").await?.bytes).into_owned();
    ensure!(metrics.contains("xianlu_plans_total{trigger=\"automatic\"} 1"), "one re-plan for the burst");
    // Staff pin an order to the other courier: the next automatic plan moves it.
    let holder = admin.order(&ids[0]).await?["order"]["courierId"].as_str().unwrap_or_default().to_owned();
    let other = shop.couriers.iter().find(|c| **c != holder).context("a second courier")?.clone();
    let pinned = admin.put(&format!("/api/v1/orders/{}/pin", ids[0]), &json!({"courierId": other})).await?;
    ensure!(pinned.status == 200, "{}", pinned.status);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while admin.order(&ids[0]).await?["order"]["courierId"] != other.as_str() {
        ensure!(std::time::Instant::now() < deadline, "the pin was not applied by the automatic plan");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
    Ok(())
}

/// The seed's second scenario, as every party lives it: a courier reports a
/// traffic accident; the orders aboard go to exception handling; the customer
/// and customer service hear of it; the merchant's automatic re-plan sends a
/// nearby courier to collect the goods where the van stands; the new ETA
/// (with that detour) reaches every stream; the delivery completes.
async fn after_an_accident_another_courier_collects_the_goods_at_the_van_and_every_party_follows(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let (stopped, rescuer) = (shop.couriers[0].clone(), shop.couriers[1].clone());
    let today =
        json!({"start": Utc::now() + chrono::Duration::hours(1), "end": Utc::now() + chrono::Duration::hours(4)});
    // Two orders on the road with the first courier.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut draft = shop.spinach();
        draft["requestedWindow"] = today.clone();
        let id = packed_for(&admin, &shop, &draft).await?;
        admin.command(&id, json!({"type": "DISPATCH"})).await?;
        ids.push(id);
    }
    // The merchant plans by itself from now on.
    shop.plan_by_itself(&admin, 1).await?;

    // Every party follows: the restaurant's owner, customer service, both couriers.
    let owner = json!({"username": "xiang.owner", "password": PASSWORD, "role": "customer", "customerId": shop.prepaid_customer});
    admin.ok("/api/v1/admin/users", &owner).await?;
    let (_, tokens) = Client::login(&server.url, "xiang.owner", PASSWORD).await?;
    let mut customer =
        Stream::connect_with_token(&server.url, tokens["accessToken"].as_str().unwrap_or_default()).await?;
    customer.subscribe(json!(ids.iter().map(|id| json!({"order": id})).collect::<Vec<_>>()), None).await?;
    let agent =
        json!({"username": "cs.li", "password": PASSWORD, "role": "customer_service", "merchantId": shop.merchant});
    admin.ok("/api/v1/admin/users", &agent).await?;
    let (_, tokens) = Client::login(&server.url, "cs.li", PASSWORD).await?;
    let mut service =
        Stream::connect_with_token(&server.url, tokens["accessToken"].as_str().unwrap_or_default()).await?;
    service.subscribe(json!([{"merchant": shop.merchant}]), None).await?;
    let mut stranded = Stream::connect(&server.url, &format!("courier:{stopped}")).await?;
    stranded.subscribe(json!([{"courier": stopped}]), None).await?;
    let mut helper = Stream::connect(&server.url, &format!("courier:{rescuer}")).await?;
    helper.subscribe(json!([{"courier": rescuer}]), None).await?;

    // The van is hit half-way and says where; the other courier waits at the warehouse.
    let site = offset(WAREHOUSE, -2000.0, -3000.0);
    let mut trail = Trail { fixes: Vec::new(), at: Utc::now() - chrono::Duration::seconds(30), seq: 0 };
    trail.fix(site, 5.0);
    trail.send(&admin, &stopped, 1).await?;
    // (Seen a quarter of an hour ago, so that the drive below is already over.)
    let mut rescue_trail = Trail { fixes: Vec::new(), at: Utc::now() - chrono::Duration::minutes(15), seq: 0 };
    rescue_trail.fix(offset(WAREHOUSE, 10.0, 0.0), 5.0);
    rescue_trail.send(&admin, &rescuer, 1).await?;
    let reported = Utc::now();
    let report = admin
        .ok(
            &format!("/api/v1/couriers/{stopped}/exceptions"),
            &json!({"kind": "TRAFFIC_ACCIDENT", "note": "追尾，车辆无法行驶"}),
        )
        .await?;
    ensure!(report["orders"].as_array().map(Vec::len) == Some(2), "{report}");

    // The automatic re-plan hands the goods to the other courier.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut moved = 0;
        for id in &ids {
            let order = admin.order(id).await?;
            moved += usize::from(order["status"] == "DELIVERING" && order["order"]["courierId"] == rescuer.as_str());
        }
        if moved == ids.len() {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "{moved} of {} handed over by the re-plan", ids.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let route = admin.get(&format!("/api/v1/couriers/{rescuer}/route")).await?.json();
    let stops = route["stops"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<(String, String)> = stops
        .iter()
        .map(|s| {
            (s["orderId"].as_str().unwrap_or_default().to_owned(), s["kind"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    for id in &ids {
        let pickup = kinds.iter().position(|k| *k == (id.clone(), "PICKUP".to_owned()));
        let delivery = kinds.iter().position(|k| *k == (id.clone(), "DELIVERY".to_owned()));
        ensure!(pickup.is_some() && pickup < delivery, "{id}: {kinds:?}");
    }
    let pickup_at = &stops[0]["location"];
    ensure!(
        (pickup_at["lat"].as_f64().unwrap_or_default() - site.0).abs() < 1e-6,
        "picked up where the van stands: {pickup_at}"
    );
    let transfer_done: DateTime<Utc> = serde_json::from_value(stops[0]["plannedDeparture"].clone())?;
    // The stopped van gets nothing more.
    ensure!(admin.get(&format!("/api/v1/couriers/{stopped}/route")).await?.status == 404);

    // What each party heard.
    let heard = drain(&mut customer).await?;
    let last_eta = |events: &[Value], id: &str| -> Option<DateTime<Utc>> {
        of_kind(events, "ETA_UPDATED")
            .iter()
            .filter(|e| e["orderId"] == id && e["event"]["kind"]["courierId"] == rescuer.as_str())
            .filter_map(|e| serde_json::from_value(e["event"]["kind"]["eta"].clone()).ok())
            .next_back()
    };
    for id in &ids {
        let about: Vec<Value> = heard.iter().filter(|e| e["orderId"] == id.as_str()).cloned().collect();
        for kind in ["EXCEPTION_REPORTED", "DELIVERY_RESUMED", "ETA_UPDATED"] {
            ensure!(!of_kind(&about, kind).is_empty(), "the customer heard no {kind} about {id}");
        }
        ensure!(of_kind(&about, "ALERT_RAISED").is_empty(), "alerts are for the office");
        // The estimate covers the way to the van and the transfer.
        let eta = last_eta(&about, id).context("an estimate from the new courier")?;
        ensure!(eta > transfer_done && eta > reported + chrono::Duration::minutes(10), "{id}: {eta}");
    }
    let office = drain(&mut service).await?;
    for id in &ids {
        let about: Vec<Value> = office.iter().filter(|e| e["orderId"] == id.as_str()).cloned().collect();
        let alerts = of_kind(&about, "ALERT_RAISED");
        ensure!(
            alerts.iter().any(|a| a["event"]["kind"]["rule"] == "EXCEPTION_OPEN"),
            "customer service alerted: {alerts:?}"
        );
        for kind in ["EXCEPTION_REPORTED", "DELIVERY_RESUMED", "ETA_UPDATED"] {
            ensure!(!of_kind(&about, kind).is_empty(), "customer service heard no {kind} about {id}");
        }
    }
    let told = drain(&mut stranded).await?;
    let handed: Vec<&str> = of_kind(&told, "HANDED_OVER")
        .iter()
        .filter(|e| e["event"]["kind"]["to"] == rescuer.as_str())
        .filter_map(|e| e["orderId"].as_str())
        .collect();
    ensure!(ids.iter().all(|id| handed.contains(&id.as_str())), "handed over: {handed:?}");
    let work = drain(&mut helper).await?;
    let places: Vec<(&str, u64)> = of_kind(&work, "ROUTE_SEQUENCED")
        .iter()
        .filter_map(|e| Some((e["orderId"].as_str()?, e["event"]["kind"]["stop"].as_u64()?)))
        .collect();
    ensure!(ids.iter().all(|id| places.iter().any(|(o, _)| o == id)), "the new courier's route: {places:?}");
    ensure!(ids.iter().all(|id| {
        work.iter().any(|e| e["orderId"] == id.as_str() && e["event"]["kind"]["type"] == "DELIVERY_RESUMED")
    }));

    // At the van: the goods are collected, and everyone hears it.
    rescue_trail.drive(offset(WAREHOUSE, 10.0, 0.0), site, 10);
    rescue_trail.stay(site, 60, 10, 3.0);
    rescue_trail.send(&admin, &rescuer, 10).await?;
    let heard = drain(&mut customer).await?;
    let collected: Vec<&str> =
        of_kind(&heard, "GOODS_COLLECTED").iter().filter_map(|e| e["orderId"].as_str()).collect();
    ensure!(ids.iter().all(|id| collected.contains(&id.as_str())), "collected: {collected:?}");
    ensure!(collected.len() == ids.len(), "once each: {collected:?}");

    // And the rescuer delivers: everyone sees it signed.
    let rescuer_client = server.client(&format!("courier:{rescuer}"));
    for (n, id) in ids.iter().enumerate() {
        let signature = xianlu_tests::upload_signature(&rescuer_client, id, 40 + n as u32).await?;
        let signed = rescuer_client.command(id, json!({"type": "SIGN", "signatureSha256": signature})).await?;
        ensure!(signed["status"] == "SIGNED", "{}", signed["status"]);
    }
    let (heard, office) = (drain(&mut customer).await?, drain(&mut service).await?);
    ensure!(of_kind(&heard, "SIGNED").len() == 2 && of_kind(&office, "SIGNED").len() == 2);
    server.stop().await;
    Ok(())
}

/// Only couriers on duty get work; one going off duty hands theirs on, a
/// shift's end bounds what they are given, and bad changes are refused.
async fn couriers_on_duty_get_the_work_within_their_shift(backend: Backend) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let (first, second) = (shop.couriers[0].clone(), shop.couriers[1].clone());
    let duty = |c: &str| format!("/api/v1/couriers/{c}/duty");
    let plan = format!("/api/v1/merchants/{}/plans", shop.merchant);
    let soon =
        json!({"start": Utc::now() + chrono::Duration::hours(1), "end": Utc::now() + chrono::Duration::hours(4)});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut draft = shop.spinach();
        draft["requestedWindow"] = soon.clone();
        let id = shop.place(&admin, &draft).await?;
        admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
        ids.push(id);
    }
    let courier_of = |order: Value| order["order"]["courierId"].as_str().map(str::to_owned);

    // Only the first is at work: it gets everything.
    let off = admin.put(&duty(&second), &json!({"onDuty": false})).await?;
    ensure!(off.status == 200 && off.json()["onDuty"] == false, "{}", off.status);
    let summary = admin.ok(&plan, &json!({"seconds": 1})).await?;
    ensure!(summary["unassigned"].as_array().is_some_and(Vec::is_empty), "{summary}");
    for id in &ids {
        ensure!(courier_of(admin.order(id).await?).as_deref() == Some(first.as_str()));
    }
    // The second comes on and the first goes off: the work moves, and the
    // second courier's stream says where each order is on the route.
    let mut stream = Stream::connect(&server.url, &format!("courier:{second}")).await?;
    stream.subscribe(json!([{"courier": second}]), None).await?;
    // The courier themselves, with their own login.
    let login = json!({"username": "li.si", "password": PASSWORD, "role": "courier", "courierId": second});
    admin.ok("/api/v1/admin/users", &login).await?;
    let (courier, _) = Client::login(&server.url, "li.si", PASSWORD).await?;
    let on = courier.put(&duty(&second), &json!({"onDuty": true})).await?;
    ensure!(on.status == 200 && on.json()["onDuty"] == true && on.json()["since"].is_string(), "{}", on.status);
    ensure!(admin.put(&duty(&first), &json!({"onDuty": false})).await?.status == 200);
    let summary = admin.ok(&plan, &json!({"seconds": 1})).await?;
    ensure!(summary["reassigned"] == 2, "{summary}");
    for id in &ids {
        ensure!(courier_of(admin.order(id).await?).as_deref() == Some(second.as_str()));
    }
    let told = drain(&mut stream).await?;
    let mut places: Vec<u64> = of_kind(&told, "ROUTE_SEQUENCED")
        .iter()
        .filter(|e| e["event"]["kind"]["stops"] == 2)
        .filter_map(|e| e["event"]["kind"]["stop"].as_u64())
        .collect();
    places.sort_unstable();
    ensure!(places == [1, 2], "{told:?}");
    // A plan that changes nothing says nothing more.
    admin.ok(&plan, &json!({"seconds": 1})).await?;
    ensure!(of_kind(&drain(&mut stream).await?, "ROUTE_SEQUENCED").is_empty(), "only changed places are pushed");

    // A shift that ends before the customers' windows open takes none of them.
    let short = json!({"onDuty": true, "shiftEndsAt": Utc::now() + chrono::Duration::minutes(30)});
    let reply = courier.put(&duty(&second), &short).await?;
    ensure!(reply.status == 200 && reply.json()["shiftEndsAt"].is_string(), "{}", reply.status);
    let summary = admin.ok(&plan, &json!({"seconds": 1})).await?;
    let reasons: Vec<&str> =
        summary["unassigned"].as_array().into_iter().flatten().filter_map(|u| u["reason"].as_str()).collect();
    ensure!(reasons == ["time_window", "time_window"], "{summary}");
    // Nobody at work: nobody to give it to.
    ensure!(admin.put(&duty(&second), &json!({"onDuty": false})).await?.status == 200);
    let summary = admin.ok(&plan, &json!({"seconds": 1})).await?;
    let reasons: Vec<&str> =
        summary["unassigned"].as_array().into_iter().flatten().filter_map(|u| u["reason"].as_str()).collect();
    ensure!(reasons == ["no_courier", "no_courier"], "{summary}");

    // Refused: a shift already over, a shift when going off, goods still aboard, strangers.
    let past = admin
        .put(&duty(&first), &json!({"onDuty": true, "shiftEndsAt": Utc::now() - chrono::Duration::minutes(1)}))
        .await?;
    ensure!(past.status == 422 && past.json()["code"] == "invalid_duty", "{}", past.status);
    let odd = admin
        .put(&duty(&first), &json!({"onDuty": false, "shiftEndsAt": Utc::now() + chrono::Duration::hours(1)}))
        .await?;
    ensure!(odd.status == 422, "{}", odd.status);
    ensure!(admin.put(&duty(&first), &json!({"onDuty": true})).await?.status == 200);
    let aboard = packed_for(&admin, &shop, &shop.spinach()).await?;
    admin.command(&aboard, json!({"type": "DISPATCH"})).await?;
    let busy = admin.put(&duty(&first), &json!({"onDuty": false})).await?;
    ensure!(busy.status == 409 && busy.json()["code"] == "goods_aboard", "{}", busy.status);
    let someone_else = courier.put(&duty(&first), &json!({"onDuty": false})).await?;
    // (Another courier is not theirs to see.)
    ensure!(someone_else.status == 404, "{}", someone_else.status);
    let nobody = admin.put(&duty(&uuid::Uuid::now_v7().to_string()), &json!({"onDuty": true})).await?;
    ensure!(nobody.status == 404, "{}", nobody.status);
    ensure!(admin.get(&duty(&first)).await?.json()["onDuty"] == true);

    // Vans fill by volume too: spinach is bulky (3 l a kilogram), and an
    // e-bike's box holds 100 l. The two small orders fit; 40 kg does not.
    let stock = format!("/api/v1/warehouses/{}/stock/SPINACH", shop.warehouse);
    let count = json!({"name": "有机菠菜", "dimension": "grams", "onHandBase": 50_000, "volumeMl": 3_000});
    let counted = admin.put(&stock, &count).await?;
    ensure!(counted.status == 200 && counted.json()["volumeMl"] == 3_000, "{}", counted.status);
    let bike = admin
        .ok(
            &format!("/api/v1/merchants/{}/couriers", shop.merchant),
            &json!({"name": "王五", "phone": "13812340003", "vehicle": "电动车", "capacityKg": 150, "capacityL": 100}),
        )
        .await?;
    let bike = bike["id"].as_str().context("courier id")?.to_owned();
    ensure!(admin.put(&duty(&bike), &json!({"onDuty": true})).await?.status == 200);
    let mut big = shop.spinach();
    big["requestedWindow"] = soon.clone();
    big["lines"][0]["quantity"] = json!(40);
    let big = shop.place(&admin, &big).await?;
    admin.command(&big, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": ""}})).await?;
    let summary = admin.ok(&plan, &json!({"seconds": 1})).await?;
    let left: Vec<(&str, &str)> = summary["unassigned"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| Some((u["orderId"].as_str()?, u["reason"].as_str()?)))
        .collect();
    ensure!(left == [(big.as_str(), "capacity")], "{summary}");
    for id in &ids {
        ensure!(courier_of(admin.order(id).await?).as_deref() == Some(bike.as_str()));
    }
    server.stop().await;
    Ok(())
}
