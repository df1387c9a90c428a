//! Reliability properties of the use cases, over the memory adapters, with random schedules and injected faults
//! (and the indexer's convergence once more through the OpenSearch adapter and its stand-in).
//!
//! Each property runs 256 random cases. A case builds a current-thread tokio runtime and fresh adapters
//! with a manual clock and sequential ids, so a failing case is reproducible from its seed alone.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rookery_adapters_aws::OpenSearchService;
use rookery_adapters_aws::cloudsearch::document_id;
use rookery_adapters_memory::{
    FailMode, FaultTarget, Faults, Faulty, ManualClock, MemoryEventStore, MemoryPushGateway, MemorySearchIndex,
};
use rookery_domain::history::{item_after, replay};
use rookery_domain::projection::{FeedChange, history_event};
use rookery_domain::{
    EventPayload, Item, ItemKey, Platform, Precondition, Seq, StoredEvent, UserId, Version, Visibility,
};
use rookery_ports::service::Page;
use rookery_ports::{
    AppError, Caller, EventStore, Indexer, MediaStore, PushGateway, PushOutcome, Scope, SearchIndex, SearchQuery,
};
use rookery_tests::aws::opensearch_index;
use rookery_tests::fixtures::{BoxError, device, key, object, user};
use rookery_tests::memory::{MemoryBackend, RecordingGateway, TestBackend, app_with, memory_app, memory_media};
use serde_json::{Value, json};

/// Runs one case's async body on a fresh current-thread runtime.
fn run(body: impl Future<Output = Result<(), BoxError>>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(format!("runtime: {e}")))?;
    runtime.block_on(body).map_err(|e| TestCaseError::fail(e.to_string()))
}

const WORDS: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];

/// An item command, as a client would send it.
#[derive(Debug, Clone)]
enum Op {
    /// `PUT` with a document made of one word, and a visibility when `Some`.
    Put { word: usize, public: Option<bool> },
    /// `PATCH` setting (or, with `None`, removing) the `w` member, and a visibility when `Some`.
    Patch { word: Option<usize>, public: Option<bool> },
    /// `DELETE`.
    Delete,
    /// `POST .../restore` to a version that may or may not exist.
    Restore { version: u64 },
}

/// The precondition a client sends with a command.
#[derive(Debug, Clone, Copy)]
enum Pre {
    None,
    /// `If-Match` with the version the item is at now (the precondition a careful client sends).
    IfMatchCurrent,
    /// `If-Match` with some version, usually wrong.
    IfMatch(u64),
    IfAbsent,
}

fn op() -> impl Strategy<Value = Op> {
    let public = proptest::option::of(any::<bool>());
    prop_oneof![
        4 => (0..WORDS.len(), public.clone()).prop_map(|(word, public)| Op::Put { word, public }),
        3 => (proptest::option::of(0..WORDS.len()), public).prop_map(|(word, public)| Op::Patch { word, public }),
        2 => Just(Op::Delete),
        2 => (0u64..8).prop_map(|version| Op::Restore { version }),
    ]
}

fn pre() -> impl Strategy<Value = Pre> {
    prop_oneof![
        3 => Just(Pre::None),
        3 => Just(Pre::IfMatchCurrent),
        1 => (0u64..6).prop_map(Pre::IfMatch),
        1 => Just(Pre::IfAbsent),
    ]
}

/// What a successful command acknowledged.
#[derive(Debug, Clone, PartialEq)]
enum Acked {
    /// The item after the write.
    Item(Item),
    /// A delete.
    Deleted,
}

/// The document a `PUT` of `word` writes: the word at the top and nested, and a word unique to the item.
fn document(key: &ItemKey, owner: &UserId, word: usize) -> serde_json::Map<String, Value> {
    object(json!({
        "w": WORDS[word],
        "nested": {"list": [WORDS[word], {"deep": format!("{} tag", WORDS[(word + 1) % WORDS.len()])}]},
        "tag": format!("u{owner}x{}", key.id).replace(['-', '.', ':', '_'], ""),
    }))
}

