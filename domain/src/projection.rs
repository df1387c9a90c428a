//! Read models derived from events: search documents, feed changes, push payloads.
//!
//! Each projection is a pure function of one stored event, so consumers can apply them
//! in any order and as often as the change log delivers them, guarding only by version.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::history::item_after;
use crate::{Item, ItemKey, Message, Platform, Seq, StoredEvent, Timestamp, UserId, Version, Visibility};

/// What the search index holds for one live item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchDocument {
    /// The item's owner.
    pub owner: UserId,
    /// The item's key.
    pub key: ItemKey,
    /// The item's version this document reflects.
    pub version: Version,
    /// Who may find it.
    pub visibility: Visibility,
    /// Every string value in `data`, nested ones included, in document order.
    pub text: Vec<String>,
    /// The item itself, returned in hits.
    pub item: Item,
}

/// One change to apply to the search index.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexChange {
    /// Add or replace the document, unless the index holds a newer version.
    Upsert(SearchDocument),
    /// Remove the document, unless the index holds a newer version; remember the delete's version.
    Delete {
        /// The item's owner.
        owner: UserId,
        /// The item's key.
        key: ItemKey,
        /// The version of the delete.
        version: Version,
    },
}

impl IndexChange {
    /// The version this change carries.
    pub fn version(&self) -> Version {
        match self {
            IndexChange::Upsert(doc) => doc.version,
            IndexChange::Delete { version, .. } => *version,
        }
    }

    /// The owner and key of the item this change is about.
    pub fn target(&self) -> (&UserId, &ItemKey) {
        match self {
            IndexChange::Upsert(doc) => (&doc.owner, &doc.key),
            IndexChange::Delete { owner, key, .. } => (owner, key),
        }
    }
}

/// Every string value in a JSON value, depth first (object values in key order).
pub fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The search document for an item.
pub fn search_document(item: &Item) -> SearchDocument {
    let mut text = Vec::new();
    item.data.values().for_each(|v| strings(v, &mut text));
    SearchDocument {
        owner: item.owner.clone(),
        key: item.key(),
        version: item.version,
        visibility: item.visibility,
        text,
        item: item.clone(),
    }
}

/// The index change an event calls for: `None` for events that are not about items.
pub fn index_change(event: &StoredEvent) -> Option<IndexChange> {
    let change = event.payload.as_item()?;
    Some(match item_after(event) {
        Some(item) => IndexChange::Upsert(search_document(&item)),
        None => IndexChange::Delete {
            owner: event.owner.clone(),
            key: change.key(),
            version: change.version,
        },
    })
}

/// An item change as history and sync show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEvent {
    /// Position in the owner's feed.
    pub seq: Seq,
    /// `item.created`, `item.replaced`, `item.patched`, `item.deleted` or `item.restored`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The item's collection.
    pub collection: crate::CollectionName,
    /// The item's id.
    pub id: crate::ItemId,
    /// The version this change produced.
    pub version: Version,
    /// When it was committed.
    pub at: Timestamp,
    /// The item after the change, `null` after a delete.
    pub item: Option<Item>,
}

/// A received message as the feed shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageEvent {
    /// Position in the recipient's feed.
    pub seq: Seq,
    /// Always `message.received`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it was committed.
    pub at: Timestamp,
    /// The message.
    pub message: Message,
}

/// A device as the feed shows it: never its push token or endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceChange {
    /// The app's id for the device.
    pub device_id: crate::DeviceId,
    /// Its platform; `None` only for a disable or removal recorded before events kept it.
    pub platform: Option<crate::Platform>,
    /// False once its endpoint was reported disabled (and after a removal).
    pub enabled: bool,
    /// True when the device was unregistered.
    pub removed: bool,
}

/// A device change as the feed shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceEvent {
    /// Position in the owner's feed.
    pub seq: Seq,
    /// Always `device.changed`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it was committed.
    pub at: Timestamp,
    /// The device after the change.
    pub device: DeviceChange,
}

/// A declared media object as the feed shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaSummary {
    /// The object's id.
    pub id: crate::MediaId,
    /// Its declared type.
    pub content_type: String,
    /// Its declared size in bytes.
    pub size: u64,
}

/// A media declaration as the feed shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MediaEvent {
    /// Position in the owner's feed.
    pub seq: Seq,
    /// Always `media.declared`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it was committed.
    pub at: Timestamp,
    /// The object declared.
    pub media: MediaSummary,
}

/// One entry of `/v1/sync`: every event of the user's stream has one, so the feed's seqs are consecutive.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FeedChange {
    /// An item change.
    Item(HistoryEvent),
    /// A received message.
    Message(MessageEvent),
    /// A device registered, disabled or removed.
    Device(DeviceEvent),
    /// A media object declared.
    Media(MediaEvent),
}

impl FeedChange {
    /// The change's position in the owner's feed.
    pub fn seq(&self) -> Seq {
        match self {
            FeedChange::Item(e) => e.seq,
            FeedChange::Message(e) => e.seq,
            FeedChange::Device(e) => e.seq,
            FeedChange::Media(e) => e.seq,
        }
    }
}

