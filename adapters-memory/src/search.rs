//! The memory search index: version-guarded documents and tombstones, word matching, stable paging.
//!
//! Per item it keeps only the change with the highest version ever applied, a document or a tombstone,
//! so any order and repetition of changes gives the same index. An inverted index from word to items
//! keeps a query from scanning every document; it is ordered, so the last query word, which also
//! matches as a prefix (search as you type), reads one contiguous range of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rookery_domain::projection::{IndexChange, SearchDocument, words};
use rookery_domain::{Item, ItemKey, UserId, Version, Visibility};
use rookery_ports::search::{offset_cursor, parse_offset_cursor};
use rookery_ports::{Failure, Scope, SearchError, SearchHit, SearchIndex, SearchPage, SearchQuery};

/// Which item a document is about.
type DocKey = (UserId, ItemKey);

/// What the index holds for one item: its highest version, and the document unless that version is a delete.
#[derive(Debug, Clone)]
struct Entry {
    version: Version,
    document: Option<Document>,
}

#[derive(Debug, Clone)]
struct Document {
    visibility: Visibility,
    /// Each word of the document's strings and how often it occurs.
    counts: HashMap<String, u32>,
    item: Item,
}

impl Document {
    fn new(doc: &SearchDocument) -> Self {
        let mut counts: HashMap<String, u32> = HashMap::new();
        for text in &doc.text {
            for word in words(text) {
                *counts.entry(word).or_default() += 1;
            }
        }
        Self {
            visibility: doc.visibility,
            counts,
            item: doc.item.clone(),
        }
    }
}

/// Where an item's entry sits in [`State::slots`]; postings hold these instead of whole keys, so adding an
/// item to a word's postings hashes a number instead of comparing owner, collection and id strings.
type Slot = usize;

#[derive(Debug, Default)]
struct State {
    /// Every item the index has seen, with its entry; an item keeps its slot forever (tombstones stay).
    slots: Vec<(DocKey, Entry)>,
    /// Which slot holds each item.
    by_key: HashMap<DocKey, Slot>,
    /// Word to the slots of the live documents holding it, in word order (so the words sharing a prefix
    /// are neighbours); search sorts its matches, so no order is kept within a word.
    postings: BTreeMap<String, HashSet<Slot>>,
    /// Erased owners: every change about their items is ignored.
    erased: HashSet<UserId>,
}

impl State {
    /// Drops every entry of `owner` and ignores their changes from now on. The other entries are moved
    /// to fresh slots, so nothing of the owner (not even an item key) stays behind.
    fn erase(&mut self, owner: &UserId) {
        self.erased.insert(owner.clone());
        if !self.slots.iter().any(|((o, _), _)| o == owner) {
            return;
        }
        let kept: Vec<(DocKey, Entry)> = std::mem::take(&mut self.slots)
            .into_iter()
            .filter(|((o, _), _)| o != owner)
            .collect();
        self.by_key.clear();
        self.postings.clear();
        for (slot, (target, entry)) in kept.into_iter().enumerate() {
            if let Some(document) = &entry.document {
                for word in document.counts.keys() {
                    self.postings.entry(word.clone()).or_default().insert(slot);
                }
            }
            self.by_key.insert(target.clone(), slot);
            self.slots.push((target, entry));
        }
    }

