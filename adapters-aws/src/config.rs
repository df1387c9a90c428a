//! Configuration of the AWS adapters: the standard AWS environment plus Rookery's own `ROOKERY_*` variables.
//!
//! [`AwsConfig::from_env`] reads everything once, in the composition root, and reports every missing or
//! malformed variable at once (a deployment fails with one complete message, not one per restart).
//! It is the only place this crate reads the environment: everything after it takes values from the
//! [`AwsConfig`], and tests give [`AwsConfig::from_vars`] a map instead.
//! [`AwsClients::load`] turns it into SDK clients: region and credentials the environment names are
//! used as read (see [`EnvironmentIdentity`]); anything else comes from the SDK's own chain
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`, profiles, roles), unless an [`Emulator`] is named,
//! as the tests do. [`bootstrap`] creates the table, bucket and SNS applications.

use std::collections::BTreeMap;
use std::fmt;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::error::SdkError;
use rookery_domain::Platform;
use rookery_ports::Failure;

use crate::cloudsearch::CloudSearchIndex;
use crate::dynamo::{DynamoStore, create_table};
use crate::error::{RetryPolicy, sdk_failure};
pub use crate::s3::CloudFrontConfig;
use crate::s3::{CloudFrontSigner, S3MediaStore};
pub use crate::sns::PlatformCredentials;
use crate::sns::{SnsPushGateway, ensure_platform_application};
use crate::streams::StreamPoller;

/// Which search index the deployment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchBackend {
    /// The in-memory index (one process; rebuilt from the log at start).
    #[default]
    Memory,
    /// Amazon CloudSearch, through its document and search endpoints.
    CloudSearch,
}

/// A local emulator (moto) to talk to instead of AWS: fixed test credentials, `us-east-1`, SDK retries off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emulator {
    /// Its base URL, e.g. `http://127.0.0.1:5000`.
    pub endpoint_url: String,
}

/// Everything the AWS adapters need to know.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    /// The events table (`ROOKERY_TABLE`).
    pub table: String,
    /// The media bucket (`ROOKERY_BUCKET`).
    pub bucket: String,
    /// SNS platform application for APNs production (`ROOKERY_SNS_APNS_ARN`).
    pub sns_apns_arn: Option<String>,
    /// SNS platform application for the APNs sandbox (`ROOKERY_SNS_APNS_SANDBOX_ARN`).
    pub sns_apns_sandbox_arn: Option<String>,
    /// SNS platform application for FCM (`ROOKERY_SNS_FCM_ARN`).
    pub sns_fcm_arn: Option<String>,
    /// What [`bootstrap`] creates a platform application with, for platforms without an ARN
    /// (`ROOKERY_SNS_<PLATFORM>_CREDENTIAL` and `_PRINCIPAL`, `<PLATFORM>` being `APNS`, `APNS_SANDBOX` or `FCM`).
    pub sns_platform_credentials: BTreeMap<Platform, PlatformCredentials>,
    /// Which search index (`ROOKERY_SEARCH=memory|cloudsearch`).
    pub search: SearchBackend,
    /// CloudSearch document endpoint (`ROOKERY_CLOUDSEARCH_DOC_ENDPOINT`), required with `cloudsearch`.
    pub cloudsearch_doc_endpoint: Option<String>,
    /// CloudSearch search endpoint (`ROOKERY_CLOUDSEARCH_SEARCH_ENDPOINT`), required with `cloudsearch`.
    pub cloudsearch_search_endpoint: Option<String>,
    /// Cognito user pool id (`ROOKERY_COGNITO_POOL_ID`), for the token verifier.
    pub cognito_pool_id: Option<String>,
    /// Cognito app client id (`ROOKERY_COGNITO_CLIENT_ID`), for the token verifier.
    pub cognito_client_id: Option<String>,
    /// Where the pool's JWKS is (`ROOKERY_COGNITO_JWKS_URL`); derived from region and pool id when absent.
    pub cognito_jwks_url: Option<String>,
    /// CloudFront signing (`ROOKERY_CLOUDFRONT_DOMAIN`, `_KEY_PAIR_ID`, `_PRIVATE_KEY` or `_PRIVATE_KEY_FILE`).
    pub cloudfront: Option<CloudFrontConfig>,
    /// Path-style S3 URLs (`ROOKERY_S3_FORCE_PATH_STYLE=true`), needed by moto.
    pub s3_force_path_style: bool,
    /// The region and credentials the AWS environment names (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
    pub identity: EnvironmentIdentity,
    /// Talk to an emulator instead of AWS (never read from the environment).
    pub emulator: Option<Emulator>,
    /// How the adapters retry transient failures.
    pub retry: RetryPolicy,
}

