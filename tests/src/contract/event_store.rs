//! The event store contract: every MUST of `rookery_ports::EventStore`, checked error by error.
//!
//! Each `check_*` function takes a [`StoreFactory`] and asks it for a fresh, empty store, so checks never
//! see each other's data. Nothing here knows which adapter it runs against; [`crate::event_store_contract!`]
//! turns the whole suite into one test per check for a given factory.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use rookery_domain::device::{self, DeviceEvent, Devices};
use rookery_domain::history::item_after;
use rookery_domain::{
    EventPayload, Item, ItemHead, ItemKey, MediaObject, NewEvent, Platform, Seq, StoredEvent, Timestamp, UserId,
    Version, Visibility,
};
use rookery_ports::store::MAX_EVENTS_PER_APPEND;
use rookery_ports::{AppendBatch, AppendError, EventStore, IdempotencyRecord, IdempotencyWrite};
use serde_json::{Value, json};

use crate::fixtures::{
    BoxError, Outcome, at, collection, device, item_payload, key, media_object, message_payload, new_event, object,
    registered, user,
};

/// Makes a fresh, empty, isolated event store for one check.
pub trait StoreFactory: Send + Sync {
    /// The adapter under test.
    type Store: EventStore;

    /// A new store that shares nothing with any store made before.
    ///
    /// # Errors
    /// When the adapter cannot be set up (an emulator unreachable, a table not created).
    fn fresh(&self) -> impl Future<Output = Result<Self::Store, BoxError>> + Send;
}

/// A batch with no item versions and no idempotency record.
fn batch(owner: &UserId, expected_seq: u64, events: Vec<NewEvent>) -> AppendBatch {
    AppendBatch {
        owner: owner.clone(),
        expected_seq: Some(Seq(expected_seq)),
        item_versions: Vec::new(),
        events,
        idempotency: None,
    }
}

/// A batch at the end of `owner`'s stream (naming no seq), with no item versions and no idempotency record.
fn at_end(owner: &UserId, events: Vec<NewEvent>) -> AppendBatch {
    AppendBatch {
        expected_seq: None,
        ..batch(owner, 0, events)
    }
}

/// Writes one item change through the store's own heads: created if not live, replaced if live,
/// deleted for `data: None`. Returns the stored event.
async fn write_item<S: EventStore>(
    store: &S,
    owner: &UserId,
    key: &ItemKey,
    data: Option<Value>,
    visibility: Visibility,
    when: Timestamp,
) -> Result<StoredEvent, BoxError> {
    let seq = store.last_seq(owner).await?;
    let head = store.item_head(owner, key).await?;
    let created_at = head.item.as_ref().map_or(when, |item| item.created_at);
    let payload = item_payload(
        key,
        head.version.next(),
        data.map(object),
        visibility,
        !head.is_live(),
        created_at,
    );
    let mut stored = store
        .append(AppendBatch {
            owner: owner.clone(),
            expected_seq: Some(seq),
            item_versions: vec![(key.clone(), head.version)],
            events: vec![new_event(payload, when)?],
            idempotency: None,
        })
        .await?;
    let event = stored.pop().ok_or("append returned no event")?;
    Ok(event)
}

/// Appends one event of any kind at the end of `owner`'s stream.
async fn write_event<S: EventStore>(
    store: &S,
    owner: &UserId,
    payload: EventPayload,
    when: Timestamp,
) -> Result<StoredEvent, BoxError> {
    let seq = store.last_seq(owner).await?;
    let mut stored = store
        .append(batch(owner, seq.0, vec![new_event(payload, when)?]))
        .await?;
    Ok(stored.pop().ok_or("append returned no event")?)
}

/// Every event of `owner`'s stream, read in pages of `page`.
async fn read_all<S: EventStore>(store: &S, owner: &UserId, page: usize) -> Result<Vec<StoredEvent>, BoxError> {
    let mut all: Vec<StoredEvent> = Vec::new();
    loop {
        let after = all.last().map_or(Seq(0), |e| e.seq);
        let events = store.read_feed(owner, after, page).await?;
        if events.is_empty() {
            return Ok(all);
        }
        all.extend(events);
    }
}

/// Everything a store shows about one user, to compare before and after a refused append.
#[derive(Debug, PartialEq)]
struct Snapshot {
    last_seq: Seq,
    feed: Vec<StoredEvent>,
    messages: Vec<StoredEvent>,
    heads: Vec<ItemHead>,
    histories: Vec<Vec<StoredEvent>>,
    lists: Vec<Vec<Item>>,
    devices: Devices,
    media: Vec<Option<MediaObject>>,
    records: Vec<Option<IdempotencyRecord>>,
    owners: Vec<UserId>,
}

async fn snapshot<S: EventStore>(
    store: &S,
    owner: &UserId,
    keys: &[ItemKey],
    media: &[MediaObject],
    record_keys: &[&str],
) -> Result<Snapshot, BoxError> {
    let mut snap = Snapshot {
        last_seq: store.last_seq(owner).await?,
        feed: read_all(store, owner, 1000).await?,
        messages: store.read_messages(owner, Seq(0), 1000).await?,
        heads: Vec::new(),
        histories: Vec::new(),
        lists: Vec::new(),
        devices: store.devices(owner).await?,
        media: Vec::new(),
        records: Vec::new(),
        owners: store.owners(None, 1000).await?,
    };
    let collections: BTreeSet<_> = keys.iter().map(|k| k.collection.clone()).collect();
    for key in keys {
        snap.heads.push(store.item_head(owner, key).await?);
        snap.histories
            .push(store.item_history(owner, key, Version::NONE, 1000).await?);
    }
    for collection in &collections {
        snap.lists.push(store.list_items(owner, collection, None, 1000).await?);
    }
    for object in media {
        snap.media.push(store.media(owner, &object.id).await?);
    }
    for record in record_keys {
        snap.records.push(store.idempotency(owner, record).await?);
    }
    Ok(snap)
}

fn record(
    owner: &UserId,
    key: &str,
    fingerprint: &str,
    recorded_at: Timestamp,
    expired_before: Timestamp,
) -> IdempotencyWrite {
    IdempotencyWrite {
        owner: owner.clone(),
        record: IdempotencyRecord {
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            outcome: json!({ "fingerprint": fingerprint, "nested": { "list": [1, 2, 3] } }),
            recorded_at,
        },
        expired_before,
    }
}

