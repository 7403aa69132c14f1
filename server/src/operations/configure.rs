//! What merchant staff set and read about courier operations: thresholds,
//! warehouse fences, customers' quiet hours, pins and route locks, ETA
//! accuracy and where the couriers are. Each change is checked by policy,
//! stored and audited here; the HTTP layer only converts.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

use xianlu_domain::operations::{
    CourierDuty, CourierLocation, CourierStatus, DutyChange, EtaAccuracy, OperationsSettings, QuietHours,
};
use xianlu_domain::wire::LatLng;
use xianlu_domain::{CourierId, CustomerId, MerchantId, Order, OrderId, WarehouseId};
use xianlu_roads::fence::{FenceSettings, Geofences, Shape};

use super::Operations;
use crate::error::{ApiError, ApiResult};
use crate::on_db;
use crate::policy::{self, Action, Scope};
use crate::service::RequestCtx;

/// Points a drawn fence may have at most.
const MAX_FENCE_POINTS: usize = 500;

/// First estimate, its window's start and end, and the arrival.
type Arrival = (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);

impl Operations {
    /// The merchant's thresholds, for its office.
    pub async fn settings_for(&self, scope: &Scope, merchant: MerchantId) -> ApiResult<OperationsSettings> {
        policy::check_merchant_action(scope, merchant, Action::HandleAlerts)?;
        self.settings(merchant).await
    }

    /// Replaces the merchant's thresholds.
    pub async fn set_settings(
        &self,
        ctx: &RequestCtx,
        merchant: MerchantId,
        settings: OperationsSettings,
    ) -> ApiResult<()> {
        policy::check_merchant_action(&ctx.scope, merchant, Action::ConfigureOperations)?;
        settings.check().map_err(|e| ApiError::unprocessable("invalid_settings", e.to_string()))?;
        self.settings(merchant).await?; // 404 for a merchant that does not exist
        let json = serde_json::to_string(&settings).map_err(|e| ApiError::Internal(e.into()))?;
        let mut tx = self.db.begin().await?;
        crate::on_tx!(&mut tx, c => {
            sqlx::query(
                "INSERT INTO merchant_operations (merchant_id, settings, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (merchant_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
            )
            .bind(merchant.uuid())
            .bind(&json)
            .bind(self.clock.now())
            .execute(&mut *c)
            .await?;
        });
        let after = serde_json::to_value(settings).unwrap_or_default();
        self.service
            .audit_admin(&mut tx, ctx, merchant.uuid(), "SET_OPERATIONS_SETTINGS", merchant.to_string(), after)
            .await?;
        tx.commit().await?;
        self.invalidate(merchant);
        Ok(())
    }

    /// Draws a warehouse's yard (`None`: a circle of the merchant's radius).
    pub async fn set_warehouse_fence(
        &self,
        ctx: &RequestCtx,
        warehouse: WarehouseId,
        polygon: Option<&[LatLng]>,
    ) -> ApiResult<()> {
        let merchant = self.service.warehouse_merchant(warehouse).await?;
        policy::check_merchant_action(&ctx.scope, merchant, Action::ConfigureOperations)?;
        if let Some(ring) = polygon {
            if ring.len() > MAX_FENCE_POINTS {
                return Err(ApiError::unprocessable(
                    "invalid_fence",
                    format!("a fence has at most {MAX_FENCE_POINTS} points"),
                ));
            }
            // The fences' own check: three or more WGS-84 points, not crossing itself.
            let mut probe: Geofences<(), ()> = Geofences::new(FenceSettings::default());
            probe
                .add((), Shape::Polygon(ring.to_vec()))
                .map_err(|e| ApiError::unprocessable("invalid_fence", e.to_string()))?;
        }
        let json = polygon.map(|p| serde_json::to_string(p).unwrap_or_default());
        let mut tx = self.db.begin().await?;
        crate::on_tx!(&mut tx, c => {
            sqlx::query("UPDATE warehouses SET fence = $1 WHERE id = $2").bind(&json).bind(warehouse.uuid()).execute(&mut *c).await?;
        });
        let after = serde_json::json!({"polygon": polygon});
        self.service
            .audit_admin(&mut tx, ctx, merchant.uuid(), "SET_WAREHOUSE_FENCE", warehouse.to_string(), after)
            .await?;
        tx.commit().await?;
        self.invalidate(merchant);
        Ok(())
    }

