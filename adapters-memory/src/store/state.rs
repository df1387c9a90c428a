//! The event store's state and its two operations, check and apply, kept free of locking and I/O.
//!
//! The same `apply_*` functions run for a live append and for a record replayed from the log file,
//! so a store rebuilt from its log is the store that wrote it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rookery_domain::device::{self, Devices};
use rookery_domain::item::evolve;
use rookery_domain::{
    CollectionName, EventPayload, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Seq, StoredEvent, Timestamp,
    UserId, Version,
};
use rookery_ports::{AppendBatch, AppendError, Failure, IdempotencyRecord, IdempotencyWrite, Rebase};

/// The largest serialized event the store accepts, as DynamoDB's item limit (400 KB).
pub const MAX_EVENT_BYTES: usize = 400 * 1024;

/// The most bytes one append may carry, events and idempotency record together, as DynamoDB's transaction limit (4 MB).
pub const MAX_APPEND_BYTES: usize = 4 * 1024 * 1024;

/// One item's head and the seqs of its events in version order, so history is read without a scan of the stream.
#[derive(Debug, Default)]
struct ItemEntry {
    head: ItemHead,
    history: Vec<(Version, Seq)>,
}

/// One user's stream and everything projected from it.
#[derive(Debug, Default)]
struct Stream {
    /// The events; the event with seq `n` is at index `n - 1`.
    events: Vec<StoredEvent>,
    items: BTreeMap<CollectionName, BTreeMap<ItemId, ItemEntry>>,
    /// Seqs of the `message.received` events, ascending.
    messages: Vec<Seq>,
    devices: Devices,
    media: BTreeMap<MediaId, MediaObject>,
}

impl Stream {
    fn last_seq(&self) -> Seq {
        Seq(self.events.len() as u64)
    }

    fn entry(&self, key: &ItemKey) -> Option<&ItemEntry> {
        self.items.get(&key.collection)?.get(&key.id)
    }

    fn event(&self, seq: Seq) -> Option<&StoredEvent> {
        let index = usize::try_from(seq.0).ok()?.checked_sub(1)?;
        self.events.get(index)
    }
}

/// One user's idempotency records, with an index by time so expired ones are purged without a scan.
#[derive(Debug, Default)]
struct Records {
    by_key: HashMap<String, IdempotencyRecord>,
    by_time: BTreeSet<(Timestamp, String)>,
}

impl Records {
    fn live(&self, key: &str, expired_before: Timestamp) -> bool {
        self.by_key.get(key).is_some_and(|r| r.recorded_at >= expired_before)
    }

    fn put(&mut self, record: IdempotencyRecord) {
        if let Some(old) = self.by_key.remove(&record.key) {
            self.by_time.remove(&(old.recorded_at, old.key));
        }
        self.by_time.insert((record.recorded_at, record.key.clone()));
        self.by_key.insert(record.key.clone(), record);
    }

    fn purge(&mut self, expired_before: Timestamp) {
        while let Some(first) = self.by_time.first() {
            if first.0 >= expired_before {
                break;
            }
            if let Some((_, key)) = self.by_time.pop_first() {
                self.by_key.remove(&key);
            }
        }
    }
}

/// Everything the event store holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    streams: BTreeMap<UserId, Stream>,
    records: HashMap<UserId, Records>,
    /// Every stored event as (owner, seq), in the order the appends committed: the change feed.
    commits: Vec<(UserId, Seq)>,
    /// The erasure markers: each erased user and when they were erased.
    erased: HashMap<UserId, Timestamp>,
}

fn too_large(why: String) -> AppendError {
    AppendError::TooLarge(why)
}

/// Counts the bytes written to it, so a size is measured without building the JSON.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON size of a value, as the store would write it.
fn json_len<T: serde::Serialize>(value: &T) -> Result<usize, AppendError> {
    let mut count = ByteCount(0);
    serde_json::to_writer(&mut count, value)
        .map(|()| count.0)
        .map_err(|e| AppendError::Unavailable(Failure::permanent(format!("cannot serialize: {e}"))))
}

impl State {
    /// `batch`, re-planned by `rebase` on the current head of its one item when that item moved (see
    /// [`AppendBatch::rebased`]); unchanged otherwise, and when an append not yet applied changes the item
    /// (its head is not known here), so that [`State::check`] refuses it as moved.
    pub(crate) fn rebase(&self, batch: AppendBatch, rebase: &Rebase, pending: &Pending) -> AppendBatch {
        let [(key, _)] = batch.item_versions.as_slice() else {
            return batch;
        };
        if pending.version(&batch.owner, key).is_some() {
            return batch;
        }
        let head = self
            .streams
            .get(&batch.owner)
            .and_then(|stream| stream.entry(key))
            .map(|entry| entry.head.clone())
            .unwrap_or_default();
        batch.rebased(&head, rebase).unwrap_or(batch)
    }