/// An append to an empty stream gets seqs 1.., the next one continues where it ended, and each
/// stored event is exactly the new event at its seq (id, time, payload and metadata kept).
pub async fn check_append_assigns_consecutive_seqs<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    assert_eq!(store.last_seq(&alice).await?, Seq(0), "an empty stream's last seq is 0");

    let first: Vec<NewEvent> = (0..3)
        .map(|i| new_event(message_payload(&bob, &alice, &format!("hello {i}"), at(i))?, at(i)))
        .collect::<Result<_, _>>()?;
    let stored = store.append(batch(&alice, 0, first.clone())).await?;
    let expected: Vec<StoredEvent> = first
        .into_iter()
        .zip(1..)
        .map(|(e, s)| e.stored(&alice, Seq(s)))
        .collect();
    assert_eq!(stored, expected, "events are stored as given, with seqs 1, 2, 3");
    assert_eq!(store.last_seq(&alice).await?, Seq(3));

    let mut second = new_event(message_payload(&bob, &alice, "again", at(10))?, at(10))?;
    second.meta.request_id = Some("req-1".into());
    second.meta.idempotency_key = Some("key-1".into());
    second.meta.actor = Some(bob.clone());
    let third = new_event(message_payload(&bob, &alice, "and again", at(11))?, at(11))?;
    let stored = store
        .append(batch(&alice, 3, vec![second.clone(), third.clone()]))
        .await?;
    assert_eq!(
        stored,
        vec![second.stored(&alice, Seq(4)), third.stored(&alice, Seq(5))],
        "metadata is kept"
    );
    assert_eq!(store.last_seq(&alice).await?, Seq(5));

    let feed = read_all(&store, &alice, 100).await?;
    assert_eq!(feed.iter().map(|e| e.seq.0).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(feed[3..], stored[..], "reads return what the append returned");

    // Streams are per owner: bob's starts at 1 whatever alice's holds.
    assert_eq!(store.last_seq(&bob).await?, Seq(0));
    let bobs = store
        .append(batch(
            &bob,
            0,
            vec![new_event(message_payload(&alice, &bob, "hi", at(20))?, at(20))?],
        ))
        .await?;
    assert_eq!(bobs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![Seq(1)]);
    assert_eq!(
        store.last_seq(&alice).await?,
        Seq(5),
        "another stream's append does not move this one"
    );
    Ok(())
}

/// An append whose expected seq is behind (or ahead of) the stream's last seq is `SeqMoved` with the
/// actual last seq, and writes nothing.
pub async fn check_stale_expected_seq_is_seq_moved<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let k = key("notes", "n1")?;
    write_event(&store, &alice, message_payload(&bob, &alice, "one", at(0))?, at(0)).await?;
    write_event(&store, &alice, message_payload(&bob, &alice, "two", at(1))?, at(1)).await?;
    let before = snapshot(&store, &alice, std::slice::from_ref(&k), &[], &[]).await?;

    for expected in [0, 1, 3, 100] {
        let payload = item_payload(
            &k,
            Version(1),
            Some(object(json!({"t": "x"}))),
            Visibility::Private,
            true,
            at(2),
        );
        let result = store
            .append(AppendBatch {
                owner: alice.clone(),
                expected_seq: Some(Seq(expected)),
                item_versions: vec![(k.clone(), Version::NONE)],
                events: vec![new_event(payload, at(2))?],
                idempotency: None,
            })
            .await;
        assert_eq!(
            result,
            Err(AppendError::SeqMoved { current: Seq(2) }),
            "expected seq {expected}"
        );
    }
    assert_eq!(
        snapshot(&store, &alice, &[k], &[], &[]).await?,
        before,
        "a refused append changes nothing"
    );
    Ok(())
}

/// An append that names no seq gets the seqs after the stream's last one, whatever was appended since the
/// writer looked: 1.. on an empty stream, then consecutive with appends that named a seq; it is never
/// `SeqMoved`. An idempotency record appended alone without a seq moves nothing.
pub async fn check_append_without_seq_continues_the_stream<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let k = key("notes", "n1")?;

    let first: Vec<NewEvent> = (0..2)
        .map(|i| new_event(message_payload(&bob, &alice, &format!("hello {i}"), at(i))?, at(i)))
        .collect::<Result<_, _>>()?;
    let stored = store.append(at_end(&alice, first.clone())).await?;
    let expected: Vec<StoredEvent> = first
        .into_iter()
        .zip(1..)
        .map(|(e, s)| e.stored(&alice, Seq(s)))
        .collect();
    assert_eq!(stored, expected, "an empty stream starts at seq 1");

    let named = store
        .append(batch(
            &alice,
            2,
            vec![new_event(message_payload(&bob, &alice, "named", at(3))?, at(3))?],
        ))
        .await?;
    assert_eq!(named.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![Seq(3)]);

    let payload = item_payload(
        &k,
        Version(1),
        Some(object(json!({"v": 1}))),
        Visibility::Private,
        true,
        at(4),
    );
    let created = store
        .append(AppendBatch {
            item_versions: vec![(k.clone(), Version::NONE)],
            ..at_end(&alice, vec![new_event(payload, at(4))?])
        })
        .await?;
    assert_eq!(created.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![Seq(4)]);
    assert_eq!(store.item_head(&alice, &k).await?.version, Version(1));

    let solo = store
        .append(AppendBatch {
            idempotency: Some(record(&alice, "solo", "solo", at(5), at(0))),
            ..at_end(&alice, Vec::new())
        })
        .await?;
    assert_eq!(solo, Vec::new(), "a record alone stores no event");
    assert!(store.idempotency(&alice, "solo").await?.is_some());
    assert_eq!(store.last_seq(&alice).await?, Seq(4), "and moves no seq");

    let feed = read_all(&store, &alice, 100).await?;
    assert_eq!(feed.iter().map(|e| e.seq.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(feed[..2], stored[..], "reads return what the append returned");
    assert_eq!(feed[3..], created[..]);

    let bobs = store
        .append(at_end(
            &bob,
            vec![new_event(message_payload(&alice, &bob, "hi", at(6))?, at(6))?],
        ))
        .await?;
    assert_eq!(
        bobs.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![Seq(1)],
        "streams are per owner"
    );
    assert_eq!(store.last_seq(&alice).await?, Seq(4));
    Ok(())
}

/// Appends that name no seq, racing from many writers of one user to different items (each with its
/// idempotency record) and with messages to that user, all succeed: the store serializes them, so the
/// seqs they get are exactly `1..=N`, none given twice, and every item head and record is there.
pub async fn check_concurrent_appends_without_seq_all_succeed<F: StoreFactory>(factory: &F) -> Outcome {
    const WRITERS: usize = 16;
    const ROUNDS: u64 = 2;
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (store, alice, bob) = (store.clone(), alice.clone(), bob.clone());
        let k = key("notes", &format!("w{w}"))?;
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            for round in 0..ROUNDS {
                let payload = item_payload(
                    &k,
                    Version(round + 1),
                    Some(object(json!({"w": w, "round": round}))),
                    Visibility::Private,
                    round == 0,
                    at(0),
                );
                let stored = store
                    .append(AppendBatch {
                        owner: alice.clone(),
                        expected_seq: None,
                        item_versions: vec![(k.clone(), Version(round))],
                        events: vec![new_event(payload, at(round))?],
                        idempotency: Some(record(&alice, &format!("w{w}-r{round}"), "f", at(1), at(0))),
                    })
                    .await
                    .map_err(|e| format!("writer {w}, round {round}: {e}"))?;
                seqs.extend(stored.iter().map(|e| e.seq.0));
            }
            let message = new_event(message_payload(&bob, &alice, &format!("from {w}"), at(2))?, at(2))?;
            let stored = store
                .append(at_end(&alice, vec![message]))
                .await
                .map_err(|e| format!("writer {w}, message: {e}"))?;
            seqs.extend(stored.iter().map(|e| e.seq.0));
            Ok::<_, BoxError>(seqs)
        });
    }
    let mut seqs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        seqs.extend(joined??);
    }
    seqs.sort_unstable();
    let total = WRITERS as u64 * (ROUNDS + 1);
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "every append got its own consecutive seqs"
    );
    let feed = read_all(&store, &alice, 100).await?;
    assert_eq!(
        feed.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        seqs,
        "the feed holds them all"
    );
    assert_eq!(store.last_seq(&alice).await?, Seq(total));
    for w in 0..WRITERS {
        let head = store.item_head(&alice, &key("notes", &format!("w{w}"))?).await?;
        assert_eq!(head.version, Version(ROUNDS), "writer {w}'s item");
        assert!(store.idempotency(&alice, &format!("w{w}-r1")).await?.is_some());
    }
    Ok(())
}

