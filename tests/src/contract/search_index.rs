//! The search index contract: every MUST of `rookery_ports::SearchIndex`, checked one by one.
//!
//! Documents are built with the domain's own projection (`search_document`), the way the indexer
//! builds them, so the suite checks the index against exactly what it will be fed.

use std::collections::BTreeSet;
use std::future::Future;

use rookery_domain::projection::{IndexChange, search_document, words};
use rookery_domain::{Item, ItemKey, UserId, Version, Visibility};
use rookery_ports::{Scope, SearchError, SearchIndex, SearchPage, SearchQuery};
use serde_json::{Value, json};

use crate::fixtures::{BoxError, Outcome, at, collection, key, object, user};

/// Makes a fresh, empty, isolated search index for one check.
pub trait SearchFactory: Send + Sync {
    /// The adapter under test.
    type Index: SearchIndex;

    /// A new index that shares nothing with any index made before.
    ///
    /// # Errors
    /// When the adapter cannot be set up (an emulator unreachable, a table not created).
    fn fresh(&self) -> impl Future<Output = Result<Self::Index, BoxError>> + Send;
}

/// An item of `owner` at `version`, with `data`.
fn item(owner: &UserId, key: &ItemKey, version: u64, visibility: Visibility, data: Value) -> Item {
    Item {
        owner: owner.clone(),
        collection: key.collection.clone(),
        id: key.id.clone(),
        version: Version(version),
        visibility,
        created_at: at(0),
        updated_at: at(version),
        data: object(data),
    }
}

fn upsert(item: &Item) -> IndexChange {
    IndexChange::Upsert(search_document(item))
}

fn delete(owner: &UserId, key: &ItemKey, version: u64) -> IndexChange {
    IndexChange::Delete {
        owner: owner.clone(),
        key: key.clone(),
        version: Version(version),
    }
}

/// A query for `words` by `caller`, all scopes and collections, first page of 100.
fn query(caller: &UserId, words: &[&str]) -> SearchQuery {
    SearchQuery {
        caller: caller.clone(),
        words: words.iter().map(|w| (*w).to_owned()).collect(),
        collection: None,
        scope: Scope::All,
        limit: 100,
        cursor: None,
    }
}

/// Every hit of `query`, following cursors to the end; also checks each page's shape on the way:
/// at most `limit` hits, the same `found` on every page, best first across pages, and no endless paging.
async fn all_hits<I: SearchIndex>(index: &I, query: &SearchQuery) -> Result<(u64, Vec<Item>), BoxError> {
    let mut query = query.clone();
    let mut items = Vec::new();
    let mut found = None;
    let mut last_score = f64::INFINITY;
    for _ in 0..1_000 {
        let page: SearchPage = index.query(&query).await?;
        assert!(page.hits.len() <= query.limit, "a page holds at most `limit` hits");
        assert!(
            *found.get_or_insert(page.found) == page.found,
            "`found` is the same on every page"
        );
        for hit in &page.hits {
            assert!(
                hit.score <= last_score,
                "hits come best first ({} after {last_score})",
                hit.score
            );
            last_score = hit.score;
        }
        items.extend(page.hits.into_iter().map(|hit| hit.item));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return Ok((found.unwrap_or(0), items)),
        }
    }
    Err("the cursor never reached the last page".into())
}

/// The (owner, key) of each item, as a set; asserts no item appears twice.
fn ids(items: &[Item]) -> BTreeSet<(UserId, ItemKey)> {
    let set: BTreeSet<_> = items.iter().map(|i| (i.owner.clone(), i.key())).collect();
    assert_eq!(set.len(), items.len(), "no item is returned twice: {items:?}");
    set
}

fn set(items: &[&Item]) -> BTreeSet<(UserId, ItemKey)> {
    items.iter().map(|i| (i.owner.clone(), i.key())).collect()
}

/// The ids of what `words` finds for `caller` (scope all, any collection), and checks `found` agrees.
async fn finds<I: SearchIndex>(
    index: &I,
    caller: &UserId,
    words: &[&str],
) -> Result<BTreeSet<(UserId, ItemKey)>, BoxError> {
    let (found, items) = all_hits(index, &query(caller, words)).await?;
    assert_eq!(found, items.len() as u64, "`found` counts every match of {words:?}");
    Ok(ids(&items))
}

