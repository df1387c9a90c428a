//! The realtime guarantee as a property, on the memory backend over real sockets: a client that follows
//! the protocol (applies changes in seq order, drops seqs it has, resumes from the cursor of the last
//! change it applied) ends with exactly the server's feed, whatever the disconnects, the concurrent
//! writers, and duplicated or reordered delivery (as API Gateway may give) do.
//!
//! Some items are large and the client sometimes stops reading until the writers have moved on, so the
//! server is often caught in the middle of a replay, blocked on a full socket, while new changes commit:
//! the race between replay and live delivery is exercised, not just possible.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use rookery_entrypoints::realtime::RealtimeConfig;
use rookery_tests::http::{EVENTUALLY, TestApp, TestUser};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Socket, beginning, feed, memory_server, seq, write, write_text};

/// One server for every case (each case has its own users), on a runtime that outlives the cases.
struct Shared {
    runtime: Runtime,
    app: TestApp,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let app = runtime.block_on(memory_server(RealtimeConfig::default()));
        Shared { runtime, app }
    })
}

/// A write one of the concurrent writers makes.
#[derive(Debug, Clone)]
enum Write {
    /// The user puts one of a few items (writers race on the same ones) with this many KiB of text.
    Item(u8, usize),
    /// Another user sends the user a message (it lands in the user's stream).
    MessageIn,
    /// Another user writes to their own stream (it must never reach the user).
    Elsewhere,
}

/// What the fault layer between the socket and the client does to one change frame.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Pass,
    Duplicate,
    /// Held back and handed over after the next change frame (lost if the socket drops first).
    Delay,
    /// Handed over, then the client reads nothing until the writers have made three more writes.
    Stall,
}

fn writes() -> impl Strategy<Value = Write> {
    prop_oneof![
        6 => (0u8..4, prop_oneof![3 => Just(0usize), 1 => 16usize..64]).prop_map(|(n, kib)| Write::Item(n, kib)),
        2 => Just(Write::MessageIn),
        1 => Just(Write::Elsewhere),
    ]
}

fn faults() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::Pass),
        1 => Just(Fault::Duplicate),
        1 => Just(Fault::Delay),
        1 => Just(Fault::Stall),
    ]
}

/// The client of the protocol: what it applied, in order, and what it holds until the gap before it fills.
#[derive(Debug, Default)]
struct Client {
    applied: Vec<Value>,
    /// The cursor after the last applied change; `None` before the first.
    cursor: Option<String>,
    pending: BTreeMap<u64, (String, Value)>,
}

impl Client {
    fn last(&self) -> u64 {
        self.applied.len() as u64
    }

    /// Takes a change frame: drops a seq it has, holds one after a gap, applies in seq order.
    fn receive(&mut self, frame: &Value) {
        let change = frame["change"].clone();
        let cursor = frame["cursor"].as_str().expect("a cursor").to_owned();
        let seq = seq(&change);
        if seq <= self.last() {
            return;
        }
        self.pending.insert(seq, (cursor, change));
        while let Some((cursor, change)) = self.pending.remove(&(self.last() + 1)) {
            self.applied.push(change);
            self.cursor = Some(cursor);
        }
    }

    /// A socket ended: what was held back is forgotten (it will come again after the resume).
    fn disconnected(&mut self) {
        self.pending.clear();
    }
}

