//! Time is passed in. Business logic asks this clock, never the system.

use chrono::{DateTime, SubsecRound, Utc};

/// The source of business time.
///
/// A simulated clock may move business time; token expiry, rate limits and
/// idempotency retention always use [`wall_now`], never this.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The real time, truncated to microseconds so that a value survives a round
/// trip through PostgreSQL unchanged (the audit chain hashes it).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        wall_now()
    }
}

/// Wall-clock time for retention and expiry, whatever the business clock says.
pub fn wall_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
