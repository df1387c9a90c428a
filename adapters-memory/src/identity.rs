//! The development identity provider: signs RS256 ID tokens and publishes its public key set, for `rookery serve`.
//!
//! It stands in for Cognito on one machine. Its tokens have Cognito's shape (`iss`, `sub`, `aud`,
//! `token_use: "id"`, `iat`, `exp`, a `kid` in the header), so the server checks them with the very
//! verifier that checks Cognito tokens, fed with [`DevIdentityProvider::jwks`] as a static key set.
//! The signing key is a 2048-bit RSA key, kept in memory ([`DevIdentityProvider::ephemeral`]) or in
//! `dev-signing-key.pem` under a data directory ([`DevIdentityProvider::open`]) so tokens survive restarts.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rookery_domain::{Timestamp, UserId};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use rsa::traits::PublicKeyParts as _;
use serde::Serialize;
use serde_json::{Value, json};

/// The file under the data directory that holds the signing key (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "dev-signing-key.pem";

/// The `iss` of development tokens unless [`DevIdentityProvider::with_issuer`] says otherwise.
pub const DEFAULT_ISSUER: &str = "rookery-dev";

/// The `aud` (client id) of development tokens unless [`DevIdentityProvider::with_audience`] says otherwise.
pub const DEFAULT_AUDIENCE: &str = "rookery-dev-client";

/// The size of generated keys, in bits: what Cognito uses.
const KEY_BITS: usize = 2048;

/// Why the provider could not be set up or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum DevIdentityError {
    /// The operating system's random source failed while generating a key.
    #[error("cannot generate the signing key: {0}")]
    Generate(String),
    /// The key file or its directory could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The key file exists but holds no usable RSA private key; it is left alone, never replaced.
    #[error("{path} holds no usable RSA private key: {reason}")]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Signing a token failed.
    #[error("cannot sign a token: {0}")]
    Sign(String),
}

/// What a JWKS verifier needs to check this provider's tokens: pass these as its issuer, its
/// audience and a static key set (`KeySource::Static(jwks)` of `rookery_adapters_aws::jwt`).
#[derive(Debug, Clone, PartialEq)]
pub struct DevVerifierConfig {
    /// The `iss` of every token issued.
    pub issuer: String,
    /// The `aud` of every token issued (the tokens are ID tokens).
    pub audience: String,
    /// The public key set, `{"keys": [...]}`.
    pub jwks: Value,
}

/// Issues RS256 ID tokens for any user and publishes the key that checks them. Cheap to clone.
#[derive(Clone)]
pub struct DevIdentityProvider {
    key: Arc<SigningKey>,
    issuer: String,
    audience: String,
}

struct SigningKey {
    encoding: EncodingKey,
    kid: String,
    /// The public JWK, with `kid`, `alg` and `use`.
    jwk: Value,
}

impl fmt::Debug for DevIdentityProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("DevIdentityProvider")
            .field("kid", &self.key.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    token_use: &'static str,
    auth_time: u64,
    iat: u64,
    exp: u64,
}

impl DevIdentityProvider {
    /// A provider with a fresh key that lives only as long as the process: tokens die with it.
    ///
    /// # Errors
    /// [`DevIdentityError::Generate`] when the random source fails.
    pub fn ephemeral() -> Result<Self, DevIdentityError> {
        let private = generate()?;
        Self::from_private_key(&private).map_err(DevIdentityError::Generate)
    }

