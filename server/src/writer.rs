//! The order writer: every order change in this process goes through one
//! task that commits changes in groups.
//!
//! Stream sequences are gap-free in commit order because they are taken from
//! one counter row that stays locked until commit; a commit per change would
//! therefore serialise every change behind its own disk flush. Instead the
//! writer takes whatever changes are waiting, runs each inside the group's
//! transaction (behind a savepoint when it touches stock, so a refused change
//! leaves nothing behind), then takes the sequences, writes the events, the
//! audit entries and the saved idempotent responses, and commits once. Each
//! caller gets its own answer: a refusal for its change alone, or the
//! committed order. If the commit itself fails, every change of the group
//! fails with it and nothing is written.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use xianlu_domain::machine::LineStock;
use xianlu_domain::{
    Command, CourierId, Event, EventKind, Order, OrderDraft, OrderId, OrderNumber, PaymentMethod, PaymentTerms,
    ShortageResolution, Status, Transition, WarehouseId, business_date,
};

use crate::audit::{self, AuditEntry};
use crate::cache::OrderCache;
use crate::clock::Clock;
use crate::db::{Db, Tx, in_list, placeholders};
use crate::error::{ApiError, ApiResult};
use crate::feed::{Feed, NOTIFY_CHANNEL};
use crate::metrics::Metrics;
use crate::on_tx;
use crate::service::{Committed, IdempotencyClaim, RequestCtx};

/// Changes committed together at most.
const MAX_GROUP: usize = 256;
const EVENT_COLUMNS: usize = 12;
const CHUNK: usize = 400;

pub enum Change {
    Create {
        draft: Box<OrderDraft>,
        merchant: MerchantInfo,
    },
    Execute {
        id: OrderId,
        expected_version: Option<u64>,
        command: Box<Command>,
    },
    /// An observation of the road: an event that keeps the order's status and
    /// version, so it never races a command (`operations::observe`).
    Observe {
        id: OrderId,
        kind: Box<EventKind>,
        at: DateTime<Utc>,
        /// The courier whose stream carries it, if not the order's own.
        route_to: Option<CourierId>,
    },
}

/// What creating an order needs to know about its merchant.
#[derive(Debug, Clone)]
pub struct MerchantInfo {
    pub id: Uuid,
    pub order_prefix: String,
    pub tz: chrono_tz::Tz,
}

type Reply = oneshot::Sender<ApiResult<Committed>>;

pub struct Job {
    pub change: Change,
    pub ctx: RequestCtx,
    pub reply: Reply,
}

/// A change that passed, waiting for the group's commit.
struct Staged {
    order_id: OrderId,
    version: u64,
    /// The order after this change (what its caller is answered with).
    order: Order,
    events: Vec<Event>,
    first_version: u64,
    /// When it happened (for an observation, when it was seen).
    at: DateTime<Utc>,
    /// The courier whose stream carries the event, if not the order's own.
    route_to: Option<CourierId>,
    /// Absent for an observation: the server saw something, nobody changed anything.
    audit: Option<AuditEntry>,
    /// Whether the order itself changed (an observation leaves it as it was).
    changes_order: bool,
    /// The order after this change, as JSON: the response, and the stored document.
    body: Vec<u8>,
    idempotency: Option<(IdempotencyClaim, u16)>,
}

/// An order as the group sees it.
struct Working {
    order: Order,
    /// The version stored before the group; `None` for an order the group created.
    stored_version: Option<u64>,
}

pub struct Writer {
    db: Db,
    clock: Arc<dyn Clock>,
    feed: Arc<Feed>,
    metrics: Metrics,
    anchor_every: i64,
    /// The hot-order cache, told about a change before its caller is answered
    /// so the caller's next read sees it.
    cache: Arc<OrderCache>,
    /// Orders as this writer last committed them. A group still reads every
    /// order's stored version (and locks it); only an order whose version
    /// matches is taken from here instead of decoding its document again.
    recent: quick_cache::unsync::Cache<OrderId, Order>,
}

