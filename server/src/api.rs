//! REST handlers under `/api/v1`. They convert JSON to calls on the order
//! service and back; no business logic lives here.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::operations::http as ops;
use utoipa_axum::routes;
use xianlu_domain::evidence::{EvidenceRecord, EvidenceUpload, PositionBatch, PositionFix, PositionReceipt};
use xianlu_domain::wire::{Actor, CommandRequest, OrderPage, OrderView, Problem, StreamEvent};
use xianlu_domain::{CourierId, MerchantId, Order, OrderDraft, OrderId, WarehouseId};

use crate::AppState;
use crate::audit::VerifyReport;
use crate::error::{ApiError, ApiResult};
use crate::idempotency::SAVED_MARKER;
use crate::identity::{
    CourierLink, Credentials, DeviceCredential, NewDevice, NewPassword, NewUser, RefreshRequest, RoleAssignment,
    Tokens, User,
};
use crate::parties::{
    ContactMatch, Courier, Customer, CustomerExport, Merchant, NewCourier, NewCustomer, NewMerchant, NewWarehouse,
    StockCount, Warehouse,
};
use crate::policy::Scope;
use crate::service::{Committed, IdempotencyClaim, OrderFilter, RequestCtx, StockLevel};

/// The development identity header. There is no authentication behind it:
/// whoever sends it is believed. The identity service replaces it.
pub const DEV_ACTOR_HEADER: &str = "x-xianlu-dev-actor";

/// Roles a development actor may claim. `system` and `gateway` are the
/// server's own and cannot be claimed.
const CLAIMABLE_KINDS: &[&str] = &["admin", "merchant", "staff", "clerk", "courier", "customer", "service"];

pub fn parse_actor(value: &str) -> Option<Actor> {
    let (kind, id) = value.split_once(':')?;
    let valid_id = (1..=100).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic());
    (CLAIMABLE_KINDS.contains(&kind) && valid_id).then(|| Actor { kind: kind.to_owned(), id: id.to_owned() })
}

/// The caller as recorded in idempotency scopes (before any handler runs):
/// the authenticated user, whichever token they hold now.
pub async fn actor_label(state: &AppState, headers: &HeaderMap) -> String {
    match authenticate(state, headers, None).await {
        Ok((actor, _)) => format!("{}:{}", actor.kind, actor.id),
        Err(_) => "anonymous".to_owned(),
    }
}

/// Who is calling: the holder of a valid bearer token, or, on a server
/// started for tests with `dev_actor_header`, whoever the development header
/// names. The one place identity is decided.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query_actor: Option<&str>,
) -> ApiResult<(Actor, Scope)> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    if let Some(token) = bearer {
        let token = token.trim();
        if token.starts_with(crate::identity::TRACKING_PREFIX) {
            return state.identity.verify_tracking(token).await;
        }
        let principal = state.identity.verify(token).await?;
        return Ok((principal.actor(), principal.scope()));
    }
    // A device key: valid, but good for nothing here; readings have their own endpoints.
    let device = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Device "));
    if let Some(key) = device {
        state.identity.verify_device(key.trim()).await?;
        return Err(ApiError::Forbidden("a device key may only post its own readings".into()));
    }
    if state.config.dev_actor_header {
        let claimed = headers.get(DEV_ACTOR_HEADER).and_then(|v| v.to_str().ok()).or(query_actor);
        if let Some(value) = claimed {
            // The test profile: a development actor is trusted with everything.
            return parse_actor(value).map(|actor| (actor, Scope::Everything)).ok_or_else(|| {
                ApiError::Unauthorized(format!(
                    "{DEV_ACTOR_HEADER} must be KIND:ID with KIND one of {}",
                    CLAIMABLE_KINDS.join(", ")
                ))
            });
        }
    }
    Err(ApiError::Unauthorized("log in at /api/v1/auth/login and send Authorization: Bearer <accessToken>".into()))
}

/// The request context: actor, request id and any idempotency claim.
pub struct Ctx(pub RequestCtx);

impl FromRequestParts<Arc<AppState>> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        // Browsers cannot set headers on a link or a WebSocket: the development
        // identity may also come as `?actor=KIND:ID`.
        let query_actor = parts
            .uri
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("actor=")))
            .map(|v| v.replace("%3A", ":").replace("%3a", ":"));
        let (actor, scope) = authenticate(state, &parts.headers, query_actor.as_deref()).await?;
        let request_id = parts.headers.get(crate::REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        let idempotency = parts.extensions.get::<IdempotencyClaim>().cloned();
        Ok(Ctx(RequestCtx { actor, scope, request_id, idempotency }))
    }
}

