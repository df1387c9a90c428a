//! The event store, change feed and search index contract suites, run against the SQLite adapter (each
//! check on a fresh database file in a temporary directory), and a check that a reopened database answers
//! as before.

use std::sync::atomic::{AtomicU64, Ordering};

use rookery_adapters_sqlite::{SqliteSearchIndex, SqliteStore};
use rookery_tests::contract::event_store::StoreFactory;
use rookery_tests::contract::reopen::{everything, write_a_little_of_everything};
use rookery_tests::contract::search_index::SearchFactory;
use rookery_tests::fixtures::BoxError;
use rookery_tests::{change_feed_contract, event_store_contract, search_index_contract};

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
rookery_tests::erasure_contract!(sqlite_erasure, Databases::new()?);
rookery_tests::erasure_feed_contract!(sqlite_erasure_feed, Databases::new()?);

/// A database, reopened, answers every read exactly as it did before it was closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_database_answers_as_before() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rookery.sqlite3");
    let store = SqliteStore::open(&file)?;
    let written = write_a_little_of_everything(store.clone()).await?;
    store.set_consumer_position("indexer", 7).await?;

    let mut before = everything(&store, &written).await?;
    before.push(format!("{:?}", store.changes_after(0, 10_000).await?));
    let position = store.commit_position();
    drop(store);
    let reopened = SqliteStore::open(&file)?;
    let mut after = everything(&reopened, &written).await?;
    after.push(format!("{:?}", reopened.changes_after(0, 10_000).await?));
    assert_eq!(after, before);
    assert_eq!(reopened.commit_position(), position);
    assert_eq!(reopened.consumer_position("indexer").await?, 7);
    Ok(())
}
