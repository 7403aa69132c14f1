//! The local cache of the orders a user works on, so a courier can open
//! assignments, addresses and lines with no network. Views are kept by
//! version: an older copy never replaces a newer one.

use std::sync::Arc;

use xianlu_domain::OrderId;
use xianlu_domain::wire::OrderView;

use crate::api::ApiClient;
use crate::error::{CoreError, CoreResult};
use crate::store::Store;

#[derive(Clone)]
pub struct OrderCache {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for OrderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderCache")
    }
}

impl OrderCache {
    pub fn new(store: Arc<dyn Store>) -> OrderCache {
        OrderCache { store }
    }

    pub fn put(&self, view: &OrderView) -> CoreResult<()> {
        let json = serde_json::to_string(view).map_err(|e| CoreError::Storage(e.to_string()))?;
        self.store.cache_put(&view.order.id.to_string(), view.order.version, &json)
    }

    /// The cached view; an unreadable entry is an error, not a silent miss.
    pub fn get(&self, id: OrderId) -> CoreResult<Option<OrderView>> {
        match self.store.cache_get(&id.to_string())? {
            Some((_, json)) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| CoreError::Storage(format!("cached order {id} is unreadable: {e}"))),
            None => Ok(None),
        }
    }

    pub fn version(&self, id: OrderId) -> CoreResult<Option<u64>> {
        Ok(self.store.cache_get(&id.to_string())?.map(|(v, _)| v))
    }

    /// Every cached view that can be read.
    pub fn all(&self) -> CoreResult<Vec<OrderView>> {
        Ok(self.store.cache_all()?.into_iter().filter_map(|(_, _, json)| serde_json::from_str(&json).ok()).collect())
    }

    /// Fetches the order and caches it; on a network failure, the cached copy.
    pub async fn load(&self, api: &ApiClient, id: OrderId) -> CoreResult<OrderView> {
        match api.order(id).await {
            Ok(view) => {
                self.put(&view)?;
                Ok(view)
            }
            Err(error) if error.is_retryable() => self.get(id)?.ok_or(error),
            Err(error) => Err(error),
        }
    }

    /// Brings the cached copy up to `version` (from a push event) if it is older.
    pub async fn refresh_to(&self, api: &ApiClient, id: OrderId, version: u64) -> CoreResult<()> {
        if self.version(id)?.is_some_and(|v| v >= version) {
            return Ok(());
        }
        self.load(api, id).await.map(|_| ())
    }
}
