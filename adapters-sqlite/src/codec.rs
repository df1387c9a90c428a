//! How Rookery's values become rows and back: events, items, idempotency records.
//!
//! An append is prepared (checked against the size limits and serialized) by the caller's task, so the
//! single writer thread spends its time on SQLite, not on JSON. An event is stored as its envelope in
//! columns plus its payload and metadata as JSON; it is read back through the domain's own decoder, which
//! upcasts older schema versions, and an event that cannot be read is an error, never skipped.

use std::fmt::Write as _;

use rookery_domain::event::decode_slice;
use rookery_domain::history::item_after;
use rookery_domain::{EventPayload, ItemKey, Seq, StoredEvent, Timestamp, UserId, Version};
use rookery_ports::{AppendBatch, AppendError, Failure, IdempotencyRecord, IdempotencyWrite, Rebase};
use rusqlite::Row;

/// The largest stored event the store accepts, as DynamoDB's item limit (400 KB).
pub const MAX_EVENT_BYTES: usize = 400 * 1024;

/// The most bytes one append may carry, events and idempotency record together, as DynamoDB's
/// transaction limit (4 MB).
pub const MAX_APPEND_BYTES: usize = 4 * 1024 * 1024;

/// An upper bound on what an event's envelope (field names, seq, schema, time) adds to its JSON size.
const ENVELOPE_BYTES: usize = 128;

/// A number as SQLite stores it.
pub(crate) fn int(value: u64) -> Result<i64, Failure> {
    i64::try_from(value).map_err(|_| Failure::permanent(format!("{value} does not fit the database's integers")))
}

/// A limit as SQLite takes it (anything past `i64::MAX` is as good as no limit).
pub(crate) fn limit(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored number read back; a negative one means the file was changed behind the store's back.
pub(crate) fn uint(value: i64, what: &str) -> Result<u64, Failure> {
    u64::try_from(value).map_err(|_| Failure::permanent(format!("sqlite store: {what} is negative ({value})")))
}

fn serialize<T: serde::Serialize + ?Sized>(value: &T, what: &str) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure::permanent(format!("cannot serialize {what}: {e}")))
}

/// Reads a JSON column written by this store.
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, Failure> {
    serde_json::from_str(text).map_err(|e| Failure::permanent(format!("sqlite store: {what} cannot be read: {e}")))
}

/// The JSON of an event's payload, without the `type` tag (which has its own column).
fn payload_json(payload: &EventPayload) -> Result<String, Failure> {
    match payload {
        EventPayload::ItemCreated(change)
        | EventPayload::ItemReplaced(change)
        | EventPayload::ItemPatched(change)
        | EventPayload::ItemDeleted(change)
        | EventPayload::ItemRestored(change) => serialize(change, "an item event"),
        EventPayload::MessageReceived(message) => serialize(message, "a message"),
        EventPayload::Device(change) => serialize(change, "a device event"),
        EventPayload::MediaDeclared(object) => serialize(object, "a media object"),
    }
}

/// An item event's effect on its item's head.
#[derive(Debug)]
pub(crate) struct ItemRow {
    pub(crate) key: ItemKey,
    pub(crate) version: Version,
    /// The item after the event as JSON, `None` after a delete.
    pub(crate) item: Option<String>,
}

/// An event ready for the log: the stored event (its seq assigned by the writer), and its columns.
#[derive(Debug)]
pub(crate) struct PreparedEvent {
    pub(crate) event: StoredEvent,
    pub(crate) payload: String,
    pub(crate) meta: String,
    pub(crate) item: Option<ItemRow>,
}

impl PreparedEvent {
    pub(crate) fn new(event: StoredEvent) -> Result<Self, Failure> {
        let payload = payload_json(&event.payload)?;
        let meta = serialize(&event.meta, "event metadata")?;
        let item = match event.payload.as_item() {
            Some(change) => Some(ItemRow {
                key: change.key(),
                version: change.version,
                item: item_after(&event).map(|item| serialize(&item, "an item")).transpose()?,
            }),
            None => None,
        };
        Ok(Self {
            event,
            payload,
            meta,
            item,
        })
    }

    /// The size of the event as JSON, as the limits count it.
    fn size(&self) -> usize {
        self.payload.len()
            + self.meta.len()
            + self.event.event_id.as_str().len()
            + self.event.owner.as_str().len()
            + self.event.payload.type_name().len()
            + ENVELOPE_BYTES
    }
}

/// An idempotency record ready for its table.
#[derive(Debug)]
pub(crate) struct PreparedRecord {
    pub(crate) owner: UserId,
    pub(crate) key: String,
    pub(crate) fingerprint: String,
    pub(crate) outcome: String,
    pub(crate) recorded_at: i64,
    pub(crate) expired_before: i64,
}

impl PreparedRecord {
    pub(crate) fn new(write: IdempotencyWrite) -> Result<Self, Failure> {
        let IdempotencyWrite {
            owner,
            record,
            expired_before,
        } = write;
        Ok(Self {
            owner,
            outcome: serialize(&record.outcome, "an idempotency outcome")?,
            key: record.key,
            fingerprint: record.fingerprint,
            recorded_at: int(record.recorded_at.as_millis())?,
            expired_before: int(expired_before.as_millis())?,
        })
    }

    fn size(&self) -> usize {
        self.key.len() + self.fingerprint.len() + self.outcome.len() + ENVELOPE_BYTES
    }
}