/// Without a seq, the item versions still guard an append: of many appends racing on one item with the
/// version they read, exactly one wins and the others are `VersionMoved` (never `SeqMoved`), even though
/// other items moved the stream since.
pub async fn check_append_without_seq_still_checks_versions<F: StoreFactory>(factory: &F) -> Outcome {
    const WRITERS: usize = 12;
    let store = factory.fresh().await?;
    let alice = user("alice")?;
    let (k, other) = (key("notes", "contended")?, key("notes", "other")?);
    for round in 0..3u64 {
        // Another item moves the stream between rounds: a seq a racer read would be stale, a version is not.
        write_item(
            &store,
            &alice,
            &other,
            Some(json!({"round": round})),
            Visibility::Private,
            at(round),
        )
        .await?;
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let (store, alice, k) = (store.clone(), alice.clone(), k.clone());
            let payload = item_payload(
                &k,
                Version(round + 1),
                Some(object(json!({"w": w}))),
                Visibility::Private,
                round == 0,
                at(0),
            );
            let event = new_event(payload, at(round))?;
            tasks.spawn(async move {
                store
                    .append(AppendBatch {
                        item_versions: vec![(k, Version(round))],
                        ..at_end(&alice, vec![event])
                    })
                    .await
            });
        }
        let mut wins = 0;
        while let Some(joined) = tasks.join_next().await {
            match joined? {
                Ok(_) => wins += 1,
                Err(AppendError::VersionMoved { current, .. }) => {
                    assert_eq!(current, Version(round + 1), "round {round}")
                }
                Err(other) => return Err(format!("round {round}: unexpected {other}").into()),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one writer wins");
        assert_eq!(store.item_head(&alice, &k).await?.version, Version(round + 1));
    }
    let feed = read_all(&store, &alice, 100).await?;
    assert_eq!(
        feed.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>(),
        "only the winners' events are stored, consecutively"
    );
    Ok(())
}

/// `append_rebasing`: a write whose item moved is either re-planned on the head it meets (a store that
/// serializes appends) or refused as `VersionMoved` (one that cannot), never written at a stale version;
/// every winner's event is the one its rebase made, versions and seqs stay consecutive, and a rebase that
/// declines leaves the append refused with nothing written.
pub async fn check_rebasing_append_replans_or_refuses<F: StoreFactory>(factory: &F) -> Outcome {
    const WRITERS: u64 = 12;
    let store = factory.fresh().await?;
    let alice = user("alice")?;
    let k = key("notes", "hot")?;
    write_item(
        &store,
        &alice,
        &k,
        Some(json!({"w": "first"})),
        Visibility::Private,
        at(0),
    )
    .await?;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (store, alice, k) = (store.clone(), alice.clone(), k.clone());
        // Every writer read version 1; all but one will find the item moved.
        let payload = item_payload(
            &k,
            Version(2),
            Some(object(json!({"w": w}))),
            Visibility::Private,
            false,
            at(0),
        );
        let event = new_event(payload, at(w + 1))?;
        let rebase_key = k.clone();
        let rebase: rookery_ports::Rebase = std::sync::Arc::new(move |head: &ItemHead| {
            let next = head.version.next();
            Some(item_payload(
                &rebase_key,
                next,
                Some(object(json!({"w": w}))),
                Visibility::Private,
                false,
                at(0),
            ))
        });
        tasks.spawn(async move {
            let outcome = store
                .append_rebasing(
                    AppendBatch {
                        item_versions: vec![(k, Version(1))],
                        ..at_end(&alice, vec![event])
                    },
                    rebase,
                )
                .await;
            (w, outcome)
        });
    }
    let mut versions = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            (w, Ok(events)) => {
                let [event] = events.as_slice() else {
                    return Err(format!("writer {w}: {} events stored", events.len()).into());
                };
                let change = event.payload.as_item().ok_or("not an item event")?;
                let data = change.state.as_ref().ok_or("a deleted item")?.data.get("w").cloned();
                assert_eq!(data, Some(json!(w)), "writer {w} stored its own data");
                assert!(
                    versions.insert(change.version.0),
                    "version {} given twice",
                    change.version.0
                );
            }
            (_, Err(AppendError::VersionMoved { .. })) => {}
            (w, Err(other)) => return Err(format!("writer {w}: unexpected {other}").into()),
        }
    }
    let wins = versions.len() as u64;
    assert!(wins >= 1, "at least the first writer wins");
    assert_eq!(
        versions,
        (2..=wins + 1).collect::<BTreeSet<_>>(),
        "consecutive versions"
    );
    assert_eq!(store.item_head(&alice, &k).await?.version, Version(wins + 1));
    let feed = read_all(&store, &alice, 100).await?;
    assert_eq!(
        feed.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        (1..=wins + 1).collect::<Vec<_>>(),
        "only the winners' events are stored, consecutively"
    );

    // A rebase that declines: refused, nothing written.
    let stale = item_payload(
        &k,
        Version(2),
        Some(object(json!({"w": "late"}))),
        Visibility::Private,
        false,
        at(0),
    );
    let declined = store
        .append_rebasing(
            AppendBatch {
                item_versions: vec![(k.clone(), Version(1))],
                ..at_end(&alice, vec![new_event(stale, at(99))?])
            },
            std::sync::Arc::new(|_: &ItemHead| None),
        )
        .await;
    assert!(
        matches!(declined, Err(AppendError::VersionMoved { .. })),
        "a declined rebase is refused: {declined:?}"
    );
    assert_eq!(read_all(&store, &alice, 100).await?.len() as u64, wins + 1);
    Ok(())
}

