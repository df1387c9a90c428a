//! The change feed contract: every MUST of `rookery_ports::ChangeFeed`, for event stores that are their
//! own change log (the memory and SQLite stores; on AWS, DynamoDB Streams plays this part).
//!
//! The checks take the event store suite's [`StoreFactory`], for stores that also implement
//! [`ChangeFeed`]; [`crate::change_feed_contract!`] turns the suite into one test per check.

use std::time::Duration;

use rookery_domain::{Seq, UserId};
use rookery_ports::{AppendBatch, ChangeFeed, EventStore, IdempotencyRecord, IdempotencyWrite};
use serde_json::json;

use crate::contract::event_store::StoreFactory;
use crate::fixtures::{BoxError, Outcome, at, message_payload, new_event, user};

/// How long a wait that must complete may take.
const PROMPTLY: Duration = Duration::from_secs(10);

/// Appends one message to `owner`'s stream, continuing it.
async fn message<S: EventStore>(store: &S, owner: &UserId, text: &str) -> Result<(), BoxError> {
    let seq = store.last_seq(owner).await?;
    let sender = user("sender")?;
    store
        .append(AppendBatch {
            owner: owner.clone(),
            expected_seq: Some(seq),
            item_versions: Vec::new(),
            events: vec![new_event(message_payload(&sender, owner, text, at(1))?, at(seq.0 + 1))?],
            idempotency: None,
        })
        .await?;
    Ok(())
}

/// The text of each message event, in the order given.
fn texts(events: &[rookery_domain::StoredEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match &event.payload {
            rookery_domain::EventPayload::MessageReceived(message) => Some(message.text.clone()),
            _ => None,
        })
        .collect()
}

/// A new store's feed is empty, at position 0.
pub async fn check_a_new_feed_is_empty_at_position_zero<F>(factory: &F) -> Outcome
where
    F: StoreFactory,
    F::Store: ChangeFeed,
{
    let store = factory.fresh().await?;
    assert_eq!(ChangeFeed::commit_position(&store)?, 0);
    assert_eq!(ChangeFeed::changes_after(&store, 0, 10).await?, (Vec::new(), 0));
    Ok(())
}

/// Following the feed page by page yields every event once, in commit order, each user's in seq order,
/// and the commit position is the position of the last one.
pub async fn check_every_event_comes_once_in_commit_order<F>(factory: &F) -> Outcome
where
    F: StoreFactory,
    F::Store: ChangeFeed,
{
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let mut expected = Vec::new();
    for n in 0..7 {
        let owner = if n % 3 == 0 { &bob } else { &alice };
        let text = format!("m{n}");
        message(&store, owner, &text).await?;
        expected.push(text);
    }
    let mut position = 0;
    let mut seen = Vec::new();
    loop {
        let (events, next) = ChangeFeed::changes_after(&store, position, 3).await?;
        assert!(events.len() <= 3, "a page holds at most the limit");
        if events.is_empty() {
            assert_eq!(next, position, "an empty page answers the position it was asked from");
            break;
        }
        assert!(next > position, "the position moves forward with every page");
        seen.extend(events);
        position = next;
    }
    assert_eq!(texts(&seen), expected, "every event once, in commit order");
    for owner in [&alice, &bob] {
        let seqs: Vec<Seq> = seen.iter().filter(|e| &e.owner == owner).map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{owner}'s events in seq order");
    }
    assert_eq!(ChangeFeed::commit_position(&store)?, position);
    Ok(())
}

/// A wait completes at once when an event after the position is already committed, and as soon as one
/// is committed otherwise; an idempotency record alone commits no event and wakes nobody.
pub async fn check_waiting_for_a_commit_completes_once_one_is_past_the_position<F>(factory: &F) -> Outcome
where
    F: StoreFactory,
    F::Store: ChangeFeed,
{
    let store = factory.fresh().await?;
    let alice = user("alice")?;
    message(&store, &alice, "first").await?;
    let already = tokio::time::timeout(PROMPTLY, store.wait_for_commit(0)).await?;
    assert_eq!(already, Some(ChangeFeed::commit_position(&store)?));

    let position = ChangeFeed::commit_position(&store)?;
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.wait_for_commit(position).await }
    });
    store
        .remember(IdempotencyWrite {
            owner: alice.clone(),
            record: IdempotencyRecord {
                key: "k".into(),
                fingerprint: "f".into(),
                outcome: json!({}),
                recorded_at: at(5),
            },
            expired_before: at(0),
        })
        .await?;
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "a record alone is not a commit of the feed");
    message(&store, &alice, "second").await?;
    let woke = tokio::time::timeout(PROMPTLY, waiting).await??;
    let now = ChangeFeed::commit_position(&store)?;
    assert_eq!(woke, Some(now));
    assert!(now > position);
    let (events, _) = ChangeFeed::changes_after(&store, position, 10).await?;
    assert_eq!(
        texts(&events),
        vec!["second".to_owned()],
        "what woke the wait is readable"
    );
    Ok(())
}

/// Consumer positions start at the beginning, are kept per consumer and answer the last one stored.
pub async fn check_consumer_positions_are_kept_per_consumer<F>(factory: &F) -> Outcome
where
    F: StoreFactory,
    F::Store: ChangeFeed,
{
    let store = factory.fresh().await?;
    assert_eq!(
        store.consumer_position("indexer").await?,
        0,
        "a new consumer starts at 0"
    );
    store.set_consumer_position("indexer", 3).await?;
    store.set_consumer_position("push dispatcher", 1).await?;
    store.set_consumer_position("indexer", 5).await?;
    assert_eq!(store.consumer_position("indexer").await?, 5);
    assert_eq!(store.consumer_position("push dispatcher").await?, 1);
    assert_eq!(store.consumer_position("someone else").await?, 0);
    Ok(())
}

/// One test per check of the change feed contract, for a [`StoreFactory`] whose stores are change feeds.
#[macro_export]
macro_rules! change_feed_contract {
    ($name:ident, $factory:expr) => {
        $crate::contract_tests!($name, change_feed, $factory;
            check_a_new_feed_is_empty_at_position_zero,
            check_every_event_comes_once_in_commit_order,
            check_waiting_for_a_commit_completes_once_one_is_past_the_position,
            check_consumer_positions_are_kept_per_consumer,
        );
    };
}
