//! Email through Mailgun's messages API: `POST {base}/v3/{domain}/messages`, HTTP basic auth `api:<api key>`, a
//! form body of `from`, `to`, `subject`, `text`, `html` and `h:` (extra header) fields.
//!
//! Mailgun answers 200 with `{id, message: "Queued. Thank you."}` when it accepted the message; refusals are
//! judged like every HTTP answer (400, 401, 403, 404 permanent; 429 and 5xx retryable with their `Retry-After`).

use async_trait::async_trait;
use herald_domain::{Channel, Event, Message};
use herald_platform::EnvReader;
use lettre::message::Mailbox;
use serde::Deserialize;
use url::Url;

use super::settings::{read_url_or, Secret};
use super::{
    api_endpoint, judge_response, transport_error, wrong_channel, BuildError, Delivered, Provider,
    SendError, Try,
};

/// Where Mailgun's API is, unless `HERALD_MAILGUN_BASE_URL` says otherwise.
pub const DEFAULT_MAILGUN_BASE_URL: &str = "https://api.mailgun.net";

/// Mailgun's settings.
#[derive(Debug, Clone)]
pub struct MailgunConfig {
    /// `HERALD_MAILGUN_API_KEY`: the account's (or domain's sending) API key. Mailgun is a provider of this
    /// dispatcher when it is set.
    pub api_key: Secret,
    /// `HERALD_MAILGUN_DOMAIN`: the sending domain, in the path. Required with the key.
    pub domain: String,
    /// `HERALD_MAILGUN_BASE_URL`: default `https://api.mailgun.net` (`https://api.eu.mailgun.net` for EU domains).
    pub base_url: Url,
}

impl MailgunConfig {
    /// `HERALD_MAILGUN_*`; `None` when no API key is set.
    pub(crate) fn read(env: &mut EnvReader) -> Option<Self> {
        let api_key = env.optional_string("HERALD_MAILGUN_API_KEY")?;
        let domain = env.optional_string("HERALD_MAILGUN_DOMAIN");
        if domain.is_none() {
            env.problem(
                "HERALD_MAILGUN_DOMAIN",
                "is required with HERALD_MAILGUN_API_KEY",
            );
        }
        let base_url = read_url_or(env, "HERALD_MAILGUN_BASE_URL", DEFAULT_MAILGUN_BASE_URL)?;
        Some(Self {
            api_key: Secret::new(api_key),
            domain: domain?,
            base_url,
        })
    }
}

/// Sends email through Mailgun.
#[derive(Debug)]
pub struct MailgunProvider {
    client: reqwest::Client,
    endpoint: Url,
    api_key: Secret,
    from: Mailbox,
}

impl MailgunProvider {
    /// Sends from `from` (`HERALD_SMTP_FROM`, the sender of every email provider).
    pub fn build(
        config: &MailgunConfig,
        from: Mailbox,
        client: reqwest::Client,
    ) -> Result<Self, BuildError> {
        let segments = ["v3", config.domain.as_str(), "messages"];
        Ok(Self {
            client,
            endpoint: api_endpoint(Channel::Email, &config.base_url, &segments)?,
            api_key: config.api_key.clone(),
            from,
        })
    }
}

/// The form fields of `email` for `event`.
fn form(
    event: &Event,
    from: &Mailbox,
    email: &herald_domain::message::Email,
) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("from", from.to_string()),
        ("to", email.to().to_owned()),
        ("subject", email.subject().to_owned()),
        // Receivers deduplicate on the event id, as they do for SMTP's Message-ID and Herald-Event-Id.
        ("h:Message-Id", format!("<{}@herald>", event.event_id)),
        ("h:Herald-Event-Id", event.event_id.to_string()),
    ];
    if let Some(text) = email.text().filter(|t| !t.is_empty()) {
        fields.push(("text", text.to_owned()));
    }
    if let Some(html) = email.html().filter(|h| !h.is_empty()) {
        fields.push(("html", html.to_owned()));
    }
    fields
}

#[derive(Debug, Deserialize)]
struct Queued {
    id: Option<String>,
}

#[async_trait]
impl Provider for MailgunProvider {
    fn name(&self) -> &str {
        herald_domain::provider::MAILGUN
    }

    async fn send(
        &self,
        event: &Event,
        message: &Message,
        _attempt: Try,
    ) -> Result<Delivered, SendError> {
        let Message::Email(email) = message else {
            return Err(wrong_channel(Channel::Email, message));
        };
        let response = self
            .client
            .post(self.endpoint.clone())
            .basic_auth("api", Some(self.api_key.expose()))
            .form(&form(event, &self.from, email))
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let (mut delivered, response) = judge_response(response).await.map_err(|e| SendError {
            message: format!("mailgun: {}", e.message),
            ..e
        })?;
        // The id is worth a log line; an answer without one is still an acceptance.
        if let Ok(Queued { id: Some(id) }) = response.json::<Queued>().await {
            delivered.detail = Some(format!("message {id}"));
        }
        Ok(delivered)
    }
}
