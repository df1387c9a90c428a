//! The application service: one method per route of the HTTP API, with no HTTP in it.
//!
//! Every write follows the same path ([`App::write`]): replay an idempotent repeat if there is one,
//! read the state, let the domain decide, append atomically with the seq and version the decision
//! was based on, and try again (a bounded number of times) when another writer got there first.
//! A client's own precondition is re-checked on every attempt, so a moved version under `If-Match`
//! becomes a conflict carrying the events the client missed, while a moved seq is simply retried.

use std::future::Future;
use std::time::Duration;

use rookery_domain::device::{self, Device, DeviceEvent};
use rookery_domain::history::{item_after, state_at};
use rookery_domain::item::decide;
use rookery_domain::media::MediaRejection;
use rookery_domain::message::MessageRejection;
use rookery_domain::projection::{FeedChange, HistoryEvent, feed_change, history_event, words};
use rookery_domain::{
    CollectionName, DeviceId, EventId, EventMeta, EventPayload, Item, ItemCommand, ItemKey, ItemRejection, Limits,
    MediaId, MediaObject, Message, MessageId, NewEvent, Platform, Precondition, Seq, Timestamp, UserId, Version,
    Visibility,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cursor::{id_cursor, page_size, parse_id, parse_seq, parse_version, seq_cursor, version_cursor};
use crate::media::ObjectStatus;
use crate::search::{Scope, SearchError, SearchHit, SearchQuery};
use crate::store::{AppendBatch, AppendError, IdempotencyRecord, IdempotencyWrite};
use crate::{AppError, Clock, EventStore, Failure, IdSource, MediaStore, PushError, PushGateway, SearchIndex};

/// How many store reads one sync page may make while skipping events the feed does not show.
/// Past `MAX_FEED_READS * FEED_READ_WINDOW` hidden events, a page may be short while `has_more` is true.
const MAX_FEED_READS: usize = 8;
/// How many events one of those reads asks for.
const FEED_READ_WINDOW: usize = 100;

/// The adapters one deployment plugs into the service, named once.
pub trait Ports: Send + Sync + 'static {
    /// The event log.
    type Store: EventStore;
    /// The search index.
    type Search: SearchIndex;
    /// The push gateway.
    type Push: PushGateway;
    /// The media store.
    type Media: MediaStore;
    /// The clock.
    type Clock: Clock;
    /// The id source.
    type Ids: IdSource;
}

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The contract's limits.
    pub limits: Limits,
    /// How long signed media URLs work.
    pub media_url_ttl: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// How many times a write is attempted when other writers keep moving the stream.
    pub max_write_attempts: u32,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            media_url_ttl: Duration::from_secs(15 * 60),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            max_write_attempts: 16,
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

/// The outcome of `PUT` on an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemWritten {
    /// True when the write created the item (`201`), false when it replaced it (`200`).
    pub created: bool,
    /// The item after the write.
    pub item: Item,
}

/// The outcome of a write that answers with no body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {}

/// What a device removal recorded: the endpoint to delete, known only to the request that removed it.
///
/// The endpoint is not part of the recorded outcome (`{}`, as [`Done`]'s), so a replay of the same
/// idempotency key reads `None` and deletes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DeviceRemoved {
    #[serde(skip)]
    endpoint: Option<String>,
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
    fn cut(mut read: Vec<T>, limit: usize, cursor_of: impl FnOnce(&T) -> Option<String>) -> Self {
        let more = read.len() > limit;
        read.truncate(limit);
        let next_cursor = if more { read.last().and_then(cursor_of) } else { None };
        Self {
            entries: read,
            next_cursor,
        }
    }

    /// The same page with each entry turned into the one it shows, or dropped; the cursor is kept.
    fn filter_map<U>(self, f: impl FnMut(T) -> Option<U>) -> Page<U> {
        Page {
            entries: self.entries.into_iter().filter_map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

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

/// A search request as the client sent it (validated here).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchRequest {
    /// The user's text.
    pub q: String,
    /// Only this collection.
    pub collection: Option<CollectionName>,
    /// Whose items.
    pub scope: Scope,
    /// Page size, if given.
    pub limit: Option<u64>,
    /// Cursor of a previous page.
    pub cursor: Option<String>,
}

/// Search results.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    /// How many items match in all.
    pub found: u64,
    /// This page, best first.
    pub hits: Vec<SearchHit>,
    /// The next page's cursor.
    pub next_cursor: Option<String>,
}