/// An append that names an item at a version it is not at is `VersionMoved` with the item's actual
/// version, and none of the batch is visible, not even the changes to other items.
pub async fn check_stale_item_version_is_version_moved_and_invisible<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let alice = user("alice")?;
    let (k1, k2, fresh) = (key("notes", "n1")?, key("notes", "n2")?, key("todos", "never")?);
    write_item(&store, &alice, &k1, Some(json!({"v": 1})), Visibility::Private, at(0)).await?;
    write_item(&store, &alice, &k1, Some(json!({"v": 2})), Visibility::Private, at(1)).await?;
    write_item(&store, &alice, &k2, Some(json!({"v": 1})), Visibility::Public, at(2)).await?;
    let keys = [k1.clone(), k2.clone(), fresh.clone()];
    let before = snapshot(&store, &alice, &keys, &[], &[]).await?;

    let change = |k: &ItemKey, version: u64, created: bool| {
        item_payload(
            k,
            Version(version),
            Some(object(json!({"stale": true}))),
            Visibility::Private,
            created,
            at(5),
        )
    };
    // k1 is at version 2: naming 1 (behind), 0 (never existed) or 3 (ahead) is refused.
    for named in [1, 0, 3] {
        let result = store
            .append(AppendBatch {
                owner: alice.clone(),
                expected_seq: Some(Seq(3)),
                item_versions: vec![(k1.clone(), Version(named))],
                events: vec![new_event(change(&k1, named + 1, named == 0), at(5))?],
                idempotency: None,
            })
            .await;
        assert_eq!(
            result,
            Err(AppendError::VersionMoved {
                key: k1.clone(),
                current: Version(2)
            }),
            "named {named}"
        );
    }
    // A key never used is at version 0.
    let result = store
        .append(AppendBatch {
            owner: alice.clone(),
            expected_seq: Some(Seq(3)),
            item_versions: vec![(fresh.clone(), Version(1))],
            events: vec![new_event(change(&fresh, 2, false), at(5))?],
            idempotency: None,
        })
        .await;
    assert_eq!(
        result,
        Err(AppendError::VersionMoved {
            key: fresh.clone(),
            current: Version::NONE
        })
    );
    // One good and one stale item in the same batch: nothing of it happens.
    let result = store
        .append(AppendBatch {
            owner: alice.clone(),
            expected_seq: Some(Seq(3)),
            item_versions: vec![(k2.clone(), Version(1)), (k1.clone(), Version(1))],
            events: vec![
                new_event(change(&k2, 2, false), at(5))?,
                new_event(change(&k1, 2, false), at(5))?,
            ],
            idempotency: None,
        })
        .await;
    assert_eq!(
        result,
        Err(AppendError::VersionMoved {
            key: k1.clone(),
            current: Version(2)
        })
    );
    assert_eq!(
        snapshot(&store, &alice, &keys, &[], &[]).await?,
        before,
        "a refused append changes nothing"
    );

    // With both versions right, the same batch goes through and moves both heads.
    let stored = store
        .append(AppendBatch {
            owner: alice.clone(),
            expected_seq: Some(Seq(3)),
            item_versions: vec![(k2.clone(), Version(1)), (k1.clone(), Version(2))],
            events: vec![
                new_event(change(&k2, 2, false), at(5))?,
                new_event(change(&k1, 3, false), at(5))?,
            ],
            idempotency: None,
        })
        .await?;
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![Seq(4), Seq(5)]);
    assert_eq!(store.item_head(&alice, &k1).await?.version, Version(3));
    assert_eq!(store.item_head(&alice, &k2).await?.version, Version(2));
    Ok(())
}

/// A live idempotency record makes an append or a `remember` with the same key `KeyTaken` (and the
/// append's events invisible); an expired one may be replaced; keys are per owner; `idempotency`
/// returns the record, expired or not.
pub async fn check_idempotency_key_taken_until_expired<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let recorded = at(1_000);
    assert_eq!(
        store.idempotency(&alice, "k1").await?,
        None,
        "no record for a key never used"
    );

    let first = record(&alice, "k1", "first", recorded, at(0));
    let stored = store
        .append(AppendBatch {
            idempotency: Some(first.clone()),
            ..batch(
                &alice,
                0,
                vec![new_event(message_payload(&bob, &alice, "one", recorded)?, recorded)?],
            )
        })
        .await?;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        store.idempotency(&alice, "k1").await?,
        Some(first.record.clone()),
        "the record is stored with the append"
    );

    // While the record is live (recorded at or after `expired_before`), the key is taken.
    for expired_before in [at(0), at(999), recorded] {
        let result = store
            .append(AppendBatch {
                idempotency: Some(record(&alice, "k1", "second", at(2_000), expired_before)),
                ..batch(
                    &alice,
                    1,
                    vec![new_event(message_payload(&bob, &alice, "two", at(2_000))?, at(2_000))?],
                )
            })
            .await;
        assert_eq!(result, Err(AppendError::KeyTaken), "expired_before {expired_before}");
        let result = store
            .remember(record(&alice, "k1", "second", at(2_000), expired_before))
            .await;
        assert_eq!(
            result,
            Err(AppendError::KeyTaken),
            "remember with expired_before {expired_before}"
        );
    }
    assert_eq!(
        store.last_seq(&alice).await?,
        Seq(1),
        "the refused append wrote no event"
    );
    assert_eq!(store.read_messages(&alice, Seq(0), 10).await?.len(), 1);
    assert_eq!(
        store.idempotency(&alice, "k1").await?,
        Some(first.record.clone()),
        "the first record stands"
    );

    // Keys are per owner.
    store.remember(record(&bob, "k1", "bobs", at(2_000), at(0))).await?;
    assert_eq!(
        store.idempotency(&bob, "k1").await?.map(|r| r.fingerprint),
        Some("bobs".into())
    );

    // Once expired (recorded before `expired_before`), the key can be taken again.
    let later = at(90_000);
    let replacement = record(&alice, "k1", "replacement", later, at(1_001));
    store
        .append(AppendBatch {
            idempotency: Some(replacement.clone()),
            ..batch(
                &alice,
                1,
                vec![new_event(message_payload(&bob, &alice, "three", later)?, later)?],
            )
        })
        .await?;
    assert_eq!(store.idempotency(&alice, "k1").await?, Some(replacement.record.clone()));
    assert_eq!(store.last_seq(&alice).await?, Seq(2));

    // `remember` alone: new key stored, repeat refused, expired one replaced.
    let pushed = record(&alice, "push:m1:d1", "push", at(5), at(0));
    store.remember(pushed.clone()).await?;
    assert_eq!(
        store.idempotency(&alice, "push:m1:d1").await?,
        Some(pushed.record.clone())
    );
    assert_eq!(
        store
            .remember(record(&alice, "push:m1:d1", "again", at(6), at(0)))
            .await,
        Err(AppendError::KeyTaken)
    );
    let again = record(&alice, "push:m1:d1", "again", at(100), at(6));
    store.remember(again.clone()).await?;
    assert_eq!(store.idempotency(&alice, "push:m1:d1").await?, Some(again.record));
    assert_eq!(store.last_seq(&alice).await?, Seq(2), "remember writes no event");
    Ok(())
}

/// An append with an idempotency record and no events stores the record and leaves the stream as it is
/// (a write that had nothing to change still remembers its key).
pub async fn check_idempotency_record_without_events<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let alice = user("alice")?;
    let write = record(&alice, "k-empty", "noop", at(10), at(0));
    let stored = store
        .append(AppendBatch {
            idempotency: Some(write.clone()),
            ..batch(&alice, 0, Vec::new())
        })
        .await?;
    assert!(stored.is_empty());
    assert_eq!(store.idempotency(&alice, "k-empty").await?, Some(write.record));
    assert_eq!(store.last_seq(&alice).await?, Seq(0));
    let again = store
        .append(AppendBatch {
            idempotency: Some(record(&alice, "k-empty", "noop", at(11), at(0))),
            ..batch(&alice, 0, Vec::new())
        })
        .await;
    assert_eq!(again, Err(AppendError::KeyTaken));
    Ok(())
}

