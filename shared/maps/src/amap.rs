//! The AMap (高德) Web Service adapter, v3 API.
//!
//! - Route: `GET /v3/direction/driving?origin=lng,lat&destination=lng,lat`
//!   → `route.paths[0]`: `distance` (m), `duration` (s) and each step's
//!   `polyline` (`"lng,lat;lng,lat;…"`).
//! - Matrix: `GET /v3/distance?origins=lng,lat|lng,lat…&destination=lng,lat&type=1`
//!   (driving) → `results[]` with `origin_id` (1-based), `distance`,
//!   `duration`, and a `code` on entries that could not be measured. One call
//!   per target, at most [`MAX_ORIGINS_PER_CALL`] origins each.
//!
//! Every answer carries `status` (`"1"` success, `"0"` failure), `info` and
//! `infocode`; numbers arrive as strings and empty values as `[]`. A refusal
//! maps to a [`MapError`] by its code: key problems to `Unauthorized`, QPS
//! limits to `RateLimited`, daily quotas to `QuotaExhausted`, routing failures
//! to `NoRoute`, anything else to `Upstream`.
//!
//! **AMap speaks GCJ-02; this module is the only place that does.** Positions
//! are converted WGS-84 → GCJ-02 on the way out and GCJ-02 → WGS-84 on the way
//! in, so nothing else ever sees a GCJ-02 coordinate.
//!
//! The key travels in the query string, as AMap requires, so URLs are never
//! logged or put into errors, redirects are not followed, and `Debug` shows
//! `<redacted>` in its place.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use xianlu_domain::wire::LatLng;

use crate::gcj02::{gcj02_to_wgs84, wgs84_to_gcj02};
use crate::{MapError, MapProvider, Matrix, ProviderRoute, check_positions};

/// AMap's Web Service host.
pub const DEFAULT_BASE_URL: &str = "https://restapi.amap.com";

/// The most origins the distance API measures in one call.
pub const MAX_ORIGINS_PER_CALL: usize = 100;

/// Bounds the memory an answer can take (a cross-country route is a few MB).
const MAX_BODY_BYTES: usize = 16 << 20;

/// Which route AMap should prefer (its v3 `strategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DrivingStrategy {
    /// Shortest time (`0`), AMap's default.
    #[default]
    Fastest,
    /// The fastest route without toll roads (`1`).
    AvoidTolls,
    /// Shortest distance (`2`).
    Shortest,
    /// The fastest route around current congestion (`4`).
    AvoidCongestion,
}

impl DrivingStrategy {
    fn code(self) -> &'static str {
        match self {
            DrivingStrategy::Fastest => "0",
            DrivingStrategy::AvoidTolls => "1",
            DrivingStrategy::Shortest => "2",
            DrivingStrategy::AvoidCongestion => "4",
        }
    }
}

/// How to reach AMap. `Debug` never shows the key.
#[derive(Clone)]
pub struct AMapConfig {
    /// A key of the "Web服务" (Web Service) platform.
    pub key: String,
    /// `https://restapi.amap.com` unless testing against a stand-in.
    pub base_url: String,
    pub strategy: DrivingStrategy,
    /// The longest a whole request (connect, send, read) may take.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Distance calls in flight at once for one matrix. AMap limits
    /// concurrent queries per key (`CUQPS_HAS_EXCEEDED_THE_LIMIT`); the
    /// default suits the smallest tier.
    pub max_in_flight: usize,
}

