//! API Gateway proxy events on Lambda: the same axum router as `rookery serve`, behind `lambda_http`.
//!
//! Functions 1, 3 and 4 answer HTTP requests that API Gateway delivers as proxy events, REST (v1) or
//! HTTP API (v2). `lambda_http` turns an event into an `http::Request` and the router's response back
//! into the proxy response; this module adds the three things a function needs on top:
//! the path the router sees is the API's own path (never prefixed with a stage name), a request that
//! belongs to another function is refused with `404` (see `docs/decisions/0004-lambda-route-split.md`),
//! and API Gateway's request id becomes the request id when the client sent none, so the function's
//! logs and API Gateway's access logs correlate.
//!
//! The router verifies the bearer token itself. A Cognito authorizer's claims in the request context
//! are not read: they only show that API Gateway already checked the token, and the function must not
//! trust its own deployment to have an authorizer.

use std::convert::Infallible;

use axum::Router;
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use lambda_http::request::{LambdaRequest, RequestContext};
use lambda_http::{Adapter, LambdaEvent, RequestExt, Service};
use serde_json::Value;
use tower::ServiceExt;

use crate::http::Problem;
use crate::http::request_id::{X_REQUEST_ID, generate, is_sane};

/// Which of the Lambda functions serves the request: each owns a set of routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Function 1: items, users' public items, sync, devices, media, and the operations routes.
    Items,
    /// Function 3: search.
    Search,
    /// Function 4: messages (its stream side is in [`crate::lambda::stream`]).
    Messages,
}

/// Path prefixes each function owns; a prefix matches itself and anything below it.
const ITEMS_ROUTES: &[&str] = &[
    "/v1/items",
    "/v1/users",
    "/v1/sync",
    "/v1/devices",
    "/v1/media",
    "/v1/me",
    "/openapi.json",
];
const SEARCH_ROUTES: &[&str] = &["/v1/search"];
const MESSAGES_ROUTES: &[&str] = &["/v1/messages"];

impl Function {
    /// The path prefixes this function serves (besides `/healthz`, which every function answers).
    pub fn routes(self) -> &'static [&'static str] {
        match self {
            Function::Items => ITEMS_ROUTES,
            Function::Search => SEARCH_ROUTES,
            Function::Messages => MESSAGES_ROUTES,
        }
    }

    /// True when `path` is one of this function's routes.
    pub fn serves(self, path: &str) -> bool {
        // Every function answers the health check, so each can be probed on its own.
        path == "/healthz"
            || self.routes().iter().any(|prefix| {
                path.strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }
}

/// An API Gateway stage name that prefixes no path: HTTP APIs' default stage.
const DEFAULT_STAGE: &str = "$default";

/// The API's own path of a converted proxy request, without any stage prefix.
///
/// REST (v1) events carry it as `path`. HTTP API (v2) events carry the URL's path as `rawPath`, which
/// starts with the stage name unless the stage is `$default`. `lambda_http` puts the stage in front of
/// either (unless `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is set), which the router must not see.
fn api_path(request: &lambda_http::Request) -> Option<String> {
    let raw = request.raw_http_path();
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV1(_) => Some(raw.to_owned()),
        RequestContext::ApiGatewayV2(context) => {
            let stage = context
                .stage
                .as_deref()
                .filter(|s| *s != DEFAULT_STAGE && !s.is_empty());
            let path = stage
                .and_then(|stage| raw.strip_prefix('/')?.strip_prefix(stage))
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                .unwrap_or(raw);
            Some(if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            })
        }
        _ => None,
    }
}

/// API Gateway's id of the request, if the event carries one.
fn gateway_request_id(request: &lambda_http::Request) -> Option<String> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV1(context) => context.request_id.clone(),
        RequestContext::ApiGatewayV2(context) => context.request_id.clone(),
        _ => None,
    }
}

/// Rewrites the request's URI to the API's own path, keeping the query.
fn with_api_path(mut request: lambda_http::Request) -> lambda_http::Request {
    let Some(path) = api_path(&request) else {
        return request;
    };
    if path == request.uri().path() {
        return request;
    }
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    // A path that does not parse as a URI stays as it was; the router then answers `404`.
    if let Ok(uri) = path_and_query.parse::<Uri>() {
        *request.uri_mut() = uri;
    }
    request
}

/// A `404` problem document for a route another function serves, with the request id the router would give.
fn not_served(request: &lambda_http::Request) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map_or_else(generate, str::to_owned);
    tracing::warn!(path = %request.uri().path(), request_id = %id, "route belongs to another function; check the API's routes");
    let mut response = Problem::not_found().into_response();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// Serves one function's routes of the HTTP API from API Gateway proxy events.
#[derive(Debug, Clone)]
pub struct ApiHandler {
    router: Router,
    function: Function,
}

impl ApiHandler {
    /// A handler answering `function`'s routes with `router` (the contract's router, [`crate::http::router`]).
    pub fn new(router: Router, function: Function) -> Self {
        Self { router, function }
    }

    /// Which function this handler is.
    pub fn function(&self) -> Function {
        self.function
    }

    /// Answers one converted request: the router for this function's routes, `404` for the others.
    pub async fn serve(&self, request: lambda_http::Request) -> Response {
        let mut request = with_api_path(request);
        if !request.headers().contains_key(&X_REQUEST_ID)
            && let Some(id) = gateway_request_id(&request).filter(|id| is_sane(id))
            && let Ok(value) = HeaderValue::from_str(&id)
        {
            request.headers_mut().insert(X_REQUEST_ID.clone(), value);
        }
        if !self.function.serves(request.uri().path()) {
            return not_served(&request);
        }
        match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Answers one proxy event with the proxy response API Gateway expects (v1 or v2, as the event was).
    ///
    /// # Errors
    /// Only if the response cannot be serialized, which `lambda_http`'s response types never cause.
    pub async fn handle(&self, event: LambdaEvent<LambdaRequest>) -> Result<Value, serde_json::Error> {
        let this = self.clone();
        let service = tower::service_fn(move |request: lambda_http::Request| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.serve(request).await) }
        });
        // `Adapter` is the conversion `lambda_http::run` itself applies: event to request, and the
        // router's response to the proxy response of the event's origin.
        let mut adapter = Adapter::from(service);
        let response = match adapter.call(event).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        serde_json::to_value(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_function_serves_its_own_routes_and_the_health_check() {
        assert!(Function::Items.serves("/v1/items/notes/n1/history"));
        assert!(Function::Items.serves("/v1/items"));
        assert!(Function::Items.serves("/v1/devices"));
        assert!(Function::Items.serves("/openapi.json"));
        assert!(Function::Search.serves("/v1/search"));
        assert!(Function::Messages.serves("/v1/messages"));
        for function in [Function::Items, Function::Search, Function::Messages] {
            assert!(function.serves("/healthz"), "{function:?}");
        }
    }

    #[test]
    fn a_prefix_matches_whole_segments_only() {
        assert!(!Function::Items.serves("/v1/itemsx"));
        assert!(!Function::Search.serves("/v1/search2"));
        assert!(!Function::Search.serves("/v1/items/notes"));
        assert!(!Function::Messages.serves("/v1/devices/phone"));
        assert!(!Function::Items.serves("/v1/messages"));
        assert!(!Function::Items.serves("/"));
    }
}