/// An upserted item is found by any word of any of its strings, nested ones included, case-insensitively,
/// and the hit carries the item as indexed; keys, numbers and parts of words are not matched.
pub async fn check_upsert_then_query_finds_by_any_word<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let alice = user("alice")?;
    let trip = item(
        &alice,
        &key("notes", "trip")?,
        3,
        Visibility::Private,
        json!({
            "headline": "Trip to LISBON",
            "nested": {"tags": ["Travel", "sunny days"], "deeper": [{"food": "Pastéis de nata"}]},
            "count": 12345,
            "ÉCOLE": "Ünïcode ÉCOLE",
        }),
    );
    index.apply(&[upsert(&trip)]).await?;
    for word in [
        "trip",
        "lisbon",
        "travel",
        "sunny",
        "days",
        "pastéis",
        "nata",
        "école",
        "ünïcode",
    ] {
        let page = index.query(&query(&alice, &[word])).await?;
        assert_eq!(page.found, 1, "found by {word:?}");
        assert_eq!(
            page.hits.iter().map(|h| &h.item).collect::<Vec<_>>(),
            vec![&trip],
            "the hit is the item, by {word:?}"
        );
        assert_eq!(page.next_cursor, None, "one hit is the last page");
    }
    for word in ["headline", "nested", "count", "12345", "isbo", "zebra"] {
        let page = index.query(&query(&alice, &[word])).await?;
        assert_eq!(
            (page.found, page.hits.len()),
            (0, 0),
            "{word:?} matches no string of the item"
        );
    }
    let empty = factory.fresh().await?;
    let page = empty.query(&query(&alice, &["trip"])).await?;
    assert_eq!(
        (page.found, page.hits.len(), page.next_cursor),
        (0, 0, None),
        "an empty index finds nothing"
    );
    Ok(())
}

/// Every word must match (in any of the item's strings); one missing word excludes the item.
pub async fn check_all_words_must_match<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let alice = user("alice")?;
    let apple = item(
        &alice,
        &key("notes", "apple")?,
        1,
        Visibility::Private,
        json!({"t": "red apple"}),
    );
    let car = item(
        &alice,
        &key("notes", "car")?,
        1,
        Visibility::Private,
        json!({"t": "Red car"}),
    );
    let split = item(
        &alice,
        &key("notes", "split")?,
        1,
        Visibility::Private,
        json!({"a": "red", "b": ["green", "apple"]}),
    );
    index.apply(&[upsert(&apple), upsert(&car), upsert(&split)]).await?;
    assert_eq!(finds(&index, &alice, &["red"]).await?, set(&[&apple, &car, &split]));
    assert_eq!(
        finds(&index, &alice, &["red", "apple"]).await?,
        set(&[&apple, &split]),
        "words may sit in different strings"
    );
    assert_eq!(
        finds(&index, &alice, &["apple", "red"]).await?,
        set(&[&apple, &split]),
        "order does not matter"
    );
    assert_eq!(finds(&index, &alice, &["red", "car"]).await?, set(&[&car]));
    assert_eq!(
        finds(&index, &alice, &["red", "banana"]).await?,
        set(&[]),
        "one missing word excludes"
    );
    assert_eq!(finds(&index, &alice, &["green", "car"]).await?, set(&[]));
    Ok(())
}

/// An upsert or delete older than (or as old as) what the index holds for an item changes nothing.
pub async fn check_older_version_never_overwrites_newer<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let alice = user("alice")?;
    let k = key("notes", "n1")?;
    let newer = item(&alice, &k, 2, Visibility::Private, json!({"t": "newer text"}));
    let older = item(&alice, &k, 1, Visibility::Private, json!({"t": "older text"}));
    let same = item(&alice, &k, 2, Visibility::Private, json!({"t": "impostor text"}));
    index.apply(&[upsert(&newer)]).await?;
    index.apply(&[upsert(&older)]).await?;
    index.apply(&[upsert(&same)]).await?;
    index.apply(&[delete(&alice, &k, 1), delete(&alice, &k, 2)]).await?;
    assert_eq!(
        finds(&index, &alice, &["older"]).await?,
        set(&[]),
        "the older upsert was ignored"
    );
    assert_eq!(
        finds(&index, &alice, &["impostor"]).await?,
        set(&[]),
        "an upsert of an equal version was ignored"
    );
    let (_, hits) = all_hits(&index, &query(&alice, &["newer"])).await?;
    assert_eq!(
        hits,
        vec![newer],
        "the newer item stands, deletes at or below its version ignored"
    );

    // In one batch, too: the highest version wins whatever its position.
    let k2 = key("notes", "n2")?;
    let v3 = item(&alice, &k2, 3, Visibility::Private, json!({"t": "third"}));
    let v2 = item(&alice, &k2, 2, Visibility::Private, json!({"t": "second"}));
    index.apply(&[upsert(&v3), upsert(&v2)]).await?;
    assert_eq!(finds(&index, &alice, &["third"]).await?, set(&[&v3]));
    assert_eq!(finds(&index, &alice, &["second"]).await?, set(&[]));
    Ok(())
}

