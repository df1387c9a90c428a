//! [`SqliteSearchIndex`]: the search index in the store's database, with SQLite's FTS5.
//!
//! Per item, `search_docs` keeps the highest version ever applied, a document or a tombstone, so any
//! order and repetition of changes gives the same index. The words of a live document are those of
//! `rookery_domain::projection::words` (maximal runs of letters and digits), indexed in `search_words`
//! with the `unicode61 remove_diacritics 2` tokenizer, which folds case (and diacritics) the same way for
//! documents and queries. Hits are ranked by BM25.
//!
//! A query is never a query language: each word becomes an FTS5 string (double-quoted, so nothing in it
//! is syntax), all of them are required, and the last one also matches as a prefix (search as you type).
//! A word that is not a single word by the domain's rule (`field:x`, `apple*`) can equal no indexed word,
//! so it matches nothing, as in the memory index.

use rookery_domain::projection::{IndexChange, words};
use rookery_domain::{Item, Visibility};
use rookery_ports::search::{offset_cursor, parse_offset_cursor};
use rookery_ports::{Failure, Scope, SearchError, SearchHit, SearchIndex, SearchPage, SearchQuery};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use crate::codec::{deserialize, int, limit};
use crate::error::Context;
use crate::store::SqliteStore;
use crate::writer::Job;

/// A search index in a [`SqliteStore`]'s database. Clones share the same index.
#[derive(Clone)]
pub struct SqliteSearchIndex {
    store: SqliteStore,
}

/// A summary, never the contents: an index's `Debug` ends up in logs of whatever holds it.
impl std::fmt::Debug for SqliteSearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSearchIndex")
            .field("path", &self.store.path())
            .finish_non_exhaustive()
    }
}

/// A change ready for the writer: the item it is about, its version, and the document unless it is a delete.
#[derive(Debug)]
pub(crate) struct PreparedChange {
    owner: String,
    collection: String,
    item_id: String,
    version: i64,
    document: Option<PreparedDocument>,
}

#[derive(Debug)]
struct PreparedDocument {
    public: bool,
    item: String,
    words: String,
}

impl PreparedChange {
    fn new(change: &IndexChange) -> Result<Self, Failure> {
        let (owner, key) = change.target();
        let document = match change {
            IndexChange::Upsert(doc) => {
                let mut text = String::new();
                for word in doc.text.iter().flat_map(|s| words(s)) {
                    if !text.is_empty() {
                        text.push(' ');
                    }
                    text.push_str(&word);
                }
                Some(PreparedDocument {
                    public: doc.visibility == Visibility::Public,
                    item: serde_json::to_string(&doc.item)
                        .map_err(|e| Failure::permanent(format!("cannot serialize an item: {e}")))?,
                    words: text,
                })
            }
            IndexChange::Delete { .. } => None,
        };
        Ok(Self {
            owner: owner.as_str().to_owned(),
            collection: key.collection.as_str().to_owned(),
            item_id: key.id.as_str().to_owned(),
            version: int(change.version().0)?,
            document,
        })
    }
}

/// Applies changes in order inside the writer's transaction, each only if it is newer than what the
/// index holds for its item.
pub(crate) fn apply(conn: &Connection, changes: &[PreparedChange]) -> Result<(), Failure> {
    for change in changes {
        if crate::erase::search_erased(conn, &change.owner)? {
            continue;
        }
        let held: Option<(i64, i64, bool)> = conn
            .prepare_cached(
                "SELECT doc, version, item IS NOT NULL FROM search_docs
                 WHERE owner = ?1 AND collection = ?2 AND item_id = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![change.owner, change.collection, change.item_id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
            })
            .context("reading a search document's version")?;
        let (public, item) = match &change.document {
            Some(document) => (Some(document.public), Some(document.item.as_str())),
            None => (None, None),
        };
        let doc = match held {
            Some((_, version, _)) if version >= change.version => continue,
            Some((doc, _, live)) => {
                if live {
                    conn.prepare_cached("DELETE FROM search_words WHERE rowid = ?1")
                        .and_then(|mut s| s.execute([doc]))
                        .context("removing a document's words")?;
                }
                conn.prepare_cached("UPDATE search_docs SET version = ?2, public = ?3, item = ?4 WHERE doc = ?1")
                    .and_then(|mut s| s.execute(params![doc, change.version, public, item]))
                    .context("updating a search document")?;
                doc
            }
            None => conn
                .prepare_cached(
                    "INSERT INTO search_docs (owner, collection, item_id, version, public, item)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.insert(params![
                        change.owner,
                        change.collection,
                        change.item_id,
                        change.version,
                        public,
                        item
                    ])
                })
                .context("adding a search document")?,
        };
        if let Some(document) = &change.document {
            conn.prepare_cached("INSERT INTO search_words (rowid, words) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![doc, document.words]))
                .context("indexing a document's words")?;
        }
    }
    Ok(())
}

