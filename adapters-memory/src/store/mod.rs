//! The memory event store: every user's stream, heads, devices, media and idempotency records in memory,
//! with the same checks, ordering and limits as the DynamoDB store, and an in-process change feed.
//!
//! All state sits behind one `std::sync::Mutex`, which is never held across an `.await`: every port method
//! takes the lock, does its work synchronously and returns. That makes each append trivially atomic.
//!
//! A store opened on a directory ([`MemoryEventStore::open`]) is durable: each append is written to an
//! append-only log file and synced before it is applied in memory and acknowledged, and the log is replayed
//! at start. The write and sync are plain blocking I/O under the lock. That blocks one runtime thread for
//! the duration of an fsync per write, which a local development server can afford, and it keeps the
//! order of the log equal to the order of commits without any further coordination.

mod log;
mod state;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rookery_domain::device::Devices;
use rookery_domain::{
    CollectionName, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Seq, StoredEvent, UserId, Version,
};
use rookery_ports::{AppendBatch, AppendError, EventStore, Failure, IdempotencyRecord, IdempotencyWrite, StoreError};
use tokio::sync::watch;

use log::EventLog;
pub use log::{LOG_FILE, OpenError};
use state::State;
pub use state::{MAX_APPEND_BYTES, MAX_EVENT_BYTES};

/// The state and the log file it is written to, guarded together so the log's order is the commit order.
#[derive(Debug)]
struct Guarded {
    state: State,
    log: Option<EventLog>,
}

#[derive(Debug)]
struct Inner {
    guarded: Mutex<Guarded>,
    /// The number of events in the change feed, bumped after each commit.
    commits: watch::Sender<u64>,
}

/// An [`EventStore`] in memory. Clones share the same store.
#[derive(Clone)]
pub struct MemoryEventStore {
    inner: Arc<Inner>,
}

/// A summary, never the contents: a store's `Debug` ends up in logs of whatever holds it.
impl std::fmt::Debug for MemoryEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("MemoryEventStore");
        // `try_lock`, so formatting never waits for (or deadlocks with) a writer.
        if let Ok(guarded) = self.inner.guarded.try_lock() {
            out.field("durable", &guarded.log.is_some())
                .field("events", &guarded.state.commit_count());
        }
        out.finish_non_exhaustive()
    }
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::in_memory()
    }
}

fn poisoned() -> Failure {
    Failure::permanent("the event store's lock was poisoned by a panic")
}

impl MemoryEventStore {
    /// An empty store that lives only as long as the process.
    pub fn in_memory() -> Self {
        Self::from_parts(State::default(), None)
    }

    /// A durable store whose log is the file [`LOG_FILE`] in `dir` (both created if missing).
    ///
    /// Every intact record of the log is replayed to rebuild the streams, heads, devices, media,
    /// idempotency records and the change feed (in commit order). A torn or corrupt tail, left by a crash
    /// in the middle of a write, is cut off with a warning saying how many bytes were dropped; only
    /// writes that were never acknowledged can be in it.
    ///
    /// Only one process may have a log open at a time; nothing here enforces that.
    ///
    /// # Errors
    /// [`OpenError::Io`] when the directory or file cannot be used; [`OpenError::Unreadable`] when an
    /// intact record cannot be read (a log from a newer build): then nothing is dropped or changed.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let (log, state) = EventLog::open(dir)?;
        Ok(Self::from_parts(state, Some(log)))
    }

    fn from_parts(state: State, log: Option<EventLog>) -> Self {
        let (commits, _) = watch::channel(state.commit_count());
        Self {
            inner: Arc::new(Inner {
                guarded: Mutex::new(Guarded { state, log }),
                commits,
            }),
        }
    }

    fn guarded(&self) -> Result<MutexGuard<'_, Guarded>, Failure> {
        self.inner.guarded.lock().map_err(|_| poisoned())
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, StoreError> {
        Ok(f(&self.guarded()?.state))
    }

    /// Up to `limit` stored events of every user, in the order their appends committed, from feed
    /// `position` on (0 is the beginning), and the position after them.
    ///
    /// This is the in-process counterpart of DynamoDB Streams: each event appears once, and a user's
    /// events appear in seq order. Positions are stable for the life of the store (and across a reopen
    /// of a file-backed store, which replays its log in commit order).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store's lock was poisoned.
    pub fn changes_after(&self, position: u64, limit: usize) -> Result<(Vec<StoredEvent>, u64), StoreError> {
        self.read(|state| state.changes_after(position, limit))
    }

    /// The number of events in the change feed so far (the position after the last one).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store's lock was poisoned.
    pub fn commit_position(&self) -> Result<u64, StoreError> {
        self.read(State::commit_count)
    }

    /// A receiver of the change feed's length, updated after every commit, so a consumer can wait for new
    /// events (`changed().await`) instead of polling.
    pub fn watch_commits(&self) -> watch::Receiver<u64> {
        self.inner.commits.subscribe()
    }

    fn publish(&self, state: &State) {
        // Published under the lock so the watched value never goes backwards between two commits.
        self.inner.commits.send_replace(state.commit_count());
    }
}

