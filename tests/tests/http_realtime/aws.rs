//! `/v1/realtime` on `rookery serve --backend aws` over real sockets, against moto: Cognito users,
//! DynamoDB, and the server's own stream poller feeding the realtime hub. The same frames and
//! resume-from-cursor semantics as on the memory and SQLite stores (`protocol.rs`).
//!
//! Every test makes its own table, bucket and user pool, so they share the binary's moto server
//! without seeing each other's state.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rookery_tests::http::aws::spawn_aws_app;
use serde_json::json;

use crate::support::{Socket, beginning, cursor_after, feed, refused, seq, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_realtime_resume_with_and_without_since_then_live_changes_from_the_stream() {
    let app = spawn_aws_app().await;
    let alice = app.user("alice-rt").await;
    let start = beginning(&alice).await;
    write(&alice, "a").await;
    write(&alice, "b").await;

    // Without since: from the head, nothing replayed.
    let mut live = Socket::open(&alice).await;
    live.resume(None).await;
    assert_eq!(live.ready().await, cursor_after(&alice, 2).await);

    // With since: the replay from the table, then ready.
    let mut replaying = Socket::open(&alice).await;
    replaying.resume(Some(&start)).await;
    let replayed = vec![replaying.change().await, replaying.change().await];
    assert_eq!(replayed, feed(&alice).await, "the replay carries the /v1/sync changes");
    assert_eq!(replaying.ready().await, cursor_after(&alice, 2).await);

    // A write: its frame reaches both sockets through the stream poller, never the write path.
    let before = Instant::now();
    write(&alice, "c").await;
    let frame = live.expect("change").await;
    let latency = before.elapsed();
    println!("serve --backend aws: from sending the write to its frame {latency:?} (poll interval 200 ms)");
    assert_eq!(frame["change"], feed(&alice).await[2]);
    assert_eq!(frame["cursor"], json!(cursor_after(&alice, 3).await));
    assert_eq!(seq(&replaying.change().await), 3);
    assert!(
        latency < Duration::from_secs(2),
        "a change arrives within the contract's 2 seconds on AWS (took {latency:?})"
    );

    // From the middle, on a third socket; then a resume with since replaces the live one's.
    let mut middle = Socket::open(&alice).await;
    middle.resume(Some(&cursor_after(&alice, 1).await)).await;
    assert_eq!(middle.seqs(2).await, vec![2, 3]);
    assert_eq!(middle.ready().await, cursor_after(&alice, 3).await);
    live.resume(Some(&cursor_after(&alice, 2).await)).await;
    assert_eq!(live.seqs(1).await, vec![3]);
    assert_eq!(live.ready().await, cursor_after(&alice, 3).await);
    write(&alice, "d").await;
    for socket in [&mut live, &mut replaying, &mut middle] {
        assert_eq!(seq(&socket.change().await), 4);
        socket.ping().await;
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_realtime_changes_reach_only_their_owner() {
    let app = spawn_aws_app().await;
    let alice = app.user("alice-iso").await;
    let bob = app.user("bob-iso").await;
    let mut alices = Socket::open(&alice).await;
    let mut bobs = Socket::open(&bob).await;
    for socket in [&mut alices, &mut bobs] {
        socket.resume(None).await;
        socket.ready().await;
    }

    write(&alice, "a").await;
    write(&bob, "b").await;
    write(&alice, "c").await;
    let sent = bob
        .post("/v1/messages", &json!({"to": alice.id(), "text": "hello"}))
        .await;
    assert_eq!(sent.status.as_u16(), 202, "{}", sent.text);

    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(alices.change().await);
    }
    assert_eq!(received, feed(&alice).await);
    assert_eq!(received[2]["type"], "message.received");
    assert_eq!(bobs.change().await, feed(&bob).await[0]);
    // Every change was routed before alice saw her last one; a pong right after shows bob got none more.
    bobs.ping().await;
    alices.ping().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_realtime_gate_bad_frames_and_shutdown_match_rookery_serve() {
    let app = spawn_aws_app().await;
    let alice = app.user("alice-edge").await;
    let (status, body, challenge) = refused(&app, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthorized");
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    let (status, _, challenge) = refused(&app, None, Some("not-a-jwt")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.is_some_and(|c| c.starts_with("Bearer")));

    // The token in the query, as browsers send it.
    let mut socket = crate::support::handshake(&app, None, Some(alice.token()))
        .await
        .expect("the handshake succeeds");
    socket.send_text("hello").await;
    socket.expect_invalid().await;
    socket.resume(Some("bogus")).await;
    socket.expect_invalid().await;
    socket.ping().await;

    app.shutdown().await;
    let (code, reason) = socket.closed().await.expect("a close frame");
    assert_eq!(code, 1001);
    assert!(reason.contains("shutting down"), "{reason}");
}
