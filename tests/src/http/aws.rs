//! `rookery serve --backend aws` in-process on the test binary's moto server: a bootstrapped table,
//! bucket and SNS applications with unique names, a fresh Cognito user pool, and users signed in to it.
//!
//! [`spawn_aws_app`] runs the same composition `rookery serve --backend aws` runs ([`AwsServer`]),
//! configured directly instead of through the environment so that tests running side by side do not
//! share variables. [`MotoPushes`] reads the pushes SNS delivered from moto's state dump.

use std::time::Duration;

use rookery_adapters_aws::OpenSearchService;
use rookery_adapters_aws::config::{AwsClients, SearchBackend};
use rookery_entrypoints::aws::{AwsServeConfig, AwsServer, ServeOptions};
use rookery_entrypoints::http::RateLimit;
use serde_json::Value;

use super::journey::{Delivered, PushProbe, TestDevice, Users};
use super::{ApiClient, TestUser};
use crate::aws::cognito::CognitoPool;
use crate::aws::moto;

/// How often the test server's stream pollers look for new records when idle: often enough that
/// indexing and pushes land quickly, seldom enough to leave the single-threaded emulator room.
pub const TEST_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Which search index the AWS server uses.
#[derive(Debug, Clone, Default)]
pub enum AwsSearch {
    /// The in-process index fed by the stream (`ROOKERY_SEARCH=memory`).
    #[default]
    Memory,
    /// CloudSearch at these endpoints (`ROOKERY_SEARCH=cloudsearch`).
    CloudSearch {
        /// The document endpoint.
        doc: String,
        /// The search endpoint.
        search: String,
    },
    /// OpenSearch at this endpoint (`ROOKERY_SEARCH=opensearch`).
    OpenSearch {
        /// The domain's or collection's endpoint.
        endpoint: String,
        /// A domain or a Serverless collection.
        service: OpenSearchService,
    },
}

/// An AWS server running in this test's runtime, its clients and Cognito pool, and an HTTP client for it
/// (through `Deref`).
#[derive(Debug)]
pub struct AwsTestApp {
    server: AwsServer,
    api: ApiClient,
    clients: AwsClients,
    pool: CognitoPool,
    config: AwsServeConfig,
}

impl std::ops::Deref for AwsTestApp {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.api
    }
}

/// Starts the AWS server with the in-process search index.
///
/// # Panics
/// When moto, bootstrap, the pool or the server cannot start (a test failure).
pub async fn spawn_aws_app() -> AwsTestApp {
    spawn_aws_app_with(AwsSearch::Memory).await
}

/// Starts the AWS server with `search`, on a freshly bootstrapped table, bucket and SNS applications.
///
/// # Panics
/// When moto, bootstrap, the pool or the server cannot start (a test failure).
pub async fn spawn_aws_app_with(search: AwsSearch) -> AwsTestApp {
    let (clients, _) = moto::bootstrapped().await.expect("moto runs and bootstrap succeeds");
    let pool = CognitoPool::create().await.expect("a Cognito user pool on moto");
    let mut aws = clients.config().clone();
    aws.cognito_pool_id = Some(pool.pool_id.clone());
    aws.cognito_client_id = Some(pool.client_id.clone());
    aws.cognito_jwks_url = Some(pool.jwks_url().expect("moto's address"));
    match search {
        AwsSearch::Memory => {}
        AwsSearch::CloudSearch { doc, search } => {
            aws.search = SearchBackend::CloudSearch;
            aws.cloudsearch_doc_endpoint = Some(doc);
            aws.cloudsearch_search_endpoint = Some(search);
        }
        AwsSearch::OpenSearch { endpoint, service } => {
            aws.search = SearchBackend::OpenSearch;
            aws.opensearch_endpoint = Some(endpoint);
            aws.opensearch_service = service;
        }
    }
    let options = ServeOptions {
        addr: "127.0.0.1:0".parse().expect("loopback address"),
        rate_limit: RateLimit::off(),
        poll_interval: TEST_POLL_INTERVAL,
        ..ServeOptions::default()
    };
    start(AwsServeConfig { options, aws }, clients, pool).await
}

async fn start(config: AwsServeConfig, clients: AwsClients, pool: CognitoPool) -> AwsTestApp {
    let server = AwsServer::start(config.clone()).await.expect("the AWS server starts");
    let api = ApiClient::new(format!("http://{}", server.addr()));
    AwsTestApp {
        server,
        api,
        clients,
        pool,
        config,
    }
}

