//! The demo driver behind `cargo xtask demo`: seeds a merchant and drives a
//! handful of orders through the real API — a catch-weight re-pricing, a
//! short line resolved by substitution, an accident with a new courier, a
//! refusal and a cancellation — then follows the push stream and keeps
//! placing orders until stopped.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use xianlu_tests::{Client, Shop, Stream};

const GATEWAY_SECRET: &str = "demo-gateway-secret";

fn window(hours_from_now: i64) -> Value {
    let start = chrono::Utc::now() + chrono::Duration::hours(hours_from_now);
    json!({"start": start.to_rfc3339(), "end": (start + chrono::Duration::hours(2)).to_rfc3339()})
}

struct Demo {
    base: String,
    /// The merchant's owner runs the office side.
    admin: Client,
    staff: Client,
    couriers: Vec<Client>,
    customer: Client,
    shop: Shop,
}

/// One user per role, each logged in.
struct Login {
    username: String,
    role: &'static str,
    password: String,
}

impl Demo {
    fn courier(&self, i: usize) -> Client {
        self.couriers[i].clone()
    }

    fn draft(&self, customer_credit: bool, lines: Value) -> Value {
        let mut draft = self.shop.draft(lines);
        draft["requestedWindow"] = window(2);
        if customer_credit {
            draft["customerId"] = json!(self.shop.credit_customer);
            draft["contactId"] = Value::Null;
            draft["paymentTerms"] = json!({"kind": "CREDIT", "days": 30});
        }
        draft
    }

    async fn place(&self, credit: bool, lines: Value) -> Result<String> {
        self.shop.place(&self.admin, &self.draft(credit, lines)).await
    }

    async fn pick_and_pack(&self, id: &str, picks: &[Value]) -> Result<Value> {
        self.staff.command(id, json!({"type": "START_PICKING"})).await?;
        for pick in picks {
            let mut command = pick.clone();
            command["type"] = json!("RECORD_PICK");
            self.staff.command(id, command).await?;
        }
        self.staff.command(id, json!({"type": "PACK"})).await
    }

    async fn dispatch(&self, id: &str, courier: usize) -> Result<()> {
        self.admin.command(id, json!({"type": "ASSIGN_COURIER", "courierId": self.shop.couriers[courier]})).await?;
        self.courier(courier).command(id, json!({"type": "DISPATCH"})).await?;
        Ok(())
    }

    /// Pork by catch weight, paid through the gateway, partly rejected at the door.
    async fn catch_weight(&self, n: u32) -> Result<String> {
        let id = self.place(false, json!([
                        {"sku": "PORK-BELLY", "name": "五花肉", "quantity": 4, "unit": "jin", "price": {"fen": 1990, "per": "jin"}, "temperature": "CHILLED"},
                        {"sku": "SPINACH", "name": "有机菠菜", "quantity": 3, "unit": "kg", "price": {"fen": 350, "per": "jin"}},
                    ])).await?;
        let order = self.admin.order(&id).await?;
        let due = order["order"]["totals"]["chargeFen"].as_i64().context("charge")?;
        xianlu_tests::pay_by_gateway(&self.base, GATEWAY_SECRET, &id, due, &format!("wx-demo-{n:04}")).await?;
        // The scale says 2.06 kg of pork: re-priced on the actual weight (多退少补).
        self.pick_and_pack(&id, &[json!({"lineNo": 1, "base": 2060}), json!({"lineNo": 2, "base": 2950})]).await?;
        self.dispatch(&id, 0).await?;
        let signature = xianlu_tests::upload_signature(&self.courier(0), &id, 1).await?;
        self.courier(0)
            .command(
                &id,
                json!({"type": "SIGN", "signatureSha256": signature,
                       "lines": [{"lineNo": 2, "rejectedBase": 450, "reason": "QUALITY"}]}),
            )
            .await?;
        Ok(id)
    }

