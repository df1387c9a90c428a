//! Helpers for end-to-end tests over real HTTP: a server on a random loopback port, users with tokens,
//! polling with a deadline, and the real `rookery` binary for tests that need a process (restart, crash).
//!
//! [`spawn_app`] runs the same composition `rookery serve` runs ([`LocalServer`]) inside the test's
//! runtime; [`RookeryProcess`] runs the built binary with a data directory.
//!
//! These are test helpers: a failure to set up is a test failure, so they panic with a message.
#![allow(clippy::expect_used, clippy::panic)]

pub mod aws;
pub mod journey;
mod process;

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode};
use rookery_entrypoints::http::RateLimit;
use rookery_entrypoints::{LocalConfig, LocalServer};
use serde_json::{Value, json};

pub use process::{RookeryProcess, rookery_binary};

/// How long asynchronous effects (indexing, pushes) may take before a test gives up.
/// The contract promises one second for search freshness; the margin absorbs a loaded CI machine.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// A client of one server: its base URL and an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    client: reqwest::Client,
}

/// A server running in this test's runtime, and a client for it (through `Deref`).
#[derive(Debug)]
pub struct TestApp {
    server: LocalServer,
    api: ApiClient,
}

impl std::ops::Deref for TestApp {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.api
    }
}

/// Starts an in-memory server on a random loopback port, with rate limiting off.
///
/// # Panics
/// When the server cannot start (a test failure).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(LocalConfig {
        addr: "127.0.0.1:0".parse().expect("loopback address"),
        rate_limit: RateLimit::off(),
        ..LocalConfig::default()
    })
    .await
}

/// Starts a server with `config` (give port 0 unless the test needs a fixed one).
///
/// # Panics
/// When the server cannot start (a test failure).
pub async fn spawn_app_with(config: LocalConfig) -> TestApp {
    let server = LocalServer::start(config).await.expect("the server starts");
    let api = ApiClient::new(format!("http://{}", server.addr()));
    TestApp { server, api }
}

impl TestApp {
    /// The running server (for tests that look behind the API).
    pub fn server(&self) -> &LocalServer {
        &self.server
    }

    /// Stops the server gracefully.
    ///
    /// # Panics
    /// When the server failed while serving.
    pub async fn shutdown(self) {
        self.server.shutdown().await.expect("a clean shutdown");
    }
}

impl ApiClient {
    /// A client of the server at `base` (`http://127.0.0.1:<port>`).
    pub fn new(base: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .expect("an HTTP client");
        Self { base, client }
    }

    /// The server's base URL (`http://127.0.0.1:<port>`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The HTTP client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A request without credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A development token for `user_id`.
    ///
    /// # Panics
    /// When the token route does not answer a token.
    pub async fn token(&self, user_id: &str) -> String {
        let response = self
            .client
            .post(self.url("/v1/dev/tokens"))
            .json(&json!({ "user_id": user_id }))
            .send()
            .await
            .expect("token request");
        assert_eq!(response.status(), StatusCode::OK, "issuing a token for {user_id}");
        let body: Value = response.json().await.expect("token JSON");
        body["token"].as_str().expect("a token string").to_owned()
    }

    /// A signed-in user.
    pub async fn user(&self, user_id: &str) -> TestUser<'_> {
        let token = self.token(user_id).await;
        TestUser {
            app: self,
            id: user_id.to_owned(),
            token,
        }
    }

    /// A user with an existing token (e.g. one issued before a restart).
    pub fn user_with_token(&self, user_id: &str, token: &str) -> TestUser<'_> {
        TestUser {
            app: self,
            id: user_id.to_owned(),
            token: token.to_owned(),
        }
    }
}

/// A user with a token, making authenticated requests.
#[derive(Debug, Clone)]
pub struct TestUser<'a> {
    app: &'a ApiClient,
    id: String,
    token: String,
}

/// A response read whole: status, headers and the body parsed as JSON (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as JSON.
    pub body: Value,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// Reads `response` whole.
    ///
    /// # Panics
    /// When the body cannot be read.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a readable body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Content-Type`.
    pub fn content_type(&self) -> Option<&str> {
        self.header(CONTENT_TYPE.as_str())
    }

    /// Asserts the status, showing the body when it differs.
    ///
    /// # Panics
    /// When the status differs.
    #[track_caller]
    pub fn expect_status(self, status: u16) -> Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        self
    }

    /// Asserts a problem document with `status` and `code`.
    ///
    /// # Panics
    /// When the answer is anything else.
    #[track_caller]
    pub fn expect_problem(self, status: u16, code: &str) -> Self {
        let answer = self.expect_status(status);
        assert_eq!(
            answer.content_type(),
            Some("application/problem+json"),
            "{}",
            answer.text
        );
        assert_eq!(answer.body["code"], code, "{}", answer.text);
        assert_eq!(answer.body["status"], status, "{}", answer.text);
        assert_eq!(answer.body["type"], "about:blank", "{}", answer.text);
        answer
    }
}

impl<'a> TestUser<'a> {
    /// The user's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The user's bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The client this user talks through.
    pub fn app(&self) -> &'a ApiClient {
        self.app
    }

    /// An authenticated request, to finish and send.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.app.anonymous(method, path).bearer_auth(&self.token)
    }

    /// Sends an authenticated request and reads the answer.
    ///
    /// # Panics
    /// When the request cannot be sent.
    pub async fn send(&self, request: RequestBuilder) -> Answer {
        Answer::read(request.send().await.expect("the request is sent")).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// `PATCH path` with a merge patch.
    pub async fn patch(&self, path: &str, patch: &Value) -> Answer {
        let request = self
            .request(Method::PATCH, path)
            .header(CONTENT_TYPE, "application/merge-patch+json")
            .body(patch.to_string());
        self.send(request).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.request(Method::DELETE, path)).await
    }
}

/// Calls `probe` until it returns `Some` or `timeout` passes, pausing briefly between calls.
/// Never a fixed sleep standing in for a condition: the condition is what ends the wait.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
