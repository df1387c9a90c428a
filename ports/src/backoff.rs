//! Jittered exponential backoff, for the loops that try a contended write again: the write path's
//! re-plan after another writer moved an item, and an adapter's retry of a moved stream head.
//!
//! The waits use "full jitter": before retry `n` a writer waits a uniformly random time between zero and
//! a ceiling that doubles with each retry up to a cap. Writers that collided once then spread out instead
//! of colliding again in lockstep, so many writers of one item converge instead of exhausting attempts.

use std::time::Duration;

/// A jittered exponential backoff: the ceiling of retry `n` (1-based) is `min(cap, base * 2^(n-1))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's wait.
    pub base: Duration,
    /// The largest ceiling.
    pub cap: Duration,
}

impl Backoff {
    /// A backoff from `base`, doubling up to `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The longest wait before retry `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.cap)
    }

    /// A wait before retry `retry` (1-based), uniform in `0..=ceiling(retry)`.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(fastrand::u64(0..=ceiling))
    }

    /// Waits before retry `retry` (1-based), on the tokio timer.
    pub async fn wait(&self, retry: u32) {
        let delay = self.delay(retry);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_from_base_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(50));
        let ceilings: Vec<u128> = (1..=7).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, vec![2, 4, 8, 16, 32, 50, 50]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_millis(50), "no overflow");
    }

    #[test]
    fn every_delay_is_within_its_ceiling_and_they_vary() {
        let backoff = Backoff::new(Duration::from_millis(4), Duration::from_millis(100));
        for retry in 1..=10 {
            let delays: Vec<Duration> = (0..200).map(|_| backoff.delay(retry)).collect();
            assert!(delays.iter().all(|d| *d <= backoff.ceiling(retry)), "retry {retry}");
            assert!(delays.iter().any(|d| *d != delays[0]), "retry {retry}: jittered");
        }
    }
}
