//! `rookery aws bootstrap`: creates, idempotently, what `rookery serve --backend aws` needs on the
//! configured AWS endpoint (AWS itself, or an emulator named by `AWS_ENDPOINT_URL`), and prints it.
//!
//! It makes the events table with its stream, the media bucket, and one SNS platform application per
//! platform whose `ROOKERY_SNS_*_ARN` is not set (named `<table>-<platform>`, found again on a second
//! run). Every line it prints is either a shell comment or an `export` of an ARN, so
//! `eval "$(rookery aws bootstrap)"` configures the shell for `serve`.

use std::fmt::Write as _;

use rookery_adapters_aws::config::{AwsClients, AwsConfig, ConfigError};
use rookery_adapters_aws::{BootstrapReport, bootstrap};
use rookery_domain::Platform;
use rookery_ports::Failure;

/// Why bootstrap did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Variables are missing or malformed; every problem is listed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An AWS service refused or could not be reached; what was made before it stays.
    #[error("bootstrap failed: {0}")]
    Aws(Failure),
}

/// The variable that names `platform`'s SNS platform application.
pub fn platform_variable(platform: Platform) -> &'static str {
    match platform {
        Platform::Apns => "ROOKERY_SNS_APNS_ARN",
        Platform::ApnsSandbox => "ROOKERY_SNS_APNS_SANDBOX_ARN",
        Platform::Fcm => "ROOKERY_SNS_FCM_ARN",
    }
}

/// Bootstraps with `clients` (see the module documentation) and returns the report.
///
/// # Errors
/// [`BootstrapError::Config`] when no region is known; [`BootstrapError::Aws`] with the first
/// failure of the services involved.
pub async fn run_bootstrap(clients: &AwsClients) -> Result<BootstrapReport, BootstrapError> {
    if clients.region().is_none() {
        return Err(ConfigError {
            problems: vec![super::NO_REGION.to_owned()],
        }
        .into());
    }
    bootstrap(clients).await.map_err(BootstrapError::Aws)
}

/// What bootstrap prints: comments saying what is ready, and an `export` line per platform application.
pub fn render_report(report: &BootstrapReport, config: &AwsConfig, region: Option<&str>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        out,
        "# rookery aws bootstrap, region {}: everything below exists now (made unless it was there already)",
        region.unwrap_or("unknown")
    );
    let _ = writeln!(
        out,
        "# DynamoDB table {} with its NEW_IMAGE stream: ready",
        report.table
    );
    let _ = writeln!(out, "# S3 bucket {}: ready", report.bucket);
    for platform in [Platform::Apns, Platform::ApnsSandbox, Platform::Fcm] {
        let variable = platform_variable(platform);
        let made = report
            .platform_applications
            .iter()
            .find(|(p, _)| *p == platform)
            .map(|(_, arn)| arn.as_str());
        match (made, config.platform_arn(platform)) {
            (Some(arn), _) => {
                let _ = writeln!(out, "# SNS platform application for {}: ready", platform.as_str());
                let _ = writeln!(out, "export {variable}={arn}");
            }
            (None, Some(arn)) => {
                let _ = writeln!(out, "# {variable} is set already ({arn}): nothing made for it");
            }
            (None, None) => {
                let _ = writeln!(out, "# no SNS platform application for {}", platform.as_str());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_comments_and_exports_only() {
        let mut config = AwsConfig::new("events", "media");
        config.sns_fcm_arn = Some("arn:aws:sns:us-east-1:1:app/GCM/mine".into());
        let report = BootstrapReport {
            table: "events".into(),
            bucket: "media".into(),
            platform_applications: vec![
                (Platform::Apns, "arn:aws:sns:us-east-1:1:app/APNS/events-apns".into()),
                (
                    Platform::ApnsSandbox,
                    "arn:aws:sns:us-east-1:1:app/APNS_SANDBOX/events-apns-sandbox".into(),
                ),
            ],
        };
        let text = render_report(&report, &config, Some("us-east-1"));
        assert!(
            text.lines().all(|l| l.starts_with("# ") || l.starts_with("export ")),
            "{text}"
        );
        assert!(text.contains("export ROOKERY_SNS_APNS_ARN=arn:aws:sns:us-east-1:1:app/APNS/events-apns\n"));
        assert!(text.contains("export ROOKERY_SNS_APNS_SANDBOX_ARN=arn:aws:sns:us-east-1:1:app/APNS_SANDBOX/"));
        assert!(text.contains("ROOKERY_SNS_FCM_ARN is set already"), "{text}");
        assert!(!text.contains("export ROOKERY_SNS_FCM_ARN"), "{text}");
        assert!(text.contains("table events") && text.contains("bucket media"), "{text}");
    }
}
