//! Every port contract suite, run against the memory adapters (and the event store's file-backed mode).

use std::sync::atomic::{AtomicU64, Ordering};

use rookery_adapters_memory::{
    ManualClock, MemoryEventStore, MemoryPushGateway, MemorySearchIndex, SequentialIds, SystemClock, UlidIds,
};
use rookery_tests::contract::event_store::StoreFactory;
use rookery_tests::contract::push_gateway::PushFactory;
use rookery_tests::contract::search_index::SearchFactory;
use rookery_tests::contract::system::{ClockFactory, IdsFactory};
use rookery_tests::fixtures::BoxError;
use rookery_tests::{
    clock_contract, event_store_contract, id_source_contract, push_gateway_contract, search_index_contract,
};

/// Fresh in-memory event stores.
struct InMemoryStores;

impl StoreFactory for InMemoryStores {
    type Store = MemoryEventStore;

    async fn fresh(&self) -> Result<MemoryEventStore, BoxError> {
        Ok(MemoryEventStore::in_memory())
    }
}

event_store_contract!(memory_event_store, InMemoryStores);

/// Fresh file-backed event stores, each in its own directory under one temporary directory that lives
/// as long as the factory (one test).
struct FileStores {
    dir: tempfile::TempDir,
    next: AtomicU64,
}

impl FileStores {
    fn new() -> Result<Self, BoxError> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            next: AtomicU64::new(0),
        })
    }
}

impl StoreFactory for FileStores {
    type Store = MemoryEventStore;

    async fn fresh(&self) -> Result<MemoryEventStore, BoxError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(MemoryEventStore::open(&self.dir.path().join(format!("store-{n}")))?)
    }
}

event_store_contract!(file_event_store, FileStores::new()?);

/// Fresh memory search indexes.
struct MemoryIndexes;

impl SearchFactory for MemoryIndexes {
    type Index = MemorySearchIndex;

    async fn fresh(&self) -> Result<MemorySearchIndex, BoxError> {
        Ok(MemorySearchIndex::new())
    }
}

search_index_contract!(memory_search_index, MemoryIndexes);

/// Fresh recording push gateways; disabling an endpoint is the gateway's own test hook.
struct MemoryGateways;

impl PushFactory for MemoryGateways {
    type Gateway = MemoryPushGateway;

    async fn fresh(&self) -> Result<MemoryPushGateway, BoxError> {
        Ok(MemoryPushGateway::new())
    }

    async fn disable(&self, gateway: &MemoryPushGateway, endpoint: &str) {
        assert_eq!(
            gateway.disable_endpoint(endpoint),
            Ok(true),
            "endpoint {endpoint} exists"
        );
    }
}

push_gateway_contract!(memory_push_gateway, MemoryGateways);

/// The system clock.
struct SystemClocks;

impl ClockFactory for SystemClocks {
    type Clock = SystemClock;

    fn fresh(&self) -> SystemClock {
        SystemClock::new()
    }
}

clock_contract!(system_clock, SystemClocks);

/// A manual clock nobody moves: it must not go backwards on its own.
struct ManualClocks;

impl ClockFactory for ManualClocks {
    type Clock = ManualClock;

    fn fresh(&self) -> ManualClock {
        ManualClock::default()
    }
}

clock_contract!(manual_clock, ManualClocks);

/// ULID sources, each seeded from the process's randomness.
struct Ulids;

impl IdsFactory for Ulids {
    type Ids = UlidIds;

    fn fresh(&self) -> UlidIds {
        UlidIds::new()
    }
}

id_source_contract!(ulid_ids, Ulids);

/// Sequential ids; every instance gets its own prefix, as the port's "every other instance" demands.
struct Sequential(AtomicU64);

impl IdsFactory for Sequential {
    type Ids = SequentialIds;

    fn fresh(&self) -> SequentialIds {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        SequentialIds::with_prefix(&format!("s{n}"))
    }
}

id_source_contract!(sequential_ids, Sequential(AtomicU64::new(0)));