/// Sends one command through the application service, as `caller`, on `caller`'s item `key`.
async fn command<S: EventStore, P: PushGateway, M: MediaStore>(
    app: &TestBackend<S, P, M>,
    caller: &Caller,
    key: &ItemKey,
    op: &Op,
    pre: Pre,
) -> Result<Acked, AppError> {
    let precondition = match pre {
        Pre::None => Precondition::None,
        Pre::IfAbsent => Precondition::IfAbsent,
        Pre::IfMatch(v) => Precondition::IfMatch(Version(v)),
        Pre::IfMatchCurrent => {
            let head = app
                .store()
                .item_head(&caller.user, key)
                .await
                .map_err(|e| AppError::Unavailable(e.into()))?;
            Precondition::IfMatch(head.version)
        }
    };
    let visibility = |public: Option<bool>| public.map(|p| if p { Visibility::Public } else { Visibility::Private });
    match op {
        Op::Put { word, public } => app
            .items
            .put_item(
                caller,
                key,
                document(key, &caller.user, *word),
                visibility(*public),
                precondition,
                None,
            )
            .await
            .map(|written| Acked::Item(written.item)),
        Op::Patch { word, public } => {
            let mut patch = json!({"data": {"w": word.map(|w| WORDS[w])}});
            if let Some(visibility) = visibility(*public) {
                patch["visibility"] = json!(visibility);
            }
            app.items
                .patch_item(caller, key, patch, precondition, None)
                .await
                .map(Acked::Item)
        }
        Op::Delete => app
            .items
            .delete_item(caller, key, precondition, None)
            .await
            .map(|_| Acked::Deleted),
        Op::Restore { version } => app
            .items
            .restore_item(caller, key, Version(*version), precondition, None)
            .await
            .map(Acked::Item),
    }
}

