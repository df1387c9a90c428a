//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers' annotations and the DTOs.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use super::dto;
use super::problem::PROBLEM_JSON;
use super::{items, routes};

/// Adds the bearer-token scheme the secured operations name.
#[derive(Debug)]
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// Adds the error answers every operation can give (bad input, no token, rate limit, server failure),
/// so that each operation lists every status it may answer without repeating them in each annotation.
#[derive(Debug)]
struct CommonProblems;

fn problem_response(description: &str) -> RefOr<Response> {
    let content = Content::new(Some(Ref::from_schema_name("ProblemDto")));
    RefOr::T(
        Response::builder()
            .description(description)
            .content(PROBLEM_JSON, content)
            .build(),
    )
}

fn add_common_problems(operation: &mut Operation) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = operation.request_body.is_some();
    let mut common = vec![
        ("400", "Malformed request (`invalid_request`)"),
        ("500", "Server failure (`internal`), with `request_id`"),
        (
            "503",
            "Temporarily unavailable (`internal`), with `request_id` and `Retry-After`",
        ),
    ];
    if secured {
        common.push(("401", "Missing or invalid bearer token (`unauthorized`)"));
        common.push(("429", "Rate limited (`rate_limited`), with `Retry-After`"));
    }
    if has_body {
        common.push(("413", "Body or declared size over a limit (`payload_too_large`)"));
        common.push(("415", "Body is not JSON (`unsupported_media_type`)"));
        common.push((
            "422",
            "Idempotency-Key reused for another request (`idempotency_key_reused`)",
        ));
    }
    for (status, description) in common {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| problem_response(description));
    }
}

impl Modify for CommonProblems {
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
                add_common_problems(operation);
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
        routes::create_media, routes::get_media, routes::healthz,
    ),
    components(schemas(
        dto::ItemDto, dto::VisibilityDto, dto::PutItemBody, dto::RestoreBody, dto::ItemPageDto,
        dto::HistoryEventDto, dto::HistoryPageDto, dto::MessageDto, dto::MessageEventDto, dto::FeedChangeDto, dto::DeviceEventDto, dto::FeedDeviceDto, dto::MediaEventDto, dto::FeedMediaDto,
        dto::SyncPageDto, dto::SearchHitDto, dto::SearchResultsDto, dto::SendMessageBody, dto::MessageAcceptedDto,
        dto::MessagePageDto, dto::PlatformDto, dto::DeviceBody, dto::DeviceDto, dto::DevicesDto, dto::MediaBody,
        dto::UploadDto, dto::DownloadDto, dto::MediaCreatedDto, dto::MediaDto, dto::HealthDto, dto::DevTokenBody,
        dto::DevTokenDto, dto::PushDto, dto::PushesDto, dto::ProblemDto,
    )),
    modifiers(&BearerScheme, &CommonProblems),
    tags(
        (name = "items", description = "The user's unstructured data (Lambda function 1)"),
        (name = "sync", description = "The change feed across a user's devices"),
        (name = "search", description = "Full-text search (Lambda functions 2 and 3)"),
        (name = "messages", description = "Messages and push (Lambda function 4)"),
        (name = "devices", description = "Push devices"),
        (name = "media", description = "Signed media uploads and downloads"),
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
/// that serves routes of its own (the local server's development routes); the common problem answers
/// apply to the merged paths too.
pub fn document_with(extra: utoipa::openapi::OpenApi) -> String {
    let mut document = ApiDoc::openapi();
    document.merge(extra);
    CommonProblems.modify(&mut document);
    document.to_json().unwrap_or_else(|_| "{}".to_owned())
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_route() {
        let doc: Value = serde_json::from_str(document()).expect("valid JSON");
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().expect("paths");
        for path in [
            "/v1/items/{collection}/{id}",
            "/v1/items/{collection}",
            "/v1/items/{collection}/{id}/history",
            "/v1/items/{collection}/{id}/restore",
            "/v1/users/{owner}/items/{collection}/{id}",
            "/v1/sync",
            "/v1/search",
            "/v1/messages",
            "/v1/devices",
            "/v1/devices/{device_id}",
            "/v1/media",
            "/v1/media/{id}",
            "/healthz",
        ] {
            assert!(paths.contains_key(path), "missing {path}");
        }
        let item = &paths["/v1/items/{collection}/{id}"];
        for method in ["put", "patch", "get", "delete"] {
            assert!(item.get(method).is_some(), "missing {method}");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        let put = &item["put"]["responses"];
        for status in [
            "200", "201", "400", "401", "409", "413", "415", "422", "429", "500", "503",
        ] {
            assert!(put.get(status).is_some(), "PUT item lacks {status}");
        }
        assert!(
            paths["/healthz"]["get"]["responses"].get("401").is_none(),
            "healthz needs no token"
        );
    }
}