/// Whatever the reason an append is refused, nothing of it is visible: feed, messages, heads, histories,
/// item lists, devices, media, idempotency records and the owner list are exactly as before.
pub async fn check_refused_append_changes_nothing<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob, carol) = (user("alice")?, user("bob")?, user("carol")?);
    let (k1, k2) = (key("notes", "n1")?, key("notes", "n2")?);
    let phone = device("phone")?;
    let kept_media = media_object(&alice, "image/png", 10, at(0))?;
    write_item(&store, &alice, &k1, Some(json!({"v": 1})), Visibility::Private, at(0)).await?;
    write_event(
        &store,
        &alice,
        registered(&phone, Platform::Fcm, "tok-1", "ep-1"),
        at(1),
    )
    .await?;
    write_event(&store, &alice, EventPayload::MediaDeclared(kept_media.clone()), at(2)).await?;
    store.remember(record(&alice, "held", "held", at(3), at(0))).await?;
    let new_media = media_object(&alice, "image/jpeg", 20, at(4))?;
    let keys = [k1.clone(), k2.clone()];
    let media = [kept_media, new_media.clone()];
    let record_keys = ["held", "fresh-key"];
    let before = snapshot(&store, &alice, &keys, &media, &record_keys).await?;
    assert_eq!(before.last_seq, Seq(3));

    // A batch touching every projection: two items, a message, a device change, a media declaration.
    let events = || -> Result<Vec<NewEvent>, BoxError> {
        Ok(vec![
            new_event(
                item_payload(&k1, Version(2), None, Visibility::Private, false, at(0)),
                at(5),
            )?,
            new_event(
                item_payload(
                    &k2,
                    Version(1),
                    Some(object(json!({"v": 1}))),
                    Visibility::Public,
                    true,
                    at(5),
                ),
                at(5),
            )?,
            new_event(message_payload(&bob, &alice, "refused", at(5))?, at(5))?,
            new_event(
                EventPayload::Device(DeviceEvent::Removed {
                    device_id: phone.clone(),
                    platform: None,
                }),
                at(5),
            )?,
            new_event(EventPayload::MediaDeclared(new_media.clone()), at(5))?,
        ])
    };
    let good_versions = vec![(k1.clone(), Version(1)), (k2.clone(), Version::NONE)];
    let refusals = [
        (
            Some(Seq(2)),
            good_versions.clone(),
            Some(record(&alice, "fresh-key", "f", at(5), at(0))),
            "stale seq",
        ),
        (
            Some(Seq(3)),
            vec![(k1.clone(), Version(1)), (k2.clone(), Version(1))],
            None,
            "stale version",
        ),
        (
            Some(Seq(3)),
            good_versions.clone(),
            Some(record(&alice, "held", "h", at(5), at(0))),
            "key taken",
        ),
        (
            None,
            vec![(k1.clone(), Version(1)), (k2.clone(), Version(1))],
            None,
            "stale version, no seq named",
        ),
        (
            None,
            good_versions.clone(),
            Some(record(&alice, "held", "h", at(5), at(0))),
            "key taken, no seq named",
        ),
    ];
    for (expected_seq, item_versions, idempotency, why) in refusals {
        let result = store
            .append(AppendBatch {
                owner: alice.clone(),
                expected_seq,
                item_versions,
                events: events()?,
                idempotency,
            })
            .await;
        assert!(result.is_err(), "{why}: the append must be refused");
        assert_eq!(
            snapshot(&store, &alice, &keys, &media, &record_keys).await?,
            before,
            "{why}: nothing changed"
        );
    }
    // Too many events, and an event over the item size limit, with everything else right.
    let mut too_many = events()?;
    for i in 0..MAX_EVENTS_PER_APPEND {
        too_many.push(new_event(
            message_payload(&bob, &alice, &format!("filler {i}"), at(5))?,
            at(5),
        )?);
    }
    let result = store
        .append(AppendBatch {
            owner: alice.clone(),
            expected_seq: Some(Seq(3)),
            item_versions: good_versions.clone(),
            events: too_many,
            idempotency: Some(record(&alice, "fresh-key", "f", at(5), at(0))),
        })
        .await;
    assert!(
        matches!(result, Err(AppendError::TooLarge(_))),
        "too many events: {result:?}"
    );
    assert_eq!(
        snapshot(&store, &alice, &keys, &media, &record_keys).await?,
        before,
        "too many: nothing changed"
    );

    // A refused append to a stream that never existed does not make its owner appear.
    let result = store
        .append(batch(
            &carol,
            7,
            vec![new_event(message_payload(&bob, &carol, "x", at(5))?, at(5))?],
        ))
        .await;
    assert_eq!(result, Err(AppendError::SeqMoved { current: Seq(0) }));
    assert_eq!(
        store.owners(None, 100).await?,
        vec![alice.clone()],
        "carol has no stream"
    );
    assert_eq!(store.last_seq(&carol).await?, Seq(0));
    Ok(())
}

/// Filler text that makes each event a few kilobytes, so a few hundred of them exceed one page of a
/// paginated store (1 MB for DynamoDB) and the reads must go on to the next.
fn bulky(i: usize) -> String {
    format!("{i:05} {}", "lorem ipsum dolor sit amet ".repeat(190))
}

/// Writes 250 events of mixed kinds to `owner`'s stream in batches of 1 to 25; returns them in seq order.
async fn write_250<S: EventStore>(store: &S, owner: &UserId, sender: &UserId) -> Result<Vec<StoredEvent>, BoxError> {
    let mut versions: BTreeMap<ItemKey, Version> = BTreeMap::new();
    let mut all = Vec::new();
    let mut i = 0usize;
    let mut size = 1usize;
    while i < 250 {
        let n = size.min(250 - i).min(MAX_EVENTS_PER_APPEND);
        let mut events = Vec::new();
        let mut item_versions: Vec<(ItemKey, Version)> = Vec::new();
        for j in i..i + n {
            let when = at(j as u64);
            let payload = if j % 5 == 0 {
                message_payload(sender, owner, &bulky(j), when)?
            } else {
                let k = key("notes", &format!("n{:02}", j % 17))?;
                let version = versions.get(&k).copied().unwrap_or_default();
                if !item_versions.iter().any(|(seen, _)| *seen == k) {
                    item_versions.push((k.clone(), version));
                }
                versions.insert(k.clone(), version.next());
                item_payload(
                    &k,
                    version.next(),
                    Some(object(json!({"body": bulky(j)}))),
                    Visibility::Private,
                    version == Version::NONE,
                    at(0),
                )
            };
            events.push(new_event(payload, when)?);
        }
        let stored = store
            .append(AppendBatch {
                owner: owner.clone(),
                expected_seq: Some(Seq(i as u64)),
                item_versions,
                events,
                idempotency: None,
            })
            .await?;
        assert_eq!(stored.len(), n);
        all.extend(stored);
        i += n;
        size = size % MAX_EVENTS_PER_APPEND + 1;
    }
    Ok(all)
}

