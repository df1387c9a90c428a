//! DynamoDB Streams: decoding change records into stored events, and a poller that feeds them to a handler.
//!
//! Only `INSERT`s of event rows (`kind = "event"`) carry events; heads, history rows, registries and
//! idempotency records are bookkeeping and are ignored, as are `MODIFY` and `REMOVE`. An event row that
//! does not decode is an error handed back to the caller, never skipped: skipping it would lose an index
//! update or a push for good.
//!
//! Two ways in: a Lambda event source mapping hands [`EventRecord`]s, one at a time, to
//! [`decode_lambda_record`]; the [`StreamPoller`] reads the stream itself (for `rookery serve --backend aws`),
//! shard by shard, parents first, from the oldest records or (for a consumer that only wants what is
//! committed from now on, such as realtime) from the latest ([`StreamPoller::skip_to_latest`]). Either way a batch goes to its handler through the change log's one
//! seam, [`rookery_ports::batch::deliver`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::EventRecord;
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{OperationType, Record, ShardIteratorType};
use rookery_domain::{StoredEvent, UserId};
pub use rookery_ports::BatchHandler;
use rookery_ports::Failure;
pub use rookery_ports::batch::HandlerFn;
use rookery_ports::batch::{FailureOutOfRange, Stopped, deliver};

use crate::dynamo::{KIND_ERASED, KIND_EVENT, decode_event_json};
use crate::error::sdk_failure;

/// Decodes one change, given its operation, its new image's `kind` and `event` attributes.
fn decode_change(insert: bool, kind: Option<&str>, event: Option<&str>) -> Result<Option<StoredEvent>, Failure> {
    if !insert || kind != Some(KIND_EVENT) {
        return Ok(None);
    }
    let Some(text) = event else {
        return Err(Failure::permanent(
            "an event row in the stream has no `event` attribute",
        ));
    };
    decode_event_json(text).map(Some)
}

fn lambda_string<'a>(record: &'a EventRecord, name: &str) -> Option<&'a str> {
    match record.change.new_image.get(name) {
        Some(serde_dynamo::AttributeValue::S(text)) => Some(text),
        _ => None,
    }
}

/// The stored event a Lambda stream record carries, `None` for records that are not event inserts.
///
/// # Errors
/// A permanent [`Failure`] for an event row that cannot be decoded.
pub fn decode_lambda_record(record: &EventRecord) -> Result<Option<StoredEvent>, Failure> {
    decode_change(
        record.event_name == "INSERT",
        lambda_string(record, "kind"),
        lambda_string(record, "event"),
    )
}

/// The user whose erasure marker a Lambda stream record inserts (`kind = "erased"`), `None` for every
/// other record.
///
/// # Errors
/// A permanent [`Failure`] for a marker row whose `owner` is missing or not a user id.
pub fn erased_owner(record: &EventRecord) -> Result<Option<UserId>, Failure> {
    if record.event_name != "INSERT" || lambda_string(record, "kind") != Some(KIND_ERASED) {
        return Ok(None);
    }
    let owner = lambda_string(record, "owner")
        .ok_or_else(|| Failure::permanent("an erasure marker in the stream has no `owner` attribute"))?;
    UserId::parse(owner)
        .map(Some)
        .map_err(|e| Failure::permanent(format!("an erasure marker's owner is not a user id: {e}")))
}

/// The stored event a DynamoDB Streams API record carries, `None` for records that are not event inserts.
///
/// # Errors
/// A permanent [`Failure`] for an event row that cannot be decoded.
pub fn decode_stream_record(record: &Record) -> Result<Option<StoredEvent>, Failure> {
    let image = record.dynamodb().and_then(|r| r.new_image());
    let string = |name: &str| match image.and_then(|i| i.get(name)) {
        Some(aws_sdk_dynamodbstreams::types::AttributeValue::S(text)) => Some(text.as_str()),
        _ => None,
    };
    decode_change(
        record.event_name() == Some(&OperationType::Insert),
        string("kind"),
        string("event"),
    )
}

/// Why a poll stopped early. The poller keeps its place: the next poll starts at the record that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// The stream could not be read.
    #[error("reading the stream: {0}")]
    Stream(Failure),
    /// A record did not decode, or the handler failed at it; it will be delivered again (a record that
    /// does not decode is never passed).
    #[error("shard {shard}, record {} (sequence number {sequence_number:?}): {}", stopped.record, stopped.reason)]
    Stopped {
        /// The shard.
        shard: String,
        /// The record's stream sequence number.
        sequence_number: Option<String>,
        /// Where and why the batch stopped.
        stopped: Stopped,
    },
    /// The handler named an event it was not given (a bug in the handler).
    #[error("shard {shard}: {error}")]
    OutOfRange {
        /// The shard.
        shard: String,
        /// What the handler named.
        error: FailureOutOfRange,
    },
}

