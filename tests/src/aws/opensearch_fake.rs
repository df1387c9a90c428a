//! A small stand-in for an OpenSearch domain or Serverless collection, speaking the subset of the REST
//! API the adapter uses, as the OpenSearch documentation describes it.
//!
//! No OpenSearch data plane runs on these machines (moto emulates only the control plane), so the
//! adapter's tests run against this: an axum server on loopback holding indexes in memory. It speaks
//! index creation with mappings (`PUT /<index>`) and deletion by name (`DELETE /<index>`), aliases (`GET /_alias/<name>`, `POST /_aliases`),
//! `_bulk` (`index` with internal or external versions, `update` with the one conditional-upsert script
//! the adapter sends, `delete`), `_search` (`bool`, `term`, `prefix`, `match_all`; sort, `search_after`,
//! `track_total_hits`, `_source`), `_mget` (`docs` with `_id` and `_source`), `_count` and `_delete_by_query`.
//!
//! It refuses what a cluster refuses, in the cluster's error shapes: unknown keys and unknown queries in
//! the query DSL (`parsing_exception`), unknown mapping types and parameters and unconfigured analyzers
//! (`mapper_parsing_exception`), fields a `strict` mapping does not list, values of the wrong type,
//! stale external versions (`409 version_conflict_engine_exception`), external versions on `update`,
//! sorting on a `text` field, `search_after` that does not fit the sort, bad index names, and bulk
//! bodies not ending with a newline. Every request must be SigV4-signed for the expected service
//! (`es` or `aoss`) with the payload's SHA-256 in `x-amz-content-sha256` and without `Content-Length`
//! among the signed headers (the signature itself is checked by unit tests, not here).
//!
//! Text fields are analysed by the analyzer their mapping names (`whitespace`, `standard`, `simple`,
//! `keyword`); `term` and `prefix` queries are not analysed; `term` on a text field scores with BM25
//! (k1 = 1.2, b = 0.75, exact field lengths), `prefix` with a constant 1. It is consistent at once
//! (every write is searchable when answered) and, unlike a domain, never creates an index on a write
//! to a name it does not know, and forgets a deleted document's version at once (`gc_deletes` of 0).

// Helpers answer a refusal as the `Response` the handler returns; on loopback, in tests, the size of
// that error value costs nothing worth a second error type.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::fixtures::BoxError;

/// The one script the stand-in runs: the adapter's conditional upsert, kept here as a copy so that a
/// change to the adapter's script shows up as a refused request until the stand-in is taught it.
const NEWER_VERSION_WINS: &str = "if (ctx._source.version == null || ctx._source.version < params.doc.version) { ctx._source.clear(); ctx._source.putAll(params.doc); } else { ctx.op = 'none'; }";

/// The largest `from + size` of a search (`index.max_result_window`).
const MAX_RESULT_WINDOW: u64 = 10_000;

/// A mapped field.
#[derive(Debug, Clone, PartialEq)]
enum FieldType {
    Text {
        analyzer: String,
    },
    Keyword,
    Long,
    Double,
    Boolean,
    /// An object; `enabled: false` keeps it in `_source` only.
    Object {
        enabled: bool,
    },
}

#[derive(Debug, Clone, Default)]
struct Mappings {
    strict: bool,
    fields: BTreeMap<String, FieldType>,
}

#[derive(Debug, Clone)]
struct Doc {
    source: Map<String, Value>,
    version: u64,
    seq_no: u64,
}

#[derive(Debug, Clone, Default)]
struct Index {
    mappings: Mappings,
    docs: BTreeMap<String, Doc>,
    seq_no: u64,
}

/// Faults the stand-in injects into `_bulk` requests, from a seeded generator.
#[derive(Debug, Clone, Default)]
struct Faults {
    /// Items for these document ids fail with `429` without being applied.
    rejected_ids: Vec<String>,
    /// Share of items failing with `429` without being applied.
    item_share: f64,
    /// Share of `_bulk` requests applied in full but answered `502` (a lost acknowledgement).
    lost_ack_share: f64,
    rng: u64,
}

impl Faults {
    fn roll(&mut self, share: f64) -> bool {
        if share <= 0.0 {
            return false;
        }
        // xorshift64*: a deterministic sequence per seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        ((self.rng >> 11) as f64 / (1u64 << 53) as f64) < share
    }
}

#[derive(Debug, Default)]
struct Cluster {
    indices: BTreeMap<String, Index>,
    /// Alias to its indexes, each with whether it is the write index.
    aliases: BTreeMap<String, BTreeMap<String, bool>>,
    faults: Faults,
    requests: Vec<String>,
    /// The body size in bytes of each request of `requests`, in the same order.
    request_bytes: Vec<usize>,
}

#[derive(Debug)]
struct Shared {
    service: String,
    cluster: Mutex<Cluster>,
}

type Fake = Arc<Shared>;

/// A running stand-in; it stops when dropped.
#[derive(Debug)]
pub struct FakeOpenSearch {
    /// Its base URL.
    pub endpoint: String,
    shared: Fake,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOpenSearch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One stored document, as the stand-in holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    /// The index holding it.
    pub index: String,
    /// Its `_id`.
    pub id: String,
    /// Its `_version` (external, or counted by the stand-in).
    pub version: u64,
    /// Its `_source`.
    pub source: Map<String, Value>,
}

impl FakeOpenSearch {
    /// Starts a stand-in on a free loopback port, expecting requests signed for `service` (`es` or `aoss`).
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn spawn(service: &str) -> Result<Self, BoxError> {
        let shared: Fake = Arc::new(Shared {
            service: service.to_owned(),
            cluster: Mutex::default(),
        });
        let app = Router::new()
            .route("/_alias/{name}", get(get_alias))
            .route("/_aliases", post(update_aliases))
            .route("/{index}", put(create_index).delete(delete_index))
            .route("/{target}/_bulk", post(bulk).put(bulk))
            .route("/{target}/_search", get(search).post(search))
            .route("/{target}/_count", get(count).post(count))
            .route("/{target}/_mget", get(mget).post(mget))
            .route("/{target}/_delete_by_query", post(delete_by_query))
            .fallback(unsupported)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { endpoint, shared, task })
    }

    fn cluster(&self) -> MutexGuard<'_, Cluster> {
        self.shared.cluster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every document of the indexes behind `target` (an index or an alias), tombstones included.
    pub fn documents(&self, target: &str) -> Vec<StoredDocument> {
        let cluster = self.cluster();
        let Ok(names) = resolve(&cluster, target) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for name in names {
            if let Some(index) = cluster.indices.get(&name) {
                out.extend(index.docs.iter().map(|(id, doc)| StoredDocument {
                    index: name.clone(),
                    id: id.clone(),
                    version: doc.version,
                    source: doc.source.clone(),
                }));
            }
        }
        out
    }

    /// How many documents `index` holds, tombstones included, without copying them; `None` when there
    /// is no such index.
    pub fn document_count(&self, index: &str) -> Option<usize> {
        self.cluster().indices.get(index).map(|held| held.docs.len())
    }

    /// The document `id` behind `target`, if any.
    pub fn document(&self, target: &str, id: &str) -> Option<StoredDocument> {
        self.documents(target).into_iter().find(|d| d.id == id)
    }

    /// The indexes an alias points to, or `None` when it does not exist.
    pub fn alias(&self, name: &str) -> Option<Vec<String>> {
        self.cluster().aliases.get(name).map(|m| m.keys().cloned().collect())
    }

    /// The mapped field types of `index` (`text`, `keyword`, ...), and whether its mapping is strict.
    pub fn mapping(&self, index: &str) -> Option<(bool, BTreeMap<String, String>)> {
        let cluster = self.cluster();
        let index = cluster.indices.get(index)?;
        let fields = index
            .mappings
            .fields
            .iter()
            .map(|(name, field)| {
                let kind = match field {
                    FieldType::Text { analyzer } => format!("text/{analyzer}"),
                    FieldType::Keyword => "keyword".into(),
                    FieldType::Long => "long".into(),
                    FieldType::Double => "double".into(),
                    FieldType::Boolean => "boolean".into(),
                    FieldType::Object { enabled } => format!("object/{enabled}"),
                };
                (name.clone(), kind)
            })
            .collect();
        Some((index.mappings.strict, fields))
    }

    /// Every request received, as `METHOD /path?query`, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.cluster().requests.clone()
    }

    /// Every request received with its body's size in bytes, as `(METHOD /path?query, bytes)`, oldest first.
    pub fn request_sizes(&self) -> Vec<(String, usize)> {
        let cluster = self.cluster();
        cluster
            .requests
            .iter()
            .cloned()
            .zip(cluster.request_bytes.iter().copied())
            .collect()
    }

    /// From now on, every `_bulk` item writing document `id` fails with `429` without being applied.
    pub fn reject_writes_to(&self, id: &str) {
        self.cluster().faults.rejected_ids.push(id.to_owned());
    }

    /// From now on, a share of `_bulk` items fail with `429` without being applied, and a share of `_bulk`
    /// requests are applied in full but answered `502`, both drawn from `seed`.
    pub fn inject_faults(&self, item_share: f64, lost_ack_share: f64, seed: u64) {
        let mut cluster = self.cluster();
        cluster.faults.item_share = item_share;
        cluster.faults.lost_ack_share = lost_ack_share;
        cluster.faults.rng = seed | 1;
    }

    /// Puts `source` as document `id` of `index` at `version`, bypassing every check: a fault for
    /// tests of what notices a wrong index. False when there is no such index.
    pub fn tamper(&self, index: &str, id: &str, version: u64, source: Map<String, Value>) -> bool {
        let mut cluster = self.cluster();
        let Some(held) = cluster.indices.get_mut(index) else {
            return false;
        };
        held.seq_no += 1;
        let seq_no = held.seq_no;
        held.docs.insert(
            id.to_owned(),
            Doc {
                source,
                version,
                seq_no,
            },
        );
        true
    }

    /// Removes document `id` of `index`, bypassing every check; true when it was there.
    pub fn remove(&self, index: &str, id: &str) -> bool {
        self.cluster()
            .indices
            .get_mut(index)
            .is_some_and(|held| held.docs.remove(id).is_some())
    }

    /// The names of every index, sorted.
    pub fn indices(&self) -> Vec<String> {
        self.cluster().indices.keys().cloned().collect()
    }

    /// Stops injecting faults.
    pub fn heal(&self) {
        self.cluster().faults = Faults::default();
    }
}

