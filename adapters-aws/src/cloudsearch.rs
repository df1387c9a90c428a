//! The CloudSearch index: version-guarded documents uploaded in batches, and structured queries built safely.
//!
//! CloudSearch has no conditional writes and does not order documents received in the same second, so
//! the adapter converges on its own (see `docs/decisions/0003-search-ordering.md`): a delete is written as a
//! tombstone document carrying its version (never a real delete, so it is remembered); every document
//! carries its version; before a batch is uploaded, the versions the index holds for its ids are read and
//! every change not newer is dropped; and within a batch only the newest change per item is kept.
//!
//! Queries use the structured parser. User words only ever appear inside single-quoted strings with `\`
//! and `'` escaped, so no text can become syntax; the last word is a `prefix` term (search as you type),
//! the others whole-word `term`s; the scope and the collection are filters (`fq`).

use std::collections::{BTreeMap, HashMap};

use aws_config::SdkConfig;
use aws_sdk_cloudsearchdomain::Client;
use aws_sdk_cloudsearchdomain::primitives::ByteStream;
use aws_sdk_cloudsearchdomain::types::{ContentType, QueryParser};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rookery_domain::projection::{IndexChange, words as split_words};
use rookery_domain::{Item, ItemKey, UserId};
use rookery_ports::{Failure, Scope, SearchError, SearchHit, SearchIndex, SearchPage, SearchQuery};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{RetryPolicy, sdk_failure};

/// CloudSearch's largest document batch, in bytes.
pub const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// CloudSearch's largest document, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// How many ids one version lookup asks for (keeps the query string short).
const LOOKUP_CHUNK: usize = 25;
/// The prefix of the cursors this index issues.
const CURSOR_PREFIX: &str = "cs1.";
/// How many document ids one page of an erasure's listing asks for (and one delete batch holds).
const ERASE_PAGE: usize = 1000;
/// How many pages one pass of an erasure lists at most (so one pass holds at most 100,000 ids).
const ERASE_PAGES_PER_PASS: usize = 100;
/// How many passes (list, then delete what is new) an erasure makes before it gives up.
const ERASE_PASSES: u32 = 12;
/// The first wait of an erasure for deletes CloudSearch has accepted but not yet applied; it doubles.
const ERASE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);
/// The longest such wait.
const ERASE_WAIT_CAP: std::time::Duration = std::time::Duration::from_secs(4);

