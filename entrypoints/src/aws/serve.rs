//! `rookery serve --backend aws`: the one router in one process over the AWS adapters.
//!
//! The event store is DynamoDB, media is S3 (CloudFront when configured), push is SNS, identity is the
//! Cognito user pool's key set, and search is OpenSearch, CloudSearch or an in-process [`MemorySearchIndex`]
//! (`ROOKERY_SEARCH`). There are no development routes: users sign in with Cognito.
//!
//! Two [`StreamPoller`]s read the table's stream, one for the [`Indexer`] and one for the
//! [`PushDispatcher`], each with its own position, so a consumer that fails retries its own records and
//! never makes the other skip or wait. Both start at the stream's oldest record: the index is guarded by
//! version, and a push is remembered per message and device, so records handled before a restart are
//! handled again harmlessly (messages older than the idempotency window are not pushed again at all).
//! An in-process index starts empty, so it is first rebuilt from the table.
//!
//! `GET /v1/realtime` is served here too, by the same endpoint as on `rookery serve` ([`Realtime`]: the
//! same frames, limits, replay and resume), fed by a third poller of its own that starts at the stream's
//! latest record, anchored before the address is bound: a socket replays from the table everything
//! committed before it registered, and the poller routes everything after. Delivery comes from the
//! stream, never from the write path, so the whole realtime path runs on a laptop against moto.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rookery_adapters_aws::config::{AwsClients, AwsConfig, ConfigError, SearchBackend};
use rookery_adapters_aws::jwt::{JwksConfig, JwksVerifier, KeySource, cognito_issuer};
use rookery_adapters_aws::streams::{BatchHandler, StreamPoller};
use rookery_adapters_aws::{ErasureAwareIndex, S3MediaStore};
use rookery_adapters_memory::{MemorySearchIndex, SystemClock, UlidIds};
use rookery_domain::Platform;
use rookery_ports::{
    Clock, EventStore, Failure, IdSource, IdentityDirectory, IdentityVerifier, Indexer, MediaStore, PushDispatcher,
    PushGateway, SearchIndex, ServiceConfig,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{NO_REGION, config_from_vars};
use crate::http::{Api, ApiConfig, RateLimit, Services};
use crate::realtime::{Realtime, RealtimeConfig};
use crate::server::{self, BindError, Serving};

/// How long a stream poller waits after finding nothing new, by default.
///
/// DynamoDB Streams allows five `GetRecords` calls per second per shard across all readers, and the
/// three pollers (indexer, push dispatcher, realtime) share that: an idle poller reads each shard once
/// per interval, so three of them stay at five calls per second, and search and realtime stay fresh
/// within the contract's second.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(600);

/// The settings of `serve --backend aws` that are not about AWS.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// The per-user rate limit.
    pub rate_limit: RateLimit,
    /// How long a request may run.
    pub request_timeout: Duration,
    /// The services' tunables.
    pub service: ServiceConfig,
    /// How long a stream poller waits after a poll that found nothing (or failed).
    pub poll_interval: Duration,
    /// The limits of `/v1/realtime`.
    pub realtime: RealtimeConfig,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rate_limit: RateLimit::default(),
            request_timeout: crate::http::DEFAULT_REQUEST_TIMEOUT,
            service: ServiceConfig::default(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            realtime: RealtimeConfig::default(),
        }
    }
}

/// Everything `serve --backend aws` needs: the options and the AWS configuration.
#[derive(Debug, Clone)]
pub struct AwsServeConfig {
    /// The settings that are not about AWS.
    pub options: ServeOptions,
    /// The AWS adapters' configuration; `cognito_pool_id` and `cognito_client_id` are required.
    pub aws: AwsConfig,
}

