//! SMS through an HTTP API of the common shape: a form POST of `To`, `From` and `Body` to
//! `{base}/Accounts/{account}/Messages.json`, with the account and its token as HTTP basic auth.

use std::time::Duration;

use async_trait::async_trait;
use herald_domain::provider::{self as names, env_segment};
use herald_domain::{Channel, Event, Message};
use herald_platform::EnvReader;
use serde::Deserialize;
use url::Url;

use super::settings::{
    backend, read_extra_names, read_url, required, Backend, NamedProvider, Secret,
};
use super::{
    judge_response, transport_error, wrong_channel, BuildError, Delivered, Provider, SendError, Try,
};

/// Which SMS API takes an SMS's first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsApi {
    /// The Twilio-shaped API of `HERALD_SMS_*` (`http-sms`), or the sandbox when `backend` says so.
    Twilio,
    /// MessageBird (`HERALD_MESSAGEBIRD_*`).
    MessageBird,
}

/// The SMS channel.
#[derive(Debug, Clone)]
pub struct SmsConfig {
    /// `HERALD_SMS_PROVIDER`: `http` (or `twilio`), `messagebird` or `sandbox`. Default `http` when
    /// `HERALD_SMS_BASE_URL` is set, else `messagebird` when `HERALD_MESSAGEBIRD_ACCESS_KEY` is, else `sandbox`.
    /// `backend` says whether the Twilio-shaped API of `HERALD_SMS_*` is built.
    pub backend: Backend,
    /// Which API sends first.
    pub api: SmsApi,
    /// `HERALD_SMS_BASE_URL`: the SMS API's base URL; messages are POSTed to
    /// `{base}/Accounts/{account}/Messages.json`. Required for `http`.
    pub base_url: Option<Url>,
    /// `HERALD_SMS_ACCOUNT_ID`: the account, in the path and as the basic-auth user. Required for `http`.
    pub account_id: Option<String>,
    /// `HERALD_SMS_AUTH_TOKEN`: the basic-auth password. Required for `http`.
    pub auth_token: Option<Secret>,
    /// `HERALD_SMS_FROM`: the sending number or sender id (the `From` field). Required for `http`.
    pub from: Option<String>,
}

impl SmsConfig {
    /// `HERALD_SMS_PROVIDER` and `HERALD_SMS_*`.
    pub(crate) fn read(env: &mut EnvReader) -> Self {
        let base_url = read_url(env, "HERALD_SMS_BASE_URL");
        let has_base_url = env.raw("HERALD_SMS_BASE_URL").is_some();
        let default = if has_base_url {
            Backend::Real
        } else {
            Backend::Sandbox
        };
        let raw = env.raw("HERALD_SMS_PROVIDER").map(str::to_ascii_lowercase);
        let api = match raw.as_deref() {
            Some(names::MESSAGEBIRD) => SmsApi::MessageBird,
            None if !has_base_url && env.raw("HERALD_MESSAGEBIRD_ACCESS_KEY").is_some() => {
                SmsApi::MessageBird
            }
            _ => SmsApi::Twilio,
        };
        let config = SmsConfig {
            backend: match api {
                // MessageBird sends first; the Twilio-shaped API is there too when it is configured.
                SmsApi::MessageBird => default,
                // `twilio` names the same API: its shape is Twilio's.
                SmsApi::Twilio => backend(
                    env,
                    "HERALD_SMS_PROVIDER",
                    "http, twilio, messagebird",
                    default,
                ),
            },
            api,
            base_url,
            account_id: env.optional_string("HERALD_SMS_ACCOUNT_ID"),
            auth_token: env
                .optional_string("HERALD_SMS_AUTH_TOKEN")
                .map(Secret::new),
            from: env.optional_string("HERALD_SMS_FROM"),
        };
        if config.backend == Backend::Real {
            let missing = [
                (
                    "HERALD_SMS_BASE_URL",
                    env.raw("HERALD_SMS_BASE_URL").is_none(),
                ),
                ("HERALD_SMS_ACCOUNT_ID", config.account_id.is_none()),
                ("HERALD_SMS_AUTH_TOKEN", config.auth_token.is_none()),
                ("HERALD_SMS_FROM", config.from.is_none()),
            ];
            for (key, _) in missing.iter().filter(|(_, missing)| *missing) {
                env.problem(key, "is required when HERALD_SMS_PROVIDER is http");
            }
        }
        if config.api == SmsApi::MessageBird && env.raw("HERALD_MESSAGEBIRD_ACCESS_KEY").is_none() {
            env.problem(
                "HERALD_MESSAGEBIRD_ACCESS_KEY",
                "is required when HERALD_SMS_PROVIDER is messagebird",
            );
        }
        config
    }

    /// `HERALD_SMS_PROVIDERS` and each API's `HERALD_SMS_<NAME>_*`.
    pub(crate) fn read_extras(env: &mut EnvReader) -> Vec<NamedProvider<SmsConfig>> {
        let list = "HERALD_SMS_PROVIDERS";
        read_extra_names(env, Channel::Sms)
            .into_iter()
            .map(|name| {
                let key = |field: &str| format!("HERALD_SMS_{}_{field}", env_segment(&name));
                if env.raw(&key("BASE_URL")).is_none() {
                    required(env, &key("BASE_URL"), list, &name);
                }
                let config = SmsConfig {
                    backend: Backend::Real,
                    api: SmsApi::Twilio,
                    base_url: read_url(env, &key("BASE_URL")),
                    account_id: required(env, &key("ACCOUNT_ID"), list, &name),
                    auth_token: required(env, &key("AUTH_TOKEN"), list, &name).map(Secret::new),
                    from: required(env, &key("FROM"), list, &name),
                };
                NamedProvider { name, config }
            })
            .collect()
    }
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
        _attempt: Try,
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
