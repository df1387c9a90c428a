//! The eraser function: finishes account erasures from the events table's stream.
//!
//! Function 1 answers `DELETE /v1/me` once the erasure marker is written (decision 0010); the marker's
//! INSERT reaches this function through an event source mapping filtered to marker rows, and for each
//! marker it runs [`ErasureService::finish`]: search documents, media bytes, push endpoints, the
//! identity provider's user, then the purge of the user's rows in the table, and the index once more.
//! Each run stops at a deadline below the invocation's own, so that it can still answer; a marker not
//! finished (the deadline came first, or a step failed) is named in `batchItemFailures`, and Lambda
//! delivers it again, from that record, until it is done. Every step is harmless to repeat.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use rookery_domain::UserId;
use rookery_ports::{
    Clock, ErasureService, EventStore, Failure, Finished, IdentityDirectory, MediaStore, PushGateway, SearchIndex,
};
use tokio::time::Instant;

use super::stream::{StreamError, failure_at};

/// How long before the invocation's deadline a run stops purging, to answer in time (a `BatchWriteItem`
/// round with its retries, and the last erasure of the index, fit well within it).
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(20);

/// The longest a run goes on when the invocation names no deadline (the function's timeout is at most
/// 15 minutes).
const NO_DEADLINE_BUDGET: Duration = Duration::from_secs(14 * 60);

/// Reads the erased user out of a stream record (`rookery_adapters_aws::streams::erased_owner` on AWS):
/// `None` for a record that is not a marker's INSERT.
pub trait MarkerDecoder: Send + Sync {
    /// The user whose erasure marker `record` inserts.
    ///
    /// # Errors
    /// When the record is a marker that cannot be read.
    fn owner(&self, record: &EventRecord) -> Result<Option<UserId>, Failure>;
}

impl<F> MarkerDecoder for F
where
    F: Fn(&EventRecord) -> Result<Option<UserId>, Failure> + Send + Sync,
{
    fn owner(&self, record: &EventRecord) -> Result<Option<UserId>, Failure> {
        self(record)
    }
}

/// The eraser function's handler: the decoder of marker records and the erasure use case.
#[derive(Debug, Clone)]
pub struct EraserHandler<K, S, C, X, P, M, D> {
    decoder: K,
    erasure: ErasureService<S, C, X, P, M, D>,
    margin: Duration,
}

impl<K, S, C, X, P, M, D> EraserHandler<K, S, C, X, P, M, D>
where
    K: MarkerDecoder,
    S: EventStore,
    C: Clock,
    X: SearchIndex,
    P: PushGateway,
    M: MediaStore,
    D: IdentityDirectory,
{
    /// A handler finishing erasures with `erasure`, stopping [`DEFAULT_MARGIN`] before each deadline.
    pub fn new(decoder: K, erasure: ErasureService<S, C, X, P, M, D>) -> Self {
        Self {
            decoder,
            erasure,
            margin: DEFAULT_MARGIN,
        }
    }

    /// The same handler stopping `margin` before each invocation's deadline.
    #[must_use]
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The erasure use case behind this handler.
    pub fn erasure(&self) -> &ErasureService<S, C, X, P, M, D> {
        &self.erasure
    }

    /// The instant a run must stop at, given the invocation's deadline in milliseconds since the Unix
    /// epoch (the Lambda context's `deadline`; `0` or an unreadable clock for none).
    pub fn stop_at(&self, deadline_ms: u64) -> Instant {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let left = if deadline_ms == 0 || now == 0 {
            NO_DEADLINE_BUDGET
        } else {
            Duration::from_millis(deadline_ms.saturating_sub(now))
        };
        Instant::now() + left.saturating_sub(self.margin)
    }

    /// Finishes the erasure of every marker of `event`, in order, until `stop_at`; the answer names the
    /// first marker not finished (empty when all are), and nothing after it is treated as done.
    ///
    /// # Errors
    /// [`StreamError::NoSequenceNumber`] when the record not finished has no sequence number to name;
    /// the invocation must then fail, so that Lambda delivers the whole batch again.
    pub async fn handle(&self, event: &Event, stop_at: Instant) -> Result<DynamoDbEventResponse, StreamError> {
        let mut finished = 0usize;
        for (index, record) in event.records.iter().enumerate() {
            let stopped = match self.decoder.owner(record) {
                Ok(None) => continue,
                Ok(Some(owner)) => match self.erasure.finish(&owner, Some(stop_at)).await {
                    Ok(Finished::Done { deleted }) => {
                        tracing::info!(%owner, deleted, "erasure finished");
                        finished += 1;
                        continue;
                    }
                    Ok(Finished::Unfinished { deleted }) => {
                        format!("the deadline came before the purge of {owner} was done ({deleted} rows deleted)")
                    }
                    Err(error) => format!("finishing the erasure of {owner}: {error}"),
                },
                Err(failure) => format!("the marker record could not be read: {failure}"),
            };
            let sequence_number = record
                .change
                .sequence_number
                .clone()
                .ok_or(StreamError::NoSequenceNumber { index })?;
            tracing::warn!(
                record = index,
                records = event.records.len(),
                %sequence_number,
                reason = %stopped,
                "erasure not finished; Lambda will deliver it again from this record"
            );
            return Ok(failure_at(sequence_number));
        }
        tracing::info!(records = event.records.len(), finished, "erasure batch handled");
        Ok(DynamoDbEventResponse::default())
    }
}