    /// 60 kg of spinach with 50 kg in stock: a substitution, then an accident on the road.
    async fn substitution_and_accident(&self) -> Result<String> {
        let id = self.place(false, json!([{"sku": "SPINACH", "name": "有机菠菜", "quantity": 120, "unit": "jin", "price": {"fen": 350, "per": "jin"}}])).await?;
        self.admin.command(&id, json!({"type": "MARK_PAID", "method": {"kind": "ADMIN", "note": "对公转账"}})).await?;
        let respond_by = (chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339();
        self.admin
            .command(
                &id,
                json!({"type": "PROPOSE_SUBSTITUTION", "lineNo": 1, "respondBy": respond_by,
                       "substitute": {"sku": "BOK-CHOY", "name": "上海青", "quantity": 20, "unit": "kg", "price": {"fen": 300, "per": "jin"}}}),
            )
            .await?;
        self.customer.command(&id, json!({"type": "ANSWER_SUBSTITUTION", "lineNo": 1, "accept": true})).await?;
        self.pick_and_pack(&id, &[json!({"lineNo": 2, "base": 20_300})]).await?;
        self.dispatch(&id, 0).await?;
        self.courier(0)
            .command(
                &id,
                json!({"type": "REPORT_EXCEPTION", "kind": "TRAFFIC_ACCIDENT", "note": "东三环追尾, 货物完好"}),
            )
            .await?;
        self.admin.command(&id, json!({"type": "RESUME_DELIVERY", "courierId": self.shop.couriers[1]})).await?;
        let signature = xianlu_tests::upload_signature(&self.courier(1), &id, 2).await?;
        self.courier(1).command(&id, json!({"type": "SIGN", "signatureSha256": signature})).await?;
        Ok(id)
    }

    /// A credit customer refuses the delivery: the return flow.
    async fn refusal(&self) -> Result<String> {
        let id = self.place(true, json!([
                        {"sku": "EGG-TRAY", "name": "鸡蛋 (30 枚/盘)", "quantity": 2, "unit": "piece", "nominalG": 1800, "price": {"fen": 2800, "per": "piece"}},
                        {"sku": "RIBS-BOX", "name": "猪肋排", "quantity": 1, "unit": "box", "nominalG": 5000, "price": {"fen": 4000, "per": "kg"}, "temperature": "FROZEN"},
                    ])).await?;
        self.pick_and_pack(&id, &[json!({"lineNo": 1, "base": 2}), json!({"lineNo": 2, "base": 1, "weightG": 5150})])
            .await?;
        self.dispatch(&id, 1).await?;
        self.courier(1)
            .command(&id, json!({"type": "REPORT_EXCEPTION", "kind": "CUSTOMER_REFUSED", "note": "店长说今天没订货"}))
            .await?;
        self.admin.command(&id, json!({"type": "START_RETURN", "reason": "客户拒收"})).await?;
        self.admin.command(&id, json!({"type": "CONFIRM_RETURNED"})).await?;
        Ok(id)
    }

    /// Cancelled after packing: the goods go back on the shelf.
    async fn cancellation(&self) -> Result<String> {
        let id = self.place(true, json!([{"sku": "BOK-CHOY", "name": "上海青", "quantity": 5, "unit": "kg", "price": {"fen": 300, "per": "jin"}}])).await?;
        self.pick_and_pack(&id, &[json!({"lineNo": 1, "base": 5000})]).await?;
        self.admin.command(&id, json!({"type": "CANCEL", "reason": "餐厅临时歇业"})).await?;
        Ok(id)
    }

    /// Left on the road so the stream has something to show.
    async fn on_the_road(&self, courier: usize) -> Result<String> {
        let id = self.place(true, json!([{"sku": "SPINACH", "name": "有机菠菜", "quantity": 2, "unit": "kg", "price": {"fen": 350, "per": "jin"}}])).await?;
        self.pick_and_pack(&id, &[json!({"lineNo": 1, "base": 2000})]).await?;
        self.dispatch(&id, courier).await?;
        Ok(id)
    }
}

fn describe(event: &Value) -> String {
    let kind = &event["event"]["kind"];
    format!(
        "#{:<4} {}  {:<22} {} → {}  ({}:{})",
        event["seq"],
        event["orderNumber"].as_str().unwrap_or_default(),
        kind["type"].as_str().unwrap_or_default(),
        event["event"]["from"].as_str().unwrap_or_default(),
        event["event"]["to"].as_str().unwrap_or_default(),
        event["actor"]["kind"].as_str().unwrap_or_default(),
        event["actor"]["id"].as_str().unwrap_or_default().chars().take(13).collect::<String>(),
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let once = args.any(|a| a == "--once");
    let admin_password =
        std::env::var("DEMO_ADMIN_PASSWORD").context("DEMO_ADMIN_PASSWORD names the admin's password")?;
    let (admin, _) = Client::login(&base, "admin", &admin_password).await?;
    let shop = Shop::open(&admin).await.context("seeding the demo merchant")?;
    for (sku, name, dimension, on_hand) in [
        ("SPINACH", "有机菠菜", "grams", 50_000),
        ("BOK-CHOY", "上海青", "grams", 500_000),
        ("PORK-BELLY", "五花肉", "grams", 200_000),
    ] {
        admin
            .put(
                &format!("/api/v1/warehouses/{}/stock/{sku}", shop.warehouse),
                &json!({"name": name, "dimension": dimension, "onHandBase": on_hand}),
            )
            .await?;
    }
    // One login per role, linked to what the role works on.
    let mut logins = vec![Login { username: "admin".into(), role: "admin", password: admin_password }];
    let people = [
        ("owner.wang", "merchant_owner", json!({"merchantId": shop.merchant})),
        ("staff.li", "merchant_staff", json!({"merchantId": shop.merchant})),
        ("clerk.chen", "warehouse_clerk", json!({"merchantId": shop.merchant, "warehouseId": shop.warehouse})),
        ("courier.zhang", "courier", json!({"courierId": shop.couriers[0]})),
        ("courier.li", "courier", json!({"courierId": shop.couriers[1]})),
        ("laowang.restaurant", "customer", json!({"customerId": shop.prepaid_customer})),
        ("service.zhao", "customer_service", json!({"merchantId": shop.merchant})),
    ];
    let mut clients = std::collections::HashMap::new();
    for (username, role, links) in people {
        let password = xianlu_tests::random_secret();
        let mut body = json!({"username": username, "password": password, "role": role});
        if let (Some(body), Some(links)) = (body.as_object_mut(), links.as_object()) {
            body.extend(links.clone());
        }
        admin.ok("/api/v1/admin/users", &body).await?;
        let (client, _) = Client::login(&base, username, &password).await?;
        clients.insert(username, client);
        logins.push(Login { username: username.into(), role, password });
    }
    let take = |name: &str| clients.get(name).cloned().context("logged in");
    let demo = Demo {
        base: base.clone(),
        admin: take("owner.wang")?,
        staff: take("clerk.chen")?,
        couriers: vec![take("courier.zhang")?, take("courier.li")?],
        customer: take("laowang.restaurant")?,
        shop,
    };
    let (_, owner_tokens) = Client::login(&base, "owner.wang", &logins[1].password).await?;
    let owner_token = owner_tokens["accessToken"].as_str().unwrap_or_default().to_owned();

    let mut stream = Stream::connect_with_token(&base, &owner_token).await?;
    stream.subscribe(json!([{"merchant": demo.shop.merchant}]), None).await?;

    let orders = vec![
        ("catch weight, gateway payment, partial rejection", demo.catch_weight(1).await?),
        ("short line → substitution → accident → new courier", demo.substitution_and_accident().await?),
        ("credit customer refuses → return", demo.refusal().await?),
        ("cancelled after packing, stock returned", demo.cancellation().await?),
        ("out for delivery", demo.on_the_road(0).await?),
    ];
    println!("\n鲜路 Xianlu demo — merchant 快驴鲜品 ({})\n", demo.shop.merchant);
    for (story, id) in &orders {
        let view = demo.admin.order(id).await?;
        let totals = &view["order"]["totals"];
        println!(
            "  {}  {:<19} charge ¥{:.2}  balance ¥{:+.2}   {story}",
            view["orderId"].as_str().unwrap_or_default(),
            view["status"].as_str().unwrap_or_default(),
            totals["chargeFen"].as_f64().unwrap_or(0.0) / 100.0,
            totals["balanceFen"].as_f64().unwrap_or(0.0) / 100.0,
        );
    }
    // Plenty of spinach for the live orders that follow.
    demo.admin
        .put(
            &format!("/api/v1/warehouses/{}/stock/SPINACH", demo.shop.warehouse),
            &json!({"name": "有机菠菜", "dimension": "grams", "onHandBase": 5_000_000}),
        )
        .await?;
    let number = demo.admin.order(&orders[0].1).await?["orderId"].as_str().unwrap_or_default().to_owned();
    println!("\nLogins (one per role; passwords are made anew on every demo run):");
    for login in &logins {
        println!("  {:<20} {:<17} {}", login.username, login.role, login.password);
    }
    // The link a restaurant would get by message, for the order on the road.
    let on_the_road = &orders[orders.len() - 1].1;
    let link = demo.admin.ok(&format!("/api/v1/orders/{on_the_road}/tracking-links"), &json!({})).await?;
    println!(
        "\nTracking link (any browser, no login; the order out for delivery):\n  {base}{}",
        link["path"].as_str().unwrap_or_default()
    );
    println!(
        "\nThe apps:\n  {base}/courier   the courier app in a browser (log in as courier.li)\n  \
         {base}/app       the customer app (log in as the customer)\n  \
         XIANLU_SERVER={base} cargo run -p xianlu-courier    the courier app's desktop window"
    );
    let host = base.trim_start_matches("http://");
    println!(
        "\nTry it:\n  {base}/api/v1/docs   the API\n  \
         TOKEN=$(curl -s {base}/api/v1/auth/login -H 'content-type: application/json' \\\n    \
         -d '{{\"username\":\"owner.wang\",\"password\":\"{}\"}}' | sed 's/.*\"accessToken\":\"\\([^\"]*\\)\".*/\\1/')\n  \
         curl -s -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/orders/{number}\n  \
         curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/api/v1/orders?merchantId={}'\n  \
         {base}/metrics\n\nSubscribe (WebSocket), e.g. in a browser console, with that token:\n  \
         ws = new WebSocket('ws://{host}/api/v1/stream?token=' + TOKEN);\n  \
         ws.onmessage = m => console.log(JSON.parse(m.data));\n  \
         ws.onopen = () => ws.send(JSON.stringify({{type: 'SUBSCRIBE', topics: [{{merchant: '{}'}}], after: 0}}));\n",
        logins[1].password, demo.shop.merchant, demo.shop.merchant
    );
    if once {
        return Ok(());
    }
    println!("Live push stream (a new order every 8 s; Ctrl-C to stop):");
    // The linked order's courier drives to its door, a fix every 8 s: 3 km in
    // about two and a half minutes, then waits there to be signed for.
    let door = demo.admin.order(on_the_road).await?["customer"]["location"].clone();
    let door = (door["lat"].as_f64().unwrap_or(39.93), door["lng"].as_f64().unwrap_or(116.42));
    let start = (door.0 + 0.02, door.1 + 0.02);
    let mut fix = 0u32;
    let mut n = 2;
    loop {
        fix += 1;
        let f = (f64::from(fix) / 20.0).min(1.0);
        let at = (start.0 + (door.0 - start.0) * f, start.1 + (door.1 - start.1) * f);
        let positions = json!({"fixes": [{"deviceSeq": fix, "at": chrono::Utc::now(), "lat": at.0, "lng": at.1,
                                          "accuracyM": 8.0, "speedMps": 14.0}]});
        let courier = &demo.shop.couriers[0];
        if let Err(error) = demo.couriers[0].ok(&format!("/api/v1/couriers/{courier}/positions"), &positions).await {
            eprintln!("the courier's position was not taken: {error}");
        }
        let drive = async {
            n += 1;
            if n % 3 == 0 { demo.on_the_road(n as usize % 2).await } else { demo.catch_weight(n).await }
        };
        tokio::select! {
            result = drive => { result?; }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(8);
        loop {
            tokio::select! {
                message = stream.next_within(Duration::from_millis(200)) => {
                    match message {
                        Ok(message) if message["type"] == "EVENT" => println!("{}", describe(&message)),
                        Ok(_) => {}
                        Err(e) if e.to_string().contains("closed") => anyhow::bail!("the push stream closed"),
                        Err(_) => {}
                    }
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            if tokio::time::Instant::now() >= until {
                break;
            }
        }
    }
}
