//! Classifying AWS SDK errors into Rookery's [`Failure`], and retrying the transient ones with backoff.
//!
//! Every adapter maps vendor errors the same way: throttling, timeouts, dispatch failures and 5xx
//! answers are transient (worth retrying); validation errors and other 4xx answers are permanent
//! (a bug or a misconfiguration). The retry loop is bounded, so a caller never waits forever.

use std::error::Error;
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use rookery_ports::Failure;

/// Error codes that mean "slow down or try again" in every AWS service this crate talks to.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "Throttled",
    "KMSThrottling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "ProvisionedThroughputExceeded",
    "TransactionConflictException",
    "TransactionConflict",
    "TransactionInProgressException",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "LimitExceededException",
];

/// True when an AWS error `code` (or, lacking one, the HTTP `status`) is worth retrying.
pub(crate) fn is_transient(code: Option<&str>, status: Option<u16>) -> bool {
    if let Some(code) = code
        && TRANSIENT_CODES.contains(&code)
    {
        return true;
    }
    matches!(status, Some(429 | 500..=599))
}

/// The HTTP status and AWS error code of an SDK error, when the service answered.
fn code_and_status<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> (Option<String>, Option<u16>) {
    let status = error.raw_response().map(|r| r.status().as_u16());
    (error.code().map(str::to_owned), status)
}

/// Maps any SDK error of operation `op` to a [`Failure`], retryable when it is transient.
pub(crate) fn sdk_failure<E>(op: &str, error: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + Error + 'static,
{
    let message = format!("{op}: {}", DisplayErrorContext(error));
    match error {
        // A request the SDK could not even build is a bug here, and will fail again.
        SdkError::ConstructionFailure(_) => Failure::permanent(message),
        // No answer, or an answer we could not read: the service may be fine a moment later.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::transient(message)
        }
        _ => {
            let (code, status) = code_and_status(error);
            if is_transient(code.as_deref(), status) {
                Failure::transient(message)
            } else {
                Failure::permanent(message)
            }
        }
    }
}

/// How often and how patiently a transient failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The backoff ceiling of the first retry; it doubles on each retry.
    pub base: Duration,
    /// The largest backoff ceiling.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(25),
            cap: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries (for tests against an emulator, where a retry would hide a bug).
    pub fn none() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (1-based): "full jitter", uniform in `0..=min(cap, base * 2^(retry-1))`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.cap);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=millis))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out.
    ///
    /// `retryable` says which errors are worth another attempt.
    pub(crate) async fn run<T, E, F, Fut>(&self, retryable: impl Fn(&E) -> bool, mut attempt: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut tried = 1;
        loop {
            match attempt().await {
                Err(error) if tried < self.attempts.max(1) && retryable(&error) => {
                    tokio::time::sleep(self.backoff(tried)).await;
                    tried += 1;
                }
                outcome => return outcome,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_transient_validation_is_not() {
        assert!(is_transient(Some("ThrottlingException"), Some(400)));
        assert!(is_transient(Some("ProvisionedThroughputExceededException"), Some(400)));
        assert!(is_transient(Some("RequestLimitExceeded"), Some(400)));
        assert!(is_transient(Some("Throttled"), Some(400)), "SNS says Throttled");
        assert!(is_transient(Some("TransactionConflictException"), Some(400)));
        assert!(is_transient(None, Some(503)));
        assert!(is_transient(Some("Whatever"), Some(500)));
        assert!(!is_transient(Some("ValidationException"), Some(400)));
        assert!(!is_transient(Some("ResourceNotFoundException"), Some(400)));
        assert!(!is_transient(None, Some(403)));
    }

    #[test]
    fn backoff_is_capped_and_jittered_below_the_ceiling() {
        let policy = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
        };
        for retry in 1..12 {
            let wait = policy.backoff(retry);
            let ceiling = Duration::from_millis((10u64 << (retry - 1).min(16)).min(50));
            assert!(wait <= ceiling, "retry {retry}: {wait:?} over {ceiling:?}");
        }
    }

    #[tokio::test]
    async fn run_retries_transient_errors_a_bounded_number_of_times() {
        let policy = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        };
        let calls = std::cell::Cell::new(0);
        let outcome: Result<(), &str> = policy
            .run(
                |_| true,
                || {
                    calls.set(calls.get() + 1);
                    async { Err("busy") }
                },
            )
            .await;
        assert_eq!(outcome, Err("busy"));
        assert_eq!(calls.get(), 3);

        calls.set(0);
        let outcome: Result<(), &str> = policy
            .run(
                |_| false,
                || {
                    calls.set(calls.get() + 1);
                    async { Err("bad") }
                },
            )
            .await;
        assert_eq!(outcome, Err("bad"));
        assert_eq!(calls.get(), 1, "a permanent error is not retried");
    }
}
