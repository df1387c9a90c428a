//! The OpenAPI document `rookery serve` publishes says what the server does: Schemathesis, the version
//! pinned in `tests/requirements.txt`, runs every check in every phase against a fresh server with a
//! development token, and any finding fails the test with Schemathesis's whole report.
//!
//! Warnings that mean the run did not test what it claims fail it too: "schema validation mismatch"
//! (the server rejects most data its schema allows), missing authentication, rate limiting and a wrong
//! base URL. The harness is checked in both directions on a one-route API served here: it passes when the
//! API keeps its document and fails when the API breaks it, so a green run is not a deaf harness.

use std::fs::File;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::routing::get;
use rookery_tests::http::RookeryProcess;
use rookery_tests::pytools;
use serde_json::{Value, json};

/// How long one Schemathesis run may take; against `rookery serve` it takes well under a minute.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "150";

/// Schemathesis's configuration for every run: the warnings that fail it, besides every finding.
const WARNINGS: &str = r#"[warnings]
fail-on = ["validation_mismatch", "missing_auth", "rate_limited", "base_url_mismatch"]
"#;

/// The settings and hooks of the run against `rookery serve` (`tests/schemathesis/`): where API.md and
/// Schemathesis's defaults differ, and rules OpenAPI cannot state (see the files for each reason).
fn rookery_config() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis");
    let settings = std::fs::read_to_string(dir.join("schemathesis.toml")).unwrap_or_default();
    let hooks = dir.join("hooks.py");
    // The file names its hooks relative to the repository root; the run's working directory is elsewhere.
    settings.replace(
        "\"tests/schemathesis/hooks.py\"",
        &format!("{:?}", hooks.display().to_string()),
    )
}

/// The heading Schemathesis prints over a "schema validation mismatch" warning, checked in its output too,
/// so that the verdict does not rest on the configuration alone.
const VALIDATION_MISMATCH: &str = "Schema validation mismatch";

/// One finished Schemathesis run.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    /// Its standard output and error, interleaved as written.
    report: String,
}

impl Run {
    /// Whether it found nothing and raised no warning configured to fail.
    fn passed(&self) -> bool {
        self.status.success() && !self.report.contains(VALIDATION_MISMATCH)
    }
}

/// Runs `st run <schema_url>` with every check and every phase, sending `token` as a bearer token,
/// and waits for it until [`RUN_TIMEOUT`].
///
/// # Errors
/// When Schemathesis cannot be installed or started, or outlives the timeout (it is then killed;
/// the message holds what it printed).
fn schemathesis(schema_url: &str, token: Option<&str>, settings: &str) -> Result<Run, String> {
    let st = pytools::tool("st")?;
    // Schemathesis keeps its example database and crash files in its working directory; a fresh one
    // keeps runs independent of each other.
    let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, format!("{settings}\n{WARNINGS}"))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let report_path = dir.path().join("report.txt");
    let stdout = File::create(&report_path).map_err(|e| format!("cannot create the report file: {e}"))?;
    let stderr = stdout
        .try_clone()
        .map_err(|e| format!("cannot share the report file: {e}"))?;

    let mut command = Command::new(&st);
    command
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", schema_url, "--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES, "--no-color"])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", st.display()))?;
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("cannot wait for st: {e}"))? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "Schemathesis did not finish within {RUN_TIMEOUT:?}; it printed:\n{}",
                read(&report_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok(Run {
        status,
        report: read(&report_path),
    })
}

/// A report file's text, or why it cannot be read.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rookery_serve_conforms_to_its_openapi_document() {
    let data = tempfile::tempdir().unwrap();
    let server = RookeryProcess::serve(data.path()).unwrap();
    let token = server.api().token("schemathesis").await;
    let schema_url = format!("{}/openapi.json", server.base());
    let settings = rookery_config();
    assert!(
        settings.contains("hooks.py"),
        "tests/schemathesis/schemathesis.toml names its hooks"
    );
    let run = tokio::task::spawn_blocking(move || schemathesis(&schema_url, Some(&token), &settings))
        .await
        .unwrap()
        .unwrap_or_else(|why| panic!("{why}"));
    assert!(
        run.passed(),
        "Schemathesis found that `rookery serve` does not do what its OpenAPI document says \
         (st exited with {}{}). Each finding below has a curl line that reproduces it against \
         `rookery serve --rate-limit 0`.\n\n{}",
        run.status,
        if run.report.contains(VALIDATION_MISMATCH) {
            ", and warned of a schema validation mismatch"
        } else {
            ""
        },
        run.report
    );
    eprintln!("{}", run.report);
}

/// A one-route API whose answer to `GET /ping` is `answer`, next to a document that promises
/// `{"status": "ok"}`; it serves until the test's runtime ends.
///
/// # Errors
/// When no loopback port can be had.
async fn ping_api(answer: Value) -> Result<String, String> {
    let document = json!({
        "openapi": "3.1.0",
        "info": {"title": "Harness check", "version": "1"},
        "paths": {"/ping": {"get": {
            "operationId": "ping",
            "responses": {"200": {
                "description": "The service is up.",
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"status": {"const": "ok"}},
                    "required": ["status"],
                    "additionalProperties": false
                }}}
            }}
        }}}
    });
    let app = Router::new()
        .route("/openapi.json", get(move || async move { Json(document) }))
        .route("/ping", get(move || async move { Json(answer) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("no loopback port: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("no local address: {e}"))?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/openapi.json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_passes_an_api_that_keeps_its_document() {
    let schema_url = ping_api(json!({"status": "ok"})).await.unwrap();
    let run = tokio::task::spawn_blocking(move || schemathesis(&schema_url, None, ""))
        .await
        .unwrap()
        .unwrap_or_else(|why| panic!("{why}"));
    assert!(
        run.passed(),
        "a conforming API failed ({}):\n{}",
        run.status,
        run.report
    );
    assert!(
        run.report.contains("Tested: 1"),
        "the run did not test the route:\n{}",
        run.report
    );
    eprintln!("{}", run.report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_fails_an_api_that_breaks_its_document() {
    let schema_url = ping_api(json!({"status": "down"})).await.unwrap();
    let run = tokio::task::spawn_blocking(move || schemathesis(&schema_url, None, ""))
        .await
        .unwrap()
        .unwrap_or_else(|why| panic!("{why}"));
    assert!(!run.passed(), "a broken API passed:\n{}", run.report);
    assert!(
        run.report.contains("Response violates schema"),
        "the report does not name the broken response:\n{}",
        run.report
    );
}
