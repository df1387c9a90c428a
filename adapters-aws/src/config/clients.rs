//! Turning an [`AwsConfig`] into SDK clients and the adapters built on them, and bootstrapping a deployment.
//!
//! Every value here comes from the configuration; nothing reads the environment.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::error::SdkError;
use rookery_domain::Platform;
use rookery_ports::Failure;

use super::settings::{AwsConfig, EnvironmentIdentity, SearchBackend};
use crate::cloudsearch::CloudSearchIndex;
use crate::cognito::CognitoDirectory;
use crate::dynamo::{DynamoStore, ItemHeads, create_table};
use crate::error::sdk_failure;
use crate::opensearch::OpenSearchIndex;
use crate::realtime::{ConnectionRegistry, ManagementApi, create_connections_table};
use crate::s3::{CloudFrontSigner, S3MediaStore};
use crate::search::AwsSearchIndex;
use crate::sns::{SnsPushGateway, ensure_platform_application};
use crate::streams::StreamPoller;

/// The name the SDK reports for credentials that came from the environment.
const ENVIRONMENT_PROVIDER: &str = "EnvironmentVariable";

/// `loader` told the region and credentials the environment named, so it builds no chain to find them.
fn with_identity(mut loader: ConfigLoader, identity: &EnvironmentIdentity) -> ConfigLoader {
    if let Some(region) = &identity.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(credentials) = &identity.credentials {
        let mut builder = Credentials::builder()
            .access_key_id(&credentials.access_key_id)
            .secret_access_key(&credentials.secret_access_key)
            .provider_name(ENVIRONMENT_PROVIDER);
        builder.set_session_token(credentials.session_token.clone());
        if let Some(account_id) = &credentials.account_id {
            builder = builder.account_id(account_id.as_str());
        }
        loader = loader.credentials_provider(builder.build());
    }
    loader
}

/// SDK clients built from one [`AwsConfig`], and the adapters made from them.
#[derive(Debug, Clone)]
pub struct AwsClients {
    config: AwsConfig,
    sdk: SdkConfig,
}

impl AwsClients {
    /// Resolves region, credentials and endpoints (the SDK's chain, or the emulator's fixed ones).
    pub async fn load(config: AwsConfig) -> Self {
        // One HTTP client for every SDK client, built on first use (see `crate::http`).
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(crate::http::http_client());
        if let Some(emulator) = &config.emulator {
            loader = loader
                .endpoint_url(&emulator.endpoint_url)
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "rookery-emulator"))
                .retry_config(RetryConfig::disabled());
        } else {
            loader = with_identity(loader, &config.identity);
        }
        let sdk = loader.load().await;
        Self { config, sdk }
    }

    /// The configuration the clients were built from.
    pub fn config(&self) -> &AwsConfig {
        &self.config
    }

    /// The region the clients use, if one was found.
    pub fn region(&self) -> Option<String> {
        self.sdk.region().map(ToString::to_string)
    }

    /// A DynamoDB client (tests scan the table with it).
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    /// An S3 client, path-style when configured so (tests list the bucket with it).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(self.config.s3_force_path_style)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.sdk)
    }

    /// Creates the configured events table (with its stream) unless it exists.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB refuses or the table does not become active.
    pub async fn create_table(&self) -> Result<(), Failure> {
        create_table(&self.dynamodb(), &self.config.table).await
    }

    /// The DynamoDB event store on the configured table.
    pub fn event_store(&self) -> DynamoStore {
        DynamoStore::new(self.dynamodb(), self.config.table.clone()).with_retry(self.config.retry)
    }

    /// A DynamoDB Streams poller of the configured table's stream, starting at its oldest records.
    ///
    /// # Errors
    /// A [`Failure`] when the table cannot be described or has no stream.
    pub async fn stream_poller(&self) -> Result<StreamPoller, Failure> {
        let client = aws_sdk_dynamodbstreams::Client::new(&self.sdk);
        StreamPoller::for_table(&self.dynamodb(), client, &self.config.table).await
    }

    /// The reader of the configured table's item heads (and of the rebuild checkpoints kept in it).
    pub fn item_heads(&self) -> ItemHeads {
        ItemHeads::new(self.dynamodb(), self.config.table.clone()).with_retry(self.config.retry)
    }

    /// The S3 media store on the configured bucket, with CloudFront downloads when configured.
    ///
    /// # Errors
    /// A [`Failure`] when the CloudFront private key cannot be read.
    pub fn media_store(&self) -> Result<S3MediaStore, Failure> {
        let store = S3MediaStore::new(self.s3(), self.config.bucket.clone());
        match &self.config.cloudfront {
            Some(cloudfront) => Ok(store.with_cloudfront(
                CloudFrontSigner::new(cloudfront).map_err(|e| Failure::permanent(format!("CloudFront key: {e}")))?,
            )),
            None => Ok(store),
        }
    }

    /// The SNS push gateway with the configured platform applications.
    pub fn push_gateway(&self) -> SnsPushGateway {
        let mut gateway = SnsPushGateway::new(self.sns()).with_retry(self.config.retry);
        for platform in [Platform::Apns, Platform::ApnsSandbox, Platform::Fcm] {
            if let Some(arn) = self.config.platform_arn(platform) {
                gateway = gateway.with_application(platform, arn);
            }
        }
        gateway
    }

    /// The Cognito user pool's directory, for deleting an erased account's user, when the pool id is
    /// configured (`ROOKERY_COGNITO_POOL_ID`); `None` otherwise (another identity provider, or none to
    /// administer). The Cognito client is built here and nowhere else, so only a binary that erases
    /// accounts makes one.
    pub fn identity_directory(&self) -> Option<CognitoDirectory> {
        let pool_id = self.config.cognito_pool_id.as_deref()?;
        let client = aws_sdk_cognitoidentityprovider::Client::new(&self.sdk);
        Some(CognitoDirectory::new(client, pool_id).with_retry(self.config.retry))
    }

    /// The configured search index: OpenSearch or CloudSearch; `None` with `ROOKERY_SEARCH=memory`
    /// (or without the chosen engine's endpoints, which [`AwsConfig::from_env`] reports).
    pub fn search_index(&self) -> Option<AwsSearchIndex> {
        match self.config.search {
            SearchBackend::Memory => None,
            SearchBackend::CloudSearch => self.cloudsearch_index().map(AwsSearchIndex::CloudSearch),
            SearchBackend::OpenSearch => self.opensearch_index().map(AwsSearchIndex::OpenSearch),
        }
    }

    /// The CloudSearch index, when `ROOKERY_SEARCH=cloudsearch`.
    pub fn cloudsearch_index(&self) -> Option<CloudSearchIndex> {
        if self.config.search != SearchBackend::CloudSearch {
            return None;
        }
        let doc = self.config.cloudsearch_doc_endpoint.as_deref()?;
        let search = self.config.cloudsearch_search_endpoint.as_deref()?;
        Some(CloudSearchIndex::new(&self.sdk, doc, search).with_retry(self.config.retry))
    }

    /// The OpenSearch index, when `ROOKERY_SEARCH=opensearch`.
    pub fn opensearch_index(&self) -> Option<OpenSearchIndex> {
        if self.config.search != SearchBackend::OpenSearch {
            return None;
        }
        let endpoint = self.config.opensearch_endpoint.as_deref()?;
        Some(
            OpenSearchIndex::new(
                &self.sdk,
                endpoint,
                self.config.opensearch_service,
                &self.config.opensearch_index,
            )
            .with_retry(self.config.retry),
        )
    }
}

