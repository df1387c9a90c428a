//! The media store contract: every MUST of `rookery_ports::MediaStore`.
//!
//! Performing a signed request is adapter-specific (an HTTP call to S3, a call into the local server's
//! handler), so the factory does it; the checks decide what to send and judge the answers.
//! The checks that a signature is enforced (size, type, key, expiry, tampering) are a separate macro,
//! [`crate::media_store_signature_contract!`], because some emulators (moto's S3) do not check signatures.

use std::future::Future;
use std::time::Duration;

use rookery_domain::{MediaObject, Timestamp};
use rookery_ports::{MediaStore, ObjectStatus, SignedRequest};

use crate::fixtures::{BoxError, Outcome, media_object, user, wall_clock};

/// Makes a fresh media store for one check, and performs signed requests against it as a client would.
pub trait MediaFactory: Send + Sync {
    /// The adapter under test.
    type Store: MediaStore;

    /// A new store that shares no objects with any store made before.
    ///
    /// # Errors
    /// When the adapter cannot be set up (an emulator unreachable, a table not created).
    fn fresh(&self) -> impl Future<Output = Result<Self::Store, BoxError>> + Send;

    /// Sends `request` (its method, URL and exactly its headers) with `body`, at the current wall-clock time.
    /// `Ok` when the store accepted and stored the object, `Err` with the reason when it refused.
    fn upload(
        &self,
        store: &Self::Store,
        request: &SignedRequest,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Sends `request` (a signed `GET`) at the current wall-clock time: the object's bytes, or why it was refused.
    fn download(
        &self,
        store: &Self::Store,
        request: &SignedRequest,
    ) -> impl Future<Output = Result<Vec<u8>, String>> + Send;
}

const TTL: Duration = Duration::from_secs(15 * 60);

fn header<'a>(request: &'a SignedRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn with_header(request: &SignedRequest, name: &str, value: &str) -> SignedRequest {
    let mut tampered = request.clone();
    tampered.headers.retain(|k, _| !k.eq_ignore_ascii_case(name));
    tampered.headers.insert(name.to_owned(), value.to_owned());
    tampered
}

fn bytes(size: u64) -> Vec<u8> {
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}

fn object(content_type: &str, size: u64) -> Result<MediaObject, BoxError> {
    Ok(media_object(&user("alice")?, content_type, size, wall_clock())?)
}

/// An upload URL is a `PUT` that pins the object's type and size in the headers the client must send and
/// expires `ttl` after `now`; sending exactly that stores the object, and `status` then reports its size.
pub async fn check_upload_url_pins_type_and_size<F: MediaFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let photo = object("image/png", 64)?;
    let now = wall_clock();
    let request = store.upload_url(&photo, now, TTL).await?;
    assert!(
        request.method.eq_ignore_ascii_case("PUT"),
        "an upload is a PUT: {}",
        request.method
    );
    assert_eq!(request.expires_at, now.plus(TTL), "it expires ttl after now");
    assert_eq!(
        header(&request, "content-type"),
        Some("image/png"),
        "the type is a signed header"
    );
    assert_eq!(
        header(&request, "content-length"),
        Some("64"),
        "the size is a signed header"
    );
    // Clients read the names as JSON keys, as API.md writes them.
    assert_eq!(
        request.headers.get("Content-Type").map(String::as_str),
        Some("image/png")
    );
    assert_eq!(request.headers.get("Content-Length").map(String::as_str), Some("64"));
    assert!(!request.url.is_empty());

    assert_eq!(store.status(&photo).await?, ObjectStatus::Pending);
    factory.upload(&store, &request, bytes(64)).await?;
    assert_eq!(store.status(&photo).await?, ObjectStatus::Uploaded { size: 64 });
    Ok(())
}

