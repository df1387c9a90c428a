//! The contract suites catch broken adapters: each test here wraps a memory adapter so that it breaks one
//! MUST the way a real adapter might (a read that stops at the first page, a missing concurrency check,
//! last-arrival-wins indexing, a leaked private item, an error instead of `EndpointDisabled`, a delete that
//! does nothing or deletes another user's endpoint) and checks that the check for that MUST fails. A suite
//! that passed these would be checking nothing.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};

use rookery_adapters_memory::{MemoryEventStore, MemoryPushGateway, MemorySearchIndex};
use rookery_domain::device::Devices;
use rookery_domain::projection::IndexChange;
use rookery_domain::{
    CollectionName, DeviceId, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Platform, Seq, StoredEvent,
    UserId, Version, Visibility,
};
use rookery_ports::{
    AppendBatch, AppendError, EventStore, Failure, IdempotencyRecord, IdempotencyWrite, PushError, PushGateway,
    PushOutcome, SearchError, SearchIndex, SearchPage, SearchQuery, StoreError,
};
use rookery_tests::contract::event_store::{self, StoreFactory};
use rookery_tests::contract::push_gateway::{self, PushFactory};
use rookery_tests::contract::search_index::{self, SearchFactory};
use rookery_tests::fixtures::{BoxError, Outcome};

/// Runs a check on its own task and answers whether it failed (an assertion panicked or it returned `Err`).
///
/// The failures are expected, so their panic messages are kept out of the output: a panic hook stays quiet
/// on the runtime's worker threads, where the checks run, and speaks as usual on the test's own thread.
async fn fails<Fut: Future<Output = Outcome> + Send + 'static>(check: Fut) -> bool {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let worker = std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with("tokio-runtime-worker"));
            if !worker {
                default(info);
            }
        }));
    });
    match tokio::spawn(check).await {
        Ok(outcome) => outcome.is_err(),
        Err(join) => join.is_panic(),
    }
}

/// How a [`Broken`] event store misbehaves.
#[derive(Debug, Clone, Copy)]
enum StoreBug {
    /// `read_feed` returns at most one page of 100 events, whatever the limit (the DynamoDB classic).
    FirstPageOnly,
    /// `append` skips the seq check: it appends at the end whatever seq the writer read.
    NoSeqCheck,
}

/// A memory event store with one bug.
#[derive(Debug, Clone)]
struct Broken {
    inner: MemoryEventStore,
    bug: StoreBug,
}

impl EventStore for Broken {
    async fn append(&self, mut batch: AppendBatch) -> Result<Vec<StoredEvent>, AppendError> {
        if let StoreBug::NoSeqCheck = self.bug {
            batch.expected_seq = Some(
                self.inner
                    .last_seq(&batch.owner)
                    .await
                    .map_err(|StoreError::Unavailable(f)| f)?,
            );
        }
        self.inner.append(batch).await
    }

    async fn remember(&self, write: IdempotencyWrite) -> Result<(), AppendError> {
        self.inner.remember(write).await
    }

    async fn idempotency(&self, owner: &UserId, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency(owner, key).await
    }

    async fn last_seq(&self, owner: &UserId) -> Result<Seq, StoreError> {
        self.inner.last_seq(owner).await
    }

    async fn read_feed(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = match self.bug {
            StoreBug::FirstPageOnly => limit.min(100),
            StoreBug::NoSeqCheck => limit,
        };
        self.inner.read_feed(owner, after, limit).await
    }

    async fn read_messages(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read_messages(owner, after, limit).await
    }

    async fn item_head(&self, owner: &UserId, key: &ItemKey) -> Result<ItemHead, StoreError> {
        self.inner.item_head(owner, key).await
    }

    async fn item_history(
        &self,
        owner: &UserId,
        key: &ItemKey,
        after: Version,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.item_history(owner, key, after, limit).await
    }

    async fn list_items(
        &self,
        owner: &UserId,
        collection: &CollectionName,
        after: Option<&ItemId>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        self.inner.list_items(owner, collection, after, limit).await
    }

    async fn devices(&self, owner: &UserId) -> Result<Devices, StoreError> {
        self.inner.devices(owner).await
    }

    async fn media(&self, owner: &UserId, id: &MediaId) -> Result<Option<MediaObject>, StoreError> {
        self.inner.media(owner, id).await
    }