    /// Sets a customer's quiet hours (the customer themself, or the merchant's staff).
    pub async fn set_quiet_hours(
        &self,
        ctx: &RequestCtx,
        customer: CustomerId,
        quiet: Option<QuietHours>,
    ) -> ApiResult<()> {
        let (merchant, _, _) = self.service.customer_merchant(customer).await?;
        let own = matches!(&ctx.scope, Scope::User(links) if links.customer == Some(customer));
        if !own {
            policy::check_merchant_action(&ctx.scope, merchant, Action::ManageCustomers)?;
        }
        if quiet.is_some_and(|q| q.from == q.to) {
            return Err(ApiError::unprocessable(
                "invalid_quiet_hours",
                "quiet hours must not start and end at the same time",
            ));
        }
        let json = quiet.map(|q| serde_json::to_string(&q).unwrap_or_default());
        let mut tx = self.db.begin().await?;
        crate::on_tx!(&mut tx, c => {
            sqlx::query("UPDATE customers SET quiet_hours = $1 WHERE id = $2").bind(&json).bind(customer.uuid()).execute(&mut *c).await?;
        });
        let after = serde_json::json!({"quietHours": quiet});
        self.service.audit_admin(&mut tx, ctx, merchant.uuid(), "SET_QUIET_HOURS", customer.to_string(), after).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Pins an order to a courier (or releases it): every plan respects it.
    pub async fn pin_order(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        order: OrderId,
        courier: Option<CourierId>,
    ) -> ApiResult<()> {
        let view = self.service.view(order).await?;
        policy::check_order_action(&ctx.scope, &view.order, Action::Assign)?;
        if let Some(courier) = courier
            && self.service.courier_merchant(courier).await? != Some(view.order.merchant_id)
        {
            return Err(ApiError::unprocessable(
                "unknown_courier",
                "the courier does not work for this order's merchant",
            ));
        }
        let mut tx = self.db.begin().await?;
        crate::on_tx!(&mut tx, c => {
            sqlx::query("DELETE FROM order_pins WHERE order_id = $1").bind(order.uuid()).execute(&mut *c).await?;
        });
        if let Some(courier) = courier {
            crate::on_tx!(&mut tx, c => {
                sqlx::query("INSERT INTO order_pins (order_id, courier_id, pinned_by, pinned_at) VALUES ($1, $2, $3, $4)")
                    .bind(order.uuid())
                    .bind(courier.uuid())
                    .bind(&ctx.actor.id)
                    .bind(self.clock.now())
                    .execute(&mut *c)
                    .await?;
            });
        }
        let after = serde_json::json!({"courierId": courier});
        self.service
            .audit_admin(&mut tx, ctx, view.order.merchant_id.uuid(), "PIN_ORDER", order.to_string(), after)
            .await?;
        tx.commit().await?;
        // A merchant that plans by itself applies the pin at once.
        self.clone().replan_soon(view.order.merchant_id).await;
        Ok(())
    }

    /// Locks a courier's route as it is (or unlocks it): plans leave it alone.
    pub async fn lock_route(self: &Arc<Self>, ctx: &RequestCtx, courier: CourierId, locked: bool) -> ApiResult<()> {
        let merchant = self
            .service
            .courier_merchant(courier)
            .await?
            .ok_or_else(|| ApiError::NotFound("no such courier".into()))?;
        policy::check_merchant_action(&ctx.scope, merchant, Action::Assign)?;
        let mut tx = self.db.begin().await?;
        crate::on_tx!(&mut tx, c => {
            sqlx::query("DELETE FROM route_locks WHERE courier_id = $1").bind(courier.uuid()).execute(&mut *c).await?;
        });
        if locked {
            crate::on_tx!(&mut tx, c => {
                sqlx::query("INSERT INTO route_locks (courier_id, locked_by, locked_at) VALUES ($1, $2, $3)")
                    .bind(courier.uuid())
                    .bind(&ctx.actor.id)
                    .bind(self.clock.now())
                    .execute(&mut *c)
                    .await?;
            });
        }
        let after = serde_json::json!({"locked": locked});
        self.service.audit_admin(&mut tx, ctx, merchant.uuid(), "LOCK_ROUTE", courier.to_string(), after).await?;
        tx.commit().await?;
        if !locked {
            // Unlocked: the route may take new work again.
            self.clone().replan_soon(merchant).await;
        }
        Ok(())
    }

    /// How good the ETAs were: the first estimate made on the road against
    /// the arrival, for arrivals in `[from, to)`.
    pub async fn eta_accuracy(
        &self,
        scope: &Scope,
        merchant: MerchantId,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> ApiResult<EtaAccuracy> {
        policy::check_merchant_action(scope, merchant, Action::HandleAlerts)?;
        // Bounds both databases can hold.
        let from = from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let to = to.or_else(|| DateTime::from_timestamp(253_402_300_799, 0)).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let rows: Vec<Arrival> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT first_eta, first_window_start, first_window_end, actual_at FROM order_etas \
                 WHERE merchant_id = $1 AND actual_at IS NOT NULL AND actual_at >= $2 AND actual_at < $3",
            )
            .bind(merchant.uuid())
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?
        });
        Ok(accuracy(&rows))
    }

    /// The latest trusted position of each of the merchant's couriers.
    pub async fn courier_locations(&self, scope: &Scope, merchant: MerchantId) -> ApiResult<Vec<CourierLocation>> {
        policy::check_merchant_action(scope, merchant, Action::TrackCouriers)?;
        let couriers: Vec<(Uuid,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id FROM couriers WHERE merchant_id = $1").bind(merchant.uuid()).fetch_all(pool).await?
        });
        let ids: Vec<CourierId> = couriers.into_iter().map(|(c,)| CourierId(c)).collect();
        Ok(self.latest(&ids))
    }

    /// The merchant's couriers for the office's map: van, duty, position,
    /// load aboard, the planned stops ahead and whether the route is locked.
    pub async fn couriers(&self, scope: &Scope, merchant: MerchantId) -> ApiResult<Vec<CourierStatus>> {
        policy::check_merchant_action(scope, merchant, Action::TrackCouriers)?;
        type Row = (Uuid, String, bool, i64, bool, Option<DateTime<Utc>>);
        let rows: Vec<Row> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, vehicle, refrigerated, capacity_kg, on_duty, shift_ends_at FROM couriers \
                 WHERE merchant_id = $1 ORDER BY id",
            )
            .bind(merchant.uuid())
            .fetch_all(pool)
            .await?
        });
        let locked = self.locked_routes(merchant).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, vehicle, refrigerated, capacity_kg, on_duty, shift_ends_at) in rows {
            let courier = CourierId(id);
            let name = self.service.vault.load(&self.db, id).await.map_err(ApiError::Internal)?.map(|p| p.name);
            let docs: Vec<(String,)> = on_db!(&self.db, pool => {
                sqlx::query_as("SELECT doc FROM orders WHERE courier_id = $1 AND status = 'DELIVERING'")
                    .bind(id)
                    .fetch_all(pool)
                    .await?
            });
            let aboard: Vec<Order> = docs.iter().filter_map(|(doc,)| serde_json::from_str(doc).ok()).collect();
            out.push(CourierStatus {
                courier_id: courier,
                name: name.unwrap_or_default(),
                vehicle,
                refrigerated,
                capacity_kg,
                on_duty,
                shift_ends_at,
                position: self.latest(&[courier]).into_iter().next(),
                aboard: aboard.len() as u32,
                load_g: aboard.iter().map(Order::shipping_weight_g).sum(),
                stops: self.route(courier).await?.map(|r| r.stops).unwrap_or_default(),
                locked: locked.contains(&id),
            });
        }
        Ok(out)
    }

    /// Whether the courier is on duty, for the courier and their merchant's office.
    pub async fn duty_for(&self, scope: &Scope, courier: CourierId) -> ApiResult<CourierDuty> {
        let merchant = self.courier_office(courier).await?;
        policy::check_courier_positions(scope, merchant, courier)?;
        self.duty(courier).await
    }

    pub async fn duty(&self, courier: CourierId) -> ApiResult<CourierDuty> {
        type Row = (bool, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
        let row: Option<Row> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT on_duty, duty_since, shift_ends_at FROM couriers WHERE id = $1")
                .bind(courier.uuid())
                .fetch_optional(pool)
                .await?
        });
        let (on_duty, since, shift_ends_at) = row.ok_or_else(|| ApiError::NotFound("no such courier".into()))?;
        Ok(CourierDuty { courier_id: courier, on_duty, since, shift_ends_at })
    }

    /// The courier goes on duty (until the shift's end, if given) or off duty;
    /// the courier themselves or their merchant's dispatchers. Off duty with
    /// goods aboard is refused: they are delivered or handed over first. The
    /// merchant's plan follows (if it plans by itself).
    pub async fn set_duty(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        courier: CourierId,
        change: DutyChange,
    ) -> ApiResult<CourierDuty> {
        let merchant = self.courier_office(courier).await?;
        if !policy::is_courier_self(&ctx.scope, courier) {
            policy::check_merchant_action(&ctx.scope, merchant, Action::Assign)?;
        }
        let now = self.clock.now();
        change.check(now).map_err(|e| ApiError::unprocessable("invalid_duty", e))?;
        let before = self.duty(courier).await?;
        if before.on_duty == change.on_duty && before.shift_ends_at == change.shift_ends_at {
            return Ok(before); // already so
        }
        if !change.on_duty {
            let aboard: Vec<(Uuid,)> = on_db!(&self.db, pool => {
                sqlx::query_as("SELECT id FROM orders WHERE courier_id = $1 AND status = 'DELIVERING' LIMIT 1")
                    .bind(courier.uuid())
                    .fetch_all(pool)
                    .await?
            });
            if !aboard.is_empty() {
                return Err(ApiError::conflict(
                    "goods_aboard",
                    "orders are still aboard: deliver them, or report the vehicle's exception so they are handed over",
                ));
            }
        }
        let since = if before.on_duty == change.on_duty { before.since } else { Some(now) };
        let mut tx = self.db.begin().await?;
        crate::on_tx!(&mut tx, c => {
            sqlx::query("UPDATE couriers SET on_duty = $1, duty_since = $2, shift_ends_at = $3 WHERE id = $4")
                .bind(change.on_duty)
                .bind(since)
                .bind(change.shift_ends_at)
                .bind(courier.uuid())
                .execute(&mut *c)
                .await?;
        });
        let after = serde_json::json!({"onDuty": change.on_duty, "shiftEndsAt": change.shift_ends_at});
        self.service.audit_admin(&mut tx, ctx, merchant.uuid(), "SET_DUTY", courier.to_string(), after).await?;
        tx.commit().await?;
        // Work changes hands: the couriers left, or one more to give it to.
        self.clone().replan_soon(merchant).await;
        Ok(CourierDuty { courier_id: courier, on_duty: change.on_duty, since, shift_ends_at: change.shift_ends_at })
    }

    async fn courier_office(&self, courier: CourierId) -> ApiResult<MerchantId> {
        self.service.courier_merchant(courier).await?.ok_or_else(|| ApiError::NotFound("no such courier".into()))
    }
}