/// An OpenSearch error answer.
fn error(status: StatusCode, kind: &str, reason: impl Into<String>) -> Response {
    let reason = reason.into();
    (
        status,
        axum::Json(json!({
            "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

fn bad_request(kind: &str, reason: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, kind, reason)
}

fn not_found(index: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "index_not_found_exception",
        format!("no such index [{index}]"),
    )
}

/// The structural SigV4 checks a signed request must pass: AWS answers `403` otherwise.
fn check_signature(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<(), Response> {
    let forbidden = |why: &str| {
        (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"message": format!("The request signature is not valid: {why}")})),
        )
            .into_response()
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let authorization = header("authorization").ok_or_else(|| forbidden("no Authorization header"))?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .ok_or_else(|| forbidden("not AWS4-HMAC-SHA256"))?;
    let (credential, rest) = rest
        .split_once(", SignedHeaders=")
        .ok_or_else(|| forbidden("no SignedHeaders"))?;
    let (signed, signature) = rest
        .split_once(", Signature=")
        .ok_or_else(|| forbidden("no Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" || scope[3] != shared.service {
        return Err(forbidden(&format!(
            "the credential scope {credential} is not for service {}",
            shared.service
        )));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(forbidden("the signature is not 64 hex digits"));
    }
    let signed: Vec<&str> = signed.split(';').collect();
    for required in ["host", "x-amz-date", "x-amz-content-sha256"] {
        if !signed.contains(&required) {
            return Err(forbidden(&format!("{required} is not signed")));
        }
    }
    if signed.contains(&"content-length") && shared.service == "aoss" {
        return Err(forbidden("OpenSearch Serverless refuses a signed Content-Length"));
    }
    let hash = hex_sha256(body);
    match header("x-amz-content-sha256") {
        Some(value) if value == hash || value == "UNSIGNED-PAYLOAD" => Ok(()),
        Some(_) => Err(forbidden("x-amz-content-sha256 is not the payload's hash")),
        None => Err(forbidden("no x-amz-content-sha256 header")),
    }
}

fn hex_sha256(body: &[u8]) -> String {
    Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect()
}

/// Logs the request, checks its signature, and locks the cluster.
fn enter<'a>(
    shared: &'a Shared,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<MutexGuard<'a, Cluster>, Response> {
    let mut cluster = shared.cluster.lock().unwrap_or_else(PoisonError::into_inner);
    let mut line = format!("{method} {path}");
    let mut params: Vec<_> = query.iter().collect();
    params.sort();
    for (i, (k, v)) in params.iter().enumerate() {
        line.push(if i == 0 { '?' } else { '&' });
        line.push_str(&format!("{k}={v}"));
    }
    cluster.requests.push(line);
    cluster.request_bytes.push(body.len());
    check_signature(shared, headers, body)?;
    Ok(cluster)
}

fn parse_json(body: &[u8]) -> Result<Value, Response> {
    if body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(body).map_err(|e| bad_request("parse_exception", format!("request body is not JSON: {e}")))
}

/// OpenSearch's index name rules.
fn valid_index_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with(['-', '_', '+'])
        && name.chars().all(|c| {
            !c.is_uppercase()
                && !matches!(
                    c,
                    '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
                )
        })
}

/// The indexes behind an index or alias name.
fn resolve(cluster: &Cluster, target: &str) -> Result<Vec<String>, Response> {
    if cluster.indices.contains_key(target) {
        return Ok(vec![target.to_owned()]);
    }
    match cluster.aliases.get(target) {
        Some(indices) if !indices.is_empty() => Ok(indices.keys().cloned().collect()),
        _ => Err(not_found(target)),
    }
}

/// The one index a write to `target` goes to.
fn write_index(cluster: &Cluster, target: &str) -> Result<String, Response> {
    if cluster.indices.contains_key(target) {
        return Ok(target.to_owned());
    }
    let Some(indices) = cluster.aliases.get(target) else {
        return Err(not_found(target));
    };
    let writers: Vec<&String> = indices.iter().filter(|(_, w)| **w).map(|(n, _)| n).collect();
    match (writers.as_slice(), indices.len()) {
        ([one], _) => Ok((*one).clone()),
        ([], 1) => Ok(indices.keys().next().cloned().unwrap_or_default()),
        _ => Err(bad_request(
            "illegal_argument_exception",
            format!("no write index is defined for alias [{target}]"),
        )),
    }
}

const ANALYZERS: &[&str] = &["standard", "simple", "whitespace", "keyword", "stop"];

fn parse_field(name: &str, definition: &Value) -> Result<FieldType, Response> {
    let mapper_error = |reason: String| bad_request("mapper_parsing_exception", reason);
    let Some(object) = definition.as_object() else {
        return Err(mapper_error(format!(
            "Expected map for property [fields] on field [{name}]"
        )));
    };
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(if object.contains_key("properties") {
            "object"
        } else {
            ""
        });
    let allowed: &[&str] = match kind {
        "text" => &[
            "type",
            "analyzer",
            "search_analyzer",
            "index",
            "norms",
            "store",
            "similarity",
        ],
        "keyword" => &["type", "index", "doc_values", "ignore_above", "store", "normalizer"],
        "long" | "integer" | "double" | "float" | "boolean" => &["type", "index", "doc_values", "store", "null_value"],
        "object" => &["type", "enabled", "dynamic", "properties"],
        "" => return Err(mapper_error(format!("No type specified for field [{name}]"))),
        other => {
            return Err(mapper_error(format!(
                "No handler for type [{other}] declared on field [{name}]"
            )));
        }
    };
    for key in object.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(mapper_error(format!(
                "unknown parameter [{key}] on mapper [{name}] of type [{kind}]"
            )));
        }
    }
    Ok(match kind {
        "text" => {
            let analyzer = object.get("analyzer").and_then(Value::as_str).unwrap_or("standard");
            if !ANALYZERS.contains(&analyzer) {
                return Err(mapper_error(format!(
                    "analyzer [{analyzer}] has not been configured in mappings"
                )));
            }
            FieldType::Text {
                analyzer: analyzer.to_owned(),
            }
        }
        "keyword" => FieldType::Keyword,
        "long" | "integer" => FieldType::Long,
        "double" | "float" => FieldType::Double,
        "boolean" => FieldType::Boolean,
        _ => {
            let enabled = match object.get("enabled") {
                None => true,
                Some(Value::Bool(enabled)) => *enabled,
                Some(other) => return Err(mapper_error(format!("enabled must be a boolean, not {other}"))),
            };
            if object.contains_key("properties") {
                return Err(mapper_error(format!(
                    "the stand-in does not map properties inside object field [{name}]"
                )));
            }
            FieldType::Object { enabled }
        }
    })
}

fn parse_mappings(mappings: &Value) -> Result<Mappings, Response> {
    let Some(object) = mappings.as_object() else {
        return Err(bad_request("mapper_parsing_exception", "mappings must be an object"));
    };
    let mut out = Mappings::default();
    for (key, value) in object {
        match key.as_str() {
            "dynamic" => {
                out.strict = match value {
                    Value::String(s) if s == "strict" => true,
                    Value::String(s) if s == "true" || s == "false" => false,
                    Value::Bool(_) => false,
                    other => {
                        return Err(bad_request(
                            "mapper_parsing_exception",
                            format!("Could not convert [dynamic] to boolean or strict: {other}"),
                        ));
                    }
                }
            }
            "properties" => {
                let Some(properties) = value.as_object() else {
                    return Err(bad_request("mapper_parsing_exception", "properties must be an object"));
                };
                for (name, definition) in properties {
                    out.fields.insert(name.clone(), parse_field(name, definition)?);
                }
            }
            other => {
                return Err(bad_request(
                    "mapper_parsing_exception",
                    format!("Root mapping definition has unsupported parameters:  [{other} : {value}]"),
                ));
            }
        }
    }
    Ok(out)
}

/// Checks a document against the mappings, as indexing it would.
fn validate_document(mappings: &Mappings, source: &Map<String, Value>) -> Result<(), (String, String)> {
    for (name, value) in source {
        let Some(field) = mappings.fields.get(name) else {
            if mappings.strict {
                return Err((
                    "strict_dynamic_mapping_exception".into(),
                    format!("mapping set to strict, dynamic introduction of [{name}] within [_doc] is not allowed"),
                ));
            }
            continue;
        };
        let fits = |v: &Value| match field {
            FieldType::Text { .. } | FieldType::Keyword => v.is_string(),
            FieldType::Long => v.is_i64() || v.is_u64(),
            FieldType::Double => v.is_number(),
            FieldType::Boolean => v.is_boolean(),
            FieldType::Object { .. } => v.is_object(),
        };
        let ok = match value {
            Value::Null => true,
            Value::Array(items) => items.iter().all(|v| v.is_null() || fits(v)),
            other => fits(other),
        };
        if !ok {
            return Err((
                "mapper_parsing_exception".into(),
                format!("failed to parse field [{name}] of type [{field:?}]: {value}"),
            ));
        }
    }
    Ok(())
}

async fn create_index(
    State(shared): State<Fake>,
    method: Method,
    Path(index): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut cluster = match enter(&shared, &method, &format!("/{index}"), &query, &headers, &body) {
        Ok(cluster) => cluster,
        Err(response) => return response,
    };
    if !valid_index_name(&index) {
        return bad_request(
            "invalid_index_name_exception",
            format!("Invalid index name [{index}], must be lowercase and without special characters"),
        );
    }
    if cluster.indices.contains_key(&index) || cluster.aliases.contains_key(&index) {
        return bad_request(
            "resource_already_exists_exception",
            format!("index [{index}] already exists"),
        );
    }
    let definition = match parse_json(&body) {
        Ok(definition) => definition,
        Err(response) => return response,
    };
    let mut mappings = Mappings::default();
    let mut aliases = Vec::new();
    for (key, value) in definition.as_object().into_iter().flatten() {
        match key.as_str() {
            "mappings" => match parse_mappings(value) {
                Ok(parsed) => mappings = parsed,
                Err(response) => return response,
            },
            "settings" => {}
            "aliases" => {
                for (alias, options) in value.as_object().into_iter().flatten() {
                    for option in options.as_object().into_iter().flatten().map(|(k, _)| k) {
                        if option != "is_write_index" {
                            return bad_request(
                                "illegal_argument_exception",
                                format!("the stand-in does not support alias option [{option}]"),
                            );
                        }
                    }
                    aliases.push((alias.clone(), options["is_write_index"].as_bool().unwrap_or(false)));
                }
            }
            other => return bad_request("parse_exception", format!("unknown key [{other}] for create index")),
        }
    }
    for (alias, _) in &aliases {
        if cluster.indices.contains_key(alias) || !valid_index_name(alias) {
            return bad_request("invalid_alias_name_exception", format!("Invalid alias name [{alias}]"));
        }
    }
    cluster.indices.insert(
        index.clone(),
        Index {
            mappings,
            ..Index::default()
        },
    );
    for (alias, write) in aliases {
        cluster.aliases.entry(alias).or_default().insert(index.clone(), write);
    }
    axum::Json(json!({"acknowledged": true, "shards_acknowledged": true, "index": index})).into_response()
}

async fn get_alias(
    State(shared): State<Fake>,
    method: Method,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cluster = match enter(&shared, &method, &format!("/_alias/{name}"), &query, &headers, &body) {
        Ok(cluster) => cluster,
        Err(response) => return response,
    };
    let Some(indices) = cluster.aliases.get(&name).filter(|i| !i.is_empty()) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": format!("alias [{name}] missing"), "status": 404})),
        )
            .into_response();
    };
    let mut out = Map::new();
    for (index, write) in indices {
        let mut options = Map::new();
        if *write {
            options.insert("is_write_index".into(), json!(true));
        }
        let mut alias = Map::new();
        alias.insert(name.clone(), Value::Object(options));
        out.insert(index.clone(), json!({"aliases": alias}));
    }
    axum::Json(Value::Object(out)).into_response()
}