/// The answer to `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageAccepted {
    /// The message's id.
    pub id: MessageId,
    /// Always `accepted`.
    pub status: String,
}

/// A device as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// The app's id for it.
    pub device_id: DeviceId,
    /// Its platform.
    pub platform: Platform,
    /// False once its endpoint was reported disabled.
    pub enabled: bool,
}

impl From<&Device> for DeviceView {
    fn from(device: &Device) -> Self {
        Self {
            device_id: device.device_id.clone(),
            platform: device.platform,
            enabled: device.enabled,
        }
    }
}

/// A signed request as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedView {
    /// The URL.
    pub url: String,
    /// The method, for uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Headers to send, for uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// The answer to `POST /v1/media`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaCreated {
    /// The object's id.
    pub id: MediaId,
    /// Always `pending`.
    pub status: String,
    /// Where and how to upload it.
    pub upload: SignedView,
}

/// The answer to `GET /v1/media/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaView {
    /// The object's id.
    pub id: MediaId,
    /// Its declared type.
    pub content_type: String,
    /// Its declared size.
    pub size: u64,
    /// `pending` or `uploaded`.
    pub status: &'static str,
    /// Where to download it, once uploaded.
    pub download: Option<SignedView>,
}

/// What a write attempt decided: the events to append where, under which expectations, and the answer.
struct Planned<T> {
    owner: UserId,
    expected_seq: Seq,
    item_versions: Vec<(ItemKey, Version)>,
    payloads: Vec<EventPayload>,
    outcome: T,
}

impl<T> Planned<T> {
    /// The same plan with another outcome.
    fn map<U>(self, f: impl FnOnce(T, &[EventPayload]) -> U) -> Planned<U> {
        let outcome = f(self.outcome, &self.payloads);
        Planned {
            owner: self.owner,
            expected_seq: self.expected_seq,
            item_versions: self.item_versions,
            payloads: self.payloads,
            outcome,
        }
    }
}

/// An item write that must leave a live item; a plan without one is a bug, reported as such.
fn live(item: Option<Item>) -> Result<Item, AppError> {
    item.ok_or_else(|| AppError::Unavailable(Failure::permanent("write planned no item")))
}

/// The application service.
pub struct App<P: Ports> {
    store: P::Store,
    search: P::Search,
    push: P::Push,
    media: P::Media,
    clock: P::Clock,
    ids: P::Ids,
    config: AppConfig,
}

impl<P: Ports> std::fmt::Debug for App<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("store", &self.store)
            .field("search", &self.search)
            .finish_non_exhaustive()
    }
}

impl<P: Ports> Clone for App<P> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            search: self.search.clone(),
            push: self.push.clone(),
            media: self.media.clone(),
            clock: self.clock.clone(),
            ids: self.ids.clone(),
            config: self.config.clone(),
        }
    }
}

fn rejection(error: ItemRejection) -> AppError {
    match error {
        ItemRejection::VersionConflict { current } => AppError::Conflict {
            current,
            events: Vec::new(),
        },
        ItemRejection::NotFound => AppError::NotFound,
        ItemRejection::Invalid(why) => AppError::Invalid(why),
        ItemRejection::TooDeep(e) => AppError::Invalid(e.to_string()),
        ItemRejection::TooLarge(e) => AppError::TooLarge(e.to_string()),
    }
}

impl<P: Ports> App<P> {
    /// Builds the service from its adapters.
    pub fn new(
        store: P::Store,
        search: P::Search,
        push: P::Push,
        media: P::Media,
        clock: P::Clock,
        ids: P::Ids,
        config: AppConfig,
    ) -> Self {
        Self {
            store,
            search,
            push,
            media,
            clock,
            ids,
            config,
        }
    }

    /// The event store.
    pub fn store(&self) -> &P::Store {
        &self.store
    }

    /// The search index.
    pub fn search_index(&self) -> &P::Search {
        &self.search
    }