impl AMapConfig {
    pub fn new(key: impl Into<String>) -> AMapConfig {
        AMapConfig {
            key: key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            strategy: DrivingStrategy::default(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 3,
        }
    }
}

impl std::fmt::Debug for AMapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AMapConfig")
            .field("key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("strategy", &self.strategy)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// [`MapProvider`] over the AMap Web Service. `Debug` never shows the key.
pub struct AMap {
    http: reqwest::Client,
    key: String,
    /// Without a trailing slash.
    base: String,
    strategy: DrivingStrategy,
    max_in_flight: usize,
}

impl std::fmt::Debug for AMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AMap")
            .field("key", &"<redacted>")
            .field("base", &self.base)
            .field("strategy", &self.strategy)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl AMap {
    pub fn new(config: AMapConfig) -> Result<AMap, MapError> {
        let key = config.key.trim().to_owned();
        if key.is_empty() {
            return Err(MapError::InvalidConfig("the AMap key is empty".into()));
        }
        let base = config.base_url.trim().trim_end_matches('/').to_owned();
        let parsed = Url::parse(&base)
            .map_err(|e| MapError::InvalidConfig(format!("the AMap address {base:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err(MapError::InvalidConfig(format!(
                "the AMap address must be http:// or https:// without a query: {base:?}"
            )));
        }
        if config.max_in_flight == 0 {
            return Err(MapError::InvalidConfig("max_in_flight must be at least 1".into()));
        }
        // rustls with ring, as the rest of the workspace; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout.min(config.timeout))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("xianlu-maps/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MapError::InvalidConfig(format!("cannot build the HTTP client: {}", describe(&e))))?;
        Ok(AMap { http, key, base, strategy: config.strategy, max_in_flight: config.max_in_flight })
    }

    /// One call: the answer's JSON once `status` says success.
    async fn call(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, MapError> {
        let query = params.iter().copied().chain([("key", self.key.as_str()), ("output", "json")]);
        let url = Url::parse_with_params(&format!("{}{path}", self.base), query)
            .map_err(|e| MapError::InvalidConfig(format!("cannot form a request to {path}: {e}")))?;
        let mut response = self.http.get(url).send().await.map_err(transport)?;
        let http_status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(MapError::Malformed(format!("the answer is larger than {MAX_BODY_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let json = serde_json::from_slice::<Value>(&body);
        if !http_status.is_success() {
            // A refusal in AMap's own shape says more than the status line.
            if let Ok(json) = &json
                && let Some(refusal) = refusal_in(json)
            {
                return Err(refusal);
            }
            return Err(http_refusal(http_status));
        }
        let json = json.map_err(|e| MapError::Malformed(format!("not JSON: {e}")))?;
        match refusal_in(&json) {
            Some(refusal) => Err(refusal),
            None if scalar_text(json.get("status")).as_deref() == Some("1") => Ok(json),
            None => Err(MapError::Malformed("the answer has no status".into())),
        }
    }

    /// Driving seconds from each origin to one destination, one distance call.
    async fn durations(&self, origins: &[LatLng], destination: LatLng) -> Result<Vec<Option<f64>>, MapError> {
        let origins_param = origins.iter().map(|p| gcj_param(*p)).collect::<Vec<_>>().join("|");
        let destination_param = gcj_param(destination);
        let json = self
            .call("/v3/distance", &[("origins", &origins_param), ("destination", &destination_param), ("type", "1")])
            .await?;
        let reply: DistanceReply =
            serde_json::from_value(json).map_err(|e| MapError::Malformed(format!("distance results: {e}")))?;
        let results = reply.results.ok_or_else(|| MapError::Malformed("the distance answer has no results".into()))?;
        // An origin AMap leaves out was not measured: no known road leads from it.
        let mut durations = vec![None; origins.len()];
        for result in results {
            let index = result
                .origin_id
                .number()
                .filter(|id| id.fract() == 0.0 && *id >= 1.0 && *id <= origins.len() as f64)
                .map(|id| id as usize - 1)
                .ok_or_else(|| {
                    MapError::Malformed(format!("origin_id {:?} is not one of the origins", result.origin_id))
                })?;
            // Entries that could not be measured carry a `code` (1: no road
            // between them, 2: too far from any road, 3: outside China) and -1s.
            let failed = result.code.as_ref().is_some_and(|c| !c.text().is_empty());
            durations[index] =
                if failed { None } else { result.duration.and_then(|d| d.number()).filter(|s| *s >= 0.0) };
        }
        Ok(durations)
    }
}

impl MapProvider for AMap {
    fn name(&self) -> &'static str {
        "amap"
    }

    fn attribution(&self) -> &'static str {
        "© AutoNavi (AMap)"
    }

    fn route(&self, from: LatLng, to: LatLng) -> BoxFuture<'_, Result<ProviderRoute, MapError>> {
        Box::pin(async move {
            check_positions([&from, &to])?;
            let (origin, destination) = (gcj_param(from), gcj_param(to));
            let json = self
                .call(
                    "/v3/direction/driving",
                    &[
                        ("origin", &origin),
                        ("destination", &destination),
                        ("strategy", self.strategy.code()),
                        ("extensions", "base"),
                    ],
                )
                .await?;
            // With no plan AMap answers `"count":"0"` and leaves `route` out (or empty).
            let route = match json.get("route") {
                Some(route @ Value::Object(_)) => route,
                _ => return Err(MapError::NoRoute),
            };
            let route = DrivingRoute::deserialize(route).map_err(|e| MapError::Malformed(format!("route: {e}")))?;
            let path = route.paths.into_iter().next().ok_or(MapError::NoRoute)?;
            let meters = path
                .distance
                .number()
                .filter(|m| *m >= 0.0)
                .ok_or_else(|| MapError::Malformed(format!("path distance {:?}", path.distance)))?;
            let seconds = path
                .duration
                .number()
                .filter(|s| *s >= 0.0)
                .ok_or_else(|| MapError::Malformed(format!("path duration {:?}", path.duration)))?;
            let mut gcj: Vec<LatLng> = Vec::new();
            for polyline in path.steps.iter().filter_map(|s| s.polyline.as_ref()) {
                for point in parse_polyline(&polyline.text())? {
                    // Consecutive steps share their joining point.
                    if gcj.last() != Some(&point) {
                        gcj.push(point);
                    }
                }
            }
            if gcj.is_empty() && meters > 0.0 {
                return Err(MapError::Malformed("the route has no geometry".into()));
            }
            let points = if gcj.is_empty() { vec![from] } else { gcj.into_iter().map(gcj02_to_wgs84).collect() };
            Ok(ProviderRoute { meters, seconds, points })
        })
    }

    fn matrix<'a>(&'a self, sources: &'a [LatLng], targets: &'a [LatLng]) -> BoxFuture<'a, Result<Matrix, MapError>> {
        Box::pin(async move {
            check_positions(sources.iter().chain(targets))?;
            let mut matrix = vec![vec![None; targets.len()]; sources.len()];
            if sources.is_empty() || targets.is_empty() {
                return Ok(matrix);
            }
            // One call per target and chunk of at most MAX_ORIGINS_PER_CALL origins.
            let mut calls = Vec::new();
            for (column, target) in targets.iter().enumerate() {
                for start in (0..sources.len()).step_by(MAX_ORIGINS_PER_CALL) {
                    calls.push((column, *target, start));
                }
            }
            let mut answers = stream::iter(calls)
                .map(|(column, target, start)| async move {
                    let end = (start + MAX_ORIGINS_PER_CALL).min(sources.len());
                    self.durations(&sources[start..end], target).await.map(|durations| (column, start, durations))
                })
                .buffer_unordered(self.max_in_flight);
            while let Some(answer) = answers.next().await {
                let (column, start, durations) = answer?;
                for (offset, seconds) in durations.into_iter().enumerate() {
                    matrix[start + offset][column] = seconds;
                }
            }
            Ok(matrix)
        })
    }
}