/// The history entry for an item event; `None` for other events.
pub fn history_event(event: &StoredEvent) -> Option<HistoryEvent> {
    event.payload.as_item().map(|change| history_of(event, change))
}

/// The history entry of `event`, which changed an item as `change` says.
fn history_of(event: &StoredEvent, change: &crate::event::ItemChanged) -> HistoryEvent {
    HistoryEvent {
        seq: event.seq,
        kind: event.payload.type_name(),
        collection: change.collection.clone(),
        id: change.id.clone(),
        version: change.version,
        at: event.at,
        item: item_after(event),
    }
}

/// The feed entry for an event. Every event has one: items, messages, devices (without their push token)
/// and media declarations.
pub fn feed_change(event: &StoredEvent) -> FeedChange {
    let (seq, at) = (event.seq, event.at);
    match &event.payload {
        crate::EventPayload::MessageReceived(message) => FeedChange::Message(MessageEvent {
            seq,
            kind: "message.received",
            at,
            message: message.clone(),
        }),
        crate::EventPayload::Device(change) => FeedChange::Device(DeviceEvent {
            seq,
            kind: "device.changed",
            at,
            device: device_change(change),
        }),
        crate::EventPayload::MediaDeclared(object) => FeedChange::Media(MediaEvent {
            seq,
            kind: "media.declared",
            at,
            media: MediaSummary {
                id: object.id.clone(),
                content_type: object.content_type.clone(),
                size: object.size,
            },
        }),
        crate::EventPayload::ItemCreated(change)
        | crate::EventPayload::ItemReplaced(change)
        | crate::EventPayload::ItemPatched(change)
        | crate::EventPayload::ItemDeleted(change)
        | crate::EventPayload::ItemRestored(change) => FeedChange::Item(history_of(event, change)),
    }
}

/// What a device event leaves the device as, for the feed.
fn device_change(change: &crate::device::DeviceEvent) -> DeviceChange {
    use crate::device::DeviceEvent as Change;
    match change {
        Change::Registered {
            device_id, platform, ..
        } => DeviceChange {
            device_id: device_id.clone(),
            platform: Some(*platform),
            enabled: true,
            removed: false,
        },
        Change::Disabled {
            device_id, platform, ..
        } => DeviceChange {
            device_id: device_id.clone(),
            platform: *platform,
            enabled: false,
            removed: false,
        },
        Change::Removed { device_id, platform } => DeviceChange {
            device_id: device_id.clone(),
            platform: *platform,
            enabled: false,
            removed: true,
        },
    }
}

/// The notification payload for `message` on `platform`, as compact JSON no longer than the platform's limit.
///
/// APNs gets `aps.alert` with the sender as title and the text as body; FCM gets `notification` plus
/// string-valued `data`. The text is shortened (at a character boundary, with an ellipsis) until the whole
/// payload fits; if the app's `data` alone is too large it is left out, and the app fetches the message by id.
pub fn push_payload(platform: Platform, message: &Message) -> String {
    let limit = platform.payload_limit();
    let chars: Vec<(usize, char)> = message.text.char_indices().collect();
    for include_data in [true, false] {
        let render = |text: &str| render_push(platform, message, text, include_data);
        let full = render(&message.text);
        if full.len() <= limit {
            return full;
        }
        // Binary search for the longest prefix (in characters) that fits with an ellipsis.
        let (mut lo, mut hi) = (0usize, chars.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if render(&shortened(&message.text, &chars, mid)).len() <= limit {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let candidate = render(&shortened(&message.text, &chars, lo));
        if candidate.len() <= limit {
            return candidate;
        }
    }
    // Only reachable with a pathological sender id and limit; an empty alert is still a valid payload.
    render_push(platform, message, "", false)
}

fn shortened(text: &str, chars: &[(usize, char)], keep: usize) -> String {
    match chars.get(keep) {
        Some(&(byte, _)) => format!("{}…", &text[..byte]),
        None => text.to_owned(),
    }
}

fn render_push(platform: Platform, message: &Message, text: &str, include_data: bool) -> String {
    let value = match platform {
        Platform::Apns | Platform::ApnsSandbox => {
            let mut root = Map::new();
            root.insert(
                "aps".into(),
                json!({"alert": {"title": message.from, "body": text}, "sound": "default"}),
            );
            root.insert("message_id".into(), json!(message.id));
            root.insert("from".into(), json!(message.from));
            if include_data && !message.data.is_empty() {
                root.insert("data".into(), Value::Object(message.data.clone()));
            }
            Value::Object(root)
        }
        Platform::Fcm => {
            // FCM `data` values must be strings: nested values travel as JSON text.
            let mut data = Map::new();
            data.insert("message_id".into(), json!(message.id));
            data.insert("from".into(), json!(message.from));
            if include_data && !message.data.is_empty() {
                data.insert(
                    "data".into(),
                    Value::String(Value::Object(message.data.clone()).to_string()),
                );
            }
            json!({"notification": {"title": message.from, "body": text}, "data": data})
        }
    };
    value.to_string()
}

/// The searchable words of a text: maximal runs of letters and digits, lowercased.
/// Everything else (quotes, brackets, `:`, operators) separates words and is never syntax.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
}