/// JSON body whose every failure is a problem document.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::unprocessable("invalid_body", e.body_text()),
                JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("malformed_json", e.body_text()),
                JsonRejection::MissingJsonContentType(_) => {
                    ApiError::bad_request("unsupported_media_type", "send the body as Content-Type: application/json")
                }
                JsonRejection::BytesRejection(_) => ApiError::TooLarge,
                other => ApiError::bad_request("invalid_body", other.body_text()),
            }),
        }
    }
}

/// Query string whose failures are problem documents.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

pub(crate) fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> ApiResult<T> {
    text.parse().map_err(|_| ApiError::NotFound(format!("no {what} {text}")))
}

/// A committed change, answered with exactly the bytes saved for idempotent replay.
fn committed_response(status: StatusCode, committed: Committed, saved: bool) -> Response {
    let mut response = (status, committed.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if saved {
        headers.insert(SAVED_MARKER, HeaderValue::from_static("1"));
    }
    response
}

async fn resolve_order(state: &AppState, id: &str) -> ApiResult<OrderId> {
    match id.parse::<OrderId>() {
        Ok(id) => Ok(id),
        Err(_) => state.service.find_by_number(id).await,
    }
}

/// Create an order. Credit-terms customers' orders are paid and stock-checked at once.
#[utoipa::path(post, path = "/orders", tag = "orders", request_body = OrderDraft,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = Order), (status = 422, body = Problem), (status = 400, body = Problem)))]
async fn create_order(
    State(state): State<Arc<AppState>>,
    Ctx(ctx): Ctx,
    ApiJson(draft): ApiJson<OrderDraft>,
) -> ApiResult<Response> {
    let saved = ctx.idempotency.is_some();
    let committed = state.service.create_order(&ctx, draft).await?;
    Ok(committed_response(StatusCode::CREATED, committed, saved))
}

/// Send a command to an order (pay, pick, pack, dispatch, sign, report an exception, …).
#[utoipa::path(post, path = "/orders/{id}/commands", tag = "orders", request_body = CommandRequest,
    params(("id" = String, Path, description = "Order id (UUID) or number"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 200, body = Order), (status = 409, body = Problem, description = "Version conflict or illegal transition"),
              (status = 422, body = Problem), (status = 404, body = Problem)))]
async fn order_command(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(request): ApiJson<CommandRequest>,
) -> ApiResult<Response> {
    let id = resolve_order(&state, &id).await?;
    let saved = ctx.idempotency.is_some();
    let committed = state.service.execute(&ctx, id, request.expected_version, &request.command).await?;
    Ok(committed_response(StatusCode::OK, committed, saved))
}

/// Upload a signature, photo or delivery-note image for an order. The
/// address is the content's digest (see `evidence_digest`), so an upload is
/// idempotent: the same content again answers 200 with the stored record.
#[utoipa::path(put, path = "/orders/{id}/evidence/{sha256}", tag = "evidence", request_body = EvidenceUpload,
    params(("id" = String, Path, description = "Order id (UUID) or number"),
           ("sha256" = String, Path, description = "The content's digest, lowercase hex")),
    responses((status = 201, body = EvidenceRecord), (status = 200, body = EvidenceRecord, description = "Already stored"),
              (status = 422, body = Problem, description = "Digest mismatch, unreadable image"),
              (status = 404, body = Problem), (status = 413, body = Problem)))]
async fn put_evidence(
    State(state): State<Arc<AppState>>,
    Path((id, sha256)): Path<(String, String)>,
    Ctx(ctx): Ctx,
    ApiJson(upload): ApiJson<EvidenceUpload>,
) -> ApiResult<(StatusCode, axum::Json<EvidenceRecord>)> {
    let id = resolve_order(&state, &id).await?;
    let (created, record) = state.service.put_evidence(&ctx, id, &sha256, upload).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, axum::Json(record)))
}

/// An order's evidence records.
#[utoipa::path(get, path = "/orders/{id}/evidence", tag = "evidence",
    params(("id" = String, Path, description = "Order id (UUID) or number")),
    responses((status = 200, body = Vec<EvidenceRecord>), (status = 404, body = Problem)))]
