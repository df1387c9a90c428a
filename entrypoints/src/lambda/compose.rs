//! The AWS composition of the Lambda functions: configuration, SDK clients and adapters, built once per
//! cold start from the environment and shared by every invocation of that instance.
//!
//! The configuration is the AWS SDK's own environment (region, credentials, `AWS_ENDPOINT_URL`) plus
//! the `ROOKERY_*` variables read by [`AwsConfig::from_env`] (listed in `docs/DEPLOY.md`). Building the
//! clients makes no network call: credentials are resolved and connections opened on first use, so an
//! invocation that needs no AWS service (a health check, a request refused for its token, an empty
//! batch) needs no AWS at all. Each function builds only the services its routes call, and so only
//! the adapters those services use (decision 0004).

use axum::Router;
use rookery_adapters_aws::config::{AwsClients, AwsConfig, ConfigError, SearchBackend};
use rookery_adapters_aws::dynamo::Purge;
use rookery_adapters_aws::jwt::{JwksConfig, JwksSetupError, JwksVerifier, KeySource, cognito_issuer};
use rookery_adapters_aws::streams::erased_owner;
use rookery_adapters_aws::{AwsSearchIndex, DynamoStore, S3MediaStore, SnsPushGateway};
use rookery_adapters_memory::{SystemClock, UlidIds};
use rookery_domain::UserId;
use rookery_ports::{
    AccountService, DeviceService, ErasureRequest, ErasureService, EventStore, Failure, IdentityDirectory, Indexer,
    ItemService, MediaService, MediaStore, MessageService, PushDispatcher, PushGateway, SearchIndex, SearchService,
    ServiceConfig, SkipErased, SyncService, Writer,
};

use super::eraser::{EraserHandler, MarkerDecoder};
use crate::http::{
    ApiConfig, RateLimit, account_routes, device_routes, erasure_routes, item_routes, media_routes, message_routes,
    search_routes, sync_routes,
};

/// The write path every function that writes shares: the clock, ids and configuration of a deployment.
fn writer<S: EventStore>(store: S) -> Writer<S, SystemClock, UlidIds> {
    Writer::new(store, SystemClock::new(), UlidIds::new(), ServiceConfig::default())
}

/// Function 1's authenticated routes (items, users' public items, sync, devices, media, the account's
/// export and erasure request) over the event store, the push gateway (device registration) and the
/// media store. On AWS these are DynamoDB, SNS and S3; the tests put the memory adapters in their place
/// (`entrypoints/tests/function_ports.rs`), so both compose the function the same way.
///
/// `DELETE /v1/me` only writes the erasure marker ([`ErasureRequest`]): with the DynamoDB store in
/// deferred purge mode nothing of the account is readable from then on, and the eraser function
/// ([`eraser_function`]) finishes the rest, so this function needs no permission to delete from the
/// search index, the bucket, SNS or Cognito.
pub fn items_function<S: EventStore, P: PushGateway, M: MediaStore>(store: S, push: P, media: M) -> Router {
    let writer = writer(store.clone());
    let store_for_erasure = store.clone();
    let media = MediaService::new(writer.clone(), media);
    let account = AccountService::new(store.clone(), SystemClock::new(), media.clone());
    item_routes(ItemService::new(writer.clone()))
        .merge(sync_routes(SyncService::new(store)))
        .merge(device_routes(DeviceService::new(writer, push)))
        .merge(media_routes(media))
        .merge(account_routes(account))
        .merge(erasure_routes(ErasureRequest::new(
            store_for_erasure,
            SystemClock::new(),
        )))
}

/// The eraser function's handler: finishes the erasure of each marker that the table's stream delivers
/// ([`ErasureService::finish`]) over the event store, the search index, the push gateway, the media
/// store and the identity provider's directory, reading markers with `decoder`. On AWS these are
/// DynamoDB (deferred purge), OpenSearch or CloudSearch, SNS, S3 and Cognito; the tests put the memory
/// adapters in their place.
pub fn eraser_function<K, S, X, P, M, D>(
    decoder: K,
    store: S,
    index: X,
    push: P,
    media: M,
    directory: D,
) -> EraserHandler<K, S, SystemClock, X, P, M, D>
where
    K: MarkerDecoder,
    S: EventStore,
    X: SearchIndex,
    P: PushGateway,
    M: MediaStore,
    D: IdentityDirectory,
{
    let erasure = ErasureService::new(store, SystemClock::new(), index, push, media).with_directory(directory);
    EraserHandler::new(decoder, erasure)
}