/// A delete is remembered: an older upsert arriving after it does not bring the item back, while a
/// newer one (the item re-created) does.
pub async fn check_delete_then_older_upsert_stays_deleted<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let alice = user("alice")?;
    let k = key("notes", "n1")?;
    let v1 = item(&alice, &k, 1, Visibility::Public, json!({"t": "ghost"}));
    index.apply(&[upsert(&v1)]).await?;
    assert_eq!(finds(&index, &alice, &["ghost"]).await?, set(&[&v1]));
    index.apply(&[delete(&alice, &k, 2)]).await?;
    assert_eq!(
        finds(&index, &alice, &["ghost"]).await?,
        set(&[]),
        "deleted items leave the index"
    );
    index.apply(&[upsert(&v1)]).await?;
    assert_eq!(
        finds(&index, &alice, &["ghost"]).await?,
        set(&[]),
        "a redelivered older upsert stays out"
    );

    // A delete that arrives before the upserts it follows.
    let k2 = key("notes", "n2")?;
    index.apply(&[delete(&alice, &k2, 3)]).await?;
    let early = item(&alice, &k2, 2, Visibility::Public, json!({"t": "phantom"}));
    index.apply(&[upsert(&early)]).await?;
    assert_eq!(
        finds(&index, &alice, &["phantom"]).await?,
        set(&[]),
        "an upsert older than a known delete stays out"
    );

    let back = item(&alice, &k, 3, Visibility::Public, json!({"t": "ghost returns"}));
    index.apply(&[upsert(&back)]).await?;
    let (_, hits) = all_hits(&index, &query(&alice, &["ghost"])).await?;
    assert_eq!(hits, vec![back], "a newer upsert brings the item back");
    Ok(())
}

/// The same changes applied in any order and with any repetition give the same index.
pub async fn check_same_changes_in_any_order_give_the_same_index<F: SearchFactory>(factory: &F) -> Outcome {
    let alice = user("alice")?;
    let mut changes = Vec::new();
    for n in 0..6u64 {
        let k = key("notes", &format!("n{n}"))?;
        for v in 1..=4u64 {
            let last_is_delete = n % 2 == 0 && v == 4;
            changes.push(if last_is_delete || (n == 3 && v == 2) {
                delete(&alice, &k, v)
            } else {
                upsert(&item(
                    &alice,
                    &k,
                    v,
                    Visibility::Private,
                    json!({"t": format!("common word{v} item{n}")}),
                ))
            });
        }
    }
    let in_order = factory.fresh().await?;
    in_order.apply(&changes).await?;
    let reversed = factory.fresh().await?;
    let mut backwards = changes.clone();
    backwards.reverse();
    for chunk in backwards.chunks(5) {
        reversed.apply(chunk).await?;
    }
    let shuffled = factory.fresh().await?;
    // A fixed interleaving with repeats: every change at least once, some three times, out of order.
    let mut scrambled: Vec<IndexChange> = Vec::new();
    for step in 0..(changes.len() * 3) {
        scrambled.push(changes[(step * 7 + step / 5) % changes.len()].clone());
    }
    scrambled.extend(changes.iter().cloned());
    for chunk in scrambled.chunks(4) {
        shuffled.apply(chunk).await?;
        shuffled.apply(chunk).await?;
    }
    let words_list: [&[&str]; 7] = [
        &["common"],
        &["word1"],
        &["word2"],
        &["word3"],
        &["word4"],
        &["common", "item3"],
        &["item5"],
    ];
    for words in words_list {
        let expected = finds(&in_order, &alice, words).await?;
        assert_eq!(finds(&reversed, &alice, words).await?, expected, "reversed, {words:?}");
        assert_eq!(
            finds(&shuffled, &alice, words).await?,
            expected,
            "scrambled and repeated, {words:?}"
        );
    }
    // The expected final state: items 1, 3 and 5 live at version 4 (3 was deleted at 2 and came back).
    let (_, live) = all_hits(&in_order, &query(&alice, &["common"])).await?;
    let mut versions: Vec<(String, u64)> = live.iter().map(|i| (i.id.to_string(), i.version.0)).collect();
    versions.sort();
    assert_eq!(versions, vec![("n1".into(), 4), ("n3".into(), 4), ("n5".into(), 4)]);
    Ok(())
}