async fn list_evidence(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<Vec<EvidenceRecord>>> {
    let id = resolve_order(&state, &id).await?;
    Ok(axum::Json(state.service.list_evidence(&ctx.scope, id).await?))
}

/// The stored image (the server's re-encoding, PNG or JPEG).
#[utoipa::path(get, path = "/orders/{id}/evidence/{sha256}", tag = "evidence",
    params(("id" = String, Path), ("sha256" = String, Path)),
    responses((status = 200, content_type = "image/*", description = "The image"), (status = 404, body = Problem)))]
async fn get_evidence(
    State(state): State<Arc<AppState>>,
    Path((id, sha256)): Path<(String, String)>,
    Ctx(ctx): Ctx,
) -> ApiResult<Response> {
    let id = resolve_order(&state, &id).await?;
    let (content_type, image) = state.service.evidence_image(&ctx.scope, id, &sha256).await?;
    let mut response = image.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    // Content-addressed: it never changes, but it is private.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// Send a batch of the courier's own position fixes. Replays are counted,
/// not stored twice; impossible jumps are stored flagged.
#[utoipa::path(post, path = "/couriers/{id}/positions", tag = "couriers", request_body = PositionBatch,
    params(("id" = String, Path)),
    responses((status = 200, body = PositionReceipt), (status = 422, body = Problem), (status = 404, body = Problem)))]
async fn post_positions(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(batch): ApiJson<PositionBatch>,
) -> ApiResult<axum::Json<PositionReceipt>> {
    let courier: CourierId = parse_id(&id, "courier")?;
    let ingested = state.service.ingest_positions(&ctx, courier, batch).await?;
    // Fences, pushes and ETAs follow from what was stored; the fixes are safe either way.
    if let Err(error) = state.ops.on_positions(ingested.merchant, courier, &ingested.trusted).await {
        tracing::warn!(%error, %courier, "courier operations could not follow a batch of positions");
    }
    Ok(axum::Json(ingested.receipt))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
struct PositionsQuery {
    /// Only fixes with a greater device sequence.
    #[serde(default)]
    after_seq: u64,
}

/// A courier's stored fixes, in time order.
#[utoipa::path(get, path = "/couriers/{id}/positions", tag = "couriers", params(("id" = String, Path), PositionsQuery),
    responses((status = 200, body = Vec<PositionFix>), (status = 404, body = Problem)))]
async fn get_positions(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiQuery(query): ApiQuery<PositionsQuery>,
) -> ApiResult<axum::Json<Vec<PositionFix>>> {
    let courier: CourierId = parse_id(&id, "courier")?;
    Ok(axum::Json(state.service.positions(&ctx, courier, query.after_seq).await?))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
struct TrailQuery {
    /// `geojson` (default) or `gpx`.
    #[serde(default)]
    format: Option<String>,
}

/// The order's trail: its courier's trusted positions from dispatch to
/// sign-off (or return), as GeoJSON or GPX.
#[utoipa::path(get, path = "/orders/{id}/trail", tag = "orders",
    params(("id" = String, Path, description = "Order id (UUID) or number"), TrailQuery),
    responses((status = 200, description = "GeoJSON Feature or GPX 1.1"), (status = 404, body = Problem)))]
async fn order_trail(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiQuery(query): ApiQuery<TrailQuery>,
) -> ApiResult<Response> {
    let format = query.format.unwrap_or_else(|| "geojson".into());
    crate::couriers::check_format(&format)?;
    let id = resolve_order(&state, &id).await?;
    let points = state.service.trail(&ctx.scope, id).await?;
    let mut response = if format == "gpx" {
        crate::couriers::gpx(id, &points).into_response()
    } else {
        crate::couriers::geojson(id, &points).to_string().into_response()
    };
    let content_type = if format == "gpx" { "application/gpx+xml" } else { "application/geo+json" };
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// An accident or breakdown: every order the courier is delivering goes to
/// `EXCEPTION_HANDLING` with it. Send an `Idempotency-Key`.
#[utoipa::path(post, path = "/couriers/{id}/exceptions", tag = "couriers",
    request_body = crate::couriers::VehicleException, params(("id" = String, Path)),
    responses((status = 200, body = crate::couriers::VehicleExceptionReport), (status = 422, body = Problem),
              (status = 404, body = Problem)))]
