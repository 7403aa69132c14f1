//! Xianlu's order lifecycle server: the single source of truth for orders.
//!
//! `app(state)` builds the whole HTTP surface; `Server::start` opens the
//! database, migrates, starts the event feed and serves. `main.rs` is a thin
//! command line over this library.

pub mod aftersales;
pub mod api;
pub mod audit;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod couriers;
pub mod db;
pub mod error;
pub mod evidence;
pub mod feed;
pub mod idempotency;
pub mod identity;
pub mod map;
pub mod metrics;
pub mod operations;
pub mod parties;
pub mod payments;
pub mod policy;
pub mod roads;
pub mod service;
pub mod stream;
pub mod tls;
pub mod tracking;
pub mod vault;
pub mod web;
pub mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use xianlu_domain::wire::Problem;

use crate::cache::OrderCache;
use crate::clock::Clock;
use crate::config::Config;
use crate::db::{Db, DbOptions};
use crate::error::{ApiError, PROBLEM_JSON};
use crate::feed::{Feed, Hub};
use crate::metrics::Metrics;
use crate::payments::{Gateway, HmacGateway};
use crate::service::OrderService;

pub const REQUEST_ID: &str = "x-request-id";

/// An HMAC-SHA256 keyed with `key` (webhook signatures, the phone blind index).
pub(crate) fn hmac_sha256(key: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key).unwrap_or_else(|_| panic!("HMAC rejected a key"))
}

/// Everything a request handler can reach.
pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub service: OrderService,
    pub hub: Arc<Hub>,
    pub metrics: Metrics,
    pub gateways: Vec<Box<dyn Gateway>>,
    pub identity: identity::Identity,
    pub openapi: String,
    /// The road network in use (the newest imported), if any.
    pub roads: Option<Arc<xianlu_roads::Router>>,
    /// Fences, positions pushed to subscribers, ETAs, notices and alerts.
    pub ops: Arc<operations::Operations>,
}

#[derive(Clone, Default)]
struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string()).ok().map(RequestId::new)
    }
}

