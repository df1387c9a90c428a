//! A WebSocket client of `/v1/realtime` over real sockets, and the two servers the protocol tests run
//! against: `rookery serve`'s own composition on the memory store ([`LocalServer`]), and the same routes
//! over the SQLite store.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use rookery_adapters_aws::jwt::{JwksConfig, JwksVerifier, KeySource};
use rookery_adapters_memory::identity::DevIdentityProvider;
use rookery_adapters_memory::{LocalMediaStore, MemoryPushGateway, SystemClock, UlidIds};
use rookery_adapters_sqlite::SqliteStore;
use rookery_domain::{Timestamp, UserId};
use rookery_entrypoints::http::{Api, ApiConfig, RateLimit};
use rookery_entrypoints::local::dev::{self, TokenIssuer};
use rookery_entrypoints::realtime::{Realtime, RealtimeConfig};
use rookery_entrypoints::{LocalConfig, Services};
use rookery_ports::{Clock, ServiceConfig};
use rookery_tests::http::{ApiClient, EVENTUALLY, TestApp, TestUser, eventually, spawn_app_with};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A server under test: either backend, behind the same client.
pub(crate) enum Server {
    Memory(Box<TestApp>),
    Sqlite(SqliteApp),
}

impl Server {
    pub(crate) fn api(&self) -> &ApiClient {
        match self {
            Server::Memory(app) => app,
            Server::Sqlite(app) => &app.api,
        }
    }
}

/// `rookery serve` on the memory store, with rate limiting off and `realtime` limits.
pub(crate) async fn memory_server(realtime: RealtimeConfig) -> TestApp {
    spawn_app_with(LocalConfig {
        addr: "127.0.0.1:0".parse().expect("loopback address"),
        rate_limit: RateLimit::off(),
        realtime,
        ..LocalConfig::default()
    })
    .await
}

/// The contract's routes, `/v1/realtime` and the development token route over the SQLite store, in a
/// temporary directory.
pub(crate) struct SqliteApp {
    api: ApiClient,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    realtime: Realtime,
    _dir: tempfile::TempDir,
}

impl SqliteApp {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(dir.path().join("rookery.sqlite3")).expect("the SQLite store opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let provider = DevIdentityProvider::ephemeral().expect("a development key");
        let dev = provider.verifier_config();
        let verifier = JwksVerifier::new(
            JwksConfig::new(dev.issuer, dev.audience, KeySource::Static(dev.jwks)),
            SystemClock::new(),
        )
        .expect("a verifier");
        let services = Services::new(
            store.clone(),
            SystemClock::new(),
            UlidIds::new(),
            store.search_index(),
            MemoryPushGateway::new(),
            LocalMediaStore::in_memory(&base, vec![7u8; 32]),
            ServiceConfig::default(),
        );
        let realtime = Realtime::spawn(store, RealtimeConfig::default());
        let config = ApiConfig {
            rate_limit: RateLimit::off(),
            ..ApiConfig::default()
        };
        let router = Api::new(verifier, config)
            .merge_authenticated(services.routes())
            .merge_authenticated(realtime.routes())
            .merge_public(dev::public_routes(Tokens(provider)))
            .into_router();
        let (stop, mut stopped) = watch::channel(false);
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            let served = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
            served.expect("the server runs");
        });
        Self {
            api: ApiClient::new(base),
            stop,
            server,
            realtime,
            _dir: dir,
        }
    }

    pub(crate) async fn shutdown(self) {
        self.stop.send_replace(true);
        self.server.await.expect("the server stops");
        self.realtime.stop().await;
    }
}

/// The development provider as a token issuer.
#[derive(Debug, Clone)]
struct Tokens(DevIdentityProvider);

impl TokenIssuer for Tokens {
    fn issue(&self, user: &UserId) -> Result<(String, Timestamp), String> {
        self.0
            .issue(user, SystemClock::new().now(), Duration::from_secs(3600))
            .map_err(|e| e.to_string())
    }

    fn jwks(&self) -> Value {
        self.0.jwks()
    }
}

/// The realtime URL of a server.
pub(crate) fn realtime_url(api: &ApiClient) -> String {
    format!("{}/v1/realtime", api.base().replacen("http://", "ws://", 1))
}

