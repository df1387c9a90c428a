//! Bearer-token authentication and per-user rate limiting, as one middleware in front of `/v1/*`.
//!
//! The middleware verifies the token through the [`IdentityVerifier`] port, takes a token from the
//! user's bucket, and leaves the [`Caller`] in the request's extensions; handlers read it with
//! [`Authed`]. A caller whose account was erased is answered `410 account_erased` here, on every route,
//! when the gate knows the store's [`ErasureMarkers`]. The token comes from the `Authorization: Bearer` header, or, for a WebSocket handshake
//! only, from the `access_token` query parameter ([`request_token`]). Doing this in a layer (rather than in each handler's extractors) makes sure an
//! unauthenticated request is refused before its body is even looked at.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::header::{AUTHORIZATION, UPGRADE};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use rookery_domain::{Timestamp, UserId};
use rookery_ports::{AuthError, Caller, EventStore, Failure, IdentityVerifier};

use super::problem::{Problem, auth_problem};
use super::rate_limit::RateLimiter;
use super::request_id::{AnsweredUser, RequestId};

/// What guards the authenticated routes: the token verifier, the rate limiter, and the erasure markers.
#[derive(Debug)]
pub struct Gate<V> {
    verifier: V,
    limiter: RateLimiter,
    markers: Option<ErasureMarkers>,
}

impl<V: IdentityVerifier> Gate<V> {
    /// A gate verifying with `verifier` and limiting with `limiter`.
    pub fn new(verifier: V, limiter: RateLimiter) -> Arc<Self> {
        Self::with_markers(verifier, limiter, None)
    }

    /// A gate that also answers `410 account_erased` for a user `markers` knows as erased.
    pub fn with_markers(verifier: V, limiter: RateLimiter, markers: Option<ErasureMarkers>) -> Arc<Self> {
        Arc::new(Self {
            verifier,
            limiter,
            markers,
        })
    }
}

type MarkerLookup = dyn Fn(UserId) -> BoxFuture<'static, Result<Option<Timestamp>, Failure>> + Send + Sync;

/// The event store's erasure markers, as the gate (and the development token route) asks them on every
/// request. A trait object, so that the gate stays generic over its verifier only and every deployment
/// builds it the same way whatever its store.
#[derive(Clone)]
pub struct ErasureMarkers(Arc<MarkerLookup>);

impl std::fmt::Debug for ErasureMarkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasureMarkers").finish_non_exhaustive()
    }
}

impl ErasureMarkers {
    /// The markers of `store`.
    pub fn of<S: EventStore>(store: S) -> Self {
        Self(Arc::new(move |user: UserId| {
            let store = store.clone();
            Box::pin(async move { store.erased(&user).await.map_err(Failure::from) })
        }))
    }

    /// When `user`'s account was erased, `None` if it never was.
    ///
    /// # Errors
    /// The store's failure.
    pub async fn erased(&self, user: &UserId) -> Result<Option<Timestamp>, Failure> {
        (self.0)(user.clone()).await
    }

    /// The answer for a request made for `user`: `Some(410)` when erased, `Some(503)` when the store
    /// cannot tell, `None` to go on.
    pub async fn refusal(&self, user: &UserId) -> Option<Problem> {
        match self.erased(user).await {
            Ok(None) => None,
            Ok(Some(_)) => Some(Problem::account_erased()),
            Err(failure) => Some(Problem::unavailable(&failure)),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
///
/// # Errors
/// [`AuthError::Missing`] when there is no bearer token at all (no header, or another scheme),
/// [`AuthError::Malformed`] when the header is there but unusable.
pub fn bearer_token(parts: &Parts) -> Result<&str, AuthError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("not ASCII".into()))?
        .trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed("empty bearer token".into()));
    }
    Ok(token)
}

/// The token of a request: its `Authorization: Bearer` header, or, for a WebSocket handshake without
/// that header, its `access_token` query parameter (RFC 6750 §2.3), because browsers cannot set headers
/// on a WebSocket. Ordinary requests never read a token from the URL, which ends up in logs and caches.
///
/// # Errors
/// As [`bearer_token`]; a query with more than one `access_token`, or an empty one, is
/// [`AuthError::Malformed`].
pub fn request_token(parts: &Parts) -> Result<Cow<'_, str>, AuthError> {
    match bearer_token(parts) {
        Err(AuthError::Missing) if is_websocket_handshake(parts) => query_token(parts).map(Cow::Owned),
        other => other.map(Cow::Borrowed),
    }
}

