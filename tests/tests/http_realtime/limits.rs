//! The edges of `/v1/realtime` on `rookery serve`: the token gate before the upgrade, the connection
//! caps, a client that does not read, idle and old sockets, oversized frames and graceful shutdown.

use std::time::Duration;

use reqwest::StatusCode;
use rookery_entrypoints::realtime::RealtimeConfig;
use rookery_tests::http::{EVENTUALLY, eventually};
use serde_json::json;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::support::{Socket, handshake, memory_server, refused};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_bad_token_is_401_before_the_upgrade() {
    let app = memory_server(RealtimeConfig::default()).await;
    let alice = app.user("alice").await;

    let (status, body, challenge) = refused(&app, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthorized");
    assert_eq!(challenge.as_deref(), Some("Bearer"));

    let forged = format!("{}x", alice.token());
    for (header, query) in [
        (Some("not-a-jwt"), None),
        (None, Some("not-a-jwt")),
        (None, Some(forged.as_str())),
    ] {
        let (status, body, challenge) = refused(&app, header, query).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header:?} {query:?}");
        assert_eq!(body["code"], "unauthorized");
        assert!(challenge.is_some_and(|c| c.starts_with("Bearer")));
    }

    // A good token works in either place.
    for (header, query) in [(Some(alice.token()), None), (None, Some(alice.token()))] {
        let mut socket = handshake(&app, header, query).await.expect("the handshake succeeds");
        socket.resume(None).await;
        socket.ready().await;
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_is_not_a_handshake_is_426() {
    let app = memory_server(RealtimeConfig::default()).await;
    let alice = app.user("alice").await;
    let answer = alice.get("/v1/realtime").await.expect_problem(426, "invalid_request");
    assert_eq!(answer.header("upgrade"), Some("websocket"));
    // The token gate comes first.
    app.anonymous(reqwest::Method::GET, "/v1/realtime")
        .send()
        .await
        .map(|r| assert_eq!(r.status(), StatusCode::UNAUTHORIZED))
        .expect("an answer");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_capped_per_user_and_in_total() {
    let config = RealtimeConfig {
        max_connections: 3,
        max_connections_per_user: 2,
        ..RealtimeConfig::default()
    };
    let app = memory_server(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;

    let first = Socket::open(&alice).await;
    let _second = Socket::open(&alice).await;
    let (status, body, _) = refused(&app, Some(alice.token()), None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "rate_limited");

    let _bobs = Socket::open(&bob).await;
    let (status, _, _) = refused(&app, Some(carol.token()), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // Closing a socket frees its slot.
    drop(first);
    let again = eventually(EVENTUALLY, || async {
        handshake(&app, Some(alice.token()), None).await.ok()
    })
    .await;
    assert!(again.is_some(), "the closed socket's slot was freed");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_closed_and_frees_its_slot() {
    let config = RealtimeConfig {
        max_connections_per_user: 1,
        queue_frames: 4,
        queue_bytes: 256 * 1024,
        ..RealtimeConfig::default()
    };
    let app = memory_server(config).await;
    let alice = app.user("alice").await;
    let mut stuck = Socket::open(&alice).await;
    stuck.resume(None).await;

    // Large changes fill the socket's buffers and then its queue, while this client reads nothing.
    // The only socket alice may have is taken until the server gives up on the stuck one.
    let text = "x".repeat(100_000);
    let mut fresh = None;
    for i in 0..500 {
        let written = alice
            .put(&format!("/v1/items/big/b{i}"), &json!({"data": {"text": text}}))
            .await;
        assert!(written.status.is_success(), "{}", written.text);
        match handshake(&app, Some(alice.token()), None).await {
            Ok(socket) => {
                fresh = Some(socket);
                break;
            }
            Err(WsError::Http(response)) if response.status().as_u16() == 429 => continue,
            Err(other) => panic!("unexpected handshake failure: {other}"),
        }
    }
    let mut fresh = fresh.expect("the server closed the stuck socket and freed its slot");

    // Once its client reads again, it finds the close frame after what was buffered.
    let closed = stuck.closed().await;
    let (code, reason) = closed.expect("a close frame");
    assert_eq!(code, 1008);
    assert!(reason.contains("too slow"), "{reason}");

    fresh.resume(None).await;
    fresh.ready().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_socket_with_a_close_frame() {
    let app = memory_server(RealtimeConfig::default()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mut sockets = vec![Socket::open(&alice).await, Socket::open(&bob).await];
    for socket in &mut sockets {
        socket.resume(None).await;
        socket.ready().await;
    }
    let [mut a, mut b] = <[Socket; 2]>::try_from(sockets).ok().expect("two sockets");
    let (a_closed, b_closed, ()) = tokio::join!(a.closed(), b.closed(), app.shutdown());
    for closed in [a_closed, b_closed] {
        let (code, reason) = closed.expect("a close frame");
        assert_eq!(code, 1001);
        assert!(reason.contains("shutting down"), "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_old_sockets_are_closed() {
    let idle = memory_server(RealtimeConfig {
        idle_timeout: Duration::from_millis(300),
        ..RealtimeConfig::default()
    })
    .await;
    let alice = idle.user("alice").await;
    let mut socket = Socket::open(&alice).await;
    let (code, reason) = socket.closed().await.expect("a close frame");
    assert_eq!(code, 1001);
    assert!(reason.contains("idle"), "{reason}");
    idle.shutdown().await;

    let old = memory_server(RealtimeConfig {
        max_age: Duration::from_millis(500),
        ..RealtimeConfig::default()
    })
    .await;
    let alice = old.user("alice").await;
    let mut socket = Socket::open(&alice).await;
    socket.resume(None).await;
    socket.ready().await;
    let (code, reason) = socket.closed().await.expect("a close frame");
    assert_eq!(code, 1001);
    assert!(reason.contains("maximum age"), "{reason}");
    old.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_16_kib_closes_with_1009() {
    let app = memory_server(RealtimeConfig::default()).await;
    let alice = app.user("alice").await;
    let mut socket = Socket::open(&alice).await;
    let huge = json!({"type": "resume", "since": "x".repeat(17 * 1024)}).to_string();
    socket.send_text(&huge).await;
    let (code, _) = socket.closed().await.expect("a close frame");
    assert_eq!(code, 1009);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_sockets_of_an_erased_account_close_with_4410_and_it_cannot_reconnect() {
    let app = memory_server(RealtimeConfig {
        erasure_check: Duration::from_millis(100),
        ..RealtimeConfig::default()
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mut alices = [Socket::open(&alice).await, Socket::open(&alice).await];
    let mut bobs = Socket::open(&bob).await;
    for socket in alices.iter_mut().chain([&mut bobs]) {
        socket.resume(None).await;
        socket.ready().await;
    }

    alice.delete("/v1/me").await.expect_status(202);
    for socket in &mut alices {
        let (code, reason) = socket.closed().await.expect("a close frame");
        assert_eq!(code, 4410);
        assert!(reason.starts_with("account_erased"), "{reason}");
    }
    let (status, body, _) = refused(&app, Some(alice.token()), None).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["code"], "account_erased");

    // Another user's socket stays open and live.
    bobs.ping().await;
    crate::support::write(&bob, "b").await;
    assert_eq!(crate::support::seq(&bobs.change().await), 1);
    app.shutdown().await;
}
