//! Lambda function 4: the messages routes of the HTTP API, and push delivery of the message events
//! that reach it from the DynamoDB stream, in one function with two triggers.
//!
//! Each invocation is told apart by its payload (a stream batch or an API Gateway request; see
//! `docs/decisions/0004-lambda-route-split.md`). Everything is built once per cold start, here.

// The AWS SDK's futures nest deeply; computing the layout of the composed handler needs more than the default 128.
#![recursion_limit = "256"]

use std::process::ExitCode;

use rookery_entrypoints::Api;
use rookery_entrypoints::lambda::compose::{Aws, ComposeError, api_config};
use rookery_entrypoints::lambda::stream::decode_lambda_record;
use rookery_entrypoints::lambda::{ApiHandler, Function, MessagesHandler, StreamConsumer, logging, runtime, startup};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    logging::init();
    let composed: Result<_, ComposeError> = async {
        let aws = Aws::from_env().await?;
        let config = api_config(std::env::var("ROOKERY_RATE_LIMIT").ok().as_deref())?;
        // Only this function's routes, so that the binary holds no code of the others (decision 0004).
        let (routes, dispatcher) = aws.messages_function();
        let router = Api::new(aws.verifier()?, config)
            .refusing_erased(aws.event_store())
            .merge_authenticated(routes)
            .into_router();
        let api = ApiHandler::new(router, Function::Messages);
        let stream = StreamConsumer::new(decode_lambda_record, dispatcher);
        Ok(MessagesHandler::new(api, stream))
    }
    .await;
    match composed {
        Ok(handler) => runtime::exit_code(runtime::serve_messages(handler).await),
        Err(error) => startup::fail(&error).await,
    }
}