/// Every problem found in the environment, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid AWS configuration: {}", problems.join("; "))]
pub struct ConfigError {
    /// One line per missing or malformed variable.
    pub problems: Vec<String>,
}

fn is_url(value: &str) -> bool {
    value.starts_with("https://") || value.starts_with("http://")
}

impl AwsConfig {
    /// A configuration with only the table and bucket set: everything else off or default.
    pub fn new(table: impl Into<String>, bucket: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            bucket: bucket.into(),
            sns_apns_arn: None,
            sns_apns_sandbox_arn: None,
            sns_fcm_arn: None,
            sns_platform_credentials: BTreeMap::new(),
            search: SearchBackend::Memory,
            cloudsearch_doc_endpoint: None,
            cloudsearch_search_endpoint: None,
            cognito_pool_id: None,
            cognito_client_id: None,
            cognito_jwks_url: None,
            cloudfront: None,
            s3_force_path_style: false,
            identity: EnvironmentIdentity::default(),
            emulator: None,
            retry: RetryPolicy::default(),
        }
    }

    /// The same configuration pointed at an emulator: path-style S3 and no retries, so tests see every failure.
    #[must_use]
    pub fn with_emulator(mut self, endpoint_url: impl Into<String>) -> Self {
        self.emulator = Some(Emulator {
            endpoint_url: endpoint_url.into(),
        });
        self.s3_force_path_style = true;
        self.retry = RetryPolicy::none();
        self
    }

    /// Reads the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] listing every missing or malformed variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `var` (the environment, or a map in tests).
    ///
    /// # Errors
    /// [`ConfigError`] listing every missing or malformed variable.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let mut required = |name: &str| {
            get(name).unwrap_or_else(|| {
                problems.push(format!("{name} is not set"));
                String::new()
            })
        };
        let table = required("ROOKERY_TABLE");
        let bucket = required("ROOKERY_BUCKET");
        let mut config = Self::new(table, bucket);

        for (name, slot) in [
            ("ROOKERY_SNS_APNS_ARN", &mut config.sns_apns_arn),
            ("ROOKERY_SNS_APNS_SANDBOX_ARN", &mut config.sns_apns_sandbox_arn),
            ("ROOKERY_SNS_FCM_ARN", &mut config.sns_fcm_arn),
        ] {
            *slot = get(name);
            if slot.as_deref().is_some_and(|arn| !arn.starts_with("arn:")) {
                problems.push(format!("{name} must be an ARN (arn:aws:sns:...)"));
            }
        }
        for platform in [Platform::Apns, Platform::ApnsSandbox, Platform::Fcm] {
            let upper = platform.as_str().to_ascii_uppercase();
            let credentials = PlatformCredentials {
                credential: get(&format!("ROOKERY_SNS_{upper}_CREDENTIAL")),
                principal: get(&format!("ROOKERY_SNS_{upper}_PRINCIPAL")),
            };
            if credentials != PlatformCredentials::default() {
                config.sns_platform_credentials.insert(platform, credentials);
            }
        }

        config.search = match get("ROOKERY_SEARCH").as_deref() {
            None | Some("memory") => SearchBackend::Memory,
            Some("cloudsearch") => SearchBackend::CloudSearch,
            Some(other) => {
                problems.push(format!("ROOKERY_SEARCH must be memory or cloudsearch, not {other:?}"));
                SearchBackend::Memory
            }
        };
        for (name, slot) in [
            ("ROOKERY_CLOUDSEARCH_DOC_ENDPOINT", &mut config.cloudsearch_doc_endpoint),
            (
                "ROOKERY_CLOUDSEARCH_SEARCH_ENDPOINT",
                &mut config.cloudsearch_search_endpoint,
            ),
        ] {
            *slot = get(name);
            match slot.as_deref() {
                Some(url) if !is_url(url) => problems.push(format!("{name} must be an http(s) URL")),
                None if config.search == SearchBackend::CloudSearch => {
                    problems.push(format!("{name} is required with ROOKERY_SEARCH=cloudsearch"));
                }
                _ => {}
            }
        }

        config.cognito_pool_id = get("ROOKERY_COGNITO_POOL_ID");
        config.cognito_client_id = get("ROOKERY_COGNITO_CLIENT_ID");
        config.cognito_jwks_url = get("ROOKERY_COGNITO_JWKS_URL");
        if config.cognito_jwks_url.as_deref().is_some_and(|url| !is_url(url)) {
            problems.push("ROOKERY_COGNITO_JWKS_URL must be an http(s) URL".into());
        }
        if config.cognito_pool_id.as_deref().is_some_and(|id| !id.contains('_')) {
            problems.push("ROOKERY_COGNITO_POOL_ID must look like <region>_<id>".into());
        }

        config.cloudfront = cloudfront_from(&get, &mut problems);
        config.identity = EnvironmentIdentity::from_vars(&get);

        config.s3_force_path_style = match get("ROOKERY_S3_FORCE_PATH_STYLE").as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                problems.push(format!(
                    "ROOKERY_S3_FORCE_PATH_STYLE must be true or false, not {other:?}"
                ));
                false
            }
        };

        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The SNS platform application configured for `platform`.
    pub fn platform_arn(&self, platform: Platform) -> Option<&str> {
        match platform {
            Platform::Apns => self.sns_apns_arn.as_deref(),
            Platform::ApnsSandbox => self.sns_apns_sandbox_arn.as_deref(),
            Platform::Fcm => self.sns_fcm_arn.as_deref(),
        }
    }
}

