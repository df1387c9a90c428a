//! The JWT identity verifier: RS256 tokens (Cognito's, or the development provider's) checked against a JSON Web Key Set.
//!
//! One code path verifies both kinds of token, so `rookery serve` exercises exactly what runs on AWS.
//! The key set is either given up front ([`KeySource::Static`]) or fetched over HTTP and cached
//! ([`KeySource::Remote`]); a token naming an unknown `kid` triggers at most one refetch per
//! `min_refresh_interval`, and concurrent callers share that one fetch instead of stampeding the endpoint.
//!
//! Checks, in order (the first failure is the error returned): the token's shape; the header's `alg`
//! (only `RS256`); its `kid`; the signature; `iss`; `token_use`; `aud` (ID tokens) or `client_id`
//! (access tokens); `exp`; `nbf` when present; and `sub`, which must be a valid [`UserId`].
//! Time comes from a [`Clock`], so expiry is testable without waiting.

mod keys;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::HttpConnector as _;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::byte_stream::ByteStream;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rookery_domain::{Timestamp, UserId};
use rookery_ports::{AuthError, Clock, IdentityVerifier, Principal};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use keys::KeyMap;
pub use keys::KeySetError;

/// Tokens longer than this are refused before any decoding: no real identity token comes close.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Key set documents longer than this are refused: Cognito's holds two keys in well under 2 KB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How many characters of a refused `alg` are kept in the error, so a hostile header cannot flood the logs.
const MAX_ALG_IN_ERROR: usize = 32;

/// The clock-skew allowance used by [`JwksConfig::new`].
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// The shortest time between two fetches of a remote key set, used by [`KeySource::remote`].
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// How long one fetch of a remote key set may take, used by [`KeySource::remote`].
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// What a token is for, from its `token_use` claim; it decides which claim names the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenUse {
    /// An ID token (`token_use: "id"`): the client is its `aud`.
    Id,
    /// An access token (`token_use: "access"`): the client is its `client_id`.
    Access,
}

impl TokenUse {
    /// The claim value: `id` or `access`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Id => "id",
            TokenUse::Access => "access",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "id" => Some(TokenUse::Id),
            "access" => Some(TokenUse::Access),
            _ => None,
        }
    }
}

/// Which claims a verifier reads to tell that a token was made for this API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimProfile {
    /// Cognito: `token_use` must be one of [`JwksConfig::token_uses`]; an ID token names the client
    /// in `aud`, an access token (which has no `aud`) in `client_id`.
    Cognito,
    /// Plain OpenID Connect (RFC 9068 access tokens and ID tokens alike): `aud`, a string or an
    /// array, must contain the audience; `token_use` is not read.
    Oidc,
}

/// Where the verifier gets its public keys.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A fixed JSON Web Key Set (`{"keys": [...]}`), such as the development provider's.
    Static(Value),
    /// A key set fetched over HTTP(S) and cached.
    ///
    /// The URL is configured apart from the issuer because emulators serve it elsewhere
    /// (moto: `<endpoint>/<pool id>/.well-known/jwks.json`).
    Remote {
        /// The key set's URL (Cognito: `<issuer>/.well-known/jwks.json`).
        url: String,
        /// The shortest time between two fetches; a token with an unknown `kid` inside this window
        /// is refused without asking the endpoint again.
        min_refresh_interval: Duration,
        /// How long one fetch may take before it counts as failed.
        timeout: Duration,
    },
}

impl KeySource {
    /// A remote key set at `url` with the default refresh interval and timeout.
    pub fn remote(url: impl Into<String>) -> Self {
        KeySource::Remote {
            url: url.into(),
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }
}

/// Everything a [`JwksVerifier`] checks tokens against.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// The exact `iss` every token must carry (Cognito: `https://cognito-idp.<region>.amazonaws.com/<pool id>`).
    pub issuer: String,
    /// The app client id: an ID token's `aud`, an access token's `client_id`.
    pub audience: String,
    /// The `token_use` values accepted; must not be empty.
    /// Only [`ClaimProfile::Cognito`] reads it.
    pub token_uses: Vec<TokenUse>,
    /// Which claims name the client: Cognito's, or plain OpenID Connect's `aud`.
    pub profile: ClaimProfile,
    /// Clock-skew allowance applied to `exp` and `nbf`.
    pub leeway: Duration,
    /// Where the public keys come from.
    pub keys: KeySource,
}

