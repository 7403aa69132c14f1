//! The order service: the one place that changes orders.
//!
//! **Every state change is one transaction**: load the order, run the pure
//! state machine, apply its stock effects, update the order with a version
//! check (compare-and-swap), take the next stream sequences from the counter
//! row, append the events and the audit entry, save the idempotent response —
//! then commit and wake the feed. Transports (REST, WebSocket) only convert.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use uuid::Uuid;
use xianlu_domain::machine::LineStock;
use xianlu_domain::wire::{Actor, CustomerSummary, DriverInfo, Item, LatLng, OrderPage, OrderView, StreamEvent};
use xianlu_domain::{
    Command, CourierId, Event, MerchantId, Order, OrderDraft, OrderId, OrderNumber, PaymentMethod, PaymentTerms,
    ShortageResolution, Status, Transition, WarehouseId, business_date,
};

use crate::audit::{self, AuditEntry};
use crate::cache::OrderCache;
use crate::clock::Clock;
use crate::db::{Backend, Db, Tx};
use crate::error::{ApiError, ApiResult};
use crate::feed::{EventRow, Feed, NOTIFY_CHANNEL};
use crate::metrics::Metrics;
use crate::{on_db, on_tx};

/// Who is asking, and under which request.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub actor: Actor,
    pub request_id: String,
    pub idempotency: Option<IdempotencyClaim>,
}

impl RequestCtx {
    pub fn system(request_id: impl Into<String>) -> Self {
        RequestCtx {
            actor: Actor { kind: "system".into(), id: "xianlu-server".into() },
            request_id: request_id.into(),
            idempotency: None,
        }
    }
}

/// An idempotency key this request holds; the response is saved in the same
/// transaction as the change it reports.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub scope: String,
    pub key: String,
}

/// A committed change and the exact bytes of its response.
#[derive(Debug)]
pub struct Committed {
    pub order: Order,
    pub body: Vec<u8>,
    pub last_seq: u64,
}

pub struct OrderService {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub feed: Arc<Feed>,
    pub cache: Arc<OrderCache>,
    pub metrics: Metrics,
    pub anchor_every: i64,
}

const MAX_ATTEMPTS: usize = 5;

enum Outcome {
    Done(Box<Committed>),
    /// The compare-and-swap lost against a concurrent writer.
    Lost {
        current: u64,
    },
}

/// Filters for listing orders.
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderFilter {
    pub status: Option<Status>,
    pub merchant_id: Option<Uuid>,
    pub courier_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    /// Created at or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    /// 1–200, default 50.
    pub limit: Option<u32>,
    /// The development identity, for links opened in a browser.
    #[param(ignore)]
    pub actor: Option<String>,
}

impl OrderService {
    // ----- creating and changing orders -----

