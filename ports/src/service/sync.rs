//! Sync: the caller's change feed, a page at a time, from a cursor.

use rookery_domain::projection::{FeedChange, feed_change};
use serde::Serialize;

use super::Caller;
use crate::cursor::{page_size, parse_seq, seq_cursor};
use crate::{AppError, EventStore, Failure};

/// How many store reads one sync page may make while skipping events the feed does not show.
/// Past `MAX_FEED_READS * FEED_READ_WINDOW` hidden events, a page may be short while `has_more` is true.
const MAX_FEED_READS: usize = 8;
/// How many events one of those reads asks for.
const FEED_READ_WINDOW: usize = 100;

/// One page of the change feed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncPage {
    /// Item changes and received messages, oldest first.
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
        let mut position = parse_seq(since)?;
        let mut changes = Vec::with_capacity(limit);
        // Device and media events share the stream but are not shown: read past them so that a page
        // is only short at the end of the feed, with a bound on the reads one request may make.
        let window = (limit + 1).max(FEED_READ_WINDOW);
        for _ in 0..MAX_FEED_READS {
            let events = self
                .store
                .read_feed(&caller.user, position, window)
                .await
                .map_err(Failure::from)?;
            let at_end = events.len() < window;
            for event in &events {
                if let Some(change) = feed_change(event) {
                    if changes.len() == limit {
                        return Ok(SyncPage {
                            changes,
                            next_cursor: seq_cursor(position),
                            has_more: true,
                        });
                    }
                    changes.push(change);
                }
                position = event.seq;
            }
            if at_end {
                return Ok(SyncPage {
                    changes,
                    next_cursor: seq_cursor(position),
                    has_more: false,
                });
            }
        }
        Ok(SyncPage {
            changes,
            next_cursor: seq_cursor(position),
            has_more: true,
        })
    }
}