impl Writer {
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        (feed, cache): (Arc<Feed>, Arc<OrderCache>),
        metrics: Metrics,
        anchor_every: i64,
        capacity: usize,
    ) -> Self {
        let recent = quick_cache::unsync::Cache::new(capacity.max(1));
        Writer { db, clock, feed, cache, metrics, anchor_every, recent }
    }

    /// Runs until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.metrics.write_group_size.observe(jobs.len() as f64);
            self.commit_group(jobs).await;
        }
    }

    async fn commit_group(&mut self, jobs: Vec<Job>) {
        let mut tx = match self.db.begin().await {
            Ok(tx) => tx,
            Err(error) => return fail_all(jobs, &error),
        };
        // Every order the group changes, read and locked once.
        let ids: Vec<OrderId> = jobs
            .iter()
            .filter_map(|j| match &j.change {
                Change::Execute { id, .. } | Change::Observe { id, .. } => Some(*id),
                Change::Create { .. } => None,
            })
            .collect();
        let mut orders = match load_orders(&mut tx, &ids, &self.recent).await {
            Ok(orders) => orders,
            Err(error) => return fail_all(jobs, &error),
        };
        let mut staged: Vec<Staged> = Vec::new();
        // Each caller's reply channel, with the index of its staged change or its refusal.
        let mut outcomes: Vec<(Reply, Result<usize, ApiError>)> = Vec::new();
        for job in jobs {
            match self.stage(&mut tx, &job.ctx, job.change, &mut orders).await {
                Ok(s) => {
                    outcomes.push((job.reply, Ok(staged.len())));
                    staged.push(s);
                }
                Err(error) => outcomes.push((job.reply, Err(error))),
            }
        }
        let flushed = if staged.is_empty() { Ok(()) } else { self.flush(&mut tx, &staged, &orders).await };
        let committed = match flushed {
            Ok(()) => tx.commit().await.map_err(ApiError::from),
            Err(error) => Err(error),
        };
        match committed {
            Ok(()) => {
                for s in &staged {
                    for event in &s.events {
                        self.metrics
                            .order_events
                            .with_label_values(&[event.kind.name(), event.from.as_str(), event.to.as_str()])
                            .inc();
                    }
                }
                if !staged.is_empty() {
                    self.feed.wake();
                }
                for s in &staged {
                    self.cache.observe(s.order_id);
                }
                for (id, working) in &orders {
                    self.recent.insert(*id, working.order.clone());
                }
                let mut staged: Vec<Option<Staged>> = staged.into_iter().map(Some).collect();
                for (reply, outcome) in outcomes {
                    let answer = outcome.and_then(|i| {
                        let s = staged[i].take().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("staged twice")))?;
                        Ok(Committed { order: s.order, body: s.body })
                    });
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "an order write group failed to commit");
                for (reply, outcome) in outcomes {
                    let answer = match outcome {
                        Ok(_) => Err(ApiError::Internal(anyhow::anyhow!("the change could not be committed"))),
                        Err(refused) => Err(refused),
                    };
                    let _ = reply.send(answer);
                }
            }
        }
    }

    /// Runs one change against the group's view. A change that writes stock
    /// runs behind a savepoint, so a refusal leaves nothing behind; the
    /// order itself is written once for the whole group.
    async fn stage(
        &self,
        tx: &mut Tx,
        ctx: &RequestCtx,
        change: Change,
        orders: &mut HashMap<OrderId, Working>,
    ) -> ApiResult<Staged> {
        let guarded = match &change {
            // A refused draft must not use up a daily order number.
            Change::Create { .. } => true,
            Change::Execute { command, .. } => touches_stock(command),
            Change::Observe { .. } => false,
        };
        if guarded {
            savepoint(tx, "SAVEPOINT change").await?;
        }
        let result = match change {
            Change::Create { draft, merchant } => self.create(tx, ctx, &draft, &merchant).await,
            Change::Execute { id, expected_version, command } => {
                self.execute(tx, ctx, id, expected_version, &command, orders).await
            }
            Change::Observe { id, kind, at, route_to } => {
                let order = &orders.get(&id).ok_or_else(|| ApiError::NotFound(format!("no order {id}")))?.order;
                let event = xianlu_domain::operations::observe(order, *kind)?;
                let staged = Staged {
                    order_id: id,
                    version: order.version,
                    order: order.clone(),
                    events: vec![event],
                    first_version: order.version,
                    at,
                    route_to,
                    audit: None,
                    changes_order: false,
                    body: Vec::new(),
                    idempotency: None,
                };
                Ok((staged, order.clone()))
            }
        };
        match (&result, guarded) {
            (Ok(_), true) => savepoint(tx, "RELEASE SAVEPOINT change").await?,
            (Err(_), true) => savepoint(tx, "ROLLBACK TO SAVEPOINT change").await?,
            _ => {}
        }
        let (staged, order) = result?;
        match orders.get_mut(&order.id) {
            Some(working) => working.order = order,
            None => {
                orders.insert(order.id, Working { order, stored_version: None });
            }
        }
        Ok(staged)
    }

    async fn create(
        &self,
        tx: &mut Tx,
        ctx: &RequestCtx,
        draft: &OrderDraft,
        merchant: &MerchantInfo,
    ) -> ApiResult<(Staged, Order)> {
        let at = self.clock.now();
        let date = business_date(at, merchant.tz);
        let (daily,): (i64,) = on_tx!(tx, c => {
            sqlx::query_as(
                "INSERT INTO order_number_counters (merchant_id, business_date, last_seq) VALUES ($1, $2, 1) \
                 ON CONFLICT (merchant_id, business_date) DO UPDATE SET last_seq = order_number_counters.last_seq + 1 \
                 RETURNING last_seq",
            )
            .bind(merchant.id)
            .bind(date.to_string())
            .fetch_one(&mut *c)
            .await?
        });
        let number = OrderNumber::new(&merchant.order_prefix, date, u32::try_from(daily).unwrap_or(u32::MAX));
        let (order, created) = xianlu_domain::create(OrderId(Uuid::now_v7()), number, draft, at)?;
        let mut events = vec![created];
        let mut current = order;
        // Credit-terms customers pass payment at once; the stock check follows.
        if matches!(current.payment_terms, PaymentTerms::Credit { .. }) {
            let paid = xianlu_domain::apply(&current, &Command::MarkPaid { method: PaymentMethod::CreditTerms }, at)?;
            events.extend(paid.events);
            let checked = check_stock(tx, &paid.order, at).await?;
            events.extend(checked.events);
            current = checked.order;
        }
        let command = serde_json::to_value(draft).unwrap_or_default();
        self.staged(ctx, None, current, events, "CREATE_ORDER", command, 201)
    }

    async fn execute(
        &self,
        tx: &mut Tx,
        ctx: &RequestCtx,
        id: OrderId,
        expected_version: Option<u64>,
        command: &Command,
        orders: &HashMap<OrderId, Working>,
    ) -> ApiResult<(Staged, Order)> {
        let at = self.clock.now();
        let before = &orders.get(&id).ok_or_else(|| ApiError::NotFound(format!("no order {id}")))?.order;
        // Checked against the order as this group sees it, so a change of courier
        // committed just before cannot be overtaken.
        crate::policy::check_command(&ctx.scope, before, command)?;
        if let Some(expected) = expected_version
            && expected != before.version
        {
            self.metrics.version_conflicts.inc();
            return Err(ApiError::VersionConflict { current: before.version });
        }
        // The substitute's stock is reserved before the customer's consent is recorded.
        if let Command::AnswerSubstitution { line_no, accept: true } = command
            && let Some(line) = before.line(*line_no)
            && let Some(shortage) = &line.shortage
            && let ShortageResolution::SubstitutionProposed { substitute, .. } = &shortage.resolution
            && let Some(base) = substitute.quantity.to_base(substitute.unit)
        {
            let got = reserve(tx, before.warehouse_id, &substitute.sku, base).await?;
            if got < base {
                return Err(ApiError::conflict(
                    "substitute_out_of_stock",
                    format!("only {got} of {base} of {} is available", substitute.sku),
                ));
            }
        }
        let mut transition = xianlu_domain::apply(before, command, at)?;
        if matches!(command, Command::MarkPaid { .. }) {
            let checked = check_stock(tx, &transition.order, at).await?;
            transition.events.extend(checked.events);
            transition.order = checked.order;
        }
        apply_stock_effects(tx, before, &transition.order).await?;
        let command_json = serde_json::to_value(command).unwrap_or_default();
        self.staged(ctx, Some(before), transition.order, transition.events, command.name(), command_json, 200)
    }

    #[allow(clippy::too_many_arguments)]
    fn staged(
        &self,
        ctx: &RequestCtx,
        before: Option<&Order>,
        order: Order,
        events: Vec<Event>,
        action: &str,
        command: serde_json::Value,
        status: u16,
    ) -> ApiResult<(Staged, Order)> {
        let summary = |o: &Order| serde_json::json!({"status": o.status, "version": o.version, "courierId": o.courier_id, "totals": o.totals});
        let audit = AuditEntry {
            merchant_id: order.merchant_id.uuid(),
            at: order.updated_at,
            actor_kind: ctx.actor.kind.clone(),
            actor_id: ctx.actor.id.clone(),
            request_id: ctx.request_id.clone(),
            action: action.to_owned(),
            subject_id: order.id.to_string(),
            before: before.map(summary).unwrap_or(serde_json::Value::Null),
            after: serde_json::json!({
                "order": summary(&order),
                "command": command,
                "events": events.iter().map(|e| e.kind.name()).collect::<Vec<_>>(),
            }),
        };
        let body = serde_json::to_vec(&order).map_err(|e| ApiError::Internal(e.into()))?;
        let staged = Staged {
            order_id: order.id,
            version: order.version,
            order: order.clone(),
            first_version: before.map_or(1, |b| b.version + 1),
            events,
            at: order.updated_at,
            route_to: None,
            audit: Some(audit),
            changes_order: true,
            body,
            idempotency: ctx.idempotency.clone().map(|claim| (claim, status)),
        };
        Ok((staged, order))
    }

    /// Writes the group's orders, takes its stream sequences and writes its
    /// events, audit entries and saved responses.
    async fn flush(&self, tx: &mut Tx, staged: &[Staged], orders: &HashMap<OrderId, Working>) -> ApiResult<()> {
        // Each changed order is written once, with the document of its last change.
        let mut last_body: HashMap<OrderId, &[u8]> = HashMap::new();
        for s in staged.iter().filter(|s| s.changes_order) {
            last_body.insert(s.order_id, &s.body);
        }
        let mut inserts = Vec::new();
        let mut updates = Vec::new();
        for (id, body) in &last_body {
            let working = orders.get(id).ok_or_else(|| ApiError::Internal(anyhow::anyhow!("lost order {id}")))?;
            let doc = std::str::from_utf8(body).map_err(|e| ApiError::Internal(e.into()))?;
            match working.stored_version {
                None => inserts.push((&working.order, doc)),
                Some(stored) => updates.push((&working.order, stored, doc)),
            }
        }
        insert_orders(tx, &inserts).await?;
        update_orders(tx, &updates).await?;

        let count: usize = staged.iter().map(|s| s.events.len()).sum();
        // Locks the counter row until commit: sequences follow commit order.
        let (last,): (i64,) = on_tx!(&mut *tx, c => {
            sqlx::query_as("UPDATE stream_head SET seq = seq + $1 WHERE id = 1 RETURNING seq")
                .bind(count as i64)
                .fetch_one(&mut *c)
                .await?
        });
        let mut seq = last - count as i64;
        let mut rows = Vec::with_capacity(count);
        for s in staged {
            let order =
                &orders.get(&s.order_id).ok_or_else(|| ApiError::Internal(anyhow::anyhow!("lost order")))?.order;
            for (i, event) in s.events.iter().enumerate() {
                seq += 1;
                // Each event carries the version it produced; the change's last one the change's.
                let version =
                    if i + 1 == s.events.len() { s.version } else { (s.first_version + i as u64).min(s.version) };
                let payload = serde_json::to_string(event).map_err(|e| ApiError::Internal(e.into()))?;
                let courier = s.route_to.or(order.courier_id);
                rows.push((seq, order, courier, &s.audit, s.at, version as i64, event.kind.name(), payload));
            }
        }
        for chunk in rows.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO events (seq, order_id, order_number, merchant_id, courier_id, version, kind, at, \
                 actor_kind, actor_id, request_id, payload) VALUES {}",
                placeholders(chunk.len(), EVENT_COLUMNS)
            );
            on_tx!(&mut *tx, c => {
                let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
                for (seq, order, courier, audit, at, version, kind, payload) in chunk {
                    let (actor_kind, actor_id, request_id) = match audit {
                        Some(a) => (a.actor_kind.as_str(), a.actor_id.as_str(), a.request_id.as_str()),
                        None => ("system", "operations", ""),
                    };
                    query = query
                        .bind(*seq)
                        .bind(order.id.uuid())
                        .bind(order.number.as_str())
                        .bind(order.merchant_id.uuid())
                        .bind(courier.map(CourierId::uuid))
                        .bind(*version)
                        .bind(*kind)
                        .bind(*at)
                        .bind(actor_kind)
                        .bind(actor_id)
                        .bind(request_id)
                        .bind(payload);
                }
                query.execute(&mut *c).await?;
            });
        }
        let entries: Vec<AuditEntry> = staged.iter().filter_map(|s| s.audit.clone()).collect();
        audit::append_all(tx, &entries, self.anchor_every).await?;
        let saved: Vec<(&IdempotencyClaim, u16, &[u8])> =
            staged.iter().filter_map(|s| s.idempotency.as_ref().map(|(c, st)| (c, *st, s.body.as_slice()))).collect();
        save_responses(tx, &saved).await?;
        if let Tx::Postgres(t) = tx {
            sqlx::query("SELECT pg_notify($1, '')").bind(NOTIFY_CHANNEL).execute(&mut **t).await?;
        }
        Ok(())
    }
}

