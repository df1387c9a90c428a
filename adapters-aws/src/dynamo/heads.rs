//! Reading the item heads of the whole table, for rebuilding a search index (`rookery aws reindex`,
//! `docs/decisions/0009-opensearch-blue-green-reindex.md`), and the rebuild's checkpoint row.
//!
//! An item head (`sk = "item#<collection>#<id>"`, `kind = "item"`) holds the item's current version,
//! whether it is live, and the item: exactly what the index should hold for it. A scan pages through the
//! table with consistent reads and keeps the heads; its position is the scan's `LastEvaluatedKey`, which
//! for this table is the `pk` and `sk` of the last row read, so it can be stored and resumed from.
//! The checkpoint is one row of its own partition (`pk = "reindex"`), of a kind no stream consumer reads.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use rookery_domain::projection::{IndexChange, search_document};
use rookery_domain::{CollectionName, Item, ItemId, ItemKey, Timestamp, UserId, Version};
use rookery_ports::Failure;

use super::rows::{Attrs, decode_event_json, get_n, get_s, history_sk, item_sk, json_failure, key_of, s, user_pk};
use crate::error::{RetryPolicy, sdk_failure};

/// The partition of the rebuild checkpoints.
const CHECKPOINT_PK: &str = "reindex";
/// DynamoDB's largest `BatchGetItem`.
const BATCH_GET_KEYS: usize = 100;
/// How many times unprocessed keys of a `BatchGetItem` are asked for again before giving up.
const BATCH_GET_ROUNDS: u32 = 8;

/// Where a scan of the table stands: the key of the last row it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPosition {
    /// The row's partition key.
    pub pk: String,
    /// The row's sort key.
    pub sk: String,
}

/// One item head: the item's current version and, when it is live, the item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemHeadRow {
    /// The item's owner.
    pub owner: UserId,
    /// The item's key.
    pub key: ItemKey,
    /// The item's current version.
    pub version: Version,
    /// The item, when live; `None` when deleted.
    pub item: Option<Item>,
}

impl ItemHeadRow {
    /// The index change that brings an index to this head: the live document, or a tombstone.
    pub fn change(&self) -> IndexChange {
        match &self.item {
            Some(item) => IndexChange::Upsert(search_document(item)),
            None => IndexChange::Delete {
                owner: self.owner.clone(),
                key: self.key.clone(),
                version: self.version,
            },
        }
    }

    fn decode(row: &Attrs) -> Result<Self, Failure> {
        let pk = get_s(row, "pk")?;
        let owner = pk
            .strip_prefix("user#")
            .ok_or_else(|| Failure::permanent(format!("an item head outside a user partition: {pk}")))?;
        let owner = UserId::parse(owner).map_err(|e| Failure::permanent(format!("stored owner id: {e}")))?;
        let collection = CollectionName::parse(get_s(row, "collection")?)
            .map_err(|e| Failure::permanent(format!("stored collection: {e}")))?;
        let id =
            ItemId::parse(get_s(row, "item_id")?).map_err(|e| Failure::permanent(format!("stored item id: {e}")))?;
        let item = match (row.get("live"), row.get("item")) {
            (Some(AttributeValue::Bool(true)), Some(AttributeValue::S(text))) => {
                Some(serde_json::from_str::<Item>(text).map_err(|e| json_failure("stored item", &e))?)
            }
            (Some(AttributeValue::Bool(true)), _) => {
                return Err(Failure::permanent(format!("a live item head without its item: {pk}")));
            }
            _ => None,
        };
        Ok(Self {
            owner,
            key: ItemKey::new(collection, id),
            version: Version(get_n(row, "version")?),
            item,
        })
    }
}

/// One page of a scan: the heads it held, how many rows it read, and where the next page starts
/// (`None` after the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadPage {
    /// The item heads of the page, in the table's order.
    pub heads: Vec<ItemHeadRow>,
    /// Rows read, heads or not (what the scan costs, and what progress counts).
    pub scanned: u64,
    /// Where the next page starts.
    pub next: Option<ScanPosition>,
}

/// Reads the item heads of one table, and keeps the rebuild checkpoints in it.
#[derive(Debug, Clone)]
pub struct ItemHeads {
    client: Client,
    table: String,
    retry: RetryPolicy,
    page_rows: i32,
}

