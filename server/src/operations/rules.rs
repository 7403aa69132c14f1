//! The rule engine: a sweep over open orders raises an alert when a rule's
//! condition holds (with the merchant's thresholds) and clears it when it no
//! longer does. **One open alert per rule per order** (a unique index, so
//! two processes sweeping at once raise it once). Alerts are records with
//! severity, reason and acknowledgement; raising, clearing and acknowledging
//! each become an event on the order, which reaches the merchant's and
//! customer service's streams (never the customer's).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;
use xianlu_domain::operations::{Alert, AlertRule, Severity};
use xianlu_domain::{CourierId, EventKind, MerchantId, Order, OrderId, OrderNumber, Status};

use super::Operations;
use crate::db::in_list;
use crate::error::{ApiError, ApiResult};
use crate::policy::{self, Action, Scope};
use crate::{on_db, on_db_write};

/// Orders a rule can be about: paid and not yet delivered, or held by an exception.
const OPEN: [Status; 8] = [
    Status::Paid,
    Status::AwaitingPick,
    Status::OutOfStock,
    Status::Picking,
    Status::Packed,
    Status::Delivering,
    Status::DeliveryFailed,
    Status::ExceptionHandling,
];

fn minutes(m: u32) -> TimeDelta {
    TimeDelta::minutes(i64::from(m))
}

fn since_text(d: TimeDelta) -> String {
    format!("{} min", d.num_minutes())
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub raised: usize,
    pub cleared: usize,
}