    /// The push gateway.
    pub fn push_gateway(&self) -> &P::Push {
        &self.push
    }

    /// The media store.
    pub fn media_store(&self) -> &P::Media {
        &self.media
    }

    /// The clock.
    pub fn clock(&self) -> &P::Clock {
        &self.clock
    }

    /// The configuration.
    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    fn fresh_id<T>(&self, parse: fn(String) -> Result<T, rookery_domain::IdError>) -> Result<T, AppError> {
        parse(self.ids.new_id()).map_err(|e| AppError::Unavailable(Failure::permanent(format!("id source: {e}"))))
    }

    /// Idempotency records made before the instant this answers are forgotten at `now` (the configured TTL ago).
    pub(crate) fn expired_before(&self, now: Timestamp) -> Timestamp {
        let ttl = u64::try_from(self.config.idempotency_ttl.as_millis()).unwrap_or(u64::MAX);
        Timestamp::from_millis(now.as_millis().saturating_sub(ttl))
    }

    /// The recorded outcome of an earlier request with the same key, if it is still remembered.
    async fn replay<T: DeserializeOwned>(&self, user: &UserId, idem: &Idempotency) -> Result<Option<T>, AppError> {
        let Some(record) = self.store.idempotency(user, &idem.key).await.map_err(Failure::from)? else {
            return Ok(None);
        };
        if record.recorded_at < self.expired_before(self.clock.now()) {
            return Ok(None);
        }
        if record.fingerprint != idem.fingerprint {
            return Err(AppError::IdempotencyKeyReused);
        }
        serde_json::from_value(record.outcome)
            .map(Some)
            .map_err(|e| AppError::Unavailable(Failure::permanent(format!("recorded outcome unreadable: {e}"))))
    }

