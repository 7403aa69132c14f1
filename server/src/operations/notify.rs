//! Notifications to customers go through channels. The push stream is the
//! one every deployment has (the notice becomes an `ARRIVING_SOON` event on
//! the order, so the customer's app and tracking link show it); SMS, WeChat
//! subscription messages and signed webhooks are further channels behind the
//! same trait. A notice carries ids and business facts only: a channel that
//! needs a phone number looks it up in the vault itself.

use futures_util::future::BoxFuture;
use xianlu_domain::EventKind;
use xianlu_domain::operations::Notice;

use crate::service::OrderService;

pub trait NotificationChannel: Send + Sync {
    fn name(&self) -> &'static str;
    fn deliver<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Writes the notice into the order's stream.
pub struct StreamChannel {
    pub service: OrderService,
}

impl NotificationChannel for StreamChannel {
    fn name(&self) -> &'static str {
        "stream"
    }

    fn deliver<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let kind = EventKind::ArrivingSoon { minutes: notice.minutes, eta: notice.eta };
            self.service
                .record_observation(notice.order_id, kind, self.service.clock.now())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(())
        })
    }
}