impl ItemHeads {
    /// The heads of `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            retry: RetryPolicy::default(),
            page_rows: 1000,
        }
    }

    /// The same reader with another retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same reader reading at most `rows` rows per scan page (heads or not), at least 1.
    #[must_use]
    pub fn with_page_rows(mut self, rows: usize) -> Self {
        self.page_rows = i32::try_from(rows.max(1)).unwrap_or(i32::MAX);
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The table's approximate row count (every kind of row), as DynamoDB last computed it (about every
    /// six hours), or `None` when it does not say.
    ///
    /// # Errors
    /// A [`Failure`] when the table does not exist (a permanent one naming it) or cannot be described.
    pub async fn approximate_rows(&self) -> Result<Option<u64>, Failure> {
        let described = self.client.describe_table().table_name(&self.table).send().await;
        match described {
            Ok(out) => Ok(out.table.and_then(|t| t.item_count).and_then(|n| u64::try_from(n).ok())),
            Err(aws_sdk_dynamodb::error::SdkError::ServiceError(context))
                if context.err().is_resource_not_found_exception() =>
            {
                Err(Failure::permanent(format!("the table {} does not exist", self.table)))
            }
            Err(error) => Err(sdk_failure("DescribeTable", &error)),
        }
    }

    /// One page of item heads from `after` (the start of the table for `None`), read consistently.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB refuses or a head cannot be read.
    pub async fn page(&self, after: Option<&ScanPosition>) -> Result<HeadPage, Failure> {
        let start = after.map(|p| key_of(p.pk.clone(), p.sk.clone()));
        let request = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .limit(self.page_rows)
            .filter_expression("#kind = :item")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":item", s("item"))
            .set_exclusive_start_key(start);
        let out = self
            .retry
            .run(Failure::is_retryable, || async {
                request.clone().send().await.map_err(|e| sdk_failure("Scan", &e))
            })
            .await?;
        let heads = out
            .items
            .unwrap_or_default()
            .iter()
            .map(ItemHeadRow::decode)
            .collect::<Result<Vec<_>, _>>()?;
        let next = match out.last_evaluated_key {
            Some(key) if !key.is_empty() => Some(ScanPosition {
                pk: get_s(&key, "pk")?.to_owned(),
                sk: get_s(&key, "sk")?.to_owned(),
            }),
            _ => None,
        };
        Ok(HeadPage {
            heads,
            scanned: u64::try_from(out.scanned_count).unwrap_or(0),
            next,
        })
    }

    /// The heads of `items` that exist, read consistently, by `(owner, key)`.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB refuses, or keeps some keys unprocessed.
    pub async fn get(&self, items: &[(UserId, ItemKey)]) -> Result<HashMap<(UserId, ItemKey), ItemHeadRow>, Failure> {
        let mut found = HashMap::new();
        for chunk in items.chunks(BATCH_GET_KEYS) {
            let mut keys: Vec<Attrs> = chunk
                .iter()
                .map(|(owner, key)| key_of(user_pk(owner), item_sk(key)))
                .collect();
            keys.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
            keys.dedup();
            let mut rounds = 0;
            while !keys.is_empty() {
                rounds += 1;
                if rounds > BATCH_GET_ROUNDS {
                    return Err(Failure::transient(format!(
                        "BatchGetItem left {} keys unprocessed",
                        keys.len()
                    )));
                }
                let wanted = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| Failure::permanent(e.to_string()))?;
                let request = self.client.batch_get_item().request_items(&self.table, wanted);
                let out = self
                    .retry
                    .run(Failure::is_retryable, || async {
                        request
                            .clone()
                            .send()
                            .await
                            .map_err(|e| sdk_failure("BatchGetItem", &e))
                    })
                    .await?;
                for row in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    let head = ItemHeadRow::decode(&row)?;
                    found.insert((head.owner.clone(), head.key.clone()), head);
                }
                if let Some(left) = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)) {
                    keys = left.keys;
                    if !keys.is_empty() {
                        tokio::time::sleep(self.retry.backoff(rounds)).await;
                    }
                }
            }
        }
        Ok(found)
    }

    /// When the event that moved `key` of `owner` to `version` happened (from its history row), or
    /// `None` when there is no such row.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB refuses or the row cannot be read.
    pub async fn changed_at(
        &self,
        owner: &UserId,
        key: &ItemKey,
        version: Version,
    ) -> Result<Option<Timestamp>, Failure> {
        let row = self.get_row(user_pk(owner), history_sk(key, version.0)).await?;
        match row {
            Some(row) => Ok(Some(decode_event_json(get_s(&row, "event")?)?.at)),
            None => Ok(None),
        }
    }

    async fn get_row(&self, pk: String, sk: String) -> Result<Option<Attrs>, Failure> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_of(pk, sk)))
            .consistent_read(true);
        self.retry
            .run(Failure::is_retryable, || async {
                request
                    .clone()
                    .send()
                    .await
                    .map(|out| out.item)
                    .map_err(|e| sdk_failure("GetItem", &e))
            })
            .await
    }

    /// The checkpoint stored under `name`, as its JSON text, if any.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB refuses.
    pub async fn checkpoint(&self, name: &str) -> Result<Option<String>, Failure> {
        let row = self.get_row(CHECKPOINT_PK.into(), name.into()).await?;
        match row {
            Some(row) => Ok(Some(get_s(&row, "checkpoint")?.to_owned())),
            None => Ok(None),
        }
    }

    /// Stores `json` as the checkpoint `name`, replacing the one held.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB refuses.
    pub async fn save_checkpoint(&self, name: &str, json: &str) -> Result<(), Failure> {
        let mut row = key_of(CHECKPOINT_PK.into(), name.into());
        row.insert("kind".into(), s("reindex"));
        row.insert("checkpoint".into(), s(json));
        let request = self.client.put_item().table_name(&self.table).set_item(Some(row));
        self.retry
            .run(Failure::is_retryable, || async {
                request
                    .clone()
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| sdk_failure("PutItem", &e))
            })
            .await
    }
}
