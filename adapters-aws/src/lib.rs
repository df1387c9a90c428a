//! AWS adapters for Rookery's ports (DynamoDB, DynamoDB Streams, CloudSearch, OpenSearch, SNS, S3 and
//! CloudFront, Cognito).
//!
//! Each module implements one port against one service, with the same contract as the memory adapters:
//! [`dynamo::DynamoStore`] (event store), [`opensearch::OpenSearchIndex`] and
//! [`cloudsearch::CloudSearchIndex`] (search index, one of them chosen as [`search::AwsSearchIndex`], and
//! guarded by [`search::ErasureAwareIndex`] against an erased user's changes read again from the stream),
//! [`sns::SnsPushGateway`] (push), [`s3::S3MediaStore`] (media), [`jwt`] (identity), and
//! [`cognito::CognitoDirectory`] (the user pool, from which an erased account's user is deleted).
//! [`realtime`] keeps the WebSocket API's connections and sends them frames.
//! [`streams`] decodes DynamoDB Streams records and polls a stream for the indexer and push dispatcher.
//! [`config`] reads the environment and builds the clients, which share the one HTTP client of [`http`];
//! no SDK type appears in a port signature.

pub mod cloudsearch;
pub mod cognito;
pub mod config;
pub mod dynamo;
pub mod error;
pub mod http;
pub mod jwt;
pub mod opensearch;
pub mod realtime;
pub mod s3;
pub mod search;
pub mod sns;
pub mod streams;

pub use cloudsearch::CloudSearchIndex;
pub use cognito::CognitoDirectory;
pub use config::{AwsClients, AwsConfig, BootstrapReport, ConfigError, bootstrap};
pub use dynamo::DynamoStore;
pub use error::RetryPolicy;
pub use opensearch::{HeldDocument, ListedDocument, OpenSearchIndex, OpenSearchService};
pub use s3::{CloudFrontSigner, S3MediaStore};
pub use search::{AwsSearchIndex, ErasureAwareIndex};
pub use sns::SnsPushGateway;
pub use streams::{BatchHandler, HandlerFn, PollError, StreamPoller};