/// The document id of an item: `sha256(owner, collection, id)` in hex, within CloudSearch's id alphabet and length.
pub fn document_id(owner: &UserId, key: &ItemKey) -> String {
    let mut hash = Sha256::new();
    for part in [owner.as_str(), key.collection.as_str(), key.id.as_str()] {
        // Lengths first, so no two different triples hash the same bytes.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A string literal of the structured query language: single-quoted, with `\` and `'` escaped.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn term(field: &str, value: &str) -> String {
    format!("(term field={field} {})", quote(value))
}

/// The structured query (`q`) for the words: every word must match the `text` field, the last one as a
/// prefix of a word (search as you type).
///
/// Documents hold the words the domain splits their strings into (letters and digits, lowercased); a
/// query word that is not one such word (`field:x`, `pass*`) can equal no word of any document, so the
/// query matches nothing and `None` is returned, as when no word is given. Splitting it instead would
/// make `pass*` find `passport`, reading the `*` as the wildcard it must never be.
pub fn words_query(words: &[String]) -> Option<String> {
    let mut terms: Vec<String> = Vec::with_capacity(words.len());
    for word in words {
        let lower = word.to_lowercase();
        let single = {
            let mut split = split_words(&lower);
            split.next().as_deref() == Some(lower.as_str()) && split.next().is_none()
        };
        if !single {
            return None;
        }
        terms.push(lower);
    }
    let last = terms.pop()?;
    let mut parts: Vec<String> = terms.iter().map(|w| term("text", w)).collect();
    parts.push(format!("(prefix field=text {})", quote(&last)));
    Some(format!("(and {})", parts.join(" ")))
}

/// The filter (`fq`): live documents, within the scope, in the collection if one is named.
pub fn filter_query(query: &SearchQuery) -> String {
    let mine = term("owner", query.caller.as_str());
    let public = term("visibility", "public");
    let scope = match query.scope {
        Scope::Mine => mine,
        Scope::Public => public,
        Scope::All => format!("(or {mine} {public})"),
    };
    let mut parts = vec![term("state", "live"), scope];
    if let Some(collection) = &query.collection {
        parts.push(term("collection", collection.as_str()));
    }
    format!("(and {})", parts.join(" "))
}

/// The SDF `add` operation for a change: the live document, or a tombstone for a delete.
pub(crate) fn sdf_add(change: &IndexChange) -> Result<Value, Failure> {
    let (owner, key) = change.target();
    let id = document_id(owner, key);
    let mut fields = serde_json::Map::new();
    fields.insert("doc_id".into(), json!(id));
    fields.insert("owner".into(), json!(owner.as_str()));
    fields.insert("collection".into(), json!(key.collection.as_str()));
    fields.insert("item_id".into(), json!(key.id.as_str()));
    fields.insert("version".into(), json!(change.version().0));
    match change {
        IndexChange::Upsert(doc) => {
            fields.insert("state".into(), json!("live"));
            fields.insert("visibility".into(), json!(doc.visibility.as_str()));
            let item = serde_json::to_string(&doc.item).map_err(|e| Failure::permanent(format!("item JSON: {e}")))?;
            fields.insert("item".into(), json!(item));
            let mut text = doc.text.clone();
            // A document over 1 MB would be refused for good and block the change log; drop trailing
            // strings from the searchable text (never the item) until it fits.
            loop {
                fields.insert("text".into(), json!(text));
                let op = json!({"type": "add", "id": id, "fields": fields});
                if op.to_string().len() <= MAX_DOCUMENT_BYTES || text.is_empty() {
                    if text.len() < doc.text.len() {
                        tracing::warn!(%id, "search document over 1 MB: some of its text is not searchable");
                    }
                    return Ok(op);
                }
                text.truncate(text.len() / 2);
            }
        }
        IndexChange::Delete { .. } => {
            fields.insert("state".into(), json!("deleted"));
            fields.insert("visibility".into(), json!("private"));
            Ok(json!({"type": "add", "id": id, "fields": fields}))
        }
    }
}

/// Splits SDF operations into JSON array bodies of at most `limit` bytes each.
pub(crate) fn batches(ops: &[Value], limit: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut size = 2;
    for op in ops {
        let text = op.to_string();
        if !current.is_empty() && size + text.len() + 1 > limit {
            bodies.push(format!("[{}]", current.join(",")));
            current.clear();
            size = 2;
        }
        size += text.len() + 1;
        current.push(text);
    }
    if !current.is_empty() {
        bodies.push(format!("[{}]", current.join(",")));
    }
    bodies
}

/// Per item, the newest change of a slice (the first of equal versions).
fn newest_per_item(changes: &[IndexChange]) -> BTreeMap<String, &IndexChange> {
    let mut newest: BTreeMap<String, &IndexChange> = BTreeMap::new();
    for change in changes {
        let (owner, key) = change.target();
        let id = document_id(owner, key);
        match newest.get(&id) {
            Some(held) if held.version() >= change.version() => {}
            _ => {
                newest.insert(id, change);
            }
        }
    }
    newest
}

fn encode_cursor(offset: u64, cursor: &str) -> String {
    format!("{CURSOR_PREFIX}{offset}.{}", URL_SAFE_NO_PAD.encode(cursor))
}

fn decode_cursor(cursor: &str) -> Result<(u64, String), SearchError> {
    let rest = cursor.strip_prefix(CURSOR_PREFIX).ok_or(SearchError::BadCursor)?;
    let (offset, inner) = rest.split_once('.').ok_or(SearchError::BadCursor)?;
    let offset = offset.parse().map_err(|_| SearchError::BadCursor)?;
    let inner = URL_SAFE_NO_PAD.decode(inner).map_err(|_| SearchError::BadCursor)?;
    let inner = String::from_utf8(inner).map_err(|_| SearchError::BadCursor)?;
    if inner.is_empty() {
        return Err(SearchError::BadCursor);
    }
    Ok((offset, inner))
}

/// The search index on one CloudSearch domain.
#[derive(Debug, Clone)]
pub struct CloudSearchIndex {
    documents: Client,
    search: Client,
    retry: RetryPolicy,
}

impl CloudSearchIndex {
    /// An index using the domain's document endpoint `doc_endpoint` and search endpoint `search_endpoint`.
    pub fn new(sdk: &SdkConfig, doc_endpoint: &str, search_endpoint: &str) -> Self {
        let client = |endpoint: &str| {
            Client::from_conf(
                aws_sdk_cloudsearchdomain::config::Builder::from(sdk)
                    .endpoint_url(endpoint)
                    .build(),
            )
        };
        Self {
            documents: client(doc_endpoint),
            search: client(search_endpoint),
            retry: RetryPolicy::default(),
        }
    }

    /// The same index with another retry policy for transient failures.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The versions the index holds for `ids` (live or tombstone); ids it does not hold are absent.
    async fn versions(&self, ids: &[&String]) -> Result<HashMap<String, u64>, Failure> {
        let mut versions = HashMap::new();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            let terms: Vec<String> = chunk.iter().map(|id| term("doc_id", id)).collect();
            let query = format!("(or {})", terms.join(" "));
            let size = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
            let out = self
                .retry
                .run(Failure::is_retryable, || async {
                    self.search
                        .search()
                        .query(&query)
                        .query_parser(QueryParser::Structured)
                        .r#return("doc_id,version")
                        .size(size)
                        .send()
                        .await
                        .map_err(|e| sdk_failure("Search (versions)", &e))
                })
                .await?;
            for hit in out.hits.and_then(|h| h.hit).unwrap_or_default() {
                let fields = hit.fields.unwrap_or_default();
                let version = fields
                    .get("version")
                    .and_then(|v| v.first())
                    .and_then(|v| v.parse::<u64>().ok());
                if let (Some(id), Some(version)) = (hit.id, version) {
                    versions.insert(id, version);
                }
            }
        }
        Ok(versions)
    }

    async fn upload(&self, body: String) -> Result<(), Failure> {
        self.retry
            .run(Failure::is_retryable, || async {
                self.documents
                    .upload_documents()
                    .content_type(ContentType::ApplicationJson)
                    .documents(ByteStream::from(body.clone().into_bytes()))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| sdk_failure("UploadDocuments", &e))
            })
            .await
    }
}

