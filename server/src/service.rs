//! The order service: the one place that changes orders.
//!
//! **Every state change is one transaction**: load the order, run the pure
//! state machine, apply its stock effects, update the order with a version
//! check (compare-and-swap), take the next stream sequences from the counter
//! row, append the events and the audit entry, save the idempotent response —
//! then commit and wake the feed. Transports (REST, WebSocket) only convert.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::AssertSqlSafe;
use uuid::Uuid;
use xianlu_domain::operations::EtaView;
use xianlu_domain::wire::{
    Actor, ContactInfo, CustomerSummary, DriverInfo, Item, LatLng, OrderPage, OrderView, StreamEvent,
};
use xianlu_domain::{
    Command, EventKind, MerchantId, Order, OrderDraft, OrderId, PaymentMethod, PaymentTerms, ShortageResolution, Status,
};

use crate::cache::OrderCache;
use crate::clock::Clock;
use crate::db::{Backend, Db};
use crate::error::{ApiError, ApiResult};
use crate::feed::{EventRow, Feed};
use crate::metrics::Metrics;
use crate::on_db;
use crate::policy::{self, Scope};
use crate::writer::{Change, Job, MerchantInfo};
use tokio::sync::{mpsc, oneshot};

/// Who is asking, and under which request.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub actor: Actor,
    /// What the caller may reach (see `policy`).
    pub scope: Scope,
    pub request_id: String,
    pub idempotency: Option<IdempotencyClaim>,
}

impl RequestCtx {
    /// An audit entry for a change this caller made.
    pub fn audit_entry(
        &self,
        merchant: Uuid,
        at: DateTime<Utc>,
        action: &str,
        subject: String,
        after: serde_json::Value,
    ) -> crate::audit::AuditEntry {
        crate::audit::AuditEntry {
            merchant_id: merchant,
            at,
            actor_kind: self.actor.kind.clone(),
            actor_id: self.actor.id.clone(),
            request_id: self.request_id.clone(),
            action: action.to_owned(),
            subject_id: subject,
            before: serde_json::Value::Null,
            after,
        }
    }

