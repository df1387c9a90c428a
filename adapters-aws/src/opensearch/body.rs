//! The JSON the adapter sends to OpenSearch and reads back: the index's mappings, documents, `_bulk`
//! lines and their per-item results, `_search` requests, pages and cursors.
//!
//! Everything here is pure (no I/O), so each shape is unit-tested on its own. User text only ever
//! becomes the value of a `term` or `prefix` query, serialized by `serde_json`: no query string, so no
//! character of it is syntax.

use base64::Engine as _;
use rookery_domain::Visibility;
use rookery_domain::projection::{IndexChange, words as split_words};
use rookery_ports::{Failure, Scope, SearchError, SearchHit, SearchPage, SearchQuery};
use serde_json::{Map, Value, json};

use super::OpenSearchService;
use crate::cloudsearch::document_id;

/// The `state` of a document that is an item.
pub(crate) const LIVE: &str = "live";
/// The `state` of a tombstone: the item was deleted at the document's version.
pub(crate) const DELETED: &str = "deleted";
/// The largest `_bulk` body sent at once; domains of the smallest instance types accept 10 MiB.
pub(crate) const MAX_BULK_BYTES: usize = 5 * 1024 * 1024;
/// How often OpenSearch re-runs the conditional upsert when another write to the same document won.
const RETRY_ON_CONFLICT: u32 = 5;
/// The prefix of the cursors this index issues.
const CURSOR_PREFIX: &str = "os1.";

/// The conditional upsert of Serverless collections (see `docs/decisions/0005-opensearch-versioning.md`):
/// the document is replaced only by a newer version; anything else is a no-op.
pub(crate) const NEWER_VERSION_WINS: &str = "if (ctx._source.version == null || ctx._source.version < params.doc.version) { ctx._source.clear(); ctx._source.putAll(params.doc); } else { ctx.op = 'none'; }";

/// The index's settings and mappings, and the alias it is created under.
///
/// `dynamic: strict` makes OpenSearch refuse a document with a field not listed here, instead of
/// guessing a mapping for it. `words` holds the item's words as the domain splits them (lowercase
/// letters and digits, space-separated), so the `whitespace` analyzer indexes exactly those words:
/// matching never depends on OpenSearch's idea of a word. `item` is kept in `_source` for hits and
/// never indexed.
pub(crate) fn index_definition(alias: &str) -> Value {
    let mut aliases = Map::new();
    aliases.insert(alias.to_owned(), json!({"is_write_index": true}));
    json!({
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "doc_id": {"type": "keyword"},
                "owner": {"type": "keyword"},
                "collection": {"type": "keyword"},
                "item_id": {"type": "keyword"},
                "version": {"type": "long"},
                "state": {"type": "keyword"},
                "visibility": {"type": "keyword"},
                "words": {"type": "text", "analyzer": "whitespace"},
                "item": {"type": "object", "enabled": false},
            },
        },
        "aliases": aliases,
    })
}

/// The document for a change: the live item, or a tombstone that remembers a delete's version.
///
/// # Errors
/// A permanent [`Failure`] when the item cannot be serialized.
pub(crate) fn document(change: &IndexChange) -> Result<Value, Failure> {
    let (owner, key) = change.target();
    let mut doc = Map::new();
    doc.insert("doc_id".into(), json!(document_id(owner, key)));
    doc.insert("owner".into(), json!(owner.as_str()));
    doc.insert("collection".into(), json!(key.collection.as_str()));
    doc.insert("item_id".into(), json!(key.id.as_str()));
    doc.insert("version".into(), json!(change.version().0));
    match change {
        IndexChange::Upsert(search) => {
            let words: Vec<String> = search.text.iter().flat_map(|s| split_words(s)).collect();
            doc.insert("state".into(), json!(LIVE));
            doc.insert("visibility".into(), json!(search.visibility.as_str()));
            doc.insert("words".into(), json!(words.join(" ")));
            let item = serde_json::to_value(&search.item)
                .map_err(|e| Failure::permanent(format!("cannot serialize an item: {e}")))?;
            doc.insert("item".into(), item);
        }
        IndexChange::Delete { .. } => {
            doc.insert("state".into(), json!(DELETED));
            doc.insert("visibility".into(), json!(Visibility::Private.as_str()));
        }
    }
    Ok(Value::Object(doc))
}