/// `status` is `Pending` for an object never uploaded, and an upload of one object leaves others pending.
pub async fn check_status_is_pending_until_uploaded<F: MediaFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let (first, second) = (object("application/pdf", 10)?, object("application/pdf", 10)?);
    assert_eq!(store.status(&first).await?, ObjectStatus::Pending);
    let request = store.upload_url(&first, wall_clock(), TTL).await?;
    assert_eq!(
        store.status(&first).await?,
        ObjectStatus::Pending,
        "signing stores nothing"
    );
    factory.upload(&store, &request, bytes(10)).await?;
    assert_eq!(store.status(&first).await?, ObjectStatus::Uploaded { size: 10 });
    assert_eq!(
        store.status(&second).await?,
        ObjectStatus::Pending,
        "another object is untouched"
    );
    Ok(())
}

/// A download URL is a `GET` that expires `ttl` after `now` and returns exactly the uploaded bytes.
pub async fn check_download_returns_the_uploaded_bytes<F: MediaFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let clip = object("audio/mpeg", 1000)?;
    let body = bytes(1000);
    factory
        .upload(&store, &store.upload_url(&clip, wall_clock(), TTL).await?, body.clone())
        .await?;
    let now = wall_clock();
    let request = store.download_url(&clip, now, TTL).await?;
    assert!(
        request.method.eq_ignore_ascii_case("GET"),
        "a download is a GET: {}",
        request.method
    );
    assert_eq!(request.expires_at, now.plus(TTL));
    assert_eq!(factory.download(&store, &request).await?, body);
    Ok(())
}

/// An upload of another size than declared is refused, whether only the body or also its
/// `Content-Length` differs, and stores nothing.
pub async fn check_upload_of_another_size_is_refused<F: MediaFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let photo = object("image/jpeg", 32)?;
    let request = store.upload_url(&photo, wall_clock(), TTL).await?;
    for size in [31u64, 33, 1000] {
        let lying = factory.upload(&store, &request, bytes(size)).await;
        assert!(lying.is_err(), "a body of {size} bytes under the signed length");
        let consistent = with_header(&request, "Content-Length", &size.to_string());
        assert!(
            factory.upload(&store, &consistent, bytes(size)).await.is_err(),
            "a Content-Length of {size}"
        );
        assert_eq!(
            store.status(&photo).await?,
            ObjectStatus::Pending,
            "nothing stored for size {size}"
        );
    }
    factory.upload(&store, &request, bytes(32)).await?;
    assert_eq!(store.status(&photo).await?, ObjectStatus::Uploaded { size: 32 });
    Ok(())
}

/// An upload with another `Content-Type` than signed is refused and stores nothing.
pub async fn check_upload_of_another_type_is_refused<F: MediaFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let photo = object("image/png", 16)?;
    let request = store.upload_url(&photo, wall_clock(), TTL).await?;
    for content_type in ["image/gif", "text/html", "image/png; charset=utf-8"] {
        let tampered = with_header(&request, "Content-Type", content_type);
        assert!(
            factory.upload(&store, &tampered, bytes(16)).await.is_err(),
            "{content_type}"
        );
    }
    assert_eq!(store.status(&photo).await?, ObjectStatus::Pending);
    Ok(())
}

/// An upload URL cannot store anything under another key: the URL edited to name another object's key
/// is refused, and that object stays pending.
pub async fn check_upload_elsewhere_is_refused<F: MediaFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let mine = object("image/png", 16)?;
    let theirs = MediaObject {
        owner: user("mallory")?,
        ..object("image/png", 16)?
    };
    let theirs = MediaObject {
        key: format!("media/mallory/{}", theirs.id),
        ..theirs
    };
    let request = store.upload_url(&mine, wall_clock(), TTL).await?;
    let encoded = |key: &str| key.replace('/', "%2F");
    let url = if request.url.contains(&mine.key) {
        request.url.replace(&mine.key, &theirs.key)
    } else if request.url.contains(&encoded(&mine.key)) {
        request.url.replace(&encoded(&mine.key), &encoded(&theirs.key))
    } else {
        return Err(format!(
            "the upload URL does not name the object's key {}: {}",
            mine.key, request.url
        )
        .into());
    };
    let elsewhere = SignedRequest { url, ..request.clone() };
    assert!(
        factory.upload(&store, &elsewhere, bytes(16)).await.is_err(),
        "the signature covers the key"
    );
    assert_eq!(
        store.status(&theirs).await?,
        ObjectStatus::Pending,
        "nothing stored under the other key"
    );
    assert_eq!(store.status(&mine).await?, ObjectStatus::Pending);
    Ok(())
}

