//! SMS through an HTTP API of the common shape: a form POST of `To`, `From` and `Body` to
//! `{base}/Accounts/{account}/Messages.json`, with the account and its token as HTTP basic auth.

use std::time::Duration;

use async_trait::async_trait;
use herald_domain::{Channel, Event};
use serde::Deserialize;
use url::Url;

use super::{judge_response, payload, transport_error, BuildError, Delivered, Provider, SendError};
use crate::config::{Secret, SmsConfig};

/// The SMS payload, as ingest normalised it (the number in E.164).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SmsPayload {
    phone_number: String,
    message: String,
}

/// Sends SMS through the configured HTTP API.
#[derive(Debug)]
pub struct HttpSmsProvider {
    name: String,
    client: reqwest::Client,
    endpoint: Url,
    account_id: String,
    auth_token: Secret,
    from: String,
}

impl HttpSmsProvider {
    /// An SMS API provider called `name` (`http-sms` for the one of `HERALD_SMS_*`).
    pub fn build(
        name: &str,
        config: &SmsConfig,
        connect_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<Self, BuildError> {
        let error = |message: String| BuildError {
            channel: Channel::Sms,
            message,
        };
        let (Some(base), Some(account_id), Some(auth_token), Some(from)) = (
            &config.base_url,
            &config.account_id,
            &config.auth_token,
            &config.from,
        ) else {
            return Err(error(
                "base URL, account id, auth token and from number are all required".into(),
            ));
        };
        let mut endpoint = base.clone();
        endpoint
            .path_segments_mut()
            .map_err(|()| error(format!("{base} cannot be a base URL")))?
            .pop_if_empty()
            .extend(["Accounts", account_id.as_str(), "Messages.json"]);
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(send_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| error(e.to_string()))?;
        Ok(Self {
            name: name.to_owned(),
            client,
            endpoint,
            account_id: account_id.clone(),
            auth_token: auth_token.clone(),
            from: from.clone(),
        })
    }
}

/// `+` and 8 to 15 digits, the first not 0: what ingest's normalisation produces.
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

#[derive(Debug, Deserialize)]
struct Accepted {
    sid: Option<String>,
}

#[async_trait]
impl Provider for HttpSmsProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, event: &Event, _attempt: u32) -> Result<Delivered, SendError> {
        let sms: SmsPayload = payload(event, Channel::Sms)?;
        if !is_e164(&sms.phone_number) {
            return Err(SendError::invalid(format!(
                "invalid recipient '{}': not an E.164 number",
                sms.phone_number
            )));
        }
        let response = self
            .client
            .post(self.endpoint.clone())
            .basic_auth(&self.account_id, Some(self.auth_token.expose()))
            .form(&[
                ("To", sms.phone_number.as_str()),
                ("From", self.from.as_str()),
                ("Body", sms.message.as_str()),
            ])
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let (mut delivered, response) = judge_response(response).await?;
        // The API's id for the message, when it gives one, is worth a log line; its absence is no failure.
        if let Ok(Accepted { sid: Some(sid) }) = response.json::<Accepted>().await {
            delivered.detail = Some(format!("sid {sid}"));
        }
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_e164_numbers_pass() {
        assert!(is_e164("+14155550123"));
        assert!(is_e164("+447911123456"));
        assert!(!is_e164("14155550123"));
        assert!(!is_e164("+1 415 555 0123"));
        assert!(!is_e164("+0123456789"));
        assert!(!is_e164("+1234567"));
        assert!(!is_e164("+1234567890123456"));
    }
}
