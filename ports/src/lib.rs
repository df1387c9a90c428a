//! Rookery's driven ports and the use cases that drive the domain through them.
//!
//! The ports are traits an adapter implements: [`EventStore`] (and, for a store that is its own change
//! log, [`ChangeFeed`]), [`SearchIndex`], [`PushGateway`], [`IdentityVerifier`], [`MediaStore`], [`Clock`]
//! and [`IdSource`]. Each documents what an
//! implementation MUST do, error by error; the contract suites in `tests/` check exactly that,
//! against the memory adapters and the AWS ones alike.
//!
//! The use cases are the services of [`service`] (one per capability of the HTTP API, each generic
//! over only the ports it uses, sharing one write path), and the consumers of the change log:
//! [`Indexer`] (stored events to search index) and [`PushDispatcher`] (message events to pushes),
//! which every transport feeds through [`batch::deliver`]. Nothing here names a vendor, a transport
//! or HTTP.

pub mod backoff;
pub mod batch;
pub mod cursor;
pub mod dispatcher;
pub mod error;
pub mod feed;
pub mod identity;
pub mod indexer;
pub mod media;
pub mod push;
pub mod search;
pub mod service;
pub mod store;
pub mod system;

pub use backoff::Backoff;
pub use batch::{BatchHandler, SkipErased};
pub use dispatcher::PushDispatcher;
pub use error::{AppError, BatchFailure, Failure};
pub use feed::ChangeFeed;
pub use identity::{AuthError, IdentityDirectory, IdentityVerifier, NoDirectory, Principal};
pub use indexer::Indexer;
pub use media::{MediaError, MediaStore, ObjectStatus, SignedRequest};
pub use push::{PushError, PushGateway, PushOutcome};
pub use search::{ApplyFailure, Scope, SearchError, SearchHit, SearchIndex, SearchPage, SearchQuery};
pub use service::{
    AccountService, Caller, DeviceService, EraseAccount, ErasureRequest, ErasureService, Finished, Idempotency,
    ItemService, MediaService, MessageService, SearchService, ServiceConfig, SyncService, Writer,
};
pub use store::{
    AppendBatch, AppendError, EventStore, IdempotencyRecord, IdempotencyWrite, PurgeProgress, Rebase, StoreError,
};
pub use system::{Clock, IdSource};