/// One document of a CloudSearch domain as a listing reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSearchListed {
    /// The document id.
    pub doc_id: String,
    /// The item's owner.
    pub owner: String,
    /// The item's collection.
    pub collection: String,
    /// The item's id.
    pub item_id: String,
    /// The version it carries.
    pub version: u64,
    /// True for a live item, false for a tombstone.
    pub live: bool,
}

/// Rebuilding in place (`rookery aws reindex` on CloudSearch, which has no aliases).
impl CloudSearchIndex {
    /// Uploads every change unless the domain holds a newer version of its document: unlike
    /// [`SearchIndex::apply`], a document at the same version is written again (a rebuild repairs
    /// what an earlier bug or mapping wrote). Returns how many documents were uploaded.
    ///
    /// # Errors
    /// A [`Failure`] when CloudSearch refuses or cannot be reached.
    pub async fn rewrite(&self, changes: &[IndexChange]) -> Result<u64, Failure> {
        let newest = newest_per_item(changes);
        if newest.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&String> = newest.keys().collect();
        let held = self.versions(&ids).await?;
        let mut ops = Vec::new();
        for (id, change) in &newest {
            if held.get(id).is_some_and(|v| *v > change.version().0) {
                continue;
            }
            ops.push(sdf_add(change)?);
        }
        let uploaded = ops.len() as u64;
        for body in batches(&ops, MAX_BATCH_BYTES) {
            self.upload(body).await?;
        }
        Ok(uploaded)
    }

