//! The S3 media store: presigned uploads that pin key, type and size, and downloads through CloudFront or S3.
//!
//! Uploads are presigned `PUT`s with `Content-Type` and `Content-Length` among the signed headers, so a
//! URL stores exactly the declared object and nothing else. Downloads are CloudFront signed URLs (canned
//! policy, RSA-SHA1, as CloudFront documents) when a distribution is configured, else presigned S3 `GET`s.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rookery_domain::{MediaObject, Timestamp, UserId};
use rookery_ports::{Failure, MediaError, MediaStore, ObjectStatus, SignedRequest};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use sha1::Sha1;

use crate::error::{is_transient, sdk_failure};

/// The most keys one `DeleteObjects` takes (and one `ListObjectsV2` page holds).
const DELETE_BATCH: i32 = 1000;
/// How many pages of keys an erasure deletes at most (ten million objects) before it stops and says so.
const ERASE_PAGES: usize = 10_000;
/// How many per-key errors a failure names (the rest are counted).
const ERRORS_NAMED: usize = 5;

/// Why a CloudFront private key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RSA private key in PKCS#1 or PKCS#8 PEM form")]
pub struct KeyError;

/// CloudFront signed-URL settings: downloads go through this distribution when set.
#[derive(Clone, PartialEq, Eq)]
pub struct CloudFrontConfig {
    /// The distribution's domain (`d111111abcdef8.cloudfront.net`), or a base URL (`https://media.example.com`).
    pub domain: String,
    /// The CloudFront key pair (or public key) id.
    pub key_pair_id: String,
    /// The RSA private key, PEM (PKCS#1 or PKCS#8).
    pub private_key_pem: String,
}

impl fmt::Debug for CloudFrontConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key never reaches a log.
        f.debug_struct("CloudFrontConfig")
            .field("domain", &self.domain)
            .field("key_pair_id", &self.key_pair_id)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// Signs CloudFront URLs with a canned policy.
#[derive(Clone)]
pub struct CloudFrontSigner {
    base: String,
    key_pair_id: String,
    key: Arc<SigningKey<Sha1>>,
}

impl fmt::Debug for CloudFrontSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudFrontSigner")
            .field("base", &self.base)
            .field("key_pair_id", &self.key_pair_id)
            .finish()
    }
}

/// CloudFront's URL-safe base64: `+` → `-`, `=` → `_`, `/` → `~`.
fn cloudfront_base64(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            other => other,
        })
        .collect()
}

/// Percent-encodes an object key for a URL path, keeping `/` as the separator.
fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl CloudFrontSigner {
    /// A signer for the configured distribution and key.
    ///
    /// # Errors
    /// [`KeyError`] when the PEM is not an RSA private key.
    pub fn new(config: &CloudFrontConfig) -> Result<Self, KeyError> {
        let pem = config.private_key_pem.trim();
        let key = rsa::PrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| rsa::PrivateKey::from_pkcs8_pem(pem))
            .map_err(|_| KeyError)?;
        let domain = config.domain.trim_end_matches('/');
        let base = if domain.contains("://") {
            domain.to_owned()
        } else {
            format!("https://{domain}")
        };
        Ok(Self {
            base,
            key_pair_id: config.key_pair_id.clone(),
            key: Arc::new(SigningKey::new(key)),
        })
    }

    /// The canned policy CloudFront checks for `url` until `expires` (epoch seconds), byte for byte.
    pub fn canned_policy(url: &str, expires: u64) -> String {
        format!(
            r#"{{"Statement":[{{"Resource":"{url}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
        )
    }

    /// The signed URL of object `key`, valid until `expires` (epoch seconds).
    pub fn sign(&self, key: &str, expires: u64) -> String {
        let url = format!("{}/{}", self.base, encode_path(key));
        let policy = Self::canned_policy(&url, expires);
        let signature = self.key.sign(policy.as_bytes()).to_vec();
        format!(
            "{url}?Expires={expires}&Signature={}&Key-Pair-Id={}",
            cloudfront_base64(&signature),
            self.key_pair_id
        )
    }
}

/// The media store on one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3MediaStore {
    client: Client,
    bucket: Arc<str>,
    cloudfront: Option<CloudFrontSigner>,
}