    pub fn system(request_id: impl Into<String>) -> Self {
        RequestCtx {
            actor: Actor { kind: "system".into(), id: "xianlu-server".into() },
            scope: Scope::Everything,
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
}

#[derive(Clone)]
pub struct OrderService {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub feed: Arc<Feed>,
    pub cache: Arc<OrderCache>,
    pub metrics: Metrics,
    pub anchor_every: i64,
    pub writer: mpsc::Sender<Job>,
    pub vault: Arc<crate::vault::Vault>,
    /// How phone numbers are shown to those who may not see them in full.
    pub phones: Arc<dyn PhoneDisplay>,
}

/// How a phone number is shown when the viewer may not have it in full. Real
/// deployments hand out a telephony provider's privacy (virtual) number here.
pub trait PhoneDisplay: Send + Sync {
    fn show(&self, phone: &str, how: policy::Disclose) -> String;
}

/// Masks to the first three and last four digits.
#[derive(Debug, Default)]
pub struct MaskedPhones;

impl PhoneDisplay for MaskedPhones {
    fn show(&self, phone: &str, how: policy::Disclose) -> String {
        match how {
            policy::Disclose::Full => phone.to_owned(),
            policy::Disclose::Masked | policy::Disclose::Nothing => crate::vault::mask_phone(phone),
        }
    }
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

    async fn submit(&self, ctx: &RequestCtx, change: Change) -> ApiResult<Committed> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Job { change, ctx: ctx.clone(), reply })
            .await
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("the order writer has stopped")))?;
        answer.await.map_err(|_| ApiError::Internal(anyhow::anyhow!("the order writer dropped a change")))?
    }

    /// Checks what the draft refers to, then hands it to the writer.
    pub async fn create_order(&self, ctx: &RequestCtx, draft: OrderDraft) -> ApiResult<Committed> {
        policy::check_create(&ctx.scope, &draft)?;
        let merchant = self.merchant(draft.merchant_id).await?;
        let warehouse: Option<(Uuid,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT merchant_id FROM warehouses WHERE id = $1")
                .bind(draft.warehouse_id.uuid())
                .fetch_optional(pool)
                .await?
        });
        let (warehouse_merchant,) =
            warehouse.ok_or_else(|| ApiError::unprocessable("unknown_warehouse", "no such warehouse"))?;
        if warehouse_merchant != merchant.id {
            return Err(ApiError::unprocessable("unknown_warehouse", "the warehouse belongs to another merchant"));
        }
        let customer: Option<(Uuid, String)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT merchant_id, payment_terms FROM customers WHERE id = $1")
                .bind(draft.customer_id.uuid())
                .fetch_optional(pool)
                .await?
        });
        let (customer_merchant, terms) =
            customer.ok_or_else(|| ApiError::unprocessable("unknown_customer", "no such customer"))?;
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
            let owner: Option<(Uuid,)> = on_db!(&self.db, pool => {
                sqlx::query_as("SELECT customer_id FROM contacts WHERE id = $1")
                    .bind(contact.uuid())
                    .fetch_optional(pool)
                    .await?
            });
            if owner.map(|(c,)| c) != Some(draft.customer_id.uuid()) {
                return Err(ApiError::unprocessable("unknown_contact", "the contact is not one of the customer's"));
            }
        }
        self.submit(ctx, Change::Create { draft: Box::new(draft), merchant }).await
    }

    async fn merchant(&self, id: MerchantId) -> ApiResult<MerchantInfo> {
        let row: Option<(String, String)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT order_prefix, time_zone FROM merchants WHERE id = $1")
                .bind(id.uuid())
                .fetch_optional(pool)
                .await?
        });
        let (order_prefix, tz) = row.ok_or_else(|| ApiError::unprocessable("unknown_merchant", "no such merchant"))?;
        let tz =
            tz.parse().map_err(|_| ApiError::Internal(anyhow::anyhow!("merchant {id} has a bad time zone {tz}")))?;
        Ok(MerchantInfo { id: id.uuid(), order_prefix, tz })
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
        // A sign-off names its evidence, which must have been uploaded first.
        let evidence = match command {
            Command::Sign { signature_sha256, .. } => Some(signature_sha256),
            Command::DropOffUnattended { photo_sha256 } => Some(photo_sha256),
            _ => None,
        };
        if let Some(sha256) = evidence {
            self.view_for(&ctx.scope, id).await?;
            if !self.has_evidence(id, sha256).await? {
                return Err(ApiError::unprocessable(
                    "evidence_missing",
                    format!("upload the evidence {sha256} to this order before signing with it"),
                ));
            }
        }
        self.submit(ctx, Change::Execute { id, expected_version, command: Box::new(command.clone()) }).await
    }

    /// Records what the server observed on the road (a geofence arrival, a
    /// position, an ETA, an alert) as an event that keeps the order's status
    /// and version. `false` when it no longer fits the order (it was signed
    /// meanwhile, say).
    pub async fn record_observation(
        &self,
        id: OrderId,
        kind: xianlu_domain::EventKind,
        at: DateTime<Utc>,
    ) -> ApiResult<bool> {
        self.record_observation_for(id, kind, at, None).await
    }

    /// As [`Self::record_observation`], on `courier`'s stream instead of the
    /// order's courier's (a hand-over is news to the courier the goods left).
    pub async fn record_observation_for(
        &self,
        id: OrderId,
        kind: xianlu_domain::EventKind,
        at: DateTime<Utc>,
        route_to: Option<xianlu_domain::CourierId>,
    ) -> ApiResult<bool> {
        let ctx = RequestCtx::system(String::new());
        match self.submit(&ctx, Change::Observe { id, kind: Box::new(kind), at, route_to }).await {
            Ok(_) => Ok(true),
            Err(ApiError::Rejected(_) | ApiError::NotFound(_)) => Ok(false),
            Err(other) => Err(other),
        }
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

    /// The order's view, if the caller may see it (404 otherwise).
    pub async fn view_for(&self, scope: &Scope, id: OrderId) -> ApiResult<Arc<OrderView>> {
        let view = self.view(id).await?;
        policy::check_read(scope, &view.order)?;
        let disclosure = policy::phones_for(scope, &view.order);
        let internal = policy::sees_internal(scope);
        if disclosure == policy::PhoneDisclosure::FULL && internal {
            return Ok(view);
        }
        let mut shown = view.as_ref().clone();
        if !internal {
            shown.timeline.retain(|e| !e.event.kind.is_internal());
        }
        if let Some(driver) = shown.driver_info.as_mut() {
            driver.phone = self.phones.show(&driver.phone, disclosure.courier);
        }
        shown.contact = match (shown.contact.take(), disclosure.contact) {
            (_, policy::Disclose::Nothing) => None,
            (Some(mut contact), how) => {
                contact.phone = self.phones.show(&contact.phone, how);
                Some(contact)
            }
            (None, _) => None,
        };
        Ok(Arc::new(shown))
    }

    /// The merchant a courier works for, if the courier exists.
    pub async fn courier_merchant(&self, courier: xianlu_domain::CourierId) -> ApiResult<Option<MerchantId>> {
        let row: Option<(Uuid,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT merchant_id FROM couriers WHERE id = $1").bind(courier.uuid()).fetch_optional(pool).await?
        });
        Ok(row.map(|(m,)| MerchantId(m)))
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
                let person = self.vault.load(&self.db, courier.uuid()).await.map_err(ApiError::Internal)?;
                let (name, phone) = person.map(|p| (p.name, p.phone)).unwrap_or_default();
                Some(DriverInfo { id: courier, name, phone, location: None })
            }
            None => None,
        };
        let contact = match order.contact_id {
            Some(contact) => self
                .vault
                .load(&self.db, contact.uuid())
                .await
                .map_err(ApiError::Internal)?
                .map(|p| ContactInfo { id: contact, name: p.name, phone: p.phone }),
            None => None,
        };
        let mut timeline = self.timeline(id).await?;
        // Positions and estimates are live updates: the latest of each is shown, not the history.
        let mut location = None;
        let mut eta_window = None;
        for event in &timeline {
            match &event.event.kind {
                EventKind::CourierPosition { position, .. } => location = Some(*position),
                EventKind::EtaUpdated { eta, window, stops_before, .. } => {
                    eta_window =
                        Some(EtaView { eta: *eta, window: *window, stops_before: *stops_before, computed_at: event.at })
                }
                _ => {}
            }
        }
        timeline.retain(|e| !e.event.kind.is_live_update());
        let mut driver_info = driver_info;
        if let Some(driver) = driver_info.as_mut() {
            driver.location = location;
        }
        // An estimate ends with the delivery.
        if !matches!(order.status, Status::Delivering) {
            eta_window = None;
        }
        Ok(OrderView {
            contact,
            order_id: order.number.clone(),
            status: order.status,
            driver_info,
            eta: eta_window.map(|e| e.eta),
            eta_window,
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

    /// Lists what the caller may see: a role's own merchant, courier or
    /// customer is forced into the filter.
    pub async fn list_for(&self, scope: &Scope, filter: &OrderFilter) -> ApiResult<OrderPage> {
        let mut filter = filter.clone();
        let empty = || Ok(OrderPage { items: Vec::new(), next_cursor: None, customers: Vec::new() });
        let mut couriers = Vec::new();
        if let Some(fixed) = policy::list_scope(scope)? {
            if let Some(m) = fixed.merchant {
                if filter.merchant_id.is_some_and(|asked| asked != m.uuid()) {
                    return empty();
                }
                filter.merchant_id = Some(m.uuid());
            }
            if !fixed.couriers.is_empty() {
                couriers = fixed.couriers.iter().map(|c| c.uuid()).collect();
                if let Some(asked) = filter.courier_id {
                    if !couriers.contains(&asked) {
                        return empty();
                    }
                    couriers = vec![asked];
                }
            }
            if let Some(c) = fixed.customer {
                if filter.customer_id.is_some_and(|asked| asked != c.uuid()) {
                    return empty();
                }
                filter.customer_id = Some(c.uuid());
            }
        }
        let mut page = if couriers.len() > 1 {
            // A courier driving for several merchants: merge their lists, newest first.
            let limit = filter.limit.unwrap_or(50).clamp(1, 200) as usize;
            let mut items = Vec::new();
            for courier in &couriers {
                let mut one = filter.clone();
                one.courier_id = Some(*courier);
                items.extend(self.list(&one).await?.items);
            }
            items.sort_by_key(|o| std::cmp::Reverse(o.id));
            let next_cursor = (items.len() > limit).then(|| items[limit - 1].id.to_string());
            items.truncate(limit);
            OrderPage { items, next_cursor, customers: Vec::new() }
        } else {
            if let Some(only) = couriers.first() {
                filter.courier_id = Some(*only);
            }
            self.list(&filter).await?
        };
        // Finer rules (a clerk's warehouse and picking stage) on what is left.
        page.items.retain(|order| policy::may_see(scope, order));
        page.customers = self.customer_summaries(&page.items).await?;
        Ok(page)
    }

    /// The customers of these orders, each once.
    async fn customer_summaries(&self, orders: &[Order]) -> ApiResult<Vec<CustomerSummary>> {
        let mut ids: Vec<_> = orders.iter().map(|o| o.customer_id).collect();
        ids.sort();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<(String, String, f64, f64)> = on_db!(&self.db, pool => {
                sqlx::query_as("SELECT business_name, address, lat, lng FROM customers WHERE id = $1")
                    .bind(id.uuid())
                    .fetch_optional(pool)
                    .await?
            });
            if let Some((business_name, address, lat, lng)) = row {
                out.push(CustomerSummary { id, business_name, address, location: LatLng { lat, lng } });
            }
        }
        Ok(out)
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
        Ok(OrderPage { items, next_cursor, customers: Vec::new() })
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

/// Which database the service runs on (for health output).
pub fn backend_name(db: &Db) -> &'static str {
    match db.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

pub use xianlu_domain::wire::StockLevel;
