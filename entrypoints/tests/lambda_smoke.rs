//! Smoke tests of the Lambda binaries: each real executable is started against a loopback stand-in
//! for the Lambda Runtime API, given one invocation, and its answer is checked.
//!
//! The functions are configured as on AWS, but every AWS endpoint (and the Cognito key set) points at
//! the stand-in, which records any call it receives there. The invocations sent need no AWS service
//! (a health check, a request refused for its missing token, an empty stream batch), and the tests
//! check that none was called, which shows that start-up composes the clients without touching AWS.
//!
//! Each test prints the time from process start to the first response; `ROOKERY_SMOKE_RUNS=N` runs
//! each function N times, each run paired with one of the bare echo function, and prints both medians
//! and their ratio (the figures of `docs/PERFORMANCE.md`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// How long a function may take to answer before the test gives up: generous, since a debug build
/// on a shared two-core machine can be slow, and it is a sanity bound, not a performance target.
const DEADLINE: Duration = Duration::from_secs(30);

const REQUEST_ID: &str = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";

/// What the function posted back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Response,
    Error,
    InitError,
}

#[derive(Debug, Clone)]
struct Answer {
    kind: Kind,
    body: Value,
    error_type: Option<String>,
    at: Instant,
}

#[derive(Debug, Default)]
struct Shared {
    /// The one event to hand out; taken by the first `next`.
    event: Mutex<Option<Value>>,
    answers: Mutex<Vec<Answer>>,
    /// Calls that reached the stand-in anywhere but the Runtime API: AWS (or JWKS) calls.
    strays: Mutex<Vec<String>>,
    posted: Notify,
}

impl Shared {
    fn record(&self, kind: Kind, headers: &HeaderMap, body: &Bytes) {
        let body = serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()));
        let error_type = headers
            .get("lambda-runtime-function-error-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = Answer {
            kind,
            body,
            error_type,
            at: Instant::now(),
        };
        self.answers.lock().unwrap().push(answer);
        self.posted.notify_waiters();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let event = shared.event.lock().unwrap().take();
    let Some(event) = event else {
        // One invocation per test: later polls wait until the process is killed, as Lambda's would
        // while the instance is idle.
        std::future::pending::<()>().await;
        return StatusCode::GONE.into_response();
    };
    let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(30);
    (
        [
            ("lambda-runtime-aws-request-id", REQUEST_ID.to_owned()),
            ("lambda-runtime-deadline-ms", deadline.as_millis().to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:rookery-smoke".to_owned(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-674a1f00-5f1e2d3c4b5a69788796a5b4;Parent=53995c3f42cd8ad8;Sampled=0".to_owned(),
            ),
            ("content-type", "application/json".to_owned()),
        ],
        event.to_string(),
    )
        .into_response()
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    assert_eq!(id, REQUEST_ID, "the answer names the invocation it answers");
    shared.record(Kind::Response, &headers, &body);
    StatusCode::ACCEPTED
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    assert_eq!(id, REQUEST_ID, "the error names the invocation it answers");
    shared.record(Kind::Error, &headers, &body);
    StatusCode::ACCEPTED
}

async fn init_error(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    shared.record(Kind::InitError, &headers, &body);
    StatusCode::ACCEPTED
}