/// An FTS5 string: the text in double quotes, quotes doubled, so nothing in it is query syntax.
fn fts_string(word: &str) -> String {
    format!("\"{}\"", word.replace('"', "\"\""))
}

/// The FTS5 expression for `query_words`: every word required, the last also as a prefix.
/// `None` when the words can match nothing (none given, or one that is not a single word).
pub(crate) fn match_expression(query_words: &[String]) -> Option<String> {
    let mut wanted: Vec<String> = Vec::with_capacity(query_words.len());
    for word in query_words {
        let word = word.to_lowercase();
        let single = {
            let mut split = words(&word);
            split.next().as_deref() == Some(word.as_str()) && split.next().is_none()
        };
        if !single {
            return None;
        }
        wanted.push(word);
    }
    let last = wanted.pop()?;
    wanted.sort();
    wanted.dedup();
    // A word equal to the last stays: as a whole word it asks more than the prefix does.
    let mut expression = String::new();
    for word in &wanted {
        expression.push_str(&fts_string(word));
        expression.push(' ');
    }
    expression.push_str(&fts_string(&last));
    expression.push('*');
    Some(expression)
}

/// The filter for a query's scope and collection, and its parameters after the match expression.
fn filter(query: &SearchQuery) -> (String, Vec<Value>) {
    let mut sql = String::from("search_words MATCH ?");
    let mut args = Vec::new();
    match query.scope {
        Scope::Mine => {
            sql.push_str(" AND d.owner = ?");
            args.push(Value::Text(query.caller.as_str().to_owned()));
        }
        Scope::Public => sql.push_str(" AND d.public = 1"),
        Scope::All => {
            sql.push_str(" AND (d.owner = ? OR d.public = 1)");
            args.push(Value::Text(query.caller.as_str().to_owned()));
        }
    }
    if let Some(collection) = &query.collection {
        sql.push_str(" AND d.collection = ?");
        args.push(Value::Text(collection.as_str().to_owned()));
    }
    (sql, args)
}