    fn apply(&mut self, change: &IndexChange) {
        let (owner, key) = change.target();
        if self.erased.contains(owner) {
            return;
        }
        let target = (owner.clone(), key.clone());
        let slot = match self.by_key.get(&target) {
            Some(&slot) => {
                if self
                    .slots
                    .get(slot)
                    .is_some_and(|(_, entry)| entry.version >= change.version())
                {
                    return;
                }
                slot
            }
            None => {
                let slot = self.slots.len();
                self.slots.push((
                    target.clone(),
                    Entry {
                        version: Version::NONE,
                        document: None,
                    },
                ));
                self.by_key.insert(target, slot);
                slot
            }
        };
        let document = match change {
            IndexChange::Upsert(doc) => Some(Document::new(doc)),
            IndexChange::Delete { .. } => None,
        };
        let Some((_, entry)) = self.slots.get_mut(slot) else {
            return;
        };
        if let Some(old) = entry.document.take() {
            for word in old.counts.keys() {
                if let Some(set) = self.postings.get_mut(word) {
                    set.remove(&slot);
                    if set.is_empty() {
                        self.postings.remove(word);
                    }
                }
            }
        }
        if let Some(document) = &document {
            for word in document.counts.keys() {
                match self.postings.get_mut(word) {
                    Some(set) => {
                        set.insert(slot);
                    }
                    None => {
                        self.postings.insert(word.clone(), HashSet::from([slot]));
                    }
                }
            }
        }
        *entry = Entry {
            version: change.version(),
            document,
        };
    }
}

/// One item as the index holds it, for comparing two indexes (see [`MemorySearchIndex::snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedEntry {
    /// The item's owner.
    pub owner: UserId,
    /// The item's key.
    pub key: ItemKey,
    /// The highest version applied for it.
    pub version: Version,
    /// Its visibility, or `None` when that version was a delete (a tombstone).
    pub visibility: Option<Visibility>,
    /// The indexed item, or `None` for a tombstone.
    pub item: Option<Item>,
}

/// A [`SearchIndex`] in memory. Clones share the same index.
#[derive(Clone, Default)]
pub struct MemorySearchIndex {
    state: Arc<Mutex<State>>,
}

/// A summary, never the contents: an index's `Debug` ends up in logs of whatever holds it.
impl std::fmt::Debug for MemorySearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("MemorySearchIndex");
        if let Ok(state) = self.state.try_lock() {
            out.field("entries", &state.slots.len())
                .field("words", &state.postings.len());
        }
        out.finish_non_exhaustive()
    }
}

fn poisoned() -> SearchError {
    SearchError::Unavailable(Failure::permanent("the search index's lock was poisoned by a panic"))
}

