//! Times the erasure of one user with many events on DynamoDB (moto): the figure behind the "Account
//! erasure" section of `docs/PERFORMANCE.md`.
//!
//! Run by hand, not in CI (CI only builds it): `rookery-erase-bench [EVENTS]` (default 100000). It starts
//! the tests' moto server, creates a table, writes `EVENTS` message events to one user's stream (the rows an
//! append would write: one per event, plus the head; put directly, see `run`), then times `EventStore::erase_owner` with the purge inline
//! (the marker, then every row of the partition by `BatchWriteItem` of 25), and checks the partition is
//! empty afterwards.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue::{N, S};
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use rookery_adapters_aws::dynamo::Purged;
use rookery_domain::Seq;
use rookery_ports::EventStore;
use rookery_tests::aws::dynamo_store;
use rookery_tests::fixtures::{BoxError, at, message_payload, new_event, user};

async fn run(events: u64) -> Result<(), BoxError> {
    let (clients, store) = dynamo_store().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    let started = Instant::now();
    // Appends through the store would be one `TransactWriteItems` each, which moto runs by copying the
    // whole table (23 events per second at 1,000 events): the rows an append writes for a message (the
    // event row; the head comes last) are put directly, 25 per `BatchWriteItem`.
    let client = clients.dynamodb();
    let table = clients.config().table.clone();
    let mut written = 0u64;
    while written < events {
        let mut requests = Vec::new();
        for i in written..events.min(written + 25) {
            let seq = i + 1;
            let event = new_event(message_payload(&bob, &alice, &format!("message {i}"), at(i))?, at(i))?;
            let stored = event.stored(&alice, Seq(seq));
            let row = HashMap::from([
                ("pk".to_owned(), S("user#alice".into())),
                ("sk".to_owned(), S(format!("evt#{seq:020}"))),
                ("kind".to_owned(), S("event".into())),
                ("owner".to_owned(), S("alice".into())),
                ("seq".to_owned(), N(seq.to_string())),
                ("type".to_owned(), S("message.received".into())),
                ("at".to_owned(), N(i.to_string())),
                ("event".to_owned(), S(serde_json::to_string(&stored)?)),
            ]);
            requests.push(
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(row)).build()?)
                    .build(),
            );
        }
        written += requests.len() as u64;
        let out = client
            .batch_write_item()
            .request_items(table.clone(), requests)
            .send()
            .await?;
        if out.unprocessed_items.is_some_and(|u| !u.is_empty()) {
            return Err("moto left items unprocessed".into());
        }
    }
    let head = HashMap::from([
        ("pk".to_owned(), S("user#alice".into())),
        ("sk".to_owned(), S("head".into())),
        ("kind".to_owned(), S("head".into())),
        ("owner".to_owned(), S("alice".into())),
        ("last_seq".to_owned(), N(written.to_string())),
    ]);
    client.put_item().table_name(&table).set_item(Some(head)).send().await?;
    if store.last_seq(&alice).await? != Seq(written) || store.read_feed(&alice, Seq(written - 1), 5).await?.len() != 1 {
        return Err("the filled stream does not read back".into());
    }
    let fill = started.elapsed();
    println!(
        "filled {written} events in {:.1} s ({:.0} events/s)",
        fill.as_secs_f64(),
        written as f64 / fill.as_secs_f64()
    );

    let started = Instant::now();
    store.erase_owner(&alice, at(events + 1)).await?;
    let erase = started.elapsed();
    let left = store.purge_erased(&alice, None).await?;
    println!(
        "erased {} rows in {:.1} s ({:.0} rows/s); then a purge found: {left:?}",
        written + 1,
        erase.as_secs_f64(),
        (written + 1) as f64 / erase.as_secs_f64()
    );
    if left != (Purged::Done { deleted: 0 }) {
        return Err("the partition is not empty".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let events = match std::env::args().nth(1).map(|a| a.parse::<u64>()) {
        None => 100_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("usage: rookery-erase-bench [EVENTS]: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(events)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rookery-erase-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
