//! The item aggregate: a user's unstructured JSON document, versioned by its events.
//!
//! [`decide`] checks a command against the current [`ItemHead`] and the contract's preconditions
//! and limits, and answers the one event that records the change; [`evolve`] folds an event into the head.
//! Events carry the item's state after the change, so any past version is one event away
//! (see [`crate::history`]) and projections never need the events before.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::{ItemChanged, ItemState};
use crate::validate::{DataError, check_data};
use crate::{EventPayload, ItemKey, Limits, Timestamp, UserId, Version};

/// Who may read an item besides its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Only the owner.
    #[default]
    Private,
    /// Anyone with a valid token.
    Public,
}

impl Visibility {
    /// Its name on the wire and in search documents: `private` or `public`.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Public => "public",
        }
    }
}

/// An item as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The user who wrote it.
    pub owner: UserId,
    /// Its collection.
    pub collection: crate::CollectionName,
    /// Its id within the collection.
    pub id: crate::ItemId,
    /// Its current version.
    pub version: Version,
    /// Who may read it.
    pub visibility: Visibility,
    /// When it was (last) created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// The client's document, always a JSON object.
    pub data: Map<String, Value>,
}

impl Item {
    /// The item's key.
    pub fn key(&self) -> ItemKey {
        ItemKey::new(self.collection.clone(), self.id.clone())
    }
}

/// The current state of one item key: its last version, and the item unless it is absent or deleted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ItemHead {
    /// The last version written; [`Version::NONE`] if the key was never used.
    pub version: Version,
    /// The live item, or `None` when it never existed or its last change was a delete.
    pub item: Option<Item>,
}

impl ItemHead {
    /// True when the item exists and is not deleted.
    pub fn is_live(&self) -> bool {
        self.item.is_some()
    }

    /// The version to report in a conflict: `None` when the key was never used.
    pub fn current_version(&self) -> Option<Version> {
        (self.version != Version::NONE).then_some(self.version)
    }
}

/// The client's precondition on a write (`If-Match` / `If-None-Match: *`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// No precondition: last writer wins.
    #[default]
    None,
    /// The item must be live at exactly this version (`If-Match: "<version>"`).
    IfMatch(Version),
    /// The item must not be live (`If-None-Match: *`, create only).
    IfAbsent,
}

/// A change a client asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemCommand {
    /// Create or replace. `visibility: None` keeps the current one (private on creation).
    Put {
        /// The new document.
        data: Map<String, Value>,
        /// The new visibility, if given.
        visibility: Option<Visibility>,
    },
    /// An RFC 7396 merge patch applied to `{"data": ..., "visibility": ...}`.
    Patch {
        /// The merge patch document.
        patch: Value,
    },
    /// Delete; the history stays.
    Delete,
    /// Make the state equal to an earlier version again, as a new version.
    Restore {
        /// The version asked for.
        version: Version,
        /// The state at that version, looked up by the caller with [`crate::history::state_at`]:
        /// `None` when the version is out of range, `Some(None)` when that version was a delete.
        target: Option<Option<ItemState>>,
    },
}

/// Why a command was refused. These are answers to the client, not failures.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ItemRejection {
    /// The precondition did not hold.
    #[error("precondition failed: the item is at version {current:?}")]
    VersionConflict {
        /// The item's version (`None` when the key was never used).
        current: Option<Version>,
    },
    /// The item is absent or deleted (PATCH, DELETE), or the restore version does not exist.
    #[error("item not found")]
    NotFound,
    /// The command is malformed (bad patch result, restore to a delete, ...).
    #[error("{0}")]
    Invalid(String),
    /// The resulting data breaks the depth limit.
    #[error("{0}")]
    TooDeep(DataError),
    /// The resulting data breaks the size limit.
    #[error("{0}")]
    TooLarge(DataError),
}

impl From<DataError> for ItemRejection {
    fn from(error: DataError) -> Self {
        match error {
            DataError::TooLarge { .. } => ItemRejection::TooLarge(error),
            DataError::TooDeep { .. } => ItemRejection::TooDeep(error),
        }
    }
}

