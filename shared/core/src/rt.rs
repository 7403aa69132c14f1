//! The little the core needs from a runtime, on both platforms: spawn a
//! task, sleep, read the wall clock.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Runs a task in the background (tokio natively, the browser's event loop in wasm).
#[cfg(not(target_arch = "wasm32"))]
pub fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) {
    tokio::spawn(task);
}

#[cfg(target_arch = "wasm32")]
pub fn spawn<F: Future<Output = ()> + 'static>(task: F) {
    wasm_bindgen_futures::spawn_local(task);
}

#[cfg(all(not(target_arch = "wasm32"), feature = "native"))]
pub async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

#[cfg(target_arch = "wasm32")]
pub async fn sleep(duration: Duration) {
    gloo_timers::future::sleep(duration).await;
}

#[cfg(all(not(target_arch = "wasm32"), not(feature = "native")))]
pub async fn sleep(duration: Duration) {
    // Without a runtime of our own: a thread that wakes the waiter.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(duration);
        let _ = tx.send(());
    });
    let _ = rx.await;
}

/// The device's wall clock (UTC), for timestamps the user's actions carry.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}
