//! Fault injection: a deterministic plan of failures, and a wrapper that makes any adapter follow it.
//!
//! Reliability properties (no lost update, indexer convergence, no lost message) are only tested when
//! the infrastructure fails; [`Faulty`] makes it fail on purpose, reproducibly from a seed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rookery_domain::device::Devices;
use rookery_domain::projection::IndexChange;
use rookery_domain::{
    CollectionName, DeviceId, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Platform, Seq, StoredEvent,
    Timestamp, UserId, Version,
};
use rookery_ports::{
    AppendBatch, AppendError, EventStore, Failure, IdempotencyRecord, IdempotencyWrite, MediaError, MediaStore,
    ObjectStatus, PushError, PushGateway, PushOutcome, SearchError, SearchIndex, SearchPage, SearchQuery,
    SignedRequest, StoreError,
};

/// When an injected failure of a write happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// The call fails without reaching the adapter: nothing happened.
    #[default]
    BeforeCall,
    /// The adapter does the write, then the call reports a failure anyway: a lost acknowledgement,
    /// which the caller's retry must survive. Applies to writes only; reads fail before the call.
    AfterCommit,
}

/// Which calls a plan may fail (and counts towards "the n-th call").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultTarget {
    /// Every call.
    #[default]
    All,
    /// Calls that change something: `append`, `remember`, `apply`, `register`, `send`, `delete`.
    Writes,
    /// Calls that only read or sign.
    Reads,
}

/// A small xorshift64* generator: deterministic from its seed, which is all fault plans need.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is the one state xorshift never leaves.
        Self(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Default)]
struct Plan {
    target: FaultTarget,
    mode: FailMode,
    /// Numbers (counted over targeted calls) of the calls to fail.
    nth: BTreeSet<u64>,
    share: Option<(f64, XorShift)>,
    calls: u64,
    injected: u64,
    lost_acks: u64,
}

/// A plan of failures, shared by every clone (cheap to clone; give one to each [`Faulty`] wrapper).
///
/// A fresh plan fails nothing.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    plan: Arc<Mutex<Plan>>,
}

/// What the wrapper should do about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    FailBefore,
    FailAfter,
}

impl Faults {
    /// A plan that fails nothing (yet).
    pub fn new() -> Self {
        Self::default()
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        // The plan is plain counters: a panic elsewhere cannot leave it inconsistent, so poisoning is ignored.
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails the `n`-th targeted call from now (1 is the next one). Several can be pending at once.
    pub fn fail_nth(&self, n: u64) {
        let mut plan = self.plan();
        let at = plan.calls.saturating_add(n.max(1));
        plan.nth.insert(at);
    }

    /// Fails a share `p` (0 to 1) of targeted calls, chosen by a generator seeded with `seed`:
    /// the same seed and the same sequence of calls fail the same calls.
    pub fn fail_share(&self, p: f64, seed: u64) {
        self.plan().share = Some((p.clamp(0.0, 1.0), XorShift::new(seed)));
    }

    /// Which calls the plan may fail.
    pub fn target(&self, target: FaultTarget) {
        self.plan().target = target;
    }

    /// How injected failures of writes happen.
    pub fn mode(&self, mode: FailMode) {
        self.plan().mode = mode;
    }

    /// Stops failing: forgets pending `fail_nth` calls and the share. Counters are kept.
    pub fn heal(&self) {
        let mut plan = self.plan();
        plan.nth.clear();
        plan.share = None;
    }

    /// How many targeted calls were made.
    pub fn calls(&self) -> u64 {
        self.plan().calls
    }

    /// How many failures were injected (lost acknowledgements included).
    pub fn injected(&self) -> u64 {
        self.plan().injected
    }

    /// How many injected failures were lost acknowledgements (the write happened).
    pub fn lost_acks(&self) -> u64 {
        self.plan().lost_acks
    }

    fn verdict(&self, write: bool) -> Verdict {
        let mut plan = self.plan();
        let targeted = match plan.target {
            FaultTarget::All => true,
            FaultTarget::Writes => write,
            FaultTarget::Reads => !write,
        };
        if !targeted {
            return Verdict::Pass;
        }
        plan.calls += 1;
        let call = plan.calls;
        let nth = plan.nth.remove(&call);
        // The generator is drawn on every targeted call, so a seed fixes the whole schedule.
        let shared = plan.share.as_mut().is_some_and(|(p, rng)| rng.next_f64() < *p);
        if !(nth || shared) {
            return Verdict::Pass;
        }
        plan.injected += 1;
        if write && plan.mode == FailMode::AfterCommit {
            plan.lost_acks += 1;
            Verdict::FailAfter
        } else {
            Verdict::FailBefore
        }
    }
}

fn injected(what: &str) -> Failure {
    Failure::transient(format!("injected fault: {what}"))
}

/// An adapter that fails when its [`Faults`] plan says so, and otherwise does what `T` does.
///
/// A failure is the port's retryable `Unavailable` error. Before the call, the inner adapter is not
/// called at all; after the call ([`FailMode::AfterCommit`]), it did its work and the answer is lost.
#[derive(Debug, Clone)]
pub struct Faulty<T> {
    inner: T,
    faults: Faults,
}

impl<T> Faulty<T> {
    /// Wraps `inner`, failing as `faults` plans.
    pub fn new(inner: T, faults: Faults) -> Self {
        Self { inner, faults }
    }

