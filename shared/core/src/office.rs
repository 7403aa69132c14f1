//! The merchant's office as a running session: the board (`board`) and the
//! alerts, loaded once and kept live from the merchant's push stream; every
//! change staff make goes through the outbox, so flaky warehouse Wi-Fi loses
//! nothing and the screen can say how far behind it is.

use std::sync::Arc;

use tokio::sync::watch;
use uuid::Uuid;
use xianlu_domain::operations::{Alert, Severity};
use xianlu_domain::wire::{OrderView, Topic};
use xianlu_domain::{Command, EventKind, MerchantId, OrderId};

use crate::api::{ApiClient, OrderQuery};
use crate::board::{Board, Need};
use crate::error::{CoreError, CoreResult};
use crate::live::{Lifecycle, Shared};
use crate::outbox::{Operation, Outbox, OutboxSettings, OutboxStatus};
use crate::push::{ConnectionState, PushEvent, PushSettings};
use crate::store::Store;

/// What the office screens show.
#[derive(Debug, Clone, PartialEq)]
pub struct Office {
    pub merchant: MerchantId,
    pub board: Board,
    /// Alerts, newest first: open ones and those acknowledged or cleared lately.
    pub alerts: Vec<Alert>,
    /// High-severity alerts raised since the screen last took them (for a
    /// native notification).
    pub fresh: Vec<Alert>,
    pub outbox: OutboxStatus,
    pub connection: ConnectionState,
    /// Grows by one with every change, so a screen can wait for the next.
    pub revision: u64,
    pub problem: Option<String>,
}

impl Office {
    fn new(merchant: MerchantId) -> Office {
        Office {
            merchant,
            board: Board::new(),
            alerts: Vec::new(),
            fresh: Vec::new(),
            outbox: OutboxStatus::default(),
            connection: ConnectionState::Connecting { attempt: 0 },
            revision: 0,
            problem: None,
        }
    }

    /// Whether what is shown may be behind the server: changes not yet sent,
    /// or the stream not live.
    pub fn behind(&self) -> bool {
        self.outbox.waiting > 0 || self.connection != ConnectionState::Live
    }

    fn alert_event(&mut self, event: &xianlu_domain::wire::StreamEvent) {
        match &event.event.kind {
            EventKind::AlertRaised { alert_id, rule, severity, reason } => {
                if self.alerts.iter().any(|a| a.id == *alert_id) {
                    return;
                }
                let alert = Alert {
                    id: *alert_id,
                    merchant_id: event.merchant_id,
                    order_id: event.order_id,
                    order_number: event.order_number.clone(),
                    rule: *rule,
                    severity: *severity,
                    reason: reason.clone(),
                    raised_at: event.at,
                    cleared_at: None,
                    acknowledged_at: None,
                    acknowledged_by: None,
                };
                if *severity == Severity::High {
                    self.fresh.push(alert.clone());
                }
                self.alerts.insert(0, alert);
            }
            EventKind::AlertCleared { alert_id, .. } => {
                if let Some(a) = self.alerts.iter_mut().find(|a| a.id == *alert_id) {
                    a.cleared_at = Some(event.at);
                }
            }
            EventKind::AlertAcknowledged { alert_id, .. } => {
                if let Some(a) = self.alerts.iter_mut().find(|a| a.id == *alert_id) {
                    a.acknowledged_at = Some(event.at);
                    a.acknowledged_by = Some(event.actor.id.clone());
                }
            }
            _ => {}
        }
    }
}

/// The office as a screen gets it (the merchant app's webview from its
/// native side): the board through a filter, the alerts, how far behind.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfficeView {
    pub revision: u64,
    pub columns: Vec<crate::board::ColumnView>,
    /// The warehouse's pick list through the same filter.
    pub pick_list: Vec<crate::board::Card>,
    /// Newest first: open, acknowledged and cleared.
    pub alerts: Vec<Alert>,
    /// Changes not yet sent, or the live stream not up.
    pub behind: bool,
    pub waiting: usize,
    pub needs_attention: usize,
    pub live: bool,
    pub problem: Option<String>,
}