impl AwsTestApp {
    /// The SDK clients of the server's table, bucket and SNS applications.
    pub fn clients(&self) -> &AwsClients {
        &self.clients
    }

    /// The server's Cognito user pool.
    pub fn pool(&self) -> &CognitoPool {
        &self.pool
    }

    /// A new user of the pool, signed in, calling with its ID token; its id is its Cognito `sub`.
    ///
    /// # Panics
    /// When the emulator refuses to make or sign in the user.
    pub async fn user(&self, username: &str) -> TestUser<'_> {
        let user = self.pool.sign_in(username).await.expect("a Cognito user");
        self.api.user_with_token(&user.sub, &user.id_token)
    }

    /// A new user of the pool, signed in, calling with its access token.
    ///
    /// # Panics
    /// When the emulator refuses to make or sign in the user.
    pub async fn access_user(&self, username: &str) -> TestUser<'_> {
        let user = self.pool.sign_in(username).await.expect("a Cognito user");
        self.api.user_with_token(&user.sub, &user.access_token)
    }

    /// Stops the server and starts a new one on the same table, bucket, applications and pool (on
    /// another port: make users again with [`ApiClient::user_with_token`]).
    ///
    /// # Panics
    /// When the server failed while serving or cannot start again.
    pub async fn restart(self) -> Self {
        let Self {
            server,
            clients,
            pool,
            config,
            ..
        } = self;
        server.shutdown().await.expect("a clean shutdown");
        start(config, clients, pool).await
    }

    /// Stops the server gracefully (HTTP first, then the stream pollers).
    ///
    /// # Panics
    /// When the server failed while serving.
    pub async fn shutdown(self) {
        self.server.shutdown().await.expect("a clean shutdown");
    }
}

/// Cognito users of the test server's pool: the first signed in with an ID token, the second with an
/// access token (the server accepts both).
impl Users for AwsTestApp {
    async fn first(&self, name: &str) -> TestUser<'_> {
        self.user(name).await
    }

    async fn second(&self, name: &str) -> TestUser<'_> {
        self.access_user(name).await
    }
}

/// Users of `pool` calling the server `api` (such as a `rookery serve --backend aws` process): the first
/// signed in with an ID token, the second with an access token; each user's id is its Cognito `sub`.
#[derive(Debug, Clone, Copy)]
pub struct CognitoUsers<'a> {
    /// The server's client.
    pub api: &'a ApiClient,
    /// The pool the server verifies tokens of.
    pub pool: &'a CognitoPool,
}

impl Users for CognitoUsers<'_> {
    async fn first(&self, name: &str) -> TestUser<'_> {
        let user = self.pool.sign_in(name).await.expect("a Cognito user");
        self.api.user_with_token(&user.sub, &user.id_token)
    }

    async fn second(&self, name: &str) -> TestUser<'_> {
        let user = self.pool.sign_in(name).await.expect("a Cognito user");
        self.api.user_with_token(&user.sub, &user.access_token)
    }
}

/// SNS's key for a platform's payload in a published message.
fn sns_key(platform: &str) -> &'static str {
    match platform {
        "apns" => "APNS",
        "apns_sandbox" => "APNS_SANDBOX",
        _ => "GCM",
    }
}

/// The pushes moto recorded as published to the SNS endpoints of the devices' tokens.
#[derive(Debug, Clone, Copy, Default)]
pub struct MotoPushes;

impl PushProbe for MotoPushes {
    async fn delivered(&self, _user: &TestUser<'_>, devices: &[TestDevice]) -> Vec<Delivered> {
        let state = moto::state().await.expect("moto's state dump");
        let endpoints = state["sns"]["PlatformEndpoint"].as_array().cloned().unwrap_or_default();
        let mut delivered = Vec::new();
        for device in devices {
            let key = sns_key(&device.platform);
            for endpoint in endpoints.iter().filter(|e| e["token"] == device.token.as_str()) {
                let messages = endpoint["messages"].as_object().cloned().unwrap_or_default();
                for message in messages.values().filter_map(Value::as_str) {
                    let published: Value = serde_json::from_str(message).expect("SNS messages are JSON");
                    let payload = published[key].as_str().expect("the platform's payload, as a string");
                    delivered.push(Delivered {
                        device_id: device.id.clone(),
                        platform: device.platform.clone(),
                        payload: serde_json::from_str(payload).expect("a JSON payload"),
                    });
                }
            }
        }
        delivered
    }
}
