//! Account erasure in SQL: the rows of a user's stream and of everything projected from it are deleted in
//! the writer's transaction, the erasure marker is written in the same step, and the search index drops
//! the user's documents and ignores their changes from then on.
//!
//! The writer connection runs with `secure_delete`, so the pages and cells the deletes free are
//! overwritten with zeros, and the full-text index merges its segments, so the erased documents' words
//! (which a contentless FTS5 table only marks deleted) leave them. After a group holding an erasure commits, the writer
//! checkpoints the WAL and truncates it ([`checkpoint`]) before answering, so no frame of the erased rows
//! stays in the `-wal` file either.

use std::collections::HashMap;
use std::time::Duration;

use rookery_domain::UserId;
use rookery_ports::{AppendError, Failure};
use rusqlite::{Connection, OptionalExtension, params};

use crate::codec::uint;
use crate::error::Context;

/// How many times the writer tries to truncate the WAL after an erasure before it gives up for now.
pub(crate) const CHECKPOINT_ATTEMPTS: u32 = 40;

/// How long it waits between two tries (a reader in the middle of a read holds the WAL's frames).
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(25);

/// Every erasure marker: each erased owner and when (milliseconds), read once at open so that the
/// per-request check of [`crate::SqliteStore`] needs no read of the database.
pub(crate) fn all_markers(conn: &Connection) -> Result<HashMap<String, i64>, Failure> {
    conn.prepare("SELECT owner, at FROM erasures")
        .and_then(|mut s| {
            s.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .context("reading the erasure markers")
}

/// When `owner` was erased (milliseconds), if they were.
pub(crate) fn erased_at(conn: &Connection, owner: &str) -> Result<Option<i64>, Failure> {
    conn.prepare_cached("SELECT at FROM erasures WHERE owner = ?1")
        .and_then(|mut s| s.query_row([owner], |row| row.get(0)).optional())
        .context("reading an erasure marker")
}

/// Refuses a write for an erased owner, inside the writer's transaction (so after any erasure it follows).
pub(crate) fn check_not_erased(conn: &Connection, owner: &UserId) -> Result<(), AppendError> {
    match erased_at(conn, owner.as_str())? {
        Some(at) => Err(AppendError::Erased {
            at: rookery_domain::Timestamp::from_millis(uint(at, "an erasure's time")?),
        }),
        None => Ok(()),
    }
}

/// Deletes `owner`'s stream and projections and writes the marker; answers the marker's time (that of
/// an earlier erasure on a repeat).
pub(crate) fn erase_owner(conn: &Connection, owner: &str, at: i64) -> Result<i64, Failure> {
    for (table, what) in [
        ("events", "deleting an erased user's events"),
        ("streams", "deleting an erased user's stream head"),
        ("items", "deleting an erased user's item heads"),
        ("devices", "deleting an erased user's devices"),
        ("media", "deleting an erased user's media objects"),
        ("idempotency", "deleting an erased user's idempotency records"),
    ] {
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE owner = ?1"))
            .and_then(|mut s| s.execute([owner]))
            .context(what)?;
    }
    conn.prepare_cached("INSERT OR IGNORE INTO erasures (owner, at) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![owner, at]))
        .context("writing an erasure marker")?;
    Ok(erased_at(conn, owner)?.unwrap_or(at))
}

/// True when the search index ignores `owner`'s changes.
pub(crate) fn search_erased(conn: &Connection, owner: &str) -> Result<bool, Failure> {
    conn.prepare_cached("SELECT 1 FROM search_erasures WHERE owner = ?1")
        .and_then(|mut s| s.query_row([owner], |_| Ok(())).optional())
        .context("reading a search erasure")
        .map(|found| found.is_some())
}

/// Deletes `owner`'s search documents (and their words) and makes the index ignore their changes.
pub(crate) fn erase_search(conn: &Connection, owner: &str) -> Result<(), Failure> {
    conn.prepare_cached(
        "DELETE FROM search_words WHERE rowid IN
         (SELECT doc FROM search_docs WHERE owner = ?1 AND item IS NOT NULL)",
    )
    .and_then(|mut s| s.execute([owner]))
    .context("deleting an erased user's indexed words")?;
    conn.prepare_cached("DELETE FROM search_docs WHERE owner = ?1")
        .and_then(|mut s| s.execute([owner]))
        .context("deleting an erased user's search documents")?;
    // The words of a deleted document stay in the index's segments behind a tombstone (the table is
    // contentless, so FTS5 cannot find them to remove): merging every segment into one drops them. Its
    // cost grows with the index, which an erasure (rare) can afford.
    conn.execute_batch("INSERT INTO search_words (search_words) VALUES ('optimize')")
        .context("merging the search index's segments")?;
    conn.prepare_cached("INSERT OR IGNORE INTO search_erasures (owner) VALUES (?1)")
        .and_then(|mut s| s.execute([owner]))
        .context("writing a search erasure")?;
    Ok(())
}

/// Copies every WAL frame into the database file and truncates the WAL to nothing, retrying while
/// readers hold frames, up to `attempts` times; answers whether it got there.
pub(crate) fn checkpoint(conn: &Connection, attempts: u32) -> bool {
    for attempt in 1..=attempts {
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0)) {
            Ok(0) => return true,
            Ok(_) => tracing::debug!(attempt, "the WAL is in use; checkpointing again"),
            Err(error) => tracing::warn!(attempt, %error, "checkpointing the WAL failed"),
        }
        if attempt < attempts {
            std::thread::sleep(CHECKPOINT_PAUSE);
        }
    }
    false
}