    pub async fn create_order(&self, ctx: &RequestCtx, draft: OrderDraft) -> ApiResult<Committed> {
        let at = self.clock.now();
        let mut tx = self.db.begin().await?;
        let merchant = load_merchant(&mut tx, draft.merchant_id).await?;
        let (warehouse_merchant,): (Uuid,) = on_tx!(&mut tx, c => {
            sqlx::query_as("SELECT merchant_id FROM warehouses WHERE id = $1")
                .bind(draft.warehouse_id.uuid())
                .fetch_optional(&mut *c)
                .await?
        })
        .ok_or_else(|| ApiError::unprocessable("unknown_warehouse", "no such warehouse"))?;
        if warehouse_merchant != merchant.id {
            return Err(ApiError::unprocessable("unknown_warehouse", "the warehouse belongs to another merchant"));
        }
        let (customer_merchant, terms): (Uuid, String) = on_tx!(&mut tx, c => {
            sqlx::query_as("SELECT merchant_id, payment_terms FROM customers WHERE id = $1")
                .bind(draft.customer_id.uuid())
                .fetch_optional(&mut *c)
                .await?
        })
        .ok_or_else(|| ApiError::unprocessable("unknown_customer", "no such customer"))?;
        if customer_merchant != merchant.id {
            return Err(ApiError::unprocessable("unknown_customer", "the customer buys from another merchant"));
        }
        let terms: PaymentTerms = serde_json::from_str(&terms).map_err(|e| ApiError::Internal(e.into()))?;
        if terms != draft.payment_terms {
            return Err(ApiError::unprocessable(
                "payment_terms_mismatch",
                "the payment terms differ from the customer's agreed terms",
            ));
        }
        if let Some(contact) = draft.contact_id {
            let owner: Option<(Uuid,)> = on_tx!(&mut tx, c => {
                sqlx::query_as("SELECT customer_id FROM contacts WHERE id = $1")
                    .bind(contact.uuid())
                    .fetch_optional(&mut *c)
                    .await?
            });
            if owner.map(|(c,)| c) != Some(draft.customer_id.uuid()) {
                return Err(ApiError::unprocessable("unknown_contact", "the contact is not one of the customer's"));
            }
        }
        let date = business_date(at, merchant.tz);
        let (daily,): (i64,) = on_tx!(&mut tx, c => {
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
        let id = OrderId(Uuid::now_v7());
        let (order, created) = xianlu_domain::create(id, number, &draft, at)?;
        let mut events = vec![created];
        let mut current = order.clone();
        // Credit-terms customers pass payment at once; the stock check follows in the same transaction.
        if matches!(order.payment_terms, PaymentTerms::Credit { .. }) {
            let paid = xianlu_domain::apply(&current, &Command::MarkPaid { method: PaymentMethod::CreditTerms }, at)?;
            events.extend(paid.events);
            let checked = self.check_stock(&mut tx, &paid.order, at).await?;
            events.extend(checked.events);
            current = checked.order;
        }
        insert_order(&mut tx, &current).await?;
        let committed = self
            .finish(
                tx,
                ctx,
                None,
                &current,
                &events,
                "CREATE_ORDER",
                serde_json::to_value(&draft).unwrap_or_default(),
                201,
            )
            .await?;
        Ok(committed)
    }

    /// Applies a client's command. Without `expected_version` a lost race is
    /// retried on the newer version; with it, the caller gets 409.
    pub async fn execute(
        &self,
        ctx: &RequestCtx,
        id: OrderId,
        expected_version: Option<u64>,
        command: &Command,
    ) -> ApiResult<Committed> {
        if command.is_internal() {
            return Err(ApiError::unprocessable(
                "internal_command",
                format!("{} is issued by the server", command.name()),
            ));
        }
        if matches!(command, Command::MarkPaid { method: PaymentMethod::Gateway { .. } }) && ctx.actor.kind != "gateway"
        {
            return Err(ApiError::unprocessable(
                "gateway_payment_via_webhook",
                "gateway payments are confirmed by the gateway's signed notification",
            ));
        }
        for _ in 0..MAX_ATTEMPTS {
            match self.try_execute(ctx, id, expected_version, command).await? {
                Outcome::Done(committed) => return Ok(*committed),
                Outcome::Lost { current } => {
                    if expected_version.is_some() {
                        self.metrics.version_conflicts.inc();
                        return Err(ApiError::VersionConflict { current });
                    }
                }
            }
        }
        Err(ApiError::conflict("too_much_contention", "the order is changing too fast; try again"))
    }

    async fn try_execute(
        &self,
        ctx: &RequestCtx,
        id: OrderId,
        expected_version: Option<u64>,
        command: &Command,
    ) -> ApiResult<Outcome> {
        let at = self.clock.now();
        let mut tx = self.db.begin().await?;
        let before = load_order(&mut tx, id).await?.ok_or_else(|| ApiError::NotFound(format!("no order {id}")))?;
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
            let got = reserve(&mut tx, before.warehouse_id, &substitute.sku, base).await?;
            if got < base {
                return Err(ApiError::conflict(
                    "substitute_out_of_stock",
                    format!("only {got} of {base} of {} is available", substitute.sku),
                ));
            }
        }
        let mut transition = xianlu_domain::apply(&before, command, at)?;
        if matches!(command, Command::MarkPaid { .. }) {
            let checked = self.check_stock(&mut tx, &transition.order, at).await?;
            transition.events.extend(checked.events);
            transition.order = checked.order;
        }
        apply_stock_effects(&mut tx, &before, &transition.order).await?;
        if !update_order(&mut tx, &before, &transition.order).await? {
            drop(tx);
            let current = self.current_version(id).await?;
            return Ok(Outcome::Lost { current });
        }
        let committed = self
            .finish(
                tx,
                ctx,
                Some(&before),
                &transition.order,
                &transition.events,
                command.name(),
                serde_json::to_value(command).unwrap_or_default(),
                200,
            )
            .await?;
        Ok(Outcome::Done(Box::new(committed)))
    }

    /// Reserves stock line by line and records the outcome.
    async fn check_stock(&self, tx: &mut Tx, order: &Order, at: DateTime<Utc>) -> ApiResult<Transition> {
        let mut lines = Vec::with_capacity(order.lines.len());
        for line in &order.lines {
            let reserved = reserve(tx, order.warehouse_id, &line.sku, line.base_ordered).await?;
            lines.push(LineStock { line_no: line.line_no, reserved_base: reserved });
        }
        Ok(xianlu_domain::apply(order, &Command::CheckStock { lines }, at)?)
    }

    async fn current_version(&self, id: OrderId) -> ApiResult<u64> {
        let (version,): (i64,) = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT version FROM orders WHERE id = $1").bind(id.uuid()).fetch_one(pool).await?
        });
        Ok(u64::try_from(version).unwrap_or(0))
    }

    /// Appends events and the audit entry, saves the response, commits, wakes the feed.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        mut tx: Tx,
        ctx: &RequestCtx,
        before: Option<&Order>,
        after: &Order,
        events: &[Event],
        action: &str,
        command: serde_json::Value,
        status: u16,
    ) -> ApiResult<Committed> {
        let at = after.updated_at;
        let count = i64::try_from(events.len()).unwrap_or(0);
        let (last,): (i64,) = on_tx!(&mut tx, c => {
            sqlx::query_as("UPDATE stream_head SET seq = seq + $1 WHERE id = 1 RETURNING seq")
                .bind(count)
                .fetch_one(&mut *c)
                .await?
        });
        let first = last - count + 1;
        // Versions: the order moved from `before.version` to `after.version`;
        // the last event carries the final version.
        let base_version = before.map_or(0, |b| b.version as i64);
        for (i, event) in events.iter().enumerate() {
            let seq = first + i as i64;
            let version = if i + 1 == events.len() {
                after.version as i64
            } else {
                (base_version + 1 + i as i64).min(after.version as i64)
            };
            let payload = serde_json::to_string(event).map_err(|e| ApiError::Internal(e.into()))?;
            on_tx!(&mut tx, c => {
                sqlx::query(
                    "INSERT INTO events (seq, order_id, order_number, merchant_id, courier_id, version, kind, at, \
                     actor_kind, actor_id, request_id, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(seq)
                .bind(after.id.uuid())
                .bind(after.number.as_str())
                .bind(after.merchant_id.uuid())
                .bind(after.courier_id.map(CourierId::uuid))
                .bind(version)
                .bind(event.kind.name())
                .bind(at)
                .bind(&ctx.actor.kind)
                .bind(&ctx.actor.id)
                .bind(&ctx.request_id)
                .bind(payload)
                .execute(&mut *c)
                .await?;
            });
        }
        let summary = |o: &Order| {
            serde_json::json!({
                "status": o.status, "version": o.version, "courierId": o.courier_id, "totals": o.totals,
            })
        };
        audit::append(
            &mut tx,
            &AuditEntry {
                merchant_id: after.merchant_id.uuid(),
                at,
                actor_kind: &ctx.actor.kind,
                actor_id: &ctx.actor.id,
                request_id: &ctx.request_id,
                action,
                subject_id: after.id.to_string(),
                before: before.map(summary).unwrap_or(serde_json::Value::Null),
                after: serde_json::json!({
                    "order": summary(after),
                    "command": command,
                    "events": events.iter().map(|e| e.kind.name()).collect::<Vec<_>>(),
                    "seq": [first, last],
                }),
            },
            self.anchor_every,
        )
        .await?;
        let body = serde_json::to_vec(after).map_err(|e| ApiError::Internal(e.into()))?;
        if let Some(claim) = &ctx.idempotency {
            save_idempotent_response(&mut tx, claim, status, "application/json", &body).await?;
        }
        if let Tx::Postgres(t) = &mut tx {
            sqlx::query("SELECT pg_notify($1, '')").bind(NOTIFY_CHANNEL).execute(&mut **t).await?;
        }
        tx.commit().await?;
        for event in events {
            self.metrics
                .order_events
                .with_label_values(&[event.kind.name(), event.from.as_str(), event.to.as_str()])
                .inc();
        }
        self.feed.wake();
        Ok(Committed { order: after.clone(), body, last_seq: u64::try_from(last).unwrap_or(0) })
    }

    /// Ships short every line whose substitute offer was not answered in
    /// time. Several processes may run this at once: the version check lets
    /// one win and the others' attempts are refused harmlessly.
    pub async fn expire_due_substitutions(&self) -> ApiResult<usize> {
        let now = self.clock.now();
        let rows: Vec<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT doc FROM orders WHERE status = $1").bind(Status::OutOfStock.as_str()).fetch_all(pool).await?
        });
        let mut expired = 0;
        for (doc,) in rows {
            let order: Order = serde_json::from_str(&doc).map_err(|e| ApiError::Internal(e.into()))?;
            for line in &order.lines {
                let due = matches!(
                    line.shortage.as_ref().map(|s| &s.resolution),
                    Some(ShortageResolution::SubstitutionProposed { respond_by, .. }) if *respond_by <= now
                );
                if due {
                    let ctx = RequestCtx::system(format!("expire-substitution-{}", Uuid::now_v7()));
                    match self
                        .execute(&ctx, order.id, None, &Command::ExpireSubstitution { line_no: line.line_no })
                        .await
                    {
                        Ok(_) => expired += 1,
                        Err(ApiError::Rejected(_) | ApiError::VersionConflict { .. } | ApiError::Conflict { .. }) => {}
                        Err(other) => return Err(other),
                    }
                }
            }
        }
        Ok(expired)
    }

    // ----- reading -----

    /// The order's view, from the hot cache or the database.
    pub async fn view(&self, id: OrderId) -> ApiResult<Arc<OrderView>> {
        if let Some(view) = self.cache.get(&id) {
            self.metrics.cache_hits.inc();
            return Ok(view);
        }
        self.metrics.cache_misses.inc();
        let ticket = self.cache.ticket(id);
        let view = Arc::new(self.load_view(id).await?);
        self.cache.fill(ticket, view.clone());
        Ok(view)
    }

    pub async fn find_by_number(&self, number: &str) -> ApiResult<OrderId> {
        let row: Option<(Uuid,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id FROM orders WHERE number = $1 ORDER BY id LIMIT 1")
                .bind(number)
                .fetch_optional(pool)
                .await?
        });
        row.map(|(id,)| OrderId(id)).ok_or_else(|| ApiError::NotFound(format!("no order {number}")))
    }

    async fn load_view(&self, id: OrderId) -> ApiResult<OrderView> {
        let order = on_db!(&self.db, pool => {
            sqlx::query_as::<_, (String,)>("SELECT doc FROM orders WHERE id = $1")
                .bind(id.uuid())
                .fetch_optional(pool)
                .await?
        })
        .ok_or_else(|| ApiError::NotFound(format!("no order {id}")))?;
        let order: Order = serde_json::from_str(&order.0).map_err(|e| ApiError::Internal(e.into()))?;
        let customer: Option<(String, String, f64, f64)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT business_name, address, lat, lng FROM customers WHERE id = $1")
                .bind(order.customer_id.uuid())
                .fetch_optional(pool)
                .await?
        });
        let driver_info = match order.courier_id {
            Some(courier) => {
                let person: Option<(String, String)> = on_db!(&self.db, pool => {
                    sqlx::query_as("SELECT name, phone FROM personal_data WHERE subject_id = $1")
                        .bind(courier.uuid())
                        .fetch_optional(pool)
                        .await?
                });
                let (name, phone) = person.unwrap_or_default();
                Some(DriverInfo { id: courier, name, phone, location: None })
            }
            None => None,
        };
        let timeline = self.timeline(id).await?;
        Ok(OrderView {
            order_id: order.number.clone(),
            status: order.status,
            driver_info,
            eta: None,
            items: order
                .lines
                .iter()
                .filter(|l| l.base_to_ship > 0 || l.shortage.is_none())
                .map(|l| Item { name: l.name.clone(), quantity: l.quantity, unit: l.unit })
                .collect(),
            customer: customer.map(|(business_name, address, lat, lng)| CustomerSummary {
                id: order.customer_id,
                business_name,
                address,
                location: LatLng { lat, lng },
            }),
            order,
            timeline,
        })
    }

    pub async fn timeline(&self, id: OrderId) -> ApiResult<Vec<StreamEvent>> {
        let rows: Vec<EventRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT seq, order_id, order_number, merchant_id, courier_id, version, at, actor_kind, actor_id, payload \
                 FROM events WHERE order_id = $1 ORDER BY seq",
            )
            .bind(id.uuid())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(|r| r.into_stream_event().map_err(ApiError::Internal)).collect()
    }

    pub async fn list(&self, filter: &OrderFilter) -> ApiResult<OrderPage> {
        let limit = i64::from(filter.limit.unwrap_or(50).clamp(1, 200));
        let cursor = match &filter.cursor {
            Some(c) => Some(
                Uuid::parse_str(c)
                    .map_err(|_| ApiError::bad_request("invalid_cursor", "the cursor is not one we issued"))?,
            ),
            None => None,
        };
        let status = filter.status.map(|s| s.as_str().to_owned());
        let rows: Vec<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT doc FROM orders WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR merchant_id = $2) \
                 AND ($3 IS NULL OR courier_id = $3) AND ($4 IS NULL OR customer_id = $4) \
                 AND ($5 IS NULL OR created_at >= $5) AND ($6 IS NULL OR created_at < $6) \
                 AND ($7 IS NULL OR id < $7) ORDER BY id DESC LIMIT $8",
            )
            .bind(status.clone())
            .bind(filter.merchant_id)
            .bind(filter.courier_id)
            .bind(filter.customer_id)
            .bind(filter.from)
            .bind(filter.to)
            .bind(cursor)
            .bind(limit + 1)
            .fetch_all(pool)
            .await?
        });
        let mut items = rows
            .iter()
            .map(|(doc,)| serde_json::from_str::<Order>(doc))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::Internal(e.into()))?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|o| o.id.to_string())
        } else {
            None
        };
        Ok(OrderPage { items, next_cursor })
    }

    /// Events after `after` up to `until` that match any of the topics, in order.
    pub async fn events_between(
        &self,
        order_ids: &[Uuid],
        merchant_ids: &[Uuid],
        courier_ids: &[Uuid],
        after: u64,
        until: u64,
        limit: i64,
    ) -> ApiResult<Vec<StreamEvent>> {
        let mut out: Vec<StreamEvent> = Vec::new();
        let mut safe_until = until;
        for (column, ids) in [("order_id", order_ids), ("merchant_id", merchant_ids), ("courier_id", courier_ids)] {
            for id in ids {
                let sql = format!(
                    "SELECT seq, order_id, order_number, merchant_id, courier_id, version, at, actor_kind, actor_id, \
                     payload FROM events WHERE {column} = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4"
                );
                let rows: Vec<EventRow> = on_db!(&self.db, pool => {
                    sqlx::query_as(AssertSqlSafe(sql.clone()))
                        .bind(id)
                        .bind(after as i64)
                        .bind(until as i64)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?
                });
                if rows.len() as i64 == limit
                    && let Some(last) = rows.last()
                {
                    safe_until = safe_until.min(last.seq as u64);
                }
                for row in rows {
                    out.push(row.into_stream_event().map_err(ApiError::Internal)?);
                }
            }
        }
        out.sort_by_key(|e| e.seq);
        out.dedup_by_key(|e| e.seq);
        out.retain(|e| e.seq <= safe_until);
        Ok(out)
    }
}

