//! The event loops of the functions: each hands the Lambda runtime one handler built at start-up,
//! which every invocation of the instance then shares.
//!
//! Handlers answer JSON values, and their errors become the runtime's `Diagnostic` with an
//! `errorType` that says which kind of failure it was, so the function's error metrics and logs can
//! tell a malformed payload from a batch that could not be answered.

use std::process::ExitCode;

use aws_lambda_events::event::dynamodb::Event;
use lambda_http::request::LambdaRequest;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::value::RawValue;

use rookery_adapters_aws::realtime::ConnectionsApi;
use rookery_ports::{Clock, EventStore, IdentityDirectory, IdentityVerifier, MediaStore, PushGateway, SearchIndex};

use super::api::ApiHandler;
use super::eraser::{EraserHandler, MarkerDecoder};
use super::invocation::{InvocationError, MessagesHandler};
use super::realtime::RealtimeHandler;
use super::stream::{BatchHandler, RecordDecoder, StreamConsumer, StreamError};

impl From<StreamError> for Diagnostic {
    fn from(error: StreamError) -> Self {
        Diagnostic {
            error_type: "Rookery.StreamBatchError".to_owned(),
            error_message: error.to_string(),
        }
    }
}

impl From<InvocationError> for Diagnostic {
    fn from(error: InvocationError) -> Self {
        let error_type = match &error {
            InvocationError::Stream(_) => "Rookery.StreamBatchError",
            InvocationError::Answer(_) => "Rookery.AnswerError",
            _ => "Rookery.UnrecognizedPayload",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: error.to_string(),
        }
    }
}

fn answer_error(error: &serde_json::Error) -> Diagnostic {
    Diagnostic {
        error_type: "Rookery.AnswerError".to_owned(),
        error_message: error.to_string(),
    }
}

/// Serves API Gateway proxy events with `handler` until the runtime stops.
///
/// # Errors
/// When the Runtime API cannot be reached.
pub async fn serve_api(handler: ApiHandler) -> Result<(), lambda_runtime::Error> {
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<LambdaRequest>| async move {
        handler.handle(event).await.map_err(|e| answer_error(&e))
    }))
    .await
}

/// Serves DynamoDB stream batches with `consumer` until the runtime stops.
///
/// # Errors
/// When the Runtime API cannot be reached.
pub async fn serve_stream<D: RecordDecoder, H: BatchHandler>(
    consumer: StreamConsumer<D, H>,
) -> Result<(), lambda_runtime::Error> {
    let consumer = &consumer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let answer = consumer.handle(&event.payload).await?;
        serde_json::to_value(answer).map_err(|e| answer_error(&e))
    }))
    .await
}

/// Serves the erasure markers of DynamoDB stream batches with `handler` until the runtime stops; each
/// run stops in time to answer before the invocation's deadline.
///
/// # Errors
/// When the Runtime API cannot be reached.
pub async fn serve_eraser<K, S, C, X, P, M, D>(
    handler: EraserHandler<K, S, C, X, P, M, D>,
) -> Result<(), lambda_runtime::Error>
where
    K: MarkerDecoder,
    S: EventStore,
    C: Clock,
    X: SearchIndex,
    P: PushGateway,
    M: MediaStore,
    D: IdentityDirectory,
{
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let stop_at = handler.stop_at(event.context.deadline);
        let answer = handler.handle(&event.payload, stop_at).await?;
        serde_json::to_value(answer).map_err(|e| answer_error(&e))
    }))
    .await
}

/// Serves both kinds of function 4's invocations with `handler` until the runtime stops.
///
/// # Errors
/// When the Runtime API cannot be reached.
pub async fn serve_messages<D: RecordDecoder, H: BatchHandler>(
    handler: MessagesHandler<D, H>,
) -> Result<(), lambda_runtime::Error> {
    let handler = &handler;
    // The payload stays text until its kind is known: proxy requests can only be parsed from text.
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| async move {
        handler
            .handle(event.payload.get(), event.context)
            .await
            .map_err(Diagnostic::from)
    }))
    .await
}

/// Serves both kinds of the realtime function's invocations with `handler` until the runtime stops.
///
/// # Errors
/// When the Runtime API cannot be reached.
pub async fn serve_realtime<S, V, A, K, D>(handler: RealtimeHandler<S, V, A, K, D>) -> Result<(), lambda_runtime::Error>
where
    S: EventStore,
    V: IdentityVerifier,
    A: ConnectionsApi,
    K: Clock,
    D: RecordDecoder,
{
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| async move {
        handler.handle(event.payload.get()).await.map_err(Diagnostic::from)
    }))
    .await
}

/// The exit code after the event loop ended: it only ends when the Runtime API failed.
pub fn exit_code(outcome: Result<(), lambda_runtime::Error>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the Lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}
