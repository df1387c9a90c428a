//! The answers many operations share (every error, and `304`), each a response component that
//! operations refer to, with the problem document's `status` and `code` pinned and the headers that
//! come with it.

use utoipa::ToResponse;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::Header;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::{Content, RefOr, Response, ResponseBuilder, Schema};

use super::schemas::{self, reference};
use crate::http::dto::{HistoryEventDto, ProblemDto};
use crate::http::problem::{Code, PROBLEM_JSON};

/// A response header; `required` ones are on every such answer.
///
/// utoipa's `Header` has no `required` field, so it is written as an extension, which serializes
/// as the member itself.
pub(crate) fn header(schema: RefOr<Schema>, description: &str, required: bool) -> Header {
    let mut header = Header::new(schema);
    header.description = Some(description.to_owned());
    if required {
        header.extensions = Some(Extensions::from_iter([("required", true)]));
    }
    header
}

fn seconds() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).into()
}

/// `Retry-After`, in whole seconds.
pub(crate) fn retry_after(description: &str) -> Header {
    header(seconds(), description, true)
}

/// The problem document of a `status` with `code`, requiring `members` besides the usual ones.
fn problem_schema(status: u16, code: Code, members: &[(&str, RefOr<Schema>)]) -> RefOr<Schema> {
    let mut refinement = ObjectBuilder::new()
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .enum_values(Some([status])),
        )
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([code.as_str()])),
        );
    for (name, schema) in members {
        refinement = refinement.property(*name, schema.clone()).required(*name);
    }
    AllOfBuilder::new()
        .item(reference::<ProblemDto>())
        .item(refinement)
        .into()
}

fn problem(description: &str, status: u16, code: Code, members: &[(&str, RefOr<Schema>)]) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, Content::new(Some(problem_schema(status, code, members))))
}

fn request_id_member() -> (&'static str, RefOr<Schema>) {
    (
        "request_id",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("The request's id, also in `X-Request-Id` and the server's logs."))
            .into(),
    )
}

macro_rules! response {
    ($(#[$doc:meta])* $name:ident => $build:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), RefOr::T($build.build()))
            }
        }
    };
}

response!(
    /// `304`: the item is still at the version the client holds.
    NotModified => ResponseBuilder::new()
        .description("Not modified: `If-None-Match` names the item's current version.")
        .header("ETag", header(reference::<schemas::EntityTag>(), "The current version.", true))
);

response!(
    /// `400 invalid_request`.
    BadRequest => problem(
        "The request is malformed (`invalid_request`): a path segment, query parameter, header or body \
         member breaks its rule.",
        400,
        Code::InvalidRequest,
        &[],
    )
);

response!(
    /// `401 unauthorized`, from the token gate.
    Unauthorized => problem(
        "No usable bearer token (`unauthorized`): missing, malformed, expired, wrongly signed, or for another \
         issuer or audience.",
        401,
        Code::Unauthorized,
        &[],
    )
    .header(
        "WWW-Authenticate",
        header(
            ObjectBuilder::new().schema_type(Type::String).pattern(Some("^Bearer")).into(),
            "`Bearer`, with `error=\"invalid_token\"` when a token was sent.",
            true,
        ),
    )
);

response!(
    /// `404 not_found`.
    NotFound => problem(
        "Not found (`not_found`), or not the caller's to know about.",
        404,
        Code::NotFound,
        &[],
    )
);

response!(
    /// `409 version_conflict`, with what the client needs to merge.
    VersionConflict => problem(
        "A precondition failed (`version_conflict`): the item is not at the version the request named.",
        409,
        Code::VersionConflict,
        &[
            (
                "current_version",
                ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::Integer, Type::Null]))
                    .minimum(Some(1))
                    .description(Some("The item's version now; `null` if it never existed."))
                    .into(),
            ),
            (
                "events",
                utoipa::openapi::schema::ArrayBuilder::new()
                    .items(reference::<HistoryEventDto>())
                    .max_items(Some(100))
                    .description(Some(
                        "The item's changes after the version the request named (from the first, for \
                         `If-None-Match: *`), oldest first, at most 100.",
                    ))
                    .into(),
            ),
        ],
    )
);

response!(
    /// `413 payload_too_large`.
    PayloadTooLarge => problem(
        "A size over a limit (`payload_too_large`): the request body, an item's or message's `data`, \
         or a declared media size.",
        413,
        Code::PayloadTooLarge,
        &[],
    )
);

response!(
    /// `415 unsupported_media_type`.
    UnsupportedMediaType => problem(
        "The body is not declared JSON (`unsupported_media_type`).",
        415,
        Code::UnsupportedMediaType,
        &[],
    )
);

response!(
    /// `422 idempotency_key_reused`.
    IdempotencyKeyReused => problem(
        "The `Idempotency-Key` was already used for a different request (`idempotency_key_reused`).",
        422,
        Code::IdempotencyKeyReused,
        &[],
    )
);

response!(
    /// `410 account_erased`, from the token gate.
    AccountErased => problem(
        "The caller's account was erased (`account_erased`); the user id cannot be used again.",
        410,
        Code::AccountErased,
        &[],
    )
);

response!(
    /// `429 rate_limited`.
    RateLimited => problem(
        "The caller's rate limit is spent (`rate_limited`).",
        429,
        Code::RateLimited,
        &[],
    )
    .header("Retry-After", retry_after("Seconds until a request will be let through."))
);

response!(
    /// `500 internal`.
    InternalError => problem(
        "The server failed (`internal`); quote the `request_id`.",
        500,
        Code::Internal,
        &[request_id_member()],
    )
);

response!(
    /// `503 internal`: a dependency is down, or the request ran past its deadline.
    Unavailable => problem(
        "Temporarily unavailable (`internal`): a dependency is down or the request ran past its deadline; \
         retry, and quote the `request_id` if it persists.",
        503,
        Code::Internal,
        &[request_id_member()],
    )
    .header("Retry-After", retry_after("Seconds to wait before retrying."))
);