/// One shard as `DescribeStream` shows it.
#[derive(Debug, Clone)]
struct ShardInfo {
    id: String,
    parent: Option<String>,
    /// Whether the shard is closed (it has an ending sequence number): it takes no new records.
    closed: bool,
}

/// Reads a DynamoDB stream and hands its events to a handler, remembering per shard the last record handled.
#[derive(Debug, Clone)]
pub struct StreamPoller {
    client: Client,
    stream_arn: String,
    /// Per shard, the sequence number of the last record handled (events or not).
    positions: HashMap<String, String>,
    /// Closed shards read to their end.
    finished: HashSet<String>,
    /// Per shard, the iterator a poll that caught up was left with: the next poll goes on from it
    /// (saving a `GetShardIterator` call, and the only position of a shard read from its latest record
    /// before any record came). Dropped when a read fails; the next poll then starts from `positions`.
    iterators: HashMap<String, String>,
    page_limit: i32,
}

impl StreamPoller {
    /// A poller of the stream `stream_arn`, from its oldest records.
    pub fn new(client: Client, stream_arn: impl Into<String>) -> Self {
        Self {
            client,
            stream_arn: stream_arn.into(),
            positions: HashMap::new(),
            finished: HashSet::new(),
            iterators: HashMap::new(),
            page_limit: 1000,
        }
    }

