//! The frames of `API.md`'s Realtime section over real sockets, on the memory store (`rookery serve`'s
//! own composition) and on the SQLite store.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Server, Socket, beginning, cursor_after, feed, seq, write, write_many};

/// Runs each named test (an `async fn(&Server)`) once on each store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::support::{Server, SqliteApp, memory_server};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let app = memory_server(Default::default()).await;
                let server = Server::Memory(Box::new(app));
                super::$name(&server).await;
                if let Server::Memory(app) = server {
                    app.shutdown().await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let server = Server::Sqlite(SqliteApp::start().await);
                super::$name(&server).await;
                if let Server::Sqlite(app) = server {
                    app.shutdown().await;
                }
            }
        }
    )*};
}

on_both_stores!(
    resume_without_since_starts_at_the_head,
    resume_with_since_replays_then_goes_live,
    a_new_resume_replaces_the_previous_one,
    more_than_1000_missed_changes_is_behind,
    ping_is_answered_with_pong,
    bad_frames_and_cursors_are_error_frames_and_the_socket_stays_open,
    another_users_changes_never_arrive,
);

async fn resume_without_since_starts_at_the_head(server: &Server) {
    let alice = server.api().user("alice").await;
    write(&alice, "a").await;
    write(&alice, "b").await;
    let mut socket = Socket::open(&alice).await;
    socket.resume(None).await;
    assert_eq!(socket.ready().await, cursor_after(&alice, 2).await);

    write(&alice, "c").await;
    let frame = socket.expect("change").await;
    let feed = feed(&alice).await;
    assert_eq!(frame["change"], feed[2], "a change frame carries the /v1/sync change");
    assert_eq!(frame["cursor"], json!(cursor_after(&alice, 3).await));
}

async fn resume_with_since_replays_then_goes_live(server: &Server) {
    let alice = server.api().user("alice").await;
    let start = beginning(&alice).await;
    for id in ["a", "b", "c"] {
        write(&alice, id).await;
    }
    let mut socket = Socket::open(&alice).await;
    socket.resume(Some(&start)).await;
    let mut replayed = Vec::new();
    for _ in 0..3 {
        replayed.push(socket.change().await);
    }
    assert_eq!(replayed, feed(&alice).await);
    assert_eq!(socket.ready().await, cursor_after(&alice, 3).await);

    let before = Instant::now();
    write(&alice, "d").await;
    assert_eq!(seq(&socket.change().await), 4);
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "a change arrives within a second of its commit"
    );

    // From the middle of the feed, on a second socket of the same user.
    let mut second = Socket::open(&alice).await;
    second.resume(Some(&cursor_after(&alice, 2).await)).await;
    assert_eq!(second.seqs(2).await, vec![3, 4]);
    assert_eq!(second.ready().await, cursor_after(&alice, 4).await);
}

async fn a_new_resume_replaces_the_previous_one(server: &Server) {
    let alice = server.api().user("alice").await;
    for id in ["a", "b", "c"] {
        write(&alice, id).await;
    }
    let mut socket = Socket::open(&alice).await;
    socket.resume(None).await;
    socket.ready().await;

    socket.resume(Some(&cursor_after(&alice, 1).await)).await;
    assert_eq!(socket.seqs(2).await, vec![2, 3]);
    assert_eq!(socket.ready().await, cursor_after(&alice, 3).await);

    write(&alice, "d").await;
    assert_eq!(seq(&socket.change().await), 4);
    socket.ping().await;

    socket.resume(None).await;
    assert_eq!(socket.ready().await, cursor_after(&alice, 4).await);
    write(&alice, "e").await;
    assert_eq!(seq(&socket.change().await), 5);
}

async fn more_than_1000_missed_changes_is_behind(server: &Server) {
    let alice = server.api().user("alice").await;
    let start = beginning(&alice).await;
    write_many(&alice, 1002).await;
    let mut socket = Socket::open(&alice).await;

    socket.resume(Some(&start)).await;
    let behind = socket.expect("behind").await;
    assert_eq!(behind["cursor"], json!(start));
    // Nothing is delivered after `behind` until the next resume.
    socket.ping().await;

    // Exactly 1,000 missed changes are replayed.
    socket.resume(Some(&cursor_after(&alice, 2).await)).await;
    let seqs = socket.seqs(1000).await;
    assert_eq!(seqs, (3..=1002).collect::<Vec<u64>>());
    socket.ready().await;
}

async fn ping_is_answered_with_pong(server: &Server) {
    let alice = server.api().user("alice").await;
    let mut socket = Socket::open(&alice).await;
    // Before any resume, and after one.
    socket.ping().await;
    socket.resume(None).await;
    socket.ready().await;
    socket.ping().await;
}

async fn bad_frames_and_cursors_are_error_frames_and_the_socket_stays_open(server: &Server) {
    let alice = server.api().user("alice").await;
    let bob = server.api().user("bob").await;
    write(&alice, "a").await;
    for id in ["x", "y", "z"] {
        write(&bob, id).await;
    }
    let mut socket = Socket::open(&alice).await;
    socket.resume(None).await;
    socket.ready().await;

    for bad in [
        "not json",
        "[]",
        r#"{"type": "subscribe"}"#,
        r#"{"since": "abc"}"#,
        r#"{"type": "resume", "since": 7}"#,
        r#"{"type": "resume", "since": "not a cursor"}"#,
    ] {
        socket.send_text(bad).await;
        socket.expect_invalid().await;
    }
    socket.send_binary(b"{\"type\": \"ping\"}".to_vec()).await;
    socket.expect_invalid().await;
    // A cursor past the end of this user's feed (bob's is longer).
    socket.resume(Some(&cursor_after(&bob, 3).await)).await;
    socket.expect_invalid().await;

    // The socket is open and the first resume is still in effect.
    socket.ping().await;
    write(&alice, "b").await;
    assert_eq!(seq(&socket.change().await), 2);
}

async fn another_users_changes_never_arrive(server: &Server) {
    let api = server.api();
    let alice = api.user("alice").await;
    let bob = api.user("bob").await;
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

    let only = bobs.change().await;
    assert_eq!(only, feed(&bob).await[0]);
    // Alice's changes and the message were routed before alice saw the last of them; none reached bob.
    bobs.ping().await;
    alices.ping().await;
}
