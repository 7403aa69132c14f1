//! Xianlu's client core. The courier, customer and merchant apps talk to the
//! server only through this crate, so what can go wrong on a phone with bad
//! coverage is solved once, here:
//!
//! - [`api`] — a typed client for every endpoint the apps use: logs in,
//!   refreshes tokens transparently, turns problem documents into a
//!   [`CoreError`] that says what to do.
//! - [`push`] — the push stream: reconnects with backoff and jitter and
//!   resumes from the last sequence it stored, so every event arrives once,
//!   in order.
//! - [`outbox`] — every change a user makes is written locally first and
//!   sent in order with its own idempotency key (see the module for the
//!   protocol).
//! - [`location`] — fix filtering, phase-aware sampling and batching.
//! - [`track`] — the customer's order screen as a view-model, and how it
//!   follows a tracking link live.
//! - [`tracking`] — the customer's map as data: simplified trail, position,
//!   remaining route, ETA.
//! - [`signature`], [`photo`] — sign-off and photo evidence with digests the
//!   server recomputes; [`signoff`] — the customer's sign-off (lines accepted
//!   or refused, signature, receipt) as a view-model.
//! - [`report`] — exception reports in the courier's words, as commands.
//!
//! **No UI dependency**; builds for `wasm32-unknown-unknown` (fetch, the
//! browser's WebSocket, an in-memory store) and natively with the `native`
//! feature (rustls, tokio-tungstenite, SQLite in the app's data directory).

pub mod api;
pub mod board;
pub mod cache;
pub mod courier;
pub mod error;
mod live;
pub mod location;
pub mod office;
pub mod outbox;
#[cfg(feature = "native")]
pub mod photo;
pub mod push;
pub mod report;
pub mod retry;
pub mod rt;
pub mod signature;
pub mod signoff;
pub mod store;
pub mod substitute;
pub mod track;
pub mod tracking;
pub mod upload;

pub use api::{ApiClient, Session};
pub use error::{CoreError, NextStep};
pub use outbox::{Outbox, OutboxStatus};
pub use push::{ConnectionState, PushClient, PushEvent};
pub use retry::Backoff;
