//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers' annotations, the DTOs,
//! and the constants and validating constructors the server checks requests with.
//!
//! Every rule a request must follow (id patterns, ranges, cursor formats, header values, body members,
//! limits) is in the document, built from the code that enforces it ([`schemas`], [`params`]); every
//! answer an operation can give is listed, the shared ones as response components ([`responses`]).
//! A request the document allows is one the server accepts, unless the state forbids it (a missing
//! item, a failed precondition), and a request it forbids is refused with a `4xx`.

pub(crate) mod params;
mod patterns;
pub mod responses;
pub(crate) mod schemas;

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use utoipa::openapi::link::Link;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Response};
use utoipa::{Modify, OpenApi, ToResponse};

use super::{account, dto, items, routes};

/// Adds the bearer-token scheme the secured operations name.
#[derive(Debug)]
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".to_owned());
        http.description = Some("A JWT from the identity provider; the caller is its `sub`.".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// Adds what the edge of the API answers on its own, outside any handler.
///
/// Every secured operation sits behind the same layers (`super::Api::into_router`): the token gate
/// (`401`, and `503` when the identity provider's keys cannot be fetched), the rate limiter (`429`),
/// the body limit (`413`) and the deadline (`503`); and any handler may fail (`500`). Every response
/// carries `X-Request-Id` (`super::request_id::edge`).
#[derive(Debug)]
struct Edge;

fn response_ref<'r, R: ToResponse<'r>>() -> (&'r str, RefOr<Response>) {
    let (name, _) = R::response();
    (name, RefOr::Ref(Ref::from_response_name(name)))
}

fn add_edge_responses(operation: &mut Operation) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    if !secured {
        return;
    }
    let edge = [
        ("401", response_ref::<responses::Unauthorized>()),
        ("410", response_ref::<responses::AccountErased>()),
        ("413", response_ref::<responses::PayloadTooLarge>()),
        ("429", response_ref::<responses::RateLimited>()),
        ("500", response_ref::<responses::InternalError>()),
        ("503", response_ref::<responses::Unavailable>()),
    ];
    for (status, (_, response)) in edge {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert(response);
    }
}

fn add_request_id(response: &mut RefOr<Response>) {
    if let RefOr::T(response) = response {
        response.headers.entry("X-Request-Id".to_owned()).or_insert_with(|| {
            RefOr::T(responses::header(
                schemas::reference::<schemas::RequestId>(),
                "The request's id: the client's `X-Request-Id` when it was 1 to 128 visible ASCII characters, \
                 else a generated one.",
                true,
            ))
        });
    }
}

impl Modify for Edge {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_edge_responses(operation);
                operation.responses.responses.values_mut().for_each(add_request_id);
            }
        }
        if let Some(components) = openapi.components.as_mut() {
            components.responses.values_mut().for_each(add_request_id);
        }
    }
}

/// Adds links from the answers that name a resource to the operations on it, so that a client (or a
/// stateful test) can follow them: an item written to its reads and writes (with its `ETag` as
/// `If-Match`), a declared media object to its read, a registered device to its removal, and a page of
/// the change feed to the next one and to the item its first change is about.
#[derive(Debug)]
struct Links;

/// A link: from an operation's answers with these statuses to another operation, with its parameters
/// and body members as runtime expressions.
struct LinkSpec {
    from: &'static str,
    statuses: &'static [&'static str],
    name: &'static str,
    to: &'static str,
    parameters: &'static [(&'static str, &'static str)],
    body: &'static [(&'static str, &'static str)],
}

const WRITTEN: &[&str] = &["200", "201"];
const ITEM: &[(&str, &str)] = &[("collection", "$request.path.collection"), ("id", "$request.path.id")];
const ITEM_AT_TAG: &[(&str, &str)] = &[
    ("collection", "$request.path.collection"),
    ("id", "$request.path.id"),
    ("header.If-Match", "$response.header.ETag"),
];

/// The item the first change of a feed page is about (absent when the page is empty or starts with
/// a message).
const FIRST_CHANGE: &[(&str, &str)] = &[
    ("collection", "$response.body#/changes/0/collection"),
    ("id", "$response.body#/changes/0/id"),
];

const fn link(
    from: &'static str,
    statuses: &'static [&'static str],
    name: &'static str,
    to: &'static str,
    parameters: &'static [(&'static str, &'static str)],
) -> LinkSpec {
    LinkSpec {
        from,
        statuses,
        name,
        to,
        parameters,
        body: &[],
    }
}