impl EventStore for MemoryEventStore {
    async fn append(&self, batch: AppendBatch) -> Result<Vec<StoredEvent>, AppendError> {
        let mut guarded = self.guarded()?;
        let Guarded { state, log } = &mut *guarded;
        let checked = state.check(batch)?;
        // Written and synced first: if the write fails, nothing in memory has changed.
        if let Some(log) = log {
            log.write_append(&checked.owner, &checked.events, checked.idempotency.as_ref())
                .map_err(|e| AppendError::Unavailable(Failure::transient(format!("event log write failed: {e}"))))?;
        }
        state.apply_append(&checked.owner, &checked.events, checked.idempotency.as_ref());
        self.publish(state);
        Ok(checked.events)
    }

    async fn remember(&self, write: IdempotencyWrite) -> Result<(), AppendError> {
        let mut guarded = self.guarded()?;
        let Guarded { state, log } = &mut *guarded;
        state.check_key(&write)?;
        if let Some(log) = log {
            log.write_remember(&write)
                .map_err(|e| AppendError::Unavailable(Failure::transient(format!("event log write failed: {e}"))))?;
        }
        state.apply_remember(&write);
        Ok(())
    }

    async fn idempotency(&self, owner: &UserId, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.read(|s| s.idempotency(owner, key))
    }

    async fn last_seq(&self, owner: &UserId) -> Result<Seq, StoreError> {
        self.read(|s| s.last_seq(owner))
    }

    async fn read_feed(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(|s| s.read_feed(owner, after, limit))
    }

    async fn read_messages(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(|s| s.read_messages(owner, after, limit))
    }

    async fn item_head(&self, owner: &UserId, key: &ItemKey) -> Result<ItemHead, StoreError> {
        self.read(|s| s.item_head(owner, key))
    }

    async fn item_history(
        &self,
        owner: &UserId,
        key: &ItemKey,
        after: Version,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(|s| s.item_history(owner, key, after, limit))
    }

    async fn list_items(
        &self,
        owner: &UserId,
        collection: &CollectionName,
        after: Option<&ItemId>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        self.read(|s| s.list_items(owner, collection, after, limit))
    }

    async fn devices(&self, owner: &UserId) -> Result<Devices, StoreError> {
        self.read(|s| s.devices(owner))
    }

    async fn media(&self, owner: &UserId, id: &MediaId) -> Result<Option<MediaObject>, StoreError> {
        self.read(|s| s.media(owner, id))
    }

    async fn owners(&self, after: Option<&UserId>, limit: usize) -> Result<Vec<UserId>, StoreError> {
        self.read(|s| s.owners(after, limit))
    }
}

#[cfg(test)]
pub(crate) mod tests;