fn accuracy(rows: &[Arrival]) -> EtaAccuracy {
    let mut errors: Vec<f64> =
        rows.iter().map(|(eta, _, _, actual)| (*actual - *eta).num_milliseconds().abs() as f64 / 1000.0).collect();
    errors.sort_by(f64::total_cmp);
    let within = rows.iter().filter(|(_, start, end, actual)| start <= actual && actual <= end).count();
    let n = errors.len();
    EtaAccuracy {
        stops: n as u64,
        mae_seconds: if n == 0 { 0.0 } else { errors.iter().sum::<f64>() / n as f64 },
        p90_seconds: if n == 0 { 0.0 } else { errors[((n - 1) as f64 * 0.9).round() as usize] },
        within_window: if n == 0 { 0.0 } else { within as f64 / n as f64 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn accuracy_is_mean_absolute_error_with_p90_and_window_hits() {
        let t = |m: u32| Utc.with_ymd_and_hms(2026, 3, 2, 10, m, 0).single().unwrap_or_default();
        // (first eta, window, actual): errors 0, 2, 4, 6 … 18 minutes
        let rows: Vec<_> = (0..10).map(|i| (t(0), t(0), t(10), t(2 * i))).collect();
        let a = accuracy(&rows);
        assert_eq!(a.stops, 10);
        assert!((a.mae_seconds - 9.0 * 60.0).abs() < 1e-6, "{a:?}");
        assert!((a.p90_seconds - 16.0 * 60.0).abs() < 1e-6, "{a:?}");
        assert!((a.within_window - 0.6).abs() < 1e-9, "{a:?}");
        assert_eq!(accuracy(&[]).stops, 0);
    }
}