fn is_websocket_handshake(parts: &Parts) -> bool {
    parts
        .headers
        .get(UPGRADE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// The `access_token` query parameter.
fn query_token(parts: &Parts) -> Result<String, AuthError> {
    let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri) else {
        return Err(AuthError::Malformed("unreadable query".into()));
    };
    let mut tokens = pairs.into_iter().filter(|(name, _)| name == "access_token");
    match (tokens.next(), tokens.next()) {
        (None, _) => Err(AuthError::Missing),
        (Some(_), Some(_)) => Err(AuthError::Malformed("more than one access_token".into())),
        (Some((_, token)), None) if token.trim().is_empty() => Err(AuthError::Malformed("empty access_token".into())),
        (Some((_, token)), None) => Ok(token.trim().to_owned()),
    }
}

/// The middleware: verify, rate-limit, and record the caller.
pub async fn authenticate<V: IdentityVerifier>(
    State(gate): State<Arc<Gate<V>>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let verified = match request_token(&parts) {
        Ok(token) => gate.verifier.verify(&token).await,
        Err(error) => Err(error),
    };
    let principal = match verified {
        Ok(principal) => principal,
        Err(error) => return auth_problem(&error).into_response(),
    };
    if let Err(wait) = gate.limiter.check(&principal.user) {
        tracing::debug!(user = %principal.user, "rate limited");
        return Problem::rate_limited(wait.as_secs_f64().ceil() as u64).into_response();
    }
    if let Some(markers) = &gate.markers
        && let Some(refusal) = markers.refusal(&principal.user).await
    {
        return refusal.into_response();
    }
    let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone());
    tracing::Span::current().record("user", principal.user.as_str());
    let user = AnsweredUser(principal.user.as_str().to_owned());
    parts.extensions.insert(Caller {
        user: principal.user,
        request_id,
    });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    response.extensions_mut().insert(user);
    response
}

/// The verified caller of an authenticated route.
#[derive(Debug, Clone)]
pub struct Authed(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Authed {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        // Only reachable without the caller when a route was wired without the gate: refuse, never serve.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Authed)
            .ok_or_else(|| Problem::unauthorized(false, "a bearer token is required"))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request as HttpRequest;

    use super::*;

    fn parts(header: Option<&str>) -> Parts {
        let mut builder = HttpRequest::builder().uri("/v1/items/notes");
        if let Some(value) = header {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    fn handshake(uri: &str, header: Option<&str>) -> Parts {
        let mut builder = HttpRequest::builder().uri(uri).header(UPGRADE, "websocket");
        if let Some(value) = header {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        assert_eq!(bearer_token(&parts(Some("Bearer abc.def.ghi"))), Ok("abc.def.ghi"));
        assert_eq!(bearer_token(&parts(Some("bearer   abc"))), Ok("abc"));
        assert_eq!(bearer_token(&parts(None)), Err(AuthError::Missing));
        assert_eq!(
            bearer_token(&parts(Some("Basic dXNlcjpwYXNz"))),
            Err(AuthError::Missing)
        );
        assert!(matches!(
            bearer_token(&parts(Some("Bearer "))),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn only_a_websocket_handshake_may_carry_its_token_in_the_query() {
        let token = |parts: &Parts| request_token(parts).map(|t| t.into_owned());
        assert_eq!(
            token(&handshake("/v1/realtime?access_token=abc", None)),
            Ok("abc".into())
        );
        assert_eq!(
            token(&handshake("/v1/realtime?access_token=abc", Some("Bearer def"))),
            Ok("def".into())
        );
        assert_eq!(token(&handshake("/v1/realtime", None)), Err(AuthError::Missing));
        assert!(matches!(
            token(&handshake("/v1/realtime?access_token=", None)),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            token(&handshake("/v1/realtime?access_token=a&access_token=b", None)),
            Err(AuthError::Malformed(_))
        ));
        let plain = HttpRequest::builder()
            .uri("/v1/sync?access_token=abc")
            .body(())
            .expect("request")
            .into_parts()
            .0;
        assert_eq!(token(&plain), Err(AuthError::Missing));
    }
}
