//! The embedded production store of `rookery serve --data-dir`: Rookery's event log, heads, projections,
//! change feed, consumer positions and search index in one SQLite database file.
//!
//! [`SqliteStore`] implements [`rookery_ports::EventStore`] and [`SqliteSearchIndex`] implements
//! [`rookery_ports::SearchIndex`]; both keep exactly the contract the memory and AWS adapters keep (the
//! same contract suites run against all of them).
//!
//! Durability: the database is in WAL mode with `synchronous=FULL`, and no write is acknowledged before
//! the transaction holding it has committed. Writes go through one writer thread that commits them in
//! groups; reads use separate read-only connections and never wait for a sync. Nothing is replayed or
//! held in memory at start, whatever the database's size.
//!
//! [`SqliteStore::import`] moves another store's log into a new database once, keeping every event's
//! seq, time, ids and metadata (the file log `rookery serve --data-dir` wrote before SQLite).
//!
//! [`backup`] copies a live database consistently with SQLite's backup API (`rookery backup`).
//!
//! A file that is not a Rookery database (another application's, or not SQLite at all) is refused with
//! an error naming it, before anything in it is changed.

mod backup;
mod codec;
mod erase;
mod error;
mod import;
mod log;
mod readers;
mod schema;
mod search;
mod store;
mod writer;

pub use backup::{BackupError, BackupReport, backup};
pub use codec::{MAX_APPEND_BYTES, MAX_EVENT_BYTES};
pub use error::OpenError;
pub use import::{ImportError, ImportRecord, ImportReport};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use search::{RebuildComparison, SqliteSearchIndex};
pub use store::{DATABASE_FILE, SqliteStore};

#[cfg(test)]
mod tests;
