//! Each Lambda function is composed with only the services its routes call (`lambda::compose`), so it
//! holds no port it does not use. These tests serve every route of each function, through the same
//! composition its binary uses, with the memory adapters in place of the AWS ones, and check that each
//! route is served (never a 5xx).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failed unwrap is a failed test.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use rookery_adapters_memory::{LocalMediaStore, MemoryEventStore, MemoryPushGateway, MemorySearchIndex};
use rookery_domain::UserId;
use rookery_entrypoints::http::openapi_routes;
use rookery_entrypoints::lambda::compose;
use rookery_entrypoints::{Api, ApiConfig};
use rookery_ports::{BatchHandler as _, EventStore as _};
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;
use common::{token, verifier};

/// A function's router: its authenticated routes behind the API's edge.
fn function(routes: Router) -> Router {
    Api::new(verifier(), ApiConfig::default())
        .merge_authenticated(routes)
        .merge_public(openapi_routes())
        .into_router()
}

/// Sends one request as `user` and returns its status and JSON body, failing on any 5xx.
async fn call(router: &Router, user: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header("authorization", format!("Bearer {}", token(user)));
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    assert!(
        !status.is_server_error(),
        "{method} {path} failed in this function: {status} {json}"
    );
    (status, json)
}

#[tokio::test]
async fn every_items_route_is_served_without_a_search_index() {
    let store = MemoryEventStore::in_memory();
    let media = LocalMediaStore::in_memory("http://127.0.0.1:9", b"function-ports-secret".to_vec());
    let router = function(compose::items_function(store, MemoryPushGateway::new(), media));
    let item = "/v1/items/notes/n1";
    let data = json!({"data": {"text": "packing list"}, "visibility": "public"});
    assert_eq!(
        call(&router, "u-ann", Method::PUT, item, Some(data)).await.0,
        StatusCode::CREATED
    );
    let patch = json!({"data": {"text": "packing list, updated"}});
    assert_eq!(
        call(&router, "u-ann", Method::PATCH, item, Some(patch)).await.0,
        StatusCode::OK
    );
    assert_eq!(call(&router, "u-ann", Method::GET, item, None).await.0, StatusCode::OK);
    assert_eq!(
        call(&router, "u-ann", Method::GET, "/v1/items/notes", None).await.0,
        StatusCode::OK
    );
    let history = call(&router, "u-ann", Method::GET, "/v1/items/notes/n1/history", None).await;
    assert_eq!(history.1["events"].as_array().map(Vec::len), Some(2), "{}", history.1);
    let public = call(&router, "u-bob", Method::GET, "/v1/users/u-ann/items/notes/n1", None).await;
    assert_eq!(public.0, StatusCode::OK);
    assert_eq!(
        call(&router, "u-ann", Method::DELETE, item, None).await.0,
        StatusCode::NO_CONTENT
    );
    let restore = json!({"version": 1});
    let restored = call(
        &router,
        "u-ann",
        Method::POST,
        "/v1/items/notes/n1/restore",
        Some(restore),
    )
    .await;
    assert_eq!(restored.0, StatusCode::OK);
    let sync = call(&router, "u-ann", Method::GET, "/v1/sync", None).await;
    assert_eq!(sync.1["changes"].as_array().map(Vec::len), Some(4), "{}", sync.1);

    let device = json!({"platform": "apns", "token": "a".repeat(64)});
    let registered = call(&router, "u-ann", Method::PUT, "/v1/devices/phone", Some(device)).await;
    assert_eq!(registered.0, StatusCode::OK, "{}", registered.1);
    assert_eq!(
        call(&router, "u-ann", Method::GET, "/v1/devices", None).await.0,
        StatusCode::OK
    );
    let removed = call(&router, "u-ann", Method::DELETE, "/v1/devices/phone", None).await;
    assert_eq!(removed.0, StatusCode::NO_CONTENT);

    let upload = json!({"content_type": "image/png", "size": 1234});
    let (status, created) = call(&router, "u-ann", Method::POST, "/v1/media", Some(upload)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let media_path = format!("/v1/media/{}", created["id"].as_str().unwrap());
    assert_eq!(
        call(&router, "u-ann", Method::GET, &media_path, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&router, "u-ann", Method::GET, "/openapi.json", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_search_route_is_served_by_the_index_alone() {
    let router = function(compose::search_function(MemorySearchIndex::new()));
    let (status, found) = call(&router, "u-ann", Method::GET, "/v1/search?q=packing", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["found"], 0, "{found}");
}

#[tokio::test]
async fn messages_are_sent_read_and_pushed_without_search_or_media() {
    let store = MemoryEventStore::in_memory();
    let push = MemoryPushGateway::new();
    let (routes, dispatcher) = compose::messages_function(store.clone(), push.clone());
    // The recipient's device, registered through function 1 (which shares the store).
    let items = function(compose::items_function(
        store.clone(),
        push.clone(),
        LocalMediaStore::in_memory("http://127.0.0.1:9", b"function-ports-secret".to_vec()),
    ));
    let device = json!({"platform": "fcm", "token": "fcm-token-of-bob"});
    call(&items, "u-bob", Method::PUT, "/v1/devices/tablet", Some(device)).await;

    let router = function(routes);
    let message = json!({"to": "u-bob", "text": "dinner at eight?"});
    let (status, accepted) = call(&router, "u-ann", Method::POST, "/v1/messages", Some(message)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let (_, inbox) = call(&router, "u-bob", Method::GET, "/v1/messages", None).await;
    assert_eq!(inbox["messages"].as_array().map(Vec::len), Some(1), "{inbox}");

    // The stream side of the same function delivers it.
    let (events, _) = store.changes_after(0, 100).unwrap();
    dispatcher.handle(&events).await.unwrap();
    let bob = UserId::parse("u-bob").unwrap();
    assert_eq!(push.sent_to(&bob).unwrap().len(), 1, "one push to the one device");
}

#[tokio::test]
async fn the_items_function_answers_an_erasure_with_202_then_410_on_every_route() {
    let store = MemoryEventStore::in_memory();
    let media = LocalMediaStore::in_memory("http://127.0.0.1:9", b"function-ports-secret".to_vec());
    // As the items binary composes it: the gate reads the marker the erasure request writes.
    let router = Api::new(verifier(), ApiConfig::default())
        .refusing_erased(store.clone())
        .merge_authenticated(compose::items_function(store.clone(), MemoryPushGateway::new(), media))
        .merge_public(openapi_routes())
        .into_router();
    let item = "/v1/items/notes/n1";
    let data = json!({"data": {"text": "diary"}});
    assert_eq!(
        call(&router, "u-ann", Method::PUT, item, Some(data)).await.0,
        StatusCode::CREATED
    );
    let (status, body) = call(&router, "u-ann", Method::DELETE, "/v1/me", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"status": "erasing"}));
    assert!(store.erased(&UserId::parse("u-ann").unwrap()).await.unwrap().is_some());
    for (method, path) in [
        (Method::GET, item),
        (Method::GET, "/v1/sync"),
        (Method::GET, "/v1/devices"),
        (Method::GET, "/v1/me/export"),
        (Method::DELETE, "/v1/me"),
    ] {
        let (status, body) = call(&router, "u-ann", method.clone(), path, None).await;
        assert_eq!(status, StatusCode::GONE, "{method} {path}: {body}");
        assert_eq!(body["code"], "account_erased", "{body}");
    }
    // Another user is untouched.
    assert_eq!(
        call(&router, "u-bob", Method::GET, "/v1/sync", None).await.0,
        StatusCode::OK
    );
}
