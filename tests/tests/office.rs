//! The merchant office's view-model (`xianlu_core::board`, `office`)
//! against a real server: the board's columns, filters and search, kept
//! live from the merchant's stream; staff changes through the outbox; alerts
//! raised, counted on their cards and acknowledged.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use xianlu_core::board::{BoardFilter, Column};
use xianlu_core::office::{Office, OfficeSession, OfficeSettings};
use xianlu_core::outbox::OutboxSettings;
use xianlu_core::push::PushSettings;
use xianlu_core::store::MemoryStore;
use xianlu_core::substitute::{self, propose_substitute, substitutes};
use xianlu_core::{ApiClient, Backoff};
use xianlu_domain::{Command, CourierId, OrderId, Status, WarehouseId};
use xianlu_tests::{Backend, Shop, TestServer};

const PASSWORD: &str = "菠菜-spinach-2030!";

xianlu_tests::on_both_backends!(
    the_board_groups_filters_and_follows_the_merchants_orders_live,
    the_office_offers_a_substitute_the_customer_accepts_and_the_pick_list_takes_it
);

async fn until(session: &OfficeSession, what: &str, ok: impl Fn(&Office) -> bool) -> Result<Office> {
    let mut rx = session.watch();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let office = rx.borrow_and_update().clone();
        if ok(&office) {
            return Ok(office);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => anyhow::bail!(
                "{what}: {:?}, alerts {:?}, problem {:?}",
                office.columns(&BoardFilter::default()).iter().map(|c| (c.column, c.count)).collect::<Vec<_>>(),
                office.alerts.iter().map(|a| (a.order_number.to_string(), a.rule)).collect::<Vec<_>>(),
                office.problem
            ),
        }
    }
}

/// The office of the shop's owner `username`, logged in, on fast retries.
async fn office_of(
    server: &TestServer,
    admin: &xianlu_tests::Client,
    shop: &Shop,
    username: &str,
) -> Result<OfficeSession> {
    let owner =
        json!({"username": username, "password": PASSWORD, "role": "merchant_owner", "merchantId": shop.merchant});
    admin.ok("/api/v1/admin/users", &owner).await?;
    let api = ApiClient::new(&server.url)?;
    api.login(username, PASSWORD).await?;
    let settings = OfficeSettings {
        outbox: OutboxSettings { backoff: Backoff::fast(), ..OutboxSettings::default() },
        push: PushSettings { backoff: Backoff::fast(), ..PushSettings::default() },
    };
    Ok(OfficeSession::start(api, None, Arc::new(MemoryStore::default()), settings)?)
}

fn id<T: std::str::FromStr>(text: &str) -> Result<T> {
    text.parse().map_err(|_| anyhow::anyhow!("not an id: {text}"))
}

fn in_column(office: &Office, filter: &BoardFilter, column: Column) -> Vec<String> {
    office
        .columns(filter)
        .into_iter()
        .find(|c| c.column == column)
        .map(|c| c.cards.iter().map(|card| card.order_id.to_string()).collect())
        .unwrap_or_default()
}