    /// A provider whose key is kept in `dir/dev-signing-key.pem`: loaded when the file exists,
    /// otherwise generated and written there (owner-only permissions) so tokens stay valid across restarts.
    ///
    /// # Errors
    /// [`DevIdentityError::Io`] when the directory or file cannot be created or read,
    /// [`DevIdentityError::InvalidKey`] when the file holds no usable key (it is not overwritten),
    /// [`DevIdentityError::Generate`] when a new key cannot be generated.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, DevIdentityError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|source| DevIdentityError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(KEY_FILE);
        let private = match fs::read_to_string(&path) {
            Ok(pem) => load(&path, &pem)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => create(&path)?,
            Err(source) => return Err(DevIdentityError::Io { path, source }),
        };
        Self::from_private_key(&private).map_err(|reason| DevIdentityError::InvalidKey { path, reason })
    }

    fn from_private_key(private: &rsa::PrivateKey) -> Result<Self, String> {
        let der = private.to_pkcs1_der().map_err(|e| e.to_string())?;
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).map_err(|e| e.to_string())?;
        // RFC 7638: the thumbprint depends only on the public key, so the kid is stable across restarts.
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|e| e.to_string())?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let jwk = serde_json::to_value(&jwk).map_err(|e| e.to_string())?;
        Ok(Self {
            key: Arc::new(SigningKey { encoding, kid, jwk }),
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
        })
    }

    /// The same provider issuing tokens with `iss` = `issuer`.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The same provider issuing tokens with `aud` = `audience`.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// The key id in every token's header and in the key set: the key's RFC 7638 SHA-256 thumbprint.
    pub fn kid(&self) -> &str {
        &self.key.kid
    }

    /// The `iss` of issued tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` of issued tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// A signed ID token for `user`, issued at `now` and valid for `ttl` (whole seconds, as JWT
    /// dates are), and the instant it expires (exactly the token's `exp`).
    ///
    /// # Errors
    /// [`DevIdentityError::Sign`] when signing fails.
    pub fn issue(&self, user: &UserId, now: Timestamp, ttl: Duration) -> Result<(String, Timestamp), DevIdentityError> {
        let iat = now.as_millis() / 1000;
        let exp = iat.saturating_add(ttl.as_secs());
        let claims = Claims {
            iss: &self.issuer,
            sub: user.as_str(),
            aud: &self.audience,
            token_use: "id",
            auth_time: iat,
            iat,
            exp,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key.encoding)
            .map_err(|e| DevIdentityError::Sign(e.to_string()))?;
        Ok((token, Timestamp::from_millis(exp.saturating_mul(1000))))
    }

    /// The public key set to serve at `/.well-known/jwks.json`: `{"keys": [<one RSA key>]}`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.jwk.clone()] })
    }

    /// The issuer, audience and key set a verifier needs to accept this provider's tokens.
    pub fn verifier_config(&self) -> DevVerifierConfig {
        DevVerifierConfig {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            jwks: self.jwks(),
        }
    }
}

fn generate() -> Result<rsa::PrivateKey, DevIdentityError> {
    rsa::PrivateKey::new(&mut getrandom::SysRng, KEY_BITS).map_err(|e| DevIdentityError::Generate(e.to_string()))
}

/// Parses a key file: PKCS#8 (what this module writes) or PKCS#1 (what `openssl genrsa` wrote for years).
fn load(path: &Path, pem: &str) -> Result<rsa::PrivateKey, DevIdentityError> {
    let invalid = |reason: String| DevIdentityError::InvalidKey {
        path: path.to_owned(),
        reason,
    };
    let private = rsa::PrivateKey::from_pkcs8_pem(pem)
        .or_else(|pkcs8| rsa::PrivateKey::from_pkcs1_pem(pem).map_err(|_| pkcs8.to_string()))
        .map_err(invalid)?;
    if private.size() * 8 < KEY_BITS {
        return Err(invalid(format!("the key is shorter than {KEY_BITS} bits")));
    }
    warn_if_exposed(path);
    Ok(private)
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(metadata) = fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the development signing key is readable by other users");
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path) {}

