//! The [`DynamoStore`] itself: reads (strongly consistent, paginated to the end) and the append that runs
//! a prepared transaction and maps its outcome onto the port's errors.
//!
//! The conditional `TransactWriteItems` on the user head is what serializes a user's appends. An append
//! that names no seq therefore waits for its process's turn on the user (see `turns`), reads the head
//! itself (or takes it from the append before it), and when an append of another process moved it first,
//! tries again at the seq the cancellation reported, after a jittered exponential wait, until
//! [`Contention::deadline`]; only then does it answer a retryable `Unavailable`. Writes of one user to
//! different items never fail because of each other; they only wait for their turn.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use rookery_domain::device::Devices;
use rookery_domain::{
    CollectionName, EventPayload, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Seq, StoredEvent, Timestamp,
    UserId, Version,
};
use rookery_ports::{
    AppendBatch, AppendError, Backoff, EventStore, Failure, IdempotencyRecord, IdempotencyWrite, PurgeProgress,
    StoreError,
};
use tokio::time::Instant;

use super::cancellation::{Cancelled, TxError, classify_transaction_error};
use super::erasure::Purged;
use super::rows::{
    Attrs, DEVICES_SK, HEAD_SK, OWNERS_PK, decode_row_event, event_sk, get_n, get_s, history_sk, idem_sk,
    idempotency_condition, idempotency_item, item_prefix, item_sk, json_failure, key_of, media_sk, s, user_pk,
};
use super::transaction::{Action, Prepared, Role, build, erased_check, prepare};
use super::turns::Turns;
use crate::error::{RetryPolicy, sdk_failure};

/// How an append that names no seq waits for its turn while other appends of the same user move the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contention {
    /// The jittered wait between two tries.
    pub backoff: Backoff,
    /// How long an append may wait for its turn and keep trying before it answers a retryable `Unavailable`.
    pub deadline: Duration,
}

impl Default for Contention {
    /// Waits of up to 5 ms, doubling to 250 ms, for at most 5 s: far longer than a user's own devices keep
    /// a head busy, and well within API Gateway's 29 s.
    fn default() -> Self {
        Self {
            backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(250)),
            deadline: Duration::from_secs(5),
        }
    }
}

/// How one try of an append at a given seq ended, when it did not succeed.
#[derive(Debug)]
enum Tried {
    /// The user head was not at the seq tried; it was at this one.
    SeqMoved(Seq),
    /// Cancelled by a conflicting transaction or throttling, after the retry policy's attempts: nothing
    /// was written, and another try may succeed.
    Contended(String),
    /// Anything else: the answer.
    Failed(AppendError),
}

impl Tried {
    fn into_error(self) -> AppendError {
        match self {
            Tried::SeqMoved(current) => AppendError::SeqMoved { current },
            Tried::Contended(why) => AppendError::Unavailable(Failure::transient(why)),
            Tried::Failed(error) => error,
        }
    }
}

impl From<Failure> for Tried {
    fn from(failure: Failure) -> Self {
        Tried::Failed(AppendError::Unavailable(failure))
    }
}

/// The event store on one DynamoDB table (see the module docs for the layout).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: Arc<str>,
    retry: RetryPolicy,
    contention: Contention,
    /// This store's (and its clones') appends in flight, one at a time per user.
    turns: Arc<Turns>,
    /// The most rows one `Query` page may evaluate (DynamoDB also stops a page at 1 MB).
    page_limit: usize,
    /// Where an erasure deletes the user's partition.
    purge: Purge,
}

/// Where [`EventStore::erase_owner`] deletes the erased user's partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Purge {
    /// Before it answers: the marker, then every row (`rookery serve --backend aws`, tests). Long for a
    /// long stream (about 100 seconds per 100,000 rows at a partition's 1,000 writes per second).
    #[default]
    Inline,
    /// Later: `erase_owner` writes only the marker and answers; a consumer of the table's stream that
    /// sees the marker's INSERT runs [`DynamoStore::purge_erased`] (the Lambda functions, whose API
    /// answers within 29 s). Until the purge is done every read of the user checks the marker first and
    /// answers as for a user who never wrote, so nothing of the account is readable meanwhile.
    Deferred,
}