impl AwsServeConfig {
    /// Reads the AWS settings through `var`, adding every problem to `problems` (the caller's, such as
    /// flags that do not apply): the `ROOKERY_*` variables and the Cognito pool and client this mode requires.
    /// The region is checked when the clients are loaded ([`super::load_clients`]).
    ///
    /// When `ROOKERY_COGNITO_JWKS_URL` is not set but `AWS_ENDPOINT_URL` is (an emulator), the key set is
    /// looked for where moto serves it: `<AWS_ENDPOINT_URL>/<pool id>/.well-known/jwks.json`.
    pub fn aws_from_vars(var: impl Fn(&str) -> Option<String>, mut problems: Vec<String>) -> (AwsConfig, Vec<String>) {
        let get = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        for (name, what) in [
            ("ROOKERY_COGNITO_POOL_ID", "the user pool whose tokens are accepted"),
            ("ROOKERY_COGNITO_CLIENT_ID", "the app client the tokens are issued to"),
        ] {
            if get(name).is_none() {
                problems.push(format!("{name} is required by serve --backend aws ({what})"));
            }
        }
        let emulator_jwks = match (get("AWS_ENDPOINT_URL"), get("ROOKERY_COGNITO_POOL_ID")) {
            (Some(endpoint), Some(pool)) => Some(format!(
                "{}/{pool}/.well-known/jwks.json",
                endpoint.trim_end_matches('/')
            )),
            _ => None,
        };
        let with_defaults = |name: &str| match name {
            "ROOKERY_COGNITO_JWKS_URL" => get(name).or_else(|| emulator_jwks.clone()),
            _ => var(name),
        };
        config_from_vars(&with_defaults, problems)
    }
}

/// Why `serve --backend aws` could not start.
#[derive(Debug, thiserror::Error)]
pub enum AwsStartError {
    /// Settings are missing or malformed; every problem is listed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address is taken by another process.
    #[error("address {0} is already in use")]
    AddrInUse(SocketAddr),
    /// The address cannot be listened on for another reason.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The token verifier could not be built.
    #[error("identity set-up failed: {0}")]
    Identity(String),
    /// The media store could not be built (the CloudFront key).
    #[error("media store: {0}")]
    Media(Failure),
    /// The table or its stream cannot be read.
    #[error("the stream of table {table} cannot be read ({failure}); has `rookery aws bootstrap` made the table?")]
    Stream {
        /// The table.
        table: String,
        /// Why.
        failure: Failure,
    },
    /// The in-process search index could not be rebuilt from the table.
    #[error("rebuilding the search index from the table failed: {0}")]
    Rebuild(Failure),
}

impl From<BindError> for AwsStartError {
    fn from(error: BindError) -> Self {
        match error {
            BindError::AddrInUse(addr) => Self::AddrInUse(addr),
            BindError::Listen { addr, source } => Self::Listen { addr, source },
        }
    }
}

/// The problems of `config` for this mode, beyond what [`AwsConfig::from_vars`] checks.
fn serve_problems(config: &AwsConfig, region: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    if config.cognito_pool_id.is_none() {
        problems.push("ROOKERY_COGNITO_POOL_ID is required by serve --backend aws".to_owned());
    }
    if config.cognito_client_id.is_none() {
        problems.push("ROOKERY_COGNITO_CLIENT_ID is required by serve --backend aws".to_owned());
    }
    if region.is_none() {
        problems.push(NO_REGION.to_owned());
    }
    problems
}

/// The verifier of the configured pool's ID and access tokens; the key set is fetched on the first token.
fn verifier(config: &AwsConfig, region: &str) -> Result<JwksVerifier<SystemClock>, AwsStartError> {
    let (Some(pool), Some(client)) = (&config.cognito_pool_id, &config.cognito_client_id) else {
        return Err(AwsStartError::Identity("no Cognito user pool configured".into()));
    };
    let issuer = cognito_issuer(region, pool);
    let url = config
        .cognito_jwks_url
        .clone()
        .unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json"));
    tracing::info!(%issuer, jwks = %url, "verifying Cognito tokens");
    JwksVerifier::new(
        JwksConfig::new(issuer, client.clone(), KeySource::remote(url)),
        SystemClock::new(),
    )
    .map_err(|e| AwsStartError::Identity(e.to_string()))
}

