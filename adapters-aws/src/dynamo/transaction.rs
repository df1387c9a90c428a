//! Building an append's `TransactWriteItems`: the guarded heads, the rows it writes, and DynamoDB's limits.
//!
//! [`prepare`] is pure, so every limit is checked and every action built before any call is made;
//! each action carries the [`Role`] that lets a cancellation reason be traced back to its condition.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use rookery_domain::device::{self, Devices};
use rookery_domain::{EventPayload, ItemKey, Seq, StoredEvent, Version};
use rookery_ports::store::MAX_EVENTS_PER_APPEND;
use rookery_ports::{AppendBatch, AppendError, Failure};

use super::rows::{
    Attrs, DEVICES_SK, HEAD_SK, KIND_EVENT, OWNERS_PK, erased_key, event_sk, history_sk, idempotency_condition,
    idempotency_item, item_size, item_sk, json_failure, key_of, media_sk, n, s, user_pk,
};

/// DynamoDB's largest item, in bytes.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// The most actions of one `TransactWriteItems`.
pub const MAX_TRANSACTION_ACTIONS: usize = 100;
/// The largest total item size of one `TransactWriteItems`, in bytes.
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;

/// What a transaction action guards, to map its cancellation reason back to an [`AppendError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Role {
    /// The user head, guarded at the seq the writer read: a failed condition means the seq moved.
    UserHead(Seq),
    /// An item head, guarded at the version the writer read: a failed condition means the version moved.
    ItemHead(ItemKey, Version),
    /// The idempotency record: a failed condition means the key is taken.
    Idempotency,
    /// The owner's erasure marker, checked absent: a failed condition means the account was erased.
    Erased,
    /// Anything unconditional.
    Plain,
}

/// A prepared append: the transaction's actions, what each guards, and the events it stores.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) actions: Vec<TransactWriteItem>,
    pub(super) roles: Vec<Role>,
    pub(super) stored: Vec<StoredEvent>,
}