async fn update_aliases(
    State(shared): State<Fake>,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut cluster = match enter(&shared, &method, "/_aliases", &query, &headers, &body) {
        Ok(cluster) => cluster,
        Err(response) => return response,
    };
    let request = match parse_json(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let Some(actions) = request["actions"].as_array() else {
        return bad_request(
            "action_request_validation_exception",
            "Validation Failed: 1: no actions;",
        );
    };
    // Validate every action first: the request is applied whole or not at all.
    let mut planned = Vec::new();
    for action in actions {
        let Some((kind, options)) = action.as_object().and_then(|o| o.iter().next()) else {
            return bad_request("parsing_exception", "an alias action must be an object");
        };
        let (Some(index), Some(alias)) = (options["index"].as_str(), options["alias"].as_str()) else {
            return bad_request(
                "action_request_validation_exception",
                "Validation Failed: 1: index and alias are required;",
            );
        };
        for key in options.as_object().into_iter().flatten().map(|(k, _)| k) {
            if !matches!(key.as_str(), "index" | "alias" | "is_write_index") {
                return bad_request("parsing_exception", format!("[{kind}] unknown field [{key}]"));
            }
        }
        if !cluster.indices.contains_key(index) {
            return not_found(index);
        }
        match kind.as_str() {
            "add" | "remove" => planned.push((
                kind.clone(),
                index.to_owned(),
                alias.to_owned(),
                options["is_write_index"].as_bool().unwrap_or(false),
            )),
            other => return bad_request("parsing_exception", format!("Unknown action [{other}]")),
        }
    }
    // Removing an alias from an index it is not on is refused, unless an earlier action of this request adds it.
    for (i, (kind, index, alias, _)) in planned.iter().enumerate() {
        let held = cluster
            .aliases
            .get(alias)
            .is_some_and(|indices| indices.contains_key(index));
        let added_before = planned[..i]
            .iter()
            .any(|(k, x, a, _)| k == "add" && x == index && a == alias);
        if kind == "remove" && !held && !added_before {
            return error(
                StatusCode::NOT_FOUND,
                "aliases_not_found_exception",
                format!("aliases [{alias}] missing"),
            );
        }
    }
    for (kind, index, alias, write) in planned {
        if kind == "add" {
            cluster.aliases.entry(alias).or_default().insert(index, write);
        } else if let Some(indices) = cluster.aliases.get_mut(&alias) {
            indices.remove(&index);
        }
    }
    axum::Json(json!({"acknowledged": true})).into_response()
}

/// `DELETE /<index>`: deletes one index by its own name, with its documents and its place in aliases.
/// Like a cluster with `action.destructive_requires_name` (the default of Amazon OpenSearch Service), it
/// refuses wildcards, `_all` and alias names.
async fn delete_index(
    State(shared): State<Fake>,
    method: Method,
    Path(index): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut cluster = match enter(&shared, &method, &format!("/{index}"), &query, &headers, &body) {
        Ok(cluster) => cluster,
        Err(response) => return response,
    };
    if index == "_all" || index.contains(['*', ',']) {
        return bad_request(
            "illegal_argument_exception",
            "Wildcard expressions or all indices are not allowed",
        );
    }
    if cluster.aliases.get(&index).is_some_and(|indices| !indices.is_empty()) {
        return bad_request(
            "illegal_argument_exception",
            format!(
                "The provided expression [{index}] matches an alias, specify the corresponding concrete indices instead."
            ),
        );
    }
    if cluster.indices.remove(&index).is_none() {
        return not_found(&index);
    }
    for indices in cluster.aliases.values_mut() {
        indices.remove(&index);
    }
    axum::Json(json!({"acknowledged": true})).into_response()
}

/// What a `_bulk` item did.
struct ItemResult {
    action: String,
    id: String,
    index: String,
    status: u16,
    result: Option<&'static str>,
    version: Option<u64>,
    error: Option<(String, String)>,
}

impl ItemResult {
    fn failed(action: &str, index: &str, id: &str, status: u16, kind: &str, reason: String) -> Self {
        Self {
            action: action.to_owned(),
            id: id.to_owned(),
            index: index.to_owned(),
            status,
            result: None,
            version: None,
            error: Some((kind.to_owned(), reason)),
        }
    }

    fn to_json(&self) -> Value {
        let mut body = json!({"_index": self.index, "_id": self.id, "status": self.status});
        if let Some(result) = self.result {
            body["result"] = json!(result);
        }
        if let Some(version) = self.version {
            body["_version"] = json!(version);
        }
        if let Some((kind, reason)) = &self.error {
            body["error"] = json!({"type": kind, "reason": reason});
        }
        let mut item = Map::new();
        item.insert(self.action.clone(), body);
        Value::Object(item)
    }
}

/// Applies one `index` action.
fn index_action(index: &mut Index, name: &str, meta: &Map<String, Value>, source: Value) -> ItemResult {
    let id = meta["_id"].as_str().unwrap_or_default().to_owned();
    let Value::Object(source) = source else {
        return ItemResult::failed(
            "index",
            name,
            &id,
            400,
            "mapper_parsing_exception",
            "the source is not an object".into(),
        );
    };
    if let Err((kind, reason)) = validate_document(&index.mappings, &source) {
        return ItemResult::failed("index", name, &id, 400, &kind, reason);
    }
    let held = index.docs.get(&id).map(|d| (d.version, d.seq_no));
    let version = match meta.get("version_type").and_then(Value::as_str) {
        Some("external" | "external_gt") => {
            let Some(version) = meta.get("version").and_then(Value::as_u64) else {
                return ItemResult::failed(
                    "index",
                    name,
                    &id,
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: an external version is required;".into(),
                );
            };
            if let Some((current, _)) = held
                && current >= version
            {
                return ItemResult::failed(
                    "index",
                    name,
                    &id,
                    409,
                    "version_conflict_engine_exception",
                    format!(
                        "[{id}]: version conflict, current version [{current}] is higher or equal to the one provided [{version}]"
                    ),
                );
            }
            version
        }
        None | Some("internal") => {
            if meta.contains_key("version") {
                return ItemResult::failed(
                    "index",
                    name,
                    &id,
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: internal versioning can not be used for optimistic concurrency control. Please use `if_seq_no` and `if_primary_term` instead;".into(),
                );
            }
            if let Some(expected) = meta.get("if_seq_no").and_then(Value::as_u64)
                && held.map(|(_, seq)| seq) != Some(expected)
            {
                return ItemResult::failed(
                    "index",
                    name,
                    &id,
                    409,
                    "version_conflict_engine_exception",
                    format!("[{id}]: version conflict, required seqNo [{expected}]"),
                );
            }
            held.map_or(1, |(v, _)| v + 1)
        }
        Some(other) => {
            return ItemResult::failed(
                "index",
                name,
                &id,
                400,
                "illegal_argument_exception",
                format!("No version type match [{other}]"),
            );
        }
    };
    index.seq_no += 1;
    let seq_no = index.seq_no;
    index.docs.insert(
        id.clone(),
        Doc {
            source,
            version,
            seq_no,
        },
    );
    ItemResult {
        action: "index".into(),
        id,
        index: name.to_owned(),
        status: if held.is_some() { 200 } else { 201 },
        result: Some(if held.is_some() { "updated" } else { "created" }),
        version: Some(version),
        error: None,
    }
}

/// Applies one `update` action: only the scripted upsert the adapter sends is understood.
fn update_action(
    index: &mut Index,
    name: &str,
    meta: &Map<String, Value>,
    body: Value,
) -> Result<ItemResult, Response> {
    let id = meta["_id"].as_str().unwrap_or_default().to_owned();
    let Value::Object(body) = body else {
        return Err(bad_request("parsing_exception", "an update body must be an object"));
    };
    for key in body.keys() {
        if !matches!(
            key.as_str(),
            "script" | "scripted_upsert" | "upsert" | "doc" | "doc_as_upsert" | "detect_noop" | "_source"
        ) {
            return Err(bad_request(
                "x_content_parse_exception",
                format!("[UpdateRequest] unknown field [{key}]"),
            ));
        }
    }
    if meta.contains_key("version") || meta.contains_key("version_type") {
        return Ok(ItemResult::failed(
            "update",
            name,
            &id,
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: can't provide version in update request.;".into(),
        ));
    }
    let script = &body["script"];
    for key in script.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !matches!(key.as_str(), "source" | "lang" | "params" | "id") {
            return Err(bad_request(
                "x_content_parse_exception",
                format!("[script] unknown field [{key}]"),
            ));
        }
    }
    if script["source"].as_str() != Some(NEWER_VERSION_WINS)
        || script["lang"].as_str().unwrap_or("painless") != "painless"
    {
        return Ok(ItemResult::failed(
            "update",
            name,
            &id,
            400,
            "illegal_argument_exception",
            "the stand-in runs only the adapter's conditional upsert script".into(),
        ));
    }
    let Some(doc) = script["params"]["doc"].as_object().cloned() else {
        return Ok(ItemResult::failed(
            "update",
            name,
            &id,
            400,
            "script_exception",
            "runtime error: params.doc is null".into(),
        ));
    };
    let held = index.docs.get(&id).cloned();
    let current = match &held {
        Some(existing) => existing.source.clone(),
        None if body["scripted_upsert"].as_bool() == Some(true) => {
            body["upsert"].as_object().cloned().unwrap_or_default()
        }
        None => {
            return Ok(ItemResult::failed(
                "update",
                name,
                &id,
                404,
                "document_missing_exception",
                format!("[{id}]: document missing"),
            ));
        }
    };
    let newer = match (
        current.get("version").and_then(Value::as_u64),
        doc.get("version").and_then(Value::as_u64),
    ) {
        (None, _) => true,
        (Some(held), Some(new)) => held < new,
        (Some(_), None) => false,
    };
    if !newer {
        return Ok(ItemResult {
            action: "update".into(),
            id,
            index: name.to_owned(),
            status: 200,
            result: Some("noop"),
            version: held.map(|d| d.version),
            error: None,
        });
    }
    if let Err((kind, reason)) = validate_document(&index.mappings, &doc) {
        return Ok(ItemResult::failed("update", name, &id, 400, &kind, reason));
    }
    let version = held.as_ref().map_or(1, |d| d.version + 1);
    index.seq_no += 1;
    let seq_no = index.seq_no;
    index.docs.insert(
        id.clone(),
        Doc {
            source: doc,
            version,
            seq_no,
        },
    );
    Ok(ItemResult {
        action: "update".into(),
        id,
        index: name.to_owned(),
        status: if held.is_some() { 200 } else { 201 },
        result: Some(if held.is_some() { "updated" } else { "created" }),
        version: Some(version),
        error: None,
    })
}

