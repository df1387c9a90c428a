//! Small builders for ids, timestamps and events, shared by the contract suites and the properties.
//!
//! Everything returns `Result` rather than unwrapping, so the suites can use `?` and stay free of panics
//! outside their assertions.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rookery_domain::device::DeviceEvent;
use rookery_domain::event::{ItemChanged, ItemState};
use rookery_domain::{
    CollectionName, DeviceId, EventId, EventMeta, EventPayload, IdError, ItemId, ItemKey, MediaId, MediaObject,
    Message, MessageId, NewEvent, Platform, Timestamp, UserId, Version, Visibility,
};
use serde_json::{Map, Value};

/// The error type of every check and helper: anything that went wrong, with its message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a check returns: `Ok` when every assertion held and every port call that had to succeed did.
pub type Outcome = Result<(), BoxError>;

/// A fixed instant (2026-11-25T10:00:00Z) that fixture times count from.
pub const EPOCH_MILLIS: u64 = 1_795_600_800_000;

/// The instant `offset_millis` after [`EPOCH_MILLIS`].
pub fn at(offset_millis: u64) -> Timestamp {
    Timestamp::from_millis(EPOCH_MILLIS + offset_millis)
}

/// The current wall-clock time, for adapters that check signatures against real time.
pub fn wall_clock() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// A user id.
///
/// # Errors
/// When `name` is not a valid user id.
pub fn user(name: &str) -> Result<UserId, IdError> {
    UserId::parse(name)
}

/// A collection name.
///
/// # Errors
/// When `name` is not a valid collection name.
pub fn collection(name: &str) -> Result<CollectionName, IdError> {
    CollectionName::parse(name)
}

/// An item key.
///
/// # Errors
/// When either part is not a valid id.
pub fn key(collection: &str, id: &str) -> Result<ItemKey, IdError> {
    Ok(ItemKey::new(CollectionName::parse(collection)?, ItemId::parse(id)?))
}

/// A device id.
///
/// # Errors
/// When `name` is not a valid device id.
pub fn device(name: &str) -> Result<DeviceId, IdError> {
    DeviceId::parse(name)
}

/// A prefix unique to this process, so ids minted here never collide with another run's in a shared emulator.
fn process_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("t{:x}{:x}", std::process::id(), nanos % 0xffff_ffff)
    })
}

/// A fresh id, unique across the process: `<prefix>-<counter>`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}-{n:08}", process_prefix())
}

/// A fresh event id.
///
/// # Errors
/// Never in practice; the id is built from valid characters.
pub fn event_id() -> Result<EventId, IdError> {
    EventId::parse(unique("e"))
}

/// A JSON object from a `json!` value; anything else becomes an empty object.
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// An event with a fresh id and empty metadata.
///
/// # Errors
/// Never in practice (see [`event_id`]).
pub fn new_event(payload: EventPayload, at: Timestamp) -> Result<NewEvent, IdError> {
    Ok(NewEvent {
        event_id: event_id()?,
        at,
        payload,
        meta: EventMeta::default(),
    })
}

/// The payload of an item change to `version`: created when `created`, replaced otherwise, deleted for `data: None`.
pub fn item_payload(
    key: &ItemKey,
    version: Version,
    data: Option<Map<String, Value>>,
    visibility: Visibility,
    created: bool,
    created_at: Timestamp,
) -> EventPayload {
    let change = ItemChanged {
        collection: key.collection.clone(),
        id: key.id.clone(),
        version,
        state: data.map(|data| ItemState {
            visibility,
            created_at,
            data,
        }),
        restored_from: None,
    };
    match (&change.state, created) {
        (None, _) => EventPayload::ItemDeleted(change),
        (Some(_), true) => EventPayload::ItemCreated(change),
        (Some(_), false) => EventPayload::ItemReplaced(change),
    }
}

/// A received-message payload for `to`, from `from`.
///
/// # Errors
/// Never in practice (the message id is built from valid characters).
pub fn message_payload(from: &UserId, to: &UserId, text: &str, sent_at: Timestamp) -> Result<EventPayload, IdError> {
    Ok(EventPayload::MessageReceived(Message {
        id: MessageId::parse(unique("m"))?,
        from: from.clone(),
        to: to.clone(),
        text: text.to_owned(),
        data: Map::new(),
        sent_at,
    }))
}

/// A device-registered payload.
pub fn registered(device_id: &DeviceId, platform: Platform, token: &str, endpoint: &str) -> EventPayload {
    EventPayload::Device(DeviceEvent::Registered {
        device_id: device_id.clone(),
        platform,
        token: token.to_owned(),
        endpoint: endpoint.to_owned(),
    })
}

/// A declared media object of `owner`, with a fresh id and a key under the owner's prefix.
///
/// # Errors
/// Never in practice (the id is built from valid characters).
pub fn media_object(
    owner: &UserId,
    content_type: &str,
    size: u64,
    declared_at: Timestamp,
) -> Result<MediaObject, IdError> {
    let id = MediaId::parse(unique("md"))?;
    Ok(MediaObject {
        key: format!("media/{owner}/{id}"),
        id,
        owner: owner.clone(),
        content_type: content_type.to_owned(),
        size,
        declared_at,
    })
}
