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
use xianlu_core::{ApiClient, Backoff};
use xianlu_domain::{Command, CourierId, OrderId, WarehouseId};
use xianlu_tests::{Backend, Shop, TestServer};

const PASSWORD: &str = "菠菜-spinach-2030!";

xianlu_tests::on_both_backends!(the_board_groups_filters_and_follows_the_merchants_orders_live);

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
    let owner =
        json!({"username": "owner.wang", "password": PASSWORD, "role": "merchant_owner", "merchantId": shop.merchant});
    admin.ok("/api/v1/admin/users", &owner).await?;

    let api = ApiClient::new(&server.url)?;
    api.login("owner.wang", PASSWORD).await?;
    let settings = OfficeSettings {
        outbox: OutboxSettings { backoff: Backoff::fast(), ..OutboxSettings::default() },
        push: PushSettings { backoff: Backoff::fast(), ..PushSettings::default() },
    };
    let office = OfficeSession::start(api, None, Arc::new(MemoryStore::default()), settings)?;
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
