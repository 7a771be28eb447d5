//! Push through OneSignal's REST API: `POST {base}/notifications` with `Authorization: Key <api key>` and
//! `{app_id, target_channel: "push", include_subscription_ids, headings, contents, data}`, one request for every
//! token of the message.
//!
//! Each request carries an `idempotency_key` made of the event id and the attempt number, so that a resend of the
//! same attempt (a dispatcher that crashed after sending, whose claim another took over) is deduplicated by
//! OneSignal (for 30 days) instead of reaching the devices twice; a retry, a new attempt, gets a new key.
//!
//! OneSignal answers 200 even when no recipient could take the message: an answer without a notification `id`
//! (with `errors` such as "All included players are not subscribed") is a permanent failure. Other answers are
//! judged like every HTTP answer (400 permanent, 429 and 5xx retryable with their `Retry-After`).

use async_trait::async_trait;
use herald_domain::{Channel, Event, Message};
use herald_platform::EnvReader;
use serde_json::json;
use url::Url;

use super::settings::{read_url_or, Secret};
use super::{
    judge_response, transport_error, wrong_channel, BuildError, Delivered, Provider, SendError, Try,
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
        let base_url = read_url_or(env, "HERALD_ONESIGNAL_BASE_URL", DEFAULT_ONESIGNAL_BASE_URL)?;
        Some(Self {
            app_id,
            api_key: Secret::new(api_key?),
            base_url,
        })
    }
}

/// The `idempotency_key` of a send: OneSignal wants a v3 or v4 UUID, so this is a v4-shaped UUID whose bits are
/// a SHA-256 of the event id, the attempt number and the replay generation, the same for every resend of that
/// attempt. The generation is in it because a replay numbers its attempts from 1 again: without it OneSignal
/// (which remembers keys for 30 days) would take a replayed event's first send for a repeat of the original one
/// and send nothing. Generation 0 leaves it out, so the keys of events never replayed are those of before.
pub(crate) fn idempotency_key(event: &Event, attempt: Try) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new()
        .chain_update(event.event_id.as_str())
        .chain_update([0])
        .chain_update(attempt.number.to_be_bytes());
    if attempt.replay_count > 0 {
        hasher = hasher
            .chain_update([0])
            .chain_update(attempt.replay_count.to_be_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
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
        event: &Event,
        message: &Message,
        attempt: Try,
    ) -> Result<Delivered, SendError> {
        let Message::Push(push) = message else {
            return Err(wrong_channel(Channel::Push, message));
        };
        let mut body = json!({
            "app_id": self.app_id,
            "idempotency_key": idempotency_key(event, attempt),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn send(number: u32, replay_count: u32) -> Try {
        Try {
            number,
            replay_count,
        }
    }

    #[test]
    fn the_idempotency_key_is_a_uuid_per_event_attempt_and_replay() {
        let event = |id: &str| -> Event {
            serde_json::from_value(json!({
                "eventId": id, "channel": "push", "payload": {}, "createdAt": "2026-01-01T00:00:00Z"
            }))
            .expect("an event")
        };
        let key = idempotency_key(&event("e-1"), send(1, 0));
        let parsed = uuid::Uuid::parse_str(&key).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(
            key,
            idempotency_key(&event("e-1"), send(1, 0)),
            "a resend has the same key"
        );
        assert_ne!(
            key,
            idempotency_key(&event("e-1"), send(2, 0)),
            "a retry has its own"
        );
        assert_ne!(key, idempotency_key(&event("e-2"), send(1, 0)));
        let replayed = idempotency_key(&event("e-1"), send(1, 1));
        assert_ne!(key, replayed, "a replay's first attempt is a new send");
        assert_eq!(replayed, idempotency_key(&event("e-1"), send(1, 1)));
        assert_ne!(replayed, idempotency_key(&event("e-1"), send(1, 2)));
        // Generation 0 keeps the key of before the replay count was in it (a SHA-256 of "e-1", 0, 1 as u32).
        assert_eq!(key, "3a7b16ee-c399-4418-891a-c525a35b82d9");
    }
}