/// A position as AMap wants it: GCJ-02, `lng,lat`, six decimals (its limit; ~0.1 m).
fn gcj_param(wgs: LatLng) -> String {
    let gcj = wgs84_to_gcj02(wgs);
    format!("{:.6},{:.6}", gcj.lng, gcj.lat)
}

/// `"lng,lat;lng,lat;…"` → GCJ-02 positions.
fn parse_polyline(polyline: &str) -> Result<Vec<LatLng>, MapError> {
    polyline
        .split(';')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (lng, lat) =
                pair.split_once(',').ok_or_else(|| MapError::Malformed(format!("polyline point {pair:?}")))?;
            let point = match (lng.trim().parse::<f64>(), lat.trim().parse::<f64>()) {
                (Ok(lng), Ok(lat)) => LatLng { lat, lng },
                _ => return Err(MapError::Malformed(format!("polyline point {pair:?}"))),
            };
            if point.is_valid() { Ok(point) } else { Err(MapError::Malformed(format!("polyline point {pair:?}"))) }
        })
        .collect()
}

/// The refusal in an answer whose `status` is not `"1"`, if it is one.
fn refusal_in(json: &Value) -> Option<MapError> {
    let status = scalar_text(json.get("status"))?;
    if status == "1" {
        return None;
    }
    let info = scalar_text(json.get("info")).unwrap_or_default();
    let code = scalar_text(json.get("infocode")).unwrap_or_default();
    Some(classify(&code, &info))
}

