//! `rookery reindex`: rebuild a fresh search index from the log and check it against a live replay.
//!
//! Two independent paths must give the same index: [`Indexer::rebuild`] (every owner's stream, oldest
//! first, as a maintenance job reads it) and the feed driver (the global change feed in commit order, as
//! the running server reads it). Equal snapshots show that the indexer converges whatever the order.

use std::path::Path;

use rookery_adapters_memory::{IndexedEntry, MemoryEventStore, MemorySearchIndex};
use rookery_ports::{Failure, Indexer};

use crate::feed::{FeedDriver, INDEXER};

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
    /// The data directory's log cannot be opened.
    #[error("cannot open the event log: {0}")]
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
/// [`ReindexError`] when the log cannot be opened or read.
pub async fn run(data_dir: Option<&Path>, mut progress: impl FnMut(u64, u64)) -> Result<ReindexReport, ReindexError> {
    let store = match data_dir {
        Some(dir) => MemoryEventStore::open(dir).map_err(|e| ReindexError::Open(e.to_string()))?,
        None => MemoryEventStore::in_memory(),
    };
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
