//! The SNS mobile push gateway: one platform endpoint per device token, and one publish per notification.
//!
//! `CreatePlatformEndpoint` is idempotent per token, so registering a token again gives the same
//! endpoint; when SNS says that endpoint exists "with different attributes" (it was disabled, say),
//! the ARN is read from the message and the endpoint is updated instead. Every registration ends by
//! setting the token and `Enabled=true`, which re-enables an endpoint SNS had disabled.
//! A publish to a disabled, unknown or deleted endpoint is [`PushOutcome::EndpointDisabled`], not an error.
//!
//! Registration also writes the owner and device into the endpoint's `CustomUserData`, so that deleting
//! the endpoint of a removed device can leave it alone when another device (the same phone, signed into
//! by another user) registered the same token since. `DeleteEndpoint` itself is idempotent on SNS.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aws_sdk_sns::Client;
use aws_sdk_sns::config::http::HttpResponse;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::operation::create_platform_endpoint::CreatePlatformEndpointError;
use aws_sdk_sns::operation::delete_endpoint::DeleteEndpointError;
use aws_sdk_sns::operation::get_endpoint_attributes::GetEndpointAttributesError;
use aws_sdk_sns::operation::publish::PublishError;
use rookery_domain::{DeviceId, Platform, UserId};
use rookery_ports::{Failure, PushError, PushGateway, PushOutcome};
use serde_json::json;

use crate::error::{RetryPolicy, sdk_failure};

/// The push gateway on SNS, with one platform application per configured platform.
#[derive(Debug, Clone)]
pub struct SnsPushGateway {
    client: Client,
    applications: Arc<BTreeMap<Platform, String>>,
    retry: RetryPolicy,
}

/// What SNS needs to create a platform application for real: APNs and FCM refuse one without credentials.
///
/// An emulator takes an application without them, so both are optional.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PlatformCredentials {
    /// The `PlatformCredential` attribute: the APNs private key or certificate, or the FCM key.
    pub credential: Option<String>,
    /// The `PlatformPrincipal` attribute: the APNs certificate or signing key id, for APNs only.
    pub principal: Option<String>,
}

impl fmt::Debug for PlatformCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credential is a secret and never reaches a log; the principal names it and is not.
        f.debug_struct("PlatformCredentials")
            .field("credential", &self.credential.as_ref().map(|_| "<redacted>"))
            .field("principal", &self.principal)
            .finish()
    }
}

/// SNS's name for a push platform.
pub(crate) fn sns_platform(platform: Platform) -> &'static str {
    match platform {
        Platform::Apns => "APNS",
        Platform::ApnsSandbox => "APNS_SANDBOX",
        Platform::Fcm => "GCM",
    }
}

/// The endpoint ARN in SNS's "already exists with the same Token, but different attributes" message.
pub(crate) fn existing_endpoint_arn(message: &str) -> Option<&str> {
    let start = message.find("arn:aws")?;
    let rest = &message[start..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches(['.', ',']))
}

/// The endpoint attribute that names the registration an endpoint was last made for.
const CUSTOM_USER_DATA: &str = "CustomUserData";

/// What registration writes into `CustomUserData`: ids never hold spaces, so the pair reads back unambiguously.
pub(crate) fn registration_tag(owner: &UserId, device_id: &DeviceId) -> String {
    format!("{owner} {device_id}")
}

/// The `MessageStructure=json` body for one platform: its payload under its key, and a default.
pub(crate) fn publish_message(platform: Platform, payload: &str) -> String {
    json!({ "default": payload, sns_platform(platform): payload }).to_string()
}

/// True when an SNS publish error means the endpoint can no longer receive (disabled, deleted, unknown).
fn endpoint_gone(error: &PublishError) -> bool {
    match error {
        PublishError::EndpointDisabledException(_) | PublishError::NotFoundException(_) => true,
        PublishError::InvalidParameterException(e) => {
            let message = e.message().unwrap_or_default().to_ascii_lowercase();
            message.contains("endpoint") || message.contains("targetarn")
        }
        other => matches!(other.code(), Some("EndpointDisabled" | "NotFound")),
    }
}