/// Answers every change of a group that could not even start.
fn fail_all(jobs: Vec<Job>, error: &dyn std::fmt::Display) {
    tracing::error!(error = %error, "an order write group could not start");
    let message = error.to_string();
    for job in jobs {
        let _ = job.reply.send(Err(ApiError::Internal(anyhow::anyhow!("{message}"))));
    }
}

fn touches_stock(command: &Command) -> bool {
    matches!(
        command,
        Command::MarkPaid { .. }
            | Command::AnswerSubstitution { .. }
            | Command::Pack
            | Command::Cancel { .. }
            | Command::ShortShip { .. }
            | Command::ExpireSubstitution { .. }
    )
}

async fn savepoint(tx: &mut Tx, statement: &'static str) -> ApiResult<()> {
    on_tx!(tx, c => {
        sqlx::query(statement).execute(&mut *c).await?;
    });
    Ok(())
}

/// Reserves stock line by line and records the outcome.
async fn check_stock(tx: &mut Tx, order: &Order, at: DateTime<Utc>) -> ApiResult<Transition> {
    let mut lines = Vec::with_capacity(order.lines.len());
    for line in &order.lines {
        let reserved = reserve(tx, order.warehouse_id, &line.sku, line.base_ordered).await?;
        lines.push(LineStock { line_no: line.line_no, reserved_base: reserved });
    }
    Ok(xianlu_domain::apply(order, &Command::CheckStock { lines }, at)?)
}

