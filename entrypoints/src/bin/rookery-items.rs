//! Lambda function 1: the items, users, sync, devices and media routes of the HTTP API (and the
//! health check and OpenAPI document), answered by the contract's router over the AWS adapters.
//!
//! Everything is built once per cold start, here; each invocation only runs the router.

use std::process::ExitCode;

use rookery_entrypoints::lambda::compose::{Aws, ComposeError, api_config};
use rookery_entrypoints::lambda::{ApiHandler, Function, logging, runtime, startup};
use rookery_entrypoints::router;

async fn compose() -> Result<ApiHandler, ComposeError> {
    let aws = Aws::from_env().await?;
    let config = api_config(std::env::var("ROOKERY_RATE_LIMIT").ok().as_deref())?;
    let router = router(aws.app()?, aws.verifier()?, config);
    Ok(ApiHandler::new(router, Function::Items))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    logging::init();
    match compose().await {
        Ok(handler) => runtime::exit_code(runtime::serve_api(handler).await),
        Err(error) => startup::fail(&error).await,
    }
}