    async fn owners(&self, after: Option<&UserId>, limit: usize) -> Result<Vec<UserId>, StoreError> {
        self.inner.owners(after, limit).await
    }

    async fn erase_owner(
        &self,
        owner: &UserId,
        at: rookery_domain::Timestamp,
    ) -> Result<rookery_domain::Timestamp, StoreError> {
        self.inner.erase_owner(owner, at).await
    }

    async fn erased(&self, owner: &UserId) -> Result<Option<rookery_domain::Timestamp>, StoreError> {
        self.inner.erased(owner).await
    }
}

struct BrokenStores(StoreBug);

impl StoreFactory for BrokenStores {
    type Store = Broken;

    async fn fresh(&self) -> Result<Broken, BoxError> {
        Ok(Broken {
            inner: MemoryEventStore::in_memory(),
            bug: self.0,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_reads_stop_at_the_first_page_fails_the_feed_check() {
    let factory = BrokenStores(StoreBug::FirstPageOnly);
    assert!(
        fails(async move { event_store::check_read_feed_returns_min_limit_available_in_order(&factory).await }).await
    );
    let factory = BrokenStores(StoreBug::FirstPageOnly);
    assert!(
        !fails(async move { event_store::check_append_assigns_consecutive_seqs(&factory).await }).await,
        "only that"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_the_seq_check_fails_the_seq_and_race_checks() {
    let factory = BrokenStores(StoreBug::NoSeqCheck);
    assert!(fails(async move { event_store::check_stale_expected_seq_is_seq_moved(&factory).await }).await);
    let factory = BrokenStores(StoreBug::NoSeqCheck);
    assert!(fails(async move { event_store::check_refused_append_changes_nothing(&factory).await }).await);
}

/// How a [`BrokenIndex`] misbehaves.
#[derive(Debug, Clone, Copy)]
enum IndexBug {
    /// The last change to arrive wins, whatever its version.
    LastArrivalWins,
    /// Every document is indexed as public.
    EverythingPublic,
}

/// A memory search index with one bug.
#[derive(Debug, Clone)]
struct BrokenIndex {
    inner: MemorySearchIndex,
    bug: IndexBug,
    arrivals: Arc<AtomicU64>,
}

impl SearchIndex for BrokenIndex {
    async fn apply(&self, changes: &[IndexChange]) -> Result<(), SearchError> {
        let changed: Vec<IndexChange> = changes
            .iter()
            .cloned()
            .map(|change| match (self.bug, change) {
                (IndexBug::LastArrivalWins, IndexChange::Upsert(mut doc)) => {
                    doc.version = Version(self.arrivals.fetch_add(1, Ordering::Relaxed) + 1);
                    IndexChange::Upsert(doc)
                }
                (IndexBug::LastArrivalWins, IndexChange::Delete { owner, key, .. }) => IndexChange::Delete {
                    owner,
                    key,
                    version: Version(self.arrivals.fetch_add(1, Ordering::Relaxed) + 1),
                },
                (IndexBug::EverythingPublic, IndexChange::Upsert(mut doc)) => {
                    doc.visibility = Visibility::Public;
                    doc.item.visibility = Visibility::Public;
                    IndexChange::Upsert(doc)
                }
                (IndexBug::EverythingPublic, other) => other,
            })
            .collect();
        self.inner.apply(&changed).await
    }

    async fn query(&self, query: &SearchQuery) -> Result<SearchPage, SearchError> {
        self.inner.query(query).await
    }
}

struct BrokenIndexes(IndexBug);

impl SearchFactory for BrokenIndexes {
    type Index = BrokenIndex;

    async fn fresh(&self) -> Result<BrokenIndex, BoxError> {
        Ok(BrokenIndex {
            inner: MemorySearchIndex::new(),
            bug: self.0,
            arrivals: Arc::new(AtomicU64::new(1_000)),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_where_the_last_arrival_wins_fails_the_version_checks() {
    let factory = BrokenIndexes(IndexBug::LastArrivalWins);
    assert!(fails(async move { search_index::check_older_version_never_overwrites_newer(&factory).await }).await);
    let factory = BrokenIndexes(IndexBug::LastArrivalWins);
    assert!(fails(async move { search_index::check_delete_then_older_upsert_stays_deleted(&factory).await }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_leaks_private_items_fails_the_scope_check() {
    let factory = BrokenIndexes(IndexBug::EverythingPublic);
    assert!(
        fails(async move { search_index::check_scope_never_returns_another_users_private_item(&factory).await }).await
    );
}

/// How a [`BrokenGateway`] misbehaves.
#[derive(Debug, Clone, Copy)]
enum PushBug {
    /// A send to a disabled endpoint is a failure instead of `Ok(EndpointDisabled)`.
    ErrOnDisabled,
    /// `delete` answers `Ok` and deletes nothing.
    DeleteIgnored,
    /// `delete` deletes the endpoint whoever registered it last.
    DeleteWhoeverOwnsIt,
}

/// A memory push gateway with one bug.
#[derive(Debug, Clone)]
struct BrokenGateway {
    inner: MemoryPushGateway,
    bug: PushBug,
}

impl PushGateway for BrokenGateway {
    async fn register(
        &self,
        owner: &UserId,
        device_id: &DeviceId,
        platform: Platform,
        token: &str,
        current: Option<&str>,
    ) -> Result<String, PushError> {
        self.inner.register(owner, device_id, platform, token, current).await
    }

    async fn send(&self, endpoint: &str, platform: Platform, payload: &str) -> Result<PushOutcome, PushError> {
        match (self.bug, self.inner.send(endpoint, platform, payload).await?) {
            (PushBug::ErrOnDisabled, PushOutcome::EndpointDisabled) => {
                Err(Failure::transient("EndpointDisabled").into())
            }
            (_, outcome) => Ok(outcome),
        }
    }

    async fn delete(&self, owner: &UserId, device_id: &DeviceId, endpoint: &str) -> Result<(), PushError> {
        match self.bug {
            PushBug::ErrOnDisabled => self.inner.delete(owner, device_id, endpoint).await,
            PushBug::DeleteIgnored => Ok(()),
            PushBug::DeleteWhoeverOwnsIt => {
                // Deleting as whoever holds the endpoint now is deleting it unconditionally.
                match self.inner.endpoint(endpoint)? {
                    Some(held) => self.inner.delete(&held.owner, &held.device_id, endpoint).await,
                    None => Ok(()),
                }
            }
        }
    }
}

struct BrokenGateways(PushBug);

impl PushFactory for BrokenGateways {
    type Gateway = BrokenGateway;

    async fn fresh(&self) -> Result<BrokenGateway, BoxError> {
        Ok(BrokenGateway {
            inner: MemoryPushGateway::new(),
            bug: self.0,
        })
    }

    async fn disable(&self, gateway: &BrokenGateway, endpoint: &str) {
        let _ = gateway.inner.disable_endpoint(endpoint);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_errs_on_a_disabled_endpoint_fails_the_disabled_check() {
    let factory = BrokenGateways(PushBug::ErrOnDisabled);
    assert!(fails(async move { push_gateway::check_disabled_endpoint_is_reported_not_failed(&factory).await }).await);
    let factory = BrokenGateways(PushBug::ErrOnDisabled);
    assert!(
        !fails(async move { push_gateway::check_send_to_an_enabled_endpoint_is_delivered(&factory).await }).await,
        "only that"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_delete_does_nothing_fails_the_delete_checks() {
    let factory = BrokenGateways(PushBug::DeleteIgnored);
    assert!(fails(async move { push_gateway::check_delete_is_idempotent_and_stops_delivery(&factory).await }).await);
    let factory = BrokenGateways(PushBug::DeleteIgnored);
    assert!(
        fails(async move {
            push_gateway::check_delete_leaves_an_endpoint_registered_again_by_another_device(&factory).await
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_deletes_another_users_endpoint_fails_the_shared_token_check() {
    let factory = BrokenGateways(PushBug::DeleteWhoeverOwnsIt);
    assert!(
        fails(async move {
            push_gateway::check_delete_leaves_an_endpoint_registered_again_by_another_device(&factory).await
        })
        .await
    );
    let factory = BrokenGateways(PushBug::DeleteWhoeverOwnsIt);
    assert!(
        !fails(async move { push_gateway::check_delete_is_idempotent_and_stops_delivery(&factory).await }).await,
        "a delete by the device's own user is right"
    );
}