impl JwksConfig {
    /// A configuration accepting ID and access tokens, with [`DEFAULT_LEEWAY`].
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, keys: KeySource) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            token_uses: vec![TokenUse::Id, TokenUse::Access],
            profile: ClaimProfile::Cognito,
            leeway: DEFAULT_LEEWAY,
            keys,
        }
    }

    /// A configuration for any OpenID Connect issuer: tokens need no `token_use`, and their `aud`
    /// must name `audience`.
    pub fn oidc(issuer: impl Into<String>, audience: impl Into<String>, keys: KeySource) -> Self {
        Self {
            profile: ClaimProfile::Oidc,
            ..Self::new(issuer, audience, keys)
        }
    }

    /// The configuration for a Cognito user pool on AWS: its issuer, and its key set at
    /// `<issuer>/.well-known/jwks.json` with the default refresh policy.
    pub fn cognito(region: &str, user_pool_id: &str, client_id: impl Into<String>) -> Self {
        let issuer = cognito_issuer(region, user_pool_id);
        let url = format!("{issuer}/.well-known/jwks.json");
        Self::new(issuer, client_id, KeySource::remote(url))
    }
}

/// The `iss` of tokens from a Cognito user pool.
pub fn cognito_issuer(region: &str, user_pool_id: &str) -> String {
    format!("https://cognito-idp.{region}.amazonaws.com/{user_pool_id}")
}

/// Why a [`JwksVerifier`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksSetupError {
    /// [`JwksConfig::token_uses`] is empty, so every token would be refused.
    #[error("no token use is accepted")]
    NoTokenUse,
    /// The static key set has no usable key.
    #[error("invalid static key set: {0}")]
    KeySet(#[from] KeySetError),
}

/// Verifies RS256 JWTs against a JSON Web Key Set; see the module documentation for the checks.
///
/// Cheap to clone: clones share the key cache.
pub struct JwksVerifier<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for JwksVerifier<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for JwksVerifier<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.inner.current_keys();
        f.debug_struct("JwksVerifier")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("token_uses", &self.inner.token_uses)
            .field("leeway_ms", &self.inner.leeway_ms)
            .field("keys", &keys)
            .field("remote", &self.inner.remote)
            .field("clock", &self.inner.clock)
            .finish()
    }
}

struct Inner<C> {
    issuer: String,
    audience: String,
    token_uses: Vec<TokenUse>,
    profile: ClaimProfile,
    leeway_ms: u64,
    clock: C,
    validation: Validation,
    /// The cached key set; `None` until a remote set has been fetched once.
    /// A std lock is enough: it is held only to clone an `Arc`, never across an await.
    keys: RwLock<Option<Arc<KeyMap>>>,
    remote: Option<Remote>,
    /// Tokens that passed every check, by SHA-256 of their text, so a client's next request with the
    /// same token skips the RSA verification; bounded by [`VERIFIED_CAPACITY`].
    verified: Mutex<HashMap<[u8; 32], Principal>>,
}

/// How many verified tokens are remembered at most.
const VERIFIED_CAPACITY: usize = 4096;

