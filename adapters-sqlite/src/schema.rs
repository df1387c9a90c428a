//! The database file: how it is recognised, opened and migrated, and the tables it holds.
//!
//! A Rookery database carries [`APPLICATION_ID`] in its header and its schema version in `user_version`.
//! A file without them is set up only when it is empty; anything else that is not ours is refused
//! before a byte of it is changed. Migrations run in order, each in the same transaction as the new
//! `user_version`, so a crash in the middle of one leaves the previous version intact.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::error::OpenError;

/// The `application_id` of every Rookery database: "Rook" in ASCII.
pub const APPLICATION_ID: i32 = 0x526f_6f6b;

/// The schema version this build writes (`user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// How long a connection waits for a lock held by another connection before it reports busy.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, oldest first: `MIGRATIONS[n]` takes a database from version `n` to `n + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1, V2];

/// The first schema.
///
/// - `events` is the log. Its rowid, `position`, is the global commit order (the change feed); it is
///   `AUTOINCREMENT` so that a position is never reused, even once erasure deletes the newest rows.
///   Each row is self-describing: owner, seq, event id, type, schema, time (milliseconds), the item it
///   changes (collection, id, version) for item events, and the payload and metadata as readable JSON.
/// - `streams` holds each user's head (the last seq), `items` each item's head (its version and, while
///   it is live, the item as JSON); `devices`, `media` and `idempotency` are the other projections the
///   event store port reads. Messages need no table of their own: a partial index over the log finds them.
/// - `consumers` holds the change feed position of each consumer.
/// - `search_docs` is the search index: one row per item ever indexed, with its highest version, and its
///   visibility and JSON while live (a tombstone otherwise); `search_words` is the full-text index over
///   the live ones' words, sharing their rowid.
const V1: &str = "
CREATE TABLE events (
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    owner      TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    event_id   TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    schema     INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    collection TEXT,
    item_id    TEXT,
    version    INTEGER,
    payload    TEXT    NOT NULL,
    meta       TEXT    NOT NULL,
    UNIQUE (owner, seq)
);
CREATE INDEX events_by_item ON events (owner, collection, item_id, version) WHERE collection IS NOT NULL;
CREATE INDEX events_messages ON events (owner, seq) WHERE type = 'message.received';

