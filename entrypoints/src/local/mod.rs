//! The composition root of `rookery serve`: the event store and search index (in memory, or one SQLite
//! database in the data directory, see [`data_dir`]), the development identity provider, the local media
//! store, the recording push gateway and a feed driver per consumer of the change feed, behind the one
//! router.
//! With `--oidc-issuer` a real OpenID Connect issuer replaces the development provider ([`oidc`]).
//!
//! [`LocalServer::start`] is also what the HTTP tests use to run a real server in-process on a random port.
//! The routes only this server has live here too: [`dev`] (development tokens, recorded pushes, and the
//! OpenAPI document that lists them) and [`media`] (the local media store's signed URLs).

pub mod data_dir;
pub mod dev;
pub mod media;
pub mod oidc;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rookery_adapters_aws::jwt::{JwksConfig, JwksVerifier, KeySource};
use rookery_adapters_memory::identity::{DevIdentityProvider, KEY_FILE};
use rookery_adapters_memory::push::ENDPOINTS_FILE;
use rookery_adapters_memory::{
    LocalMediaStore, MemoryEventStore, MemoryPushGateway, MemorySearchIndex, SystemClock, UlidIds, generate_secret,
};
use rookery_adapters_sqlite::SqliteStore;
use rookery_domain::{Timestamp, UserId};
use rookery_ports::{ChangeFeed, Clock, EventStore, Indexer, PushDispatcher, SearchIndex, ServiceConfig};
use serde_json::Value;

use crate::feed::{FeedDriver, FeedHandle, INDEXER, PUSH_DISPATCHER};
use crate::http::{Api, ErasureMarkers, RateLimit, Services};
use crate::realtime::{Realtime, RealtimeConfig};
use crate::server::{self, BindError, Serving};
pub use data_dir::DataDir;
use dev::TokenIssuer;

/// The services of the local server: over the memory store and index by default, over the SQLite ones
/// with a data directory.
pub type LocalServices<S = MemoryEventStore, X = MemorySearchIndex> =
    Services<S, SystemClock, UlidIds, X, MemoryPushGateway, LocalMediaStore>;

/// The media signing secret's file in the data directory.
pub const MEDIA_SECRET_FILE: &str = "media.secret";
/// The media blobs' directory in the data directory.
pub const MEDIA_DIR: &str = "media";

/// How the local server is set up.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Where the database (event log, projections, search index), the identity key, the push endpoints and
    /// media live; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// The per-user rate limit.
    pub rate_limit: RateLimit,
    /// How long a request may run.
    pub request_timeout: Duration,
    /// The services' tunables.
    pub service: ServiceConfig,
    /// The limits of `/v1/realtime`.
    pub realtime: RealtimeConfig,
    /// A real OpenID Connect issuer to verify tokens with; `None` runs the development provider.
    pub oidc: Option<OidcConfig>,
}

/// A real identity provider: tokens from `issuer` whose `aud` names `audience`.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL, exactly as its tokens' `iss` and its discovery document's `issuer` spell it.
    pub issuer: String,
    /// The audience every token's `aud` must contain (usually the client id).
    pub audience: String,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: None,
            rate_limit: RateLimit::default(),
            request_timeout: crate::http::DEFAULT_REQUEST_TIMEOUT,
            service: ServiceConfig::default(),
            realtime: RealtimeConfig::default(),
            oidc: None,
        }
    }
}

/// Why the local server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
    /// The data directory cannot be used.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// The OpenID Connect issuer's discovery document could not be fetched or does not fit.
    #[error("OpenID Connect discovery at {url} failed: {reason}")]
    Discovery {
        /// The discovery document's URL.
        url: String,
        /// Why, in words.
        reason: String,
    },
    /// The identity provider or verifier could not be set up.
    #[error("identity set-up failed: {0}")]
    Identity(String),
}

impl From<BindError> for StartError {
    fn from(error: BindError) -> Self {
        match error {
            BindError::AddrInUse(addr) => Self::AddrInUse(addr),
            BindError::Listen { addr, source } => Self::Listen { addr, source },
        }
    }
}

