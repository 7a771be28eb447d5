//! Webhooks: the payload's `body` POSTed as JSON to its `url`, signed so that the receiver can check it came from
//! Herald and is recent.
//!
//! Headers sent: `Content-Type: application/json`, `Herald-Event-Id`, `Herald-Timestamp` (unix seconds) and
//! `Herald-Signature: v1=<hex HMAC-SHA256(secret, "{event id}.{timestamp}.{body}")>`, where body is the exact bytes
//! sent; then the payload's own `headers`, which may not override those four.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use herald_domain::message::Webhook;
use herald_domain::{Channel, Event, Message};
use herald_platform::EnvReader;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use sha2::Sha256;

use super::settings::{backend, Backend, Secret};
use super::{
    judge_response, transport_error, wrong_channel, BuildError, Delivered, Provider, SendError, Try,
};

/// The webhook signing secret used when `HERALD_WEBHOOK_SECRET` is unset. Fine for a laptop, wrong anywhere
/// else: [`Config::warnings`] says so at startup.
pub const DEV_WEBHOOK_SECRET: &str = "herald-dev-webhook-secret";

/// The webhook channel.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `HERALD_WEBHOOK_PROVIDER`: `http` or `sandbox`. Default `http`.
    pub backend: Backend,
    /// `HERALD_WEBHOOK_SECRET`: the HMAC-SHA256 key of `Herald-Signature`. Default [`DEV_WEBHOOK_SECRET`], with a
    /// warning at startup.
    pub secret: Secret,
    /// `HERALD_WEBHOOK_CONNECT_TIMEOUT_MS`: how long connecting to a receiver (and the SMS API) may take,
    /// in milliseconds. Default 3000. The whole request is bounded by `HERALD_SEND_TIMEOUT_MS`.
    pub connect_timeout: Duration,
}

impl WebhookConfig {
    /// `HERALD_WEBHOOK_*`.
    pub(crate) fn read(env: &mut EnvReader) -> Self {
        let config = WebhookConfig {
            backend: backend(env, "HERALD_WEBHOOK_PROVIDER", "http", Backend::Real),
            secret: Secret::new(env.string("HERALD_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET)),
            connect_timeout: env
                .millis("HERALD_WEBHOOK_CONNECT_TIMEOUT_MS", Duration::from_secs(3)),
        };
        if config.connect_timeout.is_zero() {
            env.problem(
                "HERALD_WEBHOOK_CONNECT_TIMEOUT_MS",
                "must be greater than 0",
            );
        }
        config
    }
}

/// `v1=<hex HMAC-SHA256(secret, "{event_id}.{timestamp}.{body}")>`: the value of `Herald-Signature`.
pub fn sign(secret: &[u8], event_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(event_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs webhooks with one pooled HTTP client per process.
#[derive(Debug)]
pub struct WebhookProvider {
    client: reqwest::Client,
    secret: Secret,
}

impl WebhookProvider {
    pub fn build(config: &WebhookConfig, send_timeout: Duration) -> Result<Self, BuildError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(send_timeout)
            // A receiver that moved must be re-registered: following a redirect would send the signed body to
            // an address nobody checked.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("herald-dispatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError {
                channel: Channel::Webhook,
                message: e.to_string(),
            })?;
        Ok(Self {
            client,
            secret: config.secret.clone(),
        })
    }
}

fn headers(
    event: &Event,
    webhook: &Webhook,
    timestamp: i64,
    signature: &str,
) -> Result<HeaderMap, SendError> {
    let mut headers = HeaderMap::new();
    for (name, value) in webhook.headers() {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| SendError::invalid(format!("invalid header name '{name}': {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| SendError::invalid(format!("invalid value of header '{name}': {e}")))?;
        headers.insert(name, value);
    }
    let own = [
        (CONTENT_TYPE, "application/json".to_owned()),
        (
            HeaderName::from_static("herald-event-id"),
            event.event_id.to_string(),
        ),
        (
            HeaderName::from_static("herald-timestamp"),
            timestamp.to_string(),
        ),
        (
            HeaderName::from_static("herald-signature"),
            signature.to_owned(),
        ),
    ];
    for (name, value) in own {
        let value = HeaderValue::from_str(&value)
            .map_err(|e| SendError::invalid(format!("invalid value of header '{name}': {e}")))?;
        headers.insert(name, value);
    }
    Ok(headers)
}

#[async_trait]
impl Provider for WebhookProvider {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn send(
        &self,
        event: &Event,
        message: &Message,
        _attempt: Try,
    ) -> Result<Delivered, SendError> {
        let Message::Webhook(webhook) = message else {
            return Err(wrong_channel(Channel::Webhook, message));
        };
        let url = reqwest::Url::parse(webhook.url())
            .map_err(|e| SendError::invalid(format!("invalid url '{}': {e}", webhook.url())))?;
        let body = serde_json::to_vec(webhook.body())
            .map_err(|e| SendError::invalid(format!("cannot encode the body: {e}")))?;
        let timestamp = Utc::now().timestamp();
        let signature = sign(
            self.secret.expose().as_bytes(),
            event.event_id.as_str(),
            timestamp,
            &body,
        );
        let headers = headers(event, webhook, timestamp, &signature)?;
        let response = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        judge_response(response)
            .await
            .map(|(delivered, _)| delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_id_timestamp_and_body() {
        // Computed independently: printf 'e1.1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign(b"secret", "e1", 1_700_000_000, br#"{"a":1}"#),
            "v1=d43659741694d12f7d62c160fe8c66e164f5943590856c8fc3a2c285fb14a4ce"
        );
    }
}
