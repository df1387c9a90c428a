//! [`SqliteStore`]: the [`EventStore`] over one SQLite database, with its global change feed and each
//! feed consumer's stored position.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use rookery_domain::device::Devices;
use rookery_domain::{
    CollectionName, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Seq, StoredEvent, Timestamp, UserId, Version,
};
use rookery_ports::{
    AppendBatch, AppendError, ChangeFeed, EventStore, Failure, IdempotencyRecord, IdempotencyWrite, Rebase, StoreError,
};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};

use crate::codec::{PreparedAppend, PreparedRecord, Rebasing, int, uint};
use crate::error::OpenError;
use crate::readers::Readers;
use crate::schema;
use crate::search::SqliteSearchIndex;
use crate::writer::{Job, QUEUE, Shared, Writer};
use crate::{erase, log};

/// The file name of the database inside a data directory.
pub const DATABASE_FILE: &str = "rookery.sqlite3";

/// What every clone of a store shares. Dropping the last one stops the writer and closes the file.
#[derive(Debug)]
pub(crate) struct Inner {
    path: PathBuf,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    pub(crate) readers: Arc<Readers>,
    pub(crate) shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The read connections close first, so that the writer's connection is the last one: closing it
        // then checkpoints the WAL into the database file and removes it, leaving one self-contained file.
        self.readers.close();
        // Closing the queue lets the writer finish what is queued, then exit and close its connection.
        self.jobs = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(file = %self.path.display(), "the sqlite writer thread panicked");
        }
    }
}

/// An [`EventStore`] (and, through [`SqliteStore::search_index`], a search index) in one SQLite
/// database file, durable on every acknowledged write. Clones share the same database.
///
/// Writes go through one writer thread that commits them in groups (see the `writer` module); reads run
/// on a small pool of read-only connections and never wait for a write. Nothing is loaded into memory
/// at start: opening a store of any size reads only its header and its last feed position.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) inner: Arc<Inner>,
}

/// A summary, never the contents: a store's `Debug` ends up in logs of whatever holds it.
impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("position", &self.commit_position())
            .finish_non_exhaustive()
    }
}

fn markers_poisoned() -> Failure {
    Failure::permanent("sqlite store: the erasure markers' lock was poisoned by a panic")
}

