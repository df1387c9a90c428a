//! Items (Lambda function 1): create, replace, patch, delete and restore a user's JSON items, read them
//! now or at any version, list them, and page through their history.

use std::sync::{Arc, Mutex};

use rookery_domain::history::{item_after, state_at};
use rookery_domain::item::decide;
use rookery_domain::projection::{HistoryEvent, history_event};
use rookery_domain::{
    CollectionName, EventPayload, Item, ItemCommand, ItemHead, ItemKey, ItemRejection, Limits, Precondition,
    StoredEvent, Timestamp, UserId, Version, Visibility,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::write::{Done, Planned, Writer};
use super::{Caller, Idempotency, Page};
use crate::cursor::{id_cursor, page_size, parse_id, parse_version, version_cursor};
use crate::{AppError, Clock, EventStore, Failure, IdSource, Rebase};

/// The outcome of `PUT` on an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemWritten {
    /// True when the write created the item (`201`), false when it replaced it (`200`).
    pub created: bool,
    /// The item after the write.
    pub item: Item,
}

/// An item write that must leave a live item; a plan without one is a bug, reported as such.
fn live(item: Option<Item>) -> Result<Item, AppError> {
    item.ok_or_else(|| AppError::Unavailable(Failure::permanent("write planned no item")))
}

/// The item an item event leaves (`None` after a delete).
fn item_of(owner: &UserId, payload: &EventPayload, at: Timestamp) -> Option<Item> {
    payload
        .as_item()
        .and_then(|change| change.state.as_ref().map(|state| state.to_item(owner, change, at)))
}

/// What the store decided when it re-planned a write in place (see [`Rebase`]): the payload it wrote and
/// the write's time, kept for the answer. Cleared before each attempt, so it describes the last one.
#[derive(Debug, Default, Clone)]
struct Rebased(Arc<Mutex<Option<(EventPayload, Timestamp)>>>);

impl Rebased {
    fn clear(&self) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = None;
        }
    }

    fn take(&self) -> Option<(EventPayload, Timestamp)> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }

    /// The same decision as the plan's, made again on the head the store finds.
    fn rebase(&self, key: ItemKey, command: ItemCommand, now: Timestamp, limits: Limits) -> Rebase {
        let slot = self.clone();
        Arc::new(move |head: &ItemHead| {
            let payload = decide(&key, head, command.clone(), Precondition::None, now, &limits).ok()?;
            if let Ok(mut kept) = slot.0.lock() {
                *kept = Some((payload.clone(), now));
            }
            Some(payload)
        })
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

/// The items use cases.
#[derive(Debug, Clone)]
pub struct ItemService<S, C, I> {
    writer: Writer<S, C, I>,
}

impl<S: EventStore, C: Clock, I: IdSource> ItemService<S, C, I> {
    /// The service over the shared write path.
    pub fn new(writer: Writer<S, C, I>) -> Self {
        Self { writer }
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
        rebased: Option<&Rebased>,
    ) -> Result<Planned<Option<Item>>, AppError> {
        let head = self.item_head(owner, key).await?;
        // Without a precondition the write holds on whatever version it meets, so a store that serializes
        // a user's appends may decide it again on the newer head itself, in the same transaction.
        let rebase = rebased.filter(|_| precondition == Precondition::None).map(|slot| {
            slot.clear();
            slot.rebase(key.clone(), command.clone(), now, self.writer.config().limits.clone())
        });
        let payload = match decide(key, &head, command, precondition, now, &self.writer.config().limits) {
            Ok(payload) => payload,
            Err(ItemRejection::VersionConflict { current }) => {
                return Err(self.conflict(owner, key, precondition, current).await);
            }
            Err(other) => return Err(rejection(other)),
        };
        let outcome = item_of(owner, &payload, now);
        // Only the item's version guards the write: the store puts it at the end of the stream, wherever
        // other writes of the user moved it.
        Ok(Planned {
            item_versions: vec![(key.clone(), head.version)],
            rebase,
            ..Planned::at_end(owner, vec![payload], outcome)
        })
    }

    async fn item_head(&self, owner: &UserId, key: &ItemKey) -> Result<ItemHead, AppError> {
        Ok(self.writer.store().item_head(owner, key).await.map_err(Failure::from)?)
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
        match self.writer.store().item_history(owner, key, after, 100).await {
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
        let rebased = Rebased::default();
        let written = self
            .writer
            .write(caller, idem, |now| {
                let command = ItemCommand::Put {
                    data: data.clone(),
                    visibility,
                };
                let rebased = &rebased;
                async move {
                    let planned = self
                        .plan_item(&caller.user, key, command, precondition, now, Some(rebased))
                        .await?;
                    let item = live(planned.outcome.clone())?;
                    Ok(planned.map(|_, payloads| ItemWritten {
                        created: matches!(payloads.first(), Some(EventPayload::ItemCreated(_))),
                        item,
                    }))
                }
            })
            .await?;
        match rebased.take() {
            Some((payload, at)) => Ok(ItemWritten {
                created: matches!(payload, EventPayload::ItemCreated(_)),
                item: live(item_of(&caller.user, &payload, at))?,
            }),
            None => Ok(written),
        }
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
        let rebased = Rebased::default();
        let item = self
            .writer
            .write(caller, idem, |now| {
                let command = ItemCommand::Patch { patch: patch.clone() };
                let rebased = &rebased;
                async move {
                    let planned = self
                        .plan_item(&caller.user, key, command, precondition, now, Some(rebased))
                        .await?;
                    let item = live(planned.outcome.clone())?;
                    Ok(planned.map(|_, _| item))
                }
            })
            .await?;
        match rebased.take() {
            Some((payload, at)) => live(item_of(&caller.user, &payload, at)),
            None => Ok(item),
        }
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
        self.writer
            .write(caller, idem, |now| async move {
                let planned = self
                    .plan_item(&caller.user, key, ItemCommand::Delete, precondition, now, None)
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
        self.writer
            .write(caller, idem, |now| async move {
                let target = self.event_at(&caller.user, key, version).await?;
                let target = target.as_ref().and_then(|event| state_at([event], version));
                let command = ItemCommand::Restore { version, target };
                let planned = self
                    .plan_item(&caller.user, key, command, precondition, now, None)
                    .await?;
                let item = live(planned.outcome.clone())?;
                Ok(planned.map(|_, _| item))
            })
            .await
    }

    async fn event_at(&self, owner: &UserId, key: &ItemKey, version: Version) -> Result<Option<StoredEvent>, AppError> {
        if version == Version::NONE {
            return Ok(None);
        }
        let events = self
            .writer
            .store()
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
            .writer
            .store()
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
            .writer
            .store()
            .item_history(&caller.user, key, after, limit + 1)
            .await
            .map_err(Failure::from)?;
        if events.is_empty() && cursor.is_none() {
            return Err(AppError::NotFound);
        }
        let page = Page::cut(events, limit, |e| history_event(e).map(|h| version_cursor(h.version)));
        Ok(page.filter_map(|e| history_event(&e)))
    }
}
