//! The hot-order cache (the requirements' scenario 1): an order's current view
//! is served from memory, kept coherent by the event feed, and loaded from the
//! database on a miss.
//!
//! A view loaded from the database is stored only if no event for that order
//! was observed while it was being loaded, so a slow read can never put a
//! stale view back after the feed invalidated it.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use xianlu_domain::OrderId;
use xianlu_domain::wire::OrderView;

const GENERATIONS: usize = 1024;

pub struct OrderCache {
    views: Mutex<quick_cache::unsync::Cache<OrderId, Arc<OrderView>>>,
    generations: Vec<AtomicU64>,
    hasher: std::collections::hash_map::RandomState,
}

/// Taken before loading from the database; hand it back to [`OrderCache::fill`].
#[derive(Debug, Clone, Copy)]
pub struct LoadTicket {
    id: OrderId,
    generation: u64,
}

impl OrderCache {
    pub fn new(capacity: usize) -> Self {
        OrderCache {
            views: Mutex::new(quick_cache::unsync::Cache::new(capacity.max(1))),
            generations: (0..GENERATIONS).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn slot(&self, id: &OrderId) -> &AtomicU64 {
        &self.generations[(self.hasher.hash_one(id) as usize) % GENERATIONS]
    }

    pub fn get(&self, id: &OrderId) -> Option<Arc<OrderView>> {
        self.views.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub fn ticket(&self, id: OrderId) -> LoadTicket {
        LoadTicket { id, generation: self.slot(&id).load(Ordering::SeqCst) }
    }

    /// Stores a view loaded from the database unless an event for the order
    /// arrived since the ticket was taken.
    pub fn fill(&self, ticket: LoadTicket, view: Arc<OrderView>) {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if self.slot(&ticket.id).load(Ordering::SeqCst) == ticket.generation {
            views.insert(ticket.id, view);
        }
    }

    /// Called by the feed for every committed event of an order.
    pub fn observe(&self, order: OrderId) {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        self.slot(&order).fetch_add(1, Ordering::SeqCst);
        views.remove(&order);
    }

    /// Drops everything (after changes that are not order events, such as a courier's name).
    pub fn clear(&self) {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        for g in &self.generations {
            g.fetch_add(1, Ordering::SeqCst);
        }
        views.clear();
    }
}
