//! Retry delays for the watcher, kept outside the state machine so that it can be swapped
//! (tests use a fixed seed or a recording backoff).

use std::time::Duration;

/// Gives the delay before each retry; `reset` after a healthy period.
pub trait Backoff: Send {
    /// The delay before the next attempt (grows with each call until `reset`).
    fn next_delay(&mut self) -> Duration;
    /// Forget past failures (called after a healthy period).
    fn reset(&mut self);
}

/// Exponential backoff with full jitter and a floor: the n-th delay is uniformly random
/// between `base` and `min(cap, base * 2^n)`. The floor means that even the first retry waits
/// at least one base tick, so no retry path can spin.
#[derive(Debug, Clone)]
pub struct ExponentialBackoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

/// Default ceiling of the delay between retries.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);

impl ExponentialBackoff {
    /// A backoff from `base` (at least 1 ms) up to `cap` (at least `base`).
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self::with_rng(base, cap, fastrand::Rng::new())
    }

    /// The same with a fixed seed, for reproducible tests.
    pub fn with_seed(base: Duration, cap: Duration, seed: u64) -> Self {
        Self::with_rng(base, cap, fastrand::Rng::with_seed(seed))
    }

    fn with_rng(base: Duration, cap: Duration, rng: fastrand::Rng) -> Self {
        let base = base.max(Duration::from_millis(1));
        ExponentialBackoff {
            base,
            cap: cap.max(base),
            attempt: 0,
            rng,
        }
    }

    /// The smallest delay this backoff gives.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest delay this backoff gives.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

impl Backoff for ExponentialBackoff {
    fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let span = (ceiling - self.base).as_nanos().min(u64::MAX as u128) as u64;
        self.base + Duration::from_nanos(self.rng.u64(0..=span))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds_and_reset() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        let mut b = ExponentialBackoff::with_seed(base, cap, 7);
        let mut ceilings = Vec::new();
        for _ in 0..20 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(
                d >= base && d <= ceiling,
                "{d:?} not in {base:?}..={ceiling:?}"
            );
            ceilings.push(ceiling);
        }
        assert_eq!(ceilings[0], base);
        assert_eq!(ceilings[1], base * 2);
        assert_eq!(ceilings[5], Duration::from_secs(16));
        assert_eq!(*ceilings.last().unwrap(), cap);
        b.reset();
        assert_eq!(b.ceiling(), base);
        assert_eq!(b.next_delay(), base);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b =
            ExponentialBackoff::with_seed(Duration::from_millis(100), Duration::from_secs(10), 1);
        for _ in 0..10 {
            b.next_delay();
        }
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(
            delays.len() > 15,
            "jitter should vary the delays: {delays:?}"
        );
    }

    #[test]
    fn degenerate_values_are_safe() {
        let mut b = ExponentialBackoff::new(Duration::ZERO, Duration::ZERO);
        for _ in 0..100 {
            assert!(b.next_delay() >= Duration::from_millis(1));
        }
    }
}
