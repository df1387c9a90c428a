//! The eraser function: finishes each account erasure whose marker reaches it from the events table's
//! stream (an event source mapping filtered to marker INSERTs), over DynamoDB, the search index, S3, SNS
//! and the Cognito user pool.
//!
//! Function 1 wrote the marker and answered `202`; this function deletes the user's search documents,
//! media, push endpoints and Cognito user, and purges their partition, stopping in time to answer before
//! the invocation's deadline. A marker not finished is named in `batchItemFailures`, so Lambda delivers it
//! again until it is done (decision 0010). Everything is built once per cold start, here.

// The AWS SDK's futures nest deeply; computing the layout of the composed handler needs more than the default 128.
#![recursion_limit = "256"]

use std::process::ExitCode;

use rookery_entrypoints::lambda::compose::{Aws, ComposeError};
use rookery_entrypoints::lambda::{logging, runtime, startup};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    logging::init();
    let composed: Result<_, ComposeError> = async {
        let aws = Aws::from_env().await?;
        // `None` when no user pool is configured: then there is no Cognito user to delete.
        aws.eraser(aws.clients().identity_directory())
    }
    .await;
    match composed {
        Ok(handler) => runtime::exit_code(runtime::serve_eraser(handler).await),
        Err(error) => startup::fail(&error).await,
    }
}