    /// The wrapped adapter, for calls that should not fail (setup, assertions, adapter-specific methods).
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The plan.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Runs a write under the plan.
    async fn write<R, E>(
        &self,
        what: &str,
        call: impl Future<Output = Result<R, E>>,
        fail: impl FnOnce(Failure) -> E,
    ) -> Result<R, E> {
        match self.faults.verdict(true) {
            Verdict::Pass => call.await,
            Verdict::FailBefore => Err(fail(injected(what))),
            Verdict::FailAfter => {
                // Whatever the adapter answered, the caller never hears it.
                let _ = call.await;
                Err(fail(injected(&format!("{what} (acknowledgement lost)"))))
            }
        }
    }

    /// Runs a read under the plan.
    async fn read<R, E>(
        &self,
        what: &str,
        call: impl Future<Output = Result<R, E>>,
        fail: impl FnOnce(Failure) -> E,
    ) -> Result<R, E> {
        match self.faults.verdict(false) {
            Verdict::Pass => call.await,
            Verdict::FailBefore | Verdict::FailAfter => Err(fail(injected(what))),
        }
    }
}

impl<T: EventStore> EventStore for Faulty<T> {
    async fn append(&self, batch: AppendBatch) -> Result<Vec<StoredEvent>, AppendError> {
        self.write("append", self.inner.append(batch), AppendError::Unavailable)
            .await
    }

    async fn remember(&self, write: IdempotencyWrite) -> Result<(), AppendError> {
        self.write("remember", self.inner.remember(write), AppendError::Unavailable)
            .await
    }

    async fn idempotency(&self, owner: &UserId, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.read(
            "idempotency",
            self.inner.idempotency(owner, key),
            StoreError::Unavailable,
        )
        .await
    }

    async fn last_seq(&self, owner: &UserId) -> Result<Seq, StoreError> {
        self.read("last_seq", self.inner.last_seq(owner), StoreError::Unavailable)
            .await
    }

    async fn read_feed(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(
            "read_feed",
            self.inner.read_feed(owner, after, limit),
            StoreError::Unavailable,
        )
        .await
    }

    async fn read_messages(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(
            "read_messages",
            self.inner.read_messages(owner, after, limit),
            StoreError::Unavailable,
        )
        .await
    }

    async fn item_head(&self, owner: &UserId, key: &ItemKey) -> Result<ItemHead, StoreError> {
        self.read("item_head", self.inner.item_head(owner, key), StoreError::Unavailable)
            .await
    }

    async fn item_history(
        &self,
        owner: &UserId,
        key: &ItemKey,
        after: Version,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(
            "item_history",
            self.inner.item_history(owner, key, after, limit),
            StoreError::Unavailable,
        )
        .await
    }

    async fn list_items(
        &self,
        owner: &UserId,
        collection: &CollectionName,
        after: Option<&ItemId>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        self.read(
            "list_items",
            self.inner.list_items(owner, collection, after, limit),
            StoreError::Unavailable,
        )
        .await
    }

    async fn devices(&self, owner: &UserId) -> Result<Devices, StoreError> {
        self.read("devices", self.inner.devices(owner), StoreError::Unavailable)
            .await
    }

    async fn media(&self, owner: &UserId, id: &MediaId) -> Result<Option<MediaObject>, StoreError> {
        self.read("media", self.inner.media(owner, id), StoreError::Unavailable)
            .await
    }

