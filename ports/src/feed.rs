//! The change feed port: every user's committed events in one commit order, and where each consumer of
//! the log has got to in it.
//!
//! On AWS this is DynamoDB Streams and the event source mappings, which keep each consumer's position
//! themselves. On one machine the store itself is the feed, and a driver task per consumer (the indexer,
//! the push dispatcher) follows it through this trait, storing its position in the store, so that a
//! store that keeps its projections on disk replays nothing at start.

use std::future::Future;

use rookery_domain::StoredEvent;

use crate::StoreError;

/// The global change feed of an event store, and the stored positions of its consumers.
///
/// A position is a number: 0 is the beginning, and every committed event has a position, higher than
/// that of every event committed before it. Positions need not be consecutive (a store may skip numbers),
/// but they are never reused.
pub trait ChangeFeed: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The position of the last committed event (0 when none was).
    ///
    /// Implementations MUST never answer less than the position of an event that
    /// [`ChangeFeed::changes_after`] has returned, and MUST never go backwards.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot tell.
    fn commit_position(&self) -> Result<u64, StoreError>;

    /// Up to `limit` committed events of every user with a position after `position`, in commit order,
    /// and the position of the last one (`position` itself when there are none).
    ///
    /// Implementations MUST return each committed event exactly once over consecutive calls (each from
    /// the position the previous one answered), MUST return a user's events in seq order, and MUST NOT
    /// return an event that is not durably committed: a consumer never has to go back.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], including for an event that cannot be decoded (never skip one).
    fn changes_after(
        &self,
        position: u64,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<StoredEvent>, u64), StoreError>> + Send;

    /// Waits until the commit position is past `position`, and answers it.
    ///
    /// Implementations MUST complete as soon as an event after `position` is committed (at once when one
    /// already is), so that a consumer that found nothing after `position` can wait here without missing a
    /// commit that raced its read; they MUST answer `None` only when no commit can ever come (the store
    /// was closed).
    fn wait_for_commit(&self, position: u64) -> impl Future<Output = Option<u64>> + Send;

    /// The position the consumer named `consumer` last stored (0, the beginning, for one that never did).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn consumer_position(&self, consumer: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Stores the position of the consumer named `consumer`: every event up to it has been handled.
    ///
    /// Implementations MUST keep the position as long as they keep the events (a store on disk stores it
    /// durably, a store in memory in memory), and MUST answer it from [`ChangeFeed::consumer_position`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; the consumer then handles some events again after a restart, which
    /// every consumer of the log tolerates.
    fn set_consumer_position(
        &self,
        consumer: &str,
        position: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