fn cloudfront_from(get: &impl Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Option<CloudFrontConfig> {
    let domain = get("ROOKERY_CLOUDFRONT_DOMAIN");
    let key_pair_id = get("ROOKERY_CLOUDFRONT_KEY_PAIR_ID");
    let key = match (
        get("ROOKERY_CLOUDFRONT_PRIVATE_KEY"),
        get("ROOKERY_CLOUDFRONT_PRIVATE_KEY_FILE"),
    ) {
        (Some(pem), _) => Some(pem.replace("\\n", "\n")),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(pem) => Some(pem),
            Err(error) => {
                problems.push(format!("ROOKERY_CLOUDFRONT_PRIVATE_KEY_FILE {path}: {error}"));
                None
            }
        },
        (None, None) => None,
    };
    match (domain, key_pair_id, key) {
        (None, None, None) => None,
        (Some(domain), Some(key_pair_id), Some(private_key_pem)) => {
            let config = CloudFrontConfig {
                domain,
                key_pair_id,
                private_key_pem,
            };
            if let Err(error) = CloudFrontSigner::new(&config) {
                problems.push(format!("ROOKERY_CLOUDFRONT_PRIVATE_KEY: {error}"));
            }
            Some(config)
        }
        (domain, key_pair_id, key) => {
            for (name, missing) in [
                ("ROOKERY_CLOUDFRONT_DOMAIN", domain.is_none()),
                ("ROOKERY_CLOUDFRONT_KEY_PAIR_ID", key_pair_id.is_none()),
                ("ROOKERY_CLOUDFRONT_PRIVATE_KEY (or _FILE)", key.is_none()),
            ] {
                if missing {
                    problems.push(format!(
                        "{name} is required when any ROOKERY_CLOUDFRONT_* variable is set"
                    ));
                }
            }
            None
        }
    }
}

/// What the environment already says of the region and credentials the SDK would otherwise find
/// through its default chains.
///
/// Both chains look at the environment first and stop there when it answers: `AWS_REGION` for the
/// region, `AWS_ACCESS_KEY_ID` with `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) for the
/// credentials, which is where the Lambda runtime puts the function's role. Building a chain still
/// builds every later link of it (the profile files' providers, web identity with an STS client of
/// its own, the container provider, and an IMDS client for each of region and credentials), which
/// costs a function instance part of its cold start and is never used. Naming the environment's
/// answers directly gives the same region and the same credentials without building the rest.
/// They are read once, by [`AwsConfig::from_env`], like every other variable: a process's environment
/// does not change under it, so the SDK's environment provider would read the same values again.
/// When the environment does not answer (SnapStart, ECS, a workstation profile), the chains are built as before.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvironmentIdentity {
    /// `AWS_REGION`, when set.
    pub region: Option<String>,
    /// `AWS_ACCESS_KEY_ID` with `AWS_SECRET_ACCESS_KEY`, when both are set.
    pub credentials: Option<EnvironmentCredentials>,
}