const LINKS: &[LinkSpec] = &[
    link("put_item", WRITTEN, "GetItem", "get_item", ITEM),
    link("put_item", WRITTEN, "PatchItem", "patch_item", ITEM_AT_TAG),
    link("put_item", WRITTEN, "DeleteItem", "delete_item", ITEM_AT_TAG),
    link("put_item", WRITTEN, "ItemHistory", "history", ITEM),
    link(
        "put_item",
        WRITTEN,
        "ListItems",
        "list_items",
        &[("collection", "$request.path.collection")],
    ),
    LinkSpec {
        body: &[("version", "$response.body#/version")],
        ..link("put_item", WRITTEN, "RestoreItem", "restore_item", ITEM)
    },
    link(
        "put_item",
        WRITTEN,
        "GetPublicItem",
        "get_public_item",
        &[
            ("owner", "$response.body#/owner"),
            ("collection", "$request.path.collection"),
            ("id", "$request.path.id"),
        ],
    ),
    link("patch_item", &["200"], "GetItem", "get_item", ITEM),
    LinkSpec {
        body: &[("version", "$response.body#/version")],
        ..link("patch_item", &["200"], "RestoreItem", "restore_item", ITEM)
    },
    link("restore_item", &["200"], "GetItem", "get_item", ITEM),
    link(
        "create_media",
        &["201"],
        "GetMedia",
        "get_media",
        &[("id", "$response.body#/id")],
    ),
    link(
        "register_device",
        &["200"],
        "RemoveDevice",
        "remove_device",
        &[("device_id", "$request.path.device_id")],
    ),
    link(
        "sync",
        &["200"],
        "NextPage",
        "sync",
        &[("since", "$response.body#/next_cursor")],
    ),
    link("sync", &["200"], "GetChangedItem", "get_item", FIRST_CHANGE),
    link("sync", &["200"], "WriteChangedItem", "put_item", FIRST_CHANGE),
];

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let Some(id) = operation.operation_id.clone() else {
                    continue;
                };
                for spec in LINKS.iter().filter(|spec| spec.from == id) {
                    let body = (!spec.body.is_empty()).then(|| {
                        let members = spec.body.iter().map(|(name, value)| ((*name).to_owned(), json!(value)));
                        Value::Object(members.collect())
                    });
                    let link = spec
                        .parameters
                        .iter()
                        .fold(Link::builder().operation_id(spec.to), |link, (name, value)| {
                            link.parameter(*name, *value)
                        })
                        .request_body(body)
                        .build();
                    for status in spec.statuses {
                        if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) {
                            response.links.insert(spec.name.to_owned(), RefOr::T(link.clone()));
                        }
                    }
                }
            }
        }
    }
}

/// The API's OpenAPI description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Rookery HTTP API", version = "1", description = "Event-sourced mobile backend: items, sync, search, messages and push, media."),
    paths(
        items::put_item, items::patch_item, items::get_item, items::delete_item, items::list_items,
        items::history, items::restore_item, items::get_public_item,
        routes::sync, routes::search, routes::send_message, routes::messages,
        routes::register_device, routes::devices, routes::remove_device,
        routes::create_media, routes::get_media, account::export, account::erase, routes::healthz,
        serve,
    ),
    components(
        schemas(
            dto::ItemDto, dto::VisibilityDto, dto::PutItemBody, dto::RestoreBody, dto::ItemPageDto,
            dto::HistoryEventDto, dto::HistoryPageDto, dto::MessageDto, dto::MessageEventDto, dto::FeedChangeDto,
            dto::DeviceEventDto, dto::FeedDeviceDto, dto::MediaEventDto, dto::FeedMediaDto,
            dto::SyncPageDto, dto::SearchHitDto, dto::SearchResultsDto, dto::SendMessageBody, dto::MessageAcceptedDto,
            dto::MessagePageDto, dto::PlatformDto, dto::DeviceBody, dto::DeviceDto, dto::DevicesDto, dto::MediaBody,
            dto::UploadDto, dto::DownloadDto, dto::MediaCreatedDto, dto::MediaDto, dto::HealthDto, dto::DevTokenBody,
            dto::DevTokenDto, dto::PushDto, dto::PushesDto, dto::ProblemDto, dto::ScopeDto, dto::ErasingDto,
            schemas::CollectionName, schemas::ItemId, schemas::UserId, schemas::DeviceId, schemas::MediaId,
            schemas::PageLimit, schemas::FeedCursor, schemas::HistoryCursor, schemas::ItemListCursor,
            schemas::SearchCursor, schemas::SearchText, schemas::IdempotencyKey, schemas::EntityTag,
            schemas::MediaContentType, schemas::MediaSize, schemas::DeviceToken, schemas::MessageText,
            schemas::VersionNumber, schemas::Data, schemas::ItemPatch, schemas::ProblemCode, schemas::RequestId,
        ),
        responses(
            responses::NotModified, responses::BadRequest, responses::Unauthorized, responses::NotFound,
            responses::VersionConflict, responses::PayloadTooLarge, responses::UnsupportedMediaType,
            responses::IdempotencyKeyReused, responses::AccountErased, responses::RateLimited, responses::InternalError,
            responses::Unavailable,
        ),
    ),
    modifiers(&BearerScheme, &Edge, &Links),
    tags(
        (name = "items", description = "The user's unstructured data (Lambda function 1)"),
        (name = "sync", description = "The change feed across a user's devices"),
        (name = "search", description = "Full-text search (Lambda functions 2 and 3)"),
        (name = "messages", description = "Messages and push (Lambda function 4)"),
        (name = "devices", description = "Push devices"),
        (name = "media", description = "Signed media uploads and downloads"),
        (name = "account", description = "The caller's account: export and erasure"),
        (name = "development", description = "Only with the built-in development identity provider"),
        (name = "operations", description = "Health and this document"),
    )
)]
pub struct ApiDoc;

/// The document as JSON text, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".to_owned()))
}

/// The document with the paths (and components) of `extra` merged in, as JSON text, for a deployment
/// that serves routes of its own (the local server's development routes); the edge's answers and the
/// links apply to the merged paths too.
pub fn document_with(extra: utoipa::openapi::OpenApi) -> String {
    let mut document = ApiDoc::openapi();
    document.merge(extra);
    Edge.modify(&mut document);
    Links.modify(&mut document);
    document.to_json().unwrap_or_else(|_| "{}".to_owned())
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)))]
pub(crate) async fn serve() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests;
