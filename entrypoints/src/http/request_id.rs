//! Request ids: the one a request carries (echoed when the client sent a sane one, 1 to 128 visible
//! ASCII characters, generated otherwise), kept in a task-local while the request runs, so that a
//! problem document for a server failure can carry it without every handler passing it around.

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderName;

/// The header carrying the request id, both ways.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: String;
}

/// The request id of the request being handled on this task, or `"unknown"` outside one.
pub fn current() -> String {
    CURRENT.try_with(Clone::clone).unwrap_or_else(|_| "unknown".to_owned())
}

/// Runs `future` with `id` as the current request id.
pub async fn scope<F: Future>(id: String, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// The verified user of a request, put on its response by the token gate for the access log line.
#[derive(Debug, Clone)]
pub struct AnsweredUser(pub String);

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
}