impl SnsPushGateway {
    /// A gateway with no platform configured yet (see [`Self::with_application`]).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            applications: Arc::new(BTreeMap::new()),
            retry: RetryPolicy::default(),
        }
    }

    /// The same gateway, registering `platform`'s tokens under the platform application `arn`.
    #[must_use]
    pub fn with_application(mut self, platform: Platform, arn: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.applications).insert(platform, arn.into());
        self
    }

    /// The same gateway with another retry policy for transient failures.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Creates an SNS platform application (for tests and bootstrap against an emulator) and returns its ARN.
    ///
    /// # Errors
    /// A [`Failure`] when SNS refuses.
    pub async fn create_application(&self, platform: Platform, name: &str) -> Result<String, Failure> {
        let created = self
            .client
            .create_platform_application()
            .name(name)
            .platform(sns_platform(platform))
            .attributes("PlatformCredential", "unused-by-emulators")
            .send()
            .await
            .map_err(|e| sdk_failure("CreatePlatformApplication", &e))?;
        created
            .platform_application_arn
            .ok_or_else(|| Failure::permanent("CreatePlatformApplication answered no ARN"))
    }

    /// Sets an endpoint's `Enabled` attribute (and its token, when given).
    ///
    /// SNS disables endpoints itself when a platform reports a token dead; operators and tests can do it here.
    ///
    /// # Errors
    /// A [`PushError`] when SNS refuses.
    pub async fn set_endpoint(&self, endpoint: &str, token: Option<&str>, enabled: bool) -> Result<(), PushError> {
        self.update_endpoint(endpoint, token, enabled, None).await
    }

    /// Sets `Enabled`, and the token and `CustomUserData` when given.
    async fn update_endpoint(
        &self,
        endpoint: &str,
        token: Option<&str>,
        enabled: bool,
        user_data: Option<&str>,
    ) -> Result<(), PushError> {
        let mut request = self
            .client
            .set_endpoint_attributes()
            .endpoint_arn(endpoint)
            .attributes("Enabled", if enabled { "true" } else { "false" });
        if let Some(token) = token {
            request = request.attributes("Token", token);
        }
        if let Some(user_data) = user_data {
            request = request.attributes(CUSTOM_USER_DATA, user_data);
        }
        self.retry
            .run(
                |e: &SdkError<_, HttpResponse>| sdk_failure("SetEndpointAttributes", e).is_retryable(),
                || request.clone().send(),
            )
            .await
            .map(|_| ())
            .map_err(|error| match &error {
                SdkError::ServiceError(context)
                    if context.err().is_invalid_parameter_exception() || context.err().is_not_found_exception() =>
                {
                    PushError::Rejected(format!("SNS refused the endpoint update: {}", context.err()))
                }
                _ => PushError::Unavailable(sdk_failure("SetEndpointAttributes", &error)),
            })
    }

    async fn create_endpoint(&self, application: &str, token: &str) -> Result<String, PushError> {
        let outcome = self
            .retry
            .run(
                |e: &SdkError<CreatePlatformEndpointError, HttpResponse>| {
                    sdk_failure("CreatePlatformEndpoint", e).is_retryable()
                },
                || {
                    self.client
                        .create_platform_endpoint()
                        .platform_application_arn(application)
                        .token(token)
                        .send()
                },
            )
            .await;
        match outcome {
            Ok(created) => created
                .endpoint_arn
                .ok_or_else(|| PushError::Unavailable(Failure::permanent("SNS answered no endpoint ARN"))),
            Err(SdkError::ServiceError(context)) if context.err().is_invalid_parameter_exception() => {
                let message = context.err().message().unwrap_or_default();
                match existing_endpoint_arn(message) {
                    // The token has an endpoint already, with other attributes: reuse and update it.
                    Some(arn) if message.contains("already exists") => Ok(arn.to_owned()),
                    _ => Err(PushError::Rejected(format!("SNS refused the token: {message}"))),
                }
            }
            Err(error) => Err(PushError::Unavailable(sdk_failure("CreatePlatformEndpoint", &error))),
        }
    }
}

