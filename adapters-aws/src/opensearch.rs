//! The OpenSearch index: an Amazon OpenSearch Service domain or an OpenSearch Serverless collection,
//! through its REST API, with SigV4-signed requests.
//!
//! Versions are guarded by OpenSearch itself (see `docs/decisions/0005-opensearch-versioning.md`): every
//! item has one document, and a delete writes a tombstone document carrying the delete's version instead
//! of deleting it, so no version is ever forgotten (a domain forgets a deleted document's version after
//! `index.gc_deletes`). On a domain a write is an `index` with `version_type=external`, which OpenSearch
//! refuses unless the version is newer; on a collection, where that option is not offered, it is an
//! upsert whose script keeps the newer version.
//!
//! Writes go in `_bulk` requests; each item's result maps back to its change, so a failure names the
//! first change not applied ([`SearchIndex::apply_each`]). Queries are JSON (`bool` of `term`, `prefix`
//! and filters), never a query string: no user text can become syntax. Pages continue with
//! `search_after` on (score, document id), a stable order, and `found` is exact (`track_total_hits`).
//! The index is used through an alias, created with its mappings on first write.

mod body;
mod signing;

use aws_config::SdkConfig;
use rookery_domain::UserId;
use rookery_domain::projection::IndexChange;
use rookery_ports::{ApplyFailure, Failure, SearchError, SearchIndex, SearchPage, SearchQuery};
use serde_json::{Value, json};

use crate::error::RetryPolicy;
use body::{MAX_BULK_BYTES, bulk_chunks, bulk_outcome, decode_cursor, index_definition, read_page, search_body};
use signing::{Answer, Transport};

/// Which OpenSearch offering the endpoint is, which decides the signing name and how versions are guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenSearchService {
    /// An Amazon OpenSearch Service domain (`es`): external versions.
    #[default]
    Domain,
    /// An OpenSearch Serverless collection (`aoss`): conditional upserts.
    Serverless,
}

impl OpenSearchService {
    /// The SigV4 service name: `es` or `aoss`.
    pub fn signing_name(self) -> &'static str {
        match self {
            OpenSearchService::Domain => "es",
            OpenSearchService::Serverless => "aoss",
        }
    }

    /// The service a signing name names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "es" => Some(OpenSearchService::Domain),
            "aoss" => Some(OpenSearchService::Serverless),
            _ => None,
        }
    }
}

/// True when `name` can be the alias (and, with `-1` appended, the index name): 1 to 200 of `a-z`,
/// `0-9`, `-` and `_`, not starting with `-` or `_` (OpenSearch's rules, kept to a path-safe subset).
pub fn valid_alias(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with(['-', '_'])
}

/// The search index on one OpenSearch domain or collection, used through an alias. Clones share the
/// credentials cache and the knowledge that the index exists.
#[derive(Debug, Clone)]
pub struct OpenSearchIndex {
    transport: Transport,
    service: OpenSearchService,
    alias: String,
    retry: RetryPolicy,
    ready: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

const JSON: &str = "application/json";
/// How many deletes by query an erasure makes at most before it reports the owner's documents left.
const ERASE_ROUNDS: u32 = 10;
/// The first wait between two of them; it doubles.
const ERASE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);
/// The longest wait between two of them.
const ERASE_WAIT_CAP: std::time::Duration = std::time::Duration::from_secs(4);
const NDJSON: &str = "application/x-ndjson";

impl OpenSearchIndex {
    /// The index behind `alias` at `endpoint` (the domain's or collection's URL), signed for `service`
    /// with the region and credentials of `sdk`.
    pub fn new(sdk: &SdkConfig, endpoint: &str, service: OpenSearchService, alias: &str) -> Self {
        Self {
            transport: Transport::new(sdk, endpoint, service),
            service,
            alias: alias.to_owned(),
            retry: RetryPolicy::default(),
            ready: std::sync::Arc::default(),
        }
    }

    /// The same index with another retry policy for transient failures.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The alias the index is used through.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The name of the index the alias is created on.
    pub fn first_index(&self) -> String {
        format!("{}-1", self.alias)
    }