/// A key range of one partition, and what to keep from it.
struct Range<'a> {
    pk: String,
    low: String,
    high: String,
    filter: Option<(&'a str, HashMap<String, String>, Attrs)>,
}

impl DynamoStore {
    /// A store on `table`, through `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: Arc::from(table.into()),
            retry: RetryPolicy::default(),
            contention: Contention::default(),
            turns: Arc::default(),
            page_limit: 1000,
            purge: Purge::Inline,
        }
    }

    /// The same store deleting an erased user's partition where `purge` says.
    #[must_use]
    pub fn with_purge(mut self, purge: Purge) -> Self {
        self.purge = purge;
        self
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    pub(super) fn page_limit(&self) -> usize {
        self.page_limit
    }

    /// Whether reads of `owner` must answer nothing: only while a deferred purge may still be running.
    async fn hidden(&self, owner: &UserId) -> Result<bool, Failure> {
        Ok(self.purge == Purge::Deferred && self.marker(owner).await?.is_some())
    }

    /// The same store waiting for its turn under `contention` when an append that names no seq finds the
    /// user's head moved.
    #[must_use]
    pub fn with_contention(mut self, contention: Contention) -> Self {
        self.contention = contention;
        self
    }

    /// The same store reading at most `rows` rows per `Query` page (at least 1).
    ///
    /// Small pages make every read follow `LastEvaluatedKey` many times, which tests use to exercise
    /// pagination on an emulator that does not cut pages at 1 MB.
    #[must_use]
    pub fn with_page_limit(mut self, rows: usize) -> Self {
        self.page_limit = rows.max(1);
        self
    }

    /// The same store with another retry policy for transient failures.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get(&self, pk: String, sk: String) -> Result<Option<Attrs>, Failure> {
        self.get_key(key_of(pk, sk)).await
    }

    pub(super) async fn get_key(&self, key: Attrs) -> Result<Option<Attrs>, Failure> {
        self.retry
            .run(Failure::is_retryable, || async {
                self.client
                    .get_item()
                    .table_name(self.table.as_ref())
                    .set_key(Some(key.clone()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map(|out| out.item)
                    .map_err(|e| sdk_failure("GetItem", &e))
            })
            .await
    }

    /// Up to `limit` rows of a key range, in key order, strongly consistent, reading pages until done.
    async fn query(&self, range: Range<'_>, limit: usize) -> Result<Vec<Attrs>, Failure> {
        let mut rows = Vec::new();
        let mut start: Option<Attrs> = None;
        while rows.len() < limit {
            let mut values = HashMap::from([
                (":pk".to_owned(), s(range.pk.clone())),
                (":low".to_owned(), s(range.low.clone())),
                (":high".to_owned(), s(range.high.clone())),
            ]);
            let mut names = HashMap::new();
            let mut request = self
                .client
                .query()
                .table_name(self.table.as_ref())
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
                .set_exclusive_start_key(start.take());
            // `Limit` counts rows evaluated before the filter: without a filter every row read is kept,
            // so read no more than still needed; with one, a page may keep fewer rows than it read.
            let page = match &range.filter {
                Some((expression, filter_names, filter_values)) => {
                    request = request.filter_expression(*expression);
                    names.extend(filter_names.clone());
                    values.extend(filter_values.clone());
                    self.page_limit
                }
                None => (limit - rows.len()).min(self.page_limit),
            };
            request = request.limit(i32::try_from(page).unwrap_or(i32::MAX));
            let request = request
                .set_expression_attribute_values(Some(values))
                .set_expression_attribute_names((!names.is_empty()).then_some(names));
            let page = self
                .retry
                .run(Failure::is_retryable, || async {
                    request.clone().send().await.map_err(|e| sdk_failure("Query", &e))
                })
                .await?;
            rows.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        rows.truncate(limit);
        Ok(rows)
    }

    fn event_range(owner: &UserId, after: Seq) -> (String, String, String) {
        (user_pk(owner), event_sk(after.0.saturating_add(1)), event_sk(u64::MAX))
    }

    async fn devices_now(&self, owner: &UserId) -> Result<Devices, Failure> {
        match self.get(user_pk(owner), DEVICES_SK.into()).await? {
            Some(row) => serde_json::from_str(get_s(&row, "devices")?).map_err(|e| json_failure("stored devices", &e)),
            None => Ok(Devices::new()),
        }
    }

    async fn last_seq_of(&self, owner: &UserId) -> Result<Seq, Failure> {
        match self.get(user_pk(owner), HEAD_SK.into()).await? {
            Some(row) => Ok(Seq(get_n(&row, "last_seq")?)),
            None => Ok(Seq(0)),
        }
    }

    /// Runs a prepared transaction under the retry policy; answers its outcome and how many times it was sent.
    async fn transact(&self, prepared: &Prepared) -> (Result<(), TxError>, u32) {
        let mut sent = 0;
        let outcome = self
            .retry
            .run(
                |error: &TxError| match error {
                    TxError::Cancelled(Cancelled::Transient(_)) => true,
                    TxError::Other(failure) => failure.is_retryable(),
                    TxError::Cancelled(_) => false,
                },
                || {
                    sent += 1;
                    async {
                        self.client
                            .transact_write_items()
                            .set_transact_items(Some(prepared.actions.clone()))
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| classify_transaction_error(&e, &prepared.roles))
                    }
                },
            )
            .await;
        (outcome, sent)
    }

    /// The event at `seq` of `owner`'s stream, if there is one.
    async fn event_at(&self, owner: &UserId, seq: Seq) -> Result<Option<StoredEvent>, Failure> {
        self.get(user_pk(owner), event_sk(seq.0))
            .await?
            .as_ref()
            .map(decode_row_event)
            .transpose()
    }

    /// One try of `batch` continuing the stream from seq `at`.
    async fn try_append(&self, batch: &AppendBatch, at: Seq) -> Result<Vec<StoredEvent>, Tried> {
        let has_device_events = batch
            .events
            .iter()
            .any(|e| matches!(e.payload, EventPayload::Device(_)));
        // The registry is read after the head was seen at `at`: if another append moved it since, the seq
        // moved too and the transaction below is refused, so a registry it writes is always the one at `at`.
        let devices = if has_device_events {
            Some(self.devices_now(&batch.owner).await?)
        } else {
            None
        };
        let prepared = prepare(&self.table, batch, at, devices.as_ref()).map_err(Tried::Failed)?;
        let (outcome, sent) = self.transact(&prepared).await;
        let refused = |error| Err(Tried::Failed(error));
        match outcome {
            Ok(()) => Ok(prepared.stored),
            Err(TxError::Cancelled(Cancelled::SeqMoved(current))) => {
                // A transaction sent again after a failure whose outcome was unknown (a timeout) finds the
                // head moved by its own first sending when that one was committed: its events are there.
                if sent > 1
                    && let Some(first) = prepared.stored.first()
                    && self
                        .event_at(&batch.owner, first.seq)
                        .await?
                        .is_some_and(|stored| stored.event_id == first.event_id)
                {
                    return Ok(prepared.stored);
                }
                Err(Tried::SeqMoved(current))
            }
            Err(TxError::Cancelled(Cancelled::VersionMoved(key, current))) => {
                refused(AppendError::VersionMoved { key, current })
            }
            Err(TxError::Cancelled(Cancelled::KeyTaken)) => refused(AppendError::KeyTaken),
            Err(TxError::Cancelled(Cancelled::Erased(at))) => refused(AppendError::Erased { at }),
            // Not retried here: the same transaction would most likely be cancelled the same way.
            Err(TxError::Cancelled(Cancelled::Unexplained(why))) => {
                refused(AppendError::Unavailable(Failure::transient(why)))
            }
            Err(TxError::Cancelled(Cancelled::Transient(why))) => Err(Tried::Contended(why)),
            Err(TxError::Cancelled(Cancelled::Permanent(why))) => {
                refused(AppendError::Unavailable(Failure::permanent(why)))
            }
            Err(TxError::Other(failure)) => refused(AppendError::Unavailable(failure)),
        }
    }

    /// Appends a batch that names no seq at the end of the stream: waits for this process's turn on the
    /// user, tries at the head (as the previous append left it, or as read), and while appends of other
    /// processes move the head first, waits (jittered, growing) and tries again where the head went;
    /// all until the deadline.
    async fn append_at_end(&self, batch: &AppendBatch) -> Result<Vec<StoredEvent>, AppendError> {
        let deadline = Instant::now() + self.contention.deadline;
        let busy = |tries: u32, why: &str| {
            tracing::warn!(
                owner = %batch.owner,
                tries,
                deadline_ms = self.contention.deadline.as_millis(),
                "an append could not get its turn on a busy stream"
            );
            AppendError::Unavailable(Failure::transient(format!(
                "other appends of this user kept the stream busy ({tries} tries): {why}; try again"
            )))
        };
        let Ok(mut turn) = tokio::time::timeout_at(deadline, self.turns.take(&batch.owner)).await else {
            return Err(busy(0, "waiting for this process's earlier appends"));
        };
        let mut at = match turn.known_seq() {
            Some(seq) => seq,
            None => self.last_seq_of(&batch.owner).await?,
        };
        turn.leave_at(None);
        let mut retry = 0;
        loop {
            let why = match self.try_append(batch, at).await {
                Ok(stored) => {
                    turn.leave_at(stored.last().map(|event| event.seq));
                    return Ok(stored);
                }
                Err(Tried::SeqMoved(current)) => {
                    // A head only moves up: a cancellation that saw it at or below the seq tried says
                    // nothing new, so read it.
                    at = if current > at {
                        current
                    } else {
                        self.last_seq_of(&batch.owner).await?
                    };
                    format!("the stream kept moving (last at seq {at})")
                }
                Err(Tried::Contended(why)) => {
                    at = self.last_seq_of(&batch.owner).await?;
                    why
                }
                Err(Tried::Failed(error)) => return Err(error),
            };
            retry += 1;
            let delay = self.contention.backoff.delay(retry);
            if Instant::now() + delay >= deadline {
                return Err(busy(retry, &why));
            }
            tokio::time::sleep(delay).await;
        }
    }
}

impl EventStore for DynamoStore {
    async fn append(&self, batch: AppendBatch) -> Result<Vec<StoredEvent>, AppendError> {
        if batch.events.is_empty() && batch.idempotency.is_none() && batch.item_versions.is_empty() {
            // Nothing to write and nothing to guard but the seq: answer as the transaction would.
            let Some(expected) = batch.expected_seq else {
                return Ok(Vec::new());
            };
            let current = self.last_seq_of(&batch.owner).await?;
            return if current == expected {
                Ok(Vec::new())
            } else {
                Err(AppendError::SeqMoved { current })
            };
        }
        match batch.expected_seq {
            Some(expected) => self.try_append(&batch, expected).await.map_err(Tried::into_error),
            None => self.append_at_end(&batch).await,
        }
    }

    async fn remember(&self, write: IdempotencyWrite) -> Result<(), AppendError> {
        // One transaction with the erasure marker's check, so a record never outlives an erasure.
        let item = idempotency_item(&write)?;
        let actions = vec![
            erased_check(&write.owner),
            Action {
                role: Role::Idempotency,
                item,
                condition: Some(idempotency_condition(&write)),
                check_only: false,
            },
        ];
        let (actions, roles) = build(&self.table, actions)?;
        let prepared = Prepared {
            actions,
            roles,
            stored: Vec::new(),
        };
        match self.transact(&prepared).await.0 {
            Ok(()) => Ok(()),
            Err(TxError::Cancelled(Cancelled::KeyTaken)) => Err(AppendError::KeyTaken),
            Err(TxError::Cancelled(Cancelled::Erased(at))) => Err(AppendError::Erased { at }),
            Err(TxError::Cancelled(other)) => Err(AppendError::Unavailable(Failure::transient(format!(
                "recording an idempotency key: {other:?}"
            )))),
            Err(TxError::Other(failure)) => Err(AppendError::Unavailable(failure)),
        }
    }

    async fn idempotency(&self, owner: &UserId, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        if self.hidden(owner).await? {
            return Ok(None);
        }
        let Some(row) = self.get(user_pk(owner), idem_sk(key)).await? else {
            return Ok(None);
        };
        let outcome = serde_json::from_str(get_s(&row, "outcome")?).map_err(|e| json_failure("stored outcome", &e))?;
        Ok(Some(IdempotencyRecord {
            key: get_s(&row, "key")?.to_owned(),
            fingerprint: get_s(&row, "fingerprint")?.to_owned(),
            outcome,
            recorded_at: Timestamp::from_millis(get_n(&row, "recorded_at")?),
        }))
    }

    async fn last_seq(&self, owner: &UserId) -> Result<Seq, StoreError> {
        if self.hidden(owner).await? {
            return Ok(Seq(0));
        }
        Ok(self.last_seq_of(owner).await?)
    }

    async fn read_feed(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        if self.hidden(owner).await? {
            return Ok(Vec::new());
        }
        let (pk, low, high) = Self::event_range(owner, after);
        let rows = self
            .query(
                Range {
                    pk,
                    low,
                    high,
                    filter: None,
                },
                limit,
            )
            .await?;
        Ok(rows.iter().map(decode_row_event).collect::<Result<_, _>>()?)
    }

    async fn read_messages(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        if self.hidden(owner).await? {
            return Ok(Vec::new());
        }
        let (pk, low, high) = Self::event_range(owner, after);
        let filter = (
            "#type = :type",
            HashMap::from([("#type".to_owned(), "type".to_owned())]),
            HashMap::from([(":type".to_owned(), s("message.received"))]),
        );
        let rows = self
            .query(
                Range {
                    pk,
                    low,
                    high,
                    filter: Some(filter),
                },
                limit,
            )
            .await?;
        Ok(rows.iter().map(decode_row_event).collect::<Result<_, _>>()?)
    }

    async fn item_head(&self, owner: &UserId, key: &ItemKey) -> Result<ItemHead, StoreError> {
        if self.hidden(owner).await? {
            return Ok(ItemHead::default());
        }
        let Some(row) = self.get(user_pk(owner), item_sk(key)).await? else {
            return Ok(ItemHead::default());
        };
        let item = match row.get("item") {
            Some(AttributeValue::S(text)) => {
                Some(serde_json::from_str::<Item>(text).map_err(|e| json_failure("stored item", &e))?)
            }
            _ => None,
        };
        Ok(ItemHead {
            version: Version(get_n(&row, "version")?),
            item,
        })
    }

    async fn item_history(
        &self,
        owner: &UserId,
        key: &ItemKey,
        after: Version,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if self.hidden(owner).await? {
            return Ok(Vec::new());
        }
        let range = Range {
            pk: user_pk(owner),
            low: history_sk(key, after.0.saturating_add(1)),
            high: history_sk(key, u64::MAX),
            filter: None,
        };
        let rows = self.query(range, limit).await?;
        Ok(rows.iter().map(decode_row_event).collect::<Result<_, _>>()?)
    }

    async fn list_items(
        &self,
        owner: &UserId,
        collection: &CollectionName,
        after: Option<&ItemId>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        if self.hidden(owner).await? {
            return Ok(Vec::new());
        }
        let prefix = item_prefix(collection);
        // Ids use only `[A-Za-z0-9_.:-]`, all above `!` and below `~`, so these bounds hold exactly the
        // collection's ids after `after`.
        let low = match after {
            Some(id) => format!("{prefix}{id}!"),
            None => prefix.clone(),
        };
        let filter = (
            "live = :live",
            HashMap::new(),
            HashMap::from([(":live".to_owned(), AttributeValue::Bool(true))]),
        );
        let range = Range {
            pk: user_pk(owner),
            low,
            high: format!("{prefix}~"),
            filter: Some(filter),
        };
        let rows = self.query(range, limit).await?;
        let items = rows
            .iter()
            .map(|row| serde_json::from_str::<Item>(get_s(row, "item")?).map_err(|e| json_failure("stored item", &e)))
            .collect::<Result<_, _>>()?;
        Ok(items)
    }

    async fn devices(&self, owner: &UserId) -> Result<Devices, StoreError> {
        if self.hidden(owner).await? {
            return Ok(Devices::new());
        }
        Ok(self.devices_now(owner).await?)
    }

    async fn media(&self, owner: &UserId, id: &MediaId) -> Result<Option<MediaObject>, StoreError> {
        if self.hidden(owner).await? {
            return Ok(None);
        }
        let Some(row) = self.get(user_pk(owner), media_sk(id)).await? else {
            return Ok(None);
        };
        let object = serde_json::from_str(get_s(&row, "media")?).map_err(|e| json_failure("stored media", &e))?;
        Ok(Some(object))
    }

    async fn owners(&self, after: Option<&UserId>, limit: usize) -> Result<Vec<UserId>, StoreError> {
        // User ids use only `[A-Za-z0-9_.:@+-]`, all above `!` and below `~`.
        let low = after.map_or_else(|| "!".to_owned(), |id| format!("{id}!"));
        let range = Range {
            pk: OWNERS_PK.into(),
            low,
            high: "~".into(),
            filter: None,
        };
        let rows = self.query(range, limit).await?;
        let owners = rows
            .iter()
            .map(|row| {
                UserId::parse(get_s(row, "sk")?).map_err(|e| Failure::permanent(format!("stored owner id: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(owners)
    }

    /// Writes the erasure marker (which from then on refuses every append and record of `owner`), then,
    /// with [`Purge::Inline`], deletes every row of their partition before answering; with
    /// [`Purge::Deferred`] a consumer of the marker's stream record does that, and reads answer nothing
    /// of `owner` meanwhile. A repeat keeps the first marker's time and finishes an unfinished purge.
    async fn erase_owner(&self, owner: &UserId, at: Timestamp) -> Result<Timestamp, StoreError> {
        let marked = self.mark_erased(owner, at).await?;
        if self.purge == Purge::Inline {
            self.purge_erased(owner, None).await?;
        }
        Ok(marked)
    }

    async fn erased(&self, owner: &UserId) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.marker(owner).await?)
    }

    /// The registry row, read past the marker that hides it from `owner`'s reads while a deferred purge
    /// has not deleted it; empty for an owner without a marker.
    async fn erased_devices(&self, owner: &UserId) -> Result<Devices, StoreError> {
        if self.marker(owner).await?.is_none() {
            return Ok(Devices::new());
        }
        Ok(self.devices_now(owner).await?)
    }

    async fn purge_erased(&self, owner: &UserId, deadline: Option<Instant>) -> Result<PurgeProgress, StoreError> {
        Ok(match DynamoStore::purge_erased(self, owner, deadline).await? {
            Purged::Done { deleted } => PurgeProgress::Done { deleted },
            Purged::Unfinished { deleted } => PurgeProgress::Unfinished { deleted },
        })
    }
}