    async fn owners(&self, after: Option<&UserId>, limit: usize) -> Result<Vec<UserId>, StoreError> {
        self.read("owners", self.inner.owners(after, limit), StoreError::Unavailable)
            .await
    }

    async fn erase_owner(&self, owner: &UserId, at: Timestamp) -> Result<Timestamp, StoreError> {
        self.write(
            "erase_owner",
            self.inner.erase_owner(owner, at),
            StoreError::Unavailable,
        )
        .await
    }

    async fn erased(&self, owner: &UserId) -> Result<Option<Timestamp>, StoreError> {
        self.read("erased", self.inner.erased(owner), StoreError::Unavailable)
            .await
    }
}

impl<T: SearchIndex> SearchIndex for Faulty<T> {
    async fn apply(&self, changes: &[IndexChange]) -> Result<(), SearchError> {
        self.write("apply", self.inner.apply(changes), SearchError::Unavailable)
            .await
    }

    async fn query(&self, query: &SearchQuery) -> Result<SearchPage, SearchError> {
        self.read("query", self.inner.query(query), SearchError::Unavailable)
            .await
    }

    async fn erase_owner(&self, owner: &UserId) -> Result<(), SearchError> {
        self.write("erase_owner", self.inner.erase_owner(owner), SearchError::Unavailable)
            .await
    }
}

impl<T: PushGateway> PushGateway for Faulty<T> {
    async fn register(
        &self,
        owner: &UserId,
        device_id: &DeviceId,
        platform: Platform,
        token: &str,
        current: Option<&str>,
    ) -> Result<String, PushError> {
        let call = self.inner.register(owner, device_id, platform, token, current);
        self.write("register", call, PushError::Unavailable).await
    }

    async fn send(&self, endpoint: &str, platform: Platform, payload: &str) -> Result<PushOutcome, PushError> {
        self.write(
            "send",
            self.inner.send(endpoint, platform, payload),
            PushError::Unavailable,
        )
        .await
    }

    async fn delete(&self, owner: &UserId, device_id: &DeviceId, endpoint: &str) -> Result<(), PushError> {
        let call = self.inner.delete(owner, device_id, endpoint);
        self.write("delete", call, PushError::Unavailable).await
    }

