//! Why a database cannot be opened, and how SQLite's errors become the ports' [`Failure`]s.

use std::path::PathBuf;

use rookery_ports::Failure;
use rusqlite::ErrorCode;

use crate::schema::SCHEMA_VERSION;

/// Why [`crate::SqliteStore::open`] refused a database file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file is not an SQLite database at all, or its header or schema is damaged.
    #[error("{} is not a readable SQLite database (a foreign or corrupt file): {source}", .path.display())]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file is an SQLite database of some other application.
    #[error(
        "{} is an SQLite database of another application (application_id {application_id:#010x}), not a Rookery store",
        .path.display()
    )]
    Foreign {
        /// The file.
        path: PathBuf,
        /// The `application_id` found in its header.
        application_id: i32,
    },
    /// The file was written by a newer build, whose schema this build does not know.
    #[error(
        "{} has schema version {found}, newer than this build understands ({SCHEMA_VERSION})",
        .path.display()
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// The `user_version` found in its header.
        found: i64,
    },
    /// SQLite could not open or set up the file (permissions, locking, disk).
    #[error("cannot open {}: {source}", .path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file system, or the writer thread could not be started.
    #[error("cannot open {}: {source}", .path.display())]
    Io {
        /// The file (or its directory).
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// True for errors that may go away by themselves: contention, a full disk, a failing device.
pub(crate) fn is_transient(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::OutOfMemory
        )
    )
}

/// The port failure for an SQLite error met while doing `what`.
pub(crate) fn failure(what: &str, error: &rusqlite::Error) -> Failure {
    let message = format!("sqlite store: {what}: {error}");
    if is_transient(error) {
        Failure::transient(message)
    } else {
        Failure::permanent(message)
    }
}

/// Adds what was being done to an SQLite error, turning it into a [`Failure`].
pub(crate) trait Context<T> {
    /// The failure, if any, described as happening while doing `what`.
    fn context(self, what: &str) -> Result<T, Failure>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, what: &str) -> Result<T, Failure> {
        self.map_err(|error| failure(what, &error))
    }
}
