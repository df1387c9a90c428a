//! The erasure contract of [`EventStore::erase_owner`] and the change feed after it.
//!
//! `erasure_contract!` holds the checks every erasing store passes (memory, SQLite, DynamoDB);
//! `erasure_feed_contract!` adds the change feed's, for stores that are their own change feed (memory,
//! SQLite). DynamoDB's change feed is the table's stream, which keeps the erased events' INSERT records
//! for 24 hours and adds a REMOVE record per deleted row: there the consumers check the marker instead.

use rookery_domain::{ItemKey, Seq, UserId, Version, Visibility};
use rookery_ports::{AppendBatch, AppendError, ChangeFeed, EventStore, IdempotencyRecord, IdempotencyWrite};
use serde_json::json;

use crate::contract::event_store::StoreFactory;
use crate::fixtures::{Outcome, at, item_payload, key, message_payload, new_event, object, user};

fn at_end(owner: &UserId, events: Vec<rookery_domain::NewEvent>) -> AppendBatch {
    AppendBatch {
        owner: owner.clone(),
        expected_seq: None,
        item_versions: Vec::new(),
        events,
        idempotency: None,
    }
}

async fn create<S: EventStore>(store: &S, owner: &UserId, item: &ItemKey, text: &str) -> Outcome {
    let payload = item_payload(
        item,
        Version(1),
        Some(object(json!({"text": text}))),
        Visibility::Private,
        true,
        at(1),
    );
    store.append(at_end(owner, vec![new_event(payload, at(1))?])).await?;
    Ok(())
}

/// An erased user's stream, heads, records and feed events are gone, the marker stays (a repeat keeps
/// its time), every later append or record of theirs is refused, and nothing of anyone else is lost:
/// the message the erased user sent stays in its recipient's stream.
pub async fn check_an_erased_stream_is_gone_and_refuses_writes<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    erase_alice(&store).await?;
    Ok(())
}

/// Alice writes an item and an idempotency record and sends Bob a message, Bob writes an item, and
/// Alice is erased; then checks everything the store (not its feed) must answer.
async fn erase_alice<S: EventStore>(store: &S) -> Outcome {
    let (alice, bob) = (user("alice")?, user("bob")?);
    let note = key("notes", "n1")?;
    create(store, &alice, &note, "alice's secret").await?;
    create(store, &bob, &note, "bob's own").await?;
    let sent = message_payload(&alice, &bob, "from alice", at(2))?;
    store.append(at_end(&bob, vec![new_event(sent, at(2))?])).await?;
    let record = |owner: &UserId| IdempotencyWrite {
        owner: owner.clone(),
        record: IdempotencyRecord {
            key: "k".into(),
            fingerprint: "f".into(),
            outcome: json!({}),
            recorded_at: at(3),
        },
        expired_before: at(0),
    };
    store.remember(record(&alice)).await?;

    assert_eq!(store.erased(&alice).await?, None);
    assert_eq!(store.erase_owner(&alice, at(10)).await?, at(10));
    assert_eq!(
        store.erase_owner(&alice, at(20)).await?,
        at(10),
        "a repeat keeps the first time"
    );
    assert_eq!(store.erased(&alice).await?, Some(at(10)));
    assert_eq!(store.erased(&bob).await?, None);

    assert!(store.read_feed(&alice, Seq(0), 100).await?.is_empty());
    assert_eq!(store.last_seq(&alice).await?, Seq(0));
    assert_eq!(store.item_head(&alice, &note).await?.version, Version::NONE);
    assert_eq!(store.idempotency(&alice, "k").await?, None);
    assert_eq!(store.owners(None, 10).await?, vec![bob.clone()]);

    let again = item_payload(
        &note,
        Version(1),
        Some(object(json!({}))),
        Visibility::Private,
        true,
        at(11),
    );
    let refused = store.append(at_end(&alice, vec![new_event(again, at(11))?])).await;
    assert!(
        matches!(refused, Err(AppendError::Erased { at: when }) if when == at(10)),
        "{refused:?}"
    );
    let refused = store.remember(record(&alice)).await;
    assert!(matches!(refused, Err(AppendError::Erased { .. })), "{refused:?}");

    let bobs = store.read_feed(&bob, Seq(0), 100).await?;
    assert_eq!(bobs.len(), 2, "Bob keeps his item and the message Alice sent");
    assert_eq!(store.item_head(&bob, &note).await?.version, Version(1));
    Ok(())
}

/// The change feed yields nothing of an erased user, everything of the others, and its positions keep
/// moving forward after the erasure.
pub async fn check_the_feed_yields_nothing_of_an_erased_user<F>(factory: &F) -> Outcome
where
    F: StoreFactory,
    F::Store: ChangeFeed,
{
    let store = factory.fresh().await?;
    erase_alice(&store).await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let (changes, _) = store.changes_after(0, 100).await?;
    assert!(
        changes.iter().all(|e| e.owner != alice),
        "the feed yields nothing of Alice"
    );
    assert_eq!(changes.len(), 2, "and everything of Bob");

    // Writes of others go on, and the feed's positions keep moving forward.
    let before = store.commit_position()?;
    create(&store, &bob, &key("notes", "n2")?, "later").await?;
    assert!(store.commit_position()? > before);
    Ok(())
}

/// An erasure run again (as after an interruption) answers the first time and leaves the partition
/// empty, and a user who was never erased keeps every event and can still write.
pub async fn check_a_repeated_erasure_finishes_and_a_live_user_is_untouched<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (carol, dave) = (user("carol")?, user("dave")?);
    for i in 0..30 {
        create(&store, &carol, &key("notes", &format!("c{i}"))?, "carol's").await?;
    }
    create(&store, &dave, &key("notes", "d1")?, "dave's").await?;
    assert_eq!(store.erase_owner(&carol, at(5)).await?, at(5));
    assert_eq!(store.erase_owner(&carol, at(6)).await?, at(5));
    assert!(store.read_feed(&carol, Seq(0), 100).await?.is_empty());
    assert_eq!(store.erased(&dave).await?, None);
    assert_eq!(store.read_feed(&dave, Seq(0), 100).await?.len(), 1);
    create(&store, &dave, &key("notes", "d2")?, "dave's second").await?;
    assert_eq!(store.last_seq(&dave).await?, Seq(2));
    Ok(())
}

/// Expands to one test per erasure check of the store, against the stores `$factory` makes.
#[macro_export]
macro_rules! erasure_contract {
    ($name:ident, $factory:expr) => {
        $crate::contract_tests!($name, erasure, $factory;
            check_an_erased_stream_is_gone_and_refuses_writes,
            check_a_repeated_erasure_finishes_and_a_live_user_is_untouched,
        );
    };
}

/// Expands to one test per erasure check of a store that is its own change feed.
#[macro_export]
macro_rules! erasure_feed_contract {
    ($name:ident, $factory:expr) => {
        $crate::contract_tests!($name, erasure, $factory;
            check_the_feed_yields_nothing_of_an_erased_user,
        );
    };
}