/// Reads an idempotency record from the columns `key, fingerprint, outcome, recorded_at`.
pub(crate) fn record_from_row(row: &Row<'_>) -> rusqlite::Result<Result<IdempotencyRecord, Failure>> {
    let key: String = row.get(0)?;
    let fingerprint: String = row.get(1)?;
    let outcome: String = row.get(2)?;
    let recorded_at: i64 = row.get(3)?;
    Ok((|| {
        Ok(IdempotencyRecord {
            outcome: deserialize(&outcome, "an idempotency outcome")?,
            recorded_at: Timestamp::from_millis(uint(recorded_at, "a record's time")?),
            key,
            fingerprint,
        })
    })())
}

/// A batch that passed the checks the caller can make alone (not empty, within the limits), serialized.
#[derive(Debug)]
pub(crate) struct PreparedAppend {
    pub(crate) owner: UserId,
    pub(crate) expected_seq: Option<Seq>,
    pub(crate) item_versions: Vec<(ItemKey, Version)>,
    pub(crate) events: Vec<PreparedEvent>,
    pub(crate) idempotency: Option<PreparedRecord>,
    /// For a write the writer may re-plan when its item moved: how, and the batch as the caller made it.
    pub(crate) rebase: Option<Rebasing>,
}

/// How the writer re-plans a rebasable append whose item moved (see [`AppendBatch::rebased`]).
pub(crate) struct Rebasing {
    pub(crate) rebase: Rebase,
    pub(crate) batch: AppendBatch,
}

impl std::fmt::Debug for Rebasing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebasing")
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

fn too_large(why: String) -> AppendError {
    AppendError::TooLarge(why)
}

impl PreparedAppend {
    /// Checks `batch` against the limits and serializes it, in the contract's order: an empty batch, the
    /// number of events, then their sizes. The seq, version and key checks are the writer's.
    ///
    /// # Errors
    /// [`AppendError::TooLarge`] for a batch over a limit; [`AppendError::Unavailable`] for an empty one.
    pub(crate) fn new(batch: AppendBatch) -> Result<Self, AppendError> {
        batch.check_shape()?;
        let AppendBatch {
            owner,
            expected_seq,
            item_versions,
            events,
            idempotency,
        } = batch;
        let mut total = 0usize;
        let mut prepared = Vec::with_capacity(events.len());
        for event in events {
            // The seq is a placeholder until the writer assigns it (see `log::claim_seqs`).
            let event = PreparedEvent::new(event.stored(&owner, expected_seq.unwrap_or(Seq(0))))?;
            let size = event.size();
            if size > MAX_EVENT_BYTES {
                return Err(too_large(format!(
                    "an event of {size} bytes is over the limit of {MAX_EVENT_BYTES} bytes"
                )));
            }
            total += size;
            prepared.push(event);
        }
        let idempotency = idempotency.map(PreparedRecord::new).transpose()?;
        if let Some(record) = &idempotency {
            let size = record.size();
            if size > MAX_EVENT_BYTES {
                return Err(too_large(format!(
                    "an idempotency record of {size} bytes is over the limit of {MAX_EVENT_BYTES} bytes"
                )));
            }
            total += size;
        }
        if total > MAX_APPEND_BYTES {
            return Err(too_large(format!(
                "an append of {total} bytes is over the limit of {MAX_APPEND_BYTES} bytes"
            )));
        }
        Ok(Self {
            owner,
            expected_seq,
            item_versions,
            events: prepared,
            idempotency,
            rebase: None,
        })
    }
}

/// The columns an event is read from, in the order [`RawEvent::from_row`] expects.
pub(crate) const EVENT_COLUMNS: &str = "position, owner, seq, event_id, type, schema, at, payload, meta";

/// An event's row as read, not yet decoded.
#[derive(Debug)]
pub(crate) struct RawEvent {
    pub(crate) position: i64,
    owner: String,
    seq: i64,
    event_id: String,
    kind: String,
    schema: i64,
    at: i64,
    payload: String,
    meta: String,
}

impl RawEvent {
    /// Reads the columns of [`EVENT_COLUMNS`].
    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            position: row.get(0)?,
            owner: row.get(1)?,
            seq: row.get(2)?,
            event_id: row.get(3)?,
            kind: row.get(4)?,
            schema: row.get(5)?,
            at: row.get(6)?,
            payload: row.get(7)?,
            meta: row.get(8)?,
        })
    }

    /// The stored event, through the domain's decoder (which upcasts older schemas).
    ///
    /// # Errors
    /// A permanent [`Failure`] naming the event when it cannot be read (a newer schema, a damaged row).
    pub(crate) fn decode(self) -> Result<StoredEvent, Failure> {
        let cannot = |why: String| {
            Failure::permanent(format!(
                "sqlite store: event at position {} ({} seq {}) cannot be read: {why}",
                self.position, self.owner, self.seq
            ))
        };
        let at = Timestamp::from_millis(u64::try_from(self.at).map_err(|_| cannot("a negative time".into()))?);
        let text = |s: &str| serde_json::to_string(s).map_err(|e| cannot(e.to_string()));
        let mut json = String::with_capacity(self.payload.len() + self.meta.len() + 256);
        write!(
            json,
            r#"{{"event_id":{},"owner":{},"seq":{},"schema":{},"at":{},"type":{},"payload":{},"meta":{}}}"#,
            text(&self.event_id)?,
            text(&self.owner)?,
            self.seq,
            self.schema,
            text(&at.to_string())?,
            text(&self.kind)?,
            self.payload,
            self.meta,
        )
        .map_err(|e| cannot(e.to_string()))?;
        decode_slice(json.as_bytes()).map_err(|e| cannot(e.to_string()))
    }
}
