//! The JWT suite: every refusal the identity port names, against static and remote key sets.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::json;

use super::*;

const ISSUER: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TestPool";
const CLIENT: &str = "test-client-id";
const USER: &str = "6f0c7c4e-2b1a-4d5e-9f3a-0a1b2c3d4e5f";
/// 2026-11-25T10:00:00Z, in seconds.
const NOW: u64 = 1_795_600_800;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A clock the test moves by hand.
#[derive(Debug, Clone)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn at(seconds: u64) -> Self {
        Self(Arc::new(AtomicU64::new(seconds * 1000)))
    }

    fn advance(&self, by: Duration) {
        self.0.fetch_add(millis(by), Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// An RSA key pair the tests sign with.
struct TestKey {
    kid: String,
    encoding: EncodingKey,
    /// The public key as PEM: what an attacker would use as an HMAC secret.
    public_pem: String,
    jwk: Value,
}

/// Two keys, generated once per test process because RSA key generation is slow.
fn keys() -> &'static [TestKey; 2] {
    static KEYS: OnceLock<[TestKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| [generate("key-1"), generate("key-2")])
}

fn generate(kid: &str) -> TestKey {
    let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("generate an RSA key");
    let der = private.to_pkcs1_der().expect("encode the key as PKCS#1");
    let encoding = EncodingKey::from_rsa_der(der.as_bytes());
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("encode the public key");
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).expect("derive the public JWK");
    jwk.common.key_id = Some(kid.to_owned());
    let jwk = serde_json::to_value(jwk).expect("serialize the JWK");
    TestKey {
        kid: kid.to_owned(),
        encoding,
        public_pem,
        jwk,
    }
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

fn id_claims() -> Value {
    json!({
        "sub": USER,
        "aud": CLIENT,
        "iss": ISSUER,
        "token_use": "id",
        "cognito:username": "alice",
        "auth_time": NOW - 60,
        "iat": NOW - 60,
        "exp": NOW + 3600,
    })
}

fn access_claims() -> Value {
    json!({
        "sub": USER,
        "client_id": CLIENT,
        "iss": ISSUER,
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "username": "alice",
        "iat": NOW - 60,
        "exp": NOW + 3600,
    })
}

/// `claims` with `changes` merged in; a `null` in `changes` removes the claim.
fn with(mut claims: Value, changes: Value) -> Value {
    if let (Some(target), Value::Object(changes)) = (claims.as_object_mut(), changes) {
        for (name, value) in changes {
            if value.is_null() {
                target.remove(&name);
            } else {
                target.insert(name, value);
            }
        }
    }
    claims
}

fn sign_as(key: &TestKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign a test token")
}

fn sign(key: &TestKey, claims: &Value) -> String {
    sign_as(key, &key.kid, claims)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with a hand-written header and an arbitrary signature, for headers no signer would produce.
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn static_verifier(clock: &TestClock) -> JwksVerifier<TestClock> {
    let config = JwksConfig::new(ISSUER, CLIENT, KeySource::Static(jwks(&[&keys()[0]])));
    JwksVerifier::new(config, clock.clone()).expect("a valid configuration")
}

async fn verify_with_static_key(claims: &Value) -> Result<Principal, AuthError> {
    let clock = TestClock::at(NOW);
    static_verifier(&clock).verify(&sign(&keys()[0], claims)).await
}

#[tokio::test]
async fn a_valid_id_token_yields_its_subject_and_expiry() -> TestResult {
    let principal = verify_with_static_key(&id_claims()).await?;
    assert_eq!(principal.user, UserId::parse(USER)?);
    assert_eq!(principal.expires_at, Timestamp::from_millis((NOW + 3600) * 1000));
    Ok(())
}

#[tokio::test]
async fn a_valid_access_token_is_accepted_by_its_client_id() -> TestResult {
    let principal = verify_with_static_key(&access_claims()).await?;
    assert_eq!(principal.user, UserId::parse(USER)?);
    Ok(())
}

#[tokio::test]
async fn the_user_is_the_sub_never_the_cognito_username() -> TestResult {
    let principal = verify_with_static_key(&id_claims()).await?;
    assert_ne!(principal.user.as_str(), "alice");
    assert_eq!(principal.user.as_str(), USER);
    Ok(())
}

#[tokio::test]
async fn an_id_token_whose_aud_list_names_the_client_is_accepted() -> TestResult {
    let claims = with(id_claims(), json!({"aud": ["another-client", CLIENT]}));
    assert!(verify_with_static_key(&claims).await.is_ok());
    Ok(())
}

async fn verify_as_oidc(claims: &Value) -> Result<Principal, AuthError> {
    let config = JwksConfig::oidc(ISSUER, CLIENT, KeySource::Static(jwks(&[&keys()[0]])));
    let verifier = JwksVerifier::new(config, TestClock::at(NOW)).expect("a valid configuration");
    verifier.verify(&sign(&keys()[0], claims)).await
}

/// A plain OpenID Connect access token: `aud` names the API, and there is no `token_use` or `client_id`.
fn oidc_claims() -> Value {
    json!({
        "sub": USER,
        "aud": ["account", CLIENT],
        "azp": "mobile-app",
        "iss": ISSUER,
        "iat": NOW - 60,
        "exp": NOW + 3600,
    })
}

#[tokio::test]
async fn an_oidc_token_without_token_use_is_accepted_by_its_aud() -> TestResult {
    let principal = verify_as_oidc(&oidc_claims()).await?;
    assert_eq!(principal.user, UserId::parse(USER)?);
    assert!(
        verify_as_oidc(&with(oidc_claims(), json!({"aud": CLIENT})))
            .await
            .is_ok()
    );
    // The Cognito profile keeps refusing it: it has no token_use.
    assert_eq!(
        verify_with_static_key(&oidc_claims()).await,
        Err(AuthError::WrongTokenUse)
    );
    Ok(())
}

#[tokio::test]
async fn an_oidc_token_naming_the_client_only_outside_aud_is_refused() {
    let elsewhere = with(
        oidc_claims(),
        json!({"aud": "account", "client_id": CLIENT, "azp": CLIENT}),
    );
    assert_eq!(verify_as_oidc(&elsewhere).await, Err(AuthError::WrongAudience));
    let no_aud = with(oidc_claims(), json!({"aud": null}));
    assert_eq!(verify_as_oidc(&no_aud).await, Err(AuthError::WrongAudience));
    // A Cognito access token has no aud, so the OpenID Connect profile refuses it.
    assert_eq!(verify_as_oidc(&access_claims()).await, Err(AuthError::WrongAudience));
    let other_issuer = with(oidc_claims(), json!({"iss": "https://id.example/realms/other"}));
    assert_eq!(verify_as_oidc(&other_issuer).await, Err(AuthError::WrongIssuer));
}

#[tokio::test]
async fn alg_none_is_refused_as_an_algorithm() {
    let clock = TestClock::at(NOW);
    let verifier = static_verifier(&clock);
    for alg in ["none", "None", "NONE"] {
        let unsigned = raw_token(&json!({"alg": alg, "kid": "key-1", "typ": "JWT"}), &id_claims(), "");
        assert_eq!(verifier.verify(&unsigned).await, Err(AuthError::Algorithm(alg.into())));
    }
}

#[tokio::test]
async fn hmac_tokens_keyed_with_the_public_key_are_refused_as_an_algorithm() -> TestResult {
    let clock = TestClock::at(NOW);
    let verifier = static_verifier(&clock);
    let key = &keys()[0];
    let jwk_text = key.jwk.to_string();
    let secrets: [&[u8]; 2] = [key.public_pem.as_bytes(), jwk_text.as_bytes()];
    for (alg, name) in [
        (Algorithm::HS256, "HS256"),
        (Algorithm::HS384, "HS384"),
        (Algorithm::HS512, "HS512"),
    ] {
        for secret in secrets {
            let mut header = Header::new(alg);
            header.kid = Some(key.kid.clone());
            let forged = jsonwebtoken::encode(&header, &id_claims(), &EncodingKey::from_secret(secret))?;
            assert_eq!(verifier.verify(&forged).await, Err(AuthError::Algorithm(name.into())));
        }
    }
    Ok(())
}

#[tokio::test]
async fn other_asymmetric_algorithms_are_refused() -> TestResult {
    let clock = TestClock::at(NOW);
    let verifier = static_verifier(&clock);
    let key = &keys()[0];
    // PS256 and RS512 use the very same RSA key, so only the algorithm is wrong.
    for (alg, name) in [(Algorithm::PS256, "PS256"), (Algorithm::RS512, "RS512")] {
        let mut header = Header::new(alg);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &id_claims(), &key.encoding)?;
        assert_eq!(verifier.verify(&token).await, Err(AuthError::Algorithm(name.into())));
    }
    for alg in ["ES256", "EdDSA", "XYZ999"] {
        let token = raw_token(&json!({"alg": alg, "kid": key.kid}), &id_claims(), "c2ln");
        assert_eq!(verifier.verify(&token).await, Err(AuthError::Algorithm(alg.into())));
    }
    Ok(())
}

#[tokio::test]
async fn a_token_naming_an_unknown_kid_is_refused() {
    let clock = TestClock::at(NOW);
    let verifier = static_verifier(&clock);
    // Correctly signed, but by a key the set does not hold.
    let token = sign(&keys()[1], &id_claims());
    assert_eq!(verifier.verify(&token).await, Err(AuthError::UnknownKey));
}

#[tokio::test]
async fn a_token_without_kid_is_refused_as_an_unknown_key() -> TestResult {
    let clock = TestClock::at(NOW);
    let verifier = static_verifier(&clock);
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &id_claims(), &keys()[0].encoding)?;
    assert_eq!(verifier.verify(&token).await, Err(AuthError::UnknownKey));
    Ok(())
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_known_kid_has_a_bad_signature() {
    let clock = TestClock::at(NOW);
    let verifier = static_verifier(&clock);
    let token = sign_as(&keys()[1], &keys()[0].kid, &id_claims());
    assert_eq!(verifier.verify(&token).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn a_tampered_payload_has_a_bad_signature() {
    let clock = TestClock::at(NOW);
    let verifier = static_verifier(&clock);
    let genuine = sign(&keys()[0], &id_claims());
    let other = sign(&keys()[0], &with(id_claims(), json!({"sub": "mallory"})));
    let genuine: Vec<&str> = genuine.split('.').collect();
    let other: Vec<&str> = other.split('.').collect();
    // Mallory's claims under the signature of Alice's token: each part is valid, the pair is not.
    let spliced = format!("{}.{}.{}", genuine[0], other[1], genuine[2]);
    assert_eq!(verifier.verify(&spliced).await, Err(AuthError::BadSignature));
    // A hand-edited payload fares no better.
    let edited = format!(
        "{}.{}.{}",
        genuine[0],
        b64(with(id_claims(), json!({"sub": "mallory"})).to_string().as_bytes()),
        genuine[2]
    );
    assert_eq!(verifier.verify(&edited).await, Err(AuthError::BadSignature));
    let stripped = format!("{}.{}.", genuine[0], genuine[1]);
    assert_eq!(verifier.verify(&stripped).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let claims = with(id_claims(), json!({"exp": NOW - 3600}));
    assert_eq!(verify_with_static_key(&claims).await, Err(AuthError::Expired));
}

#[tokio::test]
async fn a_token_expires_when_the_clock_passes_exp_plus_leeway() -> TestResult {
    let clock = TestClock::at(NOW);
    let verifier = static_verifier(&clock);
    let token = sign(&keys()[0], &with(id_claims(), json!({"exp": NOW + 60})));
    assert!(verifier.verify(&token).await.is_ok());
    clock.advance(Duration::from_secs(60) + DEFAULT_LEEWAY - Duration::from_millis(1));
    assert!(verifier.verify(&token).await.is_ok(), "still inside the leeway");
    clock.advance(Duration::from_millis(1));
    assert_eq!(verifier.verify(&token).await, Err(AuthError::Expired));
    Ok(())
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() -> TestResult {
    let claims = with(id_claims(), json!({"nbf": NOW + 600}));
    assert_eq!(verify_with_static_key(&claims).await, Err(AuthError::NotYetValid));
    let within_leeway = with(id_claims(), json!({"nbf": NOW + 3}));
    assert!(verify_with_static_key(&within_leeway).await.is_ok());
    let past = with(id_claims(), json!({"nbf": NOW - 600}));
    assert!(verify_with_static_key(&past).await.is_ok());
    Ok(())
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    for iss in [
        json!("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other"),
        json!(null),
        json!(42),
    ] {
        let claims = with(id_claims(), json!({"iss": iss}));
        assert_eq!(
            verify_with_static_key(&claims).await,
            Err(AuthError::WrongIssuer),
            "iss {iss}"
        );
    }
}

#[tokio::test]
async fn an_id_token_for_another_audience_is_refused() {
    for aud in [json!("another-client"), json!(["another-client"]), json!(null)] {
        let claims = with(id_claims(), json!({"aud": aud}));
        assert_eq!(
            verify_with_static_key(&claims).await,
            Err(AuthError::WrongAudience),
            "aud {aud}"
        );
    }
    // An ID token is judged by `aud`, never by `client_id`.
    let claims = with(id_claims(), json!({"aud": "another-client", "client_id": CLIENT}));
    assert_eq!(verify_with_static_key(&claims).await, Err(AuthError::WrongAudience));
}

#[tokio::test]
async fn an_access_token_for_another_client_is_refused() {
    let claims = with(access_claims(), json!({"client_id": "another-client"}));
    assert_eq!(verify_with_static_key(&claims).await, Err(AuthError::WrongAudience));
    // An access token is judged by `client_id`, never by `aud`.
    let claims = with(access_claims(), json!({"client_id": null, "aud": CLIENT}));
    assert_eq!(verify_with_static_key(&claims).await, Err(AuthError::WrongAudience));
}

#[tokio::test]
async fn a_wrong_or_missing_token_use_is_refused() {
    for token_use in [json!("refresh"), json!("ID"), json!(null), json!(1)] {
        let claims = with(id_claims(), json!({"token_use": token_use}));
        assert_eq!(
            verify_with_static_key(&claims).await,
            Err(AuthError::WrongTokenUse),
            "token_use {token_use}"
        );
    }
}

#[tokio::test]
async fn a_token_use_not_configured_is_refused() -> TestResult {
    let clock = TestClock::at(NOW);
    let mut config = JwksConfig::new(ISSUER, CLIENT, KeySource::Static(jwks(&[&keys()[0]])));
    config.token_uses = vec![TokenUse::Id];
    let verifier = JwksVerifier::new(config, clock)?;
    assert!(verifier.verify(&sign(&keys()[0], &id_claims())).await.is_ok());
    let access = sign(&keys()[0], &access_claims());
    assert_eq!(verifier.verify(&access).await, Err(AuthError::WrongTokenUse));
    Ok(())
}

#[tokio::test]
async fn a_missing_or_invalid_subject_is_refused() {
    for sub in [
        json!(null),
        json!(""),
        json!("has space"),
        json!("-leading-dash"),
        json!(7),
    ] {
        let claims = with(id_claims(), json!({"sub": sub}));
        assert_eq!(
            verify_with_static_key(&claims).await,
            Err(AuthError::BadSubject),
            "sub {sub}"
        );
    }
}

#[tokio::test]
async fn broken_tokens_are_malformed_never_a_panic() {
    let clock = TestClock::at(NOW);
    let verifier = static_verifier(&clock);
    assert_eq!(verifier.verify("").await, Err(AuthError::Missing));
    let good = sign(&keys()[0], &id_claims());
    let parts: Vec<&str> = good.split('.').collect();
    let not_json = b64(b"not json");
    let array = b64(b"[1,2]");
    let no_alg = b64(br#"{"kid":"key-1"}"#);
    let alg_number = b64(br#"{"alg":256,"kid":"key-1"}"#);
    let kid_number = b64(br#"{"alg":"RS256","kid":1}"#);
    let crit = b64(br#"{"alg":"RS256","kid":"key-1","crit":["b64"],"b64":false}"#);
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    let cases = [
        "abc".to_owned(),
        "a.b".to_owned(),
        format!("{good}.extra"),
        format!("!!!.{}.{}", parts[1], parts[2]),
        format!("{not_json}.{}.{}", parts[1], parts[2]),
        format!("{array}.{}.{}", parts[1], parts[2]),
        format!("{no_alg}.{}.{}", parts[1], parts[2]),
        format!("{alg_number}.{}.{}", parts[1], parts[2]),
        format!("{kid_number}.{}.{}", parts[1], parts[2]),
        format!("{crit}.{}.{}", parts[1], parts[2]),
        format!("{}.{}.!!!", parts[0], parts[1]),
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        huge,
    ];
    for case in &cases {
        let outcome = verifier.verify(case).await;
        assert!(
            matches!(outcome, Err(AuthError::Malformed(_))),
            "{case:.60}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn signed_claims_of_the_wrong_shape_are_malformed() {
    for claims in [
        with(id_claims(), json!({"exp": null})),
        with(id_claims(), json!({"exp": "tomorrow"})),
        with(id_claims(), json!({"exp": -5})),
        with(id_claims(), json!({"nbf": "now"})),
    ] {
        let outcome = verify_with_static_key(&claims).await;
        assert!(matches!(outcome, Err(AuthError::Malformed(_))), "{claims}: {outcome:?}");
    }
    // A payload that is valid JSON but not an object.
    let outcome = verify_with_static_key(&json!(["not", "claims"])).await;
    assert!(matches!(outcome, Err(AuthError::Malformed(_))), "{outcome:?}");
}

#[tokio::test]
async fn fractional_numeric_dates_are_understood() {
    let claims = with(
        id_claims(),
        json!({"exp": (NOW as f64) + 0.5, "nbf": (NOW as f64) - 0.5}),
    );
    let outcome = verify_with_static_key(&claims).await;
    assert_eq!(
        outcome.map(|p| p.expires_at),
        Ok(Timestamp::from_millis(NOW * 1000 + 500))
    );
}

#[test]
fn a_configuration_that_accepts_nothing_is_refused() {
    let clock = TestClock::at(NOW);
    let mut config = JwksConfig::new(ISSUER, CLIENT, KeySource::Static(jwks(&[&keys()[0]])));
    config.token_uses.clear();
    assert_eq!(
        JwksVerifier::new(config, clock.clone()).err(),
        Some(JwksSetupError::NoTokenUse)
    );
    let config = JwksConfig::new(ISSUER, CLIENT, KeySource::Static(json!({"keys": []})));
    assert_eq!(
        JwksVerifier::new(config, clock).err(),
        Some(JwksSetupError::KeySet(KeySetError::NoUsableKey))
    );
}

#[test]
fn cognito_configuration_points_at_the_pool() {
    let config = JwksConfig::cognito("eu-west-1", "eu-west-1_AbC", "client");
    assert_eq!(
        config.issuer,
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC"
    );
    assert_eq!(config.audience, "client");
    assert!(matches!(
        config.keys,
        KeySource::Remote { ref url, min_refresh_interval, .. }
            if url == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC/.well-known/jwks.json"
                && min_refresh_interval == DEFAULT_MIN_REFRESH_INTERVAL
    ));
}

/// A local JWKS endpoint (HTTP/1.1 on 127.0.0.1, one thread) whose answer the test changes and
/// whose requests it counts.
struct JwksServer {
    addr: SocketAddr,
    response: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl JwksServer {
    /// Starts serving `body` with status 200; each answer waits `delay` first, to make a slow endpoint.
    fn start(body: &Value, delay: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let response = Arc::new(Mutex::new((200, body.to_string())));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_response, thread_hits, thread_stop) = (response.clone(), hits.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    // A failed exchange only fails the client side of the test, which is what it asserts on.
                    let _ = answer(stream, &thread_response, &thread_hits, delay);
                }
            }
        });
        Ok(Self {
            addr,
            response,
            hits,
            stop,
        })
    }

    fn url(&self) -> String {
        format!("http://{}/us-east-1_TestPool/.well-known/jwks.json", self.addr)
    }

    fn serve(&self, status: u16, body: &str) {
        *self.response.lock().expect("response lock") = (status, body.to_owned());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag and ends.
        let _ = TcpStream::connect(self.addr);
    }
}

fn answer(
    stream: TcpStream,
    response: &Mutex<(u16, String)>,
    hits: &AtomicUsize,
    delay: Duration,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    if !request_line.starts_with("GET ") {
        return Ok(());
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    if !delay.is_zero() {
        thread::sleep(delay);
    }
    let (status, body) = response.lock().expect("response lock").clone();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} Status\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn remote_verifier(url: String, clock: &TestClock) -> JwksVerifier<TestClock> {
    let source = KeySource::Remote {
        url,
        min_refresh_interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
    };
    JwksVerifier::new(JwksConfig::new(ISSUER, CLIENT, source), clock.clone()).expect("a valid configuration")
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_with_one_refetch_and_refetches_are_rate_limited() -> TestResult {
    let [first, second] = keys();
    let server = JwksServer::start(&jwks(&[first]), Duration::ZERO)?;
    let clock = TestClock::at(NOW);
    let verifier = remote_verifier(server.url(), &clock);

    // The set is fetched on first use, then served from the cache.
    assert!(verifier.verify(&sign(first, &id_claims())).await.is_ok());
    assert!(verifier.verify(&sign(first, &access_claims())).await.is_ok());
    assert_eq!(server.hits(), 1);

    // The pool rotates: the new key is published and a token signed by it arrives.
    clock.advance(Duration::from_secs(60));
    server.serve(200, &jwks(&[first, second]).to_string());
    assert!(verifier.verify(&sign(second, &id_claims())).await.is_ok());
    assert_eq!(server.hits(), 2, "one refetch for the new kid");
    assert!(verifier.verify(&sign(second, &id_claims())).await.is_ok());
    assert!(verifier.verify(&sign(first, &id_claims())).await.is_ok());
    assert_eq!(server.hits(), 2, "both keys now come from the cache");

    // Unknown kids inside the interval do not reach the endpoint again.
    let stranger = sign_as(second, "key-3", &id_claims());
    for _ in 0..5 {
        assert_eq!(verifier.verify(&stranger).await, Err(AuthError::UnknownKey));
    }
    assert_eq!(server.hits(), 2, "refetches are rate-limited");

    // Once the interval has passed, one more refetch is allowed.
    clock.advance(Duration::from_secs(10));
    assert_eq!(verifier.verify(&stranger).await, Err(AuthError::UnknownKey));
    assert_eq!(server.hits(), 3);
    assert_eq!(verifier.verify(&stranger).await, Err(AuthError::UnknownKey));
    assert_eq!(server.hits(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_fetch() -> TestResult {
    let [first, _] = keys();
    // A slow endpoint keeps the first fetch in flight while the other callers arrive.
    let server = JwksServer::start(&jwks(&[first]), Duration::from_millis(200))?;
    let clock = TestClock::at(NOW);
    let verifier = remote_verifier(server.url(), &clock);
    let token = sign(first, &id_claims());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (verifier, token) = (verifier.clone(), token.clone());
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await?.is_ok());
    }
    assert_eq!(server.hits(), 1);
    Ok(())
}

#[tokio::test]
async fn an_unreachable_key_set_is_unavailable_and_not_hammered() -> TestResult {
    let [first, _] = keys();
    let server = JwksServer::start(&json!({}), Duration::ZERO)?;
    server.serve(503, "{\"message\": \"try later\"}");
    let clock = TestClock::at(NOW);
    let verifier = remote_verifier(server.url(), &clock);
    let token = sign(first, &id_claims());

    assert!(matches!(verifier.verify(&token).await, Err(AuthError::Unavailable(_))));
    assert!(matches!(verifier.verify(&token).await, Err(AuthError::Unavailable(_))));
    assert_eq!(server.hits(), 1, "a failed fetch is not retried inside the interval");

    // Not JSON, then JSON that is no key set: both are failures too.
    clock.advance(Duration::from_secs(10));
    server.serve(200, "<html>");
    assert!(matches!(verifier.verify(&token).await, Err(AuthError::Unavailable(_))));
    clock.advance(Duration::from_secs(10));
    server.serve(200, "{\"keys\": []}");
    assert!(matches!(verifier.verify(&token).await, Err(AuthError::Unavailable(_))));
    assert_eq!(server.hits(), 3);

    // The endpoint recovers: the next allowed fetch succeeds.
    clock.advance(Duration::from_secs(10));
    server.serve(200, &jwks(&[first]).to_string());
    assert!(verifier.verify(&token).await.is_ok());
    assert_eq!(server.hits(), 4);
    Ok(())
}

#[tokio::test]
async fn a_failed_refetch_keeps_the_cached_keys_working() -> TestResult {
    let [first, second] = keys();
    let server = JwksServer::start(&jwks(&[first]), Duration::ZERO)?;
    let clock = TestClock::at(NOW);
    let verifier = remote_verifier(server.url(), &clock);
    assert!(verifier.verify(&sign(first, &id_claims())).await.is_ok());

    clock.advance(Duration::from_secs(60));
    server.serve(500, "oops");
    // The new kid cannot be judged while the endpoint fails ...
    let rotated = sign(second, &id_claims());
    assert!(matches!(
        verifier.verify(&rotated).await,
        Err(AuthError::Unavailable(_))
    ));
    // ... but tokens under cached keys still verify, without asking the endpoint.
    assert!(verifier.verify(&sign(first, &id_claims())).await.is_ok());
    assert_eq!(server.hits(), 2);
    Ok(())
}

#[tokio::test]
async fn a_closed_port_is_unavailable() -> TestResult {
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let clock = TestClock::at(NOW);
    let verifier = remote_verifier(format!("http://{addr}/jwks.json"), &clock);
    let outcome = verifier.verify(&sign(&keys()[0], &id_claims())).await;
    assert!(matches!(outcome, Err(AuthError::Unavailable(_))), "{outcome:?}");
    Ok(())
}