// ----- storage helpers -----

pub struct MerchantRow {
    pub id: Uuid,
    pub order_prefix: String,
    pub tz: chrono_tz::Tz,
}

pub async fn load_merchant(tx: &mut Tx, id: MerchantId) -> ApiResult<MerchantRow> {
    let row: Option<(String, String)> = on_tx!(tx, c => {
        sqlx::query_as("SELECT order_prefix, time_zone FROM merchants WHERE id = $1")
            .bind(id.uuid())
            .fetch_optional(&mut *c)
            .await?
    });
    let (order_prefix, tz) = row.ok_or_else(|| ApiError::unprocessable("unknown_merchant", "no such merchant"))?;
    let tz = tz.parse().map_err(|_| ApiError::Internal(anyhow::anyhow!("merchant {id} has a bad time zone {tz}")))?;
    Ok(MerchantRow { id: id.uuid(), order_prefix, tz })
}

async fn load_order(tx: &mut Tx, id: OrderId) -> ApiResult<Option<Order>> {
    let sql = format!("SELECT doc FROM orders WHERE id = $1{}", tx.lock_clause());
    let row: Option<(String,)> = on_tx!(tx, c => {
        sqlx::query_as(AssertSqlSafe(sql)).bind(id.uuid()).fetch_optional(&mut *c).await?
    });
    row.map(|(doc,)| serde_json::from_str(&doc).map_err(|e| ApiError::Internal(e.into()))).transpose()
}

