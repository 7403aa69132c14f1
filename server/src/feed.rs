//! The event feed: every process tails the events table in sequence order and
//! fans each event out to its push subscribers and its hot-order cache.
//!
//! **Every cache and live push is fed from the events table**, never from the
//! request that wrote it, so a process serves what any process committed. A
//! local commit wakes the feed at once; PostgreSQL `NOTIFY` wakes the other
//! processes; a short poll covers everything else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;
use xianlu_domain::wire::{Actor, StreamEvent, Topic};
use xianlu_domain::{CourierId, Event, MerchantId, OrderId, OrderNumber};

use crate::cache::OrderCache;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::on_db;

/// The PostgreSQL channel on which commits announce new events.
pub const NOTIFY_CHANNEL: &str = "xianlu_events";

#[derive(Clone, sqlx::FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub order_id: Uuid,
    pub order_number: String,
    pub merchant_id: Uuid,
    pub courier_id: Option<Uuid>,
    pub version: i64,
    pub at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: String,
    pub payload: String,
}

impl EventRow {
    pub fn into_stream_event(self) -> anyhow::Result<StreamEvent> {
        let event: Event = serde_json::from_str(&self.payload)?;
        Ok(StreamEvent {
            seq: u64::try_from(self.seq)?,
            order_id: OrderId(self.order_id),
            order_number: OrderNumber::parse(&self.order_number)
                .ok_or_else(|| anyhow::anyhow!("stored order number {} is malformed", self.order_number))?,
            merchant_id: MerchantId(self.merchant_id),
            courier_id: self.courier_id.map(CourierId),
            version: u64::try_from(self.version)?,
            at: self.at,
            actor: Actor { kind: self.actor_kind, id: self.actor_id },
            event,
        })
    }
}

/// A committed event with its push frame, serialised once for every subscriber.
#[derive(Debug)]
pub struct Published {
    pub event: StreamEvent,
    pub frame: axum::extract::ws::Utf8Bytes,
}

impl Published {
    pub fn new(event: StreamEvent) -> Arc<Published> {
        let message = xianlu_domain::wire::ServerMessage::Event(Box::new(event.clone()));
        let frame = serde_json::to_string(&message).unwrap_or_default().into();
        Arc::new(Published { event, frame })
    }
}

/// One push subscriber's inbox.
#[derive(Debug)]
pub struct Inbox {
    tx: mpsc::Sender<Arc<Published>>,
    /// Set when the inbox was full and an event had to be dropped.
    overflowed: AtomicBool,
}

impl Inbox {
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct Routes {
    by_topic: HashMap<Topic, Vec<(u64, Arc<Inbox>)>>,
    next_id: u64,
}

/// Routes published events to the subscribers of their topics.
pub struct Hub {
    routes: RwLock<Routes>,
    /// The newest sequence handed to subscribers.
    published: AtomicU64,
    metrics: Metrics,
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    topics: Vec<Topic>,
    pub inbox: Arc<Inbox>,
    pub rx: mpsc::Receiver<Arc<Published>>,
    /// Every event after this sequence reaches `rx`; none before it does.
    pub head: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut routes = self.hub.routes.write().unwrap_or_else(|e| e.into_inner());
        for topic in &self.topics {
            if let Some(subs) = routes.by_topic.get_mut(topic) {
                subs.retain(|(id, _)| *id != self.id);
                if subs.is_empty() {
                    routes.by_topic.remove(topic);
                }
            }
        }
        self.hub.metrics.stream_subscribers.dec();
    }
}

impl Hub {
    pub fn new(head: u64, metrics: Metrics) -> Arc<Hub> {
        metrics.stream_published_seq.set(head as i64);
        Arc::new(Hub { routes: RwLock::default(), published: AtomicU64::new(head), metrics })
    }