async fn vehicle_exception(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(report): ApiJson<crate::couriers::VehicleException>,
) -> ApiResult<axum::Json<crate::couriers::VehicleExceptionReport>> {
    let courier: CourierId = parse_id(&id, "courier")?;
    Ok(axum::Json(state.service.report_vehicle_exception(&ctx, courier, report).await?))
}

/// One order in the requirements' shape, with its lines and timeline.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id (UUID) or number")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem)))]
async fn get_order(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<OrderView>> {
    let id = resolve_order(&state, &id).await?;
    Ok(axum::Json(state.service.view_for(&ctx.scope, id).await?.as_ref().clone()))
}

/// A tracking link to the order: `/t/{token}` opens it in any browser, and
/// the token is a bearer credential for that one order (phones masked).
#[utoipa::path(post, path = "/orders/{id}/tracking-links", tag = "orders",
    params(("id" = String, Path, description = "Order id (UUID) or number")),
    request_body = crate::tracking::NewTrackingLink,
    responses((status = 201, body = crate::identity::TrackingLink), (status = 404, body = Problem),
              (status = 403, body = Problem)))]
async fn create_tracking_link(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(new): ApiJson<crate::tracking::NewTrackingLink>,
) -> ApiResult<(StatusCode, axum::Json<crate::identity::TrackingLink>)> {
    let id = resolve_order(&state, &id).await?;
    Ok((StatusCode::CREATED, axum::Json(state.service.create_tracking_link(&ctx, id, new).await?)))
}

/// Raises an after-sales matter on a signed order (quality, a shortage found
/// later, an exchange), within the merchant's window; photos are uploaded to
/// the order as evidence first. Send an `Idempotency-Key`.
#[utoipa::path(post, path = "/orders/{id}/after-sales", tag = "orders",
    params(("id" = String, Path, description = "Order id (UUID) or number")),
    request_body = xianlu_domain::aftersales::NewAfterSales,
    responses((status = 201, body = xianlu_domain::aftersales::AfterSales),
              (status = 422, body = Problem, description = "after_sales_window_closed, unknown_evidence, invalid_command"),
              (status = 409, body = Problem, description = "the order is not signed"), (status = 404, body = Problem)))]
async fn open_after_sales(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(new): ApiJson<xianlu_domain::aftersales::NewAfterSales>,
) -> ApiResult<(StatusCode, axum::Json<xianlu_domain::aftersales::AfterSales>)> {
    let id = resolve_order(&state, &id).await?;
    let merchant = state.service.view_for(&ctx.scope, id).await?.order.merchant_id;
    let window = state.ops.settings(merchant).await?.after_sales_hours;
    Ok((StatusCode::CREATED, axum::Json(state.service.open_after_sales(&ctx, id, window, new).await?)))
}

/// The order's after-sales matters.
#[utoipa::path(get, path = "/orders/{id}/after-sales", tag = "orders",
    params(("id" = String, Path, description = "Order id (UUID) or number")),
    responses((status = 200, body = Vec<xianlu_domain::aftersales::AfterSales>), (status = 404, body = Problem)))]
async fn list_after_sales(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<Vec<xianlu_domain::aftersales::AfterSales>>> {
    let id = resolve_order(&state, &id).await?;
    Ok(axum::Json(state.service.after_sales(&ctx.scope, id).await?))
}

/// The order a tracking link shows (404 for no such link, 410 `link_expired`).
#[utoipa::path(get, path = "/tracking/{token}", tag = "orders", params(("token" = String, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = Problem), (status = 410, body = Problem)))]
async fn tracked_order(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> ApiResult<axum::Json<OrderView>> {
    if !token.starts_with(crate::identity::TRACKING_PREFIX) {
        return Err(ApiError::NotFound("no such tracking link".into()));
    }
    let (_, scope) = state.identity.verify_tracking(&token).await?;
    let crate::policy::Scope::User(links) = &scope else {
        return Err(ApiError::NotFound("no such tracking link".into()));
    };
    let order = links.order.ok_or_else(|| ApiError::NotFound("no such tracking link".into()))?;
    Ok(axum::Json(state.service.view_for(&scope, order).await?.as_ref().clone()))
}

/// An order's events in commit order.
#[utoipa::path(get, path = "/orders/{id}/events", tag = "orders",
    params(("id" = String, Path, description = "Order id (UUID) or number")),
    responses((status = 200, body = Vec<StreamEvent>), (status = 404, body = Problem)))]
