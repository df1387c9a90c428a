//! The development identity provider against the JWKS verifier: the tokens `rookery serve` hands out pass
//! the same checks as Cognito tokens, and a persisted key keeps them valid across restarts; and real
//! Cognito-shaped tokens from the emulator (moto) pass the verifier with the key set fetched over HTTP.

use std::fs;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rookery_adapters_aws::jwt::{JwksConfig, JwksSetupError, JwksVerifier, KeySource, TokenUse, cognito_issuer};
use rookery_adapters_memory::identity::{DevIdentityProvider, KEY_FILE};
use rookery_adapters_memory::{ManualClock, SystemClock};
use rookery_domain::{Timestamp, UserId};
use rookery_ports::{AuthError, IdentityVerifier};
use rookery_tests::aws::moto::{moto, unique_name};
use rookery_tests::fixtures::BoxError;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// 2026-11-25T10:00:00Z.
const NOW: Timestamp = Timestamp::from_millis(1_795_600_800_000);
const TTL: Duration = Duration::from_secs(3600);

/// A provider opened on a fresh directory (so its key was generated and persisted), with the file it wrote.
struct Fixture {
    provider: DevIdentityProvider,
    pem: String,
    #[cfg(unix)]
    mode: u32,
}

/// One key per test process: RSA key generation is slow.
fn fixture() -> Result<&'static Fixture, String> {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| open_fresh().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

fn open_fresh() -> Result<Fixture, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let provider = DevIdentityProvider::open(dir.path())?;
    let path = dir.path().join(KEY_FILE);
    let pem = fs::read_to_string(&path)?;
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(&path)?.permissions().mode() & 0o777
    };
    Ok(Fixture {
        provider,
        pem,
        #[cfg(unix)]
        mode,
    })
}

/// The verifier `rookery serve` builds for its development provider.
fn verifier_for(
    provider: &DevIdentityProvider,
    clock: &ManualClock,
) -> Result<JwksVerifier<ManualClock>, JwksSetupError> {
    let config = provider.verifier_config();
    let mut config = JwksConfig::new(config.issuer, config.audience, KeySource::Static(config.jwks));
    config.token_uses = vec![TokenUse::Id];
    JwksVerifier::new(config, clock.clone())
}

#[tokio::test]
async fn development_tokens_pass_the_jwks_verifier() -> TestResult {
    let provider = &fixture()?.provider;
    let clock = ManualClock::new(NOW);
    let verifier = verifier_for(provider, &clock)?;
    for name in ["alice", "bob@example.com", "0b6c2a40-7d0e-4a8e-9f55-3c1f0e6b2a11"] {
        let user = UserId::parse(name)?;
        let (token, expires_at) = provider.issue(&user, NOW, TTL)?;
        let principal = verifier.verify(&token).await?;
        assert_eq!(principal.user, user);
        assert_eq!(principal.expires_at, expires_at);
        assert_eq!(expires_at, NOW.plus(TTL));
    }
    Ok(())
}

#[tokio::test]
async fn development_tokens_expire_on_the_verifiers_clock() -> TestResult {
    let provider = &fixture()?.provider;
    let clock = ManualClock::new(NOW);
    let verifier = verifier_for(provider, &clock)?;
    let (token, expires_at) = provider.issue(&UserId::parse("alice")?, NOW, Duration::from_secs(60))?;
    assert!(verifier.verify(&token).await.is_ok());
    clock.set(expires_at.plus(Duration::from_secs(10)));
    assert_eq!(verifier.verify(&token).await, Err(AuthError::Expired));
    Ok(())
}

#[tokio::test]
async fn a_provider_with_another_issuer_or_audience_is_not_trusted() -> TestResult {
    let provider = &fixture()?.provider;
    let clock = ManualClock::new(NOW);
    let verifier = verifier_for(provider, &clock)?;
    let alice = UserId::parse("alice")?;
    let (token, _) = provider.clone().with_issuer("someone-else").issue(&alice, NOW, TTL)?;
    assert_eq!(verifier.verify(&token).await, Err(AuthError::WrongIssuer));
    let (token, _) = provider.clone().with_audience("another-app").issue(&alice, NOW, TTL)?;
    assert_eq!(verifier.verify(&token).await, Err(AuthError::WrongAudience));
    Ok(())
}

#[cfg(unix)]
#[test]
fn the_signing_key_is_written_for_the_owner_only() -> TestResult {
    let fixture = fixture()?;
    assert_eq!(fixture.mode, 0o600);
    assert!(fixture.pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    Ok(())
}

#[tokio::test]
async fn a_reopened_key_keeps_its_kid_and_old_tokens_still_verify() -> TestResult {
    let fixture = fixture()?;
    let alice = UserId::parse("alice")?;
    let (old_token, _) = fixture.provider.issue(&alice, NOW, TTL)?;

    // A restart: a new process finds the key file in its data directory.
    let dir = tempfile::tempdir()?;
    fs::write(dir.path().join(KEY_FILE), &fixture.pem)?;
    let reopened = DevIdentityProvider::open(dir.path())?;
    assert_eq!(reopened.kid(), fixture.provider.kid());
    assert_eq!(reopened.jwks(), fixture.provider.jwks());
    assert_eq!(
        fs::read_to_string(dir.path().join(KEY_FILE))?,
        fixture.pem,
        "the key file is left as it was"
    );

    let clock = ManualClock::new(NOW);
    let verifier = verifier_for(&reopened, &clock)?;
    assert_eq!(verifier.verify(&old_token).await?.user, alice);
    let (new_token, _) = reopened.issue(&alice, NOW, TTL)?;
    assert_eq!(
        verifier_for(&fixture.provider, &clock)?.verify(&new_token).await?.user,
        alice
    );
    Ok(())
}

#[tokio::test]
async fn tokens_from_another_development_key_are_refused() -> TestResult {
    let fixture = fixture()?;
    let clock = ManualClock::new(NOW);
    let verifier = verifier_for(&fixture.provider, &clock)?;
    let (token, _) = fixture.provider.issue(&UserId::parse("alice")?, NOW, TTL)?;
    // Swap the kid for one the verifier has never seen: the token names no key of the set.
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("a JWT has three parts".into());
    };
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "some-other-dev-key"});
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let relabelled = format!("{header}.{payload}.{signature}");
    assert_eq!(verifier.verify(&relabelled).await, Err(AuthError::UnknownKey));
    Ok(())
}