impl MemorySearchIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, SearchError> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// How many live documents the index holds (tombstones not counted).
    ///
    /// # Errors
    /// [`SearchError::Unavailable`] when the index's lock was poisoned.
    pub fn len(&self) -> Result<usize, SearchError> {
        Ok(self.state()?.slots.iter().filter(|(_, e)| e.document.is_some()).count())
    }

    /// True when the index holds no live document.
    ///
    /// # Errors
    /// [`SearchError::Unavailable`] when the index's lock was poisoned.
    pub fn is_empty(&self) -> Result<bool, SearchError> {
        Ok(self.len()? == 0)
    }

    /// Everything the index holds, tombstones included, sorted by owner and key: two indexes
    /// that went through the same changes (in any order) have equal snapshots.
    ///
    /// # Errors
    /// [`SearchError::Unavailable`] when the index's lock was poisoned.
    pub fn snapshot(&self) -> Result<Vec<IndexedEntry>, SearchError> {
        let mut entries: Vec<IndexedEntry> = self
            .state()?
            .slots
            .iter()
            .map(|((owner, key), entry)| IndexedEntry {
                owner: owner.clone(),
                key: key.clone(),
                version: entry.version,
                visibility: entry.document.as_ref().map(|d| d.visibility),
                item: entry.document.as_ref().map(|d| d.item.clone()),
            })
            .collect();
        entries.sort_by(|a, b| (&a.owner, &a.key).cmp(&(&b.owner, &b.key)));
        Ok(entries)
    }

    fn search(state: &State, query: &SearchQuery) -> Result<SearchPage, SearchError> {
        let offset = parse_offset_cursor(query.cursor.as_deref())?;
        let empty = SearchPage {
            found: 0,
            hits: Vec::new(),
            next_cursor: None,
        };
        let Some((last, rest)) = query.words.split_last() else {
            return Ok(empty);
        };
        let prefix = last.to_lowercase();
        let mut whole: Vec<String> = rest.iter().map(|w| w.to_lowercase()).collect();
        whole.sort();
        whole.dedup();
        let with_prefix = || {
            state
                .postings
                .range::<str, _>((std::ops::Bound::Included(prefix.as_str()), std::ops::Bound::Unbounded))
                .take_while(|(word, _)| word.starts_with(prefix.as_str()))
        };
        // Candidates: the rarest whole word's postings (every match must hold it), or, with only the
        // prefix to go by, the postings of every word it starts.
        let candidates: HashSet<Slot> = if whole.is_empty() {
            with_prefix().flat_map(|(_, slots)| slots.iter().copied()).collect()
        } else {
            let Some(rarest) = whole
                .iter()
                .map(|w| state.postings.get(w))
                .min_by_key(|set| set.map_or(0, HashSet::len))
                .flatten()
            else {
                return Ok(empty);
            };
            rarest.clone()
        };
        let mut matches: Vec<(f64, &DocKey, &Document)> = candidates
            .iter()
            .filter_map(|slot| {
                let (target, entry) = state.slots.get(*slot)?;
                let document = entry.document.as_ref()?;
                let in_scope = match query.scope {
                    Scope::Mine => target.0 == query.caller,
                    Scope::Public => document.visibility == Visibility::Public,
                    Scope::All => target.0 == query.caller || document.visibility == Visibility::Public,
                };
                let in_collection = query.collection.as_ref().is_none_or(|c| *c == target.1.collection);
                if !in_scope || !in_collection {
                    return None;
                }
                let mut score = 0u64;
                for word in &whole {
                    score += u64::from(*document.counts.get(word)?);
                }
                // Words the prefix starts count once, the word itself twice: an exact match ranks higher.
                let mut prefixed = 0u64;
                for (word, count) in &document.counts {
                    if word.starts_with(prefix.as_str()) {
                        prefixed += u64::from(*count) * if *word == prefix { 2 } else { 1 };
                    }
                }
                if prefixed == 0 {
                    return None;
                }
                Some(((score + prefixed) as f64, target, document))
            })
            .collect();
        // Best first; ties in (owner, collection, id) order so pages are stable between calls.
        matches.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let found = matches.len();
        let limit = query.limit.max(1);
        let hits: Vec<SearchHit> = matches
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(score, _, document)| SearchHit {
                item: document.item.clone(),
                score: *score,
            })
            .collect();
        let end = offset.saturating_add(hits.len());
        let next_cursor = (end < found && !hits.is_empty()).then(|| offset_cursor(end));
        Ok(SearchPage {
            found: found as u64,
            hits,
            next_cursor,
        })
    }
}

impl SearchIndex for MemorySearchIndex {
    async fn apply(&self, changes: &[IndexChange]) -> Result<(), SearchError> {
        let mut state = self.state()?;
        for change in changes {
            state.apply(change);
        }
        Ok(())
    }

    async fn query(&self, query: &SearchQuery) -> Result<SearchPage, SearchError> {
        Self::search(&*self.state()?, query)
    }