fn data_dir_error(path: &Path, reason: impl std::fmt::Display) -> StartError {
    StartError::DataDir {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// How long development tokens last.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// The development provider as the token routes use it: tokens issued now, valid for [`DEV_TOKEN_TTL`].
#[derive(Debug, Clone)]
pub struct DevTokens {
    provider: DevIdentityProvider,
    clock: SystemClock,
}

impl TokenIssuer for DevTokens {
    fn issue(&self, user: &UserId) -> Result<(String, Timestamp), String> {
        self.provider
            .issue(user, self.clock.now(), DEV_TOKEN_TTL)
            .map_err(|e| e.to_string())
    }

    fn jwks(&self) -> Value {
        self.provider.jwks()
    }
}

/// The signing secret for media URLs: persisted in the data directory so URLs outlive a restart.
fn media_secret(data_dir: Option<&Path>) -> Result<Vec<u8>, StartError> {
    let fresh = || generate_secret().map(|s| s.to_vec());
    let Some(dir) = data_dir else {
        return fresh().map_err(|e| StartError::Identity(format!("no randomness for the media secret: {e}")));
    };
    let path = dir.join(MEDIA_SECRET_FILE);
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => Ok(secret),
        Ok(_) => Err(data_dir_error(&path, "the media secret is shorter than 32 bytes")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let secret = fresh().map_err(|e| data_dir_error(&path, e))?;
            std::fs::write(&path, &secret).map_err(|e| data_dir_error(&path, e))?;
            Ok(secret)
        }
        Err(e) => Err(data_dir_error(&path, e)),
    }
}

/// A running local server.
#[derive(Debug)]
pub struct LocalServer {
    addr: SocketAddr,
    serving: Serving,
    indexing: FeedHandle,
    pushing: FeedHandle,
    realtime: Realtime,
    /// The open data directory (its lock and store), kept until the server is dropped.
    data: Option<DataDir>,
}

/// What the composition takes besides the store and the search index.
struct Parts<'a> {
    config: &'a LocalConfig,
    data_dir: Option<&'a Path>,
    /// Events committed before this start that the indexer had not handled yet (after an import, all of them).
    to_index: u64,
}

