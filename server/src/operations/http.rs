//! REST endpoints of courier operations: a merchant's thresholds, fences and
//! quiet hours, alerts and their acknowledgement, ETA accuracy and where the
//! couriers are.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use xianlu_domain::operations::{
    Alert, CourierDuty, CourierLocation, DutyChange, EtaAccuracy, OperationsSettings, QuietHours,
};
use xianlu_domain::wire::{LatLng, Problem};
use xianlu_domain::{CourierId, CustomerId, MerchantId, WarehouseId};

use crate::AppState;
use crate::api::{ApiJson, ApiQuery, Ctx, parse_id};
use crate::error::{ApiError, ApiResult};
use crate::policy;

/// A merchant's thresholds for fences, pushes, ETAs, notices and alert rules.
#[utoipa::path(get, path = "/merchants/{id}/operations", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, body = OperationsSettings), (status = 404, body = Problem)))]
pub async fn get_settings(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<OperationsSettings>> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    Ok(axum::Json(state.ops.settings_for(&ctx.scope, merchant).await?))
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
    state.ops.set_settings(&ctx, merchant, settings).await?;
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
    state.ops.set_warehouse_fence(&ctx, warehouse, fence.polygon.as_deref()).await?;
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
    state.ops.set_quiet_hours(&ctx, customer, body.quiet_hours).await?;
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
    let alert: uuid::Uuid = parse_id(&id, "alert")?;
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
    Ok(axum::Json(state.ops.eta_accuracy(&ctx.scope, merchant, query.from, query.to).await?))
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
    Ok(axum::Json(state.ops.courier_locations(&ctx.scope, merchant).await?))
}

/// The merchant's couriers for the office's map: van, duty, last position,
/// what is aboard, the planned stops ahead, whether the route is locked.
#[utoipa::path(get, path = "/merchants/{id}/couriers", tag = "dispatch", params(("id" = String, Path)),
    responses((status = 200, body = Vec<xianlu_domain::operations::CourierStatus>), (status = 403, body = Problem)))]
pub async fn list_couriers(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<Vec<xianlu_domain::operations::CourierStatus>>> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    Ok(axum::Json(state.ops.couriers(&ctx.scope, merchant).await?))
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
    Ok(axum::Json(state.ops.requested_plan(&ctx, merchant, request.seconds, request.fresh).await?))
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
    responses((status = 200, body = xianlu_domain::operations::CourierRoute), (status = 404, body = Problem)))]
pub async fn courier_route(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiQuery(query): ApiQuery<RouteQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let courier: CourierId = parse_id(&id, "courier")?;
    let route = state.ops.route_for(&ctx.scope, courier).await?;
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
    state.ops.pin_order(&ctx, order, pin.courier_id).await?;
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
    state.ops.lock_route(&ctx, courier, lock.locked).await?;
    Ok(axum::Json(lock))
}

/// Whether the courier is on duty, and until when.
#[utoipa::path(get, path = "/couriers/{id}/duty", tag = "dispatch", params(("id" = String, Path)),
    responses((status = 200, body = CourierDuty), (status = 404, body = Problem)))]
pub async fn get_duty(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<CourierDuty>> {
    let courier: CourierId = parse_id(&id, "courier")?;
    Ok(axum::Json(state.ops.duty_for(&ctx.scope, courier).await?))
}

/// Goes on duty (optionally until a shift end) or off duty; the planner gives
/// work only to couriers on duty and re-plans when one comes or goes.
#[utoipa::path(put, path = "/couriers/{id}/duty", tag = "dispatch", params(("id" = String, Path)),
    request_body = DutyChange,
    responses((status = 200, body = CourierDuty), (status = 409, body = Problem, description = "goods_aboard"),
              (status = 422, body = Problem), (status = 404, body = Problem)))]
pub async fn put_duty(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(change): ApiJson<DutyChange>,
) -> ApiResult<axum::Json<CourierDuty>> {
    let courier: CourierId = parse_id(&id, "courier")?;
    Ok(axum::Json(state.ops.set_duty(&ctx, courier, change).await?))
}

/// Runs the alert rules now (administrators; the server also runs them on a timer).
#[utoipa::path(post, path = "/admin/rules/sweep", tag = "admin",
    responses((status = 204), (status = 403, body = Problem)))]
pub async fn sweep_now(State(state): State<Arc<AppState>>, Ctx(ctx): Ctx) -> ApiResult<StatusCode> {
    policy::check_admin(&ctx.scope)?;
    state.ops.sweep().await?;
    Ok(StatusCode::NO_CONTENT)
}
