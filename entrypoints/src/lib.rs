//! Rookery's composition roots: the HTTP API, the in-process change feed driver, the local server
//! behind `rookery serve`, and the Lambda functions.
//!
//! [`http`] holds the route sets of `API.md` over the services of `rookery_ports::service`, behind one
//! edge ([`Api`]); [`feed`] drives each consumer of the log from a store's change feed
//! ([`rookery_ports::ChangeFeed`]), each from its stored position; [`local`] composes `rookery serve`
//! (memory or SQLite, with the development routes), and [`reindex`] rebuilds and checks the search index
//! offline. [`aws`] runs the same route sets over the AWS adapters (`rookery serve --backend aws`) and
//! bootstraps their resources (`rookery aws bootstrap`); [`lambda`] holds what the Lambda binaries share.
//! [`realtime`] pushes each user's changes over a WebSocket as the change feed delivers them.

pub mod aws;
pub mod feed;
pub mod http;
pub mod lambda;
pub mod local;
pub mod realtime;
pub mod reindex;
mod server;
pub mod telemetry;

pub use http::{Api, ApiConfig, Services};
pub use local::{LocalConfig, LocalServer, LocalServices, StartError};