/// The stream pollers running in the background.
#[derive(Debug)]
struct Pollers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pollers {
    fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// Runs `poller` with `handler` until [`Pollers::stop`].
    fn spawn<H: BatchHandler + 'static>(
        &mut self,
        name: &'static str,
        mut poller: StreamPoller,
        handler: H,
        idle: Duration,
    ) {
        let mut stopped = self.stop.subscribe();
        self.tasks.push(tokio::spawn(async move {
            tracing::info!(consumer = name, stream = %poller.stream_arn(), "stream poller started");
            let shutdown = async move {
                // An error means the sender is gone, which also means stop.
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            poller.run(&handler, idle, shutdown).await;
            tracing::info!(consumer = name, "stream poller stopped");
        }));
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "a stream poller task failed");
            }
        }
    }
}

/// A running `serve --backend aws`.
#[derive(Debug)]
pub struct AwsServer {
    addr: SocketAddr,
    serving: Serving,
    realtime: Realtime,
    pollers: Pollers,
}

/// The adapters shared by both search backends.
struct Parts {
    clients: AwsClients,
    verifier: JwksVerifier<SystemClock>,
    media: S3MediaStore,
    indexer_poller: StreamPoller,
    push_poller: StreamPoller,
    realtime_poller: StreamPoller,
}

impl AwsServer {
    /// Loads the SDK clients for `config.aws` and starts (see [`AwsServer::start_with`]).
    ///
    /// # Errors
    /// As [`AwsServer::start_with`].
    pub async fn start(config: AwsServeConfig) -> Result<Self, AwsStartError> {
        let clients = AwsClients::load(config.aws).await;
        Self::start_with(config.options, clients).await
    }

