//! What the port contract suites do not cover: group commit, reopening, the change feed and consumer
//! positions, refusing foreign files, and the search index's matching rules.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rookery_domain::event::{ItemChanged, ItemState};
use rookery_domain::projection::{IndexChange, search_document};
use rookery_domain::{
    CollectionName, EventId, EventMeta, EventPayload, Item, ItemId, ItemKey, Message, MessageId, NewEvent, Seq,
    Timestamp, UserId, Version, Visibility,
};
use rookery_ports::{
    AppendBatch, AppendError, EventStore, IdempotencyRecord, IdempotencyWrite, Scope, SearchIndex, SearchQuery,
};
use serde_json::{Map, Value, json};

use crate::search::match_expression;
use crate::{BackupError, ImportError, ImportRecord, OpenError, SqliteStore, backup};

type Outcome = Result<(), Box<dyn std::error::Error + Send + Sync>>;

static IDS: AtomicU64 = AtomicU64::new(0);

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn key(collection: &str, id: &str) -> ItemKey {
    ItemKey::new(
        CollectionName::parse(collection).unwrap_or_else(|e| panic!("{e}")),
        ItemId::parse(id).unwrap_or_else(|e| panic!("{e}")),
    )
}

fn event(payload: EventPayload) -> NewEvent {
    let n = IDS.fetch_add(1, Ordering::Relaxed);
    NewEvent {
        event_id: EventId::parse(format!("e{n}")).unwrap_or_else(|e| panic!("{e}")),
        at: Timestamp::from_millis(1_000 + n),
        payload,
        meta: EventMeta::default(),
    }
}

fn message(to: &UserId, text: &str) -> NewEvent {
    let n = IDS.fetch_add(1, Ordering::Relaxed);
    event(EventPayload::MessageReceived(Message {
        id: MessageId::parse(format!("m{n}")).unwrap_or_else(|e| panic!("{e}")),
        from: user("sender"),
        to: to.clone(),
        text: text.to_owned(),
        data: Map::new(),
        sent_at: Timestamp::from_millis(1),
    }))
}

fn put(key: &ItemKey, version: u64, data: Value) -> NewEvent {
    let Value::Object(data) = data else {
        panic!("data must be an object")
    };
    let change = ItemChanged {
        collection: key.collection.clone(),
        id: key.id.clone(),
        version: Version(version),
        state: Some(ItemState {
            visibility: Visibility::Public,
            created_at: Timestamp::from_millis(1),
            data,
        }),
        restored_from: None,
    };
    event(if version == 1 {
        EventPayload::ItemCreated(change)
    } else {
        EventPayload::ItemReplaced(change)
    })
}

fn batch(owner: &UserId, expected_seq: u64, events: Vec<NewEvent>) -> AppendBatch {
    AppendBatch {
        owner: owner.clone(),
        expected_seq: Some(Seq(expected_seq)),
        item_versions: Vec::new(),
        events,
        idempotency: None,
    }
}

fn item(owner: &str, id: &str, version: u64, data: Value) -> Item {
    let Value::Object(data) = data else {
        panic!("data must be an object")
    };
    Item {
        owner: user(owner),
        collection: key("notes", id).collection,
        id: key("notes", id).id,
        version: Version(version),
        visibility: Visibility::Private,
        created_at: Timestamp::from_millis(1),
        updated_at: Timestamp::from_millis(version),
        data,
    }
}

fn query(caller: &str, words: &[&str]) -> SearchQuery {
    SearchQuery {
        caller: user(caller),
        words: words.iter().map(|w| (*w).to_owned()).collect(),
        collection: None,
        scope: Scope::All,
        limit: 100,
        cursor: None,
    }
}

/// Waits (on the test's own thread, never on a runtime worker) until `done`, or fails after a deadline.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// The writer held by [`hold_the_writer`], and its first write.
type Held<'a> = (
    std::sync::MutexGuard<'a, ()>,
    tokio::task::JoinHandle<Result<(), rookery_ports::StoreError>>,
);

