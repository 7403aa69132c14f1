//! The simulation's business clock: the server reads it, the simulation
//! moves it. It moves business time only; the server keeps reading the wall
//! clock for token expiry, rate limits and idempotency retention.

use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use xianlu_server::clock::Clock;

/// Business time = an anchor plus `speed` × the wall time since it was set.
/// Speed 0 holds time still between the simulation's steps (as fast as
/// possible); 60 runs a day in 24 minutes (for watching in the apps).
#[derive(Debug)]
pub struct SimClock {
    state: Mutex<Anchor>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    business: DateTime<Utc>,
    wall: Instant,
    speed: f64,
}

impl SimClock {
    /// Time held still at `start`.
    pub fn new(start: DateTime<Utc>) -> SimClock {
        SimClock { state: Mutex::new(Anchor { business: start, wall: Instant::now(), speed: 0.0 }) }
    }

    fn anchor(&self) -> std::sync::MutexGuard<'_, Anchor> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn at(anchor: &Anchor, wall: Instant) -> DateTime<Utc> {
        let elapsed = wall.saturating_duration_since(anchor.wall).as_secs_f64() * anchor.speed;
        anchor.business + TimeDelta::microseconds((elapsed * 1e6) as i64)
    }

    /// Runs business time at `speed` × the wall clock from now on.
    pub fn set_speed(&self, speed: f64) {
        let mut anchor = self.anchor();
        let now = Instant::now();
        *anchor = Anchor { business: Self::at(&anchor, now), wall: now, speed: speed.max(0.0) };
    }

    /// Moves business time to `to` (never backwards).
    pub fn advance_to(&self, to: DateTime<Utc>) {
        let mut anchor = self.anchor();
        let now = Instant::now();
        let current = Self::at(&anchor, now);
        *anchor = Anchor { business: current.max(to), wall: now, speed: anchor.speed };
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        let anchor = *self.anchor();
        // Microseconds, as the server's own clock: a value survives PostgreSQL.
        Self::at(&anchor, Instant::now()).trunc_subsecs(6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_time_moves_only_when_told_and_never_back() {
        let start = DateTime::parse_from_rfc3339("2030-06-01T21:00:00Z").map(|t| t.with_timezone(&Utc)).ok();
        let Some(start) = start else { panic!("a valid time") };
        let clock = SimClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance_to(start + TimeDelta::minutes(30));
        assert_eq!(clock.now(), start + TimeDelta::minutes(30));
        clock.advance_to(start);
        assert_eq!(clock.now(), start + TimeDelta::minutes(30), "never backwards");
        clock.set_speed(3600.0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(clock.now() >= start + TimeDelta::minutes(30) + TimeDelta::seconds(60), "an hour a second");
    }
}
