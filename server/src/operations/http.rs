//! REST endpoints of courier operations: a merchant's thresholds, fences and
//! quiet hours, alerts and their acknowledgement, ETA accuracy and where the
//! couriers are.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xianlu_domain::operations::{Alert, CourierLocation, EtaAccuracy, OperationsSettings, QuietHours};
use xianlu_domain::wire::{LatLng, Problem};
use xianlu_domain::{CourierId, CustomerId, MerchantId, WarehouseId};
use xianlu_roads::fence::{FenceSettings, Geofences, Shape};

use crate::AppState;
use crate::api::{ApiJson, ApiQuery, Ctx, parse_id};
use crate::error::{ApiError, ApiResult};
use crate::policy::{self, Action};
use crate::{on_db, on_db_write};

/// A merchant's thresholds for fences, pushes, ETAs, notices and alert rules.
#[utoipa::path(get, path = "/merchants/{id}/operations", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, body = OperationsSettings), (status = 404, body = Problem)))]
pub async fn get_settings(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<OperationsSettings>> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    policy::check_merchant_action(&ctx.scope, merchant, Action::HandleAlerts)?;
    Ok(axum::Json(state.ops.settings(merchant).await?))
}

/// Replaces the merchant's thresholds; unknown or out-of-range values are refused.
#[utoipa::path(put, path = "/merchants/{id}/operations", tag = "operations", params(("id" = String, Path)),
    request_body = OperationsSettings,
    responses((status = 200, body = OperationsSettings), (status = 422, body = Problem), (status = 404, body = Problem)))]
pub async fn put_settings(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(settings): ApiJson<OperationsSettings>,
) -> ApiResult<axum::Json<OperationsSettings>> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    policy::check_merchant_action(&ctx.scope, merchant, Action::ConfigureOperations)?;
    settings.check().map_err(|e| ApiError::unprocessable("invalid_settings", e.to_string()))?;
    state.ops.settings(merchant).await?; // 404 for a merchant that does not exist
    let json = serde_json::to_string(&settings).map_err(|e| ApiError::Internal(e.into()))?;
    let now = state.service.clock.now();
    let mut tx = state.db.begin().await?;
    crate::on_tx!(&mut tx, c => {
        sqlx::query(
            "INSERT INTO merchant_operations (merchant_id, settings, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (merchant_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
        )
        .bind(merchant.uuid())
        .bind(&json)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    let entry = ctx.audit_entry(
        merchant.uuid(),
        now,
        "SET_OPERATIONS_SETTINGS",
        merchant.to_string(),
        serde_json::to_value(settings).unwrap_or_default(),
    );
    crate::audit::append_all(&mut tx, &[entry], state.config.audit_anchor_every).await?;
    tx.commit().await?;
    state.ops.invalidate(merchant);
    Ok(axum::Json(settings))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarehouseFence {
    /// The yard as a ring of WGS-84 points (not crossing itself); `null` for a
    /// circle of the merchant's warehouse radius around the warehouse.
    pub polygon: Option<Vec<LatLng>>,
}

/// Draws a warehouse's fence.
#[utoipa::path(put, path = "/warehouses/{id}/fence", tag = "operations", params(("id" = String, Path)),
    request_body = WarehouseFence,
    responses((status = 200, body = WarehouseFence), (status = 422, body = Problem), (status = 404, body = Problem)))]
pub async fn put_warehouse_fence(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(fence): ApiJson<WarehouseFence>,
) -> ApiResult<axum::Json<WarehouseFence>> {
    let warehouse: WarehouseId = parse_id(&id, "warehouse")?;
    let row: Option<(Uuid,)> = on_db!(&state.db, pool => {
        sqlx::query_as("SELECT merchant_id FROM warehouses WHERE id = $1").bind(warehouse.uuid()).fetch_optional(pool).await?
    });
    let merchant = MerchantId(row.ok_or_else(|| ApiError::NotFound(format!("no warehouse {id}")))?.0);
    policy::check_merchant_action(&ctx.scope, merchant, Action::ConfigureOperations)?;
    if let Some(ring) = &fence.polygon {
        if ring.len() > 500 {
            return Err(ApiError::unprocessable("invalid_fence", "a fence has at most 500 points"));
        }
        let mut probe: Geofences<(), ()> = Geofences::new(FenceSettings::default());
        probe
            .add((), Shape::Polygon(ring.clone()))
            .map_err(|e| ApiError::unprocessable("invalid_fence", e.to_string()))?;
    }
    let json = fence.polygon.as_ref().map(|p| serde_json::to_string(p).unwrap_or_default());
    on_db_write!(&state.db, pool => {
        sqlx::query("UPDATE warehouses SET fence = $1 WHERE id = $2").bind(json).bind(warehouse.uuid()).execute(pool).await?;
    });
    state.ops.invalidate(merchant);
    Ok(axum::Json(fence))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomerQuietHours {
    /// No notices in these hours (merchant's time zone); `null` for none.
    pub quiet_hours: Option<QuietHours>,
}

/// Sets a customer's quiet hours.
#[utoipa::path(put, path = "/customers/{id}/quiet-hours", tag = "operations", params(("id" = String, Path)),
    request_body = CustomerQuietHours,
    responses((status = 200, body = CustomerQuietHours), (status = 422, body = Problem), (status = 404, body = Problem)))]
