//! RFC 9457 problem documents: the one shape every error of the API takes.
//!
//! Each [`AppError`] maps to exactly one status and one stable `code` (see `API.md`).
//! Server-side failures are logged with their cause under the request id and answered with
//! that id only, so no internal detail (store errors, AWS messages) ever reaches a client.

use axum::http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rookery_domain::projection::HistoryEvent;
use rookery_ports::{AppError, AuthError};
use serde_json::{Map, Value, json};

use super::dto::HistoryEventDto;
use super::request_id;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The stable, machine-readable error codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `401`: no usable bearer token.
    Unauthorized,
    /// `403`: a local media signature is bad or expired.
    Forbidden,
    /// `404`: not there, or not the caller's to know about.
    NotFound,
    /// `409`: a precondition failed.
    VersionConflict,
    /// `428`: a precondition is required.
    PreconditionRequired,
    /// `400` (and `405`): the request is malformed.
    InvalidRequest,
    /// `413`: the body or a declared size is over a limit.
    PayloadTooLarge,
    /// `415`: the body is not JSON.
    UnsupportedMediaType,
    /// `429`: the caller's rate limit is exhausted.
    RateLimited,
    /// `422`: an idempotency key was reused for a different request.
    IdempotencyKeyReused,
    /// `410`: the caller's account was erased.
    AccountErased,
    /// `5xx`: the server failed.
    Internal,
}

impl Code {
    /// Every code, in the order of `API.md`.
    pub const ALL: [Code; 12] = [
        Code::Unauthorized,
        Code::Forbidden,
        Code::NotFound,
        Code::VersionConflict,
        Code::PreconditionRequired,
        Code::InvalidRequest,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::RateLimited,
        Code::IdempotencyKeyReused,
        Code::AccountErased,
        Code::Internal,
    ];

    /// The code as it appears in the `code` member.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::VersionConflict => "version_conflict",
            Code::PreconditionRequired => "precondition_required",
            Code::InvalidRequest => "invalid_request",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::RateLimited => "rate_limited",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::AccountErased => "account_erased",
            Code::Internal => "internal",
        }
    }

    /// The code that goes with a status when nothing more specific is known
    /// (used to turn framework responses into problem documents).
    pub fn for_status(status: StatusCode) -> Code {
        match status.as_u16() {
            401 => Code::Unauthorized,
            403 => Code::Forbidden,
            404 => Code::NotFound,
            409 => Code::VersionConflict,
            410 => Code::AccountErased,
            413 => Code::PayloadTooLarge,
            415 => Code::UnsupportedMediaType,
            422 => Code::IdempotencyKeyReused,
            428 => Code::PreconditionRequired,
            429 => Code::RateLimited,
            500.. => Code::Internal,
            _ => Code::InvalidRequest,
        }
    }
}

/// An error answer: status, code, a human-readable detail, extra members and headers.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    code: Code,
    detail: String,
    extra: Map<String, Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem with `status`, `code` and `detail`.
    pub fn new(status: StatusCode, code: Code, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    /// `400 invalid_request`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidRequest, detail)
    }

    /// `404 not_found`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, Code::NotFound, "no such resource")
    }

    /// `413 payload_too_large`.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, Code::PayloadTooLarge, detail)
    }

    /// `410 account_erased`: the account the request is made for was erased.
    pub fn account_erased() -> Self {
        Self::new(StatusCode::GONE, Code::AccountErased, "this account was erased")
    }

    /// `403 forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, Code::Forbidden, detail)
    }

    /// `415 unsupported_media_type`.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, Code::UnsupportedMediaType, detail)
    }

    /// `500 internal`, after logging `cause` under the current request id.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(request_id = %super::request_id::current(), error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            "the server failed; quote the request_id when reporting this",
        )
    }

    /// `503 internal` with `Retry-After: 1`, after logging `cause` under the current request id.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(
            request_id = %super::request_id::current(),
            error = %cause,
            "request failed on a dependency that may recover"
        );
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal,
            "the service is temporarily unavailable; retry later and quote the request_id if it persists",
        )
        .with_header(RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// `401 unauthorized` with `WWW-Authenticate: Bearer`; `token_present` adds `error="invalid_token"`.
    pub fn unauthorized(token_present: bool, detail: impl Into<String>) -> Self {
        let challenge = if token_present {
            "Bearer error=\"invalid_token\""
        } else {
            "Bearer"
        };
        Self::new(StatusCode::UNAUTHORIZED, Code::Unauthorized, detail)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge))
    }

    /// `429 rate_limited` with `Retry-After` in whole seconds (at least 1).
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let secs = retry_after_secs.max(1);
        let mut problem = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            "too many requests; slow down",
        );
        if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
            problem = problem.with_header(RETRY_AFTER, value);
        }
        problem
    }

    /// Adds an extra member to the document.
    #[must_use]
    pub fn with_member(mut self, name: &str, value: Value) -> Self {
        self.extra.insert(name.to_owned(), value);
        self
    }

    /// Adds a response header.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The document as JSON, with `request_id` on server errors.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), json!("about:blank"));
        body.insert("title".into(), json!(self.status.canonical_reason().unwrap_or("Error")));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("code".into(), json!(self.code.as_str()));
        body.insert("detail".into(), json!(self.detail));
        for (name, value) in &self.extra {
            body.insert(name.clone(), value.clone());
        }
        if self.status.is_server_error() {
            body.insert("request_id".into(), json!(request_id::current()));
        }
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut response = (
            self.status,
            [(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

/// The `events` member of a conflict: the history events the client missed.
fn conflict_events(events: Vec<HistoryEvent>) -> Value {
    let events: Vec<HistoryEventDto> = events.into_iter().map(HistoryEventDto::from).collect();
    serde_json::to_value(events).unwrap_or(Value::Array(Vec::new()))
}

impl From<AppError> for Problem {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Invalid(detail) => Problem::invalid(detail),
            AppError::NotFound => Problem::not_found(),
            AppError::Conflict { current, events } => Problem::new(
                StatusCode::CONFLICT,
                Code::VersionConflict,
                "the item is not at the version the request named",
            )
            .with_member("current_version", current.map_or(Value::Null, |v| json!(v.0)))
            .with_member("events", conflict_events(events)),
            AppError::TooLarge(detail) => Problem::too_large(detail),
            AppError::IdempotencyKeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                Code::IdempotencyKeyReused,
                "this Idempotency-Key was already used for a different request",
            ),
            AppError::Erased => Problem::account_erased(),
            AppError::Unavailable(failure) if failure.is_retryable() => Problem::unavailable(&failure),
            AppError::Unavailable(failure) => Problem::internal(&failure),
        }
    }
}

