//! The caller's account routes: `GET /v1/me/export`, everything stored about the caller as NDJSON, and
//! `DELETE /v1/me`, the account's erasure.
//!
//! The export is streamed line by line as [`AccountService`] reads it, so neither the server's memory
//! nor the time to the first byte grows with the caller's stream. A failure after the first line can no
//! longer change the status: the body is cut short instead, without its `end` line, which is how a
//! client tells a partial export from a whole one; the failure is logged with the request id.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use rookery_ports::service::{Export, ExportLine};
use rookery_ports::{AccountService, Clock, EraseAccount, EventStore, IdSource, MediaStore};
use serde_json::{Value, json};

use super::auth::Authed;
use super::dto::{ErasingDto, FeedChangeDto, MediaDto};
use super::problem::Problem;
use super::request_id;

/// The media type of an export.
pub const NDJSON: &str = "application/x-ndjson";

/// The JSON object of one export line.
fn line(line: ExportLine) -> Value {
    match line {
        ExportLine::Header { user_id, exported_at } => json!({
            "type": "export",
            "user_id": user_id,
            "exported_at": exported_at.to_string(),
            "format": 1,
        }),
        ExportLine::Change(change) => json!(FeedChangeDto::from(change)),
        ExportLine::Media(view) => {
            let mut object = json!(MediaDto::from(view));
            if let Some(members) = object.as_object_mut() {
                members.insert("type".to_owned(), json!("media"));
            }
            object
        }
        ExportLine::End { events } => json!({"type": "end", "events": events}),
    }
}

/// `GET /v1/me/export`: the caller's stream and media, oldest first, one JSON object per line.
#[utoipa::path(
    get, path = "/v1/me/export", tag = "account",
    responses((status = 200, content_type = "application/x-ndjson", body = String,
        description = "One JSON object per line: the `export` header, every event of the caller's stream oldest first in the `/v1/sync` change shape, one `media` line per media object, and the `end` line with the number of events; an export without its `end` line was cut short")),
    security(("bearer" = []))
)]
pub(crate) async fn export<S: EventStore, C: Clock, I: IdSource, M: MediaStore>(
    State(account): State<Arc<AccountService<S, C, I, M>>>,
    Authed(caller): Authed,
) -> Response {
    let request_id = request_id::current();
    let export = account.export(&caller);
    let lines = futures_util::stream::unfold(Some(export), move |state| {
        let request_id = request_id.clone();
        async move {
            let mut export: Export<S, C, I, M> = state?;
            match export.next().await {
                Ok(Some(next)) => {
                    let mut bytes = line(next).to_string().into_bytes();
                    bytes.push(b'\n');
                    Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), Some(export)))
                }
                Ok(None) => None,
                Err(error) => {
                    tracing::error!(%request_id, %error, "export cut short");
                    Some((Err(std::io::Error::other("export cut short")), None))
                }
            }
        }
    });
    ([(CONTENT_TYPE, NDJSON)], Body::from_stream(lines)).into_response()
}

/// `DELETE /v1/me`: erases the caller's account, and answers once nothing of it is readable.
///
/// With [`rookery_ports::ErasureService`] (`rookery serve`) the erasure is done before the answer (the
/// local adapters take well under the contract's minute), so `202` already means erased; with
/// [`rookery_ports::ErasureRequest`] (Lambda) only the marker is written, which already hides everything
/// of the account, and the eraser function finishes the rest from the table's stream. A failed step
/// answers `503`, leaves the account live, and may be retried. From then on the token gate answers
/// `410 account_erased`, this route included.
#[utoipa::path(
    delete, path = "/v1/me", tag = "account",
    responses(
        (status = 202, description = "The account is erased: its stream, items, received messages, devices and push endpoints, media and their bytes, idempotency records and search documents; messages it sent stay with their recipients", body = ErasingDto),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn erase<E: EraseAccount>(
    State(erasure): State<Arc<E>>,
    Authed(caller): Authed,
) -> Result<(StatusCode, Json<ErasingDto>), Problem> {
    erasure.erase(&caller).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ErasingDto {
            status: "erasing".to_owned(),
        }),
    ))
}