/// Makes the writer take a first write (a consumer position) and hold it until the returned guard is
/// dropped, so that every write queued meanwhile waits for the next group. Returns the guard and the
/// first write's task.
fn hold_the_writer<'a>(store: &SqliteStore, shared: &'a crate::writer::Shared) -> Result<Held<'a>, &'static str> {
    let started = shared.started.load(Ordering::SeqCst);
    let paused = shared.pause.lock().map_err(|_| "pause lock")?;
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.set_consumer_position("probe", 1).await }
    });
    wait_until("the writer to take the first write", || {
        shared.started.load(Ordering::SeqCst) == started + 1
    });
    Ok((paused, first))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_commit_in_one_group_and_a_refused_one_fails_alone() -> Outcome {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("db"))?;
    let before = store.write_stats();
    let shared = std::sync::Arc::clone(&store.inner.shared);

    // A first write the writer takes and then holds, so every later one queues behind it.
    let (paused, first) = hold_the_writer(&store, &shared)?;
    let mut appends = Vec::new();
    for n in 0..40 {
        let store = store.clone();
        let owner = user(&format!("user-{n:02}"));
        appends.push(tokio::spawn(async move {
            store.append(batch(&owner, 0, vec![message(&owner, "hi")])).await
        }));
    }
    // Two appends racing for the same seq of one stream: one wins, the other is refused alone.
    let contested = user("contested");
    let mut racing = Vec::new();
    for text in ["one", "two"] {
        let (store, owner) = (store.clone(), contested.clone());
        racing.push(tokio::spawn(async move {
            store.append(batch(&owner, 0, vec![message(&owner, text)])).await
        }));
    }
    wait_until("every write to queue", || store.queued() == 42);
    drop(paused);

    first.await??;
    for append in appends {
        let stored = append.await??;
        assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![Seq(1)]);
    }
    let mut outcomes = Vec::new();
    for task in racing {
        outcomes.push(task.await?.map(|events| events.len()));
    }
    outcomes.sort_by_key(|o| o.is_err());
    assert_eq!(
        outcomes,
        vec![Ok(1), Err(AppendError::SeqMoved { current: Seq(1) })],
        "one wins, the other sees the winner's seq"
    );
    let after = store.write_stats();
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 43),
        "one transaction held all 43 writes"
    );
    assert_eq!(store.last_seq(&contested).await?, Seq(1));
    assert_eq!(store.commit_position(), 41, "41 events committed");
    assert_eq!(store.consumer_position("probe").await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulky_job_commits_alone_and_a_failed_one_undoes_all_it_did() -> Outcome {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("db"))?;
    let before = store.write_stats();
    let shared = std::sync::Arc::clone(&store.inner.shared);
    // A first write the writer takes and then holds, so every later one queues behind it.
    let (paused, first) = hold_the_writer(&store, &shared)?;
    // Queued behind it: a write, a maintenance job that fails after changing a row, and another write.
    let owner = user("alice");
    let early = tokio::spawn({
        let (store, owner) = (store.clone(), owner.clone());
        async move { store.append(batch(&owner, 0, vec![message(&owner, "early")])).await }
    });
    wait_until("the first append to queue", || store.queued() == 1);
    let failing = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .submit(|reply| crate::writer::Job::Maintain {
                    sql: "INSERT INTO consumers (name, position) VALUES ('half-done', 7); SELECT * FROM no_such_table;",
                    reply,
                })
                .await
        }
    });
    wait_until("the maintenance job to queue", || store.queued() == 2);
    let late = tokio::spawn({
        let (store, owner) = (store.clone(), owner.clone());
        async move { store.append(batch(&owner, 1, vec![message(&owner, "late")])).await }
    });
    wait_until("every write to queue", || store.queued() == 3);
    drop(paused);

    first.await??;
    assert_eq!(early.await??.len(), 1);
    assert!(failing.await??.is_err(), "the maintenance job failed");
    assert_eq!(late.await??.len(), 1, "the write after the failed job commits");
    assert_eq!(
        store.consumer_position("half-done").await?,
        0,
        "what the failed job changed before failing is gone"
    );
    let after = store.write_stats();
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (2, 3),
        "two transactions committed three writes: the first write with the early one, then the late one alone \
         (the failed job's transaction was rolled back)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebasing_writes_to_one_item_all_commit_in_one_group_on_each_other() -> Outcome {
    const WRITERS: u64 = 16;
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("db"))?;
    let alice = user("alice");
    let hot = key("notes", "hot");
    store
        .append(batch(&alice, 0, vec![put(&hot, 1, json!({"n": 0}))]))
        .await?;
    let before = store.write_stats();
    let shared = std::sync::Arc::clone(&store.inner.shared);
    // A first write the writer takes and then holds, so every later one queues behind it.
    let (paused, first) = hold_the_writer(&store, &shared)?;
    // Every writer planned on version 1; the writer re-plans each on the one before it, in one transaction.
    let mut writers = Vec::new();
    for n in 1..=WRITERS {
        let (store, owner, hot) = (store.clone(), alice.clone(), hot.clone());
        writers.push(tokio::spawn(async move {
            let planned = AppendBatch {
                expected_seq: None,
                item_versions: vec![(hot.clone(), Version(1))],
                ..batch(&owner, 0, vec![put(&hot, 2, json!({"n": n}))])
            };
            let rebase: rookery_ports::Rebase = std::sync::Arc::new(move |head: &rookery_domain::ItemHead| {
                Some(put(&hot, head.version.0 + 1, json!({"n": n})).payload)
            });
            store.append_rebasing(planned, rebase).await
        }));
    }
    wait_until("every write to queue", || store.queued() == WRITERS as usize);
    drop(paused);
    first.await??;
    let mut versions = Vec::new();
    for writer in writers {
        let stored = writer.await??;
        versions.extend(stored.iter().filter_map(|e| e.payload.as_item().map(|c| c.version.0)));
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=WRITERS + 1).collect::<Vec<_>>(),
        "every write applied, each on the one before"
    );
    let after = store.write_stats();
    assert_eq!(after.0 - before.0, 1, "one transaction held them all");
    assert_eq!(store.item_head(&alice, &hot).await?.version, Version(WRITERS + 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_appenders_all_commit_with_consecutive_seqs() -> Outcome {
    const USERS: usize = 8;
    const WRITERS_PER_USER: usize = 8;
    const APPENDS: usize = 10;
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("db"))?;
    let mut tasks = Vec::new();
    for u in 0..USERS {
        for w in 0..WRITERS_PER_USER {
            let store = store.clone();
            let owner = user(&format!("user-{u}"));
            tasks.push(tokio::spawn(async move {
                for a in 0..APPENDS {
                    // Every writer of a user races the others: re-read the seq and retry when it moved.
                    loop {
                        let seq = store.last_seq(&owner).await.map_err(|e| e.to_string())?;
                        let text = format!("w{w} a{a}");
                        match store.append(batch(&owner, seq.0, vec![message(&owner, &text)])).await {
                            Ok(_) => break,
                            Err(AppendError::SeqMoved { .. }) => continue,
                            Err(other) => return Err(other.to_string()),
                        }
                    }
                }
                Ok::<(), String>(())
            }));
        }
    }
    for task in tasks {
        task.await??;
    }
    let per_user = WRITERS_PER_USER * APPENDS;
    for u in 0..USERS {
        let owner = user(&format!("user-{u}"));
        let feed = store.read_feed(&owner, Seq(0), 1_000).await?;
        assert_eq!(
            feed.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
            (1..=per_user as u64).collect::<Vec<_>>(),
            "{owner}: every append, gap-free"
        );
    }
    let total = USERS * per_user;
    let (changes, next) = store.changes_after(0, 10_000).await?;
    assert_eq!(
        (changes.len(), next),
        (total, total as u64),
        "the feed holds every event once"
    );
    for u in 0..USERS {
        let owner = user(&format!("user-{u}"));
        let seqs: Vec<u64> = changes.iter().filter(|e| e.owner == owner).map(|e| e.seq.0).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{owner}'s events in seq order");
    }
    let (groups, writes) = store.write_stats();
    assert!(
        writes >= total as u64 && groups <= writes,
        "{groups} groups for {writes} writes"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_pages_in_commit_order_and_consumers_keep_positions() -> Outcome {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("db"))?;
    let (alice, bob) = (user("alice"), user("bob"));
    assert_eq!(store.commit_position(), 0);
    assert_eq!(store.changes_after(0, 10).await?, (Vec::new(), 0));
    let mut commits = store.watch_commits();
    commits.borrow_and_update();

    store
        .append(batch(&alice, 0, vec![message(&alice, "a1"), message(&alice, "a2")]))
        .await?;
    assert!(commits.has_changed()?, "a commit wakes the watchers");
    assert_eq!(*commits.borrow_and_update(), 2);
    store.append(batch(&bob, 0, vec![message(&bob, "b1")])).await?;
    store.append(batch(&alice, 2, vec![message(&alice, "a3")])).await?;
    assert_eq!(store.commit_position(), 4);

    // An idempotency record alone stores no event: the position does not move, nobody is woken.
    commits.borrow_and_update();
    store
        .remember(IdempotencyWrite {
            owner: alice.clone(),
            record: IdempotencyRecord {
                key: "k".into(),
                fingerprint: "f".into(),
                outcome: json!({}),
                recorded_at: Timestamp::from_millis(5),
            },
            expired_before: Timestamp::from_millis(0),
        })
        .await?;
    assert!(!commits.has_changed()?);
    assert_eq!(store.commit_position(), 4);

    let (first, next) = store.changes_after(0, 3).await?;
    let order: Vec<(String, u64)> = first.iter().map(|e| (e.owner.to_string(), e.seq.0)).collect();
    assert_eq!(
        order,
        vec![("alice".into(), 1), ("alice".into(), 2), ("bob".into(), 1)],
        "commit order"
    );
    assert_eq!(next, 3);
    let (rest, end) = store.changes_after(next, 3).await?;
    assert_eq!((rest.len(), rest.first().map(|e| e.seq), end), (1, Some(Seq(3)), 4));
    assert_eq!(
        store.changes_after(end, 3).await?,
        (Vec::new(), 4),
        "nothing after the end"
    );
    assert_eq!(store.changes_after(100, 3).await?, (Vec::new(), 100));

    assert_eq!(
        store.consumer_position("indexer").await?,
        0,
        "a new consumer starts at the beginning"
    );
    store.set_consumer_position("indexer", 3).await?;
    store.set_consumer_position("pushes", 4).await?;
    store.set_consumer_position("indexer", 4).await?;
    assert_eq!(store.consumer_position("indexer").await?, 4);
    assert_eq!(store.consumer_position("pushes").await?, 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_keeps_its_log_heads_feed_positions_and_index() -> Outcome {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("nested").join("rookery.sqlite3");
    let alice = user("alice");
    let k = key("notes", "n1");
    let gone = item("alice", "gone", 1, json!({"t": "ghost"}));
    {
        let store = SqliteStore::open(&file)?;
        store
            .append(AppendBatch {
                item_versions: vec![(k.clone(), Version::NONE)],
                ..batch(&alice, 0, vec![put(&k, 1, json!({"t": "first"}))])
            })
            .await?;
        store
            .append(AppendBatch {
                item_versions: vec![(k.clone(), Version(1))],
                ..batch(
                    &alice,
                    1,
                    vec![put(&k, 2, json!({"t": "second"})), message(&alice, "hi")],
                )
            })
            .await?;
        store.set_consumer_position("indexer", 2).await?;
        let index = store.search_index();
        let live = item("alice", "n1", 2, json!({"t": "Passport"}));
        index
            .apply(&[
                IndexChange::Upsert(search_document(&live)),
                IndexChange::Upsert(search_document(&gone)),
                IndexChange::Delete {
                    owner: alice.clone(),
                    key: gone.key(),
                    version: Version(2),
                },
            ])
            .await?;
    }
    let wal = dir.path().join("nested").join("rookery.sqlite3-wal");
    assert!(!wal.exists(), "closing checkpoints the WAL into the one database file");
    let store = SqliteStore::open(&file)?;
    assert_eq!(store.last_seq(&alice).await?, Seq(3));
    assert_eq!(store.commit_position(), 3);
    let head = store.item_head(&alice, &k).await?;
    assert_eq!(head.version, Version(2));
    assert_eq!(head.item.map(|i| i.data.get("t").cloned()), Some(Some(json!("second"))));
    assert_eq!(store.item_history(&alice, &k, Version::NONE, 10).await?.len(), 2);
    assert_eq!(store.read_messages(&alice, Seq(0), 10).await?.len(), 1);
    assert_eq!(store.consumer_position("indexer").await?, 2);

    let index = store.search_index();
    assert_eq!(index.query(&query("alice", &["passport"])).await?.found, 1);
    // The tombstone survived the reopen: a late, older upsert does not bring the item back.
    index.apply(&[IndexChange::Upsert(search_document(&gone))]).await?;
    assert_eq!(index.query(&query("alice", &["ghost"])).await?.found, 0);

    // And the store goes on where it was.
    let stored = store.append(batch(&alice, 3, vec![message(&alice, "again")])).await?;
    assert_eq!(stored.first().map(|e| e.seq), Some(Seq(4)));
    assert_eq!(store.changes_after(3, 10).await?.1, 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_marker_is_answered_from_memory_and_survives_a_reopen() -> Outcome {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rookery.sqlite3");
    let (alice, bob) = (user("alice"), user("bob"));
    let at = Timestamp::from_millis(1_700_000_000_000);
    {
        let store = SqliteStore::open(&file)?;
        store.append(batch(&alice, 0, vec![message(&alice, "mine")])).await?;
        assert_eq!(store.erased(&alice).await?, None);
        assert_eq!(store.erase_owner(&alice, at).await?, at);
        assert_eq!(
            store.erased(&alice).await?,
            Some(at),
            "known as soon as the erasure answered"
        );
        assert_eq!(store.erased(&bob).await?, None);
    }
    let store = SqliteStore::open(&file)?;
    assert_eq!(
        store.erased(&alice).await?,
        Some(at),
        "read back from the erasures table at open"
    );
    assert_eq!(store.erased(&bob).await?, None);
    match store.append(batch(&alice, 0, vec![message(&alice, "again")])).await {
        Err(AppendError::Erased { at: refused }) => assert_eq!(refused, at),
        other => panic!("an erased user's append must be refused, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_corrupt_and_newer_files_are_refused_naming_the_file_and_left_untouched() -> Outcome {
    let dir = tempfile::tempdir()?;

    let text = dir.path().join("notes.txt");
    let garbage = "this is not a database, just some text that is long enough to look like a header. ".repeat(64);
    std::fs::write(&text, &garbage)?;
    let error = SqliteStore::open(&text)
        .map(|_| ())
        .err()
        .ok_or("a text file must be refused")?;
    assert!(matches!(error, OpenError::NotADatabase { .. }), "{error}");
    assert!(error.to_string().contains(&text.display().to_string()), "{error}");
    assert_eq!(std::fs::read_to_string(&text)?, garbage, "left untouched");

    let other = dir.path().join("other-app.db");
    {
        let conn = rusqlite::Connection::open(&other)?;
        conn.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY); INSERT INTO accounts VALUES (1);")?;
    }
    let bytes = std::fs::read(&other)?;
    let error = SqliteStore::open(&other)
        .map(|_| ())
        .err()
        .ok_or("a foreign database must be refused")?;
    assert!(matches!(error, OpenError::Foreign { .. }), "{error}");
    assert!(error.to_string().contains(&other.display().to_string()), "{error}");
    assert_eq!(std::fs::read(&other)?, bytes, "left untouched");

    let newer = dir.path().join("newer.db");
    drop(SqliteStore::open(&newer)?);
    {
        let conn = rusqlite::Connection::open(&newer)?;
        conn.pragma_update(None, "user_version", 99)?;
    }
    let error = SqliteStore::open(&newer)
        .map(|_| ())
        .err()
        .ok_or("a newer schema must be refused")?;
    assert!(matches!(error, OpenError::TooNew { found: 99, .. }), "{error}");
    assert!(error.to_string().contains(&newer.display().to_string()), "{error}");

    // A damaged header (the first page overwritten) is refused too, not read as something else.
    let damaged = dir.path().join("damaged.db");
    {
        let store = SqliteStore::open(&damaged)?;
        store
            .append(batch(&user("alice"), 0, vec![message(&user("alice"), "hi")]))
            .await?;
    }
    let mut bytes = std::fs::read(&damaged)?;
    bytes[..100].fill(0xAB);
    std::fs::write(&damaged, &bytes)?;
    let error = SqliteStore::open(&damaged)
        .map(|_| ())
        .err()
        .ok_or("a damaged header must be refused")?;
    assert!(matches!(error, OpenError::NotADatabase { .. }), "{error}");

    // An empty file is simply a new database.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"")?;
    let store = SqliteStore::open(&empty)?;
    assert_eq!(store.last_seq(&user("alice")).await?, Seq(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_the_last_word_as_a_prefix_and_folds_case_and_diacritics() -> Outcome {
    let dir = tempfile::tempdir()?;
    let index = SqliteStore::open(dir.path().join("db"))?.search_index();
    let trip = item(
        "alice",
        "trip",
        1,
        json!({"t": "Passport renewal at the École", "n": ["ΣΟΦΙΑ"]}),
    );
    index.apply(&[IndexChange::Upsert(search_document(&trip))]).await?;
    let found = |words: &'static [&'static str]| {
        let (index, q) = (index.clone(), query("alice", words));
        async move { index.query(&q).await.map(|page| page.found) }
    };
    assert_eq!(found(&["pass"]).await?, 1, "the last word is a prefix");
    assert_eq!(found(&["renewal", "pass"]).await?, 1);
    assert_eq!(found(&["pass", "renewal"]).await?, 0, "only the last word is a prefix");
    assert_eq!(found(&["PASSPORT"]).await?, 1, "case folds");
    assert_eq!(found(&["école"]).await?, 1);
    assert_eq!(found(&["ecole"]).await?, 1, "diacritics fold");
    assert_eq!(found(&["σοφια"]).await?, 1, "beyond ASCII too");
    assert_eq!(found(&["assport"]).await?, 0, "a prefix, never an infix");
    assert_eq!(found(&["pass*"]).await?, 0, "a `*` is text, never syntax");
    assert_eq!(found(&["renewal", "\"at\""]).await?, 0);
    Ok(())
}

#[test]
fn match_expressions_quote_every_word_and_refuse_what_is_not_a_word() {
    let words = |ws: &[&str]| match_expression(&ws.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>());
    assert_eq!(words(&["red", "Apple"]), Some("\"red\" \"apple\"*".to_owned()));
    assert_eq!(
        words(&["tea", "tea"]),
        Some("\"tea\" \"tea\"*".to_owned()),
        "the first stays a whole word"
    );
    assert_eq!(words(&["b", "a", "b", "c"]), Some("\"a\" \"b\" \"c\"*".to_owned()));
    for bad in ["apple*", "field:x", "\"", "(and", "a b", "", "NOT"] {
        let expected = (bad == "NOT").then(|| "\"not\"*".to_owned());
        assert_eq!(words(&[bad]), expected, "{bad:?}");
    }
    assert_eq!(words(&[]), None);
}

/// Events as another store stored them: `owner`'s, with seqs from `first`.
fn stored(owner: &UserId, first: u64, events: Vec<NewEvent>) -> Vec<rookery_domain::StoredEvent> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| event.stored(owner, Seq(first + i as u64)))
        .collect()
}

fn remembered(owner: &UserId, key: &str) -> IdempotencyWrite {
    IdempotencyWrite {
        owner: owner.clone(),
        record: IdempotencyRecord {
            key: key.into(),
            fingerprint: format!("f-{key}"),
            outcome: json!({"status": 201}),
            recorded_at: Timestamp::from_millis(50),
        },
        expired_before: Timestamp::from_millis(0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_keeps_every_event_as_stored_and_every_record_in_commit_order() -> Outcome {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rookery.sqlite3");
    let (alice, bob) = (user("alice"), user("bob"));
    let k = key("notes", "n1");
    let first = stored(
        &alice,
        1,
        vec![put(&k, 1, json!({"t": "Passport"})), message(&alice, "hi")],
    );
    let second = stored(&bob, 1, vec![message(&bob, "yo")]);
    let third = stored(&alice, 3, vec![put(&k, 2, json!({"t": "Charger"}))]);
    let records = vec![
        Ok::<_, String>(ImportRecord::Append {
            owner: alice.clone(),
            events: first.clone(),
            idempotency: Some(remembered(&alice, "put-1")),
        }),
        Ok(ImportRecord::Append {
            owner: bob.clone(),
            events: second.clone(),
            idempotency: None,
        }),
        Ok(ImportRecord::Remember(remembered(&bob, "push:m1:phone"))),
        Ok(ImportRecord::Append {
            owner: alice.clone(),
            events: third.clone(),
            idempotency: None,
        }),
    ];
    let report = SqliteStore::import(&file, records)?;
    assert_eq!((report.records, report.events), (4, 4));

    let store = SqliteStore::open(&file)?;
    let (changes, position) = store.changes_after(0, 100).await?;
    assert_eq!(changes, [first, second, third].concat(), "as stored, in commit order");
    assert_eq!((position, store.commit_position()), (4, 4));
    assert_eq!(store.last_seq(&alice).await?, Seq(3));
    let head = store.item_head(&alice, &k).await?;
    assert_eq!(head.version, Version(2));
    assert_eq!(store.read_messages(&bob, Seq(0), 10).await?.len(), 1);
    assert_eq!(
        store.idempotency(&alice, "put-1").await?.map(|r| r.fingerprint),
        Some("f-put-1".into())
    );
    assert!(store.idempotency(&bob, "push:m1:phone").await?.is_some());
    // The store goes on from the imported streams.
    let more = store.append(batch(&alice, 3, vec![message(&alice, "after")])).await?;
    assert_eq!(more.first().map(|e| e.seq), Some(Seq(4)));
    drop(store);

    let again = SqliteStore::import(&file, Vec::<Result<ImportRecord, String>>::new());
    assert!(
        matches!(again, Err(ImportError::NotEmpty { position: 5, .. })),
        "never into a database that holds events: {again:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_import_leaves_nothing_behind_and_can_run_again() -> Outcome {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rookery.sqlite3");
    let alice = user("alice");
    let good = ImportRecord::Append {
        owner: alice.clone(),
        events: stored(&alice, 1, vec![message(&alice, "one")]),
        idempotency: None,
    };
    let gap = ImportRecord::Append {
        owner: alice.clone(),
        events: stored(&alice, 3, vec![message(&alice, "three")]),
        idempotency: None,
    };
    let error = SqliteStore::import(&file, vec![Ok::<_, String>(good.clone()), Ok(gap)])
        .err()
        .ok_or("a gap in a stream must be refused")?;
    assert!(matches!(error, ImportError::Invalid { record: 1, .. }), "{error}");
    let error = SqliteStore::import(&file, vec![Ok(good.clone()), Err("torn".to_owned())])
        .err()
        .ok_or("a failing source must fail the import")?;
    assert!(matches!(error, ImportError::Source { record: 1, .. }), "{error}");
    assert_eq!(SqliteStore::open(&file)?.commit_position(), 0, "nothing stayed");

    let report = SqliteStore::import(&file, vec![Ok::<_, String>(good)])?;
    assert_eq!(report.events, 1);
    assert_eq!(SqliteStore::open(&file)?.last_seq(&alice).await?, Seq(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writers_run_is_a_consistent_database() -> Outcome {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rookery.sqlite3");
    let copy = dir.path().join("backups").join("copy.sqlite3");
    std::fs::create_dir_all(dir.path().join("backups"))?;
    let store = SqliteStore::open(&file)?;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let owner = user(&format!("writer-{w}"));
                for n in 0..150u64 {
                    store
                        .append(batch(&owner, 2 * n, vec![message(&owner, "x"), message(&owner, "y")]))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    // Back up several times while the writers run; each copy is a consistent snapshot.
    for _ in 0..3 {
        let (from, to) = (file.clone(), copy.clone());
        let report = tokio::task::spawn_blocking(move || backup(&from, &to)).await??;
        let copied = SqliteStore::open(&copy)?;
        let (events, position) = copied.changes_after(0, 100_000).await?;
        assert_eq!((events.len() as u64, position), (report.events, report.position));
        let mut heads = 0;
        for owner in copied.owners(None, 100).await? {
            let last = copied.last_seq(&owner).await?;
            assert_eq!(last.0 % 2, 0, "{owner}: never half an append");
            assert_eq!(copied.read_feed(&owner, Seq(0), 10_000).await?.len() as u64, last.0);
            heads += last.0;
        }
        assert_eq!(heads, report.events, "the heads and the log agree");
        assert!(report.bytes > 0);
        drop(copied);
    }
    for writer in writers {
        writer.await??;
    }
    let (from, to) = (file.clone(), copy.clone());
    let report = tokio::task::spawn_blocking(move || backup(&from, &to)).await??;
    assert_eq!(report.events, 1_200, "a copy after the writers holds everything");
    assert!(!dir.path().join("backups").join("copy.sqlite3.partial").exists());

    assert!(matches!(backup(&file, &file), Err(BackupError::SameFile(_))));
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a database, ".repeat(100))?;
    let refused = backup(&text, &dir.path().join("x.sqlite3"));
    assert!(
        matches!(refused, Err(BackupError::Source(OpenError::NotADatabase { .. }))),
        "{refused:?}"
    );
    let missing = backup(&dir.path().join("missing.sqlite3"), &dir.path().join("y.sqlite3"));
    assert!(missing.is_err(), "a missing database is not created by a backup");
    assert!(!dir.path().join("missing.sqlite3").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_compares_the_new_index_with_the_one_set_aside() -> Outcome {
    let dir = tempfile::tempdir()?;
    let index = SqliteStore::open(dir.path().join("db"))?.search_index();
    let kept = item("alice", "kept", 2, json!({"t": "Passport"}));
    let gone = item("alice", "gone", 1, json!({"t": "ghost"}));
    let changes = [
        IndexChange::Upsert(search_document(&kept)),
        IndexChange::Upsert(search_document(&gone)),
        IndexChange::Delete {
            owner: user("alice"),
            key: gone.key(),
            version: Version(2),
        },
    ];
    index.apply(&changes).await?;
    index.begin_rebuild().await?;
    assert_eq!(index.query(&query("alice", &["passport"])).await?.found, 0, "emptied");
    index.apply(&changes).await?;
    let same = index.finish_rebuild().await?;
    assert_eq!((same.entries, same.before, same.differences), (2, 2, 0));
    assert_eq!(index.query(&query("alice", &["passport"])).await?.found, 1);

    index.begin_rebuild().await?;
    index.apply(&changes[..1]).await?;
    let other = index.finish_rebuild().await?;
    assert_eq!(
        (other.entries, other.before, other.differences),
        (1, 2, 1),
        "the tombstone is missing"
    );

    index.begin_rebuild().await?;
    let newer = item("alice", "kept", 3, json!({"t": "Passport"}));
    index
        .apply(&[IndexChange::Upsert(search_document(&newer)), changes[2].clone()])
        .await?;
    let moved = index.finish_rebuild().await?;
    assert_eq!(
        (moved.entries, moved.before, moved.differences),
        (2, 1, 2),
        "a document at another version counts once, as does the tombstone only the rebuild has"
    );
    assert!(index.finish_rebuild().await.is_err(), "nothing is set aside any more");
    Ok(())
}
