//! The data directory of `rookery serve --data-dir`: one process at a time, the SQLite database that holds
//! the log, the projections, the consumers' positions and the search index, and the one-time import of
//! the file log that data directories held before.
//!
//! A directory written by an older build holds [`LOG_FILE`] and no database. On the first start the log
//! is read record by record, in commit order, into a new database ([`SqliteStore::import`]: every event
//! keeps its seq, time, ids and metadata, every idempotency record is kept), in one transaction; then the
//! log is renamed to [`IMPORTED_LOG_FILE`] and kept as a backup. A crash before the rename leaves an
//! empty database or a complete one: an empty one is simply imported into again, and a complete one next
//! to the log is refused with an error that says what to check, rather than guessed at.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rookery_adapters_memory::{LOG_FILE, LogReader, LogRecord};
use rookery_adapters_sqlite::{DATABASE_FILE, ImportError, ImportRecord, ImportReport, SqliteStore};

use super::StartError;

/// The lock file that keeps a second server (or `rookery reindex`) off a data directory in use.
pub const LOCK_FILE: &str = "rookery.lock";

/// What the imported log is renamed to.
pub const IMPORTED_LOG_FILE: &str = "events.log.imported";

fn error(path: &Path, reason: impl std::fmt::Display) -> StartError {
    StartError::DataDir {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// An open data directory: its lock and its store.
#[derive(Debug)]
pub struct DataDir {
    dir: PathBuf,
    store: SqliteStore,
    imported: Option<ImportReport>,
    /// Held (locked) for as long as the directory is in use; closing it releases the lock, also when the
    /// process dies, so a crash never leaves a stale lock behind.
    _lock: File,
}

impl DataDir {
    /// Opens `dir` (created if missing): locks it, imports an old log if there is one, opens the database.
    ///
    /// This blocks (file I/O, and an import reads the whole old log): call it from a blocking thread.
    ///
    /// # Errors
    /// [`StartError::DataDir`] naming the directory or file that cannot be used: a directory in use by
    /// another process, a database file that is corrupt, foreign or from a newer build, an old log that
    /// cannot be read, or a log next to a database that already holds events.
    pub fn open(dir: &Path) -> Result<Self, StartError> {
        let started = Instant::now();
        std::fs::create_dir_all(dir).map_err(|e| error(dir, e))?;
        let lock = lock(dir)?;
        let database = dir.join(DATABASE_FILE);
        let imported = if dir.join(LOG_FILE).exists() {
            Some(import_log(dir, &database)?)
        } else {
            None
        };
        let store = SqliteStore::open(&database).map_err(|e| error(&database, e))?;
        tracing::info!(
            dir = %dir.display(),
            database = %database.display(),
            events = store.commit_position(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "data directory opened"
        );
        Ok(Self {
            dir: dir.to_owned(),
            store,
            imported,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store (a handle sharing the database).
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// What was imported from an old log at this start, if anything was.
    pub fn imported(&self) -> Option<ImportReport> {
        self.imported
    }
}

/// Takes the directory's lock, or says which process-level conflict keeps it.
fn lock(dir: &Path) -> Result<File, StartError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| error(&path, e))?;
    file.try_lock().map_err(|e| {
        error(
            &path,
            format!("the data directory is in use by another rookery process ({e})"),
        )
    })?;
    Ok(file)
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The first of `events.log.imported`, `events.log.imported.2`, ... that does not exist yet.
fn backup_name(dir: &Path) -> PathBuf {
    let mut candidate = dir.join(IMPORTED_LOG_FILE);
    let mut n = 2;
    while candidate.exists() {
        candidate = dir.join(format!("{IMPORTED_LOG_FILE}.{n}"));
        n += 1;
    }
    candidate
}

fn import_record(record: LogRecord) -> ImportRecord {
    match record {
        LogRecord::Append {
            owner,
            events,
            idempotency,
        } => ImportRecord::Append {
            owner,
            events,
            idempotency,
        },
        LogRecord::Remember(write) => ImportRecord::Remember(write),
    }
}

/// Imports the old log of `dir` into `database` and renames it to a backup.
fn import_log(dir: &Path, database: &Path) -> Result<ImportReport, StartError> {
    let started = Instant::now();
    let log = dir.join(LOG_FILE);
    tracing::info!(log = %log.display(), database = %database.display(), "importing the event log into SQLite");
    let mut reader = LogReader::open(dir).map_err(|e| error(&log, e))?;
    let report = SqliteStore::import(database, reader.by_ref().map(|r| r.map(import_record))).map_err(|e| match e {
        ImportError::NotEmpty { position, .. } => error(
            &log,
            format!(
                "{} already holds events (up to feed position {position}) next to this old log; if a start \
                 stopped after importing it, rename it to {IMPORTED_LOG_FILE}, else move it out of the way",
                database.display()
            ),
        ),
        ImportError::Open(open) => error(database, open),
        other => error(&log, other),
    })?;
    if reader.torn_bytes() > 0 {
        tracing::warn!(
            log = %log.display(),
            dropped_bytes = reader.torn_bytes(),
            kept_records = reader.records(),
            "the event log ends in a torn or corrupt record (a write that was never acknowledged); not imported"
        );
    }
    drop(reader);
    let backup = backup_name(dir);
    std::fs::rename(&log, &backup)
        .and_then(|()| sync_dir(dir))
        .map_err(|e| {
            error(
                &log,
                format!("imported, but it cannot be renamed to {}: {e}", backup.display()),
            )
        })?;
    tracing::info!(
        events = report.events,
        records = report.records,
        elapsed_ms = started.elapsed().as_millis() as u64,
        backup = %backup.display(),
        "imported the event log into SQLite; the old log is kept as a backup"
    );
    Ok(report)
}
