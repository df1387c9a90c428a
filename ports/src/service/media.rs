//! Media: declaring an object records it in the owner's stream and signs its upload; reading it signs
//! a download once the bytes are there.

use std::collections::BTreeMap;

use rookery_domain::media::MediaRejection;
use rookery_domain::{EventPayload, MediaId, MediaObject, Timestamp};
use serde::{Deserialize, Serialize};

use super::write::{Planned, Writer};
use super::{Caller, Idempotency};
use crate::media::ObjectStatus;
use crate::{AppError, Clock, EventStore, Failure, IdSource, MediaError, MediaStore};

/// A signed request as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedView {
    /// The URL.
    pub url: String,
    /// The method, for uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Headers to send, for uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// The answer to `POST /v1/media`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaCreated {
    /// The object's id.
    pub id: MediaId,
    /// Always `pending`.
    pub status: String,
    /// Where and how to upload it.
    pub upload: SignedView,
}

/// The answer to `GET /v1/media/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaView {
    /// The object's id.
    pub id: MediaId,
    /// Its declared type.
    pub content_type: String,
    /// Its declared size.
    pub size: u64,
    /// `pending` or `uploaded`.
    pub status: &'static str,
    /// Where to download it, once uploaded.
    pub download: Option<SignedView>,
}

/// The media use cases.
#[derive(Debug, Clone)]
pub struct MediaService<S, C, I, M> {
    writer: Writer<S, C, I>,
    media: M,
}

impl<S: EventStore, C: Clock, I: IdSource, M: MediaStore> MediaService<S, C, I, M> {
    /// The service over the shared write path and the media store that signs URLs.
    pub fn new(writer: Writer<S, C, I>, media: M) -> Self {
        Self { writer, media }
    }

    /// `POST /v1/media`: declares an object and signs its upload.
    ///
    /// # Errors
    /// `Invalid` for a type not allowed or size 0, `TooLarge` for a size over the limit; `Unavailable`.
    pub async fn create_media(
        &self,
        caller: &Caller,
        content_type: &str,
        size: u64,
        idem: Option<&Idempotency>,
    ) -> Result<MediaCreated, AppError> {
        let id = self.writer.fresh_id(MediaId::parse)?;
        let user = &caller.user;
        let object = MediaObject::declare(
            id,
            user.clone(),
            content_type,
            size,
            self.writer.clock().now(),
            &self.writer.config().limits,
        )
        .map_err(|e| match e {
            MediaRejection::TooLarge { .. } => AppError::TooLarge(e.to_string()),
            other => AppError::Invalid(other.to_string()),
        })?;
        let ttl = self.writer.config().media_url_ttl;
        self.writer
            .write(caller, idem, |now| {
                let object = object.clone();
                async move {
                    let upload = self.media.upload_url(&object, now, ttl).await.map_err(|e| match e {
                        MediaError::Unavailable(failure) => AppError::Unavailable(failure),
                    })?;
                    let outcome = MediaCreated {
                        id: object.id.clone(),
                        status: "pending".into(),
                        upload: SignedView {
                            url: upload.url,
                            method: Some(upload.method),
                            headers: Some(upload.headers),
                            expires_at: upload.expires_at,
                        },
                    };
                    Ok(Planned::at_end(
                        user,
                        vec![EventPayload::MediaDeclared(object)],
                        outcome,
                    ))
                }
            })
            .await
    }

    /// `GET /v1/media/{id}`: owner only.
    ///
    /// # Errors
    /// `NotFound` for an unknown id or another user's object; `Unavailable`.
    pub async fn get_media(&self, caller: &Caller, id: &MediaId) -> Result<MediaView, AppError> {
        let object = self
            .writer
            .store()
            .media(&caller.user, id)
            .await
            .map_err(Failure::from)?
            .ok_or(AppError::NotFound)?;
        self.view(object).await
    }

    /// How `object` looks to its owner now: its status, and a fresh download URL once uploaded.
    ///
    /// # Errors
    /// `Unavailable` when the media store cannot tell or sign.
    pub async fn view(&self, object: MediaObject) -> Result<MediaView, AppError> {
        let unavailable = |e: MediaError| match e {
            MediaError::Unavailable(failure) => AppError::Unavailable(failure),
        };
        let status = self.media.status(&object).await.map_err(unavailable)?;
        let download = match status {
            ObjectStatus::Pending => None,
            ObjectStatus::Uploaded { .. } => {
                let signed = self
                    .media
                    .download_url(&object, self.writer.clock().now(), self.writer.config().media_url_ttl)
                    .await
                    .map_err(unavailable)?;
                Some(SignedView {
                    url: signed.url,
                    method: None,
                    headers: None,
                    expires_at: signed.expires_at,
                })
            }
        };
        Ok(MediaView {
            id: object.id,
            content_type: object.content_type,
            size: object.size,
            status: if download.is_some() { "uploaded" } else { "pending" },
            download,
        })
    }
}
