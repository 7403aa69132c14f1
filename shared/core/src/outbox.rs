//! The outbox: every change a user makes is stored on the device first and
//! sent when the network allows. The protocol:
//!
//! - **Write first.** [`Outbox::enqueue`] commits the change to local
//!   storage (SQLite with `synchronous = FULL` natively) with a fresh
//!   client-made idempotency key before it returns. Nothing a user did lives
//!   only in memory.
//! - **Ordering.** Items carry a *lane*: the order they act on
//!   (`order:<id>`), or the courier whose positions they carry
//!   (`positions:<id>`). A lane's items are sent strictly one after another
//!   in the order they were enqueued; different lanes are independent and
//!   are sent concurrently (up to `concurrency` at a time). Evidence is
//!   enqueued in the same lane — and the same local transaction — as the
//!   command that names it, so a photo or signature always lands before the
//!   sign-off that references it.
//! - **Retry.** Before each send the attempt is counted durably. Network
//!   failures, timeouts, 5xx, 408, 429 and "a request with this key is still
//!   running" are retried with exponential backoff and jitter ([`Backoff`]),
//!   with the *same* idempotency key, so a request whose response was lost
//!   is answered from the server's saved response instead of being applied
//!   twice.
//! - **Wedged.** A refusal that retrying cannot fix (4xx: the order was
//!   re-assigned, the transition is no longer legal, the input is invalid),
//!   a response this app cannot read, and a stored row that cannot be
//!   decoded, put the item into *needs attention* with the saved error. It
//!   stays visible and holds back the later items of its own lane only;
//!   other lanes go on. The user (or the app) either [`Outbox::retry`]s it —
//!   under a new key, since the server refused the old one — or
//!   [`Outbox::cancel`]s it.
//! - **Blocked.** An ended session (refresh refused) or a server speaking
//!   another protocol version stops all sending without touching any item;
//!   [`Outbox::resume`] after logging in again (or updating) carries on.
//! - **Respawn.** Pending items survive a crash, a kill or a reboot: opening
//!   the store and calling [`Outbox::start`] carries on where the last
//!   process stopped. An item that was being sent when the process died is
//!   sent again with its original key; the server's idempotency makes that
//!   safe.
//! - **Cancel.** An item can be cancelled while it is still only local (no
//!   attempt begun) or after the server refused it. Once an attempt has
//!   begun the server may have applied it, so cancelling is refused: the
//!   change has to be undone by another command.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use xianlu_domain::evidence::{EvidenceUpload, PositionBatch};
use xianlu_domain::wire::CommandRequest;
use xianlu_domain::{Command, CourierId, ExceptionKind, OrderDraft, OrderId};

use crate::api::ApiClient;
use crate::error::{CoreError, CoreResult, NextStep};
use crate::retry::Backoff;
use crate::store::{ItemState, NewItem, Store, StoredItem};

/// One change waiting to reach the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Operation {
    /// A command to an order (without an expected version unless given: the
    /// state machine on the server decides whether it still applies).
    #[serde(rename_all = "camelCase")]
    Command {
        order_id: OrderId,
        command: Command,
        #[serde(default)]
        expected_version: Option<u64>,
    },
    /// A signature, photo or delivery-note image for an order.
    #[serde(rename_all = "camelCase")]
    Evidence { order_id: OrderId, sha256: String, upload: EvidenceUpload },
    /// A batch of the courier's position fixes.
    #[serde(rename_all = "camelCase")]
    Positions { courier_id: CourierId, batch: PositionBatch },
    /// A new order (placed offline by a customer or the office).
    CreateOrder { draft: Box<OrderDraft> },
    /// An accident or breakdown: the server applies it to every order the
    /// courier is delivering when it arrives (including ones this device
    /// has not heard of yet).
    #[serde(rename_all = "camelCase")]
    VehicleException { courier_id: CourierId, kind: ExceptionKind, note: String },
}

impl Operation {
    fn lane(&self, key: &str) -> String {
        match self {
            Operation::Command { order_id, .. } | Operation::Evidence { order_id, .. } => format!("order:{order_id}"),
            Operation::Positions { courier_id, .. } => format!("positions:{courier_id}"),
            Operation::CreateOrder { .. } => format!("new:{key}"),
            Operation::VehicleException { courier_id, .. } => format!("vehicle:{courier_id}"),
        }
    }
}

