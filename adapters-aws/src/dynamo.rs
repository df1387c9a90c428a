//! The DynamoDB event store: one table holding every user's stream, its heads and its idempotency records.
//!
//! The layout is recorded in `docs/decisions/0002-dynamodb-layout.md`. In short, one partition per user
//! (`pk = "user#<id>"`) holds the events (`sk = "evt#<20-digit seq>"`), the user head (`"head"`, last seq),
//! item heads (`"item#<collection>#<id>"`), per-item history rows (`"hist#<collection>#<id>#<20-digit version>"`),
//! the device registry (`"devices"`), media objects (`"media#<id>"`) and idempotency records (`"idem#<key>"`);
//! one more partition (`pk = "owners"`) lists every user with a stream, so rebuilds can page owners in order.
//! An append is one `TransactWriteItems` guarded by the user head's seq, each item head's version and
//! the idempotency record, so exactly one of several racing writers wins.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, KeySchemaElement, KeyType, Put,
    ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus, TransactWriteItem,
};
use rookery_domain::device::{self, Devices};
use rookery_domain::event::decode;
use rookery_domain::{
    CollectionName, EventPayload, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Seq, StoredEvent, Timestamp,
    UserId, Version,
};
use rookery_ports::store::MAX_EVENTS_PER_APPEND;
use rookery_ports::{AppendBatch, AppendError, EventStore, Failure, IdempotencyRecord, IdempotencyWrite, StoreError};

use crate::error::{RetryPolicy, is_transient, sdk_failure};

/// DynamoDB's largest item, in bytes.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// The most actions of one `TransactWriteItems`.
pub const MAX_TRANSACTION_ACTIONS: usize = 100;
/// The largest total item size of one `TransactWriteItems`, in bytes.
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;

/// The `kind` of an event row; stream consumers handle only rows of this kind.
pub const KIND_EVENT: &str = "event";

const HEAD_SK: &str = "head";
const DEVICES_SK: &str = "devices";
const OWNERS_PK: &str = "owners";

type Attrs = HashMap<String, AttributeValue>;

fn user_pk(owner: &UserId) -> String {
    format!("user#{owner}")
}

fn event_sk(seq: u64) -> String {
    format!("evt#{seq:020}")
}

fn item_sk(key: &ItemKey) -> String {
    format!("item#{}#{}", key.collection, key.id)
}

fn item_prefix(collection: &CollectionName) -> String {
    format!("item#{collection}#")
}

fn history_prefix(key: &ItemKey) -> String {
    format!("hist#{}#{}#", key.collection, key.id)
}

fn history_sk(key: &ItemKey, version: u64) -> String {
    format!("{}{version:020}", history_prefix(key))
}

fn media_sk(id: &MediaId) -> String {
    format!("media#{id}")
}

fn idem_sk(key: &str) -> String {
    format!("idem#{key}")
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key_of(pk: String, sk: String) -> Attrs {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn get_s<'a>(attrs: &'a Attrs, name: &str) -> Result<&'a str, Failure> {
    match attrs.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        _ => Err(Failure::permanent(format!(
            "stored row lacks string attribute `{name}`"
        ))),
    }
}

fn get_n(attrs: &Attrs, name: &str) -> Result<u64, Failure> {
    match attrs.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| Failure::permanent(format!("stored attribute `{name}` is not a whole number: {value}"))),
        _ => Err(Failure::permanent(format!(
            "stored row lacks number attribute `{name}`"
        ))),
    }
}

fn json_failure(what: &str, error: &serde_json::Error) -> Failure {
    Failure::permanent(format!("{what}: {error}"))
}

/// Decodes the `event` attribute of an event or history row; a row that does not decode is an error, never skipped.
pub(crate) fn decode_event_json(text: &str) -> Result<StoredEvent, Failure> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| json_failure("stored event is not JSON", &e))?;
    decode(value).map_err(|e| Failure::permanent(format!("stored event cannot be read: {e}")))
}

