//! The parameters operations share (path segments, pages, preconditions, idempotency keys), each
//! group defined once and named in the operations' `params(...)`.
//!
//! Every parameter's schema is a reference to a component of [`super::schemas`], so that the rule
//! it carries is stated once in the document too.

use rookery_domain::Limits;
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Required, Schema};

use super::schemas::{self, reference};
use crate::http::dto::ScopeDto;

fn parameter(name: &str, at: ParameterIn, required: bool, schema: RefOr<Schema>, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(at)
        .required(if required { Required::True } else { Required::False })
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

fn collection() -> Parameter {
    parameter(
        "collection",
        ParameterIn::Path,
        true,
        reference::<schemas::CollectionName>(),
        "The collection (`400` if malformed).",
    )
}

fn item_id() -> Parameter {
    parameter(
        "id",
        ParameterIn::Path,
        true,
        reference::<schemas::ItemId>(),
        "The item's id (`400` if malformed).",
    )
}

fn limit() -> Parameter {
    parameter(
        "limit",
        ParameterIn::Query,
        false,
        reference::<schemas::PageLimit>(),
        "The page size (`400` outside its range).",
    )
}

macro_rules! params {
    ($(#[$doc:meta])* $name:ident => [$($param:expr),* $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name;

        impl IntoParams for $name {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                vec![$($param),*]
            }
        }
    };
}

params!(
    /// `{collection}` alone.
    CollectionPath => [collection()]
);

params!(
    /// `{collection}/{id}`.
    ItemPath => [collection(), item_id()]
);

params!(
    /// `/v1/users/{owner}/items/{collection}/{id}`.
    OwnerItemPath => [
        parameter("owner", ParameterIn::Path, true, reference::<schemas::UserId>(), "The item's owner (`400` if malformed)."),
        collection(),
        item_id(),
    ]
);

params!(
    /// `{device_id}` of a registration.
    RegisteredDevicePath => [parameter(
        "device_id",
        ParameterIn::Path,
        true,
        reference::<schemas::DeviceId>(),
        &format!(
            "The app's id for the device (`400` if malformed, or if it is new and the user already has {} devices).",
            Limits::default().max_devices
        ),
    )]
);

params!(
    /// `{device_id}` of a device to remove.
    DevicePath => [parameter(
        "device_id",
        ParameterIn::Path,
        true,
        reference::<schemas::DeviceId>(),
        "The app's id for the device (`400` if malformed).",
    )]
);

params!(
    /// A media object's `{id}`.
    MediaPath => [parameter(
        "id",
        ParameterIn::Path,
        true,
        reference::<schemas::MediaId>(),
        "The object's id (`404` if malformed: it cannot name an object).",
    )]
);

params!(
    /// `?version=N`, time travel.
    VersionQuery => [parameter(
        "version",
        ParameterIn::Query,
        false,
        reference::<schemas::VersionNumber>(),
        "The item as it was at this version (`404` past the last one, or where that version was a delete).",
    )]
);

params!(
    /// A page of a collection listing.
    ItemListPage => [
        limit(),
        parameter("cursor", ParameterIn::Query, false, reference::<schemas::ItemListCursor>(), "Where the previous page ended."),
    ]
);

params!(
    /// A page of an item's history.
    HistoryPage => [
        limit(),
        parameter("cursor", ParameterIn::Query, false, reference::<schemas::HistoryCursor>(), "Where the previous page ended."),
    ]
);

params!(
    /// A page of the change feed or of the inbox, which share positions.
    FeedPage => [
        parameter(
            "since",
            ParameterIn::Query,
            false,
            reference::<schemas::FeedCursor>(),
            "Where the previous page ended; omitted, the beginning.",
        ),
        limit(),
    ]
);

params!(
    /// `GET /v1/search`.
    SearchQuery => [
        parameter("q", ParameterIn::Query, true, reference::<schemas::SearchText>(), "What to look for."),
        parameter(
            "collection",
            ParameterIn::Query,
            false,
            reference::<schemas::CollectionName>(),
            "Only items of this collection.",
        ),
        parameter("scope", ParameterIn::Query, false, reference::<ScopeDto>(), "Whose items."),
        limit(),
        parameter("cursor", ParameterIn::Query, false, reference::<schemas::SearchCursor>(), "Where the previous page ended."),
    ]
);

params!(
    /// `Idempotency-Key`, on any write.
    Idempotency => [parameter(
        "Idempotency-Key",
        ParameterIn::Header,
        false,
        reference::<schemas::IdempotencyKey>(),
        "Makes the write safe to repeat (`400` if malformed or sent twice; `422` if reused for another request).",
    )]
);

params!(
    /// `If-Match`, on writes to an existing item.
    IfMatch => [parameter(
        "If-Match",
        ParameterIn::Header,
        false,
        reference::<schemas::EntityTag>(),
        "The version the item must be at (`409` if it is not; `400` if malformed, a list, weak or `*`).",
    )]
);

params!(
    /// `If-Match` or `If-None-Match: *`, on `PUT`.
    CreateOrReplacePreconditions => [
        parameter(
            "If-Match",
            ParameterIn::Header,
            false,
            reference::<schemas::EntityTag>(),
            "Replace only: the version the item must be at (`409` if it is not; `400` if malformed, a list, weak or `*`).",
        ),
        parameter(
            "If-None-Match",
            ParameterIn::Header,
            false,
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["*"])).into(),
            "Create only: `*` (`409` if the item is live; `400` for any other value, or with `If-Match`).",
        ),
    ]
);

params!(
    /// `If-None-Match` on `GET`: entity tags the client holds.
    IfNoneMatchRead => [parameter(
        "If-None-Match",
        ParameterIn::Header,
        false,
        ObjectBuilder::new().schema_type(Type::String).into(),
        "Entity tags the client holds, compared weakly; `304` when one names the current version, or `*`.",
    )]
);
