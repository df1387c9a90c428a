//! OpenID Connect Discovery 1.0 for `rookery serve --oidc-issuer`: where an issuer's keys are.
//!
//! The discovery document is read once at start-up; the keys themselves are then fetched, cached and
//! refreshed by the same [`JwksVerifier`](rookery_adapters_aws::jwt::JwksVerifier) that verifies Cognito tokens.

use std::time::Duration;

use rookery_adapters_aws::jwt::fetch_json;
use serde::Deserialize;

use super::StartError;

/// How long fetching the discovery document may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The fields of a discovery document this server reads.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Whether `issuer` is a Cognito user pool (`https://cognito-idp.<region>.amazonaws.com/<pool id>`), whose
/// access tokens name the client in `client_id` and `token_use` rather than in `aud`.
pub fn is_cognito(issuer: &str) -> bool {
    issuer
        .strip_prefix("https://cognito-idp.")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(host, pool)| host.ends_with(".amazonaws.com") && !pool.is_empty())
}

/// The URL of the discovery document of `issuer` (a trailing `/` of the issuer is not doubled).
pub fn discovery_url(issuer: &str) -> String {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
}

/// Fetches the discovery document of `issuer` and returns its `jwks_uri`.
///
/// # Errors
/// [`StartError::Discovery`], naming the URL, when the document cannot be fetched or parsed, or when its
/// `issuer` is not exactly the configured one (OpenID Connect Discovery 1.0, section 4.3).
pub async fn discover_jwks_uri(issuer: &str) -> Result<String, StartError> {
    let url = discovery_url(issuer);
    let fail = |reason: String| StartError::Discovery {
        url: url.clone(),
        reason,
    };
    // The same HTTP client (and TLS roots) that fetches the keys afterwards.
    let document = fetch_json(&url, DISCOVERY_TIMEOUT).await.map_err(fail)?;
    let document: Discovery =
        serde_json::from_value(document).map_err(|e| fail(format!("not a discovery document: {e}")))?;
    if document.issuer != issuer {
        return Err(fail(format!(
            "the document's issuer {:?} is not the configured {issuer:?}",
            document.issuer
        )));
    }
    Ok(document.jwks_uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cognito_issuers_are_told_apart_from_other_issuers() {
        assert!(is_cognito(
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
        ));
        assert!(!is_cognito("https://auth.example.com/realms/main"));
        assert!(!is_cognito(
            "https://cognito-idp.eu-west-1.amazonaws.com.evil.example/x"
        ));
        assert!(!is_cognito(
            "http://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
        ));
    }

    #[test]
    fn the_discovery_url_does_not_double_a_trailing_slash() {
        assert_eq!(
            discovery_url("https://id.example/realms/main/"),
            "https://id.example/realms/main/.well-known/openid-configuration"
        );
    }
}
