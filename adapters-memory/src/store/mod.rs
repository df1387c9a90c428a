//! The memory event store: every user's stream, heads, devices, media and idempotency records in memory,
//! with the same checks, ordering and limits as the DynamoDB store, and an in-process change feed.
//!
//! All state sits behind one `std::sync::Mutex`, which is never held across an `.await`: every port method
//! takes the lock, does its work synchronously and returns. That makes each append trivially atomic.

mod state;

use std::sync::{Arc, Mutex, MutexGuard};

use rookery_domain::device::Devices;
use rookery_domain::{
    CollectionName, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Seq, StoredEvent, UserId, Version,
};
use rookery_ports::{AppendBatch, AppendError, EventStore, Failure, IdempotencyRecord, IdempotencyWrite, StoreError};
use tokio::sync::watch;

use state::State;
pub use state::{MAX_APPEND_BYTES, MAX_EVENT_BYTES};

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// The number of events in the change feed, bumped after each commit.
    commits: watch::Sender<u64>,
}

/// An [`EventStore`] in memory. Clones share the same store.
#[derive(Debug, Clone)]
pub struct MemoryEventStore {
    inner: Arc<Inner>,
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
        Self::from_state(State::default())
    }

    fn from_state(state: State) -> Self {
        let (commits, _) = watch::channel(state.commit_count());
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                commits,
            }),
        }
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, Failure> {
        self.inner.state.lock().map_err(|_| poisoned())
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, StoreError> {
        Ok(f(&*self.state()?))
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
        let mut state = self.state()?;
        let checked = state.check(batch)?;
        state.apply_append(&checked.owner, &checked.events, checked.idempotency.as_ref());
        self.publish(&state);
        Ok(checked.events)
    }

    async fn remember(&self, write: IdempotencyWrite) -> Result<(), AppendError> {
        let mut state = self.state()?;
        state.check_key(&write)?;
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