    /// Checks `batch` against the limits and the store's current state, and answers the events it would store.
    ///
    /// The order of the checks is the contract's: an empty batch, the size limits, the stream's seq
    /// (when the batch names one), the item versions, then the idempotency key. A batch that names no
    /// seq continues the stream from its last seq, pending writes included: the store's lock is what
    /// serializes a user's appends.
    ///
    /// `pending` holds what appends that passed their checks but are not applied yet (a durable store's
    /// appends waiting for their sync) will change: the batch is checked as if they had been applied.
    pub(crate) fn check(&self, batch: AppendBatch, pending: &Pending) -> Result<Checked, AppendError> {
        batch.check_shape()?;
        self.check_erased(&batch.owner)?;
        let AppendBatch {
            owner,
            expected_seq,
            item_versions,
            events,
            idempotency,
        } = batch;
        let stream = self.streams.get(&owner);
        let current = pending
            .last_seq(&owner)
            .unwrap_or_else(|| stream.map_or(Seq(0), Stream::last_seq));
        let mut seq = expected_seq.unwrap_or(current);
        let stored: Vec<StoredEvent> = events
            .into_iter()
            .map(|event| {
                seq = seq.next();
                event.stored(&owner, seq)
            })
            .collect();
        let mut total = 0usize;
        for event in &stored {
            let size = json_len(event)?;
            if size > MAX_EVENT_BYTES {
                return Err(too_large(format!(
                    "an event of {size} bytes is over the limit of {MAX_EVENT_BYTES} bytes"
                )));
            }
            total += size;
        }
        if let Some(write) = &idempotency {
            let size = json_len(&RecordRepr::of(&write.record))?;
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
        if let Some(expected) = expected_seq
            && current != expected
        {
            return Err(AppendError::SeqMoved { current });
        }
        for (key, expected) in &item_versions {
            let version = pending.version(&owner, key).unwrap_or_else(|| {
                stream
                    .and_then(|s| s.entry(key))
                    .map_or(Version::NONE, |e| e.head.version)
            });
            if version != *expected {
                return Err(AppendError::VersionMoved {
                    key: key.clone(),
                    current: version,
                });
            }
        }
        if let Some(write) = &idempotency {
            self.check_key(write, pending)?;
        }
        Ok(Checked {
            owner,
            events: stored,
            idempotency,
        })
    }

    /// Checks that no unexpired record, stored or pending, holds the key of `write`.
    pub(crate) fn check_key(&self, write: &IdempotencyWrite, pending: &Pending) -> Result<(), AppendError> {
        self.check_erased(&write.owner)?;
        let taken = pending.key_live(write)
            || self
                .records
                .get(&write.owner)
                .is_some_and(|r| r.live(&write.record.key, write.expired_before));
        if taken { Err(AppendError::KeyTaken) } else { Ok(()) }
    }

    /// Stores checked events and their record, updating every projection and the change feed.
    pub(crate) fn apply_append(
        &mut self,
        owner: &UserId,
        events: &[StoredEvent],
        idempotency: Option<&IdempotencyWrite>,
    ) {
        if !events.is_empty() {
            let stream = self.streams.entry(owner.clone()).or_default();
            for event in events {
                apply_event(stream, event);
                self.commits.push((owner.clone(), event.seq));
            }
        }
        if let Some(write) = idempotency {
            self.apply_remember(write);
        }
    }

    /// Stores an idempotency record, purging its owner's expired ones so records cannot grow without bound.
    pub(crate) fn apply_remember(&mut self, write: &IdempotencyWrite) {
        let records = self.records.entry(write.owner.clone()).or_default();
        records.purge(write.expired_before);
        records.put(write.record.clone());
    }

    pub(crate) fn idempotency(&self, owner: &UserId, key: &str) -> Option<IdempotencyRecord> {
        self.records.get(owner)?.by_key.get(key).cloned()
    }

    pub(crate) fn last_seq(&self, owner: &UserId) -> Seq {
        self.streams.get(owner).map_or(Seq(0), Stream::last_seq)
    }

    pub(crate) fn read_feed(&self, owner: &UserId, after: Seq, limit: usize) -> Vec<StoredEvent> {
        let Some(stream) = self.streams.get(owner) else {
            return Vec::new();
        };
        let start = usize::try_from(after.0).unwrap_or(usize::MAX).min(stream.events.len());
        stream.events[start..].iter().take(limit).cloned().collect()
    }

    pub(crate) fn read_messages(&self, owner: &UserId, after: Seq, limit: usize) -> Vec<StoredEvent> {
        let Some(stream) = self.streams.get(owner) else {
            return Vec::new();
        };
        let start = stream.messages.partition_point(|seq| *seq <= after);
        stream.messages[start..]
            .iter()
            .take(limit)
            .filter_map(|seq| stream.event(*seq).cloned())
            .collect()
    }

    pub(crate) fn item_head(&self, owner: &UserId, key: &ItemKey) -> ItemHead {
        self.streams
            .get(owner)
            .and_then(|s| s.entry(key))
            .map(|e| e.head.clone())
            .unwrap_or_default()
    }

    pub(crate) fn item_history(&self, owner: &UserId, key: &ItemKey, after: Version, limit: usize) -> Vec<StoredEvent> {
        let Some(stream) = self.streams.get(owner) else {
            return Vec::new();
        };
        let Some(entry) = stream.entry(key) else {
            return Vec::new();
        };
        let start = entry.history.partition_point(|(version, _)| *version <= after);
        entry.history[start..]
            .iter()
            .take(limit)
            .filter_map(|(_, seq)| stream.event(*seq).cloned())
            .collect()
    }

    pub(crate) fn list_items(
        &self,
        owner: &UserId,
        collection: &CollectionName,
        after: Option<&ItemId>,
        limit: usize,
    ) -> Vec<Item> {
        let Some(items) = self.streams.get(owner).and_then(|s| s.items.get(collection)) else {
            return Vec::new();
        };
        let range = match after {
            Some(after) => items.range::<ItemId, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => items.range::<ItemId, _>(..),
        };
        range
            .filter_map(|(_, entry)| entry.head.item.clone())
            .take(limit)
            .collect()
    }

    pub(crate) fn devices(&self, owner: &UserId) -> Devices {
        self.streams.get(owner).map(|s| s.devices.clone()).unwrap_or_default()
    }

    pub(crate) fn media(&self, owner: &UserId, id: &MediaId) -> Option<MediaObject> {
        self.streams.get(owner)?.media.get(id).cloned()
    }

    pub(crate) fn owners(&self, after: Option<&UserId>, limit: usize) -> Vec<UserId> {
        let range = match after {
            Some(after) => self
                .streams
                .range::<UserId, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => self.streams.range::<UserId, _>(..),
        };
        range.map(|(owner, _)| owner.clone()).take(limit).collect()
    }

    /// Refuses a write for an erased user.
    fn check_erased(&self, owner: &UserId) -> Result<(), AppendError> {
        match self.erased.get(owner) {
            Some(at) => Err(AppendError::Erased { at: *at }),
            None => Ok(()),
        }
    }

    /// When `owner` was erased, if they were.
    pub(crate) fn erased(&self, owner: &UserId) -> Option<Timestamp> {
        self.erased.get(owner).copied()
    }

    /// Erases `owner`: their stream, its projections and their idempotency records go, and the marker
    /// stays (with the time of the first erasure, which a repeat keeps). Their entries in the change feed
    /// stay as positions only: the feed skips an event whose stream is gone.
    pub(crate) fn erase(&mut self, owner: &UserId, at: Timestamp) -> Timestamp {
        self.streams.remove(owner);
        self.records.remove(owner);
        *self.erased.entry(owner.clone()).or_insert(at)
    }

    /// How many events the change feed holds.
    pub(crate) fn commit_count(&self) -> u64 {
        self.commits.len() as u64
    }

    /// Up to `limit` events of the change feed from `position` on, and the position after them.
    pub(crate) fn changes_after(&self, position: u64, limit: usize) -> (Vec<StoredEvent>, u64) {
        let start = usize::try_from(position).unwrap_or(usize::MAX).min(self.commits.len());
        let taken = self.commits.len().saturating_sub(start).min(limit);
        // An erased user's positions are passed over: the next position counts them, the events do not.
        let events: Vec<StoredEvent> = self.commits[start..start + taken]
            .iter()
            .filter_map(|(owner, seq)| self.streams.get(owner)?.event(*seq).cloned())
            .collect();
        let next = (start + taken) as u64;
        (events, next)
    }
}

/// What checked but not yet applied writes will change, as far as the checks of later writes need to know:
/// each stream's last seq, each changed item's version and each recorded idempotency key.
///
/// Every entry is tagged with the ticket of the write that set it last. When that write is applied, the
/// state holds the same value and the entry is dropped; a later pending write that touched the same
/// entry has re-tagged it, so it stays. An entry is therefore always the newest value, pending or applied.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    seqs: HashMap<UserId, (Seq, u64)>,
    versions: HashMap<(UserId, ItemKey), (Version, u64)>,
    keys: HashMap<(UserId, String), (Timestamp, u64)>,
}

