//! Change-log batches on Lambda: DynamoDB stream records in, `batchItemFailures` out.
//!
//! Functions 2 (indexer) and 4 (push dispatcher) receive batches of stream records from an event
//! source mapping configured with `ReportBatchItemFailures`. Lambda then restarts the batch from the
//! lowest sequence number the function names, so the answer must name the FIRST record that was not
//! handled, and nothing after it may be treated as done. This module maps a batch to that answer:
//! records are decoded in order, the decoded events go to the use case in one call, and a failure of
//! either step is reported at the record it happened to. A record that cannot be decoded is a failure
//! at that record, never skipped: skipping would silently lose an event of the log.

use std::fmt;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
/// The use cases a stream function hands its events to (the indexer, the push dispatcher); the AWS
/// adapters' stream poller drives the same trait.
pub use rookery_adapters_aws::streams::BatchHandler;
/// The decoder of the event store's stream records (only inserts of event rows carry events).
pub use rookery_adapters_aws::streams::decode_lambda_record;
use rookery_domain::StoredEvent;

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
    #[error("the handler reported event {index}, but it was given only {len}")]
    FailureOutOfRange {
        /// The position the handler reported.
        index: usize,
        /// How many events it was given.
        len: usize,
    },
}

/// Where and why a batch stopped, before it is turned into the answer Lambda reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Position in the batch of the first record not handled.
    pub record: usize,
    /// Why, for the logs.
    pub reason: String,
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
    /// Events decoded before a record that fails to decode are handled first, so a bad record costs
    /// no progress on the ones before it.
    ///
    /// # Errors
    /// [`StreamError::FailureOutOfRange`] when the use case reports an event it was not given.
    pub async fn process(&self, records: &[EventRecord]) -> Result<Option<Stopped>, StreamError> {
        let mut events = Vec::with_capacity(records.len());
        // For each decoded event, the record it came from: the use case reports positions in `events`.
        let mut origins = Vec::with_capacity(records.len());
        let mut undecodable = None;
        for (index, record) in records.iter().enumerate() {
            match self.decoder.decode(record) {
                Ok(Some(event)) => {
                    events.push(event);
                    origins.push(index);
                }
                Ok(None) => {}
                Err(error) => {
                    undecodable = Some(Stopped {
                        record: index,
                        reason: format!("record could not be decoded: {error}"),
                    });
                    break;
                }
            }
        }
        if !events.is_empty()
            && let Err(failure) = self.handler.handle(&events).await
        {
            let Some(&record) = origins.get(failure.index) else {
                return Err(StreamError::FailureOutOfRange {
                    index: failure.index,
                    len: events.len(),
                });
            };
            return Ok(Some(Stopped {
                record,
                reason: failure.failure.to_string(),
            }));
        }
        Ok(undecodable)
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
