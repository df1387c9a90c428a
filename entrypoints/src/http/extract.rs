//! Request extractors that answer with problem documents: path segments, query parameters,
//! JSON bodies, preconditions and idempotency keys.
//!
//! Axum's own extractors reject with plain-text bodies; these wrap or replace them so that every
//! bad input is a `4xx` problem document, and so that numbers and ids are parsed here, with our
//! words, rather than by a deserializer whose messages name Rust types.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{CONTENT_TYPE, IF_MATCH, IF_NONE_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, Method};
use rookery_domain::{CollectionName, DeviceId, ItemId, ItemKey, MediaId, Precondition, UserId, Version};
use rookery_ports::Idempotency;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::problem::Problem;

/// The header naming a client's idempotency key.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Path parameters, with a problem document for anything the router could not decode.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) if rejection.status().is_server_error() => Err(Problem::internal(&rejection.body_text())),
            Err(_) => Err(Problem::invalid(
                "the path holds a segment that is not valid UTF-8 text",
            )),
        }
    }
}

/// Parses a collection name from the path.
///
/// # Errors
/// `400` when it does not match the contract's pattern.
pub fn collection(raw: String) -> Result<CollectionName, Problem> {
    CollectionName::parse(raw).map_err(|e| Problem::invalid(e.to_string()))
}

/// Parses an item key from the path.
///
/// # Errors
/// `400` when either part does not match the contract's pattern.
pub fn item_key(collection_raw: String, id: String) -> Result<ItemKey, Problem> {
    let collection = collection(collection_raw)?;
    let id = ItemId::parse(id).map_err(|e| Problem::invalid(e.to_string()))?;
    Ok(ItemKey::new(collection, id))
}

/// Parses a user id from the path.
///
/// # Errors
/// `400` when it does not match the user id pattern.
pub fn user_id(raw: String) -> Result<UserId, Problem> {
    UserId::parse(raw).map_err(|e| Problem::invalid(e.to_string()))
}

/// Parses a device id from the path.
///
/// # Errors
/// `400` when it does not match the device id pattern.
pub fn device_id(raw: String) -> Result<DeviceId, Problem> {
    DeviceId::parse(raw).map_err(|e| Problem::invalid(e.to_string()))
}

/// Parses a media id from the path. A malformed id cannot name an object, so it is a `404`.
///
/// # Errors
/// `404` when it does not match the media id pattern.
pub fn media_id(raw: String) -> Result<MediaId, Problem> {
    MediaId::parse(raw).map_err(|_| Problem::not_found())
}

/// The query string as name/value pairs; a name given twice is refused.
#[derive(Debug, Default)]
pub struct QueryParams(HashMap<String, String>);

impl QueryParams {
    /// Parses the query string of `uri` (`application/x-www-form-urlencoded`: `&`-separated pairs,
    /// `+` for a space, percent-escaped bytes).
    ///
    /// # Errors
    /// `400` when a parameter is given twice or a name or value does not decode to UTF-8 text.
    pub fn parse(uri: &axum::http::Uri) -> Result<Self, Problem> {
        let raw = uri.query().unwrap_or_default();
        let mut map = HashMap::new();
        for pair in raw.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(name), Some(value)) = (form_decode(name), form_decode(value)) else {
                return Err(Problem::invalid(
                    "the query string holds an escape that does not decode to UTF-8 text",
                ));
            };
            if map.contains_key(&name) {
                return Err(Problem::invalid(format!(
                    "query parameter `{name}` is given more than once"
                )));
            }
            map.insert(name, value);
        }
        Ok(Self(map))
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A non-negative integer parameter.
    ///
    /// # Errors
    /// `400` when it is present but not a non-negative decimal integer.
    pub fn number(&self, name: &str) -> Result<Option<u64>, Problem> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) => raw
                .parse()
                .map(Some)
                .map_err(|_| Problem::invalid(format!("`{name}` is too large"))),
            Some(_) => Err(Problem::invalid(format!("`{name}` must be a non-negative integer"))),
        }
    }

    /// The `limit` parameter.
    ///
    /// # Errors
    /// `400` when it is not a non-negative integer (its range is the use case's to check).
    pub fn limit(&self) -> Result<Option<u64>, Problem> {
        self.number("limit")
    }
}

/// Decodes one form-encoded name or value, refusing bytes that are not UTF-8 text (a lossy decoding
/// would search for, or compare against, text the client never sent). A `%` not followed by two hex
/// digits stands for itself, as browsers and `form_urlencoded` read it.
fn form_decode(raw: &str) -> Option<String> {
    let hex = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)),
            _ => None,
        };
        match (b, escaped) {
            (_, Some((high, low))) => {
                // Two hex digits make at most 0xFF: the byte cannot overflow.
                decoded.push(high * 16 + low);
                i += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                i += 1;
            }
            (other, None) => {
                decoded.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        QueryParams::parse(&parts.uri)
    }
}

