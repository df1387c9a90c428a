//! The JSON shapes of the HTTP API, as entrypoint-local types with OpenAPI schemas.
//!
//! The domain and the use cases do not know about OpenAPI (and should not), so every body the API
//! reads or writes has its own type here, converted from the domain's. This also pins the wire
//! format of `API.md` in one place: a change to a domain type cannot silently change the contract.

use std::collections::BTreeMap;

use rookery_domain::projection::{DeviceEvent, FeedChange, HistoryEvent, MediaEvent, MessageEvent};
use rookery_domain::{Item, Message, Platform, Visibility};
use rookery_ports::service::{DeviceView, MediaCreated, MediaView, MessageAccepted, SignedView};
use rookery_ports::{Scope, SearchHit};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::openapi::schemas;

/// Reads a JSON number that is a non-negative integer into a `u64`, whether it is written `3` or `3.0`:
/// JSON (and JSON Schema's `integer`) does not tell the two apart, though some clients' encoders do.
///
/// # Errors
/// When the number has a fraction, is negative, or is over `u64::MAX`.
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    use serde::de::{Error, Unexpected};
    // 2^64 as an `f64`, exactly: every whole `f64` below it fits a `u64`.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(n) = number.as_u64() {
        return Ok(n);
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..LIMIT).contains(&f) => Ok(f as u64),
        Some(f) => Err(D::Error::invalid_value(
            Unexpected::Float(f),
            &"a non-negative whole number",
        )),
        None => Err(D::Error::custom("expected a non-negative whole number")),
    }
}

/// Who may read an item besides its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Visibility)]
pub enum VisibilityDto {
    /// Only the owner.
    Private,
    /// Anyone with a valid token.
    Public,
}

impl From<Visibility> for VisibilityDto {
    fn from(v: Visibility) -> Self {
        match v {
            Visibility::Private => VisibilityDto::Private,
            Visibility::Public => VisibilityDto::Public,
        }
    }
}

impl From<VisibilityDto> for Visibility {
    fn from(v: VisibilityDto) -> Self {
        match v {
            VisibilityDto::Private => Visibility::Private,
            VisibilityDto::Public => Visibility::Public,
        }
    }
}

/// A push platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Platform)]
pub enum PlatformDto {
    /// Apple Push Notification service, production.
    Apns,
    /// Apple Push Notification service, sandbox.
    ApnsSandbox,
    /// Firebase Cloud Messaging.
    Fcm,
}

impl From<Platform> for PlatformDto {
    fn from(p: Platform) -> Self {
        match p {
            Platform::Apns => PlatformDto::Apns,
            Platform::ApnsSandbox => PlatformDto::ApnsSandbox,
            Platform::Fcm => PlatformDto::Fcm,
        }
    }
}

impl From<PlatformDto> for Platform {
    fn from(p: PlatformDto) -> Self {
        match p {
            PlatformDto::Apns => Platform::Apns,
            PlatformDto::ApnsSandbox => Platform::ApnsSandbox,
            PlatformDto::Fcm => Platform::Fcm,
        }
    }
}

/// Whose items a search returns (`?scope=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(default = "all")]
#[schema(as = Scope)]
pub enum ScopeDto {
    /// The caller's items and public items of anyone.
    #[default]
    All,
    /// The caller's items, private and public.
    Mine,
    /// Public items of anyone.
    Public,
}

impl ScopeDto {
    /// Every scope.
    pub const ALL: [ScopeDto; 3] = [ScopeDto::All, ScopeDto::Mine, ScopeDto::Public];

    /// The name in a query string.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeDto::All => "all",
            ScopeDto::Mine => "mine",
            ScopeDto::Public => "public",
        }
    }

    /// The scope a query string names, if any.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == raw)
    }
}

impl From<Scope> for ScopeDto {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::All => ScopeDto::All,
            Scope::Mine => ScopeDto::Mine,
            Scope::Public => ScopeDto::Public,
        }
    }
}