pub async fn put_quiet_hours(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(body): ApiJson<CustomerQuietHours>,
) -> ApiResult<axum::Json<CustomerQuietHours>> {
    let customer: CustomerId = parse_id(&id, "customer")?;
    let row: Option<(Uuid,)> = on_db!(&state.db, pool => {
        sqlx::query_as("SELECT merchant_id FROM customers WHERE id = $1").bind(customer.uuid()).fetch_optional(pool).await?
    });
    let merchant = MerchantId(row.ok_or_else(|| ApiError::NotFound(format!("no customer {id}")))?.0);
    let own = matches!(&ctx.scope, policy::Scope::User(links) if links.customer == Some(customer));
    if !own {
        policy::check_merchant_action(&ctx.scope, merchant, Action::ManageCustomers)?;
    }
    if body.quiet_hours.is_some_and(|q| q.from == q.to) {
        return Err(ApiError::unprocessable(
            "invalid_quiet_hours",
            "quiet hours must not start and end at the same time",
        ));
    }
    let json = body.quiet_hours.map(|q| serde_json::to_string(&q).unwrap_or_default());
    on_db_write!(&state.db, pool => {
        sqlx::query("UPDATE customers SET quiet_hours = $1 WHERE id = $2").bind(json).bind(customer.uuid()).execute(pool).await?;
    });
    Ok(axum::Json(body))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertQuery {
    /// Only alerts whose condition still holds.
    #[serde(default)]
    pub open: bool,
    /// 1–500, default 100.
    pub limit: Option<u32>,
}

/// A merchant's alerts, newest first.
#[utoipa::path(get, path = "/merchants/{id}/alerts", tag = "operations", params(("id" = String, Path), AlertQuery),
    responses((status = 200, body = Vec<Alert>), (status = 404, body = Problem)))]
pub async fn list_alerts(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiQuery(query): ApiQuery<AlertQuery>,
) -> ApiResult<axum::Json<Vec<Alert>>> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    Ok(axum::Json(state.ops.alerts(&ctx.scope, merchant, query.open, query.limit.unwrap_or(100)).await?))
}

