//! The memory event store: every user's stream, heads, devices, media and idempotency records in memory,
//! with the same checks, ordering and limits as the DynamoDB store, and an in-process change feed.
//!
//! All state sits behind one `std::sync::Mutex`, which is never held across an `.await`: every port method
//! takes the lock, does its work synchronously and returns. That makes each append trivially atomic, and
//! serializes each user's appends: an append that names no seq gets the seqs after the stream's last one
//! under the lock, so concurrent writes of one user to different items never refuse each other.
//!
//! A store opened on a directory ([`MemoryEventStore::open`]) is durable: every write is appended to a
//! log file and synced before it is applied in memory and acknowledged, and the log is replayed at start.
//! Writes are committed in groups, as databases do. A write is checked under the lock (against the state
//! and the writes still waiting for their sync) and queued; one writer thread per store takes everything
//! queued, writes it with one `write` and one `fsync` outside the lock, then applies it to the state under
//! the lock and wakes the waiting callers. Writes that arrive during a sync wait for the next one, which
//! covers all of them, so the number of syncs per second, not the number of writes, is bounded by the disk.
//!
//! What that guarantees:
//! - No write is acknowledged before its record is synced.
//! - Readers, the change feed and its watchers see a write only once it is synced and applied: nothing a
//!   reader saw can be lost by a crash. A write's checks do see the writes queued before it (its seq and
//!   item versions continue theirs), which is safe because the log keeps their order: a write is never
//!   on disk without every write queued before it.
//! - The log's order is the order of the checks, which is the order of the change feed.
//! - A failed write or sync fails every write of its group and every write queued behind it (they may
//!   have been checked against the failed ones), as retryable `Unavailable`, and nothing of them becomes
//!   visible. After a failed `write` the file is cut back to its last synced record and later writes go on;
//!   after a failed `fsync` the store refuses every later write until restarted (see
//!   [`log::EventLog::write_synced`]), and the restart replays exactly what is intact on disk.
//! - The state lock is never held across I/O, so reads never wait for the disk.

mod log;
mod state;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rookery_domain::device::Devices;
use rookery_domain::{
    CollectionName, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Seq, StoredEvent, Timestamp, UserId, Version,
};
use rookery_ports::{
    AppendBatch, AppendError, ChangeFeed, EventStore, Failure, IdempotencyRecord, IdempotencyWrite, Rebase, StoreError,
};
use tokio::sync::{oneshot, watch};

use log::EventLog;
pub use log::{LOG_FILE, LogReader, LogRecord, OpenError};
pub use state::{MAX_APPEND_BYTES, MAX_EVENT_BYTES};
use state::{Pending, State};

/// A checked write waiting for its sync.
#[derive(Debug)]
enum Write {
    Append {
        owner: UserId,
        events: Vec<StoredEvent>,
        idempotency: Option<IdempotencyWrite>,
    },
    Remember(IdempotencyWrite),
}

impl Write {
    fn parts(&self) -> (&UserId, &[StoredEvent], Option<&IdempotencyWrite>) {
        match self {
            Write::Append {
                owner,
                events,
                idempotency,
            } => (owner, events, idempotency.as_ref()),
            Write::Remember(write) => (&write.owner, &[], Some(write)),
        }
    }
}

/// What a durable write waits for after its check.
enum Next {
    /// Its sync and application.
    Wait(oneshot::Receiver<Result<Vec<StoredEvent>, AppendError>>),
    /// The settling of every write checked before it (up to this ticket), then the conflict is answered.
    Conflict(AppendError, u64),
}

/// A queued write and the caller waiting for it.
#[derive(Debug)]
struct Queued {
    ticket: u64,
    write: Write,
    done: oneshot::Sender<Result<Vec<StoredEvent>, AppendError>>,
}