/// `content-type` → `Content-Type`: the presigner names headers in lower case, but clients read the
/// names as JSON keys (`upload.headers["Content-Type"]`, as `API.md` writes them), where case matters.
fn canonical_header_name(name: &str) -> String {
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

fn signed(request: &PresignedRequest, expires_at: Timestamp) -> SignedRequest {
    let headers: BTreeMap<String, String> = request
        .headers()
        .map(|(name, value)| (canonical_header_name(name), value.to_owned()))
        .collect();
    SignedRequest {
        url: request.uri().to_owned(),
        method: request.method().to_owned(),
        headers,
        expires_at,
    }
}

fn presigning(now: Timestamp, ttl: Duration) -> Result<PresigningConfig, MediaError> {
    PresigningConfig::builder()
        .start_time(now.to_system_time())
        .expires_in(ttl)
        .build()
        .map_err(|e| MediaError::Unavailable(Failure::permanent(format!("presigning: {e}"))))
}

impl S3MediaStore {
    /// A store on `bucket`, through `client` (downloads presigned by S3 until [`Self::with_cloudfront`]).
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: Arc::from(bucket.into()),
            cloudfront: None,
        }
    }

    /// The same store, handing out CloudFront signed URLs for downloads.
    #[must_use]
    pub fn with_cloudfront(mut self, signer: CloudFrontSigner) -> Self {
        self.cloudfront = Some(signer);
        self
    }
}

impl S3MediaStore {
    /// The key prefix of every object of `owner` (`media/<owner>/`, as [`MediaObject::declare`] builds
    /// keys; a user id holds no `/`, so no other user's keys share it).
    pub fn owner_prefix(owner: &UserId) -> String {
        format!("media/{owner}/")
    }

    /// Deletes the listed `keys` with one `DeleteObjects` (quiet: only errors are answered).
    async fn delete_keys(&self, keys: Vec<ObjectIdentifier>) -> Result<(), Failure> {
        let count = keys.len();
        let delete = Delete::builder()
            .set_objects(Some(keys))
            .quiet(true)
            .build()
            .map_err(|e| Failure::permanent(format!("DeleteObjects request: {e}")))?;
        let out = self
            .client
            .delete_objects()
            .bucket(self.bucket.as_ref())
            .delete(delete)
            .send()
            .await
            .map_err(|e| sdk_failure("DeleteObjects", &e))?;
        let errors = out.errors.unwrap_or_default();
        if errors.is_empty() {
            return Ok(());
        }
        let retryable = errors.iter().all(|e| is_transient(e.code.as_deref(), None));
        let named: Vec<String> = errors
            .iter()
            .take(ERRORS_NAMED)
            .map(|e| {
                format!(
                    "{}: {} {}",
                    e.key.as_deref().unwrap_or("?"),
                    e.code.as_deref().unwrap_or("?"),
                    e.message.as_deref().unwrap_or("")
                )
            })
            .collect();
        let message = format!(
            "DeleteObjects left {} of {count} keys: {}",
            errors.len(),
            named.join("; ")
        );
        Err(if retryable {
            Failure::transient(message)
        } else {
            Failure::permanent(message)
        })
    }

    /// Deletes every object under `owner`'s prefix, a `ListObjectsV2` page (at most 1,000 keys) at a
    /// time, each page with one `DeleteObjects`, and returns how many keys were deleted.
    ///
    /// Harmless to repeat (a prefix with no object lists nothing). On a versioned bucket a delete adds
    /// a delete marker and the older versions stay until a lifecycle rule expires them (decision 0010).
    /// A presigned upload URL handed out before cannot be revoked: it works until it expires
    /// (`upload_url`'s `ttl`).
    ///
    /// # Errors
    /// A [`Failure`] when S3 refuses or cannot be reached, when a key could not be deleted (named in
    /// the message; transient when every such error is), or when the prefix holds more than
    /// `ERASE_PAGES` pages.
    pub async fn erase_objects_of(&self, owner: &UserId) -> Result<u64, Failure> {
        let prefix = Self::owner_prefix(owner);
        let mut token: Option<String> = None;
        let mut deleted = 0u64;
        for _ in 0..ERASE_PAGES {
            let page = self
                .client
                .list_objects_v2()
                .bucket(self.bucket.as_ref())
                .prefix(&prefix)
                .max_keys(DELETE_BATCH)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_failure("ListObjectsV2", &e))?;
            let mut keys = Vec::new();
            for object in page.contents.unwrap_or_default() {
                let Some(key) = object.key else { continue };
                // S3 lists only keys under the prefix; a key outside it is never deleted here.
                if !key.starts_with(&prefix) {
                    continue;
                }
                keys.push(
                    ObjectIdentifier::builder()
                        .key(key)
                        .build()
                        .map_err(|e| Failure::permanent(format!("DeleteObjects key: {e}")))?,
                );
            }
            if !keys.is_empty() {
                let count = keys.len() as u64;
                self.delete_keys(keys).await?;
                deleted += count;
            }
            match page.next_continuation_token {
                Some(next) if page.is_truncated == Some(true) => token = Some(next),
                _ => return Ok(deleted),
            }
        }
        Err(Failure::transient(format!(
            "{prefix} holds more than {ERASE_PAGES} pages of objects: {deleted} deleted, the rest left"
        )))
    }
}