impl AwsClients {
    /// The registry of the realtime WebSocket API's connections, on `table`.
    pub fn connection_registry(&self, table: &str) -> ConnectionRegistry {
        ConnectionRegistry::new(self.dynamodb(), table)
    }

    /// Creates the realtime connections table `table` (TTL on) unless it exists.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB refuses or the table does not become active.
    pub async fn create_connections_table(&self, table: &str) -> Result<(), Failure> {
        create_connections_table(&self.dynamodb(), table).await
    }

    /// The `@connections` management API of the WebSocket API stage at `endpoint`.
    pub fn management_api(&self, endpoint: &str) -> ManagementApi {
        ManagementApi::new(&self.sdk, endpoint)
    }
}

/// What [`bootstrap`] made or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapReport {
    /// The events table (created, or already there).
    pub table: String,
    /// The media bucket (created, or already there).
    pub bucket: String,
    /// The SNS platform applications, one per platform that had no ARN configured.
    pub platform_applications: Vec<(Platform, String)>,
}

/// Creates, idempotently, what a deployment needs: the events table with its stream, the media bucket,
/// and an SNS platform application for each platform that has no ARN configured.
///
/// Applications are created with the [`AwsConfig::sns_platform_credentials`] of their platform
/// (real SNS requires them; an emulator does not).
///
/// # Errors
/// The first [`Failure`] of the services involved.
pub async fn bootstrap(clients: &AwsClients) -> Result<BootstrapReport, Failure> {
    let config = clients.config();
    clients.create_table().await?;
    create_bucket(clients).await?;
    let mut platform_applications = Vec::new();
    for platform in [Platform::Apns, Platform::ApnsSandbox, Platform::Fcm] {
        if config.platform_arn(platform).is_some() {
            continue;
        }
        let name = format!("{}-{}", config.table, platform.as_str().replace('_', "-"));
        let credentials = config
            .sns_platform_credentials
            .get(&platform)
            .cloned()
            .unwrap_or_default();
        let arn = ensure_platform_application(&clients.sns(), platform, &name, &credentials).await?;
        platform_applications.push((platform, arn));
    }
    Ok(BootstrapReport {
        table: config.table.clone(),
        bucket: config.bucket.clone(),
        platform_applications,
    })
}

async fn create_bucket(clients: &AwsClients) -> Result<(), Failure> {
    let bucket = &clients.config().bucket;
    let mut request = clients.s3().create_bucket().bucket(bucket);
    // Outside us-east-1, S3 wants the region named in the request.
    if let Some(region) = clients.region().filter(|r| r != "us-east-1") {
        let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
            .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region.as_str()))
            .build();
        request = request.create_bucket_configuration(location);
    }
    match request.send().await {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(context)) if context.err().is_bucket_already_owned_by_you() => Ok(()),
        Err(error) => Err(sdk_failure("CreateBucket", &error)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[tokio::test]
    async fn the_environments_region_and_credentials_are_the_clients() {
        use aws_sdk_dynamodb::config::ProvideCredentials as _;

        let config = AwsConfig::from_vars(vars(&[
            ("ROOKERY_TABLE", "t"),
            ("ROOKERY_BUCKET", "b"),
            ("AWS_REGION", "ap-southeast-2"),
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ACCOUNT_ID", "123456789012"),
        ]))
        .unwrap();
        let sdk = with_identity(aws_config::defaults(BehaviorVersion::latest()), &config.identity)
            .load()
            .await;
        assert_eq!(sdk.region().map(ToString::to_string).as_deref(), Some("ap-southeast-2"));
        let provider = sdk.credentials_provider().unwrap();
        let credentials = provider.provide_credentials().await.unwrap();
        assert_eq!(credentials.access_key_id(), "AKIAEXAMPLE");
        assert_eq!(credentials.secret_access_key(), "secret");
        assert_eq!(credentials.session_token(), None);
        assert_eq!(credentials.account_id().map(|id| id.as_str()), Some("123456789012"));
    }
}
