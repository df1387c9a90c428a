//! Local development routes: issue tokens, publish the development key set, show recorded pushes, and
//! the OpenAPI document with these routes in it.
//!
//! They exist only when the server runs with the built-in development identity provider (`rookery serve`);
//! with a real identity provider (Cognito) the router is built without them and they are `404` like any
//! unknown path. They live here, in the local composition, because they are made of its adapters (the
//! recording push gateway); the generic HTTP module knows no adapter.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use rookery_adapters_memory::MemoryPushGateway;
use rookery_domain::{Timestamp, UserId};
use serde_json::Value;
use utoipa::OpenApi;

use crate::http::auth::{Authed, ErasureMarkers};
use crate::http::dto::{DevTokenBody, DevTokenDto, PushDto, PushesDto};
use crate::http::extract::{self, JsonBody};
use crate::http::openapi;
use crate::http::problem::Problem;

/// What the development routes need from an identity provider: signing tokens and publishing keys.
pub trait TokenIssuer: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// A signed token for `user` and when it expires.
    ///
    /// # Errors
    /// A message for the logs when signing fails.
    fn issue(&self, user: &UserId) -> Result<(String, Timestamp), String>;

    /// The public key set (a JWKS document).
    fn jwks(&self) -> Value;
}

/// `POST /v1/dev/tokens`: a token for any user id (development only).
#[utoipa::path(
    post, path = "/v1/dev/tokens", tag = "development",
    request_body = DevTokenBody,
    responses(
        (status = 200, description = "A token", body = DevTokenDto),
        (status = 400, response = crate::http::openapi::responses::BadRequest),
        (status = 410, response = crate::http::openapi::responses::AccountErased),
        (status = 413, response = crate::http::openapi::responses::PayloadTooLarge),
        (status = 415, response = crate::http::openapi::responses::UnsupportedMediaType),
        (status = 500, response = crate::http::openapi::responses::InternalError),
    )
)]
pub(crate) async fn issue_token<I: TokenIssuer>(
    State(issuing): State<Issuing<I>>,
    body: JsonBody<DevTokenBody>,
) -> Result<Json<DevTokenDto>, Problem> {
    let user = extract::user_id(body.value.user_id)?;
    // An erased user id cannot start a new account.
    if let Some(markers) = &issuing.markers
        && let Some(refusal) = markers.refusal(&user).await
    {
        return Err(refusal);
    }
    let (token, expires_at) = issuing.issuer.issue(&user).map_err(|cause| Problem::internal(&cause))?;
    Ok(Json(DevTokenDto {
        token,
        expires_at: expires_at.to_string(),
    }))
}

/// `GET /.well-known/jwks.json`: the development provider's public keys.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "development",
    responses((status = 200, description = "A JSON Web Key Set", body = Object)))]
pub(crate) async fn jwks<I: TokenIssuer>(State(issuing): State<Issuing<I>>) -> Json<Value> {
    Json(issuing.issuer.jwks())
}

/// `GET /v1/dev/pushes`: pushes the local gateway delivered to the caller's devices, oldest first.
#[utoipa::path(get, path = "/v1/dev/pushes", tag = "development",
    responses((status = 200, description = "Recorded pushes", body = PushesDto)),
    security(("bearer" = [])))]
pub(crate) async fn pushes(
    State(gateway): State<MemoryPushGateway>,
    Authed(caller): Authed,
) -> Result<Json<PushesDto>, Problem> {
    let sent = gateway
        .sent_to(&caller.user)
        .map_err(|failure| Problem::internal(&failure))?;
    let pushes = sent
        .into_iter()
        .map(|push| PushDto {
            message_id: push.message_id(),
            device_id: push.device_id.to_string(),
            platform: push.platform.into(),
            // The gateway only records JSON it produced; a payload that is not JSON is shown as text.
            payload: serde_json::from_str(&push.payload).unwrap_or(Value::String(push.payload)),
            at: push.at.to_string(),
        })
        .collect();
    Ok(Json(PushesDto { pushes }))
}

/// The token routes' state: the issuer, and the erasure markers that keep an erased id from a token.
#[derive(Debug, Clone)]
pub(crate) struct Issuing<I> {
    issuer: I,
    markers: Option<ErasureMarkers>,
}

/// The development routes that need no token.
pub fn public_routes<I: TokenIssuer>(issuer: I) -> Router {
    routes(Issuing { issuer, markers: None })
}

/// The development routes that need no token, refusing a token for a user `markers` knows as erased
/// (`410 account_erased`).
pub fn public_routes_refusing(issuer: impl TokenIssuer, markers: ErasureMarkers) -> Router {
    routes(Issuing {
        issuer,
        markers: Some(markers),
    })
}

fn routes<I: TokenIssuer>(issuing: Issuing<I>) -> Router {
    Router::new()
        .route("/v1/dev/tokens", post(issue_token::<I>))
        .route("/.well-known/jwks.json", get(jwks::<I>))
        .with_state(issuing)
}

/// The development routes behind the bearer-token gate.
pub fn authenticated_routes(gateway: MemoryPushGateway) -> Router {
    Router::new().route("/v1/dev/pushes", get(pushes)).with_state(gateway)
}

/// The development routes' part of the OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(paths(issue_token, jwks, pushes))]
struct DevApi;

/// The OpenAPI document of the local server: the API's, with the development routes merged in.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| openapi::document_with(DevApi::openapi()))
}

/// `GET /openapi.json`, with the development routes.
async fn serve_openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], document())
}

/// `GET /openapi.json` of the local server, which needs no token (instead of [`crate::http::openapi_routes`]).
pub fn openapi_routes() -> Router {
    Router::new().route("/openapi.json", get(serve_openapi))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn the_local_document_adds_the_development_routes_to_the_api() {
        let local: Value = serde_json::from_str(document()).expect("valid JSON");
        let generic: Value = serde_json::from_str(openapi::document()).expect("valid JSON");
        let paths = local["paths"].as_object().expect("paths");
        for path in ["/v1/dev/tokens", "/.well-known/jwks.json", "/v1/dev/pushes"] {
            assert!(paths.contains_key(path), "missing {path}");
            assert!(
                generic["paths"].get(path).is_none(),
                "{path} is not in the generic document"
            );
        }
        for path in generic["paths"].as_object().expect("paths").keys() {
            assert!(paths.contains_key(path), "the local document lacks {path}");
        }
        let pushes = &paths["/v1/dev/pushes"]["get"]["responses"];
        for status in ["200", "401", "429", "500"] {
            assert!(pushes.get(status).is_some(), "GET /v1/dev/pushes lacks {status}");
        }
        assert!(
            paths["/v1/dev/tokens"]["post"]["responses"].get("415").is_some(),
            "the common problems apply to the merged paths too"
        );
    }
}
