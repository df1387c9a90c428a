//! Cognito user pools on the test binary's moto server: a pool with an app client, and users made by
//! an administrator and signed in with `USER_PASSWORD_AUTH`, as a mobile app's users would be.
//!
//! Calls go over the JSON 1.1 protocol directly; moto does not check request signatures, so a
//! well-formed `Authorization` header is enough to route them.

use serde_json::{Value, json};

use super::moto::{moto, unique_name};
use crate::fixtures::BoxError;

/// The password every test user gets; it meets Cognito's default policy.
const PASSWORD: &str = "Correct-horse-battery-1";

/// One call of the Cognito user pool API on the emulator.
///
/// # Errors
/// When moto cannot be reached or answers an error (the message holds its answer).
pub async fn call(target: &str, body: Value) -> Result<Value, BoxError> {
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

/// A user pool with one app client that allows `USER_PASSWORD_AUTH`.
#[derive(Debug, Clone)]
pub struct CognitoPool {
    /// The pool id (`us-east-1_...`).
    pub pool_id: String,
    /// The app client id.
    pub client_id: String,
}

/// A signed-in user of a pool.
#[derive(Debug, Clone)]
pub struct CognitoUser {
    /// The user name it signed in with.
    pub username: String,
    /// Its `sub`: the user id Rookery sees.
    pub sub: String,
    /// Its ID token.
    pub id_token: String,
    /// Its access token.
    pub access_token: String,
}

impl CognitoPool {
    /// Creates a pool with a unique name and its app client.
    ///
    /// # Errors
    /// When moto cannot be started or refuses.
    pub async fn create() -> Result<Self, BoxError> {
        let pool = call("CreateUserPool", json!({"PoolName": unique_name("pool-")})).await?;
        let pool_id = pool["UserPool"]["Id"].as_str().ok_or("no pool id")?.to_owned();
        let client = call(
            "CreateUserPoolClient",
            json!({"UserPoolId": pool_id, "ClientName": "app", "ExplicitAuthFlows": ["USER_PASSWORD_AUTH"]}),
        )
        .await?;
        let client_id = client["UserPoolClient"]["ClientId"]
            .as_str()
            .ok_or("no client id")?
            .to_owned();
        Ok(Self { pool_id, client_id })
    }

    /// Where moto serves the pool's key set.
    ///
    /// # Errors
    /// When moto cannot be started.
    pub fn jwks_url(&self) -> Result<String, BoxError> {
        Ok(format!("{}/{}/.well-known/jwks.json", moto()?.endpoint, self.pool_id))
    }

    /// Makes `username` as an administrator would (a temporary password, then a permanent one) and
    /// signs it in with `USER_PASSWORD_AUTH`.
    ///
    /// # Errors
    /// When moto refuses a step or answers without the tokens.
    pub async fn sign_in(&self, username: &str) -> Result<CognitoUser, BoxError> {
        let created = call(
            "AdminCreateUser",
            json!({
                "UserPoolId": self.pool_id,
                "Username": username,
                "TemporaryPassword": "Temporary-pass-1",
                "MessageAction": "SUPPRESS",
            }),
        )
        .await?;
        let sub = created["User"]["Attributes"]
            .as_array()
            .and_then(|attributes| attributes.iter().find(|a| a["Name"] == "sub"))
            .and_then(|a| a["Value"].as_str())
            .ok_or("AdminCreateUser answered no sub")?
            .to_owned();
        call(
            "AdminSetUserPassword",
            json!({"UserPoolId": self.pool_id, "Username": username, "Password": PASSWORD, "Permanent": true}),
        )
        .await?;
        let auth = call(
            "InitiateAuth",
            json!({
                "ClientId": self.client_id,
                "AuthFlow": "USER_PASSWORD_AUTH",
                "AuthParameters": {"USERNAME": username, "PASSWORD": PASSWORD},
            }),
        )
        .await?;
        let result = &auth["AuthenticationResult"];
        Ok(CognitoUser {
            username: username.to_owned(),
            sub,
            id_token: result["IdToken"].as_str().ok_or("no ID token")?.to_owned(),
            access_token: result["AccessToken"].as_str().ok_or("no access token")?.to_owned(),
        })
    }
}