/// Acknowledges an alert: someone is on it.
#[utoipa::path(post, path = "/alerts/{id}/acknowledge", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, body = Alert), (status = 404, body = Problem)))]
pub async fn acknowledge_alert(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<Alert>> {
    let alert: Uuid = parse_id(&id, "alert")?;
    let by = ctx.actor.id.clone();
    Ok(axum::Json(state.ops.acknowledge(&ctx.scope, alert, &by).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccuracyQuery {
    /// Arrivals at or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Arrivals before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

/// How good the ETAs were: the first estimate made on the road against the arrival.
#[utoipa::path(get, path = "/merchants/{id}/eta-accuracy", tag = "operations", params(("id" = String, Path), AccuracyQuery),
    responses((status = 200, body = EtaAccuracy), (status = 404, body = Problem)))]
pub async fn eta_accuracy(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiQuery(query): ApiQuery<AccuracyQuery>,
) -> ApiResult<axum::Json<EtaAccuracy>> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    policy::check_merchant_action(&ctx.scope, merchant, Action::HandleAlerts)?;
    // Bounds both databases can hold.
    let from = query.from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let to = query.to.or_else(|| DateTime::from_timestamp(253_402_300_799, 0)).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let rows: Vec<Row> = on_db!(&state.db, pool => {
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
    Ok(axum::Json(accuracy(&rows)))
}

/// First estimate, its window's start and end, and the arrival.
type Row = (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);

fn accuracy(rows: &[Row]) -> EtaAccuracy {
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

/// Where the merchant's couriers are: the latest trusted position of each.
#[utoipa::path(get, path = "/merchants/{id}/courier-locations", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, body = Vec<CourierLocation>), (status = 404, body = Problem)))]
pub async fn courier_locations(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<Vec<CourierLocation>>> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    policy::check_merchant_action(&ctx.scope, merchant, Action::TrackCouriers)?;
    let couriers: Vec<(Uuid,)> = on_db!(&state.db, pool => {
        sqlx::query_as("SELECT id FROM couriers WHERE merchant_id = $1").bind(merchant.uuid()).fetch_all(pool).await?
    });
    let ids: Vec<CourierId> = couriers.into_iter().map(|(c,)| CourierId(c)).collect();
    Ok(axum::Json(state.ops.latest(&ids)))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanRequest {
    /// Time the planner may take, 0.5–60 s (default 5).
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Plan from scratch: orders not yet on the road may all move. By
    /// default couriers keep what they have, in order, and new orders are
    /// fitted in.
    #[serde(default)]
    pub fresh: bool,
}

/// Plans the merchant's open orders onto its couriers and applies the plan:
/// orders are assigned (or re-assigned) through the usual commands, and each
/// courier's route is kept for their app and for the ETAs.
#[utoipa::path(post, path = "/merchants/{id}/plans", tag = "dispatch", params(("id" = String, Path)),
    request_body = PlanRequest,
    responses((status = 200, body = crate::operations::dispatch::PlanSummary), (status = 422, body = Problem), (status = 404, body = Problem)))]
pub async fn create_plan(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(request): ApiJson<PlanRequest>,
) -> ApiResult<axum::Json<crate::operations::dispatch::PlanSummary>> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    policy::check_merchant_action(&ctx.scope, merchant, Action::Assign)?;
    let seconds = request.seconds.unwrap_or(5.0);
    if !(0.5..=60.0).contains(&seconds) {
        return Err(ApiError::unprocessable("invalid_body", "seconds: between 0.5 and 60"));
    }
    let plan = state.ops.plan(merchant, seconds, request.fresh).await?;
    state.metrics.plans.with_label_values(&["requested"]).inc();
    Ok(axum::Json(plan))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteQuery {
    /// `json` (default) or `geojson`.
    pub format: Option<String>,
}

/// A courier's planned route: ordered stops with planned times, as JSON or as
/// GeoJSON (the start and the stops as points, the visiting order as a line).
#[utoipa::path(get, path = "/couriers/{id}/route", tag = "dispatch", params(("id" = String, Path), RouteQuery),
    responses((status = 200, body = crate::operations::dispatch::CourierRoute), (status = 404, body = Problem)))]
pub async fn courier_route(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiQuery(query): ApiQuery<RouteQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let courier: CourierId = parse_id(&id, "courier")?;
    let merchant =
        state.service.courier_merchant(courier).await?.ok_or_else(|| ApiError::NotFound("no such courier".into()))?;
    policy::check_courier_positions(&ctx.scope, merchant, courier)?;
    let route = state.ops.route(courier).await?.ok_or_else(|| ApiError::NotFound("no planned route".into()))?;
    match query.format.as_deref() {
        None | Some("json") => Ok(axum::Json(route).into_response()),
        Some("geojson") => {
            let point = |p: LatLng| serde_json::json!({"type": "Point", "coordinates": [p.lng, p.lat]});
            let mut features = vec![serde_json::json!({"type": "Feature", "geometry": point(route.start),
                "properties": {"kind": "start", "courierId": route.courier_id}})];
            for (i, stop) in route.stops.iter().enumerate() {
                features.push(serde_json::json!({"type": "Feature", "geometry": point(stop.location),
                    "properties": {"kind": "stop", "stopKind": stop.kind, "sequence": i + 1, "orderId": stop.order_id,
                        "orderNumber": stop.order_number, "plannedArrival": stop.planned_arrival}}));
            }
            let line: Vec<[f64; 2]> = std::iter::once(route.start)
                .chain(route.stops.iter().map(|s| s.location))
                .map(|p| [p.lng, p.lat])
                .collect();
            features
                .push(serde_json::json!({"type": "Feature", "geometry": {"type": "LineString", "coordinates": line},
                "properties": {"kind": "sequence"}}));
            let body = serde_json::json!({"type": "FeatureCollection", "features": features});
            let mut response = axum::Json(body).into_response();
            response
                .headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/geo+json"));
            Ok(response)
        }
        Some(_) => Err(ApiError::bad_request("invalid_format", "format is json or geojson")),
    }
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderPin {
    /// The courier the planner must give the order to; `null` to let it choose.
    pub courier_id: Option<CourierId>,
}

/// Pins an order to a courier (or releases it): every plan respects it.
#[utoipa::path(put, path = "/orders/{id}/pin", tag = "dispatch", params(("id" = String, Path)), request_body = OrderPin,
    responses((status = 200, body = OrderPin), (status = 422, body = Problem), (status = 404, body = Problem)))]
pub async fn pin_order(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(pin): ApiJson<OrderPin>,
) -> ApiResult<axum::Json<OrderPin>> {
    let order: xianlu_domain::OrderId = parse_id(&id, "order")?;
    let view = state.service.view(order).await?;
    policy::check_order_action(&ctx.scope, &view.order, Action::Assign)?;
    if let Some(courier) = pin.courier_id
        && state.service.courier_merchant(courier).await? != Some(view.order.merchant_id)
    {
        return Err(ApiError::unprocessable("unknown_courier", "the courier does not work for this order's merchant"));
    }
    let now = state.service.clock.now();
    let mut tx = state.db.begin().await?;
    crate::on_tx!(&mut tx, c => {
        sqlx::query("DELETE FROM order_pins WHERE order_id = $1").bind(order.uuid()).execute(&mut *c).await?;
    });
    if let Some(courier) = pin.courier_id {
        crate::on_tx!(&mut tx, c => {
            sqlx::query("INSERT INTO order_pins (order_id, courier_id, pinned_by, pinned_at) VALUES ($1, $2, $3, $4)")
                .bind(order.uuid())
                .bind(courier.uuid())
                .bind(&ctx.actor.id)
                .bind(now)
                .execute(&mut *c)
                .await?;
        });
    }
    let entry = ctx.audit_entry(
        view.order.merchant_id.uuid(),
        now,
        "PIN_ORDER",
        order.to_string(),
        serde_json::json!({"courierId": pin.courier_id}),
    );
    crate::audit::append_all(&mut tx, &[entry], state.config.audit_anchor_every).await?;
    tx.commit().await?;
    Ok(axum::Json(pin))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteLock {
    /// Keep the courier's route exactly as it is (no new orders, no reordering).
    pub locked: bool,
}

/// Locks a courier's route as it is (or unlocks it): plans leave it alone.
#[utoipa::path(put, path = "/couriers/{id}/route-lock", tag = "dispatch", params(("id" = String, Path)),
    request_body = RouteLock, responses((status = 200, body = RouteLock), (status = 404, body = Problem)))]
