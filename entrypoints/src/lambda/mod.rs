//! The Lambda functions' shared logic, kept out of the binaries so it is testable without the runtime.
//!
//! Four functions run the reference architecture on AWS (see `docs/decisions/0004-lambda-route-split.md`):
//! `rookery-items` and `rookery-search` answer API Gateway requests with the contract's router
//! ([`api`]); `rookery-indexer` consumes the DynamoDB stream ([`stream`]); `rookery-messages` does both
//! ([`invocation`]); `rookery-realtime` serves the WebSocket API and fans changes out to it ([`realtime`]);
//! `rookery-eraser` finishes account erasures from the stream's erasure markers ([`eraser`]).
//! [`compose`] builds the AWS adapters from the environment, once per cold start,
//! and [`logging`] sets up the structured logs every function writes.

pub mod api;
pub mod compose;
pub mod eraser;
pub mod invocation;
pub mod logging;
pub mod realtime;
pub mod runtime;
pub mod startup;
pub mod stream;

pub use api::{ApiHandler, Function};
pub use eraser::EraserHandler;
pub use invocation::{Invocation, InvocationError, MessagesHandler};
pub use stream::{BatchHandler, RecordDecoder, StreamConsumer, StreamError};
