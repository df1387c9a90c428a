//! Media objects: declared by the owner, uploaded straight to the media store, private to the owner.

use serde::{Deserialize, Serialize};

use crate::{Limits, MediaId, Timestamp, UserId};

/// A declared media object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaObject {
    /// Its id.
    pub id: MediaId,
    /// Its owner, the only user who may read it.
    pub owner: UserId,
    /// The declared `Content-Type`, lowercase.
    pub content_type: String,
    /// The declared size in bytes.
    pub size: u64,
    /// The storage key, always under the owner's prefix.
    pub key: String,
    /// When it was declared.
    pub declared_at: Timestamp,
}

/// Why a media declaration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaRejection {
    /// The content type is not `image/*`, `video/*`, `audio/*` or `application/pdf`.
    #[error("content type must be image/*, video/*, audio/* or application/pdf")]
    TypeNotAllowed,
    /// The size is zero.
    #[error("size must be at least 1 byte")]
    Empty,
    /// The size is over the limit.
    #[error("size {size} is over the limit of {max} bytes")]
    TooLarge {
        /// Declared size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

impl MediaObject {
    /// Validates a declaration and builds the object, with a key under the owner's prefix.
    ///
    /// # Errors
    /// [`MediaRejection`] for a type outside the allowed ones or a size out of range.
    pub fn declare(
        id: MediaId,
        owner: UserId,
        content_type: &str,
        size: u64,
        declared_at: Timestamp,
        limits: &Limits,
    ) -> Result<Self, MediaRejection> {
        let content_type = content_type.trim().to_ascii_lowercase();
        if !allowed_type(&content_type) {
            return Err(MediaRejection::TypeNotAllowed);
        }
        if size == 0 {
            return Err(MediaRejection::Empty);
        }
        if size > limits.max_media_bytes {
            return Err(MediaRejection::TooLarge {
                size,
                max: limits.max_media_bytes,
            });
        }
        let key = format!("media/{owner}/{id}");
        Ok(Self {
            id,
            owner,
            content_type,
            size,
            key,
            declared_at,
        })
    }
}

/// The top-level types whose every subtype may be declared (`image/*`, ...).
pub const ALLOWED_TOP_LEVEL_TYPES: [&str; 3] = ["image", "video", "audio"];

/// The single types that may be declared besides those under [`ALLOWED_TOP_LEVEL_TYPES`].
pub const ALLOWED_EXACT_TYPES: [&str; 1] = ["application/pdf"];

/// The longest subtype, in bytes (RFC 6838 §4.2).
pub const MAX_SUBTYPE_LEN: usize = 127;

/// The characters a subtype may hold besides ASCII letters and digits (RFC 6838 §4.2).
pub const SUBTYPE_PUNCTUATION: &str = "!#$&^_.+-";

/// True when `b` may appear in a subtype.
pub fn is_subtype_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || SUBTYPE_PUNCTUATION.as_bytes().contains(&b)
}

fn allowed_type(content_type: &str) -> bool {
    if ALLOWED_EXACT_TYPES.contains(&content_type) {
        return true;
    }
    let Some((kind, subtype)) = content_type.split_once('/') else {
        return false;
    };
    ALLOWED_TOP_LEVEL_TYPES.contains(&kind)
        && !subtype.is_empty()
        && subtype.len() <= MAX_SUBTYPE_LEN
        && subtype.bytes().all(is_subtype_byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declare(content_type: &str, size: u64) -> Result<MediaObject, MediaRejection> {
        let id = MediaId::parse("m1").map_err(|_| MediaRejection::Empty)?;
        let owner = UserId::parse("alice").map_err(|_| MediaRejection::Empty)?;
        MediaObject::declare(
            id,
            owner,
            content_type,
            size,
            Timestamp::from_millis(0),
            &Limits::default(),
        )
    }

    #[test]
    fn allowed_types_and_sizes_are_accepted_under_the_owner_prefix() {
        let object = declare("Image/PNG", 10).map_err(|e| e.to_string());
        assert_eq!(
            object.map(|o| (o.content_type, o.key)),
            Ok(("image/png".into(), "media/alice/m1".into()))
        );
        assert!(declare("application/pdf", 1).is_ok());
        assert!(declare("video/mp4", 100 * 1024 * 1024).is_ok());
    }

    #[test]
    fn other_types_and_bad_sizes_are_refused() {
        assert_eq!(declare("text/html", 10), Err(MediaRejection::TypeNotAllowed));
        assert_eq!(declare("image/", 10), Err(MediaRejection::TypeNotAllowed));
        assert_eq!(declare("image/png; x=y", 10), Err(MediaRejection::TypeNotAllowed));
        assert_eq!(declare("image/png", 0), Err(MediaRejection::Empty));
        assert!(matches!(
            declare("image/png", 100 * 1024 * 1024 + 1),
            Err(MediaRejection::TooLarge { .. })
        ));
    }
}