/// Builds the state and starts the order writer (it stops when the state is dropped).
pub fn state(
    config: Config,
    db: Db,
    clock: Arc<dyn Clock>,
    head: u64,
    vault: Arc<vault::Vault>,
    roads: Option<Arc<xianlu_roads::Router>>,
) -> Arc<AppState> {
    let metrics = Metrics::new();
    let hub = Hub::new(head, metrics.clone());
    let cache = Arc::new(OrderCache::new(config.cache_capacity));
    let feed = Feed::new(db.clone(), hub.clone(), cache.clone(), metrics.clone());
    let (writer, changes) = tokio::sync::mpsc::channel(4096);
    let order_writer = writer::Writer::new(
        db.clone(),
        clock.clone(),
        (feed.clone(), cache.clone()),
        metrics.clone(),
        config.audit_anchor_every,
        config.cache_capacity,
    );
    tokio::spawn(order_writer.run(changes));
    let service = OrderService {
        db: db.clone(),
        clock,
        feed,
        cache,
        metrics: metrics.clone(),
        anchor_every: config.audit_anchor_every,
        writer,
        vault,
        phones: Arc::new(service::MaskedPhones),
    };
    let mut gateways: Vec<Box<dyn Gateway>> = Vec::new();
    if let Some(secret) = &config.payment_webhook_secret {
        gateways.push(Box::new(HmacGateway {
            secret: secret.clone(),
            tolerance_secs: config.payment_webhook_tolerance_secs,
        }));
    }
    let secret = match &config.token_secret {
        Some(secret) => secret.clone().into_bytes(),
        None => {
            tracing::warn!("no token_secret configured: tokens are signed with a random key and end with this process");
            let mut key = vec![0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
            key
        }
    };
    let identity =
        identity::Identity::new(db.clone(), &secret, config.access_token_ttl_secs, config.refresh_token_ttl_days);
    let (_, doc) = api::router(config.max_evidence_bytes);
    let openapi = doc.to_pretty_json().unwrap_or_default();
    let provider = map_provider(&config, roads.as_ref());
    let ops = operations::Operations::new(service.clone(), metrics.clone(), provider);
    Arc::new(AppState { config, db, service, hub, metrics, gateways, identity, openapi, roads, ops })
}

/// The travel-time source the configuration names.
fn map_provider(
    config: &Config,
    roads: Option<&Arc<xianlu_roads::Router>>,
) -> Option<Arc<dyn xianlu_maps::MapProvider>> {
    match config.map_provider.as_str() {
        "amap" => {
            let Some(key) = &config.amap_key else {
                tracing::error!("map_provider is amap but no amap_key is set: ETAs use straight lines");
                return None;
            };
            let mut amap = xianlu_maps::AMapConfig::new(key.clone());
            if let Some(base) = &config.amap_base_url {
                amap.base_url = base.clone();
            }
            match xianlu_maps::AMap::new(amap) {
                Ok(provider) => Some(Arc::new(provider)),
                Err(error) => {
                    tracing::error!(%error, "the AMap provider could not start: ETAs use straight lines");
                    None
                }
            }
        }
        _ => roads.map(|r| Arc::new(xianlu_maps::LocalRoads::new(r.clone())) as Arc<dyn xianlu_maps::MapProvider>),
    }
}

/// The whole HTTP surface.
pub fn app(state: Arc<AppState>) -> Router {
    let (api, _) = api::router(state.config.max_evidence_bytes);
    let api = api
        .route("/stream", get(stream::upgrade))
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs_page));
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/t/_app/{*file}", get(web::asset))
        .route("/t/{token}", get(web::page))
        .route("/app", get(web::app))
        .route("/courier", get(web::courier))
        .route("/courier/_app/{*file}", get(web::courier_asset))
        .route("/", get(|| async { axum::response::Redirect::to("/api/v1/docs") }))
        .fallback(|| async { ApiError::NotFound("no such endpoint; see /api/v1/docs".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::BadRequest {
                code: "method_not_allowed",
                message: "this endpoint does not take that method".into(),
            }
        })
        .layer(middleware::from_fn_with_state(state.clone(), strict_transport))
        .layer(middleware::from_fn(api_version))
        .layer(middleware::from_fn(problem_request_id))
        .layer(middleware::from_fn_with_state(state.clone(), idempotency::middleware))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(PropagateRequestIdLayer::new(header::HeaderName::from_static(REQUEST_ID)))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::new(header::HeaderName::from_static(REQUEST_ID), MakeId))
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()))
        .with_state(state)
}

/// Every response names the protocol version it speaks.
async fn api_version(request: Request, next: middleware::Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(xianlu_domain::wire::API_VERSION_HEADER, header::HeaderValue::from(xianlu_domain::wire::API_VERSION));
    response
}

/// Over HTTPS, tells browsers to use nothing else for a year (HSTS).
async fn strict_transport(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if state.config.tls_cert.is_some() {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
    response
}

/// Puts the request id into problem documents.
async fn problem_request_id(request: Request, next: Next) -> Response {
    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let response = next.run(request).await;
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if !is_problem || request_id.is_none() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, 1 << 20).await else {
        return Response::from_parts(parts, Body::empty());
    };
    match serde_json::from_slice::<Problem>(&bytes) {
        Ok(mut problem) => {
            problem.request_id = request_id;
            Response::from_parts(parts, Body::from(serde_json::to_vec(&problem).unwrap_or_default()))
        }
        Err(_) => Response::from_parts(parts, Body::from(bytes)),
    }
}