/// The state and, for a durable store, the writes waiting for the writer thread.
#[derive(Debug, Default)]
struct Guarded {
    state: State,
    /// What the queued and in-flight writes will change, for the checks of later writes.
    pending: Pending,
    /// Checked writes not yet taken by the writer thread, in check order.
    queue: Vec<Queued>,
    /// The ticket of the next checked write.
    next_ticket: u64,
    /// Set when the last handle of the store is dropped: the writer thread finishes the queue and exits.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    guarded: Mutex<Guarded>,
    /// Wakes the writer thread when a write is queued or the store closes.
    queued: Condvar,
    /// The number of events in the change feed, bumped after each commit.
    commits: watch::Sender<u64>,
    /// Every write with a lower ticket is settled: applied, or failed.
    settled: watch::Sender<u64>,
    /// The change feed position of each consumer, as it stored it; kept in memory, like the search index
    /// the memory store is paired with, so a restart starts every consumer from the beginning.
    consumers: Mutex<BTreeMap<String, u64>>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    /// The writer thread of a durable store.
    writer: Option<JoinHandle<()>>,
}

/// Stops the writer thread once every handle is gone, so the log file is closed (and its lock released)
/// when the store is dropped.
impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Ok(mut guarded) = self.shared.guarded.lock() {
                guarded.closed = true;
            }
            self.shared.queued.notify_all();
            if writer.join().is_err() {
                tracing::error!("the event log writer thread panicked");
            }
        }
    }
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
        out.field("durable", &self.inner.writer.is_some());
        // `try_lock`, so formatting never waits for (or deadlocks with) a writer.
        if let Ok(guarded) = self.inner.shared.guarded.try_lock() {
            out.field("events", &guarded.state.commit_count());
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

fn writer_gone() -> AppendError {
    AppendError::Unavailable(Failure::permanent("the event log writer stopped; restart to recover"))
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
    /// Writes are committed in groups by a thread of the store's own (see the module's documentation),
    /// which exits, closing the file, when the last clone of the store is dropped.
    ///
    /// # Errors
    /// [`OpenError::Locked`] when another store has the log open; [`OpenError::Io`] when the directory or
    /// file cannot be used, or the writer thread cannot be started; [`OpenError::Unreadable`] when an
    /// intact record cannot be read (a log from a newer build): then nothing is dropped or changed.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let (log, state) = EventLog::open(dir)?;
        Self::with_log(state, log, dir)
    }

    fn with_log(state: State, log: EventLog, dir: &Path) -> Result<Self, OpenError> {
        let shared = Self::shared(state);
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("rookery-log".into())
                .spawn(move || write_loop(&shared, log))
                .map_err(|source| OpenError::Io {
                    path: dir.to_owned(),
                    source,
                })?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                writer: Some(writer),
            }),
        })
    }

    fn from_parts(state: State, log: Option<EventLog>) -> Self {
        match log {
            Some(log) => match Self::with_log(state, log, Path::new(".")) {
                Ok(store) => store,
                // Only tests build a durable store this way; a store that cannot write refuses writes.
                Err(error) => {
                    tracing::error!(%error, "cannot start the event log writer");
                    Self::from_parts(State::default(), None)
                }
            },
            None => Self {
                inner: Arc::new(Inner {
                    shared: Self::shared(state),
                    writer: None,
                }),
            },
        }
    }

    fn shared(state: State) -> Arc<Shared> {
        let (commits, _) = watch::channel(state.commit_count());
        Arc::new(Shared {
            guarded: Mutex::new(Guarded {
                state,
                ..Guarded::default()
            }),
            queued: Condvar::new(),
            commits,
            settled: watch::channel(0).0,
            consumers: Mutex::new(BTreeMap::new()),
        })
    }

    fn guarded(&self) -> Result<MutexGuard<'_, Guarded>, Failure> {
        self.inner.shared.guarded.lock().map_err(|_| poisoned())
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, StoreError> {
        Ok(f(&self.guarded()?.state))
    }

    /// Up to `limit` stored events of every user, in the order their appends committed, from feed
    /// `position` on (0 is the beginning), and the position after them.
    ///
    /// This is the in-process counterpart of DynamoDB Streams: each event appears once, and a user's
    /// events appear in seq order. Positions are stable for the life of the store (and across a reopen
    /// of a file-backed store, which replays its log in commit order). A durable store's feed holds only
    /// synced events.
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
        self.inner.shared.commits.subscribe()
    }

    /// Applies a checked write in memory (no log) and answers its events.
    fn apply_now(&self, guarded: &mut Guarded, write: Write) -> Vec<StoredEvent> {
        let (owner, events, idempotency) = write.parts();
        guarded.state.apply_append(owner, events, idempotency);
        // Published under the lock so the watched value never goes backwards between two commits.
        self.inner.shared.commits.send_replace(guarded.state.commit_count());
        match write {
            Write::Append { events, .. } => events,
            Write::Remember(_) => Vec::new(),
        }
    }

    /// Appends `batch`, re-planned by `rebase` first when its item moved (under the store's lock, so the
    /// head it is planned on cannot move before the check).
    async fn append_with(&self, batch: AppendBatch, rebase: Option<Rebase>) -> Result<Vec<StoredEvent>, AppendError> {
        self.commit(|state, pending| {
            let batch = match &rebase {
                Some(rebase) => state.rebase(batch, rebase, pending),
                None => batch,
            };
            let checked = state.check(batch, pending)?;
            Ok(Write::Append {
                owner: checked.owner,
                events: checked.events,
                idempotency: checked.idempotency,
            })
        })
        .await
    }

    /// Commits a write checked by `check`: at once in memory, or through the writer thread when durable.
    async fn commit(
        &self,
        check: impl FnOnce(&State, &Pending) -> Result<Write, AppendError>,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        let next = {
            let mut guarded = self.guarded()?;
            match check(&guarded.state, &guarded.pending) {
                Ok(write) if self.inner.writer.is_none() => return Ok(self.apply_now(&mut guarded, write)),
                Ok(write) => {
                    let ticket = guarded.next_ticket;
                    guarded.next_ticket += 1;
                    let (owner, events, idempotency) = write.parts();
                    guarded.pending.add(ticket, owner, events, idempotency);
                    let (done, waiting) = oneshot::channel();
                    guarded.queue.push(Queued { ticket, write, done });
                    Next::Wait(waiting)
                }
                Err(
                    conflict
                    @ (AppendError::SeqMoved { .. } | AppendError::VersionMoved { .. } | AppendError::KeyTaken),
                ) if guarded.next_ticket > *self.inner.shared.settled.borrow() => {
                    Next::Conflict(conflict, guarded.next_ticket)
                }
                Err(error) => return Err(error),
            }
        };
        match next {
            Next::Wait(waiting) => {
                self.inner.shared.queued.notify_one();
                waiting.await.map_err(|_| writer_gone())?
            }
            Next::Conflict(conflict, target) => {
                // The conflict may be with writes still waiting for their sync, which readers cannot see
                // yet: a caller that re-read and retried at once would conflict again. Answering only once
                // they are settled lets the retry read what it conflicted with.
                let mut settled = self.inner.shared.settled.subscribe();
                settled.wait_for(|t| *t >= target).await.map_err(|_| writer_gone())?;
                Err(conflict)
            }
        }
    }

    /// How many checked writes wait for the writer thread to take them (tests only).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.guarded().map_or(0, |g| g.queue.len())
    }

    /// A durable store with injected log faults (tests only).
    #[cfg(test)]
    fn open_with_faults(dir: &Path, faults: Arc<log::Faults>) -> Result<Self, OpenError> {
        let (mut log, state) = EventLog::open(dir)?;
        log.faults = Some(faults);
        Self::with_log(state, log, dir)
    }
}

