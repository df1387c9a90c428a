//! The memory adapters wired into the application service, for the properties and end-to-end tests.
//!
//! [`TestPorts`] names the adapters once (generic over the store, push gateway and media store, so a
//! property can wrap them in `Faulty`); [`memory_app`] builds an [`App`] over fresh memory adapters with a
//! [`ManualClock`] and [`SequentialIds`], so runs are deterministic.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

use rookery_adapters_memory::{
    LocalMediaStore, ManualClock, MemoryEventStore, MemoryPushGateway, MemorySearchIndex, SequentialIds,
};
use rookery_domain::{DeviceId, Platform, UserId};
use rookery_ports::{App, AppConfig, EventStore, MediaStore, Ports, PushError, PushGateway, PushOutcome};

/// A type that holds no value of its parameters but names them (and stays `Send + Sync` whatever they are).
type Marker<S, P, M> = fn() -> (S, P, M);

/// The adapters of a test deployment: memory search, manual clock and sequential ids, with the store,
/// push gateway and media store chosen by the type parameters (plain memory adapters by default).
pub struct TestPorts<S = MemoryEventStore, P = MemoryPushGateway<ManualClock>, M = LocalMediaStore>(
    PhantomData<Marker<S, P, M>>,
);

impl<S, P, M> std::fmt::Debug for TestPorts<S, P, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestPorts")
    }
}

impl<S: EventStore, P: PushGateway, M: MediaStore> Ports for TestPorts<S, P, M> {
    type Store = S;
    type Search = MemorySearchIndex;
    type Push = P;
    type Media = M;
    type Clock = ManualClock;
    type Ids = SequentialIds;
}

/// Every adapter a memory deployment uses, with nothing wrapped.
pub type MemoryPorts = TestPorts;

/// The secret the test media store signs with.
const MEDIA_SECRET: &[u8] = b"rookery-tests-media-secret";

/// A media store in memory, signing URLs for `http://127.0.0.1:0`.
pub fn memory_media() -> LocalMediaStore {
    LocalMediaStore::in_memory("http://127.0.0.1:0", MEDIA_SECRET.to_vec())
}

/// An application service over `store`, `push` and `media`, with a fresh memory search index, a manual
/// clock at its default instant and sequential ids.
pub fn app_with<S: EventStore, P: PushGateway, M: MediaStore>(store: S, push: P, media: M) -> App<TestPorts<S, P, M>> {
    App::new(
        store,
        MemorySearchIndex::new(),
        push,
        media,
        ManualClock::default(),
        SequentialIds::new(),
        AppConfig::default(),
    )
}

/// An application service over fresh memory adapters; the push gateway times pushes by the app's clock.
pub fn memory_app() -> App<MemoryPorts> {
    let clock = ManualClock::default();
    App::new(
        MemoryEventStore::in_memory(),
        MemorySearchIndex::new(),
        MemoryPushGateway::with_clock(clock.clone()),
        memory_media(),
        clock,
        SequentialIds::new(),
        AppConfig::default(),
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