    async fn erase_owner(&self, owner: &UserId) -> Result<(), SearchError> {
        self.state()?.erase(owner);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rookery_domain::projection::search_document;
    use rookery_domain::{CollectionName, ItemId, Timestamp};
    use serde_json::{Value, json};

    use super::*;

    fn item(owner: &str, collection: &str, id: &str, version: u64, public: bool, data: Value) -> Item {
        let Value::Object(data) = data else {
            panic!("data must be an object")
        };
        Item {
            owner: UserId::parse(owner).expect("owner"),
            collection: CollectionName::parse(collection).expect("collection"),
            id: ItemId::parse(id).expect("id"),
            version: Version(version),
            visibility: if public {
                Visibility::Public
            } else {
                Visibility::Private
            },
            created_at: Timestamp::from_millis(1),
            updated_at: Timestamp::from_millis(2),
            data,
        }
    }

    fn upsert(item: &Item) -> IndexChange {
        IndexChange::Upsert(search_document(item))
    }

    fn delete(item: &Item, version: u64) -> IndexChange {
        IndexChange::Delete {
            owner: item.owner.clone(),
            key: item.key(),
            version: Version(version),
        }
    }

    fn query(caller: &str, words: &[&str], scope: Scope, limit: usize, cursor: Option<&str>) -> SearchQuery {
        SearchQuery {
            caller: UserId::parse(caller).expect("caller"),
            words: words.iter().map(|w| (*w).to_owned()).collect(),
            collection: None,
            scope,
            limit,
            cursor: cursor.map(str::to_owned),
        }
    }

    fn ids(page: &SearchPage) -> Vec<String> {
        page.hits
            .iter()
            .map(|h| format!("{}/{}", h.item.owner, h.item.id))
            .collect()
    }

    #[tokio::test]
    async fn matches_whole_words_of_nested_strings_and_needs_every_word() -> Result<(), SearchError> {
        let index = MemorySearchIndex::new();
        let doc = item(
            "alice",
            "notes",
            "a",
            1,
            false,
            json!({"t": "Red Fox", "n": {"deep": ["quick-brown"]}}),
        );
        index.apply(&[upsert(&doc)]).await?;
        let found = |words: &'static [&'static str]| {
            let (index, q) = (index.clone(), query("alice", words, Scope::Mine, 10, None));
            async move { index.query(&q).await }
        };
        assert_eq!(found(&["fox"]).await?.found, 1);
        assert_eq!(found(&["quick", "red"]).await?.found, 1);
        assert_eq!(found(&["brown", "cat"]).await?.found, 0);
        assert_eq!(found(&["fo"]).await?.found, 1, "the last word is also a prefix");
        assert_eq!(
            found(&["fo", "red"]).await?.found,
            0,
            "other words are whole words only"
        );
        assert_eq!(found(&["red", "qu"]).await?.found, 1);
        assert_eq!(found(&["ed"]).await?.found, 0, "a prefix starts the word");
        assert_eq!(
            found(&["quick-brown"]).await?.found,
            0,
            "a query word is literal, never split"
        );
        assert_eq!(found(&["FOX"]).await?.found, 1);
        Ok(())
    }

    #[tokio::test]
    async fn older_changes_never_win_and_deletes_are_remembered() -> Result<(), SearchError> {
        let index = MemorySearchIndex::new();
        let v1 = item("alice", "notes", "a", 1, true, json!({"t": "apple"}));
        let v2 = item("alice", "notes", "a", 2, true, json!({"t": "banana"}));
        index.apply(&[upsert(&v2), upsert(&v1), upsert(&v2)]).await?;
        let q = |w: &'static str| query("bob", &[w], Scope::All, 10, None);
        assert_eq!(index.query(&q("apple")).await?.found, 0);
        assert_eq!(index.query(&q("banana")).await?.found, 1);
        index.apply(&[delete(&v2, 3), upsert(&v2), upsert(&v1)]).await?;
        assert_eq!(index.query(&q("banana")).await?.found, 0);
        assert_eq!(index.len()?, 0);
        let snapshot = index.snapshot()?;
        assert_eq!(snapshot.len(), 1);
        assert_eq!((snapshot[0].version, snapshot[0].visibility), (Version(3), None));
        // A newer upsert (a re-create) brings it back.
        let v4 = item("alice", "notes", "a", 4, true, json!({"t": "cherry"}));
        index.apply(&[upsert(&v4)]).await?;
        assert_eq!(index.query(&q("cherry")).await?.found, 1);
        Ok(())
    }