    /// What the domain holds for `ids` (by version); ids it does not hold are absent.
    ///
    /// # Errors
    /// A [`Failure`] when CloudSearch refuses or cannot be reached.
    pub async fn held_versions(&self, ids: &[String]) -> Result<HashMap<String, u64>, Failure> {
        let refs: Vec<&String> = ids.iter().collect();
        self.versions(&refs).await
    }

    /// Up to `size` documents from `cursor` (`None` for the first page) of a listing of every document,
    /// and the cursor of the next page (`None` after the last).
    ///
    /// # Errors
    /// A [`Failure`] when CloudSearch refuses or cannot be reached, or a document is unreadable.
    pub async fn list_documents(
        &self,
        cursor: Option<&str>,
        size: usize,
    ) -> Result<(Vec<CloudSearchListed>, Option<String>), Failure> {
        let cursor = cursor.unwrap_or("initial").to_owned();
        let size = i64::try_from(size.clamp(1, 10_000)).unwrap_or(1000);
        let hits = self
            .structured_page(
                "matchall",
                &cursor,
                size,
                "doc_id,owner,collection,item_id,version,state",
                "Search (listing)",
            )
            .await?;
        let mut listed = Vec::new();
        for hit in hits.hit.unwrap_or_default() {
            let fields = hit.fields.unwrap_or_default();
            let field = |name: &str| fields.get(name).and_then(|v| v.first()).cloned();
            let (Some(doc_id), Some(owner), Some(collection), Some(item_id), Some(version)) = (
                hit.id.clone(),
                field("owner"),
                field("collection"),
                field("item_id"),
                field("version").and_then(|v| v.parse::<u64>().ok()),
            ) else {
                return Err(Failure::permanent(format!(
                    "an unreadable CloudSearch document {:?}",
                    hit.id
                )));
            };
            listed.push(CloudSearchListed {
                doc_id,
                owner,
                collection,
                item_id,
                version,
                live: field("state").as_deref() == Some("live"),
            });
        }
        let next = match hits.cursor {
            Some(next) if !listed.is_empty() => Some(next),
            _ => None,
        };
        Ok((listed, next))
    }

    /// One page of a structured query from `cursor` (`"initial"` for the first), with the `returned`
    /// fields; `what` names the call in errors.
    async fn structured_page(
        &self,
        query: &str,
        cursor: &str,
        size: i64,
        returned: &str,
        what: &'static str,
    ) -> Result<aws_sdk_cloudsearchdomain::types::Hits, Failure> {
        let out = self
            .retry
            .run(Failure::is_retryable, || async {
                self.search
                    .search()
                    .query(query)
                    .query_parser(QueryParser::Structured)
                    .cursor(cursor)
                    .size(size)
                    .r#return(returned)
                    .send()
                    .await
                    .map_err(|e| sdk_failure(what, &e))
            })
            .await?;
        out.hits
            .ok_or_else(|| Failure::permanent("a search answer without hits"))
    }

    /// The ids of `owner`'s documents (live or tombstone, every visibility), up to
    /// `ERASE_PAGES_PER_PASS` pages of `ERASE_PAGE`.
    async fn owner_documents(&self, owner: &UserId) -> Result<Vec<String>, Failure> {
        let query = term("owner", owner.as_str());
        let size = i64::try_from(ERASE_PAGE).unwrap_or(1000);
        let mut ids = Vec::new();
        let mut cursor = "initial".to_owned();
        for _ in 0..ERASE_PAGES_PER_PASS {
            let hits = self
                .structured_page(&query, &cursor, size, "_no_fields", "Search (an owner's documents)")
                .await?;
            let page: Vec<String> = hits.hit.unwrap_or_default().into_iter().filter_map(|h| h.id).collect();
            let full = page.len() >= ERASE_PAGE;
            ids.extend(page);
            match hits.cursor {
                Some(next) if full => cursor = next,
                _ => break,
            }
        }
        Ok(ids)
    }

