//! The single writer: a thread that owns the database's only write connection and commits the writes
//! queued for it in groups.
//!
//! Callers prepare their write (checks that need no database, JSON) on their own task and queue it on a
//! bounded channel, so a burst waits for room without blocking the runtime. The thread takes every write
//! queued (up to [`MAX_GROUP`]) and runs them in one transaction, each inside a savepoint with its own
//! checks: a refused or failed write is rolled back to its savepoint and answered alone, the others go on.
//! Then one `COMMIT`, so one WAL sync, covers the whole group; only after it are the callers answered and
//! the change feed's watchers woken. A write that arrives during a sync waits for the next group, so the
//! number of syncs per second, not the number of writes, is bounded by the disk.
//! A job that may change any number of rows (maintenance, erasure) runs alone in its own transaction,
//! without a savepoint ([`Job::is_bulky`]).
//!
//! A conflict (a moved seq, version or key) is answered after the commit too, so a caller that re-reads
//! and retries sees what it conflicted with. If the commit fails, every write of the group fails as
//! `Unavailable`; after an I/O error (a failed sync may have lost pages the kernel reported written) the
//! writer refuses every later write until the store is reopened, and the reopen recovers from the WAL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rookery_domain::StoredEvent;
use rookery_ports::{AppendError, Failure};
use rusqlite::{Connection, ErrorCode};
use tokio::sync::{mpsc, oneshot, watch};

use crate::codec::{PreparedAppend, PreparedRecord};
use crate::error::{Context, failure};
use crate::search::{self, PreparedChange};
use crate::{erase, log};

/// The most writes one transaction commits.
pub(crate) const MAX_GROUP: usize = 512;

/// How many prepared writes may wait for the writer before callers wait for room.
pub(crate) const QUEUE: usize = 1024;

/// What the writer thread and the store's handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The feed position of the last committed event, published after each commit.
    pub(crate) commits: watch::Sender<u64>,
    /// How many groups (transactions) the writer committed.
    pub(crate) groups: AtomicU64,
    /// How many writes those groups held.
    pub(crate) writes: AtomicU64,
    /// The erasure markers (owner, milliseconds), as in the `erasures` table: every request asks whether
    /// its user is erased, and answering from here saves it a trip to a read connection. Only this
    /// process's writer adds markers, and it adds them here once its transaction committed.
    pub(crate) erased: RwLock<HashMap<String, i64>>,
    /// Held by a test to make the writer wait before it takes a group, so the group's size is known.
    #[cfg(test)]
    pub(crate) pause: std::sync::Mutex<()>,
    /// How many groups the writer has started to take (it has their first job).
    #[cfg(test)]
    pub(crate) started: AtomicU64,
}

impl Shared {
    pub(crate) fn new(position: u64, erased: HashMap<String, i64>) -> Self {
        Self {
            commits: watch::channel(position).0,
            groups: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            erased: RwLock::new(erased),
            #[cfg(test)]
            pause: std::sync::Mutex::new(()),
            #[cfg(test)]
            started: AtomicU64::new(0),
        }
    }
}