/// The two `_bulk` lines of one change.
///
/// A domain indexes the document with `version_type=external`: OpenSearch itself refuses it (409)
/// unless its version is above the one held. A Serverless collection upserts it through
/// [`NEWER_VERSION_WINS`], which leaves a newer document alone.
///
/// # Errors
/// A permanent [`Failure`] when the item cannot be serialized.
pub(crate) fn bulk_lines(change: &IndexChange, service: OpenSearchService) -> Result<String, Failure> {
    let (owner, key) = change.target();
    let id = document_id(owner, key);
    let doc = document(change)?;
    let (action, source) = match service {
        OpenSearchService::Domain => (
            json!({"index": {"_id": id, "version": change.version().0, "version_type": "external"}}),
            doc,
        ),
        OpenSearchService::Serverless => (
            json!({"update": {"_id": id, "retry_on_conflict": RETRY_ON_CONFLICT}}),
            json!({
                "script": {"source": NEWER_VERSION_WINS, "lang": "painless", "params": {"doc": doc}},
                "scripted_upsert": true,
                "upsert": {},
            }),
        ),
    };
    Ok(format!("{action}\n{source}\n"))
}

/// One `_bulk` request: changes `first..first + len` of the slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BulkChunk {
    /// Position in the slice of its first change.
    pub(crate) first: usize,
    /// How many changes it carries.
    pub(crate) len: usize,
    /// The NDJSON body.
    pub(crate) body: String,
}

/// The slice as `_bulk` bodies of at most `limit` bytes each (a change larger than that goes alone).
///
/// # Errors
/// The position of a change that cannot be serialized, and why.
pub(crate) fn bulk_chunks(
    changes: &[IndexChange],
    service: OpenSearchService,
    limit: usize,
) -> Result<Vec<BulkChunk>, (usize, Failure)> {
    let mut chunks = Vec::new();
    let mut current = BulkChunk {
        first: 0,
        len: 0,
        body: String::new(),
    };
    for (i, change) in changes.iter().enumerate() {
        let lines = bulk_lines(change, service).map_err(|failure| (i, failure))?;
        if current.len > 0 && current.body.len() + lines.len() > limit {
            let next = BulkChunk {
                first: i,
                len: 0,
                body: String::new(),
            };
            chunks.push(std::mem::replace(&mut current, next));
        }
        current.body.push_str(&lines);
        current.len += 1;
    }
    if current.len > 0 {
        chunks.push(current);
    }
    Ok(chunks)
}

/// The `type` and `reason` of an OpenSearch error object.
pub(crate) fn error_of(error: &Value) -> (String, String) {
    let kind = error["type"].as_str().unwrap_or("unknown").to_owned();
    let reason = error["reason"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| error.as_str().map(str::to_owned))
        .unwrap_or_default();
    (kind, reason)
}