CREATE TABLE streams (
    owner    TEXT    NOT NULL PRIMARY KEY,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE items (
    owner      TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    item_id    TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    item       TEXT,
    PRIMARY KEY (owner, collection, item_id)
) WITHOUT ROWID;

CREATE TABLE devices (
    owner     TEXT NOT NULL,
    device_id TEXT NOT NULL,
    device    TEXT NOT NULL,
    PRIMARY KEY (owner, device_id)
) WITHOUT ROWID;

CREATE TABLE media (
    owner    TEXT NOT NULL,
    media_id TEXT NOT NULL,
    object   TEXT NOT NULL,
    PRIMARY KEY (owner, media_id)
) WITHOUT ROWID;

CREATE TABLE idempotency (
    owner       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (owner, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_time ON idempotency (owner, recorded_at);

CREATE TABLE consumers (
    name     TEXT    NOT NULL PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE search_docs (
    doc        INTEGER PRIMARY KEY,
    owner      TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    item_id    TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    public     INTEGER,
    item       TEXT,
    UNIQUE (owner, collection, item_id)
);
CREATE VIRTUAL TABLE search_words USING fts5 (
    words,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
";

/// Account erasure.
///
/// - `erasures` holds the erasure markers: each erased user and when (milliseconds). It is all that stays
///   of an erased account, and what refuses every later write for it.
/// - `search_erasures` holds the users whose changes the search index ignores.
/// - `search_words` is contentless, so FTS5 cannot take a deleted document's words out of its segments (it
///   does not know them; its `secure-delete` option does nothing here): it marks the document deleted in a
///   tombstone instead. An erasure therefore merges the segments (`optimize`), which drops the words of
///   deleted documents; the migration does it once too.
const V2: &str = "
CREATE TABLE erasures (
    owner TEXT    NOT NULL PRIMARY KEY,
    at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE search_erasures (
    owner TEXT NOT NULL PRIMARY KEY
) WITHOUT ROWID;
INSERT INTO search_words (search_words) VALUES ('optimize');
";

/// Maps an error met while reading what should be the database's header or schema.
fn unreadable(path: &Path, source: rusqlite::Error) -> OpenError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => OpenError::NotADatabase {
            path: path.to_owned(),
            source,
        },
        _ => OpenError::Sqlite {
            path: path.to_owned(),
            source,
        },
    }
}

/// What the header and schema of an opened file say.
#[derive(Debug, Clone, Copy)]
struct Header {
    application_id: i32,
    version: i64,
    objects: i64,
}

fn header(conn: &Connection) -> rusqlite::Result<Header> {
    Ok(Header {
        application_id: conn.query_row("PRAGMA application_id", [], |row| row.get(0))?,
        version: conn.query_row("PRAGMA user_version", [], |row| row.get(0))?,
        objects: conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?,
    })
}

/// Refuses a file that is not a Rookery database this build can use; an empty file is fine.
fn recognise(path: &Path, header: Header) -> Result<(), OpenError> {
    let fresh = header.application_id == 0 && header.version == 0 && header.objects == 0;
    if header.application_id != APPLICATION_ID && !fresh {
        return Err(OpenError::Foreign {
            path: path.to_owned(),
            application_id: header.application_id,
        });
    }
    if header.version > SCHEMA_VERSION {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found: header.version,
        });
    }
    Ok(())
}

/// Opens (creating it if missing) the database at `path` for writing: recognised, in WAL mode with full
/// syncs, and migrated to [`SCHEMA_VERSION`].
///
/// # Errors
/// [`OpenError`] naming the file when it is foreign, corrupt, too new, or cannot be opened.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, OpenError> {
    let sqlite = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    // Look before touching: nothing below runs on a file that is not ours.
    recognise(path, header(&conn).map_err(|e| unreadable(path, e))?)?;

    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| unreadable(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(format!("the database cannot use WAL mode (it is in {mode} mode)")),
        });
    }
    // No commit returns before its WAL frames are synced.
    conn.pragma_update(None, "synchronous", "FULL").map_err(sqlite)?;
    // Freed pages and cells are overwritten with zeros, so an erased account leaves no bytes behind.
    conn.pragma_update(None, "secure_delete", "ON").map_err(sqlite)?;
    // Checkpoints reuse the WAL from its start; this bounds what a burst leaves of it on disk.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(sqlite)?;
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(sqlite)?;
    conn.pragma_update(None, "cache_size", -16_384).map_err(sqlite)?;

    // Re-read inside the transaction: another process may have migrated the file meanwhile.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let found = header(&tx).map_err(|e| unreadable(path, e))?;
    recognise(path, found)?;
    let from = usize::try_from(found.version).unwrap_or(0);
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.execute_batch(migration).map_err(sqlite)?;
        tracing::info!(file = %path.display(), version = version + 1, "migrated the database schema");
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sqlite)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sqlite)?;
    tx.commit().map_err(sqlite)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens an existing Rookery database at `path` read-only, checking it is one this build can read, for
/// a process that must not write to it (a backup of a database a server is using).
///
/// # Errors
/// [`OpenError`] naming the file when it is missing, foreign, corrupt or too new.
pub(crate) fn open_existing_reader(path: &Path) -> Result<Connection, OpenError> {
    let conn = open_reader(path).map_err(|e| unreadable(path, e))?;
    let found = header(&conn).map_err(|e| unreadable(path, e))?;
    if found.application_id != APPLICATION_ID {
        return Err(OpenError::Foreign {
            path: path.to_owned(),
            application_id: found.application_id,
        });
    }
    recognise(path, found)?;
    Ok(conn)
}

/// Opens a read-only connection to the database at `path`, which [`open_writer`] has set up.
///
/// # Errors
/// What SQLite says when the file cannot be opened.
pub(crate) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "cache_size", -8_192)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}
