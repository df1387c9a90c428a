//! Realtime on AWS: the WebSocket connections API Gateway holds open, and sending frames to them.
//!
//! API Gateway's WebSocket API keeps the sockets; Rookery's functions only see one event per connect,
//! disconnect and client message, and answer the client through the `@connections` management API.
//! So the functions must remember which user each connection belongs to: [`ConnectionRegistry`] keeps
//! that in its own DynamoDB table (`docs/decisions/0007-realtime-fan-out.md`, "On AWS"), and
//! [`ConnectionsApi`] is the port through which frames reach a connection, implemented on AWS by
//! [`ManagementApi`] and in tests by a recording stand-in (moto does not answer `410 Gone`).

mod management;
mod registry;

pub use management::{ConnectionsApi, ManagementApi, PostOutcome, management_endpoint};
pub use registry::{
    CONNECTION_TTL, ConnectionRegistry, MAX_CONNECTIONS_PER_USER, Registered, create_connections_table,
};