impl LocalServer {
    /// Opens the stores, binds the address and starts serving.
    ///
    /// Without a data directory every adapter lives in memory. With one, the event store and the search
    /// index are one SQLite database in it ([`DataDir`]; a data directory of an older build has its log
    /// imported first), the development identity key, the media signing secret, the media blobs and the
    /// push endpoints are files beside it, and nothing is replayed: each consumer of the change feed goes
    /// on from its stored position.
    ///
    /// # Errors
    /// [`StartError`] when the address or the data directory cannot be used.
    pub async fn start(config: LocalConfig) -> Result<Self, StartError> {
        let Some(dir) = config.data_dir.clone() else {
            let parts = Parts {
                config: &config,
                data_dir: None,
                to_index: 0,
            };
            return Self::compose(MemoryEventStore::in_memory(), MemorySearchIndex::new(), parts, None).await;
        };
        let data = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || DataDir::open(&dir)
        })
        .await
        .map_err(|e| data_dir_error(&dir, format!("opening it stopped: {e}")))??;
        let store = data.store().clone();
        let index = store.search_index();
        let to_index = match data.imported() {
            Some(_) => ChangeFeed::commit_position(&store).map_err(|e| data_dir_error(&dir, e))?,
            None => 0,
        };
        let parts = Parts {
            config: &config,
            data_dir: Some(&dir),
            to_index,
        };
        Self::compose(store, index, parts, Some(data)).await
    }

    /// Builds the adapters beside the store and the index, the services, the feed consumers and the router.
    async fn compose<S, X>(store: S, index: X, parts: Parts<'_>, data: Option<DataDir>) -> Result<Self, StartError>
    where
        S: EventStore + ChangeFeed,
        X: SearchIndex,
    {
        let Parts {
            config,
            data_dir,
            to_index,
        } = parts;
        let started = Instant::now();
        let (listener, addr) = server::bind(config.addr).await?;
        let base_url = format!("http://{addr}");

        // With a real issuer there is no development provider, so nobody can mint tokens.
        let (verifier_config, provider) = match &config.oidc {
            Some(oidc) => {
                let jwks_uri = oidc::discover_jwks_uri(&oidc.issuer).await?;
                tracing::info!(issuer = %oidc.issuer, audience = %oidc.audience, %jwks_uri, "verifying tokens of an OpenID Connect issuer");
                let keys = KeySource::remote(jwks_uri);
                // Cognito's access tokens carry no `aud` but a `client_id`, which only its own profile reads.
                let config = if oidc::is_cognito(&oidc.issuer) {
                    JwksConfig::new(&oidc.issuer, &oidc.audience, keys)
                } else {
                    JwksConfig::oidc(&oidc.issuer, &oidc.audience, keys)
                };
                (config, None)
            }
            None => {
                let provider = match data_dir {
                    Some(dir) => DevIdentityProvider::open(dir).map_err(|e| data_dir_error(dir, e))?,
                    None => DevIdentityProvider::ephemeral().map_err(|e| StartError::Identity(e.to_string()))?,
                };
                let dev = provider.verifier_config();
                let keys = KeySource::Static(dev.jwks);
                (JwksConfig::new(dev.issuer, dev.audience, keys), Some(provider))
            }
        };
        let verifier =
            JwksVerifier::new(verifier_config, SystemClock::new()).map_err(|e| StartError::Identity(e.to_string()))?;

        let secret = media_secret(data_dir)?;
        let media = match data_dir {
            Some(dir) => {
                let blobs = dir.join(MEDIA_DIR);
                LocalMediaStore::in_dir(&base_url, secret, &blobs).map_err(|e| data_dir_error(&blobs, e))?
            }
            None => LocalMediaStore::in_memory(&base_url, secret),
        };
        // The endpoints are saved in the data directory, so devices registered before a restart still get pushes.
        let push = match data_dir {
            Some(dir) => MemoryPushGateway::open(dir).map_err(|e| data_dir_error(dir, e))?,
            None => MemoryPushGateway::new(),
        };
        if let Some(dir) = data_dir {
            tracing::info!(
                dir = %dir.display(),
                identity_key = %dir.join(KEY_FILE).display(),
                media_secret = %dir.join(MEDIA_SECRET_FILE).display(),
                media = %dir.join(MEDIA_DIR).display(),
                push_endpoints = %dir.join(ENDPOINTS_FILE).display(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "development identity key, media and push endpoints opened"
            );
        }
        let clock = SystemClock::new();
        let max_media = config.service.limits.max_media_bytes;
        let remember_for = config.service.idempotency_ttl;
        let services: LocalServices<S, X> = Services::new(
            store.clone(),
            clock.clone(),
            UlidIds::new(),
            index.clone(),
            push.clone(),
            media.clone(),
            config.service.clone(),
        );

        // Each consumer follows the feed on its own, from the position it stored.
        let indexing = FeedDriver::new(INDEXER, store.clone(), Indexer::new(index)).spawn();
        let dispatcher = PushDispatcher::new(
            store.clone(),
            push.clone(),
            clock.clone(),
            services.devices.clone(),
            remember_for,
        );
        let realtime = Realtime::spawn(store.clone(), config.realtime);
        let pushing = FeedDriver::new(PUSH_DISPATCHER, store, dispatcher).spawn();
        if to_index > 0 {
            // Once, after an import: the new index is built before searches are answered.
            let indexed = Instant::now();
            indexing.caught_up_to(to_index).await;
            tracing::info!(
                events = to_index,
                elapsed_ms = indexed.elapsed().as_millis() as u64,
                "search index built from the imported events"
            );
        }

        let api_config = server::api_config(config.rate_limit, config.request_timeout);
        let markers = ErasureMarkers::of(services.erasure.store().clone());
        let mut api = Api::new(verifier, api_config)
            .refusing_erased(services.erasure.store().clone())
            .merge_authenticated(services.routes())
            .merge_authenticated(realtime.routes())
            .merge_public(media::routes(media, clock.clone(), max_media));
        // The development routes, and the OpenAPI document that lists them, exist only beside the
        // development provider.
        match provider {
            Some(provider) => {
                api = api
                    .merge_public(dev::openapi_routes())
                    .merge_public(dev::public_routes_refusing(DevTokens { provider, clock }, markers))
                    .merge_authenticated(dev::authenticated_routes(push));
            }
            None => api = api.merge_public(crate::http::openapi_routes()),
        }
        let router = api.into_router();

        let serving = Serving::spawn(listener, router);
        tracing::info!(%addr, "rookery listening on http://{addr}");
        Ok(Self {
            addr,
            serving,
            indexing,
            pushing,
            realtime,
            data,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The data directory's store, when the server runs on one (for tests that look behind the API).
    pub fn store(&self) -> Option<&SqliteStore> {
        self.data.as_ref().map(DataDir::store)
    }

    /// The feed position the indexer and the push dispatcher have both handled everything before.
    pub fn feed_position(&self) -> u64 {
        self.indexing.position().min(self.pushing.position())
    }

    /// Stops accepting connections, lets in-flight requests finish, then stops the feed driver.
    ///
    /// # Errors
    /// The server's I/O error, if it failed while serving.
    pub async fn shutdown(self) -> io::Result<()> {
        let served = self.serving.stop().await;
        self.realtime.stop().await;
        self.indexing.stop().await;
        self.pushing.stop().await;
        served
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    ///
    /// # Errors
    /// The server's I/O error, if it failed while serving.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> io::Result<()> {
        // Whether the signal came or the server failed, the feed stops after the server has.
        let served = self.serving.run_until(signal).await;
        self.realtime.stop().await;
        self.indexing.stop().await;
        self.pushing.stop().await;
        served
    }
}
