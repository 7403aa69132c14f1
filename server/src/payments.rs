//! Payment gateways behind one seam. The generic gateway signs each
//! notification with HMAC-SHA256 over `timestamp + "." + raw body`; real
//! gateways (WeChat Pay v3, Alipay) sign with certificates and become further
//! implementations of [`Gateway`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use xianlu_domain::wire::{Actor, Problem};
use xianlu_domain::{Command, Order, OrderId, PaymentMethod, Status};

use crate::AppState;
use crate::api::ApiJson;
use crate::clock::wall_now;
use crate::error::{ApiError, ApiResult};
use crate::on_db_write;
use crate::service::RequestCtx;

pub const TIMESTAMP_HEADER: &str = "x-xianlu-timestamp";
pub const SIGNATURE_HEADER: &str = "x-xianlu-signature";

/// A verified notification that an order was paid.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentNotice {
    pub order_id: OrderId,
    /// The gateway's transaction reference; a repeated reference is a replay.
    pub reference: String,
    pub amount_fen: i64,
    /// Only `SUCCEEDED` secures payment.
    pub status: String,
}

/// Checks that a notification really comes from the gateway.
pub trait Gateway: Send + Sync {
    fn name(&self) -> &str;
    fn verify(&self, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> ApiResult<()>;
}

/// HMAC-SHA256 over `timestamp.body`, hex, in `X-Xianlu-Signature: v1=<hex>`.
pub struct HmacGateway {
    pub secret: String,
    pub tolerance_secs: i64,
}

/// The MAC over `timestamp.body` that signs a notification.
fn notification_mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = crate::hmac_sha256(secret.as_bytes());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1={}", hex::encode(notification_mac(secret, timestamp, body).finalize().into_bytes()))
}

impl Gateway for HmacGateway {
    fn name(&self) -> &str {
        "generic"
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> ApiResult<()> {
        let unauthorized = |why: &str| ApiError::Unauthorized(format!("payment notification rejected: {why}"));
        let timestamp: i64 = headers
            .get(TIMESTAMP_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| unauthorized("missing or malformed X-Xianlu-Timestamp"))?;
        if (now.timestamp() - timestamp).abs() > self.tolerance_secs {
            return Err(unauthorized("timestamp outside the replay window"));
        }
        let given = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("v1="))
            .and_then(|v| hex::decode(v).ok())
            .ok_or_else(|| unauthorized("missing or malformed X-Xianlu-Signature"))?;
        notification_mac(&self.secret, timestamp, body).verify_slice(&given).map_err(|_| unauthorized("bad signature"))
    }
}

/// A payment gateway's notification. Replays of a reference are answered with
/// the order as it is now and change nothing.
#[utoipa::path(post, path = "/payments/{gateway}/notifications", tag = "payments", request_body = PaymentNotice,
    params(("gateway" = String, Path, description = "`generic` (HMAC-SHA256)")),
    responses((status = 200, body = Order), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn webhook(
    State(state): State<Arc<AppState>>,
    Path(gateway_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<Order>)> {
    let gateway = state
        .gateways
        .iter()
        .find(|g| g.name() == gateway_name)
        .ok_or_else(|| ApiError::NotFound(format!("no payment gateway {gateway_name} is configured")))?;
    gateway.verify(&headers, &body, wall_now())?;
    let ApiJson(notice): ApiJson<PaymentNotice> = parse_body(&body)?;
    if notice.status != "SUCCEEDED" {
        return Err(ApiError::unprocessable("payment_not_succeeded", "only SUCCEEDED notifications secure payment"));
    }
    let request_id = headers.get(crate::REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let ctx = RequestCtx {
        actor: Actor { kind: "gateway".into(), id: gateway_name.clone() },
        scope: crate::policy::Scope::Everything,
        request_id,
        idempotency: None,
    };
    let inserted = on_db_write!(&state.db, pool => {
        sqlx::query(
            "INSERT INTO payment_notifications (gateway, reference, order_id, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (gateway, reference) DO NOTHING",
        )
        .bind(&gateway_name)
        .bind(&notice.reference)
        .bind(notice.order_id.uuid())
        .bind(wall_now())
        .execute(pool)
        .await?
        .rows_affected()
    });
    let view = state.service.view(notice.order_id).await?;
    if inserted == 0 || view.order.status != Status::Created {
        // A replay, or payment already secured: report, change nothing.
        return Ok((StatusCode::OK, axum::Json(view.order.clone())));
    }
    if notice.amount_fen != view.order.totals.charge_fen {
        forget(&state, &gateway_name, &notice.reference).await?;
        return Err(ApiError::unprocessable(
            "amount_mismatch",
            format!("paid {} fen but the order costs {} fen", notice.amount_fen, view.order.totals.charge_fen),
        ));
    }
    let method = PaymentMethod::Gateway { gateway: gateway_name.clone(), reference: notice.reference.clone() };
    match state.service.execute(&ctx, notice.order_id, None, &Command::MarkPaid { method }).await {
        Ok(committed) => Ok((StatusCode::OK, axum::Json(committed.order))),
        Err(error) => {
            forget(&state, &gateway_name, &notice.reference).await?;
            Err(error)
        }
    }
}

/// Lets the gateway retry a notification that could not be applied.
async fn forget(state: &AppState, gateway: &str, reference: &str) -> ApiResult<()> {
    on_db_write!(&state.db, pool => {
        sqlx::query("DELETE FROM payment_notifications WHERE gateway = $1 AND reference = $2")
            .bind(gateway)
            .bind(reference)
            .execute(pool)
            .await?;
    });
    Ok(())
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<ApiJson<T>> {
    serde_json::from_slice(body).map(ApiJson).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request("malformed_json", e.to_string())
        } else {
            ApiError::unprocessable("invalid_body", e.to_string())
        }
    })
}
