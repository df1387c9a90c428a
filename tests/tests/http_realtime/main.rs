//! `GET /v1/realtime` end to end over real sockets: the protocol on both stores and on
//! `rookery serve --backend aws` against moto, the limits on
//! `rookery serve`, and the guarantee as a property.
//!
//! Test helpers panic with a message on failure, like every test here.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod aws;
mod limits;
mod property;
mod protocol;
mod support;