/// AMap's infocodes (and their `info` names, which identify them as well).
const UNAUTHORIZED: &[(&str, &str)] = &[
    ("10001", "INVALID_USER_KEY"),
    ("10002", "SERVICE_NOT_AVAILABLE"),
    ("10005", "INVALID_USER_IP"),
    ("10006", "INVALID_USER_DOMAIN"),
    ("10007", "INVALID_USER_SIGNATURE"),
    ("10008", "INVALID_USER_SCODE"),
    ("10009", "USERKEY_PLAT_NOMATCH"),
    ("10011", "NOT_SUPPORT_HTTPS"),
    ("10012", "INSUFFICIENT_PRIVILEGES"),
    ("10013", "USER_KEY_RECYCLED"),
    ("10041", "NO_EFFECTIVE_INTERFACE"),
];
const RATE_LIMITED: &[(&str, &str)] = &[
    ("10004", "ACCESS_TOO_FREQUENT"),
    ("10010", "IP_QUERY_OVER_LIMIT"),
    ("10014", "QPS_HAS_EXCEEDED_THE_LIMIT"),
    ("10019", "CQPS_HAS_EXCEEDED_THE_LIMIT"),
    ("10020", "CKQPS_HAS_EXCEEDED_THE_LIMIT"),
    ("10021", "CUQPS_HAS_EXCEEDED_THE_LIMIT"),
];
const QUOTA_EXHAUSTED: &[(&str, &str)] = &[
    ("10003", "DAILY_QUERY_OVER_LIMIT"),
    ("10029", "ABROAD_DAILY_QUERY_OVER_LIMIT"),
    ("10044", "USER_DAILY_QUERY_OVER_LIMIT"),
    ("10045", "USER_ABROAD_DAILY_QUERY_OVER_LIMIT"),
];
const NO_ROUTE: &[(&str, &str)] = &[
    ("20800", "OUT_OF_SERVICE"),
    ("20801", "NO_ROADS_NEARBY"),
    ("20802", "ROUTE_FAIL"),
    ("20803", "OVER_DIRECTION_RANGE"),
];

fn classify(code: &str, info: &str) -> MapError {
    let is = |table: &[(&str, &str)]| table.iter().any(|(c, i)| *c == code || *i == info);
    let info_or_code = || if info.is_empty() { code.to_owned() } else { info.to_owned() };
    if is(UNAUTHORIZED) {
        MapError::Unauthorized { info: info_or_code() }
    } else if is(RATE_LIMITED) {
        MapError::RateLimited { info: info_or_code() }
    } else if is(QUOTA_EXHAUSTED) {
        MapError::QuotaExhausted { info: info_or_code() }
    } else if is(NO_ROUTE) {
        MapError::NoRoute
    } else {
        MapError::Upstream { code: code.to_owned(), info: info.to_owned() }
    }
}

fn http_refusal(status: StatusCode) -> MapError {
    let info = format!("HTTP {status}");
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => MapError::Unauthorized { info },
        StatusCode::TOO_MANY_REQUESTS => MapError::RateLimited { info },
        _ => MapError::Upstream {
            code: format!("HTTP {}", status.as_u16()),
            info: status.canonical_reason().unwrap_or("unexpected status").to_owned(),
        },
    }
}