/// `Mine` is the caller's items (private and public), `Public` anyone's public items, `All` both:
/// no scope ever returns another user's private item, and `found` counts only what the scope allows.
pub async fn check_scope_never_returns_another_users_private_item<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let a_private = item(
        &alice,
        &key("notes", "a1")?,
        1,
        Visibility::Private,
        json!({"t": "apple secret"}),
    );
    let a_public = item(
        &alice,
        &key("notes", "a2")?,
        1,
        Visibility::Public,
        json!({"t": "apple shared"}),
    );
    let b_private = item(
        &bob,
        &key("notes", "a1")?,
        1,
        Visibility::Private,
        json!({"t": "apple bobs secret"}),
    );
    let b_public = item(
        &bob,
        &key("notes", "b2")?,
        1,
        Visibility::Public,
        json!({"t": "apple bobs shared"}),
    );
    index
        .apply(&[
            upsert(&a_private),
            upsert(&a_public),
            upsert(&b_private),
            upsert(&b_public),
        ])
        .await?;

    let expectations = [
        (&alice, Scope::Mine, set(&[&a_private, &a_public])),
        (&alice, Scope::Public, set(&[&a_public, &b_public])),
        (&alice, Scope::All, set(&[&a_private, &a_public, &b_public])),
        (&bob, Scope::Mine, set(&[&b_private, &b_public])),
        (&bob, Scope::Public, set(&[&a_public, &b_public])),
        (&bob, Scope::All, set(&[&b_private, &b_public, &a_public])),
    ];
    for (caller, scope, expected) in expectations {
        let q = SearchQuery {
            scope,
            ..query(caller, &["apple"])
        };
        let (found, hits) = all_hits(&index, &q).await?;
        assert_eq!(ids(&hits), expected, "{caller} searching {scope:?}");
        assert_eq!(
            found,
            expected.len() as u64,
            "{caller} searching {scope:?}: found counts only the scope"
        );
        let q = SearchQuery {
            scope,
            ..query(caller, &["secret"])
        };
        let (_, hits) = all_hits(&index, &q).await?;
        assert!(
            hits.iter()
                .all(|h| h.visibility == Visibility::Public || &h.owner == caller),
            "{caller} {scope:?}"
        );
    }

    // Made private, an item disappears from everyone else's results.
    let a_hidden = item(
        &alice,
        &key("notes", "a2")?,
        2,
        Visibility::Private,
        json!({"t": "apple shared"}),
    );
    index.apply(&[upsert(&a_hidden)]).await?;
    let (_, hits) = all_hits(
        &index,
        &SearchQuery {
            scope: Scope::All,
            ..query(&bob, &["shared"])
        },
    )
    .await?;
    assert_eq!(ids(&hits), set(&[&b_public]), "alice's item is private now");
    let (_, hits) = all_hits(
        &index,
        &SearchQuery {
            scope: Scope::Mine,
            ..query(&alice, &["shared"])
        },
    )
    .await?;
    assert_eq!(hits, vec![a_hidden], "but still hers");
    Ok(())
}

/// A collection filter returns only that collection's items.
pub async fn check_collection_filter<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let alice = user("alice")?;
    let note = item(
        &alice,
        &key("notes", "x")?,
        1,
        Visibility::Private,
        json!({"t": "shopping"}),
    );
    let todo = item(
        &alice,
        &key("todos", "x")?,
        1,
        Visibility::Private,
        json!({"t": "shopping"}),
    );
    let other = item(
        &alice,
        &key("notes-archive", "x")?,
        1,
        Visibility::Private,
        json!({"t": "shopping"}),
    );
    index.apply(&[upsert(&note), upsert(&todo), upsert(&other)]).await?;
    let only = |c: &str| -> Result<SearchQuery, BoxError> {
        Ok(SearchQuery {
            collection: Some(collection(c)?),
            ..query(&alice, &["shopping"])
        })
    };
    let (found, hits) = all_hits(&index, &only("notes")?).await?;
    assert_eq!(
        (found, ids(&hits)),
        (1, set(&[&note])),
        "only notes, not a collection sharing its prefix"
    );
    let (_, hits) = all_hits(&index, &only("todos")?).await?;
    assert_eq!(ids(&hits), set(&[&todo]));
    let (_, hits) = all_hits(&index, &only("nothing")?).await?;
    assert!(hits.is_empty());
    assert_eq!(
        finds(&index, &alice, &["shopping"]).await?,
        set(&[&note, &todo, &other]),
        "no filter: every collection"
    );
    Ok(())
}