    /// Checks the configuration, finds the table's stream, rebuilds an in-process index from the table,
    /// binds the address, and starts serving and polling.
    ///
    /// # Errors
    /// [`AwsStartError`] naming what to fix.
    pub async fn start_with(options: ServeOptions, clients: AwsClients) -> Result<Self, AwsStartError> {
        let config = clients.config().clone();
        let region = clients.region();
        let problems = serve_problems(&config, region.as_deref());
        let Some(region) = region.filter(|_| problems.is_empty()) else {
            return Err(ConfigError { problems }.into());
        };
        let verifier = verifier(&config, &region)?;
        let media = clients.media_store().map_err(AwsStartError::Media)?;
        for platform in [Platform::Apns, Platform::ApnsSandbox, Platform::Fcm] {
            if config.platform_arn(platform).is_none() {
                tracing::warn!(
                    platform = platform.as_str(),
                    "no SNS platform application configured: devices of this platform cannot be registered"
                );
            }
        }
        let stream_error = |failure| AwsStartError::Stream {
            table: config.table.clone(),
            failure,
        };
        let indexer_poller = clients.stream_poller().await.map_err(stream_error)?;
        let push_poller = clients.stream_poller().await.map_err(stream_error)?;
        // Anchored now, before the address is bound, so no socket can register before it.
        let mut realtime_poller = clients.stream_poller().await.map_err(stream_error)?;
        realtime_poller.skip_to_latest().await.map_err(stream_error)?;
        let parts = Parts {
            clients,
            verifier,
            media,
            indexer_poller,
            push_poller,
            realtime_poller,
        };
        match config.search {
            SearchBackend::Memory => launch(options, parts, MemorySearchIndex::new(), true).await,
            SearchBackend::CloudSearch | SearchBackend::OpenSearch => {
                let Some(index) = parts.clients.search_index() else {
                    return Err(ConfigError {
                        problems: vec![
                            "ROOKERY_SEARCH=cloudsearch needs both CloudSearch endpoints, opensearch its endpoint"
                                .into(),
                        ],
                    }
                    .into());
                };
                launch(options, parts, index, false).await
            }
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many realtime sockets are open.
    pub fn realtime_connections(&self) -> usize {
        self.realtime.connections()
    }

    /// Stops accepting connections, lets in-flight requests finish, closes the realtime sockets with a
    /// close frame, then stops the stream pollers.
    ///
    /// # Errors
    /// The server's I/O error, if it failed while serving.
    pub async fn shutdown(self) -> io::Result<()> {
        let served = self.serving.stop().await;
        self.realtime.stop().await;
        self.pollers.stop().await;
        served
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    ///
    /// # Errors
    /// The server's I/O error, if it failed while serving.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> io::Result<()> {
        // Whether the signal came or the server failed, the pollers stop after the server has.
        let served = self.serving.run_until(signal).await;
        self.realtime.stop().await;
        self.pollers.stop().await;
        served
    }
}

/// Builds the service over `search`, starts the pollers and the server.
async fn launch<S: SearchIndex>(
    options: ServeOptions,
    parts: Parts,
    search: S,
    rebuild: bool,
) -> Result<AwsServer, AwsStartError> {
    let clients = &parts.clients;
    let store = clients.event_store();
    let clock = SystemClock::new();
    let push = clients.push_gateway();
    // The stream is read again from its oldest record at every start, erased users' records included:
    // the index drops their changes, and notes an erasure before deleting so none races it.
    let search = ErasureAwareIndex::new(search, store.clone());
    let services = Services::new(
        store.clone(),
        clock.clone(),
        UlidIds::new(),
        search.clone(),
        push.clone(),
        parts.media,
        options.service.clone(),
    )
    // An erasure deletes the Cognito user too, when a pool is configured.
    .with_directory(clients.identity_directory());
    let indexer = Indexer::new(search);
    if rebuild {
        // The stream keeps only a day of changes, so an index that starts empty is filled from the table.
        let started = Instant::now();
        let events = indexer.rebuild(&store, |_| {}).await.map_err(AwsStartError::Rebuild)?;
        tracing::info!(
            events,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "search index rebuilt from the table"
        );
    }

    let (listener, addr) = server::bind(options.addr).await?;

    let mut pollers = Pollers::new();
    pollers.spawn("indexer", parts.indexer_poller, indexer, options.poll_interval);
    let dispatcher = PushDispatcher::new(
        store,
        push,
        clock,
        services.devices.clone(),
        options.service.idempotency_ttl,
    );
    pollers.spawn("push dispatcher", parts.push_poller, dispatcher, options.poll_interval);

    let (realtime, feed) = Realtime::spawn_fed(services.erasure.store().clone(), options.realtime);
    pollers.spawn("realtime", parts.realtime_poller, feed, options.poll_interval);

    let api_config = server::api_config(options.rate_limit, options.request_timeout);
    let router = router(&services, parts.verifier, api_config, &realtime);
    let serving = Serving::spawn(listener, router);
    tracing::info!(%addr, backend = "aws", "rookery listening on http://{addr}");
    Ok(AwsServer {
        addr,
        serving,
        realtime,
        pollers,
    })
}

/// The contract's routes and `/v1/realtime`, behind one token gate that answers `410 account_erased`
/// for an erased user, the WebSocket handshake included. Only the contract's routes: on AWS users sign
/// in with Cognito, and media goes to S3 directly.
fn router<S, C, I, X, P, M, D, V>(
    services: &Services<S, C, I, X, P, M, D>,
    verifier: V,
    config: ApiConfig,
    realtime: &Realtime,
) -> axum::Router
where
    S: EventStore,
    C: Clock,
    I: IdSource,
    X: SearchIndex,
    P: PushGateway,
    M: MediaStore,
    D: IdentityDirectory,
    V: IdentityVerifier,
{
    Api::new(verifier, config)
        .refusing_erased(services.erasure.store().clone())
        .merge_authenticated(services.routes())
        .merge_authenticated(realtime.routes())
        .merge_public(crate::http::openapi_routes())
        .into_router()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use rookery_adapters_memory::identity::DevIdentityProvider;
    use rookery_adapters_memory::{LocalMediaStore, MemoryEventStore, MemoryPushGateway};
    use rookery_domain::UserId;
    use tower::ServiceExt;

    use super::*;

    /// The status of a `/v1/realtime` handshake of `user` on this mode's router, over the memory store
    /// (the DynamoDB store answers the same port).
    async fn handshake_status(erase: bool) -> StatusCode {
        let store = MemoryEventStore::in_memory();
        let alice = UserId::parse("alice").expect("a user id");
        if erase {
            store
                .erase_owner(&alice, SystemClock::new().now())
                .await
                .expect("erased");
        }
        let services = Services::new(
            store.clone(),
            SystemClock::new(),
            UlidIds::new(),
            MemorySearchIndex::new(),
            MemoryPushGateway::new(),
            LocalMediaStore::in_memory("http://127.0.0.1", vec![7u8; 32]),
            ServiceConfig::default(),
        );
        let provider = DevIdentityProvider::ephemeral().expect("a key");
        let dev = provider.verifier_config();
        let verifier = JwksVerifier::new(
            JwksConfig::new(dev.issuer, dev.audience, KeySource::Static(dev.jwks)),
            SystemClock::new(),
        )
        .expect("a verifier");
        let (token, _) = provider
            .issue(&alice, SystemClock::new().now(), Duration::from_secs(600))
            .expect("a token");
        let (realtime, _feed) = Realtime::spawn_fed(store, RealtimeConfig::default());
        let router = router(&services, verifier, ApiConfig::default(), &realtime);
        let request = Request::get("/v1/realtime")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Body::empty())
            .expect("a request");
        let status = router.oneshot(request).await.expect("an answer").status();
        realtime.stop().await;
        status
    }

    #[tokio::test]
    async fn the_realtime_handshake_of_an_erased_account_is_410() {
        assert_eq!(handshake_status(true).await, StatusCode::GONE);
        // Not erased, it passes the gate; without a real connection to upgrade the handler answers 426.
        assert_eq!(handshake_status(false).await, StatusCode::UPGRADE_REQUIRED);
    }

    #[test]
    fn serve_needs_the_cognito_pool_client_and_a_region() {
        let problems = serve_problems(&AwsConfig::new("t", "b"), None);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("ROOKERY_COGNITO_POOL_ID"));
        assert!(problems[1].contains("ROOKERY_COGNITO_CLIENT_ID"));
        assert_eq!(problems[2], NO_REGION);
        let mut config = AwsConfig::new("t", "b");
        config.cognito_pool_id = Some("us-east-1_x".into());
        config.cognito_client_id = Some("c".into());
        assert!(serve_problems(&config, Some("us-east-1")).is_empty());
    }