impl From<ScopeDto> for Scope {
    fn from(scope: ScopeDto) -> Self {
        match scope {
            ScopeDto::All => Scope::All,
            ScopeDto::Mine => Scope::Mine,
            ScopeDto::Public => Scope::Public,
        }
    }
}

/// An item, as every item route answers it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Item)]
pub struct ItemDto {
    /// The user who wrote it.
    #[schema(value_type = schemas::UserId)]
    pub owner: String,
    /// Its collection.
    #[schema(value_type = schemas::CollectionName)]
    pub collection: String,
    /// Its id.
    #[schema(value_type = schemas::ItemId)]
    pub id: String,
    /// Its version: 1 on creation, +1 on each change.
    pub version: u64,
    /// Who may read it.
    pub visibility: VisibilityDto,
    /// When it was created (RFC 3339, milliseconds, UTC).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it last changed.
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// The client's document.
    #[schema(value_type = schemas::Data)]
    pub data: Map<String, Value>,
}

impl From<Item> for ItemDto {
    fn from(item: Item) -> Self {
        Self {
            owner: item.owner.to_string(),
            collection: item.collection.to_string(),
            id: item.id.to_string(),
            version: item.version.0,
            visibility: item.visibility.into(),
            created_at: item.created_at.to_string(),
            updated_at: item.updated_at.to_string(),
            data: item.data,
        }
    }
}

/// The body of `PUT /v1/items/{collection}/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutItemBody {
    /// The new document; must be a JSON object.
    #[schema(value_type = schemas::Data)]
    pub data: Map<String, Value>,
    /// The new visibility; omitted keeps the current one (private on creation).
    #[serde(default)]
    pub visibility: Option<VisibilityDto>,
}

/// The body of `POST /v1/items/{collection}/{id}/restore`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// The version whose state to restore (`404` if there is none; `400` if it was a delete).
    #[schema(value_type = schemas::VersionNumber)]
    #[serde(deserialize_with = "whole_number")]
    pub version: u64,
}

/// A page of items.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ItemPage)]
pub struct ItemPageDto {
    /// The items, ordered by id.
    pub items: Vec<ItemDto>,
    /// The next page's cursor, `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One change of an item, as history, sync and conflicts show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = HistoryEvent)]
pub struct HistoryEventDto {
    /// Position in the owner's change feed.
    pub seq: u64,
    /// `item.created`, `item.replaced`, `item.patched`, `item.deleted` or `item.restored`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The item's collection.
    pub collection: String,
    /// The item's id.
    pub id: String,
    /// The version this change produced.
    pub version: u64,
    /// When it was committed.
    #[schema(format = DateTime)]
    pub at: String,
    /// The item after the change; `null` after a delete.
    pub item: Option<ItemDto>,
}

impl From<HistoryEvent> for HistoryEventDto {
    fn from(event: HistoryEvent) -> Self {
        Self {
            seq: event.seq.0,
            kind: event.kind.to_owned(),
            collection: event.collection.to_string(),
            id: event.id.to_string(),
            version: event.version.0,
            at: event.at.to_string(),
            item: event.item.map(ItemDto::from),
        }
    }
}

/// A page of an item's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = HistoryPage)]
pub struct HistoryPageDto {
    /// The changes, oldest first.
    pub events: Vec<HistoryEventDto>,
    /// The next page's cursor, `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A message between users.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Message)]
pub struct MessageDto {
    /// Its id.
    pub id: String,
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// Its text.
    pub text: String,
    /// The app's structured data.
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// When it was accepted.
    #[schema(format = DateTime)]
    pub sent_at: String,
}

impl From<Message> for MessageDto {
    fn from(message: Message) -> Self {
        Self {
            id: message.id.to_string(),
            from: message.from.to_string(),
            to: message.to.to_string(),
            text: message.text,
            data: message.data,
            sent_at: message.sent_at.to_string(),
        }
    }
}

/// A received message, as the change feed shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = MessageEvent)]
pub struct MessageEventDto {
    /// Position in the recipient's change feed.
    pub seq: u64,
    /// Always `message.received`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was committed.
    #[schema(format = DateTime)]
    pub at: String,
    /// The message.
    pub message: MessageDto,
}

impl From<MessageEvent> for MessageEventDto {
    fn from(event: MessageEvent) -> Self {
        Self {
            seq: event.seq.0,
            kind: event.kind.to_owned(),
            at: event.at.to_string(),
            message: event.message.into(),
        }
    }
}

/// A device as the feed shows it (never its push token).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeedDeviceDto {
    /// The app's id for the device.
    pub device_id: String,
    /// Its platform; `null` only for a disable or removal recorded before events kept it.
    pub platform: Option<PlatformDto>,
    /// False once its endpoint was reported disabled, and after a removal.
    pub enabled: bool,
    /// True when the device was unregistered.
    pub removed: bool,
}

/// A device registered, disabled or removed, as the feed shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceEventDto {
    /// Position in the owner's change feed.
    pub seq: u64,
    /// Always `device.changed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was committed.
    #[schema(format = DateTime)]
    pub at: String,
    /// The device after the change.
    pub device: FeedDeviceDto,
}

