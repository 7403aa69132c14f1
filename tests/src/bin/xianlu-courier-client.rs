//! A courier's device in a process of its own, so a test can kill it.
//!
//! `xianlu-courier-client URL USER PASSWORD STORE enqueue ORDER...` stores a
//! `DISPATCH` for each order in the outbox at STORE (one local commit each,
//! printing `enqueued N`), then sends; `… STORE drain` only sends. Both print
//! the final status as JSON when nothing is left to send.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use xianlu_core::outbox::{Operation, OutboxSettings};
use xianlu_core::store::{SqliteStore, Store};
use xianlu_core::{ApiClient, Backoff, Outbox};
use xianlu_domain::{Command, OrderId};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, user, password, store, mode, orders @ ..] = args.as_slice() else {
        bail!("usage: xianlu-courier-client URL USER PASSWORD STORE (enqueue ORDER... | drain)");
    };
    let api = ApiClient::new(url)?;
    let mut attempt = 0;
    loop {
        match api.login(user, password).await {
            Ok(_) => break,
            Err(error) if error.is_retryable() && attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(std::path::Path::new(store))?);
    let settings = OutboxSettings { backoff: Backoff::fast(), concurrency: 1, ..OutboxSettings::default() };
    match mode.as_str() {
        "enqueue" => {
            // Stored before anything is sent: the kill may come at any moment after.
            let outbox = Outbox::start(store.clone(), api.clone(), OutboxSettings { concurrency: 0, ..settings });
            for order in orders {
                let order_id: OrderId = order.parse().context("order id")?;
                outbox.enqueue(Operation::Command { order_id, command: Command::Dispatch, expected_version: None })?;
            }
            outbox.stop();
            println!("enqueued {}", orders.len());
        }
        "drain" => {}
        other => bail!("unknown mode {other}"),
    }
    let outbox = Outbox::start(store, api, settings);
    let status = outbox.settled().await;
    println!(
        "{}",
        serde_json::json!({"waiting": status.waiting, "needsAttention": status.needs_attention,
                           "acknowledged": status.acknowledged})
    );
    Ok(())
}