/// `read_feed` returns exactly `min(limit, available)` events after the given seq, in seq order, across
/// many events and whatever pages the store reads underneath; `read_messages` does the same for messages only.
pub async fn check_read_feed_returns_min_limit_available_in_order<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let written = write_250(&store, &alice, &bob).await?;
    assert_eq!(
        written.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        (1..=250).collect::<Vec<_>>()
    );
    assert_eq!(store.last_seq(&alice).await?, Seq(250));

    for after in [0usize, 1, 100, 249, 250, 400] {
        for limit in [0usize, 1, 25, 100, 250, 1000] {
            let events = store.read_feed(&alice, Seq(after as u64), limit).await?;
            let available = 250usize.saturating_sub(after);
            assert_eq!(events.len(), limit.min(available), "after {after}, limit {limit}");
            let expected = &written[after.min(250)..after.min(250) + events.len()];
            assert_eq!(
                events, expected,
                "after {after}, limit {limit}: the events, in seq order"
            );
        }
    }
    for page in [1usize, 7, 100] {
        assert_eq!(
            read_all(&store, &alice, page).await?,
            written,
            "paging by {page} yields every event once"
        );
    }

    let messages: Vec<StoredEvent> = written
        .iter()
        .filter(|e| matches!(e.payload, EventPayload::MessageReceived(_)))
        .cloned()
        .collect();
    assert_eq!(messages.len(), 50);
    assert_eq!(
        store.read_messages(&alice, Seq(0), 1000).await?,
        messages,
        "every message, in seq order"
    );
    assert_eq!(
        store.read_messages(&alice, Seq(0), 7).await?,
        messages[..7],
        "limit respected"
    );
    let after = messages[10].seq;
    assert_eq!(
        store.read_messages(&alice, after, 5).await?,
        messages[11..16],
        "only messages after the seq"
    );
    assert_eq!(
        store.read_messages(&alice, Seq(250), 10).await?,
        Vec::<StoredEvent>::new()
    );
    assert_eq!(
        store.read_feed(&bob, Seq(0), 10).await?,
        Vec::<StoredEvent>::new(),
        "bob's stream is empty"
    );
    Ok(())
}

/// `item_history` returns an item's events by version, after a delete and a re-creation too, and the head
/// follows: version and live item after each change, the default head for a key never used.
pub async fn check_item_history_and_head_follow_every_change<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let (k, other) = (key("notes", "n1")?, key("notes", "n2")?);
    assert_eq!(
        store.item_head(&alice, &k).await?,
        ItemHead::default(),
        "never used: the default head"
    );
    assert_eq!(
        store.item_history(&alice, &k, Version::NONE, 10).await?,
        Vec::<StoredEvent>::new()
    );

    let steps = [
        Some(json!({"title": "first", "nested": {"list": [1, "two", {"three": 3.5}]}})),
        Some(json!({"title": "second", "unicode": "ünïcødé ✓"})),
        None,
        Some(json!({"title": "again"})),
        Some(json!({"title": "last"})),
    ];
    let mut history = Vec::new();
    for (i, data) in steps.into_iter().enumerate() {
        let when = at(100 * i as u64);
        let event = write_item(&store, &alice, &k, data, Visibility::Public, when).await?;
        // Interleave another item's change, so histories are not simply the feed.
        write_item(&store, &alice, &other, Some(json!({"i": i})), Visibility::Private, when).await?;
        let head = store.item_head(&alice, &k).await?;
        assert_eq!(
            head.version,
            Version(i as u64 + 1),
            "the head's version after change {i}"
        );
        assert_eq!(
            head.item,
            item_after(&event),
            "the head's item is the item after change {i}"
        );
        history.push(event);
    }
    assert!(matches!(history[0].payload, EventPayload::ItemCreated(_)));
    assert!(matches!(history[2].payload, EventPayload::ItemDeleted(_)));
    assert!(
        matches!(history[3].payload, EventPayload::ItemCreated(_)),
        "a write after a delete creates"
    );

    assert_eq!(
        store.item_history(&alice, &k, Version::NONE, 100).await?,
        history,
        "every change, oldest first"
    );
    assert_eq!(
        store.item_history(&alice, &k, Version(2), 2).await?,
        history[2..4],
        "after version 2, two events"
    );
    assert_eq!(store.item_history(&alice, &k, Version(4), 100).await?, history[4..]);
    assert_eq!(
        store.item_history(&alice, &k, Version(5), 100).await?,
        Vec::<StoredEvent>::new()
    );
    assert_eq!(store.item_history(&alice, &k, Version::NONE, 1).await?, history[..1]);
    assert_eq!(
        store.item_history(&bob, &k, Version::NONE, 100).await?,
        Vec::<StoredEvent>::new(),
        "per owner"
    );
    assert_eq!(
        store.item_head(&bob, &k).await?,
        ItemHead::default(),
        "heads are per owner"
    );

    // After a delete the head keeps the version and has no item.
    write_item(&store, &alice, &k, None, Visibility::Public, at(1_000)).await?;
    let head = store.item_head(&alice, &k).await?;
    assert_eq!((head.version, head.item), (Version(6), None));
    assert_eq!(
        store.item_history(&alice, &k, Version::NONE, 100).await?.len(),
        6,
        "history stays after a delete"
    );
    Ok(())
}

/// `list_items` returns only live items of that owner and collection, ordered by id, and paging with
/// `after` visits each exactly once.
pub async fn check_list_items_only_live_ordered_by_id_paged<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let notes = collection("notes")?;
    // Ids written in a scrambled order; some deleted, one deleted and re-created.
    let ids: Vec<String> = (0..30).map(|i| format!("id-{:02}", (i * 7) % 30)).collect();
    for (i, id) in ids.iter().enumerate() {
        let k = key("notes", id)?;
        write_item(
            &store,
            &alice,
            &k,
            Some(json!({"i": i})),
            Visibility::Private,
            at(i as u64),
        )
        .await?;
        write_item(
            &store,
            &alice,
            &key("todos", id)?,
            Some(json!({"todo": i})),
            Visibility::Private,
            at(i as u64),
        )
        .await?;
    }
    write_item(
        &store,
        &bob,
        &key("notes", "id-00b")?,
        Some(json!({"bob": true})),
        Visibility::Public,
        at(50),
    )
    .await?;
    let deleted = ["id-03", "id-10", "id-29", "id-00"];
    for id in deleted {
        write_item(&store, &alice, &key("notes", id)?, None, Visibility::Private, at(60)).await?;
    }
    write_item(
        &store,
        &alice,
        &key("notes", "id-10")?,
        Some(json!({"back": true})),
        Visibility::Public,
        at(70),
    )
    .await?;
    write_item(
        &store,
        &alice,
        &key("notes", "id-05")?,
        Some(json!({"changed": true})),
        Visibility::Public,
        at(80),
    )
    .await?;

    let mut expected = Vec::new();
    for i in 0..30 {
        let k = key("notes", &format!("id-{i:02}"))?;
        if let Some(item) = store.item_head(&alice, &k).await?.item {
            expected.push(item);
        }
    }
    assert_eq!(expected.len(), 27, "three items stay deleted");
    let all = store.list_items(&alice, &notes, None, 100).await?;
    assert_eq!(all, expected, "live items, ordered by id, as their heads show them");
    assert!(all.iter().all(|item| item.owner == alice && item.collection == notes));

    for page in [1usize, 4, 26, 27] {
        let mut seen: Vec<Item> = Vec::new();
        loop {
            let after = seen.last().map(|item| item.id.clone());
            let items = store.list_items(&alice, &notes, after.as_ref(), page).await?;
            assert!(items.len() <= page, "at most the limit");
            if items.is_empty() {
                break;
            }
            seen.extend(items);
        }
        assert_eq!(seen, expected, "paging by {page} visits every live item once");
    }
    // `after` need not be an id that exists.
    let after = rookery_domain::ItemId::parse("id-10a")?;
    let rest = store.list_items(&alice, &notes, Some(&after), 100).await?;
    assert_eq!(rest.first().map(|item| item.id.as_str()), Some("id-11"));
    assert_eq!(store.list_items(&bob, &notes, None, 100).await?.len(), 1, "per owner");
    assert_eq!(
        store.list_items(&alice, &collection("empty")?, None, 100).await?,
        Vec::<Item>::new()
    );
    Ok(())
}

