//! Signing OpenSearch requests with SigV4 (the `aws-sigv4` crate), and sending them through the
//! process's HTTP client.
//!
//! OpenSearch has no SDK client here: its REST API is plain JSON over HTTPS, signed for service `es`
//! (a domain) or `aoss` (a Serverless collection). Serverless wants the payload's SHA-256 in
//! `x-amz-content-sha256` and refuses a signature over `Content-Length`, so every request carries the
//! former and never signs the latter; domains accept both. Credentials come from the SDK's provider
//! chain and are kept until shortly before they expire, as the SDK's own clients do.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials as _, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign as sigv4_sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::http::HttpConnector as _;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use rookery_ports::Failure;
use serde_json::Value;

use super::OpenSearchService;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a read may wait (a `_bulk` with `refresh=wait_for` waits for the next refresh).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Credentials are refreshed this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// The largest answer read (a page of 101 hits of items of at most 400 KB each fits).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The settings OpenSearch requests are signed with: the payload's hash as `x-amz-content-sha256`
/// (required by Serverless), and `Content-Length` never signed (refused by Serverless).
pub(crate) fn settings() -> SigningSettings {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings
        .excluded_headers
        .get_or_insert_with(Vec::new)
        .push(Cow::Borrowed("content-length"));
    settings
}

/// Adds the SigV4 headers (`x-amz-date`, `x-amz-content-sha256`, the session token if any, and
/// `authorization`) to `request`, whose body is `body`.
///
/// # Errors
/// A permanent [`Failure`] when the request cannot be signed (a header that is not text, a bad URI).
pub(crate) fn sign(
    request: &mut ::http::Request<SdkBody>,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
    settings: SigningSettings,
) -> Result<(), Failure> {
    let failure = |e: &dyn std::fmt::Display| Failure::permanent(format!("cannot sign the request: {e}"));
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| failure(&e))?
        .into();
    let mut headers = Vec::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        headers.push((name.as_str(), value.to_str().map_err(|e| failure(&e))?));
    }
    let uri = request.uri().to_string();
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| failure(&e))?;
    let (instructions, _signature) = sigv4_sign(signable, &params).map_err(|e| failure(&e))?.into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

/// An answer: its HTTP status and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl Answer {
    /// True for a 2xx status.
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `type` of the error the answer carries, if any.
    pub(crate) fn error_type(&self) -> Option<&str> {
        self.body["error"]["type"].as_str()
    }

    /// The answer as the failure of `what`: transient for throttling and server errors, else permanent.
    pub(crate) fn failure(&self, what: &str) -> Failure {
        // OpenSearch answers `{"error": {"type", "reason"}}`; AWS's own front door (a refused
        // signature, a missing permission) answers `{"message": ...}`.
        let (kind, reason) = match &self.body["error"] {
            Value::Null => (
                "refused".to_owned(),
                self.body["message"].as_str().unwrap_or_default().to_owned(),
            ),
            error => super::body::error_of(error),
        };
        let message = format!("{what}: HTTP {} {kind}: {reason}", self.status);
        if crate::error::is_transient(None, Some(self.status)) {
            Failure::transient(message)
        } else {
            Failure::permanent(message)
        }
    }
}

/// Signed requests to one OpenSearch endpoint.
#[derive(Clone)]
pub(crate) struct Transport {
    endpoint: String,
    service: OpenSearchService,
    region: Option<String>,
    provider: Option<SharedCredentialsProvider>,
    cached: Arc<tokio::sync::Mutex<Option<Credentials>>>,
}

