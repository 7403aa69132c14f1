//! What every running session (the courier's day, the office) is made of:
//! a view-model shared between its background task and the screens, and the
//! life of that task — loading until the server answers, stopping.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, watch};
use xianlu_domain::wire::Topic;

use crate::api::ApiClient;
use crate::error::CoreError;
use crate::push::{ConnectionState, PushClient, PushEvent, PushSettings};
use crate::retry::Backoff;
use crate::store::Store;

/// A view-model changed in place and published to watchers after every
/// change. The one copy lives in the watch channel: a change costs what it
/// changes, not a copy of the whole (an office's board holds thousands of
/// orders and changes with every event of any of them).
pub(crate) struct Shared<T> {
    tx: watch::Sender<T>,
}

impl<T: Clone> Shared<T> {
    pub(crate) fn new(value: T) -> Shared<T> {
        Shared { tx: watch::Sender::new(value) }
    }

    pub(crate) fn get(&self) -> T {
        self.tx.borrow().clone()
    }

    /// Reads it; changes wait until the guard is dropped (never hold it across an update).
    pub(crate) fn lock(&self) -> watch::Ref<'_, T> {
        self.tx.borrow()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<T> {
        self.tx.subscribe()
    }

    /// Changes the view-model and publishes it.
    pub(crate) fn update<R>(&self, change: impl FnOnce(&mut T) -> R) -> R {
        let mut out = None;
        self.tx.send_modify(|value| out = Some(change(value)));
        match out {
            Some(out) => out,
            // `send_modify` runs its closure exactly once.
            None => unreachable!("the change ran"),
        }
    }
}

/// A session's background task: whether it should stop, a way to ask it to
/// load again now, and the push client it runs.
#[derive(Default)]
pub(crate) struct Lifecycle {
    stopped: AtomicBool,
    pub(crate) reload: Notify,
    push: Mutex<Option<PushClient>>,
}

impl Lifecycle {
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(push) = self.push.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            push.stop();
        }
        self.reload.notify_one();
    }

    /// Follows `topics` on the push stream (stopped with the session): the
    /// connection's state and the events.
    pub(crate) fn follow(
        &self,
        api: &ApiClient,
        store: &Arc<dyn Store>,
        topics: Vec<Topic>,
        settings: PushSettings,
    ) -> (watch::Receiver<ConnectionState>, mpsc::UnboundedReceiver<PushEvent>) {
        let (push, events) = PushClient::start(api.clone(), store.clone(), topics, settings);
        let connection = push.watch();
        *self.push.lock().unwrap_or_else(|e| e.into_inner()) = Some(push);
        (connection, events)
    }

    /// Runs `load` until it succeeds, waiting `backoff` between attempts (a
    /// reload request cuts the wait short) and telling `failed` each time.
    /// `false` if the session stopped, or cannot go on without the user
    /// (logged out, or a server speaking another protocol).
    pub(crate) async fn load_until_done<F, Fut>(
        &self,
        backoff: Backoff,
        mut load: F,
        mut failed: impl FnMut(&CoreError),
    ) -> bool
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), CoreError>>,
    {
        let mut attempt = 0;
        while !self.stopped() {
            match load().await {
                Ok(()) => return true,
                Err(error) => {
                    attempt += 1;
                    failed(&error);
                    if matches!(error, CoreError::Unauthenticated(_) | CoreError::Incompatible { .. }) {
                        return false;
                    }
                    tokio::select! {
                        _ = crate::rt::sleep(backoff.delay(attempt)) => {}
                        _ = self.reload.notified() => {}
                    }
                }
            }
        }
        false
    }
}