/// Decides the event for `command` on the item `key` of `owner`, whose current head is `head`.
///
/// # Errors
/// An [`ItemRejection`] when the precondition fails, the item is missing, or the result breaks a limit.
pub fn decide(
    key: &ItemKey,
    head: &ItemHead,
    command: ItemCommand,
    precondition: Precondition,
    now: Timestamp,
    limits: &Limits,
) -> Result<EventPayload, ItemRejection> {
    match precondition {
        Precondition::None => {}
        Precondition::IfMatch(expected) => {
            if !head.is_live() || head.version != expected {
                return Err(ItemRejection::VersionConflict {
                    current: head.current_version(),
                });
            }
        }
        Precondition::IfAbsent => {
            if head.is_live() {
                return Err(ItemRejection::VersionConflict {
                    current: head.current_version(),
                });
            }
        }
    }
    let version = head.version.next();
    let changed = |state: Option<ItemState>, restored_from: Option<Version>| ItemChanged {
        collection: key.collection.clone(),
        id: key.id.clone(),
        version,
        state,
        restored_from,
    };
    let live = head.item.as_ref();
    match command {
        ItemCommand::Put { data, visibility } => {
            check_data(&data, limits)?;
            match live {
                Some(item) => Ok(EventPayload::ItemReplaced(changed(
                    Some(ItemState {
                        visibility: visibility.unwrap_or(item.visibility),
                        created_at: item.created_at,
                        data,
                    }),
                    None,
                ))),
                None => Ok(EventPayload::ItemCreated(changed(
                    Some(ItemState {
                        visibility: visibility.unwrap_or_default(),
                        created_at: now,
                        data,
                    }),
                    None,
                ))),
            }
        }
        ItemCommand::Patch { patch } => {
            let item = live.ok_or(ItemRejection::NotFound)?;
            let (data, visibility) = apply_merge_patch(item, &patch)?;
            check_data(&data, limits)?;
            Ok(EventPayload::ItemPatched(changed(
                Some(ItemState {
                    visibility,
                    created_at: item.created_at,
                    data,
                }),
                None,
            )))
        }
        ItemCommand::Delete => {
            if live.is_none() {
                return Err(ItemRejection::NotFound);
            }
            Ok(EventPayload::ItemDeleted(changed(None, None)))
        }
        ItemCommand::Restore {
            version: target_version,
            target,
        } => {
            if head.version == Version::NONE {
                return Err(ItemRejection::NotFound);
            }
            let state = target
                .ok_or(ItemRejection::NotFound)?
                .ok_or_else(|| ItemRejection::Invalid(format!("version {target_version} is a delete")))?;
            let created_at = live.map_or(now, |item| item.created_at);
            Ok(EventPayload::ItemRestored(changed(
                Some(ItemState { created_at, ..state }),
                Some(target_version),
            )))
        }
    }
}

/// Applies an RFC 7396 merge patch to `{"data": ..., "visibility": ...}` and checks the result's shape.
fn apply_merge_patch(item: &Item, patch: &Value) -> Result<(Map<String, Value>, Visibility), ItemRejection> {
    let mut target = serde_json::json!({ "data": item.data, "visibility": item.visibility });
    json_patch::merge(&mut target, patch);
    let Value::Object(mut fields) = target else {
        return Err(ItemRejection::Invalid("the patch must be a JSON object".into()));
    };
    let data = match fields.remove("data") {
        None => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => {
            return Err(ItemRejection::Invalid("`data` must remain a JSON object".into()));
        }
    };
    let visibility = match fields.remove("visibility") {
        None => Visibility::default(),
        Some(value) => serde_json::from_value(value)
            .map_err(|_| ItemRejection::Invalid("`visibility` must be \"private\" or \"public\"".into()))?,
    };
    if let Some(unknown) = fields.keys().next() {
        return Err(ItemRejection::Invalid(format!(
            "unknown member `{unknown}`; only `data` and `visibility` can be patched"
        )));
    }
    Ok((data, visibility))
}

/// Folds one item event, committed at `at`, into the head of its item.
///
/// An event at or below the head's version is a repeat and leaves the head unchanged,
/// so folding the same events twice gives the same head.
pub fn evolve(owner: &UserId, head: &ItemHead, change: &ItemChanged, at: Timestamp) -> ItemHead {
    if change.version <= head.version {
        return head.clone();
    }
    ItemHead {
        version: change.version,
        item: change.state.as_ref().map(|state| state.to_item(owner, change, at)),
    }
}
