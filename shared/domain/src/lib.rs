//! Xianlu's domain: ids, units and exact quantities, the order aggregate with
//! its lines, and the pure order state machine.
//!
//! **This crate does no I/O and reads no clock**: time comes in as an argument,
//! ids are minted by the caller. It builds for `wasm32-unknown-unknown` so the
//! apps can run the same state machine to predict what a button will do.

pub mod aftersales;
pub mod evidence;
pub mod ids;
pub mod machine;
pub mod operations;
pub mod order;
pub mod quantity;
pub mod wire;

pub use ids::*;
pub use machine::{
    Command, Event, EventKind, LineAcceptance, LineStock, OrderDraft, Rejection, Transition, apply, create,
};
pub use order::*;
pub use quantity::{Dimension, Fen, Price, Quantity, Unit};
