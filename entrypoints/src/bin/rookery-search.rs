//! Lambda function 3: the search route of the HTTP API, answered by the contract's router over the
//! AWS adapters (the query goes to OpenSearch or CloudSearch; nothing is written).
//!
//! Everything is built once per cold start, here; each invocation only runs the router.

use std::process::ExitCode;

use rookery_entrypoints::Api;
use rookery_entrypoints::lambda::compose::{Aws, ComposeError, api_config};
use rookery_entrypoints::lambda::{ApiHandler, Function, logging, runtime, startup};

async fn compose() -> Result<ApiHandler, ComposeError> {
    let aws = Aws::from_env().await?;
    let config = api_config(std::env::var("ROOKERY_RATE_LIMIT").ok().as_deref())?;
    // Only this function's route, so that the binary holds no code of the others (decision 0004).
    // An erased user's token answers `410 account_erased` here too: the gate reads the marker (one
    // `GetItem`), the only thing this function reads of the table.
    let router = Api::new(aws.verifier()?, config)
        .refusing_erased(aws.event_store())
        .merge_authenticated(aws.search_function()?)
        .into_router();
    Ok(ApiHandler::new(router, Function::Search))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    logging::init();
    match compose().await {
        Ok(handler) => runtime::exit_code(runtime::serve_api(handler).await),
        Err(error) => startup::fail(&error).await,
    }
}