const BULK_META: &[&str] = &[
    "_index",
    "_id",
    "version",
    "version_type",
    "retry_on_conflict",
    "if_seq_no",
    "if_primary_term",
    "routing",
    "require_alias",
];

fn check_refresh(query: &HashMap<String, String>) -> Result<(), Response> {
    match query.get("refresh").map(String::as_str) {
        None | Some("" | "true" | "false" | "wait_for") => Ok(()),
        Some(other) => Err(bad_request(
            "illegal_argument_exception",
            format!("Unknown value for refresh: [{other}]."),
        )),
    }
}

async fn bulk(
    State(shared): State<Fake>,
    method: Method,
    Path(target): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut cluster = match enter(&shared, &method, &format!("/{target}/_bulk"), &query, &headers, &body) {
        Ok(cluster) => cluster,
        Err(response) => return response,
    };
    if let Err(response) = check_refresh(&query) {
        return response;
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/json") && !content_type.starts_with("application/x-ndjson") {
        return error(
            StatusCode::NOT_ACCEPTABLE,
            "illegal_argument_exception",
            format!("Content-Type header [{content_type}] is not supported"),
        );
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad_request("parse_exception", "the body is not UTF-8");
    };
    if !text.ends_with('\n') {
        return bad_request(
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        );
    }
    // Parse every line first: a malformed line fails the whole request, as in OpenSearch.
    let mut lines = text.lines();
    let mut actions: Vec<(String, Map<String, Value>, Option<Value>)> = Vec::new();
    let mut line_no = 0;
    while let Some(line) = lines.next() {
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(Value::Object(action)) = serde_json::from_str::<Value>(line) else {
            return bad_request(
                "illegal_argument_exception",
                format!("Malformed action/metadata line [{line_no}]"),
            );
        };
        let Some((kind, Value::Object(meta))) = action.into_iter().next() else {
            return bad_request(
                "illegal_argument_exception",
                format!("Malformed action/metadata line [{line_no}]"),
            );
        };
        for key in meta.keys() {
            if !BULK_META.contains(&key.as_str()) {
                return bad_request(
                    "illegal_argument_exception",
                    format!("Action/metadata line [{line_no}] contains an unknown parameter [{key}]"),
                );
            }
        }
        let source = match kind.as_str() {
            "index" | "create" | "update" => {
                line_no += 1;
                let Some(source) = lines.next() else {
                    return bad_request("illegal_argument_exception", "a source line is missing");
                };
                match serde_json::from_str::<Value>(source) {
                    Ok(source) => Some(source),
                    Err(e) => {
                        return bad_request(
                            "mapper_parsing_exception",
                            format!("failed to parse line [{line_no}]: {e}"),
                        );
                    }
                }
            }
            "delete" => None,
            other => {
                return bad_request(
                    "illegal_argument_exception",
                    format!(
                        "Malformed action/metadata line [{line_no}], expected one of [create, delete, index, update] but found [{other}]"
                    ),
                );
            }
        };
        actions.push((kind, meta, source));
    }
    let lose_ack = {
        let share = cluster.faults.lost_ack_share;
        cluster.faults.roll(share)
    };
    let mut items = Vec::with_capacity(actions.len());
    for (kind, meta, source) in actions {
        let id = meta["_id"].as_str().unwrap_or_default().to_owned();
        let destination = meta
            .get("_index")
            .and_then(Value::as_str)
            .unwrap_or(target.as_str())
            .to_owned();
        let name = match write_index(&cluster, &destination) {
            Ok(name) => name,
            Err(_) => {
                items.push(ItemResult::failed(
                    &kind,
                    &destination,
                    &id,
                    404,
                    "index_not_found_exception",
                    format!("no such index [{destination}]"),
                ));
                continue;
            }
        };
        let share = cluster.faults.item_share;
        if cluster.faults.rejected_ids.contains(&id) || cluster.faults.roll(share) {
            items.push(ItemResult::failed(
                &kind,
                &name,
                &id,
                429,
                "es_rejected_execution_exception",
                "rejected execution (injected by the stand-in)".into(),
            ));
            continue;
        }
        let Some(index) = cluster.indices.get_mut(&name) else {
            items.push(ItemResult::failed(
                &kind,
                &name,
                &id,
                404,
                "index_not_found_exception",
                format!("no such index [{name}]"),
            ));
            continue;
        };
        let result = match (kind.as_str(), source) {
            ("index" | "create", Some(source)) => {
                if kind == "create" && index.docs.contains_key(&id) {
                    ItemResult::failed(
                        "create",
                        &name,
                        &id,
                        409,
                        "version_conflict_engine_exception",
                        format!("[{id}]: version conflict, document already exists"),
                    )
                } else {
                    let mut result = index_action(index, &name, &meta, source);
                    result.action = kind.clone();
                    result
                }
            }
            ("update", Some(body)) => match update_action(index, &name, &meta, body) {
                Ok(result) => result,
                Err(response) => return response,
            },
            _ => match index.docs.remove(&id) {
                // A real delete: the version is forgotten at once here (a domain keeps it for gc_deletes).
                Some(doc) => ItemResult {
                    action: "delete".into(),
                    id,
                    index: name.clone(),
                    status: 200,
                    result: Some("deleted"),
                    version: Some(doc.version + 1),
                    error: None,
                },
                None => ItemResult {
                    action: "delete".into(),
                    id,
                    index: name.clone(),
                    status: 404,
                    result: Some("not_found"),
                    version: None,
                    error: None,
                },
            },
        };
        items.push(result);
    }
    if lose_ack {
        return error(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the answer was lost (injected by the stand-in)",
        );
    }
    let errors = items.iter().any(|i| i.error.is_some());
    axum::Json(json!({
        "took": 1,
        "errors": errors,
        "items": items.iter().map(ItemResult::to_json).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// A parsed query.
#[derive(Debug, Clone)]
enum Q {
    MatchAll,
    Term {
        field: String,
        value: Value,
        boost: f64,
    },
    Prefix {
        field: String,
        value: String,
        boost: f64,
    },
    Bool {
        must: Vec<Q>,
        filter: Vec<Q>,
        should: Vec<Q>,
        must_not: Vec<Q>,
        minimum_should_match: Option<usize>,
    },
}

fn parsing(reason: String) -> Response {
    bad_request("parsing_exception", reason)
}

fn clauses(value: &Value) -> Result<Vec<Q>, Response> {
    match value {
        Value::Array(items) => items.iter().map(parse_query).collect(),
        Value::Object(_) => Ok(vec![parse_query(value)?]),
        other => Err(parsing(format!(
            "[bool] clause must be an object or an array, not {other}"
        ))),
    }
}

/// `{"field": value}` or `{"field": {"value": v, ...}}`, with the options a leaf query allows.
fn leaf(name: &str, body: &Value, options: &[&str]) -> Result<(String, Value, f64), Response> {
    let Some(object) = body.as_object() else {
        return Err(parsing(format!(
            "[{name}] query malformed, no start_object after query name"
        )));
    };
    if object.len() != 1 {
        return Err(parsing(format!(
            "[{name}] query doesn't support multiple fields, found {}",
            object.len()
        )));
    }
    let Some((field, spec)) = object.iter().next() else {
        return Err(parsing(format!("[{name}] query malformed")));
    };
    match spec {
        Value::Object(spec) => {
            let mut value = None;
            let mut boost = 1.0;
            for (key, v) in spec {
                match key.as_str() {
                    "value" => value = Some(v.clone()),
                    "boost" => {
                        boost = v
                            .as_f64()
                            .ok_or_else(|| parsing(format!("[{name}] boost must be a number")))?
                    }
                    other if options.contains(&other) => {}
                    other => return Err(parsing(format!("[{name}] query does not support [{other}]"))),
                }
            }
            let value = value.ok_or_else(|| parsing(format!("[{name}] query requires a value")))?;
            Ok((field.clone(), value, boost))
        }
        Value::Array(_) | Value::Null => Err(parsing(format!("[{name}] query does not support array or null values"))),
        scalar => Ok((field.clone(), scalar.clone(), 1.0)),
    }
}

fn parse_query(value: &Value) -> Result<Q, Response> {
    let Some(object) = value.as_object() else {
        return Err(parsing("query malformed, must start with start_object".into()));
    };
    if object.len() != 1 {
        return Err(parsing(format!(
            "[_na] query malformed, expected one query, found {} keys",
            object.len()
        )));
    }
    let Some((name, body)) = object.iter().next() else {
        return Err(parsing("query malformed, empty clause".into()));
    };
    match name.as_str() {
        "match_all" => {
            for key in body.as_object().into_iter().flatten().map(|(k, _)| k) {
                if key != "boost" {
                    return Err(parsing(format!("[match_all] query does not support [{key}]")));
                }
            }
            Ok(Q::MatchAll)
        }
        "term" => {
            let (field, value, boost) = leaf("term", body, &["case_insensitive", "_name"])?;
            if value.is_object() || value.is_array() {
                return Err(parsing("[term] query does not support an object or array value".into()));
            }
            Ok(Q::Term { field, value, boost })
        }
        "prefix" => {
            let (field, value, boost) = leaf("prefix", body, &["rewrite", "case_insensitive", "_name"])?;
            let Value::String(value) = value else {
                return Err(parsing("[prefix] query value must be a string".into()));
            };
            Ok(Q::Prefix { field, value, boost })
        }
        "bool" => {
            let Some(body) = body.as_object() else {
                return Err(parsing(
                    "[bool] query malformed, no start_object after query name".into(),
                ));
            };
            let (mut must, mut filter, mut should, mut must_not) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut minimum_should_match = None;
            for (key, value) in body {
                match key.as_str() {
                    "must" => must = clauses(value)?,
                    "filter" => filter = clauses(value)?,
                    "should" => should = clauses(value)?,
                    "must_not" => must_not = clauses(value)?,
                    "minimum_should_match" => {
                        minimum_should_match = Some(
                            value
                                .as_u64()
                                .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                                .ok_or_else(|| parsing("the stand-in takes minimum_should_match as a count".into()))?
                                as usize,
                        );
                    }
                    "boost" | "_name" => {}
                    other => return Err(parsing(format!("[bool] query does not support [{other}]"))),
                }
            }
            Ok(Q::Bool {
                must,
                filter,
                should,
                must_not,
                minimum_should_match,
            })
        }
        other => Err(parsing(format!("unknown query [{other}]"))),
    }
}

/// The tokens of a text value under an analyzer.
fn analyze(analyzer: &str, text: &str) -> Vec<String> {
    match analyzer {
        "whitespace" => text.split_whitespace().map(str::to_owned).collect(),
        "keyword" => vec![text.to_owned()],
        "simple" => text
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect(),
        _ => rookery_domain::projection::words(text).collect(),
    }
}

fn field_values(source: &Map<String, Value>, field: &str) -> Vec<Value> {
    match source.get(field) {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(value) => vec![value.clone()],
    }
}

/// The tokens of a document's text field.
fn tokens(mappings: &Mappings, source: &Map<String, Value>, field: &str) -> Vec<String> {
    let Some(FieldType::Text { analyzer }) = mappings.fields.get(field) else {
        return Vec::new();
    };
    field_values(source, field)
        .iter()
        .filter_map(Value::as_str)
        .flat_map(|text| analyze(analyzer, text))
        .collect()
}

/// Per-field statistics BM25 needs, over every document searched.
struct Stats<'a> {
    docs: &'a [(&'a Mappings, &'a String, &'a Doc)],
}

impl Stats<'_> {
    fn bm25(&self, field: &str, term: &str, freq: usize, length: usize) -> f64 {
        let mut with_field = 0usize;
        let mut total_length = 0usize;
        let mut with_term = 0usize;
        for (mappings, _, doc) in self.docs {
            let tokens = tokens(mappings, &doc.source, field);
            if tokens.is_empty() {
                continue;
            }
            with_field += 1;
            total_length += tokens.len();
            if tokens.iter().any(|t| t == term) {
                with_term += 1;
            }
        }
        let n = with_field as f64;
        let df = with_term as f64;
        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        let avg = if with_field == 0 { 1.0 } else { total_length as f64 / n };
        let (k1, b) = (1.2, 0.75);
        let freq = freq as f64;
        idf * freq / (freq + k1 * (1.0 - b + b * length as f64 / avg))
    }
}

