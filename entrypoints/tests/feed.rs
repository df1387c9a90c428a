//! The in-process change feed driver: every committed change reaches the index and every message its
//! devices, exactly as the log has them, even when the index and the push gateway fail on the way.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rookery_adapters_memory::{
    Faults, Faulty, LocalMediaStore, ManualClock, MemoryEventStore, MemoryPushGateway, MemorySearchIndex, UlidIds,
};
use rookery_domain::{CollectionName, DeviceId, ItemId, ItemKey, Platform, StoredEvent, Timestamp, UserId};
use rookery_entrypoints::feed::{FeedDriver, FeedHandle, INDEXER};
use rookery_entrypoints::http::Services;
use rookery_ports::batch::HandlerFn;
use rookery_ports::{Caller, ChangeFeed, Indexer, PushDispatcher, Scope, SearchIndex, SearchQuery, ServiceConfig};
use serde_json::{Map, json};

/// Memory adapters with fault injection on the two consumers' outputs, and a clock the test moves.
type TestServices = Services<
    MemoryEventStore,
    ManualClock,
    UlidIds,
    Faulty<MemorySearchIndex>,
    Faulty<MemoryPushGateway>,
    LocalMediaStore,
>;

struct World {
    store: MemoryEventStore,
    search: Faulty<MemorySearchIndex>,
    push: Faulty<MemoryPushGateway>,
    clock: ManualClock,
    app: TestServices,
}

fn world() -> World {
    let store = MemoryEventStore::in_memory();
    let search = Faulty::new(MemorySearchIndex::new(), Faults::new());
    let push = Faulty::new(MemoryPushGateway::new(), Faults::new());
    let clock = ManualClock::new(Timestamp::from_millis(1_795_600_800_000));
    let media = LocalMediaStore::in_memory("http://127.0.0.1:1", vec![7u8; 32]);
    let app = Services::new(
        store.clone(),
        clock.clone(),
        UlidIds::new(),
        search.clone(),
        push.clone(),
        media,
        ServiceConfig::default(),
    );
    World {
        store,
        search,
        push,
        clock,
        app,
    }
}

fn user(name: &str) -> Caller {
    Caller::new(UserId::parse(name).expect("user id"))
}

fn key(id: &str) -> ItemKey {
    ItemKey::new(
        CollectionName::parse("notes").expect("collection"),
        ItemId::parse(id).expect("item id"),
    )
}

fn data(text: &str) -> Map<String, serde_json::Value> {
    json!({"text": text}).as_object().cloned().unwrap_or_default()
}

/// The two consumers of `rookery serve`, each following the feed on its own.
struct Feeds {
    indexing: FeedHandle,
    pushing: FeedHandle,
}

impl Feeds {
    fn position(&self) -> u64 {
        self.indexing.position().min(self.pushing.position())
    }

    async fn caught_up_to(&self, target: u64) -> bool {
        self.indexing.caught_up_to(target).await && self.pushing.caught_up_to(target).await
    }

    async fn stop(self) {
        self.indexing.stop().await;
        self.pushing.stop().await;
    }
}

fn spawn(world: &World) -> Feeds {
    let dispatcher = PushDispatcher::new(
        world.store.clone(),
        world.push.clone(),
        world.clock.clone(),
        world.app.devices.clone(),
        Duration::from_secs(24 * 3600),
    );
    Feeds {
        indexing: FeedDriver::new("indexer", world.store.clone(), Indexer::new(world.search.clone())).spawn(),
        pushing: FeedDriver::new("push dispatcher", world.store.clone(), dispatcher).spawn(),
    }
}

async fn caught_up(feed: &Feeds, store: &MemoryEventStore) {
    let target = store.commit_position().expect("position");
    tokio::time::timeout(Duration::from_secs(30), feed.caught_up_to(target))
        .await
        .expect("the driver catches up in time");
}

async fn indexed(feed: &FeedHandle, store: &MemoryEventStore) {
    let target = store.commit_position().expect("position");
    tokio::time::timeout(Duration::from_secs(30), feed.caught_up_to(target))
        .await
        .expect("the indexer catches up in time");
}

/// The index the offline rebuild produces from the same log: what the live feed must converge to.
async fn rebuilt(store: &MemoryEventStore) -> Vec<rookery_adapters_memory::IndexedEntry> {
    let index = MemorySearchIndex::new();
    Indexer::new(index.clone())
        .rebuild(store, |_| {})
        .await
        .expect("rebuild");
    index.snapshot().expect("snapshot")
}

