//! Email through SendGrid's v3 Mail Send API: `POST {base}/v3/mail/send` with `Authorization: Bearer <api key>`
//! and `{personalizations: [{to}], from, subject, content: [text/plain?, text/html?], headers, custom_args}`.
//!
//! SendGrid answers 202 when it accepted the message; refusals are judged like every HTTP answer (400, 401, 403,
//! 413 permanent; 429 and 5xx retryable with their `Retry-After`). The accepted message's id comes back in the
//! `X-Message-Id` header.

use async_trait::async_trait;
use herald_domain::{Channel, Event, Message};
use herald_platform::EnvReader;
use lettre::message::Mailbox;
use serde_json::{json, Value};
use url::Url;

use super::settings::{read_url_or, Secret};
use super::{
    api_endpoint, judge_response, transport_error, wrong_channel, BuildError, Delivered, Provider,
    SendError, Try,
};

/// Where SendGrid's API is, unless `HERALD_SENDGRID_BASE_URL` says otherwise.
pub const DEFAULT_SENDGRID_BASE_URL: &str = "https://api.sendgrid.com";

/// SendGrid's settings.
#[derive(Debug, Clone)]
pub struct SendGridConfig {
    /// `HERALD_SENDGRID_API_KEY`: an API key with the Mail Send permission. SendGrid is a provider of this
    /// dispatcher when it is set.
    pub api_key: Secret,
    /// `HERALD_SENDGRID_BASE_URL`: default `https://api.sendgrid.com` (`https://api.eu.sendgrid.com` for EU
    /// regional subusers).
    pub base_url: Url,
}

impl SendGridConfig {
    /// `HERALD_SENDGRID_*`; `None` when no API key is set.
    pub(crate) fn read(env: &mut EnvReader) -> Option<Self> {
        let api_key = env.optional_string("HERALD_SENDGRID_API_KEY");
        let base_url = read_url_or(env, "HERALD_SENDGRID_BASE_URL", DEFAULT_SENDGRID_BASE_URL)?;
        Some(Self {
            api_key: Secret::new(api_key?),
            base_url,
        })
    }
}

/// Sends email through SendGrid.
#[derive(Debug)]
pub struct SendGridProvider {
    client: reqwest::Client,
    endpoint: Url,
    api_key: Secret,
    from: Mailbox,
}

impl SendGridProvider {
    /// Sends from `from` (`HERALD_SMTP_FROM`, the sender of every email provider).
    pub fn build(
        config: &SendGridConfig,
        from: Mailbox,
        client: reqwest::Client,
    ) -> Result<Self, BuildError> {
        Ok(Self {
            client,
            endpoint: api_endpoint(Channel::Email, &config.base_url, &["v3", "mail", "send"])?,
            api_key: config.api_key.clone(),
            from,
        })
    }
}

/// The Mail Send body of `email` for `event`. SendGrid wants `text/plain` before `text/html`.
fn mail_send_body(event: &Event, from: &Mailbox, email: &herald_domain::message::Email) -> Value {
    let mut sender = json!({"email": from.email.to_string()});
    if let Some(name) = &from.name {
        sender["name"] = json!(name);
    }
    let content: Vec<Value> = [("text/plain", email.text()), ("text/html", email.html())]
        .into_iter()
        .filter_map(|(kind, value)| value.filter(|v| !v.is_empty()).map(|v| (kind, v)))
        .map(|(kind, value)| json!({"type": kind, "value": value}))
        .collect();
    json!({
        "personalizations": [{"to": [{"email": email.to()}]}],
        "from": sender,
        "subject": email.subject(),
        "content": content,
        // Receivers deduplicate on the event id, as they do for SMTP's Herald-Event-Id header.
        "headers": {"Herald-Event-Id": event.event_id.as_str()},
        "custom_args": {"herald_event_id": event.event_id.as_str()},
    })
}

#[async_trait]
impl Provider for SendGridProvider {
    fn name(&self) -> &str {
        herald_domain::provider::SENDGRID
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
            .bearer_auth(self.api_key.expose())
            .json(&mail_send_body(event, &self.from, email))
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let message_id = response
            .headers()
            .get("x-message-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (delivered, _) = judge_response(response).await.map_err(|e| SendError {
            message: format!("sendgrid: {}", e.message),
            ..e
        })?;
        Ok(Delivered {
            detail: message_id.map(|id| format!("message {id}")),
            ..delivered
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::message::Email;

    #[test]
    fn the_body_has_sendgrid_shape_with_text_before_html() {
        let event: Event = serde_json::from_value(json!({
            "eventId": "e-1", "channel": "email", "payload": {}, "createdAt": "2026-01-01T00:00:00Z"
        }))
        .expect("an event");
        let email = Email::parse(
            Some("ada@example.com".into()),
            Some("Shipped".into()),
            Some("plain".into()),
            Some("<b>html</b>".into()),
        )
        .expect("an email");
        let from: Mailbox = "Herald <herald@example.com>".parse().expect("a mailbox");
        let body = mail_send_body(&event, &from, &email);
        assert_eq!(
            body["personalizations"],
            json!([{"to": [{"email": "ada@example.com"}]}])
        );
        assert_eq!(
            body["from"],
            json!({"email": "herald@example.com", "name": "Herald"})
        );
        assert_eq!(
            body["content"],
            json!([{"type": "text/plain", "value": "plain"}, {"type": "text/html", "value": "<b>html</b>"}])
        );
        assert_eq!(body["headers"]["Herald-Event-Id"], "e-1");
    }
}
