//! The `rookery` binary on AWS services: `rookery serve --backend aws` and `rookery aws bootstrap`.
//!
//! [`serve`] runs the one router in a single process over the AWS adapters (DynamoDB, S3, SNS, Cognito,
//! and OpenSearch, CloudSearch or an in-process index), with DynamoDB Streams pollers doing what
//! functions 2 and 4 do on Lambda. It is meant for a laptop against an emulator (moto) and for a long-running host on AWS.
//! [`bootstrap`] creates what it needs (table and stream, bucket, SNS platform applications) and prints
//! the variables to export. Settings are read through a lookup function (the process environment in
//! the binary, a map in tests), and every problem is reported at once.

pub mod bootstrap;
pub mod reindex;
pub mod serve;

use rookery_adapters_aws::config::{AwsClients, AwsConfig, ConfigError};

pub use bootstrap::{BootstrapError, platform_variable, render_report, run_bootstrap};
pub use serve::{AwsServeConfig, AwsServer, AwsStartError, ServeOptions};

/// The problem reported when the AWS SDK finds no region.
pub const NO_REGION: &str = "no AWS region: set AWS_REGION (or use a profile that has one)";

/// Reads the AWS configuration through `var`, adding its problems to `problems` (the caller's own
/// findings, listed first). With problems, the configuration returned is a placeholder.
pub fn config_from_vars(var: &impl Fn(&str) -> Option<String>, mut problems: Vec<String>) -> (AwsConfig, Vec<String>) {
    match AwsConfig::from_vars(var) {
        Ok(config) => (config, problems),
        Err(error) => {
            problems.extend(error.problems);
            (AwsConfig::new("", ""), problems)
        }
    }
}

/// Loads the SDK clients for `config` and checks that a region is known, reporting it with `problems`.
///
/// The region, credentials and endpoint come from the AWS SDK's own chain (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, profiles), which reads the process environment.
///
/// # Errors
/// [`ConfigError`] listing every problem.
pub async fn load_clients(config: AwsConfig, mut problems: Vec<String>) -> Result<AwsClients, ConfigError> {
    // The clients are loaded even when the variables are wrong, so a missing region is reported with them.
    let clients = AwsClients::load(config).await;
    if clients.region().is_none() {
        problems.push(NO_REGION.to_owned());
    }
    if problems.is_empty() {
        Ok(clients)
    } else {
        Err(ConfigError { problems })
    }
}
