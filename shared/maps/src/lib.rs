//! Where routes and travel times come from: our own road graph or an
//! external map service, behind one seam.
//!
//! A [`MapProvider`] answers the two questions the delivery system asks of a
//! map: the route between two positions (for the customer's map and live
//! ETAs) and a travel-time matrix (for the route planner). [`LocalRoads`]
//! answers them from a prepared [`xianlu_roads::Router`]; [`AMap`] asks the
//! AMap (高德) Web Service over HTTP. Both are used as `Arc<dyn MapProvider>`.
//!
//! **Everything outside the AMap adapter is WGS-84.** AMap works in GCJ-02;
//! the adapter converts every coordinate it sends (WGS-84 → GCJ-02) and every
//! coordinate it receives (GCJ-02 → WGS-84) itself, with [`gcj02`]. No GCJ-02
//! position ever leaves [`amap`], so callers never need to know which
//! provider answered.

pub mod amap;
pub mod gcj02;
mod local;

use futures_util::future::BoxFuture;
use xianlu_domain::wire::LatLng;

pub use amap::{AMap, AMapConfig, DrivingStrategy};
pub use local::LocalRoads;

/// A route as a provider computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRoute {
    pub meters: f64,
    /// Driving time as the provider estimates it: free-flow for our own
    /// road graph, AMap's own estimate for AMap.
    pub seconds: f64,
    /// The road geometry from start to end, WGS-84.
    pub points: Vec<LatLng>,
}

/// Driving seconds from every source (rows) to every target (columns),
/// `None` where no road leads.
pub type Matrix = Vec<Vec<Option<f64>>>;

/// A source of routes and travel times. Object-safe: hold it as
/// `Arc<dyn MapProvider>` and call it from async handlers.
pub trait MapProvider: Send + Sync {
    /// A short, stable name for logs and metrics ("local-roads", "amap").
    fn name(&self) -> &'static str;

    /// The credit a map drawn from this provider's data must show, or `""`
    /// when none is owed.
    fn attribution(&self) -> &'static str;

    /// The driving route between two WGS-84 positions.
    fn route(&self, from: LatLng, to: LatLng) -> BoxFuture<'_, Result<ProviderRoute, MapError>>;

    /// Driving seconds from every source to every target: `sources.len()`
    /// rows of `targets.len()` entries each.
    fn matrix<'a>(&'a self, sources: &'a [LatLng], targets: &'a [LatLng]) -> BoxFuture<'a, Result<Matrix, MapError>>;
}

/// Why a provider could not answer. Each message says what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    /// A position given to the provider is not a WGS-84 position.
    #[error("({}, {}) is not a WGS-84 position; pass latitude and longitude in degrees", .0.lat, .0.lng)]
    InvalidPosition(LatLng),
    /// No road connects the positions (or one of them is too far from any road).
    #[error("no road route connects these positions; check that both are on or near a road")]
    NoRoute,
    /// The map service refused the key (wrong, recycled, or not for this service or address).
    #[error("the map service refused the API key ({info}); check the key and what it is enabled for")]
    Unauthorized { info: String },
    /// Too many requests in a short time: retrying shortly will work.
    #[error("the map service's rate limit was reached ({info}); retry shortly or send fewer requests at once")]
    RateLimited { info: String },
    /// The key's daily quota is used up: retrying today will not work.
    #[error("the map service's daily quota is used up ({info}); raise the quota or use the local road network")]
    QuotaExhausted { info: String },
    /// Any other refusal by the map service, with its own code and text.
    #[error("the map service answered with error {code} ({info}); retry later, and if it persists check the request")]
    Upstream { code: String, info: String },
    /// The map service did not answer within the configured timeout.
    #[error("the map service did not answer in time; retry later")]
    Timeout,
    /// The map service could not be reached.
    #[error("the map service cannot be reached: {0}; check the network and the service address")]
    Network(String),
    /// The map service answered something this code cannot read.
    #[error("the map service's answer is unreadable: {0}")]
    Malformed(String),
    /// The provider is set up wrongly (e.g. an empty key or a bad address).
    #[error("the map provider is misconfigured: {0}")]
    InvalidConfig(String),
    /// The computation itself failed (e.g. a routing task panicked).
    #[error("the route computation failed: {0}")]
    Internal(String),
}

impl MapError {
    /// Whether the same request may succeed if simply tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            MapError::RateLimited { .. } | MapError::Timeout | MapError::Network(_) => true,
            // AMap's gateway and engine failures (100xx busy/timeout, 3xxxx) and HTTP 5xx.
            MapError::Upstream { code, .. } => {
                matches!(code.as_str(), "10015" | "10016" | "10017")
                    || code.starts_with('3')
                    || code.starts_with("HTTP 5")
            }
            _ => false,
        }
    }
}

/// Refuses positions that are not WGS-84 degrees (NaN, out of range).
pub(crate) fn check_positions<'a>(positions: impl IntoIterator<Item = &'a LatLng>) -> Result<(), MapError> {
    match positions.into_iter().find(|p| !p.is_valid()) {
        Some(p) => Err(MapError::InvalidPosition(*p)),
        None => Ok(()),
    }
}
