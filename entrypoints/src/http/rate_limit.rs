//! Per-user token buckets: a sustained rate with a burst allowance, in bounded memory.
//!
//! A bucket that has refilled completely is indistinguishable from a fresh one, so such idle
//! buckets are dropped whenever the map reaches its bound; only a flood of distinct active users
//! can fill it, and then the least recently seen bucket makes room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rookery_domain::UserId;

/// How many buckets are kept before idle ones are evicted.
pub const DEFAULT_MAX_BUCKETS: usize = 10_000;

/// The limiter's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second; `0` turns limiting off.
    pub per_second: f64,
    /// The bucket's capacity.
    pub burst: f64,
}

impl RateLimit {
    /// `n` requests per second with a burst of `2n`, as `--rate-limit N` means; `0` is off.
    pub fn per_second(n: u32) -> Self {
        Self {
            per_second: f64::from(n),
            burst: 2.0 * f64::from(n),
        }
    }

    /// No limit.
    pub fn off() -> Self {
        Self {
            per_second: 0.0,
            burst: 0.0,
        }
    }

    /// True when this limit lets everything through.
    pub fn is_off(&self) -> bool {
        self.per_second <= 0.0 || self.burst <= 0.0
    }
}

impl Default for RateLimit {
    /// The contract's default: 50 requests per second, burst 100.
    fn default() -> Self {
        Self::per_second(50)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by user, shareable between requests.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limit: RateLimit,
    max_buckets: usize,
    buckets: Arc<Mutex<HashMap<UserId, Bucket>>>,
}

impl RateLimiter {
    /// A limiter enforcing `limit`.
    pub fn new(limit: RateLimit) -> Self {
        Self::with_capacity(limit, DEFAULT_MAX_BUCKETS)
    }

    /// A limiter keeping at most `max_buckets` buckets.
    pub fn with_capacity(limit: RateLimit, max_buckets: usize) -> Self {
        Self {
            limit,
            max_buckets: max_buckets.max(1),
            buckets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes a token for `user` at `now`: `Ok` when allowed, else how long until a token is available.
    ///
    /// # Errors
    /// The wait, when the bucket is empty.
    pub fn check_at(&self, user: &UserId, now: Instant) -> Result<(), Duration> {
        if self.limit.is_off() {
            return Ok(());
        }
        let RateLimit { per_second, burst } = self.limit;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(user) && buckets.len() >= self.max_buckets {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(user.clone()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    /// Takes a token for `user` now.
    ///
    /// # Errors
    /// The wait, when the bucket is empty.
    pub fn check(&self, user: &UserId) -> Result<(), Duration> {
        self.check_at(user, Instant::now())
    }

    /// How many buckets are held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// True when no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn evict(&self, buckets: &mut HashMap<UserId, Bucket>, now: Instant) {
        let RateLimit { per_second, burst } = self.limit;
        let refill = Duration::from_secs_f64(burst / per_second);
        buckets.retain(|_, b| now.saturating_duration_since(b.last) < refill);
        if buckets.len() >= self.max_buckets
            && let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.last).map(|(user, _)| user.clone())
        {
            buckets.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("valid user id")
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let limiter = RateLimiter::new(RateLimit::per_second(5));
        let alice = user("alice");
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check_at(&alice, t0).is_ok());
        }
        let wait = limiter.check_at(&alice, t0).expect_err("the burst is spent");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200), "{wait:?}");
        assert!(limiter.check_at(&alice, t0 + Duration::from_millis(200)).is_ok());
        // Another user has their own bucket.
        assert!(limiter.check_at(&user("bob"), t0).is_ok());
    }

    #[test]
    fn zero_turns_limiting_off() {
        let limiter = RateLimiter::new(RateLimit::per_second(0));
        let alice = user("alice");
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert!(limiter.check_at(&alice, t0).is_ok());
        }
        assert!(limiter.is_empty());
    }

    #[test]
    fn the_bucket_map_stays_bounded() {
        let limiter = RateLimiter::with_capacity(RateLimit::per_second(1), 100);
        let t0 = Instant::now();
        for i in 0..1_000 {
            let _ = limiter.check_at(&user(&format!("u{i}")), t0);
        }
        assert!(limiter.len() <= 100, "{}", limiter.len());
        // Once buckets have refilled they are evicted in one sweep.
        let later = t0 + Duration::from_secs(10);
        let _ = limiter.check_at(&user("late"), later);
        assert_eq!(limiter.len(), 1);
    }
}
