//! The event store, change feed and search index contract suites, run against the SQLite adapter (each
//! check on a fresh database file in a temporary directory), and a check that a reopened database answers
//! as before.

use std::sync::atomic::{AtomicU64, Ordering};

use rookery_adapters_memory::MemoryPushGateway;
use rookery_adapters_sqlite::{SqliteSearchIndex, SqliteStore};
use rookery_domain::{EventPayload, ItemKey, Platform, Precondition, Seq, UserId, Version, Visibility};
use rookery_ports::{Caller, EventStore, Idempotency};
use rookery_tests::contract::event_store::StoreFactory;
use rookery_tests::contract::search_index::SearchFactory;
use rookery_tests::fixtures::{BoxError, device, key, object, user};
use rookery_tests::memory::{app_with, memory_media};
use rookery_tests::{change_feed_contract, event_store_contract, search_index_contract};
use serde_json::json;

/// Fresh databases, each its own file under one temporary directory that lives as long as the factory
/// (one test).
struct Databases {
    dir: tempfile::TempDir,
    next: AtomicU64,
}

impl Databases {
    fn new() -> Result<Self, BoxError> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            next: AtomicU64::new(0),
        })
    }

    fn open(&self) -> Result<SqliteStore, BoxError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(SqliteStore::open(self.dir.path().join(format!("store-{n}.sqlite3")))?)
    }
}

impl StoreFactory for Databases {
    type Store = SqliteStore;

    async fn fresh(&self) -> Result<SqliteStore, BoxError> {
        self.open()
    }
}

impl SearchFactory for Databases {
    type Index = SqliteSearchIndex;

    async fn fresh(&self) -> Result<SqliteSearchIndex, BoxError> {
        Ok(self.open()?.search_index())
    }
}

event_store_contract!(sqlite_event_store, Databases::new()?);
change_feed_contract!(sqlite_change_feed, Databases::new()?);
search_index_contract!(sqlite_search_index, Databases::new()?);

/// Everything a store answers about `owners`, read through the port, to compare a store with its reopened self.
async fn everything(store: &SqliteStore, owners: &[UserId], keys: &[ItemKey]) -> Result<Vec<String>, BoxError> {
    let mut seen = vec![format!("{:?}", store.owners(None, 1_000).await?)];
    for owner in owners {
        seen.push(format!("{:?}", store.last_seq(owner).await?));
        seen.push(format!("{:?}", store.read_feed(owner, Seq(0), 10_000).await?));
        seen.push(format!("{:?}", store.read_messages(owner, Seq(0), 10_000).await?));
        seen.push(format!("{:?}", store.devices(owner).await?));
        seen.push(format!("{:?}", store.idempotency(owner, "idem-1").await?));
        for key in keys {
            seen.push(format!("{:?}", store.item_head(owner, key).await?));
            seen.push(format!(
                "{:?}",
                store.item_history(owner, key, Version::NONE, 1_000).await?
            ));
            seen.push(format!(
                "{:?}",
                store.list_items(owner, &key.collection, None, 1_000).await?
            ));
        }
        for event in store.read_feed(owner, Seq(0), 10_000).await? {
            if let EventPayload::MediaDeclared(object) = event.payload {
                seen.push(format!("{:?}", store.media(owner, &object.id).await?));
            }
        }
    }
    seen.push(format!("{:?}", store.changes_after(0, 10_000).await?));
    Ok(seen)
}

/// A database, reopened, answers every read exactly as it did before it was closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_database_answers_as_before() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rookery.sqlite3");
    let (alice, bob) = (Caller::new(user("alice")?), Caller::new(user("bob")?));
    let keys = [key("notes", "a")?, key("notes", "b")?, key("todos", "a")?];
    let store = SqliteStore::open(&file)?;
    let app = app_with(store.clone(), MemoryPushGateway::new(), memory_media());
    let idem = Idempotency {
        key: "idem-1".into(),
        fingerprint: "put a".into(),
    };
    for (i, k) in keys.iter().enumerate() {
        let data = object(json!({"i": i, "text": "ünïcødé"}));
        app.items
            .put_item(
                &alice,
                k,
                data,
                Some(Visibility::Public),
                Precondition::None,
                Some(&idem).filter(|_| i == 0),
            )
            .await?;
        app.items
            .patch_item(
                &alice,
                k,
                json!({"data": {"patched": true}}),
                Precondition::IfMatch(Version(1)),
                None,
            )
            .await?;
    }
    app.items
        .delete_item(&alice, &keys[1], Precondition::None, None)
        .await?;
    app.items
        .restore_item(&alice, &keys[1], Version(1), Precondition::None, None)
        .await?;
    app.messages
        .send_message(&bob, alice.user.clone(), "hello".into(), Default::default(), None)
        .await?;
    app.devices
        .register_device(&alice, &device("phone")?, Platform::Fcm, "token-1", None)
        .await?;
    app.media.create_media(&alice, "image/png", 10, None).await?;
    app.items
        .put_item(
            &bob,
            &keys[0],
            object(json!({"bob": 1})),
            None,
            Precondition::None,
            None,
        )
        .await?;
    store.set_consumer_position("indexer", 7).await?;

    let owners = [alice.user.clone(), bob.user.clone()];
    let before = everything(&store, &owners, &keys).await?;
    let position = store.commit_position();
    drop(app);
    drop(store);
    let reopened = SqliteStore::open(&file)?;
    assert_eq!(everything(&reopened, &owners, &keys).await?, before);
    assert_eq!(reopened.commit_position(), position);
    assert_eq!(reopened.consumer_position("indexer").await?, 7);
    Ok(())
}