/// Function 3's authenticated route (search) over the search index: it needs nothing else.
pub fn search_function<X: SearchIndex>(index: X) -> Router {
    search_routes(SearchService::new(
        index,
        ServiceConfig::default().limits.max_query_chars,
    ))
}

/// Function 4's push dispatcher, skipping the message events of erased accounts.
pub type Dispatcher<S, P> = SkipErased<S, PushDispatcher<S, SystemClock, UlidIds, P>>;

/// Function 4's authenticated routes (messages) over the event store, and its stream consumer: the push
/// dispatcher over the store and the push gateway, which skips the events of erased accounts (a
/// redelivered batch must not push to them).
pub fn messages_function<S: EventStore, P: PushGateway>(store: S, push: P) -> (Router, Dispatcher<S, P>) {
    let writer = writer(store.clone());
    let remember_for = writer.config().idempotency_ttl;
    let routes = message_routes(MessageService::new(writer.clone()));
    let devices = DeviceService::new(writer, push.clone());
    let dispatcher = PushDispatcher::new(store.clone(), push, SystemClock::new(), devices, remember_for);
    (routes, SkipErased::new(store, dispatcher))
}

/// Function 2's use case: the indexer over the search index, skipping the events of the accounts the
/// event store knows as erased (one marker read per owner per batch), so that a redelivered batch never
/// brings an erased account's documents back.
pub fn indexer_function<S: EventStore, X: SearchIndex>(store: S, index: X) -> SkipErased<S, Indexer<X>> {
    SkipErased::new(store, Indexer::new(index))
}

/// The reader of erasure markers in the events table's stream records.
pub type AwsMarkers = fn(&aws_lambda_events::event::dynamodb::EventRecord) -> Result<Option<UserId>, Failure>;

/// The eraser function's handler on AWS, over the user pool's `D`.
pub type AwsEraser<D> =
    EraserHandler<AwsMarkers, DynamoStore, SystemClock, AwsSearchIndex, SnsPushGateway, S3MediaStore, D>;

/// The token verifier of an AWS deployment: the Cognito user pool's key set.
pub type CognitoVerifier = JwksVerifier<SystemClock>;

/// Why a function cannot start; the message names every variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// Variables are missing or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The functions share no memory, so only OpenSearch or CloudSearch can be their index.
    #[error(
        "ROOKERY_SEARCH must be opensearch (with ROOKERY_OPENSEARCH_ENDPOINT) or cloudsearch (with ROOKERY_CLOUDSEARCH_DOC_ENDPOINT and ROOKERY_CLOUDSEARCH_SEARCH_ENDPOINT) on Lambda"
    )]
    NoSearchIndex,
    /// The API functions verify Cognito tokens and need the pool.
    #[error("ROOKERY_COGNITO_POOL_ID and ROOKERY_COGNITO_CLIENT_ID are required by the API functions")]
    NoCognito,
    /// No region was found in the environment.
    #[error("no AWS region: set AWS_REGION (Lambda sets it)")]
    NoRegion,
    /// `ROOKERY_RATE_LIMIT` is not a number.
    #[error("ROOKERY_RATE_LIMIT must be a whole number of requests per second, not {0:?}")]
    RateLimit(String),
    /// The media store could not be built (the CloudFront key).
    #[error("media store: {0}")]
    Media(Failure),
    /// The token verifier could not be built.
    #[error("token verifier: {0}")]
    Verifier(#[from] JwksSetupError),
}

/// The configuration and SDK clients of one function instance.
#[derive(Debug, Clone)]
pub struct Aws {
    clients: AwsClients,
}

impl Aws {
    /// Reads the environment and builds the SDK clients.
    ///
    /// # Errors
    /// [`ComposeError::Config`] naming every missing or malformed variable.
    pub async fn from_env() -> Result<Self, ComposeError> {
        let config = AwsConfig::from_env()?;
        Ok(Self::from_config(config).await)
    }

    /// Builds the SDK clients for `config`.
    pub async fn from_config(config: AwsConfig) -> Self {
        Self {
            clients: AwsClients::load(config).await,
        }
    }

    /// The SDK clients.
    pub fn clients(&self) -> &AwsClients {
        &self.clients
    }

    /// The search index (OpenSearch or CloudSearch).
    ///
    /// # Errors
    /// [`ComposeError::NoSearchIndex`] unless OpenSearch or CloudSearch is configured.
    pub fn search_index(&self) -> Result<AwsSearchIndex, ComposeError> {
        if self.clients.config().search == SearchBackend::Memory {
            return Err(ComposeError::NoSearchIndex);
        }
        self.clients.search_index().ok_or(ComposeError::NoSearchIndex)
    }