/// Whether a document matches, and its score.
fn evaluate(q: &Q, mappings: &Mappings, source: &Map<String, Value>, stats: &Stats<'_>) -> Option<f64> {
    match q {
        Q::MatchAll => Some(1.0),
        Q::Term { field, value, boost } => match mappings.fields.get(field) {
            Some(FieldType::Text { .. }) => {
                let wanted = value.as_str()?;
                let tokens = tokens(mappings, source, field);
                let freq = tokens.iter().filter(|t| *t == wanted).count();
                (freq > 0).then(|| boost * stats.bm25(field, wanted, freq, tokens.len()))
            }
            Some(FieldType::Keyword) => {
                let wanted = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                field_values(source, field)
                    .iter()
                    .any(|v| v.as_str() == Some(wanted.as_str()))
                    .then_some(*boost)
            }
            Some(FieldType::Long | FieldType::Double) => {
                let wanted = value.as_f64().or_else(|| value.as_str().and_then(|s| s.parse().ok()))?;
                field_values(source, field)
                    .iter()
                    .any(|v| v.as_f64() == Some(wanted))
                    .then_some(*boost)
            }
            Some(FieldType::Boolean) => {
                let wanted = value
                    .as_bool()
                    .or_else(|| value.as_str().and_then(|s| s.parse().ok()))?;
                field_values(source, field)
                    .iter()
                    .any(|v| v.as_bool() == Some(wanted))
                    .then_some(*boost)
            }
            // Unmapped fields and disabled objects match nothing, as in OpenSearch.
            Some(FieldType::Object { .. }) | None => None,
        },
        Q::Prefix { field, value, boost } => match mappings.fields.get(field) {
            Some(FieldType::Text { .. }) => tokens(mappings, source, field)
                .iter()
                .any(|t| t.starts_with(value.as_str()))
                .then_some(*boost),
            Some(FieldType::Keyword) => field_values(source, field)
                .iter()
                .any(|v| v.as_str().is_some_and(|s| s.starts_with(value.as_str())))
                .then_some(*boost),
            _ => None,
        },
        Q::Bool {
            must,
            filter,
            should,
            must_not,
            minimum_should_match,
        } => {
            let mut score = 0.0;
            for clause in must {
                score += evaluate(clause, mappings, source, stats)?;
            }
            for clause in filter {
                evaluate(clause, mappings, source, stats)?;
            }
            if must_not
                .iter()
                .any(|clause| evaluate(clause, mappings, source, stats).is_some())
            {
                return None;
            }
            let matched: Vec<f64> = should
                .iter()
                .filter_map(|c| evaluate(c, mappings, source, stats))
                .collect();
            let required =
                minimum_should_match.unwrap_or(if must.is_empty() && filter.is_empty() && !should.is_empty() {
                    1
                } else {
                    0
                });
            if matched.len() < required {
                return None;
            }
            Some(score + matched.iter().sum::<f64>())
        }
    }
}