async fn the_board_groups_filters_and_follows_the_merchants_orders_live(backend: Backend) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    let courier = shop.couriers[0].clone();
    let paid = shop.place(&admin, &shop.spinach()).await?;
    shop.pay(&admin, &paid).await?;
    let picking = shop.place(&admin, &shop.spinach()).await?;
    shop.pay(&admin, &picking).await?;
    admin.command(&picking, json!({"type": "START_PICKING"})).await?;
    let out = shop.place(&admin, &shop.spinach()).await?;
    shop.pay(&admin, &out).await?;
    shop.send_out(&admin, &out, &courier).await?;
    let office = office_of(&server, &admin, &shop, "owner.wang").await?;
    let all = BoardFilter::default();
    let seen = until(&office, "the board loads", |o| o.board.len() == 3).await?;
    ensure!(in_column(&seen, &all, Column::Paid) == vec![paid.clone()]);
    ensure!(in_column(&seen, &all, Column::Picking) == vec![picking.clone()]);
    ensure!(in_column(&seen, &all, Column::Delivering) == vec![out.clone()]);
    let counts: Vec<usize> = seen.columns(&all).iter().map(|c| c.count).collect();
    ensure!(counts.iter().sum::<usize>() == 3 && counts.len() == Column::ALL.len(), "{counts:?}");
    let card = seen.card(id(&out)?).context("card")?;
    ensure!(card.customer == "老王饭店", "the business name is on the card: {card:?}");

    // Filters: courier, warehouse, search by number and by business name — never by the contact person.
    let by_courier = BoardFilter { courier: Some(id::<CourierId>(&courier)?), ..all.clone() };
    ensure!(in_column(&seen, &by_courier, Column::Delivering) == vec![out.clone()]);
    ensure!(in_column(&seen, &by_courier, Column::Paid).is_empty());
    let elsewhere =
        BoardFilter { warehouse: Some(id::<WarehouseId>(&uuid::Uuid::now_v7().to_string())?), ..all.clone() };
    ensure!(seen.columns(&elsewhere).iter().all(|c| c.count == 0));
    let number = admin.order(&paid).await?["orderId"].as_str().context("number")?.to_owned();
    let by_number = BoardFilter { search: number[number.len() - 3..].to_owned(), ..all.clone() };
    ensure!(in_column(&seen, &by_number, Column::Paid) == vec![paid.clone()], "found by the end of its number");
    let by_name = BoardFilter { search: "老王".into(), ..all.clone() };
    ensure!(seen.columns(&by_name).iter().map(|c| c.count).sum::<usize>() == 3);
    let by_contact = BoardFilter { search: "王五".into(), ..all.clone() };
    ensure!(seen.columns(&by_contact).iter().all(|c| c.count == 0), "contact people are not searchable");

    // Live: a new paid order appears with its customer; staff start picking through the outbox.
    let fresh = shop.place(&admin, &shop.spinach()).await?;
    shop.pay(&admin, &fresh).await?;
    let fresh_id: OrderId = id(&fresh)?;
    let seen = until(&office, "the new order appears", |o| {
        in_column(o, &all, Column::Paid).contains(&fresh) && o.card(fresh_id).is_some_and(|c| c.customer == "老王饭店")
    })
    .await?;
    ensure!(seen.board.len() == 4);
    office.command(id(&paid)?, Command::StartPicking, None)?;
    until(&office, "picking started", |o| in_column(o, &all, Column::Picking).contains(&paid) && o.outbox.waiting == 0)
        .await?;

    // The courier reports damage: the order moves to exceptions and its alert is counted on the card.
    admin.command(&out, json!({"type": "REPORT_EXCEPTION", "kind": "DAMAGED_IN_TRANSIT", "note": "箱子压坏"})).await?;
    ensure!(admin.post("/api/v1/admin/rules/sweep", &json!({})).await?.status == 204);
    let seen = until(&office, "an alert on the exception", |o| {
        in_column(o, &all, Column::Exception).contains(&out)
            && o.alerts.iter().any(|a| a.order_id.to_string() == out && a.acknowledged_at.is_none())
    })
    .await?;
    let alert = seen.alerts.iter().find(|a| a.order_id.to_string() == out).context("alert")?.clone();
    let out_id: OrderId = id(&out)?;
    until(&office, "counted on the card", |o| o.card(out_id).is_some_and(|c| c.alerts == 1)).await?;
    office.acknowledge(alert.id).await?;
    let seen = until(&office, "acknowledged", |o| o.card(out_id).is_some_and(|c| c.alerts == 0)).await?;
    ensure!(seen.alerts.iter().any(|a| a.id == alert.id && a.acknowledged_at.is_some()));

    // The couriers for the office's map: names, duty, what is aboard, the lock.
    let owner_api = office.api();
    let couriers = owner_api.couriers(office.merchant()).await?;
    ensure!(couriers.len() == 2, "{couriers:?}");
    let first = couriers.iter().find(|c| c.courier_id.to_string() == courier).context("the first courier")?;
    ensure!(first.name == "张三" && first.on_duty && first.refrigerated, "{first:?}");
    ensure!(first.aboard == 0 && first.load_g == 0, "the damaged order waits for a decision: {first:?}");
    admin.command(&out, json!({"type": "RESUME_DELIVERY"})).await?;
    let first_id: CourierId = id(&courier)?;
    let aboard = owner_api.couriers(office.merchant()).await?;
    let first = aboard.iter().find(|c| c.courier_id == first_id).context("first")?;
    ensure!(first.aboard == 1 && first.load_g == 2000, "{first:?}");
    owner_api.lock_route(first_id, true).await?;
    ensure!(owner_api.couriers(office.merchant()).await?.iter().any(|c| c.courier_id == first_id && c.locked));
    owner_api.pin_order(fresh_id, Some(first_id)).await?;
    owner_api.lock_route(first_id, false).await?;
    ensure!(owner_api.couriers(office.merchant()).await?.iter().all(|c| !c.locked));
    office.stop();
    server.stop().await;
    Ok(())
}

