//! The apps' web builds. The customer app is served where tracking links
//! point: `/t/{token}` is its page, `/t/_app/{file}` its script and wasm;
//! `/app` opens it without a link (log in, my orders, sign-off). The courier
//! app is `/courier` with `/courier/_app/{file}`. Files compressed ahead
//! (`{file}.gz`) go out as such to browsers that take gzip.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

fn not_built() -> ApiError {
    ApiError::NotFound("this app is not built on this server (set customer_web_dir or courier_web_dir)".into())
}

async fn file(dir: Option<&PathBuf>, name: &str, headers: &HeaderMap) -> ApiResult<Response> {
    let dir = dir.ok_or_else(not_built)?;
    // Plain names, in folders of plain names (the script's snippets).
    let plain = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if !name.split('/').all(plain) {
        return Err(ApiError::NotFound("no such file".into()));
    }
    let content_type = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        _ => return Err(ApiError::NotFound("no such file".into())),
    };
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let compressed = dir.join(format!("{name}.gz"));
    let (path, encoded) = if gzip && tokio::fs::try_exists(&compressed).await.unwrap_or(false) {
        (compressed, true)
    } else {
        (dir.join(name), false)
    };
    let bytes = tokio::fs::read(&path).await.map_err(|_| not_built())?;
    let mut response = Body::from(bytes).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated each time: names carry no version.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if encoded {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

/// The page a tracking link opens (the app reads the token from the address).
pub async fn page(
    State(state): State<Arc<AppState>>,
    Path(_token): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mut response = file(state.config.customer_web_dir.as_ref(), "index.html", &headers).await?;
    // The token is in the address: keep it out of other sites' logs.
    response.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(response)
}

/// The customer app without a link: log in, my orders, sign-off.
pub async fn app(State(state): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Response> {
    file(state.config.customer_web_dir.as_ref(), "index.html", &headers).await
}

/// The page's script, its snippets and wasm.
pub async fn asset(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    file(state.config.customer_web_dir.as_ref(), &name, &headers).await
}

/// The courier app in a browser.
pub async fn courier(State(state): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Response> {
    file(state.config.courier_web_dir.as_ref(), "index.html", &headers).await
}

/// The courier app's script, its snippets and wasm.
pub async fn courier_asset(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    file(state.config.courier_web_dir.as_ref(), &name, &headers).await
}
