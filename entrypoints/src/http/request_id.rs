//! The edge of every request: a request id, a tracing span, and problem documents for every error
//! answer, including the ones the framework and middleware produce on their own; and the deadline of
//! API requests.
//!
//! The request id is echoed when the client sent a sane one (1 to 128 visible ASCII characters) and
//! generated otherwise. It is kept in a task-local while the request runs, so a problem document for a
//! server failure can carry it without every handler passing it around.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::problem::{Code, PROBLEM_JSON, Problem};

/// The header carrying the request id, both ways.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: String;
}

/// The request id of the request being handled on this task, or `"unknown"` outside one.
pub fn current() -> String {
    CURRENT.try_with(Clone::clone).unwrap_or_else(|_| "unknown".to_owned())
}

/// The request id, as a request extension for handlers that want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The longest request id echoed back, in characters.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// True when `value` may be echoed back as a request id.
pub fn is_sane(value: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

/// A fresh request id: the time in milliseconds and 64 random bits, in hex (sortable, unguessable enough for logs).
pub fn generate() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{millis:012x}{:016x}", fastrand::u64(..))
}

/// The deadline of a request: past it, the request is dropped and answered `503`.
///
/// It applies to the API's routes, not to the local media routes, whose bodies may be large and slow.
pub async fn deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::unavailable(&format!("request exceeded its {timeout:?} deadline")).into_response(),
    }
}

/// The verified user of a request, put on its response by the token gate for the access log line.
#[derive(Debug, Clone)]
pub struct AnsweredUser(pub String);

/// The outermost middleware: request id, problem documents, access log.
///
/// Every request gets one `info` line, `answered`, naming its request id, method, path, user (once the
/// token is verified), status and time. Lines logged while the request runs say its request id themselves
/// where they matter (failures, see [`Problem::internal`]); the `request` span that gives every line inside
/// it the request's context is at `debug` level (`RUST_LOG=debug`), because creating and formatting a span
/// for every request cost a fifth of the API's throughput under load (docs/PERFORMANCE.md).
pub async fn edge(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map_or_else(generate, str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::debug_span!("request", request_id = %id, %method, %path, user = tracing::field::Empty);
    let started = Instant::now();
    let response = CURRENT
        .scope(id.clone(), async move {
            let response = next.run(request).await;
            ensure_problem(response)
        })
        .instrument(span)
        .await;
    let mut response = response;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let user = response.extensions_mut().remove::<AnsweredUser>();
    // Left out of the line for a request that no token was verified for.
    let user = user.as_ref().map(|u| u.0.as_str());
    // The line names every field itself, so it is written outside the (debug) span that names them too.
    tracing::info!(request_id = %id, %method, %path, user, status, elapsed_ms, "answered");
    response
}

/// Turns an error answer that is not a problem document (axum's own rejections, a `405`, a body limit
/// hit in middleware) into one with the same status, keeping the headers that matter to clients.
fn ensure_problem(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    if is_problem {
        return response;
    }
    let code = Code::for_status(status);
    let detail = match status {
        StatusCode::NOT_FOUND => "no such resource".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this resource".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is over the size limit".to_owned(),
        s if s.is_server_error() => {
            tracing::error!(
                request_id = %current(),
                status = s.as_u16(),
                "a layer answered a server error without a problem document"
            );
            "the server failed; quote the request_id when reporting this".to_owned()
        }
        s => s.canonical_reason().unwrap_or("the request was refused").to_owned(),
    };
    let mut problem = Problem::new(status, code, detail);
    for name in [ALLOW, RETRY_AFTER, WWW_AUTHENTICATE] {
        if let Some(value) = response.headers().get(&name) {
            problem = problem.with_header(name.clone(), value.clone());
        }
    }
    problem.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_ascii_up_to_128_is_echoed() {
        assert!(is_sane("abc-123_XYZ"));
        assert!(is_sane(&"a".repeat(128)));
        assert!(!is_sane(&"a".repeat(129)));
        assert!(!is_sane(""));
        assert!(!is_sane("has space"));
        assert!(!is_sane("tab\there"));
    }

    #[test]
    fn generated_ids_are_sane_and_distinct() {
        let (a, b) = (generate(), generate());
        assert!(is_sane(&a) && is_sane(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn plain_error_answers_become_problem_documents() {
        let plain = (StatusCode::METHOD_NOT_ALLOWED, [(ALLOW, "GET")], "nope").into_response();
        let fixed = ensure_problem(plain);
        assert_eq!(fixed.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(fixed.headers()[CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(fixed.headers()[ALLOW], "GET");
        let ok = ensure_problem((StatusCode::OK, "fine").into_response());
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