/// Reads and locks the orders a group will change. Orders this writer
/// committed last and nobody changed since come from `recent`.
async fn load_orders(
    tx: &mut Tx,
    ids: &[OrderId],
    recent: &quick_cache::unsync::Cache<OrderId, Order>,
) -> ApiResult<HashMap<OrderId, Working>> {
    let mut unique: Vec<Uuid> = ids.iter().map(|id| id.uuid()).collect();
    unique.sort_unstable();
    unique.dedup();
    let mut out = HashMap::with_capacity(unique.len());
    let mut stale = Vec::new();
    for chunk in unique.chunks(CHUNK) {
        let sql = format!("SELECT id, version FROM orders WHERE id IN ({}){}", in_list(chunk.len()), tx.lock_clause());
        let rows: Vec<(Uuid, i64)> = on_tx!(&mut *tx, c => {
            let mut query = sqlx::query_as(AssertSqlSafe(sql.clone()));
            for id in chunk {
                query = query.bind(*id);
            }
            query.fetch_all(&mut *c).await?
        });
        for (id, version) in rows {
            let id = OrderId(id);
            match recent.get(&id) {
                Some(order) if order.version as i64 == version => {
                    out.insert(id, Working { stored_version: Some(order.version), order: order.clone() });
                }
                _ => stale.push(id.uuid()),
            }
        }
    }
    for chunk in stale.chunks(CHUNK) {
        let sql = format!("SELECT doc FROM orders WHERE id IN ({})", in_list(chunk.len()));
        let rows: Vec<(String,)> = on_tx!(&mut *tx, c => {
            let mut query = sqlx::query_as(AssertSqlSafe(sql.clone()));
            for id in chunk {
                query = query.bind(*id);
            }
            query.fetch_all(&mut *c).await?
        });
        for (doc,) in rows {
            let order: Order = serde_json::from_str(&doc).map_err(|e| ApiError::Internal(e.into()))?;
            out.insert(order.id, Working { stored_version: Some(order.version), order });
        }
    }
    Ok(out)
}

