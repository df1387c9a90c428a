//! A one-time import of another store's log into a new database: the way a data directory written by the
//! file log that `rookery serve --data-dir` used before SQLite moves into SQLite.
//!
//! The import does not go through the append contract: the events were committed long ago, so they keep
//! their original seq, time, ids and metadata, and no check but the log's own shape applies (each event
//! continues its owner's stream). Every projection the store keeps beside the log (streams, items,
//! devices, media) is built by the same code as a live append, and every idempotency record is kept, so
//! a repeated request and a push already sent are still recognised. The whole import is one
//! transaction: a crash in the middle leaves the database empty, and the import can simply run again.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use rookery_domain::{StoredEvent, UserId};
use rookery_ports::{Failure, IdempotencyWrite};
use rusqlite::{Connection, TransactionBehavior};

use crate::codec::{PreparedEvent, PreparedRecord};
use crate::error::{Context, OpenError};
use crate::store::SqliteStore;
use crate::{log, schema};

/// One record of the log being imported, in commit order.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportRecord {
    /// An append to one user's stream.
    Append {
        /// Whose stream.
        owner: UserId,
        /// The events as they were stored; their seqs continue the owner's stream.
        events: Vec<StoredEvent>,
        /// The idempotency record written with them.
        idempotency: Option<IdempotencyWrite>,
    },
    /// An idempotency record written on its own.
    Remember(IdempotencyWrite),
}

/// What an import stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    /// Records read from the source.
    pub records: u64,
    /// Events stored.
    pub events: u64,
}

/// Why an import did not happen. Nothing of a failed import stays in the database.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The database cannot be opened (a foreign or corrupt file, a newer schema, the file system).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The database already holds events: an import goes only into an empty one.
    #[error("{} already holds events (up to feed position {position}); an import needs an empty database", .path.display())]
    NotEmpty {
        /// The database file.
        path: PathBuf,
        /// Its commit position.
        position: u64,
    },
    /// The source could not give a record.
    #[error("record {record} of the source cannot be read: {reason}")]
    Source {
        /// The record's number, from 0.
        record: u64,
        /// What the source said.
        reason: String,
    },
    /// A record does not continue its stream (an event of another owner, or a seq out of order).
    #[error("record {record} of the source is not a continuation of its stream: {reason}")]
    Invalid {
        /// The record's number, from 0.
        record: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing to the database failed.
    #[error("importing into {}: {failure}", .path.display())]
    Failed {
        /// The database file.
        path: PathBuf,
        /// What failed.
        failure: Failure,
    },
}

impl SqliteStore {
    /// Imports `records`, in order, into the database file at `path` (created if missing), which must hold
    /// no event yet; the database is closed again when this returns, ready for [`SqliteStore::open`].
    ///
    /// This is a blocking call (it runs on the caller's thread, before any store has the file open), and
    /// it reads `records` one at a time, so a log of any size is imported without holding it in memory.
    ///
    /// # Errors
    /// [`ImportError`]; then nothing was imported.
    pub fn import<E: Display>(
        path: impl AsRef<Path>,
        records: impl IntoIterator<Item = Result<ImportRecord, E>>,
    ) -> Result<ImportReport, ImportError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
                path: path.to_owned(),
                source,
            })?;
        }
        let failed = |failure: Failure| ImportError::Failed {
            path: path.to_owned(),
            failure,
        };
        let mut conn = schema::open_writer(path)?;
        let position = log::last_position(&conn).map_err(failed)?;
        if position > 0 {
            return Err(ImportError::NotEmpty {
                path: path.to_owned(),
                position,
            });
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("starting the import")
            .map_err(failed)?;
        let mut report = ImportReport { records: 0, events: 0 };
        for record in records {
            let number = report.records;
            let record = record.map_err(|e| ImportError::Source {
                record: number,
                reason: e.to_string(),
            })?;
            report.events += import_record(&tx, record).map_err(|error| match error {
                Refused::Invalid(reason) => ImportError::Invalid { record: number, reason },
                Refused::Failed(failure) => failed(failure),
            })?;
            report.records += 1;
        }
        tx.commit().context("committing the import").map_err(failed)?;
        // Closing the only connection checkpoints the WAL into the database file.
        conn.close()
            .map_err(|(_, error)| failed(crate::error::failure("closing after the import", &error)))?;
        Ok(report)
    }
}

/// Why one record was not imported.
enum Refused {
    Invalid(String),
    Failed(Failure),
}

impl From<Failure> for Refused {
    fn from(failure: Failure) -> Self {
        Refused::Failed(failure)
    }
}

/// Stores one record inside the import's transaction and answers how many events it held.
fn import_record(conn: &Connection, record: ImportRecord) -> Result<u64, Refused> {
    match record {
        ImportRecord::Append {
            owner,
            events,
            idempotency,
        } => {
            let count = events.len() as u64;
            let mut seq = log::last_seq(conn, &owner)?;
            for event in events {
                if event.owner != owner || event.seq != seq.next() {
                    return Err(Refused::Invalid(format!(
                        "event {} of {} at seq {} does not continue the stream of {owner} at seq {}",
                        event.event_id,
                        event.owner,
                        event.seq,
                        seq.next()
                    )));
                }
                seq = event.seq;
                let prepared = PreparedEvent::new(event)?;
                log::insert_event(conn, &prepared)?;
                log::project(conn, &prepared)?;
            }
            if count > 0 {
                log::set_last_seq(conn, &owner, seq)?;
            }
            if let Some(write) = idempotency {
                log::put_record(conn, &PreparedRecord::new(write)?)?;
            }
            Ok(count)
        }
        ImportRecord::Remember(write) => {
            log::put_record(conn, &PreparedRecord::new(write)?)?;
            Ok(0)
        }
    }
}