struct Remote {
    url: String,
    min_refresh_ms: u64,
    /// How long one fetch may take in all.
    timeout: Duration,
    /// Serializes fetches (single flight) and remembers when the last one was tried.
    refresh: tokio::sync::Mutex<RefreshState>,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.url)
            .field("min_refresh_ms", &self.min_refresh_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct RefreshState {
    last_attempt: Option<Timestamp>,
    /// Why the last fetch failed; `None` after a success.
    last_error: Option<String>,
}

impl<C: Clock> JwksVerifier<C> {
    /// Builds a verifier. A static key set is parsed now; a remote one is fetched on first use.
    ///
    /// # Errors
    /// [`JwksSetupError`] when no token use is accepted or the static key set has no usable RS256 key.
    pub fn new(config: JwksConfig, clock: C) -> Result<Self, JwksSetupError> {
        if config.profile == ClaimProfile::Cognito && config.token_uses.is_empty() {
            return Err(JwksSetupError::NoTokenUse);
        }
        let (keys, remote) = match config.keys {
            KeySource::Static(document) => (Some(Arc::new(KeyMap::parse(&document)?)), None),
            KeySource::Remote {
                url,
                min_refresh_interval,
                timeout,
            } => {
                let remote = Remote {
                    url,
                    min_refresh_ms: millis(min_refresh_interval),
                    timeout,
                    refresh: tokio::sync::Mutex::new(RefreshState::default()),
                };
                (None, Some(remote))
            }
        };
        // Time claims and the audience are checked by this module against the injected clock;
        // jsonwebtoken is asked only for the signature (and refuses anything but RS256 again).
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Self {
            inner: Arc::new(Inner {
                issuer: config.issuer,
                audience: config.audience,
                token_uses: config.token_uses,
                profile: config.profile,
                leeway_ms: millis(config.leeway),
                clock,
                validation,
                keys: RwLock::new(keys),
                remote,
                verified: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The configured client id.
    pub fn audience(&self) -> &str {
        &self.inner.audience
    }
}

impl<C: Clock> IdentityVerifier for JwksVerifier<C> {
    async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        // A token that passed every check before passes them again until its `exp`: only the expiry
        // depends on time, so it is the one check repeated for a remembered token. (Like the key-set
        // cache, this keeps trusting a key removed from the set until the token expires.)
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = self.inner.clock.now().as_millis();
        let live = |p: &Principal| now < p.expires_at.as_millis().saturating_add(self.inner.leeway_ms);
        {
            let verified = self.inner.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(principal) = verified.get(&digest).filter(|p| live(p)) {
                return Ok(principal.clone());
            }
        }
        let principal = self.inner.verify(token).await?;
        let mut verified = self.inner.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_CAPACITY {
            verified.retain(|_, p| live(p));
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(digest, principal.clone());
        Ok(principal)
    }
}

impl<C> Inner<C> {
    fn current_keys(&self) -> Option<Arc<KeyMap>> {
        // A poisoned lock still holds a consistent `Option<Arc<_>>`: writers only swap the pointer.
        self.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn cached_key(&self, kid: &str) -> Option<DecodingKey> {
        self.current_keys().and_then(|keys| keys.get(kid).cloned())
    }
}

impl<C: Clock> Inner<C> {
    async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("token is too long".into()));
        }
        let mut segments = token.split('.');
        let (Some(header), Some(_payload), Some(_signature), None) =
            (segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err(AuthError::Malformed("a JWT has three dot-separated parts".into()));
        };
        let kid = parse_header(header)?;
        let key = self.key_for(&kid).await?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &self.validation)
            .map_err(|e| map_decode_error(e.kind()))?;
        self.check_claims(&data.claims)
    }

    /// Checks the claims of a token whose signature is already verified.
    fn check_claims(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
        if !matches!(claims.get("iss"), Some(Value::String(iss)) if *iss == self.issuer) {
            return Err(AuthError::WrongIssuer);
        }
        let aud_ok = || match claims.get("aud") {
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        let audience_ok = match self.profile {
            ClaimProfile::Oidc => aud_ok(),
            ClaimProfile::Cognito => {
                let token_use = match claims.get("token_use") {
                    Some(Value::String(value)) => TokenUse::parse(value),
                    _ => None,
                };
                let Some(token_use) = token_use.filter(|u| self.token_uses.contains(u)) else {
                    return Err(AuthError::WrongTokenUse);
                };
                match token_use {
                    TokenUse::Id => aud_ok(),
                    TokenUse::Access => {
                        matches!(claims.get("client_id"), Some(Value::String(client)) if *client == self.audience)
                    }
                }
            }
        };
        if !audience_ok {
            return Err(AuthError::WrongAudience);
        }
        let now = self.clock.now().as_millis();
        // A token without `exp` would never expire; Cognito always sets it, so its absence is malformed.
        let Some(exp) = numeric_date(claims, "exp")? else {
            return Err(AuthError::Malformed("token has no exp claim".into()));
        };
        // RFC 7519: the token is valid only while now is before `exp`.
        if now >= exp.saturating_add(self.leeway_ms) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now.saturating_add(self.leeway_ms) < nbf
        {
            return Err(AuthError::NotYetValid);
        }
        let user = match claims.get("sub") {
            Some(Value::String(sub)) => UserId::parse(sub.as_str()).map_err(|_| AuthError::BadSubject)?,
            _ => return Err(AuthError::BadSubject),
        };
        Ok(Principal {
            user,
            expires_at: Timestamp::from_millis(exp),
        })
    }

    /// The key named `kid`, refreshing a remote key set (at most once per interval) when it is unknown.
    async fn key_for(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        let Some(remote) = &self.remote else {
            return Err(AuthError::UnknownKey);
        };
        let mut state = remote.refresh.lock().await;
        // Another caller may have fetched the set while this one waited for the lock: that
        // fetch counts, which is what keeps concurrent callers from stampeding the endpoint.
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        let now = self.clock.now();
        if let Some(last) = state.last_attempt
            && now.as_millis() < last.as_millis().saturating_add(remote.min_refresh_ms)
        {
            return Err(match &state.last_error {
                Some(error) => AuthError::Unavailable(error.clone()),
                None => AuthError::UnknownKey,
            });
        }
        state.last_attempt = Some(now);
        match remote.fetch().await {
            Ok(fresh) => {
                state.last_error = None;
                let key = fresh.get(kid).cloned();
                tracing::debug!(url = %remote.url, keys = fresh.len(), "fetched the JSON Web Key Set");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(fresh));
                key.ok_or(AuthError::UnknownKey)
            }
            Err(error) => {
                tracing::warn!(url = %remote.url, %error, "cannot fetch the JSON Web Key Set");
                state.last_error = Some(error.clone());
                // Even with keys cached, the token may name a key the endpoint has just added:
                // it cannot be judged now, which is what `Unavailable` means.
                Err(AuthError::Unavailable(error))
            }
        }
    }
}

impl Remote {
    /// Fetches and parses the key set, within the configured timeout.
    async fn fetch(&self) -> Result<KeyMap, String> {
        let url = &self.url;
        match tokio::time::timeout(self.timeout, self.fetch_unbounded()).await {
            Ok(result) => result.map_err(|e| format!("GET {url}: {e}")),
            Err(_) => Err(format!("GET {url}: no answer within {:?}", self.timeout)),
        }
    }

    /// The fetch itself, through the process's HTTP client (the one the SDK clients use, see
    /// [`crate::http`]): its connect and read timeouts bound each step, [`Remote::fetch`] the whole.
    async fn fetch_unbounded(&self) -> Result<KeyMap, String> {
        let document = get_json(&self.url, self.timeout).await?;
        KeyMap::parse(&document).map_err(|e| e.to_string())
    }
}

/// Fetches a JSON document of at most 1 MiB, such as an OpenID Connect discovery document, with the
/// HTTP client the key sets are fetched with, within `timeout`.
///
/// # Errors
/// A description naming `url` when the request fails, the status is not a success, the body is too
/// large or is not JSON.
pub async fn fetch_json(url: &str, timeout: Duration) -> Result<Value, String> {
    match tokio::time::timeout(timeout, get_json(url, timeout)).await {
        Ok(result) => result.map_err(|e| format!("GET {url}: {e}")),
        Err(_) => Err(format!("GET {url}: no answer within {timeout:?}")),
    }
}

/// One GET of a JSON document through the process's HTTP client (the one the SDK clients use, see
/// [`crate::http`]): its connect and read timeouts bound each step, the caller the whole.
async fn get_json(url: &str, timeout: Duration) -> Result<Value, String> {
    let mut request = HttpRequest::get(url).map_err(|e| error_chain(&e))?;
    request.headers_mut().insert("accept", "application/json");
    let connector = crate::http::connector(timeout, timeout);
    let response = connector.call(request).await.map_err(|e| error_chain(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let mut stream = ByteStream::new(response.into_body());
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| error_chain(&e))?;
        if body.len().saturating_add(chunk.len()) > MAX_JWKS_BYTES {
            return Err(format!("document larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
}

/// Reads the JOSE header far enough to refuse every algorithm but RS256 before any crypto runs,
/// and returns its `kid`.
fn parse_header(segment: &str) -> Result<String, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed("header is not base64url".into()))?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed("header is not a JSON object".into()))?;
    let Some(Value::String(alg)) = header.get("alg") else {
        return Err(AuthError::Malformed("header has no alg".into()));
    };
    if alg != "RS256" {
        return Err(AuthError::Algorithm(alg.chars().take(MAX_ALG_IN_ERROR).collect()));
    }
    // RFC 7515 4.1.11: extensions listed in `crit` must be understood, and none are.
    if header.contains_key("crit") {
        return Err(AuthError::Malformed(
            "critical header extensions are not supported".into(),
        ));
    }
    match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => Ok(kid.clone()),
        // Without a `kid` no key of the set is named; refetching could not help.
        None => Err(AuthError::UnknownKey),
        Some(_) => Err(AuthError::Malformed("kid is not a non-empty string".into())),
    }
}

fn map_decode_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            AuthError::BadSignature
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::Algorithm("not RS256".into())
        }
        ErrorKind::Base64(_) => AuthError::Malformed("a part is not base64url".into()),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => AuthError::Malformed("a part is not a JSON object".into()),
        other => AuthError::Malformed(format!("{other:?}")),
    }
}

/// A NumericDate claim (seconds since the epoch, possibly fractional) in milliseconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(AuthError::Malformed(format!("{name} is not a number")));
    };
    if let Some(seconds) = number.as_u64() {
        return Ok(Some(seconds.saturating_mul(1000)));
    }
    match number.as_f64() {
        // The cast saturates, which is the right answer for absurdly distant dates.
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(Some((seconds * 1000.0) as u64)),
        _ => Err(AuthError::Malformed(format!("{name} is not a valid date"))),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// An error and its sources on one line: an HTTP client's own message hides the cause (refused, timed out, ...).
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
