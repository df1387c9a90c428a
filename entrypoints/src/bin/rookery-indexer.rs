//! Lambda function 2: DynamoDB stream batches of the events table in, OpenSearch or CloudSearch documents out.
//!
//! Each record is decoded into the stored event it carries (bookkeeping rows carry none), the events
//! go to the indexer, and the answer names the first record not indexed (`batchItemFailures`), so
//! Lambda delivers the batch again from there. Everything is built once per cold start, here.

// The AWS SDK's futures nest deeply; computing the layout of the composed handler needs more than the default 128.
#![recursion_limit = "256"]

use std::process::ExitCode;

use rookery_entrypoints::lambda::compose::{Aws, ComposeError};
use rookery_entrypoints::lambda::stream::decode_lambda_record;
use rookery_entrypoints::lambda::{StreamConsumer, logging, runtime, startup};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    logging::init();
    let composed: Result<_, ComposeError> = async {
        let aws = Aws::from_env().await?;
        Ok(StreamConsumer::new(decode_lambda_record, aws.indexer()?))
    }
    .await;
    match composed {
        Ok(consumer) => runtime::exit_code(runtime::serve_stream(consumer).await),
        Err(error) => startup::fail(&error).await,
    }
}
