//! The erasure contract of [`EventStore::erase_owner`] and the change feed after it, run against the
//! adapters that can erase (memory and SQLite).
//!
//! Not part of `event_store_contract!`: the DynamoDB store refuses erasure until its partition erasure
//! is built, and a suite it cannot pass would have to be faked or skipped there. It gets this suite
//! with one line once it can erase.

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
pub async fn check_an_erased_stream_is_gone_and_refuses_writes<F>(factory: &F) -> Outcome
where
    F: StoreFactory,
    F::Store: ChangeFeed,
{
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let note = key("notes", "n1")?;
    create(&store, &alice, &note, "alice's secret").await?;
    create(&store, &bob, &note, "bob's own").await?;
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

/// Expands to one test per erasure check, against the stores `$factory` makes.
#[macro_export]
macro_rules! erasure_contract {
    ($name:ident, $factory:expr) => {
        $crate::contract_tests!($name, erasure, $factory;
            check_an_erased_stream_is_gone_and_refuses_writes,
        );
    };
}
