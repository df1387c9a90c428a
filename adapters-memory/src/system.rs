//! Clocks and id sources: the real ones for `rookery serve`, and deterministic ones for tests.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rookery_domain::Timestamp;
use rookery_ports::{Clock, IdSource};

/// The system's wall clock, made monotonic within the process.
///
/// Wall clocks can step backwards (NTP corrections); the port forbids that, so this clock never
/// answers less than it answered before, holding still until the wall clock catches up.
#[derive(Debug, Clone, Default)]
pub struct SystemClock {
    last: Arc<AtomicU64>,
}

impl SystemClock {
    /// A clock reading the system time.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let wall = Timestamp::from_system_time(SystemTime::now()).as_millis();
        let previous = self.last.fetch_max(wall, Ordering::AcqRel);
        Timestamp::from_millis(previous.max(wall))
    }
}

/// A clock that moves only when told to, for tests of expiry and ordering.
///
/// Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(AtomicU64::new(start.as_millis())),
        }
    }

    /// Sets the time. Setting it backwards breaks the [`Clock`] contract; that is the test's choice to make.
    pub fn set(&self, now: Timestamp) {
        self.now.store(now.as_millis(), Ordering::Release);
    }

    /// Moves the time forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let add = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        // `fetch_update` cannot fail here because the closure always returns `Some`.
        let _ = self
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some(t.saturating_add(add)));
    }
}

impl Default for ManualClock {
    /// A clock at 2026-01-01T00:00:00Z, a fixed and readable instant for tests.
    fn default() -> Self {
        Self::new(Timestamp::from_millis(1_767_225_600_000))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.now.load(Ordering::Acquire))
    }
}

/// A small, fast pseudo-random generator (SplitMix64), good enough to spread ids, never for secrets.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator seeded from the process's hash randomness, which the standard library draws from the OS.
    pub(crate) fn from_entropy() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Self(hasher.finish())
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RANDOM_BITS: u32 = 80;
const RANDOM_MASK: u128 = (1u128 << RANDOM_BITS) - 1;

#[derive(Debug)]
struct UlidState {
    last_millis: u64,
    last_random: u128,
    rng: SplitMix64,
}

/// ULIDs: 48 bits of milliseconds and 80 random bits, as 26 characters of Crockford base32.
///
/// They sort by creation time. Within one millisecond (or if the wall clock steps back) the random part
/// of the previous id is incremented instead of drawn again, so ids from one source are strictly
/// increasing; ids from separate sources differ by their 80 random bits.
#[derive(Debug, Clone)]
pub struct UlidIds {
    state: Arc<Mutex<UlidState>>,
}

impl UlidIds {
    /// A source seeded from the process's randomness.
    pub fn new() -> Self {
        Self::with_rng(SplitMix64::from_entropy())
    }

    /// A source whose random bits come from `seed` (reproducible in tests, still time-based).
    pub fn seeded(seed: u64) -> Self {
        Self::with_rng(SplitMix64::new(seed))
    }

    fn with_rng(rng: SplitMix64) -> Self {
        Self {
            state: Arc::new(Mutex::new(UlidState {
                last_millis: 0,
                last_random: 0,
                rng,
            })),
        }
    }

    /// The next id for the given time in milliseconds (split out so tests can fix the time).
    fn next_at(&self, millis: u64) -> String {
        // A poisoned lock only means another thread panicked between two plain assignments; the state is still valid.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let millis = millis & ((1u64 << 48) - 1);
        if millis <= state.last_millis && (state.last_random < RANDOM_MASK || state.last_millis == (1u64 << 48) - 1) {
            state.last_random = (state.last_random + 1) & RANDOM_MASK;
        } else if millis <= state.last_millis {
            // The random part overflowed within one millisecond: borrow the next millisecond.
            state.last_millis += 1;
            state.last_random = 0;
        } else {
            state.last_millis = millis;
            let high = u128::from(state.rng.next_u64() & 0xFFFF);
            let low = u128::from(state.rng.next_u64());
            state.last_random = (high << 64) | low;
        }
        let value = (u128::from(state.last_millis) << RANDOM_BITS) | state.last_random;
        encode_ulid(value)
    }
}