/// Checks that the body is declared JSON (`merge_patch` also allows `application/merge-patch+json`).
/// Parameters are allowed, but a `charset` must be UTF-8.
///
/// # Errors
/// `415` otherwise.
pub fn check_content_type(headers: &HeaderMap, merge_patch: bool) -> Result<(), Problem> {
    let wanted = if merge_patch {
        "a body of type application/json or application/merge-patch+json is required"
    } else {
        "a body of type application/json is required"
    };
    let value = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::unsupported_media_type(wanted))?;
    let mut pieces = value.split(';');
    let essence = pieces.next().unwrap_or_default().trim().to_ascii_lowercase();
    let essence_ok = essence == "application/json" || (merge_patch && essence == "application/merge-patch+json");
    let params_ok = pieces.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    if essence_ok && params_ok {
        Ok(())
    } else {
        Err(Problem::unsupported_media_type(wanted))
    }
}

/// A JSON body parsed into `T`, with its bytes kept for the idempotency fingerprint.
#[derive(Debug)]
pub struct JsonBody<T> {
    /// The parsed body.
    pub value: T,
    /// The body as sent.
    pub bytes: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        check_content_type(request.headers(), request.method() == Method::PATCH)?;
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Problem::too_large("the request body is over the size limit")
            } else {
                Problem::invalid("the request body could not be read")
            }
        })?;
        // serde_json refuses nesting beyond its recursion limit as an ordinary syntax error,
        // so even hostile depth is a 400 here, never a stack overflow.
        let value = serde_json::from_slice(&bytes).map_err(|e| Problem::invalid(format!("invalid JSON body: {e}")))?;
        Ok(Self { value, bytes })
    }
}

/// The client's precondition on a write: `If-Match: "<n>"` or `If-None-Match: *`.
#[derive(Debug, Clone, Copy)]
pub struct Preconditions(pub Precondition);

/// Parses a strong entity tag holding a version (`"3"`).
fn version_tag(raw: &str) -> Option<Version> {
    let digits = raw.trim().strip_prefix('"')?.strip_suffix('"')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Version)
}

/// Reads the precondition headers of a write.
///
/// # Errors
/// `400` for a malformed value, a list, a weak tag, or both headers at once.
pub fn precondition(headers: &HeaderMap) -> Result<Precondition, Problem> {
    let single = |name: &HeaderName| -> Result<Option<String>, Problem> {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else { return Ok(None) };
        if values.next().is_some() {
            return Err(Problem::invalid(format!("{name} is given more than once")));
        }
        first
            .to_str()
            .map(|v| Some(v.trim().to_owned()))
            .map_err(|_| Problem::invalid(format!("{name} must be ASCII")))
    };
    match (single(&IF_MATCH)?, single(&IF_NONE_MATCH)?) {
        (Some(_), Some(_)) => Err(Problem::invalid("send either If-Match or If-None-Match, not both")),
        (Some(tag), None) => version_tag(&tag)
            .map(Precondition::IfMatch)
            .ok_or_else(|| Problem::invalid("If-Match must be one quoted version, e.g. \"3\"")),
        (None, Some(tag)) if tag == "*" => Ok(Precondition::IfAbsent),
        (None, Some(_)) => Err(Problem::invalid("If-None-Match on a write must be *")),
        (None, None) => Ok(Precondition::None),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Preconditions {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        precondition(&parts.headers).map(Preconditions)
    }
}

/// True when a `GET`'s `If-None-Match` names `version` (weak comparison, as RFC 9110 asks for `GET`).
pub fn not_modified(headers: &HeaderMap, version: Version) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || version_tag(tag) == Some(version))
}

/// The `ETag` value of a version.
pub fn etag(version: Version) -> String {
    format!("\"{}\"", version.0)
}

/// The request's `Idempotency-Key`, with what is needed to fingerprint the request.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    key: Option<String>,
    method: Method,
    target: String,
}