/// The ARN of the platform application `name` for `platform`, created with `credentials` unless it exists.
///
/// # Errors
/// A [`Failure`] when SNS refuses to list or create applications.
pub(crate) async fn ensure_platform_application(
    client: &Client,
    platform: Platform,
    name: &str,
    credentials: &PlatformCredentials,
) -> Result<String, Failure> {
    let suffix = format!(":app/{}/{name}", sns_platform(platform));
    let mut next = None;
    loop {
        let page = client
            .list_platform_applications()
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| sdk_failure("ListPlatformApplications", &e))?;
        for application in page.platform_applications() {
            if let Some(arn) = application.platform_application_arn()
                && arn.ends_with(&suffix)
            {
                return Ok(arn.to_owned());
            }
        }
        match page.next_token {
            Some(token) if !token.is_empty() => next = Some(token),
            _ => break,
        }
    }
    let mut request = client
        .create_platform_application()
        .name(name)
        .platform(sns_platform(platform));
    for (attribute, value) in [
        ("PlatformCredential", &credentials.credential),
        ("PlatformPrincipal", &credentials.principal),
    ] {
        if let Some(value) = value {
            request = request.attributes(attribute, value);
        }
    }
    let created = request
        .send()
        .await
        .map_err(|e| sdk_failure("CreatePlatformApplication", &e))?;
    created
        .platform_application_arn
        .ok_or_else(|| Failure::permanent("CreatePlatformApplication answered no ARN"))
}

impl PushGateway for SnsPushGateway {
    async fn register(
        &self,
        owner: &UserId,
        device_id: &DeviceId,
        platform: Platform,
        token: &str,
        _current: Option<&str>,
    ) -> Result<String, PushError> {
        // The current endpoint is not reused for a new token: SNS keys endpoints by token, and an old
        // endpoint may still be shared with another device of the same token.
        let Some(application) = self.applications.get(&platform) else {
            return Err(PushError::Rejected(format!(
                "push platform {} is not configured",
                platform.as_str()
            )));
        };
        let endpoint = self.create_endpoint(application, token).await?;
        let tag = registration_tag(owner, device_id);
        self.update_endpoint(&endpoint, Some(token), true, Some(&tag)).await?;
        tracing::debug!(user = %owner, device = %device_id, %endpoint, "push endpoint registered");
        Ok(endpoint)
    }

    async fn send(&self, endpoint: &str, platform: Platform, payload: &str) -> Result<PushOutcome, PushError> {
        let message = publish_message(platform, payload);
        let outcome = self
            .retry
            .run(
                |e: &SdkError<PublishError, HttpResponse>| {
                    !matches!(e, SdkError::ServiceError(c) if endpoint_gone(c.err()))
                        && sdk_failure("Publish", e).is_retryable()
                },
                || {
                    self.client
                        .publish()
                        .target_arn(endpoint)
                        .message_structure("json")
                        .message(&message)
                        .send()
                },
            )
            .await;
        match outcome {
            Ok(_) => Ok(PushOutcome::Delivered),
            Err(SdkError::ServiceError(context)) if endpoint_gone(context.err()) => Ok(PushOutcome::EndpointDisabled),
            Err(error) => {
                let failure = sdk_failure("Publish", &error);
                if failure.is_retryable() {
                    Err(PushError::Unavailable(failure))
                } else {
                    Err(PushError::Rejected(failure.message))
                }
            }
        }
    }