impl Default for UlidIds {
    fn default() -> Self {
        Self::new()
    }
}

fn encode_ulid(value: u128) -> String {
    (0..26)
        .rev()
        .map(|i| char::from(CROCKFORD[((value >> (i * 5)) & 0x1F) as usize]))
        .collect()
}

impl IdSource for UlidIds {
    fn new_id(&self) -> String {
        self.next_at(Timestamp::from_system_time(SystemTime::now()).as_millis())
    }
}

/// Ids `<prefix>-000001`, `<prefix>-000002`, ...: deterministic, for tests. Clones share the counter.
#[derive(Debug, Clone)]
pub struct SequentialIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl SequentialIds {
    /// Ids `id-000001`, `id-000002`, ...
    pub fn new() -> Self {
        Self::with_prefix("id")
    }

    /// Ids `<prefix>-000001`, ...; the prefix must itself be a valid id start (letters and digits first).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            prefix: Arc::from(prefix),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl Default for SequentialIds {
    fn default() -> Self {
        Self::new()
    }
}

impl IdSource for SequentialIds {
    fn new_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:06}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_id(id: &str) -> bool {
        let mut bytes = id.bytes();
        (1..=128).contains(&id.len())
            && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    }

    #[test]
    fn system_clock_never_goes_backwards() {
        let clock = SystemClock::new();
        // Pretend an earlier call saw a time far in the future: later calls must not answer less.
        clock.last.store(u64::MAX / 2, Ordering::Release);
        assert_eq!(clock.now().as_millis(), u64::MAX / 2);
        let fresh = SystemClock::new();
        let mut previous = fresh.now();
        for _ in 0..1000 {
            let now = fresh.now();
            assert!(now >= previous);
            previous = now;
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        let other = clock.clone();
        assert_eq!(clock.now(), Timestamp::from_millis(1_000));
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(other.now(), Timestamp::from_millis(2_500));
        other.set(Timestamp::from_millis(10));
        assert_eq!(clock.now(), Timestamp::from_millis(10));
    }

    #[test]
    fn ulids_are_26_crockford_characters_sorted_by_time_and_strictly_increasing() {
        let ids = UlidIds::seeded(7);
        let a = ids.next_at(1_000);
        let b = ids.next_at(1_000);
        let c = ids.next_at(999);
        let d = ids.next_at(2_000);
        for id in [&a, &b, &c, &d] {
            assert_eq!(id.len(), 26);
            assert!(valid_id(id));
            assert!(id.bytes().all(|b| CROCKFORD.contains(&b)));
        }
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        // The time prefix (10 characters) of an id made at a later millisecond is larger.
        assert!(d[..10] > a[..10]);
        assert_eq!(encode_ulid(0), "0".repeat(26));
        assert_eq!(encode_ulid(u128::MAX), format!("7{}", "Z".repeat(25)));
    }

    #[test]
    fn ulid_random_overflow_borrows_the_next_millisecond() {
        let ids = UlidIds::seeded(1);
        let first = ids.next_at(5);
        if let Ok(mut state) = ids.state.lock() {
            state.last_random = RANDOM_MASK;
        }
        let next = ids.next_at(5);
        assert!(next > first);
        assert_eq!(next, encode_ulid(6u128 << RANDOM_BITS));
    }

    #[test]
    fn separate_ulid_sources_do_not_collide() {
        let (a, b) = (UlidIds::new(), UlidIds::new());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            assert!(seen.insert(a.new_id()));
            assert!(seen.insert(b.new_id()));
        }
    }

    #[test]
    fn sequential_ids_count_up_and_clones_share_the_counter() {
        let ids = SequentialIds::new();
        let clone = ids.clone();
        assert_eq!(ids.new_id(), "id-000001");
        assert_eq!(clone.new_id(), "id-000002");
        assert_eq!(SequentialIds::with_prefix("ev").new_id(), "ev-000001");
        assert!(valid_id(&ids.new_id()));
    }
}