async fn order_events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<Vec<StreamEvent>>> {
    let id = resolve_order(&state, &id).await?;
    state.service.view_for(&ctx.scope, id).await?;
    let timeline = state.service.timeline(id).await?;
    if timeline.is_empty() {
        return Err(ApiError::NotFound(format!("no order {id}")));
    }
    Ok(axum::Json(timeline))
}

/// List orders, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/orders", tag = "orders", params(OrderFilter),
    responses((status = 200, body = OrderPage), (status = 400, body = Problem)))]
async fn list_orders(
    State(state): State<Arc<AppState>>,
    Ctx(ctx): Ctx,
    ApiQuery(filter): ApiQuery<OrderFilter>,
) -> ApiResult<axum::Json<OrderPage>> {
    Ok(axum::Json(state.service.list_for(&ctx.scope, &filter).await?))
}

/// Create a merchant: its order-number prefix and the time zone of its business dates.
#[utoipa::path(post, path = "/merchants", tag = "parties", request_body = NewMerchant,
    responses((status = 201, body = Merchant), (status = 422, body = Problem)))]
async fn create_merchant(
    State(state): State<Arc<AppState>>,
    Ctx(ctx): Ctx,
    ApiJson(new): ApiJson<NewMerchant>,
) -> ApiResult<(StatusCode, axum::Json<Merchant>)> {
    Ok((StatusCode::CREATED, axum::Json(state.service.create_merchant(&ctx, new).await?)))
}

/// Create one of a merchant's warehouses (WGS-84 location).
#[utoipa::path(post, path = "/merchants/{id}/warehouses", tag = "parties", request_body = NewWarehouse,
    params(("id" = String, Path)), responses((status = 201, body = Warehouse), (status = 404, body = Problem)))]
async fn create_warehouse(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(new): ApiJson<NewWarehouse>,
) -> ApiResult<(StatusCode, axum::Json<Warehouse>)> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    Ok((StatusCode::CREATED, axum::Json(state.service.create_warehouse(&ctx, merchant, new).await?)))
}

/// Create a customer business; its contact people's names and phones are stored as personal data.
#[utoipa::path(post, path = "/merchants/{id}/customers", tag = "parties", request_body = NewCustomer,
    params(("id" = String, Path)), responses((status = 201, body = Customer), (status = 404, body = Problem)))]
async fn create_customer(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(new): ApiJson<NewCustomer>,
) -> ApiResult<(StatusCode, axum::Json<Customer>)> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    Ok((StatusCode::CREATED, axum::Json(state.service.create_customer(&ctx, merchant, new).await?)))
}

/// Create a courier; name and phone are stored as personal data.
#[utoipa::path(post, path = "/merchants/{id}/couriers", tag = "parties", request_body = NewCourier,
    params(("id" = String, Path)), responses((status = 201, body = Courier), (status = 404, body = Problem)))]
async fn create_courier(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(new): ApiJson<NewCourier>,
) -> ApiResult<(StatusCode, axum::Json<Courier>)> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    let courier = state.service.create_courier(&ctx, merchant, new).await?;
    Ok((StatusCode::CREATED, axum::Json(courier)))
}

/// Set the counted stock of a SKU in a warehouse.
#[utoipa::path(put, path = "/warehouses/{id}/stock/{sku}", tag = "stock", request_body = StockCount,
    params(("id" = String, Path), ("sku" = String, Path)), responses((status = 200, body = StockLevel), (status = 404, body = Problem)))]
async fn set_stock(
    State(state): State<Arc<AppState>>,
    Path((id, sku)): Path<(String, String)>,
    Ctx(ctx): Ctx,
    ApiJson(count): ApiJson<StockCount>,
) -> ApiResult<axum::Json<StockLevel>> {
    let warehouse: WarehouseId = parse_id(&id, "warehouse")?;
    Ok(axum::Json(state.service.set_stock(&ctx, warehouse, &sku, count).await?))
}

/// A warehouse's stock: on hand and reserved, in grams or pieces.
#[utoipa::path(get, path = "/warehouses/{id}/stock", tag = "stock",
    params(("id" = String, Path)), responses((status = 200, body = Vec<StockLevel>)))]