    pub fn head(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Registers a subscriber. The head is read under the same lock that
    /// publishing holds, so events up to `head` were delivered before and
    /// every later one will be delivered to this inbox.
    pub fn subscribe(self: &Arc<Self>, topics: Vec<Topic>, buffer: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let inbox = Arc::new(Inbox { tx, overflowed: AtomicBool::new(false) });
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let id = routes.next_id;
        routes.next_id += 1;
        for topic in &topics {
            routes.by_topic.entry(*topic).or_default().push((id, inbox.clone()));
        }
        let head = self.head();
        drop(routes);
        self.metrics.stream_subscribers.inc();
        Subscription { hub: self.clone(), id, topics, inbox, rx, head }
    }

    /// Hands event `seq` to its subscribers, building it only if there are
    /// any. Everything happens under one read lock, so a subscription is
    /// registered either before (and receives it) or after (and its head
    /// already covers it).
    fn offer(
        &self,
        seq: u64,
        topics: &[Option<Topic>],
        build: impl FnOnce() -> anyhow::Result<StreamEvent>,
    ) -> anyhow::Result<()> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        if topics.iter().flatten().any(|t| routes.by_topic.contains_key(t)) {
            let published = Published::new(build()?);
            self.deliver(&routes, &published);
        }
        self.published.store(seq, Ordering::Release);
        drop(routes);
        self.metrics.stream_published_seq.set(seq as i64);
        Ok(())
    }

    fn deliver(&self, routes: &Routes, published: &Arc<Published>) {
        let event = &published.event;
        let mut delivered: Vec<u64> = Vec::new();
        let topics = [
            Some(Topic::Order(event.order_id)),
            Some(Topic::Merchant(event.merchant_id)),
            event.courier_id.map(Topic::Courier),
        ];
        for topic in topics.into_iter().flatten() {
            let Some(subs) = routes.by_topic.get(&topic) else { continue };
            for (id, inbox) in subs {
                if delivered.contains(id) {
                    continue;
                }
                delivered.push(*id);
                if inbox.tx.try_send(published.clone()).is_err() && !inbox.overflowed.swap(true, Ordering::AcqRel) {
                    self.metrics.stream_resyncs.inc();
                }
            }
        }
    }

    #[cfg(test)]
    fn publish(&self, published: Arc<Published>) {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        self.deliver(&routes, &published);
        self.published.store(published.event.seq, Ordering::Release);
    }
}

/// Tails the events table.
pub struct Feed {
    db: Db,
    hub: Arc<Hub>,
    cache: Arc<OrderCache>,
    wake: Notify,
    metrics: Metrics,
    /// Courier operations follow every event that names a courier.
    tap: std::sync::OnceLock<mpsc::Sender<StreamEvent>>,
}

impl Feed {
    pub fn new(db: Db, hub: Arc<Hub>, cache: Arc<OrderCache>, metrics: Metrics) -> Arc<Feed> {
        Arc::new(Feed { db, hub, cache, wake: Notify::new(), metrics, tap: std::sync::OnceLock::new() })
    }

    /// Sends every event that names a courier, or may call for a re-plan, to `tap` as well (once; a full
    /// tap drops events rather than hold up the subscribers).
    pub fn tap(&self, tap: mpsc::Sender<StreamEvent>) {
        let _ = self.tap.set(tap);
    }

