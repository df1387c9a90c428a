//! The event store port: the log that is the source of truth, and the heads kept beside it.

use std::future::Future;
use std::sync::Arc;

use rookery_domain::device::Devices;
use rookery_domain::{
    CollectionName, EventPayload, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, NewEvent, Seq, StoredEvent,
    Timestamp, UserId, Version,
};
use serde_json::Value;

use crate::Failure;

/// The most events one append may carry; an adapter may allow fewer (see [`AppendError::TooLarge`]).
pub const MAX_EVENTS_PER_APPEND: usize = 25;

/// A request for an idempotent write, recorded with its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    /// The key, unique per owner.
    pub key: String,
    /// A digest of the request the key was first used for.
    pub fingerprint: String,
    /// The use case's outcome, replayed on a repeat.
    pub outcome: Value,
    /// When it was recorded.
    pub recorded_at: Timestamp,
}

/// An idempotency record to write, conditionally.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyWrite {
    /// The user the key belongs to (the sender, for a message).
    pub owner: UserId,
    /// The record.
    pub record: IdempotencyRecord,
    /// A record with the same key recorded before this instant has expired and may be replaced.
    pub expired_before: Timestamp,
}

/// Events to append atomically to one user's stream, with the conditions that guard them.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendBatch {
    /// Whose stream.
    pub owner: UserId,
    /// Where the events go in the stream.
    ///
    /// `Some(seq)`: the stream's last seq as the writer read it; the events get `seq + 1`, `+ 2`, ... and
    /// the append is refused if anything else was appended since. A writer names the seq only when its
    /// decision depends on the whole stream's state (the device registry), never for item writes.
    ///
    /// `None`: at the end of the stream, whatever was appended since the writer looked; the store assigns
    /// the next seqs itself, atomically with the write. Only the item versions and the idempotency key guard
    /// such an append, so concurrent writes of one user to different items all go through.
    pub expected_seq: Option<Seq>,
    /// For each item the events change, its version as the writer read it ([`Version::NONE`] if never used).
    pub item_versions: Vec<(ItemKey, Version)>,
    /// The events, in order. At least one, unless `idempotency` is set.
    pub events: Vec<NewEvent>,
    /// An idempotency record to write in the same atomic step.
    pub idempotency: Option<IdempotencyWrite>,
}

impl AppendBatch {
    /// The checks of the batch's shape every store makes first, in the contract's order: it holds an
    /// event or an idempotency record, and at most [`MAX_EVENTS_PER_APPEND`] events.
    ///
    /// # Errors
    /// [`AppendError::Unavailable`] (permanent) for an empty batch, a caller's bug;
    /// [`AppendError::TooLarge`] for too many events.
    pub fn check_shape(&self) -> Result<(), AppendError> {
        if self.events.is_empty() && self.idempotency.is_none() {
            return Err(AppendError::Unavailable(Failure::permanent(
                "an append needs at least one event or an idempotency record",
            )));
        }
        if self.events.len() > MAX_EVENTS_PER_APPEND {
            return Err(AppendError::TooLarge(format!(
                "{} events in one append, more than the limit of {MAX_EVENTS_PER_APPEND}",
                self.events.len()
            )));
        }
        Ok(())
    }
}

/// How a store may re-plan, in place, an item write whose item another write moved: given the item's
/// current head, the payload of the one event the write makes now, or `None` when the write no longer
/// applies (the item was deleted, say), which leaves the append refused with [`AppendError::VersionMoved`].
///
/// It must be a pure function of the head (the decision the writer would make if it planned again), cheap,
/// and must not block: a store may call it inside its write transaction.
pub type Rebase = Arc<dyn Fn(&ItemHead) -> Option<EventPayload> + Send + Sync>;

impl AppendBatch {
    /// This batch re-planned on `head` by `rebase`, when it is a rebasable write whose item moved: one
    /// event, one item guard, at the end of the stream (`expected_seq: None`), no idempotency record (whose
    /// recorded outcome would no longer match). The event keeps its id, time and metadata; the guard
    /// becomes `head`'s version. `None` when the batch is not such a write, its guard still holds, or
    /// `rebase` declines.
    pub fn rebased(&self, head: &ItemHead, rebase: &Rebase) -> Option<AppendBatch> {
        let ([(key, expected)], [event]) = (self.item_versions.as_slice(), self.events.as_slice()) else {
            return None;
        };
        if self.expected_seq.is_some() || self.idempotency.is_some() || *expected == head.version {
            return None;
        }
        let payload = rebase(head)?;
        Some(AppendBatch {
            owner: self.owner.clone(),
            expected_seq: None,
            item_versions: vec![(key.clone(), head.version)],
            events: vec![NewEvent {
                payload,
                ..event.clone()
            }],
            idempotency: None,
        })
    }
}