async fn the_office_offers_a_substitute_the_customer_accepts_and_the_pick_list_takes_it(
    backend: Backend,
) -> Result<()> {
    let server = TestServer::spawn(backend).await?;
    let admin = server.client("admin:root");
    let shop = Shop::open(&admin).await?;
    // Two orders to pick: one started, one not; then one short of spinach (60 kg wanted, 50 kg on hand).
    let waiting = shop.place(&admin, &shop.spinach()).await?;
    shop.pay(&admin, &waiting).await?;
    let started = shop.place(&admin, &shop.spinach()).await?;
    shop.pay(&admin, &started).await?;
    admin.command(&started, json!({"type": "START_PICKING"})).await?;
    let short = shop
        .place(
            &admin,
            &shop.draft(json!([{"sku": "SPINACH", "name": "有机菠菜", "quantity": 60, "unit": "kg", "price": {"fen": 350, "per": "jin"}}])),
        )
        .await?;
    shop.pay(&admin, &short).await?;
    let short_id: OrderId = id(&short)?;
    let canteen = json!({"username": "canteen.li", "password": PASSWORD, "role": "customer", "customerId": shop.prepaid_customer});
    admin.ok("/api/v1/admin/users", &canteen).await?;
    let office = office_of(&server, &admin, &shop, "owner.li").await?;
    let all = BoardFilter::default();
    let seen = until(&office, "the board loads", |o| o.board.len() == 3).await?;
    ensure!(in_column(&seen, &all, Column::OutOfStock) == vec![short.clone()]);
    let picks: Vec<String> = seen.view(&all).pick_list.iter().map(|c| c.order_id.to_string()).collect();
    ensure!(picks == vec![started.clone(), waiting.clone()], "started first, the short order not yet: {picks:?}");

    // Nothing in the warehouse can stand in for 60 kg until the bok choy is restocked.
    let detail = office.detail(short_id).await?;
    let line = detail.view.order.line(1).context("line 1")?.clone();
    let warehouse: WarehouseId = id(&shop.warehouse)?;
    let stock = office.api().stock(warehouse).await?;
    ensure!(substitutes(&line, &stock).is_empty(), "30 kg of bok choy and eggs by the piece do not do");
    admin
        .put(
            &format!("/api/v1/warehouses/{}/stock/BOK-CHOY", shop.warehouse),
            &json!({"name": "上海青", "dimension": "grams", "onHandBase": 80_000}),
        )
        .await?;
    let stock = office.api().stock(warehouse).await?;
    let offered: Vec<&str> = substitutes(&line, &stock).iter().map(|s| s.sku.as_str()).collect();
    ensure!(offered == ["BOK-CHOY"], "{offered:?}");
    let bok_choy = stock.iter().find(|s| s.sku == "BOK-CHOY").context("bok choy")?;
    let now = chrono::Utc::now();
    let command = propose_substitute(&detail.view.order, 1, bok_choy, 300, now).map_err(anyhow::Error::msg)?;
    let Command::ProposeSubstitution { respond_by, ref substitute, .. } = command else {
        anyhow::bail!("not a proposal: {command:?}")
    };
    ensure!(respond_by >= now + chrono::TimeDelta::minutes(30) && substitute.quantity == line.quantity);
    ensure!(propose_substitute(&detail.view.order, 1, bok_choy, 0, now).is_err(), "a price above zero");
    office.command(short_id, command, Some(detail.view.order.version))?;

    // The customer's app sees the offer on its stream and accepts it.
    let customer = ApiClient::new(&server.url)?;
    customer.login("canteen.li", PASSWORD).await?;
    let (tx, mut screens) = tokio::sync::watch::channel(xianlu_core::track::TrackingScreen::default());
    let follower =
        tokio::spawn(xianlu_core::track::follow_order(customer.clone(), short_id, Backoff::fast(), move |s| {
            let _ = tx.send(s.clone());
        }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let offer = loop {
        let offer = screens
            .borrow_and_update()
            .view
            .as_ref()
            .and_then(|v| substitute::offers(&v.order).into_iter().find(|o| o.line_no == 1));
        if let Some(offer) = offer {
            break offer;
        }
        tokio::time::timeout_at(deadline, screens.changed()).await.context("the offer reaches the customer")??;
    };
    ensure!(offer.offered == "上海青" && offer.short == "有机菠菜" && offer.respond_by == respond_by, "{offer:?}");
    substitute::answer(&customer, &offer, true).await?;
    let seen = until(&office, "the substitute is accepted", |o| {
        o.card(short_id).is_some_and(|c| c.status == Status::AwaitingPick)
    })
    .await?;
    let picks: Vec<String> = seen.view(&all).pick_list.iter().map(|c| c.order_id.to_string()).collect();
    ensure!(picks.len() == 3 && picks[0] == started && picks.contains(&short), "{picks:?}");
    let accepted = office.detail(short_id).await?.view.order;
    ensure!(
        accepted.lines.len() == 2 && accepted.lines[1].sku == "BOK-CHOY" && accepted.lines[1].substitute_for == Some(1)
    );
    follower.abort();
    office.stop();
    server.stop().await;
    Ok(())
}