    /// Called after a local commit.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until the process stops.
    pub async fn run(self: Arc<Self>) {
        if let Db::Postgres(pool) = &self.db {
            let this = self.clone();
            let pool = pool.clone();
            tokio::spawn(async move { this.listen(pool).await });
        }
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            if let Err(error) = self.catch_up().await {
                tracing::warn!(error = format!("{error:#}"), "event feed could not read the events table; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    async fn listen(self: Arc<Self>, pool: sqlx::PgPool) {
        loop {
            let result: anyhow::Result<()> = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                listener.listen(NOTIFY_CHANNEL).await?;
                loop {
                    listener.recv().await?;
                    self.wake();
                }
            }
            .await;
            if let Err(error) = result {
                tracing::warn!(error = format!("{error:#}"), "lost the PostgreSQL notification channel; reconnecting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Publishes every committed event after the hub's head, in order.
    pub async fn catch_up(&self) -> anyhow::Result<()> {
        loop {
            let after = self.hub.head() as i64;
            let rows: Vec<EventRow> = on_db!(&self.db, pool => {
                sqlx::query_as(
                    "SELECT seq, order_id, order_number, merchant_id, courier_id, version, at, actor_kind, actor_id, \
                     payload FROM events WHERE seq > $1 ORDER BY seq LIMIT 500",
                )
                .bind(after)
                .fetch_all(pool)
                .await?
            });
            let count = rows.len();
            for row in rows {
                let seq = u64::try_from(row.seq)?;
                self.cache.observe(OrderId(row.order_id));
                if let Some(tap) = self.tap.get()
                    && (row.courier_id.is_some()
                        || crate::operations::REPLAN_TRIGGERS.iter().any(|k| row.payload.contains(k)))
                    && tap.try_send(row.clone().into_stream_event()?).is_err()
                {
                    tracing::warn!(seq, "courier operations fell behind the feed; an event was skipped");
                }
                let delay = (crate::clock::wall_now() - row.at).num_microseconds().unwrap_or(0).max(0);
                self.metrics.stream_publish_delay.observe(delay as f64 / 1e6);
                // Decode and frame the event only if someone listens for it.
                let topics = [
                    Some(Topic::Order(OrderId(row.order_id))),
                    Some(Topic::Merchant(MerchantId(row.merchant_id))),
                    row.courier_id.map(|c| Topic::Courier(CourierId(c))),
                ];
                self.hub.offer(seq, &topics, || row.into_stream_event())?;
            }
            if count < 500 {
                return Ok(());
            }
        }
    }
}

/// Reads the newest committed sequence.
pub async fn stored_head(db: &Db) -> Result<u64, sqlx::Error> {
    let (seq,): (i64,) = on_db!(db, pool => {
        sqlx::query_as("SELECT seq FROM stream_head WHERE id = 1").fetch_one(pool).await?
    });
    Ok(u64::try_from(seq).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use xianlu_domain::{EventKind, Status};

    fn event(seq: u64, order: OrderId, merchant: MerchantId) -> Arc<Published> {
        Published::new(StreamEvent {
            seq,
            order_id: order,
            order_number: OrderNumber::parse("KL20300601001").expect("a valid number"),
            merchant_id: merchant,
            courier_id: None,
            version: seq,
            at: Utc.timestamp_opt(1_900_000_000, 0).single().expect("a valid time"),
            actor: Actor { kind: "system".into(), id: "test".into() },
            event: Event { from: Status::Picking, to: Status::Picking, kind: EventKind::PickingStarted },
        })
    }

    #[test]
    fn a_slow_subscriber_overflows_alone_and_the_others_get_every_event_once() {
        let hub = Hub::new(0, Metrics::new());
        let (order, merchant) = (OrderId(Uuid::from_u128(1)), MerchantId(Uuid::from_u128(2)));
        let mut slow = hub.subscribe(vec![Topic::Order(order)], 2);
        // Subscribed to the order and its merchant: still one copy per event.
        let mut fast = hub.subscribe(vec![Topic::Order(order), Topic::Merchant(merchant)], 100);
        let mut elsewhere = hub.subscribe(vec![Topic::Merchant(MerchantId(Uuid::from_u128(3)))], 100);
        for seq in 1..=5 {
            hub.publish(event(seq, order, merchant));
        }
        assert!(slow.inbox.overflowed());
        assert!(!fast.inbox.overflowed());
        let got: Vec<u64> = std::iter::from_fn(|| fast.rx.try_recv().ok()).map(|e| e.event.seq).collect();
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert_eq!(slow.rx.try_recv().map(|e| e.event.seq).ok(), Some(1));
        assert!(elsewhere.rx.try_recv().is_err());
        assert_eq!(hub.head(), 5);
        let late = hub.subscribe(vec![Topic::Order(order)], 10);
        assert_eq!(late.head, 5, "a new subscriber starts after what was already published");
    }
}