/// A write for the writer thread, with the channel its caller waits on.
#[derive(Debug)]
pub(crate) enum Job {
    /// An append to a user's stream.
    Append {
        batch: Box<PreparedAppend>,
        reply: oneshot::Sender<Result<Vec<StoredEvent>, AppendError>>,
    },
    /// An idempotency record on its own.
    Remember {
        record: PreparedRecord,
        reply: oneshot::Sender<Result<(), AppendError>>,
    },
    /// Changes to the search index.
    Index {
        changes: Vec<PreparedChange>,
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// Maintenance SQL (setting the search index aside for a rebuild, and dropping what was set aside).
    Maintain {
        sql: &'static str,
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// An account's erasure: its rows go, its marker stays; answers the marker's time (milliseconds).
    Erase {
        owner: String,
        at: i64,
        reply: oneshot::Sender<Result<i64, Failure>>,
    },
    /// An account's erasure from the search index: its documents go, and its changes are ignored.
    EraseSearch {
        owner: String,
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// A change feed consumer's new position.
    Position {
        name: String,
        position: i64,
        reply: oneshot::Sender<Result<(), Failure>>,
    },
}

/// A write that ran (or was given up), with its outcome, waiting for the commit to be answered.
enum Done {
    Append(
        oneshot::Sender<Result<Vec<StoredEvent>, AppendError>>,
        Result<log::Appended, AppendError>,
    ),
    Remember(oneshot::Sender<Result<(), AppendError>>, Result<(), AppendError>),
    Erase(oneshot::Sender<Result<i64, Failure>>, Result<i64, Failure>),
    Other(oneshot::Sender<Result<(), Failure>>, Result<(), Failure>),
}

impl Done {
    /// Replaces the outcome by `failure`: the group it was part of did not commit.
    fn fail(self, failure: &Failure) -> Self {
        match self {
            Done::Append(reply, _) => Done::Append(reply, Err(AppendError::Unavailable(failure.clone()))),
            Done::Remember(reply, _) => Done::Remember(reply, Err(AppendError::Unavailable(failure.clone()))),
            Done::Erase(reply, _) => Done::Erase(reply, Err(failure.clone())),
            Done::Other(reply, _) => Done::Other(reply, Err(failure.clone())),
        }
    }

    /// Why a bulky job ([`Job::is_bulky`], answered as `Erase` or `Other`) failed, if it did: its failure
    /// undoes the transaction it ran alone in.
    fn failure(&self) -> Option<Failure> {
        match self {
            Done::Erase(_, Err(failure)) | Done::Other(_, Err(failure)) => Some(failure.clone()),
            _ => None,
        }
    }

    /// The feed position of the last event this write stored, if it stored any.
    fn position(&self) -> Option<i64> {
        match self {
            Done::Append(_, Ok(appended)) => appended.last_position,
            _ => None,
        }
    }

    fn answer(self) {
        // A caller that stopped waiting (its request was dropped) still has its write committed.
        match self {
            Done::Append(reply, outcome) => {
                let _ = reply.send(outcome.map(|appended| appended.events));
            }
            Done::Remember(reply, outcome) => {
                let _ = reply.send(outcome);
            }
            Done::Erase(reply, outcome) => {
                let _ = reply.send(outcome);
            }
            Done::Other(reply, outcome) => {
                let _ = reply.send(outcome);
            }
        }
    }
}

impl Job {
    /// A job not run at all, answered with `failure`.
    fn refuse(self, failure: &Failure) -> Done {
        let unavailable = || AppendError::Unavailable(failure.clone());
        match self {
            Job::Append { reply, .. } => Done::Append(reply, Err(unavailable())),
            Job::Remember { reply, .. } => Done::Remember(reply, Err(unavailable())),
            Job::Erase { reply, .. } => Done::Erase(reply, Err(failure.clone())),
            Job::Index { reply, .. }
            | Job::Maintain { reply, .. }
            | Job::EraseSearch { reply, .. }
            | Job::Position { reply, .. } => Done::Other(reply, Err(failure.clone())),
        }
    }

    /// A job that may change any number of rows (a maintenance statement, an erasure), which runs alone in
    /// its transaction and without a savepoint.
    ///
    /// Inside a savepoint SQLite keeps a copy of every page the job changes in a statement journal, which
    /// lives in memory here (`temp_store = MEMORY`, so that no copy of erased rows lands in a temporary
    /// file): setting the search index aside for a rebuild copied the whole index into memory (600 MB at
    /// ten million events). Alone in its transaction, the job's pages spill to the WAL like any large
    /// transaction's, and a failure rolls the whole transaction back instead of a savepoint.
    fn is_bulky(&self) -> bool {
        matches!(self, Job::Maintain { .. } | Job::Erase { .. } | Job::EraseSearch { .. })
    }

    /// Runs the job: inside a savepoint of the open transaction, kept when it succeeds and rolled back when
    /// it is refused or fails; a bulky job ([`Job::is_bulky`]) directly in its own transaction.
    fn run(self, conn: &Connection) -> Done {
        match self {
            Job::Append { batch, reply } => Done::Append(
                reply,
                in_savepoint(conn, |c| {
                    erase::check_not_erased(c, &batch.owner)?;
                    // A message's record belongs to its sender, whose account may be the erased one.
                    if let Some(write) = batch.idempotency.as_ref().filter(|w| w.owner != batch.owner) {
                        erase::check_not_erased(c, &write.owner)?;
                    }
                    log::append(c, *batch)
                }),
            ),
            Job::Remember { record, reply } => Done::Remember(
                reply,
                in_savepoint(conn, |c| {
                    erase::check_not_erased(c, &record.owner)?;
                    log::check_key(c, &record)?;
                    Ok(log::put_record(c, &record)?)
                }),
            ),
            Job::Index { changes, reply } => Done::Other(reply, in_savepoint(conn, |c| search::apply(c, &changes))),
            Job::Maintain { sql, reply } => {
                Done::Other(reply, conn.execute_batch(sql).context("maintaining the database"))
            }
            Job::Erase { owner, at, reply } => Done::Erase(reply, erase::erase_owner(conn, &owner, at)),
            Job::EraseSearch { owner, reply } => Done::Other(reply, erase::erase_search(conn, &owner)),
            Job::Position { name, position, reply } => Done::Other(
                reply,
                in_savepoint(conn, |c| log::set_consumer_position(c, &name, position)),
            ),
        }
    }
}

/// Runs `f` inside a savepoint: released when it succeeds, rolled back when it fails.
fn in_savepoint<T, E: From<Failure>>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E> {
    conn.execute_batch("SAVEPOINT write")
        .map_err(|e| failure("starting a savepoint", &e))?;
    let outcome = f(conn);
    let end = if outcome.is_ok() {
        "RELEASE write"
    } else {
        "ROLLBACK TO write; RELEASE write"
    };
    // After some errors SQLite has already rolled the whole transaction back, and the savepoint is gone
    // with it; the group notices (`is_autocommit`) and fails as a whole.
    if let Err(error) = conn.execute_batch(end)
        && !conn.is_autocommit()
    {
        return Err(failure("ending a savepoint", &error).into());
    }
    outcome
}

/// The writer thread's state.
pub(crate) struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    path: PathBuf,
    /// Set after a commit failed with an I/O error: every later write is refused with it.
    broken: Option<Failure>,
    /// Set while the WAL may still hold frames of an erased account (its truncation was not possible
    /// yet); every later commit tries again.
    wal_holds_erased: bool,
}

impl Writer {
    pub(crate) fn new(conn: Connection, shared: Arc<Shared>, path: PathBuf) -> Self {
        Self {
            conn,
            shared,
            path,
            broken: None,
            wal_holds_erased: false,
        }
    }

    /// Takes queued jobs and commits them group by group, until every handle of the store is gone and the
    /// queue is empty; then the connection closes (checkpointing the WAL).
    pub(crate) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        // A bulky job taken while filling a group waits for the next one, which it has to itself.
        let mut held: Option<Job> = None;
        while let Some(first) = held.take().or_else(|| jobs.blocking_recv()) {
            #[cfg(test)]
            self.shared.started.fetch_add(1, Ordering::SeqCst);
            #[cfg(test)]
            let paused = self.shared.pause.lock();
            let mut group = Vec::with_capacity(16);
            let alone = first.is_bulky();
            group.push(first);
            while !alone && group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) if job.is_bulky() => {
                        held = Some(job);
                        break;
                    }
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            #[cfg(test)]
            drop(paused);
            self.commit(group);
        }
        tracing::debug!(file = %self.path.display(), "the sqlite writer stopped");
    }