    async fn forget_owner(&self, owner: &UserId) -> Result<(), PushError> {
        self.write("forget_owner", self.inner.forget_owner(owner), PushError::Unavailable)
            .await
    }
}

impl<T: MediaStore> MediaStore for Faulty<T> {
    async fn upload_url(
        &self,
        object: &MediaObject,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<SignedRequest, MediaError> {
        self.read(
            "upload_url",
            self.inner.upload_url(object, now, ttl),
            MediaError::Unavailable,
        )
        .await
    }

    async fn download_url(
        &self,
        object: &MediaObject,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<SignedRequest, MediaError> {
        self.read(
            "download_url",
            self.inner.download_url(object, now, ttl),
            MediaError::Unavailable,
        )
        .await
    }

    async fn status(&self, object: &MediaObject) -> Result<ObjectStatus, MediaError> {
        self.read("status", self.inner.status(object), MediaError::Unavailable)
            .await
    }

    async fn erase_owner(&self, owner: &UserId) -> Result<(), MediaError> {
        self.write("erase_owner", self.inner.erase_owner(owner), MediaError::Unavailable)
            .await
    }
}

#[cfg(test)]
mod tests {
    use rookery_domain::EventPayload;

    use super::*;
    use crate::store::tests::{batch, item_event, key, user};
    use crate::{MemoryEventStore, MemoryPushGateway, MemorySearchIndex};

    #[test]
    fn fail_nth_fails_exactly_that_call() {
        let faults = Faults::new();
        faults.fail_nth(3);
        faults.fail_nth(5);
        let verdicts: Vec<bool> = (0..6).map(|_| faults.verdict(false) != Verdict::Pass).collect();
        assert_eq!(verdicts, [false, false, true, false, true, false]);
        assert_eq!((faults.calls(), faults.injected()), (6, 2));
        faults.fail_nth(1);
        assert_ne!(faults.verdict(true), Verdict::Pass);
    }

    #[test]
    fn fail_share_is_deterministic_from_the_seed_and_roughly_the_share() {
        let schedule = |seed| {
            let faults = Faults::new();
            faults.fail_share(0.3, seed);
            (0..2000)
                .map(|_| faults.verdict(false) != Verdict::Pass)
                .collect::<Vec<_>>()
        };
        assert_eq!(schedule(42), schedule(42));
        assert_ne!(schedule(42), schedule(43));
        let failed = schedule(42).iter().filter(|f| **f).count();
        assert!(
            (450..750).contains(&failed),
            "{failed} of 2000 failed for a share of 0.3"
        );
        let never = Faults::new();
        never.fail_share(0.0, 1);
        assert!((0..100).all(|_| never.verdict(true) == Verdict::Pass));
    }

    #[test]
    fn heal_stops_failures_and_targets_filter_calls() {
        let faults = Faults::new();
        faults.fail_share(1.0, 9);
        assert_ne!(faults.verdict(false), Verdict::Pass);
        faults.heal();
        assert_eq!(faults.verdict(false), Verdict::Pass);
        faults.target(FaultTarget::Writes);
        faults.fail_nth(1);
        assert_eq!(faults.verdict(false), Verdict::Pass, "reads are not targeted");
        assert_eq!(faults.verdict(true), Verdict::FailBefore);
        faults.mode(FailMode::AfterCommit);
        faults.fail_nth(1);
        assert_eq!(faults.verdict(true), Verdict::FailAfter);
        assert_eq!(faults.lost_acks(), 1);
    }

    #[tokio::test]
    async fn a_failure_before_the_call_never_reaches_the_store() -> Result<(), Box<dyn std::error::Error>> {
        let faults = Faults::new();
        let store = Faulty::new(MemoryEventStore::in_memory(), faults.clone());
        let alice = user("alice");
        faults.fail_nth(1);
        let failed = store
            .append(batch(&alice, 0, vec![item_event(&key("n", "a"), 1, Some("x"))]))
            .await;
        assert!(matches!(failed, Err(AppendError::Unavailable(f)) if f.is_retryable()));
        assert_eq!(store.inner().last_seq(&alice).await?, Seq(0));
        faults.fail_nth(1);
        assert!(matches!(store.last_seq(&alice).await, Err(StoreError::Unavailable(_))));
        assert_eq!(store.last_seq(&alice).await?, Seq(0));
        Ok(())
    }

    #[tokio::test]
    async fn a_lost_acknowledgement_commits_and_the_retry_sees_seq_moved() -> Result<(), Box<dyn std::error::Error>> {
        let faults = Faults::new();
        faults.mode(FailMode::AfterCommit);
        let store = Faulty::new(MemoryEventStore::in_memory(), faults.clone());
        let alice = user("alice");
        let append = batch(&alice, 0, vec![item_event(&key("n", "a"), 1, Some("x"))]);
        faults.fail_nth(1);
        assert!(matches!(
            store.append(append.clone()).await,
            Err(AppendError::Unavailable(_))
        ));
        assert_eq!(store.last_seq(&alice).await?, Seq(1), "the write happened");
        assert_eq!(
            store.append(append).await,
            Err(AppendError::SeqMoved { current: Seq(1) })
        );
        let feed = store.read_feed(&alice, Seq(0), 10).await?;
        assert!(matches!(feed.as_slice(), [e] if matches!(e.payload, EventPayload::ItemCreated(_))));
        Ok(())
    }

    #[tokio::test]
    async fn search_and_push_fail_as_planned() -> Result<(), Box<dyn std::error::Error>> {
        let faults = Faults::new();
        let index = Faulty::new(MemorySearchIndex::new(), faults.clone());
        faults.fail_nth(1);
        assert!(matches!(index.apply(&[]).await, Err(SearchError::Unavailable(_))));
        index.apply(&[]).await?;

        let push = Faulty::new(MemoryPushGateway::new(), faults.clone());
        let (alice, phone) = (user("alice"), DeviceId::parse("phone")?);
        let ep = push.register(&alice, &phone, Platform::Fcm, "tok", None).await?;
        faults.fail_nth(1);
        assert!(matches!(
            push.send(&ep, Platform::Fcm, "{}").await,
            Err(PushError::Unavailable(_))
        ));
        assert!(
            push.inner().sent()?.is_empty(),
            "a failure before the call sends nothing"
        );
        assert_eq!(push.send(&ep, Platform::Fcm, "{}").await?, PushOutcome::Delivered);
        assert_eq!(faults.injected(), 2);
        Ok(())
    }
}