/// A transport failure, with the URL (and so the key) left out.
fn transport(error: reqwest::Error) -> MapError {
    if error.is_timeout() { MapError::Timeout } else { MapError::Network(describe(&error.without_url())) }
}

/// An error and its causes on one line.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn scalar_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A value AMap sends as a string, sometimes as a number, and as `[]` when empty.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(f64),
    Empty(IgnoredAny),
}

impl Scalar {
    fn number(&self) -> Option<f64> {
        match self {
            Scalar::Text(s) => s.trim().parse::<f64>().ok(),
            Scalar::Number(n) => Some(*n),
            Scalar::Empty(_) => None,
        }
        .filter(|n| n.is_finite())
    }

    fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.trim().to_owned(),
            Scalar::Number(n) => n.to_string(),
            Scalar::Empty(_) => String::new(),
        }
    }
}

#[derive(Deserialize)]
struct DrivingRoute {
    #[serde(default)]
    paths: Vec<DrivingPath>,
}

#[derive(Deserialize)]
struct DrivingPath {
    distance: Scalar,
    duration: Scalar,
    #[serde(default)]
    steps: Vec<DrivingStep>,
}

#[derive(Deserialize)]
struct DrivingStep {
    polyline: Option<Scalar>,
}

#[derive(Deserialize)]
struct DistanceReply {
    results: Option<Vec<DistanceResult>>,
}

#[derive(Deserialize)]
struct DistanceResult {
    origin_id: Scalar,
    duration: Option<Scalar>,
    code: Option<Scalar>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_by_code_or_by_name() {
        assert!(matches!(classify("10001", "INVALID_USER_KEY"), MapError::Unauthorized { .. }));
        assert!(matches!(classify("", "USERKEY_PLAT_NOMATCH"), MapError::Unauthorized { .. }));
        assert!(matches!(classify("10021", "CUQPS_HAS_EXCEEDED_THE_LIMIT"), MapError::RateLimited { .. }));
        assert!(matches!(classify("10003", ""), MapError::QuotaExhausted { .. }));
        assert!(matches!(classify("20803", "OVER_DIRECTION_RANGE"), MapError::NoRoute));
        assert_eq!(
            classify("20000", "INVALID_PARAMS"),
            MapError::Upstream { code: "20000".into(), info: "INVALID_PARAMS".into() }
        );
        assert!(classify("10016", "SERVER_IS_BUSY").is_transient());
        assert!(!classify("20000", "INVALID_PARAMS").is_transient());
    }

    #[test]
    fn polylines_are_lng_lat_pairs() {
        let points = parse_polyline("116.384047,39.913345;116.385516,39.913353;").expect("parsed");
        assert_eq!(points, [LatLng { lat: 39.913345, lng: 116.384047 }, LatLng { lat: 39.913353, lng: 116.385516 }]);
        assert!(parse_polyline("116.38;39.91").is_err());
        assert!(parse_polyline("39.91,200.0").is_err(), "latitude out of range: lat and lng swapped");
    }

    #[test]
    fn positions_are_sent_as_gcj02_lng_lat_with_six_decimals() {
        // eviltransform's Beijing reference pair.
        assert_eq!(gcj_param(LatLng { lat: 39.911954, lng: 116.377817 }), "116.384047,39.913345");
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let config = AMapConfig::new("s3cr3t-key");
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let amap = AMap::new(config).expect("client");
        assert!(!format!("{amap:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_bad_configuration_is_refused() {
        assert!(matches!(AMap::new(AMapConfig::new("  ")), Err(MapError::InvalidConfig(_))));
        let bad_base = AMapConfig { base_url: "ftp://example.invalid".into(), ..AMapConfig::new("k") };
        assert!(matches!(AMap::new(bad_base), Err(MapError::InvalidConfig(_))));
        let no_calls = AMapConfig { max_in_flight: 0, ..AMapConfig::new("k") };
        assert!(matches!(AMap::new(no_calls), Err(MapError::InvalidConfig(_))));
    }
}