fn decode_row_event(attrs: &Attrs) -> Result<StoredEvent, Failure> {
    decode_event_json(get_s(attrs, "event")?)
}

/// DynamoDB's size of an item: attribute names plus values (numbers counted by their text, an upper bound).
fn item_size(attrs: &Attrs) -> usize {
    attrs
        .iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(text) | AttributeValue::N(text) => text.len(),
                    AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
                    _ => 0,
                }
        })
        .sum()
}

/// What a transaction action guards, to map its cancellation reason back to an [`AppendError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// The user head: a failed condition means the seq moved.
    UserHead,
    /// An item head: a failed condition means the item's version moved.
    ItemHead(ItemKey),
    /// The idempotency record: a failed condition means the key is taken.
    Idempotency,
    /// Anything unconditional.
    Plain,
}

/// How one action of a transaction went, as DynamoDB's cancellation reasons say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// The user head's condition failed.
    SeqMoved,
    /// This item head's condition failed.
    VersionMoved(ItemKey),
    /// The idempotency record's condition failed.
    KeyTaken,
    /// Conflict with another transaction, throttling, or capacity: try again later.
    Transient(String),
    /// Anything else: a bug, or data DynamoDB refuses.
    Permanent(String),
}

/// Maps a transaction's cancellation reason codes (one per action, in order) to what the writer must hear.
///
/// Condition failures win over everything else, in the contract's order: seq, then item versions, then the key.
pub(crate) fn classify_cancellation(codes: &[Option<&str>], roles: &[Role]) -> Cancelled {
    let failed = |wanted: &dyn Fn(&Role) -> bool| {
        codes
            .iter()
            .zip(roles)
            .find(|(code, role)| **code == Some("ConditionalCheckFailed") && wanted(role))
            .map(|(_, role)| role.clone())
    };
    if failed(&|r| *r == Role::UserHead).is_some() {
        return Cancelled::SeqMoved;
    }
    if let Some(Role::ItemHead(key)) = failed(&|r| matches!(r, Role::ItemHead(_))) {
        return Cancelled::VersionMoved(key);
    }
    if failed(&|r| *r == Role::Idempotency).is_some() {
        return Cancelled::KeyTaken;
    }
    let reasons: Vec<&str> = codes
        .iter()
        .map(|c| c.unwrap_or("None"))
        .filter(|c| *c != "None")
        .collect();
    let summary = format!("transaction cancelled: {}", reasons.join(", "));
    let transient = reasons.is_empty()
        || reasons.iter().all(|code| {
            matches!(
                *code,
                "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
            ) || is_transient(Some(code), None)
        });
    if transient {
        Cancelled::Transient(summary)
    } else {
        Cancelled::Permanent(summary)
    }
}

/// How a `TransactWriteItems` call failed.
#[derive(Debug)]
enum TxError {
    Cancelled(Cancelled),
    Other(Failure),
}

fn classify_transaction_error(error: &SdkError<TransactWriteItemsError, HttpResponse>, roles: &[Role]) -> TxError {
    if let SdkError::ServiceError(context) = error
        && let TransactWriteItemsError::TransactionCanceledException(cancelled) = context.err()
    {
        let codes: Vec<Option<&str>> = cancelled.cancellation_reasons().iter().map(|r| r.code()).collect();
        return TxError::Cancelled(classify_cancellation(&codes, roles));
    }
    let failure = sdk_failure("TransactWriteItems", error);
    // The modelled throttling and server errors are transient whatever code the response carried.
    if let SdkError::ServiceError(context) = error
        && matches!(
            context.err(),
            TransactWriteItemsError::ProvisionedThroughputExceededException(_)
                | TransactWriteItemsError::RequestLimitExceeded(_)
                | TransactWriteItemsError::ThrottlingException(_)
                | TransactWriteItemsError::TransactionInProgressException(_)
                | TransactWriteItemsError::InternalServerError(_)
        )
    {
        return TxError::Other(Failure::transient(failure.message));
    }
    TxError::Other(failure)
}