const ORDER_COLUMNS: usize = 11;

async fn insert_orders(tx: &mut Tx, orders: &[(&Order, &str)]) -> ApiResult<()> {
    for chunk in orders.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO orders (id, merchant_id, number, status, version, warehouse_id, customer_id, courier_id, \
             created_at, updated_at, doc) VALUES {}",
            placeholders(chunk.len(), ORDER_COLUMNS)
        );
        on_tx!(&mut *tx, c => {
            let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
            for (order, doc) in chunk {
                query = query
                    .bind(order.id.uuid())
                    .bind(order.merchant_id.uuid())
                    .bind(order.number.as_str())
                    .bind(order.status.as_str())
                    .bind(order.version as i64)
                    .bind(order.warehouse_id.uuid())
                    .bind(order.customer_id.uuid())
                    .bind(order.courier_id.map(CourierId::uuid))
                    .bind(order.created_at)
                    .bind(order.updated_at)
                    .bind(*doc);
            }
            query.execute(&mut *c).await?;
        });
    }
    Ok(())
}

/// Compare-and-swap every changed order on the version it had before the
/// group. The rows are locked since the group read them, so a miss means the
/// database changed under us: the whole group fails rather than overwrite.
async fn update_orders(tx: &mut Tx, orders: &[(&Order, u64, &str)]) -> ApiResult<()> {
    for chunk in orders.chunks(CHUNK) {
        let sql = format!(
            "UPDATE orders SET status = v.column3, version = v.column4, courier_id = v.column5, \
             updated_at = v.column6, doc = v.column7 FROM (VALUES {}) AS v \
             WHERE orders.id = v.column1 AND orders.version = v.column2",
            placeholders(chunk.len(), 7)
        );
        let affected = on_tx!(&mut *tx, c => {
            let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
            for (order, stored, doc) in chunk {
                query = query
                    .bind(order.id.uuid())
                    .bind(*stored as i64)
                    .bind(order.status.as_str())
                    .bind(order.version as i64)
                    .bind(order.courier_id.map(CourierId::uuid))
                    .bind(order.updated_at)
                    .bind(*doc);
            }
            query.execute(&mut *c).await?.rows_affected()
        });
        if affected != chunk.len() as u64 {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "{} of {} locked orders changed under the writer",
                chunk.len() as u64 - affected,
                chunk.len()
            )));
        }
    }
    Ok(())
}

