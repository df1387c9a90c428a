//! The signed media URLs of the local media store, served by the local server itself (S3's part on AWS).
//!
//! `PUT /media-upload/{key}?expires=..&sig=..` stores exactly the declared object, once;
//! `GET /media/{key}?expires=..&sig=..` returns it. Neither takes a bearer token: the signature is the
//! credential, as with S3 presigned URLs. Refusals are problem documents: `403` for a bad or expired
//! signature, `400` for a type or size other than the signed one, `409` for a second upload, `413` for
//! a body over the limit.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use rookery_adapters_memory::media::{DOWNLOAD_PATH, FetchError, LocalMediaStore, UPLOAD_PATH, Upload, UploadError};
use rookery_ports::Clock;
use tower_http::limit::RequestBodyLimitLayer;

use crate::http::Code;
use crate::http::extract::{ApiPath, QueryParams};
use crate::http::problem::Problem;

/// What the routes need: the store and a clock to check expiry against.
#[derive(Debug, Clone)]
struct MediaState<C: Clock> {
    store: LocalMediaStore,
    clock: C,
}

fn upload_problem(error: UploadError) -> Problem {
    match error {
        UploadError::BadSignature | UploadError::Expired => Problem::forbidden(error.to_string()),
        UploadError::WrongType { .. } | UploadError::WrongSize { .. } => Problem::invalid(error.to_string()),
        UploadError::AlreadyUploaded => Problem::new(StatusCode::CONFLICT, Code::InvalidRequest, error.to_string()),
        UploadError::TooLarge { .. } => Problem::too_large(error.to_string()),
        UploadError::Erased => Problem::account_erased(),
        UploadError::Io(cause) => Problem::internal(&cause),
    }
}

fn fetch_problem(error: FetchError) -> Problem {
    match error {
        FetchError::BadSignature | FetchError::Expired => Problem::forbidden(error.to_string()),
        FetchError::NotFound => Problem::not_found(),
        FetchError::Io(cause) => Problem::internal(&cause),
    }
}

async fn upload<C: Clock>(
    State(state): State<MediaState<C>>,
    ApiPath(key): ApiPath<String>,
    query: QueryParams,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(CONTENT_TYPE);
    let content_length = match header(CONTENT_LENGTH) {
        Some(raw) => Some(
            raw.parse::<u64>()
                .map_err(|_| Problem::invalid("Content-Length must be a number"))?,
        ),
        None => None,
    };
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::too_large("the body is over the media size limit")
        } else {
            Problem::invalid("the request body could not be read")
        }
    })?;
    let expires = query.get("expires").unwrap_or_default().to_owned();
    let sig = query.get("sig").unwrap_or_default().to_owned();
    let now = state.clock.now();
    // A directory store writes files: keep that off the async workers.
    let stored = tokio::task::spawn_blocking(move || {
        let upload = Upload {
            key: &key,
            expires: &expires,
            sig: &sig,
            content_type: content_type.as_deref(),
            content_length,
            body: &body,
        };
        state.store.accept_upload(&upload, now)
    })
    .await
    .map_err(|e| Problem::internal(&e))?;
    stored.map_err(upload_problem)?;
    Ok(StatusCode::OK)
}

async fn download<C: Clock>(
    State(state): State<MediaState<C>>,
    ApiPath(key): ApiPath<String>,
    query: QueryParams,
) -> Result<Response, Problem> {
    let expires = query.get("expires").unwrap_or_default().to_owned();
    let sig = query.get("sig").unwrap_or_default().to_owned();
    let now = state.clock.now();
    let fetched = tokio::task::spawn_blocking(move || state.store.fetch(&key, &expires, &sig, now))
        .await
        .map_err(|e| Problem::internal(&e))?
        .map_err(fetch_problem)?;
    Ok(([(CONTENT_TYPE, fetched.content_type)], fetched.bytes).into_response())
}

/// The signed upload and download routes of `store`, accepting bodies up to `max_bytes`.
pub fn routes<C: Clock>(store: LocalMediaStore, clock: C, max_bytes: u64) -> Router {
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let upload_path = format!("{UPLOAD_PATH}{{*key}}");
    let download_path = format!("{DOWNLOAD_PATH}{{*key}}");
    let state = MediaState { store, clock };
    let uploads = Router::new()
        .route(&upload_path, put(upload::<C>))
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyLimitLayer::new(limit));
    Router::new()
        .route(&download_path, get(download::<C>))
        .with_state(state)
        .merge(uploads)
}