/// One call of the Cognito user pool API (JSON 1.1) on the emulator; moto does not check signatures,
/// so a well-formed but unsigned `Authorization` header is enough to route the call.
async fn cognito(target: &str, body: serde_json::Value) -> Result<serde_json::Value, BoxError> {
    let endpoint = &moto()?.endpoint;
    let response = reqwest::Client::new()
        .post(format!("{endpoint}/"))
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("X-Amz-Target", format!("AWSCognitoIdentityProviderService.{target}"))
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/cognito-idp/aws4_request, SignedHeaders=host, Signature=00",
        )
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        return Err(format!("{target}: HTTP {status}: {text}").into());
    }
    Ok(serde_json::from_str(&text)?)
}

/// A user pool with one app client and one confirmed user; returns (pool id, client id, user sub, ID token, access token).
async fn signed_in_user() -> Result<(String, String, String, String, String), BoxError> {
    let pool = cognito("CreateUserPool", serde_json::json!({"PoolName": unique_name("pool-")})).await?;
    let pool = pool["UserPool"]["Id"].as_str().ok_or("no pool id")?.to_owned();
    let client = cognito(
        "CreateUserPoolClient",
        serde_json::json!({"UserPoolId": pool, "ClientName": "app", "ExplicitAuthFlows": ["USER_PASSWORD_AUTH"]}),
    )
    .await?;
    let client = client["UserPoolClient"]["ClientId"]
        .as_str()
        .ok_or("no client id")?
        .to_owned();
    let (username, password) = ("alice", "Correct-horse-1");
    let signed_up = cognito(
        "SignUp",
        serde_json::json!({"ClientId": client, "Username": username, "Password": password}),
    )
    .await?;
    let sub = signed_up["UserSub"].as_str().ok_or("no user sub")?.to_owned();
    cognito(
        "AdminConfirmSignUp",
        serde_json::json!({"UserPoolId": pool, "Username": username}),
    )
    .await?;
    let auth = cognito(
        "InitiateAuth",
        serde_json::json!({
            "ClientId": client,
            "AuthFlow": "USER_PASSWORD_AUTH",
            "AuthParameters": {"USERNAME": username, "PASSWORD": password},
        }),
    )
    .await?;
    let result = &auth["AuthenticationResult"];
    let id_token = result["IdToken"].as_str().ok_or("no ID token")?.to_owned();
    let access_token = result["AccessToken"].as_str().ok_or("no access token")?.to_owned();
    Ok((pool, client, sub, id_token, access_token))
}

/// The verifier a Lambda builds for a pool, with the key set fetched from the emulator.
fn cognito_verifier(pool: &str, client: &str) -> Result<JwksVerifier<SystemClock>, BoxError> {
    let endpoint = &moto()?.endpoint;
    let mut config = JwksConfig::cognito("us-east-1", pool, client);
    config.keys = KeySource::remote(format!("{endpoint}/{pool}/.well-known/jwks.json"));
    Ok(JwksVerifier::new(config, SystemClock::new())?)
}

#[tokio::test]
async fn cognito_tokens_from_the_emulator_pass_with_the_sub_as_the_user() -> Result<(), BoxError> {
    let (pool, client, sub, id_token, access_token) = signed_in_user().await?;
    assert_eq!(
        cognito_issuer("us-east-1", &pool),
        format!("https://cognito-idp.us-east-1.amazonaws.com/{pool}")
    );
    let verifier = cognito_verifier(&pool, &client)?;
    let from_id = verifier.verify(&id_token).await?;
    let from_access = verifier.verify(&access_token).await?;
    // The caller is the pool's `sub`, never the `cognito:username` ("alice").
    assert_eq!(from_id.user, UserId::parse(&sub)?);
    assert_eq!(from_access.user, from_id.user);
    Ok(())
}

#[tokio::test]
async fn cognito_tokens_for_another_client_or_pool_are_refused() -> Result<(), BoxError> {
    let (pool, _client, _sub, id_token, access_token) = signed_in_user().await?;
    let other_client = cognito_verifier(&pool, "another-client")?;
    assert_eq!(other_client.verify(&id_token).await, Err(AuthError::WrongAudience));
    assert_eq!(other_client.verify(&access_token).await, Err(AuthError::WrongAudience));
    // Moto signs every pool's tokens with one key, so only the issuer tells the pools apart.
    let (other_pool, other_pool_client, ..) = signed_in_user().await?;
    let other_pool = cognito_verifier(&other_pool, &other_pool_client)?;
    assert_eq!(other_pool.verify(&id_token).await, Err(AuthError::WrongIssuer));
    Ok(())
}