/// Static credentials as the environment holds them (on Lambda, the function role's session).
#[derive(Clone, PartialEq, Eq)]
pub struct EnvironmentCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
    /// `AWS_ACCOUNT_ID`, which lets DynamoDB use its account-based endpoints.
    pub account_id: Option<String>,
}

impl fmt::Debug for EnvironmentCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key id names the credentials; the secret and the session token never reach a log.
        f.debug_struct("EnvironmentCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// The name the SDK reports for credentials that came from the environment.
const ENVIRONMENT_PROVIDER: &str = "EnvironmentVariable";

impl EnvironmentIdentity {
    /// Reads the identity through `get`, which answers only set, non-blank variables.
    fn from_vars(get: &impl Fn(&str) -> Option<String>) -> Self {
        let credentials = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Some(EnvironmentCredentials {
                access_key_id,
                secret_access_key,
                session_token: get("AWS_SESSION_TOKEN"),
                account_id: get("AWS_ACCOUNT_ID"),
            }),
            // A key id without its secret is left to the SDK's chains to judge.
            _ => None,
        };
        Self {
            region: get("AWS_REGION"),
            credentials,
        }
    }

    fn apply(&self, mut loader: ConfigLoader) -> ConfigLoader {
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(credentials) = &self.credentials {
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
            loader = config.identity.apply(loader);
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

    fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    fn s3(&self) -> aws_sdk_s3::Client {
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

    /// The CloudSearch index, when `ROOKERY_SEARCH=cloudsearch`.
    pub fn search_index(&self) -> Option<CloudSearchIndex> {
        if self.config.search != SearchBackend::CloudSearch {
            return None;
        }
        let doc = self.config.cloudsearch_doc_endpoint.as_deref()?;
        let search = self.config.cloudsearch_search_endpoint.as_deref()?;
        Some(CloudSearchIndex::new(&self.sdk, doc, search).with_retry(self.config.retry))
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

    #[test]
    fn every_problem_is_reported_at_once() {
        let error = AwsConfig::from_vars(vars(&[
            ("ROOKERY_SEARCH", "elastic"),
            ("ROOKERY_SNS_FCM_ARN", "not-an-arn"),
            ("ROOKERY_CLOUDFRONT_DOMAIN", "d1.cloudfront.net"),
            ("ROOKERY_S3_FORCE_PATH_STYLE", "maybe"),
        ]))
        .unwrap_err();
        let text = error.to_string();
        for expected in [
            "ROOKERY_TABLE is not set",
            "ROOKERY_BUCKET is not set",
            "ROOKERY_SEARCH must be memory or cloudsearch",
            "ROOKERY_SNS_FCM_ARN must be an ARN",
            "ROOKERY_CLOUDFRONT_KEY_PAIR_ID is required",
            "ROOKERY_CLOUDFRONT_PRIVATE_KEY (or _FILE) is required",
            "ROOKERY_S3_FORCE_PATH_STYLE must be true or false",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
        assert_eq!(error.problems.len(), 7, "{text}");
    }

    fn identity_of(pairs: &[(&str, &str)]) -> EnvironmentIdentity {
        let mut all = vec![("ROOKERY_TABLE", "t"), ("ROOKERY_BUCKET", "b")];
        all.extend_from_slice(pairs);
        AwsConfig::from_vars(vars(&all)).unwrap().identity
    }

    #[test]
    fn the_environment_names_the_identity_only_when_it_holds_all_of_it() {
        let lambda = identity_of(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ]);
        assert_eq!(
            lambda,
            EnvironmentIdentity {
                region: Some("eu-west-1".into()),
                credentials: Some(EnvironmentCredentials {
                    access_key_id: "ASIAEXAMPLE".into(),
                    secret_access_key: "secret".into(),
                    session_token: Some("token".into()),
                    account_id: None,
                }),
            }
        );
        // A key id without its secret, or blank values, are left to the SDK's chains to judge.
        let partial = identity_of(&[("AWS_REGION", " "), ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE")]);
        assert_eq!(partial, EnvironmentIdentity::default());
    }

    #[test]
    fn the_environments_secrets_never_reach_a_log() {
        let config = AwsConfig::from_vars(vars(&[
            ("ROOKERY_TABLE", "t"),
            ("ROOKERY_BUCKET", "b"),
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
            ("AWS_SESSION_TOKEN", "session-secret"),
            ("ROOKERY_SNS_FCM_CREDENTIAL", "fcm-secret"),
        ]))
        .unwrap();
        let logged = format!("{config:?}");
        assert!(logged.contains("ASIAEXAMPLE"), "{logged}");
        for secret in ["very-secret", "session-secret", "fcm-secret"] {
            assert!(!logged.contains(secret), "{secret} in {logged}");
        }
    }

    #[tokio::test]
    async fn the_environments_region_and_credentials_are_the_clients() {
        use aws_sdk_dynamodb::config::ProvideCredentials as _;

        let identity = identity_of(&[
            ("AWS_REGION", "ap-southeast-2"),
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ACCOUNT_ID", "123456789012"),
        ]);
        let sdk = identity
            .apply(aws_config::defaults(BehaviorVersion::latest()))
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

    #[test]
    fn sns_platform_credentials_are_read_per_platform() {
        let config = AwsConfig::from_vars(vars(&[
            ("ROOKERY_TABLE", "t"),
            ("ROOKERY_BUCKET", "b"),
            ("ROOKERY_SNS_APNS_SANDBOX_CREDENTIAL", "apns-key"),
            ("ROOKERY_SNS_APNS_SANDBOX_PRINCIPAL", "KEYID"),
            ("ROOKERY_SNS_FCM_CREDENTIAL", "fcm-key"),
        ]))
        .unwrap();
        assert_eq!(
            config.sns_platform_credentials,
            BTreeMap::from([
                (
                    Platform::ApnsSandbox,
                    PlatformCredentials {
                        credential: Some("apns-key".into()),
                        principal: Some("KEYID".into()),
                    }
                ),
                (
                    Platform::Fcm,
                    PlatformCredentials {
                        credential: Some("fcm-key".into()),
                        principal: None,
                    }
                ),
            ])
        );
    }

    #[test]
    fn cloudsearch_needs_both_endpoints() {
        let error = AwsConfig::from_vars(vars(&[
            ("ROOKERY_TABLE", "t"),
            ("ROOKERY_BUCKET", "b"),
            ("ROOKERY_SEARCH", "cloudsearch"),
            ("ROOKERY_CLOUDSEARCH_DOC_ENDPOINT", "doc.example"),
        ]))
        .unwrap_err();
        assert_eq!(error.problems.len(), 2, "{error}");
        assert!(error.problems[0].contains("DOC_ENDPOINT must be an http(s) URL"));
        assert!(error.problems[1].contains("SEARCH_ENDPOINT is required"));
    }

    #[test]
    fn a_complete_environment_is_read() {
        let config = AwsConfig::from_vars(vars(&[
            ("ROOKERY_TABLE", "events"),
            ("ROOKERY_BUCKET", "media"),
            ("ROOKERY_SEARCH", "cloudsearch"),
            (
                "ROOKERY_CLOUDSEARCH_DOC_ENDPOINT",
                "https://doc-x.us-east-1.cloudsearch.amazonaws.com",
            ),
            (
                "ROOKERY_CLOUDSEARCH_SEARCH_ENDPOINT",
                "https://search-x.us-east-1.cloudsearch.amazonaws.com",
            ),
            ("ROOKERY_SNS_APNS_ARN", "arn:aws:sns:us-east-1:1:app/APNS/a"),
            ("ROOKERY_COGNITO_POOL_ID", "us-east-1_abc"),
            ("ROOKERY_COGNITO_CLIENT_ID", "client"),
            ("ROOKERY_S3_FORCE_PATH_STYLE", "true"),
        ]))
        .unwrap();
        assert_eq!((config.table.as_str(), config.bucket.as_str()), ("events", "media"));
        assert_eq!(config.search, SearchBackend::CloudSearch);
        assert_eq!(
            config.platform_arn(Platform::Apns),
            Some("arn:aws:sns:us-east-1:1:app/APNS/a")
        );
        assert_eq!(config.platform_arn(Platform::Fcm), None);
        assert!(config.s3_force_path_style);
        assert_eq!(config.cognito_pool_id.as_deref(), Some("us-east-1_abc"));
        assert_eq!(config.cloudfront, None);
    }
}