/// One sort key.
#[derive(Debug, Clone)]
struct SortKey {
    field: String,
    descending: bool,
}

fn parse_sort(value: &Value, mappings: &[&Mappings]) -> Result<Vec<SortKey>, Response> {
    let items = match value {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    let mut keys = Vec::new();
    for item in items {
        let (field, order) = match &item {
            Value::String(field) => (field.clone(), None),
            Value::Object(o) if o.len() == 1 => {
                let Some((field, spec)) = o.iter().next() else {
                    return Err(parsing("malformed sort".into()));
                };
                let order = match spec {
                    Value::String(order) => Some(order.clone()),
                    Value::Object(spec) => {
                        for key in spec.keys() {
                            if !matches!(key.as_str(), "order" | "missing" | "unmapped_type") {
                                return Err(parsing(format!("[field_sort] unknown field [{key}]")));
                            }
                        }
                        spec.get("order").and_then(Value::as_str).map(str::to_owned)
                    }
                    _ => return Err(parsing("malformed sort".into())),
                };
                (field.clone(), order)
            }
            _ => return Err(parsing("malformed sort".into())),
        };
        let descending = match order.as_deref() {
            None => field == "_score",
            Some("desc") => true,
            Some("asc") => false,
            Some(other) => {
                return Err(bad_request(
                    "illegal_argument_exception",
                    format!("Unknown SortOrder [{other}]"),
                ));
            }
        };
        if field != "_score" {
            for m in mappings {
                match m.fields.get(&field) {
                    Some(FieldType::Text { .. }) => {
                        return Err(bad_request(
                            "illegal_argument_exception",
                            format!(
                                "Text fields are not optimised for operations that require per-document field data like aggregations and sorting, so these operations are disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on [{field}] in order to load field data by uninverting the inverted index."
                            ),
                        ));
                    }
                    Some(FieldType::Object { .. }) => {
                        return Err(bad_request(
                            "illegal_argument_exception",
                            format!("can't sort on object field [{field}]"),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        return Err(bad_request(
                            "query_shard_exception",
                            format!("No mapping found for [{field}] in order to sort on"),
                        ));
                    }
                }
            }
        }
        keys.push(SortKey { field, descending });
    }
    Ok(keys)
}

fn sort_value(key: &SortKey, score: f64, source: &Map<String, Value>) -> Value {
    if key.field == "_score" {
        return json!(score);
    }
    field_values(source, &key.field)
        .into_iter()
        .next()
        .unwrap_or(Value::Null)
}

fn compare_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().unwrap_or(0.0).total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        // Missing values sort last whatever the order, as with `missing: _last`.
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        (x, y) => x.to_string().cmp(&y.to_string()),
    }
}

fn compare_sorted(keys: &[SortKey], a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    for (i, key) in keys.iter().enumerate() {
        let (x, y) = (&a[i], &b[i]);
        let ordering = match (x.is_null(), y.is_null()) {
            (false, false) if key.descending => compare_values(y, x),
            _ => compare_values(x, y),
        };
        if ordering != std::cmp::Ordering::Equal {
            return ordering;
        }
    }
    std::cmp::Ordering::Equal
}

fn filter_source(source: &Map<String, Value>, spec: Option<&Value>) -> Result<Option<Value>, Response> {
    match spec {
        None | Some(Value::Bool(true)) => Ok(Some(Value::Object(source.clone()))),
        Some(Value::Bool(false)) => Ok(None),
        Some(Value::Array(fields)) => {
            let mut out = Map::new();
            for field in fields {
                let Some(field) = field.as_str() else {
                    return Err(parsing("[_source] fields must be strings".into()));
                };
                if let Some(value) = source.get(field) {
                    out.insert(field.to_owned(), value.clone());
                }
            }
            Ok(Some(Value::Object(out)))
        }
        Some(Value::String(field)) => filter_source(source, Some(&json!([field]))),
        Some(_) => Err(parsing(
            "the stand-in takes _source as a boolean or a list of fields".into(),
        )),
    }
}

/// The documents behind `target` matching `query`, with their scores and mappings.
fn matching<'a>(cluster: &'a Cluster, names: &[String], query: &Q) -> Vec<(&'a Mappings, &'a String, &'a Doc, f64)> {
    let all: Vec<(&Mappings, &String, &Doc)> = names
        .iter()
        .filter_map(|name| cluster.indices.get(name))
        .flat_map(|index| index.docs.iter().map(move |(id, doc)| (&index.mappings, id, doc)))
        .collect();
    let stats = Stats { docs: &all };
    all.iter()
        .filter_map(|(mappings, id, doc)| {
            evaluate(query, mappings, &doc.source, &stats).map(|score| (*mappings, *id, *doc, score))
        })
        .collect()
}

