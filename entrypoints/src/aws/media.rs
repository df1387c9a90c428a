//! The media store as the API shows it: signed requests whose header names are written the way
//! `API.md` writes them (`Content-Type`, `Content-Length`).
//!
//! The S3 adapter names the signed headers as the SDK's presigner does, in lower case. HTTP does not
//! care, but the API answers them as JSON object keys, where case matters: a client that reads
//! `upload.headers["Content-Type"]`, as the contract shows, would find nothing. This wrapper fixes the
//! names at the edge of the composition; the values, and so the signature, are untouched.

use std::collections::BTreeMap;
use std::time::Duration;

use rookery_domain::{MediaObject, Timestamp};
use rookery_ports::{MediaError, MediaStore, ObjectStatus, SignedRequest};

/// A media store whose signed requests carry canonically written header names.
#[derive(Debug, Clone)]
pub struct ApiHeaderNames<M>(pub M);

/// `content-type` → `Content-Type`: each dash-separated word capitalized, the rest lower case.
pub fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn canonical(mut request: SignedRequest) -> SignedRequest {
    request.headers = request
        .headers
        .into_iter()
        .map(|(name, value)| (canonical_header_name(&name), value))
        .collect::<BTreeMap<_, _>>();
    request
}

impl<M: MediaStore> MediaStore for ApiHeaderNames<M> {
    async fn upload_url(
        &self,
        object: &MediaObject,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<SignedRequest, MediaError> {
        self.0.upload_url(object, now, ttl).await.map(canonical)
    }

    async fn download_url(
        &self,
        object: &MediaObject,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<SignedRequest, MediaError> {
        self.0.download_url(object, now, ttl).await.map(canonical)
    }

    async fn status(&self, object: &MediaObject) -> Result<ObjectStatus, MediaError> {
        self.0.status(object).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_written_as_the_contract_writes_them() {
        assert_eq!(canonical_header_name("content-type"), "Content-Type");
        assert_eq!(canonical_header_name("CONTENT-LENGTH"), "Content-Length");
        assert_eq!(canonical_header_name("x-amz-meta-owner"), "X-Amz-Meta-Owner");
        assert_eq!(canonical_header_name("host"), "Host");
        let request = SignedRequest {
            url: "https://bucket/key?X-Amz-Signature=abc".into(),
            method: "PUT".into(),
            headers: BTreeMap::from([
                ("content-type".to_owned(), "image/png".to_owned()),
                ("content-length".to_owned(), "12".to_owned()),
            ]),
            expires_at: Timestamp::from_millis(0),
        };
        let fixed = canonical(request.clone());
        assert_eq!(fixed.headers.get("Content-Type").map(String::as_str), Some("image/png"));
        assert_eq!(fixed.headers.get("Content-Length").map(String::as_str), Some("12"));
        assert_eq!((fixed.url, fixed.method), (request.url, request.method));
    }
}
