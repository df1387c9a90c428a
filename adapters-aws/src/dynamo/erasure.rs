//! Erasing an account on DynamoDB: the marker first, then every row of the user's partition.
//!
//! The marker (`pk = "erased#<user>"`, `sk = "erased"`, with `at`) lives in its own partition, so deleting
//! the user's partition never deletes it, and every append and idempotency record of the user checks it
//! absent inside its own `TransactWriteItems`. DynamoDB serializes the marker's `PutItem` with those
//! transactions on the marker's key: a transaction that commits first has its rows in the partition
//! before the purge's first (strongly consistent) page is read, so the purge deletes them; one that comes
//! after is cancelled as [`Cancelled::Erased`](super::cancellation::Cancelled). No write of the user can
//! land after the purge has passed it.
//!
//! The marker is written in one transaction with the deletion of the user's row in the `owners`
//! partition, so rebuilds stop listing the user at the same moment.
//!
//! The purge reads the partition's keys a page at a time (strongly consistent, from the start each time:
//! what the previous page deleted is gone) and deletes them with `BatchWriteItem` of 25, several in
//! flight, sending `UnprocessedItems` again after a jittered, growing wait. It keeps no state of its own:
//! run again after an interruption, it finds what is left and deletes that, so it is resumable and
//! idempotent. It refuses to run for a user without a marker, so it can never delete a live account.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{Delete, DeleteRequest, Put, TransactWriteItem, WriteRequest};
use rookery_domain::{Timestamp, UserId};
use rookery_ports::{Backoff, Failure};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cancellation::{Cancelled, TxError, classify_transaction_error};
use super::rows::{Attrs, KIND_ERASED, OWNERS_PK, erased_key, get_n, key_of, n, s, user_pk};
use super::store::DynamoStore;
use super::transaction::Role;
use crate::error::sdk_failure;

/// The most deletes of one `BatchWriteItem` (DynamoDB's limit).
pub const BATCH_WRITE_ITEMS: usize = 25;
/// How many `BatchWriteItem` calls one purge keeps in flight.
const IN_FLIGHT: usize = 4;
/// How many times a batch's unprocessed items are sent again before the purge gives up (retryably).
const UNPROCESSED_RETRIES: u32 = 12;
/// The wait before sending unprocessed items again: full jitter from 50 ms, doubling to 5 s.
const UNPROCESSED_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));

/// How one run of [`DynamoStore::purge_erased`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purged {
    /// The partition is empty: nothing of the user is left in the table but the marker.
    Done {
        /// Rows this run deleted.
        deleted: u64,
    },
    /// The deadline came first; run it again to go on where it stopped.
    Unfinished {
        /// Rows this run deleted.
        deleted: u64,
    },
}

impl DynamoStore {
    /// When `owner`'s account was erased, as its marker says.
    pub(super) async fn marker(&self, owner: &UserId) -> Result<Option<Timestamp>, Failure> {
        let key = erased_key(owner);
        let row = self.get_key(key).await?;
        row.map(|row| get_n(&row, "at").map(Timestamp::from_millis)).transpose()
    }