/// The longest `Idempotency-Key`, in characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// True when `key` is 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The fingerprint of a request: SHA-256, in hex, of method, path and query, and body.
pub fn fingerprint(method: &Method, target: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(target.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl IdempotencyKey {
    /// The key and fingerprint for the use case, given the request's body (empty for none).
    pub fn with_body(&self, body: &[u8]) -> Option<Idempotency> {
        self.key.as_ref().map(|key| Idempotency {
            key: key.clone(),
            fingerprint: fingerprint(&self.method, &self.target, body),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let bad = || Problem::invalid("Idempotency-Key must be 1 to 128 visible ASCII characters, sent once");
        let mut values = parts.headers.get_all(&IDEMPOTENCY_KEY).iter();
        let key = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(value), None) => {
                let key = value.to_str().map_err(|_| bad())?;
                if !valid_key(key) {
                    return Err(bad());
                }
                Some(key.to_owned())
            }
            (Some(_), Some(_)) => return Err(bad()),
        };
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
        Ok(Self {
            key,
            method: parts.method.clone(),
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    #[test]
    fn query_strings_decode_strictly_to_utf8() {
        let parse = |query: &str| {
            let uri: axum::http::Uri = format!("/v1/search?{query}").parse().expect("a URI");
            QueryParams::parse(&uri)
        };
        let params = parse("q=caf%C3%A9+au+lait&limit=5&&flag&pct=100%&odd=%zz").expect("decodes");
        assert_eq!(params.get("q"), Some("café au lait"));
        assert_eq!(params.get("limit"), Some("5"));
        assert_eq!(params.get("flag"), Some(""));
        assert_eq!(params.get("pct"), Some("100%"));
        assert_eq!(params.get("odd"), Some("%zz"));
        assert_eq!(parse("%71=x").expect("decodes").get("q"), Some("x"), "names decode too");
        for bad in ["q=%FF%FE", "q=%C3", "%FF=x", "q=ok&cursor=%80"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("q=a&q=b").is_err(), "a name twice");
        assert!(parse("").expect("empty").get("q").is_none());
    }

    #[test]
    fn preconditions_accept_strong_versions_and_star_only() {
        assert_eq!(precondition(&headers(&[])).ok(), Some(Precondition::None));
        assert_eq!(
            precondition(&headers(&[(IF_MATCH, "\"3\"")])).ok(),
            Some(Precondition::IfMatch(Version(3)))
        );
        assert_eq!(
            precondition(&headers(&[(IF_NONE_MATCH, "*")])).ok(),
            Some(Precondition::IfAbsent)
        );
        for bad in ["3", "W/\"3\"", "\"3\", \"4\"", "*", "\"x\"", "\"\"", "\"-1\""] {
            assert!(precondition(&headers(&[(IF_MATCH, bad)])).is_err(), "{bad}");
        }
        assert!(precondition(&headers(&[(IF_NONE_MATCH, "\"3\"")])).is_err());
        assert!(precondition(&headers(&[(IF_MATCH, "\"3\""), (IF_NONE_MATCH, "*")])).is_err());
    }

    #[test]
    fn json_content_types_with_utf8_parameters_are_accepted() {
        let ok = |v: &str, patch: bool| check_content_type(&headers(&[(CONTENT_TYPE, v)]), patch).is_ok();
        assert!(ok("application/json", false));
        assert!(ok("Application/JSON; charset=UTF-8", false));
        assert!(ok("application/merge-patch+json", true));
        assert!(!ok("application/merge-patch+json", false));
        assert!(!ok("text/plain", false));
        assert!(!ok("application/json; charset=latin1", false));
        assert!(check_content_type(&HeaderMap::new(), false).is_err());
    }

    #[test]
    fn fingerprints_cover_method_target_and_body() {
        let a = fingerprint(&Method::PUT, "/v1/items/notes/n1", b"{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, fingerprint(&Method::POST, "/v1/items/notes/n1", b"{}"));
        assert_ne!(a, fingerprint(&Method::PUT, "/v1/items/notes/n2", b"{}"));
        assert_ne!(a, fingerprint(&Method::PUT, "/v1/items/notes/n1", b"{ }"));
    }

    #[test]
    fn idempotency_keys_are_visible_ascii_up_to_128() {
        assert!(valid_key("k-1"));
        assert!(valid_key(&"k".repeat(128)));
        assert!(!valid_key(&"k".repeat(129)));
        assert!(!valid_key(""));
        assert!(!valid_key("a b"));
    }

    #[test]
    fn get_if_none_match_compares_weakly() {
        assert!(not_modified(&headers(&[(IF_NONE_MATCH, "W/\"2\", \"3\"")]), Version(3)));
        assert!(!not_modified(&headers(&[(IF_NONE_MATCH, "\"2\"")]), Version(3)));
        assert!(!not_modified(&HeaderMap::new(), Version(3)));
    }

    #[test]
    fn query_numbers_are_strict() {
        let q = |s: &str| QueryParams::parse(&s.parse().expect("uri")).expect("query");
        assert_eq!(q("/x?limit=5").limit().ok(), Some(Some(5)));
        assert_eq!(q("/x").limit().ok(), Some(None));
        for bad in [
            "/x?limit=abc",
            "/x?limit=-1",
            "/x?limit=",
            "/x?limit=1.5",
            "/x?limit=99999999999999999999999",
        ] {
            assert!(q(bad).limit().is_err(), "{bad}");
        }
        assert!(QueryParams::parse(&"/x?limit=1&limit=2".parse().expect("uri")).is_err());
    }
}
