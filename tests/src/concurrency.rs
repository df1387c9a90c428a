//! Many writes of one user at once, through the services, on any event store: no write is refused
//! because another write of the same user moved the stream, and the user's feed ends complete and
//! gap-free.
//!
//! Each check spawns its writers as tasks of the test's multi-threaded runtime, so they really run at the
//! same time, and waits for all of them; nothing sleeps. `tests/tests/concurrent_writes.rs` runs them on
//! the memory and SQLite stores, `tests/tests/aws_adapters.rs` on DynamoDB (moto).

use std::collections::BTreeSet;
use std::sync::Arc;

use rookery_adapters_memory::MemoryPushGateway;
use rookery_domain::projection::FeedChange;
use rookery_domain::{Precondition, Seq, Version};
use rookery_ports::{AppError, Caller, EventStore, SyncService};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::fixtures::{BoxError, Outcome, key, object, user};
use crate::memory::{app_with, memory_media};

/// Every entry of `caller`'s `/v1/sync` feed, from the beginning, paged as a client pages it.
async fn whole_feed<S: EventStore>(sync: &SyncService<S>, caller: &Caller) -> Result<Vec<FeedChange>, BoxError> {
    let mut changes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = sync.sync(caller, cursor.as_deref(), Some(100)).await?;
        let done = page.changes.is_empty() || !page.has_more;
        changes.extend(page.changes);
        if done {
            return Ok(changes);
        }
        cursor = Some(page.next_cursor);
    }
}

/// Every seq of `owner`'s stream, in order.
async fn stream_seqs<S: EventStore>(store: &S, owner: &rookery_domain::UserId) -> Result<Vec<u64>, BoxError> {
    let mut seqs = Vec::new();
    loop {
        let after = Seq(seqs.last().copied().unwrap_or(0));
        let events = store.read_feed(owner, after, 500).await?;
        if events.is_empty() {
            return Ok(seqs);
        }
        seqs.extend(events.iter().map(|e| e.seq.0));
    }
}

/// How many times each writer of [`writes_of_one_user_to_distinct_items_all_apply`] patches its item.
const PATCHES: u64 = 3;

