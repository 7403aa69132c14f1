//! `Idempotency-Key` on every mutating request, with Stripe's semantics:
//! the same key and body replay the saved response byte for byte; the same
//! key with another body is refused (422); a request whose key is still being
//! worked on gets 409 and is never executed twice.
//!
//! Order changes save their response inside the transaction that makes the
//! change (see `service::finish`), so a crash can never leave a change without
//! its saved response. Other endpoints save it right after the handler.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::clock::wall_now;
use crate::error::ApiError;
use crate::service::IdempotencyClaim;
use crate::{on_db, on_db_write};

pub const HEADER: &str = "idempotency-key";
/// Set on a replayed response.
pub const REPLAYED: &str = "idempotent-replayed";
/// Internal marker: the handler already saved the response in its transaction.
pub const SAVED_MARKER: &str = "x-xianlu-idempotency-saved";
/// A claim older than this whose request never finished (a crashed process) may be taken over.
const LEASE_SECONDS: i64 = 60;

/// request hash, status, content type, body, claimed at
type SavedRow = (String, Option<i32>, Option<String>, Option<Vec<u8>>, chrono::DateTime<chrono::Utc>);

fn is_mutating(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

pub async fn middleware(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if !is_mutating(request.method()) {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let Some(key) = key.to_str().ok().filter(|k| valid_key(k)).map(str::to_owned) else {
        return ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1–255 visible ASCII characters",
        )
        .into_response();
    };
    // A client that hangs up must not leave its claim half-done (a retry
    // would be told "in flight" until the lease ran out): the request runs
    // to completion, and its response is saved, on a task of its own.
    let task = tokio::spawn(async move { run(&state, key, request, next).await });
    let outcome = task.await.unwrap_or_else(|e| Err(ApiError::Internal(anyhow::anyhow!("request task failed: {e}"))));
    match outcome {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run(state: &AppState, key: String, request: Request, next: Next) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    // Buffer up to the largest body any route takes; each route's extractor
    // then holds the request to that route's own limit.
    let limit = state.config.max_body_bytes.max(state.config.max_evidence_bytes);
    let bytes = to_bytes(body, limit).await.map_err(|_| ApiError::TooLarge)?;
    // Keys are scoped to the authenticated user, not the token: a client that
    // refreshed its token while retrying must still find its first attempt.
    let actor = crate::api::actor_label(state, &parts.headers).await;
    let scope = format!("{actor} {} {}", parts.method, parts.uri.path());
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(parts.uri.to_string().as_bytes());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let request_hash = hex::encode(hasher.finalize());
    let now = wall_now();

    let inserted = on_db_write!(&state.db, pool => {
        sqlx::query(
            "INSERT INTO idempotency (scope, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(&scope)
        .bind(&key)
        .bind(&request_hash)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected()
    });
    if inserted == 0 {
        let saved: Option<SavedRow> = on_db!(&state.db, pool => {
            sqlx::query_as(
                "SELECT request_hash, status, content_type, body, created_at FROM idempotency WHERE scope = $1 AND key = $2",
            )
            .bind(&scope)
            .bind(&key)
            .fetch_optional(pool)
            .await?
        });
        let Some((saved_hash, status, content_type, body, created_at)) = saved else {
            return Err(ApiError::conflict("idempotency_in_flight", "a request with this key just finished; retry"));
        };
        if saved_hash != request_hash {
            return Err(ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request; use a new key",
            ));
        }
        match (status, body) {
            (Some(status), Some(body)) => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
                if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                    response.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
                return Ok(response);
            }
            _ => {
                // Still running, unless its process died: then take the claim over.
                let stale = now - created_at > Duration::seconds(LEASE_SECONDS);
                let taken = stale
                    && on_db_write!(&state.db, pool => {
                        sqlx::query(
                            "UPDATE idempotency SET created_at = $3 WHERE scope = $1 AND key = $2 AND status IS NULL AND created_at = $4",
                        )
                        .bind(&scope)
                        .bind(&key)
                        .bind(now)
                        .bind(created_at)
                        .execute(pool)
                        .await?
                        .rows_affected()
                    }) == 1;
                if !taken {
                    return Err(ApiError::conflict(
                        "idempotency_in_flight",
                        "a request with this Idempotency-Key is still being processed; retry shortly",
                    ));
                }
            }
        }
    }

    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(IdempotencyClaim { scope: scope.clone(), key: key.clone() });
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    if parts.headers.remove(SAVED_MARKER).is_some() {
        return Ok(Response::from_parts(parts, body));
    }
    let status = parts.status;
    let bytes = to_bytes(body, usize::MAX).await.map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
    if status.is_server_error() {
        // Nothing was changed: let a retry run again.
        on_db_write!(&state.db, pool => {
            sqlx::query("DELETE FROM idempotency WHERE scope = $1 AND key = $2 AND status IS NULL")
                .bind(&scope)
                .bind(&key)
                .execute(pool)
                .await?;
        });
    } else {
        let content_type =
            parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        on_db_write!(&state.db, pool => {
            sqlx::query("UPDATE idempotency SET status = $3, content_type = $4, body = $5 WHERE scope = $1 AND key = $2")
                .bind(&scope)
                .bind(&key)
                .bind(i32::from(status.as_u16()))
                .bind(content_type)
                .bind(bytes.to_vec())
                .execute(pool)
                .await?;
        });
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// Deletes saved responses older than the retention (wall-clock time, never
/// the simulated business clock).
pub async fn purge(state: &AppState) -> Result<u64, sqlx::Error> {
    let cutoff = wall_now() - Duration::hours(state.config.idempotency_retention_hours);
    Ok(on_db_write!(&state.db, pool => {
        sqlx::query("DELETE FROM idempotency WHERE created_at < $1").bind(cutoff).execute(pool).await?.rows_affected()
    }))
}
