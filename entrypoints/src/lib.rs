//! Rookery's composition roots: the HTTP API, the in-process change feed driver, the local server
//! behind `rookery serve`, and the Lambda functions.
//!
//! [`http::router`] is the one router of `API.md`, generic over the adapters and the identity verifier,
//! and imports no adapter; [`feed`] drives the indexer and the push dispatcher from a store's change
//! feed ([`rookery_ports::ChangeFeed`]), each from its stored position; [`local`] wires the memory
//! adapters, or the SQLite store of a data directory, into a running server with its development routes,
//! and [`reindex`] rebuilds and checks the search index offline. [`aws`] runs the same router over the
//! AWS adapters (`rookery serve --backend aws`) and bootstraps their resources (`rookery aws bootstrap`).

pub mod aws;
pub mod feed;
pub mod http;
pub mod lambda;
pub mod local;
pub mod reindex;
mod server;
pub mod telemetry;

pub use http::{Api, ApiConfig, router};
pub use local::{LocalConfig, LocalServer, LocalServices, StartError};
