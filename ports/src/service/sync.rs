//! Sync: the caller's change feed, a page at a time, from a cursor.

use rookery_domain::projection::{FeedChange, feed_change};
use serde::Serialize;

use super::Caller;
use crate::cursor::{page_size, parse_seq, seq_cursor};
use crate::{AppError, EventStore, Failure};

/// One page of the change feed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncPage {
    /// Every event of the stream after the cursor, oldest first, with consecutive seqs.
    pub changes: Vec<FeedChange>,
    /// Where to continue; on an empty page, the cursor that was sent.
    pub next_cursor: String,
    /// True when more changes follow right away.
    pub has_more: bool,
}

/// The sync use case: reads only.
#[derive(Debug, Clone)]
pub struct SyncService<S> {
    store: S,
}

impl<S: EventStore> SyncService<S> {
    /// The service over the event store.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// `GET /v1/sync`: the caller's changes after `since`, oldest first.
    ///
    /// # Errors
    /// `Invalid` for a bad limit or cursor; `Unavailable`.
    pub async fn sync(&self, caller: &Caller, since: Option<&str>, limit: Option<u64>) -> Result<SyncPage, AppError> {
        let limit = page_size(limit)?;
        let since = parse_seq(since)?;
        let mut events = self
            .store
            .read_feed(&caller.user, since, limit + 1)
            .await
            .map_err(Failure::from)?;
        let has_more = events.len() > limit;
        events.truncate(limit);
        let next_cursor = seq_cursor(events.last().map_or(since, |e| e.seq));
        Ok(SyncPage {
            changes: events.iter().map(feed_change).collect(),
            next_cursor,
            has_more,
        })
    }
}