impl MediaStore for S3MediaStore {
    async fn upload_url(
        &self,
        object: &MediaObject,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<SignedRequest, MediaError> {
        let size = i64::try_from(object.size)
            .map_err(|_| MediaError::Unavailable(Failure::permanent("object size does not fit S3's Content-Length")))?;
        let request = self
            .client
            .put_object()
            .bucket(self.bucket.as_ref())
            .key(&object.key)
            .content_type(&object.content_type)
            .content_length(size)
            .presigned(presigning(now, ttl)?)
            .await
            .map_err(|e| MediaError::Unavailable(sdk_failure("PutObject presign", &e)))?;
        let mut signed = signed(&request, now.plus(ttl));
        // The SDK signs both headers; name them for the client too, so it sends exactly what was signed.
        signed
            .headers
            .insert("Content-Type".into(), object.content_type.clone());
        signed.headers.insert("Content-Length".into(), object.size.to_string());
        Ok(signed)
    }

    async fn download_url(
        &self,
        object: &MediaObject,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<SignedRequest, MediaError> {
        let expires_at = now.plus(ttl);
        if let Some(signer) = &self.cloudfront {
            let expires = expires_at.as_millis() / 1000;
            return Ok(SignedRequest {
                url: signer.sign(&object.key, expires),
                method: "GET".into(),
                headers: BTreeMap::new(),
                expires_at: Timestamp::from_millis(expires * 1000),
            });
        }
        let request = self
            .client
            .get_object()
            .bucket(self.bucket.as_ref())
            .key(&object.key)
            .presigned(presigning(now, ttl)?)
            .await
            .map_err(|e| MediaError::Unavailable(sdk_failure("GetObject presign", &e)))?;
        Ok(signed(&request, expires_at))
    }

    async fn status(&self, object: &MediaObject) -> Result<ObjectStatus, MediaError> {
        let outcome = self
            .client
            .head_object()
            .bucket(self.bucket.as_ref())
            .key(&object.key)
            .send()
            .await;
        match outcome {
            Ok(head) => Ok(ObjectStatus::Uploaded {
                size: head.content_length.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            }),
            Err(SdkError::ServiceError(context))
                if context.err().is_not_found() || context.raw().status().as_u16() == 404 =>
            {
                Ok(ObjectStatus::Pending)
            }
            Err(error) => Err(MediaError::Unavailable(sdk_failure("HeadObject", &error))),
        }
    }

    async fn erase_owner(&self, owner: &UserId) -> Result<(), MediaError> {
        let deleted = self.erase_objects_of(owner).await.map_err(MediaError::Unavailable)?;
        tracing::debug!(user = %owner, deleted, "media objects erased");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use rookery_domain::{Limits, MediaId, UserId};
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;

    use super::*;

    const PKCS1: &str = include_str!("../testdata/cloudfront-test-key.pem");
    const PKCS8: &str = include_str!("../testdata/cloudfront-test-key-pkcs8.pem");

    fn client() -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"))
            .force_path_style(true)
            .endpoint_url("http://127.0.0.1:9")
            .build();
        Client::from_conf(config)
    }

    fn object() -> MediaObject {
        MediaObject::declare(
            MediaId::parse("m1").unwrap(),
            UserId::parse("alice").unwrap(),
            "image/png",
            1234,
            Timestamp::from_millis(1_795_600_800_000),
            &Limits::default(),
        )
        .unwrap()
    }

    fn query(url: &str) -> BTreeMap<String, String> {
        url.split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace("%3B", ";").replace("%3b", ";")))
            .collect()
    }