impl Operations {
    /// Evaluates every rule on every open order.
    pub async fn sweep(&self) -> ApiResult<Sweep> {
        let now = self.clock.now();
        let statuses: Vec<&str> = OPEN.iter().map(|s| s.as_str()).collect();
        let sql = format!("SELECT doc FROM orders WHERE status IN ({})", in_list(statuses.len()));
        let docs: Vec<(String,)> = on_db!(&self.db, pool => {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            for s in &statuses {
                q = q.bind(*s);
            }
            q.fetch_all(pool).await?
        });
        let orders: Vec<Order> = docs.iter().map(|(doc,)| super::decode(doc)).collect::<ApiResult<_>>()?;
        let ids: Vec<Uuid> = orders.iter().map(|o| o.id.uuid()).collect();
        let since = self.entered(&ids).await?;
        let etas = self.open_etas(&ids).await?;
        let couriers: Vec<CourierId> = orders.iter().filter_map(|o| o.courier_id).collect();
        let last_fix = self.last_fixes(&couriers).await?;

        // Every condition that holds now.
        let mut active: HashMap<(OrderId, AlertRule), (String, &Order)> = HashMap::new();
        for order in &orders {
            let settings = self.context(order.merchant_id).await?.settings;
            let r = settings.rules;
            let entered =
                |kinds: &[&str]| kinds.iter().filter_map(|k| since.get(&(order.id.uuid(), *k))).max().copied();
            let mut hold = |rule: AlertRule, reason: String| {
                active.insert((order.id, rule), (reason, order));
            };
            let end = order.requested_window.end;
            if order.status != Status::Paid && now > end + minutes(r.overdue_minutes) {
                hold(AlertRule::Overdue, format!("{} past the promised window", since_text(now - end)));
            }
            match order.status {
                Status::OutOfStock => {
                    if let Some(t) = entered(&["STOCK_CHECKED"])
                        && now - t > minutes(r.short_unresolved_minutes)
                    {
                        hold(AlertRule::ShortUnresolved, format!("short lines open for {}", since_text(now - t)));
                    }
                }
                Status::Picking => {
                    if let Some(t) = entered(&["PICKING_STARTED"])
                        && now - t > minutes(r.picking_minutes)
                    {
                        hold(AlertRule::PickingTooLong, format!("picking for {}", since_text(now - t)));
                    }
                }
                Status::Packed => {
                    if let Some(t) = entered(&["PACKED"])
                        && now - t > minutes(r.not_collected_minutes)
                    {
                        hold(AlertRule::NotCollected, format!("packed {} ago and not collected", since_text(now - t)));
                    }
                }
                Status::Delivering => {
                    let on_road = entered(&["DISPATCHED", "DELIVERY_RESUMED"]);
                    let heard = order.courier_id.and_then(|c| last_fix.get(&c).copied());
                    if let Some(last) = heard.max(on_road)
                        && now - last > minutes(r.no_position_minutes)
                    {
                        hold(AlertRule::NoPosition, format!("no position for {}", since_text(now - last)));
                    }
                    if let Some(eta) = etas.get(&order.id.uuid())
                        && *eta > end
                    {
                        hold(
                            AlertRule::PredictedLate,
                            format!("expected {} after the promised window", since_text(*eta - end)),
                        );
                    }
                }
                Status::ExceptionHandling => hold(AlertRule::ExceptionOpen, exception_reason(order)),
                _ => {}
            }
        }

        let open: Vec<(Uuid, Uuid, String)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id, order_id, rule FROM alerts WHERE cleared_at IS NULL").fetch_all(pool).await?
        });
        let mut outcome = Sweep::default();
        let mut still_open: HashSet<(OrderId, AlertRule)> = HashSet::new();
        for (id, order, rule) in open {
            let Some(rule) = AlertRule::parse(&rule) else { continue };
            let key = (OrderId(order), rule);
            if active.contains_key(&key) {
                still_open.insert(key);
                continue;
            }
            let cleared = on_db_write!(&self.db, pool => {
                sqlx::query("UPDATE alerts SET cleared_at = $1 WHERE id = $2 AND cleared_at IS NULL")
                    .bind(now)
                    .bind(id)
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
            if cleared == 1 {
                outcome.cleared += 1;
                self.service
                    .record_observation(OrderId(order), EventKind::AlertCleared { alert_id: id, rule }, now)
                    .await?;
            }
        }
        for ((order_id, rule), (reason, order)) in active {
            if !still_open.contains(&(order_id, rule)) && self.raise(order, rule, reason, now).await? {
                outcome.raised += 1;
            }
        }
        Ok(outcome)
    }

    /// Raises an alert unless the same rule is already open on the order;
    /// `true` if this call raised it.
    pub(crate) async fn raise(
        &self,
        order: &Order,
        rule: AlertRule,
        reason: String,
        now: DateTime<Utc>,
    ) -> ApiResult<bool> {
        let id = Uuid::now_v7();
        let severity = rule.severity();
        let inserted = on_db_write!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO alerts (id, merchant_id, order_id, order_number, rule, severity, reason, raised_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(order.merchant_id.uuid())
            .bind(order.id.uuid())
            .bind(order.number.as_str())
            .bind(rule.as_str())
            .bind(severity_str(severity))
            .bind(&reason)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if inserted != 1 {
            return Ok(false);
        }
        self.metrics.alerts_raised.with_label_values(&[rule.as_str()]).inc();
        let kind = EventKind::AlertRaised { alert_id: id, rule, severity, reason };
        self.service.record_observation(order.id, kind, now).await?;
        Ok(true)
    }

    /// When each order last entered the stages the rules time.
    async fn entered(&self, ids: &[Uuid]) -> ApiResult<HashMap<(Uuid, &'static str), DateTime<Utc>>> {
        const KINDS: [&str; 5] = ["STOCK_CHECKED", "PICKING_STARTED", "PACKED", "DISPATCHED", "DELIVERY_RESUMED"];
        let rows: Vec<(Uuid, String, DateTime<Utc>)> = self
            .db
            .fetch_in(
                "SELECT order_id, kind, MAX(at) FROM events WHERE order_id IN ({ids}) AND kind IN \
                 ('STOCK_CHECKED', 'PICKING_STARTED', 'PACKED', 'DISPATCHED', 'DELIVERY_RESUMED') GROUP BY order_id, kind",
                ids,
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, kind, at)| KINDS.iter().find(|k| **k == kind).map(|k| ((id, *k), at)))
            .collect())
    }

    async fn open_etas(&self, ids: &[Uuid]) -> ApiResult<HashMap<Uuid, DateTime<Utc>>> {
        let rows: Vec<(Uuid, DateTime<Utc>)> = self
            .db
            .fetch_in("SELECT order_id, eta FROM order_etas WHERE actual_at IS NULL AND order_id IN ({ids})", ids)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// The newest trusted fix of each courier, from the database (what every process sees).
    async fn last_fixes(&self, couriers: &[CourierId]) -> ApiResult<HashMap<CourierId, DateTime<Utc>>> {
        let mut unique: Vec<Uuid> = couriers.iter().map(|c| c.uuid()).collect();
        unique.sort();
        unique.dedup();
        let rows: Vec<(Uuid, DateTime<Utc>)> = self
            .db
            .fetch_in(
                "SELECT courier_id, MAX(at) FROM courier_positions WHERE NOT flagged AND courier_id IN ({ids}) \
                 GROUP BY courier_id",
                &unique,
            )
            .await?;
        Ok(rows.into_iter().map(|(c, at)| (CourierId(c), at)).collect())
    }

    /// A merchant's alerts, newest first.
    pub async fn alerts(
        &self,
        scope: &Scope,
        merchant: MerchantId,
        open_only: bool,
        limit: u32,
    ) -> ApiResult<Vec<Alert>> {
        policy::check_merchant_action(scope, merchant, Action::HandleAlerts)?;
        let sql = format!(
            "SELECT id, merchant_id, order_id, order_number, rule, severity, reason, raised_at, cleared_at, \
             acknowledged_at, acknowledged_by FROM alerts WHERE merchant_id = $1 {} ORDER BY raised_at DESC, id DESC LIMIT $2",
            if open_only { "AND cleared_at IS NULL" } else { "" }
        );
        let rows: Vec<AlertRow> = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(merchant.uuid())
                .bind(i64::from(limit.clamp(1, 500)))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(AlertRow::into_alert).collect()
    }

    /// Acknowledges an alert (once; acknowledging again changes nothing).
    pub async fn acknowledge(&self, scope: &Scope, id: Uuid, by: &str) -> ApiResult<Alert> {
        let alert = self.alert(id).await?.ok_or_else(|| ApiError::NotFound("no such alert".into()))?;
        policy::check_merchant_action(scope, alert.merchant_id, Action::HandleAlerts).map_err(|e| {
            if matches!(e, ApiError::Forbidden(_)) { e } else { ApiError::NotFound("no such alert".into()) }
        })?;
        let now = self.clock.now();
        let changed = on_db_write!(&self.db, pool => {
            sqlx::query("UPDATE alerts SET acknowledged_at = $1, acknowledged_by = $2 WHERE id = $3 AND acknowledged_at IS NULL")
                .bind(now)
                .bind(by)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if changed == 1 {
            let kind = EventKind::AlertAcknowledged { alert_id: id, rule: alert.rule };
            self.service.record_observation(alert.order_id, kind, now).await?;
        }
        self.alert(id).await?.ok_or_else(|| ApiError::NotFound("no such alert".into()))
    }

    async fn alert(&self, id: Uuid) -> ApiResult<Option<Alert>> {
        let row: Option<AlertRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, merchant_id, order_id, order_number, rule, severity, reason, raised_at, cleared_at, \
                 acknowledged_at, acknowledged_by FROM alerts WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(AlertRow::into_alert).transpose()
    }
}

/// Why an exception alert is open, in the order's own terms.
pub(crate) fn exception_reason(order: &Order) -> String {
    let kind = order.exception.as_ref().map(|e| serde_json::to_value(e.kind).unwrap_or_default());
    let kind = kind.as_ref().and_then(|k| k.as_str()).unwrap_or("EXCEPTION").to_owned();
    format!("{kind} reported, not resolved")
}

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Low => "LOW",
        Severity::Medium => "MEDIUM",
        Severity::High => "HIGH",
    }
}

