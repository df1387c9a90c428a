//! Unit tests of the memory event store's own behaviour (the generic contract suite lives in `tests/`).

use rookery_domain::event::{ItemChanged, ItemState};
use rookery_domain::{
    DeviceEvent, DeviceId, EventId, EventMeta, EventPayload, Message, MessageId, NewEvent, Platform, Timestamp,
    Visibility,
};
use serde_json::{Map, Value, json};

use super::*;

pub(crate) fn user(name: &str) -> UserId {
    UserId::parse(name).expect("valid user id")
}

pub(crate) fn key(collection: &str, id: &str) -> ItemKey {
    ItemKey::new(
        CollectionName::parse(collection).expect("collection"),
        ItemId::parse(id).expect("id"),
    )
}

fn data(text: &str) -> Map<String, Value> {
    let Value::Object(map) = json!({ "text": text }) else {
        unreachable!()
    };
    map
}

static NEXT_EVENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) fn event(payload: EventPayload) -> NewEvent {
    let n = NEXT_EVENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    NewEvent {
        event_id: EventId::parse(format!("ev-{n}")).expect("event id"),
        at: Timestamp::from_millis(1_000 + n),
        payload,
        meta: EventMeta::default(),
    }
}

pub(crate) fn item_event(key: &ItemKey, version: u64, text: Option<&str>) -> NewEvent {
    let change = ItemChanged {
        collection: key.collection.clone(),
        id: key.id.clone(),
        version: Version(version),
        state: text.map(|t| ItemState {
            visibility: Visibility::Private,
            created_at: Timestamp::from_millis(1),
            data: data(t),
        }),
        restored_from: None,
    };
    event(match (version, text) {
        (_, None) => EventPayload::ItemDeleted(change),
        (1, Some(_)) => EventPayload::ItemCreated(change),
        _ => EventPayload::ItemReplaced(change),
    })
}

fn message_event(from: &UserId, to: &UserId, text: &str) -> NewEvent {
    event(EventPayload::MessageReceived(Message {
        id: MessageId::parse(format!("m-{text}")).expect("message id"),
        from: from.clone(),
        to: to.clone(),
        text: text.into(),
        data: Map::new(),
        sent_at: Timestamp::from_millis(5),
    }))
}

pub(crate) fn batch(owner: &UserId, expected_seq: u64, events: Vec<NewEvent>) -> AppendBatch {
    AppendBatch {
        owner: owner.clone(),
        expected_seq: Some(Seq(expected_seq)),
        item_versions: Vec::new(),
        events,
        idempotency: None,
    }
}

pub(crate) fn record(owner: &UserId, key: &str, at: u64, expired_before: u64) -> IdempotencyWrite {
    IdempotencyWrite {
        owner: owner.clone(),
        record: IdempotencyRecord {
            key: key.into(),
            fingerprint: format!("fp-{key}-{at}"),
            outcome: json!({ "at": at }),
            recorded_at: Timestamp::from_millis(at),
        },
        expired_before: Timestamp::from_millis(expired_before),
    }
}

#[tokio::test]
async fn appends_get_consecutive_seqs_and_build_heads_history_and_lists() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryEventStore::in_memory();
    let alice = user("alice");
    let (a, b) = (key("notes", "a"), key("notes", "b"));
    let mut first = batch(
        &alice,
        0,
        vec![item_event(&a, 1, Some("one")), item_event(&b, 1, Some("bee"))],
    );
    first.item_versions = vec![(a.clone(), Version::NONE), (b.clone(), Version::NONE)];
    let stored = store.append(first).await?;
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![Seq(1), Seq(2)]);
    let mut second = batch(&alice, 2, vec![item_event(&a, 2, Some("two")), item_event(&b, 2, None)]);
    second.item_versions = vec![(a.clone(), Version(1)), (b.clone(), Version(1))];
    store.append(second).await?;

    assert_eq!(store.last_seq(&alice).await?, Seq(4));
    let head = store.item_head(&alice, &a).await?;
    assert_eq!(head.version, Version(2));
    assert_eq!(head.item.map(|i| i.data), Some(data("two")));
    let deleted = store.item_head(&alice, &b).await?;
    assert_eq!((deleted.version, deleted.item), (Version(2), None));
    let listed = store.list_items(&alice, &a.collection, None, 10).await?;
    assert_eq!(listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec!["a"]);
    let history = store.item_history(&alice, &b, Version(0), 10).await?;
    assert_eq!(history.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![Seq(2), Seq(4)]);
    let after_one = store.item_history(&alice, &b, Version(1), 10).await?;
    assert_eq!(after_one.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![Seq(4)]);
    Ok(())
}