/// Why an append did not happen. Nothing of a refused append is visible afterwards.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendError {
    /// The stream's last seq is not `expected_seq` (which was `Some`): someone else appended. Re-read and retry.
    ///
    /// Never the answer to an append with `expected_seq: None`.
    #[error("the stream moved on to seq {current}")]
    SeqMoved {
        /// The stream's actual last seq.
        current: Seq,
    },
    /// An item's version is not what the writer read: someone else changed it.
    #[error("item {key} moved on to version {current}")]
    VersionMoved {
        /// The item.
        key: ItemKey,
        /// Its actual version.
        current: Version,
    },
    /// A live (unexpired) record with the same key exists: the request was already handled.
    #[error("idempotency key already recorded")]
    KeyTaken,
    /// The batch breaks a limit of the store (event size, events per append, bytes per append).
    #[error("too large for the store: {0}")]
    TooLarge(String),
    /// The store failed; with `retryable`, the same append may succeed later. For an append with
    /// `expected_seq: None` on a store that cannot serialize a user's appends, this is also the answer
    /// when other appends kept moving the stream until the store's deadline (retryable).
    #[error(transparent)]
    Unavailable(#[from] Failure),
    /// The owner's account was erased: nothing can be appended to their stream or recorded for them again.
    ///
    /// An erasure and the owner's appends are serialized, so an append either happened before the
    /// erasure (and the erasure removed it) or is refused with this.
    #[error("the account was erased at {at}")]
    Erased {
        /// When it was erased.
        at: Timestamp,
    },
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store failed or holds an event this build cannot read.
    #[error(transparent)]
    Unavailable(#[from] Failure),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(failure) => failure,
        }
    }
}

