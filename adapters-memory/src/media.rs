//! The local media store: signed, expiring upload and download URLs served by `rookery serve` itself,
//! with the bytes in memory or in a directory.
//!
//! It plays the part S3 and CloudFront play on AWS. A signature is an HMAC-SHA256 over the method, the key
//! and, for an upload, the exact `Content-Type` and `Content-Length`, and the expiry, so a URL can store
//! exactly the declared object under exactly its key, once, until it expires. The HTTP layer calls
//! [`LocalMediaStore::accept_upload`] and [`LocalMediaStore::fetch`] for the signed routes and maps their
//! typed errors to statuses.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rookery_domain::{MediaObject, Timestamp, UserId};
use rookery_ports::{Failure, MediaError, MediaStore, ObjectStatus, SignedRequest};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The path prefix of signed upload URLs: `PUT {base}/media-upload/{key}`.
pub const UPLOAD_PATH: &str = "/media-upload/";
/// The path prefix of signed download URLs: `GET {base}/media/{key}`.
pub const DOWNLOAD_PATH: &str = "/media/";

/// How many declared-but-not-uploaded objects are remembered to explain a refused upload.
const DECLARED_CAPACITY: usize = 100_000;
/// The longest key accepted.
const MAX_KEY_LEN: usize = 1024;
/// Temporary upload files live here, under the blob directory; no key segment can start with a dot.
const TMP_DIR: &str = ".uploads";

/// Why an upload to a signed URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// The signature does not match the key, type, size and expiry (or is malformed): `403`.
    #[error("the signature does not match this request")]
    BadSignature,
    /// The URL has expired: `403`.
    #[error("the signed URL has expired")]
    Expired,
    /// The `Content-Type` is not the one the URL was signed for: `400`.
    #[error("Content-Type must be {expected}, not {got}")]
    WrongType {
        /// The signed type.
        expected: String,
        /// The type sent.
        got: String,
    },
    /// The `Content-Length` or the body's length is not the size the URL was signed for: `400`.
    #[error("the body must be exactly {expected} bytes, not {got}")]
    WrongSize {
        /// The signed size.
        expected: u64,
        /// The size sent.
        got: u64,
    },
    /// An object is already stored under the key; each key takes exactly one upload: `409`.
    #[error("an object was already uploaded under this key")]
    AlreadyUploaded,
    /// The body is larger than the store accepts: `413`.
    #[error("{size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The body's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The key's owner was erased: nothing is stored under their prefix again: `410`.
    #[error("the account this upload belongs to was erased")]
    Erased,
    /// The bytes could not be stored: `500`.
    #[error("media storage failed: {0}")]
    Io(String),
}

/// Why a signed download was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The signature does not match the key and expiry (or is malformed): `403`.
    #[error("the signature does not match this request")]
    BadSignature,
    /// The URL has expired: `403`.
    #[error("the signed URL has expired")]
    Expired,
    /// Nothing was uploaded under the key: `404`.
    #[error("no object under this key")]
    NotFound,
    /// The bytes could not be read: `500`.
    #[error("media storage failed: {0}")]
    Io(String),
}

/// An upload as the HTTP layer received it.
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    /// The key, from the path after [`UPLOAD_PATH`] (percent-decoded).
    pub key: &'a str,
    /// The `expires` query parameter, as sent.
    pub expires: &'a str,
    /// The `sig` query parameter, as sent.
    pub sig: &'a str,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The `Content-Length` header, if any.
    pub content_length: Option<u64>,
    /// The body.
    pub body: &'a [u8],
}

/// A stored object, as a signed download returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The type it was uploaded with.
    pub content_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Blob {
    content_type: String,
    bytes: Arc<Vec<u8>>,
}

enum Blobs {
    Memory(Mutex<HashMap<String, Blob>>),
    /// One file per key under the directory: the content type, a newline, then the bytes.
    Dir(PathBuf),
}