    /// Runs and commits one group, then answers every job of it.
    fn commit(&mut self, group: Vec<Job>) {
        let size = group.len() as u64;
        if let Some(broken) = &self.broken {
            group.into_iter().for_each(|job| job.refuse(broken).answer());
            return;
        }
        if let Err(error) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let failure = failure("starting a transaction", &error);
            group.into_iter().for_each(|job| job.refuse(&failure).answer());
            return;
        }
        let erasing = group
            .iter()
            .any(|job| matches!(job, Job::Erase { .. } | Job::EraseSearch { .. }));
        let mut done = Vec::with_capacity(group.len());
        let mut aborted: Option<Failure> = None;
        for job in group {
            match &aborted {
                Some(failure) => done.push(job.refuse(failure)),
                None => {
                    let bulky = job.is_bulky();
                    let outcome = job.run(&self.conn);
                    if bulky && let Some(failure) = outcome.failure() {
                        // No savepoint to go back to: the transaction, which holds only this job, goes.
                        aborted = Some(failure);
                    } else if self.conn.is_autocommit() {
                        aborted = Some(Failure::transient(
                            "sqlite store: the transaction was rolled back by an error; try again",
                        ));
                    }
                    done.push(outcome);
                }
            }
        }
        let committed = match aborted {
            Some(failure) => {
                if !self.conn.is_autocommit()
                    && let Err(error) = self.conn.execute_batch("ROLLBACK")
                {
                    tracing::warn!(file = %self.path.display(), %error, "rolling back a failed write");
                }
                Err(failure)
            }
            None => self.conn.execute_batch("COMMIT").map_err(|error| {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                let failure = failure("committing", &error);
                if error.sqlite_error_code() == Some(ErrorCode::SystemIoFailure) {
                    // The sync may have failed after the kernel dropped the pages it could not write:
                    // nothing later can be trusted to be on disk until SQLite recovers on a reopen.
                    let broken = Failure::permanent(format!(
                        "sqlite store: a commit failed with an I/O error ({error}); reopen the store to recover"
                    ));
                    tracing::error!(file = %self.path.display(), %error, "a commit failed; refusing writes until reopened");
                    self.broken = Some(broken);
                }
                failure
            }),
        };
        match committed {
            Ok(()) => {
                if erasing {
                    self.wal_holds_erased = !erase::checkpoint(&self.conn, erase::CHECKPOINT_ATTEMPTS);
                    if self.wal_holds_erased {
                        // The erasure is committed; its old frames stay in the WAL until a later try.
                        tracing::warn!(file = %self.path.display(), "could not truncate the WAL after an erasure; trying again after the next commits");
                    }
                } else if self.wal_holds_erased {
                    self.wal_holds_erased = !erase::checkpoint(&self.conn, 1);
                }
                self.shared.groups.fetch_add(1, Ordering::Relaxed);
                self.shared.writes.fetch_add(size, Ordering::Relaxed);
                if let Some(position) = done.iter().filter_map(Done::position).max()
                    && let Ok(position) = u64::try_from(position)
                {
                    self.shared.commits.send_if_modified(|current| {
                        let moved = position > *current;
                        if moved {
                            *current = position;
                        }
                        moved
                    });
                }
                done.into_iter().for_each(Done::answer);
            }
            Err(failure) => {
                tracing::warn!(file = %self.path.display(), error = %failure, writes = size, "a group of writes failed");
                done.into_iter().for_each(|d| d.fail(&failure).answer());
            }
        }
    }
}