    /// Deletes every document of `owner` (live or tombstone, public or private) for good, and answers
    /// once a search finds none (account erasure).
    ///
    /// Each pass finds the owner's documents by a structured query on the `owner` field and deletes the
    /// ones it has not deleted yet, in batches of `ERASE_PAGE`; CloudSearch applies an accepted batch
    /// within seconds, so a pass that finds only documents already deleted waits (doubling, capped)
    /// before looking again. Harmless to repeat: deleting an id the domain does not hold is accepted.
    ///
    /// With its tombstones gone, an owner's old change arriving later would be applied again: the caller
    /// must make sure no change of an erased owner reaches the index afterwards (on AWS the indexer
    /// checks the erasure marker).
    ///
    /// # Errors
    /// A [`Failure`] when CloudSearch refuses or cannot be reached, or still finds documents of the
    /// owner after `ERASE_PASSES` passes (transient: trying again goes on where this stopped).
    pub async fn erase_owner(&self, owner: &UserId) -> Result<u64, Failure> {
        let mut deleted: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut wait = ERASE_WAIT;
        let mut left = 0;
        for _ in 0..ERASE_PASSES {
            let found = self.owner_documents(owner).await?;
            if found.is_empty() {
                return Ok(deleted.len() as u64);
            }
            left = found.len();
            let new: Vec<String> = found.into_iter().filter(|id| !deleted.contains(id)).collect();
            if new.is_empty() {
                // Every document found was deleted by an earlier pass: CloudSearch has not applied it yet.
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(ERASE_WAIT_CAP);
                continue;
            }
            for chunk in new.chunks(ERASE_PAGE) {
                self.delete_documents(chunk).await?;
            }
            deleted.extend(new);
        }
        Err(Failure::transient(format!(
            "CloudSearch still holds {left} documents of {owner} after {ERASE_PASSES} passes of deleting them"
        )))
    }

    /// Deletes the documents `ids` for good (documents of no item: their versions are not kept).
    ///
    /// # Errors
    /// A [`Failure`] when CloudSearch refuses or cannot be reached.
    pub async fn delete_documents(&self, ids: &[String]) -> Result<(), Failure> {
        let ops: Vec<Value> = ids.iter().map(|id| json!({"type": "delete", "id": id})).collect();
        for body in batches(&ops, MAX_BATCH_BYTES) {
            self.upload(body).await?;
        }
        Ok(())
    }
}

fn hit_item(fields: &HashMap<String, Vec<String>>) -> Result<(Item, f64), Failure> {
    let text = fields
        .get("item")
        .and_then(|v| v.first())
        .ok_or_else(|| Failure::permanent("a search hit without its item"))?;
    let item = serde_json::from_str(text).map_err(|e| Failure::permanent(format!("indexed item unreadable: {e}")))?;
    let score = fields
        .get("_score")
        .and_then(|v| v.first())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    Ok((item, score))
}

impl SearchIndex for CloudSearchIndex {
    async fn apply(&self, changes: &[IndexChange]) -> Result<(), SearchError> {
        let newest = newest_per_item(changes);
        if newest.is_empty() {
            return Ok(());
        }
        let ids: Vec<&String> = newest.keys().collect();
        let held = self.versions(&ids).await?;
        let mut ops = Vec::new();
        for (id, change) in &newest {
            if held.get(id).is_some_and(|v| *v >= change.version().0) {
                continue;
            }
            ops.push(sdf_add(change)?);
        }
        for body in batches(&ops, MAX_BATCH_BYTES) {
            self.upload(body).await?;
        }
        Ok(())
    }