/// Saves the responses of changes that came with an idempotency key.
async fn save_responses(tx: &mut Tx, saved: &[(&IdempotencyClaim, u16, &[u8])]) -> ApiResult<()> {
    for chunk in saved.chunks(CHUNK) {
        let sql = format!(
            "UPDATE idempotency SET status = v.column3, content_type = 'application/json', body = v.column4 \
             FROM (VALUES {}) AS v WHERE idempotency.scope = v.column1 AND idempotency.key = v.column2",
            placeholders(chunk.len(), 4)
        );
        on_tx!(&mut *tx, c => {
            let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
            for (claim, status, body) in chunk {
                query = query.bind(&claim.scope).bind(&claim.key).bind(i32::from(*status)).bind(body.to_vec());
            }
            query.execute(&mut *c).await?;
        });
    }
    Ok(())
}

/// Reserves up to `need` of a SKU; returns what was reserved.
async fn reserve(tx: &mut Tx, warehouse: WarehouseId, sku: &str, need: i64) -> ApiResult<i64> {
    let sql = format!(
        "SELECT on_hand_base - reserved_base FROM stock WHERE warehouse_id = $1 AND sku = $2{}",
        tx.lock_clause()
    );
    let available: Option<(i64,)> = on_tx!(tx, c => {
        sqlx::query_as(AssertSqlSafe(sql)).bind(warehouse.uuid()).bind(sku).fetch_optional(&mut *c).await?
    });
    let take = available.map_or(0, |(a,)| a.max(0)).min(need);
    if take > 0 {
        on_tx!(tx, c => {
            sqlx::query("UPDATE stock SET reserved_base = reserved_base + $3 WHERE warehouse_id = $1 AND sku = $2")
                .bind(warehouse.uuid())
                .bind(sku)
                .bind(take)
                .execute(&mut *c)
                .await?;
        });
    }
    Ok(take)
}