#[derive(sqlx::FromRow)]
struct AlertRow {
    id: Uuid,
    merchant_id: Uuid,
    order_id: Uuid,
    order_number: String,
    rule: String,
    severity: String,
    reason: String,
    raised_at: DateTime<Utc>,
    cleared_at: Option<DateTime<Utc>>,
    acknowledged_at: Option<DateTime<Utc>>,
    acknowledged_by: Option<String>,
}

impl AlertRow {
    fn into_alert(self) -> ApiResult<Alert> {
        let bad = |what: &str| ApiError::Internal(anyhow::anyhow!("stored alert {} has a bad {what}", self.id));
        let rule = AlertRule::parse(&self.rule).ok_or_else(|| bad("rule"))?;
        let severity = match self.severity.as_str() {
            "LOW" => Severity::Low,
            "MEDIUM" => Severity::Medium,
            "HIGH" => Severity::High,
            _ => return Err(bad("severity")),
        };
        let order_number = OrderNumber::parse(&self.order_number).ok_or_else(|| bad("order number"))?;
        Ok(Alert {
            id: self.id,
            merchant_id: MerchantId(self.merchant_id),
            order_id: OrderId(self.order_id),
            order_number,
            rule,
            severity,
            reason: self.reason,
            raised_at: self.raised_at,
            cleared_at: self.cleared_at,
            acknowledged_at: self.acknowledged_at,
            acknowledged_by: self.acknowledged_by,
        })
    }
}
