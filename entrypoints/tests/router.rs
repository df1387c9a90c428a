//! The router's edge, driven in-process (no socket): server failures, identity outages and deadlines
//! are problem documents that carry the request id and never the cause.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used)]

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, StatusCode};
use rookery_adapters_memory::{
    FaultTarget, Faults, Faulty, LocalMediaStore, MemoryEventStore, MemoryPushGateway, MemorySearchIndex, SystemClock,
    UlidIds,
};
use rookery_domain::{Timestamp, UserId};
use rookery_entrypoints::http::{Api, ApiConfig, RateLimit, Services, openapi_routes};
use rookery_ports::{AuthError, IdentityVerifier, Principal, ServiceConfig};
use serde_json::Value;
use tower::ServiceExt;

/// Accepts the token `ok:<user>`, reports the key set unavailable for `down`, refuses anything else.
#[derive(Debug, Clone)]
struct TestVerifier;

impl IdentityVerifier for TestVerifier {
    async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token == "down" {
            return Err(AuthError::Unavailable(
                "connection refused by jwks host 10.0.0.7".into(),
            ));
        }
        let user = token.strip_prefix("ok:").ok_or(AuthError::BadSignature)?;
        let user = UserId::parse(user).map_err(|_| AuthError::BadSubject)?;
        Ok(Principal {
            user,
            expires_at: Timestamp::from_millis(u64::MAX),
        })
    }
}

fn router(faults: &Faults, timeout: Duration) -> Router {
    let store = Faulty::new(MemoryEventStore::in_memory(), faults.clone());
    let services = Services::new(
        store,
        SystemClock::new(),
        UlidIds::new(),
        MemorySearchIndex::new(),
        MemoryPushGateway::new(),
        LocalMediaStore::in_memory("http://127.0.0.1:1", vec![1u8; 32]),
        ServiceConfig::default(),
    );
    let config = ApiConfig {
        rate_limit: RateLimit::off(),
        request_timeout: timeout,
        ..ApiConfig::default()
    };
    Api::new(TestVerifier, config)
        .merge_authenticated(services.routes())
        .merge_public(openapi_routes())
        .into_router()
}

async fn call(router: Router, request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = router.oneshot(request).await.expect("the router answers");
    let status = response.status();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    (
        status,
        request_id,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn get(path: &str, token: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .header("x-request-id", "req-123")
        .body(Body::empty())
        .expect("a request")
}

#[tokio::test]
async fn a_failing_store_is_a_503_with_the_request_id_and_no_cause() {
    let faults = Faults::new();
    faults.target(FaultTarget::Reads);
    faults.fail_share(1.0, 1);
    let (status, request_id, body) = call(
        router(&faults, Duration::from_secs(30)),
        get("/v1/items/notes/n1", "ok:alice"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(request_id.as_deref(), Some("req-123"));
    assert_eq!(body["code"], "internal");
    assert_eq!(body["request_id"], "req-123");
    assert!(!body.to_string().contains("injected"), "{body}");
}

#[tokio::test]
async fn an_unreachable_key_set_is_a_503_and_a_bad_token_a_401() {
    let faults = Faults::new();
    let (status, _, body) = call(router(&faults, Duration::from_secs(30)), get("/v1/devices", "down")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.to_string().contains("10.0.0.7"), "{body}");
    let (status, _, body) = call(router(&faults, Duration::from_secs(30)), get("/v1/devices", "forged")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthorized");
    let (status, _, _) = call(router(&faults, Duration::from_secs(30)), get("/v1/devices", "ok:alice")).await;
    assert_eq!(status, StatusCode::OK);
}

/// A request body that never arrives.
struct Stalled;

impl HttpBody for Stalled {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn a_request_past_its_deadline_is_a_503_problem() {
    let faults = Faults::new();
    let request = Request::put("/v1/items/notes/slow")
        .header("authorization", "Bearer ok:alice")
        .header("content-type", "application/json")
        .body(Body::new(Stalled))
        .expect("a request");
    let (status, request_id, body) = call(router(&faults, Duration::from_millis(50)), request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "internal");
    assert_eq!(body["request_id"].as_str(), request_id.as_deref());
}
