//! SMS through MessageBird's (Bird's) SMS API: `POST {base}/messages` with `Authorization: AccessKey <key>` and
//! `{originator, recipients: [msisdn], body, reference}`.
//!
//! MessageBird answers 201 with the message (`id`, recipients' statuses) when it accepted it; refusals are judged
//! like every HTTP answer (401 and 422, its "request not allowed" and validation answers, permanent; 429 and 5xx
//! retryable with their `Retry-After`).

use async_trait::async_trait;
use herald_domain::{Channel, Event, Message};
use herald_platform::EnvReader;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::settings::{read_url_or, Secret};
use super::{
    api_endpoint, judge_response, transport_error, wrong_channel, BuildError, Delivered, Provider,
    SendError, Try,
};

/// Where MessageBird's API is, unless `HERALD_MESSAGEBIRD_BASE_URL` says otherwise.
pub const DEFAULT_MESSAGEBIRD_BASE_URL: &str = "https://rest.messagebird.com";

/// MessageBird's settings.
#[derive(Debug, Clone)]
pub struct MessageBirdConfig {
    /// `HERALD_MESSAGEBIRD_ACCESS_KEY`: a live (or test) access key. MessageBird is a provider of this dispatcher
    /// when it is set.
    pub access_key: Secret,
    /// `HERALD_MESSAGEBIRD_ORIGINATOR`: the sender, a number with its country code or up to 11 letters and
    /// digits. Default `HERALD_SMS_FROM`; one of the two is required with the key.
    pub originator: String,
    /// `HERALD_MESSAGEBIRD_BASE_URL`: default `https://rest.messagebird.com`.
    pub base_url: Url,
}

impl MessageBirdConfig {
    /// `HERALD_MESSAGEBIRD_*`; `None` when no access key is set.
    pub(crate) fn read(env: &mut EnvReader) -> Option<Self> {
        let access_key = env.optional_string("HERALD_MESSAGEBIRD_ACCESS_KEY")?;
        let originator = env
            .optional_string("HERALD_MESSAGEBIRD_ORIGINATOR")
            .or_else(|| env.raw("HERALD_SMS_FROM").map(str::to_owned));
        if originator.is_none() {
            env.problem(
                "HERALD_MESSAGEBIRD_ORIGINATOR",
                "is required with HERALD_MESSAGEBIRD_ACCESS_KEY (or set HERALD_SMS_FROM)",
            );
        }
        let base_url = read_url_or(
            env,
            "HERALD_MESSAGEBIRD_BASE_URL",
            DEFAULT_MESSAGEBIRD_BASE_URL,
        )?;
        Some(Self {
            access_key: Secret::new(access_key),
            originator: originator?,
            base_url,
        })
    }
}

/// Sends SMS through MessageBird.
#[derive(Debug)]
pub struct MessageBirdProvider {
    client: reqwest::Client,
    endpoint: Url,
    access_key: Secret,
    originator: String,
}

impl MessageBirdProvider {
    pub fn build(config: &MessageBirdConfig, client: reqwest::Client) -> Result<Self, BuildError> {
        Ok(Self {
            client,
            endpoint: api_endpoint(Channel::Sms, &config.base_url, &["messages"])?,
            access_key: config.access_key.clone(),
            originator: config.originator.clone(),
        })
    }
}

#[derive(Debug, Deserialize)]
struct Created {
    id: Option<String>,
}

#[async_trait]
impl Provider for MessageBirdProvider {
    fn name(&self) -> &str {
        herald_domain::provider::MESSAGEBIRD
    }

    async fn send(
        &self,
        event: &Event,
        message: &Message,
        _attempt: Try,
    ) -> Result<Delivered, SendError> {
        let Message::Sms(sms) = message else {
            return Err(wrong_channel(Channel::Sms, message));
        };
        // MessageBird's msisdns are the E.164 digits without the `+`.
        let msisdn = sms.phone_number().trim_start_matches('+');
        let body = json!({
            "originator": self.originator,
            "recipients": [msisdn],
            "body": sms.message(),
            "reference": event.event_id.as_str(),
        });
        let response = self
            .client
            .post(self.endpoint.clone())
            .header(
                reqwest::header::AUTHORIZATION,
                format!("AccessKey {}", self.access_key.expose()),
            )
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let (mut delivered, response) = judge_response(response).await.map_err(|e| SendError {
            message: format!("messagebird: {}", e.message),
            ..e
        })?;
        if let Ok(Created { id: Some(id) }) = response.json::<Created>().await {
            delivered.detail = Some(format!("message {id}"));
        }
        Ok(delivered)
    }
}
