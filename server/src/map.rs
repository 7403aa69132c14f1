//! Map data for the apps, from the road network in use: the road geometry
//! of a bounding box (so every app draws the same map with no external tile
//! service) and routes. OpenStreetMap data carries its credit in every answer.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xianlu_domain::wire::{LatLng, RoadLine, RoadTile};

use crate::AppState;
use crate::api::{ApiQuery, Ctx};
use crate::error::{ApiError, ApiResult};

/// The largest box served at once, in degrees per side.
const MAX_BOX_DEGREES: f64 = 0.5;

fn no_map() -> ApiError {
    ApiError::NotFound("no road network is loaded; import one with `xianlu-server import-map`".into())
}

fn polyline(points: &[LatLng]) -> String {
    let coords = points.iter().map(|p| geo_types::Coord { x: p.lng, y: p.lat });
    polyline::encode_coordinates(coords, 5).unwrap_or_default()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct RoadsQuery {
    /// `minLng,minLat,maxLng,maxLat` (WGS-84), at most 0.5° a side.
    bbox: String,
    /// The map's zoom level (0–22): minor roads appear from 15.
    zoom: u8,
}

fn parse_bbox(text: &str) -> ApiResult<[f64; 4]> {
    let invalid = || ApiError::bad_request("invalid_bbox", "bbox must be minLng,minLat,maxLng,maxLat in WGS-84");
    let values: Vec<f64> =
        text.split(',').map(|v| v.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|_| invalid())?;
    let [min_lng, min_lat, max_lng, max_lat] = values.as_slice() else { return Err(invalid()) };
    let corners = [LatLng { lat: *min_lat, lng: *min_lng }, LatLng { lat: *max_lat, lng: *max_lng }];
    if !corners.iter().all(|c| c.is_valid()) || min_lng >= max_lng || min_lat >= max_lat {
        return Err(invalid());
    }
    if max_lng - min_lng > MAX_BOX_DEGREES || max_lat - min_lat > MAX_BOX_DEGREES {
        return Err(ApiError::unprocessable("bbox_too_large", format!("ask for at most {MAX_BOX_DEGREES}° a side")));
    }
    Ok([*min_lng, *min_lat, *max_lng, *max_lat])
}

/// The road geometry of a bounding box at a zoom level. Public and cacheable
/// (it is map data, not business data); answers `304` to a matching `If-None-Match`.
#[utoipa::path(get, path = "/map/roads", tag = "map", params(RoadsQuery),
    responses((status = 200, body = RoadTile), (status = 304, description = "Not modified"),
              (status = 400, body = xianlu_domain::wire::Problem), (status = 404, body = xianlu_domain::wire::Problem)))]
pub async fn roads(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<RoadsQuery>,
) -> ApiResult<Response> {
    let bbox = parse_bbox(&query.bbox)?;
    if query.zoom > 22 {
        return Err(ApiError::bad_request("invalid_zoom", "zoom must be 0–22"));
    }
    let router = state.roads.clone().ok_or_else(no_map)?;
    let network = router.network();
    let roads = network
        .segments_in(bbox, query.zoom)
        .into_iter()
        .map(|(class, a, b)| RoadLine {
            class: serde_json::to_value(class).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            polyline: polyline(&[a, b]),
        })
        .collect();
    let tile = RoadTile {
        source: network.source.clone(),
        attribution: network.osm.then(|| xianlu_roads::osm::ATTRIBUTION.to_owned()),
        tile_url: state.config.map_tile_url.clone(),
        zoom: query.zoom,
        roads,
    };
    let body = serde_json::to_vec(&tile).map_err(|e| ApiError::Internal(e.into()))?;
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
    let cached = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str());
    let mut response = if cached { StatusCode::NOT_MODIFIED.into_response() } else { body.into_response() };
    let out = response.headers_mut();
    if !cached {
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct RouteQuery {
    /// `lat,lng`
    from: String,
    /// `lat,lng`
    to: String,
}

/// A driving route.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MapRoute {
    pub meters: f64,
    /// Free-flow driving time.
    pub seconds: f64,
    /// Google encoded polyline, precision 5.
    pub polyline: String,
    /// How far the start and the end were from the nearest road, metres.
    pub snap_meters: [f64; 2],
    pub attribution: Option<String>,
}

fn parse_point(text: &str, what: &str) -> ApiResult<LatLng> {
    let invalid = || ApiError::bad_request("invalid_point", format!("{what} must be lat,lng in WGS-84"));
    let (lat, lng) = text.split_once(',').ok_or_else(invalid)?;
    let point =
        LatLng { lat: lat.trim().parse().map_err(|_| invalid())?, lng: lng.trim().parse().map_err(|_| invalid())? };
    if point.is_valid() { Ok(point) } else { Err(invalid()) }
}

/// The fastest driving route between two points on the road network.
#[utoipa::path(get, path = "/map/route", tag = "map", params(RouteQuery),
    responses((status = 200, body = MapRoute), (status = 400, body = xianlu_domain::wire::Problem),
              (status = 404, body = xianlu_domain::wire::Problem)))]
pub async fn route(
    State(state): State<Arc<AppState>>,
    Ctx(_ctx): Ctx,
    ApiQuery(query): ApiQuery<RouteQuery>,
) -> ApiResult<axum::Json<MapRoute>> {
    let (from, to) = (parse_point(&query.from, "from")?, parse_point(&query.to, "to")?);
    let router = state.roads.clone().ok_or_else(no_map)?;
    let found = tokio::task::spawn_blocking(move || {
        let mut calculator = router.calculator();
        router.route(&mut calculator, from, to).map(|r| (r, router.network().osm))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?;
    let (route, osm) = found.ok_or_else(|| ApiError::NotFound("no road leads from there to there".into()))?;
    Ok(axum::Json(MapRoute {
        meters: route.meters,
        seconds: route.seconds,
        polyline: polyline(&route.points),
        snap_meters: [route.snap_m.0, route.snap_m.1],
        attribution: osm.then(|| xianlu_roads::osm::ATTRIBUTION.to_owned()),
    }))
}
