//! What the AWS adapters are configured with, and reading it from the environment once.
//!
//! [`AwsConfig::from_vars`] is the only code in this crate that looks at environment variables
//! (through the function it is given), and reports every problem it finds at once.

use std::collections::BTreeMap;
use std::fmt;

use rookery_domain::Platform;

use crate::error::RetryPolicy;
use crate::opensearch::{OpenSearchService, valid_alias};
use crate::s3::{CloudFrontConfig, CloudFrontSigner};
use crate::sns::PlatformCredentials;

/// Which search index the deployment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchBackend {
    /// The in-memory index (one process; rebuilt from the log at start).
    #[default]
    Memory,
    /// Amazon CloudSearch, through its document and search endpoints.
    CloudSearch,
    /// An Amazon OpenSearch Service domain or an OpenSearch Serverless collection, through its endpoint.
    OpenSearch,
}

/// The alias the OpenSearch index is written and searched through, unless `ROOKERY_OPENSEARCH_INDEX` names another.
pub const DEFAULT_OPENSEARCH_INDEX: &str = "rookery-items";

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
    /// What [`bootstrap`](super::bootstrap) creates a platform application with, for platforms without an ARN
    /// (`ROOKERY_SNS_<PLATFORM>_CREDENTIAL` and `_PRINCIPAL`, `<PLATFORM>` being `APNS`, `APNS_SANDBOX` or `FCM`).
    pub sns_platform_credentials: BTreeMap<Platform, PlatformCredentials>,
    /// Which search index (`ROOKERY_SEARCH=memory|cloudsearch|opensearch`).
    pub search: SearchBackend,
    /// The OpenSearch domain's or collection's endpoint (`ROOKERY_OPENSEARCH_ENDPOINT`), required with `opensearch`.
    pub opensearch_endpoint: Option<String>,
    /// A domain (`es`, the default) or a Serverless collection (`aoss`) (`ROOKERY_OPENSEARCH_SERVICE`).
    pub opensearch_service: OpenSearchService,
    /// The alias the index is used through (`ROOKERY_OPENSEARCH_INDEX`, default [`DEFAULT_OPENSEARCH_INDEX`]).
    pub opensearch_index: String,
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
            opensearch_endpoint: None,
            opensearch_service: OpenSearchService::Domain,
            opensearch_index: DEFAULT_OPENSEARCH_INDEX.to_owned(),
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
            Some("opensearch") => SearchBackend::OpenSearch,
            Some(other) => {
                problems.push(format!(
                    "ROOKERY_SEARCH must be memory, cloudsearch or opensearch, not {other:?}"
                ));
                SearchBackend::Memory
            }
        };
        config.opensearch_endpoint = get("ROOKERY_OPENSEARCH_ENDPOINT").map(|url| url.trim_end_matches('/').to_owned());
        match config.opensearch_endpoint.as_deref() {
            Some(url) if !is_url(url) || url.split("://").nth(1).is_some_and(|rest| rest.contains('/')) => {
                problems.push("ROOKERY_OPENSEARCH_ENDPOINT must be an http(s) URL without a path".into());
            }
            None if config.search == SearchBackend::OpenSearch => {
                problems.push("ROOKERY_OPENSEARCH_ENDPOINT is required with ROOKERY_SEARCH=opensearch".into());
            }
            _ => {}
        }
        config.opensearch_service = match get("ROOKERY_OPENSEARCH_SERVICE").as_deref() {
            None => OpenSearchService::Domain,
            Some(name) => OpenSearchService::parse(name).unwrap_or_else(|| {
                problems.push(format!(
                    "ROOKERY_OPENSEARCH_SERVICE must be es (a domain) or aoss (a Serverless collection), not {name:?}"
                ));
                OpenSearchService::Domain
            }),
        };
        if let Some(alias) = get("ROOKERY_OPENSEARCH_INDEX") {
            if !valid_alias(&alias) {
                problems.push(format!(
                    "ROOKERY_OPENSEARCH_INDEX must be 1 to 200 of a-z, 0-9, - and _, not starting with - or _, not {alias:?}"
                ));
            }
            config.opensearch_index = alias;
        }
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
            "ROOKERY_SEARCH must be memory, cloudsearch or opensearch",
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
    fn opensearch_needs_an_endpoint_and_knows_its_two_services() {
        let error = AwsConfig::from_vars(vars(&[
            ("ROOKERY_TABLE", "t"),
            ("ROOKERY_BUCKET", "b"),
            ("ROOKERY_SEARCH", "opensearch"),
            ("ROOKERY_OPENSEARCH_SERVICE", "lambda"),
            ("ROOKERY_OPENSEARCH_INDEX", "Items!"),
        ]))
        .unwrap_err();
        assert_eq!(error.problems.len(), 3, "{error}");
        assert!(error.problems[0].contains("ROOKERY_OPENSEARCH_ENDPOINT is required"));
        assert!(error.problems[1].contains("must be es (a domain) or aoss"));
        assert!(error.problems[2].contains("ROOKERY_OPENSEARCH_INDEX must be"));

        let bad_url = AwsConfig::from_vars(vars(&[
            ("ROOKERY_TABLE", "t"),
            ("ROOKERY_BUCKET", "b"),
            ("ROOKERY_OPENSEARCH_ENDPOINT", "https://search-x.es.amazonaws.com/items"),
        ]))
        .unwrap_err();
        assert!(bad_url.problems[0].contains("without a path"), "{bad_url}");

        let serverless = AwsConfig::from_vars(vars(&[
            ("ROOKERY_TABLE", "t"),
            ("ROOKERY_BUCKET", "b"),
            ("ROOKERY_SEARCH", "opensearch"),
            (
                "ROOKERY_OPENSEARCH_ENDPOINT",
                "https://abc.us-east-1.aoss.amazonaws.com/",
            ),
            ("ROOKERY_OPENSEARCH_SERVICE", "aoss"),
        ]))
        .unwrap();
        assert_eq!(serverless.search, SearchBackend::OpenSearch);
        assert_eq!(
            serverless.opensearch_endpoint.as_deref(),
            Some("https://abc.us-east-1.aoss.amazonaws.com")
        );
        assert_eq!(serverless.opensearch_service, OpenSearchService::Serverless);
        assert_eq!(serverless.opensearch_index, DEFAULT_OPENSEARCH_INDEX);

        let domain = AwsConfig::from_vars(vars(&[
            ("ROOKERY_TABLE", "t"),
            ("ROOKERY_BUCKET", "b"),
            ("ROOKERY_SEARCH", "opensearch"),
            (
                "ROOKERY_OPENSEARCH_ENDPOINT",
                "https://search-x.eu-west-1.es.amazonaws.com",
            ),
            ("ROOKERY_OPENSEARCH_INDEX", "prod-items"),
        ]))
        .unwrap();
        assert_eq!(
            domain.opensearch_service,
            OpenSearchService::Domain,
            "es is the default"
        );
        assert_eq!(domain.opensearch_index, "prod-items");
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