/// The writer thread of a durable store: takes every queued write, writes and syncs them together, then
/// applies them and answers their callers; until the store closes and the queue is empty.
fn write_loop(shared: &Shared, mut log: EventLog) {
    let mut records = Vec::new();
    loop {
        let Ok(mut guarded) = shared.guarded.lock() else {
            return;
        };
        while guarded.queue.is_empty() && !guarded.closed {
            guarded = match shared.queued.wait(guarded) {
                Ok(guarded) => guarded,
                Err(_) => return,
            };
        }
        if guarded.queue.is_empty() {
            return;
        }
        let group = std::mem::take(&mut guarded.queue);
        drop(guarded);

        records.clear();
        let written = group
            .iter()
            .try_for_each(|queued| match &queued.write {
                Write::Append {
                    owner,
                    events,
                    idempotency,
                } => EventLog::encode_append(&mut records, owner, events, idempotency.as_ref()),
                Write::Remember(write) => EventLog::encode_remember(&mut records, write),
            })
            .and_then(|()| log.write_synced(&records));
        // Large one-off groups should not keep their buffer for the life of the store.
        if records.capacity() > 1024 * 1024 {
            records = Vec::new();
        }

        let Ok(mut guarded) = shared.guarded.lock() else {
            return;
        };
        match written {
            Ok(()) => {
                let Guarded {
                    state, pending, queue, ..
                } = &mut *guarded;
                let answers_last = group.last().map(|queued| queued.ticket);
                let mut answers = Vec::with_capacity(group.len());
                for Queued { ticket, write, done } in group {
                    let (owner, events, idempotency) = write.parts();
                    state.apply_append(owner, events, idempotency);
                    pending.applied(ticket, owner, events, idempotency);
                    let events = match write {
                        Write::Append { events, .. } => events,
                        Write::Remember(_) => Vec::new(),
                    };
                    answers.push((done, events));
                }
                if queue.is_empty() {
                    // Nothing is in flight: the state is the whole truth (this also bounds the overlay).
                    pending.clear();
                }
                shared.commits.send_replace(state.commit_count());
                if let Some(last) = answers_last {
                    shared.settled.send_replace(last + 1);
                }
                drop(guarded);
                for (done, events) in answers {
                    // A caller that stopped waiting (its request was dropped) still has its write committed.
                    let _ = done.send(Ok(events));
                }
            }
            Err(error) => {
                // Later writes were checked against these, so they fail with them.
                let behind = std::mem::take(&mut guarded.queue);
                guarded.pending.clear();
                shared.settled.send_replace(guarded.next_ticket);
                drop(guarded);
                tracing::error!(%error, failed = group.len() + behind.len(), "event log write failed; failing every waiting write");
                let message = format!("event log write failed: {error}");
                for queued in group.into_iter().chain(behind) {
                    let _ = queued
                        .done
                        .send(Err(AppendError::Unavailable(Failure::transient(message.clone()))));
                }
            }
        }
    }
}

