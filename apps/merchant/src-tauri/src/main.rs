//! The merchant app's native side: a Tauri v2 shell around the client
//! core's office session. Commands only convert types and turn errors into
//! `{code, message}` for the screens; every request, the push stream and the
//! outbox are the core's.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use xianlu_core::api::Me;
use xianlu_core::board::BoardFilter;
use xianlu_core::office::{OfficeSession, OfficeSettings, OfficeView, OrderDetail};
use xianlu_core::{ApiClient, CoreError};
use xianlu_domain::operations::{Alert, CourierStatus};
use xianlu_domain::wire::{LatLng, RoadTile, StockLevel};
use xianlu_domain::{Command, CourierId, OrderId, WarehouseId};

/// An error as the screens get it: a stable code and words to show.
#[derive(Debug, Serialize)]
struct UiError {
    code: String,
    message: String,
}

impl From<CoreError> for UiError {
    fn from(error: CoreError) -> Self {
        UiError { code: error.code().unwrap_or("failed").to_owned(), message: error.to_string() }
    }
}

fn not_logged_in() -> UiError {
    UiError { code: "unauthenticated".into(), message: "log in first".into() }
}

type UiResult<T> = Result<T, UiError>;

#[derive(Default)]
struct App {
    session: Mutex<Option<OfficeSession>>,
}

impl App {
    fn session(&self) -> UiResult<OfficeSession> {
        self.session.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(not_logged_in)
    }
}

/// The outbox lives in the app's data directory, so a change made on bad
/// Wi-Fi survives a restart.
fn store() -> UiResult<Arc<dyn xianlu_core::store::Store>> {
    let dir = std::env::var_os("XIANLU_MERCHANT_DATA").map(std::path::PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
        home.join(".local/share/xianlu-merchant")
    });
    std::fs::create_dir_all(&dir).map_err(|e| UiError { code: "storage".into(), message: e.to_string() })?;
    Ok(Arc::new(xianlu_core::store::SqliteStore::open(&dir.join("merchant.db"))?))
}

/// The server the log-in form suggests (`XIANLU_SERVER`, else the demo's).
#[tauri::command]
fn default_server() -> String {
    std::env::var("XIANLU_SERVER").unwrap_or_else(|_| "http://127.0.0.1:8080".into())
}

#[tauri::command]
async fn login(app: tauri::State<'_, App>, server: String, username: String, password: String) -> UiResult<Me> {
    let api = ApiClient::new(&server)?;
    api.login(&username, &password).await?;
    let me = api.me().ok_or_else(not_logged_in)?;
    let session = OfficeSession::start(api, None, store()?, OfficeSettings::default())?;
    if let Some(old) = app.session.lock().unwrap_or_else(|e| e.into_inner()).replace(session) {
        old.stop();
    }
    Ok(me)
}

#[tauri::command]
async fn logout(app: tauri::State<'_, App>) -> UiResult<()> {
    let session = app.session.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(session) = session {
        session.stop();
        session.api().logout().await?;
    }
    Ok(())
}

/// The board through `filter`, once the office has changed past `since`
/// (or after 20 s without a change): the screens ask again at once, so
/// changes arrive as they happen.
#[tauri::command]
async fn office(app: tauri::State<'_, App>, filter: BoardFilter, since: u64) -> UiResult<OfficeView> {
    let session = app.session()?;
    let mut rx = session.watch();
    let _ = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|o| o.revision > since)).await;
    let office = session.office();
    // New high-severity alerts become a desktop notification.
    for alert in session.take_fresh() {
        notify(&alert);
    }
    Ok(office.view(&filter))
}

/// A desktop notification where the desktop has a notification service.
fn notify(alert: &Alert) {
    let _ = std::process::Command::new("notify-send")
        .args(["--urgency=critical", "--app-name=鲜路", &format!("{} · {}", alert.order_number, alert.reason)])
        .spawn();
}

#[tauri::command]
async fn order(app: tauri::State<'_, App>, id: OrderId) -> UiResult<OrderDetail> {
    Ok(app.session()?.detail(id).await?)
}

/// A stored evidence image as a `data:` URL.
#[tauri::command]
async fn evidence_image(app: tauri::State<'_, App>, id: OrderId, sha256: String) -> UiResult<String> {
    let bytes = app.session()?.api().evidence_image(id, &sha256).await?;
    let mime = if bytes.starts_with(b"\x89PNG") { "image/png" } else { "image/jpeg" };
    Ok(format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommandArgs {
    id: OrderId,
    command: Command,
    expected_version: Option<u64>,
}

#[tauri::command]
async fn command(app: tauri::State<'_, App>, change: CommandArgs) -> UiResult<()> {
    Ok(app.session()?.command(change.id, change.command, change.expected_version)?)
}

#[tauri::command]
async fn acknowledge(app: tauri::State<'_, App>, alert: uuid::Uuid) -> UiResult<()> {
    Ok(app.session()?.acknowledge(alert).await?)
}

/// The merchant's couriers for the map.
#[tauri::command]
async fn couriers(app: tauri::State<'_, App>) -> UiResult<Vec<CourierStatus>> {
    let session = app.session()?;
    Ok(session.api().couriers(session.merchant()).await?)
}

/// The road geometry of a box, for the map.
#[tauri::command]
async fn roads(app: tauri::State<'_, App>, bbox: [f64; 4], zoom: u8) -> UiResult<RoadTile> {
    Ok(app.session()?.api().map_roads(bbox, zoom).await?)
}

/// Where the order's couriers drove, from dispatch on.
#[tauri::command]
async fn trail(app: tauri::State<'_, App>, id: OrderId) -> UiResult<Vec<LatLng>> {
    Ok(app.session()?.api().trail(id).await?)
}

/// A warehouse's stock, for choosing a substitute.
#[tauri::command]
async fn stock(app: tauri::State<'_, App>, warehouse: WarehouseId) -> UiResult<Vec<StockLevel>> {
    Ok(app.session()?.api().stock(warehouse).await?)
}

/// The road route through a courier's position and stops, for the map.
#[tauri::command]
async fn path(app: tauri::State<'_, App>, points: Vec<LatLng>) -> UiResult<Vec<LatLng>> {
    Ok(app.session()?.api().map_path(&points).await?)
}

/// Pins an order to a courier (`null` releases it).
#[tauri::command]
async fn pin(app: tauri::State<'_, App>, order: OrderId, courier: Option<CourierId>) -> UiResult<()> {
    Ok(app.session()?.api().pin_order(order, courier).await?)
}

/// Locks a courier's route as it is, or unlocks it.
#[tauri::command]
async fn lock(app: tauri::State<'_, App>, courier: CourierId, locked: bool) -> UiResult<()> {
    Ok(app.session()?.api().lock_route(courier, locked).await?)
}

fn main() {
    let result = tauri::Builder::default()
        .manage(App::default())
        .invoke_handler(tauri::generate_handler![
            default_server,
            login,
            logout,
            office,
            order,
            evidence_image,
            command,
            acknowledge,
            couriers,
            roads,
            trail,
            pin,
            lock,
            stock,
            path
        ])
        .run(tauri::generate_context!());
    if let Err(error) = result {
        eprintln!("the merchant app could not start: {error}");
        std::process::exit(1);
    }
}
