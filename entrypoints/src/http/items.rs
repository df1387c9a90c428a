//! Item routes (Lambda function 1): create, replace, patch, read, time travel, delete, list, history, restore.
//!
//! Each handler parses the request, calls one [`ItemService`] method and maps the outcome; the rules live in
//! the domain and the use case. Statuses derive only from the outcome (e.g. `created` → `201`), so an
//! idempotent replay answers exactly what the first request did.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header::{ETAG, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rookery_domain::{Item, Version};
use rookery_ports::{Clock, EventStore, IdSource, ItemService};
use serde_json::Value;

use super::auth::Authed;
use super::dto::{HistoryEventDto, HistoryPageDto, ItemDto, ItemPageDto, PutItemBody, RestoreBody};
use super::extract::{self, ApiPath, IdempotencyKey, JsonBody, Preconditions, QueryParams, etag, not_modified};
use super::openapi::{params, responses as answers, schemas};
use super::problem::Problem;

/// An item answer: the item as JSON with its `ETag`.
fn item_response(status: StatusCode, item: Item) -> Response {
    let tag = etag(item.version);
    let mut response = (status, Json(ItemDto::from(item))).into_response();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

/// `PUT /v1/items/{collection}/{id}`: create (`201`) or replace (`200`).
#[utoipa::path(
    put, path = "/v1/items/{collection}/{id}", tag = "items",
    params(params::ItemPath, params::CreateOrReplacePreconditions, params::Idempotency),
    request_body = PutItemBody,
    responses(
        (status = 201, description = "Created", body = ItemDto,
            headers(("ETag" = schemas::EntityTag, description = "The new version"),
                ("Location" = String, description = "The item's path"))),
        (status = 200, description = "Replaced", body = ItemDto,
            headers(("ETag" = schemas::EntityTag, description = "The new version"))),
        (status = 400, response = answers::BadRequest),
        (status = 409, response = answers::VersionConflict),
        (status = 415, response = answers::UnsupportedMediaType),
        (status = 422, response = answers::IdempotencyKeyReused),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn put_item<S: EventStore, C: Clock, I: IdSource>(
    State(app): State<Arc<ItemService<S, C, I>>>,
    Authed(caller): Authed,
    ApiPath((collection, id)): ApiPath<(String, String)>,
    Preconditions(precondition): Preconditions,
    idem: IdempotencyKey,
    body: JsonBody<PutItemBody>,
) -> Result<Response, Problem> {
    let key = extract::item_key(collection, id)?;
    let idem = idem.with_body(&body.bytes);
    let PutItemBody { data, visibility } = body.value;
    let written = app
        .put_item(
            &caller,
            &key,
            data,
            visibility.map(Into::into),
            precondition,
            idem.as_ref(),
        )
        .await?;
    if written.created {
        let location = format!("/v1/items/{}/{}", key.collection, key.id);
        let mut response = item_response(StatusCode::CREATED, written.item);
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(LOCATION, value);
        }
        Ok(response)
    } else {
        Ok(item_response(StatusCode::OK, written.item))
    }
}

/// `PATCH /v1/items/{collection}/{id}`: an RFC 7396 merge patch of `{"data", "visibility"}`.
#[utoipa::path(
    patch, path = "/v1/items/{collection}/{id}", tag = "items",
    params(params::ItemPath, params::IfMatch, params::Idempotency),
    request_body(content(
        (schemas::ItemPatch = "application/merge-patch+json"),
        (schemas::ItemPatch = "application/json"),
    )),
    responses(
        (status = 200, description = "Patched", body = ItemDto,
            headers(("ETag" = schemas::EntityTag, description = "The new version"))),
        (status = 400, response = answers::BadRequest),
        (status = 404, response = answers::NotFound),
        (status = 409, response = answers::VersionConflict),
        (status = 415, response = answers::UnsupportedMediaType),
        (status = 422, response = answers::IdempotencyKeyReused),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn patch_item<S: EventStore, C: Clock, I: IdSource>(
    State(app): State<Arc<ItemService<S, C, I>>>,
    Authed(caller): Authed,
    ApiPath((collection, id)): ApiPath<(String, String)>,
    Preconditions(precondition): Preconditions,
    idem: IdempotencyKey,
    body: JsonBody<Value>,
) -> Result<Response, Problem> {
    let key = extract::item_key(collection, id)?;
    let idem = idem.with_body(&body.bytes);
    let item = app
        .patch_item(&caller, &key, body.value, precondition, idem.as_ref())
        .await?;
    Ok(item_response(StatusCode::OK, item))
}

/// `GET /v1/items/{collection}/{id}`: the current state, or with `?version=N` the state then.
#[utoipa::path(
    get, path = "/v1/items/{collection}/{id}", tag = "items",
    params(params::ItemPath, params::VersionQuery, params::IfNoneMatchRead),
    responses(
        (status = 200, description = "The item", body = ItemDto,
            headers(("ETag" = schemas::EntityTag, description = "The version shown"))),
        (status = 304, response = answers::NotModified),
        (status = 400, response = answers::BadRequest),
        (status = 404, response = answers::NotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_item<S: EventStore, C: Clock, I: IdSource>(
    State(app): State<Arc<ItemService<S, C, I>>>,
    Authed(caller): Authed,
    ApiPath((collection, id)): ApiPath<(String, String)>,
    query: QueryParams,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let key = extract::item_key(collection, id)?;
    let version = query.number("version")?.map(Version);
    let item = app.get_item(&caller, &key, version).await?;
    if version.is_none() && not_modified(&headers, item.version) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&etag(item.version)) {
            response.headers_mut().insert(ETAG, value);
        }
        return Ok(response);
    }
    Ok(item_response(StatusCode::OK, item))
}

/// `DELETE /v1/items/{collection}/{id}`: `204`; the history stays.
#[utoipa::path(
    delete, path = "/v1/items/{collection}/{id}", tag = "items",
    params(params::ItemPath, params::IfMatch, params::Idempotency),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = answers::BadRequest),
        (status = 404, response = answers::NotFound),
        (status = 409, response = answers::VersionConflict),
        (status = 422, response = answers::IdempotencyKeyReused),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_item<S: EventStore, C: Clock, I: IdSource>(
    State(app): State<Arc<ItemService<S, C, I>>>,
    Authed(caller): Authed,
    ApiPath((collection, id)): ApiPath<(String, String)>,
    Preconditions(precondition): Preconditions,
    idem: IdempotencyKey,
) -> Result<StatusCode, Problem> {
    let key = extract::item_key(collection, id)?;
    let idem = idem.with_body(b"");
    app.delete_item(&caller, &key, precondition, idem.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/items/{collection}`: the caller's live items, by id.
#[utoipa::path(
    get, path = "/v1/items/{collection}", tag = "items",
    params(params::CollectionPath, params::ItemListPage),
    responses(
        (status = 200, description = "A page of items", body = ItemPageDto),
        (status = 400, response = answers::BadRequest),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_items<S: EventStore, C: Clock, I: IdSource>(
    State(app): State<Arc<ItemService<S, C, I>>>,
    Authed(caller): Authed,
    ApiPath(collection): ApiPath<String>,
    query: QueryParams,
) -> Result<Json<ItemPageDto>, Problem> {
    let collection = extract::collection(collection)?;
    let page = app
        .list_items(&caller, &collection, query.limit()?, query.get("cursor"))
        .await?;
    Ok(Json(ItemPageDto {
        items: page.entries.into_iter().map(ItemDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `GET /v1/items/{collection}/{id}/history`: every change, oldest first.
#[utoipa::path(
    get, path = "/v1/items/{collection}/{id}/history", tag = "items",
    params(params::ItemPath, params::HistoryPage),
    responses(
        (status = 200, description = "A page of the item's history", body = HistoryPageDto),
        (status = 400, response = answers::BadRequest),
        (status = 404, response = answers::NotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn history<S: EventStore, C: Clock, I: IdSource>(
    State(app): State<Arc<ItemService<S, C, I>>>,
    Authed(caller): Authed,
    ApiPath((collection, id)): ApiPath<(String, String)>,
    query: QueryParams,
) -> Result<Json<HistoryPageDto>, Problem> {
    let key = extract::item_key(collection, id)?;
    let page = app.history(&caller, &key, query.limit()?, query.get("cursor")).await?;
    Ok(Json(HistoryPageDto {
        events: page.entries.into_iter().map(HistoryEventDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `POST /v1/items/{collection}/{id}/restore`: the state of an earlier version, as a new version.
#[utoipa::path(
    post, path = "/v1/items/{collection}/{id}/restore", tag = "items",
    params(params::ItemPath, params::IfMatch, params::Idempotency),
    request_body = RestoreBody,
    responses(
        (status = 200, description = "Restored", body = ItemDto,
            headers(("ETag" = schemas::EntityTag, description = "The new version"))),
        (status = 400, response = answers::BadRequest),
        (status = 404, response = answers::NotFound),
        (status = 409, response = answers::VersionConflict),
        (status = 415, response = answers::UnsupportedMediaType),
        (status = 422, response = answers::IdempotencyKeyReused),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn restore_item<S: EventStore, C: Clock, I: IdSource>(
    State(app): State<Arc<ItemService<S, C, I>>>,
    Authed(caller): Authed,
    ApiPath((collection, id)): ApiPath<(String, String)>,
    Preconditions(precondition): Preconditions,
    idem: IdempotencyKey,
    body: JsonBody<RestoreBody>,
) -> Result<Response, Problem> {
    let key = extract::item_key(collection, id)?;
    let idem = idem.with_body(&body.bytes);
    let version = Version(body.value.version);
    let item = app
        .restore_item(&caller, &key, version, precondition, idem.as_ref())
        .await?;
    Ok(item_response(StatusCode::OK, item))
}

/// `GET /v1/users/{owner}/items/{collection}/{id}`: a public item of anyone, or the caller's own.
#[utoipa::path(
    get, path = "/v1/users/{owner}/items/{collection}/{id}", tag = "items",
    params(params::OwnerItemPath),
    responses(
        (status = 200, description = "The item", body = ItemDto,
            headers(("ETag" = schemas::EntityTag, description = "The version shown"))),
        (status = 400, response = answers::BadRequest),
        (status = 404, response = answers::NotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_public_item<S: EventStore, C: Clock, I: IdSource>(
    State(app): State<Arc<ItemService<S, C, I>>>,
    Authed(caller): Authed,
    ApiPath((owner, collection, id)): ApiPath<(String, String, String)>,
) -> Result<Response, Problem> {
    let owner = extract::user_id(owner)?;
    let key = extract::item_key(collection, id)?;
    let item = app.get_public_item(&caller, &owner, &key).await?;
    Ok(item_response(StatusCode::OK, item))
}