impl From<DeviceEvent> for DeviceEventDto {
    fn from(event: DeviceEvent) -> Self {
        Self {
            seq: event.seq.0,
            kind: event.kind.to_owned(),
            at: event.at.to_string(),
            device: FeedDeviceDto {
                device_id: event.device.device_id.to_string(),
                platform: event.device.platform.map(PlatformDto::from),
                enabled: event.device.enabled,
                removed: event.device.removed,
            },
        }
    }
}

/// A declared media object as the feed shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeedMediaDto {
    /// The object's id.
    pub id: String,
    /// Its declared type.
    pub content_type: String,
    /// Its declared size in bytes.
    pub size: u64,
}

/// A media object declared, as the feed shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MediaEventDto {
    /// Position in the owner's change feed.
    pub seq: u64,
    /// Always `media.declared`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was committed.
    #[schema(format = DateTime)]
    pub at: String,
    /// The object declared.
    pub media: FeedMediaDto,
}

impl From<MediaEvent> for MediaEventDto {
    fn from(event: MediaEvent) -> Self {
        Self {
            seq: event.seq.0,
            kind: event.kind.to_owned(),
            at: event.at.to_string(),
            media: FeedMediaDto {
                id: event.media.id.to_string(),
                content_type: event.media.content_type,
                size: event.media.size,
            },
        }
    }
}

/// One entry of the change feed: every event of the user's stream, told apart by `type`
/// (clients ignore types they do not know).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = FeedChange)]
pub enum FeedChangeDto {
    /// An item change.
    Item(HistoryEventDto),
    /// A received message.
    Message(MessageEventDto),
    /// A device change.
    Device(DeviceEventDto),
    /// A media declaration.
    Media(MediaEventDto),
}

impl From<FeedChange> for FeedChangeDto {
    fn from(change: FeedChange) -> Self {
        match change {
            FeedChange::Item(event) => FeedChangeDto::Item(event.into()),
            FeedChange::Message(event) => FeedChangeDto::Message(event.into()),
            FeedChange::Device(event) => FeedChangeDto::Device(event.into()),
            FeedChange::Media(event) => FeedChangeDto::Media(event.into()),
        }
    }
}

/// A page of the change feed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SyncPage)]
pub struct SyncPageDto {
    /// The changes, oldest first.
    pub changes: Vec<FeedChangeDto>,
    /// Where to continue; on an empty page, the cursor that was sent.
    pub next_cursor: String,
    /// True when more changes follow right away.
    pub has_more: bool,
}