    async fn query(&self, query: &SearchQuery) -> Result<SearchPage, SearchError> {
        let (offset, cursor) = match &query.cursor {
            Some(cursor) => decode_cursor(cursor)?,
            None => (0, "initial".to_owned()),
        };
        let Some(words) = words_query(&query.words) else {
            return Ok(SearchPage {
                found: 0,
                hits: Vec::new(),
                next_cursor: None,
            });
        };
        let size = i64::try_from(query.limit.clamp(1, 100)).unwrap_or(100);
        let out = self
            .retry
            .run(
                |e: &SearchError| matches!(e, SearchError::Unavailable(f) if f.retryable),
                || async {
                    self.search
                        .search()
                        .query(&words)
                        .query_parser(QueryParser::Structured)
                        .filter_query(filter_query(query))
                        .cursor(&cursor)
                        .size(size)
                        .r#return("_score,item")
                        .send()
                        .await
                        .map_err(|e| {
                            let failure = sdk_failure("Search", &e);
                            // CloudSearch refuses a cursor it did not issue (or an expired one) with a SearchException.
                            if query.cursor.is_some() && failure.message.to_ascii_lowercase().contains("cursor") {
                                SearchError::BadCursor
                            } else {
                                SearchError::Unavailable(failure)
                            }
                        })
                },
            )
            .await?;
        let hits = out
            .hits
            .ok_or_else(|| Failure::permanent("a search answer without hits"))?;
        let found = u64::try_from(hits.found).unwrap_or(0);
        let mut page = Vec::new();
        for hit in hits.hit.unwrap_or_default() {
            let (item, score) = hit_item(&hit.fields.unwrap_or_default())?;
            page.push(SearchHit { item, score });
        }
        let next = offset + page.len() as u64;
        let next_cursor = match hits.cursor {
            Some(cursor) if !page.is_empty() && next < found => Some(encode_cursor(next, &cursor)),
            _ => None,
        };
        Ok(SearchPage {
            found,
            hits: page,
            next_cursor,
        })
    }

    async fn erase_owner(&self, owner: &UserId) -> Result<(), SearchError> {
        Ok(CloudSearchIndex::erase_owner(self, owner).await.map(|_| ())?)
    }
}

#[cfg(test)]
mod tests {
    use rookery_domain::projection::search_document;
    use rookery_domain::{CollectionName, ItemId, Timestamp, Version, Visibility};
    use serde_json::Map;

    use super::*;

    fn item(owner: &str, id: &str, version: u64, text: &str) -> Item {
        let mut data = Map::new();
        data.insert("t".into(), json!(text));
        Item {
            owner: UserId::parse(owner).unwrap(),
            collection: CollectionName::parse("notes").unwrap(),
            id: ItemId::parse(id).unwrap(),
            version: Version(version),
            visibility: Visibility::Private,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            data,
        }
    }