/// The event log (DynamoDB on AWS; memory or an append-only file locally) and the heads projected beside it.
///
/// Every read is strongly consistent: it sees every append that returned `Ok` before it started.
pub trait EventStore: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Appends `batch.events` to `batch.owner`'s stream, all or nothing.
    ///
    /// Implementations MUST check, atomically with the write: with `expected_seq: Some(seq)`, the
    /// stream's last seq equals `seq` (else [`AppendError::SeqMoved`]); each item in `item_versions` is at
    /// that version (else [`AppendError::VersionMoved`]); no unexpired record holds the idempotency key
    /// (else [`AppendError::KeyTaken`]); in that order. On success the events are stored with the seqs
    /// that follow the stream's last one (`seq + 1 ..` for `Some(seq)`), the item heads, device registry
    /// and media objects reflect them, the idempotency record is stored, and the stored events are returned.
    ///
    /// With `expected_seq: None` implementations MUST serialize the owner's appends themselves: the
    /// events get the seqs after the stream's last one at the moment of the write, with no gap and no
    /// seq given twice, and the append MUST NOT fail because other appends (to other items) moved the
    /// stream. A store whose only serialization point is a conditional write (DynamoDB) MUST retry a
    /// moved seq itself, with jittered backoff, until a deadline of a few seconds.
    ///
    /// # Errors
    /// As above; [`AppendError::TooLarge`] before trying when the batch cannot fit the store;
    /// [`AppendError::Unavailable`] when the store failed (then nothing was written, or the outcome
    /// is unknown and a retry will see `SeqMoved`, `VersionMoved` or `KeyTaken`), and, retryable, when
    /// an append with `expected_seq: None` could not get its turn before the store's deadline.
    fn append(&self, batch: AppendBatch) -> impl Future<Output = Result<Vec<StoredEvent>, AppendError>> + Send;

    /// Appends `batch` as [`EventStore::append`] does, except that when its one item guard fails, a store
    /// that serializes a user's appends MAY re-plan it in place with [`AppendBatch::rebased`] on the item's
    /// current head, atomically with the write, instead of answering [`AppendError::VersionMoved`]; the
    /// returned events show what was written. Without that, concurrent writes to one item would each cost
    /// the writer a round trip per write that got there first.
    ///
    /// The default ignores `rebase` (DynamoDB: the writer plans again).
    ///
    /// # Errors
    /// As [`EventStore::append`].
    fn append_rebasing(
        &self,
        batch: AppendBatch,
        rebase: Rebase,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, AppendError>> + Send {
        let _ = rebase;
        self.append(batch)
    }

    /// Writes an idempotency record on its own (used to remember that a push was sent).
    ///
    /// # Errors
    /// [`AppendError::KeyTaken`] when an unexpired record holds the key; [`AppendError::Unavailable`].
    fn remember(&self, write: IdempotencyWrite) -> impl Future<Output = Result<(), AppendError>> + Send;

    /// The record of `key` for `owner`, expired or not (the caller judges expiry).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn idempotency(
        &self,
        owner: &UserId,
        key: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// The last seq of `owner`'s stream ([`Seq`]`(0)` when empty).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn last_seq(&self, owner: &UserId) -> impl Future<Output = Result<Seq, StoreError>> + Send;

    /// Up to `limit` events of `owner`'s stream with seq greater than `after`, in seq order.
    ///
    /// Implementations MUST return exactly `min(limit, available)` events, reading as many
    /// pages of the underlying store as that takes.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], including for an event that cannot be decoded (never skip one).
    fn read_feed(
        &self,
        owner: &UserId,
        after: Seq,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Up to `limit` `message.received` events of `owner`'s stream with seq greater than `after`, in seq order.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn read_messages(
        &self,
        owner: &UserId,
        after: Seq,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// The item's current head (version and live state); the default head if the key was never used.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn item_head(&self, owner: &UserId, key: &ItemKey) -> impl Future<Output = Result<ItemHead, StoreError>> + Send;

    /// Up to `limit` events of one item with version greater than `after`, in version order.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn item_history(
        &self,
        owner: &UserId,
        key: &ItemKey,
        after: Version,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Up to `limit` live items of `owner` in `collection` with id greater than `after`, ordered by id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn list_items(
        &self,
        owner: &UserId,
        collection: &CollectionName,
        after: Option<&ItemId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Item>, StoreError>> + Send;

    /// The user's device registry.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn devices(&self, owner: &UserId) -> impl Future<Output = Result<Devices, StoreError>> + Send;

    /// A declared media object of `owner`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn media(
        &self,
        owner: &UserId,
        id: &MediaId,
    ) -> impl Future<Output = Result<Option<MediaObject>, StoreError>> + Send;

    /// Up to `limit` users with a non-empty stream, with id greater than `after`, ordered by id
    /// (used to rebuild projections from the log).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn owners(
        &self,
        after: Option<&UserId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<UserId>, StoreError>> + Send;

    /// Erases `owner`'s account: their whole stream, everything projected from it (item heads, inbox,
    /// device registry, media objects), their idempotency records, and their events in the change feed,
    /// leaving only an erasure marker (the owner and `at`). Answers the marker's time: `at`, or the time
    /// of an earlier erasure, which a repeat keeps (a repeat is harmless).
    ///
    /// Implementations MUST serialize an erasure with the owner's appends and records: once it has
    /// returned, every [`EventStore::append`] to the owner's stream and every [`EventStore::remember`] for
    /// them is refused with [`AppendError::Erased`], and no read answers anything of theirs (their reads
    /// are those of a user who never wrote, [`EventStore::owners`] skips them, and
    /// [`crate::ChangeFeed::changes_after`] no longer yields their events). Messages the owner sent live
    /// in their recipients' streams and are not touched. A store that keeps files MUST leave no copy of
    /// the erased data in them once this returns (free pages, journals), as far as it controls them.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]: nothing was erased, or all of it was (a store that cannot erase at
    /// all answers a permanent one); trying again is safe.
    fn erase_owner(&self, owner: &UserId, at: Timestamp) -> impl Future<Output = Result<Timestamp, StoreError>> + Send;

    /// When `owner`'s account was erased, `None` if it never was.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn erased(&self, owner: &UserId) -> impl Future<Output = Result<Option<Timestamp>, StoreError>> + Send;

    /// The device registry of erased `owner` as long as their rows are not purged, read whatever the
    /// store hides from the owner's own reads; empty for a user who is not erased.
    ///
    /// A store whose [`EventStore::erase_owner`] leaves the rows for a later purge (DynamoDB on Lambda)
    /// answers [`EventStore::devices`] for an erased owner with nothing, yet the erasure's last steps
    /// need the devices' push endpoints to delete them ([`crate::ErasureService::finish`]). A store that
    /// erases everything before `erase_owner` answers has nothing left to give: the default answers an
    /// empty registry.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn erased_devices(&self, owner: &UserId) -> impl Future<Output = Result<Devices, StoreError>> + Send {
        let _ = owner;
        async { Ok(Devices::new()) }
    }

    /// Deletes what is left of erased `owner`'s rows after [`EventStore::erase_owner`], until done or
    /// until `deadline`; harmless to repeat, and resumable: a run that stopped is simply run again.
    ///
    /// Implementations MUST refuse (permanently, deleting nothing) for an owner without an erasure
    /// marker, so that this can never delete a live account. A store that erases everything before
    /// `erase_owner` answers has nothing to purge: the default answers [`PurgeProgress::Done`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]: what was deleted stays deleted; trying again is safe.
    fn purge_erased(
        &self,
        owner: &UserId,
        deadline: Option<tokio::time::Instant>,
    ) -> impl Future<Output = Result<PurgeProgress, StoreError>> + Send {
        let _ = (owner, deadline);
        async { Ok(PurgeProgress::Done { deleted: 0 }) }
    }
}

/// How far one run of [`EventStore::purge_erased`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeProgress {
    /// Nothing of the owner is left in the store but the erasure marker.
    Done {
        /// Rows this run deleted.
        deleted: u64,
    },
    /// The deadline came first; run it again to go on.
    Unfinished {
        /// Rows this run deleted.
        deleted: u64,
    },
}