/// A signed URL stops working once expired, for uploads and downloads alike.
pub async fn check_expired_urls_are_refused<F: MediaFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let photo = object("image/png", 16)?;
    // Signed an hour ago for a minute: long expired by now.
    let long_ago = Timestamp::from_millis(wall_clock().as_millis().saturating_sub(60 * 60 * 1000));
    let expired = store.upload_url(&photo, long_ago, Duration::from_secs(60)).await?;
    assert!(
        factory.upload(&store, &expired, bytes(16)).await.is_err(),
        "an expired upload URL"
    );
    assert_eq!(store.status(&photo).await?, ObjectStatus::Pending);

    factory
        .upload(&store, &store.upload_url(&photo, wall_clock(), TTL).await?, bytes(16))
        .await?;
    let stale = store.download_url(&photo, long_ago, Duration::from_secs(60)).await?;
    assert!(
        factory.download(&store, &stale).await.is_err(),
        "an expired download URL"
    );
    Ok(())
}

/// A signed URL with any character of it changed is refused.
pub async fn check_tampered_urls_are_refused<F: MediaFactory>(factory: &F) -> Outcome {
    let store = factory.fresh().await?;
    let photo = object("image/png", 16)?;
    let request = store.upload_url(&photo, wall_clock(), TTL).await?;
    let flip = |url: &str| {
        let mut chars: Vec<char> = url.chars().collect();
        if let Some(last) = chars.last_mut() {
            *last = if *last == 'a' { 'b' } else { 'a' };
        }
        chars.into_iter().collect::<String>()
    };
    let tampered = SignedRequest {
        url: flip(&request.url),
        ..request.clone()
    };
    assert!(
        factory.upload(&store, &tampered, bytes(16)).await.is_err(),
        "a changed upload signature"
    );
    assert_eq!(store.status(&photo).await?, ObjectStatus::Pending);
    factory.upload(&store, &request, bytes(16)).await?;
    let download = store.download_url(&photo, wall_clock(), TTL).await?;
    let tampered = SignedRequest {
        url: flip(&download.url),
        ..download
    };
    assert!(
        factory.download(&store, &tampered).await.is_err(),
        "a changed download signature"
    );
    Ok(())
}

/// Expands to one `#[tokio::test]` per media store check (the ones every adapter and emulator can pass),
/// inside `mod $name`, for the factory `$factory`.
#[macro_export]
macro_rules! media_store_contract {
    ($name:ident, $factory:expr) => {
        $crate::contract_tests!($name, media_store, $factory;
            check_upload_url_pins_type_and_size,
            check_status_is_pending_until_uploaded,
            check_download_returns_the_uploaded_bytes,
        );
    };
}

/// Expands to one `#[tokio::test]` per check that the store enforces its signatures (size, type, key,
/// expiry, tampering), inside `mod $name`: for adapters whose backend checks signatures.
#[macro_export]
macro_rules! media_store_signature_contract {
    ($name:ident, $factory:expr) => {
        $crate::contract_tests!($name, media_store, $factory;
            check_upload_of_another_size_is_refused,
            check_upload_of_another_type_is_refused,
            check_upload_elsewhere_is_refused,
            check_expired_urls_are_refused,
            check_tampered_urls_are_refused,
        );
    };
}
