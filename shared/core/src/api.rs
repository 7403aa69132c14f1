//! The typed API client.
//!
//! Every method maps to one endpoint. Access tokens are short-lived: on a
//! 401 the client refreshes once (one refresh at a time, however many
//! requests noticed) and repeats the request; if the refresh is refused the
//! session is over and the caller gets [`CoreError::Unauthenticated`].
//! Every response's protocol version is checked, so a server from the future
//! produces [`CoreError::Incompatible`] instead of a misread.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xianlu_domain::evidence::{EvidenceRecord, EvidenceUpload, PositionBatch, PositionFix, PositionReceipt};
use xianlu_domain::operations::{Alert, CourierDuty, CourierRoute, CourierStatus, DutyChange};
use xianlu_domain::wire::{
    API_VERSION, API_VERSION_HEADER, CommandRequest, LatLng, OrderPage, OrderView, Problem, RoadTile, StockLevel,
    StreamEvent,
};
use xianlu_domain::{CourierId, CustomerId, MerchantId, Order, OrderDraft, OrderId, WarehouseId};

use crate::error::{CoreError, CoreResult};

/// The logged-in user, as the server describes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub id: Uuid,
    pub username: String,
    /// `admin`, `merchant_owner`, `merchant_staff`, `warehouse_clerk`, `courier`, `customer`, `customer_service`.
    pub role: String,
    pub merchant_id: Option<MerchantId>,
    pub warehouse_id: Option<WarehouseId>,
    pub courier_id: Option<CourierId>,
    pub customer_id: Option<CustomerId>,
}

/// The tokens of a logged-in user. Apps keep it in the platform's secure
/// storage and hand it back with [`ApiClient::restore`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub user: Me,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tokens {
    access_token: String,
    refresh_token: String,
    user: Me,
}

/// Filters of the order list (all optional).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// For administrators (staff see their own merchant's whatever they ask).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<MerchantId>,
    /// Created at or after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub courier_id: Option<CourierId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The API client. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens.
        f.debug_struct("ApiClient").field("base", &self.inner.base).finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    /// `http(s)://host:port`, without a trailing slash.
    base: String,
    session: Mutex<Option<Session>>,
    /// A tracking link's token, standing in for a session: one order, read only.
    link: Option<String>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
}

/// How long one request may take before it counts as a network failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

impl ApiClient {
    /// A client for the server at `base` (`http://host:port` or `https://…`).
    pub fn new(base: &str) -> CoreResult<ApiClient> {
        Self::with_timeout(base, REQUEST_TIMEOUT)
    }

    pub fn with_timeout(base: &str, timeout: Duration) -> CoreResult<ApiClient> {
        Self::build(base, timeout, None)
    }

    /// A client whose connections leave from `local`: one device of many on
    /// a network of its own (a simulated courier's phone, say).
    #[cfg(feature = "native")]
    pub fn from_address(base: &str, local: std::net::IpAddr) -> CoreResult<ApiClient> {
        Self::build(base, REQUEST_TIMEOUT, Some(local))
    }