/// `found` counts every match, not just the page; following cursors visits every hit exactly once,
/// best first, and the last page has no cursor.
pub async fn check_cursor_paging_visits_every_hit_once<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let mut expected = Vec::new();
    let mut changes = Vec::new();
    for n in 0..37u64 {
        // Different term frequencies, so relevance differs between hits.
        let text = "needle ".repeat((n % 4 + 1) as usize) + &format!("number{n}");
        let i = item(
            &alice,
            &key("notes", &format!("n{n:02}"))?,
            1,
            Visibility::Private,
            json!({"t": text}),
        );
        changes.push(upsert(&i));
        expected.push(i);
    }
    changes.push(upsert(&item(
        &bob,
        &key("notes", "hidden")?,
        1,
        Visibility::Private,
        json!({"t": "needle"}),
    )));
    changes.push(upsert(&item(
        &alice,
        &key("notes", "other")?,
        1,
        Visibility::Private,
        json!({"t": "haystack"}),
    )));
    index.apply(&changes).await?;

    let first = index
        .query(&SearchQuery {
            limit: 5,
            ..query(&alice, &["needle"])
        })
        .await?;
    assert_eq!(first.found, 37, "found counts all matches");
    assert_eq!(first.hits.len(), 5);
    assert!(first.next_cursor.is_some(), "more pages follow");

    let want: BTreeSet<_> = expected.iter().map(|i| (i.owner.clone(), i.key())).collect();
    for limit in [1usize, 10, 36, 37, 100] {
        let (found, hits) = all_hits(
            &index,
            &SearchQuery {
                limit,
                ..query(&alice, &["needle"])
            },
        )
        .await?;
        assert_eq!(found, 37, "limit {limit}");
        assert_eq!(hits.len(), 37, "limit {limit}: every hit once");
        assert_eq!(ids(&hits), want, "limit {limit}");
    }
    let page = index
        .query(&SearchQuery {
            limit: 37,
            ..query(&alice, &["needle"])
        })
        .await?;
    assert_eq!(page.next_cursor, None, "a page that holds the last hit has no cursor");
    Ok(())
}

/// A cursor the index did not issue is `BadCursor`, never an infrastructure failure or a silent first page.
pub async fn check_bad_cursor_is_refused<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let alice = user("alice")?;
    let mut changes = Vec::new();
    for n in 0..5u64 {
        changes.push(upsert(&item(
            &alice,
            &key("notes", &format!("n{n}"))?,
            1,
            Visibility::Private,
            json!({"t": "word"}),
        )));
    }
    index.apply(&changes).await?;
    for cursor in ["not a cursor", "AAAA", "x", "{\"start\":0}", "czox", "-1", "%00"] {
        let result = index
            .query(&SearchQuery {
                cursor: Some(cursor.to_owned()),
                limit: 2,
                ..query(&alice, &["word"])
            })
            .await;
        assert_eq!(result, Err(SearchError::BadCursor), "cursor {cursor:?}");
    }
    let page = index
        .query(&SearchQuery {
            limit: 2,
            ..query(&alice, &["word"])
        })
        .await?;
    let cursor = page.next_cursor.ok_or("a next page")?;
    let tampered = format!("{cursor}x");
    let result = index
        .query(&SearchQuery {
            cursor: Some(tampered),
            limit: 2,
            ..query(&alice, &["word"])
        })
        .await;
    assert_eq!(
        result,
        Err(SearchError::BadCursor),
        "an issued cursor with a character added"
    );
    Ok(())
}

