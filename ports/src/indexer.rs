//! The indexer (Lambda function 2): committed events in, search index changes out.
//!
//! Each item event becomes an upsert of the item after it, or a delete, carrying the event's version;
//! the index keeps only the highest version per item, so any duplication, reordering or retry of
//! deliveries converges to the same index, and a deleted item never comes back.

use rookery_domain::StoredEvent;
use rookery_domain::projection::{IndexChange, index_change};

use crate::search::SearchError;
use crate::{BatchFailure, EventStore, Failure, SearchIndex};

/// How many changes go to the index in one call.
pub const DEFAULT_CHUNK: usize = 100;

/// Turns change-log batches into search index changes.
#[derive(Debug, Clone)]
pub struct Indexer<I: SearchIndex> {
    index: I,
    chunk: usize,
}

fn failure(error: SearchError) -> Failure {
    match error {
        SearchError::Unavailable(failure) => failure,
        SearchError::BadCursor => Failure::permanent("index refused a change as a bad cursor"),
    }
}

impl<I: SearchIndex> Indexer<I> {
    /// An indexer writing to `index`.
    pub fn new(index: I) -> Self {
        Self {
            index,
            chunk: DEFAULT_CHUNK,
        }
    }

    /// Applies a batch of stored events, in chunks.
    ///
    /// # Errors
    /// [`BatchFailure`] naming the first event that could not be indexed: every event before it is
    /// indexed, and that event and the rest must be delivered again.
    pub async fn handle(&self, events: &[StoredEvent]) -> Result<(), BatchFailure> {
        let changes: Vec<(usize, IndexChange)> = events
            .iter()
            .enumerate()
            .filter_map(|(i, event)| index_change(event).map(|change| (i, change)))
            .collect();
        for chunk in changes.chunks(self.chunk.max(1)) {
            let batch: Vec<IndexChange> = chunk.iter().map(|(_, change)| change.clone()).collect();
            // The index names the first change it could not apply, so the change log redelivers from
            // that record and no further back.
            if let Err(failed) = self.index.apply_each(&batch).await {
                // An index it could not have named means the whole chunk: everything before the chunk is applied.
                let index = chunk.get(failed.index).or(chunk.first()).map_or(0, |(i, _)| *i);
                tracing::warn!(error = %failed.error, record = index, "a search index change failed");
                return Err(BatchFailure {
                    index,
                    failure: failure(failed.error),
                });
            }
        }
        Ok(())
    }

    /// Rebuilds the index from the whole log of `store`: every owner's stream, oldest first.
    /// Returns the number of events read.
    ///
    /// # Errors
    /// The first store or index failure; the index is then partly rebuilt, and running again is safe.
    pub async fn rebuild<S: EventStore>(&self, store: &S, mut progress: impl FnMut(u64)) -> Result<u64, Failure> {
        let mut read = 0u64;
        let mut after_owner = None;
        loop {
            let owners = store.owners(after_owner.as_ref(), 100).await?;
            let Some(last) = owners.last().cloned() else {
                break;
            };
            for owner in &owners {
                let mut after = rookery_domain::Seq(0);
                loop {
                    let events = store.read_feed(owner, after, 500).await?;
                    let Some(tail) = events.last() else { break };
                    after = tail.seq;
                    self.handle(&events).await.map_err(|e| e.failure)?;
                    read += events.len() as u64;
                    progress(read);
                }
            }
            after_owner = Some(last);
        }
        Ok(read)
    }
}
