//! Validated identifiers and counters.
//!
//! Each id is a newtype whose only constructor checks the pattern fixed by the API contract,
//! so an invalid collection name or item id cannot exist anywhere past the edge.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string was refused as an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct IdError {
    /// Which kind of id was being built (`collection`, `item id`, ...).
    pub kind: &'static str,
    /// What is wrong with it, in words fit for a client.
    pub reason: &'static str,
}

fn check(
    kind: &'static str,
    value: &str,
    max: usize,
    first: fn(u8) -> bool,
    rest: fn(u8) -> bool,
    pattern: &'static str,
) -> Result<(), IdError> {
    let bytes = value.as_bytes();
    let Some((&head, tail)) = bytes.split_first() else {
        return Err(IdError {
            kind,
            reason: "must not be empty",
        });
    };
    if bytes.len() > max {
        return Err(IdError {
            kind,
            reason: "is too long",
        });
    }
    if !first(head) || !tail.iter().all(|&b| rest(b)) {
        return Err(IdError { kind, reason: pattern });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $first:expr, $rest:expr, $pattern:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The pattern every value matches, as a regular expression, for describing the id outside Rust.
            pub const PATTERN: &'static str = $pattern;

            /// The longest value, in bytes (all of them ASCII).
            pub const MAX_LEN: usize = $max;

            /// Validates `value` against the pattern of this id.
            ///
            /// # Errors
            /// [`IdError`] when `value` is empty, too long or holds a character outside the pattern.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($kind, &value, $max, $first, $rest, concat!("must match ", $pattern))?;
                Ok(Self(value))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn lower_alpha(b: u8) -> bool {
    b.is_ascii_lowercase()
}
fn collection_rest(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}
fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
fn item_rest(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}
fn user_rest(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-' | b'@' | b'+')
}

string_id!(
    /// A collection name: `^[a-z][a-z0-9_-]{0,63}$`.
    CollectionName, "collection", 64, lower_alpha, collection_rest, "^[a-z][a-z0-9_-]{0,63}$"
);
string_id!(
    /// An item id: `^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$` (client-generated UUIDs fit).
    ItemId, "item id", 128, alnum, item_rest, "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
);
string_id!(
    /// A user id, the `sub` of a verified token: `^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$`.
    ///
    /// Cognito subjects are UUIDs; the development provider accepts names like `alice`.
    UserId, "user id", 128, alnum, user_rest, "^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$"
);
string_id!(
    /// A device id chosen by the app: the same pattern as an item id.
    DeviceId, "device id", 128, alnum, item_rest, "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
);
string_id!(
    /// A message id, minted by the server's id source.
    MessageId, "message id", 128, alnum, item_rest, "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
);
string_id!(
    /// A media object id, minted by the server's id source.
    MediaId, "media id", 128, alnum, item_rest, "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
);
string_id!(
    /// A stored event's id, minted by the server's id source.
    EventId, "event id", 128, alnum, item_rest, "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
);

/// The address of one item: its collection and id (the owner is always known from context).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemKey {
    /// The collection the item lives in.
    pub collection: CollectionName,
    /// The item's id within the collection.
    pub id: ItemId,
}

impl ItemKey {
    /// Builds a key from its two parts.
    pub fn new(collection: CollectionName, id: ItemId) -> Self {
        Self { collection, id }
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.collection, self.id)
    }
}

/// A position in one user's change feed: 1, 2, 3, ... without gaps. `Seq(0)` is "before the first event".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The position right after this one.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An item's version: 1 on creation, +1 on every change (a delete is a change).
/// `Version(0)` means "the item has never existed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    /// The version before any change.
    pub const NONE: Version = Version(0);

    /// The version that follows this one.
    #[must_use]
    pub fn next(self) -> Version {
        Version(self.0.saturating_add(1))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_follow_the_contract_pattern() {
        assert!(CollectionName::parse("notes").is_ok());
        assert!(CollectionName::parse("a").is_ok());
        assert!(CollectionName::parse("a-b_9").is_ok());
        assert!(CollectionName::parse("a".repeat(64)).is_ok());
        assert!(CollectionName::parse("a".repeat(65)).is_err());
        assert!(CollectionName::parse("").is_err());
        assert!(CollectionName::parse("Notes").is_err());
        assert!(CollectionName::parse("9notes").is_err());
        assert!(CollectionName::parse("no tes").is_err());
        assert!(CollectionName::parse("nötes").is_err());
    }

    #[test]
    fn item_ids_accept_uuids_and_reject_separators() {
        assert!(ItemId::parse("0b6c2a40-7d0e-4a8e-9f55-3c1f0e6b2a11").is_ok());
        assert!(ItemId::parse("a.b:c_d-e").is_ok());
        assert!(ItemId::parse("x".repeat(128)).is_ok());
        assert!(ItemId::parse("x".repeat(129)).is_err());
        assert!(ItemId::parse("-x").is_err());
        assert!(ItemId::parse("a/b").is_err());
        assert!(ItemId::parse("a#b").is_err());
        assert!(ItemId::parse("é").is_err());
    }

    #[test]
    fn ids_refuse_invalid_values_when_deserialized() {
        assert!(serde_json::from_str::<ItemId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<ItemId>("\"not ok\"").is_err());
    }
}