async fn stray(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> StatusCode {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    shared.strays.lock().unwrap().push(format!("{uri} {target}"));
    StatusCode::SERVICE_UNAVAILABLE
}

/// The loopback Runtime API (and AWS trap) one function instance talks to.
struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl StandIn {
    async fn start(event: Value) -> Self {
        let shared = Arc::new(Shared::default());
        *shared.event.lock().unwrap() = Some(event);
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .fallback(stray)
            .with_state(Arc::clone(&shared));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared, server }
    }

    /// The first answer, or `None` when the deadline passed or the process ended without one.
    async fn first_answer(&self, child: &mut Child) -> Option<Answer> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let posted = self.shared.posted.notified();
            if let Some(answer) = self.shared.answers.lock().unwrap().first().cloned() {
                return Some(answer);
            }
            tokio::select! {
                () = posted => {}
                _ = child.wait() => {
                    return self.shared.answers.lock().unwrap().first().cloned();
                }
                () = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    fn strays(&self) -> Vec<String> {
        self.shared.strays.lock().unwrap().clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The environment of a function on AWS, with every AWS endpoint pointing at the stand-in.
fn offline_env(function: &str, stand_in: SocketAddr) -> Vec<(&'static str, String)> {
    let trap = format!("http://{stand_in}");
    vec![
        ("AWS_LAMBDA_RUNTIME_API", stand_in.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/25/[$LATEST]smoke".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "smoke".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "smoke".to_owned()),
        ("AWS_ENDPOINT_URL", trap.clone()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("ROOKERY_TABLE", "rookery-smoke".to_owned()),
        ("ROOKERY_BUCKET", "rookery-smoke-media".to_owned()),
        ("ROOKERY_SEARCH", "cloudsearch".to_owned()),
        ("ROOKERY_CLOUDSEARCH_DOC_ENDPOINT", trap.clone()),
        ("ROOKERY_CLOUDSEARCH_SEARCH_ENDPOINT", trap.clone()),
        ("ROOKERY_COGNITO_POOL_ID", "us-east-1_Smoke1234".to_owned()),
        ("ROOKERY_COGNITO_CLIENT_ID", "smokeclient".to_owned()),
        (
            "ROOKERY_COGNITO_JWKS_URL",
            format!("{trap}/us-east-1_Smoke1234/.well-known/jwks.json"),
        ),
        // Function 5 (realtime) only; the others ignore them.
        ("ROOKERY_CONNECTIONS_TABLE", "rookery-smoke-connections".to_owned()),
        ("ROOKERY_REALTIME_ENDPOINT", trap.clone()),
        ("RUST_LOG", "info".to_owned()),
    ]
}

/// One run of a binary: its first answer, how long it took from process start, and its output.
struct Run {
    answer: Answer,
    elapsed: Duration,
    strays: Vec<String>,
}

async fn run_once(exe: &str, event: Value, env: impl Fn(SocketAddr) -> Vec<(&'static str, String)>) -> Run {
    let stand_in = StandIn::start(event).await;
    let mut command = Command::new(exe);
    command
        .env_clear()
        .envs(env(stand_in.addr))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{exe}: {e}"));
    let answer = stand_in.first_answer(&mut child).await;
    let _ = child.start_kill();
    let output = child.wait_with_output().await.unwrap();
    let Some(answer) = answer else {
        panic!(
            "{exe} gave no answer within {DEADLINE:?}; exit {:?}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    Run {
        elapsed: answer.at.duration_since(started),
        answer,
        strays: stand_in.strays(),
    }
}

fn runs() -> usize {
    std::env::var("ROOKERY_SMOKE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// One run of the bare echo function, checked: the baseline of the other functions' timings.
async fn echo_once() -> Duration {
    let event = json!({"hello": "world", "n": 1});
    let run = run_once(env!("CARGO_BIN_EXE_rookery-echo"), event.clone(), |addr| {
        offline_env("rookery-echo", addr)
    })
    .await;
    assert_eq!(response_of(&run.answer), &event, "the echo answers its event");
    run.elapsed
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn millis(time: Duration) -> String {
    format!("{:.1}", time.as_secs_f64() * 1e3)
}

/// Runs `exe` as many times as asked, checks every answer with `check`, and prints the timings.
///
/// With more than one run, each run is paired with one of the bare echo function (before it on every
/// other run, after it on the rest), and the line also gives the echo's median over those runs and the
/// ratio of the two medians: a baseline measured interleaved with the function, so that a machine that
/// gets busier or quieter during the test moves both alike.
async fn smoke(
    name: &str,
    exe: &str,
    event: Value,
    env: impl Fn(SocketAddr) -> Vec<(&'static str, String)>,
    check: impl Fn(&Answer),
) {
    let runs = runs();
    let mut times = Vec::new();
    let mut baseline = Vec::new();
    for i in 0..runs {
        // The echo runs before the function on every other run, so that neither always follows the other.
        if runs > 1 && i % 2 == 1 {
            baseline.push(echo_once().await);
        }
        let run = run_once(exe, event.clone(), &env).await;
        check(&run.answer);
        assert!(
            run.strays.is_empty(),
            "{name} called AWS during this invocation: {:?}",
            run.strays
        );
        assert!(run.elapsed < DEADLINE, "{name} took {:?}", run.elapsed);
        times.push(run.elapsed);
        if runs > 1 && i % 2 == 0 {
            baseline.push(echo_once().await);
        }
    }
    let all: Vec<String> = times.iter().copied().map(millis).collect();
    let function = median(&mut times);
    let mut line = format!(
        "smoke {name}: start to first response median {} ms over {} run(s) [{}]",
        millis(function),
        times.len(),
        all.join(", ")
    );
    if !baseline.is_empty() {
        let echo = median(&mut baseline);
        line.push_str(&format!(
            "; bare echo interleaved median {} ms; ratio {:.2}",
            millis(echo),
            function.as_secs_f64() / echo.as_secs_f64()
        ));
    }
    println!("{line}");
}

fn response_of(answer: &Answer) -> &Value {
    assert_eq!(answer.kind, Kind::Response, "expected a response, got {answer:?}");
    &answer.body
}

fn header<'a>(response: &'a Value, name: &str) -> Option<&'a str> {
    // HTTP API answers carry `headers`; REST API answers carry `multiValueHeaders`.
    response["headers"][name]
        .as_str()
        .or_else(|| response["multiValueHeaders"][name][0].as_str())
}

#[tokio::test]
async fn bare_echo_function_answers_its_event() {
    let event = json!({"hello": "world", "n": 1});
    let expected = event.clone();
    smoke(
        "rookery-echo (baseline)",
        env!("CARGO_BIN_EXE_rookery-echo"),
        event,
        |addr| offline_env("rookery-echo", addr),
        |answer| assert_eq!(response_of(answer), &expected),
    )
    .await;
}

#[tokio::test]
async fn items_function_answers_a_health_check() {
    smoke(
        "rookery-items",
        env!("CARGO_BIN_EXE_rookery-items"),
        fixture("apigw-v2-healthz.json"),
        |addr| offline_env("rookery-items", addr),
        |answer| {
            let response = response_of(answer);
            assert_eq!(response["statusCode"], 200, "{response}");
            let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
            assert_eq!(body, json!({"status": "ok"}));
            assert_eq!(
                header(response, "x-request-id"),
                Some("Hc9zJgXyIAMEV-Q="),
                "API Gateway's request id: {response}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn search_function_refuses_a_request_without_a_token() {
    smoke(
        "rookery-search",
        env!("CARGO_BIN_EXE_rookery-search"),
        fixture("apigw-v2-search-no-token.json"),
        |addr| offline_env("rookery-search", addr),
        |answer| {
            let response = response_of(answer);
            assert_eq!(response["statusCode"], 401, "{response}");
            assert!(
                header(response, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")),
                "{response}"
            );
            let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["code"], "unauthorized");
        },
    )
    .await;
}

#[tokio::test]
async fn messages_function_refuses_a_rest_api_request_without_a_token() {
    smoke(
        "rookery-messages (API)",
        env!("CARGO_BIN_EXE_rookery-messages"),
        fixture("apigw-v1-messages-no-token.json"),
        |addr| offline_env("rookery-messages", addr),
        |answer| {
            let response = response_of(answer);
            assert_eq!(response["statusCode"], 401, "{response}");
            assert!(
                header(response, "www-authenticate").is_some(),
                "REST answers carry multiValueHeaders: {response}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn messages_function_answers_an_empty_stream_batch() {
    smoke(
        "rookery-messages (stream)",
        env!("CARGO_BIN_EXE_rookery-messages"),
        fixture("stream-empty.json"),
        |addr| offline_env("rookery-messages", addr),
        |answer| assert_eq!(response_of(answer), &json!({"batchItemFailures": []})),
    )
    .await;
}

#[tokio::test]
async fn indexer_function_answers_an_empty_stream_batch() {
    smoke(
        "rookery-indexer",
        env!("CARGO_BIN_EXE_rookery-indexer"),
        fixture("stream-empty.json"),
        |addr| offline_env("rookery-indexer", addr),
        |answer| assert_eq!(response_of(answer), &json!({"batchItemFailures": []})),
    )
    .await;
}

#[tokio::test]
async fn realtime_function_refuses_a_connect_without_a_token() {
    smoke(
        "rookery-realtime ($connect)",
        env!("CARGO_BIN_EXE_rookery-realtime"),
        fixture("apigw-ws-connect-no-token.json"),
        |addr| offline_env("rookery-realtime", addr),
        |answer| {
            let response = response_of(answer);
            assert_eq!(response["statusCode"], 401, "{response}");
            let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["code"], "unauthorized");
        },
    )
    .await;
}

#[tokio::test]
async fn realtime_function_answers_an_empty_stream_batch() {
    smoke(
        "rookery-realtime (stream)",
        env!("CARGO_BIN_EXE_rookery-realtime"),
        fixture("stream-empty.json"),
        |addr| offline_env("rookery-realtime", addr),
        |answer| assert_eq!(response_of(answer), &json!({"batchItemFailures": []})),
    )
    .await;
}

#[tokio::test]
async fn a_function_without_its_configuration_reports_an_init_error() {
    let run = run_once(
        env!("CARGO_BIN_EXE_rookery-items"),
        fixture("apigw-v2-healthz.json"),
        |addr| {
            offline_env("rookery-items", addr)
                .into_iter()
                .filter(|(name, _)| *name != "ROOKERY_TABLE")
                .collect()
        },
    )
    .await;
    assert_eq!(run.answer.kind, Kind::InitError, "{:?}", run.answer);
    assert_eq!(run.answer.error_type.as_deref(), Some("Rookery.ConfigError"));
    assert_eq!(run.answer.body["errorType"], "Rookery.ConfigError");
    let message = run.answer.body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("ROOKERY_TABLE"),
        "the message names the missing variable: {message}"
    );
}

#[tokio::test]
async fn eraser_function_answers_an_empty_stream_batch() {
    smoke(
        "rookery-eraser",
        env!("CARGO_BIN_EXE_rookery-eraser"),
        fixture("stream-empty.json"),
        |addr| offline_env("rookery-eraser", addr),
        |answer| assert_eq!(response_of(answer), &json!({"batchItemFailures": []})),
    )
    .await;
}
