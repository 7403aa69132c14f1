//! Exponential backoff with full jitter (AWS's "full jitter": a random wait
//! between zero and the capped exponential), so a thousand phones coming out
//! of the same tunnel do not retry in step. The base and cap are settings,
//! which is what lets the fault tests run in seconds.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first wait's upper bound.
    pub base: Duration,
    /// No wait is longer than this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_millis(500), max: Duration::from_secs(60) }
    }
}

impl Backoff {
    /// A policy for tests: retries within milliseconds.
    pub fn fast() -> Self {
        Backoff { base: Duration::from_millis(2), max: Duration::from_millis(50) }
    }

    /// The cap of the wait before attempt `attempt` (1 = the first retry).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before attempt `attempt`: uniform in `[ceiling/2, ceiling]`
    /// ("equal jitter"), so a wait is never near zero in a tight loop.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        half + half.mul_f64(unit_random())
    }
}

/// A uniform random number in `[0, 1)` from the platform's generator (via
/// UUID v4, which the core already needs for idempotency keys).
fn unit_random() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_jitter_within_it() {
        let backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(5) };
        assert_eq!(backoff.ceiling(1), Duration::from_millis(100));
        assert_eq!(backoff.ceiling(3), Duration::from_millis(400));
        assert_eq!(backoff.ceiling(30), Duration::from_secs(5));
        let waits: Vec<Duration> = (0..200).map(|_| backoff.delay(4)).collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_millis(400) && *w <= Duration::from_millis(800)));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "jitter must spread the waits");
    }
}