/// Every event of `owner`'s stream, oldest first.
async fn whole_feed<S: EventStore>(store: &S, owner: &UserId) -> Result<Vec<StoredEvent>, BoxError> {
    let mut all: Vec<StoredEvent> = Vec::new();
    loop {
        let after = all.last().map_or(Seq(0), |e| e.seq);
        let page = store.read_feed(owner, after, 100).await?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

/// Every entry of a paged listing, following `next_cursor` to the end.
async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, BoxError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, AppError>>,
{
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let Page { entries, next_cursor } = page(cursor).await?;
        all.extend(entries);
        match next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
    Err("a listing never reached its last page".into())
}

// (a) Replaying an item's history reproduces its state, current and past.

async fn replaying_history_reproduces_state_case(commands: Vec<(usize, Op, Pre)>, page: u64) -> Result<(), BoxError> {
    let app = memory_app();
    let alice = Caller::new(user("alice")?);
    let keys = [key("notes", "a")?, key("notes", "b")?, key("todos", "a")?];
    let mut acked: BTreeMap<ItemKey, Vec<Acked>> = BTreeMap::new();
    for (i, (which, op, pre)) in commands.iter().enumerate() {
        let k = &keys[*which];
        app.clock().advance(std::time::Duration::from_millis(1 + i as u64 % 3));
        match command(&app, &alice, k, op, *pre).await {
            Ok(ack) => acked.entry(k.clone()).or_default().push(ack),
            Err(AppError::NotFound | AppError::Conflict { .. } | AppError::Invalid(_)) => {}
            Err(other) => return Err(format!("command {op:?} {pre:?} failed: {other}").into()),
        }
    }
    for k in &keys {
        let history = app.store().item_history(&alice.user, k, Version::NONE, 10_000).await?;
        let head = app.store().item_head(&alice.user, k).await?;
        assert_eq!(
            replay(&alice.user, &history),
            head,
            "{k}: folding the history gives the head"
        );
        let acks = acked.remove(k).unwrap_or_default();
        assert_eq!(history.len(), acks.len(), "{k}: one event per acknowledged command");
        for (n, (event, ack)) in history.iter().zip(&acks).enumerate() {
            let change = event.payload.as_item().ok_or("an item event")?;
            assert_eq!(
                change.version,
                Version(n as u64 + 1),
                "{k}: versions count 1, 2, 3, ..."
            );
            let after = item_after(event);
            match ack {
                Acked::Item(item) => assert_eq!(
                    Some(item),
                    after.as_ref(),
                    "{k}: the answer is the item after its event"
                ),
                Acked::Deleted => assert_eq!(after, None, "{k}: a delete leaves no item"),
            }
            let at_version = app.items.get_item(&alice, k, Some(change.version)).await;
            match after {
                Some(item) => assert_eq!(at_version, Ok(item), "{k}: GET ?version={}", change.version),
                None => assert_eq!(at_version, Err(AppError::NotFound), "{k}: GET ?version= of a delete"),
            }
        }
        let beyond = Version(history.len() as u64 + 1);
        assert_eq!(
            app.items.get_item(&alice, k, Some(beyond)).await,
            Err(AppError::NotFound),
            "{k}: out of range"
        );
        assert_eq!(
            app.items.get_item(&alice, k, Some(Version::NONE)).await,
            Err(AppError::NotFound)
        );
        match head.item {
            Some(item) => assert_eq!(app.items.get_item(&alice, k, None).await, Ok(item)),
            None => assert_eq!(app.items.get_item(&alice, k, None).await, Err(AppError::NotFound)),
        }
        if !history.is_empty() {
            let pages = all_pages(|cursor| {
                let (app, alice, k) = (&app, &alice, k);
                async move { app.items.history(alice, k, Some(page), cursor.as_deref()).await }
            })
            .await?;
            let expected: Vec<_> = history.iter().filter_map(history_event).collect();
            assert_eq!(pages, expected, "{k}: the history route pages through every event");
        }
    }
    Ok(())
}

// (b) Concurrent writers under If-Match never lose an acknowledged update.

/// The tokens in an item's `tokens` list.
fn tokens(item: &Item) -> Vec<String> {
    item.data
        .get("tokens")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

async fn yield_times(n: u8) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// What one writer saw: tokens it was told were written, and tokens it found written after a lost answer.
#[derive(Debug, Default)]
struct WriterLog {
    acked: Vec<String>,
    recovered: Vec<String>,
}

#[derive(Debug, Clone)]
struct Contention {
    writers: usize,
    updates: usize,
    yields: Vec<u8>,
    share: f64,
    seed: u64,
    lost_acks: bool,
    reads_fail_too: bool,
}

fn contention() -> impl Strategy<Value = Contention> {
    (
        2usize..=4,
        1usize..=4,
        proptest::collection::vec(0u8..3, 16),
        prop_oneof![2 => Just(0.0), 3 => 0.0f64..0.35],
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(writers, updates, yields, share, seed, lost_acks, reads_fail_too)| Contention {
                writers,
                updates,
                yields,
                share,
                seed,
                lost_acks,
                reads_fail_too,
            },
        )
}

async fn concurrent_writers_never_lose_an_acknowledged_update_case(c: Contention) -> Result<(), BoxError> {
    let faults = Faults::new();
    let store = Faulty::new(MemoryEventStore::in_memory(), faults.clone());
    let app = app_with(store, MemoryPushGateway::new(), memory_media());
    let owner = Caller::new(user("alice")?);
    let k = key("lists", "shared")?;
    app.items
        .put_item(
            &owner,
            &k,
            object(json!({"tokens": []})),
            None,
            Precondition::IfAbsent,
            None,
        )
        .await?;

    faults.target(if c.reads_fail_too {
        FaultTarget::All
    } else {
        FaultTarget::Writes
    });
    faults.mode(if c.lost_acks {
        FailMode::AfterCommit
    } else {
        FailMode::BeforeCall
    });
    faults.fail_share(c.share, c.seed);

    let mut tasks = Vec::new();
    for w in 0..c.writers {
        let (app, owner, k, yields, updates) = (app.clone(), owner.clone(), k.clone(), c.yields.clone(), c.updates);
        tasks.push(tokio::spawn(async move {
            let mut log = WriterLog::default();
            let mut step = w * 5;
            for u in 0..updates {
                let token = format!("w{w}u{u}");
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    if attempts > 2_000 {
                        return Err(format!("writer {w} never got {token} through"));
                    }
                    step += 1;
                    let item = match app.items.get_item(&owner, &k, None).await {
                        Ok(item) => item,
                        Err(AppError::Unavailable(_)) => continue,
                        Err(other) => return Err(format!("writer {w} read: {other}")),
                    };
                    let mut list = tokens(&item);
                    if list.contains(&token) {
                        // An earlier attempt was written although its answer was lost.
                        log.recovered.push(token);
                        break;
                    }
                    list.push(token.clone());
                    // Let the other writers read the same version before this one writes.
                    yield_times(yields[step % yields.len()]).await;
                    let data = object(json!({ "tokens": list }));
                    match app
                        .items
                        .put_item(&owner, &k, data, None, Precondition::IfMatch(item.version), None)
                        .await
                    {
                        Ok(_) => {
                            log.acked.push(token);
                            break;
                        }
                        Err(AppError::Conflict { .. } | AppError::Unavailable(_)) => {}
                        Err(other) => return Err(format!("writer {w} write: {other}")),
                    }
                }
            }
            Ok(log)
        }));
    }
    let mut acked = BTreeSet::new();
    let mut recovered = BTreeSet::new();
    for task in tasks {
        let log = task.await??;
        acked.extend(log.acked);
        recovered.extend(log.recovered);
    }
    faults.heal();

    let item = app.items.get_item(&owner, &k, None).await?;
    let list = tokens(&item);
    let written: BTreeSet<String> = list.iter().cloned().collect();
    assert_eq!(written.len(), list.len(), "no token written twice: {list:?}");
    assert!(
        acked.is_subset(&written),
        "every acknowledged token is present: {acked:?} in {list:?}"
    );
    let accounted: BTreeSet<String> = acked.union(&recovered).cloned().collect();
    assert_eq!(
        written, accounted,
        "every token present was acknowledged or found after a lost answer"
    );
    assert_eq!(item.version, Version(1 + list.len() as u64), "one version per update");
    if !c.lost_acks {
        assert!(
            recovered.is_empty(),
            "without lost answers nothing is written unacknowledged"
        );
        assert_eq!(
            item.version,
            Version(1 + acked.len() as u64),
            "version = 1 + acknowledged updates"
        );
    }
    // Each version adds exactly one token to the one before: no update overwrote another.
    let history = app
        .store()
        .inner()
        .item_history(&owner.user, &k, Version::NONE, 10_000)
        .await?;
    let (created, updates) = history.split_first().ok_or("the item was created")?;
    let mut previous = tokens(&item_after(created).ok_or("created with data")?);
    assert!(previous.is_empty());
    for event in updates {
        let after = item_after(event).ok_or("no deletes here")?;
        let now = tokens(&after);
        assert_eq!(
            now.len(),
            previous.len() + 1,
            "version {} added one token: {now:?}",
            after.version
        );
        assert_eq!(
            now[..previous.len()],
            previous[..],
            "version {} kept every earlier token",
            after.version
        );
        previous = now;
    }
    Ok(())
}

// (c) The indexer converges whatever the delivery schedule, and deleted items stay deleted.

#[derive(Debug, Clone)]
struct Deliveries {
    order: Vec<u32>,
    duplicates: Vec<(usize, usize)>,
    batch_sizes: Vec<usize>,
    share: f64,
    seed: u64,
    lost_acks: bool,
}

fn deliveries() -> impl Strategy<Value = Deliveries> {
    (
        proptest::collection::vec(any::<u32>(), 64),
        proptest::collection::vec((any::<usize>(), any::<usize>()), 0..12),
        proptest::collection::vec(1usize..8, 1..6),
        prop_oneof![1 => Just(0.0), 3 => 0.0f64..0.5],
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(order, duplicates, batch_sizes, share, seed, lost_acks)| Deliveries {
            order,
            duplicates,
            batch_sizes,
            share,
            seed,
            lost_acks,
        })
}

/// Delivers `events` to `handle` in batches, redelivering from the failed record until each batch is through.
async fn deliver<F, Fut>(events: &[StoredEvent], sizes: &[usize], mut handle: F) -> Result<(), BoxError>
where
    F: FnMut(Vec<StoredEvent>) -> Fut,
    Fut: Future<Output = Result<(), rookery_ports::BatchFailure>>,
{
    let mut start = 0;
    let mut b = 0;
    while start < events.len() {
        let end = (start + sizes[b % sizes.len()]).min(events.len());
        b += 1;
        let batch = &events[start..end];
        let mut from = 0;
        let mut attempts = 0;
        while from < batch.len() {
            attempts += 1;
            if attempts > 1_000 {
                return Err("a batch never got through".into());
            }
            match handle(batch[from..].to_vec()).await {
                Ok(()) => from = batch.len(),
                Err(failure) => {
                    assert!(failure.index < batch.len() - from, "the failed record is in the batch");
                    assert!(
                        failure.failure.is_retryable(),
                        "injected failures are retryable: {failure}"
                    );
                    from += failure.index;
                }
            }
        }
        start = end;
    }
    Ok(())
}

/// A random history of item commands by two users on three keys, and its whole log.
async fn commanded_log(
    commands: &[(usize, usize, Op, Pre)],
) -> Result<(MemoryBackend, [Caller; 2], [ItemKey; 3], Vec<StoredEvent>), BoxError> {
    let app = memory_app();
    let users = [Caller::new(user("alice")?), Caller::new(user("bob")?)];
    let keys = [key("notes", "a")?, key("notes", "b")?, key("todos", "c")?];
    for (who, which, op, pre) in commands {
        match command(&app, &users[*who], &keys[*which], op, *pre).await {
            Ok(_) | Err(AppError::NotFound | AppError::Conflict { .. } | AppError::Invalid(_)) => {}
            Err(other) => return Err(other.into()),
        }
    }
    let mut log = Vec::new();
    for caller in &users {
        log.extend(whole_feed(app.store(), &caller.user).await?);
    }
    Ok((app, users, keys, log))
}

/// A schedule: the log permuted, with some events delivered again at random places.
fn scheduled(log: &[StoredEvent], d: &Deliveries) -> Vec<StoredEvent> {
    let mut schedule: Vec<(u32, usize)> = (0..log.len()).map(|i| (d.order[i % d.order.len()], i)).collect();
    schedule.sort();
    let mut deliveries: Vec<StoredEvent> = schedule.into_iter().map(|(_, i)| log[i].clone()).collect();
    if !log.is_empty() {
        for (at, which) in &d.duplicates {
            let position = at % (deliveries.len() + 1);
            deliveries.insert(position, log[which % log.len()].clone());
        }
    }
    deliveries
}

/// No deleted item is found by `index`; every live one is, at its current version.
async fn search_agrees_with_the_heads<I: SearchIndex>(
    app: &MemoryBackend,
    users: &[Caller],
    keys: &[ItemKey],
    index: &I,
) -> Result<(), BoxError> {
    for caller in users {
        for k in keys {
            let head = app.store().item_head(&caller.user, k).await?;
            let tag = format!("u{}x{}", caller.user, k.id).replace(['-', '.', ':', '_'], "");
            let query = SearchQuery {
                caller: caller.user.clone(),
                words: vec![tag.to_lowercase()],
                collection: Some(k.collection.clone()),
                scope: Scope::Mine,
                limit: 100,
                cursor: None,
            };
            let page = index.query(&query).await?;
            let found: Vec<&Item> = page.hits.iter().map(|h| &h.item).filter(|i| i.key() == *k).collect();
            match &head.item {
                None => assert!(
                    found.is_empty(),
                    "{k} of {} is deleted or absent and never found",
                    caller.user
                ),
                Some(item) if item.data.contains_key("tag") => {
                    assert_eq!(found, vec![item], "{k} of {} is found as it is now", caller.user);
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

async fn indexer_converges_under_any_delivery_schedule_case(
    commands: Vec<(usize, usize, Op, Pre)>,
    d: Deliveries,
) -> Result<(), BoxError> {
    let (app, users, keys, log) = commanded_log(&commands).await?;
    let reference = MemorySearchIndex::new();
    Indexer::new(reference.clone()).handle(&log).await?;
    let deliveries = scheduled(&log, &d);

    let faults = Faults::new();
    faults.mode(if d.lost_acks {
        FailMode::AfterCommit
    } else {
        FailMode::BeforeCall
    });
    faults.fail_share(d.share, d.seed);
    let index = Faulty::new(MemorySearchIndex::new(), faults);
    let indexer = Indexer::new(index.clone());
    deliver(&deliveries, &d.batch_sizes, |batch| {
        let indexer = indexer.clone();
        async move { indexer.handle(&batch).await }
    })
    .await?;

    assert_eq!(
        index.inner().snapshot()?,
        reference.snapshot()?,
        "the same index as in-order delivery"
    );
    search_agrees_with_the_heads(&app, &users, &keys, index.inner()).await
}

/// The same property through the OpenSearch adapter and its stand-in (a domain or a Serverless collection),
/// with the faults injected by the stand-in: `_bulk` items refused with `429`, and, for lost
/// acknowledgements, whole `_bulk` requests applied but answered `502`.
async fn indexer_converges_on_opensearch_case(
    commands: Vec<(usize, usize, Op, Pre)>,
    d: Deliveries,
    service: OpenSearchService,
) -> Result<(), BoxError> {
    let (app, users, keys, log) = commanded_log(&commands).await?;
    let reference = MemorySearchIndex::new();
    Indexer::new(reference.clone()).handle(&log).await?;
    let deliveries = scheduled(&log, &d);

    let (fake, index) = opensearch_index(service).await?;
    let lost = if d.lost_acks { d.share } else { 0.0 };
    fake.inject_faults(d.share, lost, d.seed);
    let indexer = Indexer::new(index.clone());
    deliver(&deliveries, &d.batch_sizes, |batch| {
        let indexer = indexer.clone();
        async move { indexer.handle(&batch).await }
    })
    .await?;
    fake.heal();

    // Document by document, the stand-in holds what in-order delivery gives, tombstones included.
    let mut expected = BTreeMap::new();
    for entry in reference.snapshot()? {
        expected.insert(document_id(&entry.owner, &entry.key), (entry.version.0, entry.item));
    }
    let mut held = BTreeMap::new();
    for doc in fake.documents(index.alias()) {
        let item: Option<Item> = doc
            .source
            .get("item")
            .cloned()
            .map(serde_json::from_value)
            .transpose()?;
        held.insert(doc.id, (doc.source["version"].as_u64().unwrap_or(0), item));
    }
    assert_eq!(held, expected, "{service:?}: the same documents as in-order delivery");
    search_agrees_with_the_heads(&app, &users, &keys, &index).await
}

// (d) Following the feed yields every committed change exactly once, in commit order.

#[derive(Debug, Clone)]
enum FeedOp {
    Write { device: usize, item: usize, op: Op },
    Message { text: usize },
    Register { device: usize, token: usize },
    Sync { device: usize, limit: Option<u64> },
}

fn feed_op() -> impl Strategy<Value = FeedOp> {
    prop_oneof![
        5 => (0usize..3, 0usize..4, op()).prop_map(|(device, item, op)| FeedOp::Write { device, item, op }),
        2 => (0usize..WORDS.len()).prop_map(|text| FeedOp::Message { text }),
        1 => (0usize..3, 0usize..3).prop_map(|(device, token)| FeedOp::Register { device, token }),
        4 => (0usize..3, proptest::option::of(1u64..10)).prop_map(|(device, limit)| FeedOp::Sync { device, limit }),
    ]
}

/// A committed change as the writer saw it acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Committed {
    Item { key: ItemKey, version: Version },
    Message { id: String },
    Device { id: String },
    Media { id: String },
}

fn committed(change: &FeedChange) -> Committed {
    match change {
        FeedChange::Item(event) => Committed::Item {
            key: ItemKey::new(event.collection.clone(), event.id.clone()),
            version: event.version,
        },
        FeedChange::Message(event) => Committed::Message {
            id: event.message.id.to_string(),
        },
        FeedChange::Device(event) => Committed::Device {
            id: event.device.device_id.to_string(),
        },
        FeedChange::Media(event) => Committed::Media {
            id: event.media.id.to_string(),
        },
    }
}

fn change_seq(change: &FeedChange) -> Seq {
    change.seq()
}

/// One device following the feed: its cursor and everything it has read.
#[derive(Debug, Default)]
struct Follower {
    cursor: Option<String>,
    read: Vec<FeedChange>,
}

impl Follower {
    /// Reads one page; returns whether more changes follow right away.
    async fn page<S: EventStore, P: PushGateway, M: MediaStore>(
        &mut self,
        app: &TestBackend<S, P, M>,
        caller: &Caller,
        limit: Option<u64>,
    ) -> Result<bool, BoxError> {
        let page = app.sync.sync(caller, self.cursor.as_deref(), limit).await?;
        if let Some(limit) = limit {
            assert!(
                page.changes.len() as u64 <= limit,
                "a page holds at most `limit` changes"
            );
        }
        self.read.extend(page.changes);
        self.cursor = Some(page.next_cursor);
        Ok(page.has_more)
    }
}

async fn following_the_feed_yields_every_change_once_in_order_case(ops: Vec<FeedOp>) -> Result<(), BoxError> {
    let app = memory_app();
    let alice = Caller::new(user("alice")?);
    let bob = Caller::new(user("bob")?);
    let keys = [
        key("notes", "a")?,
        key("notes", "b")?,
        key("todos", "a")?,
        key("todos", "z")?,
    ];
    let mut expected: Vec<Committed> = Vec::new();
    let mut followers: Vec<Follower> = (0..3).map(|_| Follower::default()).collect();
    for op in &ops {
        match op {
            FeedOp::Write { device, item, op } => {
                let k = &keys[*item];
                let writer = Caller {
                    request_id: Some(format!("device-{device}")),
                    ..alice.clone()
                };
                match command(&app, &writer, k, op, Pre::None).await {
                    Ok(_) => {
                        let version = app.store().item_head(&alice.user, k).await?.version;
                        expected.push(Committed::Item {
                            key: k.clone(),
                            version,
                        });
                    }
                    Err(AppError::NotFound | AppError::Conflict { .. } | AppError::Invalid(_)) => {}
                    Err(other) => return Err(other.into()),
                }
            }
            FeedOp::Message { text } => {
                let accepted = app
                    .messages
                    .send_message(&bob, alice.user.clone(), WORDS[*text].into(), Default::default(), None)
                    .await?;
                expected.push(Committed::Message {
                    id: accepted.id.to_string(),
                });
            }
            FeedOp::Register { device: d, token } => {
                // A registration that changes the device is an event, and so a change in the feed; the
                // same token again changes nothing.
                let before = app.store().last_seq(&alice.user).await?;
                let id = format!("d{d}");
                app.devices
                    .register_device(&alice, &device(&id)?, Platform::Fcm, &format!("tok{token}"), None)
                    .await?;
                if app.store().last_seq(&alice.user).await? > before {
                    expected.push(Committed::Device { id });
                }
            }
            FeedOp::Sync { device, limit } => {
                followers[*device].page(&app, &alice, *limit).await?;
            }
        }
    }
    for (d, follower) in followers.iter_mut().enumerate() {
        let mut pages = 0;
        while follower.page(&app, &alice, Some(7)).await? {
            pages += 1;
            if pages > 10_000 {
                return Err(format!("device {d} never caught up").into());
            }
        }
        // Caught up, a device polling again gets an empty page and its own cursor back.
        let sent = follower.cursor.clone();
        let page = app.sync.sync(&alice, sent.as_deref(), None).await?;
        assert!(page.changes.is_empty() && !page.has_more, "device {d}: nothing more");
        assert_eq!(
            Some(page.next_cursor),
            sent,
            "device {d}: an empty page hands back the cursor"
        );

        let seqs: Vec<Seq> = follower.read.iter().map(change_seq).collect();
        let consecutive: Vec<Seq> = (1..=seqs.len() as u64).map(Seq).collect();
        assert_eq!(
            seqs, consecutive,
            "device {d}: every seq from 1, in commit order, no gaps, no repeats"
        );
        let read: Vec<Committed> = follower.read.iter().map(committed).collect();
        assert_eq!(read, expected, "device {d}: exactly the committed changes, in order");
    }
    Ok(())
}

// (e) A failing push never loses a message, and pushes each one once per enabled device.

#[derive(Debug, Clone)]
struct PushPlan {
    /// Per device: its platform, and when its provider disables it (never, before any push, between phases).
    devices: Vec<(usize, Option<bool>)>,
    messages: usize,
    split: usize,
    batch_sizes: Vec<usize>,
    duplicates: Vec<usize>,
    share: f64,
    seed: u64,
    lost_acks: bool,
}

fn push_plan() -> impl Strategy<Value = PushPlan> {
    (
        proptest::collection::vec((0usize..3, proptest::option::weighted(0.4, any::<bool>())), 1..=4),
        1usize..=8,
        any::<usize>(),
        proptest::collection::vec(1usize..5, 1..4),
        proptest::collection::vec(any::<usize>(), 0..4),
        prop_oneof![1 => Just(0.0), 3 => 0.0f64..0.5],
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(devices, messages, split, batch_sizes, duplicates, share, seed, lost_acks)| PushPlan {
                devices,
                split: split % (messages + 1),
                messages,
                batch_sizes,
                duplicates,
                share,
                seed,
                lost_acks,
            },
        )
}

const PLATFORMS: [Platform; 3] = [Platform::Apns, Platform::ApnsSandbox, Platform::Fcm];

async fn a_failing_push_never_loses_a_message_case(plan: PushPlan) -> Result<(), BoxError> {
    let faults = Faults::new();
    let provider = MemoryPushGateway::with_clock(ManualClock::default());
    let push = RecordingGateway::new(Faulty::new(provider.clone(), faults.clone()));
    let app = app_with(MemoryEventStore::in_memory(), push.clone(), memory_media());
    let (alice, bob) = (Caller::new(user("alice")?), Caller::new(user("bob")?));

    for (d, (platform, _)) in plan.devices.iter().enumerate() {
        let id = device(&format!("dev{d}"))?;
        app.devices
            .register_device(&bob, &id, PLATFORMS[*platform], &format!("token-{d}"), None)
            .await?;
    }
    let registry = app.store().devices(&bob.user).await?;
    let endpoint = |d: usize| -> Result<String, BoxError> {
        let id = device(&format!("dev{d}"))?;
        Ok(registry.get(&id).ok_or("registered")?.endpoint.clone())
    };
    let mut accepted = Vec::new();
    for m in 0..plan.messages {
        let sent = app
            .messages
            .send_message(
                &alice,
                bob.user.clone(),
                format!("message {m}"),
                Default::default(),
                None,
            )
            .await?;
        accepted.push(sent.id.to_string());
    }
    let log = whole_feed(app.store(), &bob.user).await?;
    // Phase one ends right after the `split`-th message.
    let cut = log
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.payload, EventPayload::MessageReceived(_)))
        .nth(plan.split.wrapping_sub(1))
        .map_or(if plan.split == 0 { 0 } else { log.len() }, |(i, _)| i + 1);
    let (first, second) = log.split_at(cut);

    for (d, (_, disabled)) in plan.devices.iter().enumerate() {
        if *disabled == Some(false) {
            assert_eq!(provider.disable_endpoint(&endpoint(d)?), Ok(true));
        }
    }
    faults.target(FaultTarget::Writes);
    faults.mode(if plan.lost_acks {
        FailMode::AfterCommit
    } else {
        FailMode::BeforeCall
    });
    faults.fail_share(plan.share, plan.seed);
    let dispatcher = app.dispatcher();
    let handle = |batch: Vec<StoredEvent>| {
        let dispatcher = dispatcher.clone();
        async move { dispatcher.handle(&batch).await }
    };
    // Each phase is delivered in batches, and then some of its batches again (the change log repeats).
    for (phase, events) in [first, second].into_iter().enumerate() {
        if phase == 1 {
            for (d, (_, disabled)) in plan.devices.iter().enumerate() {
                if *disabled == Some(true) {
                    assert_eq!(provider.disable_endpoint(&endpoint(d)?), Ok(true));
                }
            }
        }
        deliver(events, &plan.batch_sizes, handle).await?;
        for again in &plan.duplicates {
            if !events.is_empty() {
                let from = again % events.len();
                deliver(&events[from..], &plan.batch_sizes, handle).await?;
            }
        }
    }
    faults.heal();

    // Every message is in the inbox and the feed, in order.
    let inbox = all_pages(|cursor| {
        let (app, bob) = (&app, &bob);
        async move { app.messages.messages(bob, cursor.as_deref(), Some(3)).await }
    })
    .await?;
    assert_eq!(
        inbox.iter().map(|m| m.id.to_string()).collect::<Vec<_>>(),
        accepted,
        "the inbox holds every message"
    );
    let mut follower = Follower::default();
    while follower.page(&app, &bob, Some(5)).await? {}
    let in_feed: Vec<String> = follower
        .read
        .iter()
        .filter_map(|c| match c {
            FeedChange::Message(m) => Some(m.message.id.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(in_feed, accepted, "the feed holds every message");

    let delivered = provider.sent()?;
    let registry = app.store().devices(&bob.user).await?;
    let attempts = push.attempts();
    for (d, (_, disabled)) in plan.devices.iter().enumerate() {
        let ep = endpoint(d)?;
        let pushed_before_disable: &[String] = match disabled {
            None => &accepted,
            Some(false) => &[],
            Some(true) => &accepted[..plan.split],
        };
        for (m, id) in accepted.iter().enumerate() {
            let count = delivered
                .iter()
                .filter(|p| p.endpoint == ep && p.message_id().as_deref() == Some(id))
                .count();
            let expected = usize::from(pushed_before_disable.contains(id));
            if plan.lost_acks && expected == 1 {
                assert!(count >= 1, "device {d} got message {m} at least once");
            } else {
                assert_eq!(
                    count, expected,
                    "device {d} ({disabled:?}) got message {m} {expected} time(s)"
                );
            }
        }
        // Once the dispatcher heard the endpoint is disabled, it never tried it again.
        let tries: Vec<_> = attempts.iter().filter(|a| a.endpoint == ep).collect();
        if let Some(first) = tries
            .iter()
            .position(|a| a.outcome == Ok(PushOutcome::EndpointDisabled))
        {
            assert_eq!(
                first + 1,
                tries.len(),
                "device {d}: no push attempted after it was reported disabled"
            );
        }
        let enabled = registry.get(&device(&format!("dev{d}"))?).map(|dev| dev.enabled);
        let told = tries.iter().any(|a| a.outcome == Ok(PushOutcome::EndpointDisabled));
        assert_eq!(
            enabled,
            Some(!told),
            "device {d} is marked disabled exactly when the provider said so"
        );
        let messages_after_disable = match disabled {
            None => 0,
            Some(false) => accepted.len(),
            Some(true) => accepted.len() - plan.split,
        };
        if messages_after_disable > 0 {
            assert!(told, "device {d}: a push after the provider disabled it found out");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replaying_history_reproduces_state(
        commands in proptest::collection::vec((0usize..3, op(), pre()), 1..40),
        page in 1u64..6,
    ) {
        run(replaying_history_reproduces_state_case(commands, page))?;
    }

    #[test]
    fn concurrent_writers_never_lose_an_acknowledged_update(c in contention()) {
        run(concurrent_writers_never_lose_an_acknowledged_update_case(c))?;
    }

    #[test]
    fn indexer_converges_under_any_delivery_schedule(
        commands in proptest::collection::vec((0usize..2, 0usize..3, op(), pre()), 1..30),
        d in deliveries(),
    ) {
        run(indexer_converges_under_any_delivery_schedule_case(commands, d))?;
    }

    #[test]
    fn following_the_feed_yields_every_change_once_in_order(ops in proptest::collection::vec(feed_op(), 1..60)) {
        run(following_the_feed_yields_every_change_once_in_order_case(ops))?;
    }

    #[test]
    fn a_failing_push_never_loses_a_message(plan in push_plan()) {
        run(a_failing_push_never_loses_a_message_case(plan))?;
    }
}

proptest! {
    // Each case starts a stand-in and talks HTTP to it: fewer cases, the same generators.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn indexer_converges_on_opensearch_under_any_delivery_schedule(
        commands in proptest::collection::vec((0usize..2, 0usize..3, op(), pre()), 1..30),
        d in deliveries(),
        serverless in any::<bool>(),
    ) {
        let service = if serverless { OpenSearchService::Serverless } else { OpenSearchService::Domain };
        run(indexer_converges_on_opensearch_case(commands, d, service))?;
    }
}
