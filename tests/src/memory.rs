//! The memory adapters wired into the services, for the properties and end-to-end tests.
//!
//! [`TestBackend`] composes every service over one set of adapters (the store, push gateway and media
//! store chosen by its type parameters, so a property can wrap them in `Faulty`), with a memory search
//! index, a [`ManualClock`] and [`SequentialIds`], so runs are deterministic. It dereferences to the
//! [`Services`], so a test calls `backend.items.put_item(..)`, and it hands out the adapters behind them.

use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use rookery_adapters_memory::{
    LocalMediaStore, ManualClock, MemoryEventStore, MemoryPushGateway, MemorySearchIndex, SequentialIds,
};
use rookery_domain::{DeviceId, Platform, UserId};
use rookery_entrypoints::http::Services;
use rookery_ports::{EventStore, MediaStore, PushDispatcher, PushError, PushGateway, PushOutcome, ServiceConfig};

/// Every service of a test deployment, and the adapters behind them.
#[derive(Debug, Clone)]
pub struct TestBackend<S = MemoryEventStore, P = MemoryPushGateway<ManualClock>, M = LocalMediaStore> {
    services: Services<S, ManualClock, SequentialIds, MemorySearchIndex, P, M>,
    store: S,
    push: P,
    clock: ManualClock,
    search: MemorySearchIndex,
    config: ServiceConfig,
}

impl<S: EventStore, P: PushGateway, M: MediaStore> TestBackend<S, P, M> {
    /// The services over `store`, `push`, `media` and `clock`, with a fresh memory search index and
    /// sequential ids.
    pub fn new(store: S, push: P, media: M, clock: ManualClock) -> Self {
        let search = MemorySearchIndex::new();
        let config = ServiceConfig::default();
        let services = Services::new(
            store.clone(),
            clock.clone(),
            SequentialIds::new(),
            search.clone(),
            push.clone(),
            media,
            config.clone(),
        );
        Self {
            services,
            store,
            push,
            clock,
            search,
            config,
        }
    }

    /// The event store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The push gateway.
    pub fn push_gateway(&self) -> &P {
        &self.push
    }

    /// The clock the services read.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The search index (fed only by an indexer a test runs).
    pub fn search_index(&self) -> &MemorySearchIndex {
        &self.search
    }

    /// The push dispatcher of this deployment, as its change-log consumer runs it.
    pub fn dispatcher(&self) -> PushDispatcher<S, ManualClock, SequentialIds, P> {
        PushDispatcher::new(
            self.store.clone(),
            self.push.clone(),
            self.clock.clone(),
            self.services.devices.clone(),
            self.config.idempotency_ttl,
        )
    }
}

impl<S, P, M> Deref for TestBackend<S, P, M> {
    type Target = Services<S, ManualClock, SequentialIds, MemorySearchIndex, P, M>;

    fn deref(&self) -> &Self::Target {
        &self.services
    }
}

/// Every adapter a memory deployment uses, with nothing wrapped.
pub type MemoryBackend = TestBackend;

/// The secret the test media store signs with.
const MEDIA_SECRET: &[u8] = b"rookery-tests-media-secret";

/// A media store in memory, signing URLs for `http://127.0.0.1:0`.
pub fn memory_media() -> LocalMediaStore {
    LocalMediaStore::in_memory("http://127.0.0.1:0", MEDIA_SECRET.to_vec())
}

/// The services over `store`, `push` and `media`, with a fresh memory search index, a manual clock at
/// its default instant and sequential ids.
pub fn app_with<S: EventStore, P: PushGateway, M: MediaStore>(store: S, push: P, media: M) -> TestBackend<S, P, M> {
    TestBackend::new(store, push, media, ManualClock::default())
}

/// The services over fresh memory adapters; the push gateway times pushes by the services' clock.
pub fn memory_app() -> MemoryBackend {
    let clock = ManualClock::default();
    TestBackend::new(
        MemoryEventStore::in_memory(),
        MemoryPushGateway::with_clock(clock.clone()),
        memory_media(),
        clock,
    )
}

/// One `send` that reached a [`RecordingGateway`], and what the gateway behind it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAttempt {
    /// The endpoint the push was for.
    pub endpoint: String,
    /// The payload.
    pub payload: String,
    /// The answer.
    pub outcome: Result<PushOutcome, PushError>,
}

/// A push gateway that records every `send` it passes on, whatever the answer, so a test can check what
/// the dispatcher attempted (not only what was delivered). Clones share the record.
#[derive(Debug, Clone)]
pub struct RecordingGateway<G> {
    inner: G,
    attempts: Arc<Mutex<Vec<SendAttempt>>>,
}

impl<G> RecordingGateway<G> {
    /// Wraps `inner`.
    pub fn new(inner: G) -> Self {
        Self {
            inner,
            attempts: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The wrapped gateway.
    pub fn inner(&self) -> &G {
        &self.inner
    }

    /// Every send attempt so far, oldest first.
    pub fn attempts(&self) -> Vec<SendAttempt> {
        // The record is a plain list: a panic elsewhere cannot leave it half-written.
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl<G: PushGateway> PushGateway for RecordingGateway<G> {
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
        let outcome = self.inner.send(endpoint, platform, payload).await;
        self.attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(SendAttempt {
                endpoint: endpoint.to_owned(),
                payload: payload.to_owned(),
                outcome: outcome.clone(),
            });
        outcome
    }

    async fn delete(&self, owner: &UserId, device_id: &DeviceId, endpoint: &str) -> Result<(), PushError> {
        self.inner.delete(owner, device_id, endpoint).await
    }
}