/// Moves stock as the order's change requires: packing consumes the
/// reservation and the picked goods; cancelling releases the reservation, or
/// puts packed goods back; a substituted line gives its reservation back.
async fn apply_stock_effects(tx: &mut Tx, before: &Order, after: &Order) -> ApiResult<()> {
    let packed_now = before.status == Status::Picking && after.status == Status::Packed;
    let cancelled_now = before.status != Status::Cancelled && after.status == Status::Cancelled;
    let was_packed = matches!(before.status, Status::Packed);
    for line in &after.lines {
        let reserved_before = before.line(line.line_no).map_or(0, |l| l.base_reserved);
        let (on_hand_delta, reserved_delta) = if packed_now {
            (-line.base_delivered(), -line.base_reserved)
        } else if cancelled_now && was_packed {
            (line.base_delivered(), 0)
        } else if cancelled_now {
            (0, -line.base_reserved)
        } else if line.base_reserved < reserved_before {
            (0, line.base_reserved - reserved_before)
        } else {
            (0, 0)
        };
        if on_hand_delta == 0 && reserved_delta == 0 {
            continue;
        }
        on_tx!(tx, c => {
            sqlx::query(
                "UPDATE stock SET on_hand_base = CASE WHEN on_hand_base + $3 < 0 THEN 0 ELSE on_hand_base + $3 END, \
                 reserved_base = CASE WHEN reserved_base + $4 < 0 THEN 0 ELSE reserved_base + $4 END \
                 WHERE warehouse_id = $1 AND sku = $2",
            )
            .bind(after.warehouse_id.uuid())
            .bind(&line.sku)
            .bind(on_hand_delta)
            .bind(reserved_delta)
            .execute(&mut *c)
            .await?;
        });
    }
    Ok(())
}
