//! Configuration of the AWS adapters: the standard AWS environment plus Rookery's own `ROOKERY_*` variables.
//!
//! [`AwsConfig::from_env`] reads everything once, in the composition root, and reports every missing or
//! malformed variable at once (a deployment fails with one complete message, not one per restart).
//! It is the only code in this crate that reads environment variables: everything after it takes values
//! from the [`AwsConfig`], and tests give [`AwsConfig::from_vars`] a map instead.
//! [`AwsClients::load`] turns it into SDK clients: the region and credentials the environment named are
//! used as read (see [`EnvironmentIdentity`]); anything else comes from the SDK's own chain, which reads
//! its own variables (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`, profiles, roles), unless an
//! [`Emulator`] is named, as the tests do. [`bootstrap`] creates the table, bucket and SNS applications.
//!
//! `settings` holds [`AwsConfig`] and reads it; `clients` builds the clients, the adapters and the
//! bootstrap from it. Dependencies go one way: `clients` uses `settings`, both use the adapters, and no
//! adapter uses either.

mod clients;
mod settings;

pub use clients::{AwsClients, BootstrapReport, bootstrap};
pub use settings::{
    AwsConfig, ConfigError, DEFAULT_OPENSEARCH_INDEX, Emulator, EnvironmentCredentials, EnvironmentIdentity,
    SearchBackend,
};

pub use crate::opensearch::OpenSearchService;

pub use crate::s3::CloudFrontConfig;
pub use crate::sns::PlatformCredentials;