async fn get_stock(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<Vec<StockLevel>>> {
    let warehouse: WarehouseId = parse_id(&id, "warehouse")?;
    Ok(axum::Json(state.service.stock(&ctx.scope, warehouse).await?))
}

/// Walk every merchant's audit chain and report edited, inserted or deleted rows.
#[utoipa::path(get, path = "/admin/audit/verify", tag = "admin",
    responses((status = 200, body = VerifyReport), (status = 401, body = Problem)))]
async fn audit_verify(State(state): State<Arc<AppState>>, Ctx(ctx): Ctx) -> ApiResult<axum::Json<VerifyReport>> {
    require_admin(&ctx)?;
    Ok(axum::Json(crate::audit::verify(&state.db).await?))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PhoneQuery {
    /// The phone number, in any usual spelling (`+86 138-0000-0001`).
    phone: String,
}

/// Find a merchant's contact people by phone number (through a blind index).
#[utoipa::path(get, path = "/merchants/{id}/contacts", tag = "parties", params(("id" = String, Path), PhoneQuery),
    responses((status = 200, body = Vec<ContactMatch>), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn find_contacts(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiQuery(query): ApiQuery<PhoneQuery>,
) -> ApiResult<axum::Json<Vec<ContactMatch>>> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    Ok(axum::Json(state.service.find_contacts_by_phone(&ctx, merchant, &query.phone).await?))
}

/// Everything held about a customer (GDPR/CCPA access).
#[utoipa::path(get, path = "/customers/{id}/export", tag = "parties",
    params(("id" = String, Path)), responses((status = 200, body = CustomerExport), (status = 404, body = Problem)))]