impl Office {
    /// The board's columns through `filter`, alerts counted on the cards.
    pub fn columns(&self, filter: &crate::board::BoardFilter) -> Vec<crate::board::ColumnView> {
        self.board.columns(filter, &self.alerts)
    }

    /// One card as shown.
    pub fn card(&self, id: OrderId) -> Option<crate::board::Card> {
        self.board.card(id, &self.alerts)
    }

    /// What a screen showing the board through `filter` needs.
    pub fn view(&self, filter: &crate::board::BoardFilter) -> OfficeView {
        OfficeView {
            revision: self.revision,
            columns: self.columns(filter),
            pick_list: self.board.pick_list(filter, &self.alerts),
            alerts: self.alerts.clone(),
            behind: self.behind(),
            waiting: self.outbox.waiting,
            needs_attention: self.outbox.needs_attention,
            live: self.connection == ConnectionState::Live,
            problem: self.problem.clone(),
        }
    }
}

/// An order's detail screen: the order and its evidence.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OrderDetail {
    pub view: OrderView,
    pub evidence: Vec<xianlu_domain::evidence::EvidenceRecord>,
}

/// How the session talks to the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfficeSettings {
    pub outbox: OutboxSettings,
    pub push: PushSettings,
}

/// A logged-in office user's running session. Cheap to clone.
#[derive(Clone)]
pub struct OfficeSession {
    inner: Arc<Inner>,
}

struct Inner {
    api: ApiClient,
    merchant: MerchantId,
    outbox: Outbox,
    store: Arc<dyn Store>,
    office: Shared<Office>,
    life: Lifecycle,
    settings: OfficeSettings,
}

impl std::fmt::Debug for OfficeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfficeSession").field("merchant", &self.inner.merchant).finish_non_exhaustive()
    }
}

/// How far back the board reaches: today's work and yesterday's leftovers.
const BOARD_DAYS: i64 = 2;

impl OfficeSession {
    /// Starts the office of the logged-in user's merchant (`merchant` for an
    /// administrator), over a store for the outbox.
    pub fn start(
        api: ApiClient,
        merchant: Option<MerchantId>,
        store: Arc<dyn Store>,
        settings: OfficeSettings,
    ) -> CoreResult<OfficeSession> {
        let merchant = merchant
            .or_else(|| api.me().and_then(|me| me.merchant_id))
            .ok_or_else(|| CoreError::Refused("this account works for no merchant".into()))?;
        let outbox = Outbox::start(store.clone(), api.clone(), settings.outbox);
        let session = OfficeSession {
            inner: Arc::new(Inner {
                api,
                merchant,
                outbox,
                store,
                office: Shared::new(Office::new(merchant)),
                life: Lifecycle::default(),
                settings,
            }),
        };
        let runner = session.clone();
        crate::rt::spawn(async move { runner.run().await });
        Ok(session)
    }

    pub fn api(&self) -> &ApiClient {
        &self.inner.api
    }

    pub fn merchant(&self) -> MerchantId {
        self.inner.merchant
    }

    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    pub fn office(&self) -> Office {
        self.inner.office.get()
    }

    pub fn watch(&self) -> watch::Receiver<Office> {
        self.inner.office.watch()
    }

    /// Changes the office, one revision further.
    fn update<T>(&self, change: impl FnOnce(&mut Office) -> T) -> T {
        self.inner.office.update(|o| {
            let out = change(o);
            o.revision += 1;
            out
        })
    }

    pub fn stop(&self) {
        self.inner.life.stop();
        self.inner.outbox.stop();
    }

