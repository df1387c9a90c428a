//! The schemas of what a client sends (ids, cursors, header values, bounded numbers and texts), each
//! built from the constant or validating constructor the server checks it with.
//!
//! Each is a named component, so that the document states a rule once and every parameter or body
//! member bound by it refers to it. The tests in `super` check each schema against the code it
//! describes, both ways: what the schema allows the code accepts, and what it refuses the code refuses.

use std::collections::BTreeSet;

use rookery_domain::{Limits, media};
use rookery_ports::cursor::{self, DEFAULT_LIMIT, ID_KIND, MAX_LIMIT, SEQ_KIND, VERSION_KIND};
use serde_json::json;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::patterns::{self, ascii_set, class};
use crate::http::dto::VisibilityDto;
use crate::http::extract::MAX_IDEMPOTENCY_KEY_LEN;
use crate::http::problem::Code;
use crate::http::request_id::MAX_REQUEST_ID_LEN;

/// A reference to the component `T`.
pub(crate) fn reference<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A string schema with `pattern`, and `max_length` when given.
fn patterned(pattern: String, max_length: Option<usize>, description: &str) -> RefOr<Schema> {
    string()
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(max_length)
        .description(Some(description))
        .into()
}

/// An integer from `min` to `max`, without a `format`: a `format: int64` would put `u64` values
/// above `i64::MAX`, which the server accepts, outside the schema.
fn integer(min: u64, max: u64, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .maximum(Some(max))
        .description(Some(description))
}

/// The most decimal digits a `u64` always has room for (`u64::MAX` has one more).
fn safe_u64_digits() -> usize {
    u64::MAX.ilog10() as usize
}

/// The pattern of a cursor `kind:<position>`, base64url-encoded, whose position is a first byte from
/// `first` and then up to `max_rest` bytes from `rest`.
fn cursor_pattern(kind: char, first: BTreeSet<u8>, rest: &BTreeSet<u8>, max_rest: usize) -> String {
    let byte = |b: u8| BTreeSet::from([b]);
    let kind = u8::try_from(kind).unwrap_or(b'?');
    patterns::base64url(&[byte(kind), byte(b':'), first], rest, max_rest)
        .unwrap_or_else(|| "^[A-Za-z0-9_-]+$".to_owned())
}

/// The pattern of a cursor whose position is a decimal number (a feed position or a version).
fn number_cursor(kind: char) -> String {
    let digits = ascii_set(|b| b.is_ascii_digit());
    cursor_pattern(kind, digits.clone(), &digits, safe_u64_digits() - 1)
}

macro_rules! named_schema {
    ($(#[$doc:meta])* $name:ident => $build:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $build.into()
            }
        }

        impl ToSchema for $name {}
    };
}

named_schema!(
    /// `^[a-z][a-z0-9_-]{0,63}$`, from [`rookery_domain::CollectionName`].
    CollectionName => patterned(
        rookery_domain::CollectionName::PATTERN.to_owned(),
        Some(rookery_domain::CollectionName::MAX_LEN),
        "A collection name.",
    )
);

named_schema!(
    /// From [`rookery_domain::ItemId`].
    ItemId => patterned(
        rookery_domain::ItemId::PATTERN.to_owned(),
        Some(rookery_domain::ItemId::MAX_LEN),
        "An item id, chosen by the client (a UUID fits).",
    )
);

named_schema!(
    /// From [`rookery_domain::UserId`].
    UserId => patterned(
        rookery_domain::UserId::PATTERN.to_owned(),
        Some(rookery_domain::UserId::MAX_LEN),
        "A user id: the `sub` of the user's token.",
    )
);

named_schema!(
    /// From [`rookery_domain::DeviceId`].
    DeviceId => patterned(
        rookery_domain::DeviceId::PATTERN.to_owned(),
        Some(rookery_domain::DeviceId::MAX_LEN),
        "A device id, chosen by the app.",
    )
);

named_schema!(
    /// From [`rookery_domain::MediaId`].
    MediaId => patterned(
        rookery_domain::MediaId::PATTERN.to_owned(),
        Some(rookery_domain::MediaId::MAX_LEN),
        "A media object id, as `POST /v1/media` answered it.",
    )
);

named_schema!(
    /// From [`rookery_ports::cursor::page_size`].
    PageLimit => integer(1, MAX_LIMIT as u64, "How many entries a page holds at most.")
        .default(Some(json!(DEFAULT_LIMIT)))
);

named_schema!(
    /// From [`rookery_ports::cursor::seq_cursor`].
    FeedCursor => patterned(
        number_cursor(SEQ_KIND),
        Some(cursor::MAX_CURSOR_LEN),
        "A position in the caller's change feed: the `next_cursor` of a page, or a realtime frame's `cursor`.",
    )
);

named_schema!(
    /// From [`rookery_ports::cursor::version_cursor`].
    HistoryCursor => patterned(
        number_cursor(VERSION_KIND),
        Some(cursor::MAX_CURSOR_LEN),
        "A position in an item's history: the `next_cursor` of the previous page.",
    )
);

