//! Erasure as the Lambda functions do it, against moto DynamoDB: the items function's store writes the
//! marker alone (`Purge::Deferred`), and the eraser function, given the marker's INSERT as the table's
//! stream delivers it (`entrypoints/tests/fixtures/stream-erasure-markers.json`), deletes the push
//! endpoints of the devices the hidden rows still name, deletes the user from the directory, purges the
//! partition, and leaves the marker alone; a marker whose purge meets the deadline is reported in
//! `batchItemFailures` and finished when delivered again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failed unwrap is a failed test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event;
use rookery_adapters_aws::dynamo::Purge;
use rookery_adapters_aws::streams::erased_owner;
use rookery_adapters_memory::{LocalMediaStore, MemoryDirectory, MemorySearchIndex};
use rookery_domain::{DeviceId, Platform, Seq, UserId, Visibility};
use rookery_entrypoints::lambda::compose::eraser_function;
use rookery_ports::{AppendBatch, EventStore, PushError, PushGateway, PushOutcome};
use rookery_tests::aws::{dynamo_store, moto_contention};
use rookery_tests::fixtures::{Outcome, at, device, item_payload, key, new_event, object, registered, user};
use serde_json::{Value, json};
use tokio::time::Instant;

const MARKERS: &str = include_str!("../../entrypoints/tests/fixtures/stream-erasure-markers.json");

/// A push gateway that records the endpoints it is asked to delete.
#[derive(Debug, Clone, Default)]
struct Deletions(Arc<Mutex<Vec<(UserId, DeviceId, String)>>>);

impl Deletions {
    fn seen(&self) -> Vec<(UserId, DeviceId, String)> {
        self.0.lock().unwrap().clone()
    }
}

impl PushGateway for Deletions {
    async fn register(
        &self,
        _owner: &UserId,
        _device_id: &DeviceId,
        _platform: Platform,
        token: &str,
        _current: Option<&str>,
    ) -> Result<String, PushError> {
        Ok(format!("endpoint/{token}"))
    }

    async fn send(&self, _endpoint: &str, _platform: Platform, _payload: &str) -> Result<PushOutcome, PushError> {
        Ok(PushOutcome::Delivered)
    }

    async fn delete(&self, owner: &UserId, device_id: &DeviceId, endpoint: &str) -> Result<(), PushError> {
        self.0
            .lock()
            .unwrap()
            .push((owner.clone(), device_id.clone(), endpoint.to_owned()));
        Ok(())
    }
}

/// The marker record of `owner` in the fixture, as one batch.
fn marker_batch(owner: &str) -> (Event, String) {
    let batch: Value = serde_json::from_str(MARKERS).unwrap();
    let record = batch["Records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dynamodb"]["NewImage"]["owner"]["S"] == owner)
        .unwrap()
        .clone();
    let sequence_number = record["dynamodb"]["SequenceNumber"].as_str().unwrap().to_owned();
    let event = serde_json::from_value(json!({"Records": [record]})).unwrap();
    (event, sequence_number)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eraser_function_finishes_a_deferred_erasure_on_dynamodb() -> Outcome {
    let (clients, store) = dynamo_store().await?;
    let store = store
        .with_contention(moto_contention())
        .with_purge(Purge::Deferred)
        .with_page_limit(20);
    let (alice, bob) = (user("alice")?, user("bob")?);
    let mut events = vec![new_event(
        registered(&device("phone")?, Platform::Fcm, "tok-alice", "endpoint/tok-alice"),
        at(0),
    )?];
    for i in 0..24 {
        let payload = item_payload(
            &key("notes", &format!("n{i}"))?,
            rookery_domain::Version(1),
            Some(object(json!({"text": "alice's secret"}))),
            Visibility::Private,
            true,
            at(i),
        );
        events.push(new_event(payload, at(i))?);
    }
    for (i, chunk) in events.chunks(5).enumerate() {
        let item_versions = chunk
            .iter()
            .filter_map(|e| {
                e.payload.as_item().map(|c| {
                    (
                        rookery_domain::ItemKey::new(c.collection.clone(), c.id.clone()),
                        rookery_domain::Version(0),
                    )
                })
            })
            .collect();
        store
            .append(AppendBatch {
                owner: alice.clone(),
                expected_seq: Some(Seq((i * 5) as u64)),
                item_versions,
                events: chunk.to_vec(),
                idempotency: None,
            })
            .await?;
    }
    let bobs = item_payload(
        &key("notes", "b1")?,
        rookery_domain::Version(1),
        Some(object(json!({"text": "bob's"}))),
        Visibility::Private,
        true,
        at(1),
    );
    store
        .append(AppendBatch {
            owner: bob.clone(),
            expected_seq: Some(Seq(0)),
            item_versions: vec![(key("notes", "b1")?, rookery_domain::Version(0))],
            events: vec![new_event(bobs, at(1))?],
            idempotency: None,
        })
        .await?;

    // The items function's erasure: the marker alone, after which nothing of alice is readable...
    store.erase_owner(&alice, at(100)).await?;
    assert!(store.devices(&alice).await?.is_empty());
    assert!(store.read_feed(&alice, Seq(0), 10).await?.is_empty());
    // ...yet the eraser can still find the endpoints to delete.
    assert_eq!(store.erased_devices(&alice).await?.len(), 1);
    assert!(
        store.erased_devices(&bob).await?.is_empty(),
        "a live user's devices are not the eraser's"
    );

    let push = Deletions::default();
    let directory = MemoryDirectory::new();
    let media = LocalMediaStore::in_memory("http://127.0.0.1:9", b"eraser-secret".to_vec());
    let eraser = eraser_function(
        erased_owner,
        store.clone(),
        MemorySearchIndex::new(),
        push.clone(),
        media,
        directory.clone(),
    );
    let (batch, sequence_number) = marker_batch("alice");

    // A deadline already past: the purge does not start, and the marker is reported to be delivered again.
    let answer = serde_json::to_value(eraser.handle(&batch, Instant::now()).await?)?;
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": sequence_number}]})
    );

    // Delivered again with time to spare: done, and only the marker is left of alice in the table.
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = serde_json::to_value(eraser.handle(&batch, deadline).await?)?;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let table = clients.config().table.clone();
    let rows = clients
        .dynamodb()
        .scan()
        .table_name(&table)
        .consistent_read(true)
        .send()
        .await?;
    let alices: Vec<String> = rows
        .items()
        .iter()
        .filter_map(|row| row.get("pk").and_then(|v| v.as_s().ok()).cloned())
        .filter(|pk| pk.contains("alice"))
        .collect();
    assert_eq!(alices, vec!["erased#alice".to_owned()], "only the marker stays");
    assert!(
        push.seen().iter().any(|(owner, device_id, endpoint)| owner == &alice
            && device_id.as_str() == "phone"
            && endpoint == "endpoint/tok-alice"),
        "{:?}",
        push.seen()
    );
    assert!(directory.deleted().contains(&alice));
    assert_eq!(
        store.read_feed(&bob, Seq(0), 10).await?.len(),
        1,
        "bob keeps his stream"
    );

    // A third delivery is harmless.
    let answer = serde_json::to_value(eraser.handle(&batch, deadline).await?)?;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(store.erased(&alice).await?, Some(at(100)));
    Ok(())
}