    /// Writes `owner`'s erasure marker at `at` (and drops them from the `owners` list), unless there is one
    /// already; answers the marker's time either way.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB cannot be reached or refuses; nothing was written then.
    pub async fn mark_erased(&self, owner: &UserId, at: Timestamp) -> Result<Timestamp, Failure> {
        let built = |e: aws_sdk_dynamodb::error::BuildError| Failure::permanent(format!("building the marker: {e}"));
        let mut marker = erased_key(owner);
        marker.insert("kind".into(), s(KIND_ERASED));
        marker.insert("owner".into(), s(owner.as_str()));
        marker.insert("at".into(), n(at.as_millis()));
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(built)?;
        let listed = Delete::builder()
            .table_name(self.table())
            .set_key(Some(key_of(OWNERS_PK.into(), owner.as_str().into())))
            .build()
            .map_err(built)?;
        let actions = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().delete(listed).build(),
        ];
        let roles = [Role::Erased, Role::Plain];
        let outcome = self
            .retry()
            .run(
                |error: &TxError| match error {
                    TxError::Cancelled(Cancelled::Transient(_)) => true,
                    TxError::Other(failure) => failure.is_retryable(),
                    TxError::Cancelled(_) => false,
                },
                || async {
                    self.client()
                        .transact_write_items()
                        .set_transact_items(Some(actions.clone()))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| classify_transaction_error(&e, &roles))
                },
            )
            .await;
        match outcome {
            Ok(()) => Ok(at),
            // Erased before (or by this call's own first sending, when its answer was lost): keep that time.
            Err(TxError::Cancelled(Cancelled::Erased(_))) => self
                .marker(owner)
                .await?
                .ok_or_else(|| Failure::transient("the erasure marker's condition failed, yet no marker was found")),
            Err(TxError::Cancelled(other)) => Err(Failure::transient(format!("writing the erasure marker: {other:?}"))),
            Err(TxError::Other(failure)) => Err(failure),
        }
    }

    /// Deletes every row of erased `owner`'s partition, until done or until `deadline`.
    ///
    /// Resumable and idempotent (see the module docs): a run that stopped, failed or timed out is simply
    /// run again.
    ///
    /// # Errors
    /// A permanent [`Failure`] when `owner` has no erasure marker (nothing is deleted); a [`Failure`] when
    /// DynamoDB fails or keeps leaving items unprocessed: what was deleted stays deleted.
    pub async fn purge_erased(&self, owner: &UserId, deadline: Option<Instant>) -> Result<Purged, Failure> {
        if self.marker(owner).await?.is_none() {
            return Err(Failure::permanent(format!(
                "refusing to purge the partition of {owner}: the account has no erasure marker"
            )));
        }
        let mut deleted = 0u64;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Purged::Unfinished { deleted });
            }
            let keys = self.partition_keys(owner).await?;
            if keys.is_empty() {
                tracing::info!(%owner, deleted, "erased account's partition purged");
                return Ok(Purged::Done { deleted });
            }
            let count = keys.len() as u64;
            self.delete_keys(keys).await?;
            deleted += count;
        }
    }

    /// The keys of the first page of `owner`'s partition (strongly consistent, keys only).
    async fn partition_keys(&self, owner: &UserId) -> Result<Vec<Attrs>, Failure> {
        let limit = i32::try_from(self.page_limit()).unwrap_or(i32::MAX);
        let page = self
            .retry()
            .run(Failure::is_retryable, || async {
                self.client()
                    .query()
                    .table_name(self.table())
                    .consistent_read(true)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(user_pk(owner)))
                    .projection_expression("pk, sk")
                    .limit(limit)
                    .send()
                    .await
                    .map_err(|e| sdk_failure("Query", &e))
            })
            .await?;
        Ok(page.items.unwrap_or_default())
    }

    /// Deletes `keys` in batches of 25, at most [`IN_FLIGHT`] at a time.
    async fn delete_keys(&self, keys: Vec<Attrs>) -> Result<(), Failure> {
        let mut batches = keys
            .chunks(BATCH_WRITE_ITEMS)
            .map(<[Attrs]>::to_vec)
            .collect::<Vec<_>>();
        let mut running = JoinSet::new();
        let mut failure = None;
        while !batches.is_empty() || !running.is_empty() {
            while running.len() < IN_FLIGHT
                && failure.is_none()
                && let Some(batch) = batches.pop()
            {
                let store = self.clone();
                running.spawn(async move { store.delete_batch(batch).await });
            }
            match running.join_next().await {
                Some(Ok(Ok(()))) | None => {}
                Some(Ok(Err(error))) => {
                    failure.get_or_insert(error);
                }
                Some(Err(joined)) => {
                    failure.get_or_insert(Failure::transient(format!("a delete batch did not finish: {joined}")));
                }
            }
            if failure.is_some() {
                batches.clear();
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// One `BatchWriteItem` of deletes, sending its unprocessed items again until none are left.
    async fn delete_batch(&self, keys: Vec<Attrs>) -> Result<(), Failure> {
        let requests = keys
            .into_iter()
            .map(|key| {
                DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .map(|delete| WriteRequest::builder().delete_request(delete).build())
                    .map_err(|e| Failure::permanent(format!("building a delete: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut pending: HashMap<String, Vec<WriteRequest>> = HashMap::from([(self.table().to_owned(), requests)]);
        let mut retry = 0;
        loop {
            let sent = pending.clone();
            let out = self
                .retry()
                .run(Failure::is_retryable, || async {
                    self.client()
                        .batch_write_item()
                        .set_request_items(Some(sent.clone()))
                        .send()
                        .await
                        .map_err(|e| sdk_failure("BatchWriteItem", &e))
                })
                .await?;
            pending = out
                .unprocessed_items
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, requests)| !requests.is_empty())
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            retry += 1;
            if retry > UNPROCESSED_RETRIES {
                return Err(Failure::transient(format!(
                    "BatchWriteItem left items unprocessed {UNPROCESSED_RETRIES} times in a row (throttled)"
                )));
            }
            UNPROCESSED_BACKOFF.wait(retry).await;
        }
    }
}