    #[tokio::test]
    async fn any_order_and_repetition_gives_the_same_snapshot() -> Result<(), SearchError> {
        let docs: Vec<Item> = (1..=4)
            .map(|v| item("alice", "notes", "a", v, v % 2 == 0, json!({"t": format!("w{v}")})))
            .collect();
        let mut changes: Vec<IndexChange> = docs.iter().map(upsert).collect();
        changes.push(delete(&docs[0], 5));
        let forward = MemorySearchIndex::new();
        forward.apply(&changes).await?;
        let backward = MemorySearchIndex::new();
        for change in changes.iter().rev().chain(changes.iter()) {
            backward.apply(std::slice::from_ref(change)).await?;
        }
        assert_eq!(forward.snapshot()?, backward.snapshot()?);
        Ok(())
    }

    #[tokio::test]
    async fn scopes_never_show_another_users_private_items() -> Result<(), SearchError> {
        let index = MemorySearchIndex::new();
        let docs = [
            item("alice", "notes", "private", 1, false, json!({"t": "shared"})),
            item("alice", "notes", "public", 1, true, json!({"t": "shared"})),
            item("bob", "notes", "private", 1, false, json!({"t": "shared"})),
            item("bob", "notes", "public", 1, true, json!({"t": "shared"})),
        ];
        index.apply(&docs.iter().map(upsert).collect::<Vec<_>>()).await?;
        let run = |scope| {
            let (index, q) = (index.clone(), query("alice", &["shared"], scope, 10, None));
            async move { index.query(&q).await }
        };
        assert_eq!(ids(&run(Scope::Mine).await?), ["alice/private", "alice/public"]);
        assert_eq!(ids(&run(Scope::Public).await?), ["alice/public", "bob/public"]);
        assert_eq!(
            ids(&run(Scope::All).await?),
            ["alice/private", "alice/public", "bob/public"]
        );
        Ok(())
    }

    #[tokio::test]
    async fn scores_rank_hits_and_pages_visit_every_hit_once() -> Result<(), SearchError> {
        let index = MemorySearchIndex::new();
        let mut changes = Vec::new();
        for i in 0..25u32 {
            let text = vec!["tea"; (i % 4 + 1) as usize].join(" ");
            let collection = if i % 5 == 0 { "other" } else { "notes" };
            changes.push(upsert(&item(
                "alice",
                collection,
                &format!("i{i:02}"),
                1,
                false,
                json!({"t": text}),
            )));
        }
        index.apply(&changes).await?;
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut last_score = f64::INFINITY;
        loop {
            let page = index
                .query(&query("alice", &["tea", "tea"], Scope::Mine, 7, cursor.as_deref()))
                .await?;
            assert_eq!(page.found, 25);
            for hit in &page.hits {
                assert!(hit.score <= last_score);
                last_score = hit.score;
            }
            seen.extend(ids(&page));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let unique: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!((seen.len(), unique.len()), (25, 25));
        let mut in_collection = query("alice", &["tea"], Scope::Mine, 100, None);
        in_collection.collection = Some(CollectionName::parse("other").expect("collection"));
        assert_eq!(index.query(&in_collection).await?.found, 5);
        Ok(())
    }

    #[tokio::test]
    async fn cursors_it_did_not_issue_are_refused() -> Result<(), SearchError> {
        let index = MemorySearchIndex::new();
        for bad in [
            "",
            "o:",
            "o:-1",
            "o:01",
            "x:1",
            "o:1a",
            "o: 1",
            "o:99999999999999999999",
        ] {
            let page = index.query(&query("alice", &["a"], Scope::All, 10, Some(bad))).await;
            assert_eq!(page, Err(SearchError::BadCursor), "{bad:?}");
        }
        assert_eq!(
            index
                .query(&query("alice", &["a"], Scope::All, 10, Some("o:40")))
                .await?
                .hits
                .len(),
            0
        );
        Ok(())
    }
}
