//! Events: the facts Rookery stores, and the envelope that makes each one self-describing.
//!
//! A [`StoredEvent`] is what the log holds: event id, owner, seq, type, schema version, time,
//! metadata and a readable JSON payload. Writers build [`NewEvent`]s; the event store gives them
//! their seq. Old schema versions are upcast when read ([`decode`]), never rewritten in place.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::device::DeviceEvent;
use crate::media::MediaObject;
use crate::message::Message;
use crate::{CollectionName, EventId, Item, ItemId, ItemKey, Seq, Timestamp, UserId, Version, Visibility};

/// The schema version this build writes for every event type.
pub const CURRENT_SCHEMA: u16 = 1;

/// An item's state after a change (everything but the addressing and versioning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemState {
    /// Who may read it.
    pub visibility: Visibility,
    /// When it was (last) created.
    pub created_at: Timestamp,
    /// The client's document.
    pub data: Map<String, Value>,
}

impl ItemState {
    /// The item this state describes, as of `change`, committed at `at`.
    pub fn to_item(&self, owner: &UserId, change: &ItemChanged, at: Timestamp) -> Item {
        Item {
            owner: owner.clone(),
            collection: change.collection.clone(),
            id: change.id.clone(),
            version: change.version,
            visibility: self.visibility,
            created_at: self.created_at,
            updated_at: at,
            data: self.data.clone(),
        }
    }
}

/// The payload of every item event: which item, its new version, and its state after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemChanged {
    /// The item's collection.
    pub collection: CollectionName,
    /// The item's id.
    pub id: ItemId,
    /// The version this change produced.
    pub version: Version,
    /// The state after the change; `None` after a delete.
    pub state: Option<ItemState>,
    /// For a restore, the version whose state was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<Version>,
}

impl ItemChanged {
    /// The key of the item that changed.
    pub fn key(&self) -> ItemKey {
        ItemKey::new(self.collection.clone(), self.id.clone())
    }
}

/// What happened. The serde tag is the event's `type`, as shown in history and sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum EventPayload {
    /// An item was created (first write, or write after a delete).
    #[serde(rename = "item.created")]
    ItemCreated(ItemChanged),
    /// An item was replaced by PUT.
    #[serde(rename = "item.replaced")]
    ItemReplaced(ItemChanged),
    /// An item was changed by a merge patch.
    #[serde(rename = "item.patched")]
    ItemPatched(ItemChanged),
    /// An item was deleted.
    #[serde(rename = "item.deleted")]
    ItemDeleted(ItemChanged),
    /// An item was restored to the state of an earlier version.
    #[serde(rename = "item.restored")]
    ItemRestored(ItemChanged),
    /// The stream's owner received a message.
    #[serde(rename = "message.received")]
    MessageReceived(Message),
    /// A device was registered, refreshed, disabled or removed.
    #[serde(rename = "device.changed")]
    Device(DeviceEvent),
    /// A media upload was declared.
    #[serde(rename = "media.declared")]
    MediaDeclared(MediaObject),
}

impl EventPayload {
    /// The event's `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventPayload::ItemCreated(_) => "item.created",
            EventPayload::ItemReplaced(_) => "item.replaced",
            EventPayload::ItemPatched(_) => "item.patched",
            EventPayload::ItemDeleted(_) => "item.deleted",
            EventPayload::ItemRestored(_) => "item.restored",
            EventPayload::MessageReceived(_) => "message.received",
            EventPayload::Device(_) => "device.changed",
            EventPayload::MediaDeclared(_) => "media.declared",
        }
    }

    /// The item change, if this is an item event.
    pub fn as_item(&self) -> Option<&ItemChanged> {
        match self {
            EventPayload::ItemCreated(c)
            | EventPayload::ItemReplaced(c)
            | EventPayload::ItemPatched(c)
            | EventPayload::ItemDeleted(c)
            | EventPayload::ItemRestored(c) => Some(c),
            _ => None,
        }
    }
}

/// Who caused an event and in answer to what.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EventMeta {
    /// The request that caused it, for correlating logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The client's idempotency key, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The user whose request caused it (the sender, for a received message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<UserId>,
}

/// An event a writer wants appended; the store assigns its seq.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Its id, from the id source.
    pub event_id: EventId,
    /// When it was decided.
    pub at: Timestamp,
    /// What happened.
    pub payload: EventPayload,
    /// Who and why.
    pub meta: EventMeta,
}

impl NewEvent {
    /// The stored form of this event at position `seq` of `owner`'s stream.
    pub fn stored(self, owner: &UserId, seq: Seq) -> StoredEvent {
        StoredEvent {
            event_id: self.event_id,
            owner: owner.clone(),
            seq,
            schema: CURRENT_SCHEMA,
            at: self.at,
            payload: self.payload,
            meta: self.meta,
        }
    }
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Unique id.
    pub event_id: EventId,
    /// The user whose stream holds it.
    pub owner: UserId,
    /// Its position in that stream.
    pub seq: Seq,
    /// The schema version of its payload.
    pub schema: u16,
    /// When it was committed.
    pub at: Timestamp,
    /// What happened (serialized as `type` and `payload`).
    #[serde(flatten)]
    pub payload: EventPayload,
    /// Who and why.
    #[serde(default)]
    pub meta: EventMeta,
}

/// Why stored bytes could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The JSON is not an event of any known shape.
    #[error("malformed event: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The event was written by a newer build than this one.
    #[error("event schema {found} is newer than this build understands ({CURRENT_SCHEMA})")]
    FutureSchema {
        /// The schema version found.
        found: u16,
    },
}

/// Reads a stored event from its JSON form, upcasting older schema versions.
///
/// # Errors
/// [`DecodeError`] when the JSON is not an event or comes from a future schema.
pub fn decode(mut value: Value) -> Result<StoredEvent, DecodeError> {
    let schema = value
        .get("schema")
        .and_then(Value::as_u64)
        .map_or(1, |s| u16::try_from(s).unwrap_or(u16::MAX));
    if schema > CURRENT_SCHEMA {
        return Err(DecodeError::FutureSchema { found: schema });
    }
    // Upcasters run oldest first, each lifting one schema version. Schema 1 is the first,
    // so there is none yet; a change to a payload adds one here together with a golden fixture.
    if let Some(object) = value.as_object_mut() {
        object.insert("schema".into(), Value::from(CURRENT_SCHEMA));
    }
    Ok(serde_json::from_value(value)?)
}

/// Reads a stored event from JSON bytes (see [`decode`]).
///
/// # Errors
/// [`DecodeError`] when the bytes are not an event or come from a future schema.
pub fn decode_slice(bytes: &[u8]) -> Result<StoredEvent, DecodeError> {
    decode(serde_json::from_slice(bytes)?)
}