#[tokio::test]
async fn failed_index_and_push_calls_are_retried_from_the_failed_record_and_nothing_is_lost() {
    let w = world();
    let (alice, bob) = (user("alice"), user("bob"));
    let device = DeviceId::parse("phone").expect("device id");
    w.app
        .devices
        .register_device(&bob, &device, Platform::Fcm, "bob-token", None)
        .await
        .expect("device");
    // Fail some index writes and pushes; the driver must retry each from the record that failed.
    w.search.faults().fail_nth(1);
    w.search.faults().fail_nth(3);
    w.search.faults().fail_nth(4);
    w.push.faults().target(rookery_adapters_memory::FaultTarget::Writes);
    w.push.faults().fail_nth(1);
    w.push.faults().fail_nth(2);

    let feed = spawn(&w);
    for i in 0..30 {
        w.app
            .items
            .put_item(
                &alice,
                &key(&format!("n{i}")),
                data(&format!("walrus {i}")),
                None,
                Default::default(),
                None,
            )
            .await
            .expect("put");
    }
    for i in (0..30).step_by(3) {
        w.app
            .items
            .delete_item(&alice, &key(&format!("n{i}")), Default::default(), None)
            .await
            .expect("delete");
    }
    let mut sent = Vec::new();
    for i in 0..5 {
        let accepted = w
            .app
            .messages
            .send_message(&alice, bob.user.clone(), format!("hello {i}"), Map::new(), None)
            .await
            .expect("message");
        sent.push(accepted.id.to_string());
    }
    caught_up(&feed, &w.store).await;

    assert!(w.search.faults().injected() >= 3, "index failures were injected");
    assert!(w.push.faults().injected() >= 2, "push failures were injected");
    assert_eq!(
        w.search.inner().snapshot().expect("snapshot"),
        rebuilt(&w.store).await,
        "converges to the rebuild"
    );
    let query = SearchQuery {
        caller: alice.user.clone(),
        words: vec!["walrus".into()],
        collection: None,
        scope: Scope::Mine,
        limit: 100,
        cursor: None,
    };
    assert_eq!(
        w.search.inner().query(&query).await.expect("query").found,
        20,
        "30 written, 10 deleted"
    );
    // Each message reached Bob's device exactly once, despite the failed sends.
    let pushed: Vec<String> = w
        .push
        .inner()
        .sent_to(&bob.user)
        .expect("sent")
        .iter()
        .filter_map(|p| p.message_id())
        .collect();
    assert_eq!(pushed, sent);
    feed.stop().await;
}

#[tokio::test]
async fn changes_committed_while_running_are_indexed_and_stop_is_prompt_even_while_failing() {
    let w = world();
    let alice = user("alice");
    let feed = spawn(&w);
    w.app
        .items
        .put_item(&alice, &key("late"), data("platypus"), None, Default::default(), None)
        .await
        .expect("put");
    caught_up(&feed, &w.store).await;
    assert_eq!(w.search.inner().len().expect("len"), 1);

    // An index that fails every call: the driver backs off, and still stops at once when asked.
    w.search.faults().fail_share(1.0, 7);
    w.app
        .items
        .put_item(&alice, &key("stuck"), data("never"), None, Default::default(), None)
        .await
        .expect("put");
    let before = feed.position();
    tokio::time::timeout(Duration::from_secs(5), feed.stop())
        .await
        .expect("stop is prompt");
    assert_eq!(w.search.inner().len().expect("len"), 1);
    assert!(
        before < w.store.commit_position().expect("position"),
        "the failing change was not skipped"
    );

    // A new driver from the old position delivers the change once the index heals: nothing was skipped.
    w.search.faults().heal();
    let again = FeedDriver::new("indexer", w.store.clone(), Indexer::new(w.search.clone()))
        .from_position(before)
        .spawn();
    indexed(&again, &w.store).await;
    assert_eq!(w.search.inner().len().expect("len"), 2);
    again.stop().await;
}

#[tokio::test]
async fn a_replay_after_a_long_stop_does_not_push_old_messages_again() {
    let w = world();
    let (alice, bob) = (user("alice"), user("bob"));
    let device = DeviceId::parse("phone").expect("device id");
    w.app
        .devices
        .register_device(&bob, &device, Platform::Apns, "bob-token", None)
        .await
        .expect("device");
    w.app
        .messages
        .send_message(&alice, bob.user.clone(), "old news".into(), Map::new(), None)
        .await
        .expect("message");
    // Two days later the server starts and replays the whole feed.
    w.clock.advance(Duration::from_secs(48 * 3600));
    let feed = spawn(&w);
    w.app
        .messages
        .send_message(&alice, bob.user.clone(), "fresh".into(), Map::new(), None)
        .await
        .expect("message");
    caught_up(&feed, &w.store).await;
    let pushed = w.push.inner().sent_to(&bob.user).expect("sent");
    assert_eq!(pushed.len(), 1);
    assert!(pushed[0].payload.contains("fresh"), "{}", pushed[0].payload);
    feed.stop().await;
}