/// The device registry is the fold of the owner's device events: registered, disabled (only for the
/// endpoint named), registered again (enabled, new token), removed.
pub async fn check_devices_follow_device_events<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let (phone, tablet, watch) = (device("phone")?, device("tablet")?, device("watch")?);
    assert_eq!(store.devices(&alice).await?, Devices::new());
    let changes = vec![
        registered(&phone, Platform::Apns, "tok-phone", "ep-phone"),
        registered(&tablet, Platform::Fcm, "tok-tablet", "ep-tablet"),
        registered(&watch, Platform::ApnsSandbox, "tok-watch", "ep-watch"),
        EventPayload::Device(DeviceEvent::Disabled {
            device_id: phone.clone(),
            endpoint: "ep-phone".into(),
            platform: None,
        }),
        EventPayload::Device(DeviceEvent::Disabled {
            device_id: tablet.clone(),
            endpoint: "ep-old".into(),
            platform: None,
        }),
        EventPayload::Device(DeviceEvent::Removed {
            device_id: watch.clone(),
            platform: None,
        }),
    ];
    let mut expected = Devices::new();
    for (i, change) in changes.into_iter().enumerate() {
        let event = write_event(&store, &alice, change, at(i as u64)).await?;
        if let EventPayload::Device(change) = &event.payload {
            device::evolve(&mut expected, change, event.at);
        }
        assert_eq!(store.devices(&alice).await?, expected, "after device change {i}");
    }
    let devices = store.devices(&alice).await?;
    assert_eq!(
        devices.get(&phone).map(|d| d.enabled),
        Some(false),
        "the named endpoint is disabled"
    );
    assert_eq!(
        devices.get(&tablet).map(|d| d.enabled),
        Some(true),
        "another endpoint's report changes nothing"
    );
    assert!(!devices.contains_key(&watch), "a removed device is gone");

    let event = write_event(
        &store,
        &alice,
        registered(&phone, Platform::Apns, "tok-phone-2", "ep-phone-2"),
        at(10),
    )
    .await?;
    let phone_now = store
        .devices(&alice)
        .await?
        .get(&phone)
        .cloned()
        .ok_or("phone registered")?;
    assert!(phone_now.enabled, "registering again enables");
    assert_eq!(
        (phone_now.token.as_str(), phone_now.endpoint.as_str()),
        ("tok-phone-2", "ep-phone-2")
    );
    assert_eq!(phone_now.registered_at, event.at);
    assert_eq!(store.devices(&bob).await?, Devices::new(), "per owner");
    Ok(())
}

/// Declared media objects can be read back by owner and id; nobody else's id or owner finds them.
pub async fn check_media_follows_media_events<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let photo = media_object(&alice, "image/png", 1234, at(1))?;
    let doc = media_object(&alice, "application/pdf", 99, at(2))?;
    assert_eq!(store.media(&alice, &photo.id).await?, None);
    write_event(&store, &alice, EventPayload::MediaDeclared(photo.clone()), at(1)).await?;
    write_event(&store, &alice, EventPayload::MediaDeclared(doc.clone()), at(2)).await?;
    assert_eq!(store.media(&alice, &photo.id).await?, Some(photo.clone()));
    assert_eq!(store.media(&alice, &doc.id).await?, Some(doc));
    assert_eq!(
        store.media(&bob, &photo.id).await?,
        None,
        "another owner does not find it"
    );
    Ok(())
}

/// `owners` lists every user with a non-empty stream, ordered by id, paged with `after`.
pub async fn check_owners_sorted_and_paged<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    assert_eq!(store.owners(None, 10).await?, Vec::<UserId>::new());
    let names: Vec<String> = (0..23).map(|i| format!("user-{:02}", (i * 5) % 23)).collect();
    let sender = user("sender")?;
    for (i, name) in names.iter().enumerate() {
        let owner = user(name)?;
        // Several events for some owners: an owner is listed once however long its stream.
        for j in 0..(i % 3 + 1) {
            write_event(
                &store,
                &owner,
                message_payload(&sender, &owner, "hi", at(j as u64))?,
                at(j as u64),
            )
            .await?;
        }
    }
    let mut expected: Vec<UserId> = names.iter().map(|n| user(n)).collect::<Result<_, _>>()?;
    expected.sort();
    assert_eq!(store.owners(None, 100).await?, expected);
    for page in [1usize, 5, 22, 23] {
        let mut seen: Vec<UserId> = Vec::new();
        loop {
            let owners = store.owners(seen.last(), page).await?;
            assert!(owners.len() <= page);
            if owners.is_empty() {
                break;
            }
            seen.extend(owners);
        }
        assert_eq!(seen, expected, "paging by {page}");
    }
    let after = user("user-10a")?;
    assert_eq!(
        store.owners(Some(&after), 2).await?,
        expected[11..13],
        "`after` need not be an owner"
    );
    Ok(())
}

/// An event over 400 KB, or more than `MAX_EVENTS_PER_APPEND` events, is `TooLarge` before anything is
/// written; the largest item data the API accepts (256 KiB) still fits.
pub async fn check_too_large_is_refused_before_writing<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let k = key("notes", "big")?;
    write_item(
        &store,
        &alice,
        &k,
        Some(json!({"small": true})),
        Visibility::Private,
        at(0),
    )
    .await?;
    let before = snapshot(&store, &alice, std::slice::from_ref(&k), &[], &["big-key"]).await?;

    let huge = object(json!({"blob": "x".repeat(410 * 1024)}));
    let result = store
        .append(AppendBatch {
            owner: alice.clone(),
            expected_seq: Some(Seq(1)),
            item_versions: vec![(k.clone(), Version(1))],
            events: vec![new_event(
                item_payload(&k, Version(2), Some(huge), Visibility::Private, false, at(0)),
                at(1),
            )?],
            idempotency: Some(record(&alice, "big-key", "big", at(1), at(0))),
        })
        .await;
    assert!(
        matches!(result, Err(AppendError::TooLarge(_))),
        "an event over 400 KB: {result:?}"
    );
    assert_eq!(
        snapshot(&store, &alice, std::slice::from_ref(&k), &[], &["big-key"]).await?,
        before
    );

    let many: Vec<NewEvent> = (0..=MAX_EVENTS_PER_APPEND)
        .map(|i| new_event(message_payload(&bob, &alice, &format!("m{i}"), at(2))?, at(2)))
        .collect::<Result<_, _>>()?;
    let result = store.append(batch(&alice, 1, many)).await;
    assert!(
        matches!(result, Err(AppendError::TooLarge(_))),
        "more than {MAX_EVENTS_PER_APPEND} events: {result:?}"
    );
    assert_eq!(
        snapshot(&store, &alice, std::slice::from_ref(&k), &[], &["big-key"]).await?,
        before
    );

    // Item data at the API's limit, serialized to just under 256 KiB, must be storable.
    let largest = object(json!({"blob": "y".repeat(256 * 1024 - 20)}));
    let event = write_item(
        &store,
        &alice,
        &k,
        Some(Value::Object(largest.clone())),
        Visibility::Private,
        at(3),
    )
    .await?;
    assert_eq!(event.seq, Seq(2));
    assert_eq!(
        store.item_head(&alice, &k).await?.item.map(|item| item.data),
        Some(largest)
    );
    Ok(())
}

