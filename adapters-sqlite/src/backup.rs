//! Online backups: a consistent copy of a database taken with SQLite's backup API, while a server (in
//! this process or another) goes on writing to it.
//!
//! The copy reads the whole database in one step, so it is one read transaction: in WAL mode it sees the
//! last commit before it started and nothing after, and it never blocks the writer (nor waits for it).
//! It is written to a temporary file beside the destination, checked (`PRAGMA quick_check`), synced and
//! then renamed over the destination, so the destination is always either the previous backup or a
//! complete new one. The copy is a single self-contained file (rollback journal mode); a store opened on
//! it switches it back to WAL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::error::OpenError;
use crate::schema;

/// What a backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupReport {
    /// Events in the copy.
    pub events: u64,
    /// The feed position of its last event.
    pub position: u64,
    /// The copy's size in bytes.
    pub bytes: u64,
}

/// Why a backup was not made. The destination is then unchanged.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The source is not a Rookery database this build can read (missing, foreign, corrupt, too new).
    #[error(transparent)]
    Source(#[from] OpenError),
    /// The destination is the source itself.
    #[error("{} is the database itself; back it up to another file", .0.display())]
    SameFile(PathBuf),
    /// Copying failed.
    #[error("backing up {} to {}: {source}", .from.display(), .to.display())]
    Copy {
        /// The database.
        from: PathBuf,
        /// The file being written.
        to: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The copy failed its check.
    #[error("the copy {} failed its integrity check: {reason}", .path.display())]
    Check {
        /// The file being written.
        path: PathBuf,
        /// What the check said.
        reason: String,
    },
    /// The file system.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// The path as it will be once it exists: its directory resolved, so two names of one file compare equal.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(path) = path.canonicalize() {
        return path;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.canonicalize()
                .map_or_else(|_| path.to_owned(), |dir| dir.join(name))
        }
        _ => path.to_owned(),
    }
}

/// Copies the database at `source` to `destination` (replacing it), consistently, while other
/// connections may be writing to the source. This blocks: call it from a blocking thread.
///
/// # Errors
/// [`BackupError`]; the destination is then unchanged (a partial copy is removed).
pub fn backup(source: &Path, destination: &Path) -> Result<BackupReport, BackupError> {
    if resolved(source) == resolved(destination) {
        return Err(BackupError::SameFile(destination.to_owned()));
    }
    let from = schema::open_existing_reader(source)?;
    let mut partial = destination.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Io { path, source }
    };
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&partial)(e)),
    }
    let copied = copy(&from, source, &partial);
    let report = match copied {
        Ok(report) => report,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    std::fs::File::open(&partial)
        .and_then(|file| file.sync_all())
        .map_err(io(&partial))?;
    std::fs::rename(&partial, destination).map_err(io(destination))?;
    if let Some(dir) = destination.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    let bytes = std::fs::metadata(destination).map_err(io(destination))?.len();
    Ok(BackupReport { bytes, ..report })
}

/// Copies `from` into a new file at `to` and checks the copy.
fn copy(from: &Connection, source: &Path, to: &Path) -> Result<BackupReport, BackupError> {
    let failed = |source_error| BackupError::Copy {
        from: source.to_owned(),
        to: to.to_owned(),
        source: source_error,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut into = Connection::open_with_flags(to, flags).map_err(failed)?;
    {
        let backup = Backup::new(from, &mut into).map_err(failed)?;
        // Every page in one step: one read transaction, so one consistent snapshot of the source.
        let deadline = Instant::now() + schema::BUSY_TIMEOUT;
        loop {
            match backup.step(-1).map_err(failed)? {
                StepResult::Done => break,
                StepResult::More => {}
                // Busy or locked: another connection holds a lock the copy needs for a moment.
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    return Err(failed(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("the database stayed locked".into()),
                    )));
                }
            }
        }
    }
    let mode: String = into
        .query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))
        .map_err(failed)?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(BackupError::Check {
            path: to.to_owned(),
            reason: format!("the copy stayed in {mode} mode"),
        });
    }
    let check: String = into
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(failed)?;
    if check != "ok" {
        return Err(BackupError::Check {
            path: to.to_owned(),
            reason: check,
        });
    }
    let (events, position): (i64, Option<i64>) = into
        .query_row("SELECT count(*), max(position) FROM events", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map_err(failed)?;
    into.close().map_err(|(_, e)| failed(e))?;
    Ok(BackupReport {
        events: u64::try_from(events).unwrap_or(0),
        position: position.and_then(|p| u64::try_from(p).ok()).unwrap_or(0),
        bytes: 0,
    })
}
