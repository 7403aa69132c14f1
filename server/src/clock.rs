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

/// Business time that can be moved forward: the wall clock plus an offset.
/// Tests and the simulation move it; token expiry, rate limits and
/// idempotency retention read [`wall_now`] and never see the offset.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_ms: std::sync::atomic::AtomicI64,
}

impl ShiftedClock {
    /// Moves business time forward (or back, with a negative duration).
    pub fn advance(&self, by: chrono::Duration) {
        self.offset_ms.fetch_add(by.num_milliseconds(), std::sync::atomic::Ordering::AcqRel);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::Acquire);
        wall_now() + chrono::Duration::milliseconds(offset)
    }
}