/// Reads a `_bulk` answer of a chunk of `len` changes: `Ok` when every change was applied or refused as
/// stale, else the position in the chunk of the first that was not, and why.
///
/// A domain refuses a stale external version with `409 version_conflict_engine_exception`, which is the
/// version guard doing its work. On a collection a 409 means the conditional upsert lost to other writes
/// `retry_on_conflict` times in a row: worth trying again.
pub(crate) fn bulk_outcome(answer: &Value, len: usize, service: OpenSearchService) -> Result<(), (usize, Failure)> {
    let Some(items) = answer["items"].as_array() else {
        return Err((0, Failure::permanent("a _bulk answer without items")));
    };
    if items.len() != len {
        return Err((
            0,
            Failure::permanent(format!("_bulk answered {} items for {len} changes", items.len())),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        let result = item
            .as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or(Value::Null);
        let status = result["status"].as_u64().unwrap_or(0);
        if (200..300).contains(&status) {
            continue;
        }
        let (kind, reason) = error_of(&result["error"]);
        if status == 409 && kind == "version_conflict_engine_exception" && service == OpenSearchService::Domain {
            continue;
        }
        let message = format!("_bulk item {i}: HTTP {status} {kind}: {reason}");
        let transient = status == 409 || crate::error::is_transient(None, u16::try_from(status).ok());
        return Err((
            i,
            if transient {
                Failure::transient(message)
            } else {
                Failure::permanent(message)
            },
        ));
    }
    Ok(())
}

/// Where a page ended: the last hit's sort values (its score and document id).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cursor {
    score: f64,
    doc_id: String,
}

fn is_doc_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The cursor after a hit with these sort values: the score's bits and the document id, so the values
/// go back to OpenSearch exactly as it sent them.
pub(crate) fn encode_cursor(score: f64, doc_id: &str) -> String {
    let bits = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(score.to_bits().to_be_bytes());
    format!("{CURSOR_PREFIX}{bits}.{doc_id}")
}

/// Reads a cursor this index issued.
///
/// # Errors
/// [`SearchError::BadCursor`] for anything else, a character added or removed included.
pub(crate) fn decode_cursor(cursor: &str) -> Result<Cursor, SearchError> {
    let rest = cursor.strip_prefix(CURSOR_PREFIX).ok_or(SearchError::BadCursor)?;
    let (bits, doc_id) = rest.split_once('.').ok_or(SearchError::BadCursor)?;
    let bytes: [u8; 8] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(bits)
        .map_err(|_| SearchError::BadCursor)?
        .try_into()
        .map_err(|_| SearchError::BadCursor)?;
    let score = f64::from_bits(u64::from_be_bytes(bytes));
    if !score.is_finite() || !is_doc_id(doc_id) {
        return Err(SearchError::BadCursor);
    }
    Ok(Cursor {
        score,
        doc_id: doc_id.to_owned(),
    })
}

/// The query words, lowercased, when each is one word as the domain splits text; `None` when one is
/// not (`field:x`, `pass*`): documents hold only such words, so that query can match nothing.
fn single_words(words: &[String]) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(words.len());
    for word in words {
        let lower = word.to_lowercase();
        let single = {
            let mut split = split_words(&lower);
            split.next().as_deref() == Some(lower.as_str()) && split.next().is_none()
        };
        if !single {
            return None;
        }
        out.push(lower);
    }
    Some(out)
}

fn term(field: &str, value: &str) -> Value {
    let mut inner = Map::new();
    inner.insert(field.to_owned(), json!({"value": value}));
    json!({"term": inner})
}

/// The `_search` body of a query: live documents in scope (and collection) as filters, every word a
/// required `term` on `words` (BM25-scored), the last one also a `prefix`; best first, ties by document
/// id, `limit + 1` hits so the page knows whether another follows; `None` when nothing can match.
pub(crate) fn search_body(query: &SearchQuery, after: Option<&Cursor>) -> Option<Value> {
    let mut words = single_words(&query.words)?;
    let last = words.pop()?;
    words.sort();
    words.dedup();
    let mut must: Vec<Value> = words.iter().map(|w| term("words", w)).collect();
    must.push(json!({"bool": {
        "should": [term("words", &last), {"prefix": {"words": {"value": last}}}],
        "minimum_should_match": 1,
    }}));
    let mine = term("owner", query.caller.as_str());
    let public = term("visibility", Visibility::Public.as_str());
    let scope = match query.scope {
        Scope::Mine => mine,
        Scope::Public => public,
        Scope::All => json!({"bool": {"should": [mine, public], "minimum_should_match": 1}}),
    };
    let mut filter = vec![term("state", LIVE), scope];
    if let Some(collection) = &query.collection {
        filter.push(term("collection", collection.as_str()));
    }
    let mut body = json!({
        "size": query.limit.clamp(1, 100) + 1,
        "track_total_hits": true,
        "query": {"bool": {"filter": filter, "must": must}},
        "sort": [{"_score": {"order": "desc"}}, {"doc_id": {"order": "asc"}}],
        "_source": ["item"],
    });
    if let Some(cursor) = after {
        body["search_after"] = json!([cursor.score, cursor.doc_id]);
    }
    Some(body)
}