    fn build(base: &str, timeout: Duration, local: Option<std::net::IpAddr>) -> CoreResult<ApiClient> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CoreError::Refused(format!("the server address must start with http:// or https://: {base}")));
        }
        #[cfg(feature = "native")]
        let http = {
            // rustls with ring, as the server uses; installing twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .pool_idle_timeout(Duration::from_secs(30))
                .local_address(local)
                .build()
                .map_err(|e| CoreError::Network(e.to_string()))?
        };
        #[cfg(not(feature = "native"))]
        let http = {
            let _ = (timeout, local);
            reqwest::Client::new()
        };
        Ok(ApiClient {
            inner: Arc::new(Inner {
                http,
                base,
                session: Mutex::new(None),
                link: None,
                refreshing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// A client that sees one order through its tracking link (`t.…`, the
    /// last part of `/t/{token}`), with no login.
    pub fn for_tracking_link(base: &str, token: &str) -> CoreResult<ApiClient> {
        if !token.starts_with("t.")
            || token.len() < 10
            || !token[2..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(CoreError::Refused("not a tracking link".into()));
        }
        let client = Self::new(base)?;
        let inner = Inner {
            http: client.inner.http.clone(),
            base: client.inner.base.clone(),
            session: Mutex::new(None),
            link: Some(token.to_owned()),
            refreshing: tokio::sync::Mutex::new(()),
        };
        Ok(ApiClient { inner: Arc::new(inner) })
    }

    pub fn base(&self) -> &str {
        &self.inner.base
    }

    /// The current session, if logged in.
    pub fn session(&self) -> Option<Session> {
        self.inner.session.lock().ok().and_then(|s| s.clone())
    }

    /// The logged-in user.
    pub fn me(&self) -> Option<Me> {
        self.session().map(|s| s.user)
    }

    /// Continues a session saved earlier.
    pub fn restore(&self, session: Session) {
        self.set_session(Some(session));
    }

    fn set_session(&self, session: Option<Session>) {
        if let Ok(mut slot) = self.inner.session.lock() {
            *slot = session;
        }
    }

    fn access_token(&self) -> Option<String> {
        self.session().map(|s| s.access_token).or_else(|| self.inner.link.clone())
    }

    /// The push stream's address, with the access token (browsers cannot
    /// set headers on a WebSocket).
    pub fn stream_url(&self) -> CoreResult<String> {
        let token = self.access_token().ok_or_else(|| CoreError::Unauthenticated("log in first".into()))?;
        let ws = if let Some(rest) = self.inner.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", self.inner.base.trim_start_matches("http://"))
        };
        Ok(format!("{ws}/api/v1/stream?token={token}"))
    }

    pub async fn login(&self, username: &str, password: &str) -> CoreResult<Session> {
        let body = serde_json::json!({"username": username, "password": password});
        let tokens: Tokens = self.exchange("/api/v1/auth/login", &body).await?;
        let session =
            Session { access_token: tokens.access_token, refresh_token: tokens.refresh_token, user: tokens.user };
        self.set_session(Some(session.clone()));
        Ok(session)
    }

    /// Ends the session on the server and forgets it here.
    pub async fn logout(&self) -> CoreResult<()> {
        let result = self.call::<serde_json::Value>(Method::POST, "/api/v1/auth/logout", Some(&()), None).await;
        self.set_session(None);
        match result {
            Ok(_) | Err(CoreError::Unauthenticated(_)) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Refreshes the access token now (the push client does this when the
    /// stream refuses an expired token).
    pub async fn refresh_session(&self) -> CoreResult<()> {
        let token = self.access_token().ok_or_else(|| CoreError::Unauthenticated("log in first".into()))?;
        self.refresh(&token).await
    }

    /// Trades the refresh token for new tokens. Called by the client itself
    /// when an access token is refused; `stale` is the token that was.
    async fn refresh(&self, stale: &str) -> CoreResult<()> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let Some(session) = self.session() else {
            return Err(CoreError::Unauthenticated("log in first".into()));
        };
        if session.access_token != stale {
            return Ok(()); // another request refreshed meanwhile
        }
        let body = serde_json::json!({"refreshToken": session.refresh_token});
        match self.exchange::<Tokens>("/api/v1/auth/refresh", &body).await {
            Ok(tokens) => {
                self.set_session(Some(Session {
                    access_token: tokens.access_token,
                    refresh_token: tokens.refresh_token,
                    user: tokens.user,
                }));
                Ok(())
            }
            Err(CoreError::Server { problem }) if problem.status == 401 || problem.status == 400 => {
                self.set_session(None);
                Err(CoreError::Unauthenticated(problem.detail))
            }
            Err(other) => Err(other),
        }
    }

    /// An unauthenticated POST (login, refresh).
    async fn exchange<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> CoreResult<T> {
        let request = self.inner.http.post(format!("{}{path}", self.inner.base)).json(body);
        let response = request.send().await.map_err(network)?;
        check_version(&response)?;
        read(response).await
    }

    /// Sends a request with the bearer token, refreshing it once if refused.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        idempotency_key: Option<&str>,
    ) -> CoreResult<T> {
        let response = self.send_raw(method, path, body, idempotency_key).await?;
        read(response).await
    }

    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        idempotency_key: Option<&str>,
    ) -> CoreResult<reqwest::Response> {
        let mut refreshed = false;
        // A request that failed before any answer came (a pooled connection the
        // server had just closed) is sent once more when repeating it is safe:
        // reads, PUTs of content-addressed data, and keyed changes.
        let repeatable = matches!(method, Method::GET | Method::PUT | Method::DELETE) || idempotency_key.is_some();
        let mut resent = false;
        loop {
            let token = self.access_token().ok_or_else(|| CoreError::Unauthenticated("log in first".into()))?;
            let mut request =
                self.inner.http.request(method.clone(), format!("{}{path}", self.inner.base)).bearer_auth(&token);
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) if repeatable && !resent && error.is_request() => {
                    resent = true;
                    continue;
                }
                Err(error) => return Err(network(error)),
            };
            check_version(&response)?;
            if response.status() == StatusCode::UNAUTHORIZED && !refreshed {
                self.refresh(&token).await?;
                refreshed = true;
                continue;
            }
            if response.status() == StatusCode::UNAUTHORIZED {
                self.set_session(None);
                let problem = problem_of(response).await?;
                return Err(CoreError::Unauthenticated(problem.detail));
            }
            return Ok(response);
        }
    }

    // ---- orders -------------------------------------------------------

    pub async fn orders(&self, query: &OrderQuery) -> CoreResult<OrderPage> {
        let query = serde_urlencoded::to_string(query).map_err(|e| CoreError::Refused(e.to_string()))?;
        let query = if query.is_empty() { query } else { format!("?{query}") };
        self.call(Method::GET, &format!("/api/v1/orders{query}"), None::<&()>, None).await
    }

    /// The order of this client's tracking link (`NextStep::Gone` once it expired).
    pub async fn tracked_order(&self) -> CoreResult<OrderView> {
        let token = self.inner.link.clone().ok_or_else(|| CoreError::Refused("not a tracking-link client".into()))?;
        self.call(Method::GET, &format!("/api/v1/tracking/{token}"), None::<&()>, None).await
    }

    /// Where the order's couriers drove, from dispatch on.
    pub async fn trail(&self, id: OrderId) -> CoreResult<Vec<LatLng>> {
        let feature: serde_json::Value =
            self.call(Method::GET, &format!("/api/v1/orders/{id}/trail"), None::<&()>, None).await?;
        let coordinates = feature["geometry"]["coordinates"].as_array().cloned().unwrap_or_default();
        Ok(coordinates
            .iter()
            .filter_map(|c| Some(LatLng { lat: c.get(1)?.as_f64()?, lng: c.get(0)?.as_f64()? }))
            .collect())
    }

    /// The road geometry of a box (`[min_lng, min_lat, max_lng, max_lat]`), for the map.
    pub async fn map_roads(&self, bbox: [f64; 4], zoom: u8) -> CoreResult<RoadTile> {
        let [a, b, c, d] = bbox;
        self.call(Method::GET, &format!("/api/v1/map/roads?bbox={a},{b},{c},{d}&zoom={zoom}"), None::<&()>, None).await
    }

    /// Raises an after-sales matter on a signed order (photos uploaded as evidence first).
    pub async fn open_after_sales(
        &self,
        id: OrderId,
        new: &xianlu_domain::aftersales::NewAfterSales,
        idempotency_key: &str,
    ) -> CoreResult<xianlu_domain::aftersales::AfterSales> {
        self.call(Method::POST, &format!("/api/v1/orders/{id}/after-sales"), Some(new), Some(idempotency_key)).await
    }

    pub async fn after_sales(&self, id: OrderId) -> CoreResult<Vec<xianlu_domain::aftersales::AfterSales>> {
        self.call(Method::GET, &format!("/api/v1/orders/{id}/after-sales"), None::<&()>, None).await
    }

    /// The road route between two points, as a line (free-flow), for the map.
    pub async fn map_route(&self, from: LatLng, to: LatLng) -> CoreResult<Vec<LatLng>> {
        let path = format!("/api/v1/map/route?from={},{}&to={},{}", from.lat, from.lng, to.lat, to.lng);
        let route: serde_json::Value = self.call(Method::GET, &path, None::<&()>, None).await?;
        let line = route["polyline"].as_str().unwrap_or_default();
        let decoded = polyline::decode_polyline(line, 5).map_err(|e| CoreError::Protocol(e.to_string()))?;
        Ok(decoded.coords().map(|c| LatLng { lat: c.y, lng: c.x }).collect())
    }

    /// The road route through `points` in order, legs joined; a leg the
    /// roads cannot join is drawn straight, so the line never skips a stop.
    pub async fn map_path(&self, points: &[LatLng]) -> CoreResult<Vec<LatLng>> {
        let mut line: Vec<LatLng> = Vec::new();
        for leg in points.windows(2) {
            let part = match self.map_route(leg[0], leg[1]).await {
                Ok(part) if !part.is_empty() => part,
                Ok(_) => vec![leg[0], leg[1]],
                Err(CoreError::Server { problem }) if problem.status == 404 => vec![leg[0], leg[1]],
                Err(other) => return Err(other),
            };
            let skip = usize::from(line.last() == part.first());
            line.extend(part.into_iter().skip(skip));
        }
        Ok(line)
    }

    pub async fn order(&self, id: OrderId) -> CoreResult<OrderView> {
        self.call(Method::GET, &format!("/api/v1/orders/{id}"), None::<&()>, None).await
    }

    pub async fn order_events(&self, id: OrderId) -> CoreResult<Vec<StreamEvent>> {
        self.call(Method::GET, &format!("/api/v1/orders/{id}/events"), None::<&()>, None).await
    }

    pub async fn create_order(&self, draft: &OrderDraft, idempotency_key: &str) -> CoreResult<Order> {
        self.call(Method::POST, "/api/v1/orders", Some(draft), Some(idempotency_key)).await
    }

    pub async fn command(&self, id: OrderId, request: &CommandRequest, idempotency_key: &str) -> CoreResult<Order> {
        self.call(Method::POST, &format!("/api/v1/orders/{id}/commands"), Some(request), Some(idempotency_key)).await
    }

    // ---- evidence -----------------------------------------------------

    /// Uploads evidence; idempotent by its digest (201 the first time, 200 after).
    pub async fn put_evidence(&self, id: OrderId, sha256: &str, upload: &EvidenceUpload) -> CoreResult<EvidenceRecord> {
        self.call(Method::PUT, &format!("/api/v1/orders/{id}/evidence/{sha256}"), Some(upload), None).await
    }

    pub async fn evidence(&self, id: OrderId) -> CoreResult<Vec<EvidenceRecord>> {
        self.call(Method::GET, &format!("/api/v1/orders/{id}/evidence"), None::<&()>, None).await
    }

    /// The stored (re-encoded) image.
    pub async fn evidence_image(&self, id: OrderId, sha256: &str) -> CoreResult<Vec<u8>> {
        let response =
            self.send_raw(Method::GET, &format!("/api/v1/orders/{id}/evidence/{sha256}"), None::<&()>, None).await?;
        if !response.status().is_success() {
            return Err(CoreError::Server { problem: Box::new(problem_of(response).await?) });
        }
        Ok(response.bytes().await.map_err(network)?.to_vec())
    }

    /// Reports an accident or breakdown for every order the courier is
    /// delivering; answers which orders it reached.
    pub async fn vehicle_exception(
        &self,
        courier: CourierId,
        kind: xianlu_domain::ExceptionKind,
        note: &str,
        idempotency_key: &str,
    ) -> CoreResult<serde_json::Value> {
        let body = serde_json::json!({"kind": kind, "note": note});
        self.call(Method::POST, &format!("/api/v1/couriers/{courier}/exceptions"), Some(&body), Some(idempotency_key))
            .await
    }

    // ---- a courier's day ---------------------------------------------

    /// The courier's planned route: stops in order with planned times
    /// (`None` while the planner has given them nothing).
    pub async fn courier_route(&self, courier: CourierId) -> CoreResult<Option<CourierRoute>> {
        match self.call(Method::GET, &format!("/api/v1/couriers/{courier}/route"), None::<&()>, None).await {
            Ok(route) => Ok(Some(route)),
            Err(CoreError::Server { problem }) if problem.status == 404 => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn duty(&self, courier: CourierId) -> CoreResult<CourierDuty> {
        self.call(Method::GET, &format!("/api/v1/couriers/{courier}/duty"), None::<&()>, None).await
    }

    /// Goes on duty (until a shift end, if given) or off duty; off duty is
    /// refused (`goods_aboard`) while goods are still in the van.
    pub async fn set_duty(&self, courier: CourierId, change: &DutyChange) -> CoreResult<CourierDuty> {
        self.call(Method::PUT, &format!("/api/v1/couriers/{courier}/duty"), Some(change), None).await
    }

    // ---- the office ---------------------------------------------------

    /// The merchant's alerts, newest first (`open`: only those still holding).
    pub async fn alerts(&self, merchant: MerchantId, open: bool) -> CoreResult<Vec<Alert>> {
        self.call(Method::GET, &format!("/api/v1/merchants/{merchant}/alerts?open={open}&limit=500"), None::<&()>, None)
            .await
    }

    pub async fn acknowledge_alert(&self, alert: Uuid) -> CoreResult<Alert> {
        self.call(Method::POST, &format!("/api/v1/alerts/{alert}/acknowledge"), None::<&()>, None).await
    }

    /// Pins an order to a courier (`None` releases it): every plan respects it.
    /// How good the merchant's ETAs were: first estimate against arrival.
    pub async fn eta_accuracy(&self, merchant: MerchantId) -> CoreResult<xianlu_domain::operations::EtaAccuracy> {
        self.call(Method::GET, &format!("/api/v1/merchants/{merchant}/eta-accuracy"), None::<&()>, None).await
    }

    /// Asks the planner to plan the merchant's open orders now, for up to
    /// `seconds` (what staff do when orders wait with nobody to take them).
    pub async fn request_plan(&self, merchant: MerchantId, seconds: f64) -> CoreResult<()> {
        let path = format!("/api/v1/merchants/{merchant}/plans");
        let _: serde::de::IgnoredAny =
            self.call(Method::POST, &path, Some(&serde_json::json!({ "seconds": seconds })), None).await?;
        Ok(())
    }

    pub async fn pin_order(&self, order: OrderId, courier: Option<CourierId>) -> CoreResult<()> {
        let body = serde_json::json!({ "courierId": courier });
        let _: serde_json::Value =
            self.call(Method::PUT, &format!("/api/v1/orders/{order}/pin"), Some(&body), None).await?;
        Ok(())
    }

    /// Locks a courier's route as it is (or unlocks it).
    pub async fn lock_route(&self, courier: CourierId, locked: bool) -> CoreResult<()> {
        let body = serde_json::json!({ "locked": locked });
        let _: serde_json::Value =
            self.call(Method::PUT, &format!("/api/v1/couriers/{courier}/route-lock"), Some(&body), None).await?;
        Ok(())
    }

    /// The merchant's couriers for the office's map (van, duty, position, load, route, lock).
    pub async fn couriers(&self, merchant: MerchantId) -> CoreResult<Vec<CourierStatus>> {
        self.call(Method::GET, &format!("/api/v1/merchants/{merchant}/couriers"), None::<&()>, None).await
    }

    // ---- stock --------------------------------------------------------

    /// A warehouse's stock levels (on hand and reserved, grams or pieces).
    pub async fn stock(&self, warehouse: WarehouseId) -> CoreResult<Vec<StockLevel>> {
        self.call(Method::GET, &format!("/api/v1/warehouses/{warehouse}/stock"), None::<&()>, None).await
    }

    // ---- positions ----------------------------------------------------

    pub async fn post_positions(
        &self,
        courier: CourierId,
        batch: &PositionBatch,
        idempotency_key: &str,
    ) -> CoreResult<PositionReceipt> {
        self.call(Method::POST, &format!("/api/v1/couriers/{courier}/positions"), Some(batch), Some(idempotency_key))
            .await
    }

    pub async fn positions(&self, courier: CourierId, after_seq: u64) -> CoreResult<Vec<PositionFix>> {
        self.call(Method::GET, &format!("/api/v1/couriers/{courier}/positions?afterSeq={after_seq}"), None::<&()>, None)
            .await
    }
}

fn network(error: reqwest::Error) -> CoreError {
    CoreError::Network(error.to_string())
}

/// Refuses answers from a server that speaks another major protocol version.
fn check_version(response: &reqwest::Response) -> CoreResult<()> {
    let Some(value) = response.headers().get(API_VERSION_HEADER) else {
        return Ok(()); // a proxy's own error page, say: judged by its status
    };
    let version = value.to_str().ok().and_then(|v| v.split('.').next()?.trim().parse::<u32>().ok());
    match version {
        Some(v) if v == API_VERSION => Ok(()),
        Some(v) => Err(CoreError::Incompatible { server: v, ours: API_VERSION }),
        None => Err(CoreError::Protocol(format!("unreadable {API_VERSION_HEADER} header"))),
    }
}

/// Reads a success body as `T`, or a failure as a problem.
async fn read<T: DeserializeOwned>(response: reqwest::Response) -> CoreResult<T> {
    if !response.status().is_success() {
        return Err(CoreError::Server { problem: Box::new(problem_of(response).await?) });
    }
    let status = response.status();
    let bytes = response.bytes().await.map_err(network)?;
    let bytes = if bytes.is_empty() && status == StatusCode::NO_CONTENT { &b"null"[..] } else { &bytes[..] };
    serde_json::from_slice(bytes)
        .map_err(|e| CoreError::Protocol(format!("{status} with a body this app cannot read: {e}")))
}

/// The problem document of a failed response; an answer without one (a
/// proxy's error page, a cut connection) becomes a problem with its status.
async fn problem_of(response: reqwest::Response) -> CoreResult<Problem> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(network)?;
    Ok(serde_json::from_slice::<Problem>(&bytes).unwrap_or_else(|_| Problem {
        type_uri: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        code: format!("http_{}", status.as_u16()),
        instance: None,
        request_id: None,
        current_version: None,
    }))
}