impl Pending {
    fn last_seq(&self, owner: &UserId) -> Option<Seq> {
        self.seqs.get(owner).map(|(seq, _)| *seq)
    }

    fn version(&self, owner: &UserId, key: &ItemKey) -> Option<Version> {
        // Cloning the owner for the lookup is cheap next to an append, and only durable stores have entries.
        if self.versions.is_empty() {
            return None;
        }
        self.versions.get(&(owner.clone(), key.clone())).map(|(v, _)| *v)
    }

    fn key_live(&self, write: &IdempotencyWrite) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        self.keys
            .get(&(write.owner.clone(), write.record.key.clone()))
            .is_some_and(|(at, _)| *at >= write.expired_before)
    }

    /// Notes what the checked write with `ticket` will change once applied.
    pub(crate) fn add(
        &mut self,
        ticket: u64,
        owner: &UserId,
        events: &[StoredEvent],
        idempotency: Option<&IdempotencyWrite>,
    ) {
        if let Some(last) = events.last() {
            self.seqs.insert(owner.clone(), (last.seq, ticket));
        }
        for event in events {
            if let Some(change) = event.payload.as_item() {
                let entry = self
                    .versions
                    .entry((
                        owner.clone(),
                        ItemKey::new(change.collection.clone(), change.id.clone()),
                    ))
                    .or_insert((Version::NONE, ticket));
                // A head only moves up (see `evolve`), so neither does its pending version.
                *entry = (entry.0.max(change.version), ticket);
            }
        }
        if let Some(write) = idempotency {
            self.keys.insert(
                (write.owner.clone(), write.record.key.clone()),
                (write.record.recorded_at, ticket),
            );
        }
    }

    /// Forgets the entries last set by the write with `ticket`, which has just been applied to the state.
    pub(crate) fn applied(
        &mut self,
        ticket: u64,
        owner: &UserId,
        events: &[StoredEvent],
        idempotency: Option<&IdempotencyWrite>,
    ) {
        if self.seqs.get(owner).is_some_and(|(_, t)| *t == ticket) {
            self.seqs.remove(owner);
        }
        for event in events {
            if let Some(change) = event.payload.as_item() {
                let key = (
                    owner.clone(),
                    ItemKey::new(change.collection.clone(), change.id.clone()),
                );
                if self.versions.get(&key).is_some_and(|(_, t)| *t == ticket) {
                    self.versions.remove(&key);
                }
            }
        }
        if let Some(write) = idempotency {
            let key = (write.owner.clone(), write.record.key.clone());
            if self.keys.get(&key).is_some_and(|(_, t)| *t == ticket) {
                self.keys.remove(&key);
            }
        }
    }

    /// Forgets everything: the pending writes failed, and the state alone is the truth again.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }
}

