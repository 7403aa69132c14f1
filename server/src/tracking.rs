//! Tracking links: an unguessable, expiring token that shows one order to
//! whoever holds it — the link a restaurant owner taps in a message. The
//! holder is a visitor of that order (phones masked, nothing internal) on
//! every endpoint that reads it, the push stream included; only the token's
//! SHA-256 is stored, and expiry runs on wall-clock time.

use serde::{Deserialize, Serialize};
use xianlu_domain::OrderId;

use crate::error::{ApiError, ApiResult};
use crate::identity::{TRACKING_PREFIX, TrackingLink, random_token, token_hash};
use crate::on_tx;
use crate::policy::{self, Action};
use crate::service::{OrderService, RequestCtx};

/// How long a link lives unless asked otherwise: three days.
pub const DEFAULT_HOURS: u32 = 72;
/// At most thirty days.
pub const MAX_HOURS: u32 = 720;

/// Asking for a link.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTrackingLink {
    /// Hours the link works (1–720, default 72).
    #[serde(default)]
    pub hours: Option<u32>,
}

impl OrderService {
    /// A new link to the order, for whoever may read it and speaks for the
    /// merchant or the customer (not a warehouse clerk, not another link).
    pub async fn create_tracking_link(
        &self,
        ctx: &RequestCtx,
        order: OrderId,
        new: NewTrackingLink,
    ) -> ApiResult<TrackingLink> {
        let hours = new.hours.unwrap_or(DEFAULT_HOURS);
        if !(1..=MAX_HOURS).contains(&hours) {
            return Err(ApiError::unprocessable("invalid_body", format!("hours: between 1 and {MAX_HOURS}")));
        }
        let view = self.view_for(&ctx.scope, order).await?;
        policy::check_order_action(&ctx.scope, &view.order, Action::ShareOrder)?;
        let token = format!("{TRACKING_PREFIX}{}", random_token());
        let now = crate::clock::wall_now();
        let expires_at = now + chrono::TimeDelta::hours(i64::from(hours));
        let mut tx = self.db.begin().await?;
        on_tx!(&mut tx, c => {
            sqlx::query(
                "INSERT INTO tracking_links (token_sha256, order_id, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash(&token))
            .bind(order.uuid())
            .bind(format!("{}:{}", ctx.actor.kind, ctx.actor.id))
            .bind(now)
            .bind(expires_at)
            .execute(&mut *c)
            .await?;
        });
        // Who shared which order until when; the token itself is never written down.
        let after = serde_json::json!({"expiresAt": expires_at, "tokenSha256Prefix": &token_hash(&token)[..16]});
        self.audit_admin(&mut tx, ctx, view.order.merchant_id.uuid(), "CREATE_TRACKING_LINK", order.to_string(), after)
            .await?;
        tx.commit().await?;
        Ok(TrackingLink { path: format!("/t/{token}"), token, order_id: order, expires_at })
    }
}
