//! The real `rookery` binary: graceful shutdown, restart from a data directory with every projection
//! kept, an online `backup` that a server starts from, clear failures for a busy port, a bad flag or an
//! unusable data directory, and `reindex`.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use rookery_tests::http::{EVENTUALLY, RookeryProcess, eventually, rookery_binary};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_on_sigterm_and_restarts_from_its_data_dir_with_projections_kept() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut first = RookeryProcess::serve(dir.path()).expect("rookery serve starts");
    let api = first.api();
    let alice = api.user("alice").await;
    alice
        .put(
            "/v1/items/notes/n1",
            &json!({"data": {"headline": "Durable zebra"}, "visibility": "public"}),
        )
        .await
        .expect_status(201);
    alice
        .patch("/v1/items/notes/n1", &json!({"data": {"more": "text"}}))
        .await
        .expect_status(200);
    alice
        .put("/v1/devices/phone", &json!({"platform": "fcm", "token": "tok-1"}))
        .await
        .expect_status(200);
    let token = alice.token().to_owned();

    let status = first
        .signal("TERM", Duration::from_secs(20))
        .expect("rookery exits on SIGTERM");
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status:?}\n{}",
        first.output()
    );

    let second = RookeryProcess::serve(dir.path()).expect("rookery serve restarts");
    assert!(second.output().contains("rookery listening on"), "{}", second.output());
    let api = second.api();
    // The signing key is persisted, so a token from before the restart still works.
    let alice = api.user_with_token("alice", &token);
    let item = alice.get("/v1/items/notes/n1").await.expect_status(200);
    assert_eq!(item.body["version"], 2);
    assert_eq!(item.body["data"]["more"], "text");
    let history = alice.get("/v1/items/notes/n1/history").await.expect_status(200);
    assert_eq!(history.body["events"].as_array().map(Vec::len), Some(2));
    let devices = alice.get("/v1/devices").await.expect_status(200);
    assert_eq!(devices.body["devices"][0]["device_id"], "phone");
    // The search index is in the database too, kept across the restart.
    let bob = api.user("bob").await;
    let found = eventually(EVENTUALLY, || async {
        let answer = bob
            .send(bob.request(Method::GET, "/v1/search").query(&[("q", "zebra")]))
            .await;
        (answer.body["found"] == 1).then_some(answer)
    })
    .await
    .expect("the rebuilt index finds the item");
    assert_eq!(found.body["hits"][0]["version"], 2);
    // A device registered before the restart still gets pushes (and is not taken for a dead endpoint).
    let sent = bob
        .post("/v1/messages", &json!({"to": "alice", "text": "still there?"}))
        .await
        .expect_status(202);
    let message_id = sent.body["id"].as_str().expect("a message id").to_owned();
    eventually(EVENTUALLY, || async {
        let pushes = alice.get("/v1/dev/pushes").await.expect_status(200);
        let arrived = pushes.body["pushes"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["message_id"] == message_id.as_str()));
        arrived.then_some(())
    })
    .await
    .expect("the push reaches the device registered before the restart");
    let devices = alice.get("/v1/devices").await.expect_status(200);
    assert_eq!(devices.body["devices"][0]["enabled"], true);

    // An online backup while the server runs; a server started on the copy has the data and the index.
    let backups = tempfile::tempdir().expect("a temporary directory");
    let copy = backups.path().join("rookery.sqlite3");
    let dir_arg = dir.path().to_str().expect("a UTF-8 path");
    let backup = Command::new(rookery_binary())
        .args(["backup", "--data-dir", dir_arg, copy.to_str().expect("a UTF-8 path")])
        .output()
        .expect("rookery backup runs");
    let stdout = String::from_utf8_lossy(&backup.stdout);
    assert!(
        backup.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    assert!(stdout.contains("backed up"), "{stdout}");
    drop(second);
    let restored = RookeryProcess::serve(backups.path()).expect("rookery serve starts on the copy");
    let api = restored.api();
    let carol = api.user("carol").await;
    let found = carol
        .send(carol.request(Method::GET, "/v1/search").query(&[("q", "zebra")]))
        .await;
    assert_eq!(found.body["found"], 1, "{}", found.body);
    assert_eq!(found.body["hits"][0]["item"]["data"]["more"], "text");
    drop(restored);

    // With the server stopped, an offline reindex agrees with the index the server kept.
    let reindex = Command::new(rookery_binary())
        .args(["reindex", "--data-dir", dir_arg])
        .output()
        .expect("rookery reindex runs");
    let stdout = String::from_utf8_lossy(&reindex.stdout);
    assert!(
        reindex.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&reindex.stderr)
    );
    assert!(stdout.contains("equal to the live replay"), "{stdout}");
}

#[test]
fn a_busy_port_a_bad_flag_and_an_unusable_data_dir_fail_clearly() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let holder = RookeryProcess::start(&["serve", "--addr", "127.0.0.1:0"], &[]).expect("rookery serve starts");
    let addr = holder.addr().to_string();
    let busy = RookeryProcess::start(&["serve", "--addr", &addr], &[]).expect_err("the port is taken");
    assert!(busy.contains(&format!("address {addr} is already in use")), "{busy}");

    let bad_flag = Command::new(rookery_binary())
        .args(["serve", "--rate-limit", "lots"])
        .output()
        .expect("runs");
    assert!(!bad_flag.status.success());
    assert!(String::from_utf8_lossy(&bad_flag.stderr).contains("--rate-limit"));

    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").expect("a file");
    let file_arg = file.to_str().expect("a UTF-8 path");
    let unusable = RookeryProcess::start(&["serve", "--addr", "127.0.0.1:0", "--data-dir", file_arg], &[])
        .expect_err("a file is no data directory");
    assert!(unusable.contains("data directory"), "{unusable}");

    // The environment is the fallback for flags.
    let from_env = RookeryProcess::start(
        &["serve"],
        &[("ROOKERY_ADDR", "127.0.0.1:0"), ("ROOKERY_LOG_FORMAT", "json")],
    )
    .expect("configured from the environment");
    from_env
        .wait_for_output("\"level\":\"INFO\"", Duration::from_secs(20))
        .expect("JSON log lines, as ROOKERY_LOG_FORMAT asks");
}