    /// A poller of the latest stream of `table`.
    ///
    /// # Errors
    /// A [`Failure`] when the table cannot be described or has no stream.
    pub async fn for_table(dynamodb: &aws_sdk_dynamodb::Client, client: Client, table: &str) -> Result<Self, Failure> {
        let described = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_failure("DescribeTable", &e))?;
        let arn = described
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or_else(|| Failure::permanent(format!("table {table} has no stream")))?;
        Ok(Self::new(client, arn))
    }

    /// The stream's ARN.
    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// At most this many records per `GetRecords` call (1 to 1000).
    #[must_use]
    pub fn with_page_limit(mut self, limit: i32) -> Self {
        self.page_limit = limit.clamp(1, 1000);
        self
    }

    async fn shards(&self) -> Result<Vec<ShardInfo>, Failure> {
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| sdk_failure("DescribeStream", &e))?;
            let description = out.stream_description;
            let last = description.as_ref().and_then(|d| d.last_evaluated_shard_id.clone());
            for shard in description.and_then(|d| d.shards).unwrap_or_default() {
                let closed = shard
                    .sequence_number_range
                    .as_ref()
                    .is_some_and(|range| range.ending_sequence_number.is_some());
                if let Some(id) = shard.shard_id {
                    shards.push(ShardInfo {
                        id,
                        parent: shard.parent_shard_id,
                        closed,
                    });
                }
            }
            match last {
                Some(id) if !id.is_empty() => start = Some(id),
                _ => break,
            }
        }
        Ok(order_parents_first(shards))
    }

    /// Skips every record already in the stream: closed shards count as read, and each open shard is
    /// read from just after its latest record. Shards that appear later (after a split) are read from
    /// their beginning, which is after this call. Call it before the first poll.
    ///
    /// Should a shard's iterator be lost before any record came to it (a failed read), that shard is
    /// read again from its oldest record: records are delivered again, never skipped.
    ///
    /// # Errors
    /// A [`Failure`] when the stream cannot be described or an iterator cannot be had.
    pub async fn skip_to_latest(&mut self) -> Result<(), Failure> {
        for shard in self.shards().await? {
            if shard.closed {
                self.finished.insert(shard.id);
                continue;
            }
            let out = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(&shard.id)
                .shard_iterator_type(ShardIteratorType::Latest)
                .send()
                .await
                .map_err(|e| sdk_failure("GetShardIterator", &e))?;
            match out.shard_iterator {
                Some(iterator) => {
                    self.iterators.insert(shard.id, iterator);
                }
                // Closed since it was listed: nothing new can come to it.
                None => {
                    self.finished.insert(shard.id);
                }
            }
        }
        Ok(())
    }

    /// Reads every shard once, to its current end, handing each page's events to `handler`.
    /// Returns how many events were handled.
    ///
    /// # Errors
    /// [`PollError`]; the poller keeps its place, so the next poll retries from the failed record.
    pub async fn poll_once<H: BatchHandler>(&mut self, handler: &H) -> Result<usize, PollError> {
        let shards = self.shards().await.map_err(PollError::Stream)?;
        let listed: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
        let mut handled = 0;
        for shard in &shards {
            if self.finished.contains(&shard.id) {
                continue;
            }
            // A child shard waits until its parent (still in the stream) has been read to its end,
            // so the records of one item are handled in order across a split.
            if let Some(parent) = &shard.parent
                && listed.contains(parent.as_str())
                && !self.finished.contains(parent)
            {
                continue;
            }
            handled += self.drain(&shard.id, handler).await?;
        }
        // Shards trimmed from the stream need no bookkeeping any more.
        self.finished.retain(|id| listed.contains(id.as_str()));
        self.positions.retain(|id, _| listed.contains(id.as_str()));
        self.iterators.retain(|id, _| listed.contains(id.as_str()));
        Ok(handled)
    }

    async fn iterator(&self, shard: &str) -> Result<Option<String>, Failure> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard);
        let request = match self.positions.get(shard) {
            Some(after) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(after),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = request.send().await.map_err(|e| sdk_failure("GetShardIterator", &e))?;
        Ok(out.shard_iterator)
    }

    async fn drain<H: BatchHandler>(&mut self, shard: &str, handler: &H) -> Result<usize, PollError> {
        let mut handled = 0;
        // Taken, not borrowed: it is put back only when this poll catches up, so a failure below
        // leaves the shard to be read from its recorded position.
        let kept = self.iterators.remove(shard);
        let iterator = match kept {
            Some(iterator) => Some(iterator),
            None => self.iterator(shard).await.map_err(PollError::Stream)?,
        };
        let Some(mut iterator) = iterator else {
            self.finished.insert(shard.to_owned());
            return Ok(0);
        };
        loop {
            let page = self
                .client
                .get_records()
                .shard_iterator(&iterator)
                .limit(self.page_limit)
                .send()
                .await
                .map_err(|e| PollError::Stream(sdk_failure("GetRecords", &e)))?;
            let records = page.records();
            handled += self.handle_page(shard, records, handler).await?;
            match page.next_shard_iterator() {
                // A closed shard read to its end: its children come next.
                None => {
                    self.finished.insert(shard.to_owned());
                    return Ok(handled);
                }
                // An open shard with nothing new: caught up for this poll, which the next goes on from.
                Some(next) if records.is_empty() => {
                    self.iterators.insert(shard.to_owned(), next.to_owned());
                    return Ok(handled);
                }
                Some(next) => iterator = next.to_owned(),
            }
        }
    }

    async fn handle_page<H: BatchHandler>(
        &mut self,
        shard: &str,
        records: &[Record],
        handler: &H,
    ) -> Result<usize, PollError> {
        let sequence = |record: &Record| record.dynamodb().and_then(|r| r.sequence_number()).map(str::to_owned);
        let delivery =
            deliver(records, decode_stream_record, handler)
                .await
                .map_err(|error| PollError::OutOfRange {
                    shard: shard.to_owned(),
                    error,
                })?;
        let Some(stopped) = delivery.stopped else {
            if let Some(last) = records.last().and_then(sequence) {
                self.positions.insert(shard.to_owned(), last);
            }
            return Ok(delivery.events);
        };
        // Resume after the record before the one that stopped: that one and everything before it are done.
        if let Some(previous) = stopped
            .record
            .checked_sub(1)
            .and_then(|i| records.get(i))
            .and_then(sequence)
        {
            self.positions.insert(shard.to_owned(), previous);
        }
        Err(PollError::Stopped {
            shard: shard.to_owned(),
            sequence_number: records.get(stopped.record).and_then(sequence),
            stopped,
        })
    }

    /// Polls until `shutdown` completes: after a poll that found nothing, or failed, it waits `idle`
    /// (a failure is logged and retried from the failed record). A poll cut short by shutdown leaves
    /// its last page to be delivered again, which at-least-once consumers already accept.
    pub async fn run<H: BatchHandler>(&mut self, handler: &H, idle: Duration, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let polled = tokio::select! {
                biased;
                () = &mut shutdown => return,
                polled = self.poll_once(handler) => polled,
            };
            let wait = match polled {
                Ok(handled) => handled == 0,
                Err(error) => {
                    tracing::warn!(%error, stream = %self.stream_arn, "stream poll failed; retrying from the failed record");
                    true
                }
            };
            if wait {
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(idle) => {}
                }
            }
        }
    }
}

