//! Start-up of a function instance: what happens before the first invocation, and what happens when
//! the instance cannot start.
//!
//! A function whose configuration is wrong must say so where Lambda shows it: the error goes to the
//! Runtime API's `/runtime/init/error` (so the invocation fails with `Runtime.InitError` and the
//! message), and to the logs, before the process exits. Retrying a broken configuration on every
//! invocation would only hide it.

use std::fmt::Display;

use lambda_runtime::Diagnostic;
use lambda_runtime_api_client::{Client, build_request};
use serde_json::json;

/// The Runtime API path where an instance reports that it cannot start.
pub const INIT_ERROR_PATH: &str = "/2018-06-01/runtime/init/error";

/// The `errorType` of a start-up failure caused by configuration.
pub const CONFIG_ERROR_TYPE: &str = "Rookery.ConfigError";

/// Why reporting the start-up failure itself failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `AWS_LAMBDA_RUNTIME_API` is not a usable address.
    #[error("AWS_LAMBDA_RUNTIME_API {0:?} is not a host:port")]
    Address(String),
    /// The request could not be built or sent.
    #[error("could not reach the Runtime API: {0}")]
    Send(String),
}

/// Logs `error` and reports it to the Runtime API at `runtime_api` (the value of `AWS_LAMBDA_RUNTIME_API`).
///
/// # Errors
/// [`ReportError`] when the Runtime API cannot be told; the caller exits anyway.
pub async fn report_init_error(runtime_api: &str, error_type: &str, error: &dyn Display) -> Result<(), ReportError> {
    let message = error.to_string();
    tracing::error!(error_type, error = %message, "function cannot start");
    let diagnostic = Diagnostic {
        error_type: error_type.to_owned(),
        error_message: message,
    };
    let endpoint = format!("http://{runtime_api}")
        .parse()
        .map_err(|_| ReportError::Address(runtime_api.to_owned()))?;
    let client = Client::builder()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| ReportError::Send(e.to_string()))?;
    let body = json!({ "errorType": diagnostic.error_type, "errorMessage": diagnostic.error_message }).to_string();
    let request = build_request()
        .method("POST")
        .uri(INIT_ERROR_PATH)
        .header("lambda-runtime-function-error-type", error_type)
        .header("content-type", "application/json")
        .body(body.into())
        .map_err(|e| ReportError::Send(e.to_string()))?;
    client
        .call(request)
        .await
        .map(|_| ())
        .map_err(|e| ReportError::Send(e.to_string()))
}

/// Ends a function instance that cannot start: reports `error` (see [`report_init_error`]) and
/// returns the process exit code to use.
pub async fn fail(error: &dyn Display) -> std::process::ExitCode {
    match std::env::var("AWS_LAMBDA_RUNTIME_API") {
        Ok(api) => {
            if let Err(report) = report_init_error(&api, CONFIG_ERROR_TYPE, error).await {
                tracing::error!(error = %report, "could not report the start-up failure");
            }
        }
        Err(_) => tracing::error!(error = %error, "function cannot start (not running under Lambda)"),
    }
    std::process::ExitCode::FAILURE
}
