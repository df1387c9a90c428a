//! A two-user journey over every route of `API.md`, against a real server on a loopback port.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used)]

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use rookery_entrypoints::LocalConfig;
use rookery_entrypoints::http::RateLimit;
use rookery_tests::http::journey::{self, DevPushes};
use rookery_tests::http::{Answer, spawn_app, spawn_app_with};
use serde_json::json;

// The first six tests run the shared journey steps (also run on AWS by `http_journey_aws.rs`), then
// check what only the memory backend has: the recorded pushes and the server's own media URLs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_journey_covers_versions_conflicts_history_time_travel_restore_and_delete() {
    let app = spawn_app().await;
    journey::items(&app.user("alice").await, &app.user("bob").await).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_live_items_by_id_and_idempotent_writes_replay() {
    let app = spawn_app().await;
    journey::listing_and_idempotency(&app.user("alice").await, &app.user("bob").await).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_yields_every_change_once_in_order_and_search_finds_changes_soon() {
    let app = spawn_app().await;
    journey::sync_and_search(&app.user("alice").await, &app.user("bob").await).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_the_last_word_as_a_prefix_as_the_user_types() {
    let app = spawn_app().await;
    journey::search_as_you_type(&app.user("alice").await, &app.user("bob").await).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_inbox_the_feed_and_registered_devices() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    journey::messages_and_devices(&alice, &bob, &DevPushes).await;

    // The local gateway's record says when each push went out, and for which message.
    let recorded = bob.get("/v1/dev/pushes").await.expect_status(200);
    let pushes = recorded.body["pushes"].as_array().cloned().unwrap_or_default();
    assert!(!pushes.is_empty(), "{}", recorded.text);
    for push in &pushes {
        assert!(push["at"].as_str().is_some(), "{push}");
        let in_payload = push["payload"]["message_id"]
            .as_str()
            .or_else(|| push["payload"]["data"]["message_id"].as_str());
        assert!(push["message_id"].as_str().is_some(), "{push}");
        assert_eq!(push["message_id"].as_str(), in_payload, "{push}");
    }
    // Each user sees only the pushes to their own devices.
    assert_eq!(
        alice.get("/v1/dev/pushes").await.expect_status(200).body["pushes"],
        json!([])
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_declared_uploaded_through_the_signed_url_and_downloaded() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let seen = journey::media(&alice, &app.user("bob").await).await;
    let bytes: &[u8] = b"\x89PNG\r\n\x1a\nfake image";
    let url = seen.declared.body["upload"]["url"].as_str().expect("an upload URL");
    let download = seen.uploaded.body["download"]["url"].as_str().expect("a download URL");
    for own in [url, download] {
        assert!(
            own.starts_with(app.base()),
            "local media URLs are the server's own: {own}"
        );
    }

    // Each signed URL takes exactly one upload, and a download URL only with its signature.
    let client = app.client();
    let twice = client
        .put(url)
        .header(CONTENT_TYPE, "image/png")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("sent");
    assert_eq!(Answer::read(twice).await.status.as_u16(), 409);
    let forged = client
        .get(download.replace("sig=", "sig=00"))
        .send()
        .await
        .expect("sent");
    Answer::read(forged).await.expect_problem(403, "forbidden");

    // A pending upload URL refuses another type and a tampered signature.
    let pending = alice
        .post("/v1/media", &json!({"content_type": "image/png", "size": bytes.len()}))
        .await
        .expect_status(201);
    let url = pending.body["upload"]["url"].as_str().expect("an upload URL");
    let wrong_type = client
        .put(url)
        .header(CONTENT_TYPE, "image/gif")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("sent");
    Answer::read(wrong_type).await.expect_problem(400, "invalid_request");
    let tampered = client
        .put(format!("{url}0"))
        .header(CONTENT_TYPE, "image/png")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("sent");
    Answer::read(tampered).await.expect_problem(403, "forbidden");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_authenticates_tags_requests_and_answers_problems() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;

    let health = Answer::read(app.anonymous(Method::GET, "/healthz").send().await.expect("sent"))
        .await
        .expect_status(200);
    assert_eq!(health.body, json!({"status": "ok"}));
    assert!(health.header("x-request-id").is_some_and(|id| !id.is_empty()));
    let openapi = Answer::read(app.anonymous(Method::GET, "/openapi.json").send().await.expect("sent"))
        .await
        .expect_status(200);
    assert!(openapi.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    let jwks = Answer::read(
        app.anonymous(Method::GET, "/.well-known/jwks.json")
            .send()
            .await
            .expect("sent"),
    )
    .await
    .expect_status(200);
    assert_eq!(jwks.body["keys"][0]["kty"], "RSA");

    // No token, a bad token: 401 with the right challenge.
    let missing = Answer::read(
        app.anonymous(Method::GET, "/v1/items/notes")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let missing = missing.expect_problem(401, "unauthorized");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let bad = app
        .anonymous(Method::GET, "/v1/items/notes")
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .expect("sent");
    let bad = Answer::read(bad).await.expect_problem(401, "unauthorized");
    assert_eq!(bad.header("www-authenticate"), Some("Bearer error=\"invalid_token\""));
    Answer::read(app.anonymous(Method::GET, "/v1/dev/pushes").send().await.expect("sent"))
        .await
        .expect_problem(401, "unauthorized");

    // Request ids are echoed when sane, replaced otherwise.
    let echoed = alice
        .send(
            alice
                .request(Method::GET, "/v1/devices")
                .header("x-request-id", "client-id-42"),
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("client-id-42"));
    let replaced = alice
        .send(
            alice
                .request(Method::GET, "/v1/devices")
                .header("x-request-id", "x".repeat(200)),
        )
        .await;
    assert!(
        replaced
            .header("x-request-id")
            .is_some_and(|id| id.len() <= 128 && !id.is_empty())
    );

    // Framework answers are problem documents too.
    Answer::read(app.anonymous(Method::GET, "/nowhere").send().await.expect("sent"))
        .await
        .expect_problem(404, "not_found");
    let wrong_method = Answer::read(app.anonymous(Method::DELETE, "/healthz").send().await.expect("sent")).await;
    assert_eq!(wrong_method.status.as_u16(), 405);
    assert_eq!(wrong_method.content_type(), Some("application/problem+json"));
    let not_json = alice
        .send(
            alice
                .request(Method::PUT, "/v1/items/notes/x")
                .header(CONTENT_TYPE, "text/plain")
                .body("{}"),
        )
        .await;
    not_json.expect_problem(415, "unsupported_media_type");
    let malformed = alice.send(
        alice
            .request(Method::PUT, "/v1/items/notes/x")
            .header(CONTENT_TYPE, "application/json")
            .body("{"),
    );
    malformed.await.expect_problem(400, "invalid_request");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_client_errors_never_server_errors() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let put = |body: String| {
        alice
            .request(Method::PUT, "/v1/items/notes/deep")
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body)
    };
    // Far beyond serde_json's recursion limit: a parse error, not a stack overflow.
    let very_deep = format!("{{\"data\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    alice.send(put(very_deep)).await.expect_problem(400, "invalid_request");
    // Within the parser's limit but over the contract's depth of 32.
    let deep = format!("{{\"data\": {{\"a\": {}1{}}}}}", "[".repeat(40), "]".repeat(40));
    alice.send(put(deep)).await.expect_problem(400, "invalid_request");
    // Over the 1 MiB body limit.
    let huge = format!("{{\"data\": {{\"blob\": \"{}\"}}}}", "x".repeat(1024 * 1024 + 10));
    alice.send(put(huge)).await.expect_problem(413, "payload_too_large");
    // Under the body limit, over the 256 KiB data limit.
    let large = format!("{{\"data\": {{\"blob\": \"{}\"}}}}", "x".repeat(300 * 1024));
    alice.send(put(large)).await.expect_problem(413, "payload_too_large");
    // Strict bodies: unknown members and non-object data.
    alice
        .send(put(r#"{"data": {}, "colour": "red"}"#.to_owned()))
        .await
        .expect_problem(400, "invalid_request");
    alice
        .send(put(r#"{"data": [1, 2]}"#.to_owned()))
        .await
        .expect_problem(400, "invalid_request");
    // Malformed preconditions and idempotency keys.
    let bad_if_match = alice
        .request(Method::PUT, "/v1/items/notes/p")
        .header("if-match", "W/\"1\"")
        .json(&json!({"data": {}}));
    alice.send(bad_if_match).await.expect_problem(400, "invalid_request");
    let bad_key = alice
        .request(Method::PUT, "/v1/items/notes/p")
        .header("idempotency-key", "k".repeat(129))
        .json(&json!({"data": {}}));
    alice.send(bad_key).await.expect_problem(400, "invalid_request");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_has_a_token_bucket_and_excess_is_429_with_retry_after() {
    let app = spawn_app_with(LocalConfig {
        addr: "127.0.0.1:0".parse().expect("address"),
        rate_limit: RateLimit::per_second(1),
        ..LocalConfig::default()
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    // A burst of 2N = 2 requests passes; the next one within the second is refused.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(alice.get("/v1/devices").await);
    }
    let limited = statuses
        .into_iter()
        .find(|a| a.status.as_u16() == 429)
        .expect("a request over the burst is limited");
    let limited = limited.expect_problem(429, "rate_limited");
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1);
    // Bob's bucket is his own.
    bob.get("/v1/devices").await.expect_status(200);
    app.shutdown().await;
}
