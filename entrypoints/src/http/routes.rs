//! The routes besides items: sync, search (Lambda function 3), messages and devices (function 4), media,
//! and the unauthenticated operations routes.
//!
//! As with items, each handler parses, calls one service method and maps the answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rookery_ports::service::SearchRequest;
use rookery_ports::{
    Clock, DeviceService, EventStore, IdSource, MediaService, MediaStore, MessageService, PushGateway, Scope,
    SearchIndex, SearchService, SyncService,
};

use super::auth::Authed;
use super::dto::{
    DeviceBody, DeviceDto, DevicesDto, FeedChangeDto, HealthDto, MediaBody, MediaCreatedDto, MediaDto,
    MessageAcceptedDto, MessageDto, MessagePageDto, ScopeDto, SearchHitDto, SearchResultsDto, SendMessageBody,
    SyncPageDto,
};
use super::extract::{self, ApiPath, IdempotencyKey, JsonBody, QueryParams};
use super::openapi::{params, responses as answers};
use super::problem::Problem;

/// `GET /v1/sync`: the caller's changes after a cursor, oldest first.
#[utoipa::path(
    get, path = "/v1/sync", tag = "sync",
    params(params::FeedPage),
    responses(
        (status = 200, description = "A page of changes", body = SyncPageDto),
        (status = 400, response = answers::BadRequest),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn sync<S: EventStore>(
    State(app): State<Arc<SyncService<S>>>,
    Authed(caller): Authed,
    query: QueryParams,
) -> Result<Json<SyncPageDto>, Problem> {
    let page = app.sync(&caller, query.get("since"), query.limit()?).await?;
    Ok(Json(SyncPageDto {
        changes: page.changes.into_iter().map(FeedChangeDto::from).collect(),
        next_cursor: page.next_cursor,
        has_more: page.has_more,
    }))
}

fn scope(raw: Option<&str>) -> Result<Scope, Problem> {
    match raw {
        None => Ok(ScopeDto::default().into()),
        Some(raw) => ScopeDto::parse(raw)
            .map(Scope::from)
            .ok_or_else(|| Problem::invalid("scope must be all, mine or public")),
    }
}

/// `GET /v1/search`: plain-text search over the caller's and public items.
#[utoipa::path(
    get, path = "/v1/search", tag = "search",
    params(params::SearchQuery),
    responses(
        (status = 200, description = "Matches, best first", body = SearchResultsDto),
        (status = 400, response = answers::BadRequest),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn search<X: SearchIndex>(
    State(app): State<Arc<SearchService<X>>>,
    Authed(caller): Authed,
    query: QueryParams,
) -> Result<Json<SearchResultsDto>, Problem> {
    let collection = query
        .get("collection")
        .map(|c| extract::collection(c.to_owned()))
        .transpose()?;
    let request = SearchRequest {
        q: query
            .get("q")
            .ok_or_else(|| Problem::invalid("q is required"))?
            .to_owned(),
        collection,
        scope: scope(query.get("scope"))?,
        limit: query.limit()?,
        cursor: query.get("cursor").map(str::to_owned),
    };
    let results = app.search(&caller, request).await?;
    Ok(Json(SearchResultsDto {
        found: results.found,
        hits: results.hits.into_iter().map(SearchHitDto::from).collect(),
        next_cursor: results.next_cursor,
    }))
}

/// `POST /v1/messages`: stored durably, pushed asynchronously.
#[utoipa::path(
    post, path = "/v1/messages", tag = "messages",
    params(params::Idempotency),
    request_body = SendMessageBody,
    responses(
        (status = 202, description = "Accepted: stored, to be pushed", body = MessageAcceptedDto),
        (status = 400, response = answers::BadRequest),
        (status = 415, response = answers::UnsupportedMediaType),
        (status = 422, response = answers::IdempotencyKeyReused),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn send_message<S: EventStore, C: Clock, I: IdSource>(
    State(app): State<Arc<MessageService<S, C, I>>>,
    Authed(caller): Authed,
    idem: IdempotencyKey,
    body: JsonBody<SendMessageBody>,
) -> Result<impl IntoResponse, Problem> {
    let idem = idem.with_body(&body.bytes);
    let SendMessageBody { to, text, data } = body.value;
    let to = extract::user_id(to)?;
    let accepted = app
        .send_message(&caller, to, text, data.unwrap_or_default(), idem.as_ref())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(MessageAcceptedDto::from(accepted))))
}

/// `GET /v1/messages`: messages the caller received, oldest first.
#[utoipa::path(
    get, path = "/v1/messages", tag = "messages",
    params(params::FeedPage),
    responses(
        (status = 200, description = "A page of messages", body = MessagePageDto),
        (status = 400, response = answers::BadRequest),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn messages<S: EventStore, C: Clock, I: IdSource>(
    State(app): State<Arc<MessageService<S, C, I>>>,
    Authed(caller): Authed,
    query: QueryParams,
) -> Result<Json<MessagePageDto>, Problem> {
    let page = app.messages(&caller, query.get("since"), query.limit()?).await?;
    Ok(Json(MessagePageDto {
        messages: page.entries.into_iter().map(MessageDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `PUT /v1/devices/{device_id}`: register or refresh a device.
#[utoipa::path(
    put, path = "/v1/devices/{device_id}", tag = "devices",
    params(params::RegisteredDevicePath, params::Idempotency),
    request_body = DeviceBody,
    responses(
        (status = 200, description = "Registered", body = DeviceDto),
        (status = 400, response = answers::BadRequest),
        (status = 415, response = answers::UnsupportedMediaType),
        (status = 422, response = answers::IdempotencyKeyReused),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn register_device<S: EventStore, C: Clock, I: IdSource, P: PushGateway>(
    State(app): State<Arc<DeviceService<S, C, I, P>>>,
    Authed(caller): Authed,
    ApiPath(device_id): ApiPath<String>,
    idem: IdempotencyKey,
    body: JsonBody<DeviceBody>,
) -> Result<Json<DeviceDto>, Problem> {
    let device_id = extract::device_id(device_id)?;
    let idem = idem.with_body(&body.bytes);
    let DeviceBody { platform, token } = body.value;
    let view = app
        .register_device(&caller, &device_id, platform.into(), &token, idem.as_ref())
        .await?;
    Ok(Json(DeviceDto::from(view)))
}

/// `GET /v1/devices`: the caller's devices.
#[utoipa::path(
    get, path = "/v1/devices", tag = "devices",
    responses((status = 200, description = "The devices", body = DevicesDto)),
    security(("bearer" = []))
)]
pub(crate) async fn devices<S: EventStore, C: Clock, I: IdSource, P: PushGateway>(
    State(app): State<Arc<DeviceService<S, C, I, P>>>,
    Authed(caller): Authed,
) -> Result<Json<DevicesDto>, Problem> {
    let devices = app.devices(&caller).await?;
    Ok(Json(DevicesDto {
        devices: devices.into_iter().map(DeviceDto::from).collect(),
    }))
}

/// `DELETE /v1/devices/{device_id}`: unregister.
#[utoipa::path(
    delete, path = "/v1/devices/{device_id}", tag = "devices",
    params(params::DevicePath, params::Idempotency),
    responses(
        (status = 204, description = "Unregistered"),
        (status = 400, response = answers::BadRequest),
        (status = 404, response = answers::NotFound),
        (status = 422, response = answers::IdempotencyKeyReused),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn remove_device<S: EventStore, C: Clock, I: IdSource, P: PushGateway>(
    State(app): State<Arc<DeviceService<S, C, I, P>>>,
    Authed(caller): Authed,
    ApiPath(device_id): ApiPath<String>,
    idem: IdempotencyKey,
) -> Result<StatusCode, Problem> {
    let device_id = extract::device_id(device_id)?;
    let idem = idem.with_body(b"");
    app.remove_device(&caller, &device_id, idem.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/media`: declare an object and get a signed upload.
#[utoipa::path(
    post, path = "/v1/media", tag = "media",
    params(params::Idempotency),
    request_body = MediaBody,
    responses(
        (status = 201, description = "Declared", body = MediaCreatedDto),
        (status = 400, response = answers::BadRequest),
        (status = 415, response = answers::UnsupportedMediaType),
        (status = 422, response = answers::IdempotencyKeyReused),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_media<S: EventStore, C: Clock, I: IdSource, M: MediaStore>(
    State(app): State<Arc<MediaService<S, C, I, M>>>,
    Authed(caller): Authed,
    idem: IdempotencyKey,
    body: JsonBody<MediaBody>,
) -> Result<impl IntoResponse, Problem> {
    let idem = idem.with_body(&body.bytes);
    let MediaBody { content_type, size } = body.value;
    let created = app.create_media(&caller, &content_type, size, idem.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(MediaCreatedDto::from(created))))
}

/// `GET /v1/media/{id}`: the owner's object, with a download URL once uploaded.
#[utoipa::path(
    get, path = "/v1/media/{id}", tag = "media",
    params(params::MediaPath),
    responses(
        (status = 200, description = "The object", body = MediaDto),
        (status = 400, response = answers::BadRequest),
        (status = 404, response = answers::NotFound),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_media<S: EventStore, C: Clock, I: IdSource, M: MediaStore>(
    State(app): State<Arc<MediaService<S, C, I, M>>>,
    Authed(caller): Authed,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MediaDto>, Problem> {
    let id = extract::media_id(id)?;
    let view = app.get_media(&caller, &id).await?;
    Ok(Json(MediaDto::from(view)))
}

/// `GET /healthz`.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The server is up", body = HealthDto)))]
pub(crate) async fn healthz() -> Json<HealthDto> {
    Json(HealthDto {
        status: "ok".to_owned(),
    })
}