    /// Runs one write: replays a repeat, else plans and appends, retrying while others move the stream.
    async fn write<T, F, Fut>(&self, caller: &Caller, idem: Option<&Idempotency>, mut plan: F) -> Result<T, AppError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Timestamp) -> Fut,
        Fut: Future<Output = Result<Planned<T>, AppError>>,
    {
        if let Some(idem) = idem
            && let Some(outcome) = self.replay(&caller.user, idem).await?
        {
            return Ok(outcome);
        }
        for attempt in 1..=self.config.max_write_attempts {
            let now = self.clock.now();
            let planned = plan(now).await?;
            if planned.payloads.is_empty() && idem.is_none() {
                return Ok(planned.outcome);
            }
            let meta = EventMeta {
                request_id: caller.request_id.clone(),
                idempotency_key: idem.map(|i| i.key.clone()),
                actor: Some(caller.user.clone()),
            };
            let mut events = Vec::with_capacity(planned.payloads.len());
            for payload in planned.payloads {
                let event_id = self.fresh_id(EventId::parse)?;
                events.push(NewEvent {
                    event_id,
                    at: now,
                    payload,
                    meta: meta.clone(),
                });
            }
            let idempotency = match idem {
                Some(idem) => Some(IdempotencyWrite {
                    owner: caller.user.clone(),
                    record: IdempotencyRecord {
                        key: idem.key.clone(),
                        fingerprint: idem.fingerprint.clone(),
                        outcome: serde_json::to_value(&planned.outcome)
                            .map_err(|e| AppError::Unavailable(Failure::permanent(e.to_string())))?,
                        recorded_at: now,
                    },
                    expired_before: self.expired_before(now),
                }),
                None => None,
            };
            let batch = AppendBatch {
                owner: planned.owner,
                expected_seq: planned.expected_seq,
                item_versions: planned.item_versions,
                events,
                idempotency,
            };
            match self.store.append(batch).await {
                Ok(_) => return Ok(planned.outcome),
                Err(AppendError::SeqMoved { .. } | AppendError::VersionMoved { .. }) => {
                    tracing::debug!(attempt, "stream moved during write; retrying");
                }
                Err(AppendError::KeyTaken) => {
                    if let Some(idem) = idem
                        && let Some(outcome) = self.replay(&caller.user, idem).await?
                    {
                        return Ok(outcome);
                    }
                }
                Err(AppendError::TooLarge(why)) => return Err(AppError::TooLarge(why)),
                Err(AppendError::Unavailable(failure)) => return Err(failure.into()),
            }
        }
        Err(AppError::Unavailable(Failure::transient(
            "too many concurrent writes to this stream; try again",
        )))
    }

    /// Plans one item command against the current head; the outcome is the item after the change
    /// (`None` after a delete).
    async fn plan_item(
        &self,
        owner: &UserId,
        key: &ItemKey,
        command: ItemCommand,
        precondition: Precondition,
        now: Timestamp,
    ) -> Result<Planned<Option<Item>>, AppError> {
        let seq = self.store.last_seq(owner).await.map_err(Failure::from)?;
        let head = self.item_head(owner, key).await?;
        let payload = match decide(key, &head, command, precondition, now, &self.config.limits) {
            Ok(payload) => payload,
            Err(ItemRejection::VersionConflict { current }) => {
                return Err(self.conflict(owner, key, precondition, current).await);
            }
            Err(other) => return Err(rejection(other)),
        };
        let outcome = payload
            .as_item()
            .and_then(|change| change.state.as_ref().map(|state| state.to_item(owner, change, now)));
        Ok(Planned {
            owner: owner.clone(),
            expected_seq: seq,
            item_versions: vec![(key.clone(), head.version)],
            payloads: vec![payload],
            outcome,
        })
    }

    async fn item_head(&self, owner: &UserId, key: &ItemKey) -> Result<rookery_domain::ItemHead, AppError> {
        Ok(self.store.item_head(owner, key).await.map_err(Failure::from)?)
    }

    /// The conflict answer: the current version and the events after the version the client named.
    async fn conflict(
        &self,
        owner: &UserId,
        key: &ItemKey,
        precondition: Precondition,
        current: Option<Version>,
    ) -> AppError {
        let after = match precondition {
            Precondition::IfMatch(version) => version,
            Precondition::None | Precondition::IfAbsent => Version::NONE,
        };
        match self.store.item_history(owner, key, after, 100).await {
            Ok(events) => AppError::Conflict {
                current,
                events: events.iter().filter_map(history_event).collect(),
            },
            Err(error) => AppError::Unavailable(error.into()),
        }
    }

    /// `PUT /v1/items/{collection}/{id}`: create or replace.
    ///
    /// # Errors
    /// `Conflict` when the precondition fails; `Invalid`/`TooLarge` for data over a limit; `Unavailable`.
    pub async fn put_item(
        &self,
        caller: &Caller,
        key: &ItemKey,
        data: Map<String, Value>,
        visibility: Option<Visibility>,
        precondition: Precondition,
        idem: Option<&Idempotency>,
    ) -> Result<ItemWritten, AppError> {
        self.write(caller, idem, |now| {
            let command = ItemCommand::Put {
                data: data.clone(),
                visibility,
            };
            async move {
                let planned = self.plan_item(&caller.user, key, command, precondition, now).await?;
                let item = live(planned.outcome.clone())?;
                Ok(planned.map(|_, payloads| ItemWritten {
                    created: matches!(payloads.first(), Some(EventPayload::ItemCreated(_))),
                    item,
                }))
            }
        })
        .await
    }

    /// `PATCH /v1/items/{collection}/{id}`: RFC 7396 merge patch of `{"data", "visibility"}`.
    ///
    /// # Errors
    /// `NotFound` when absent or deleted; `Conflict`; `Invalid`/`TooLarge`; `Unavailable`.
    pub async fn patch_item(
        &self,
        caller: &Caller,
        key: &ItemKey,
        patch: Value,
        precondition: Precondition,
        idem: Option<&Idempotency>,
    ) -> Result<Item, AppError> {
        self.write(caller, idem, |now| {
            let command = ItemCommand::Patch { patch: patch.clone() };
            async move {
                let planned = self.plan_item(&caller.user, key, command, precondition, now).await?;
                let item = live(planned.outcome.clone())?;
                Ok(planned.map(|_, _| item))
            }
        })
        .await
    }

    /// `DELETE /v1/items/{collection}/{id}`.
    ///
    /// # Errors
    /// `NotFound` when absent or already deleted; `Conflict`; `Unavailable`.
    pub async fn delete_item(
        &self,
        caller: &Caller,
        key: &ItemKey,
        precondition: Precondition,
        idem: Option<&Idempotency>,
    ) -> Result<Done, AppError> {
        self.write(caller, idem, |now| async move {
            let planned = self
                .plan_item(&caller.user, key, ItemCommand::Delete, precondition, now)
                .await?;
            Ok(planned.map(|_, _| Done {}))
        })
        .await
    }

    /// `POST /v1/items/{collection}/{id}/restore`: the state of `version`, as a new version.
    ///
    /// # Errors
    /// `NotFound` when the item or the version does not exist; `Invalid` when that version was a delete;
    /// `Conflict`; `Unavailable`.
    pub async fn restore_item(
        &self,
        caller: &Caller,
        key: &ItemKey,
        version: Version,
        precondition: Precondition,
        idem: Option<&Idempotency>,
    ) -> Result<Item, AppError> {
        self.write(caller, idem, |now| async move {
            let target = self.event_at(&caller.user, key, version).await?;
            let target = target.as_ref().and_then(|event| state_at([event], version));
            let command = ItemCommand::Restore { version, target };
            let planned = self.plan_item(&caller.user, key, command, precondition, now).await?;
            let item = live(planned.outcome.clone())?;
            Ok(planned.map(|_, _| item))
        })
        .await
    }

    async fn event_at(
        &self,
        owner: &UserId,
        key: &ItemKey,
        version: Version,
    ) -> Result<Option<rookery_domain::StoredEvent>, AppError> {
        if version == Version::NONE {
            return Ok(None);
        }
        let events = self
            .store
            .item_history(owner, key, Version(version.0 - 1), 1)
            .await
            .map_err(Failure::from)?;
        Ok(events
            .into_iter()
            .next()
            .filter(|e| e.payload.as_item().is_some_and(|c| c.version == version)))
    }

    /// `GET /v1/items/{collection}/{id}` (with `version`, the item as it was then).
    ///
    /// # Errors
    /// `NotFound` when absent, deleted, out of range, or that version was a delete; `Unavailable`.
    pub async fn get_item(&self, caller: &Caller, key: &ItemKey, version: Option<Version>) -> Result<Item, AppError> {
        match version {
            None => self.item_head(&caller.user, key).await?.item.ok_or(AppError::NotFound),
            Some(version) => self
                .event_at(&caller.user, key, version)
                .await?
                .as_ref()
                .and_then(item_after)
                .ok_or(AppError::NotFound),
        }
    }

    /// `GET /v1/users/{owner}/items/{collection}/{id}`: public items of anyone, or the caller's own.
    ///
    /// # Errors
    /// `NotFound` for anything private to someone else (never revealing that it exists); `Unavailable`.
    pub async fn get_public_item(&self, caller: &Caller, owner: &UserId, key: &ItemKey) -> Result<Item, AppError> {
        let head = self.item_head(owner, key).await?;
        head.item
            .filter(|item| item.visibility == Visibility::Public || *owner == caller.user)
            .ok_or(AppError::NotFound)
    }

    /// `GET /v1/items/{collection}`: the caller's live items, by id.
    ///
    /// # Errors
    /// `Invalid` for a bad limit or cursor; `Unavailable`.
    pub async fn list_items(
        &self,
        caller: &Caller,
        collection: &CollectionName,
        limit: Option<u64>,
        cursor: Option<&str>,
    ) -> Result<Page<Item>, AppError> {
        let limit = page_size(limit)?;
        let after = parse_id(cursor)?;
        let items = self
            .store
            .list_items(&caller.user, collection, after.as_ref(), limit + 1)
            .await
            .map_err(Failure::from)?;
        Ok(Page::cut(items, limit, |item| Some(id_cursor(&item.id))))
    }

    /// `GET /v1/items/{collection}/{id}/history`: every change, oldest first; works after a delete.
    ///
    /// # Errors
    /// `NotFound` when the item never existed; `Invalid` for a bad limit or cursor; `Unavailable`.
    pub async fn history(
        &self,
        caller: &Caller,
        key: &ItemKey,
        limit: Option<u64>,
        cursor: Option<&str>,
    ) -> Result<Page<HistoryEvent>, AppError> {
        let limit = page_size(limit)?;
        let after = parse_version(cursor)?;
        let events = self
            .store
            .item_history(&caller.user, key, after, limit + 1)
            .await
            .map_err(Failure::from)?;
        if events.is_empty() && cursor.is_none() {
            return Err(AppError::NotFound);
        }
        let page = Page::cut(events, limit, |e| history_event(e).map(|h| version_cursor(h.version)));
        Ok(page.filter_map(|e| history_event(&e)))
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

    /// `GET /v1/search`.
    ///
    /// # Errors
    /// `Invalid` for empty or overlong text, a bad limit or cursor; `Unavailable`.
    pub async fn search(&self, caller: &Caller, request: SearchRequest) -> Result<SearchResults, AppError> {
        let chars = request.q.chars().count();
        let max = self.config.limits.max_query_chars;
        if chars == 0 || chars > max {
            return Err(AppError::Invalid(format!("q must be 1 to {max} characters")));
        }
        let limit = page_size(request.limit)?;
        let words: Vec<String> = words(&request.q).collect();
        if words.is_empty() {
            // Text with no letters or digits matches nothing; it is never read as syntax.
            if request.cursor.is_some() {
                return Err(AppError::Invalid("invalid cursor".into()));
            }
            return Ok(SearchResults {
                found: 0,
                hits: Vec::new(),
                next_cursor: None,
            });
        }
        let query = SearchQuery {
            caller: caller.user.clone(),
            words,
            collection: request.collection,
            scope: request.scope,
            limit,
            cursor: request.cursor,
        };
        let page = self.search.query(&query).await.map_err(|e| match e {
            SearchError::BadCursor => AppError::Invalid("invalid cursor".into()),
            SearchError::Unavailable(failure) => AppError::Unavailable(failure),
        })?;
        // The index promises scoping; this is the second lock on the same door.
        let hits = page
            .hits
            .into_iter()
            .filter(|hit| hit.item.visibility == Visibility::Public || hit.item.owner == caller.user)
            .collect();
        Ok(SearchResults {
            found: page.found,
            hits,
            next_cursor: page.next_cursor,
        })
    }

    /// `POST /v1/messages`: stored in the recipient's stream before answering; pushed later.
    ///
    /// # Errors
    /// `Invalid` for text or data over a limit (`TooLarge` for data size); `Unavailable`.
    pub async fn send_message(
        &self,
        caller: &Caller,
        to: UserId,
        text: String,
        data: Map<String, Value>,
        idem: Option<&Idempotency>,
    ) -> Result<MessageAccepted, AppError> {
        let id = self.fresh_id(MessageId::parse)?;
        let message = Message::new(
            id.clone(),
            caller.user.clone(),
            to,
            text,
            data,
            self.clock.now(),
            &self.config.limits,
        )
        .map_err(|e| match e {
            MessageRejection::Data(rookery_domain::validate::DataError::TooLarge { .. }) => {
                AppError::TooLarge(e.to_string())
            }
            other => AppError::Invalid(other.to_string()),
        })?;
        self.write(caller, idem, |_now| {
            let message = message.clone();
            let id = id.clone();
            async move {
                let seq = self.store.last_seq(&message.to).await.map_err(Failure::from)?;
                Ok(Planned {
                    owner: message.to.clone(),
                    expected_seq: seq,
                    item_versions: Vec::new(),
                    payloads: vec![EventPayload::MessageReceived(message)],
                    outcome: MessageAccepted {
                        id,
                        status: "accepted".into(),
                    },
                })
            }
        })
        .await
    }

    /// `GET /v1/messages`: messages the caller received, oldest first.
    ///
    /// # Errors
    /// `Invalid` for a bad limit or cursor; `Unavailable`.
    pub async fn messages(
        &self,
        caller: &Caller,
        since: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Page<Message>, AppError> {
        let limit = page_size(limit)?;
        let after = parse_seq(since)?;
        let events = self
            .store
            .read_messages(&caller.user, after, limit + 1)
            .await
            .map_err(Failure::from)?;
        let page = Page::cut(events, limit, |e| Some(seq_cursor(e.seq)));
        Ok(page.filter_map(|e| match e.payload {
            EventPayload::MessageReceived(message) => Some(message),
            _ => None,
        }))
    }

    /// `PUT /v1/devices/{device_id}`: register, refresh or re-enable a device.
    ///
    /// # Errors
    /// `Invalid` for a bad token, a token the provider refuses, or too many devices; `Unavailable`.
    pub async fn register_device(
        &self,
        caller: &Caller,
        device_id: &DeviceId,
        platform: Platform,
        token: &str,
        idem: Option<&Idempotency>,
    ) -> Result<DeviceView, AppError> {
        device::check_token(token, &self.config.limits).map_err(|e| AppError::Invalid(e.to_string()))?;
        let user = &caller.user;
        self.write(caller, idem, |_now| async move {
            let seq = self.store.last_seq(user).await.map_err(Failure::from)?;
            let devices = self.store.devices(user).await.map_err(Failure::from)?;
            let current = devices.get(device_id);
            let outcome = DeviceView {
                device_id: device_id.clone(),
                platform,
                enabled: true,
            };
            let unchanged = current.is_some_and(|d| d.enabled && d.platform == platform && d.token == token);
            if unchanged {
                return Ok(Planned {
                    owner: user.clone(),
                    expected_seq: seq,
                    item_versions: Vec::new(),
                    payloads: Vec::new(),
                    outcome,
                });
            }
            let max = self.config.limits.max_devices;
            if current.is_none() && devices.len() >= max {
                return Err(AppError::Invalid(format!("at most {max} devices per user")));
            }
            let previous = current.filter(|d| d.platform == platform).map(|d| d.endpoint.as_str());
            let endpoint = self
                .push
                .register(user, device_id, platform, token, previous)
                .await
                .map_err(|e| match e {
                    PushError::Rejected(why) => {
                        AppError::Invalid(format!("the push provider refused the token: {why}"))
                    }
                    PushError::Unavailable(failure) => AppError::Unavailable(failure),
                })?;
            let event = DeviceEvent::Registered {
                device_id: device_id.clone(),
                platform,
                token: token.to_owned(),
                endpoint,
            };
            Ok(Planned {
                owner: user.clone(),
                expected_seq: seq,
                item_versions: Vec::new(),
                payloads: vec![EventPayload::Device(event)],
                outcome,
            })
        })
        .await
    }

    /// `GET /v1/devices`.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn devices(&self, caller: &Caller) -> Result<Vec<DeviceView>, AppError> {
        let devices = self.store.devices(&caller.user).await.map_err(Failure::from)?;
        Ok(devices.values().map(DeviceView::from).collect())
    }

    /// `DELETE /v1/devices/{device_id}`: records the removal, then deletes the device's push endpoint.
    ///
    /// The removal is what the client asked for and is committed first; the endpoint is deleted after,
    /// and only by the request that committed the removal (an idempotent replay deletes nothing, since
    /// the device may have been registered again since). A failed delete is logged and the request
    /// still succeeds: the device is gone, no push goes to it any more, and the provider only keeps an
    /// endpoint nobody sends to; failing would make the client retry into a `404`.
    ///
    /// # Errors
    /// `NotFound` when no such device is registered; `Unavailable`.
    pub async fn remove_device(
        &self,
        caller: &Caller,
        device_id: &DeviceId,
        idem: Option<&Idempotency>,
    ) -> Result<Done, AppError> {
        let user = &caller.user;
        let removed = self
            .write(caller, idem, |_now| async move {
                let seq = self.store.last_seq(user).await.map_err(Failure::from)?;
                let devices = self.store.devices(user).await.map_err(Failure::from)?;
                let Some(device) = devices.get(device_id) else {
                    return Err(AppError::NotFound);
                };
                let event = DeviceEvent::Removed {
                    device_id: device_id.clone(),
                };
                Ok(Planned {
                    owner: user.clone(),
                    expected_seq: seq,
                    item_versions: Vec::new(),
                    payloads: vec![EventPayload::Device(event)],
                    outcome: DeviceRemoved {
                        endpoint: Some(device.endpoint.clone()),
                    },
                })
            })
            .await?;
        if let Some(endpoint) = removed.endpoint
            && let Err(error) = self.push.delete(user, device_id, &endpoint).await
        {
            tracing::warn!(user = %user, device = %device_id, %error, "removed device's push endpoint not deleted");
        }
        Ok(Done {})
    }

    /// Marks a device disabled because its provider reported `endpoint` disabled (used by the push dispatcher).
    /// Does nothing when the device has since been removed or registered with another endpoint.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn disable_endpoint(&self, owner: &UserId, device_id: &DeviceId, endpoint: &str) -> Result<(), AppError> {
        let system = Caller::new(owner.clone());
        self.write(&system, None, |_now| async move {
            let seq = self.store.last_seq(owner).await.map_err(Failure::from)?;
            let devices = self.store.devices(owner).await.map_err(Failure::from)?;
            let still_current = devices
                .get(device_id)
                .is_some_and(|d| d.enabled && d.endpoint == endpoint);
            let payloads = if still_current {
                vec![EventPayload::Device(DeviceEvent::Disabled {
                    device_id: device_id.clone(),
                    endpoint: endpoint.to_owned(),
                })]
            } else {
                Vec::new()
            };
            Ok(Planned {
                owner: owner.clone(),
                expected_seq: seq,
                item_versions: Vec::new(),
                payloads,
                outcome: Done {},
            })
        })
        .await
        .map(|_| ())
    }

    /// `POST /v1/media`: declares an object and signs its upload.
    ///
    /// # Errors
    /// `Invalid` for a type not allowed or size 0, `TooLarge` for a size over the limit; `Unavailable`.
    pub async fn create_media(
        &self,
        caller: &Caller,
        content_type: &str,
        size: u64,
        idem: Option<&Idempotency>,
    ) -> Result<MediaCreated, AppError> {
        let id = self.fresh_id(MediaId::parse)?;
        let user = &caller.user;
        let object = MediaObject::declare(
            id,
            user.clone(),
            content_type,
            size,
            self.clock.now(),
            &self.config.limits,
        )
        .map_err(|e| match e {
            MediaRejection::TooLarge { .. } => AppError::TooLarge(e.to_string()),
            other => AppError::Invalid(other.to_string()),
        })?;
        let ttl = self.config.media_url_ttl;
        self.write(caller, idem, |now| {
            let object = object.clone();
            async move {
                let seq = self.store.last_seq(user).await.map_err(Failure::from)?;
                let upload = self.media.upload_url(&object, now, ttl).await.map_err(|e| match e {
                    crate::MediaError::Unavailable(failure) => AppError::Unavailable(failure),
                })?;
                let outcome = MediaCreated {
                    id: object.id.clone(),
                    status: "pending".into(),
                    upload: SignedView {
                        url: upload.url,
                        method: Some(upload.method),
                        headers: Some(upload.headers),
                        expires_at: upload.expires_at,
                    },
                };
                Ok(Planned {
                    owner: user.clone(),
                    expected_seq: seq,
                    item_versions: Vec::new(),
                    payloads: vec![EventPayload::MediaDeclared(object)],
                    outcome,
                })
            }
        })
        .await
    }

    /// `GET /v1/media/{id}`: owner only.
    ///
    /// # Errors
    /// `NotFound` for an unknown id or another user's object; `Unavailable`.
    pub async fn get_media(&self, caller: &Caller, id: &MediaId) -> Result<MediaView, AppError> {
        let object = self
            .store
            .media(&caller.user, id)
            .await
            .map_err(Failure::from)?
            .ok_or(AppError::NotFound)?;
        let unavailable = |e: crate::MediaError| match e {
            crate::MediaError::Unavailable(failure) => AppError::Unavailable(failure),
        };
        let status = self.media.status(&object).await.map_err(unavailable)?;
        let download = match status {
            ObjectStatus::Pending => None,
            ObjectStatus::Uploaded { .. } => {
                let signed = self
                    .media
                    .download_url(&object, self.clock.now(), self.config.media_url_ttl)
                    .await
                    .map_err(unavailable)?;
                Some(SignedView {
                    url: signed.url,
                    method: None,
                    headers: None,
                    expires_at: signed.expires_at,
                })
            }
        };
        Ok(MediaView {
            id: object.id,
            content_type: object.content_type,
            size: object.size,
            status: if download.is_some() { "uploaded" } else { "pending" },
            download,
        })
    }
}