const SEARCH_KEYS: &[&str] = &[
    "query",
    "size",
    "from",
    "track_total_hits",
    "sort",
    "search_after",
    "_source",
    "timeout",
    "version",
];

async fn search(
    State(shared): State<Fake>,
    method: Method,
    Path(target): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cluster = match enter(
        &shared,
        &method,
        &format!("/{target}/_search"),
        &params,
        &headers,
        &body,
    ) {
        Ok(cluster) => cluster,
        Err(response) => return response,
    };
    let request = match parse_json(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let Some(request) = request.as_object() else {
        return parsing("the search body must be an object".into());
    };
    for (key, value) in request {
        if !SEARCH_KEYS.contains(&key.as_str()) {
            let token = if value.is_object() {
                "START_OBJECT"
            } else if value.is_array() {
                "START_ARRAY"
            } else {
                "VALUE"
            };
            return parsing(format!("Unknown key for a {token} in [{key}]."));
        }
    }
    let names = match resolve(&cluster, &target) {
        Ok(names) => names,
        Err(response) => return response,
    };
    let query = match request.get("query").map(parse_query).transpose() {
        Ok(query) => query.unwrap_or(Q::MatchAll),
        Err(response) => return response,
    };
    let size = request.get("size").map_or(Some(10), Value::as_u64);
    let from = request.get("from").map_or(Some(0), Value::as_u64);
    let (Some(size), Some(from)) = (size, from) else {
        return parsing("[size] and [from] must be whole numbers".into());
    };
    if from + size > MAX_RESULT_WINDOW {
        return bad_request(
            "illegal_argument_exception",
            format!(
                "Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] but was [{}].",
                from + size
            ),
        );
    }
    let mappings: Vec<&Mappings> = names
        .iter()
        .filter_map(|n| cluster.indices.get(n))
        .map(|i| &i.mappings)
        .collect();
    let keys = match request.get("sort").map(|s| parse_sort(s, &mappings)).transpose() {
        Ok(keys) => keys.unwrap_or_else(|| {
            vec![SortKey {
                field: "_score".into(),
                descending: true,
            }]
        }),
        Err(response) => return response,
    };
    let after = match request.get("search_after") {
        None => None,
        Some(Value::Array(values)) => {
            if request.get("sort").is_none() {
                return bad_request("illegal_argument_exception", "[search_after] requires a sort");
            }
            if values.len() != keys.len() {
                return bad_request(
                    "illegal_argument_exception",
                    format!(
                        "search_after has {} value(s) but sort has {}.",
                        values.len(),
                        keys.len()
                    ),
                );
            }
            if from > 0 {
                return bad_request(
                    "illegal_argument_exception",
                    "[from] parameter must be set to 0 when [search_after] is used.",
                );
            }
            for (key, value) in keys.iter().zip(values) {
                if key.field == "_score" && !value.is_number() {
                    return bad_request(
                        "illegal_argument_exception",
                        format!("Failed to parse search_after value for field [_score]: {value}"),
                    );
                }
            }
            Some(values.clone())
        }
        Some(_) => return parsing("[search_after] must be an array".into()),
    };
    let mut hits: Vec<(Vec<Value>, &String, f64, &Doc, &Mappings)> = matching(&cluster, &names, &query)
        .into_iter()
        .map(|(mappings, id, doc, score)| {
            let values = keys.iter().map(|k| sort_value(k, score, &doc.source)).collect();
            (values, id, score, doc, mappings)
        })
        .collect();
    // Lucene breaks ties by internal document order; the stand-in by `_id`.
    hits.sort_by(|a, b| compare_sorted(&keys, &a.0, &b.0).then_with(|| a.1.cmp(b.1)));
    let total = hits.len() as u64;
    let (value, relation) = match request.get("track_total_hits") {
        Some(Value::Bool(true)) => (total, "eq"),
        Some(Value::Number(n)) => {
            let cap = n.as_u64().unwrap_or(MAX_RESULT_WINDOW);
            if total > cap { (cap, "gte") } else { (total, "eq") }
        }
        Some(Value::Bool(false)) => (0, "gte"),
        None => {
            if total > MAX_RESULT_WINDOW {
                (MAX_RESULT_WINDOW, "gte")
            } else {
                (total, "eq")
            }
        }
        Some(other) => return parsing(format!("[track_total_hits] must be a boolean or a number, not {other}")),
    };
    let page: Vec<_> = hits
        .iter()
        .filter(|hit| {
            after
                .as_ref()
                .is_none_or(|a| compare_sorted(&keys, &hit.0, a) == std::cmp::Ordering::Greater)
        })
        .skip(from as usize)
        .take(size as usize)
        .collect();
    let mut out = Vec::with_capacity(page.len());
    for (values, id, score, doc, _) in page {
        let source = match filter_source(&doc.source, request.get("_source")) {
            Ok(source) => source,
            Err(response) => return response,
        };
        let mut hit = json!({"_index": names.first().cloned().unwrap_or_default(), "_id": id, "_score": score});
        if let Some(source) = source {
            hit["_source"] = source;
        }
        if request.contains_key("sort") {
            hit["sort"] = json!(values);
        }
        out.push(hit);
    }
    let max_score = hits
        .iter()
        .map(|h| h.2)
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
    axum::Json(json!({
        "took": 1,
        "timed_out": false,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": value, "relation": relation}, "max_score": max_score, "hits": out},
    }))
    .into_response()
}

async fn count(
    State(shared): State<Fake>,
    method: Method,
    Path(target): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cluster = match enter(&shared, &method, &format!("/{target}/_count"), &params, &headers, &body) {
        Ok(cluster) => cluster,
        Err(response) => return response,
    };
    let request = match parse_json(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    for key in request.as_object().into_iter().flatten().map(|(k, _)| k) {
        if key != "query" {
            return parsing(format!("request does not support [{key}]"));
        }
    }
    let names = match resolve(&cluster, &target) {
        Ok(names) => names,
        Err(response) => return response,
    };
    let query = match request.get("query").map(parse_query).transpose() {
        Ok(query) => query.unwrap_or(Q::MatchAll),
        Err(response) => return response,
    };
    let count = matching(&cluster, &names, &query).len();
    axum::Json(json!({"count": count, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}))
        .into_response()
}

async fn mget(
    State(shared): State<Fake>,
    method: Method,
    Path(target): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cluster = match enter(&shared, &method, &format!("/{target}/_mget"), &params, &headers, &body) {
        Ok(cluster) => cluster,
        Err(response) => return response,
    };
    let request = match parse_json(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    for key in request.as_object().into_iter().flatten().map(|(k, _)| k) {
        if key != "docs" && key != "ids" {
            return parsing(format!("unknown key [{key}] for a multi get"));
        }
    }
    // A multi get reads one index: an alias must point at exactly one.
    let names = match resolve(&cluster, &target) {
        Ok(names) => names,
        Err(response) => return response,
    };
    let [name] = names.as_slice() else {
        return bad_request(
            "illegal_argument_exception",
            format!("alias [{target}] has more than one index associated with it, can't execute a single index op"),
        );
    };
    let Some(index) = cluster.indices.get(name) else {
        return not_found(name);
    };
    let wanted: Vec<(String, Option<Value>)> = match (request.get("docs"), request.get("ids")) {
        (Some(Value::Array(docs)), None) => {
            let mut wanted = Vec::new();
            for doc in docs {
                for key in doc.as_object().into_iter().flatten().map(|(k, _)| k) {
                    if !["_id", "_index", "_source"].contains(&key.as_str()) {
                        return parsing(format!("unknown key [{key}] in a multi get doc"));
                    }
                }
                let Some(id) = doc["_id"].as_str() else {
                    return bad_request("action_request_validation_exception", "id is missing");
                };
                wanted.push((id.to_owned(), doc.get("_source").cloned()));
            }
            wanted
        }
        (None, Some(Value::Array(ids))) => ids
            .iter()
            .filter_map(Value::as_str)
            .map(|id| (id.to_owned(), None))
            .collect(),
        _ => return bad_request("action_request_validation_exception", "no documents to get"),
    };
    let mut docs = Vec::with_capacity(wanted.len());
    for (id, spec) in wanted {
        match index.docs.get(&id) {
            Some(doc) => {
                let source = match filter_source(&doc.source, spec.as_ref()) {
                    Ok(source) => source,
                    Err(response) => return response,
                };
                let mut out = json!({"_index": name, "_id": id, "_version": doc.version,
                                     "_seq_no": doc.seq_no, "_primary_term": 1, "found": true});
                if let Some(source) = source {
                    out["_source"] = source;
                }
                docs.push(out);
            }
            None => docs.push(json!({"_index": name, "_id": id, "found": false})),
        }
    }
    axum::Json(json!({"docs": docs})).into_response()
}

async fn delete_by_query(
    State(shared): State<Fake>,
    method: Method,
    Path(target): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut cluster = match enter(
        &shared,
        &method,
        &format!("/{target}/_delete_by_query"),
        &params,
        &headers,
        &body,
    ) {
        Ok(cluster) => cluster,
        Err(response) => return response,
    };
    if let Err(response) = check_refresh(&params) {
        return response;
    }
    if let Some(conflicts) = params.get("conflicts")
        && conflicts != "abort"
        && conflicts != "proceed"
    {
        return bad_request(
            "illegal_argument_exception",
            format!("conflicts may only be \"proceed\" or \"abort\" but was [{conflicts}]"),
        );
    }
    let request = match parse_json(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    for key in request.as_object().into_iter().flatten().map(|(k, _)| k) {
        if key != "query" && key != "max_docs" {
            return parsing(format!("Unknown key for a START_OBJECT in [{key}]."));
        }
    }
    let Some(query) = request.get("query") else {
        return bad_request(
            "action_request_validation_exception",
            "Validation Failed: 1: query is missing;",
        );
    };
    let query = match parse_query(query) {
        Ok(query) => query,
        Err(response) => return response,
    };
    let names = match resolve(&cluster, &target) {
        Ok(names) => names,
        Err(response) => return response,
    };
    let doomed: Vec<(String, String)> = names
        .iter()
        .flat_map(|name| {
            let hits: Vec<String> = matching(&cluster, std::slice::from_ref(name), &query)
                .into_iter()
                .map(|(_, id, _, _)| id.clone())
                .collect();
            hits.into_iter().map(move |id| (name.clone(), id))
        })
        .collect();
    for (name, id) in &doomed {
        if let Some(index) = cluster.indices.get_mut(name) {
            index.docs.remove(id);
        }
    }
    axum::Json(json!({
        "took": 1,
        "timed_out": false,
        "total": doomed.len(),
        "deleted": doomed.len(),
        "batches": 1,
        "version_conflicts": 0,
        "noops": 0,
        "failures": [],
    }))
    .into_response()
}

async fn unsupported(method: Method, uri: axum::http::Uri) -> Response {
    bad_request(
        "illegal_argument_exception",
        format!("the stand-in does not speak {method} {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_dsl_is_parsed_strictly() {
        assert!(
            parse_query(
                &json!({"bool": {"filter": [{"term": {"a": "b"}}], "must": {"prefix": {"w": {"value": "x"}}}}})
            )
            .is_ok()
        );
        for bad in [
            json!({"query_string": {"query": "a:b"}}),
            json!({"bool": {"must": [], "shoud": []}}),
            json!({"term": {"a": {"value": "b", "fuzziness": 2}}}),
            json!({"term": {"a": "b", "c": "d"}}),
            json!({"prefix": {"a": 3}}),
            json!({"match_all": {}, "term": {"a": "b"}}),
        ] {
            assert!(parse_query(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mappings_refuse_unknown_types_parameters_and_analyzers() {
        assert!(parse_mappings(&json!({"dynamic": "strict", "properties": {"a": {"type": "keyword"}}})).is_ok());
        for bad in [
            json!({"properties": {"a": {"type": "strng"}}}),
            json!({"properties": {"a": {"type": "keyword", "analyzer": "whitespace"}}}),
            json!({"properties": {"a": {"type": "text", "analyzer": "rookery"}}}),
            json!({"properties": {"a": {"type": "keyword", "enabled": false}}}),
            json!({"dynamic": "sometimes"}),
            json!({"propertys": {}}),
        ] {
            assert!(parse_mappings(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn whitespace_analysis_keeps_tokens_as_given() {
        assert_eq!(analyze("whitespace", "pass Port\tx"), ["pass", "Port", "x"]);
        assert_eq!(analyze("standard", "Pass-port"), ["pass", "port"]);
        assert!(valid_index_name("rookery-items-1"));
        assert!(!valid_index_name("Rookery") && !valid_index_name("_x") && !valid_index_name("a*b"));
    }
}