fn writer_gone() -> Failure {
    Failure::permanent("sqlite store: the writer thread stopped; reopen the store")
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it (and its directory) if missing.
    ///
    /// A new or older database is set up or migrated to this build's schema; the file is checked to be a
    /// Rookery database first, and nothing is changed in a file that is not.
    ///
    /// # Errors
    /// [`OpenError`], naming the file: [`OpenError::NotADatabase`] for a file that is not SQLite or whose
    /// header is damaged, [`OpenError::Foreign`] for another application's database,
    /// [`OpenError::TooNew`] for a newer schema, [`OpenError::Sqlite`] or [`OpenError::Io`] otherwise.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let started = std::time::Instant::now();
        let path = path.as_ref().to_owned();
        let io = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let conn = schema::open_writer(&path)?;
        let position = log::last_position(&conn).map_err(|failure| OpenError::Io {
            path: path.clone(),
            source: std::io::Error::other(failure.message),
        })?;
        let erased = erase::all_markers(&conn).map_err(|failure| OpenError::Io {
            path: path.clone(),
            source: std::io::Error::other(failure.message),
        })?;
        let readers = Arc::new(Readers::new(path.clone(), Readers::default_size()));
        readers.warm().map_err(|source| OpenError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let store = Self::start(conn, path, position, erased, readers)?;
        tracing::info!(
            file = %store.path().display(),
            position,
            millis = started.elapsed().as_millis(),
            "opened the sqlite store"
        );
        Ok(store)
    }

    fn start(
        conn: Connection,
        path: PathBuf,
        position: u64,
        erased: HashMap<String, i64>,
        readers: Arc<Readers>,
    ) -> Result<Self, OpenError> {
        let shared = Arc::new(Shared::new(position, erased));
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writer = Writer::new(conn, Arc::clone(&shared), path.clone());
        let handle = std::thread::Builder::new()
            .name("rookery-sqlite-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|source| OpenError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                jobs: Some(jobs),
                writer: Some(handle),
                readers,
                shared,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The search index kept in the same database (the same writer and read connections).
    pub fn search_index(&self) -> SqliteSearchIndex {
        SqliteSearchIndex::new(self.clone())
    }

    /// Queues a job for the writer and waits for its answer, which comes once its group committed.
    pub(crate) async fn submit<T>(&self, job: impl FnOnce(oneshot::Sender<T>) -> Job) -> Result<T, Failure> {
        let jobs = self.inner.jobs.as_ref().ok_or_else(writer_gone)?;
        let (reply, answer) = oneshot::channel();
        jobs.send(job(reply)).await.map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())
    }

    /// Runs a read on a read-only connection.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        self.inner.readers.run(f).await
    }

    /// Runs `f`, a read of one indexed row, on the calling thread when a connection is idle (see
    /// [`Readers::run_point`]).
    pub(crate) async fn read_point<T, F>(&self, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    {
        self.inner.readers.run_point(f).await
    }

    /// The feed position of the last committed event: every event has a position, in commit order,
    /// starting at 1; 0 is the beginning. Positions are never reused.
    pub fn commit_position(&self) -> u64 {
        *self.inner.shared.commits.borrow()
    }

    /// A receiver of [`SqliteStore::commit_position`], updated after every commit that stored events,
    /// so a consumer can wait for new events (`changed().await`) instead of polling.
    pub fn watch_commits(&self) -> watch::Receiver<u64> {
        self.inner.shared.commits.subscribe()
    }

    /// Up to `limit` stored events of every user after feed `position`, in the order they committed, and
    /// the position after them (`position` itself when there are none).
    ///
    /// This is the in-process counterpart of DynamoDB Streams: each event appears once, and a user's events
    /// appear in seq order. Only committed events are ever seen, and since there is one writer, an event
    /// committed later always has a higher position: a consumer never misses one behind its position.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], including for an event that cannot be decoded (never skipped).
    pub async fn changes_after(&self, position: u64, limit: usize) -> Result<(Vec<StoredEvent>, u64), StoreError> {
        Ok(self.read(move |c| log::changes_after(c, position, limit)).await?)
    }

    /// The stored feed position of the consumer `name` (0, the beginning, for one never stored).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn consumer_position(&self, name: &str) -> Result<u64, StoreError> {
        let name = name.to_owned();
        Ok(self.read_point(move |c| log::consumer_position(c, &name)).await?)
    }

    /// Durably stores the feed position of the consumer `name`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn set_consumer_position(&self, name: &str, position: u64) -> Result<(), StoreError> {
        let position = int(position)?;
        let name = name.to_owned();
        Ok(self.submit(|reply| Job::Position { name, position, reply }).await??)
    }

    /// How many prepared writes wait in the writer's queue (tests only).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.inner
            .jobs
            .as_ref()
            .map_or(0, |jobs| jobs.max_capacity() - jobs.capacity())
    }

    /// How many transactions the writer committed and how many writes they held (for diagnostics).
    pub fn write_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let shared = &self.inner.shared;
        (shared.groups.load(Relaxed), shared.writes.load(Relaxed))
    }
}

impl EventStore for SqliteStore {
    async fn append(&self, batch: AppendBatch) -> Result<Vec<StoredEvent>, AppendError> {
        let batch = Box::new(PreparedAppend::new(batch)?);
        self.submit(|reply| Job::Append { batch, reply }).await?
    }

    async fn append_rebasing(&self, batch: AppendBatch, rebase: Rebase) -> Result<Vec<StoredEvent>, AppendError> {
        let original = batch.clone();
        let mut batch = Box::new(PreparedAppend::new(batch)?);
        batch.rebase = Some(Rebasing {
            rebase,
            batch: original,
        });
        self.submit(|reply| Job::Append { batch, reply }).await?
    }

    async fn remember(&self, write: IdempotencyWrite) -> Result<(), AppendError> {
        let record = PreparedRecord::new(write)?;
        self.submit(|reply| Job::Remember { record, reply }).await?
    }

    async fn idempotency(&self, owner: &UserId, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let (owner, key) = (owner.clone(), key.to_owned());
        Ok(self.read_point(move |c| log::idempotency(c, &owner, &key)).await?)
    }

    async fn last_seq(&self, owner: &UserId) -> Result<Seq, StoreError> {
        let owner = owner.clone();
        Ok(self.read_point(move |c| log::last_seq(c, &owner)).await?)
    }