/// Objects declared by [`MediaStore::upload_url`] and not yet uploaded, so a refused upload can say
/// whether its type or its size was wrong instead of only that the signature did not match.
#[derive(Debug, Default)]
struct Declared {
    objects: BTreeMap<String, (String, u64)>,
    order: VecDeque<String>,
}

struct Inner {
    base_url: String,
    secret: Vec<u8>,
    blobs: Blobs,
    max_size: u64,
    declared: Mutex<Declared>,
    /// Names temporary upload files uniquely within the process.
    next_tmp: AtomicU64,
    /// The key prefixes of erased owners: no upload is stored under them again (for the life of the
    /// process; the URLs that could still upload expire within minutes).
    erased: Mutex<HashSet<String>>,
}

/// A [`MediaStore`] served by the local server. Clones share the same store.
#[derive(Clone)]
pub struct LocalMediaStore {
    inner: Arc<Inner>,
}

/// Never shows the signing secret, nor the stored bytes.
impl std::fmt::Debug for LocalMediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let storage = match &self.inner.blobs {
            Blobs::Memory(_) => "memory".to_owned(),
            Blobs::Dir(dir) => dir.display().to_string(),
        };
        f.debug_struct("LocalMediaStore")
            .field("base_url", &self.inner.base_url)
            .field("storage", &storage)
            .field("max_size", &self.inner.max_size)
            .finish_non_exhaustive()
    }
}

/// 32 random bytes from the operating system, for a signing secret.
///
/// # Errors
/// When `/dev/urandom` cannot be read.
pub fn generate_secret() -> io::Result<[u8; 32]> {
    let mut secret = [0u8; 32];
    File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

/// True for keys this store can hold: `/`-separated segments of `[A-Za-z0-9_.:@+-]`, each starting with a
/// letter or digit (so no `.`, `..` or hidden names), which are also safe in a URL path as they are.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.split('/').all(|segment| {
            let mut bytes = segment.bytes();
            bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
                && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'+' | b'-'))
        })
}

