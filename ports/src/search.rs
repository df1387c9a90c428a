//! The search index port: version-guarded upserts and deletes, and typed queries.

use std::future::Future;

use rookery_domain::projection::IndexChange;
use rookery_domain::{CollectionName, Item, UserId};

use crate::Failure;

/// Whose items a search may return. No scope ever returns another user's private item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The caller's items, private and public.
    Mine,
    /// Public items of anyone.
    Public,
    /// Both.
    #[default]
    All,
}

/// A search, already validated: never a query language, only words.
///
/// The last word is always also a prefix (search as you type), so there is no field to say so: the API
/// promises it for every search, and a switch no caller turns off would only be one more way for an
/// index to differ from the others. Each index applies the rule itself (see [`SearchIndex::query`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// The caller; `Mine` and `All` are relative to them.
    pub caller: UserId,
    /// Lowercase words, each to be matched literally against the words of the document's strings; all must
    /// match, the last one as a prefix of a word, the others as whole words. Never empty.
    pub words: Vec<String>,
    /// Only this collection, if given.
    pub collection: Option<CollectionName>,
    /// Whose items.
    pub scope: Scope,
    /// Page size, 1 to 100.
    pub limit: usize,
    /// Where the previous page ended: an opaque string this index returned.
    pub cursor: Option<String>,
}

/// One match.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The item as indexed.
    pub item: Item,
    /// Relevance; higher is better.
    pub score: f64,
}

/// One page of matches, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// How many documents match in all.
    pub found: u64,
    /// This page.
    pub hits: Vec<SearchHit>,
    /// The cursor of the next page, `None` on the last one.
    pub next_cursor: Option<String>,
}

/// Why a search operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The cursor was not issued by this index (a client error).
    #[error("invalid cursor")]
    BadCursor,
    /// The index could not be reached or refused the request.
    #[error(transparent)]
    Unavailable(#[from] Failure),
}

/// Why applying a slice of changes stopped, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("change {index} of the slice was not applied: {error}")]
pub struct ApplyFailure {
    /// Position in the slice of the first change that may not have been applied: every change before
    /// it was applied (later ones may have been too, which applying them again makes harmless).
    pub index: usize,
    /// Why it failed.
    pub error: SearchError,
}

/// A full-text index of live items (CloudSearch or OpenSearch on AWS; in memory locally).
pub trait SearchIndex: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Applies changes, in any order, any number of times.
    ///
    /// Implementations MUST keep, per item, only the change with the highest version ever applied:
    /// an upsert or delete older than (or equal to) what the index holds for that item changes nothing,
    /// and a delete is remembered so that an older upsert arriving later cannot bring the item back.
    /// Applying the same set of changes in any order and with any repetition MUST give the same index.
    ///
    /// # Errors
    /// [`SearchError::Unavailable`]; the caller retries the whole slice, which the rule above makes safe.
    fn apply(&self, changes: &[IndexChange]) -> impl Future<Output = Result<(), SearchError>> + Send;

    /// Applies changes as [`SearchIndex::apply`] does and, when that fails, names the first change that
    /// may not have been applied, so the change log redelivers from that record and no further back.
    ///
    /// Implementations whose writes report per change (a bulk request) SHOULD override it; the default
    /// applies the slice, and after a failure applies the changes one by one to find the first that fails.
    ///
    /// # Errors
    /// [`ApplyFailure`] naming the change: every change before it MUST have been applied.
    fn apply_each(&self, changes: &[IndexChange]) -> impl Future<Output = Result<(), ApplyFailure>> + Send {
        async move {
            if self.apply(changes).await.is_ok() {
                return Ok(());
            }
            for (index, change) in changes.iter().enumerate() {
                self.apply(std::slice::from_ref(change))
                    .await
                    .map_err(|error| ApplyFailure { index, error })?;
            }
            Ok(())
        }
    }

    /// Finds live items whose strings contain every word of `query`, best match first.
    ///
    /// A document word matches a query word when it equals it; for the last query word, also when it
    /// starts with it (`pass` finds `passport`). Every other query word stays a whole word, even when it
    /// equals the last one.
    ///
    /// Implementations MUST treat the words as literal text (no query syntax: `*`, `?`, quotes, `:` and
    /// brackets are characters to match, never wildcards, fields or operators, so a word holding them can
    /// only ever match a document word holding them too), MUST restrict results to `query.scope` (never
    /// another user's private item), and MUST count in `found` every match.
    ///
    /// # Errors
    /// [`SearchError::BadCursor`] for a cursor it did not issue; [`SearchError::Unavailable`] otherwise.
    fn query(&self, query: &SearchQuery) -> impl Future<Output = Result<SearchPage, SearchError>> + Send;

    /// Removes every document of `owner` (live or tombstone), and from then on ignores every change about
    /// their items: an erased account's events redelivered by the change log never bring a document back.
    ///
    /// Implementations MUST make the removal and the refusal one step (a change applied concurrently is
    /// either removed or ignored), MUST leave no document of `owner` findable once this returns, and MUST
    /// answer `Ok` on a repeat. The default answers a permanent `Unavailable`: an index that cannot erase
    /// says so rather than pretending.
    ///
    /// # Errors
    /// [`SearchError::Unavailable`]; trying again is safe.
    fn erase_owner(&self, owner: &UserId) -> impl Future<Output = Result<(), SearchError>> + Send {
        let _ = owner;
        async {
            Err(SearchError::Unavailable(Failure::permanent(
                "this search index does not support erasing an account yet",
            )))
        }
    }
}

/// The prefix of an offset cursor.
const OFFSET_CURSOR_PREFIX: &str = "o:";

/// A cursor that names the offset of the next hit, for an index that pages by offset (the memory and
/// SQLite indexes).
pub fn offset_cursor(offset: usize) -> String {
    format!("{OFFSET_CURSOR_PREFIX}{offset}")
}

/// Reads a cursor made by [`offset_cursor`]: the offset of the next hit, 0 without a cursor.
///
/// # Errors
/// [`SearchError::BadCursor`] for anything but the canonical form `offset_cursor` writes (digits, no
/// sign, no leading zero).
pub fn parse_offset_cursor(cursor: Option<&str>) -> Result<usize, SearchError> {
    let Some(cursor) = cursor else { return Ok(0) };
    let digits = cursor
        .strip_prefix(OFFSET_CURSOR_PREFIX)
        .ok_or(SearchError::BadCursor)?;
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SearchError::BadCursor);
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return Err(SearchError::BadCursor);
    }
    digits.parse().map_err(|_| SearchError::BadCursor)
}