#[tokio::test]
async fn a_restarted_driver_goes_on_from_the_position_it_stored() {
    let w = world();
    let alice = user("alice");
    let first = FeedDriver::new(INDEXER, w.store.clone(), Indexer::new(w.search.clone())).spawn();
    for id in ["a", "b", "c"] {
        w.app
            .items
            .put_item(&alice, &key(id), data("kiwi"), None, Default::default(), None)
            .await
            .expect("put");
    }
    indexed(&first, &w.store).await;
    first.stop().await;
    let stored = ChangeFeed::consumer_position(&w.store, INDEXER)
        .await
        .expect("position");
    assert_eq!(
        stored,
        w.store.commit_position().expect("position"),
        "saved after each batch"
    );

    for id in ["d", "e"] {
        w.app
            .items
            .put_item(&alice, &key(id), data("kiwi"), None, Default::default(), None)
            .await
            .expect("put");
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = HandlerFn({
        let seen = Arc::clone(&seen);
        move |events: Vec<StoredEvent>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock()
                    .expect("the record lock")
                    .extend(events.into_iter().map(|e| e.seq.0));
                Ok(())
            }
        }
    });
    let second = FeedDriver::new(INDEXER, w.store.clone(), record).spawn();
    indexed(&second, &w.store).await;
    second.stop().await;
    assert_eq!(
        *seen.lock().expect("the record lock"),
        vec![4, 5],
        "only what was committed after the stored position"
    );
}

#[tokio::test]
async fn stopping_a_consumer_with_a_backlog_waits_for_one_batch_not_the_backlog() {
    let w = world();
    let alice = user("alice");
    // Far more than one batch behind.
    for n in 0..(4 * rookery_entrypoints::feed::BATCH_SIZE) {
        w.app
            .items
            .put_item(
                &alice,
                &key(&format!("n{n}")),
                data("backlog"),
                None,
                Default::default(),
                None,
            )
            .await
            .expect("put");
    }
    let (started_tx, started) = tokio::sync::mpsc::channel::<()>(1);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let batches = Arc::new(Mutex::new(0usize));
    let slow = HandlerFn({
        let (gate, batches) = (Arc::clone(&gate), Arc::clone(&batches));
        move |_events: Vec<StoredEvent>| {
            let (gate, batches, started_tx) = (Arc::clone(&gate), Arc::clone(&batches), started_tx.clone());
            async move {
                *batches.lock().expect("the count lock") += 1;
                let _ = started_tx.try_send(());
                gate.acquire().await.expect("the gate stays open").forget();
                Ok(())
            }
        }
    });
    let driver = FeedDriver::new(INDEXER, w.store.clone(), slow).spawn();
    let mut started = started;
    started.recv().await.expect("the first batch reaches the handler");
    // `join!` polls `stop` first, which raises the flag before the gate lets the first batch finish.
    let ((), ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(driver.stop(), async { gate.add_permits(1) })
    })
    .await
    .expect("the driver stops without working through its backlog");
    assert_eq!(*batches.lock().expect("the count lock"), 1, "no batch after the stop");
}

#[tokio::test]
async fn a_consumer_behind_takes_ever_larger_batches_and_small_ones_once_caught_up() {
    let w = world();
    let alice = user("alice");
    let first = rookery_entrypoints::feed::BATCH_SIZE;
    for n in 0..(first + 2 * first + 10) {
        w.app
            .items
            .put_item(
                &alice,
                &key(&format!("n{n}")),
                data("behind"),
                None,
                Default::default(),
                None,
            )
            .await
            .expect("put");
    }
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let record = HandlerFn({
        let sizes = Arc::clone(&sizes);
        move |events: Vec<StoredEvent>| {
            let sizes = Arc::clone(&sizes);
            async move {
                sizes.lock().expect("the sizes lock").push(events.len());
                Ok(())
            }
        }
    });
    let driver = FeedDriver::new(INDEXER, w.store.clone(), record).spawn();
    indexed(&driver, &w.store).await;
    w.app
        .items
        .put_item(&alice, &key("late"), data("caught up"), None, Default::default(), None)
        .await
        .expect("put");
    indexed(&driver, &w.store).await;
    driver.stop().await;
    assert_eq!(
        *sizes.lock().expect("the sizes lock"),
        vec![first, 2 * first, 10, 1],
        "a full batch doubles the next; one that is not full goes back to the first size"
    );
}