pub async fn lock_route(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(lock): ApiJson<RouteLock>,
) -> ApiResult<axum::Json<RouteLock>> {
    let courier: CourierId = parse_id(&id, "courier")?;
    let merchant =
        state.service.courier_merchant(courier).await?.ok_or_else(|| ApiError::NotFound("no such courier".into()))?;
    policy::check_merchant_action(&ctx.scope, merchant, Action::Assign)?;
    let now = state.service.clock.now();
    let mut tx = state.db.begin().await?;
    crate::on_tx!(&mut tx, c => {
        sqlx::query("DELETE FROM route_locks WHERE courier_id = $1").bind(courier.uuid()).execute(&mut *c).await?;
    });
    if lock.locked {
        crate::on_tx!(&mut tx, c => {
            sqlx::query("INSERT INTO route_locks (courier_id, locked_by, locked_at) VALUES ($1, $2, $3)")
                .bind(courier.uuid())
                .bind(&ctx.actor.id)
                .bind(now)
                .execute(&mut *c)
                .await?;
        });
    }
    let entry = ctx.audit_entry(
        merchant.uuid(),
        now,
        "LOCK_ROUTE",
        courier.to_string(),
        serde_json::json!({"locked": lock.locked}),
    );
    crate::audit::append_all(&mut tx, &[entry], state.config.audit_anchor_every).await?;
    tx.commit().await?;
    Ok(axum::Json(lock))
}

/// Runs the alert rules now (administrators; the server also runs them on a timer).
#[utoipa::path(post, path = "/admin/rules/sweep", tag = "admin",
    responses((status = 204), (status = 403, body = Problem)))]
pub async fn sweep_now(State(state): State<Arc<AppState>>, Ctx(ctx): Ctx) -> ApiResult<StatusCode> {
    policy::check_admin(&ctx.scope)?;
    state.ops.sweep().await?;
    Ok(StatusCode::NO_CONTENT)
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
