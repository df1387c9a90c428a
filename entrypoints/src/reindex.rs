//! `rookery reindex`: rebuild the search index from the log and check it against a live replay.
//!
//! Two independent paths must give the same index: [`Indexer::rebuild`] (every owner's stream, oldest
//! first, as a maintenance job reads it) and the feed driver (the global change feed in commit order, as
//! the running server reads it). Equal indexes show that the indexer converges whatever the order.
//!
//! On a data directory (SQLite) the live replay is the index the server kept: the indexer is first
//! brought up to the end of the feed from its stored position (what a start of the server would do), then
//! its documents are set aside, the index is rebuilt from the streams, and the two are compared in the
//! database ([`SqliteSearchIndex::finish_rebuild`]). The rebuilt index stays. The indexer's stored
//! position is reset to the beginning for the time of the rebuild, so a reindex that is interrupted
//! leaves the server to index everything again from the feed rather than an index with holes. Without a
//! data directory both indexes are built in memory from an empty log.

use std::path::Path;

use rookery_adapters_memory::{IndexedEntry, MemoryEventStore, MemorySearchIndex};
use rookery_adapters_sqlite::{SqliteSearchIndex, SqliteStore};
use rookery_ports::{Failure, Indexer};

use crate::feed::{FeedDriver, INDEXER};
use crate::local::DataDir;

/// What a reindex found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// Events read from the log.
    pub events: u64,
    /// Entries (live documents and tombstones) in the rebuilt index.
    pub entries: usize,
    /// Entries in the index the live replay produced.
    pub live_entries: usize,
    /// Entries present in one index and absent or different in the other.
    pub differences: usize,
    /// True when both indexes are equal.
    pub matches_live_replay: bool,
}

/// Why a reindex failed.
#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    /// The data directory cannot be opened (in use by a server, a corrupt file, ...).
    #[error("cannot open the data directory: {0}")]
    Open(String),
    /// Reading the log or writing the index failed.
    #[error("{0}")]
    Failed(#[from] Failure),
    /// The live replay stopped before reaching the end of the feed.
    #[error("the live replay stopped before the end of the change feed")]
    ReplayStopped,
}

fn snapshot(index: &MemorySearchIndex) -> Result<Vec<IndexedEntry>, Failure> {
    index.snapshot().map_err(|e| Failure::permanent(e.to_string()))
}

/// Counts entries that are not identical in both snapshots (both are sorted by owner and key).
fn differences(a: &[IndexedEntry], b: &[IndexedEntry]) -> usize {
    let key = |e: &IndexedEntry| (e.owner.clone(), e.key.clone());
    let left: std::collections::BTreeMap<_, _> = a.iter().map(|e| (key(e), e)).collect();
    let right: std::collections::BTreeMap<_, _> = b.iter().map(|e| (key(e), e)).collect();
    let missing_or_different = left.iter().filter(|(k, e)| right.get(*k) != Some(*e)).count();
    let only_right = right.keys().filter(|k| !left.contains_key(*k)).count();
    missing_or_different + only_right
}

/// Rebuilds the index of the log in `data_dir` (an empty in-memory log without one), reporting
/// `progress(events_read, events_total)`, and compares it with a live replay's.
///
/// # Errors
/// [`ReindexError`] when the data directory cannot be opened, or the log or the index cannot be read.
pub async fn run(data_dir: Option<&Path>, progress: impl FnMut(u64, u64)) -> Result<ReindexReport, ReindexError> {
    match data_dir {
        Some(dir) => run_on_data_dir(dir, progress).await,
        None => run_in_memory(progress).await,
    }
}

/// Both indexes built in memory from an empty in-memory log.
async fn run_in_memory(mut progress: impl FnMut(u64, u64)) -> Result<ReindexReport, ReindexError> {
    let store = MemoryEventStore::in_memory();
    let total = store.commit_position().map_err(Failure::from)?;
    progress(0, total);
    let rebuilt = MemorySearchIndex::new();
    let events = Indexer::new(rebuilt.clone())
        .rebuild(&store, |read| progress(read, total))
        .await?;

    let live = MemorySearchIndex::new();
    let driver = FeedDriver::new(INDEXER, store, Indexer::new(live.clone())).spawn();
    let caught_up = driver.caught_up_to(total).await;
    driver.stop().await;
    if !caught_up {
        return Err(ReindexError::ReplayStopped);
    }

    let (a, b) = (snapshot(&rebuilt)?, snapshot(&live)?);
    let differences = differences(&a, &b);
    Ok(ReindexReport {
        events,
        entries: a.len(),
        live_entries: b.len(),
        differences,
        matches_live_replay: differences == 0 && a == b,
    })
}

/// The SQLite index of a data directory, rebuilt in place and compared with the one the server kept.
async fn run_on_data_dir(dir: &Path, mut progress: impl FnMut(u64, u64)) -> Result<ReindexReport, ReindexError> {
    let data = tokio::task::spawn_blocking({
        let dir = dir.to_owned();
        move || DataDir::open(&dir)
    })
    .await
    .map_err(|e| ReindexError::Open(e.to_string()))?
    .map_err(|e| ReindexError::Open(e.to_string()))?;
    let store: SqliteStore = data.store().clone();
    let index: SqliteSearchIndex = store.search_index();
    let total = store.commit_position();
    progress(0, total);

    // The live index, brought to the end of the feed as the server would on its next start.
    let driver = FeedDriver::new(INDEXER, store.clone(), Indexer::new(index.clone())).spawn();
    let caught_up = driver.caught_up_to(total).await;
    driver.stop().await;
    if !caught_up {
        return Err(ReindexError::ReplayStopped);
    }

    store.set_consumer_position(INDEXER, 0).await.map_err(Failure::from)?;
    index.begin_rebuild().await?;
    let events = Indexer::new(index.clone())
        .rebuild(&store, |read| progress(read, total))
        .await?;
    let comparison = index.finish_rebuild().await?;
    store
        .set_consumer_position(INDEXER, total)
        .await
        .map_err(Failure::from)?;
    let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok(ReindexReport {
        events,
        entries: count(comparison.entries),
        live_entries: count(comparison.before),
        differences: count(comparison.differences),
        matches_live_replay: comparison.differences == 0,
    })
}
