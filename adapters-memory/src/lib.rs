//! In-memory (and file-backed) implementations of every Rookery port, for `rookery serve` and for tests.
//!
//! Each adapter keeps exactly the contract the AWS adapters keep (conflicts, ordering, pagination and
//! limits), so code that works against these works against AWS; none of them is a mock that accepts anything.
//! [`Faulty`] wraps any of them to inject failures deterministically.

pub mod directory;
pub mod faults;
pub mod identity;
pub mod media;
pub mod push;
pub mod search;
pub mod store;
pub mod system;

pub use directory::MemoryDirectory;
pub use faults::{FailMode, FaultTarget, Faults, Faulty};
pub use media::{
    DOWNLOAD_PATH, FetchError, Fetched, LocalMediaStore, UPLOAD_PATH, Upload, UploadError, generate_secret,
};
pub use push::{Endpoint, MemoryPushGateway, SentPush};
pub use search::{IndexedEntry, MemorySearchIndex};
pub use store::{LOG_FILE, LogReader, LogRecord, MAX_APPEND_BYTES, MAX_EVENT_BYTES, MemoryEventStore, OpenError};
pub use system::{ManualClock, SequentialIds, SystemClock, UlidIds};