/// A prepared append: the transaction's actions, what each guards, and the events it stores.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) actions: Vec<TransactWriteItem>,
    pub(crate) roles: Vec<Role>,
    pub(crate) stored: Vec<StoredEvent>,
}

/// One action in the making, before it becomes an SDK value.
struct Action {
    role: Role,
    item: Attrs,
    condition: Option<(String, HashMap<String, String>, Attrs)>,
    check_only: bool,
}

fn build_action(table: &str, action: Action) -> Result<TransactWriteItem, Failure> {
    let built = |e: aws_sdk_dynamodb::error::BuildError| Failure::permanent(format!("building a transaction: {e}"));
    let (condition, names, values) = match action.condition {
        Some((expr, names, values)) => (
            Some(expr),
            (!names.is_empty()).then_some(names),
            (!values.is_empty()).then_some(values),
        ),
        None => (None, None, None),
    };
    if action.check_only {
        let key: Attrs = action
            .item
            .into_iter()
            .filter(|(k, _)| k == "pk" || k == "sk")
            .collect();
        let check = ConditionCheck::builder()
            .table_name(table)
            .set_key(Some(key))
            .set_condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build()
            .map_err(built)?;
        return Ok(TransactWriteItem::builder().condition_check(check).build());
    }
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(action.item))
        .set_condition_expression(condition)
        .set_expression_attribute_names(names)
        .set_expression_attribute_values(values)
        .build()
        .map_err(built)?;
    Ok(TransactWriteItem::builder().put(put).build())
}

fn idempotency_item(write: &IdempotencyWrite) -> Result<Attrs, Failure> {
    let outcome = serde_json::to_string(&write.record.outcome).map_err(|e| json_failure("idempotency outcome", &e))?;
    let mut item = key_of(user_pk(&write.owner), idem_sk(&write.record.key));
    item.insert("kind".into(), s("idem"));
    item.insert("key".into(), s(write.record.key.clone()));
    item.insert("fingerprint".into(), s(write.record.fingerprint.clone()));
    item.insert("outcome".into(), s(outcome));
    item.insert("recorded_at".into(), n(write.record.recorded_at.as_millis()));
    Ok(item)
}

/// The condition that lets an idempotency record be written: no record, or only an expired one.
fn idempotency_condition(write: &IdempotencyWrite) -> (String, HashMap<String, String>, Attrs) {
    (
        "attribute_not_exists(pk) OR recorded_at < :expired".into(),
        HashMap::new(),
        HashMap::from([(":expired".to_owned(), n(write.expired_before.as_millis()))]),
    )
}