    async fn read_feed(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let owner = owner.clone();
        Ok(self.read(move |c| log::read_feed(c, &owner, after, limit)).await?)
    }

    async fn read_messages(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let owner = owner.clone();
        Ok(self.read(move |c| log::read_messages(c, &owner, after, limit)).await?)
    }

    async fn item_head(&self, owner: &UserId, key: &ItemKey) -> Result<ItemHead, StoreError> {
        let (owner, key) = (owner.clone(), key.clone());
        Ok(self.read_point(move |c| log::item_head(c, &owner, &key)).await?)
    }

    async fn item_history(
        &self,
        owner: &UserId,
        key: &ItemKey,
        after: Version,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (owner, key) = (owner.clone(), key.clone());
        Ok(self
            .read(move |c| log::item_history(c, &owner, &key, after, limit))
            .await?)
    }

    async fn list_items(
        &self,
        owner: &UserId,
        collection: &CollectionName,
        after: Option<&ItemId>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let (owner, collection, after) = (owner.clone(), collection.clone(), after.cloned());
        Ok(self
            .read(move |c| log::list_items(c, &owner, &collection, after.as_ref(), limit))
            .await?)
    }

    async fn devices(&self, owner: &UserId) -> Result<Devices, StoreError> {
        let owner = owner.clone();
        Ok(self.read_point(move |c| log::devices(c, &owner)).await?)
    }

    async fn media(&self, owner: &UserId, id: &MediaId) -> Result<Option<MediaObject>, StoreError> {
        let (owner, id) = (owner.clone(), id.clone());
        Ok(self.read_point(move |c| log::media(c, &owner, &id)).await?)
    }

    async fn owners(&self, after: Option<&UserId>, limit: usize) -> Result<Vec<UserId>, StoreError> {
        let after = after.cloned();
        Ok(self.read(move |c| log::owners(c, after.as_ref(), limit)).await?)
    }

    /// One job of the writer, so it is serialized with every append: the rows go in its transaction
    /// (zeroed on disk by `secure_delete`), and the WAL is truncated before the answer.
    async fn erase_owner(&self, owner: &UserId, at: Timestamp) -> Result<Timestamp, StoreError> {
        let key = owner.as_str().to_owned();
        let at = int(at.as_millis())?;
        let marker = self
            .submit(|reply| Job::Erase {
                owner: key.clone(),
                at,
                reply,
            })
            .await??;
        self.inner
            .shared
            .erased
            .write()
            .map_err(|_| markers_poisoned())?
            .insert(key, marker);
        Ok(Timestamp::from_millis(uint(marker, "an erasure's time")?))
    }

    /// From the markers kept in memory (the `erasures` table, read at open and added to by each erasure).
    async fn erased(&self, owner: &UserId) -> Result<Option<Timestamp>, StoreError> {
        let at = self
            .inner
            .shared
            .erased
            .read()
            .map_err(|_| markers_poisoned())?
            .get(owner.as_str())
            .copied();
        Ok(at
            .map(|at| uint(at, "an erasure's time").map(Timestamp::from_millis))
            .transpose()?)
    }
}

/// The change feed of [`SqliteStore::changes_after`], with consumer positions stored in the database.
impl ChangeFeed for SqliteStore {
    fn commit_position(&self) -> Result<u64, StoreError> {
        Ok(SqliteStore::commit_position(self))
    }

    async fn changes_after(&self, position: u64, limit: usize) -> Result<(Vec<StoredEvent>, u64), StoreError> {
        SqliteStore::changes_after(self, position, limit).await
    }

    fn wait_for_commit(&self, position: u64) -> impl std::future::Future<Output = Option<u64>> + Send {
        // The watched position is published after each commit, so anything it shows is readable.
        let mut commits = self.watch_commits();
        async move { commits.wait_for(|p| *p > position).await.ok().map(|p| *p) }
    }

    async fn consumer_position(&self, consumer: &str) -> Result<u64, StoreError> {
        SqliteStore::consumer_position(self, consumer).await
    }

    async fn set_consumer_position(&self, consumer: &str, position: u64) -> Result<(), StoreError> {
        SqliteStore::set_consumer_position(self, consumer, position).await
    }
}
