//! The [`DynamoStore`] itself: reads (strongly consistent, paginated to the end) and the append that runs
//! a prepared transaction and maps its outcome onto the port's errors.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use rookery_domain::device::Devices;
use rookery_domain::{
    CollectionName, EventPayload, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Seq, StoredEvent, Timestamp,
    UserId, Version,
};
use rookery_ports::{AppendBatch, AppendError, EventStore, Failure, IdempotencyRecord, IdempotencyWrite, StoreError};

use super::cancellation::{Cancelled, TxError, classify_transaction_error};
use super::rows::{
    Attrs, DEVICES_SK, HEAD_SK, OWNERS_PK, decode_row_event, event_sk, get_n, get_s, history_sk, idem_sk,
    idempotency_condition, idempotency_item, item_prefix, item_sk, json_failure, key_of, media_sk, s, user_pk,
};
use super::transaction::{Prepared, prepare};
use crate::error::{RetryPolicy, sdk_failure};

/// The event store on one DynamoDB table (see the module docs for the layout).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: Arc<str>,
    retry: RetryPolicy,
    /// The most rows one `Query` page may evaluate (DynamoDB also stops a page at 1 MB).
    page_limit: usize,
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
            page_limit: 1000,
        }
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
        self.retry
            .run(Failure::is_retryable, || async {
                self.client
                    .get_item()
                    .table_name(self.table.as_ref())
                    .set_key(Some(key_of(pk.clone(), sk.clone())))
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

    async fn transact(&self, prepared: &Prepared) -> Result<(), TxError> {
        self.retry
            .run(
                |error: &TxError| match error {
                    TxError::Cancelled(Cancelled::Transient(_)) => true,
                    TxError::Other(failure) => failure.is_retryable(),
                    TxError::Cancelled(_) => false,
                },
                || async {
                    self.client
                        .transact_write_items()
                        .set_transact_items(Some(prepared.actions.clone()))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| classify_transaction_error(&e, &prepared.roles))
                },
            )
            .await
    }
}

impl EventStore for DynamoStore {
    async fn append(&self, batch: AppendBatch) -> Result<Vec<StoredEvent>, AppendError> {
        if batch.events.is_empty() && batch.idempotency.is_none() && batch.item_versions.is_empty() {
            // Nothing to write and nothing to guard but the seq: answer as the transaction would.
            let current = self.last_seq_of(&batch.owner).await?;
            return if current == batch.expected_seq {
                Ok(Vec::new())
            } else {
                Err(AppendError::SeqMoved { current })
            };
        }
        let has_device_events = batch
            .events
            .iter()
            .any(|e| matches!(e.payload, EventPayload::Device(_)));
        // The registry read here is the one at `expected_seq`: if another append moved it, the seq moved too
        // and the transaction below is refused.
        let devices = if has_device_events {
            Some(self.devices_now(&batch.owner).await?)
        } else {
            None
        };
        let prepared = prepare(&self.table, &batch, devices.as_ref())?;
        match self.transact(&prepared).await {
            Ok(()) => Ok(prepared.stored),
            Err(TxError::Cancelled(Cancelled::SeqMoved(current))) => Err(AppendError::SeqMoved { current }),
            Err(TxError::Cancelled(Cancelled::VersionMoved(key, current))) => {
                Err(AppendError::VersionMoved { key, current })
            }
            Err(TxError::Cancelled(Cancelled::KeyTaken)) => Err(AppendError::KeyTaken),
            // Not retried here: the same transaction would most likely be cancelled the same way.
            Err(TxError::Cancelled(Cancelled::Unexplained(why))) => {
                Err(AppendError::Unavailable(Failure::transient(why)))
            }
            Err(TxError::Cancelled(Cancelled::Transient(why))) => {
                Err(AppendError::Unavailable(Failure::transient(why)))
            }
            Err(TxError::Cancelled(Cancelled::Permanent(why))) => {
                Err(AppendError::Unavailable(Failure::permanent(why)))
            }
            Err(TxError::Other(failure)) => Err(AppendError::Unavailable(failure)),
        }
    }

    async fn remember(&self, write: IdempotencyWrite) -> Result<(), AppendError> {
        let item = idempotency_item(&write)?;
        let (condition, _, values) = idempotency_condition(&write);
        let outcome = self
            .retry
            .run(
                |e: &SdkError<PutItemError, HttpResponse>| sdk_failure("PutItem", e).is_retryable(),
                || async {
                    self.client
                        .put_item()
                        .table_name(self.table.as_ref())
                        .set_item(Some(item.clone()))
                        .condition_expression(condition.clone())
                        .set_expression_attribute_values(Some(values.clone()))
                        .send()
                        .await
                },
            )
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(context)) if context.err().is_conditional_check_failed_exception() => {
                Err(AppendError::KeyTaken)
            }
            Err(error) => Err(AppendError::Unavailable(sdk_failure("PutItem", &error))),
        }
    }

    async fn idempotency(&self, owner: &UserId, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
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
        Ok(self.last_seq_of(owner).await?)
    }

    async fn read_feed(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
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
        Ok(self.devices_now(owner).await?)
    }

    async fn media(&self, owner: &UserId, id: &MediaId) -> Result<Option<MediaObject>, StoreError> {
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
}
