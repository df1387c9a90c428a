//! Lambda function 1: the items, users, sync, devices, media and account routes of the HTTP API (and
//! the health check and OpenAPI document), answered by the contract's router over the AWS adapters.
//!
//! Everything is built once per cold start, here; each invocation only runs the router.

use std::process::ExitCode;

use rookery_entrypoints::Api;
use rookery_entrypoints::http::openapi_routes;
use rookery_entrypoints::lambda::compose::{Aws, ComposeError, api_config};
use rookery_entrypoints::lambda::{ApiHandler, Function, logging, runtime, startup};

async fn compose() -> Result<ApiHandler, ComposeError> {
    let aws = Aws::from_env().await?;
    let config = api_config(std::env::var("ROOKERY_RATE_LIMIT").ok().as_deref())?;
    // Only this function's routes, so that the binary holds no code of the others (decision 0004).
    // An erased user's token answers `410 account_erased` on every route (one marker read per request).
    let router = Api::new(aws.verifier()?, config)
        .refusing_erased(aws.event_store())
        .merge_authenticated(aws.items_function()?)
        .merge_public(openapi_routes())
        .into_router();
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