/// One search match.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SearchHit)]
pub struct SearchHitDto {
    /// The item's owner.
    pub owner: String,
    /// Its collection.
    pub collection: String,
    /// Its id.
    pub id: String,
    /// The version that was indexed.
    pub version: u64,
    /// Relevance; higher is better.
    pub score: f64,
    /// The item as indexed.
    pub item: ItemDto,
}

impl From<SearchHit> for SearchHitDto {
    fn from(hit: SearchHit) -> Self {
        Self {
            owner: hit.item.owner.to_string(),
            collection: hit.item.collection.to_string(),
            id: hit.item.id.to_string(),
            version: hit.item.version.0,
            score: hit.score,
            item: hit.item.into(),
        }
    }
}

/// Search results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = SearchResults)]
pub struct SearchResultsDto {
    /// How many items match in all.
    pub found: u64,
    /// This page, best match first.
    pub hits: Vec<SearchHitDto>,
    /// The next page's cursor, `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The body of `POST /v1/messages`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageBody {
    /// The recipient's user id.
    #[schema(value_type = schemas::UserId)]
    pub to: String,
    /// The text.
    #[schema(value_type = schemas::MessageText)]
    pub text: String,
    /// Optional structured data for the app.
    #[serde(default)]
    #[schema(value_type = Option<schemas::Data>)]
    pub data: Option<Map<String, Value>>,
}

/// The answer to `POST /v1/messages`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = MessageAccepted)]
pub struct MessageAcceptedDto {
    /// The message's id.
    pub id: String,
    /// Always `accepted`.
    pub status: String,
}

impl From<MessageAccepted> for MessageAcceptedDto {
    fn from(accepted: MessageAccepted) -> Self {
        Self {
            id: accepted.id.to_string(),
            status: accepted.status,
        }
    }
}

/// A page of received messages.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = MessagePage)]
pub struct MessagePageDto {
    /// The messages, oldest first.
    pub messages: Vec<MessageDto>,
    /// The next page's cursor, `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The body of `PUT /v1/devices/{device_id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    /// The push platform.
    pub platform: PlatformDto,
    /// The platform's device token.
    #[schema(value_type = schemas::DeviceToken)]
    pub token: String,
}

/// A registered device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Device)]
pub struct DeviceDto {
    /// The app's id for it.
    pub device_id: String,
    /// Its platform.
    pub platform: PlatformDto,
    /// False once its endpoint was reported disabled, until registered again.
    pub enabled: bool,
}

impl From<DeviceView> for DeviceDto {
    fn from(view: DeviceView) -> Self {
        Self {
            device_id: view.device_id.to_string(),
            platform: view.platform.into(),
            enabled: view.enabled,
        }
    }
}

/// The caller's devices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Devices)]
pub struct DevicesDto {
    /// The devices.
    pub devices: Vec<DeviceDto>,
}

/// The body of `POST /v1/media`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaBody {
    /// The object's type (`400` for another).
    #[schema(value_type = schemas::MediaContentType)]
    pub content_type: String,
    /// Its size in bytes (`413` over the limit).
    #[schema(value_type = schemas::MediaSize)]
    #[serde(deserialize_with = "whole_number")]
    pub size: u64,
}