async fn record_metrics(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .http_duration
        .with_label_values(&[method.as_str(), route.as_str(), response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, format!("ready ({})", service::backend_name(&state.db))).into_response(),
        Err(_) => {
            ApiError::Conflict { code: "not_ready", message: "the database does not answer".into() }.into_response()
        }
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

async fn openapi_json(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.openapi.clone().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A self-contained docs page (no CDN: deployments may be offline).
async fn docs_page() -> Html<&'static str> {
    Html(include_str!("../../assets/api-docs.html"))
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Opens the database, migrates, starts the feed and serves on `config.listen`.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Server> {
        let db = Db::connect(&DbOptions {
            url: config.database_url(),
            sqlite_synchronous: config.sqlite_synchronous.clone(),
            max_connections: config.max_connections,
        })
        .await?;
        db.migrate().await?;
        let key_file = config.data_keys_file.clone().unwrap_or_else(|| vault::default_key_file(&config.data_dir));
        let vault = Arc::new(match &config.data_keys {
            Some(keys) => vault::Vault::parse(&keys.replace(';', "\n"))?,
            None => vault::Vault::load_or_create(&key_file)?,
        });
        let encrypted = vault.encrypt_plaintext_rows(&db).await?;
        if encrypted > 0 {
            tracing::info!(rows = encrypted, "encrypted personal data stored in plaintext by an older version");
        }
        let head = feed::stored_head(&db).await?;
        let roads = roads::load_latest(&db).await?.map(Arc::new);
        if let Some(router) = &roads {
            tracing::info!(source = %router.network().source, nodes = router.network().nodes.len(), "road network loaded");
        }
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = state(config, db, clock, head, vault, roads);
        let mut background = Vec::new();
        background.push(tokio::spawn(state.service.feed.clone().run()));
        let (tap, tapped) = tokio::sync::mpsc::channel(4096);
        state.service.feed.tap(tap);
        background.push(tokio::spawn(state.ops.clone().follow(tapped)));
        let purger = state.clone();
        background.push(tokio::spawn(async move {
            loop {
                match idempotency::purge(&purger).await {
                    Ok(n) if n > 0 => tracing::info!(purged = n, "expired idempotency records removed"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not purge idempotency records"),
                }
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        }));
        if matches!(state.db, Db::Sqlite(_)) {
            let db = state.db.clone();
            background.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Err(e) = db.checkpoint().await {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            }));
        }
        let timers = state.clone();
        let interval = Duration::from_millis(timers.config.timer_interval_ms.max(100));
        background.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                match timers.service.expire_due_substitutions().await {
                    Ok(n) if n > 0 => tracing::info!(expired = n, "unanswered substitutions shipped short"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not expire substitutions"),
                }
                match timers.ops.sweep().await {
                    Ok(s) if s.raised + s.cleared > 0 => {
                        tracing::info!(raised = s.raised, cleared = s.cleared, "alert rules swept")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not sweep the alert rules"),
                }
            }
        }));
        let router = app(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tls = tls::server_config(&state.config)?;
        let handle = match tls {
            None => tokio::spawn(async move {
                let serve = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "server stopped");
                }
            }),
            Some(tls) => {
                let server = axum_server::from_tcp_rustls(listener.into_std()?, tls)?;
                let shutdown = axum_server::Handle::new();
                let stopper = shutdown.clone();
                tokio::spawn(async move {
                    let _ = rx.await;
                    stopper.graceful_shutdown(Some(Duration::from_secs(2)));
                });
                tokio::spawn(async move {
                    let serve =
                        server.handle(shutdown).serve(router.into_make_service_with_connect_info::<SocketAddr>());
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "server stopped");
                    }
                })
            }
        };
        tracing::info!(%addr, backend = service::backend_name(&state.db), "xianlu-server listening");
        Ok(Server { addr, state, shutdown: Some(tx), handle, background })
    }

    pub fn url(&self) -> String {
        let scheme = if self.state.config.tls_cert.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, lets requests finish, stops background tasks, closes the pool.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for task in &self.background {
            task.abort();
        }
        // WebSocket connections do not end by themselves: give requests a moment, then go.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.handle).await;
        self.handle.abort();
        self.state.db.close().await;
    }

    /// Serves until the handle ends (Ctrl-C handling is the caller's).
    pub async fn wait(mut self) {
        let _ = (&mut self.handle).await;
    }
}