    async fn delete(&self, owner: &UserId, device_id: &DeviceId, endpoint: &str) -> Result<(), PushError> {
        let read = self
            .retry
            .run(
                |e: &SdkError<GetEndpointAttributesError, HttpResponse>| {
                    sdk_failure("GetEndpointAttributes", e).is_retryable()
                },
                || self.client.get_endpoint_attributes().endpoint_arn(endpoint).send(),
            )
            .await;
        let attributes = match read {
            Ok(read) => read.attributes.unwrap_or_default(),
            Err(SdkError::ServiceError(context)) if context.err().is_not_found_exception() => return Ok(()),
            Err(SdkError::ServiceError(context)) if context.err().is_invalid_parameter_exception() => {
                return Err(PushError::Rejected(format!(
                    "SNS refused the endpoint: {}",
                    context.err()
                )));
            }
            Err(error) => return Err(PushError::Unavailable(sdk_failure("GetEndpointAttributes", &error))),
        };
        // An endpoint registered before the tag existed has none: it is taken to be this device's.
        let registered_for = attributes.get(CUSTOM_USER_DATA).map(String::as_str).unwrap_or_default();
        if !registered_for.is_empty() && registered_for != registration_tag(owner, device_id) {
            tracing::debug!(user = %owner, device = %device_id, %endpoint, "push endpoint kept: registered again by another device");
            return Ok(());
        }
        self.retry
            .run(
                |e: &SdkError<DeleteEndpointError, HttpResponse>| sdk_failure("DeleteEndpoint", e).is_retryable(),
                || self.client.delete_endpoint().endpoint_arn(endpoint).send(),
            )
            .await
            .map(|_| ())
            .map_err(|error| match &error {
                SdkError::ServiceError(context) if context.err().is_invalid_parameter_exception() => {
                    PushError::Rejected(format!("SNS refused the endpoint: {}", context.err()))
                }
                _ => PushError::Unavailable(sdk_failure("DeleteEndpoint", &error)),
            })?;
        tracing::debug!(user = %owner, device = %device_id, %endpoint, "push endpoint deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sns::types::error::{EndpointDisabledException, InvalidParameterException, NotFoundException};

    use super::*;

    #[test]
    fn platform_credentials_never_reach_a_log() {
        let credentials = PlatformCredentials {
            credential: Some("-----BEGIN PRIVATE KEY-----secret".into()),
            principal: Some("KEYID123".into()),
        };
        let logged = format!("{credentials:?}");
        assert!(!logged.contains("secret"), "{logged}");
        assert!(logged.contains("<redacted>") && logged.contains("KEYID123"), "{logged}");
    }

    #[test]
    fn the_existing_endpoint_is_read_from_snss_message() {
        let message = "Invalid parameter: Token Reason: Endpoint arn:aws:sns:us-east-1:123456789012:endpoint/GCM/app/0e7a-11 already exists with the same Token, but different attributes.";
        assert_eq!(
            existing_endpoint_arn(message),
            Some("arn:aws:sns:us-east-1:123456789012:endpoint/GCM/app/0e7a-11")
        );
        assert_eq!(existing_endpoint_arn("Invalid parameter: Token"), None);
    }

    #[test]
    fn the_message_puts_the_payload_under_the_platforms_key() {
        let payload = r#"{"aps":{"alert":{"title":"a","body":"b"}}}"#;
        for (platform, key) in [
            (Platform::Apns, "APNS"),
            (Platform::ApnsSandbox, "APNS_SANDBOX"),
            (Platform::Fcm, "GCM"),
        ] {
            let message: serde_json::Value = serde_json::from_str(&publish_message(platform, payload)).unwrap();
            assert_eq!(message[key], payload, "the value is itself a JSON string");
            assert_eq!(message["default"], payload);
            assert_eq!(message.as_object().unwrap().len(), 2);
        }
    }

    #[test]
    fn disabled_missing_and_unknown_endpoints_are_gone_bad_payloads_are_not() {
        assert!(endpoint_gone(&PublishError::EndpointDisabledException(
            EndpointDisabledException::builder().build()
        )));
        assert!(endpoint_gone(&PublishError::NotFoundException(
            NotFoundException::builder().build()
        )));
        assert!(endpoint_gone(&PublishError::InvalidParameterException(
            InvalidParameterException::builder()
                .message("Invalid parameter: TargetArn Reason: No endpoint found")
                .build()
        )));
        assert!(!endpoint_gone(&PublishError::InvalidParameterException(
            InvalidParameterException::builder()
                .message("Invalid parameter: Message too long")
                .build()
        )));
    }
}