/// Why an item waits for the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemError {
    /// The server's stable code (`not_found`, `illegal_transition`, …), or
    /// `corrupt_item`, `unreadable_response`.
    pub code: String,
    /// What happened, in the server's words.
    pub detail: String,
    /// The HTTP status, when the server answered.
    #[serde(default)]
    pub status: Option<u16>,
}

impl ItemError {
    fn of(error: &CoreError) -> ItemError {
        match error {
            CoreError::Server { problem } => {
                ItemError { code: problem.code.clone(), detail: problem.detail.clone(), status: Some(problem.status) }
            }
            CoreError::Protocol(detail) => {
                ItemError { code: "unreadable_response".into(), detail: detail.clone(), status: None }
            }
            other => ItemError { code: "failed".into(), detail: other.to_string(), status: None },
        }
    }

    /// What the user should do about it.
    pub fn next_step(&self) -> NextStep {
        match (self.status, self.code.as_str()) {
            (_, "corrupt_item") => NextStep::CheckDevice,
            (None, _) => NextStep::UpdateApp,
            (Some(status), code) => crate::error::next_step_for(status, code),
        }
    }
}

/// An item as the app shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub lane: String,
    pub key: String,
    /// The change; an error text if the stored row cannot be read.
    pub operation: Result<Operation, String>,
    pub state: ItemState,
    pub attempts: u32,
    /// The last failure: for items needing attention, why.
    pub error: Option<ItemError>,
}

/// Why nothing is being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The session ended: log in again, then [`Outbox::resume`].
    LogIn,
    /// The server speaks another protocol version.
    UpdateApp(String),
}

/// What the app shows: "offline, 3 changes waiting".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Items not yet acknowledged, including those needing attention.
    pub waiting: usize,
    pub needs_attention: usize,
    /// Lanes with a change ready to go (not held behind one needing attention).
    pub sendable: usize,
    pub in_flight: usize,
    /// Whether the last attempt reached the server.
    pub online: bool,
    pub blocked: Option<Blocked>,
    /// Items acknowledged since start.
    pub acknowledged: u64,
}

/// Settings of the sender.
#[derive(Debug, Clone, Copy)]
pub struct OutboxSettings {
    pub backoff: Backoff,
    /// Lanes sent at the same time.
    pub concurrency: usize,
    /// The clock that times retries and stamps items (the device's wall
    /// clock; tests may pass another).
    pub clock: fn() -> chrono::DateTime<chrono::Utc>,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings { backoff: Backoff::default(), concurrency: 4, clock: crate::rt::now }
    }
}

/// The outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("status", &*self.inner.status.borrow()).finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn Store>,
    api: ApiClient,
    settings: OutboxSettings,
    wake: Notify,
    /// Items being sent now (ids and lanes).
    in_flight: Mutex<HashSet<i64>>,
    status: watch::Sender<OutboxStatus>,
    blocked: Mutex<Option<Blocked>>,
    stopped: AtomicBool,
    acknowledged: AtomicU64,
    /// When the store was last counted (ms since the epoch).
    counted_at: AtomicI64,
}

fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(not(target_arch = "wasm32"))]
type SendFuture = futures_util::future::BoxFuture<'static, (StoredItem, Result<(), CoreError>)>;
#[cfg(target_arch = "wasm32")]
type SendFuture = futures_util::future::LocalBoxFuture<'static, (StoredItem, Result<(), CoreError>)>;

impl Outbox {
    /// Opens the outbox over a store and starts sending in the background.
    /// Items left by an earlier process are sent first.
    pub fn start(store: Arc<dyn Store>, api: ApiClient, settings: OutboxSettings) -> Outbox {
        let (status, _) = watch::channel(OutboxStatus::default());
        let outbox = Outbox {
            inner: Arc::new(Inner {
                store,
                api,
                settings,
                wake: Notify::new(),
                in_flight: Mutex::new(HashSet::new()),
                status,
                blocked: Mutex::new(None),
                stopped: AtomicBool::new(false),
                acknowledged: AtomicU64::new(0),
                counted_at: AtomicI64::new(0),
            }),
        };
        outbox.publish(false);
        let runner = outbox.clone();
        crate::rt::spawn(async move { runner.run().await });
        outbox
    }