/// A batch that passed every check: the events as they will be stored, and the record.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) owner: UserId,
    pub(crate) events: Vec<StoredEvent>,
    pub(crate) idempotency: Option<IdempotencyWrite>,
}

/// The serialized form of an idempotency record, used for its size and in the log file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct RecordRepr {
    pub(crate) key: String,
    pub(crate) fingerprint: String,
    pub(crate) outcome: serde_json::Value,
    pub(crate) recorded_at: Timestamp,
}

impl RecordRepr {
    pub(crate) fn of(record: &IdempotencyRecord) -> Self {
        Self {
            key: record.key.clone(),
            fingerprint: record.fingerprint.clone(),
            outcome: record.outcome.clone(),
            recorded_at: record.recorded_at,
        }
    }

    pub(crate) fn into_record(self) -> IdempotencyRecord {
        IdempotencyRecord {
            key: self.key,
            fingerprint: self.fingerprint,
            outcome: self.outcome,
            recorded_at: self.recorded_at,
        }
    }
}

/// Folds one stored event into its stream and the projections kept beside it.
fn apply_event(stream: &mut Stream, event: &StoredEvent) {
    match &event.payload {
        EventPayload::MessageReceived(_) => stream.messages.push(event.seq),
        EventPayload::Device(change) => device::evolve(&mut stream.devices, change, event.at),
        EventPayload::MediaDeclared(object) => {
            stream.media.insert(object.id.clone(), object.clone());
        }
        payload => {
            if let Some(change) = payload.as_item() {
                let entry = stream
                    .items
                    .entry(change.collection.clone())
                    .or_default()
                    .entry(change.id.clone())
                    .or_default();
                entry.head = evolve(&event.owner, &entry.head, change, event.at);
                // Versions only grow in practice; keeping the index sorted anyway makes the history reads exact.
                let at = entry.history.partition_point(|(version, _)| *version <= change.version);
                entry.history.insert(at, (change.version, event.seq));
            }
        }
    }
    stream.events.push(event.clone());
}