/// One action in the making, before it becomes an SDK value.
pub(super) struct Action {
    pub(super) role: Role,
    pub(super) item: Attrs,
    pub(super) condition: Option<(String, HashMap<String, String>, Attrs)>,
    pub(super) check_only: bool,
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
    // A failed head condition returns the row it saw, so the cancellation itself says where the head is.
    let return_old = matches!(action.role, Role::UserHead(_) | Role::ItemHead(..) | Role::Erased)
        .then_some(ReturnValuesOnConditionCheckFailure::AllOld);
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
            .set_return_values_on_condition_check_failure(return_old)
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
        .set_return_values_on_condition_check_failure(return_old)
        .build()
        .map_err(built)?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// Builds the transaction for `batch` continuing the stream from seq `at` (the batch's expected seq, or
/// the head the store read for a batch that names none), given the owner's device registry as of `at`.
///
/// The user head is guarded at `at` whenever the batch has events: that condition is what serializes a
/// user's appends. A batch with no events guards it only when it names a seq.
///
/// # Errors
/// [`AppendError::TooLarge`] when the batch breaks a DynamoDB limit (checked here, before any call).
pub(super) fn prepare(
    table: &str,
    batch: &AppendBatch,
    at: Seq,
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
        .map(|(event, i)| event.stored(owner, Seq(at.0 + i)))
        .collect();
    // The erasure marker, checked absent in the same transaction: a marker written before this commits
    // cancels it, and one written after finds its rows already there for the erasure to delete.
    let mut actions: Vec<Action> = vec![erased_check(owner)];

    // The user head: moved to the last new seq, or only checked when the batch holds no events.
    let expected = at.0;
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
    if !stored.is_empty() || batch.expected_seq.is_some() {
        actions.push(Action {
            role: Role::UserHead(at),
            item: head,
            condition: Some(head_condition),
            check_only: stored.is_empty(),
        });
    }
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
            role: Role::ItemHead(key.clone(), *version),
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

/// The action that checks `owner` has no erasure marker, for every transaction that writes for them.
pub(super) fn erased_check(owner: &rookery_domain::UserId) -> Action {
    Action {
        role: Role::Erased,
        item: erased_key(owner),
        condition: Some(("attribute_not_exists(pk)".to_owned(), HashMap::new(), HashMap::new())),
        check_only: true,
    }
}

/// Builds the SDK actions of `actions` on `table`, with their roles.
pub(super) fn build(table: &str, actions: Vec<Action>) -> Result<(Vec<TransactWriteItem>, Vec<Role>), Failure> {
    let roles = actions.iter().map(|a| a.role.clone()).collect();
    let built = actions
        .into_iter()
        .map(|a| build_action(table, a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((built, roles))
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

#[cfg(test)]
mod tests {
    use rookery_domain::event::{ItemChanged, ItemState};
    use rookery_domain::{
        CollectionName, EventId, EventMeta, ItemId, Message, MessageId, NewEvent, Timestamp, UserId, Visibility,
    };
    use rookery_ports::{IdempotencyRecord, IdempotencyWrite};
    use serde_json::{Map, json};

    use super::super::rows::{get_n, get_s};
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

    /// alice's record of the key `k`.
    fn idempotency_write() -> IdempotencyWrite {
        IdempotencyWrite {
            owner: user("alice"),
            record: IdempotencyRecord {
                key: "k".into(),
                fingerprint: "f".into(),
                outcome: json!(null),
                recorded_at: Timestamp::from_millis(1),
            },
            expired_before: Timestamp::from_millis(0),
        }
    }

    fn batch(events: Vec<NewEvent>, item_versions: Vec<(ItemKey, Version)>) -> AppendBatch {
        AppendBatch {
            owner: user("alice"),
            expected_seq: Some(Seq(0)),
            item_versions,
            events,
            idempotency: None,
        }
    }

    #[test]
    fn a_row_over_400_kb_is_too_large_before_any_call() {
        let big = "x".repeat(MAX_ITEM_BYTES);
        let result = prepare(
            "t",
            &batch(vec![item_event(&key("a"), 1, &big)], vec![(key("a"), Version::NONE)]),
            Seq(0),
            None,
        );
        assert!(matches!(&result, Err(AppendError::TooLarge(why)) if why.contains("400") || why.contains("409600")));
    }

    #[test]
    fn a_transaction_over_4_mb_is_too_large_before_any_call() {
        // Twenty messages of 250 KB each fit one row each but not one transaction.
        let events = (0..20).map(|i| message(i, "y".repeat(250 * 1024))).collect();
        let result = prepare("t", &batch(events, Vec::new()), Seq(0), None);
        assert!(
            matches!(&result, Err(AppendError::TooLarge(why)) if why.contains("per transaction")),
            "{result:?}"
        );
    }

    #[test]
    fn a_transaction_over_100_actions_is_too_large_before_any_call() {
        let versions = (0..120).map(|i| (key(&format!("k{i}")), Version(1))).collect();
        let result = prepare("t", &batch(vec![message(0, "hi".into())], versions), Seq(0), None);
        assert!(
            matches!(&result, Err(AppendError::TooLarge(why)) if why.contains("actions")),
            "{result:?}"
        );
    }

    #[test]
    fn more_events_than_the_port_allows_are_too_large() {
        let events = (0..=MAX_EVENTS_PER_APPEND).map(|i| message(i, "hi".into())).collect();
        assert!(matches!(
            prepare("t", &batch(events, Vec::new()), Seq(0), None),
            Err(AppendError::TooLarge(_))
        ));
    }

    #[test]
    fn only_the_head_conditions_ask_for_the_row_they_saw() {
        let mut guarded = batch(
            vec![item_event(&key("a"), 1, "one")],
            vec![(key("a"), Version::NONE), (key("b"), Version(3))],
        );
        guarded.idempotency = Some(idempotency_write());
        let prepared = prepare("t", &guarded, Seq(0), None).unwrap();
        for (action, role) in prepared.actions.iter().zip(&prepared.roles) {
            let asked = action
                .put()
                .and_then(|p| p.return_values_on_condition_check_failure())
                .or_else(|| {
                    action
                        .condition_check()
                        .and_then(|c| c.return_values_on_condition_check_failure())
                });
            let head = matches!(role, Role::UserHead(_) | Role::ItemHead(..) | Role::Erased);
            let expected = head.then_some(&ReturnValuesOnConditionCheckFailure::AllOld);
            assert_eq!(asked, expected, "{role:?}");
        }
        // The unchanged item is only checked, and its check asks too.
        assert!(prepared.roles.contains(&Role::ItemHead(key("b"), Version(3))));
        assert!(prepared.actions.iter().any(|a| a.condition_check().is_some()));
        assert!(prepared.roles.contains(&Role::UserHead(Seq(0))));
    }

    #[test]
    fn a_batch_changing_one_item_twice_writes_its_head_once_and_both_history_rows() {
        let events = vec![item_event(&key("a"), 1, "one"), item_event(&key("a"), 2, "two")];
        let prepared = prepare("t", &batch(events, vec![(key("a"), Version::NONE)]), Seq(0), None).unwrap();
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
            prepared
                .roles
                .iter()
                .filter(|r| matches!(r, Role::ItemHead(..)))
                .count(),
            1
        );
        assert_eq!(prepared.stored.iter().map(|e| e.seq.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_batch_naming_no_seq_guards_the_head_where_the_store_read_it_and_only_with_events() {
        let mut at_end = batch(vec![item_event(&key("a"), 1, "one")], vec![(key("a"), Version::NONE)]);
        at_end.expected_seq = None;
        let prepared = prepare("t", &at_end, Seq(7), None).unwrap();
        assert!(prepared.roles.contains(&Role::UserHead(Seq(7))), "{:?}", prepared.roles);
        assert_eq!(prepared.stored.iter().map(|e| e.seq.0).collect::<Vec<_>>(), vec![8]);
        let head = prepared
            .actions
            .iter()
            .filter_map(|a| a.put().map(|p| p.item()))
            .find(|item| get_s(item, "sk").unwrap() == HEAD_SK)
            .unwrap();
        assert_eq!(get_n(head, "last_seq").unwrap(), 8);

        let mut record_only = batch(Vec::new(), Vec::new());
        record_only.expected_seq = None;
        record_only.idempotency = Some(idempotency_write());
        let prepared = prepare("t", &record_only, Seq(7), None).unwrap();
        assert_eq!(
            prepared.roles,
            vec![Role::Erased, Role::Idempotency],
            "no head to guard without events, only the erasure marker"
        );
    }
}