/// Generates a key and writes it to `path`, unless another process got there first, in which case
/// that process's key is loaded instead so both hand out tokens under the same key.
fn create(path: &Path) -> Result<rsa::PrivateKey, DevIdentityError> {
    let private = generate()?;
    let pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| DevIdentityError::Generate(e.to_string()))?;
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| DevIdentityError::Io { path, source }
    };
    // Written whole to a private temporary file first, so a crash never leaves a truncated key behind.
    let temporary = path.with_extension(format!("pem.{}.tmp", std::process::id()));
    write_private(&temporary, pem.as_bytes()).map_err(io_error(&temporary))?;
    // A hard link, unlike a rename, refuses to replace a key another process has just written.
    let linked = fs::hard_link(&temporary, path);
    let outcome = match linked {
        Ok(()) => Ok(private),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let existing = fs::read_to_string(path).map_err(io_error(path))?;
            load(path, &existing)
        }
        // Some file systems have no hard links; there, a rename is the best available.
        Err(_) => fs::rename(&temporary, path).map(|()| private).map_err(io_error(path)),
    };
    // After a rename the temporary file is already gone, which is fine.
    let _ = fs::remove_file(&temporary);
    sync_dir(path);
    outcome
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // The mode above applies only to a new file; a leftover temporary file gets it here.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the new directory entry durable; best effort, since the key is already safely written.
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent()
        && let Ok(dir) = File::open(dir)
    {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::Map;
    use sha2::{Digest as _, Sha256};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// 2026-11-25T10:00:00.123Z.
    const NOW: Timestamp = Timestamp::from_millis(1_795_600_800_123);

    /// One provider per test process: RSA key generation is slow.
    fn provider() -> &'static DevIdentityProvider {
        static PROVIDER: OnceLock<DevIdentityProvider> = OnceLock::new();
        PROVIDER.get_or_init(|| DevIdentityProvider::ephemeral().expect("generate a development key"))
    }

    /// Checks `token`'s signature against the first key of `jwks` and returns its header and claims.
    fn decode(token: &str, jwks: &Value) -> Result<(Header, Map<String, Value>), Box<dyn std::error::Error>> {
        let jwk: Jwk = serde_json::from_value(jwks["keys"][0].clone())?;
        let mut validation = Validation::new(Algorithm::RS256);
        // Only the signature is under test here; the claims are asserted one by one.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &DecodingKey::from_jwk(&jwk)?, &validation)?;
        Ok((data.header, data.claims))
    }

    #[test]
    fn issued_tokens_are_rs256_id_tokens_with_the_default_claims() -> TestResult {
        let provider = provider();
        let user = UserId::parse("alice")?;
        let (token, expires_at) = provider.issue(&user, NOW, Duration::from_secs(900))?;
        let (header, claims) = decode(&token, &provider.jwks())?;
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(provider.kid()));
        assert_eq!(claims["iss"], "rookery-dev");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["aud"], "rookery-dev-client");
        assert_eq!(claims["token_use"], "id");
        assert_eq!(claims["iat"], 1_795_600_800);
        assert_eq!(claims["exp"], 1_795_600_800 + 900);
        assert_eq!(expires_at, Timestamp::from_millis((1_795_600_800 + 900) * 1000));
        Ok(())
    }

    #[test]
    fn issuer_and_audience_are_configurable() -> TestResult {
        let provider = provider()
            .clone()
            .with_issuer("http://127.0.0.1:8080")
            .with_audience("my-app");
        let (token, _) = provider.issue(&UserId::parse("bob@example.com")?, NOW, Duration::from_secs(60))?;
        let (_, claims) = decode(&token, &provider.jwks())?;
        assert_eq!(claims["iss"], "http://127.0.0.1:8080");
        assert_eq!(claims["aud"], "my-app");
        assert_eq!(claims["sub"], "bob@example.com");
        let config = provider.verifier_config();
        assert_eq!(config.issuer, "http://127.0.0.1:8080");
        assert_eq!(config.audience, "my-app");
        assert_eq!(config.jwks, provider.jwks());
        Ok(())
    }

    #[test]
    fn a_tampered_token_fails_the_signature_check() -> TestResult {
        let provider = provider();
        let (token, _) = provider.issue(&UserId::parse("alice")?, NOW, Duration::from_secs(60))?;
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            br#"{"iss":"rookery-dev","sub":"mallory","aud":"rookery-dev-client","token_use":"id","iat":1,"exp":9999999999}"#,
        );
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert!(decode(&forged, &provider.jwks()).is_err());
        Ok(())
    }

    #[test]
    fn the_key_set_publishes_only_the_public_signing_key() {
        let provider = provider();
        let jwks = provider.jwks();
        let keys = jwks["keys"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert_eq!(keys.len(), 1);
        let key = &keys[0];
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["alg"], "RS256");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kid"], provider.kid());
        assert_eq!(key["e"], "AQAB");
        let n = key["n"].as_str().map(|n| URL_SAFE_NO_PAD.decode(n));
        assert!(
            matches!(n, Some(Ok(ref bytes)) if bytes.len() == 256),
            "a 2048-bit modulus"
        );
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(key.get(private).is_none(), "{private} must not be published");
        }
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint_of_the_public_key() {
        let provider = provider();
        let key = &provider.jwks()["keys"][0];
        let canonical = format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            key["e"].as_str().unwrap_or_default(),
            key["n"].as_str().unwrap_or_default()
        );
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        assert_eq!(provider.kid(), expected);
    }

    #[test]
    fn a_corrupt_key_file_is_refused_and_left_in_place() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(KEY_FILE);
        fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        )?;
        let outcome = DevIdentityProvider::open(dir.path());
        assert!(
            matches!(outcome, Err(DevIdentityError::InvalidKey { .. })),
            "{outcome:?}"
        );
        assert!(fs::read_to_string(&path)?.contains("bm90IGEga2V5"));
        Ok(())
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_an_io_error() -> TestResult {
        let file = tempfile::NamedTempFile::new()?;
        let outcome = DevIdentityProvider::open(file.path());
        assert!(matches!(outcome, Err(DevIdentityError::Io { .. })), "{outcome:?}");
        Ok(())
    }

    #[test]
    fn debug_output_leaves_the_key_out() {
        let text = format!("{:?}", provider());
        assert!(text.contains(provider().kid()));
        assert!(!text.contains("PRIVATE"));
    }
}
