//! Push through OneSignal's REST API: `POST {base}/notifications` with `Authorization: Key <api key>` and
//! `{app_id, target_channel: "push", include_subscription_ids, headings, contents, data}`, one request for every
//! token of the message.
//!
//! OneSignal answers 200 even when no recipient could take the message: an answer without a notification `id`
//! (with `errors` such as "All included players are not subscribed") is a permanent failure. Other answers are
//! judged like every HTTP answer (400 permanent, 429 and 5xx retryable with their `Retry-After`).

use async_trait::async_trait;
use herald_domain::{Channel, Event, Message};
use herald_platform::EnvReader;
use serde_json::json;
use url::Url;

use super::settings::{read_url, Secret};
use super::{
    judge_response, transport_error, wrong_channel, BuildError, Delivered, Provider, SendError,
};

/// Where OneSignal's API is, unless `HERALD_ONESIGNAL_BASE_URL` says otherwise.
pub const DEFAULT_ONESIGNAL_BASE_URL: &str = "https://api.onesignal.com";

/// OneSignal's settings.
#[derive(Debug, Clone)]
pub struct OneSignalConfig {
    /// `HERALD_ONESIGNAL_APP_ID`: the app. Required for OneSignal.
    pub app_id: String,
    /// `HERALD_ONESIGNAL_API_KEY`: the app's REST API key. Required for OneSignal.
    pub api_key: Secret,
    /// `HERALD_ONESIGNAL_BASE_URL`: default `https://api.onesignal.com`.
    pub base_url: Url,
}

impl OneSignalConfig {
    /// `HERALD_ONESIGNAL_*`; `None` when no app is named (OneSignal is then not a provider of this dispatcher).
    pub(crate) fn read(env: &mut EnvReader) -> Option<Self> {
        let app_id = env.optional_string("HERALD_ONESIGNAL_APP_ID")?;
        let api_key = env.optional_string("HERALD_ONESIGNAL_API_KEY");
        if api_key.is_none() {
            env.problem(
                "HERALD_ONESIGNAL_API_KEY",
                "is required with HERALD_ONESIGNAL_APP_ID",
            );
        }
        let base_url = read_url(env, "HERALD_ONESIGNAL_BASE_URL")
            .or_else(|| Url::parse(DEFAULT_ONESIGNAL_BASE_URL).ok())?;
        Some(Self {
            app_id,
            api_key: Secret::new(api_key?),
            base_url,
        })
    }
}

/// Sends push messages through OneSignal.
#[derive(Debug)]
pub struct OneSignalProvider {
    client: reqwest::Client,
    endpoint: Url,
    app_id: String,
    api_key: Secret,
}

impl OneSignalProvider {
    pub fn build(config: &OneSignalConfig, client: reqwest::Client) -> Result<Self, BuildError> {
        let mut endpoint = config.base_url.clone();
        endpoint
            .path_segments_mut()
            .map_err(|()| BuildError {
                channel: Channel::Push,
                message: format!("{} cannot be a base URL", config.base_url),
            })?
            .pop_if_empty()
            .push("notifications");
        Ok(Self {
            client,
            endpoint,
            app_id: config.app_id.clone(),
            api_key: config.api_key.clone(),
        })
    }
}

#[async_trait]
impl Provider for OneSignalProvider {
    fn name(&self) -> &str {
        herald_domain::provider::ONESIGNAL
    }

    async fn send(
        &self,
        _event: &Event,
        message: &Message,
        _attempt: u32,
    ) -> Result<Delivered, SendError> {
        let Message::Push(push) = message else {
            return Err(wrong_channel(Channel::Push, message));
        };
        let mut body = json!({
            "app_id": self.app_id,
            "target_channel": "push",
            "include_subscription_ids": push.tokens(),
            "headings": {"en": push.title()},
            "contents": {"en": push.body()},
        });
        if let Some(data) = push.data() {
            body["data"] = json!(data);
        }
        let response = self
            .client
            .post(self.endpoint.clone())
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Key {}", self.api_key.expose()),
            )
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let (delivered, response) = judge_response(response).await.map_err(|e| SendError {
            message: format!("onesignal: {}", e.message),
            ..e
        })?;
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        match answer["id"].as_str().filter(|id| !id.is_empty()) {
            Some(id) => Ok(Delivered {
                detail: Some(format!("notification {id}")),
                ..delivered
            }),
            None => Err(SendError::invalid(format!(
                "onesignal: no recipient took the notification: {}",
                answer
                    .get("errors")
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ))),
        }
    }
}
