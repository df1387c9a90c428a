//! Function 4's two kinds of invocation: an API Gateway request or a DynamoDB stream batch.
//!
//! The messages function is one function with two triggers (the `/v1/messages` routes, and the
//! stream of message events for push delivery), so each payload is told apart by its shape:
//! a stream batch is an object with a `Records` array whose records all come from `aws:dynamodb`;
//! anything else must be an API Gateway proxy request. A payload that is neither is an error, never
//! guessed at. See `docs/decisions/0004-lambda-route-split.md` for why one binary and not two.

use aws_lambda_events::event::dynamodb::Event;
use lambda_http::request::LambdaRequest;
use lambda_http::{Context, LambdaEvent};
use serde::Deserialize;
use serde_json::Value;

use super::api::ApiHandler;
use super::stream::{BatchHandler, RecordDecoder, StreamConsumer, StreamError};

/// The event source every stream record must name.
pub const DYNAMODB_SOURCE: &str = "aws:dynamodb";

/// A payload, told apart.
#[derive(Debug)]
pub enum Invocation {
    /// An API Gateway proxy request (REST or HTTP API).
    Api(Box<LambdaRequest>),
    /// A batch of DynamoDB stream records.
    Stream(Box<Event>),
}

/// Why a payload is neither kind, or why it could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// The payload has `Records`, but not all of them are DynamoDB stream records.
    #[error("a record of the batch comes from {0:?}, not from a DynamoDB stream")]
    ForeignRecords(Option<String>),
    /// The payload has `Records` but is not a DynamoDB stream event.
    #[error("malformed stream event: {0}")]
    MalformedStream(serde_json::Error),
    /// The payload is not an API Gateway proxy request either.
    #[error("the payload is neither a DynamoDB stream batch nor an API Gateway request: {0}")]
    Unrecognized(serde_json::Error),
    /// The stream batch could not be answered record by record.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The answer could not be serialized.
    #[error("could not serialize the answer: {0}")]
    Answer(serde_json::Error),
}

/// Just enough of a payload to tell a stream batch from an API request without parsing it twice.
#[derive(Debug, Deserialize)]
struct Probe {
    #[serde(rename = "Records")]
    records: Option<Vec<ProbeRecord>>,
}

#[derive(Debug, Deserialize)]
struct ProbeRecord {
    #[serde(rename = "eventSource")]
    event_source: Option<String>,
}

/// The DynamoDB stream batch `payload` (an invocation's JSON text) holds, or `None` when it has no
/// `Records` and is some other kind of event.
///
/// # Errors
/// (In the `Some`) [`InvocationError::ForeignRecords`] when a record comes from another source, and
/// [`InvocationError::MalformedStream`] when the batch does not parse as a stream event.
pub(crate) fn stream_batch(payload: &str) -> Option<Result<Event, InvocationError>> {
    // A payload that is not even a JSON object is left to the caller's other parser, which reports it.
    let records = serde_json::from_str::<Probe>(payload).ok()?.records?;
    if let Some(foreign) = records
        .into_iter()
        .find(|record| record.event_source.as_deref() != Some(DYNAMODB_SOURCE))
    {
        return Some(Err(InvocationError::ForeignRecords(foreign.event_source)));
    }
    Some(serde_json::from_str(payload).map_err(InvocationError::MalformedStream))
}

impl Invocation {
    /// Tells `payload` (the invocation's JSON text) apart.
    ///
    /// # Errors
    /// [`InvocationError`] when the payload is neither a DynamoDB stream batch nor an API request.
    pub fn classify(payload: &str) -> Result<Self, InvocationError> {
        if let Some(batch) = stream_batch(payload) {
            return batch.map(|event| Invocation::Stream(Box::new(event)));
        }
        // `LambdaRequest` can only be parsed from text: it tries each kind of proxy event in turn.
        serde_json::from_str(payload)
            .map(|request| Invocation::Api(Box::new(request)))
            .map_err(InvocationError::Unrecognized)
    }
}

/// Function 4: the messages routes and push delivery from the stream, in one handler.
#[derive(Debug, Clone)]
pub struct MessagesHandler<D, H> {
    api: ApiHandler,
    stream: StreamConsumer<D, H>,
}

impl<D: RecordDecoder, H: BatchHandler> MessagesHandler<D, H> {
    /// A handler answering requests with `api` and stream batches with `stream`.
    pub fn new(api: ApiHandler, stream: StreamConsumer<D, H>) -> Self {
        Self { api, stream }
    }

    /// Answers one invocation: a proxy response for a request, `batchItemFailures` for a batch.
    ///
    /// # Errors
    /// [`InvocationError`] for a payload of neither kind, or a batch whose failed record cannot be
    /// named; the function then fails and Lambda retries the whole invocation.
    pub async fn handle(&self, payload: &str, context: Context) -> Result<Value, InvocationError> {
        match Invocation::classify(payload)? {
            Invocation::Api(request) => self
                .api
                .handle(LambdaEvent::new(*request, context))
                .await
                .map_err(InvocationError::Answer),
            Invocation::Stream(event) => {
                let answer = self.stream.handle(&event).await?;
                serde_json::to_value(answer).map_err(InvocationError::Answer)
            }
        }
    }
}