    /// The event store of the functions: DynamoDB, leaving an erased user's rows to the eraser function
    /// ([`Purge::Deferred`]) and hiding them meanwhile.
    pub fn event_store(&self) -> DynamoStore {
        self.clients.event_store().with_purge(Purge::Deferred)
    }

    /// Function 1's routes: DynamoDB, SNS and S3 (with CloudFront when configured); no search index.
    ///
    /// # Errors
    /// [`ComposeError::Media`] when the CloudFront key cannot be read.
    pub fn items_function(&self) -> Result<Router, ComposeError> {
        let media = self.clients.media_store().map_err(ComposeError::Media)?;
        Ok(items_function(self.event_store(), self.clients.push_gateway(), media))
    }

    /// The eraser function's handler: DynamoDB, the search index, SNS, S3 and the user pool's
    /// `directory` (`None` when no pool is configured).
    ///
    /// # Errors
    /// [`ComposeError::NoSearchIndex`] unless OpenSearch or CloudSearch is configured;
    /// [`ComposeError::Media`] when the media store cannot be built.
    pub fn eraser<D: IdentityDirectory>(&self, directory: D) -> Result<AwsEraser<D>, ComposeError> {
        let media = self.clients.media_store().map_err(ComposeError::Media)?;
        Ok(eraser_function(
            erased_owner as AwsMarkers,
            self.event_store(),
            self.search_index()?,
            self.clients.push_gateway(),
            media,
            directory,
        ))
    }

    /// Function 3's route: the search index only.
    ///
    /// # Errors
    /// [`ComposeError::NoSearchIndex`] unless OpenSearch or CloudSearch is configured.
    pub fn search_function(&self) -> Result<Router, ComposeError> {
        Ok(search_function(self.search_index()?))
    }

    /// Function 4's routes and push dispatcher: DynamoDB and SNS; no search index, no media store.
    pub fn messages_function(&self) -> (Router, Dispatcher<DynamoStore, SnsPushGateway>) {
        messages_function(self.event_store(), self.clients.push_gateway())
    }

    /// Function 2's use case: the indexer over OpenSearch or CloudSearch, skipping erased accounts'
    /// events (it reads their markers in DynamoDB).
    ///
    /// # Errors
    /// [`ComposeError::NoSearchIndex`] unless OpenSearch or CloudSearch is configured.
    pub fn indexer(&self) -> Result<SkipErased<DynamoStore, Indexer<AwsSearchIndex>>, ComposeError> {
        Ok(indexer_function(self.event_store(), self.search_index()?))
    }

    /// The verifier of the configured Cognito user pool's tokens (ID and access tokens of its app client).
    /// The key set is fetched on the first token, not here.
    ///
    /// # Errors
    /// [`ComposeError::NoCognito`] or [`ComposeError::NoRegion`] when the pool is not configured.
    pub fn verifier(&self) -> Result<CognitoVerifier, ComposeError> {
        let config = self.clients.config();
        let (Some(pool), Some(client)) = (&config.cognito_pool_id, &config.cognito_client_id) else {
            return Err(ComposeError::NoCognito);
        };
        let region = self.clients.region().ok_or(ComposeError::NoRegion)?;
        let mut jwks = JwksConfig::cognito(&region, pool, client.clone());
        if let Some(url) = &config.cognito_jwks_url {
            jwks = JwksConfig::new(
                cognito_issuer(&region, pool),
                client.clone(),
                KeySource::remote(url.clone()),
            );
        }
        Ok(JwksVerifier::new(jwks, SystemClock::new())?)
    }
}

/// The HTTP edge's settings from `ROOKERY_RATE_LIMIT` (requests per second per user, burst twice that,
/// `0` for off; absent: the default). API Gateway's throttling is the real limit on Lambda, since each
/// instance keeps its own buckets.
///
/// # Errors
/// [`ComposeError::RateLimit`] when the value is not a whole number.
pub fn api_config(rate_limit: Option<&str>) -> Result<ApiConfig, ComposeError> {
    let mut config = ApiConfig::default();
    if let Some(value) = rate_limit.map(str::trim).filter(|v| !v.is_empty()) {
        let n: u32 = value.parse().map_err(|_| ComposeError::RateLimit(value.to_owned()))?;
        config.rate_limit = if n == 0 {
            RateLimit::off()
        } else {
            RateLimit::per_second(n)
        };
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_zero_turns_it_off_and_garbage_is_refused() {
        assert!(api_config(Some("0")).is_ok_and(|c| c.rate_limit.is_off()));
        assert!(api_config(None).is_ok_and(|c| !c.rate_limit.is_off()));
        assert!(matches!(api_config(Some("fast")), Err(ComposeError::RateLimit(v)) if v == "fast"));
    }
}