    #[tokio::test]
    async fn presigned_put_signs_content_type_content_length_and_expiry() {
        let store = S3MediaStore::new(client(), "media");
        let now = Timestamp::from_millis(1_795_600_800_000);
        let request = store
            .upload_url(&object(), now, Duration::from_secs(900))
            .await
            .unwrap();
        assert_eq!(request.method, "PUT");
        assert!(
            request.url.starts_with("http://127.0.0.1:9/media/media/alice/m1?"),
            "{}",
            request.url
        );
        let params = query(&request.url);
        let signed_headers: Vec<&str> = params["X-Amz-SignedHeaders"].split(';').collect();
        assert!(signed_headers.contains(&"content-type"), "{signed_headers:?}");
        assert!(signed_headers.contains(&"content-length"), "{signed_headers:?}");
        assert!(signed_headers.contains(&"host"));
        assert_eq!(params["X-Amz-Expires"], "900");
        assert_eq!(params["X-Amz-Date"], "20261125T100000Z", "signed as of `now`");
        assert!(params.contains_key("X-Amz-Signature"));
        assert_eq!(
            request.headers.get("Content-Type").map(String::as_str),
            Some("image/png")
        );
        assert_eq!(request.headers.get("Content-Length").map(String::as_str), Some("1234"));
        assert_eq!(
            request.headers.len(),
            2,
            "only the signed headers, named once: {:?}",
            request.headers
        );
        assert_eq!(request.expires_at, now.plus(Duration::from_secs(900)));
    }

    #[tokio::test]
    async fn presigned_get_is_used_without_cloudfront() {
        let store = S3MediaStore::new(client(), "media");
        let now = Timestamp::from_millis(1_795_600_800_000);
        let request = store
            .download_url(&object(), now, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(query(&request.url)["X-Amz-Expires"], "60");
    }

    #[tokio::test]
    async fn cloudfront_urls_carry_a_canned_policy_signature_that_verifies() {
        for pem in [PKCS1, PKCS8] {
            let config = CloudFrontConfig {
                domain: "d111111abcdef8.cloudfront.net".into(),
                key_pair_id: "K2JCJMDEHXQW5F".into(),
                private_key_pem: pem.into(),
            };
            let signer = CloudFrontSigner::new(&config).unwrap();
            let store = S3MediaStore::new(client(), "media").with_cloudfront(signer.clone());
            let now = Timestamp::from_millis(1_795_600_800_000);
            let request = store
                .download_url(&object(), now, Duration::from_secs(300))
                .await
                .unwrap();
            let (base, _) = request.url.split_once('?').unwrap();
            assert_eq!(base, "https://d111111abcdef8.cloudfront.net/media/alice/m1");
            let params = query(&request.url);
            let expires = 1_795_600_800 + 300;
            assert_eq!(params["Expires"], expires.to_string());
            assert_eq!(params["Key-Pair-Id"], "K2JCJMDEHXQW5F");
            assert_eq!(request.expires_at, Timestamp::from_millis(expires * 1000));

            let signature = params["Signature"]
                .replace('-', "+")
                .replace('_', "=")
                .replace('~', "/");
            let signature = Signature::try_from(STANDARD.decode(signature).unwrap().as_slice()).unwrap();
            let private = rsa::PrivateKey::from_pkcs1_pem(PKCS1).unwrap();
            let verifier = VerifyingKey::<Sha1>::new(private.to_public_key());
            let policy = CloudFrontSigner::canned_policy(base, expires);
            assert_eq!(
                policy,
                format!(
                    r#"{{"Statement":[{{"Resource":"{base}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
                )
            );
            verifier.verify(policy.as_bytes(), &signature).unwrap();
            let tampered = CloudFrontSigner::canned_policy(base, expires + 1);
            assert!(
                verifier.verify(tampered.as_bytes(), &signature).is_err(),
                "another expiry does not verify"
            );
        }
    }

    #[test]
    fn a_key_that_is_not_rsa_pem_is_refused() {
        let config = CloudFrontConfig {
            domain: "d".into(),
            key_pair_id: "k".into(),
            private_key_pem: "nope".into(),
        };
        assert_eq!(CloudFrontSigner::new(&config).err(), Some(KeyError));
    }

    #[test]
    fn cloudfront_base64_is_url_safe_in_its_own_way() {
        assert_eq!(cloudfront_base64(&[0xfb, 0xff, 0xfe]), "-~~-");
        assert_eq!(cloudfront_base64(&[0xff]), "~w__");
        assert_eq!(encode_path("media/a b/ü"), "media/a%20b/%C3%BC");
    }
}