/// `writers` tasks of one user each create an item of their own and then merge-patch it a few times,
/// while `writers / 8` tasks of another user send the first one messages and `writers / 8` tasks of the
/// first declare media, all released at once: every write succeeds, and the first user's stream and its
/// `/v1/sync` feed hold seqs `1..=N` with nothing missing: every item change, message and declaration.
///
/// # Errors
/// When a write fails or the feed is incomplete.
pub async fn writes_of_one_user_to_distinct_items_all_apply<S: EventStore>(store: S, writers: usize) -> Outcome {
    let app = Arc::new(app_with(store.clone(), MemoryPushGateway::new(), memory_media()));
    let (alice, bob) = (Caller::new(user("alice")?), Caller::new(user("bob")?));
    let others = (writers / 8).max(1);
    // Every task waits here until all are spawned, so their first writes really race.
    let start = Arc::new(Barrier::new(writers + 2 * others));
    let mut tasks: JoinSet<Result<(), String>> = JoinSet::new();
    for w in 0..writers {
        let (app, alice, start) = (Arc::clone(&app), alice.clone(), Arc::clone(&start));
        let k = key("notes", &format!("w{w:03}"))?;
        tasks.spawn(async move {
            start.wait().await;
            let put = app
                .items
                .put_item(&alice, &k, object(json!({"writer": w})), None, Precondition::None, None)
                .await
                .map_err(|e| format!("writer {w}: put: {e:?}"))?;
            if !put.created {
                return Err(format!("writer {w}: put did not create its item"));
            }
            for patch in 1..=PATCHES {
                app.items
                    .patch_item(&alice, &k, json!({"data": {"patch": patch}}), Precondition::None, None)
                    .await
                    .map_err(|e| format!("writer {w}: patch {patch}: {e:?}"))?;
            }
            Ok(())
        });
    }
    for m in 0..others {
        let (app, bob, to, start) = (Arc::clone(&app), bob.clone(), alice.user.clone(), Arc::clone(&start));
        tasks.spawn(async move {
            start.wait().await;
            app.messages
                .send_message(&bob, to, format!("message {m}"), Default::default(), None)
                .await
                .map(|_| ())
                .map_err(|e| format!("message {m}: {e:?}"))
        });
    }
    for d in 0..others {
        let (app, alice, start) = (Arc::clone(&app), alice.clone(), Arc::clone(&start));
        tasks.spawn(async move {
            start.wait().await;
            app.media
                .create_media(&alice, "image/png", 10 + d as u64, None)
                .await
                .map(|_| ())
                .map_err(|e| format!("media {d}: {e:?}"))
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Err(failure) = joined? {
            failures.push(failure);
        }
    }
    assert_eq!(failures, Vec::<String>::new(), "every write succeeds");

    let total = writers as u64 * (1 + PATCHES) + 2 * others as u64;
    assert_eq!(
        stream_seqs(&store, &alice.user).await?,
        (1..=total).collect::<Vec<_>>(),
        "the stream is complete and consecutive"
    );
    let feed = whole_feed(&app.sync, &alice).await?;
    assert_eq!(
        feed.iter().map(|change| change.seq().0).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "/v1/sync is complete and consecutive"
    );
    let items: BTreeSet<(String, u64)> = feed
        .iter()
        .filter_map(|change| match change {
            FeedChange::Item(h) => Some((h.id.to_string(), h.version.0)),
            _ => None,
        })
        .collect();
    let expected: BTreeSet<(String, u64)> = (0..writers)
        .flat_map(|w| (1..=1 + PATCHES).map(move |version| (format!("w{w:03}"), version)))
        .collect();
    assert_eq!(items, expected, "sync shows every item write");
    let messages = feed.iter().filter(|c| matches!(c, FeedChange::Message(_))).count();
    assert_eq!(messages, others, "sync shows every message");
    let media = feed.iter().filter(|c| matches!(c, FeedChange::Media(_))).count();
    assert_eq!(media, others, "and every media declaration");
    for w in 0..writers {
        let item = app
            .items
            .get_item(&alice, &key("notes", &format!("w{w:03}"))?, None)
            .await?;
        assert_eq!(Value::Object(item.data), json!({"writer": w, "patch": PATCHES}));
    }
    Ok(())
}

/// `patchers` tasks of one user merge-patch the same item at once, without `If-Match`: each is planned
/// again on top of the others until it applies, so every patch is in the final item, which has one
/// version per patch. Then `patchers` tasks patch it at once with `If-Match` on its current version:
/// exactly one applies, and every other gets a conflict carrying the event it missed.
///
/// # Errors
/// When a write fails or its outcome is not the expected one.
pub async fn merge_patches_of_one_item_all_apply<S: EventStore>(store: S, patchers: usize) -> Outcome {
    let app = Arc::new(app_with(store, MemoryPushGateway::new(), memory_media()));
    let alice = Caller::new(user("alice")?);
    let k = key("notes", "shared")?;
    app.items
        .put_item(&alice, &k, object(json!({})), None, Precondition::None, None)
        .await?;

    let start = Arc::new(Barrier::new(patchers));
    let mut tasks: JoinSet<Result<(), String>> = JoinSet::new();
    for p in 0..patchers {
        let (app, alice, k, start) = (Arc::clone(&app), alice.clone(), k.clone(), Arc::clone(&start));
        tasks.spawn(async move {
            start.wait().await;
            app.items
                .patch_item(
                    &alice,
                    &k,
                    json!({"data": {format!("p{p:03}"): p}}),
                    Precondition::None,
                    None,
                )
                .await
                .map(|_| ())
                .map_err(|e| format!("patcher {p}: {e:?}"))
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Err(failure) = joined? {
            failures.push(failure);
        }
    }
    assert_eq!(failures, Vec::<String>::new(), "every patch applies");
    let item = app.items.get_item(&alice, &k, None).await?;
    let expected: serde_json::Map<String, Value> = (0..patchers).map(|p| (format!("p{p:03}"), json!(p))).collect();
    assert_eq!(item.data, expected, "every patch is in the item");
    let version = Version(patchers as u64 + 1);
    assert_eq!(item.version, version, "one version per patch");

    let start = Arc::new(Barrier::new(patchers));
    let mut tasks = JoinSet::new();
    for p in 0..patchers {
        let (app, alice, k, start) = (Arc::clone(&app), alice.clone(), k.clone(), Arc::clone(&start));
        tasks.spawn(async move {
            start.wait().await;
            app.items
                .patch_item(
                    &alice,
                    &k,
                    json!({"data": {"last": p}}),
                    Precondition::IfMatch(version),
                    None,
                )
                .await
        });
    }
    let mut wins = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok(_) => wins += 1,
            Err(AppError::Conflict { current, events }) => {
                assert_eq!(current, Some(version.next()), "the conflict names the winner's version");
                let missed: Vec<Version> = events.iter().map(|e| e.version).collect();
                assert_eq!(missed, vec![version.next()], "and carries the event it missed");
            }
            Err(other) => return Err(format!("If-Match patch: unexpected {other:?}").into()),
        }
    }
    assert_eq!(wins, 1, "exactly one If-Match patch applies");
    Ok(())
}
