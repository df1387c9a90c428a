//! The clock and the id source: the two sources of non-determinism, kept behind ports so tests can fix them.

use rookery_domain::Timestamp;

/// The current time.
pub trait Clock: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Now. Implementations MUST NOT go backwards within one process.
    fn now(&self) -> Timestamp;
}

/// Fresh unique ids for events, messages and media.
pub trait IdSource: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// A new id, unique across every id this source (and every other instance of it) ever returns.
    ///
    /// Implementations MUST return 1 to 128 characters matching `^[A-Za-z0-9][A-Za-z0-9_.:-]*$`,
    /// and SHOULD return ids that sort by creation time.
    fn new_id(&self) -> String;
}
