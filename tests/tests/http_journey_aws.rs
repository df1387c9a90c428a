//! The HTTP journey once more on `rookery serve --backend aws`, against moto: Cognito users, DynamoDB,
//! its stream feeding the index and the pushes, SNS, and S3 presigned uploads and downloads.
//!
//! Also here: the same journey steps on the memory backend (they are one journey, not two), CloudSearch
//! and OpenSearch (its stand-in) as the index, an index outage that must not hold back pushes, a restart
//! that rebuilds the in-process index from the table without pushing again, and the real binary
//! (`rookery aws bootstrap`, `rookery serve --backend aws`, the whole journey on it with
//! `ROOKERY_SEARCH=opensearch` pointed at the stand-in, and start-up failures that list every problem
//! at once).
//!
//! Where the AWS backend differs from the local one, the journey says so through its parameters: users
//! are Cognito's (an ID token for the first user of each step, an access token for the second; no
//! development tokens), pushes are read from moto's SNS state, media URLs are S3's, and search is
//! eventually consistent (the stream poller feeds the index), which each step waits for with a
//! deadline.
//!
//! Every test makes its own table, bucket, SNS applications and user pool, so they share one moto
//! server without seeing each other's state.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use reqwest::Method;
use rookery_adapters_aws::OpenSearchService;
use rookery_tests::aws::cloudsearch_fake::FakeCloudSearch;
use rookery_tests::aws::cognito::CognitoPool;
use rookery_tests::aws::moto::{self, moto, unique_name};
use rookery_tests::aws::opensearch_fake::FakeOpenSearch;
use rookery_tests::http::aws::{AwsSearch, CognitoUsers, MotoPushes, spawn_aws_app, spawn_aws_app_with};
use rookery_tests::http::journey::{self, DevPushes, PushProbe, TestDevice, search};
use rookery_tests::http::{Answer, EVENTUALLY, RookeryProcess, eventually, rookery_binary, spawn_app};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serve_journey_runs_on_aws_with_cognito_users() {
    let app = spawn_aws_app().await;

    // The edge: health, no development routes, Cognito tokens only.
    let health = Answer::read(app.anonymous(Method::GET, "/healthz").send().await.expect("sent"))
        .await
        .expect_status(200);
    assert_eq!(health.body, json!({"status": "ok"}));
    let dev_token = app
        .anonymous(Method::POST, "/v1/dev/tokens")
        .json(&json!({"user_id": "alice"}))
        .send()
        .await
        .expect("sent");
    Answer::read(dev_token).await.expect_problem(404, "not_found");
    let jwks = Answer::read(
        app.anonymous(Method::GET, "/.well-known/jwks.json")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    jwks.expect_problem(404, "not_found");
    let missing = Answer::read(app.anonymous(Method::GET, "/v1/devices").send().await.expect("sent")).await;
    assert_eq!(
        missing.expect_problem(401, "unauthorized").header("www-authenticate"),
        Some("Bearer")
    );
    let edge = app.user("edge").await;
    edge.get("/v1/dev/pushes").await.expect_problem(404, "not_found");
    edge.get("/v1/devices").await.expect_status(200);
    // A token of another pool on the same emulator is refused: its issuer is not this pool's.
    let stranger = CognitoPool::create()
        .await
        .expect("another pool")
        .sign_in("stranger")
        .await
        .expect("a user of the other pool");
    let refused = app
        .anonymous(Method::GET, "/v1/devices")
        .bearer_auth(&stranger.id_token)
        .send()
        .await
        .expect("sent");
    Answer::read(refused).await.expect_problem(401, "unauthorized");

    // Each step has fresh users; Alice signs in with her ID token, Bob with his access token.
    let seen = journey::whole(&app, &MotoPushes).await;

    // Media goes to S3 itself: the URLs are the emulator's, in the bootstrapped bucket.
    let endpoint = &moto().expect("moto").endpoint;
    let bucket = &app.clients().config().bucket;
    for url in [
        &seen.declared.body["upload"]["url"],
        &seen.uploaded.body["download"]["url"],
    ] {
        let url = url.as_str().expect("a URL");
        assert!(url.starts_with(&format!("{endpoint}/{bucket}/")), "{url}");
        assert!(url.contains("X-Amz-Signature="), "a presigned URL: {url}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_journey_steps_pass_on_the_memory_backend() {
    let app = spawn_app().await;
    let seen = journey::whole(&*app, &DevPushes).await;
    let url = seen.declared.body["upload"]["url"].as_str().expect("an upload URL");
    assert!(
        url.starts_with(app.base()),
        "local media URLs are the server's own: {url}"
    );
    app.shutdown().await;
}

/// The two trips both search journeys look for: `k1` public, `k2` private, both about Kilimanjaro.
async fn write_two_trips(alice: &rookery_tests::http::TestUser<'_>) {
    alice
        .put(
            "/v1/items/trips/k1",
            &json!({"data": {"headline": "Kilimanjaro at dawn"}, "visibility": "public"}),
        )
        .await
        .expect_status(201);
    alice
        .put(
            "/v1/items/trips/k2",
            &json!({"data": {"headline": "Kilimanjaro budget"}}),
        )
        .await
        .expect_status(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cloudsearch_the_stream_feeds_the_index_that_search_reads() {
    let fake = FakeCloudSearch::spawn().await.expect("a fake CloudSearch domain");
    let app = spawn_aws_app_with(AwsSearch::CloudSearch {
        doc: fake.endpoint.clone(),
        search: fake.endpoint.clone(),
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.access_user("bob").await;
    write_two_trips(&alice).await;
    let found = eventually(EVENTUALLY, || async {
        let answer = search(&bob, "kilimanjaro").await.expect_status(200);
        (answer.body["found"] == 1).then_some(answer)
    })
    .await
    .expect("the public trip reaches CloudSearch and Bob finds it");
    assert_eq!(found.body["hits"][0]["owner"], alice.id());
    assert_eq!(found.body["hits"][0]["id"], "k1");
    let own = eventually(EVENTUALLY, || async {
        let answer = search(&alice, "kilimanjaro").await.expect_status(200);
        (answer.body["found"] == 2).then_some(answer)
    })
    .await;
    assert!(own.is_some(), "Alice finds both of her trips");
    assert!(fake.len() >= 2, "the documents are in the domain");
    alice.delete("/v1/items/trips/k1").await.expect_status(204);
    eventually(EVENTUALLY, || async {
        (search(&bob, "kilimanjaro").await.body["found"] == 0).then_some(())
    })
    .await
    .expect("the deleted trip leaves CloudSearch");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_opensearch_the_stream_feeds_the_index_that_search_reads_as_you_type() {
    let fake = FakeOpenSearch::spawn("es").await.expect("an OpenSearch stand-in");
    let app = spawn_aws_app_with(AwsSearch::OpenSearch {
        endpoint: fake.endpoint.clone(),
        service: OpenSearchService::Domain,
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.access_user("bob").await;
    write_two_trips(&alice).await;
    let found = eventually(EVENTUALLY, || async {
        let answer = search(&bob, "kilim").await.expect_status(200);
        (answer.body["found"] == 1).then_some(answer)
    })
    .await
    .expect("the public trip reaches OpenSearch and Bob finds it as he types");
    assert_eq!(found.body["hits"][0]["owner"], alice.id());
    assert_eq!(found.body["hits"][0]["id"], "k1");
    let own = eventually(EVENTUALLY, || async {
        let answer = search(&alice, "kilimanjaro bud").await.expect_status(200);
        (answer.body["found"] == 1).then_some(answer)
    })
    .await
    .expect("Alice finds her private trip by a whole word and a prefix");
    assert_eq!(own.body["hits"][0]["id"], "k2");
    let stars = search(&bob, "kilim*").await.expect_status(200);
    assert_eq!(stars.body["found"], 1, "a `*` is text: the same as `kilim`");
    alice.delete("/v1/items/trips/k1").await.expect_status(204);
    eventually(EVENTUALLY, || async {
        (search(&bob, "kilimanjaro").await.body["found"] == 0).then_some(())
    })
    .await
    .expect("the deleted trip leaves OpenSearch");
    let tombstones = fake
        .documents("rookery-items")
        .into_iter()
        .filter(|d| d.source["state"] == "deleted")
        .count();
    assert_eq!(tombstones, 1, "the delete is a tombstone");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_outage_does_not_hold_back_pushes() {
    // A CloudSearch endpoint where nothing listens: every index write fails, for as long as the test runs.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let endpoint = format!("http://{}", dead.local_addr().expect("its address"));
    drop(dead);
    let app = spawn_aws_app_with(AwsSearch::CloudSearch {
        doc: endpoint.clone(),
        search: endpoint,
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    // Items written before the message put records ahead of it in the stream, which the indexer cannot pass.
    alice
        .put("/v1/items/notes/n1", &json!({"data": {"text": "not indexed"}}))
        .await
        .expect_status(201);
    let phone = TestDevice {
        id: "phone".into(),
        platform: "fcm".into(),
        token: rookery_tests::fixtures::unique("outage-token"),
    };
    bob.put(
        "/v1/devices/phone",
        &json!({"platform": phone.platform, "token": phone.token}),
    )
    .await
    .expect_status(200);
    let sent = alice
        .post("/v1/messages", &json!({"to": bob.id(), "text": "still delivered"}))
        .await
        .expect_status(202);
    let id = sent.body["id"].as_str().expect("a message id").to_owned();
    let pushed = eventually(EVENTUALLY, || async {
        let delivered = MotoPushes.delivered(&bob, std::slice::from_ref(&phone)).await;
        delivered.into_iter().find(|d| d.message_id() == Some(id.as_str()))
    })
    .await
    .expect("the push goes out while the index is down");
    assert_eq!(pushed.payload["notification"]["body"], "still delivered");
    // Search itself is down: a server error with a request id, never the cause.
    let answer = search(&alice, "indexed").await;
    assert!(answer.status.is_server_error(), "{}", answer.text);
    assert_eq!(answer.body["code"], "internal");
    assert!(answer.body["request_id"].as_str().is_some(), "{}", answer.text);
    // Everything that does not need the index works.
    alice.get("/v1/items/notes/n1").await.expect_status(200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rebuilds_the_index_from_the_table_and_pushes_nothing_twice() {
    let app = spawn_aws_app().await;
    let alice = app.pool().sign_in("alice").await.expect("alice signs in");
    let bob = app.pool().sign_in("bob").await.expect("bob signs in");
    let phone = TestDevice {
        id: "phone".into(),
        platform: "apns".into(),
        token: rookery_tests::fixtures::unique("restart-token"),
    };
    let first_id = {
        let alice = app.user_with_token(&alice.sub, &alice.id_token);
        let bob = app.user_with_token(&bob.sub, &bob.id_token);
        alice
            .put(
                "/v1/items/notes/n1",
                &json!({"data": {"text": "Serengeti migration"}, "visibility": "public"}),
            )
            .await
            .expect_status(201);
        bob.put(
            "/v1/devices/phone",
            &json!({"platform": phone.platform, "token": phone.token}),
        )
        .await
        .expect_status(200);
        let sent = alice
            .post("/v1/messages", &json!({"to": bob.id(), "text": "before"}))
            .await
            .expect_status(202);
        let id = sent.body["id"].as_str().expect("a message id").to_owned();
        eventually(EVENTUALLY, || async {
            let delivered = MotoPushes.delivered(&bob, std::slice::from_ref(&phone)).await;
            delivered
                .iter()
                .any(|d| d.message_id() == Some(id.as_str()))
                .then_some(())
        })
        .await
        .expect("the first push goes out");
        eventually(EVENTUALLY, || async {
            (search(&alice, "serengeti").await.body["found"] == 1).then_some(())
        })
        .await
        .expect("the note is indexed");
        id
    };

    let app = app.restart().await;
    let alice = app.user_with_token(&alice.sub, &alice.id_token);
    let bob = app.user_with_token(&bob.sub, &bob.id_token);
    // The in-process index was rebuilt from the table before the server answered: no waiting.
    let found = search(&alice, "serengeti").await.expect_status(200);
    assert_eq!(found.body["found"], 1, "{}", found.text);
    // The push poller reads the stream from its start again; the first message is remembered as pushed.
    let sent = alice
        .post("/v1/messages", &json!({"to": bob.id(), "text": "after"}))
        .await
        .expect_status(202);
    let second_id = sent.body["id"].as_str().expect("a message id").to_owned();
    let delivered = eventually(EVENTUALLY, || async {
        let delivered = MotoPushes.delivered(&bob, std::slice::from_ref(&phone)).await;
        delivered
            .iter()
            .any(|d| d.message_id() == Some(second_id.as_str()))
            .then_some(delivered)
    })
    .await
    .expect("the push after the restart goes out");
    // The stream is read in order, so the first message was handled again before the second.
    let firsts = delivered
        .iter()
        .filter(|d| d.message_id() == Some(first_id.as_str()))
        .count();
    assert_eq!(
        firsts, 1,
        "the first message was pushed once, not again after the restart"
    );
    app.shutdown().await;
}

/// The variables that point the binary at moto with a fresh table and bucket.
fn moto_env(table: &str, bucket: &str) -> BTreeMap<String, String> {
    let endpoint = moto().expect("moto runs").endpoint.clone();
    [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("ROOKERY_TABLE", table),
        ("ROOKERY_BUCKET", bucket),
        ("ROOKERY_S3_FORCE_PATH_STYLE", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Runs the binary with exactly `env` (nothing inherited) and returns what it did.
fn run_rookery(args: &[&str], env: &BTreeMap<String, String>) -> Output {
    Command::new(rookery_binary())
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .expect("the binary runs")
}

/// The `export NAME=VALUE` lines of bootstrap's output.
fn exports(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_bootstraps_idempotently_then_serves_on_aws_until_sigterm() {
    let mut env = moto_env(&unique_name("events-"), &unique_name("media-"));
    let first = tokio::task::spawn_blocking({
        let env = env.clone();
        move || run_rookery(&["aws", "bootstrap"], &env)
    })
    .await
    .expect("bootstrap ran");
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.lines().all(|l| l.starts_with("# ") || l.starts_with("export ")),
        "eval-able output: {stdout}"
    );
    let arns = exports(&stdout);
    assert_eq!(
        arns.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "ROOKERY_SNS_APNS_ARN",
            "ROOKERY_SNS_APNS_SANDBOX_ARN",
            "ROOKERY_SNS_FCM_ARN"
        ]
    );
    let second = tokio::task::spawn_blocking({
        let env = env.clone();
        move || run_rookery(&["aws", "bootstrap"], &env)
    })
    .await
    .expect("bootstrap ran again");
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(
        exports(&String::from_utf8_lossy(&second.stdout)),
        arns,
        "a second run finds the same applications"
    );

    // Serve with what bootstrap printed and a Cognito pool; the key set URL is derived from AWS_ENDPOINT_URL.
    let pool = CognitoPool::create().await.expect("a user pool");
    env.extend(arns);
    env.insert("ROOKERY_COGNITO_POOL_ID".into(), pool.pool_id.clone());
    env.insert("ROOKERY_COGNITO_CLIENT_ID".into(), pool.client_id.clone());
    env.insert("ROOKERY_BACKEND".into(), "aws".into());
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut process = RookeryProcess::start(&["serve", "--addr", "127.0.0.1:0", "--rate-limit", "0"], &pairs)
        .expect("rookery serve --backend aws starts");
    let api = process.api();
    let user = pool.sign_in("alice").await.expect("alice signs in");
    let alice = api.user_with_token(&user.sub, &user.access_token);
    alice
        .put(
            "/v1/items/notes/n1",
            &json!({"data": {"text": "Okavango delta"}, "visibility": "public"}),
        )
        .await
        .expect_status(201);
    let found = eventually(EVENTUALLY, || async {
        let answer = search(&alice, "okavango").await.expect_status(200);
        (answer.body["found"] == 1).then_some(answer)
    })
    .await
    .expect("the binary's stream poller indexes the note");
    assert_eq!(found.body["hits"][0]["owner"], user.sub.as_str());
    alice
        .put(
            "/v1/devices/phone",
            &json!({"platform": "apns_sandbox", "token": rookery_tests::fixtures::unique("bin-token")}),
        )
        .await
        .expect_status(200);
    alice
        .post("/v1/dev/tokens", &json!({"user_id": "alice"}))
        .await
        .expect_problem(404, "not_found");

    let status = tokio::task::spawn_blocking(move || {
        let status = process.signal("TERM", Duration::from_secs(30));
        (status, process.output())
    })
    .await
    .expect("the signal was sent");
    let (status, output) = status;
    assert!(
        status.expect("rookery exits on SIGTERM").success(),
        "graceful shutdown exits 0:\n{output}"
    );
    assert!(output.contains("stream poller stopped"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_journey_passes_on_the_binary_with_opensearch_as_the_index() {
    // `rookery serve --backend aws` as a process, configured only by the environment: moto for DynamoDB,
    // S3, SNS and Cognito, and `ROOKERY_SEARCH=opensearch` pointed at the stand-in in this test process.
    let fake = FakeOpenSearch::spawn("es").await.expect("an OpenSearch stand-in");
    let (clients, _) = moto::bootstrapped().await.expect("moto runs and bootstrap succeeds");
    let config = clients.config().clone();
    let pool = CognitoPool::create().await.expect("a user pool");
    let mut env = moto_env(&config.table, &config.bucket);
    for (name, arn) in [
        ("ROOKERY_SNS_APNS_ARN", &config.sns_apns_arn),
        ("ROOKERY_SNS_APNS_SANDBOX_ARN", &config.sns_apns_sandbox_arn),
        ("ROOKERY_SNS_FCM_ARN", &config.sns_fcm_arn),
    ] {
        env.insert(name.into(), arn.clone().expect("bootstrap made the application"));
    }
    env.insert("ROOKERY_COGNITO_POOL_ID".into(), pool.pool_id.clone());
    env.insert("ROOKERY_COGNITO_CLIENT_ID".into(), pool.client_id.clone());
    env.insert("ROOKERY_SEARCH".into(), "opensearch".into());
    env.insert("ROOKERY_OPENSEARCH_ENDPOINT".into(), fake.endpoint.clone());
    env.insert("ROOKERY_OPENSEARCH_SERVICE".into(), "es".into());
    let mut process = tokio::task::spawn_blocking(move || {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        RookeryProcess::start(
            &[
                "serve",
                "--backend",
                "aws",
                "--addr",
                "127.0.0.1:0",
                "--rate-limit",
                "0",
            ],
            &pairs,
        )
    })
    .await
    .expect("started")
    .expect("rookery serve --backend aws starts with OpenSearch");
    let api = process.api();

    // The same steps as on the local server; search is eventually consistent here (the stream poller
    // feeds OpenSearch), which every step already waits for with a deadline.
    let seen = journey::whole(&CognitoUsers { api: &api, pool: &pool }, &MotoPushes).await;
    let bucket = &config.bucket;
    let download = seen.uploaded.body["download"]["url"].as_str().expect("a download URL");
    assert!(
        download.contains(&format!("/{bucket}/")),
        "S3 serves the media: {download}"
    );

    // The searches were answered by OpenSearch: the journey's items are documents of the stand-in
    // (deleted ones as tombstones), and the server sent it structured `_search` requests.
    let documents = fake.documents("rookery-items");
    let headline = |d: &&rookery_tests::aws::opensearch_fake::StoredDocument| {
        d.source
            .get("item")
            .and_then(|item| item["data"]["headline"].as_str())
            .map(str::to_owned)
    };
    let headlines: Vec<String> = documents.iter().filter_map(|d| headline(&d)).collect();
    for expected in ["Zanzibar trip", "Kilimanjaro budget"] {
        assert!(headlines.iter().any(|h| h == expected), "{expected} in {headlines:?}");
    }
    assert!(
        documents.iter().any(|d| d.source["state"] == "deleted"),
        "the deleted trips are tombstones"
    );
    assert!(
        fake.requests().iter().any(|r| r.ends_with("/_search")),
        "{:?}",
        fake.requests()
    );

    let (status, output) = tokio::task::spawn_blocking(move || {
        let status = process.signal("TERM", Duration::from_secs(30));
        (status, process.output())
    })
    .await
    .expect("the signal was sent");
    assert!(
        status.expect("rookery exits on SIGTERM").success(),
        "graceful shutdown exits 0:\n{output}"
    );
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn start_up_lists_every_missing_or_wrong_setting_at_once_and_exits_non_zero() {
    // No region anywhere: no variable, no profile (no HOME), and no instance metadata.
    let bare: BTreeMap<String, String> = [("AWS_EC2_METADATA_DISABLED", "true")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();

    let bootstrap = run_rookery(&["aws", "bootstrap"], &bare);
    assert!(!bootstrap.status.success());
    let text = stderr_of(&bootstrap);
    for expected in ["ROOKERY_TABLE is not set", "ROOKERY_BUCKET is not set", "no AWS region"] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(bootstrap.stdout.is_empty(), "nothing is printed as made");

    let mut env = bare.clone();
    env.insert("ROOKERY_SEARCH".into(), "cloudsearch".into());
    env.insert("ROOKERY_SNS_FCM_ARN".into(), "not-an-arn".into());
    let serve = run_rookery(&["serve", "--backend", "aws", "--data-dir", "/nowhere"], &env);
    assert!(!serve.status.success());
    let text = stderr_of(&serve);
    assert_eq!(text.matches("invalid configuration").count(), 1, "{text}");
    for expected in [
        "--data-dir",
        "ROOKERY_COGNITO_POOL_ID is required",
        "ROOKERY_COGNITO_CLIENT_ID is required",
        "ROOKERY_TABLE is not set",
        "ROOKERY_BUCKET is not set",
        "ROOKERY_SNS_FCM_ARN must be an ARN",
        "ROOKERY_CLOUDSEARCH_DOC_ENDPOINT is required",
        "ROOKERY_CLOUDSEARCH_SEARCH_ENDPOINT is required",
        "no AWS region",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert_eq!(text.lines().filter(|l| l.starts_with("  - ")).count(), 9, "{text}");

    // The backend can be chosen by the environment too, and an unknown one is a usage error.
    env.insert("ROOKERY_BACKEND".into(), "aws".into());
    let by_env = run_rookery(&["serve"], &env);
    assert!(!by_env.status.success());
    assert!(stderr_of(&by_env).contains("ROOKERY_COGNITO_POOL_ID is required"));
    env.insert("ROOKERY_BACKEND".into(), "dynamo".into());
    let unknown = run_rookery(&["serve"], &env);
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr_of(&unknown));
    assert!(stderr_of(&unknown).contains("dynamo"));
}

#[test]
fn the_help_names_the_aws_commands() {
    let help = run_rookery(&["--help"], &BTreeMap::new());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("aws"), "{text}");
    let serve = run_rookery(&["serve", "--help"], &BTreeMap::new());
    let text = String::from_utf8_lossy(&serve.stdout);
    assert!(text.contains("--backend") && text.contains("ROOKERY_BACKEND"), "{text}");
}
