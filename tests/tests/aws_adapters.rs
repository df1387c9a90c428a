//! The AWS adapters against moto (DynamoDB, DynamoDB Streams, SNS, S3), a fake CloudSearch domain and an
//! OpenSearch stand-in (as a domain and as a Serverless collection): every port contract suite, plus what
//! only the AWS side has (pages over 1 MB, transaction limits, the stream poller, what SNS recorded,
//! bootstrap, query injection, OpenSearch's mappings, tombstones, bulk failures and signing), and
//! concurrent writes of one user through the services, which on DynamoDB wait for their turn on the
//! user's head.
//!
//! One moto server serves the whole binary (started on first use); each test uses its own table,
//! bucket and platform applications, so tests run in parallel without seeing each other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rookery_adapters_aws::OpenSearchService;
use rookery_adapters_aws::cloudsearch::document_id;
use rookery_adapters_aws::dynamo::Contention;
use rookery_adapters_aws::streams::HandlerFn;
use rookery_adapters_memory::MemorySearchIndex;
use rookery_domain::projection::search_document;
use rookery_domain::{EventPayload, NewEvent, Platform, Seq, StoredEvent, Version, Visibility};
use rookery_ports::{
    AppendBatch, AppendError, Backoff, BatchFailure, EventStore, Failure, Indexer, Scope, SearchIndex, SearchQuery,
};
use rookery_tests::aws::{
    CloudSearchFakes, DynamoStores, OpenSearchFakes, S3Stores, SnsGateways, cloudsearch_index, dynamo_store, moto,
    moto_contention, opensearch_index,
};
use rookery_tests::concurrency::{merge_patches_of_one_item_all_apply, writes_of_one_user_to_distinct_items_all_apply};
use rookery_tests::fixtures::{
    BoxError, Outcome, at, device, item_payload, key, media_object, message_payload, new_event, object, registered,
    user,
};
use rookery_tests::{event_store_contract, media_store_contract, push_gateway_contract, search_index_contract};
use serde_json::json;

event_store_contract!(dynamodb_event_store, DynamoStores::default());
event_store_contract!(
    dynamodb_event_store_in_small_pages,
    DynamoStores { page_limit: Some(10) }
);
rookery_tests::erasure_contract!(dynamodb_erasure, DynamoStores::default());
rookery_tests::erasure_contract!(dynamodb_erasure_in_small_pages, DynamoStores { page_limit: Some(10) });
push_gateway_contract!(sns_push_gateway, SnsGateways);
media_store_contract!(s3_media_store, S3Stores);
search_index_contract!(cloudsearch_search_index, CloudSearchFakes::default());
search_index_contract!(
    opensearch_domain_search_index,
    OpenSearchFakes::new(OpenSearchService::Domain)
);
search_index_contract!(
    opensearch_serverless_search_index,
    OpenSearchFakes::new(OpenSearchService::Serverless)
);

/// An item as the index receives it.
fn item(
    owner: &rookery_domain::UserId,
    key: &rookery_domain::ItemKey,
    version: u64,
    visibility: Visibility,
    data: serde_json::Value,
) -> rookery_domain::Item {
    rookery_domain::Item {
        owner: owner.clone(),
        collection: key.collection.clone(),
        id: key.id.clone(),
        version: Version(version),
        visibility,
        created_at: at(0),
        updated_at: at(0),
        data: object(data),
    }
}

/// A message event of about `size` bytes of text.
fn bulky_message(i: usize, size: usize) -> Result<NewEvent, BoxError> {
    let text = format!("{i:06} {}", "x".repeat(size));
    Ok(new_event(
        message_payload(&user("bob")?, &user("alice")?, &text, at(i as u64))?,
        at(i as u64),
    )?)
}

