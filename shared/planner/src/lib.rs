//! The one route planner: which courier takes which deliveries, in which
//! order, at what times.
//!
//! The model here is the planner's own and plain: locations are indices into
//! a travel matrix (seconds and metres), times are seconds from the plan's
//! epoch. [`check`] verifies any plan against it independently of the solver
//! — time windows, capacities in every dimension, skills (a refrigerated
//! compartment), shift ends, pickups before their deliveries and the
//! cold-exposure limit — so a solver bug shows up as a violation, never as a
//! courier sent somewhere impossible.

pub mod check;
mod cold;
pub mod model;
pub mod solomon;
pub mod solve;

pub use check::{Violation, check};
pub use model::*;
pub use solve::{Objective, Settings, SolveError, solve};