    /// Sends a request, retrying when no answer came or the answer is a throttle or server error.
    async fn call(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Result<Answer, Failure> {
        self.retry
            .run(Failure::is_retryable, || async {
                let answer = self.transport.send(method, path, content_type, body.clone()).await?;
                if crate::error::is_transient(None, Some(answer.status)) {
                    return Err(answer.failure(&format!("{method} {path}")));
                }
                Ok(answer)
            })
            .await
    }

    async fn call_json(&self, method: &str, path: &str, body: &Value) -> Result<Answer, Failure> {
        self.call(method, path, JSON, body.to_string().into_bytes()).await
    }

    /// Creates the index with its mappings under the alias, unless the alias exists. Safe to run from
    /// several processes at once, and again.
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses (the mappings, the permissions) or cannot be reached.
    pub async fn ensure_index(&self) -> Result<(), Failure> {
        let alias = &self.alias;
        let found = self.call("GET", &format!("/_alias/{alias}"), JSON, Vec::new()).await?;
        if found.is_success() {
            return Ok(());
        }
        if found.status != 404 {
            return Err(found.failure(&format!("GET /_alias/{alias}")));
        }
        let index = self.first_index();
        let created = self
            .call_json("PUT", &format!("/{index}"), &index_definition(alias))
            .await?;
        if created.is_success() {
            tracing::info!(%index, %alias, "created the OpenSearch index");
            return Ok(());
        }
        if created.error_type() != Some("resource_already_exists_exception") {
            return Err(created.failure(&format!("PUT /{index}")));
        }
        // The index exists without the alias (another process is creating it, or one was interrupted).
        let actions = json!({"actions": [{"add": {"index": index, "alias": alias, "is_write_index": true}}]});
        let added = self.call_json("POST", "/_aliases", &actions).await?;
        if added.is_success() {
            Ok(())
        } else {
            Err(added.failure("POST /_aliases"))
        }
    }

    async fn ready(&self) -> Result<(), Failure> {
        self.ready.get_or_try_init(|| self.ensure_index()).await.map(|_| ())
    }

    /// How many live items the index holds (tombstones not counted), by `_count`.
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses or cannot be reached.
    pub async fn count_live(&self) -> Result<u64, Failure> {
        self.count("state", body::LIVE).await
    }

    /// How many documents (tombstones included) have `value` in `field`, by `_count`; none without an index.
    async fn count(&self, field: &str, value: &str) -> Result<u64, Failure> {
        let path = format!("/{}/_count", self.alias);
        let query = json!({"query": {"term": {field: {"value": value}}}});
        let answer = self.call_json("POST", &path, &query).await?;
        if answer.status == 404 && answer.error_type() == Some("index_not_found_exception") {
            return Ok(0);
        }
        if !answer.is_success() {
            return Err(answer.failure(&format!("POST {path}")));
        }
        answer.body["count"]
            .as_u64()
            .ok_or_else(|| Failure::permanent("_count answered no count"))
    }

    /// Deletes every document of `owner`, tombstones included, by `_delete_by_query` (account erasure),
    /// and returns how many were deleted.
    ///
    /// With its tombstones gone, an owner's old change arriving later would be applied again: the caller
    /// must make sure no change of an erased owner reaches the index afterwards.
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses, cannot be reached, or reports documents it could not delete.
    pub async fn erase_owner(&self, owner: &UserId) -> Result<u64, Failure> {
        let mut path = format!("/{}/_delete_by_query?conflicts=proceed", self.alias);
        if self.service == OpenSearchService::Domain {
            path.push_str("&refresh=true");
        }
        let query = json!({"query": {"term": {"owner": {"value": owner.as_str()}}}});
        let answer = self.call_json("POST", &path, &query).await?;
        if answer.status == 404 && answer.error_type() == Some("index_not_found_exception") {
            return Ok(0);
        }
        if !answer.is_success() {
            return Err(answer.failure(&format!("POST {path}")));
        }
        if answer.body["failures"].as_array().is_some_and(|f| !f.is_empty()) {
            return Err(Failure::transient(format!(
                "_delete_by_query left documents of {owner}: {}",
                answer.body["failures"]
            )));
        }
        Ok(answer.body["deleted"].as_u64().unwrap_or(0))
    }

    /// How many documents of `owner` (tombstones included) a search finds now, by `_count`.
    async fn count_owner(&self, owner: &UserId) -> Result<u64, Failure> {
        self.count("owner", owner.as_str()).await
    }

    /// [`Self::erase_owner`], repeated until a search finds no document of `owner`.
    ///
    /// On a domain the delete refreshes the index, so one round does it; a Serverless collection takes
    /// no `refresh` and makes writes searchable on its own schedule, so a document written just before
    /// may escape the delete's query, and one deleted may still be found: the delete is repeated, with
    /// waits (doubling, capped), until `_count` finds none, at most `ERASE_ROUNDS` times.
    async fn erase_owner_until_gone(&self, owner: &UserId) -> Result<(), Failure> {
        let mut wait = ERASE_WAIT;
        for round in 1..=ERASE_ROUNDS {
            self.erase_owner(owner).await?;
            let left = self.count_owner(owner).await?;
            if left == 0 {
                return Ok(());
            }
            if round == ERASE_ROUNDS {
                return Err(Failure::transient(format!(
                    "OpenSearch still finds {left} documents of {owner} after {ERASE_ROUNDS} deletes by query"
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(ERASE_WAIT_CAP);
        }
        Ok(())
    }

    /// The `_bulk` path into `target` (the alias, or one index by name), on a domain waiting for the
    /// refresh that makes the changes searchable (a collection refreshes on its own schedule and takes
    /// no `refresh`).
    fn bulk_path(&self, target: &str) -> String {
        match self.service {
            OpenSearchService::Domain => format!("/{target}/_bulk?refresh=wait_for"),
            OpenSearchService::Serverless => format!("/{target}/_bulk"),
        }
    }

    /// Sends one `_bulk` body of `len` changes, retrying it whole while its first failure is transient
    /// (safe: each change is guarded by version, so one applied already is refused or left alone).
    async fn bulk(&self, target: &str, body: &str, len: usize) -> Result<(), (usize, Failure)> {
        let path = self.bulk_path(target);
        let mut tried = 1;
        loop {
            let outcome = match self
                .transport
                .send("POST", &path, NDJSON, body.as_bytes().to_vec())
                .await
            {
                Ok(answer) if answer.is_success() => bulk_outcome(&answer.body, len, self.service),
                Ok(answer) => Err((0, answer.failure(&format!("POST {path}")))),
                Err(failure) => Err((0, failure)),
            };
            match outcome {
                Err((_, failure)) if failure.retryable && tried < self.retry.attempts.max(1) => {
                    tracing::warn!(%failure, "a _bulk item failed; sending the batch again");
                    tokio::time::sleep(self.retry.backoff(tried)).await;
                    tried += 1;
                }
                outcome => return outcome,
            }
        }
    }
}

/// Blue/green rebuilds (`rookery aws reindex`, `docs/decisions/0009-opensearch-blue-green-reindex.md`):
/// generations of the index are named `<alias>-<n>`, built by name beside the one in use, and swapped
/// under the alias in one request.
impl OpenSearchIndex {
    /// The name of generation `n` of the index (`<alias>-<n>`; the first write creates generation 1).
    pub fn generation(&self, n: u64) -> String {
        format!("{}-{n}", self.alias)
    }

    /// The generation number of `index`, when it is one of this alias's generations.
    pub fn generation_of(&self, index: &str) -> Option<u64> {
        let n = index.strip_prefix(self.alias.as_str())?.strip_prefix('-')?;
        if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()
    }

    /// The indexes the alias points at, sorted (none when the alias does not exist yet).
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses or cannot be reached.
    pub async fn alias_indexes(&self) -> Result<Vec<String>, Failure> {
        let path = format!("/_alias/{}", self.alias);
        let answer = self.call("GET", &path, JSON, Vec::new()).await?;
        if answer.status == 404 {
            return Ok(Vec::new());
        }
        if !answer.is_success() {
            return Err(answer.failure(&format!("GET {path}")));
        }
        let mut names: Vec<String> = answer
            .body
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Creates `index` with the adapter's mappings and without the alias: a new generation to build
    /// beside the one in use. An index of that name that exists already is left as it is; the answer
    /// says whether this call created it.
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses (a bad name, the permissions) or cannot be reached.
    pub async fn create_generation(&self, index: &str) -> Result<bool, Failure> {
        if !valid_alias(index) {
            return Err(Failure::permanent(format!("{index:?} is not a valid index name")));
        }
        let mut definition = index_definition(&self.alias);
        if let Some(object) = definition.as_object_mut() {
            object.remove("aliases");
        }
        let created = self.call_json("PUT", &format!("/{index}"), &definition).await?;
        if created.is_success() {
            Ok(true)
        } else if created.error_type() == Some("resource_already_exists_exception") {
            Ok(false)
        } else {
            Err(created.failure(&format!("PUT /{index}")))
        }
    }

    /// Writes `changes` into `target` (an index by name, or the alias), each guarded by its version as
    /// every write of the adapter is; the failure names the first change not applied.
    ///
    /// # Errors
    /// The position of the first change not applied, and why.
    pub async fn apply_into(&self, target: &str, changes: &[IndexChange]) -> Result<(), ApplyFailure> {
        let failed = |index: usize, failure: Failure| ApplyFailure {
            index,
            error: SearchError::Unavailable(failure),
        };
        let chunks = bulk_chunks(changes, self.service, MAX_BULK_BYTES).map_err(|(i, f)| failed(i, f))?;
        for chunk in chunks {
            self.bulk(target, &chunk.body, chunk.len)
                .await
                .map_err(|(i, failure)| failed(chunk.first + i, failure))?;
        }
        Ok(())
    }

    /// Points the alias at `to` instead of `from`, as its write index, in one `_aliases` request, which
    /// OpenSearch applies whole: every search and write sees one index or the other, never both or none.
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses (an index missing, the alias not on `from`) or cannot be reached;
    /// the alias is then where it was.
    pub async fn switch_alias(&self, from: &str, to: &str) -> Result<(), Failure> {
        let actions = json!({"actions": [
            {"remove": {"index": from, "alias": self.alias}},
            {"add": {"index": to, "alias": self.alias, "is_write_index": true}},
        ]});
        let answer = self.call_json("POST", "/_aliases", &actions).await?;
        if answer.is_success() {
            tracing::info!(%from, %to, alias = %self.alias, "switched the OpenSearch alias");
            Ok(())
        } else {
            Err(answer.failure("POST /_aliases"))
        }
    }

    /// Points the alias, which points at no index yet, at `to` as its write index.
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses (`to` missing) or cannot be reached.
    pub async fn attach_alias(&self, to: &str) -> Result<(), Failure> {
        let actions = json!({"actions": [{"add": {"index": to, "alias": self.alias, "is_write_index": true}}]});
        let answer = self.call_json("POST", "/_aliases", &actions).await?;
        if answer.is_success() {
            tracing::info!(%to, alias = %self.alias, "pointed the OpenSearch alias");
            Ok(())
        } else {
            Err(answer.failure("POST /_aliases"))
        }
    }

    /// True when the index `index` exists.
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses or cannot be reached.
    pub async fn index_exists(&self, index: &str) -> Result<bool, Failure> {
        let path = format!("/{index}/_count");
        let answer = self
            .call_json("POST", &path, &json!({"query": {"match_all": {}}}))
            .await?;
        if answer.status == 404 {
            return Ok(false);
        }
        if answer.is_success() {
            Ok(true)
        } else {
            Err(answer.failure(&format!("POST {path}")))
        }
    }

    /// Deletes the generation `index`, by its own name; refuses the alias itself, an index that is not
    /// one of its generations, and any index the alias points at.
    ///
    /// # Errors
    /// A [`Failure`] for those refusals, or when OpenSearch refuses or cannot be reached.
    pub async fn delete_generation(&self, index: &str) -> Result<(), Failure> {
        if self.generation_of(index).is_none() {
            return Err(Failure::permanent(format!(
                "{index:?} is not a generation of the alias {}",
                self.alias
            )));
        }
        if self.alias_indexes().await?.iter().any(|name| name == index) {
            return Err(Failure::permanent(format!(
                "{index} is in use behind the alias {}: switch the alias first",
                self.alias
            )));
        }
        let answer = self.call("DELETE", &format!("/{index}"), JSON, Vec::new()).await?;
        if answer.is_success() || answer.status == 404 {
            Ok(())
        } else {
            Err(answer.failure(&format!("DELETE /{index}")))
        }
    }
}

/// What an index holds for one document: its version and whether it is a live item or a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldDocument {
    /// The version the document carries.
    pub version: u64,
    /// True for a live item, false for a tombstone.
    pub live: bool,
}

/// One document of an index as a listing reads it: its id, whose item it is, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedDocument {
    /// The document id.
    pub doc_id: String,
    /// The item's owner.
    pub owner: String,
    /// The item's collection.
    pub collection: String,
    /// The item's id.
    pub item_id: String,
    /// Its version and state.
    pub held: HeldDocument,
}

/// Reading one generation by name, for checking a rebuilt index against the table before the switch.
impl OpenSearchIndex {
    /// What `index` holds for each of `ids` (read in real time by `_mget`, refresh or not); ids it does
    /// not hold are absent.
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses or cannot be reached.
    pub async fn held(
        &self,
        index: &str,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, HeldDocument>, Failure> {
        let mut held = std::collections::HashMap::new();
        for chunk in ids.chunks(1000) {
            let docs: Vec<Value> = chunk
                .iter()
                .map(|id| json!({"_id": id, "_source": ["version", "state"]}))
                .collect();
            let path = format!("/{index}/_mget");
            let answer = self.call_json("POST", &path, &json!({"docs": docs})).await?;
            if !answer.is_success() {
                return Err(answer.failure(&format!("POST {path}")));
            }
            for doc in answer.body["docs"].as_array().into_iter().flatten() {
                if doc["found"].as_bool() != Some(true) {
                    continue;
                }
                let (Some(id), Some(version)) = (doc["_id"].as_str(), doc["_source"]["version"].as_u64()) else {
                    return Err(Failure::permanent(format!(
                        "_mget answered an unreadable document: {doc}"
                    )));
                };
                let live = doc["_source"]["state"].as_str() == Some(body::LIVE);
                held.insert(id.to_owned(), HeldDocument { version, live });
            }
        }
        Ok(held)
    }

    /// How many documents `index` holds, tombstones included.
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses or cannot be reached.
    pub async fn count_documents(&self, index: &str) -> Result<u64, Failure> {
        let path = format!("/{index}/_count");
        let answer = self
            .call_json("POST", &path, &json!({"query": {"match_all": {}}}))
            .await?;
        if !answer.is_success() {
            return Err(answer.failure(&format!("POST {path}")));
        }
        answer.body["count"]
            .as_u64()
            .ok_or_else(|| Failure::permanent("_count answered no count"))
    }

    /// Up to `size` documents of `index` after the document id `after`, in document id order.
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses or cannot be reached, or a document is unreadable.
    pub async fn list_documents(
        &self,
        index: &str,
        after: Option<&str>,
        size: usize,
    ) -> Result<Vec<ListedDocument>, Failure> {
        let mut request = json!({
            "size": size.clamp(1, 10_000),
            "query": {"match_all": {}},
            "sort": [{"doc_id": {"order": "asc"}}],
            "_source": ["doc_id", "owner", "collection", "item_id", "version", "state"],
        });
        if let Some(after) = after {
            request["search_after"] = json!([after]);
        }
        let path = format!("/{index}/_search");
        let answer = self.call_json("POST", &path, &request).await?;
        if !answer.is_success() {
            return Err(answer.failure(&format!("POST {path}")));
        }
        let mut listed = Vec::new();
        for hit in answer.body["hits"]["hits"].as_array().into_iter().flatten() {
            let source = &hit["_source"];
            let text = |field: &str| source[field].as_str().map(str::to_owned);
            let (Some(doc_id), Some(owner), Some(collection), Some(item_id), Some(version)) = (
                text("doc_id"),
                text("owner"),
                text("collection"),
                text("item_id"),
                source["version"].as_u64(),
            ) else {
                return Err(Failure::permanent(format!("an unreadable document in {index}: {hit}")));
            };
            let live = source["state"].as_str() == Some(body::LIVE);
            listed.push(ListedDocument {
                doc_id,
                owner,
                collection,
                item_id,
                held: HeldDocument { version, live },
            });
        }
        Ok(listed)
    }

    /// Deletes the documents `ids` from `index` (by name), whether it holds them or not.
    ///
    /// # Errors
    /// A [`Failure`] when OpenSearch refuses one or cannot be reached.
    pub async fn delete_documents(&self, index: &str, ids: &[String]) -> Result<(), Failure> {
        for chunk in ids.chunks(1000) {
            let mut lines = String::new();
            for id in chunk {
                lines.push_str(&json!({"delete": {"_id": id}}).to_string());
                lines.push('\n');
            }
            let path = self.bulk_path(index);
            let answer = self.call("POST", &path, NDJSON, lines.into_bytes()).await?;
            if !answer.is_success() {
                return Err(answer.failure(&format!("POST {path}")));
            }
            for item in answer.body["items"].as_array().into_iter().flatten() {
                let status = item["delete"]["status"].as_u64().unwrap_or(0);
                if !(200..300).contains(&status) && status != 404 {
                    return Err(Failure::transient(format!("_bulk delete in {index} failed: {item}")));
                }
            }
        }
        Ok(())
    }
}

impl SearchIndex for OpenSearchIndex {
    async fn apply(&self, changes: &[IndexChange]) -> Result<(), SearchError> {
        self.apply_each(changes).await.map_err(|failed| failed.error)
    }

    async fn apply_each(&self, changes: &[IndexChange]) -> Result<(), ApplyFailure> {
        if changes.is_empty() {
            return Ok(());
        }
        let failed = |index: usize, failure: Failure| ApplyFailure {
            index,
            error: SearchError::Unavailable(failure),
        };
        self.ready().await.map_err(|failure| failed(0, failure))?;
        self.apply_into(&self.alias, changes).await
    }

    async fn query(&self, query: &SearchQuery) -> Result<SearchPage, SearchError> {
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let Some(request) = search_body(query, after.as_ref()) else {
            return Ok(SearchPage {
                found: 0,
                hits: Vec::new(),
                next_cursor: None,
            });
        };
        let path = format!("/{}/_search", self.alias);
        let answer = self.call_json("POST", &path, &request).await?;
        if answer.status == 404 && answer.error_type() == Some("index_not_found_exception") {
            // Nothing was ever written: the index is created on the first write.
            return Ok(SearchPage {
                found: 0,
                hits: Vec::new(),
                next_cursor: None,
            });
        }
        if !answer.is_success() {
            return Err(answer.failure(&format!("POST {path}")).into());
        }
        Ok(read_page(&answer.body, query.limit)?)
    }

    async fn erase_owner(&self, owner: &UserId) -> Result<(), SearchError> {
        Ok(self.erase_owner_until_gone(owner).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_have_their_signing_names() {
        assert_eq!(OpenSearchService::Domain.signing_name(), "es");
        assert_eq!(OpenSearchService::Serverless.signing_name(), "aoss");
        assert_eq!(OpenSearchService::parse("aoss"), Some(OpenSearchService::Serverless));
        assert_eq!(OpenSearchService::parse("es"), Some(OpenSearchService::Domain));
        assert_eq!(OpenSearchService::parse("ES"), None);
    }

    #[test]
    fn generations_are_the_alias_and_a_number() {
        let sdk = SdkConfig::builder().build();
        let index = OpenSearchIndex::new(&sdk, "http://127.0.0.1:1", OpenSearchService::Domain, "items");
        assert_eq!(index.generation(7), "items-7");
        assert_eq!(index.first_index(), index.generation(1));
        assert_eq!(index.generation_of("items-12"), Some(12));
        for not_one in [
            "items",
            "items-",
            "items-01",
            "items-1a",
            "items-x-2",
            "other-3",
            "items_3",
        ] {
            assert_eq!(index.generation_of(not_one), None, "{not_one}");
        }
    }

    #[test]
    fn aliases_are_path_safe_index_names() {
        for good in ["rookery-items", "a", "items_2"] {
            assert!(valid_alias(good), "{good}");
        }
        for bad in [
            "",
            "-items",
            "_items",
            "Items",
            "a/b",
            "a b",
            "a*",
            "..",
            &"a".repeat(201),
        ] {
            assert!(!valid_alias(bad), "{bad}");
        }
    }
}