named_schema!(
    /// From [`rookery_ports::cursor::id_cursor`] and [`rookery_domain::ItemId`].
    ItemListCursor => patterned(
        {
            let accepts = |s: &str| rookery_domain::ItemId::parse(s).is_ok();
            let first = patterns::probe("", accepts);
            let example = first.first().map(|&b| char::from(b).to_string()).unwrap_or_default();
            let rest = patterns::probe(&example, accepts);
            cursor_pattern(ID_KIND, first, &rest, rookery_domain::ItemId::MAX_LEN - 1)
        },
        Some(cursor::MAX_CURSOR_LEN),
        "A position in a collection listing: the `next_cursor` of the previous page.",
    )
);

named_schema!(
    /// A search cursor: the search index's own, opaque.
    SearchCursor => string()
        .min_length(Some(1))
        .description(Some(
            "Where the previous page of the same search ended: its `next_cursor`, in the search index's own \
             format (`400` for anything else).",
        ))
);

named_schema!(
    /// From the use case's search limits.
    SearchText => string()
        .min_length(Some(1))
        .max_length(Some(Limits::default().max_query_chars))
        .description(Some(
            "Plain text: its words (runs of letters and digits) must all match, the last one also as a prefix. \
             Never a query language. Text without letters or digits matches nothing, and takes no `cursor`.",
        ))
);

named_schema!(
    /// From [`crate::http::extract::valid_key`].
    IdempotencyKey => patterned(
        format!("^{}{{1,{MAX_IDEMPOTENCY_KEY_LEN}}}$", class(&ascii_set(|b| b.is_ascii_graphic()))),
        Some(MAX_IDEMPOTENCY_KEY_LEN),
        "A key the client chose for this request: a repeat with the same key, method, path and body within \
         24 hours answers what the first one did and changes nothing.",
    )
);

named_schema!(
    /// From [`crate::http::request_id::is_sane`].
    RequestId => patterned(
        format!("^{}{{1,{MAX_REQUEST_ID_LEN}}}$", class(&ascii_set(|b| b.is_ascii_graphic()))),
        Some(MAX_REQUEST_ID_LEN),
        "A request id.",
    )
);

named_schema!(
    /// From [`crate::http::extract::etag`].
    EntityTag => patterned(
        format!("^\"[0-9]{{1,{}}}\"$", safe_u64_digits()),
        None,
        "An item's version as a strong entity tag: a quoted decimal, e.g. `\"3\"`.",
    )
);

named_schema!(
    /// From [`rookery_domain::media`].
    MediaContentType => patterned(
        {
            let exact = media::ALLOWED_EXACT_TYPES.iter().map(|t| patterns::ascii_case_insensitive(t));
            let kinds: Vec<String> = media::ALLOWED_TOP_LEVEL_TYPES
                .iter()
                .map(|t| patterns::ascii_case_insensitive(t))
                .collect();
            let subtype = class(&ascii_set(media::is_subtype_byte));
            let under = format!("(?:{})/{subtype}{{1,{}}}", kinds.join("|"), media::MAX_SUBTYPE_LEN);
            // The domain trims the declared type before it checks it.
            let space = class(&ascii_set(|b| char::from(b).is_whitespace()));
            format!("^{space}*(?:{}){space}*$", exact.chain([under]).collect::<Vec<_>>().join("|"))
        },
        None,
        "`image/*`, `video/*`, `audio/*` or `application/pdf`, in any case, without parameters \
         (surrounding white space is ignored).",
    )
);

named_schema!(
    /// From [`Limits::max_media_bytes`].
    MediaSize => integer(1, Limits::default().max_media_bytes, "The object's size in bytes.")
);

named_schema!(
    /// From [`rookery_domain::device::check_token`].
    DeviceToken => patterned(
        format!(
            "^{}{{1,{}}}$",
            class(&ascii_set(|b| b.is_ascii_graphic())),
            Limits::default().max_token_bytes
        ),
        Some(Limits::default().max_token_bytes),
        "The platform's device token, as the app received it.",
    )
);

named_schema!(
    /// From [`Limits::max_message_chars`].
    MessageText => string()
        .max_length(Some(Limits::default().max_message_chars))
        .description(Some("The message's text."))
);

named_schema!(
    /// A version named in a query or a body: versions start at 1 and are `u64`s.
    VersionNumber => integer(1, u64::MAX, "An item's version.")
);

named_schema!(
    /// The `data` member of items and messages: any object within the size and depth limits.
    Data => ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!(
            "The client's document: any JSON object, at most {} KiB serialized (`413` above) \
             and at most {} levels deep (`400` deeper).",
            Limits::default().max_data_bytes / 1024,
            Limits::default().max_depth
        )))
);

named_schema!(
    /// The body of `PATCH`: an RFC 7396 merge patch of `{"data", "visibility"}`.
    ItemPatch => ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "data",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
                .description(Some("Merged into `data` (RFC 7396); `null` empties it.")),
        )
        .property(
            "visibility",
            OneOfBuilder::new()
                .item(reference::<VisibilityDto>())
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .description(Some("The new visibility; `null` makes the item private.")),
        )
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new().schema_type(Type::Null).into(),
        )))
        .description(Some(
            "An RFC 7396 merge patch of `{\"data\", \"visibility\"}`. Other members may only be `null`, \
             which a merge patch reads as removing what is not there.",
        ))
);

named_schema!(
    /// From [`Code`].
    ProblemCode => string()
        .enum_values(Some(Code::ALL.iter().map(|code| code.as_str())))
        .description(Some("The stable, machine-readable error code."))
);
