//! Problems and plans.

use serde::{Deserialize, Serialize};

/// Travel between locations: `seconds[from * n + to]`, `metres[…]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    pub size: usize,
    pub seconds: Vec<f64>,
    pub metres: Vec<f64>,
}

impl Matrix {
    pub fn seconds(&self, from: usize, to: usize) -> f64 {
        self.seconds[from * self.size + to]
    }

    pub fn metres(&self, from: usize, to: usize) -> f64 {
        self.metres[from * self.size + to]
    }
}

/// A courier and their vehicle for the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vehicle {
    pub id: String,
    /// Where the courier is now (or starts the shift).
    pub start: usize,
    /// Where the shift ends (`None`: wherever the last stop is).
    pub end: Option<usize>,
    /// Earliest departure and latest return, seconds from the plan's epoch.
    pub shift: (f64, f64),
    /// Per dimension (e.g. grams, litres), in the same order as jobs' demand.
    pub capacity: Vec<i64>,
    /// What the vehicle offers, e.g. `refrigerated`.
    pub skills: Vec<String>,
    /// Stops already under way, in order (the one the courier is driving to
    /// first): a re-plan keeps them as they are and plans around them.
    #[serde(default)]
    pub committed: Vec<String>,
    /// The rest of the courier's current route, in order: kept in this order
    /// (other stops may be inserted between them), so a re-plan changes what
    /// must change and little else.
    #[serde(default)]
    pub planned: Vec<String>,
}

/// Where a job's goods are picked up and left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Task {
    /// Loaded at the vehicle's start (the warehouse), left at `location`.
    Delivery { location: usize },
    /// Collected at `pickup` (e.g. a broken-down van) and left at `delivery`.
    PickupDelivery { pickup: usize, delivery: usize },
}

/// One order to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub task: Task,
    pub demand: Vec<i64>,
    /// Service must start inside one of these (seconds from the epoch).
    pub windows: Vec<(f64, f64)>,
    /// Seconds spent at the delivery stop.
    pub service: f64,
    /// Seconds at the pickup stop (pickup-and-delivery only).
    pub pickup_service: f64,
    /// Skills the vehicle must have.
    pub skills: Vec<String>,
    /// At most this many seconds between the vehicle leaving the cold room
    /// (the start of its route) and the delivery. Plain deliveries only:
    /// goods already out of the cold room (a transfer after a breakdown)
    /// carry what is left of their limit as a time window.
    pub max_exposure: Option<f64>,
    /// Only this vehicle may take it.
    pub pinned_to: Option<String>,
}

/// What a stop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopKind {
    Pickup,
    Delivery,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    pub job: String,
    pub kind: StopKind,
    pub location: usize,
    pub arrival: f64,
    /// When service starts (after waiting for the window to open).
    pub start: f64,
    pub departure: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub vehicle: String,
    /// When the vehicle leaves its start.
    pub departure: f64,
    pub stops: Vec<Stop>,
    /// Back at the end location (or the last stop's departure).
    pub arrival: f64,
    pub metres: f64,
}

/// Why a job could not be planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unassigned {
    pub job: String,
    /// A stable code: `time_window`, `capacity`, `skill`, `pinned_elsewhere`,
    /// `cold_exposure`, `committed_elsewhere`, `no_courier` or `no_feasible_route`.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Plan {
    pub routes: Vec<Route>,
    pub unassigned: Vec<Unassigned>,
}

impl Plan {
    pub fn metres(&self) -> f64 {
        self.routes.iter().map(|r| r.metres).sum()
    }

    /// Routes with at least one stop.
    pub fn vehicles_used(&self) -> usize {
        self.routes.iter().filter(|r| !r.stops.is_empty()).count()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub matrix: Matrix,
    pub vehicles: Vec<Vehicle>,
    pub jobs: Vec<Job>,
}