#[tokio::test]
async fn a_refused_append_changes_nothing() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryEventStore::in_memory();
    let alice = user("alice");
    let a = key("notes", "a");
    store
        .append(batch(&alice, 0, vec![item_event(&a, 1, Some("one"))]))
        .await?;

    let stale_seq = store.append(batch(&alice, 0, vec![item_event(&a, 2, Some("x"))])).await;
    assert_eq!(stale_seq, Err(AppendError::SeqMoved { current: Seq(1) }));

    let mut stale_version = batch(&alice, 1, vec![item_event(&a, 2, Some("x"))]);
    stale_version.item_versions = vec![(a.clone(), Version::NONE)];
    stale_version.idempotency = Some(record(&alice, "k", 10, 0));
    let refused = store.append(stale_version).await;
    assert_eq!(
        refused,
        Err(AppendError::VersionMoved {
            key: a.clone(),
            current: Version(1)
        })
    );

    assert_eq!(store.last_seq(&alice).await?, Seq(1));
    assert_eq!(store.item_head(&alice, &a).await?.version, Version(1));
    assert_eq!(store.idempotency(&alice, "k").await?, None);
    assert_eq!(store.changes_after(0, 10)?.1, 1);
    Ok(())
}

#[tokio::test]
async fn limits_are_checked_before_the_seq() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryEventStore::in_memory();
    let alice = user("alice");
    let a = key("notes", "a");
    let many: Vec<NewEvent> = (1..=26).map(|v| item_event(&a, v, Some("x"))).collect();
    // Wrong seq too: the size limit must be reported first.
    assert!(matches!(
        store.append(batch(&alice, 7, many)).await,
        Err(AppendError::TooLarge(_))
    ));
    let huge = "x".repeat(MAX_EVENT_BYTES);
    let big = store
        .append(batch(&alice, 0, vec![item_event(&a, 1, Some(&huge))]))
        .await;
    assert!(matches!(big, Err(AppendError::TooLarge(_))));
    // Eleven events of 390 KB each fit one by one but not together (4 MB per append).
    let chunk = "y".repeat(390 * 1024);
    let total: Vec<NewEvent> = (1..=11)
        .map(|v| item_event(&key("notes", &format!("i{v}")), 1, Some(&chunk)))
        .collect();
    assert!(matches!(
        store.append(batch(&alice, 0, total)).await,
        Err(AppendError::TooLarge(_))
    ));
    let empty = store.append(batch(&alice, 0, Vec::new())).await;
    assert!(matches!(empty, Err(AppendError::Unavailable(f)) if !f.is_retryable()));
    assert_eq!(store.last_seq(&alice).await?, Seq(0));
    assert_eq!(store.owners(None, 10).await?, Vec::<UserId>::new());
    Ok(())
}

