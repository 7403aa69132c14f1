//! Everything that differs between a phone, a desktop and a browser, in one
//! place: where the app keeps its data, how a photo becomes evidence, the
//! links that call or navigate, and where positions come from.
//!
//! Positions: a phone reads its GPS (the mobile bundle's location bridge
//! feeds [`CourierSession::offer_fix`] the same way). Here there is no GPS,
//! so on duty the app replays a recorded trail (`XIANLU_GPS_TRAIL`: one
//! `lat,lng` per line, a fix every `XIANLU_GPS_INTERVAL` seconds) or, without
//! one, drives along the road to the next stop at `XIANLU_GPS_SPEED` m/s.

use std::sync::Arc;
use std::time::Duration;

use xianlu_core::courier::CourierSession;
use xianlu_core::location::{Fix, advance_along, heading};
use xianlu_core::report::AttachedPhoto;
use xianlu_core::store::Store;
use xianlu_domain::evidence::EvidenceKind;
use xianlu_domain::wire::LatLng;

/// The device's store: a SQLite file natively (survives restarts, crashes
/// and reboots), memory in a browser tab.
#[cfg(not(feature = "web"))]
pub fn open_store() -> Result<Arc<dyn Store>, String> {
    let dir = std::env::var_os("XIANLU_COURIER_DATA").map(std::path::PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
        home.join(".local/share/xianlu-courier")
    });
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let store = xianlu_core::store::SqliteStore::open(&dir.join("courier.db")).map_err(|e| e.to_string())?;
    Ok(Arc::new(store))
}

#[cfg(feature = "web")]
pub fn open_store() -> Result<Arc<dyn Store>, String> {
    Ok(Arc::new(xianlu_core::store::MemoryStore::default()))
}

/// A photo from the camera (or a file) as evidence: natively resized and
/// re-encoded on the device; in a browser sent as it is (the server re-encodes).
#[cfg(not(feature = "web"))]
pub fn photo(bytes: &[u8], kind: EvidenceKind, position: Option<LatLng>) -> Result<AttachedPhoto, String> {
    let prepared = xianlu_core::photo::prepare(
        bytes,
        kind,
        chrono::Utc::now(),
        position,
        xianlu_core::photo::PhotoSettings::default(),
    )
    .map_err(|e| e.to_string())?;
    Ok(AttachedPhoto { sha256: prepared.sha256.clone(), upload: prepared.upload() })
}

#[cfg(feature = "web")]
pub fn photo(bytes: &[u8], kind: EvidenceKind, position: Option<LatLng>) -> Result<AttachedPhoto, String> {
    let (sha256, mut upload) = xianlu_core::upload::raw_photo(bytes, chrono::Utc::now())
        .ok_or_else(|| "the photo is empty or too large".to_owned())?;
    upload.kind = kind;
    upload.position = position;
    Ok(AttachedPhoto { sha256, upload })
}

/// Calls a number (the phone's dialer; a desktop shows the number).
pub fn dial_link(phone: &str) -> String {
    format!("tel:{}", phone.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect::<String>())
}

/// Opens the platform's navigation at a place (`geo:` URI, WGS-84).
pub fn navigation_link(at: LatLng) -> String {
    format!("geo:{:.6},{:.6}", at.lat, at.lng)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[cfg(not(feature = "web"))]
fn recorded_trail() -> Option<Vec<LatLng>> {
    let text = std::fs::read_to_string(std::env::var_os("XIANLU_GPS_TRAIL")?).ok()?;
    let points: Vec<LatLng> = text
        .lines()
        .filter_map(|line| {
            let (lat, lng) = line.split_once(',')?;
            Some(LatLng { lat: lat.trim().parse().ok()?, lng: lng.trim().parse().ok()? })
        })
        .collect();
    (!points.is_empty()).then_some(points)
}

#[cfg(feature = "web")]
fn recorded_trail() -> Option<Vec<LatLng>> {
    None
}

/// Feeds the session positions while `on_duty()` holds: a recorded trail,
/// or a drive along the road to the next stop.
pub async fn track(session: CourierSession, on_duty: impl Fn() -> bool) {
    let interval = Duration::from_secs_f64(env_f64("XIANLU_GPS_INTERVAL", 5.0).max(0.5));
    let speed = env_f64("XIANLU_GPS_SPEED", 8.0).max(0.5);
    let mut recorded = recorded_trail().map(|t| t.into_iter());
    let mut path: Vec<LatLng> = Vec::new();
    let mut heading_to: Option<LatLng> = None;
    let mut last: Option<LatLng> = None;
    loop {
        xianlu_core::rt::sleep(interval).await;
        if !on_duty() {
            continue;
        }
        let day = session.day();
        let here = match recorded.as_mut() {
            Some(trail) => match trail.next() {
                Some(p) => p,
                None => continue,
            },
            None => {
                let start = day.position.or(last).or_else(|| day.route.as_ref().map(|r| r.start));
                let Some(start) = start else { continue };
                let target = day.next_stop().and_then(|s| s.location);
                if target != heading_to {
                    heading_to = target;
                    path = match target {
                        Some(to) => session.api().map_route(start, to).await.unwrap_or_else(|_| vec![start, to]),
                        None => Vec::new(),
                    };
                }
                advance_along(&mut path, start, speed * interval.as_secs_f64())
            }
        };
        let fix = Fix {
            at: chrono::Utc::now(),
            position: here,
            accuracy_m: 8.0,
            speed_mps: Some(speed as f32),
            heading_deg: last.map(|from| heading(from, here)),
        };
        last = Some(here);
        let _ = session.offer_fix(fix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_dial_and_navigate() {
        assert_eq!(dial_link("138 1234-0001"), "tel:13812340001");
        assert_eq!(navigation_link(LatLng { lat: 39.93, lng: 116.42 }), "geo:39.930000,116.420000");
    }
}