async fn export_customer(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<axum::Json<CustomerExport>> {
    Ok(axum::Json(state.service.export_customer(&ctx, parse_id(&id, "customer")?).await?))
}

/// Erase a customer's personal data for good (crypto-shredding); orders stay, anonymised.
#[utoipa::path(post, path = "/customers/{id}/erase", tag = "parties",
    params(("id" = String, Path)), responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn erase_customer(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<StatusCode> {
    state.service.erase_customer(&ctx, parse_id(&id, "customer")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Register a scale or temperature sensor of a warehouse or vehicle; its API key is shown once.
#[utoipa::path(post, path = "/merchants/{id}/devices", tag = "parties", request_body = NewDevice,
    params(("id" = String, Path)), responses((status = 201, body = DeviceCredential), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn create_device(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(new): ApiJson<NewDevice>,
) -> ApiResult<(StatusCode, axum::Json<DeviceCredential>)> {
    let merchant: MerchantId = parse_id(&id, "merchant")?;
    crate::policy::check_merchant_action(&ctx.scope, merchant, crate::policy::Action::ManageWarehousesAndCouriers)?;
    let device = state.identity.create_device(merchant, new).await?;
    let record =
        serde_json::json!({"kind": device.kind, "warehouseId": device.warehouse_id, "courierId": device.courier_id});
    audit_identity(&state, &ctx, Some(merchant), "REGISTER_DEVICE", device.id.to_string(), record).await?;
    Ok((StatusCode::CREATED, axum::Json(device)))
}

/// Records a change to users or devices in the audit log: the merchant's
/// chain, or the platform's for what belongs to no merchant.
async fn audit_identity(
    state: &AppState,
    ctx: &RequestCtx,
    merchant: Option<MerchantId>,
    action: &str,
    subject: String,
    after: serde_json::Value,
) -> ApiResult<()> {
    let merchant = merchant.map_or(crate::audit::PLATFORM_CHAIN, MerchantId::uuid);
    let entry = ctx.audit_entry(merchant, crate::clock::wall_now(), action, subject, after);
    crate::audit::record(&state.db, entry, state.config.audit_anchor_every).await?;
    Ok(())
}

fn require_admin(ctx: &RequestCtx) -> ApiResult<()> {
    crate::policy::check_admin(&ctx.scope)
}

/// Log in with a username and password. Failures never say whether the account exists.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Credentials,
    responses((status = 200, body = Tokens), (status = 401, body = Problem), (status = 429, body = Problem)))]
async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    ApiJson(credentials): ApiJson<Credentials>,
) -> ApiResult<axum::Json<Tokens>> {
    Ok(axum::Json(state.identity.login(&credentials, address.ip()).await?))
}

/// Exchange a refresh token for new tokens; the old refresh token stops working.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = Tokens), (status = 401, body = Problem)))]
async fn refresh(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> ApiResult<axum::Json<Tokens>> {
    Ok(axum::Json(state.identity.refresh(&request.refresh_token).await?))
}

/// End this session: its access and refresh tokens stop working at once.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204), (status = 401, body = Problem)))]
async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::Unauthorized("send the access token to log out".into()))?;
    let principal = state.identity.verify(token).await?;
    state.identity.logout(&principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create a user with a role (admin only).
#[utoipa::path(post, path = "/admin/users", tag = "admin", request_body = NewUser,
    responses((status = 201, body = User), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn create_user(
    State(state): State<Arc<AppState>>,
    Ctx(ctx): Ctx,
    ApiJson(new): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, axum::Json<User>)> {
    require_admin(&ctx)?;
    let user = state.identity.create_user(new).await?;
    let record = serde_json::json!({"username": user.username, "role": user.role, "merchantId": user.merchant_id,
        "warehouseId": user.warehouse_id, "courierId": user.courier_id, "customerId": user.customer_id});
    audit_identity(&state, &ctx, user.merchant_id, "CREATE_USER", user.id.to_string(), record).await?;
    Ok((StatusCode::CREATED, axum::Json(user)))
}

/// Every user (admin only).
#[utoipa::path(get, path = "/admin/users", tag = "admin", responses((status = 200, body = Vec<User>), (status = 403, body = Problem)))]
async fn list_users(State(state): State<Arc<AppState>>, Ctx(ctx): Ctx) -> ApiResult<axum::Json<Vec<User>>> {
    require_admin(&ctx)?;
    Ok(axum::Json(state.identity.users().await?))
}

/// Reset a user's password; their sessions end (admin only).
#[utoipa::path(post, path = "/admin/users/{id}/password", tag = "admin", request_body = NewPassword,
    params(("id" = String, Path)), responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn reset_password(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(new): ApiJson<NewPassword>,
) -> ApiResult<StatusCode> {
    require_admin(&ctx)?;
    let user = state.identity.user(parse_id(&id, "user")?).await?;
    state.identity.set_password(user.id, &new.password).await?;
    audit_identity(&state, &ctx, user.merchant_id, "RESET_PASSWORD", user.id.to_string(), serde_json::json!({}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Let a courier user also drive for another merchant, as that merchant's courier record (admin only).
#[utoipa::path(post, path = "/admin/users/{id}/couriers", tag = "admin", request_body = CourierLink,
    params(("id" = String, Path)), responses((status = 204), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn link_courier(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(link): ApiJson<CourierLink>,
) -> ApiResult<StatusCode> {
    require_admin(&ctx)?;
    let user = state.identity.user(parse_id(&id, "user")?).await?;
    state.identity.link_courier(user.id, link.courier_id).await?;
    let merchant = state.service.courier_merchant(link.courier_id).await?;
    let record = serde_json::json!({"courierId": link.courier_id});
    audit_identity(&state, &ctx, merchant, "LINK_COURIER", user.id.to_string(), record).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give a user another role and links; it applies from the user's next request (admin only).
#[utoipa::path(put, path = "/admin/users/{id}/role", tag = "admin", request_body = RoleAssignment,
    params(("id" = String, Path)), responses((status = 200, body = User), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn assign_role(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
    ApiJson(assignment): ApiJson<RoleAssignment>,
) -> ApiResult<axum::Json<User>> {
    require_admin(&ctx)?;
    let user = state.identity.assign_role(parse_id(&id, "user")?, assignment).await?;
    let record = serde_json::json!({"role": user.role, "merchantId": user.merchant_id, "warehouseId": user.warehouse_id,
        "courierId": user.courier_id, "customerId": user.customer_id});
    audit_identity(&state, &ctx, user.merchant_id, "ASSIGN_ROLE", user.id.to_string(), record).await?;
    Ok(axum::Json(user))
}

enum SessionAction {
    Revoke,
    Unlock,
}

/// An administrator ends a user's sessions or clears a lockout, audited.
async fn session_action(state: &AppState, ctx: &RequestCtx, id: &str, action: SessionAction) -> ApiResult<StatusCode> {
    require_admin(ctx)?;
    let user = state.identity.user(parse_id(id, "user")?).await?;
    let name = match action {
        SessionAction::Revoke => {
            state.identity.revoke_user(user.id).await?;
            "REVOKE_SESSIONS"
        }
        SessionAction::Unlock => {
            state.identity.unlock(user.id).await?;
            "UNLOCK_USER"
        }
    };
    audit_identity(state, ctx, user.merchant_id, name, user.id.to_string(), serde_json::json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End every session of a user at once (admin only).
#[utoipa::path(post, path = "/admin/users/{id}/revoke", tag = "admin",
    params(("id" = String, Path)), responses((status = 204), (status = 403, body = Problem)))]
async fn revoke_user(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<StatusCode> {
    session_action(&state, &ctx, &id, SessionAction::Revoke).await
}

/// Clear a lockout after repeated failed logins (admin only).
#[utoipa::path(post, path = "/admin/users/{id}/unlock", tag = "admin",
    params(("id" = String, Path)), responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn unlock_user(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Ctx(ctx): Ctx,
) -> ApiResult<StatusCode> {
    session_action(&state, &ctx, &id, SessionAction::Unlock).await
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Xianlu order lifecycle API", description = "Orders of fresh produce from creation to sign-off: \
        REST commands over one state machine, a resumable WebSocket push stream at /api/v1/stream, \
        problem+json errors with stable codes. Send `Idempotency-Key` on every mutating request."),
    components(schemas(Problem, xianlu_domain::wire::ClientMessage, xianlu_domain::wire::ServerMessage)),
    tags((name = "auth"), (name = "orders"), (name = "parties"), (name = "stock"), (name = "payments"), (name = "admin"), (name = "operations"), (name = "couriers"), (name = "dispatch"))
)]
struct ApiDoc;

/// The `/api/v1` routes and their OpenAPI document. Evidence uploads carry
/// images: their route takes bodies up to `evidence_limit` bytes, every
/// other route the server-wide limit.
pub fn router(evidence_limit: usize) -> (axum::Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    let evidence = OpenApiRouter::new()
        .routes(routes!(put_evidence, get_evidence))
        .layer(axum::extract::DefaultBodyLimit::max(evidence_limit));
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(evidence)
        .routes(routes!(create_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(order_command))
        .routes(routes!(order_events))
        .routes(routes!(create_tracking_link))
        .routes(routes!(tracked_order))
        .routes(routes!(open_after_sales, list_after_sales))
        .routes(routes!(create_merchant))
        .routes(routes!(create_warehouse))
        .routes(routes!(create_customer))
        .routes(routes!(create_courier))
        .routes(routes!(set_stock))
        .routes(routes!(get_stock))
        .routes(routes!(audit_verify))
        .routes(routes!(crate::payments::webhook))
        .routes(routes!(create_device))
        .routes(routes!(find_contacts))
        .routes(routes!(export_customer))
        .routes(routes!(erase_customer))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(create_user, list_users))
        .routes(routes!(reset_password))
        .routes(routes!(revoke_user))
        .routes(routes!(unlock_user))
        .routes(routes!(link_courier))
        .routes(routes!(assign_role))
        .routes(routes!(list_evidence))
        .routes(routes!(post_positions, get_positions))
        .routes(routes!(crate::map::roads))
        .routes(routes!(crate::map::route))
        .routes(routes!(order_trail))
        .routes(routes!(vehicle_exception))
        .routes(routes!(ops::get_settings, ops::put_settings))
        .routes(routes!(ops::put_warehouse_fence))
        .routes(routes!(ops::put_quiet_hours))
        .routes(routes!(ops::list_alerts))
        .routes(routes!(ops::acknowledge_alert))
        .routes(routes!(ops::eta_accuracy))
        .routes(routes!(ops::courier_locations))
        .routes(routes!(ops::list_couriers))
        .routes(routes!(ops::sweep_now))
        .routes(routes!(ops::create_plan))
        .routes(routes!(ops::courier_route))
        .routes(routes!(ops::pin_order))
        .routes(routes!(ops::lock_route))
        .routes(routes!(ops::get_duty, ops::put_duty))
        .split_for_parts();
    doc.servers = Some(vec![utoipa::openapi::Server::new("/api/v1")]);
    (router, doc)
}