/// A signed upload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Upload)]
pub struct UploadDto {
    /// The URL to send the bytes to.
    pub url: String,
    /// Always `PUT`.
    pub method: String,
    /// Headers to send exactly as given.
    pub headers: BTreeMap<String, String>,
    /// When the URL stops working.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// A signed download.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Download)]
pub struct DownloadDto {
    /// The URL to fetch the bytes from.
    pub url: String,
    /// When the URL stops working.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

impl From<SignedView> for DownloadDto {
    fn from(view: SignedView) -> Self {
        Self {
            url: view.url,
            expires_at: view.expires_at.to_string(),
        }
    }
}

/// The answer to `POST /v1/media`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = MediaCreated)]
pub struct MediaCreatedDto {
    /// The object's id.
    pub id: String,
    /// Always `pending`.
    pub status: String,
    /// Where and how to upload it.
    pub upload: UploadDto,
}

impl From<MediaCreated> for MediaCreatedDto {
    fn from(created: MediaCreated) -> Self {
        let upload = created.upload;
        Self {
            id: created.id.to_string(),
            status: created.status,
            upload: UploadDto {
                url: upload.url,
                method: upload.method.unwrap_or_else(|| "PUT".to_owned()),
                headers: upload.headers.unwrap_or_default(),
                expires_at: upload.expires_at.to_string(),
            },
        }
    }
}

/// A media object.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Media)]
pub struct MediaDto {
    /// Its id.
    pub id: String,
    /// Its declared type.
    pub content_type: String,
    /// Its declared size in bytes.
    pub size: u64,
    /// `pending` or `uploaded`.
    pub status: String,
    /// Where to download it; `null` while pending.
    pub download: Option<DownloadDto>,
}

impl From<MediaView> for MediaDto {
    fn from(view: MediaView) -> Self {
        Self {
            id: view.id.to_string(),
            content_type: view.content_type,
            size: view.size,
            status: view.status.to_owned(),
            download: view.download.map(DownloadDto::from),
        }
    }
}

/// The answer to `DELETE /v1/me`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Erasing)]
pub struct ErasingDto {
    /// Always `erasing`.
    pub status: String,
}

/// The answer to `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Health)]
pub struct HealthDto {
    /// Always `ok`.
    pub status: String,
}

/// The body of `POST /v1/dev/tokens`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenBody {
    /// The user to issue a token for.
    #[schema(value_type = schemas::UserId)]
    pub user_id: String,
}

/// A development token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = DevToken)]
pub struct DevTokenDto {
    /// The RS256 JWT.
    pub token: String,
    /// When it expires.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// A push the local gateway delivered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Push)]
pub struct PushDto {
    /// The device it went to.
    pub device_id: String,
    /// The device's platform.
    pub platform: PlatformDto,
    /// The message it announced, if the payload names one.
    pub message_id: Option<String>,
    /// The platform payload, as JSON.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// When it was sent.
    #[schema(format = DateTime)]
    pub at: String,
}

/// The pushes delivered to the caller's devices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Pushes)]
pub struct PushesDto {
    /// Oldest first.
    pub pushes: Vec<PushDto>,
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDto {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// The stable error code.
    #[schema(value_type = schemas::ProblemCode)]
    pub code: String,
    /// What went wrong, for people.
    pub detail: String,
    /// On `409`: the item's version, `null` if it never existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// On `409`: the changes after the version the client named (at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<HistoryEventDto>>,
    /// On `5xx`: the id to quote; it is in the server's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn whole_numbers_are_read_however_they_are_written() {
        let version = |body: &str| serde_json::from_str::<RestoreBody>(body).map(|b| b.version);
        assert_eq!(version(r#"{"version": 3}"#).ok(), Some(3));
        assert_eq!(version(r#"{"version": 3.0}"#).ok(), Some(3));
        assert_eq!(version(r#"{"version": 3e2}"#).ok(), Some(300));
        assert_eq!(
            version(r#"{"version": 4242416715920814.0}"#).ok(),
            Some(4_242_416_715_920_814)
        );
        assert_eq!(version(r#"{"version": 18446744073709551615}"#).ok(), Some(u64::MAX));
        for bad in ["3.5", "-1", "-1.0", "18446744073709551616", "1e20", "\"3\"", "null"] {
            assert!(version(&format!(r#"{{"version": {bad}}}"#)).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_in_data_are_kept_exactly() {
        let sent = r#"{"data": {"x": 4242416715920814.0, "y": 0.1, "z": 1.7976931348623157e308}}"#;
        let body: PutItemBody = serde_json::from_str(sent).expect("a valid body");
        assert_eq!(
            Value::Object(body.data),
            json!({"x": 4_242_416_715_920_814.0_f64, "y": 0.1, "z": f64::MAX})
        );
    }
}
