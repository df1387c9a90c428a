//! The media port: signed upload and download URLs, and whether an object has arrived.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use rookery_domain::{MediaObject, Timestamp, UserId};

use crate::Failure;

/// A request a client can make on its own, without credentials, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The signed URL.
    pub url: String,
    /// The HTTP method it is signed for.
    pub method: String,
    /// Headers the client MUST send exactly (they are part of the signature), named as HTTP writes
    /// them (`Content-Type`, `Content-Length`): clients read the names as case-sensitive JSON keys.
    pub headers: BTreeMap<String, String>,
    /// When the signature stops working.
    pub expires_at: Timestamp,
}

/// Whether a declared object has been uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectStatus {
    /// Nothing stored under the key yet.
    Pending,
    /// An object is stored under the key.
    Uploaded {
        /// Its size in bytes.
        size: u64,
    },
}

/// Why a media operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The store could not be reached or refused the request.
    #[error(transparent)]
    Unavailable(#[from] Failure),
}

/// Where media bytes live (S3 behind CloudFront on AWS; the local server's disk or memory otherwise).
pub trait MediaStore: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// A signed `PUT` for exactly `object`: its key, its `Content-Type` and `Content-Length`, valid for `ttl` from `now`.
    ///
    /// Implementations MUST bind the key, type and size into the signature, so the URL cannot store
    /// anything else, anywhere else.
    ///
    /// # Errors
    /// [`MediaError::Unavailable`] when signing material cannot be obtained.
    fn upload_url(
        &self,
        object: &MediaObject,
        now: Timestamp,
        ttl: Duration,
    ) -> impl Future<Output = Result<SignedRequest, MediaError>> + Send;

    /// A signed `GET` of `object`, valid for `ttl` from `now`.
    ///
    /// # Errors
    /// [`MediaError::Unavailable`] when signing material cannot be obtained.
    fn download_url(
        &self,
        object: &MediaObject,
        now: Timestamp,
        ttl: Duration,
    ) -> impl Future<Output = Result<SignedRequest, MediaError>> + Send;

    /// Whether an object is stored under `object.key`.
    ///
    /// # Errors
    /// [`MediaError::Unavailable`] when the store cannot answer; a missing object is `Ok(Pending)`.
    fn status(&self, object: &MediaObject) -> impl Future<Output = Result<ObjectStatus, MediaError>> + Send;

    /// Deletes the bytes of every object of `owner` (every key under their prefix), and refuses every
    /// later upload under that prefix, even through a URL signed before.
    ///
    /// Implementations MUST make the deletion and the refusal one step (an upload that races it is either
    /// deleted or refused), and MUST answer `Ok` on a repeat. The default answers a permanent
    /// `Unavailable`: a store that cannot erase says so rather than pretending.
    ///
    /// # Errors
    /// [`MediaError::Unavailable`]; trying again is safe.
    fn erase_owner(&self, owner: &UserId) -> impl Future<Output = Result<(), MediaError>> + Send {
        let _ = owner;
        async {
            Err(MediaError::Unavailable(Failure::permanent(
                "this media store does not support erasing an account yet",
            )))
        }
    }
}