    #[test]
    fn quoting_escapes_backslashes_and_quotes_so_text_stays_text() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("o'brien"), r"'o\'brien'");
        assert_eq!(quote(r"a\b"), r"'a\\b'");
        assert_eq!(quote(r"x\') (or matchall) ('"), r"'x\\\') (or matchall) (\''");
        assert_eq!(
            words_query(&["a".into(), "Brien".into()]).as_deref(),
            Some("(and (term field=text 'a') (prefix field=text 'brien'))")
        );
        assert_eq!(
            words_query(&["pass".into()]).as_deref(),
            Some("(and (prefix field=text 'pass'))"),
            "the last word is a prefix"
        );
        for not_a_word in ["O'Brien", "pass*", "'", r"\", "a b", "field:x"] {
            assert_eq!(
                words_query(&["a".into(), not_a_word.into()]),
                None,
                "{not_a_word:?} can equal no indexed word: nothing to match"
            );
        }
    }

    #[test]
    fn the_filter_holds_state_scope_and_collection() {
        let caller = UserId::parse("al'ice").unwrap_or_else(|_| UserId::parse("alice").unwrap());
        let mut query = SearchQuery {
            caller,
            words: vec!["w".into()],
            collection: Some(CollectionName::parse("notes").unwrap()),
            scope: Scope::All,
            limit: 10,
            cursor: None,
        };
        assert_eq!(
            filter_query(&query),
            "(and (term field=state 'live') (or (term field=owner 'alice') (term field=visibility 'public')) (term field=collection 'notes'))"
        );
        query.scope = Scope::Mine;
        query.collection = None;
        assert_eq!(
            filter_query(&query),
            "(and (term field=state 'live') (term field=owner 'alice'))"
        );
        query.scope = Scope::Public;
        assert_eq!(
            filter_query(&query),
            "(and (term field=state 'live') (term field=visibility 'public'))"
        );
    }

    #[test]
    fn document_ids_are_safe_distinct_and_stable() {
        let key = |c: &str, i: &str| ItemKey::new(CollectionName::parse(c).unwrap(), ItemId::parse(i).unwrap());
        let a = document_id(&UserId::parse("alice").unwrap(), &key("notes", "n1"));
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, document_id(&UserId::parse("alice").unwrap(), &key("notes", "n1")));
        assert_ne!(a, document_id(&UserId::parse("bob").unwrap(), &key("notes", "n1")));
        assert_ne!(a, document_id(&UserId::parse("alice").unwrap(), &key("note", "sn1")));
    }

    #[test]
    fn deletes_become_tombstones_and_only_the_newest_change_per_item_is_kept() {
        let v1 = IndexChange::Upsert(search_document(&item("alice", "n1", 1, "one")));
        let v3 = IndexChange::Upsert(search_document(&item("alice", "n1", 3, "three")));
        let del2 = IndexChange::Delete {
            owner: UserId::parse("alice").unwrap(),
            key: ItemKey::new(CollectionName::parse("notes").unwrap(), ItemId::parse("n1").unwrap()),
            version: Version(2),
        };
        let changes = [v1.clone(), v3.clone(), del2.clone()];
        let newest = newest_per_item(&changes);
        assert_eq!(newest.len(), 1);
        assert_eq!(newest.values().next().map(|c| c.version()), Some(Version(3)));

        let tombstone = sdf_add(&del2).unwrap();
        assert_eq!(tombstone["type"], "add", "a delete is never a real delete");
        assert_eq!(tombstone["fields"]["state"], "deleted");
        assert_eq!(tombstone["fields"]["version"], 2);
        let live = sdf_add(&v3).unwrap();
        assert_eq!(live["fields"]["state"], "live");
        assert_eq!(live["fields"]["text"], json!(["three"]));
        let stored: Item = serde_json::from_str(live["fields"]["item"].as_str().unwrap()).unwrap();
        assert_eq!(stored.version, Version(3));
    }

    #[test]
    fn oversized_text_is_trimmed_to_fit_one_megabyte() {
        let mut big = item("alice", "n1", 1, "x");
        big.data.insert("t".into(), json!(vec!["word ".repeat(1000); 120]));
        let op = sdf_add(&IndexChange::Upsert(search_document(&big))).unwrap();
        // The item alone is about 600 KB and its text as much again: only part of the text fits.
        assert!(op.to_string().len() <= MAX_DOCUMENT_BYTES);
        let kept = op["fields"]["text"].as_array().map_or(0, Vec::len);
        assert!(kept > 0 && kept < 120, "{kept} strings kept");
        assert!(op["fields"]["item"].as_str().is_some(), "the item itself is kept");
    }

    #[test]
    fn batches_stay_under_the_limit_and_keep_every_operation() {
        let ops: Vec<Value> = (0..50)
            .map(|i| json!({"type": "add", "id": format!("d{i}"), "fields": {"t": "x".repeat(100)}}))
            .collect();
        let bodies = batches(&ops, 1000);
        assert!(bodies.len() > 1);
        let mut seen = 0;
        for body in &bodies {
            assert!(body.len() <= 1000, "{}", body.len());
            seen += serde_json::from_str::<Vec<Value>>(body).unwrap().len();
        }
        assert_eq!(seen, 50);
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let cursor = encode_cursor(20, "opaque+/=cursor");
        assert_eq!(decode_cursor(&cursor).unwrap(), (20, "opaque+/=cursor".to_owned()));
        for bad in ["", "initial", "cs1.", "cs1.x.abc", "cs1.5.!!!", "other.5.YQ"] {
            assert!(matches!(decode_cursor(bad), Err(SearchError::BadCursor)), "{bad}");
        }
    }
}