/// A `_search` answer as a page of at most `limit` hits.
///
/// # Errors
/// A permanent [`Failure`] when the answer is not what the request asked for (an inexact total, a hit
/// without its item or sort values).
pub(crate) fn read_page(answer: &Value, limit: usize) -> Result<SearchPage, Failure> {
    let total = &answer["hits"]["total"];
    if total["relation"].as_str() != Some("eq") {
        return Err(Failure::permanent(format!(
            "_search answered an inexact total: {total}"
        )));
    }
    let found = total["value"]
        .as_u64()
        .ok_or_else(|| Failure::permanent("_search answered no total"))?;
    let hits = answer["hits"]["hits"]
        .as_array()
        .ok_or_else(|| Failure::permanent("_search answered no hits"))?;
    let limit = limit.clamp(1, 100);
    let mut page = Vec::with_capacity(hits.len().min(limit));
    let mut last_sort = None;
    for hit in hits.iter().take(limit) {
        let item = serde_json::from_value(hit["_source"]["item"].clone())
            .map_err(|e| Failure::permanent(format!("an indexed item is unreadable: {e}")))?;
        let sort = (hit["sort"][0].as_f64(), hit["sort"][1].as_str());
        let (Some(sort_score), Some(doc_id)) = sort else {
            return Err(Failure::permanent("a hit without its sort values"));
        };
        let score = hit["_score"].as_f64().unwrap_or(sort_score);
        last_sort = Some((sort_score, doc_id));
        page.push(SearchHit { item, score });
    }
    let next_cursor = match last_sort {
        Some((score, doc_id)) if hits.len() > limit => Some(encode_cursor(score, doc_id)),
        _ => None,
    };
    Ok(SearchPage {
        found,
        hits: page,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use rookery_domain::projection::search_document;
    use rookery_domain::{CollectionName, Item, ItemId, ItemKey, Timestamp, UserId, Version};

    use super::*;

    fn item(owner: &str, id: &str, version: u64, public: bool, text: &str) -> Item {
        let mut data = Map::new();
        data.insert("t".into(), json!(text));
        Item {
            owner: UserId::parse(owner).unwrap(),
            collection: CollectionName::parse("notes").unwrap(),
            id: ItemId::parse(id).unwrap(),
            version: Version(version),
            visibility: if public {
                Visibility::Public
            } else {
                Visibility::Private
            },
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            data,
        }
    }

    fn query(words: &[&str], scope: Scope) -> SearchQuery {
        SearchQuery {
            caller: UserId::parse("alice").unwrap(),
            words: words.iter().map(|w| (*w).to_owned()).collect(),
            collection: None,
            scope,
            limit: 10,
            cursor: None,
        }
    }

    #[test]
    fn documents_hold_the_domains_words_and_deletes_are_tombstones() {
        let live = item("alice", "n1", 3, true, "Quick-brown FOX");
        let doc = document(&IndexChange::Upsert(search_document(&live))).unwrap();
        assert_eq!(doc["words"], "quick brown fox");
        assert_eq!((doc["state"].as_str(), doc["version"].as_u64()), (Some(LIVE), Some(3)));
        assert_eq!(doc["visibility"], "public");
        assert_eq!(serde_json::from_value::<Item>(doc["item"].clone()).unwrap(), live);

        let delete = IndexChange::Delete {
            owner: live.owner.clone(),
            key: ItemKey::new(live.collection.clone(), live.id.clone()),
            version: Version(4),
        };
        let tombstone = document(&delete).unwrap();
        assert_eq!(
            (tombstone["state"].as_str(), tombstone["version"].as_u64()),
            (Some(DELETED), Some(4))
        );
        assert!(tombstone.get("item").is_none() && tombstone.get("words").is_none());
        assert_eq!(
            tombstone["doc_id"], doc["doc_id"],
            "the tombstone replaces the document"
        );
    }

    #[test]
    fn domains_write_external_versions_and_collections_conditional_upserts() {
        let change = IndexChange::Upsert(search_document(&item("alice", "n1", 7, false, "tea")));
        let domain = bulk_lines(&change, OpenSearchService::Domain).unwrap();
        let lines: Vec<Value> = domain.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["index"]["version"], 7);
        assert_eq!(lines[0]["index"]["version_type"], "external");
        assert_eq!(lines[1]["words"], "tea");

        let serverless = bulk_lines(&change, OpenSearchService::Serverless).unwrap();
        let lines: Vec<Value> = serverless.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["update"]["retry_on_conflict"], RETRY_ON_CONFLICT);
        assert!(lines[0]["update"].get("version").is_none(), "no external version");
        assert_eq!(lines[1]["script"]["source"], NEWER_VERSION_WINS);
        assert_eq!(lines[1]["script"]["params"]["doc"]["version"], 7);
        assert_eq!(lines[1]["scripted_upsert"], true);
        assert!(serverless.ends_with('\n'), "a _bulk body ends with a newline");
    }

    #[test]
    fn bulk_chunks_stay_under_the_limit_and_keep_every_change_in_order() {
        let changes: Vec<IndexChange> = (0..40)
            .map(|i| IndexChange::Upsert(search_document(&item("alice", &format!("n{i}"), 1, false, "word"))))
            .collect();
        let chunks = bulk_chunks(&changes, OpenSearchService::Domain, 3000).unwrap();
        assert!(chunks.len() > 1);
        let mut next = 0;
        for chunk in &chunks {
            assert_eq!(chunk.first, next);
            assert!(chunk.body.len() <= 3000, "{}", chunk.body.len());
            assert_eq!(chunk.body.lines().count(), chunk.len * 2);
            next += chunk.len;
        }
        assert_eq!(next, 40);
    }

    #[test]
    fn bulk_outcomes_name_the_first_failed_item_and_let_stale_versions_pass() {
        let item =
            |status: u64, kind: &str| json!({"index": {"status": status, "error": {"type": kind, "reason": "r"}}});
        let answer = json!({"errors": true, "items": [
            item(201, ""),
            item(409, "version_conflict_engine_exception"),
            item(429, "es_rejected_execution_exception"),
            item(400, "mapper_parsing_exception"),
        ]});
        let (at, failure) = bulk_outcome(&answer, 4, OpenSearchService::Domain).unwrap_err();
        assert_eq!((at, failure.retryable), (2, true), "{failure}");
        let (at, failure) = bulk_outcome(&answer, 4, OpenSearchService::Serverless).unwrap_err();
        assert_eq!((at, failure.retryable), (1, true), "a collection's 409 is a lost race");
        let bad = json!({"items": [item(200, ""), item(400, "mapper_parsing_exception")]});
        let (at, failure) = bulk_outcome(&bad, 2, OpenSearchService::Domain).unwrap_err();
        assert_eq!((at, failure.retryable), (1, false));
        assert!(
            bulk_outcome(&bad, 3, OpenSearchService::Domain).is_err(),
            "item count checked"
        );
        assert!(bulk_outcome(&json!({"items": [item(200, "")]}), 1, OpenSearchService::Domain).is_ok());
    }

    #[test]
    fn search_bodies_are_typed_json_with_the_last_word_a_prefix() {
        let body = search_body(&query(&["Red", "pa"], Scope::All), None).unwrap();
        assert_eq!(body["track_total_hits"], true);
        assert_eq!(
            body["size"], 11,
            "one more than the page, to know whether another follows"
        );
        let must = body["query"]["bool"]["must"].as_array().unwrap();
        assert_eq!(must[0], json!({"term": {"words": {"value": "red"}}}));
        assert_eq!(
            must[1]["bool"]["should"],
            json!([{"term": {"words": {"value": "pa"}}}, {"prefix": {"words": {"value": "pa"}}}])
        );
        let filter = &body["query"]["bool"]["filter"];
        assert_eq!(filter[0], json!({"term": {"state": {"value": "live"}}}));
        assert_eq!(
            filter[1]["bool"]["should"],
            json!([{"term": {"owner": {"value": "alice"}}}, {"term": {"visibility": {"value": "public"}}}])
        );
        let mine = search_body(&query(&["x"], Scope::Mine), None).unwrap();
        assert_eq!(
            mine["query"]["bool"]["filter"][1],
            json!({"term": {"owner": {"value": "alice"}}})
        );
        for not_a_word in ["pass*", "field:x", "\"a\"", "a b", "{\"match_all\":{}}"] {
            assert_eq!(
                search_body(&query(&[not_a_word], Scope::All), None),
                None,
                "{not_a_word}"
            );
        }
        let cursor = decode_cursor(&encode_cursor(1.5, &"a".repeat(64))).unwrap();
        let next = search_body(&query(&["x"], Scope::All), Some(&cursor)).unwrap();
        assert_eq!(next["search_after"], json!([1.5, "a".repeat(64)]));
    }

    #[test]
    fn cursors_round_trip_exactly_and_foreign_ones_are_refused() {
        let id = "0123456789abcdef".repeat(4);
        for score in [0.0, 0.287_682_1, 1.0e-30, 12345.678] {
            let cursor = decode_cursor(&encode_cursor(score, &id)).unwrap();
            assert_eq!(cursor.score.to_bits(), f64::to_bits(score));
        }
        let good = encode_cursor(0.5, &id);
        for bad in [
            "",
            "os1.",
            "os1.x.y",
            &format!("{good}x"),
            &good[..good.len() - 1],
            &good.replace("os1.", "os2."),
            &encode_cursor(f64::NAN, &id),
            &format!("os1.AAAAAAAAAAA.{}", id.to_uppercase()),
        ] {
            assert_eq!(decode_cursor(bad), Err(SearchError::BadCursor), "{bad:?}");
        }
    }

    #[test]
    fn pages_come_from_the_hits_and_the_extra_hit_makes_the_cursor() {
        let hit = |id: &str, score: f64, doc: &str| {
            json!({"_id": doc, "_score": score, "sort": [score, doc],
                   "_source": {"item": serde_json::to_value(item("alice", id, 1, false, "t")).unwrap()}})
        };
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let answer = json!({"hits": {"total": {"value": 3, "relation": "eq"},
                                     "hits": [hit("x", 2.0, &a), hit("y", 1.0, &b), hit("z", 1.0, &c)]}});
        let page = read_page(&answer, 2).unwrap();
        assert_eq!(page.found, 3);
        assert_eq!(page.hits.len(), 2);
        assert_eq!(page.next_cursor, Some(encode_cursor(1.0, &b)));
        let last = read_page(&answer, 3).unwrap();
        assert_eq!(last.next_cursor, None, "no extra hit: the last page");
        let inexact = json!({"hits": {"total": {"value": 10000, "relation": "gte"}, "hits": []}});
        assert!(read_page(&inexact, 2).is_err());
    }

    #[test]
    fn the_index_definition_is_strict_and_aliased() {
        let definition = index_definition("items");
        assert_eq!(definition["mappings"]["dynamic"], "strict");
        assert_eq!(definition["aliases"]["items"]["is_write_index"], true);
        assert_eq!(definition["mappings"]["properties"]["words"]["analyzer"], "whitespace");
    }
}