    #[test]
    fn every_problem_of_the_environment_is_reported_at_once() {
        let vars: HashMap<&str, &str> = HashMap::from([("ROOKERY_SEARCH", "elastic")]);
        let (_, problems) = AwsServeConfig::aws_from_vars(
            |name| vars.get(name).map(|v| (*v).to_owned()),
            vec!["--data-dir does not apply".into()],
        );
        let text = problems.join("\n");
        for expected in [
            "--data-dir does not apply",
            "ROOKERY_COGNITO_POOL_ID is required",
            "ROOKERY_COGNITO_CLIENT_ID is required",
            "ROOKERY_TABLE is not set",
            "ROOKERY_BUCKET is not set",
            "ROOKERY_SEARCH must be memory, cloudsearch or opensearch",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert_eq!(problems.len(), 6, "{text}");
    }

    #[test]
    fn on_an_emulator_the_key_set_is_looked_for_where_moto_serves_it() {
        let vars: HashMap<&str, &str> = HashMap::from([
            ("ROOKERY_TABLE", "t"),
            ("ROOKERY_BUCKET", "b"),
            ("ROOKERY_COGNITO_POOL_ID", "us-east-1_abc"),
            ("ROOKERY_COGNITO_CLIENT_ID", "client"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/"),
        ]);
        let lookup = |name: &str| vars.get(name).map(|v| (*v).to_owned());
        let (config, problems) = AwsServeConfig::aws_from_vars(lookup, Vec::new());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            config.cognito_jwks_url.as_deref(),
            Some("http://127.0.0.1:5000/us-east-1_abc/.well-known/jwks.json")
        );
        let mut explicit = vars.clone();
        explicit.insert("ROOKERY_COGNITO_JWKS_URL", "https://keys.example/jwks.json");
        let (config, _) = AwsServeConfig::aws_from_vars(|name| explicit.get(name).map(|v| (*v).to_owned()), Vec::new());
        assert_eq!(
            config.cognito_jwks_url.as_deref(),
            Some("https://keys.example/jwks.json")
        );
    }
}