impl EventStore for MemoryEventStore {
    async fn append(&self, batch: AppendBatch) -> Result<Vec<StoredEvent>, AppendError> {
        self.append_with(batch, None).await
    }

    async fn append_rebasing(&self, batch: AppendBatch, rebase: Rebase) -> Result<Vec<StoredEvent>, AppendError> {
        self.append_with(batch, Some(rebase)).await
    }

    async fn remember(&self, write: IdempotencyWrite) -> Result<(), AppendError> {
        self.commit(|state, pending| {
            state.check_key(&write, pending)?;
            Ok(Write::Remember(write))
        })
        .await
        .map(|_| ())
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

    /// Erases under the state lock, which also serializes every append, so no append of the user can
    /// slip past it. A store durable in a log file refuses: its append-only file would keep every erased
    /// event, which is why data directories are SQLite databases now.
    async fn erase_owner(&self, owner: &UserId, at: Timestamp) -> Result<Timestamp, StoreError> {
        if self.inner.writer.is_some() {
            return Err(StoreError::Unavailable(Failure::permanent(
                "a store durable in a log file cannot erase an account; import it into a SQLite data directory",
            )));
        }
        let mut guarded = self.guarded()?;
        Ok(guarded.state.erase(owner, at))
    }

    async fn erased(&self, owner: &UserId) -> Result<Option<Timestamp>, StoreError> {
        self.read(|s| s.erased(owner))
    }
}

/// The change feed of [`MemoryEventStore::changes_after`], with consumer positions kept in memory.
impl ChangeFeed for MemoryEventStore {
    fn commit_position(&self) -> Result<u64, StoreError> {
        MemoryEventStore::commit_position(self)
    }

    async fn changes_after(&self, position: u64, limit: usize) -> Result<(Vec<StoredEvent>, u64), StoreError> {
        MemoryEventStore::changes_after(self, position, limit)
    }

    fn wait_for_commit(&self, position: u64) -> impl std::future::Future<Output = Option<u64>> + Send {
        let mut commits = self.watch_commits();
        async move { commits.wait_for(|p| *p > position).await.ok().map(|p| *p) }
    }

    async fn consumer_position(&self, consumer: &str) -> Result<u64, StoreError> {
        let consumers = self.inner.shared.consumers.lock().map_err(|_| poisoned())?;
        Ok(consumers.get(consumer).copied().unwrap_or(0))
    }

    async fn set_consumer_position(&self, consumer: &str, position: u64) -> Result<(), StoreError> {
        let mut consumers = self.inner.shared.consumers.lock().map_err(|_| poisoned())?;
        consumers.insert(consumer.to_owned(), position);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
