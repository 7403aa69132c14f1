//! After-sales matters raised after sign-off: checked by the domain
//! (`xianlu_domain::aftersales::check_new`) against the merchant's window,
//! stored as their own records, and told on the order's stream as an
//! `AFTER_SALES_OPENED` observation (the order's status and version stay).

use uuid::Uuid;
use xianlu_domain::aftersales::{AfterSales, AfterSalesStatus, NewAfterSales, check_new};
use xianlu_domain::{EventKind, OrderId, Rejection};

use crate::error::{ApiError, ApiResult};
use crate::policy::{self, Action, Scope};
use crate::service::{OrderService, RequestCtx};
use crate::{on_db, on_db_write};

impl OrderService {
    /// Raises a matter on a signed order: the customer, or the merchant's
    /// office on their behalf, within `window_hours` of signing.
    pub async fn open_after_sales(
        &self,
        ctx: &RequestCtx,
        id: OrderId,
        window_hours: u32,
        new: NewAfterSales,
    ) -> ApiResult<AfterSales> {
        let view = self.view_for(&ctx.scope, id).await?;
        policy::check_order_action(&ctx.scope, &view.order, Action::RaiseAfterSales)?;
        let signed_at = view
            .timeline
            .iter()
            .rev()
            .find(|e| matches!(e.event.kind, EventKind::Signed { .. }))
            .map(|e| e.at)
            .unwrap_or(view.order.updated_at);
        let now = self.clock.now();
        check_new(&view.order, signed_at, now, window_hours, &new).map_err(|rejection| match rejection {
            Rejection::Invalid { field, reason } if field == "window" => {
                ApiError::unprocessable("after_sales_window_closed", reason)
            }
            other => ApiError::Rejected(other),
        })?;
        // Photos are the order's own evidence, uploaded first.
        let known: Vec<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT sha256 FROM evidence WHERE order_id = $1").bind(id.uuid()).fetch_all(pool).await?
        });
        if let Some(missing) = new.photos.iter().find(|p| !known.iter().any(|(k,)| k == *p)) {
            return Err(ApiError::unprocessable(
                "unknown_evidence",
                format!("upload photo {missing} to the order first"),
            ));
        }
        let matter = AfterSales {
            id: Uuid::now_v7(),
            order_id: id,
            kind: new.kind,
            lines: new.lines,
            note: new.note,
            photos: new.photos,
            status: AfterSalesStatus::Open,
            opened_at: now,
        };
        let doc = serde_json::to_string(&matter).map_err(|e| ApiError::Internal(e.into()))?;
        on_db_write!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO after_sales (id, order_id, merchant_id, status, doc, opened_at) VALUES ($1, $2, $3, 'OPEN', $4, $5)",
            )
            .bind(matter.id)
            .bind(id.uuid())
            .bind(view.order.merchant_id.uuid())
            .bind(&doc)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        // The merchant's office and every follower of the order hear of it.
        self.record_observation(id, EventKind::AfterSalesOpened { after_sales_id: matter.id, kind: matter.kind }, now)
            .await?;
        Ok(matter)
    }

    /// The order's after-sales matters, oldest first, for whoever may read the order.
    pub async fn after_sales(&self, scope: &Scope, id: OrderId) -> ApiResult<Vec<AfterSales>> {
        self.view_for(scope, id).await?;
        let rows: Vec<(String,)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT doc FROM after_sales WHERE order_id = $1 ORDER BY opened_at, id")
                .bind(id.uuid())
                .fetch_all(pool)
                .await?
        });
        rows.iter().map(|(doc,)| serde_json::from_str(doc).map_err(|e| ApiError::Internal(e.into()))).collect()
    }
}
