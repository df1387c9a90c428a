//! Change-log batches on Lambda: DynamoDB stream records in, `batchItemFailures` out.
//!
//! Functions 2 (indexer) and 4 (push dispatcher) receive batches of stream records from an event
//! source mapping configured with `ReportBatchItemFailures`. Lambda then restarts the batch from the
//! lowest sequence number the function names, so the answer must name the FIRST record that was not
//! handled, and nothing after it may be treated as done. The change log's one seam,
//! [`rookery_ports::batch::deliver`], finds that record (a record that cannot be decoded is a failure
//! at that record, never skipped); this module turns it into the answer Lambda reads.

use std::fmt;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
/// The use cases a stream function hands its events to (the indexer, the push dispatcher); the AWS
/// adapters' stream poller drives the same trait.
pub use rookery_adapters_aws::streams::BatchHandler;
/// The decoder of the event store's stream records (only inserts of event rows carry events).
pub use rookery_adapters_aws::streams::decode_lambda_record;
use rookery_domain::StoredEvent;
use rookery_ports::batch::{FailureOutOfRange, Stopped, deliver};

/// Turns one stream record into the event it carries.
///
/// Bookkeeping rows (heads, idempotency records, registries) and changes that are not inserts carry
/// no event: implementations answer `Ok(None)` for them. A row that is an event but cannot be read
/// MUST be an error, so the batch stops there instead of losing it.
pub trait RecordDecoder: Send + Sync {
    /// Why a record could not be decoded (for the logs).
    type Error: fmt::Display;

    /// The event `record` carries, if any.
    ///
    /// # Errors
    /// When the record is an event row that cannot be decoded.
    fn decode(&self, record: &EventRecord) -> Result<Option<StoredEvent>, Self::Error>;
}

impl<F, E> RecordDecoder for F
where
    F: Fn(&EventRecord) -> Result<Option<StoredEvent>, E> + Send + Sync,
    E: fmt::Display,
{
    type Error = E;

    fn decode(&self, record: &EventRecord) -> Result<Option<StoredEvent>, E> {
        self(record)
    }
}

/// Why a batch could not be answered record by record; the function then fails as a whole and
/// Lambda retries (or bisects) the entire batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The record that failed has no sequence number to report, so no partial answer is possible.
    #[error("record {index} of the batch failed and has no sequence number to report")]
    NoSequenceNumber {
        /// Position of the record in the batch.
        index: usize,
    },
    /// The use case named an event the batch did not give it (a bug in the use case).
    #[error(transparent)]
    FailureOutOfRange(#[from] FailureOutOfRange),
}

/// The decoder and the use case of one stream-consuming function.
#[derive(Debug, Clone)]
pub struct StreamConsumer<D, H> {
    decoder: D,
    handler: H,
}

impl<D: RecordDecoder, H: BatchHandler> StreamConsumer<D, H> {
    /// A consumer decoding with `decoder` and handing the events to `handler`.
    pub fn new(decoder: D, handler: H) -> Self {
        Self { decoder, handler }
    }

    /// The use case behind this consumer.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Handles the batch and says which record, if any, Lambda must deliver again.
    ///
    /// # Errors
    /// [`StreamError::FailureOutOfRange`] when the use case reports an event it was not given.
    pub async fn process(&self, records: &[EventRecord]) -> Result<Option<Stopped>, StreamError> {
        Ok(deliver(records, |record| self.decoder.decode(record), &self.handler)
            .await?
            .stopped)
    }

    /// Handles a stream event and builds the partial-batch answer: empty on success, else exactly
    /// one failure naming the sequence number of the first record not handled.
    ///
    /// # Errors
    /// [`StreamError`] when the failed record cannot be named; the function must then fail so that
    /// the whole batch is delivered again (Lambda bisects it when so configured).
    pub async fn handle(&self, event: &Event) -> Result<DynamoDbEventResponse, StreamError> {
        let records = &event.records;
        let Some(stopped) = self.process(records).await? else {
            tracing::info!(records = records.len(), "stream batch handled");
            return Ok(DynamoDbEventResponse::default());
        };
        let Some(record) = records.get(stopped.record) else {
            return Err(StreamError::NoSequenceNumber { index: stopped.record });
        };
        let Some(sequence_number) = record.change.sequence_number.clone() else {
            return Err(StreamError::NoSequenceNumber { index: stopped.record });
        };
        tracing::warn!(
            record = stopped.record,
            records = records.len(),
            %sequence_number,
            event_id = %record.event_id,
            reason = %stopped.reason,
            "stream batch stopped; Lambda will deliver it again from this record"
        );
        Ok(failure_at(sequence_number))
    }
}

/// The partial-batch answer naming one record.
pub fn failure_at(sequence_number: String) -> DynamoDbEventResponse {
    let mut failure = DynamoDbBatchItemFailure::default();
    failure.item_identifier = Some(sequence_number);
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = vec![failure];
    response
}