    /// Stores a change to be sent; returns its item id.
    pub fn enqueue(&self, operation: Operation) -> CoreResult<i64> {
        Ok(self.enqueue_all(vec![operation])?.into_iter().next().unwrap_or_default())
    }

    /// Stores several changes atomically, in this order.
    pub fn enqueue_all(&self, operations: Vec<Operation>) -> CoreResult<Vec<i64>> {
        let created_ms = self.now_ms();
        let items = operations
            .iter()
            .map(|op| {
                let key = new_key();
                let body = serde_json::to_string(op).map_err(|e| CoreError::Storage(e.to_string()))?;
                Ok(NewItem { lane: op.lane(&key), key, body, created_ms })
            })
            .collect::<CoreResult<Vec<_>>>()?;
        let ids = self.inner.store.enqueue(&items)?;
        self.republish();
        self.inner.wake.notify_one();
        Ok(ids)
    }

    /// Every item not yet acknowledged, in the order it was made.
    pub fn items(&self) -> CoreResult<Vec<OutboxItem>> {
        Ok(self.inner.store.items()?.into_iter().map(view).collect())
    }

    /// Puts an item that needs attention back in line, under a new key.
    pub fn retry(&self, id: i64) -> CoreResult<()> {
        if !self.inner.store.retry(id, &new_key(), self.now_ms())? {
            return Err(CoreError::Refused("only an item that needs attention can be retried".into()));
        }
        self.republish();
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Drops an item that was never sent, or that the server refused.
    pub fn cancel(&self, id: i64) -> CoreResult<()> {
        let in_flight = self.inner.in_flight.lock().map_err(|_| CoreError::Storage("lock poisoned".into()))?;
        if in_flight.contains(&id) || !self.inner.store.cancel(id)? {
            return Err(CoreError::Refused(
                "this change may already have reached the server; undo it with another action instead".into(),
            ));
        }
        drop(in_flight);
        self.republish();
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Carries on after the user logged in again (or the app was updated).
    pub fn resume(&self) {
        if let Ok(mut blocked) = self.inner.blocked.lock() {
            *blocked = None;
        }
        self.republish();
        self.inner.wake.notify_one();
    }

    /// Sends now instead of waiting out a backoff (e.g. the network came back).
    pub fn kick(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops the sender; sends in flight finish, items stay stored.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    pub fn status(&self) -> OutboxStatus {
        self.inner.status.borrow().clone()
    }

    /// Status changes, for the UI.
    pub fn watch(&self) -> watch::Receiver<OutboxStatus> {
        self.inner.status.subscribe()
    }

    /// Waits until nothing is left to send (every item acknowledged, needing
    /// attention, or held behind one that does), or the outbox is blocked.
    pub async fn settled(&self) -> OutboxStatus {
        let mut rx = self.watch();
        loop {
            let status = rx.borrow_and_update().clone();
            if (status.sendable == 0 && status.in_flight == 0) || status.blocked.is_some() {
                return status;
            }
            if rx.changed().await.is_err() {
                return status;
            }
        }
    }

    /// Milliseconds since the epoch by the settings' clock.
    fn now_ms(&self) -> i64 {
        (self.inner.settings.clock)().timestamp_millis()
    }

    /// Publishes the counts again, keeping the last known connectivity.
    fn republish(&self) {
        // Read first: the watch's lock must not be held while publishing.
        let online = self.inner.status.borrow().online;
        self.publish(online);
    }

    fn publish(&self, online: bool) {
        let in_flight = self.inner.in_flight.lock().map(|s| s.len()).unwrap_or(0);
        // Counting scans the store: while sends are in flight the counts are
        // refreshed at most every 100 ms; when nothing is in flight (which is
        // when "settled" is decided) always.
        let now = self.now_ms();
        let fresh = in_flight == 0 || now - self.inner.counted_at.load(Ordering::SeqCst) >= 100;
        let (waiting, needs_attention, sendable) = if fresh {
            self.inner.counted_at.store(now, Ordering::SeqCst);
            self.inner.store.counts().unwrap_or_default()
        } else {
            let last = self.inner.status.borrow();
            (last.waiting, last.needs_attention, last.sendable.max(1))
        };
        let blocked = self.inner.blocked.lock().ok().and_then(|b| b.clone());
        let status = OutboxStatus {
            waiting,
            needs_attention,
            sendable,
            in_flight,
            online,
            blocked,
            acknowledged: self.inner.acknowledged.load(Ordering::SeqCst),
        };
        self.inner.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }

    async fn run(self) {
        let inner = &self.inner;
        let mut sending: FuturesUnordered<SendFuture> = FuturesUnordered::new();
        let mut lanes: HashSet<String> = HashSet::new();
        let mut online = false;
        loop {
            if inner.stopped.load(Ordering::SeqCst) && sending.is_empty() {
                return;
            }
            let blocked = inner.blocked.lock().map(|b| b.is_some()).unwrap_or(true);
            let mut next_due = None;
            if !blocked && !inner.stopped.load(Ordering::SeqCst) {
                let room = inner.settings.concurrency.saturating_sub(sending.len());
                if room > 0 {
                    match inner.store.heads(self.now_ms(), room + lanes.len()) {
                        Ok(heads) => {
                            let free: Vec<StoredItem> =
                                heads.into_iter().filter(|i| !lanes.contains(&i.lane)).take(room).collect();
                            for item in free {
                                match serde_json::from_str::<Operation>(&item.body) {
                                    Ok(operation) => {
                                        if let Err(error) = inner.store.begin_attempt(item.id) {
                                            tracing::error!(%error, "outbox: cannot record an attempt");
                                            break;
                                        }
                                        lanes.insert(item.lane.clone());
                                        if let Ok(mut set) = inner.in_flight.lock() {
                                            set.insert(item.id);
                                        }
                                        let api = inner.api.clone();
                                        sending.push(Box::pin(async move {
                                            let result = send(&api, &item, operation).await;
                                            (item, result)
                                        }));
                                    }
                                    Err(error) => {
                                        let error = ItemError {
                                            code: "corrupt_item".into(),
                                            detail: format!("the stored change cannot be read: {error}"),
                                            status: None,
                                        };
                                        let _ = inner.store.needs_attention(
                                            item.id,
                                            &serde_json::to_string(&error).unwrap_or_default(),
                                        );
                                    }
                                }
                            }
                        }
                        Err(error) => tracing::error!(%error, "outbox: cannot read the store"),
                    }
                }
                if sending.len() < inner.settings.concurrency {
                    next_due = inner.store.next_due().ok().flatten();
                }
            }
            self.publish(online);
            let wait = match next_due {
                Some(due) => std::time::Duration::from_millis((due - self.now_ms()).clamp(1, 60_000) as u64),
                None => std::time::Duration::from_secs(60),
            };
            tokio::select! {
                Some((item, result)) = sending.next(), if !sending.is_empty() => {
                    lanes.remove(&item.lane);
                    if let Ok(mut set) = inner.in_flight.lock() {
                        set.remove(&item.id);
                    }
                    online = self.settle(&item, result);
                }
                _ = inner.wake.notified() => {}
                _ = crate::rt::sleep(wait), if sending.len() < inner.settings.concurrency && !blocked => {}
            }
        }
    }

    /// Records a send's outcome; returns whether the server was reached.
    fn settle(&self, item: &StoredItem, result: Result<(), CoreError>) -> bool {
        let store = &self.inner.store;
        let outcome = match result {
            Ok(()) => {
                self.inner.acknowledged.fetch_add(1, Ordering::SeqCst);
                store.ack(item.id).map(|_| true)
            }
            Err(error) => match error.next_step() {
                NextStep::RetryLater => {
                    let attempts = item.attempts + 1;
                    let delay = self.inner.settings.backoff.delay(attempts);
                    let reached = matches!(error, CoreError::Server { .. });
                    store.defer(item.id, self.now_ms() + delay.as_millis() as i64, &error.to_string()).map(|_| reached)
                }
                NextStep::LogIn => {
                    if let Ok(mut blocked) = self.inner.blocked.lock() {
                        *blocked = Some(Blocked::LogIn);
                    }
                    store.defer(item.id, self.now_ms(), &error.to_string()).map(|_| true)
                }
                NextStep::UpdateApp if matches!(error, CoreError::Incompatible { .. }) => {
                    if let Ok(mut blocked) = self.inner.blocked.lock() {
                        *blocked = Some(Blocked::UpdateApp(error.to_string()));
                    }
                    store.defer(item.id, self.now_ms(), &error.to_string()).map(|_| true)
                }
                _ => {
                    let saved = serde_json::to_string(&ItemError::of(&error)).unwrap_or_default();
                    tracing::warn!(item = item.id, lane = %item.lane, code = ?error.code(), "outbox: change needs attention");
                    store.needs_attention(item.id, &saved).map(|_| true)
                }
            },
        };
        outcome.unwrap_or_else(|error| {
            tracing::error!(%error, "outbox: cannot record an outcome");
            false
        })
    }
}

async fn send(api: &ApiClient, item: &StoredItem, operation: Operation) -> Result<(), CoreError> {
    match operation {
        Operation::Command { order_id, command, expected_version } => {
            api.command(order_id, &CommandRequest { expected_version, command }, &item.key).await.map(|_| ())
        }
        Operation::Evidence { order_id, sha256, upload } => {
            api.put_evidence(order_id, &sha256, &upload).await.map(|_| ())
        }
        Operation::Positions { courier_id, batch } => {
            api.post_positions(courier_id, &batch, &item.key).await.map(|_| ())
        }
        Operation::CreateOrder { draft } => api.create_order(&draft, &item.key).await.map(|_| ()),
        Operation::VehicleException { courier_id, kind, note } => {
            api.vehicle_exception(courier_id, kind, &note, &item.key).await.map(|_| ())
        }
    }
}

fn view(item: StoredItem) -> OutboxItem {
    let error = item.last_error.as_deref().map(|text| {
        serde_json::from_str::<ItemError>(text).unwrap_or_else(|_| ItemError {
            code: "retrying".into(),
            detail: text.to_owned(),
            status: None,
        })
    });
    OutboxItem {
        id: item.id,
        lane: item.lane,
        key: item.key,
        operation: serde_json::from_str(&item.body).map_err(|e| format!("unreadable stored change: {e}")),
        state: item.state,
        attempts: item.attempts,
        error,
    }
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn frozen() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default()
    }

    #[tokio::test]
    async fn retries_are_timed_by_the_injected_clock_and_nothing_is_dropped() {
        let store = Arc::new(MemoryStore::default());
        // Nothing listens on port 9: every attempt is a network failure.
        let api = ApiClient::new("http://127.0.0.1:9").expect("client");
        api.restore(crate::api::Session {
            access_token: "t".into(),
            refresh_token: "r".into(),
            user: serde_json::from_value(
                serde_json::json!({"id": uuid::Uuid::nil(), "username": "c", "role": "courier"}),
            )
            .expect("user"),
        });
        let settings = OutboxSettings { backoff: Backoff::fast(), concurrency: 1, clock: frozen };
        let outbox = Outbox::start(store.clone(), api, settings);
        let order_id = OrderId(uuid::Uuid::nil());
        let id = outbox
            .enqueue(Operation::Command { order_id, command: Command::Pack, expected_version: None })
            .expect("enqueue");
        crate::rt::sleep(std::time::Duration::from_millis(300)).await;
        // The clock stands still, so the retry never comes due: one attempt only.
        let items = outbox.items().expect("items");
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].id, items[0].attempts, items[0].state), (id, 1, ItemState::Pending));
        assert!(items[0].error.as_ref().is_some_and(|e| e.detail.contains("cannot be reached")));
        assert!(!outbox.status().online);
        // Sent once: too late to cancel.
        assert!(outbox.cancel(id).is_err());
        outbox.stop();
    }
}