/// Builds the transaction for `batch`, given the owner's device registry as of `expected_seq`.
///
/// # Errors
/// [`AppendError::TooLarge`] when the batch breaks a DynamoDB limit (checked here, before any call).
pub(crate) fn prepare(
    table: &str,
    batch: &AppendBatch,
    devices_now: Option<&Devices>,
) -> Result<Prepared, AppendError> {
    if batch.events.len() > MAX_EVENTS_PER_APPEND {
        return Err(AppendError::TooLarge(format!(
            "{} events in one append, more than {MAX_EVENTS_PER_APPEND}",
            batch.events.len()
        )));
    }
    let owner = &batch.owner;
    let pk = user_pk(owner);
    let stored: Vec<StoredEvent> = batch
        .events
        .iter()
        .cloned()
        .zip(1..)
        .map(|(event, i)| event.stored(owner, Seq(batch.expected_seq.0 + i)))
        .collect();
    let mut actions: Vec<Action> = Vec::new();

    // The user head: moved to the last new seq, or only checked when the batch holds no events.
    let expected = batch.expected_seq.0;
    let head_condition = if expected == 0 {
        ("attribute_not_exists(pk)".to_owned(), HashMap::new(), HashMap::new())
    } else {
        (
            "last_seq = :expected".to_owned(),
            HashMap::new(),
            HashMap::from([(":expected".to_owned(), n(expected))]),
        )
    };
    let mut head = key_of(pk.clone(), HEAD_SK.into());
    head.insert("kind".into(), s("head"));
    head.insert("owner".into(), s(owner.as_str()));
    head.insert("last_seq".into(), n(expected + stored.len() as u64));
    actions.push(Action {
        role: Role::UserHead,
        item: head,
        condition: Some(head_condition),
        check_only: stored.is_empty(),
    });
    if expected == 0 && !stored.is_empty() {
        let mut entry = key_of(OWNERS_PK.into(), owner.as_str().into());
        entry.insert("kind".into(), s("owner"));
        actions.push(Action {
            role: Role::Plain,
            item: entry,
            condition: None,
            check_only: false,
        });
    }

    // Events, their history rows, and the projections they move.
    let mut item_heads: BTreeMap<ItemKey, Attrs> = BTreeMap::new();
    let mut devices = devices_now.cloned().unwrap_or_default();
    let mut devices_changed = false;
    for event in &stored {
        let json = serde_json::to_string(event).map_err(|e| AppendError::Unavailable(json_failure("event", &e)))?;
        let mut row = key_of(pk.clone(), event_sk(event.seq.0));
        row.insert("kind".into(), s(KIND_EVENT));
        row.insert("owner".into(), s(owner.as_str()));
        row.insert("seq".into(), n(event.seq.0));
        row.insert("type".into(), s(event.payload.type_name()));
        row.insert("at".into(), n(event.at.as_millis()));
        match &event.payload {
            EventPayload::Device(change) => {
                device::evolve(&mut devices, change, event.at);
                devices_changed = true;
            }
            EventPayload::MediaDeclared(object) => {
                let text =
                    serde_json::to_string(object).map_err(|e| AppendError::Unavailable(json_failure("media", &e)))?;
                let mut media = key_of(pk.clone(), media_sk(&object.id));
                media.insert("kind".into(), s("media"));
                media.insert("media".into(), s(text));
                actions.push(Action {
                    role: Role::Plain,
                    item: media,
                    condition: None,
                    check_only: false,
                });
            }
            payload => {
                if let Some(change) = payload.as_item() {
                    let key = change.key();
                    row.insert("collection".into(), s(key.collection.as_str()));
                    row.insert("item_id".into(), s(key.id.as_str()));
                    row.insert("version".into(), n(change.version.0));
                    let mut history = key_of(pk.clone(), history_sk(&key, change.version.0));
                    history.insert("kind".into(), s("history"));
                    history.insert("seq".into(), n(event.seq.0));
                    history.insert("event".into(), s(json.clone()));
                    actions.push(Action {
                        role: Role::Plain,
                        item: history,
                        condition: None,
                        check_only: false,
                    });
                    let mut head = key_of(pk.clone(), item_sk(&key));
                    head.insert("kind".into(), s("item"));
                    head.insert("collection".into(), s(key.collection.as_str()));
                    head.insert("item_id".into(), s(key.id.as_str()));
                    head.insert("version".into(), n(change.version.0));
                    let item = change
                        .state
                        .as_ref()
                        .map(|state| state.to_item(owner, change, event.at));
                    head.insert("live".into(), AttributeValue::Bool(item.is_some()));
                    if let Some(item) = item {
                        let text = serde_json::to_string(&item)
                            .map_err(|e| AppendError::Unavailable(json_failure("item", &e)))?;
                        head.insert("item".into(), s(text));
                    }
                    // Several events of one item in a batch: the last one's head stands (one action per row).
                    item_heads.insert(key, head);
                }
            }
        }
        row.insert("event".into(), s(json));
        actions.push(Action {
            role: Role::Plain,
            item: row,
            condition: None,
            check_only: false,
        });
    }
    if devices_changed {
        let text =
            serde_json::to_string(&devices).map_err(|e| AppendError::Unavailable(json_failure("devices", &e)))?;
        let mut row = key_of(pk.clone(), DEVICES_SK.into());
        row.insert("kind".into(), s("devices"));
        row.insert("devices".into(), s(text));
        actions.push(Action {
            role: Role::Plain,
            item: row,
            condition: None,
            check_only: false,
        });
    }

    // Item heads, each guarded by the version the writer read; named items the batch does not change are only checked.
    for (key, version) in &batch.item_versions {
        let condition = if *version == Version::NONE {
            (
                "attribute_not_exists(pk) OR version = :zero".to_owned(),
                HashMap::new(),
                HashMap::from([(":zero".to_owned(), n(0))]),
            )
        } else {
            (
                "version = :version".to_owned(),
                HashMap::new(),
                HashMap::from([(":version".to_owned(), n(version.0))]),
            )
        };
        let (item, check_only) = match item_heads.remove(key) {
            Some(item) => (item, false),
            None => (key_of(pk.clone(), item_sk(key)), true),
        };
        actions.push(Action {
            role: Role::ItemHead(key.clone()),
            item,
            condition: Some(condition),
            check_only,
        });
    }
    for (_, item) in item_heads {
        actions.push(Action {
            role: Role::Plain,
            item,
            condition: None,
            check_only: false,
        });
    }
    if let Some(write) = &batch.idempotency {
        let item = idempotency_item(write)?;
        actions.push(Action {
            role: Role::Idempotency,
            item,
            condition: Some(idempotency_condition(write)),
            check_only: false,
        });
    }

    check_limits(&actions)?;
    let roles = actions.iter().map(|a| a.role.clone()).collect();
    let actions = actions
        .into_iter()
        .map(|a| build_action(table, a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared { actions, roles, stored })
}

fn check_limits(actions: &[Action]) -> Result<(), AppendError> {
    if actions.len() > MAX_TRANSACTION_ACTIONS {
        return Err(AppendError::TooLarge(format!(
            "the append needs {} DynamoDB actions, more than {MAX_TRANSACTION_ACTIONS}",
            actions.len()
        )));
    }
    let mut total = 0usize;
    for action in actions {
        let size = item_size(&action.item);
        if size > MAX_ITEM_BYTES {
            return Err(AppendError::TooLarge(format!(
                "a stored row would be {size} bytes, more than DynamoDB's {MAX_ITEM_BYTES}"
            )));
        }
        total += size;
    }
    if total > MAX_TRANSACTION_BYTES {
        return Err(AppendError::TooLarge(format!(
            "the append would write {total} bytes, more than DynamoDB's {MAX_TRANSACTION_BYTES} per transaction"
        )));
    }
    Ok(())
}

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

    async fn version_of(&self, owner: &UserId, key: &ItemKey) -> Result<Version, Failure> {
        match self.get(user_pk(owner), item_sk(key)).await? {
            Some(row) => Ok(Version(get_n(&row, "version")?)),
            None => Ok(Version::NONE),
        }
    }

    async fn last_seq_of(&self, owner: &UserId) -> Result<Seq, Failure> {
        match self.get(user_pk(owner), HEAD_SK.into()).await? {
            Some(row) => Ok(Seq(get_n(&row, "last_seq")?)),
            None => Ok(Seq(0)),
        }
    }

    /// Reads what a failed condition saw: the seq if it moved (whatever the reason named, so the writer
    /// hears the real stream position), else the named item's version.
    ///
    /// A failed condition means a committed write, which a strongly consistent read sees. An emulator
    /// that applies transactions non-atomically may briefly show nothing moved; the reads are then
    /// repeated a few times, and if still nothing moved the outcome is reported as transient.
    async fn what_moved(&self, batch: &AppendBatch, key: Option<ItemKey>) -> AppendError {
        let expected_version = |key: &ItemKey| {
            batch
                .item_versions
                .iter()
                .find(|(k, _)| k == key)
                .map_or(Version::NONE, |(_, v)| *v)
        };
        let settle = RetryPolicy {
            attempts: 5,
            ..RetryPolicy::default()
        };
        for retry in 1..=settle.attempts {
            match self.last_seq_of(&batch.owner).await {
                Ok(current) if current != batch.expected_seq => return AppendError::SeqMoved { current },
                Ok(_) => {}
                Err(failure) => return AppendError::Unavailable(failure),
            }
            if let Some(key) = &key {
                match self.version_of(&batch.owner, key).await {
                    Ok(current) if current != expected_version(key) => {
                        return AppendError::VersionMoved {
                            key: key.clone(),
                            current,
                        };
                    }
                    Ok(_) => {}
                    Err(failure) => return AppendError::Unavailable(failure),
                }
            }
            tokio::time::sleep(settle.backoff(retry)).await;
        }
        AppendError::Unavailable(Failure::transient(
            "a condition failed but neither the seq nor the version moved",
        ))
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
            Err(TxError::Cancelled(Cancelled::SeqMoved)) => Err(self.what_moved(&batch, None).await),
            Err(TxError::Cancelled(Cancelled::VersionMoved(key))) => Err(self.what_moved(&batch, Some(key)).await),
            Err(TxError::Cancelled(Cancelled::KeyTaken)) => Err(AppendError::KeyTaken),
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

/// Creates the events table (`pk`, `sk` strings, on-demand, stream `NEW_IMAGE`) unless it exists, and waits until it is active.
///
/// # Errors
/// A [`Failure`] when DynamoDB refuses or the table does not become active within a minute.
pub async fn create_table(client: &Client, table: &str) -> Result<(), Failure> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| Failure::permanent(e.to_string()))
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| Failure::permanent(e.to_string()))
    };
    let stream = StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::NewImage)
        .build()
        .map_err(|e| Failure::permanent(e.to_string()))?;
    let created = client
        .create_table()
        .table_name(table)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(stream)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(SdkError::ServiceError(context)) if context.err().is_resource_in_use_exception() => {}
        Err(error) => return Err(sdk_failure("CreateTable", &error)),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_failure("DescribeTable", &e))?;
        let status = described.table.and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::transient(format!(
                "table {table} is not active after a minute ({status:?})"
            )));
        }
        // Real DynamoDB takes seconds to create a table; this is a production poll, not a test wait.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use rookery_domain::event::{ItemChanged, ItemState};
    use rookery_domain::{EventId, EventMeta, Message, MessageId, NewEvent, Visibility};
    use serde_json::{Map, json};

    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn item_event(key: &ItemKey, version: u64, text: &str) -> NewEvent {
        let mut data = Map::new();
        data.insert("text".into(), json!(text));
        NewEvent {
            event_id: EventId::parse(format!("e{version}")).unwrap(),
            at: Timestamp::from_millis(1),
            payload: EventPayload::ItemCreated(ItemChanged {
                collection: key.collection.clone(),
                id: key.id.clone(),
                version: Version(version),
                state: Some(ItemState {
                    visibility: Visibility::Private,
                    created_at: Timestamp::from_millis(1),
                    data,
                }),
                restored_from: None,
            }),
            meta: EventMeta::default(),
        }
    }

    fn message(i: usize, text: String) -> NewEvent {
        NewEvent {
            event_id: EventId::parse(format!("m{i}")).unwrap(),
            at: Timestamp::from_millis(1),
            payload: EventPayload::MessageReceived(Message {
                id: MessageId::parse(format!("m{i}")).unwrap(),
                from: user("bob"),
                to: user("alice"),
                text,
                data: Map::new(),
                sent_at: Timestamp::from_millis(1),
            }),
            meta: EventMeta::default(),
        }
    }

    fn key(id: &str) -> ItemKey {
        ItemKey::new(CollectionName::parse("notes").unwrap(), ItemId::parse(id).unwrap())
    }

    fn batch(events: Vec<NewEvent>, item_versions: Vec<(ItemKey, Version)>) -> AppendBatch {
        AppendBatch {
            owner: user("alice"),
            expected_seq: Seq(0),
            item_versions,
            events,
            idempotency: None,
        }
    }

    #[test]
    fn cancellation_reasons_map_to_the_condition_that_failed() {
        let roles = [Role::UserHead, Role::Plain, Role::ItemHead(key("a")), Role::Idempotency];
        let ccf = Some("ConditionalCheckFailed");
        let none = Some("None");
        assert_eq!(
            classify_cancellation(&[ccf, none, none, none], &roles),
            Cancelled::SeqMoved
        );
        assert_eq!(
            classify_cancellation(&[none, none, ccf, none], &roles),
            Cancelled::VersionMoved(key("a"))
        );
        assert_eq!(
            classify_cancellation(&[none, none, none, ccf], &roles),
            Cancelled::KeyTaken
        );
        assert_eq!(
            classify_cancellation(&[ccf, none, ccf, ccf], &roles),
            Cancelled::SeqMoved,
            "seq first"
        );
        assert_eq!(
            classify_cancellation(&[none, none, ccf, ccf], &roles),
            Cancelled::VersionMoved(key("a"))
        );
        assert!(matches!(
            classify_cancellation(&[Some("TransactionConflict"), none, none, none], &roles),
            Cancelled::Transient(_)
        ));
        assert!(matches!(
            classify_cancellation(&[none, Some("ThrottlingError"), none, none], &roles),
            Cancelled::Transient(_)
        ));
        assert!(matches!(
            classify_cancellation(&[none, Some("ProvisionedThroughputExceeded"), none, none], &roles),
            Cancelled::Transient(_)
        ));
        assert!(matches!(
            classify_cancellation(&[none, Some("ValidationError"), none, none], &roles),
            Cancelled::Permanent(_)
        ));
    }

    #[test]
    fn sdk_transaction_errors_built_by_hand_are_classified() {
        use aws_sdk_dynamodb::types::CancellationReason;
        use aws_sdk_dynamodb::types::error::TransactionCanceledException;
        use aws_smithy_types::body::SdkBody;

        let roles = vec![Role::UserHead, Role::ItemHead(key("a"))];
        let response = |status: u16| HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        let cancelled = |codes: &[&str]| {
            let mut builder = TransactionCanceledException::builder().message("cancelled");
            for code in codes {
                builder = builder.cancellation_reasons(CancellationReason::builder().code(*code).build());
            }
            SdkError::service_error(
                TransactWriteItemsError::TransactionCanceledException(builder.build()),
                response(400),
            )
        };
        assert!(matches!(
            classify_transaction_error(&cancelled(&["None", "ConditionalCheckFailed"]), &roles),
            TxError::Cancelled(Cancelled::VersionMoved(k)) if k == key("a")
        ));
        assert!(matches!(
            classify_transaction_error(&cancelled(&["ConditionalCheckFailed", "None"]), &roles),
            TxError::Cancelled(Cancelled::SeqMoved)
        ));
        assert!(matches!(
            classify_transaction_error(&cancelled(&["TransactionConflict", "None"]), &roles),
            TxError::Cancelled(Cancelled::Transient(_))
        ));

        let throttled = SdkError::service_error(
            TransactWriteItemsError::ProvisionedThroughputExceededException(
                aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                    .message("slow")
                    .build(),
            ),
            response(400),
        );
        assert!(matches!(classify_transaction_error(&throttled, &roles), TxError::Other(f) if f.retryable));
        let in_progress = SdkError::service_error(
            TransactWriteItemsError::TransactionInProgressException(
                aws_sdk_dynamodb::types::error::TransactionInProgressException::builder().build(),
            ),
            response(400),
        );
        assert!(matches!(classify_transaction_error(&in_progress, &roles), TxError::Other(f) if f.retryable));
        let server = SdkError::service_error(
            TransactWriteItemsError::InternalServerError(
                aws_sdk_dynamodb::types::error::InternalServerError::builder()
                    .message("boom")
                    .build(),
            ),
            response(500),
        );
        assert!(matches!(classify_transaction_error(&server, &roles), TxError::Other(f) if f.retryable));
        let timeout: SdkError<TransactWriteItemsError, HttpResponse> = SdkError::timeout_error("took too long");
        assert!(matches!(classify_transaction_error(&timeout, &roles), TxError::Other(f) if f.retryable));
        let construction: SdkError<TransactWriteItemsError, HttpResponse> = SdkError::construction_failure("bad input");
        assert!(matches!(classify_transaction_error(&construction, &roles), TxError::Other(f) if !f.retryable));
    }

    #[test]
    fn a_row_over_400_kb_is_too_large_before_any_call() {
        let big = "x".repeat(MAX_ITEM_BYTES);
        let result = prepare(
            "t",
            &batch(vec![item_event(&key("a"), 1, &big)], vec![(key("a"), Version::NONE)]),
            None,
        );
        assert!(matches!(&result, Err(AppendError::TooLarge(why)) if why.contains("400") || why.contains("409600")));
    }

    #[test]
    fn a_transaction_over_4_mb_is_too_large_before_any_call() {
        // Twenty messages of 250 KB each fit one row each but not one transaction.
        let events = (0..20).map(|i| message(i, "y".repeat(250 * 1024))).collect();
        let result = prepare("t", &batch(events, Vec::new()), None);
        assert!(
            matches!(&result, Err(AppendError::TooLarge(why)) if why.contains("per transaction")),
            "{result:?}"
        );
    }

    #[test]
    fn a_transaction_over_100_actions_is_too_large_before_any_call() {
        let versions = (0..120).map(|i| (key(&format!("k{i}")), Version(1))).collect();
        let result = prepare("t", &batch(vec![message(0, "hi".into())], versions), None);
        assert!(
            matches!(&result, Err(AppendError::TooLarge(why)) if why.contains("actions")),
            "{result:?}"
        );
    }

    #[test]
    fn more_events_than_the_port_allows_are_too_large() {
        let events = (0..=MAX_EVENTS_PER_APPEND).map(|i| message(i, "hi".into())).collect();
        assert!(matches!(
            prepare("t", &batch(events, Vec::new()), None),
            Err(AppendError::TooLarge(_))
        ));
    }

    #[test]
    fn a_batch_changing_one_item_twice_writes_its_head_once_and_both_history_rows() {
        let events = vec![item_event(&key("a"), 1, "one"), item_event(&key("a"), 2, "two")];
        let prepared = prepare("t", &batch(events, vec![(key("a"), Version::NONE)]), None).unwrap();
        let puts: Vec<&Attrs> = prepared
            .actions
            .iter()
            .filter_map(|a| a.put().map(|p| p.item()))
            .collect();
        let sks: Vec<&str> = puts.iter().map(|item| get_s(item, "sk").unwrap()).collect();
        assert_eq!(sks.iter().filter(|sk| sk.starts_with("item#")).count(), 1, "{sks:?}");
        assert_eq!(sks.iter().filter(|sk| sk.starts_with("hist#")).count(), 2);
        assert_eq!(sks.iter().filter(|sk| sk.starts_with("evt#")).count(), 2);
        let head = puts
            .iter()
            .find(|item| get_s(item, "sk").unwrap().starts_with("item#"))
            .unwrap();
        assert_eq!(get_n(head, "version").unwrap(), 2);
        assert_eq!(
            prepared.roles.iter().filter(|r| matches!(r, Role::ItemHead(_))).count(),
            1
        );
        assert_eq!(prepared.stored.iter().map(|e| e.seq.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn sort_keys_order_like_the_numbers_and_ids_they_hold() {
        assert!(event_sk(9) < event_sk(10));
        assert!(event_sk(u64::MAX - 1) < event_sk(u64::MAX));
        let low = format!("{}{}!", item_prefix(&CollectionName::parse("notes").unwrap()), "id-10");
        assert!(low > item_sk(&key("id-10")) && low < item_sk(&key("id-10a")) && low < item_sk(&key("id-10-")));
        assert!(item_sk(&key("zzz")) < format!("{}~", item_prefix(&CollectionName::parse("notes").unwrap())));
        let other = ItemKey::new(CollectionName::parse("notes-x").unwrap(), ItemId::parse("a").unwrap());
        assert!(item_sk(&other) > format!("{}~", item_prefix(&CollectionName::parse("notes").unwrap())));
    }
}