/// Words that look like query syntax match only as literal text: never as operators, fields or wildcards.
pub async fn check_syntax_words_match_only_literally<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let alice = user("alice")?;
    let docs = [
        ("and", json!({"t": "(and apples oranges)"})),
        ("field", json!({"t": "field:x value"})),
        ("quote", json!({"t": "say \"hello\" back\\slash 'single'"})),
        ("plain", json!({"t": "plain apples"})),
        ("keyed", json!({"field": "x"})),
        ("nothing", json!({"t": "nothing relevant here"})),
    ];
    let mut items = Vec::new();
    for (id, data) in docs {
        items.push(item(&alice, &key("notes", id)?, 1, Visibility::Private, data));
    }
    index.apply(&items.iter().map(upsert).collect::<Vec<_>>()).await?;
    let by_id = |id: &str| {
        items
            .iter()
            .find(|i| i.id.as_str() == id)
            .map(|i| (i.owner.clone(), i.key()))
    };
    let expect = |ids: &[&str]| ids.iter().filter_map(|id| by_id(id)).collect::<BTreeSet<_>>();

    // User text split into words the way the application does.
    let cases: [(&str, &[&str]); 9] = [
        ("(and apples", &["and"]),
        ("field:x", &["field"]),
        ("\"hello\"", &["quote"]),
        ("back\\slash", &["quote"]),
        ("'single'", &["quote"]),
        ("apples -oranges", &["and"]),
        ("apples | zebra", &[]),
        ("apples OR zebra", &[]),
        ("matchall", &[]),
    ];
    for (text, expected) in cases {
        let split: Vec<String> = words(text).collect();
        let split: Vec<&str> = split.iter().map(String::as_str).collect();
        assert_eq!(
            finds(&index, &alice, &split).await?,
            expect(expected),
            "text {text:?} as words {split:?}"
        );
    }

    // Raw words full of syntax are still just text: no error, and no hit that lacks their letters.
    let raw = [
        "(and",
        "field:x",
        "\"hello\"",
        "apples)",
        "-apples",
        "apples|zebra",
        "(or apples zebra)",
        "t:apples",
        "*",
        "'",
        "\\",
        "\"",
        "(",
        ")",
        "{",
        "}",
        "[",
        "]",
        "+",
        "-",
        "|",
        "~",
        "&&",
        "||",
        "!",
        "^",
        ":",
        "?",
        "/",
        "apple*",
        "nothing~1",
        "(not zebra)",
        "matchall",
    ];
    for word in raw {
        let letters: Vec<String> = words(word).collect();
        let (found, hits) = all_hits(&index, &query(&alice, &[word]))
            .await
            .map_err(|e| format!("{word:?}: {e}"))?;
        assert_eq!(found, hits.len() as u64, "{word:?}");
        for hit in &hits {
            let text: Vec<String> = search_document(hit)
                .text
                .iter()
                .flat_map(|s| words(s).collect::<Vec<_>>())
                .collect();
            assert!(
                letters.iter().all(|l| text.contains(l)),
                "{word:?} matched {} literally only",
                hit.id
            );
            assert_ne!(hit.id.as_str(), "nothing", "{word:?} is not a wildcard or a negation");
        }
        if letters.is_empty() || word == "matchall" {
            assert_eq!(found, 0, "{word:?} is in no document");
        }
    }
    Ok(())
}

/// The five items of the prefix checks: alice's private `passport renewal`, `pass the salt` and `compass rose`,
/// bob's public `passing grade` (in `grades`) and private `passcode secret`, plus alice's private `nothing here`.
async fn prefix_fixture<I: SearchIndex>(index: &I) -> Result<Vec<Item>, BoxError> {
    let (alice, bob) = (user("alice")?, user("bob")?);
    let items = vec![
        item(
            &alice,
            &key("notes", "p1")?,
            1,
            Visibility::Private,
            json!({"t": "Passport renewal"}),
        ),
        item(
            &alice,
            &key("notes", "p2")?,
            1,
            Visibility::Private,
            json!({"t": "pass the salt"}),
        ),
        item(
            &alice,
            &key("notes", "p3")?,
            1,
            Visibility::Private,
            json!({"t": "compass rose"}),
        ),
        item(
            &bob,
            &key("grades", "p4")?,
            1,
            Visibility::Public,
            json!({"t": "passing grade"}),
        ),
        item(
            &bob,
            &key("notes", "p5")?,
            1,
            Visibility::Private,
            json!({"t": "passcode secret"}),
        ),
        item(
            &alice,
            &key("notes", "n")?,
            1,
            Visibility::Private,
            json!({"t": "nothing here"}),
        ),
    ];
    index.apply(&items.iter().map(upsert).collect::<Vec<_>>()).await?;
    Ok(items)
}

/// The (owner, key) of the fixture items with these ids.
fn picked(items: &[Item], ids: &[&str]) -> BTreeSet<(UserId, ItemKey)> {
    items
        .iter()
        .filter(|i| ids.contains(&i.id.as_str()))
        .map(|i| (i.owner.clone(), i.key()))
        .collect()
}

