//! No refused writes under concurrency: 64 writers of one user at once, to distinct items, and many merge
//! patches of one item, through the services, on the memory store (in memory and file-backed) and on
//! SQLite. The same checks run on DynamoDB in `aws_adapters.rs`.

use rookery_adapters_memory::MemoryEventStore;
use rookery_adapters_sqlite::SqliteStore;
use rookery_tests::concurrency::{merge_patches_of_one_item_all_apply, writes_of_one_user_to_distinct_items_all_apply};
use rookery_tests::fixtures::Outcome;

/// Writers of one user to distinct items at once.
const WRITERS: usize = 64;

/// Patchers of one item at once.
const PATCHERS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_writers_of_one_user_all_succeed_in_memory() -> Outcome {
    writes_of_one_user_to_distinct_items_all_apply(MemoryEventStore::in_memory(), WRITERS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_writers_of_one_user_all_succeed_on_the_file_backed_memory_store() -> Outcome {
    let dir = tempfile::tempdir()?;
    writes_of_one_user_to_distinct_items_all_apply(MemoryEventStore::open(dir.path())?, WRITERS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_writers_of_one_user_all_succeed_on_sqlite() -> Outcome {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("rookery.sqlite3"))?;
    writes_of_one_user_to_distinct_items_all_apply(store, WRITERS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merge_patches_of_one_item_all_apply_in_memory() -> Outcome {
    merge_patches_of_one_item_all_apply(MemoryEventStore::in_memory(), PATCHERS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merge_patches_of_one_item_all_apply_on_sqlite() -> Outcome {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("rookery.sqlite3"))?;
    merge_patches_of_one_item_all_apply(store, PATCHERS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merge_patches_of_one_item_all_apply_on_the_file_backed_memory_store() -> Outcome {
    let dir = tempfile::tempdir()?;
    merge_patches_of_one_item_all_apply(MemoryEventStore::open(dir.path())?, PATCHERS).await
}
