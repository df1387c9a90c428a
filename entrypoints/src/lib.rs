//! Rookery's composition roots: the HTTP API, the `rookery` binary and the Lambda functions.
//!
//! Not built yet: the router and binaries arrive with their own issues.
