//! The table's layout as code: row keys, attribute encoding and decoding, and the size DynamoDB counts.
//!
//! Everything here is pure: the store, the transaction builder and the stream decoder share these
//! functions so that a row is spelled the same way wherever it is written or read.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use rookery_domain::event::decode;
use rookery_domain::{CollectionName, ItemKey, MediaId, StoredEvent, UserId};
use rookery_ports::{Failure, IdempotencyWrite};

/// The `kind` of an event row; stream consumers handle only rows of this kind.
pub const KIND_EVENT: &str = "event";

pub(super) const HEAD_SK: &str = "head";
pub(super) const DEVICES_SK: &str = "devices";
pub(super) const OWNERS_PK: &str = "owners";
/// The sort key of an erasure marker, in the marker's own partition (see [`erased_pk`]).
pub(super) const ERASED_SK: &str = "erased";
/// The `kind` of an erasure marker row; the erasure's stream consumer handles only INSERTs of this kind.
pub const KIND_ERASED: &str = "erased";

pub(super) type Attrs = HashMap<String, AttributeValue>;

pub(super) fn user_pk(owner: &UserId) -> String {
    format!("user#{owner}")
}

/// The partition of `owner`'s erasure marker: apart from the user's partition, so that deleting that
/// partition never deletes the marker, and a marker can be read (and conditioned on) by its key alone.
pub(super) fn erased_pk(owner: &UserId) -> String {
    format!("erased#{owner}")
}

/// The key of `owner`'s erasure marker.
pub(super) fn erased_key(owner: &UserId) -> Attrs {
    key_of(erased_pk(owner), ERASED_SK.into())
}

pub(super) fn event_sk(seq: u64) -> String {
    format!("evt#{seq:020}")
}

pub(super) fn item_sk(key: &ItemKey) -> String {
    format!("item#{}#{}", key.collection, key.id)
}

pub(super) fn item_prefix(collection: &CollectionName) -> String {
    format!("item#{collection}#")
}

pub(super) fn history_prefix(key: &ItemKey) -> String {
    format!("hist#{}#{}#", key.collection, key.id)
}

pub(super) fn history_sk(key: &ItemKey, version: u64) -> String {
    format!("{}{version:020}", history_prefix(key))
}

pub(super) fn media_sk(id: &MediaId) -> String {
    format!("media#{id}")
}

pub(super) fn idem_sk(key: &str) -> String {
    format!("idem#{key}")
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn key_of(pk: String, sk: String) -> Attrs {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

pub(super) fn get_s<'a>(attrs: &'a Attrs, name: &str) -> Result<&'a str, Failure> {
    match attrs.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        _ => Err(Failure::permanent(format!(
            "stored row lacks string attribute `{name}`"
        ))),
    }
}

pub(super) fn get_n(attrs: &Attrs, name: &str) -> Result<u64, Failure> {
    match attrs.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| Failure::permanent(format!("stored attribute `{name}` is not a whole number: {value}"))),
        _ => Err(Failure::permanent(format!(
            "stored row lacks number attribute `{name}`"
        ))),
    }
}

pub(super) fn json_failure(what: &str, error: &serde_json::Error) -> Failure {
    Failure::permanent(format!("{what}: {error}"))
}

/// Decodes the `event` attribute of an event or history row; a row that does not decode is an error, never skipped.
pub(crate) fn decode_event_json(text: &str) -> Result<StoredEvent, Failure> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| json_failure("stored event is not JSON", &e))?;
    decode(value).map_err(|e| Failure::permanent(format!("stored event cannot be read: {e}")))
}

pub(super) fn decode_row_event(attrs: &Attrs) -> Result<StoredEvent, Failure> {
    decode_event_json(get_s(attrs, "event")?)
}

/// DynamoDB's size of an item: attribute names plus values (numbers counted by their text, an upper bound).
pub(super) fn item_size(attrs: &Attrs) -> usize {
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

pub(super) fn idempotency_item(write: &IdempotencyWrite) -> Result<Attrs, Failure> {
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
pub(super) fn idempotency_condition(write: &IdempotencyWrite) -> (String, HashMap<String, String>, Attrs) {
    (
        "attribute_not_exists(pk) OR recorded_at < :expired".into(),
        HashMap::new(),
        HashMap::from([(":expired".to_owned(), n(write.expired_before.as_millis()))]),
    )
}

#[cfg(test)]
mod tests {
    use rookery_domain::ItemId;

    use super::*;

    fn key(id: &str) -> ItemKey {
        ItemKey::new(CollectionName::parse("notes").unwrap(), ItemId::parse(id).unwrap())
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