/// The endpoint and service, never the credentials.
impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("endpoint", &self.endpoint)
            .field("service", &self.service)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Transport {
    /// Requests to `endpoint` (no trailing slash), signed for `service` with the region and credentials of `sdk`.
    pub(crate) fn new(sdk: &SdkConfig, endpoint: &str, service: OpenSearchService) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            service,
            region: sdk.region().map(ToString::to_string),
            provider: sdk.credentials_provider(),
            cached: Arc::default(),
        }
    }

    /// The credentials to sign with: the cached ones until shortly before they expire.
    async fn credentials(&self) -> Result<Credentials, Failure> {
        let provider = self
            .provider
            .as_ref()
            .ok_or_else(|| Failure::permanent("no AWS credentials provider is configured"))?;
        let mut cached = self.cached.lock().await;
        if let Some(credentials) = cached.as_ref()
            && credentials
                .expiry()
                .is_none_or(|expiry| expiry > SystemTime::now() + REFRESH_BEFORE)
        {
            return Ok(credentials.clone());
        }
        let fresh = provider.provide_credentials().await.map_err(|error| {
            let message = format!("AWS credentials: {}", error_chain(&error));
            match error {
                CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
                    Failure::permanent(message)
                }
                _ => Failure::transient(message),
            }
        })?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// Sends `method path` with a JSON (or NDJSON) `body`, signed, and reads the answer whatever its status.
    ///
    /// # Errors
    /// A transient [`Failure`] when no answer came (refused, reset, timed out); a permanent one when the
    /// request cannot be built or signed.
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Answer, Failure> {
        let what = format!("{method} {path}");
        let region = self
            .region
            .as_deref()
            .ok_or_else(|| Failure::permanent(format!("{what}: no AWS region to sign for (set AWS_REGION)")))?;
        let credentials = self.credentials().await?;
        let mut request = ::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.endpoint))
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(SdkBody::from(body.clone()))
            .map_err(|e| Failure::permanent(format!("{what}: {e}")))?;
        sign(
            &mut request,
            &body,
            &credentials,
            region,
            self.service.signing_name(),
            SystemTime::now(),
            settings(),
        )?;
        let request = HttpRequest::try_from(request).map_err(|e| Failure::permanent(format!("{what}: {e}")))?;
        let connector = crate::http::connector(CONNECT_TIMEOUT, READ_TIMEOUT);
        let response = tokio::time::timeout(REQUEST_TIMEOUT, connector.call(request))
            .await
            .map_err(|_| Failure::transient(format!("{what}: no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| {
                let message = format!("{what}: {}", error_chain(&e));
                if e.is_user() {
                    Failure::permanent(message)
                } else {
                    Failure::transient(message)
                }
            })?;
        let status = response.status().as_u16();
        let mut stream = ByteStream::new(response.into_body());
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Failure::transient(format!("{what}: {}", error_chain(&e))))?;
            if bytes.len().saturating_add(chunk.len()) > MAX_ANSWER_BYTES {
                return Err(Failure::permanent(format!(
                    "{what}: answer larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }
}

#[cfg(test)]
mod tests {
    //! The signature is checked twice: against the published AWS SigV4 test suite (`get-vanilla`,
    //! shipped with `aws-sigv4` as `aws-signing-test-suite/v4/get-vanilla`), and, for the settings
    //! OpenSearch requests use, against a signature computed here from the SigV4 specification with
    //! nothing but HMAC-SHA256 and SHA-256. That independent computation first reproduces the
    //! published `get-vanilla` signature, so it is known to follow the specification.

    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    use super::*;

    /// The test suite's credentials and time (2015-08-30T12:36:00Z).
    fn suite_credentials() -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test-suite",
        )
    }

    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// SigV4 by the specification, with the test suite's secret, date and region: canonical request,
    /// string to sign, derived key, signature. `headers` are the signed headers, lowercase names with
    /// trimmed values. Returns the signature and the signed header list.
    fn independent_signature(
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        payload_hash: &str,
        service: &str,
    ) -> (String, String) {
        const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        const DATE: &str = "20150830";
        const AMZ_DATE: &str = "20150830T123600Z";
        const REGION: &str = "us-east-1";
        let mut headers = headers.to_vec();
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = headers.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
        let canonical_request = format!("{method}\n{path}\n\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
        let scope = format!("{DATE}/{REGION}/{service}/aws4_request");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{AMZ_DATE}\n{scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let key = hmac(format!("AWS4{SECRET}").as_bytes(), DATE);
        let key = hmac(&key, REGION);
        let key = hmac(&key, service);
        let key = hmac(&key, "aws4_request");
        (hex::encode(hmac(&key, &string_to_sign)), signed_headers)
    }

    fn authorization(request: &::http::Request<SdkBody>) -> String {
        request.headers()["authorization"].to_str().unwrap().to_owned()
    }

    #[test]
    fn the_published_get_vanilla_signature_is_reproduced() {
        const PUBLISHED: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let mut request = ::http::Request::builder()
            .method("GET")
            .uri("https://example.amazonaws.com/")
            .body(SdkBody::empty())
            .unwrap();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
        sign(
            &mut request,
            b"",
            &suite_credentials(),
            "us-east-1",
            "service",
            suite_time(),
            settings,
        )
        .unwrap();
        assert_eq!(
            authorization(&request),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature={PUBLISHED}"
            )
        );
        let (independent, _) = independent_signature(
            "GET",
            "/",
            &[("host", "example.amazonaws.com"), ("x-amz-date", "20150830T123600Z")],
            &sha256_hex(b""),
            "service",
        );
        assert_eq!(
            independent, PUBLISHED,
            "the independent computation follows the specification"
        );
    }

    #[test]
    fn an_opensearch_request_is_signed_with_its_payload_hash_and_without_content_length() {
        let body = br#"{"query":{"term":{"state":{"value":"live"}}}}"#;
        for service in ["es", "aoss"] {
            let mut request = ::http::Request::builder()
                .method("POST")
                .uri("https://search-rookery.us-east-1.es.amazonaws.com/rookery-items/_count")
                .header("content-type", "application/json")
                .header("content-length", body.len().to_string())
                .body(SdkBody::from(&body[..]))
                .unwrap();
            sign(
                &mut request,
                body,
                &suite_credentials(),
                "us-east-1",
                service,
                suite_time(),
                settings(),
            )
            .unwrap();
            let payload_hash = sha256_hex(body);
            assert_eq!(request.headers()["x-amz-content-sha256"], payload_hash.as_str());
            assert_eq!(request.headers()["x-amz-date"], "20150830T123600Z");
            let (expected, signed) = independent_signature(
                "POST",
                "/rookery-items/_count",
                &[
                    ("content-type", "application/json"),
                    ("host", "search-rookery.us-east-1.es.amazonaws.com"),
                    ("x-amz-content-sha256", &payload_hash),
                    ("x-amz-date", "20150830T123600Z"),
                ],
                &payload_hash,
                service,
            );
            assert_eq!(signed, "content-type;host;x-amz-content-sha256;x-amz-date");
            assert_eq!(
                authorization(&request),
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/{service}/aws4_request, \
                     SignedHeaders={signed}, Signature={expected}"
                ),
                "{service}"
            );
        }
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let credentials = Credentials::new("AKID", "secret", Some("session-token".into()), None, "test");
        let mut request = ::http::Request::builder()
            .method("GET")
            .uri("https://abc.us-east-1.aoss.amazonaws.com/_alias/items")
            .body(SdkBody::empty())
            .unwrap();
        sign(
            &mut request,
            b"",
            &credentials,
            "us-east-1",
            "aoss",
            suite_time(),
            settings(),
        )
        .unwrap();
        assert_eq!(request.headers()["x-amz-security-token"], "session-token");
        assert!(authorization(&request).contains("x-amz-security-token"));
    }
}