async fn insert_order(tx: &mut Tx, order: &Order) -> ApiResult<()> {
    let doc = serde_json::to_string(order).map_err(|e| ApiError::Internal(e.into()))?;
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO orders (id, merchant_id, number, status, version, warehouse_id, customer_id, courier_id, \
             created_at, updated_at, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
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
        .bind(doc)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// Compare-and-swap on the version; false when another writer got there first.
async fn update_order(tx: &mut Tx, before: &Order, after: &Order) -> ApiResult<bool> {
    let doc = serde_json::to_string(after).map_err(|e| ApiError::Internal(e.into()))?;
    let affected = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE orders SET status = $3, version = $4, courier_id = $5, updated_at = $6, doc = $7 \
             WHERE id = $1 AND version = $2",
        )
        .bind(after.id.uuid())
        .bind(before.version as i64)
        .bind(after.status.as_str())
        .bind(after.version as i64)
        .bind(after.courier_id.map(CourierId::uuid))
        .bind(after.updated_at)
        .bind(doc)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(affected == 1)
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
/// puts packed goods back.
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
            // A reservation the order no longer needs (its line was substituted).
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

pub async fn save_idempotent_response(
    tx: &mut Tx,
    claim: &IdempotencyClaim,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    on_tx!(tx, c => {
        sqlx::query("UPDATE idempotency SET status = $3, content_type = $4, body = $5 WHERE scope = $1 AND key = $2")
            .bind(&claim.scope)
            .bind(&claim.key)
            .bind(i32::from(status))
            .bind(content_type)
            .bind(body)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// Which database the service runs on (for health output).
pub fn backend_name(db: &Db) -> &'static str {
    match db.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// A stock row as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockLevel {
    pub sku: String,
    pub name: String,
    pub dimension: xianlu_domain::Dimension,
    pub on_hand_base: i64,
    pub reserved_base: i64,
}