/// A handshake with the token in the header, in the query, or neither.
pub(crate) async fn handshake(api: &ApiClient, header: Option<&str>, query: Option<&str>) -> Result<Socket, WsError> {
    let url = match query {
        Some(token) => format!("{}?access_token={token}", realtime_url(api)),
        None => realtime_url(api),
    };
    let mut request = url.into_client_request()?;
    if let Some(token) = header {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value");
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let (stream, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(Socket { stream })
}

/// The status and body of a refused handshake.
pub(crate) async fn refused(
    api: &ApiClient,
    header: Option<&str>,
    query: Option<&str>,
) -> (StatusCode, Value, Option<String>) {
    match handshake(api, header, query).await {
        Ok(_) => panic!("the handshake was accepted"),
        Err(WsError::Http(response)) => {
            let status = StatusCode::from_u16(response.status().as_u16()).expect("a status");
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let content_type = response.headers().get("content-type").cloned();
            assert_eq!(
                content_type.as_ref().and_then(|v| v.to_str().ok()),
                Some("application/problem+json")
            );
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (status, body, challenge)
        }
        Err(other) => panic!("the handshake failed otherwise: {other}"),
    }
}

/// A client socket.
pub(crate) struct Socket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How the server ended a socket: its close frame, if one arrived.
pub(crate) type Closed = Option<(u16, String)>;

impl Socket {
    /// Opens a socket for `user`, with the token in the header.
    pub(crate) async fn open(user: &TestUser<'_>) -> Socket {
        handshake(user.app(), Some(user.token()), None)
            .await
            .expect("the handshake succeeds")
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("the frame is sent");
    }

    pub(crate) async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.stream
            .send(Message::binary(bytes))
            .await
            .expect("the frame is sent");
    }

    pub(crate) async fn resume(&mut self, since: Option<&str>) {
        let frame = match since {
            Some(cursor) => json!({"type": "resume", "since": cursor}),
            None => json!({"type": "resume"}),
        };
        self.send_text(&frame.to_string()).await;
    }

    /// The next message of any kind, or `None` when the stream ended or `within` passed.
    pub(crate) async fn next_message(&mut self, within: Duration) -> Option<Result<Message, WsError>> {
        tokio::time::timeout(within, self.stream.next()).await.ok().flatten()
    }

    /// The next text frame as JSON, skipping WebSocket pings and pongs.
    pub(crate) async fn next(&mut self) -> Value {
        loop {
            match self.next_message(EVENTUALLY).await {
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).expect("a JSON frame"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// The next frame, which must be of type `kind`.
    pub(crate) async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], kind, "{frame}");
        frame
    }

    /// The next `change` frame's change, checking that its cursor is the one after its seq.
    pub(crate) async fn change(&mut self) -> Value {
        let frame = self.expect("change").await;
        assert!(frame["cursor"].is_string(), "{frame}");
        frame["change"].clone()
    }

    /// The seqs of the next `n` change frames.
    pub(crate) async fn seqs(&mut self, n: usize) -> Vec<u64> {
        let mut seqs = Vec::with_capacity(n);
        for _ in 0..n {
            seqs.push(seq(&self.change().await));
        }
        seqs
    }

    /// `ready`'s cursor.
    pub(crate) async fn ready(&mut self) -> String {
        let frame = self.expect("ready").await;
        frame["cursor"].as_str().expect("a cursor").to_owned()
    }

    /// Sends `ping` and expects `pong` as the very next frame: the socket is open, and everything the
    /// server had for it before the ping was sent before the pong.
    pub(crate) async fn ping(&mut self) {
        self.send_text(r#"{"type":"ping"}"#).await;
        self.expect("pong").await;
    }

    /// An `error` frame with `invalid_request`.
    pub(crate) async fn expect_invalid(&mut self) -> Value {
        let frame = self.expect("error").await;
        assert_eq!(frame["code"], "invalid_request", "{frame}");
        assert!(frame["detail"].is_string(), "{frame}");
        frame
    }

    /// Reads until the server ends the socket, and answers its close frame.
    pub(crate) async fn closed(&mut self) -> Closed {
        loop {
            match self.next_message(EVENTUALLY).await {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// A change's seq.
pub(crate) fn seq(change: &Value) -> u64 {
    change["seq"].as_u64().expect("a seq")
}

/// Creates or replaces item `notes/{id}`, retrying a `503` as a client does: writers racing on one
/// stream run out of the service's own retries more often on the SQLite store.
pub(crate) async fn write(user: &TestUser<'_>, id: &str) {
    write_text(user, id, id).await;
}

/// Creates or replaces item `notes/{id}` with `text` in its data, as [`write`] does.
pub(crate) async fn write_text(user: &TestUser<'_>, id: &str, text: &str) {
    let path = format!("/v1/items/notes/{id}");
    let body = json!({"data": {"text": text}});
    let answer = eventually(EVENTUALLY, || async {
        let answer = user.put(&path, &body).await;
        (answer.status != StatusCode::SERVICE_UNAVAILABLE).then_some(answer)
    })
    .await
    .expect("the write succeeds within the deadline");
    assert!(answer.status.is_success(), "{}", answer.text);
}

/// Writes `n` items with up to 8 requests at a time.
pub(crate) async fn write_many(user: &TestUser<'_>, n: usize) {
    let ids: Vec<String> = (0..n).map(|i| format!("bulk-{i}")).collect();
    futures_util::stream::iter(ids.iter())
        .for_each_concurrent(8, |id| write(user, id))
        .await;
}

/// The user's whole feed, from `/v1/sync`.
pub(crate) async fn feed(user: &TestUser<'_>) -> Vec<Value> {
    let mut changes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sync?limit=100&since={c}"),
            None => "/v1/sync?limit=100".to_owned(),
        };
        let page = user.get(&path).await.expect_status(200).body;
        changes.extend(page["changes"].as_array().expect("changes").iter().cloned());
        cursor = Some(page["next_cursor"].as_str().expect("a cursor").to_owned());
        if page["has_more"] == false {
            return changes;
        }
    }
}

/// The `/v1/sync` cursor after the user's first `n` changes (1 to 100).
pub(crate) async fn cursor_after(user: &TestUser<'_>, n: usize) -> String {
    let page = user.get(&format!("/v1/sync?limit={n}")).await.expect_status(200).body;
    assert_eq!(page["changes"].as_array().map(Vec::len), Some(n), "{page}");
    page["next_cursor"].as_str().expect("a cursor").to_owned()
}

/// A cursor at the beginning of the feed: the `next_cursor` of the feed before its first change.
///
/// Only a user with no changes yet gets it from `/v1/sync`, so tests take it before writing.
pub(crate) async fn beginning(user: &TestUser<'_>) -> String {
    let page = user.get("/v1/sync").await.expect_status(200).body;
    assert_eq!(page["changes"], json!([]), "take the beginning before writing: {page}");
    page["next_cursor"].as_str().expect("a cursor").to_owned()
}
