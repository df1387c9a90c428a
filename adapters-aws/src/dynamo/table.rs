//! Creating the events table: the one piece of the layout that is infrastructure rather than rows.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    StreamViewType, TableStatus,
};
use rookery_ports::Failure;

use crate::error::sdk_failure;

/// A `CreateTable` request for `table` with the layout Rookery's tables share: string keys `pk`
/// (partition) and `sk` (sort), billed on demand. The caller adds what its table needs besides.
///
/// # Errors
/// A [`Failure`] when the SDK refuses to build a key definition.
pub(crate) fn pk_sk_table(client: &Client, table: &str) -> Result<CreateTableFluentBuilder, Failure> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| Failure::permanent(e.to_string()))
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| Failure::permanent(e.to_string()))
    };
    Ok(client
        .create_table()
        .table_name(table)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest))
}

/// Creates the events table (`pk`, `sk` strings, on-demand, stream `NEW_IMAGE`) unless it exists, and waits until it is active.
///
/// # Errors
/// A [`Failure`] when DynamoDB refuses or the table does not become active within a minute.
pub async fn create_table(client: &Client, table: &str) -> Result<(), Failure> {
    let stream = StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::NewImage)
        .build()
        .map_err(|e| Failure::permanent(e.to_string()))?;
    let created = pk_sk_table(client, table)?.stream_specification(stream).send().await;
    match created {
        Ok(_) => {}
        Err(SdkError::ServiceError(context)) if context.err().is_resource_in_use_exception() => {}
        Err(error) => return Err(sdk_failure("CreateTable", &error)),
    }
    wait_until_active(client, table).await
}

/// Waits until `table` is active, for at most a minute.
///
/// # Errors
/// A [`Failure`] when DynamoDB cannot describe it or it is not active within a minute.
pub(crate) async fn wait_until_active(client: &Client, table: &str) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_failure("DescribeTable", &e))?;
        let status = described.table.and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::transient(format!(
                "table {table} is not active after a minute ({status:?})"
            )));
        }
        // Real DynamoDB takes seconds to create a table; this is a production poll, not a test wait.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
