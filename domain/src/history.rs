//! Rebuilding an item from its events: current state, and the state as of any version.

use crate::event::{ItemChanged, ItemState};
use crate::item::{ItemHead, evolve};
use crate::{Item, StoredEvent, UserId, Version};

/// Folds an item's events, oldest first, into its head. Events of other aggregates are skipped.
pub fn replay<'a>(owner: &UserId, events: impl IntoIterator<Item = &'a StoredEvent>) -> ItemHead {
    events
        .into_iter()
        .fold(ItemHead::default(), |head, event| match event.payload.as_item() {
            Some(change) => evolve(owner, &head, change, event.at),
            None => head,
        })
}

/// The item as it was right after `event`, or `None` if `event` is a delete or not an item event.
pub fn item_after(event: &StoredEvent) -> Option<Item> {
    let change = event.payload.as_item()?;
    change
        .state
        .as_ref()
        .map(|state| state.to_item(&event.owner, change, event.at))
}

/// The state an item had at `version`, from its events (any order):
/// `None` when no event has that version, `Some(None)` when that version was a delete.
pub fn state_at<'a>(events: impl IntoIterator<Item = &'a StoredEvent>, version: Version) -> Option<Option<ItemState>> {
    events
        .into_iter()
        .filter_map(|event| event.payload.as_item())
        .find(|change: &&ItemChanged| change.version == version)
        .map(|change| change.state.clone())
}
