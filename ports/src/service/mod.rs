//! The use cases behind the HTTP API, one service per capability.
//!
//! Each service is generic over only the ports it uses, so a composition root (a Lambda function, the
//! local server, a test) builds just the services it serves and never stands in a port it does not need:
//!
//! | service | ports | routes |
//! |---|---|---|
//! | [`ItemService`] | store, clock, ids | items, history, restore, users' public items |
//! | [`SyncService`] | store | `/v1/sync` |
//! | [`SearchService`] | search index | `/v1/search` |
//! | [`MessageService`] | store, clock, ids | `/v1/messages` |
//! | [`DeviceService`] | store, clock, ids, push gateway | `/v1/devices` (and the push dispatcher's disabling) |
//! | [`MediaService`] | store, clock, ids, media store | `/v1/media` |
//! | [`AccountService`] | store, clock, and the media service | `/v1/me/export` |
//! | [`ErasureService`] | store, clock, search index, push gateway, media store, identity directory | `DELETE /v1/me` (all of it at once), and the finishing of a deferred erasure |
//! | [`ErasureRequest`] | store, clock | `DELETE /v1/me` (the marker only; [`ErasureService::finish`] does the rest later) |
//!
//! Every service that writes goes through one [`Writer`]: idempotent replay, the bounded, jittered re-plan
//! when another writer moved what the plan was based on, and the event metadata.

mod account;
mod devices;
mod items;
mod media;
mod messages;
mod search;
mod sync;
mod write;

use std::time::Duration;

use rookery_domain::{Limits, UserId};
use serde::Serialize;

use crate::Backoff;

pub use account::{AccountService, EraseAccount, ErasureRequest, ErasureService, Export, ExportLine, Finished};
pub use devices::{DeviceService, DeviceView};
pub use items::{ItemService, ItemWritten};
pub use media::{MediaCreated, MediaService, MediaView, SignedView};
pub use messages::{MessageAccepted, MessageService};
pub use search::{SearchRequest, SearchResults, SearchService};
pub use sync::{SyncPage, SyncService};
pub use write::{Done, Writer};

/// Tunables of the services.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The contract's limits.
    pub limits: Limits,
    /// How long signed media URLs work.
    pub media_url_ttl: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// How many times a write is planned and attempted when other writers keep moving what it was based on
    /// (an item's version without `If-Match`, or the stream for a device write).
    pub max_write_attempts: u32,
    /// The jittered wait between those attempts.
    pub write_backoff: Backoff,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            media_url_ttl: Duration::from_secs(15 * 60),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            max_write_attempts: 16,
            write_backoff: Backoff::new(Duration::from_millis(2), Duration::from_millis(200)),
        }
    }
}

/// Who is asking, and under which request id (for the event metadata and the logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The verified user.
    pub user: UserId,
    /// The request id, if the edge has one.
    pub request_id: Option<String>,
}

impl Caller {
    /// A caller with no request id.
    pub fn new(user: UserId) -> Self {
        Self { user, request_id: None }
    }
}

/// A client's idempotency key and a digest of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The key (1 to 128 visible ASCII characters, checked at the edge).
    pub key: String,
    /// A digest of method, path and body: the same key with another fingerprint is a reuse.
    pub fingerprint: String,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The entries.
    pub entries: Vec<T>,
    /// The cursor of the next page, `None` on the last one.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page in a read of up to `limit + 1` entries: the first `limit`, and when the read found more,
    /// the cursor `cursor_of` makes from the last entry kept.
    pub(crate) fn cut(mut read: Vec<T>, limit: usize, cursor_of: impl FnOnce(&T) -> Option<String>) -> Self {
        let more = read.len() > limit;
        read.truncate(limit);
        let next_cursor = if more { read.last().and_then(cursor_of) } else { None };
        Self {
            entries: read,
            next_cursor,
        }
    }

    /// The same page with each entry turned into the one it shows, or dropped; the cursor is kept.
    pub(crate) fn filter_map<U>(self, f: impl FnMut(T) -> Option<U>) -> Page<U> {
        Page {
            entries: self.entries.into_iter().filter_map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}