    /// Sends a change to an order through the outbox (at the version seen,
    /// if given: refused if someone changed the order meanwhile).
    pub fn command(&self, order: OrderId, command: Command, expected_version: Option<u64>) -> CoreResult<()> {
        self.inner.outbox.enqueue(Operation::Command { order_id: order, command, expected_version })?;
        let status = self.inner.outbox.status();
        self.update(|o| o.outbox = status);
        Ok(())
    }

    /// Acknowledges an alert (needs the network: it is one click, and its
    /// answer is the alert as acknowledged).
    pub async fn acknowledge(&self, alert: Uuid) -> CoreResult<()> {
        let done = self.inner.api.acknowledge_alert(alert).await?;
        self.update(|o| {
            if let Some(a) = o.alerts.iter_mut().find(|a| a.id == done.id) {
                *a = done;
            }
        });
        Ok(())
    }

    /// The high-severity alerts raised since the last call.
    pub fn take_fresh(&self) -> Vec<Alert> {
        // Not a change of what the screens show: the revision stays.
        self.inner.office.update(|o| std::mem::take(&mut o.fresh))
    }

    /// An order's detail screen: the order in full and its evidence.
    pub async fn detail(&self, id: OrderId) -> CoreResult<OrderDetail> {
        let view = self.order(id).await?;
        let evidence = self.inner.api.evidence(id).await?;
        Ok(OrderDetail { view, evidence })
    }

    /// One order in full (and its card brought up to date).
    pub async fn order(&self, id: OrderId) -> CoreResult<OrderView> {
        let view = self.inner.api.order(id).await?;
        self.update(|o| {
            o.board.learn_customers(view.customer.as_slice());
            o.board.upsert(&view.order);
        });
        Ok(view)
    }

    async fn load(&self) -> CoreResult<()> {
        let api = &self.inner.api;
        let mut board = Board::new();
        let mut cursor = None;
        let from = crate::rt::now() - chrono::TimeDelta::days(BOARD_DAYS);
        loop {
            let query = OrderQuery {
                merchant_id: Some(self.inner.merchant),
                from: Some(from),
                limit: Some(200),
                cursor,
                ..OrderQuery::default()
            };
            let page = api.orders(&query).await?;
            board.learn_customers(&page.customers);
            for order in &page.items {
                board.upsert(order);
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let alerts = api.alerts(self.inner.merchant, false).await?;
        self.update(|o| {
            o.board = board;
            o.alerts = alerts;
            o.problem = None;
        });
        Ok(())
    }

    async fn run(self) {
        let loaded = self
            .inner
            .life
            .load_until_done(
                self.inner.settings.push.backoff,
                || self.load(),
                |error| self.update(|o| o.problem = Some(error.to_string())),
            )
            .await;
        if !loaded {
            return;
        }
        let (mut connection, mut events) = self.inner.life.follow(
            &self.inner.api,
            &self.inner.store,
            vec![Topic::Merchant(self.inner.merchant)],
            self.inner.settings.push,
        );
        let mut outbox = self.inner.outbox.watch();
        while !self.inner.life.stopped() {
            tokio::select! {
                event = events.recv() => match event {
                    Some(PushEvent::Event(event)) => {
                        let need = self.update(|o| {
                            o.alert_event(&event);
                            o.board.apply(&event)
                        });
                        if let Need::Order(id) = need {
                            let _ = self.order(id).await;
                        }
                    }
                    Some(PushEvent::Resynced { .. }) => { let _ = self.load().await; }
                    Some(PushEvent::CaughtUp { .. }) => {}
                    None => return,
                },
                changed = connection.changed() => {
                    if changed.is_err() { return; }
                    let state = connection.borrow().clone();
                    self.update(|o| o.connection = state);
                }
                changed = outbox.changed() => {
                    if changed.is_err() { return; }
                    let status = outbox.borrow().clone();
                    self.update(|o| o.outbox = status);
                }
                _ = self.inner.life.reload.notified() => {
                    if let Err(error) = self.load().await {
                        self.update(|o| o.problem = Some(error.to_string()));
                    }
                }
            }
        }
    }
}