/// Orders shards so every parent still in the list comes before its children.
fn order_parents_first(shards: Vec<ShardInfo>) -> Vec<ShardInfo> {
    let ids: HashSet<String> = shards.iter().map(|s| s.id.clone()).collect();
    let mut placed: HashSet<String> = HashSet::new();
    let mut ordered = Vec::with_capacity(shards.len());
    let mut pending = shards;
    while !pending.is_empty() {
        let (ready, waiting): (Vec<ShardInfo>, Vec<ShardInfo>) = pending
            .into_iter()
            .partition(|s| s.parent.as_ref().is_none_or(|p| !ids.contains(p) || placed.contains(p)));
        if ready.is_empty() {
            // A cycle cannot happen in a real stream; keep the rest in the order given rather than loop.
            ordered.extend(waiting);
            break;
        }
        placed.extend(ready.iter().map(|s| s.id.clone()));
        ordered.extend(ready);
        pending = waiting;
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parent: parent.map(Into::into),
            closed: false,
        }
    }

    #[test]
    fn parents_come_before_children_whatever_the_listing_order() {
        let ordered = order_parents_first(vec![
            shard("c2", Some("c1")),
            shard("c1", Some("root")),
            shard("other", Some("trimmed")),
            shard("root", None),
        ]);
        let ids: Vec<&str> = ordered.iter().map(|s| s.id.as_str()).collect();
        let pos = |id: &str| ids.iter().position(|x| *x == id).unwrap();
        assert!(pos("root") < pos("c1") && pos("c1") < pos("c2"), "{ids:?}");
        assert_eq!(ids.len(), 4);
    }

    fn lambda_record(name: &str, image: serde_json::Value, sequence: &str) -> EventRecord {
        serde_json::from_value(serde_json::json!({
            "awsRegion": "us-east-1",
            "eventID": "1",
            "eventName": name,
            "eventSource": "aws:dynamodb",
            "eventVersion": "1.1",
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/t/stream/x",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_795_600_800,
                "Keys": {"pk": {"S": "user#alice"}, "sk": {"S": "evt#1"}},
                "NewImage": image,
                "SequenceNumber": sequence,
                "SizeBytes": 10,
                "StreamViewType": "NEW_IMAGE"
            }
        }))
        .unwrap()
    }

    /// The stream record of an event row's `INSERT`, carrying `event` as its `event` attribute.
    fn event_insert(event: &str, sequence: &str) -> EventRecord {
        lambda_record(
            "INSERT",
            serde_json::json!({"kind": {"S": "event"}, "event": {"S": event}}),
            sequence,
        )
    }

    fn event_json(seq: u64) -> String {
        serde_json::json!({
            "event_id": format!("e{seq}"),
            "owner": "alice",
            "seq": seq,
            "schema": 1,
            "at": "2026-11-25T10:00:00.000Z",
            "type": "device.changed",
            "payload": {"change": "removed", "device_id": "phone"},
            "meta": {}
        })
        .to_string()
    }

    #[test]
    fn lambda_records_decode_event_inserts_and_ignore_bookkeeping() {
        let decoded = |record: &EventRecord| decode_lambda_record(record).unwrap().map(|e| e.seq.0);
        assert_eq!(decoded(&event_insert(&event_json(1), "100")), Some(1));
        let head = lambda_record(
            "INSERT",
            serde_json::json!({"kind": {"S": "head"}, "last_seq": {"N": "1"}}),
            "101",
        );
        assert_eq!(decoded(&head), None, "a head is bookkeeping");
        let modified = lambda_record(
            "MODIFY",
            serde_json::json!({"kind": {"S": "event"}, "event": {"S": event_json(9)}}),
            "102",
        );
        assert_eq!(decoded(&modified), None, "only inserts carry events");
    }

    #[test]
    fn an_event_row_that_does_not_decode_is_an_error() {
        assert!(decode_lambda_record(&event_insert("{not json", "101")).is_err());
        let missing = lambda_record("INSERT", serde_json::json!({"kind": {"S": "event"}}), "103");
        assert!(
            decode_lambda_record(&missing).is_err(),
            "an event row without its event is an error"
        );
    }
}