/// Every kind of event reads back exactly as it was appended: nested and unicode data, message data,
/// every device change, media declarations, restores.
pub async fn check_events_round_trip_unchanged<F: StoreFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let k = key("notes-2", "a.b:c_d-e")?;
    let phone = device("phone")?;
    let data = object(json!({
        "text": "ünïcødé ✓ \"quoted\" \\ back\nslash",
        "numbers": [0, -1, 1.5, 1e300, 9007199254740993u64],
        "nested": {"deeper": {"deepest": [null, true, false, {}, []]}},
        "empty": "",
    }));
    let mut message = message_payload(&bob, &alice, "message with data ✉", at(1))?;
    if let EventPayload::MessageReceived(m) = &mut message {
        m.data = object(json!({"thread": "t1", "n": [1, 2]}));
    }
    let restored = match item_payload(&k, Version(3), Some(data.clone()), Visibility::Public, false, at(0)) {
        EventPayload::ItemReplaced(mut change) => {
            change.restored_from = Some(Version(1));
            EventPayload::ItemRestored(change)
        }
        other => other,
    };
    let payloads = vec![
        item_payload(&k, Version(1), Some(data.clone()), Visibility::Public, true, at(0)),
        item_payload(&k, Version(2), None, Visibility::Public, false, at(0)),
        restored,
        message,
        registered(
            &phone,
            Platform::ApnsSandbox,
            "tok",
            "arn:aws:sns:eu-west-1:123456789012:endpoint/APNS/app/x",
        ),
        EventPayload::Device(DeviceEvent::Disabled {
            device_id: phone.clone(),
            endpoint: "arn:aws:sns:eu-west-1:123456789012:endpoint/APNS/app/x".into(),
            platform: None,
        }),
        EventPayload::Device(DeviceEvent::Removed {
            device_id: phone.clone(),
            platform: None,
        }),
        EventPayload::MediaDeclared(media_object(&alice, "video/mp4", 100 * 1024 * 1024, at(3))?),
    ];
    let mut events = Vec::new();
    for (i, payload) in payloads.into_iter().enumerate() {
        let mut event = new_event(payload, at(i as u64))?;
        event.meta.request_id = Some(format!("req-{i}"));
        event.meta.actor = Some(bob.clone());
        events.push(event);
    }
    // One event per append, each with its item version when it is an item event.
    let mut stored = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let item_versions = match event.payload.as_item() {
            Some(change) => vec![(change.key(), Version(change.version.0 - 1))],
            None => Vec::new(),
        };
        let appended = store
            .append(AppendBatch {
                item_versions,
                ..batch(&alice, i as u64, vec![event.clone()])
            })
            .await?;
        stored.extend(appended);
    }
    let expected: Vec<StoredEvent> = events
        .into_iter()
        .zip(1..)
        .map(|(e, s)| e.stored(&alice, Seq(s)))
        .collect();
    assert_eq!(stored, expected);
    assert_eq!(read_all(&store, &alice, 3).await?, expected, "read back unchanged");
    assert_eq!(store.item_history(&alice, &k, Version::NONE, 10).await?, expected[..3]);
    assert_eq!(
        store.item_head(&alice, &k).await?.item.map(|item| item.data),
        Some(data)
    );
    Ok(())
}

/// Of many appends racing with the same expected seq, exactly one succeeds and the others are
/// `SeqMoved`; of many `remember`s racing for one key, exactly one succeeds and the others are `KeyTaken`.
pub async fn check_concurrent_appends_exactly_one_wins<F: StoreFactory>(factory: &F) -> Outcome {
    const WRITERS: usize = 12;
    let store = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let k = key("notes", "contended")?;
    for round in 0..4u64 {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            let (alice, k) = (alice.clone(), k.clone());
            let payload = item_payload(
                &k,
                Version(round + 1),
                Some(object(json!({"w": w}))),
                Visibility::Private,
                round == 0,
                at(0),
            );
            let event = new_event(payload, at(round))?;
            tasks.push(tokio::spawn(async move {
                store
                    .append(AppendBatch {
                        owner: alice,
                        expected_seq: Some(Seq(round)),
                        item_versions: vec![(k, Version(round))],
                        events: vec![event],
                        idempotency: None,
                    })
                    .await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await? {
                Ok(events) => {
                    wins += 1;
                    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![Seq(round + 1)]);
                }
                Err(AppendError::SeqMoved { current }) => assert_eq!(current, Seq(round + 1), "round {round}"),
                Err(AppendError::VersionMoved { current, .. }) => {
                    assert_eq!(current, Version(round + 1), "round {round}")
                }
                Err(other) => return Err(format!("round {round}: unexpected {other}").into()),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one writer wins");
        assert_eq!(store.last_seq(&alice).await?, Seq(round + 1));
        assert_eq!(store.item_head(&alice, &k).await?.version, Version(round + 1));
    }
    assert_eq!(
        read_all(&store, &alice, 100).await?.len(),
        4,
        "only the winners' events are stored"
    );

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let write = record(&bob, "raced", &format!("w{w}"), at(1), at(0));
        tasks.push(tokio::spawn(async move { store.remember(write).await }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await? {
            Ok(()) => wins += 1,
            Err(AppendError::KeyTaken) => {}
            Err(other) => return Err(format!("remember: unexpected {other}").into()),
        }
    }
    assert_eq!(wins, 1, "exactly one remember wins the key");
    Ok(())
}

/// Expands to one `#[tokio::test]` per event store check, inside `mod $name`, for the factory `$factory`
/// (an expression evaluated once per test, in a module that sees the invoking module's items).
#[macro_export]
macro_rules! event_store_contract {
    ($name:ident, $factory:expr) => {
        $crate::contract_tests!($name, event_store, $factory;
            check_append_assigns_consecutive_seqs,
            check_stale_expected_seq_is_seq_moved,
            check_append_without_seq_continues_the_stream,
            check_concurrent_appends_without_seq_all_succeed,
            check_append_without_seq_still_checks_versions,
            check_rebasing_append_replans_or_refuses,
            check_stale_item_version_is_version_moved_and_invisible,
            check_idempotency_key_taken_until_expired,
            check_idempotency_record_without_events,
            check_refused_append_changes_nothing,
            check_read_feed_returns_min_limit_available_in_order,
            check_item_history_and_head_follow_every_change,
            check_list_items_only_live_ordered_by_id_paged,
            check_devices_follow_device_events,
            check_media_follows_media_events,
            check_owners_sorted_and_paged,
            check_too_large_is_refused_before_writing,
            check_events_round_trip_unchanged,
            check_concurrent_appends_exactly_one_wins,
        );
    };
}