fn io_failure(error: &io::Error) -> String {
    error.to_string()
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, String> {
    mutex
        .lock()
        .map_err(|_| "the media store's lock was poisoned by a panic".to_owned())
}

impl LocalMediaStore {
    /// A store keeping bytes in memory, signing URLs under `base_url` (e.g. `http://127.0.0.1:8080`) with `secret`.
    pub fn in_memory(base_url: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self::with_blobs(
            base_url.into(),
            secret.into(),
            Blobs::Memory(Mutex::new(HashMap::new())),
        )
    }

    /// A store keeping bytes in files under `dir` (created if missing), so uploads survive restarts.
    /// Leftovers of uploads interrupted by a crash are removed.
    ///
    /// # Errors
    /// When the directory cannot be created or cleaned.
    pub fn in_dir(base_url: impl Into<String>, secret: impl Into<Vec<u8>>, dir: &Path) -> io::Result<Self> {
        let tmp = dir.join(TMP_DIR);
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(Self::with_blobs(
            base_url.into(),
            secret.into(),
            Blobs::Dir(dir.to_owned()),
        ))
    }

    fn with_blobs(base_url: String, secret: Vec<u8>, blobs: Blobs) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        Self {
            inner: Arc::new(Inner {
                base_url,
                secret,
                blobs,
                max_size: u64::MAX,
                declared: Mutex::new(Declared::default()),
                next_tmp: AtomicU64::new(0),
                erased: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Refuses uploads larger than `max` bytes with [`UploadError::TooLarge`] (no limit by default:
    /// the declared size is already checked against the contract's limit when the object is declared).
    ///
    /// Call it right after construction: it applies to this handle and the clones made from it afterwards.
    #[must_use]
    pub fn with_max_size(mut self, max: u64) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.max_size = max;
        } else {
            tracing::warn!("with_max_size called on a shared media store; the limit is not changed");
        }
        self
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this never fails; the fallback only satisfies the type.
        HmacSha256::new_from_slice(&self.inner.secret)
            .unwrap_or_else(|_| HmacSha256::new(&hmac::digest::generic_array::GenericArray::default()))
    }

    fn upload_message(key: &str, content_type: &str, size: u64, expires: u64) -> String {
        format!("PUT\n{key}\n{content_type}\n{size}\n{expires}")
    }

    fn download_message(key: &str, expires: u64) -> String {
        format!("GET\n{key}\n{expires}")
    }

    fn sign(&self, message: &str) -> String {
        let mut mac = self.mac();
        mac.update(message.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Checks `sig` (hex) over `message` in constant time.
    fn verify(&self, message: &str, sig: &str) -> bool {
        let Ok(sig) = hex::decode(sig) else { return false };
        let mut mac = self.mac();
        mac.update(message.as_bytes());
        mac.verify_slice(&sig).is_ok()
    }

    fn remember_declared(&self, object: &MediaObject) -> Result<(), String> {
        let mut declared = lock(&self.inner.declared)?;
        if declared
            .objects
            .insert(object.key.clone(), (object.content_type.clone(), object.size))
            .is_none()
        {
            declared.order.push_back(object.key.clone());
        }
        while declared.order.len() > DECLARED_CAPACITY {
            if let Some(oldest) = declared.order.pop_front() {
                declared.objects.remove(&oldest);
            }
        }
        Ok(())
    }

    /// Stores the body of a signed upload, once per key.
    ///
    /// Checks, in order: the signature over the key, the sent `Content-Type` and `Content-Length` and the
    /// expiry (when it does not match but the URL was issued for another type or size, that is reported as
    /// [`UploadError::WrongType`] or [`UploadError::WrongSize`]); the expiry against `now`; that the body is
    /// exactly `Content-Length` bytes; the size limit; that nothing was uploaded under the key yet.
    /// Returns the stored size.
    ///
    /// This does blocking file I/O for a directory store; call it from `spawn_blocking` for large bodies.
    ///
    /// # Errors
    /// The first [`UploadError`] that applies.
    pub fn accept_upload(&self, upload: &Upload<'_>, now: Timestamp) -> Result<u64, UploadError> {
        let expires: u64 = upload.expires.parse().map_err(|_| UploadError::BadSignature)?;
        if !valid_key(upload.key) {
            return Err(UploadError::BadSignature);
        }
        let body_len = upload.body.len() as u64;
        let content_type = upload.content_type.unwrap_or("");
        let size = upload.content_length.unwrap_or(body_len);
        if !self.verify(
            &Self::upload_message(upload.key, content_type, size, expires),
            upload.sig,
        ) {
            return Err(self.explain_mismatch(upload.key, content_type, size, expires, upload.sig));
        }
        if now.as_millis() > expires {
            return Err(UploadError::Expired);
        }
        if upload.content_length != Some(body_len) {
            return Err(UploadError::WrongSize {
                expected: size,
                got: body_len,
            });
        }
        if body_len > self.inner.max_size {
            return Err(UploadError::TooLarge {
                size: body_len,
                max: self.inner.max_size,
            });
        }
        self.store_blob(upload.key, content_type, upload.body)?;
        if let Ok(mut declared) = lock(&self.inner.declared) {
            declared.objects.remove(upload.key);
        }
        Ok(body_len)
    }

    /// Why a signature did not match: a wrong type or size when the URL was issued for another one.
    fn explain_mismatch(&self, key: &str, content_type: &str, size: u64, expires: u64, sig: &str) -> UploadError {
        let declared = lock(&self.inner.declared)
            .ok()
            .and_then(|d| d.objects.get(key).cloned());
        let Some((expected_type, expected_size)) = declared else {
            return UploadError::BadSignature;
        };
        if !self.verify(&Self::upload_message(key, &expected_type, expected_size, expires), sig) {
            return UploadError::BadSignature;
        }
        if content_type != expected_type {
            UploadError::WrongType {
                expected: expected_type,
                got: content_type.to_owned(),
            }
        } else if size != expected_size {
            UploadError::WrongSize {
                expected: expected_size,
                got: size,
            }
        } else {
            UploadError::BadSignature
        }
    }

    fn store_blob(&self, key: &str, content_type: &str, body: &[u8]) -> Result<(), UploadError> {
        match &self.inner.blobs {
            Blobs::Memory(blobs) => {
                let mut blobs = lock(blobs).map_err(UploadError::Io)?;
                // Under the blobs' lock, which an erasure takes after marking the prefix: either this
                // sees the mark, or the erasure sees this blob.
                if self.is_erased(key).map_err(UploadError::Io)? {
                    return Err(UploadError::Erased);
                }
                if blobs.contains_key(key) {
                    return Err(UploadError::AlreadyUploaded);
                }
                let blob = Blob {
                    content_type: content_type.to_owned(),
                    bytes: Arc::new(body.to_vec()),
                };
                blobs.insert(key.to_owned(), blob);
                Ok(())
            }
            Blobs::Dir(dir) => self.store_file(dir, key, content_type, body),
        }
    }

    /// Writes the object to a temporary file, syncs it, then links it under its key: the link fails if
    /// the key is taken, so exactly one upload wins even across processes, and no reader ever sees half a file.
    fn store_file(&self, dir: &Path, key: &str, content_type: &str, body: &[u8]) -> Result<(), UploadError> {
        let io = |e: io::Error| UploadError::Io(io_failure(&e));
        if self.is_erased(key).map_err(UploadError::Io)? {
            return Err(UploadError::Erased);
        }
        let path = dir.join(key);
        if path.exists() {
            return Err(UploadError::AlreadyUploaded);
        }
        let n = self.inner.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(TMP_DIR).join(format!("{}-{n}.part", std::process::id()));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(content_type.as_bytes())?;
            file.write_all(b"\n")?;
            file.write_all(body)?;
            file.sync_all()
        };
        let result = write().map_err(io).and_then(|()| {
            let parent = path.parent().unwrap_or(dir);
            fs::create_dir_all(parent).map_err(io)?;
            match fs::hard_link(&tmp, &path) {
                Ok(()) => File::open(parent).and_then(|d| d.sync_all()).map_err(io),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(UploadError::AlreadyUploaded),
                Err(e) => Err(io(e)),
            }
        });
        // The temporary name is only a staging place; whatever happened, it goes.
        let _ = fs::remove_file(&tmp);
        result?;
        // An erasure that marked the prefix after the check above may have missed this file: look again.
        if self.is_erased(key).map_err(UploadError::Io)? {
            let _ = fs::remove_file(&path);
            return Err(UploadError::Erased);
        }
        Ok(())
    }

    /// True when `key` is under the prefix of an erased owner.
    fn is_erased(&self, key: &str) -> Result<bool, String> {
        let erased = lock(&self.inner.erased)?;
        Ok(!erased.is_empty() && erased.iter().any(|prefix| key.starts_with(prefix.as_str())))
    }

    /// Deletes every object under `owner`'s prefix, and refuses uploads under it from now on.
    fn erase(&self, owner: &UserId) -> Result<(), String> {
        let prefix = format!("media/{owner}/");
        lock(&self.inner.erased)?.insert(prefix.clone());
        if let Ok(mut declared) = lock(&self.inner.declared) {
            declared.objects.retain(|key, _| !key.starts_with(prefix.as_str()));
            declared.order.retain(|key| !key.starts_with(prefix.as_str()));
        }
        match &self.inner.blobs {
            Blobs::Memory(blobs) => {
                lock(blobs)?.retain(|key, _| !key.starts_with(prefix.as_str()));
                Ok(())
            }
            Blobs::Dir(dir) => match fs::remove_dir_all(dir.join(prefix.trim_end_matches('/'))) {
                Ok(()) => File::open(dir.join("media"))
                    .and_then(|d| d.sync_all())
                    .or_else(|e| {
                        if e.kind() == io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| io_failure(&e)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_failure(&e)),
            },
        }
    }

    /// The stored object's type and size, if any.
    fn stored(&self, key: &str) -> Result<Option<(String, u64)>, String> {
        if !valid_key(key) {
            return Ok(None);
        }
        match &self.inner.blobs {
            Blobs::Memory(blobs) => Ok(lock(blobs)?
                .get(key)
                .map(|b| (b.content_type.clone(), b.bytes.len() as u64))),
            Blobs::Dir(dir) => {
                let mut file = match File::open(dir.join(key)) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io_failure(&e)),
                };
                let len = file.metadata().map_err(|e| io_failure(&e))?.len();
                let mut head = [0u8; 256];
                let read = file.read(&mut head).map_err(|e| io_failure(&e))?;
                let newline = head[..read]
                    .iter()
                    .position(|b| *b == b'\n')
                    .ok_or_else(|| format!("{key}: stored object has no header"))?;
                let content_type = String::from_utf8_lossy(&head[..newline]).into_owned();
                Ok(Some((content_type, len - newline as u64 - 1)))
            }
        }
    }

    /// The object under a signed download URL's key.
    ///
    /// Checks the signature over the key and expiry, then the expiry against `now`.
    ///
    /// # Errors
    /// The first [`FetchError`] that applies.
    pub fn fetch(&self, key: &str, expires: &str, sig: &str, now: Timestamp) -> Result<Fetched, FetchError> {
        let expires: u64 = expires.parse().map_err(|_| FetchError::BadSignature)?;
        if !valid_key(key) || !self.verify(&Self::download_message(key, expires), sig) {
            return Err(FetchError::BadSignature);
        }
        if now.as_millis() > expires {
            return Err(FetchError::Expired);
        }
        match &self.inner.blobs {
            Blobs::Memory(blobs) => {
                let blob = lock(blobs)
                    .map_err(FetchError::Io)?
                    .get(key)
                    .cloned()
                    .ok_or(FetchError::NotFound)?;
                Ok(Fetched {
                    content_type: blob.content_type,
                    bytes: blob.bytes.to_vec(),
                })
            }
            Blobs::Dir(dir) => {
                let mut bytes = match fs::read(dir.join(key)) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FetchError::NotFound),
                    Err(e) => return Err(FetchError::Io(io_failure(&e))),
                };
                let newline = bytes
                    .iter()
                    .position(|b| *b == b'\n')
                    .ok_or_else(|| FetchError::Io(format!("{key}: stored object has no header")))?;
                let content_type = String::from_utf8_lossy(&bytes[..newline]).into_owned();
                bytes.drain(..=newline);
                Ok(Fetched { content_type, bytes })
            }
        }
    }

    fn url(&self, prefix: &str, key: &str, expires: u64, sig: &str) -> String {
        format!("{}{prefix}{key}?expires={expires}&sig={sig}", self.inner.base_url)
    }

    fn check_key(key: &str) -> Result<(), MediaError> {
        if valid_key(key) {
            Ok(())
        } else {
            Err(MediaError::Unavailable(Failure::permanent(format!(
                "media key {key:?} is not URL-safe"
            ))))
        }
    }
}

impl MediaStore for LocalMediaStore {
    async fn upload_url(
        &self,
        object: &MediaObject,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<SignedRequest, MediaError> {
        Self::check_key(&object.key)?;
        let expires_at = now.plus(ttl);
        let expires = expires_at.as_millis();
        let sig = self.sign(&Self::upload_message(
            &object.key,
            &object.content_type,
            object.size,
            expires,
        ));
        self.remember_declared(object)
            .map_err(|e| MediaError::Unavailable(Failure::permanent(e)))?;
        let headers = BTreeMap::from([
            ("Content-Type".to_owned(), object.content_type.clone()),
            ("Content-Length".to_owned(), object.size.to_string()),
        ]);
        Ok(SignedRequest {
            url: self.url(UPLOAD_PATH, &object.key, expires, &sig),
            method: "PUT".into(),
            headers,
            expires_at,
        })
    }

    async fn download_url(
        &self,
        object: &MediaObject,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<SignedRequest, MediaError> {
        Self::check_key(&object.key)?;
        let expires_at = now.plus(ttl);
        let sig = self.sign(&Self::download_message(&object.key, expires_at.as_millis()));
        Ok(SignedRequest {
            url: self.url(DOWNLOAD_PATH, &object.key, expires_at.as_millis(), &sig),
            method: "GET".into(),
            headers: BTreeMap::new(),
            expires_at,
        })
    }

    /// Deletes the owner's files (or in-memory blobs) and marks their prefix, so a URL signed before
    /// cannot store anything under it again. Unlinking frees a file's blocks without overwriting them;
    /// the decision record on erasure says what that means for the disk.
    async fn erase_owner(&self, owner: &UserId) -> Result<(), MediaError> {
        self.erase(owner)
            .map_err(|e| MediaError::Unavailable(Failure::transient(format!("erasing media: {e}"))))
    }

    async fn status(&self, object: &MediaObject) -> Result<ObjectStatus, MediaError> {
        match self.stored(&object.key) {
            Ok(Some((_, size))) => Ok(ObjectStatus::Uploaded { size }),
            Ok(None) => Ok(ObjectStatus::Pending),
            Err(e) => Err(MediaError::Unavailable(Failure::transient(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use rookery_domain::{Limits, MediaId, UserId};

    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);
    const TTL: Duration = Duration::from_secs(900);

    fn object(id: &str, content_type: &str, size: u64) -> MediaObject {
        let (id, owner) = (
            MediaId::parse(id).expect("id"),
            UserId::parse("alice@example.com").expect("owner"),
        );
        MediaObject::declare(id, owner, content_type, size, NOW, &Limits::default()).expect("declared")
    }

    /// Splits a signed URL into its key, `expires` and `sig`, as the HTTP layer would.
    fn parts<'a>(url: &'a str, prefix: &str) -> (&'a str, &'a str, &'a str) {
        let rest = url
            .strip_prefix("http://127.0.0.1:8080")
            .and_then(|r| r.strip_prefix(prefix))
            .expect("prefix");
        let (key, query) = rest.split_once('?').expect("query");
        let (expires, sig) = query.split_once("&sig=").expect("sig");
        (key, expires.strip_prefix("expires=").expect("expires"), sig)
    }

    fn upload<'a>(url: &'a str, content_type: &'a str, length: Option<u64>, body: &'a [u8]) -> Upload<'a> {
        let (key, expires, sig) = parts(url, UPLOAD_PATH);
        Upload {
            key,
            expires,
            sig,
            content_type: Some(content_type),
            content_length: length,
            body,
        }
    }

    fn stores() -> Result<Vec<(LocalMediaStore, Option<tempfile::TempDir>)>, io::Error> {
        let dir = tempfile::tempdir()?;
        Ok(vec![
            (
                LocalMediaStore::in_memory("http://127.0.0.1:8080/", b"secret".to_vec()),
                None,
            ),
            (
                LocalMediaStore::in_dir("http://127.0.0.1:8080", b"secret".to_vec(), dir.path())?,
                Some(dir),
            ),
        ])
    }

    #[tokio::test]
    async fn a_signed_upload_stores_the_object_once_and_a_signed_download_returns_it()
    -> Result<(), Box<dyn std::error::Error>> {
        for (store, _dir) in stores()? {
            let png = object("m1", "image/png", 5);
            assert_eq!(store.status(&png).await?, ObjectStatus::Pending);
            let put = store.upload_url(&png, NOW, TTL).await?;
            assert_eq!(put.method, "PUT");
            assert!(
                put.url
                    .starts_with("http://127.0.0.1:8080/media-upload/media/alice@example.com/m1?expires=")
            );
            assert_eq!(put.headers.get("Content-Type").map(String::as_str), Some("image/png"));
            assert_eq!(put.headers.get("Content-Length").map(String::as_str), Some("5"));
            assert_eq!(put.expires_at, NOW.plus(TTL));

            assert_eq!(
                store.accept_upload(&upload(&put.url, "image/png", Some(5), b"hello"), NOW),
                Ok(5)
            );
            assert_eq!(store.status(&png).await?, ObjectStatus::Uploaded { size: 5 });
            let again = store.accept_upload(&upload(&put.url, "image/png", Some(5), b"HELLO"), NOW);
            assert_eq!(again, Err(UploadError::AlreadyUploaded));

            let get = store.download_url(&png, NOW, TTL).await?;
            assert_eq!(get.method, "GET");
            let (key, expires, sig) = parts(&get.url, DOWNLOAD_PATH);
            assert_eq!(key, png.key);
            let fetched = store.fetch(key, expires, sig, NOW)?;
            assert_eq!(
                fetched,
                Fetched {
                    content_type: "image/png".into(),
                    bytes: b"hello".to_vec()
                }
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn uploads_must_match_the_signed_type_size_and_expiry() -> Result<(), Box<dyn std::error::Error>> {
        for (store, _dir) in stores()? {
            let pdf = object("m2", "application/pdf", 3);
            let put = store.upload_url(&pdf, NOW, TTL).await?;
            let try_upload =
                |t: &str, len: Option<u64>, body: &[u8], now| store.accept_upload(&upload(&put.url, t, len, body), now);
            assert!(matches!(
                try_upload("image/png", Some(3), b"abc", NOW),
                Err(UploadError::WrongType { .. })
            ));
            assert_eq!(
                try_upload("application/pdf", Some(4), b"abcd", NOW),
                Err(UploadError::WrongSize { expected: 3, got: 4 })
            );
            assert!(matches!(
                try_upload("application/pdf", Some(3), b"ab", NOW),
                Err(UploadError::WrongSize { .. })
            ));
            assert!(matches!(
                try_upload("application/pdf", None, b"abc", NOW),
                Err(UploadError::WrongSize { .. })
            ));
            let late = NOW.plus(TTL + Duration::from_millis(1));
            assert_eq!(
                try_upload("application/pdf", Some(3), b"abc", late),
                Err(UploadError::Expired)
            );
            assert_eq!(
                store.status(&pdf).await?,
                ObjectStatus::Pending,
                "nothing refused was stored"
            );
            // Valid up to and including the expiry instant.
            assert_eq!(try_upload("application/pdf", Some(3), b"abc", NOW.plus(TTL)), Ok(3));
        }
        Ok(())
    }

    #[tokio::test]
    async fn tampered_urls_are_bad_signatures() -> Result<(), Box<dyn std::error::Error>> {
        for (store, _dir) in stores()? {
            let png = object("m3", "image/png", 2);
            let put = store.upload_url(&png, NOW, TTL).await?;
            let (key, expires, sig) = parts(&put.url, UPLOAD_PATH);
            let base = Upload {
                key,
                expires,
                sig,
                content_type: Some("image/png"),
                content_length: Some(2),
                body: b"ok",
            };
            let later = (expires.parse::<u64>()? + 60_000).to_string();
            let flipped = format!("{}{}", &sig[..63], if sig.ends_with('0') { '1' } else { '0' });
            let cases = [
                Upload {
                    key: "media/alice@example.com/other",
                    ..base
                },
                Upload {
                    key: "media/bob/m3",
                    ..base
                },
                Upload {
                    key: "../etc/passwd",
                    ..base
                },
                Upload {
                    expires: &later,
                    ..base
                },
                Upload {
                    expires: "soon",
                    ..base
                },
                Upload { sig: &flipped, ..base },
                Upload { sig: "zz", ..base },
                Upload { sig: "", ..base },
            ];
            for case in cases {
                assert_eq!(
                    store.accept_upload(&case, NOW),
                    Err(UploadError::BadSignature),
                    "{case:?}"
                );
            }
            // Another store's secret does not sign for this one.
            let other = LocalMediaStore::in_memory("http://127.0.0.1:8080", b"other".to_vec());
            assert_eq!(other.accept_upload(&base, NOW), Err(UploadError::BadSignature));
            assert_eq!(store.accept_upload(&base, NOW), Ok(2));

            let get = store.download_url(&png, NOW, TTL).await?;
            let (key, expires, sig) = parts(&get.url, DOWNLOAD_PATH);
            assert_eq!(store.fetch(key, expires, &flipped, NOW), Err(FetchError::BadSignature));
            assert_eq!(
                store.fetch("media/bob/m3", expires, sig, NOW),
                Err(FetchError::BadSignature)
            );
            assert_eq!(
                store.fetch(key, expires, sig, NOW.plus(TTL * 2)),
                Err(FetchError::Expired)
            );
            // A download URL cannot be used to upload, nor an upload URL to download.
            let as_upload = Upload {
                key,
                expires,
                sig,
                ..base
            };
            assert_eq!(store.accept_upload(&as_upload, NOW), Err(UploadError::BadSignature));
            let (_, put_expires, put_sig) = parts(&put.url, UPLOAD_PATH);
            assert_eq!(
                store.fetch(key, put_expires, put_sig, NOW),
                Err(FetchError::BadSignature)
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_download_before_the_upload_is_not_found_and_limits_apply() -> Result<(), Box<dyn std::error::Error>> {
        let store = LocalMediaStore::in_memory("http://127.0.0.1:8080", b"k".to_vec()).with_max_size(4);
        let big = object("m4", "video/mp4", 5);
        let get = store.download_url(&big, NOW, TTL).await?;
        let (key, expires, sig) = parts(&get.url, DOWNLOAD_PATH);
        assert_eq!(store.fetch(key, expires, sig, NOW), Err(FetchError::NotFound));
        let put = store.upload_url(&big, NOW, TTL).await?;
        let refused = store.accept_upload(&upload(&put.url, "video/mp4", Some(5), b"12345"), NOW);
        assert_eq!(refused, Err(UploadError::TooLarge { size: 5, max: 4 }));
        Ok(())
    }

    #[tokio::test]
    async fn a_directory_store_keeps_objects_across_restarts() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let png = object("m5", "image/png", 3);
        let store = LocalMediaStore::in_dir("http://127.0.0.1:8080", b"k".to_vec(), dir.path())?;
        let put = store.upload_url(&png, NOW, TTL).await?;
        store.accept_upload(&upload(&put.url, "image/png", Some(3), b"\n\0x"), NOW)?;
        drop(store);
        let reopened = LocalMediaStore::in_dir("http://127.0.0.1:8080", b"k".to_vec(), dir.path())?;
        assert_eq!(reopened.status(&png).await?, ObjectStatus::Uploaded { size: 3 });
        let get = reopened.download_url(&png, NOW, TTL).await?;
        let (key, expires, sig) = parts(&get.url, DOWNLOAD_PATH);
        assert_eq!(reopened.fetch(key, expires, sig, NOW)?.bytes, b"\n\0x");
        assert_eq!(
            reopened.accept_upload(&upload(&put.url, "image/png", Some(3), b"abc"), NOW),
            Err(UploadError::AlreadyUploaded)
        );
        assert!(
            fs::read_dir(dir.path().join(TMP_DIR))?.next().is_none(),
            "no staging files are left"
        );
        Ok(())
    }

    #[test]
    fn keys_are_checked_segment_by_segment() {
        assert!(valid_key("media/alice@example.com/01HX-a.b:c+d_e"));
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "a/.hidden",
            ".",
            "a b",
            "a%2Fb",
            "a?b",
            "é",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let store = LocalMediaStore::in_memory("http://127.0.0.1:8080", b"hunter2-secret".to_vec());
        let shown = format!("{store:?}");
        assert!(
            shown.contains("127.0.0.1:8080") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn secrets_are_random() -> io::Result<()> {
        assert_ne!(generate_secret()?, generate_secret()?);
        Ok(())
    }
}