#[tokio::test]
async fn idempotency_keys_are_taken_until_expired_and_expired_records_are_purged()
-> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryEventStore::in_memory();
    let (alice, bob) = (user("alice"), user("bob"));
    // A message to Bob carries Alice's record: the record's owner is not the stream's owner.
    let mut send = batch(&bob, 0, vec![message_event(&alice, &bob, "hi")]);
    send.idempotency = Some(record(&alice, "k1", 100, 0));
    store.append(send).await?;
    assert_eq!(
        store.idempotency(&alice, "k1").await?.map(|r| r.recorded_at),
        Some(Timestamp::from_millis(100))
    );
    assert_eq!(store.idempotency(&bob, "k1").await?, None);

    // Held while recorded_at >= expired_before.
    let mut again = batch(&bob, 1, vec![message_event(&alice, &bob, "hi2")]);
    again.idempotency = Some(record(&alice, "k1", 150, 100));
    assert_eq!(store.append(again.clone()).await, Err(AppendError::KeyTaken));
    assert_eq!(
        store.remember(record(&alice, "k1", 150, 100)).await,
        Err(AppendError::KeyTaken)
    );
    // Expired: replaceable, and the empty-events append with a record alone is allowed.
    let mut alone = batch(&alice, 0, Vec::new());
    alone.idempotency = Some(record(&alice, "k1", 200, 101));
    assert_eq!(store.append(alone).await?, Vec::new());
    assert_eq!(
        store.idempotency(&alice, "k1").await?.map(|r| r.recorded_at),
        Some(Timestamp::from_millis(200))
    );
    assert_eq!(store.last_seq(&alice).await?, Seq(0));

    store.remember(record(&alice, "old", 50, 0)).await?;
    store.remember(record(&alice, "new", 300, 60)).await?;
    // Writing "new" with expired_before 60 purged "old" (recorded at 50), but not "k1" (200).
    assert_eq!(store.idempotency(&alice, "old").await?, None);
    assert!(store.idempotency(&alice, "k1").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn feeds_messages_devices_media_and_owners_are_read_exactly() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryEventStore::in_memory();
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    for i in 0..250u64 {
        let e = if i % 3 == 0 {
            message_event(&bob, &alice, &format!("t{i}"))
        } else {
            item_event(&key("notes", &format!("n{i}")), 1, Some("x"))
        };
        store.append(batch(&alice, i, vec![e])).await?;
    }
    for (after, limit, expected) in [(0, 100, 100), (200, 100, 50), (249, 5, 1), (250, 5, 0), (900, 5, 0)] {
        let page = store.read_feed(&alice, Seq(after), limit).await?;
        assert_eq!(page.len(), expected);
        assert!(page.iter().enumerate().all(|(i, e)| e.seq == Seq(after + 1 + i as u64)));
    }
    let messages = store.read_messages(&alice, Seq(3), 10).await?;
    assert_eq!(messages.first().map(|e| e.seq), Some(Seq(4)));
    assert!(
        messages
            .iter()
            .all(|e| matches!(e.payload, EventPayload::MessageReceived(_)))
    );
    assert_eq!(messages.len(), 10);

    let device = DeviceId::parse("phone")?;
    let registered = event(EventPayload::Device(DeviceEvent::Registered {
        device_id: device.clone(),
        platform: Platform::Fcm,
        token: "tok".into(),
        endpoint: "ep-1".into(),
    }));
    let disabled = event(EventPayload::Device(DeviceEvent::Disabled {
        device_id: device.clone(),
        endpoint: "ep-1".into(),
        platform: None,
    }));
    let media = MediaObject {
        id: MediaId::parse("m1")?,
        owner: carol.clone(),
        content_type: "image/png".into(),
        size: 3,
        key: "media/carol/m1".into(),
        declared_at: Timestamp::from_millis(9),
    };
    store
        .append(batch(
            &carol,
            0,
            vec![registered, disabled, event(EventPayload::MediaDeclared(media.clone()))],
        ))
        .await?;
    assert_eq!(
        store.devices(&carol).await?.get(&device).map(|d| d.enabled),
        Some(false)
    );
    assert_eq!(store.media(&carol, &media.id).await?, Some(media));
    assert_eq!(store.owners(None, 10).await?, vec![alice.clone(), carol.clone()]);
    assert_eq!(store.owners(Some(&alice), 10).await?, vec![carol.clone()]);
    assert_eq!(store.owners(None, 1).await?, vec![alice]);
    assert!(store.devices(&bob).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn list_items_pages_by_id_over_live_items_only() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryEventStore::in_memory();
    let alice = user("alice");
    let mut events = Vec::new();
    for id in ["d", "a", "c", "b", "e"] {
        events.push(item_event(&key("notes", id), 1, Some(id)));
    }
    events.push(item_event(&key("other", "a"), 1, Some("other")));
    events.push(item_event(&key("notes", "c"), 2, None));
    store.append(batch(&alice, 0, events)).await?;
    let notes = CollectionName::parse("notes")?;
    let ids = |items: Vec<Item>| items.into_iter().map(|i| i.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(store.list_items(&alice, &notes, None, 2).await?), ["a", "b"]);
    assert_eq!(
        ids(store.list_items(&alice, &notes, Some(&ItemId::parse("b")?), 2).await?),
        ["d", "e"]
    );
    assert_eq!(
        ids(store.list_items(&alice, &notes, Some(&ItemId::parse("e")?), 2).await?),
        Vec::<String>::new()
    );
    Ok(())
}

#[tokio::test]
async fn the_change_feed_follows_commit_order_and_wakes_watchers() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryEventStore::in_memory();
    let mut watcher = store.watch_commits();
    assert_eq!(*watcher.borrow_and_update(), 0);
    let (alice, bob) = (user("alice"), user("bob"));
    store
        .append(batch(&alice, 0, vec![item_event(&key("n", "a"), 1, Some("1"))]))
        .await?;
    store
        .append(batch(
            &bob,
            0,
            vec![
                item_event(&key("n", "b"), 1, Some("2")),
                item_event(&key("n", "c"), 1, Some("3")),
            ],
        ))
        .await?;
    store
        .append(batch(&alice, 1, vec![item_event(&key("n", "a"), 2, Some("4"))]))
        .await?;
    assert!(watcher.has_changed()?);
    assert_eq!(*watcher.borrow_and_update(), 4);

    let (all, next) = store.changes_after(0, 100)?;
    let order: Vec<(String, u64)> = all.iter().map(|e| (e.owner.to_string(), e.seq.0)).collect();
    assert_eq!(
        order,
        [
            ("alice".into(), 1),
            ("bob".into(), 1),
            ("bob".into(), 2),
            ("alice".into(), 2)
        ]
    );
    assert_eq!(next, 4);
    let (page, next) = store.changes_after(1, 2)?;
    assert_eq!(page.iter().map(|e| e.seq.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(next, 3);
    assert_eq!(store.changes_after(4, 10)?, (Vec::new(), 4));
    assert_eq!(store.changes_after(99, 10)?, (Vec::new(), 4));

    // A waiting consumer is woken by the next commit, without polling.
    let waiter = tokio::spawn({
        let mut watcher = store.watch_commits();
        async move { watcher.wait_for(|n| *n >= 5).await.map(|n| *n) }
    });
    store
        .append(batch(&bob, 2, vec![item_event(&key("n", "d"), 1, Some("5"))]))
        .await?;
    assert_eq!(waiter.await??, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_at_the_same_seq_have_exactly_one_winner() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryEventStore::in_memory();
    let alice = user("alice");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (store, alice) = (store.clone(), alice.clone());
            tokio::spawn(async move {
                store
                    .append(batch(
                        &alice,
                        0,
                        vec![item_event(&key("n", &format!("x{i}")), 1, Some("v"))],
                    ))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await? {
            Ok(_) => wins += 1,
            Err(error) => assert_eq!(error, AppendError::SeqMoved { current: Seq(1) }),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.last_seq(&alice).await?, Seq(1));
    Ok(())
}

mod durability {
    use std::io::Write;

    use super::*;
    use crate::store::log::EventLog;

    /// Everything a reader can see of a store, to compare a store with its reopened self.
    async fn observe(store: &MemoryEventStore) -> Result<String, Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        for owner in store.owners(None, 100).await? {
            out.push(format!("owner {owner} last {}", store.last_seq(&owner).await?));
            for event in store.read_feed(&owner, Seq(0), 1000).await? {
                out.push(serde_json::to_string(&event)?);
            }
            for collection in ["notes", "other"] {
                let collection = CollectionName::parse(collection)?;
                out.push(format!(
                    "{:?}",
                    store.list_items(&owner, &collection, None, 1000).await?
                ));
            }
            out.push(format!("{:?}", store.item_head(&owner, &key("notes", "a")).await?));
            out.push(format!(
                "{:?}",
                store.item_history(&owner, &key("notes", "a"), Version(0), 100).await?
            ));
            out.push(format!("{:?}", store.read_messages(&owner, Seq(0), 100).await?));
            out.push(format!("{:?}", store.devices(&owner).await?));
            out.push(format!("{:?}", store.media(&owner, &MediaId::parse("m1")?).await?));
        }
        for (owner, key) in [("alice", "k1"), ("alice", "k2"), ("bob", "k1")] {
            out.push(format!("{:?}", store.idempotency(&user(owner), key).await?));
        }
        out.push(format!("{:?}", store.changes_after(0, 10_000)?));
        out.push(format!("watch {}", *store.watch_commits().borrow()));
        Ok(out.join("\n"))
    }

    async fn write_some(store: &MemoryEventStore) -> Result<(), Box<dyn std::error::Error>> {
        let (alice, bob) = (user("alice"), user("bob"));
        let a = key("notes", "a");
        let mut first = batch(
            &alice,
            0,
            vec![
                item_event(&a, 1, Some("one")),
                item_event(&key("other", "b"), 1, Some("b")),
            ],
        );
        first.idempotency = Some(record(&alice, "k1", 100, 0));
        store.append(first).await?;
        let mut message = batch(&bob, 0, vec![message_event(&alice, &bob, "hello")]);
        message.idempotency = Some(record(&alice, "k2", 110, 0));
        store.append(message).await?;
        store
            .append(batch(&alice, 2, vec![item_event(&a, 2, Some("two"))]))
            .await?;
        store.remember(record(&bob, "k1", 120, 0)).await?;
        let device = DeviceId::parse("phone")?;
        let registered = event(EventPayload::Device(DeviceEvent::Registered {
            device_id: device,
            platform: Platform::Apns,
            token: "t".into(),
            endpoint: "ep-1".into(),
        }));
        let media = MediaObject {
            id: MediaId::parse("m1")?,
            owner: bob.clone(),
            content_type: "image/png".into(),
            size: 3,
            key: "media/bob/m1".into(),
            declared_at: Timestamp::from_millis(9),
        };
        store
            .append(batch(
                &bob,
                1,
                vec![registered, event(EventPayload::MediaDeclared(media))],
            ))
            .await?;
        store.append(batch(&alice, 3, vec![item_event(&a, 3, None)])).await?;
        Ok(())
    }

    #[test]
    fn a_data_dir_in_use_by_another_store_is_refused_until_it_closes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let first = MemoryEventStore::open(dir.path())?;
        assert!(matches!(
            MemoryEventStore::open(dir.path()),
            Err(OpenError::Locked { .. })
        ));
        drop(first);
        MemoryEventStore::open(dir.path())?;
        Ok(())
    }

    #[tokio::test]
    async fn a_reopened_store_has_the_same_state() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = MemoryEventStore::open(dir.path())?;
        write_some(&store).await?;
        let before = observe(&store).await?;
        drop(store);
        let reopened = MemoryEventStore::open(dir.path())?;
        assert_eq!(observe(&reopened).await?, before);
        // The reopened store goes on from where the log ended, and that survives another reopen.
        reopened
            .append(batch(
                &user("alice"),
                4,
                vec![item_event(&key("notes", "a"), 4, Some("back"))],
            ))
            .await?;
        assert!(
            reopened.append(batch(&user("alice"), 4, Vec::new())).await.is_err(),
            "an empty append is refused"
        );
        let after = observe(&reopened).await?;
        drop(reopened);
        assert_eq!(observe(&MemoryEventStore::open(dir.path())?).await?, after);
        Ok(())
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_off_and_the_intact_prefix_kept() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(LOG_FILE);
        let alice = user("alice");
        let store = MemoryEventStore::open(dir.path())?;
        store
            .append(batch(&alice, 0, vec![item_event(&key("notes", "a"), 1, Some("kept"))]))
            .await?;
        let intact_len = std::fs::metadata(&path)?.len();
        let before = observe(&store).await?;
        store
            .append(batch(&alice, 1, vec![item_event(&key("notes", "b"), 1, Some("torn"))]))
            .await?;
        drop(store);

        // A crash in the middle of the second write: only part of its record reached the disk.
        let full_len = std::fs::metadata(&path)?.len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(intact_len + (full_len - intact_len) / 2)?;
        let reopened = MemoryEventStore::open(dir.path())?;
        assert_eq!(observe(&reopened).await?, before);
        assert_eq!(
            std::fs::metadata(&path)?.len(),
            intact_len,
            "the torn record is cut off"
        );

        // Appends after the cut land right after the intact prefix and survive.
        reopened
            .append(batch(&alice, 1, vec![item_event(&key("notes", "c"), 1, Some("new"))]))
            .await?;
        let expected = observe(&reopened).await?;
        drop(reopened);
        assert_eq!(observe(&MemoryEventStore::open(dir.path())?).await?, expected);
        Ok(())
    }

    #[tokio::test]
    async fn a_log_reader_reads_every_record_in_order_and_leaves_a_torn_tail_alone()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(LOG_FILE);
        let store = MemoryEventStore::open(dir.path())?;
        write_some(&store).await?;
        let (changes, _) = store.changes_after(0, 1_000)?;
        assert!(
            matches!(LogReader::open(dir.path()), Err(OpenError::Locked { .. })),
            "not while a store has the log open"
        );
        drop(store);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)?
            .write_all(b"0000001c 12345678 {\"op\":")?;
        let bytes = std::fs::read(&path)?;

        let mut reader = LogReader::open(dir.path())?;
        let records = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
        assert_eq!(records.len(), 6, "five appends and one record of its own");
        assert_eq!(reader.records(), 6);
        assert_eq!(reader.torn_bytes(), 24, "the torn tail is measured");
        let events: Vec<StoredEvent> = records
            .iter()
            .flat_map(|record| match record {
                LogRecord::Append { events, .. } => events.clone(),
                LogRecord::Remember(_) => Vec::new(),
            })
            .collect();
        assert_eq!(events, changes, "every event as stored, in commit order");
        assert!(matches!(
            &records[0],
            LogRecord::Append { idempotency: Some(write), .. } if write.record.key == "k1"
        ));
        assert!(matches!(&records[3], LogRecord::Remember(write) if write.owner == user("bob")));
        assert_eq!(std::fs::read(&path)?, bytes, "the log is left as it was");
        Ok(())
    }

    #[tokio::test]
    async fn garbage_after_the_last_record_is_tolerated() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(LOG_FILE);
        let store = MemoryEventStore::open(dir.path())?;
        write_some(&store).await?;
        let before = observe(&store).await?;
        let intact_len = std::fs::metadata(&path)?.len();
        drop(store);
        for garbage in [
            &b"0000001c 12345678 {\"op\":\"remember\"}\n"[..],
            b"\0\0\0\0\0\0\0\0\0",
            b"\n",
            b"zz",
        ] {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)?
                .write_all(garbage)?;
            assert_eq!(observe(&MemoryEventStore::open(dir.path())?).await?, before);
            assert_eq!(std::fs::metadata(&path)?.len(), intact_len);
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_corrupt_record_in_the_middle_drops_everything_after_it() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(LOG_FILE);
        let alice = user("alice");
        let store = MemoryEventStore::open(dir.path())?;
        store
            .append(batch(&alice, 0, vec![item_event(&key("notes", "a"), 1, Some("one"))]))
            .await?;
        let first_len = std::fs::metadata(&path)?.len();
        store
            .append(batch(&alice, 1, vec![item_event(&key("notes", "a"), 2, Some("two"))]))
            .await?;
        store
            .append(batch(&alice, 2, vec![item_event(&key("notes", "a"), 3, Some("three"))]))
            .await?;
        drop(store);
        let mut bytes = std::fs::read(&path)?;
        let flip = usize::try_from(first_len)? + 40;
        bytes[flip] ^= 0x20;
        std::fs::write(&path, &bytes)?;
        let reopened = MemoryEventStore::open(dir.path())?;
        assert_eq!(reopened.last_seq(&alice).await?, Seq(1));
        assert_eq!(std::fs::metadata(&path)?.len(), first_len);
        Ok(())
    }

    #[tokio::test]
    async fn an_intact_record_from_a_newer_build_refuses_to_open_and_changes_nothing()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(LOG_FILE);
        let store = MemoryEventStore::open(dir.path())?;
        store
            .append(batch(
                &user("alice"),
                0,
                vec![item_event(&key("notes", "a"), 1, Some("one"))],
            ))
            .await?;
        drop(store);
        let text = std::fs::read_to_string(&path)?;
        let json = text
            .trim_end()
            .splitn(3, ' ')
            .nth(2)
            .ok_or("no json")?
            .replace("\"schema\":1", "\"schema\":99");
        let future = format!("{:08x} {:08x} {json}\n", json.len(), crc32fast::hash(json.as_bytes()));
        std::fs::write(&path, &future)?;
        let opened = MemoryEventStore::open(dir.path());
        assert!(
            matches!(opened, Err(OpenError::Unreadable { offset: 0, .. })),
            "{opened:?}"
        );
        assert_eq!(std::fs::read_to_string(&path)?, future);
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing_in_memory() -> Result<(), Box<dyn std::error::Error>> {
        // Every write to /dev/full fails with "no space left on device".
        let full = std::fs::OpenOptions::new().append(true).open("/dev/full")?;
        let store = MemoryEventStore::from_parts(State::default(), Some(EventLog::on_file(full, "/dev/full".into())));
        let alice = user("alice");
        let mut append = batch(&alice, 0, vec![item_event(&key("notes", "a"), 1, Some("one"))]);
        append.idempotency = Some(record(&alice, "k", 1, 0));
        let failed = store.append(append).await;
        assert!(
            matches!(&failed, Err(AppendError::Unavailable(f)) if f.is_retryable()),
            "{failed:?}"
        );
        assert!(matches!(
            store.remember(record(&alice, "r", 1, 0)).await,
            Err(AppendError::Unavailable(_))
        ));
        assert_eq!(store.last_seq(&alice).await?, Seq(0));
        assert_eq!(store.item_head(&alice, &key("notes", "a")).await?, ItemHead::default());
        assert_eq!(store.idempotency(&alice, "k").await?, None);
        assert_eq!(store.idempotency(&alice, "r").await?, None);
        assert_eq!(store.changes_after(0, 10)?, (Vec::new(), 0));
        assert_eq!(*store.watch_commits().borrow(), 0);
        Ok(())
    }

    /// Polls `done` until it holds, for at most ten seconds.
    async fn eventually(what: &str, done: impl Fn() -> bool) -> Result<(), Box<dyn std::error::Error>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            if std::time::Instant::now() > deadline {
                return Err(format!("timed out waiting until {what}").into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_during_a_sync_share_the_next_one_and_are_visible_only_once_synced()
    -> Result<(), Box<dyn std::error::Error>> {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir()?;
        let faults = Arc::new(log::Faults::default());
        let store = MemoryEventStore::open_with_faults(dir.path(), Arc::clone(&faults))?;
        faults.hold();
        let first = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(batch(
                        &user("u0"),
                        0,
                        vec![item_event(&key("notes", "a"), 1, Some("zero"))],
                    ))
                    .await
            })
        };
        eventually("the first sync waits", || faults.waiting()).await?;
        // Twenty more writers arrive while the first sync is in progress; one of them continues the first
        // write's stream, which its check must see although that write is not applied yet.
        let mut later = Vec::new();
        for n in 1..=20 {
            let store = store.clone();
            later.push(tokio::spawn(async move {
                let (owner, seq) = if n == 1 {
                    (user("u0"), 1)
                } else {
                    (user(&format!("u{n}")), 0)
                };
                let version = if n == 1 { 2 } else { 1 };
                store
                    .append(batch(
                        &owner,
                        seq,
                        vec![item_event(&key("notes", "a"), version, Some("later"))],
                    ))
                    .await
            }));
        }
        eventually("every later write is queued", || store.queued() == 20).await?;
        // A write conflicting with the queued ones is refused against them, but only once they are
        // settled, so that a caller re-reading the stream to retry sees what it conflicted with.
        let conflicting = {
            let store = store.clone();
            tokio::spawn(async move {
                let refused = store
                    .append(batch(
                        &user("u0"),
                        0,
                        vec![item_event(&key("notes", "b"), 1, Some("late"))],
                    ))
                    .await;
                (refused, store.last_seq(&user("u0")).await)
            })
        };
        // Nothing unsynced is visible to readers or the change feed.
        assert_eq!(store.commit_position()?, 0);
        assert_eq!(*store.watch_commits().borrow(), 0);
        assert_eq!(store.last_seq(&user("u0")).await?, Seq(0));
        assert_eq!(
            store.item_head(&user("u0"), &key("notes", "a")).await?,
            ItemHead::default()
        );
        assert!(
            !conflicting.is_finished(),
            "the conflict is answered once the queued writes settle"
        );
        faults.release();
        let (refused, seen) = conflicting.await?;
        assert!(
            matches!(refused, Err(AppendError::SeqMoved { current: Seq(2) })),
            "{refused:?}"
        );
        assert_eq!(seen?, Seq(2));
        first.await??;
        for writer in later {
            writer.await??;
        }
        assert_eq!(
            faults.syncs.load(Ordering::SeqCst),
            2,
            "one sync for the first write, one for the twenty"
        );
        assert_eq!(store.commit_position()?, 21);
        let before = observe(&store).await?;
        drop(store);
        let reopened = MemoryEventStore::open(dir.path())?;
        assert_eq!(reopened.commit_position()?, 21);
        assert_eq!(reopened.last_seq(&user("u0")).await?, Seq(2));
        assert_eq!(observe(&reopened).await?, before);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_appends_are_all_durable() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = MemoryEventStore::open(dir.path())?;
        let writers: Vec<_> = (0..64)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    let owner = user(&format!("w{}", n % 8));
                    // Each writer retries on a moved seq, as the application does, so all 64 land.
                    loop {
                        let seq = store.last_seq(&owner).await?.0;
                        let id = format!("i{n}");
                        match store
                            .append(batch(&owner, seq, vec![item_event(&key("notes", &id), 1, Some("x"))]))
                            .await
                        {
                            Ok(events) => return Ok::<_, StoreError>(events),
                            Err(AppendError::SeqMoved { .. }) => {}
                            Err(other) => return Err(StoreError::Unavailable(Failure::transient(other.to_string()))),
                        }
                    }
                })
            })
            .collect();
        let mut acknowledged = Vec::new();
        for writer in writers {
            acknowledged.extend(writer.await??);
        }
        assert_eq!(acknowledged.len(), 64);
        let (feed, _) = store.changes_after(0, 1000)?;
        drop(store);
        let reopened = MemoryEventStore::open(dir.path())?;
        let (replayed, position) = reopened.changes_after(0, 1000)?;
        assert_eq!(position, 64);
        assert_eq!(replayed, feed, "the reopened feed is the live one, in the same order");
        for event in &acknowledged {
            assert!(replayed.contains(event), "acknowledged {} is durable", event.event_id);
        }
        for n in 0..8 {
            assert_eq!(reopened.last_seq(&user(&format!("w{n}"))).await?, Seq(8));
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_fails_every_waiting_write_and_the_store_refuses_writes_until_reopened()
    -> Result<(), Box<dyn std::error::Error>> {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir()?;
        let (alice, bob) = (user("alice"), user("bob"));
        {
            let store = MemoryEventStore::open(dir.path())?;
            store
                .append(batch(&alice, 0, vec![item_event(&key("notes", "a"), 1, Some("kept"))]))
                .await?;
        }
        let faults = Arc::new(log::Faults::default());
        let store = MemoryEventStore::open_with_faults(dir.path(), Arc::clone(&faults))?;
        faults.fail_sync.store(true, Ordering::SeqCst);
        faults.hold();
        let spawn_append = |append: AppendBatch| {
            let store = store.clone();
            tokio::spawn(async move { store.append(append).await })
        };
        let first = spawn_append(batch(&alice, 1, vec![item_event(&key("notes", "a"), 2, Some("lost"))]));
        eventually("the failing sync waits", || faults.waiting()).await?;
        // One write behind it depends on it (same stream), one does not (another user): both fail with it.
        let dependent = spawn_append(batch(&alice, 2, vec![item_event(&key("notes", "a"), 3, Some("lost"))]));
        let mut other = batch(&bob, 0, vec![item_event(&key("notes", "b"), 1, Some("lost"))]);
        other.idempotency = Some(record(&bob, "k", 1, 0));
        let other = spawn_append(other);
        eventually("both later writes are queued", || store.queued() == 2).await?;
        faults.release();
        for writer in [first, dependent, other] {
            let result = writer.await?;
            assert!(
                matches!(&result, Err(AppendError::Unavailable(f)) if f.is_retryable()),
                "{result:?}"
            );
        }
        // Nothing of them is visible, and the key they would have recorded is free.
        assert_eq!(store.last_seq(&alice).await?, Seq(1));
        assert_eq!(store.last_seq(&bob).await?, Seq(0));
        assert_eq!(store.idempotency(&bob, "k").await?, None);
        assert_eq!(store.commit_position()?, 1);
        // After a failed sync nothing written can be trusted: the store refuses writes until restarted.
        faults.fail_sync.store(false, Ordering::SeqCst);
        let refused = store
            .append(batch(
                &alice,
                1,
                vec![item_event(&key("notes", "a"), 2, Some("refused"))],
            ))
            .await;
        assert!(matches!(refused, Err(AppendError::Unavailable(_))), "{refused:?}");
        assert!(store.remember(record(&bob, "r", 1, 0)).await.is_err());
        drop(store);
        // The restart finds exactly the synced prefix, and writing goes on.
        let reopened = MemoryEventStore::open(dir.path())?;
        assert_eq!(reopened.commit_position()?, 1);
        assert_eq!(reopened.last_seq(&bob).await?, Seq(0));
        reopened
            .append(batch(&alice, 1, vec![item_event(&key("notes", "a"), 2, Some("after"))]))
            .await?;
        drop(reopened);
        assert_eq!(MemoryEventStore::open(dir.path())?.last_seq(&alice).await?, Seq(2));
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_write_is_cut_off_and_later_writes_go_on() -> Result<(), Box<dyn std::error::Error>> {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir()?;
        let faults = Arc::new(log::Faults::default());
        let store = MemoryEventStore::open_with_faults(dir.path(), Arc::clone(&faults))?;
        let alice = user("alice");
        store
            .append(batch(&alice, 0, vec![item_event(&key("notes", "a"), 1, Some("one"))]))
            .await?;
        let synced_len = std::fs::metadata(dir.path().join(LOG_FILE))?.len();
        faults.fail_write.store(true, Ordering::SeqCst);
        let failed = store
            .append(batch(&alice, 1, vec![item_event(&key("notes", "a"), 2, Some("torn"))]))
            .await;
        assert!(
            matches!(&failed, Err(AppendError::Unavailable(f)) if f.is_retryable()),
            "{failed:?}"
        );
        assert_eq!(
            std::fs::metadata(dir.path().join(LOG_FILE))?.len(),
            synced_len,
            "the torn half record is cut off"
        );
        assert_eq!(store.last_seq(&alice).await?, Seq(1));
        faults.fail_write.store(false, Ordering::SeqCst);
        // The next write is checked against the state alone and goes on where the log ended.
        store
            .append(batch(&alice, 1, vec![item_event(&key("notes", "a"), 2, Some("two"))]))
            .await?;
        let before = observe(&store).await?;
        drop(store);
        let reopened = MemoryEventStore::open(dir.path())?;
        assert_eq!(observe(&reopened).await?, before);
        assert_eq!(reopened.last_seq(&alice).await?, Seq(2));
        Ok(())
    }

    #[tokio::test]
    async fn open_reports_an_unusable_directory() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x")?;
        assert!(matches!(MemoryEventStore::open(&file), Err(OpenError::Io { .. })));
        Ok(())
    }
}
