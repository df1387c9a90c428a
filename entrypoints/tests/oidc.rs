//! `rookery serve --oidc-issuer`: tokens of a stand-in OpenID Connect issuer on loopback pass the same
//! verifier as Cognito's, others are refused, and the development routes are gone.

#![allow(clippy::expect_used)] // Test code: a failed expect is a failed test.
use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::routing::get;
use reqwest::StatusCode;
use rookery_adapters_memory::identity::DevIdentityProvider;
use rookery_domain::{Timestamp, UserId};
use rookery_entrypoints::local::{LocalConfig, LocalServer, OidcConfig, StartError};
use serde_json::{Value, json};

const AUDIENCE: &str = "rookery-app";

/// A stand-in issuer: a discovery document naming `document_issuer` and a JWKS of the key of `provider`.
async fn spawn_issuer(document_issuer: Option<&str>) -> (String, DevIdentityProvider) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("an address");
    let issuer = format!("http://{addr}/realms/test");
    let provider = DevIdentityProvider::ephemeral()
        .expect("a test key")
        .with_issuer(&issuer)
        .with_audience(AUDIENCE);
    let discovery = json!({
        "issuer": document_issuer.unwrap_or(&issuer),
        "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
    });
    let jwks = provider.jwks();
    let router = axum::Router::new()
        .route(
            "/realms/test/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route(
            "/realms/test/protocol/openid-connect/certs",
            get(move || async move { Json(jwks) }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    (issuer, provider)
}

fn config(issuer: &str, audience: &str) -> LocalConfig {
    LocalConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        oidc: Some(OidcConfig {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }),
        ..LocalConfig::default()
    }
}

fn token(provider: &DevIdentityProvider, user: &str) -> String {
    let now = std::time::UNIX_EPOCH.elapsed().expect("a clock after 1970").as_millis();
    let now = Timestamp::from_millis(u64::try_from(now).expect("a time in range"));
    provider
        .issue(&UserId::parse(user).expect("a user id"), now, Duration::from_secs(600))
        .expect("a token")
        .0
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("a client")
}

async fn put_item(server: &LocalServer, token: &str) -> StatusCode {
    http()
        .put(format!("http://{}/v1/items/notes/n1", server.addr()))
        .bearer_auth(token)
        .json(&json!({"data": {"text": "hi"}}))
        .send()
        .await
        .expect("an answer")
        .status()
}

#[tokio::test]
async fn oidc_issuer_tokens_are_accepted_and_others_refused() {
    let (issuer, provider) = spawn_issuer(None).await;
    let server = LocalServer::start(config(&issuer, AUDIENCE))
        .await
        .expect("the server starts");
    let alice = token(&provider, "alice");

    assert_eq!(put_item(&server, &alice).await, StatusCode::CREATED);
    let got = http()
        .get(format!("http://{}/v1/items/notes/n1", server.addr()))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("an answer");
    assert_eq!(got.status(), StatusCode::OK);
    let item: Value = got.json().await.expect("an item");
    assert_eq!(item["data"]["text"], "hi", "{item}");

    let other_issuer = provider.clone().with_issuer("http://127.0.0.1:1/realms/other");
    let other_audience = provider.clone().with_audience("another-app");
    let other_key = DevIdentityProvider::ephemeral()
        .expect("a test key")
        .with_issuer(&issuer)
        .with_audience(AUDIENCE);
    // One character in the middle of the signature changed: a bad signature with a known kid.
    let at = alice.rfind('.').expect("three segments") + 10;
    let swapped = if &alice[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swapped}{}", &alice[..at], &alice[at + 1..]);
    for refused in [
        token(&other_issuer, "alice"),
        token(&other_audience, "alice"),
        token(&other_key, "alice"),
        tampered,
    ] {
        assert_eq!(put_item(&server, &refused).await, StatusCode::UNAUTHORIZED);
    }
    server.shutdown().await.expect("a clean shutdown");
}

#[tokio::test]
async fn oidc_server_has_no_development_routes() {
    let (issuer, provider) = spawn_issuer(None).await;
    let server = LocalServer::start(config(&issuer, AUDIENCE))
        .await
        .expect("the server starts");
    let alice = token(&provider, "alice");
    let base = format!("http://{}", server.addr());
    let minted = http()
        .post(format!("{base}/v1/dev/tokens"))
        .json(&json!({"user_id": "alice"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(minted.status(), StatusCode::NOT_FOUND);
    let jwks = http()
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(jwks.status(), StatusCode::NOT_FOUND);
    let pushes = http()
        .get(format!("{base}/v1/dev/pushes"))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("an answer");
    assert_eq!(pushes.status(), StatusCode::NOT_FOUND);
    let openapi: Value = http()
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("the OpenAPI document");
    for path in ["/v1/dev/tokens", "/.well-known/jwks.json", "/v1/dev/pushes"] {
        assert!(openapi["paths"].get(path).is_none(), "{path} is listed");
    }
    assert!(openapi["paths"].get("/v1/sync").is_some(), "the API is listed");
    server.shutdown().await.expect("a clean shutdown");
}

#[tokio::test]
async fn oidc_discovery_naming_another_issuer_is_a_start_up_error() {
    let (issuer, _provider) = spawn_issuer(Some("https://elsewhere.example/realms/test")).await;
    let error = LocalServer::start(config(&issuer, AUDIENCE))
        .await
        .expect_err("the issuer does not match");
    assert!(matches!(error, StartError::Discovery { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("{issuer}/.well-known/openid-configuration")),
        "{message}"
    );
}
