//! Routes and matrices from our own road graph.

use std::sync::{Arc, Mutex};

use fast_paths::PathCalculator;
use futures_util::future::BoxFuture;
use xianlu_domain::wire::LatLng;
use xianlu_roads::Router;

use crate::{MapError, MapProvider, Matrix, ProviderRoute, check_positions};

/// Calculators kept for reuse; each holds per-node arrays, so allocating one
/// per route would cost as much as the query on a large network.
const IDLE_CALCULATORS: usize = 8;

/// [`MapProvider`] over a prepared [`Router`] (contraction hierarchies).
///
/// Queries are CPU work of microseconds to milliseconds (a matrix can take
/// longer), so they run on tokio's blocking pool, never on an async worker.
#[derive(Clone)]
pub struct LocalRoads {
    router: Arc<Router>,
    calculators: Arc<Mutex<Vec<PathCalculator>>>,
}

impl std::fmt::Debug for LocalRoads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRoads").field("router", &self.router).finish_non_exhaustive()
    }
}

impl LocalRoads {
    pub fn new(router: Arc<Router>) -> LocalRoads {
        LocalRoads { router, calculators: Arc::new(Mutex::new(Vec::new())) }
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    fn route_blocking(
        router: &Router,
        calculators: &Mutex<Vec<PathCalculator>>,
        from: LatLng,
        to: LatLng,
    ) -> Option<ProviderRoute> {
        // The pool only ever holds whole calculators, so a poisoned lock is still usable.
        let reused = calculators.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let mut calculator = reused.unwrap_or_else(|| router.calculator());
        let route = router.route(&mut calculator, from, to);
        let mut idle = calculators.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < IDLE_CALCULATORS {
            idle.push(calculator);
        }
        route.map(|r| ProviderRoute { meters: r.meters, seconds: r.seconds, points: r.points })
    }
}

impl MapProvider for LocalRoads {
    fn name(&self) -> &'static str {
        "local-roads"
    }

    fn attribution(&self) -> &'static str {
        if self.router.network().osm { "© OpenStreetMap contributors" } else { "" }
    }

    fn route(&self, from: LatLng, to: LatLng) -> BoxFuture<'_, Result<ProviderRoute, MapError>> {
        Box::pin(async move {
            check_positions([&from, &to])?;
            let (router, calculators) = (self.router.clone(), self.calculators.clone());
            tokio::task::spawn_blocking(move || LocalRoads::route_blocking(&router, &calculators, from, to))
                .await
                .map_err(|e| MapError::Internal(format!("routing task failed: {e}")))?
                .ok_or(MapError::NoRoute)
        })
    }

    fn matrix<'a>(&'a self, sources: &'a [LatLng], targets: &'a [LatLng]) -> BoxFuture<'a, Result<Matrix, MapError>> {
        Box::pin(async move {
            check_positions(sources.iter().chain(targets))?;
            if sources.is_empty() || targets.is_empty() {
                return Ok(vec![Vec::new(); sources.len()]);
            }
            let router = self.router.clone();
            let (sources, targets) = (sources.to_vec(), targets.to_vec());
            tokio::task::spawn_blocking(move || router.matrix(&sources, &targets))
                .await
                .map_err(|e| MapError::Internal(format!("matrix task failed: {e}")))
        })
    }
}
