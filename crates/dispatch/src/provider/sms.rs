//! SMS through an HTTP API of the common shape: a form POST of `To`, `From` and `Body` to
//! `{base}/Accounts/{account}/Messages.json`, with the account and its token as HTTP basic auth.

use std::time::Duration;

use async_trait::async_trait;
use herald_domain::{Channel, Event, Message};
use serde::Deserialize;
use url::Url;

use super::{
    judge_response, transport_error, wrong_channel, BuildError, Delivered, Provider, SendError,
};
use crate::config::{Secret, SmsConfig};

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

#[derive(Debug, Deserialize)]
struct Accepted {
    sid: Option<String>,
}

#[async_trait]
impl Provider for HttpSmsProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(
        &self,
        _event: &Event,
        message: &Message,
        _attempt: u32,
    ) -> Result<Delivered, SendError> {
        let Message::Sms(sms) = message else {
            return Err(wrong_channel(Channel::Sms, message));
        };
        let response = self
            .client
            .post(self.endpoint.clone())
            .basic_auth(&self.account_id, Some(self.auth_token.expose()))
            .form(&[
                ("To", sms.phone_number()),
                ("From", self.from.as_str()),
                ("Body", sms.message()),
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