/// The last word also matches as a prefix of a word (search as you type: `pass` finds `passport`); every
/// other word still matches whole words only, even when it equals the last; scope, collection, `found`
/// and paging hold for prefix matches as for whole words.
pub async fn check_last_word_matches_as_a_prefix<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let items = prefix_fixture(&index).await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let cases: [(&[&str], &[&str]); 16] = [
        (&["pass"], &["p1", "p2", "p4"]),
        (&["p"], &["p1", "p2", "p4"]),
        (&["passport"], &["p1"]),
        (&["passports"], &[]),
        (&["renewal", "pass"], &["p1"]),
        (&["salt", "pa"], &["p2"]),
        (&["pass", "the"], &["p2"]),
        (&["pass", "pass"], &["p2"]),
        (&["com"], &["p3"]),
        (&["rose", "com"], &["p3"]),
        (&["ros"], &["p3"]),
        (&["ompass"], &[]),
        (&["pass", "renewal"], &[]),
        (&["renew", "passport"], &[]),
        (&["com", "rose"], &[]),
        (&["pas", "salt"], &[]),
    ];
    for (words, expected) in cases {
        assert_eq!(
            finds(&index, &alice, words).await?,
            picked(&items, expected),
            "{words:?}: only the last word is a prefix"
        );
    }

    // Scope: a prefix never reaches another user's private item.
    let scoped = |caller: &UserId, scope: Scope, words: &[&str]| SearchQuery {
        scope,
        ..query(caller, words)
    };
    let expectations = [
        (scoped(&bob, Scope::All, &["pass"]), picked(&items, &["p4", "p5"])),
        (scoped(&bob, Scope::Public, &["pass"]), picked(&items, &["p4"])),
        (scoped(&alice, Scope::Mine, &["pass"]), picked(&items, &["p1", "p2"])),
        (scoped(&alice, Scope::All, &["sec"]), picked(&items, &[])),
        (scoped(&alice, Scope::Public, &["pass"]), picked(&items, &["p4"])),
        (scoped(&bob, Scope::Mine, &["sec"]), picked(&items, &["p5"])),
        (
            SearchQuery {
                collection: Some(collection("notes")?),
                ..query(&alice, &["pass"])
            },
            picked(&items, &["p1", "p2"]),
        ),
    ];
    for (q, expected) in expectations {
        let (found, hits) = all_hits(&index, &q).await?;
        assert_eq!(ids(&hits), expected, "{q:?}");
        assert_eq!(found, expected.len() as u64, "{q:?}: found counts the prefix matches");
    }

    // Paging over prefix matches visits each once.
    let (found, hits) = all_hits(
        &index,
        &SearchQuery {
            limit: 1,
            ..query(&alice, &["pa"])
        },
    )
    .await?;
    assert_eq!((found, ids(&hits)), (3, picked(&items, &["p1", "p2", "p4"])));
    Ok(())
}

/// `*`, `?`, `%`, quotes, `:` and brackets in the user's text are text, never syntax: split into words the
/// way the application does they give the ordinary prefix rule, and passed raw they neither fail nor
/// widen the query (no wildcard, no field, no match-everything, no other user's private item).
pub async fn check_prefix_text_is_never_syntax<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let items = prefix_fixture(&index).await?;
    let alice = user("alice")?;

    // User text split into words the way the application does.
    let texts: [(&str, &[&str]); 10] = [
        ("pass*", &["p1", "p2", "p4"]),
        ("*pass", &["p1", "p2", "p4"]),
        ("\"pass", &["p1", "p2", "p4"]),
        ("(pass)", &["p1", "p2", "p4"]),
        ("[pass", &["p1", "p2", "p4"]),
        ("pass:", &["p1", "p2", "p4"]),
        ("t:pass", &[]),
        ("pass*word", &[]),
        ("com*ss", &[]),
        ("renewal pa*", &["p1"]),
    ];
    for (text, expected) in texts {
        let split: Vec<String> = words(text).collect();
        let split: Vec<&str> = split.iter().map(String::as_str).collect();
        assert_eq!(
            finds(&index, &alice, &split).await?,
            picked(&items, expected),
            "text {text:?} as words {split:?}"
        );
    }

    // Raw words full of syntax: no error, and every hit holds their letters by the prefix rule.
    let wildcards = [
        "*ass", "?ass", "%ass", "_ass", ".*ass", "*", "**", "*:*", "[* TO *]", "\"\"", "()",
    ];
    let raw = [
        "pass*",
        "*pass",
        "p*",
        "pa?s",
        "pa??port",
        "\"pass\"",
        "'pass'",
        "pass:",
        ":pass",
        "(pass",
        "[pass",
        "pass]",
        "{pass}",
        "pass~",
        "pass^2",
        "p%",
        "pass_",
        "owner:alice",
        "visibility:public",
        "state:live",
        "(prefix field=text 'p')",
        "{\"match_all\":{}}",
    ];
    for word in wildcards.iter().chain(raw.iter()) {
        let letters: Vec<String> = words(word).collect();
        let (found, hits) = all_hits(&index, &query(&alice, &[word]))
            .await
            .map_err(|e| format!("{word:?}: {e}"))?;
        assert_eq!(found, hits.len() as u64, "{word:?}");
        for hit in &hits {
            let text: Vec<String> = search_document(hit)
                .text
                .iter()
                .flat_map(|s| words(s).collect::<Vec<_>>())
                .collect();
            if let Some((last, rest)) = letters.split_last() {
                assert!(
                    rest.iter().all(|l| text.contains(l)) && text.iter().any(|t| t.starts_with(last.as_str())),
                    "{word:?} matched {} literally only",
                    hit.id
                );
            }
            assert_ne!(hit.id.as_str(), "n", "{word:?} is not a wildcard");
            assert!(
                hit.visibility == Visibility::Public || hit.owner == alice,
                "{word:?} reached another user's private item"
            );
        }
        if letters.is_empty() || wildcards.contains(word) {
            assert_eq!(found, 0, "{word:?} is no wildcard: no word starts with its letters");
        }
    }
    Ok(())
}