/// Follows the user's feed over sockets that drop after the given numbers of frames, until it has
/// applied `done`'s count of changes.
async fn follow(
    user: &TestUser<'_>,
    start: String,
    drops: Vec<usize>,
    faults: Vec<Fault>,
    mut done: watch::Receiver<Option<u64>>,
    mut written: watch::Receiver<u64>,
) -> Client {
    let mut client = Client::default();
    let mut faults = faults.into_iter().cycle();
    let mut sessions = drops.into_iter().map(Some).chain(std::iter::repeat(None));
    loop {
        let drop_after = sessions.next().flatten();
        let mut socket = Socket::open(user).await;
        socket.resume(Some(client.cursor.as_deref().unwrap_or(&start))).await;
        let mut frames = 0usize;
        let mut delayed: Option<Value> = None;
        let mut pushed_back = None;
        loop {
            let finished = *done.borrow();
            if finished.is_some_and(|n| client.last() >= n) {
                return client;
            }
            if drop_after.is_some_and(|n| frames >= n) {
                break;
            }
            // A delayed frame waits only for frames already there: reordered, never withheld.
            if delayed.is_some() {
                match socket.next_message(Duration::ZERO).await {
                    Some(message) => pushed_back = Some(message),
                    None => {
                        if let Some(held) = delayed.take() {
                            client.receive(&held);
                        }
                        continue;
                    }
                }
            }
            let message = if let Some(message) = pushed_back.take() {
                Some(message)
            } else if finished.is_some() {
                socket.next_message(EVENTUALLY).await
            } else {
                tokio::select! {
                    message = socket.next_message(EVENTUALLY) => message,
                    _ = done.changed() => continue,
                }
            };
            let frame: Value = match message {
                Some(Ok(Message::Text(text))) => serde_json::from_str(&text).expect("a JSON frame"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("the socket ended unexpectedly: {other:?}; applied {}", client.last()),
            };
            match frame["type"].as_str() {
                Some("change") => {
                    frames += 1;
                    match faults.next().unwrap_or(Fault::Pass) {
                        Fault::Pass => client.receive(&frame),
                        Fault::Duplicate => {
                            client.receive(&frame);
                            client.receive(&frame);
                        }
                        Fault::Delay => {
                            if let Some(held) = delayed.replace(frame) {
                                client.receive(&held);
                            }
                            continue;
                        }
                        Fault::Stall => {
                            client.receive(&frame);
                            // The writers set the count to the maximum when they finish, so this ends.
                            let target = written.borrow().saturating_add(3);
                            let _ = written.wait_for(|w| *w >= target).await;
                        }
                    }
                    if let Some(held) = delayed.take() {
                        client.receive(&held);
                    }
                }
                Some("ready") => {
                    if let Some(held) = delayed.take() {
                        client.receive(&held);
                    }
                }
                other => panic!("unexpected frame {other:?}: {frame}"),
            }
        }
        drop(socket);
        client.disconnected();
    }
}

async fn scenario(case: u64, writers: Vec<Vec<Write>>, drops: Vec<usize>, faults: Vec<Fault>) {
    let app = &shared().app;
    let alice = app.user(&format!("p{case}-alice")).await;
    let bob = app.user(&format!("p{case}-bob")).await;
    let start = beginning(&alice).await;
    let (finish, done) = watch::channel(None);
    let (count, written) = watch::channel(0u64);

    let writing = async {
        let writers = writers.iter().enumerate().map(|(w, writes)| {
            let (alice, bob, count) = (&alice, &bob, &count);
            async move {
                for (i, write_) in writes.iter().enumerate() {
                    match write_ {
                        Write::Item(n, kib) => write_text(alice, &format!("item-{n}"), &"x".repeat(kib * 1024)).await,
                        Write::MessageIn => {
                            let body = json!({"to": alice.id(), "text": format!("{w}-{i}")});
                            let sent = bob.post("/v1/messages", &body).await;
                            assert_eq!(sent.status.as_u16(), 202, "{}", sent.text);
                        }
                        Write::Elsewhere => write(bob, &format!("bob-{w}-{i}")).await,
                    }
                    count.send_modify(|c| *c += 1);
                }
            }
        });
        futures_util::future::join_all(writers).await;
        count.send_replace(u64::MAX);
        let total = feed(&alice).await.len() as u64;
        finish.send_replace(Some(total));
    };
    let (client, ()) = tokio::join!(follow(&alice, start, drops, faults, done, written), writing);

    let server = feed(&alice).await;
    assert_eq!(client.applied, server, "the client ends with exactly the server's feed");
    let seqs: Vec<u64> = client.applied.iter().map(seq).collect();
    assert_eq!(seqs, (1..=server.len() as u64).collect::<Vec<u64>>());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_client_that_follows_the_protocol_ends_with_the_servers_feed(
        writers in prop::collection::vec(prop::collection::vec(writes(), 1..40), 1..4),
        drops in prop::collection::vec(0usize..12, 0..8),
        faults in prop::collection::vec(faults(), 1..16),
    ) {
        static CASES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let case = CASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shared().runtime.block_on(scenario(case, writers, drops, faults));
    }
}