/// Appends `events` to alice's stream in batches of `per_batch`, returning what the store stored.
async fn append_all<S: EventStore>(
    store: &S,
    events: Vec<NewEvent>,
    per_batch: usize,
) -> Result<Vec<StoredEvent>, BoxError> {
    let alice = user("alice")?;
    let mut stored = Vec::new();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let batch: Vec<NewEvent> = events.by_ref().take(per_batch).collect();
        let expected_seq = Some(Seq(stored.len() as u64));
        stored.extend(
            store
                .append(AppendBatch {
                    owner: alice.clone(),
                    expected_seq,
                    item_versions: Vec::new(),
                    events: batch,
                    idempotency: None,
                })
                .await?,
        );
    }
    Ok(stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_one_megabyte_reads_back_whole_across_query_pages() -> Outcome {
    let (_, store) = dynamo_store().await?;
    // 300 events of about 6 KB: about 1.8 MB, so DynamoDB answers in at least two pages.
    let events = (0..300)
        .map(|i| bulky_message(i, 6_000))
        .collect::<Result<Vec<_>, _>>()?;
    let written = append_all(&store, events, 25).await?;
    let total: usize = written
        .iter()
        .map(|e| serde_json::to_string(e).map_or(0, |s| s.len()))
        .sum();
    assert!(total > 1_500_000, "the stream holds {total} bytes");

    let alice = user("alice")?;
    assert_eq!(
        store.read_feed(&alice, Seq(0), 10_000).await?,
        written,
        "every event, in order, in one call"
    );
    assert_eq!(
        store.read_messages(&alice, Seq(0), 10_000).await?,
        written,
        "messages read through the filter too"
    );
    assert_eq!(
        store.read_feed(&alice, Seq(10), 250).await?,
        written[10..260],
        "a limit across pages"
    );
    assert_eq!(store.read_messages(&alice, Seq(290), 100).await?, written[290..]);

    // Pages of 7 rows: every read follows LastEvaluatedKey dozens of times, filtered reads too.
    let paged = store.clone().with_page_limit(7);
    assert_eq!(paged.read_feed(&alice, Seq(0), 10_000).await?, written);
    assert_eq!(paged.read_feed(&alice, Seq(3), 100).await?, written[3..103]);
    assert_eq!(paged.read_messages(&alice, Seq(0), 10_000).await?, written);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_four_megabytes_is_refused_before_any_write() -> Outcome {
    let (_, store) = dynamo_store().await?;
    let alice = user("alice")?;
    // Twenty events of 250 KB: each row fits DynamoDB's 400 KB, the transaction does not fit 4 MB.
    let events = (0..20)
        .map(|i| bulky_message(i, 250 * 1024))
        .collect::<Result<Vec<_>, _>>()?;
    let result = store
        .append(AppendBatch {
            owner: alice.clone(),
            expected_seq: Some(Seq(0)),
            item_versions: Vec::new(),
            events,
            idempotency: None,
        })
        .await;
    assert!(
        matches!(&result, Err(AppendError::TooLarge(why)) if why.contains("4194304")),
        "{result:?}"
    );
    assert_eq!(store.last_seq(&alice).await?, Seq(0));
    assert_eq!(store.owners(None, 10).await?, Vec::new(), "nothing was written");

    // The same events in smaller transactions go through.
    let events = (0..20)
        .map(|i| bulky_message(i, 250 * 1024))
        .collect::<Result<Vec<_>, _>>()?;
    let written = append_all(&store, events, 5).await?;
    assert_eq!(written.len(), 20);
    assert_eq!(store.read_feed(&alice, Seq(0), 100).await?, written);
    Ok(())
}

/// A mixed stream: item changes (one deleted), messages, a device change, a media declaration, and an
/// append that carries an idempotency record; returns what the store stored.
async fn mixed_stream<S: EventStore>(store: &S) -> Result<Vec<StoredEvent>, BoxError> {
    let (alice, bob) = (user("alice")?, user("bob")?);
    let (k1, k2) = (key("notes", "n1")?, key("notes", "n2")?);
    let mut stored = Vec::new();
    let steps: Vec<(Vec<(rookery_domain::ItemKey, Version)>, EventPayload)> = vec![
        (
            vec![(k1.clone(), Version(0))],
            item_payload(
                &k1,
                Version(1),
                Some(object(json!({"t": "red apple"}))),
                Visibility::Public,
                true,
                at(0),
            ),
        ),
        (Vec::new(), message_payload(&bob, &alice, "hello", at(1))?),
        (
            vec![(k2.clone(), Version(0))],
            item_payload(
                &k2,
                Version(1),
                Some(object(json!({"t": "green pear"}))),
                Visibility::Private,
                true,
                at(2),
            ),
        ),
        (
            Vec::new(),
            registered(
                &device("phone")?,
                Platform::Fcm,
                "tok",
                "arn:aws:sns:us-east-1:1:endpoint/GCM/a/b",
            ),
        ),
        (
            vec![(k1.clone(), Version(1))],
            item_payload(&k1, Version(2), None, Visibility::Public, false, at(0)),
        ),
        (
            Vec::new(),
            EventPayload::MediaDeclared(media_object(&alice, "image/png", 10, at(5))?),
        ),
        (
            vec![(k2.clone(), Version(1))],
            item_payload(
                &k2,
                Version(2),
                Some(object(json!({"t": "ripe pear"}))),
                Visibility::Public,
                false,
                at(2),
            ),
        ),
    ];
    for (i, (item_versions, payload)) in steps.into_iter().enumerate() {
        let idempotency = (i == 1).then(|| rookery_ports::IdempotencyWrite {
            owner: bob.clone(),
            record: rookery_ports::IdempotencyRecord {
                key: "send-1".into(),
                fingerprint: "f".into(),
                outcome: json!({"id": "m1"}),
                recorded_at: at(1),
            },
            expired_before: at(0),
        });
        stored.extend(
            store
                .append(AppendBatch {
                    owner: alice.clone(),
                    expected_seq: Some(Seq(i as u64)),
                    item_versions,
                    events: vec![new_event(payload, at(i as u64))?],
                    idempotency,
                })
                .await?,
        );
    }
    Ok(stored)
}

/// A handler that records every batch it is given, and fails once at a chosen event.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<StoredEvent>>,
    fail_once_at_seq: Mutex<Option<u64>>,
}

impl Recorder {
    fn handle(&self, events: Vec<StoredEvent>) -> Result<(), BatchFailure> {
        let mut fail = self.fail_once_at_seq.lock().map_err(|_| BatchFailure {
            index: 0,
            failure: Failure::permanent("poisoned"),
        })?;
        let mut seen = self.seen.lock().map_err(|_| BatchFailure {
            index: 0,
            failure: Failure::permanent("poisoned"),
        })?;
        for (index, event) in events.into_iter().enumerate() {
            if *fail == Some(event.seq.0) {
                *fail = None;
                return Err(BatchFailure {
                    index,
                    failure: Failure::transient("injected failure"),
                });
            }
            seen.push(event);
        }
        Ok(())
    }

    fn seen(&self) -> Vec<StoredEvent> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_poller_decodes_exactly_the_stored_events_and_resumes_at_a_failure() -> Outcome {
    let (clients, store) = dynamo_store().await?;
    let stored = mixed_stream(&store).await?;
    assert_eq!(stored.len(), 7);

    let recorder = Arc::new(Recorder::default());
    *recorder.fail_once_at_seq.lock().map_err(|_| "poisoned")? = Some(4);
    let handler = {
        let recorder = recorder.clone();
        HandlerFn(move |events: Vec<StoredEvent>| {
            let recorder = recorder.clone();
            async move { recorder.handle(events) }
        })
    };
    let mut poller = clients.stream_poller().await?.with_page_limit(3);
    let first = poller.poll_once(&handler).await;
    assert!(
        matches!(&first, Err(rookery_adapters_aws::PollError::Stopped { stopped, .. }) if stopped.retryable),
        "{first:?}"
    );
    assert_eq!(
        recorder.seen(),
        stored[..3],
        "everything before the failed event was handled once"
    );

    // Polls until the stream is drained (each poll reads every shard to its current end).
    let mut handled = 3;
    for _ in 0..10 {
        handled += poller.poll_once(&handler).await?;
        if handled >= stored.len() {
            break;
        }
    }
    assert_eq!(
        recorder.seen(),
        stored,
        "the stream yields the stored events, each once, in seq order"
    );
    assert_eq!(poller.poll_once(&handler).await?, 0, "nothing new");

    // A later append shows up in the next poll.
    let alice = user("alice")?;
    let more = store
        .append(AppendBatch {
            owner: alice,
            expected_seq: Some(Seq(7)),
            item_versions: Vec::new(),
            events: vec![new_event(
                message_payload(&user("carol")?, &user("alice")?, "later", at(9))?,
                at(9),
            )?],
            idempotency: None,
        })
        .await?;
    assert_eq!(poller.poll_once(&handler).await?, 1);
    assert_eq!(recorder.seen().last(), more.last());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_runs_in_the_background_until_shut_down() -> Outcome {
    let (clients, store) = dynamo_store().await?;
    let recorder = Arc::new(Recorder::default());
    let handler = {
        let recorder = recorder.clone();
        HandlerFn(move |events: Vec<StoredEvent>| {
            let recorder = recorder.clone();
            async move { recorder.handle(events) }
        })
    };
    let mut poller = clients.stream_poller().await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        poller
            .run(&handler, std::time::Duration::from_millis(20), async {
                let _ = stopped.await;
            })
            .await;
    });
    let stored = mixed_stream(&store).await?;
    // Poll the recorder with a deadline: the background poller delivers on its own schedule.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while recorder.seen().len() < stored.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poller delivered {:?}",
            recorder.seen().len()
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(recorder.seen(), stored);
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(30), running).await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_drives_the_indexer_to_the_items_current_state() -> Outcome {
    let (clients, store) = dynamo_store().await?;
    mixed_stream(&store).await?;
    let index = MemorySearchIndex::new();
    let indexer = Indexer::new(index.clone());
    let mut poller = clients.stream_poller().await?;
    let mut handled = 0;
    for _ in 0..10 {
        handled += poller.poll_once(&indexer).await?;
        if handled >= 7 {
            break;
        }
    }
    let alice = user("alice")?;
    let search = |words: &[&str]| SearchQuery {
        caller: alice.clone(),
        words: words.iter().map(|w| (*w).to_owned()).collect(),
        collection: None,
        scope: Scope::Mine,
        limit: 10,
        cursor: None,
    };
    assert_eq!(
        index.query(&search(&["apple"])).await?.found,
        0,
        "the deleted item is not found"
    );
    let pears = index.query(&search(&["pear"])).await?;
    assert_eq!(
        pears
            .hits
            .iter()
            .map(|h| (h.item.id.as_str(), h.item.version))
            .collect::<Vec<_>>(),
        vec![("n2", Version(2))]
    );
    let head = store.item_head(&alice, &key("notes", "n2")?).await?;
    assert_eq!(
        pears.hits.first().map(|h| &h.item),
        head.item.as_ref(),
        "the index holds the head's item"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_is_idempotent() -> Outcome {
    let clients = moto::clients().await?;
    let first = rookery_adapters_aws::bootstrap(&clients).await?;
    let second = rookery_adapters_aws::bootstrap(&clients).await?;
    assert_eq!(first, second, "the same table, bucket and applications");
    let store = clients.event_store();
    assert_eq!(store.last_seq(&user("alice")?).await?, Seq(0), "the table answers");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudsearch_injection_never_reaches_another_users_private_item() -> Outcome {
    let (fake, index) = cloudsearch_index().await?;
    let (alice, mallory) = (user("alice")?, user("mallory")?);
    let secret = item(
        &alice,
        &key("notes", "s1")?,
        1,
        Visibility::Private,
        json!({"t": "secret plans"}),
    );
    let own = item(
        &mallory,
        &key("notes", "m1")?,
        1,
        Visibility::Private,
        json!({"t": "my plans"}),
    );
    index
        .apply(&[
            rookery_domain::projection::IndexChange::Upsert(search_document(&secret)),
            rookery_domain::projection::IndexChange::Upsert(search_document(&own)),
        ])
        .await?;
    let attacks = [
        "plans') (term field=owner 'alice",
        r"plans\') (or (term field=owner 'alice') matchall) ('",
        "plans' (or matchall) '",
        r"\\') matchall ('",
        "owner:'alice'",
        "secret",
    ];
    for attack in attacks {
        for scope in [Scope::Mine, Scope::All, Scope::Public] {
            let query = SearchQuery {
                caller: mallory.clone(),
                words: vec![attack.to_owned()],
                collection: None,
                scope,
                limit: 10,
                cursor: None,
            };
            let page = index
                .query(&query)
                .await
                .map_err(|e| format!("{attack:?} {scope:?}: {e}"))?;
            assert!(
                page.hits.iter().all(|h| h.item.owner == mallory),
                "{attack:?} {scope:?}: {:?}",
                page.hits
            );
        }
    }
    // A delete leaves a tombstone carrying its version, so an older upsert cannot bring the item back.
    index
        .apply(&[rookery_domain::projection::IndexChange::Delete {
            owner: mallory.clone(),
            key: key("notes", "m1")?,
            version: Version(2),
        }])
        .await?;
    let doc = fake
        .document(&rookery_adapters_aws::cloudsearch::document_id(
            &mallory,
            &key("notes", "m1")?,
        ))
        .ok_or("no document")?;
    assert_eq!(
        (doc["state"].as_str(), doc["version"].as_u64()),
        (Some("deleted"), Some(2))
    );
    index
        .apply(&[rookery_domain::projection::IndexChange::Upsert(search_document(&own))])
        .await?;
    let mine = SearchQuery {
        caller: mallory,
        words: vec!["plans".into()],
        collection: None,
        scope: Scope::Mine,
        limit: 10,
        cursor: None,
    };
    assert_eq!(
        index.query(&mine).await?.found,
        0,
        "the stale upsert did not resurrect the item"
    );
    Ok(())
}

const BOTH: [OpenSearchService; 2] = [OpenSearchService::Domain, OpenSearchService::Serverless];

fn upsert(item: &rookery_domain::Item) -> rookery_domain::projection::IndexChange {
    rookery_domain::projection::IndexChange::Upsert(search_document(item))
}

fn delete(
    owner: &rookery_domain::UserId,
    key: &rookery_domain::ItemKey,
    version: u64,
) -> rookery_domain::projection::IndexChange {
    rookery_domain::projection::IndexChange::Delete {
        owner: owner.clone(),
        key: key.clone(),
        version: Version(version),
    }
}

fn mine(caller: &rookery_domain::UserId, word: &str) -> SearchQuery {
    SearchQuery {
        caller: caller.clone(),
        words: vec![word.to_owned()],
        collection: None,
        scope: Scope::Mine,
        limit: 10,
        cursor: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_creates_its_index_with_strict_mappings_under_an_alias_on_first_write() -> Outcome {
    for service in BOTH {
        let (fake, index) = opensearch_index(service).await?;
        let alice = user("alice")?;
        assert_eq!(index.query(&mine(&alice, "tea")).await?.found, 0, "nothing written yet");
        assert_eq!(fake.alias(index.alias()), None, "a search creates nothing");
        let tea = item(&alice, &key("notes", "t")?, 1, Visibility::Private, json!({"t": "tea"}));
        index.apply(&[upsert(&tea)]).await?;
        assert_eq!(fake.alias(index.alias()), Some(vec![index.first_index()]));
        let (strict, fields) = fake.mapping(&index.first_index()).ok_or("no mapping")?;
        assert!(strict, "unknown fields are refused, not guessed");
        assert_eq!(fields.get("words").map(String::as_str), Some("text/whitespace"));
        assert_eq!(fields.get("item").map(String::as_str), Some("object/false"));
        assert_eq!(fields.get("doc_id").map(String::as_str), Some("keyword"));
        // Another process (a clone has its own start) finds the alias and creates nothing.
        index.ensure_index().await?;
        let creates = fake.requests().iter().filter(|r| r.starts_with("PUT ")).count();
        assert_eq!(creates, 1, "{service:?}: {:?}", fake.requests());
        assert_eq!(index.query(&mine(&alice, "tea")).await?.found, 1);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_deletes_are_tombstones_that_no_stale_write_gets_past() -> Outcome {
    for service in BOTH {
        let (fake, index) = opensearch_index(service).await?;
        let alice = user("alice")?;
        let k = key("notes", "n1")?;
        let v1 = item(&alice, &k, 1, Visibility::Public, json!({"t": "ghost"}));
        index.apply(&[upsert(&v1)]).await?;
        index.apply(&[delete(&alice, &k, 2)]).await?;
        let doc = fake
            .document(index.alias(), &document_id(&alice, &k))
            .ok_or("the tombstone is a document")?;
        assert_eq!(
            (doc.source["state"].as_str(), doc.source["version"].as_u64()),
            (Some("deleted"), Some(2)),
            "{service:?}"
        );
        assert!(doc.source.get("item").is_none(), "a tombstone keeps no data");
        if service == OpenSearchService::Domain {
            assert_eq!(doc.version, 2, "the external version is the item's");
        }
        // The stand-in forgets a really deleted document's version at once (a domain does after
        // index.gc_deletes); the tombstone is never deleted, so the stale upsert is still refused.
        index.apply(&[upsert(&v1)]).await?;
        assert_eq!(index.query(&mine(&alice, "ghost")).await?.found, 0, "{service:?}");
        let back = item(&alice, &k, 3, Visibility::Public, json!({"t": "ghost again"}));
        index.apply(&[upsert(&back)]).await?;
        assert_eq!(index.query(&mine(&alice, "ghost")).await?.hits[0].item, back);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_reindex_generations_are_built_beside_the_alias_and_switched_in_one_request() -> Outcome {
    for service in BOTH {
        let (fake, index) = opensearch_index(service).await?;
        let alice = user("alice")?;
        let (tea_key, coffee_key) = (key("notes", "tea")?, key("notes", "coffee")?);
        let tea1 = item(&alice, &tea_key, 1, Visibility::Private, json!({"t": "tea"}));
        index.apply(&[upsert(&tea1)]).await?;
        let (blue, green) = (index.generation(1), index.generation(2));
        assert_eq!(index.alias_indexes().await?, vec![blue.clone()]);

        // The new generation is built by name; searches and the indexer still use the old one.
        index.create_generation(&green).await?;
        index.create_generation(&green).await?;
        let tea2 = item(&alice, &tea_key, 2, Visibility::Private, json!({"t": "tea green"}));
        let coffee = item(&alice, &coffee_key, 1, Visibility::Private, json!({"t": "coffee"}));
        index.apply_into(&green, &[upsert(&tea2), upsert(&coffee)]).await?;
        // Replaying an older state into it cannot move a document backwards.
        index.apply_into(&green, &[upsert(&tea1)]).await?;
        let tea_doc = fake
            .document(&green, &document_id(&alice, &tea_key))
            .ok_or("tea is in the new generation")?;
        assert_eq!(tea_doc.source["version"].as_u64(), Some(2), "{service:?}");
        assert_eq!(fake.alias(index.alias()), Some(vec![blue.clone()]), "{service:?}");
        assert_eq!(index.query(&mine(&alice, "coffee")).await?.found, 0, "{service:?}");
        let refused = index.delete_generation(&blue).await;
        assert!(refused.is_err(), "{service:?}: the index in use is never deleted");

        index.switch_alias(&blue, &green).await?;
        assert_eq!(index.alias_indexes().await?, vec![green.clone()], "{service:?}");
        assert_eq!(index.query(&mine(&alice, "coffee")).await?.found, 1, "{service:?}");
        // The indexer's next write goes through the alias into the new generation.
        let tea3 = item(&alice, &tea_key, 3, Visibility::Private, json!({"t": "tea black"}));
        index.apply(&[upsert(&tea3)]).await?;
        assert_eq!(index.query(&mine(&alice, "black")).await?.hits[0].item, tea3);

        // Switching again from the old generation is refused whole: the alias stays where it is.
        assert!(index.switch_alias(&blue, &green).await.is_err(), "{service:?}");
        assert_eq!(fake.alias(index.alias()), Some(vec![green.clone()]), "{service:?}");

        for refused in [green.as_str(), index.alias(), "other-1"] {
            assert!(
                index.delete_generation(refused).await.is_err(),
                "{service:?}: {refused}"
            );
        }
        index.delete_generation(&blue).await?;
        index.delete_generation(&blue).await?;
        assert!(fake.documents(&blue).is_empty(), "{service:?}");
        assert_eq!(fake.documents(&green).len(), 2, "{service:?}");
        assert_eq!(index.alias_indexes().await?, vec![green.clone()], "{service:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_a_failed_bulk_item_makes_the_indexer_report_exactly_its_record() -> Outcome {
    for service in BOTH {
        let (fake, index) = opensearch_index(service).await?;
        let store = rookery_adapters_memory::MemoryEventStore::in_memory();
        let (alice, bob) = (user("alice")?, user("bob")?);
        let keys = [key("notes", "a")?, key("notes", "b")?, key("notes", "c")?];
        let payload = |k: &rookery_domain::ItemKey, text: &str| {
            item_payload(
                k,
                Version(1),
                Some(object(json!({"t": text}))),
                Visibility::Private,
                true,
                at(0),
            )
        };
        let events = vec![
            new_event(message_payload(&bob, &alice, "hi", at(1))?, at(1))?,
            new_event(payload(&keys[0], "first"), at(2))?,
            new_event(payload(&keys[1], "second"), at(3))?,
            new_event(message_payload(&bob, &alice, "again", at(4))?, at(4))?,
            new_event(payload(&keys[2], "third"), at(5))?,
        ];
        let stored = append_all(&store, events, 1).await?;
        fake.reject_writes_to(&document_id(&alice, &keys[1]));
        let indexer = Indexer::new(index.clone());
        let failed = indexer
            .handle(&stored)
            .await
            .err()
            .ok_or("the rejected item fails the batch")?;
        assert_eq!(
            failed.index, 2,
            "{service:?}: the record of the rejected change, not the batch"
        );
        assert!(failed.failure.retryable, "a 429 is worth retrying: {}", failed.failure);
        let bulks = fake.requests().iter().filter(|r| r.contains("/_bulk")).count();
        assert_eq!(
            bulks, 1,
            "{service:?}: one _bulk request, no change-by-change search for the failure"
        );
        assert_eq!(
            index.query(&mine(&alice, "first")).await?.found,
            1,
            "the record before it is indexed"
        );
        fake.heal();
        indexer.handle(&stored[failed.index..]).await?;
        for word in ["first", "second", "third"] {
            assert_eq!(index.query(&mine(&alice, word)).await?.found, 1, "{service:?} {word}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_writes_a_batch_in_one_bulk_request_the_way_its_service_takes_it() -> Outcome {
    for service in BOTH {
        let (fake, index) = opensearch_index(service).await?;
        let alice = user("alice")?;
        let mut changes = Vec::new();
        for n in 0..250 {
            changes.push(upsert(&item(
                &alice,
                &key("notes", &format!("n{n}"))?,
                1,
                Visibility::Private,
                json!({"t": format!("bulk word{n}")}),
            )));
        }
        index.apply(&changes).await?;
        let bulks: Vec<String> = fake.requests().into_iter().filter(|r| r.contains("/_bulk")).collect();
        let expected = match service {
            OpenSearchService::Domain => format!("POST /{}/_bulk?refresh=wait_for", index.alias()),
            OpenSearchService::Serverless => format!("POST /{}/_bulk", index.alias()),
        };
        assert_eq!(bulks, vec![expected], "{service:?}");
        assert_eq!(index.count_live().await?, 250);
        let page = index
            .query(&SearchQuery {
                limit: 100,
                ..mine(&alice, "bulk")
            })
            .await?;
        assert_eq!((page.found, page.hits.len()), (250, 100));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_counts_live_items_and_erases_an_owner_by_query() -> Outcome {
    for service in BOTH {
        let (fake, index) = opensearch_index(service).await?;
        let (alice, bob) = (user("alice")?, user("bob")?);
        let mut changes = Vec::new();
        for (owner, n) in [(&alice, 0), (&alice, 1), (&bob, 2)] {
            changes.push(upsert(&item(
                owner,
                &key("notes", &format!("n{n}"))?,
                1,
                Visibility::Public,
                json!({"t": "shared"}),
            )));
        }
        changes.push(delete(&alice, &key("notes", "gone")?, 4));
        index.apply(&changes).await?;
        assert_eq!(index.count_live().await?, 3, "{service:?}: tombstones are not items");
        assert_eq!(index.erase_owner(&alice).await?, 3, "two items and a tombstone");
        assert_eq!(index.count_live().await?, 1);
        assert_eq!(fake.documents(index.alias()).len(), 1, "only bob's item is left");
        assert!(
            fake.requests()
                .iter()
                .any(|r| r.contains("/_delete_by_query?conflicts=proceed")),
            "{:?}",
            fake.requests()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_injection_never_reaches_another_users_private_item() -> Outcome {
    for service in BOTH {
        let (_fake, index) = opensearch_index(service).await?;
        let (alice, mallory) = (user("alice")?, user("mallory")?);
        let secret = item(
            &alice,
            &key("notes", "s1")?,
            1,
            Visibility::Private,
            json!({"t": "secret plans"}),
        );
        let own = item(
            &mallory,
            &key("notes", "m1")?,
            1,
            Visibility::Private,
            json!({"t": "my plans"}),
        );
        index.apply(&[upsert(&secret), upsert(&own)]).await?;
        let attacks = [
            "plans\"}},{\"match_all\":{}}]}}",
            "{\"match_all\":{}}",
            "owner:alice",
            "*",
            "plans OR owner:alice",
            "secret",
            "sec",
        ];
        for attack in attacks {
            for scope in [Scope::Mine, Scope::All, Scope::Public] {
                let query = SearchQuery {
                    scope,
                    ..mine(&mallory, attack)
                };
                let page = index
                    .query(&query)
                    .await
                    .map_err(|e| format!("{attack:?} {scope:?}: {e}"))?;
                assert!(
                    page.hits.iter().all(|h| h.item.owner == mallory),
                    "{service:?} {attack:?} {scope:?}: {:?}",
                    page.hits
                );
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_requests_signed_for_the_other_service_are_refused() -> Outcome {
    // An index that signs for a domain, pointed at a stand-in that expects a Serverless collection.
    let (fake, _) = opensearch_index(OpenSearchService::Serverless).await?;
    let mut config = rookery_adapters_aws::AwsConfig::new("unused", "unused").with_emulator(&fake.endpoint);
    config.search = rookery_adapters_aws::config::SearchBackend::OpenSearch;
    config.opensearch_endpoint = Some(fake.endpoint.clone());
    config.opensearch_service = OpenSearchService::Domain;
    let index = rookery_adapters_aws::AwsClients::load(config)
        .await
        .opensearch_index()
        .ok_or("configured")?;
    let alice = user("alice")?;
    let tea = item(&alice, &key("notes", "t")?, 1, Visibility::Private, json!({"t": "tea"}));
    let refused = index.apply(&[upsert(&tea)]).await;
    assert!(
        matches!(&refused, Err(rookery_ports::SearchError::Unavailable(f)) if !f.retryable && f.message.contains("403")),
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_of_one_user_all_succeed_on_dynamodb() -> Outcome {
    let store = dynamo_store().await?.1.with_contention(moto_contention());
    writes_of_one_user_to_distinct_items_all_apply(store, 16).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merge_patches_of_one_item_all_apply_on_dynamodb() -> Outcome {
    let store = dynamo_store().await?.1.with_contention(moto_contention());
    merge_patches_of_one_item_all_apply(store, 8).await
}

/// Seq-less appends of one user from several processes at once (each its own store, so they race on the
/// user's head in DynamoDB rather than queue in one process) all succeed: each store tries again where the
/// head went, with backoff, and the stream ends with exactly the seqs `1..=N`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_of_one_user_from_several_processes_all_succeed() -> Outcome {
    const PROCESSES: usize = 4;
    const TASKS: usize = 2;
    let (clients, _) = dynamo_store().await?;
    let alice = user("alice")?;
    let start = Arc::new(tokio::sync::Barrier::new(PROCESSES * TASKS));
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PROCESSES {
        let store = clients.event_store().with_contention(moto_contention());
        for t in 0..TASKS {
            let (store, alice, start) = (store.clone(), alice.clone(), Arc::clone(&start));
            let k = key("notes", &format!("p{p}-t{t}"))?;
            let change = |version: u64| {
                let data = Some(object(json!({"p": p, "t": t, "version": version})));
                new_event(
                    item_payload(&k, Version(version), data, Visibility::Private, version == 1, at(0)),
                    at(version),
                )
            };
            let events = [change(1)?, change(2)?];
            tasks.spawn(async move {
                start.wait().await;
                let mut seqs = Vec::new();
                for (version, event) in (0..).zip(events) {
                    let stored = store
                        .append(AppendBatch {
                            owner: alice.clone(),
                            expected_seq: None,
                            item_versions: vec![(k.clone(), Version(version))],
                            events: vec![event],
                            idempotency: None,
                        })
                        .await?;
                    seqs.extend(stored.iter().map(|e| e.seq.0));
                }
                Ok::<_, AppendError>(seqs)
            });
        }
    }
    let mut seqs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        seqs.extend(joined??);
    }
    seqs.sort_unstable();
    let total = (PROCESSES * TASKS * 2) as u64;
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    let stored: Vec<u64> = clients
        .event_store()
        .read_feed(&alice, Seq(0), 100)
        .await?
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(stored, seqs, "the stream holds every append, consecutively");
    Ok(())
}

/// With no time to wait, a seq-less append that finds the head moved by another process answers a
/// retryable `Unavailable` (which the HTTP edge turns into `503` with `Retry-After`), never `SeqMoved`,
/// and writes nothing: the appends that succeeded hold exactly the seqs `1..=N`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_out_of_time_on_a_busy_stream_is_retryable_and_writes_nothing() -> Outcome {
    const PROCESSES: usize = 16;
    let (clients, _) = dynamo_store().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let start = Arc::new(tokio::sync::Barrier::new(PROCESSES));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..PROCESSES {
        let store = clients.event_store().with_contention(Contention {
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
            deadline: Duration::ZERO,
        });
        let (alice, start) = (alice.clone(), Arc::clone(&start));
        let event = new_event(
            message_payload(&bob, &alice, &format!("m{i}"), at(i as u64))?,
            at(i as u64),
        )?;
        tasks.spawn(async move {
            start.wait().await;
            store
                .append(AppendBatch {
                    owner: alice,
                    expected_seq: None,
                    item_versions: Vec::new(),
                    events: vec![event],
                    idempotency: None,
                })
                .await
        });
    }
    let mut appended = 0u64;
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok(_) => appended += 1,
            Err(AppendError::Unavailable(failure)) if failure.is_retryable() => {}
            Err(other) => return Err(format!("unexpected {other:?}").into()),
        }
    }
    let seqs: Vec<u64> = clients
        .event_store()
        .read_feed(&alice, Seq(0), 100)
        .await?
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(seqs, (1..=appended).collect::<Vec<_>>());
    Ok(())
}

/// Appends a new note `id` holding `text` at the end of `owner`'s stream.
async fn write_note<S: EventStore>(store: &S, owner: &rookery_domain::UserId, id: &str, text: &str) -> Outcome {
    let payload = item_payload(
        &key("notes", id)?,
        Version(1),
        Some(object(json!({"text": text}))),
        Visibility::Private,
        true,
        at(1),
    );
    store.append(note_batch(owner, new_event(payload, at(1))?)).await?;
    Ok(())
}

fn note_batch(owner: &rookery_domain::UserId, event: NewEvent) -> AppendBatch {
    AppendBatch {
        owner: owner.clone(),
        expected_seq: None,
        item_versions: Vec::new(),
        events: vec![event],
        idempotency: None,
    }
}

/// Every row of the table whose partition key is `pk`, by a consistent scan (what an auditor would run).
async fn rows_in_partition(client: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> Result<usize, BoxError> {
    let mut start = None;
    let mut found = 0;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await?;
        found += page
            .items()
            .iter()
            .filter(|row| row.get("pk").and_then(|v| v.as_s().ok()).is_some_and(|v| v == pk))
            .count();
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(found),
        }
    }
}

/// With the purge deferred (the Lambda functions), `erase_owner` answers after the marker alone: the
/// rows are still in the table, yet no read answers anything of the user and every write is refused;
/// the purge, stopped by its deadline and run again, then leaves the partition empty and keeps the marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_erasure_deferred_hides_at_once_and_the_purge_resumes_to_an_empty_partition() -> Outcome {
    let (clients, store) = dynamo_store().await?;
    let store = store
        .with_contention(moto_contention())
        .with_purge(rookery_adapters_aws::dynamo::Purge::Deferred)
        .with_page_limit(30);
    let (alice, bob) = (user("alice")?, user("bob")?);
    for i in 0..40 {
        write_note(&store, &alice, &format!("n{i}"), "alice's secret").await?;
    }
    write_note(&store, &bob, "n1", "bob's").await?;
    let table = clients.config().table.clone();
    let dynamodb = clients.dynamodb();

    assert_eq!(
        store.purge_erased(&alice, None).await.map_err(|f| f.retryable),
        Err(false),
        "no marker, no purge"
    );
    assert_eq!(store.erase_owner(&alice, at(10)).await?, at(10));
    assert!(
        rows_in_partition(&dynamodb, &table, "user#alice").await? > 80,
        "the rows are still there"
    );
    assert!(store.read_feed(&alice, Seq(0), 100).await?.is_empty());
    assert_eq!(store.last_seq(&alice).await?, Seq(0));
    assert_eq!(store.owners(None, 10).await?, vec![bob.clone()]);
    let late = item_payload(
        &key("notes", "late")?,
        Version(1),
        Some(object(json!({}))),
        Visibility::Private,
        true,
        at(11),
    );
    let refused = store.append(note_batch(&alice, new_event(late, at(11))?)).await;
    assert!(matches!(refused, Err(AppendError::Erased { at: when }) if when == at(10)));

    let past = tokio::time::Instant::now();
    let first = store.purge_erased(&alice, Some(past)).await?;
    assert_eq!(first, rookery_adapters_aws::dynamo::Purged::Unfinished { deleted: 0 });
    let done = store.purge_erased(&alice, None).await?;
    assert!(
        matches!(done, rookery_adapters_aws::dynamo::Purged::Done { deleted } if deleted > 80),
        "{done:?}"
    );
    assert_eq!(rows_in_partition(&dynamodb, &table, "user#alice").await?, 0);
    assert_eq!(
        rows_in_partition(&dynamodb, &table, "erased#alice").await?,
        1,
        "the marker stays"
    );
    assert_eq!(
        store.purge_erased(&alice, None).await?,
        rookery_adapters_aws::dynamo::Purged::Done { deleted: 0 },
        "a repeat is harmless"
    );
    assert_eq!(store.erased(&alice).await?, Some(at(10)));
    assert_eq!(store.read_feed(&bob, Seq(0), 10).await?.len(), 1);
    Ok(())
}

/// CloudSearch erases an owner's documents (more than one page of the listing and one delete batch,
/// live and tombstone, public and private) and only theirs, and a repeat finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudsearch_erases_an_owner_page_by_page_to_the_last_document() -> Outcome {
    let (fake, index) = cloudsearch_index().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let mut changes = Vec::new();
    for n in 0..2_300 {
        let visibility = if n % 2 == 0 {
            Visibility::Public
        } else {
            Visibility::Private
        };
        changes.push(upsert(&item(
            &alice,
            &key("notes", &format!("n{n}"))?,
            1,
            visibility,
            json!({"t": "shared"}),
        )));
    }
    let bobs = key("notes", "n0")?;
    changes.push(upsert(&item(
        &bob,
        &bobs,
        1,
        Visibility::Public,
        json!({"t": "shared"}),
    )));
    index.apply(&changes).await?;
    index.apply(&[delete(&alice, &key("notes", "gone")?, 4)]).await?;
    assert_eq!(fake.len(), 2_302);

    assert_eq!(index.erase_owner(&alice).await?, 2_301, "every item and the tombstone");
    assert_eq!(fake.len(), 1, "only Bob's document is left");
    assert!(fake.document(&document_id(&bob, &bobs)).is_some());
    assert_eq!(index.erase_owner(&alice).await?, 0, "a repeat finds nothing");
    let found = SearchIndex::query(&index, &mine(&bob, "shared")).await?;
    assert_eq!(found.found, 1);
    Ok(())
}

/// Puts `count` small objects under `owner`'s prefix directly (as uploads through signed URLs would).
async fn put_objects(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    owner: &rookery_domain::UserId,
    count: usize,
) -> Result<Vec<String>, BoxError> {
    let mut keys = Vec::with_capacity(count);
    for n in 0..count {
        let key = format!("media/{owner}/m{n:05}");
        client
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from(
                format!("bytes of {key}").into_bytes(),
            ))
            .send()
            .await?;
        keys.push(key);
    }
    Ok(keys)
}

/// Every key of the bucket under `prefix`, following continuation tokens.
async fn keys_under(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<Vec<String>, BoxError> {
    let mut keys = Vec::new();
    let mut token = None;
    for _ in 0..1_000 {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await?;
        keys.extend(page.contents.unwrap_or_default().into_iter().filter_map(|o| o.key));
        match page.next_continuation_token {
            Some(next) if page.is_truncated == Some(true) => token = Some(next),
            _ => return Ok(keys),
        }
    }
    Err("the listing never ended".into())
}

/// The S3 media store erases every object under the owner's prefix (more than one page of 1,000 keys,
/// including one uploaded through a signed URL) and nothing of another user, even one whose id starts
/// with the same letters; a repeat is `Ok`, and the erased object reads as pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_erases_every_object_of_an_owner_and_nothing_of_another() -> Outcome {
    use rookery_ports::{MediaStore, ObjectStatus};
    let (clients, _) = rookery_tests::aws::moto::bootstrapped().await?;
    let store = clients.media_store()?;
    let (s3, bucket) = (clients.s3(), clients.config().bucket.clone());
    let (alice, alice2, bob) = (user("alice")?, user("alice2")?, user("bob")?);

    let uploaded = media_object(&alice, "image/png", 5, at(1))?;
    let request = store
        .upload_url(
            &uploaded,
            rookery_domain::Timestamp::from_system_time(std::time::SystemTime::now()),
            Duration::from_secs(300),
        )
        .await?;
    let mut put = reqwest::Client::new().put(&request.url);
    for (name, value) in &request.headers {
        if !name.eq_ignore_ascii_case("content-length") {
            put = put.header(name, value);
        }
    }
    assert!(put.body(vec![1u8, 2, 3, 4, 5]).send().await?.status().is_success());
    assert!(matches!(
        store.status(&uploaded).await?,
        ObjectStatus::Uploaded { size: 5 }
    ));

    put_objects(&s3, &bucket, &alice, 1_204).await?;
    let others = [
        put_objects(&s3, &bucket, &alice2, 3).await?,
        put_objects(&s3, &bucket, &bob, 3).await?,
    ]
    .concat();
    assert_eq!(keys_under(&s3, &bucket, "media/alice/").await?.len(), 1_205);

    let started = std::time::Instant::now();
    assert_eq!(store.erase_objects_of(&alice).await?, 1_205);
    eprintln!(
        "s3 erase of 1,205 objects on moto: {} ms",
        started.elapsed().as_millis()
    );
    assert!(keys_under(&s3, &bucket, "media/alice/").await?.is_empty());
    let mut left = keys_under(&s3, &bucket, "media/").await?;
    left.sort();
    assert_eq!(left, others, "Bob's and alice2's objects stay");
    assert!(matches!(store.status(&uploaded).await?, ObjectStatus::Pending));

    MediaStore::erase_owner(&store, &alice).await?;
    assert_eq!(store.erase_objects_of(&alice).await?, 0, "a repeat finds nothing");
    Ok(())
}

/// Erasing an account's user from Cognito finds it by its `sub` (not its user name), deletes it, and
/// leaves the other users; a repeat, and a `sub` no user has, are `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognito_deletes_the_user_found_by_sub_and_a_repeat_is_ok() -> Outcome {
    use rookery_ports::IdentityDirectory;
    use rookery_tests::aws::cognito::{CognitoPool, call};
    let pool = CognitoPool::create().await?;
    let alice = pool.sign_in("alice@example.com").await?;
    let bob = pool.sign_in("bob@example.com").await?;
    assert_ne!(alice.sub, alice.username, "the sub is not the user name");

    let mut config = rookery_tests::aws::moto::clients().await?.config().clone();
    assert!(
        rookery_adapters_aws::AwsClients::load(config.clone())
            .await
            .identity_directory()
            .is_none(),
        "no pool configured, no directory"
    );
    config.cognito_pool_id = Some(pool.pool_id.clone());
    let directory = rookery_adapters_aws::AwsClients::load(config)
        .await
        .identity_directory()
        .ok_or("a pool is configured")?;

    let get = |username: &str| {
        call(
            "AdminGetUser",
            json!({"UserPoolId": pool.pool_id, "Username": username}),
        )
    };
    assert!(get(&alice.username).await.is_ok());
    directory.delete_user(&user(&alice.sub)?).await?;
    let gone = get(&alice.username).await;
    assert!(
        gone.as_ref()
            .is_err_and(|e| e.to_string().contains("UserNotFoundException")),
        "{gone:?}"
    );
    assert!(get(&bob.username).await.is_ok(), "Bob stays");

    directory.delete_user(&user(&alice.sub)?).await?;
    directory
        .delete_user(&user("00000000-0000-4000-8000-000000000000")?)
        .await?;
    assert!(get(&bob.username).await.is_ok(), "Bob still stays");
    Ok(())
}

/// The guard `rookery serve --backend aws` puts before its index drops the changes of a user the store
/// marks erased, and of a user whose erasure it has started (before the store's marker), from every
/// slice, applies the others, and names a failed change by its position in the slice it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_erasure_guard_drops_erased_users_changes_and_keeps_positions() -> Outcome {
    use rookery_adapters_aws::ErasureAwareIndex;
    use rookery_adapters_memory::{FaultTarget, Faults, Faulty, MemoryEventStore};
    let (_fake, opensearch) = opensearch_index(OpenSearchService::Domain).await?;
    let store = MemoryEventStore::in_memory();
    let faults = Faults::new();
    faults.target(FaultTarget::Writes);
    let index = ErasureAwareIndex::new(Faulty::new(opensearch, faults.clone()), store.clone());
    let (alice, bob, carol) = (user("alice")?, user("bob")?, user("carol")?);
    let note = |owner: &rookery_domain::UserId, id: &str| -> Result<_, BoxError> {
        Ok(upsert(&item(
            owner,
            &key("notes", id)?,
            1,
            Visibility::Public,
            json!({"t": "shared"}),
        )))
    };

    // Alice is marked erased in the store (as after a restart): her redelivered changes are dropped.
    store.erase_owner(&alice, at(5)).await?;
    index
        .apply(&[note(&alice, "a1")?, note(&bob, "b1")?, note(&alice, "a2")?])
        .await?;
    let found = index.query(&mine(&bob, "shared")).await?;
    assert_eq!(found.found, 1, "Bob's change is applied");
    let everyone = SearchQuery {
        scope: Scope::Public,
        ..mine(&carol, "shared")
    };
    assert_eq!(index.query(&everyone).await?.found, 1, "and none of Alice's");

    // Carol's erasure has started here (no marker yet): her changes are dropped too.
    index.erase_owner(&carol).await?;
    index.apply(&[note(&carol, "c1")?]).await?;
    assert_eq!(index.query(&everyone).await?.found, 1, "nothing of Carol's");

    // A failure is named by its position in the slice given, past the dropped changes.
    faults.fail_share(1.0, 7);
    let failed = index
        .apply_each(&[note(&alice, "a3")?, note(&bob, "b2")?])
        .await
        .err()
        .ok_or("the index fails")?;
    assert_eq!(failed.index, 1, "Bob's change, the second of the slice");
    Ok(())
}