/// Erasing an owner leaves no document of theirs findable by anyone (private, public, in every scope),
/// tombstones included (an item deleted before is not found either), leaves every other owner's
/// documents as they were, answers `Ok` on a repeat and for an owner with no document, and the index
/// goes on taking the others' changes.
pub async fn check_erase_owner_leaves_no_document_of_the_owner<F: SearchFactory>(factory: &F) -> Outcome {
    let index = factory.fresh().await?;
    let (alice, bob, carol) = (user("alice")?, user("bob")?, user("carol")?);
    let mut alices = Vec::new();
    for i in 0..30 {
        let visibility = if i % 3 == 0 {
            Visibility::Public
        } else {
            Visibility::Private
        };
        alices.push(item(
            &alice,
            &key("notes", &format!("a{i}"))?,
            1,
            visibility,
            json!({"t": format!("apple alices {i}")}),
        ));
    }
    let gone = key("notes", "gone")?;
    let b_private = item(
        &bob,
        &key("notes", "a1")?,
        1,
        Visibility::Private,
        json!({"t": "apple bobs"}),
    );
    let b_public = item(
        &bob,
        &key("notes", "b2")?,
        1,
        Visibility::Public,
        json!({"t": "apple shared"}),
    );
    let mut changes: Vec<IndexChange> = alices.iter().map(upsert).collect();
    changes.push(upsert(&item(
        &alice,
        &gone,
        1,
        Visibility::Public,
        json!({"t": "apple gone"}),
    )));
    changes.push(upsert(&b_private));
    changes.push(upsert(&b_public));
    index.apply(&changes).await?;
    index.apply(&[delete(&alice, &gone, 2)]).await?;
    assert_eq!(
        finds(&index, &alice, &["apple"]).await?.len(),
        31,
        "Alice's 30 and Bob's public one"
    );

    index.erase_owner(&alice).await?;
    for scope in [Scope::Mine, Scope::Public, Scope::All] {
        for caller in [&alice, &bob] {
            let q = SearchQuery {
                scope,
                ..query(caller, &["apple"])
            };
            let (found, items) = all_hits(&index, &q).await?;
            assert!(
                items.iter().all(|i| i.owner != alice),
                "{caller} {scope:?}: nothing of Alice's is found after her erasure: {items:?}"
            );
            assert_eq!(found, items.len() as u64, "`found` counts no erased document");
        }
    }
    assert!(finds(&index, &alice, &["alices"]).await?.is_empty());
    assert_eq!(finds(&index, &bob, &["apple"]).await?, set(&[&b_private, &b_public]));
    assert_eq!(finds(&index, &carol, &["apple"]).await?, set(&[&b_public]));

    index.erase_owner(&alice).await?;
    index.erase_owner(&carol).await?;
    assert_eq!(finds(&index, &bob, &["apple"]).await?, set(&[&b_private, &b_public]));

    let b_newer = item(&bob, &key("notes", "a1")?, 2, Visibility::Private, json!({"t": "pear"}));
    index.apply(&[upsert(&b_newer)]).await?;
    assert_eq!(finds(&index, &bob, &["pear"]).await?, set(&[&b_newer]));
    assert_eq!(finds(&index, &bob, &["apple"]).await?, set(&[&b_public]));
    Ok(())
}

/// Expands to one `#[tokio::test]` per search index check, inside `mod $name`, for the factory `$factory`.
#[macro_export]
macro_rules! search_index_contract {
    ($name:ident, $factory:expr) => {
        $crate::contract_tests!($name, search_index, $factory;
            check_upsert_then_query_finds_by_any_word,
            check_all_words_must_match,
            check_older_version_never_overwrites_newer,
            check_delete_then_older_upsert_stays_deleted,
            check_same_changes_in_any_order_give_the_same_index,
            check_scope_never_returns_another_users_private_item,
            check_collection_filter,
            check_cursor_paging_visits_every_hit_once,
            check_bad_cursor_is_refused,
            check_syntax_words_match_only_literally,
            check_last_word_matches_as_a_prefix,
            check_prefix_text_is_never_syntax,
            check_erase_owner_leaves_no_document_of_the_owner,
        );
    };
}
