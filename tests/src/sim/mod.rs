//! A whole-city simulation that drives the real system: a world made from a
//! seed (`world`), a business clock the simulation moves (`clock`), and the
//! day itself (`run`): orders, picking, driving and delivering through the
//! real server's API and the real client core, then checks and figures.

pub mod clock;
pub mod run;
pub mod world;

pub use run::{Login, Options, Sim, Summary, run};
pub use world::{Rates, Scale, World};
