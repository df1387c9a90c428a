//! Errors shared by the ports and the use cases.

use rookery_domain::Version;
use rookery_domain::projection::HistoryEvent;

/// An infrastructure failure: the operation did not happen (or its outcome is unknown).
///
/// The message is for logs, never for clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What went wrong, for the logs.
    pub message: String,
    /// True when trying again later may succeed (throttling, timeouts, unavailability).
    pub retryable: bool,
}

impl Failure {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that will happen again (a bug, a misconfiguration, corrupt data).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// What a use case answers instead of a result. The HTTP edge maps each variant to one problem code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or breaks a non-size limit (`400 invalid_request`).
    #[error("{0}")]
    Invalid(String),
    /// The thing does not exist, or the caller may not know it does (`404 not_found`).
    #[error("not found")]
    NotFound,
    /// A precondition failed (`409 version_conflict`); carries what the client missed.
    #[error("version conflict")]
    Conflict {
        /// The item's version, `None` when it never existed.
        current: Option<Version>,
        /// The item's events after the version the client named, at most 100, oldest first.
        events: Vec<HistoryEvent>,
    },
    /// A size limit was broken (`413 payload_too_large`).
    #[error("{0}")]
    TooLarge(String),
    /// The idempotency key was used for a different request (`422 idempotency_key_reused`).
    #[error("idempotency key reused for a different request")]
    IdempotencyKeyReused,
    /// The caller's account was erased (`410 account_erased`).
    #[error("the account was erased")]
    Erased,
    /// Infrastructure failed; the detail is for logs only (`503`/`500 internal`).
    #[error("{0}")]
    Unavailable(Failure),
}

impl From<Failure> for AppError {
    fn from(failure: Failure) -> Self {
        AppError::Unavailable(failure)
    }
}

/// A change-log batch handler stopped at a record: everything before `index` was handled,
/// the record at `index` (and so everything after it) must be delivered again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {index} of the batch failed: {failure}")]
pub struct BatchFailure {
    /// Position in the batch of the first record not handled.
    pub index: usize,
    /// Why.
    pub failure: Failure,
}