/// Maps a refused token to its answer: `503` when the key set cannot be fetched, else `401`.
pub fn auth_problem(error: &AuthError) -> Problem {
    match error {
        AuthError::Unavailable(cause) => Problem::unavailable(&format!("identity key set unavailable: {cause}")),
        AuthError::Missing => Problem::unauthorized(false, "a bearer token is required"),
        other => {
            tracing::debug!(reason = %other, "token refused");
            Problem::unauthorized(true, "the bearer token is not valid")
        }
    }
}

#[cfg(test)]
mod tests {
    use rookery_domain::Version;
    use rookery_ports::Failure;

    use super::*;

    #[test]
    fn conflicts_carry_the_current_version_and_events() {
        let problem = Problem::from(AppError::Conflict {
            current: Some(Version(3)),
            events: Vec::new(),
        });
        let body = problem.body();
        assert_eq!(problem.status(), StatusCode::CONFLICT);
        assert_eq!(body["code"], "version_conflict");
        assert_eq!(body["current_version"], 3);
        assert_eq!(body["events"], json!([]));
        assert_eq!(body["type"], "about:blank");
        assert_eq!(body["title"], "Conflict");
        let absent = Problem::from(AppError::Conflict {
            current: None,
            events: Vec::new(),
        })
        .body();
        assert_eq!(absent["current_version"], Value::Null);
    }

    #[test]
    fn server_failures_never_show_their_cause() {
        let secret = "dynamodb: ProvisionedThroughputExceeded at table events";
        for failure in [Failure::transient(secret), Failure::permanent(secret)] {
            let retryable = failure.is_retryable();
            let problem = Problem::from(AppError::Unavailable(failure));
            let text = problem.body().to_string();
            assert!(!text.contains("dynamodb"), "{text}");
            assert_eq!(problem.code(), Code::Internal);
            let expected = if retryable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            assert_eq!(problem.status(), expected);
            assert!(problem.body().get("request_id").is_some());
        }
    }

    #[test]
    fn each_app_error_has_its_status_and_code() {
        let cases = [
            (AppError::Invalid("x".into()), 400, "invalid_request"),
            (AppError::NotFound, 404, "not_found"),
            (AppError::TooLarge("x".into()), 413, "payload_too_large"),
            (AppError::IdempotencyKeyReused, 422, "idempotency_key_reused"),
        ];
        for (error, status, code) in cases {
            let problem = Problem::from(error);
            assert_eq!(problem.status().as_u16(), status);
            assert_eq!(problem.code().as_str(), code);
            assert!(problem.body().get("request_id").is_none());
        }
    }

    #[test]
    fn unauthorized_says_invalid_token_only_when_a_token_was_sent() {
        let response = auth_problem(&AuthError::Missing).into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let response = auth_problem(&AuthError::Expired).into_response();
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
        let response = auth_problem(&AuthError::Unavailable("down".into())).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
