//! Sending frames to WebSocket connections: the [`ConnectionsApi`] port and API Gateway's `@connections`
//! management API behind it ([`ManagementApi`]).

use std::fmt::Debug;
use std::future::Future;

use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use rookery_ports::Failure;

use crate::error::sdk_failure;

/// What became of one frame sent to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostOutcome {
    /// The connection took it.
    Sent,
    /// The connection is gone (`410`): forget it.
    Gone,
    /// The frame is over the API's message size limit (128 KB); it was not sent.
    TooLarge,
}

/// Frames to the WebSocket connections of a realtime deployment (API Gateway's `@connections` API on
/// AWS; a recording stand-in in tests).
pub trait ConnectionsApi: Clone + Send + Sync + Debug + 'static {
    /// Sends the text frame `frame` to connection `id`.
    ///
    /// Implementations MUST answer `Ok(Gone)`, not an error, for a connection that no longer exists,
    /// and `Ok(TooLarge)` for a frame the API refuses for its size.
    ///
    /// # Errors
    /// A transient [`Failure`] when the API cannot be reached or throttles (the send may be retried);
    /// a permanent one when it refuses the request for good.
    fn post(&self, id: &str, frame: &str) -> impl Future<Output = Result<PostOutcome, Failure>> + Send;

    /// Closes connection `id`. Closing a connection that is gone is `Ok`.
    ///
    /// # Errors
    /// A [`Failure`] when the API cannot be reached or refuses.
    fn close(&self, id: &str) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// The `@connections` endpoint of a WebSocket API's stage:
/// `https://{api id}.execute-api.{region}.amazonaws.com/{stage}`.
pub fn management_endpoint(api_id: &str, region: &str, stage: &str) -> String {
    format!("https://{api_id}.execute-api.{region}.amazonaws.com/{stage}")
}

/// API Gateway's `@connections` management API of one stage.
#[derive(Debug, Clone)]
pub struct ManagementApi {
    client: Client,
}

impl ManagementApi {
    /// A client of the stage at `endpoint` (see [`management_endpoint`]), with `sdk`'s region and
    /// credentials; requests are signed for `execute-api`.
    pub fn new(sdk: &SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint.trim_end_matches('/'))
            .build();
        Self {
            client: Client::from_conf(config),
        }
    }
}

impl ConnectionsApi for ManagementApi {
    async fn post(&self, id: &str, frame: &str) -> Result<PostOutcome, Failure> {
        let sent = self
            .client
            .post_to_connection()
            .connection_id(id)
            .data(Blob::new(frame.as_bytes()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(PostOutcome::Sent),
            Err(SdkError::ServiceError(context)) if context.err().is_gone_exception() => Ok(PostOutcome::Gone),
            Err(SdkError::ServiceError(context)) if context.err().is_payload_too_large_exception() => {
                Ok(PostOutcome::TooLarge)
            }
            Err(error) => Err(sdk_failure("PostToConnection", &error)),
        }
    }

    async fn close(&self, id: &str) -> Result<(), Failure> {
        match self.client.delete_connection().connection_id(id).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(context)) if context.err().is_gone_exception() => Ok(()),
            Err(error) => Err(sdk_failure("DeleteConnection", &error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_stages_url() {
        assert_eq!(
            management_endpoint("abc123", "eu-west-1", "live"),
            "https://abc123.execute-api.eu-west-1.amazonaws.com/live"
        );
    }
}