/// Runs a query on a read connection: the count and the page, in one read transaction.
fn search(conn: &Connection, query: &SearchQuery, expression: String, offset: usize) -> Result<SearchPage, Failure> {
    let (filter, filter_args) = filter(query);
    let mut args = vec![Value::Text(expression)];
    args.extend(filter_args);
    let tx = conn.unchecked_transaction().context("starting a search")?;
    let found: i64 = tx
        .prepare_cached(&format!(
            "SELECT count(*) FROM search_words JOIN search_docs AS d ON d.doc = search_words.rowid WHERE {filter}"
        ))
        .and_then(|mut s| s.query_row(params_from_iter(&args), |row| row.get(0)))
        .context("counting search hits")?;
    let found = u64::try_from(found).unwrap_or(0);
    let page_size = query.limit.max(1);
    args.push(Value::Integer(limit(page_size)));
    args.push(Value::Integer(limit(offset)));
    // Best first; ties in (owner, collection, id) order, so pages are stable between calls.
    let rows: Vec<(String, f64)> = tx
        .prepare_cached(&format!(
            "SELECT d.item, -bm25(search_words) AS score
             FROM search_words JOIN search_docs AS d ON d.doc = search_words.rowid
             WHERE {filter}
             ORDER BY score DESC, d.owner, d.collection, d.item_id
             LIMIT ? OFFSET ?"
        ))
        .and_then(|mut s| {
            s.query_map(params_from_iter(&args), |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .context("reading search hits")?;
    tx.finish().context("ending a search")?;
    let hits = rows
        .iter()
        .map(|(item, score)| {
            Ok(SearchHit {
                item: deserialize::<Item>(item, "an indexed item")?,
                score: *score,
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let end = offset.saturating_add(hits.len());
    let next_cursor =
        (end < usize::try_from(found).unwrap_or(usize::MAX) && !hits.is_empty()).then(|| offset_cursor(end));
    Ok(SearchPage {
        found,
        hits,
        next_cursor,
    })
}

/// Copies the documents aside and empties the index (the table of words is contentless, so FTS5's
/// `delete-all` empties it).
const BEGIN_REBUILD: &str = "
DROP TABLE IF EXISTS search_docs_before_rebuild;
CREATE TABLE search_docs_before_rebuild (
    owner      TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    item_id    TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    public     INTEGER,
    item       TEXT,
    PRIMARY KEY (owner, collection, item_id)
) WITHOUT ROWID;
INSERT INTO search_docs_before_rebuild
    SELECT owner, collection, item_id, version, public, item FROM search_docs;
DELETE FROM search_docs;
INSERT INTO search_words (search_words) VALUES ('delete-all');
";

/// Counts the documents now, those set aside, and the documents in one and not (identically) in the other.
///
/// Both tables are keyed by (owner, collection, item id), so each side is one scan with a key lookup per
/// document into the other: the memory this takes does not grow with the index (an `EXCEPT` of the two
/// would sort both into temporary tables, which live in memory here).
const COMPARE: &str = "
SELECT
    (SELECT count(*) FROM search_docs),
    (SELECT count(*) FROM search_docs_before_rebuild),
    (SELECT count(*) FROM search_docs AS now WHERE NOT EXISTS (
        SELECT 1 FROM search_docs_before_rebuild AS before
        WHERE before.owner = now.owner AND before.collection = now.collection AND before.item_id = now.item_id
          AND before.version = now.version AND before.public IS now.public AND before.item IS now.item))
  + (SELECT count(*) FROM search_docs_before_rebuild AS before WHERE NOT EXISTS (
        SELECT 1 FROM search_docs AS now
        WHERE now.owner = before.owner AND now.collection = before.collection AND now.item_id = before.item_id))
";

/// How a rebuilt index compares with the one it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildComparison {
    /// Documents (live ones and tombstones) in the rebuilt index.
    pub entries: u64,
    /// Documents in the index before the rebuild.
    pub before: u64,
    /// Documents in one and absent or different (version, visibility, item) in the other.
    pub differences: u64,
}

impl SqliteSearchIndex {
    pub(crate) fn new(store: SqliteStore) -> Self {
        Self { store }
    }

    /// Sets the index's documents aside (in the same database) and empties the index, so that it can be
    /// rebuilt from the log and then compared with what it held ([`SqliteSearchIndex::finish_rebuild`]).
    ///
    /// Searches find nothing until the rebuild refills the index; run it while no server uses the database.
    ///
    /// # Errors
    /// A [`Failure`] of the database; the index is then unchanged.
    pub async fn begin_rebuild(&self) -> Result<(), Failure> {
        self.store
            .submit(|reply| Job::Maintain {
                sql: BEGIN_REBUILD,
                reply,
            })
            .await?
    }

    /// Compares the rebuilt index with the documents [`SqliteSearchIndex::begin_rebuild`] set aside (the
    /// words are derived from the documents, so equal documents mean equal indexes), then drops them.
    ///
    /// # Errors
    /// A [`Failure`] of the database, or when no rebuild was begun.
    pub async fn finish_rebuild(&self) -> Result<RebuildComparison, Failure> {
        let counts: (i64, i64, i64) = self
            .store
            .read(|c| {
                c.query_row(COMPARE, [], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .context("comparing the rebuilt search index")
            })
            .await?;
        self.store
            .submit(|reply| Job::Maintain {
                sql: "DROP TABLE IF EXISTS search_docs_before_rebuild",
                reply,
            })
            .await??;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(RebuildComparison {
            entries: count(counts.0),
            before: count(counts.1),
            differences: count(counts.2),
        })
    }
}

impl SearchIndex for SqliteSearchIndex {
    async fn apply(&self, changes: &[IndexChange]) -> Result<(), SearchError> {
        if changes.is_empty() {
            return Ok(());
        }
        let changes = changes.iter().map(PreparedChange::new).collect::<Result<Vec<_>, _>>()?;
        Ok(self.store.submit(|reply| Job::Index { changes, reply }).await??)
    }

    async fn query(&self, query: &SearchQuery) -> Result<SearchPage, SearchError> {
        let offset = parse_offset_cursor(query.cursor.as_deref())?;
        let Some(expression) = match_expression(&query.words) else {
            return Ok(SearchPage {
                found: 0,
                hits: Vec::new(),
                next_cursor: None,
            });
        };
        let query = query.clone();
        Ok(self.store.read(move |c| search(c, &query, expression, offset)).await?)
    }

    /// One step in the writer's transaction: the documents and their words go (zeroed on disk by the
    /// database's and FTS5's secure delete), the owner is noted so later changes are ignored, and the WAL
    /// is truncated after the commit.
    async fn erase_owner(&self, owner: &rookery_domain::UserId) -> Result<(), SearchError> {
        let owner = owner.as_str().to_owned();
        Ok(self.store.submit(|reply| Job::EraseSearch { owner, reply }).await??)
    }
}
