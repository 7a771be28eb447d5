//! Channel providers: one trait, one implementation per way of sending, chosen per channel by configuration.
//!
//! Providers report what they observed; whether that is a delivery, a retryable or a permanent failure is decided
//! by `herald_domain::outcome`, the one place that knows.

mod email;
mod fcm;
mod mailgun;
mod messagebird;
mod onesignal;
mod push;
mod sandbox;
mod sendgrid;
pub(crate) mod settings;
mod sms;
mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use herald_domain::outcome::{classify, Observation, Outcome, TransportFailure, HEADER_ABORT};
use herald_domain::provider as names;
use herald_domain::{Channel, ErrorClass, Event, Message};

use crate::config::Config;
use settings::Backend;

pub use email::{EmailApi, EmailConfig, SmtpProvider};
pub use fcm::{FcmConfig, FcmProvider, ServiceAccount, FCM_SCOPE};
pub use mailgun::{MailgunConfig, MailgunProvider};
pub use messagebird::{MessageBirdConfig, MessageBirdProvider};
pub use onesignal::{OneSignalConfig, OneSignalProvider};
pub use push::{PushBackend, PushConfig};
pub use sandbox::{Sandbox, SANDBOX};
pub use sendgrid::{SendGridConfig, SendGridProvider};
pub use sms::{HttpSmsProvider, SmsApi, SmsConfig};
pub use webhook::{sign, WebhookConfig, WebhookProvider, DEV_WEBHOOK_SECRET};

/// A provider accepted the event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delivered {
    /// The HTTP status of the acceptance, for HTTP providers.
    pub http_status: Option<u16>,
    /// What the provider said (an SMTP reply, an SMS id), for the logs.
    pub detail: Option<String>,
}

/// A provider did not accept the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub class: ErrorClass,
    pub message: String,
    pub http_status: Option<u16>,
    /// The receiver's `Retry-After`, in seconds.
    pub retry_after_secs: Option<u64>,
}

impl SendError {
    /// The event cannot be sent as it is (a malformed payload, an invalid recipient): permanent.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::observed(Observation::Invalid, None, message.into())
    }

    /// No answer: retryable.
    pub fn transport(failure: TransportFailure, message: impl fmt::Display) -> Self {
        Self::observed(
            Observation::Transport(failure),
            None,
            format!("{failure}: {message}"),
        )
    }

    fn observed(observation: Observation<'_>, http_status: Option<u16>, message: String) -> Self {
        let (class, retry_after_secs) = match classify(observation, Utc::now()) {
            Outcome::Failed(failure) => (failure.class, failure.retry_after_secs),
            // Callers only build errors from observations that are not deliveries; should one slip through, a
            // retry is the safe reading.
            Outcome::Delivered => (ErrorClass::Retryable, None),
        };
        Self {
            class,
            message,
            http_status,
            retry_after_secs,
        }
    }
}

/// Which send of an event a provider is asked for: attempt `number` (1 for the first) of replay generation
/// `replay_count` (0 until the event is replayed; a replay starts the numbers again). A resend of the same send,
/// after a crash cut it, has the same pair, so a provider's idempotency key is made from it and the event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Try {
    pub number: u32,
    pub replay_count: u32,
}

/// One way of sending events of one channel.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The name recorded in each attempt and used by retry rules to pick a fallback (`smtp`, `http-sms`,
    /// `webhook`, `sandbox`).
    fn name(&self) -> &str;

    /// Hands `message`, the one `event` carries, over for the send `attempt`. The caller bounds the time it
    /// takes.
    async fn send(
        &self,
        event: &Event,
        message: &Message,
        attempt: Try,
    ) -> Result<Delivered, SendError>;
}

/// A message of another channel than the provider's: the registry is per channel, so this is a bug, and a
/// permanent failure rather than a retry that would fail alike.
pub(crate) fn wrong_channel(expected: Channel, message: &Message) -> SendError {
    SendError::invalid(format!(
        "a {} message reached a {expected} provider",
        message.channel()
    ))
}

/// Judges an HTTP answer (status, `Retry-After`, `Herald-Abort`), reading a little of a refusal's body for the
/// error text. An accepted answer is handed back, its body unread.
pub(crate) async fn judge_response(
    response: reqwest::Response,
) -> Result<(Delivered, reqwest::Response), SendError> {
    const MAX_ERROR_BODY: usize = 256;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header(reqwest::header::RETRY_AFTER.as_str());
    let abort = header(HEADER_ABORT);
    let observation = Observation::Http {
        status,
        retry_after: retry_after.as_deref(),
        abort: abort.is_some(),
    };
    if let Outcome::Delivered = classify(observation, Utc::now()) {
        let delivered = Delivered {
            http_status: Some(status),
            detail: None,
        };
        return Ok((delivered, response));
    }
    let body = read_prefix(response, MAX_ERROR_BODY).await;
    let mut message = format!("HTTP {status}");
    if let Some(reason) = abort.filter(|r| !r.trim().is_empty()) {
        message.push_str(&format!(" ({HEADER_ABORT}: {reason})"));
    }
    if !body.trim().is_empty() {
        message.push_str(": ");
        message.push_str(body.trim());
    }
    Err(SendError::observed(observation, Some(status), message))
}

/// Up to `limit` bytes of a body, as text; a body that fails midway gives what arrived.
async fn read_prefix(mut response: reqwest::Response, limit: usize) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(limit);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Classifies a failed HTTP request that got no answer.
pub(crate) fn transport_error(error: &reqwest::Error) -> SendError {
    let failure = if error.is_timeout() {
        TransportFailure::Timeout
    } else if error.is_connect() {
        TransportFailure::Connect
    } else if error.is_builder() {
        return SendError::invalid(format!("invalid request: {error}"));
    } else {
        TransportFailure::Io
    };
    // reqwest's own text hides the cause ("error sending request"); the chain says what happened.
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    SendError::transport(failure, text)
}

/// An HTTP client for a provider API: bounded connect and total time, no redirects (an API that moved must be
/// configured again, not followed with credentials attached).
pub(crate) fn http_client(
    channel: Channel,
    connect_timeout: std::time::Duration,
    send_timeout: std::time::Duration,
) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(send_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herald-dispatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BuildError {
            channel,
            message: e.to_string(),
        })
}

/// `{base}/{segments...}`: where an HTTP provider's API call goes, under a configurable base URL (which may have
/// a path of its own).
pub(crate) fn api_endpoint(
    channel: Channel,
    base: &url::Url,
    segments: &[&str],
) -> Result<url::Url, BuildError> {
    let mut endpoint = base.clone();
    endpoint
        .path_segments_mut()
        .map_err(|()| BuildError {
            channel,
            message: format!("{base} cannot be a base URL"),
        })?
        .pop_if_empty()
        .extend(segments);
    Ok(endpoint)
}

/// Another name of a provider (`twilio` for `http-sms`, `firebase` for `fcm`): it sends through the provider it
/// names, and its attempts record the name that chose it, so that the attempts show what the client or the retry
/// rules asked for.
#[derive(Debug)]
struct Alias {
    name: String,
    target: Arc<dyn Provider>,
}

#[async_trait]
impl Provider for Alias {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(
        &self,
        event: &Event,
        message: &Message,
        attempt: Try,
    ) -> Result<Delivered, SendError> {
        self.target.send(event, message, attempt).await
    }
}

/// The providers of one channel, by name: the configured one, the named extras and the sandbox.
#[derive(Debug, Clone)]
struct ChannelProviders {
    configured: Arc<dyn Provider>,
    by_name: BTreeMap<String, Arc<dyn Provider>>,
}

impl ChannelProviders {
    fn new(channel: Channel, configured: Arc<dyn Provider>) -> Self {
        let mut by_name: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        by_name.insert(SANDBOX.to_owned(), Arc::new(Sandbox::new(channel)));
        by_name.insert(configured.name().to_owned(), Arc::clone(&configured));
        Self {
            configured,
            by_name,
        }
    }

    fn add(&mut self, provider: Arc<dyn Provider>) {
        self.by_name.insert(provider.name().to_owned(), provider);
    }

    /// Makes `target` answer to `alias` too, recording the alias in the attempts it sends.
    fn alias(&mut self, alias: &str, target: &Arc<dyn Provider>) {
        let alias = Alias {
            name: alias.to_owned(),
            target: Arc::clone(target),
        };
        self.by_name.insert(alias.name.clone(), Arc::new(alias));
    }
}

/// Every provider of this process, built once at startup: a registry per channel, selected by name.
#[derive(Debug, Clone)]
pub struct Providers {
    email: ChannelProviders,
    sms: ChannelProviders,
    webhook: ChannelProviders,
    push: ChannelProviders,
}

/// A provider could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the {channel} provider: {message}")]
pub struct BuildError {
    pub channel: Channel,
    pub message: String,
}

/// A lane message asked for a provider this dispatcher does not have (a retry rule names a provider that is not
/// configured here). Trying again will not help: the attempt is a permanent failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no {channel} provider named '{requested}' in this dispatcher (it has: {})", .available.join(", "))]
pub struct UnknownProvider {
    pub channel: Channel,
    pub requested: String,
    pub available: Vec<String>,
}

impl Providers {
    pub fn build(config: &Config) -> Result<Self, BuildError> {
        let send_timeout = config.send_timeout;
        let connect_timeout = config.webhook.connect_timeout;
        let missing = |channel: Channel, name: &str| BuildError {
            channel,
            message: format!("{name} is the {channel} provider but is not configured"),
        };
        let email_client = http_client(Channel::Email, connect_timeout, send_timeout)?;
        let from = &config.email.smtp.from;
        let sendgrid = config
            .sendgrid
            .as_ref()
            .map(|c| SendGridProvider::build(c, from.clone(), email_client.clone()))
            .transpose()?
            .map(|p| Arc::new(p) as Arc<dyn Provider>);
        let mailgun = config
            .mailgun
            .as_ref()
            .map(|c| MailgunProvider::build(c, from.clone(), email_client.clone()))
            .transpose()?
            .map(|p| Arc::new(p) as Arc<dyn Provider>);
        let smtp: Option<Arc<dyn Provider>> = match config.email.backend {
            Backend::Real => Some(Arc::new(SmtpProvider::build(
                names::SMTP,
                &config.email,
                send_timeout,
            )?)),
            Backend::Sandbox => None,
        };
        let email: Arc<dyn Provider> = match (config.email.backend, config.email.api) {
            (Backend::Sandbox, _) => Arc::new(Sandbox::new(Channel::Email)),
            (Backend::Real, None) => smtp
                .clone()
                .ok_or_else(|| missing(Channel::Email, names::SMTP))?,
            (Backend::Real, Some(EmailApi::SendGrid)) => sendgrid
                .clone()
                .ok_or_else(|| missing(Channel::Email, names::SENDGRID))?,
            (Backend::Real, Some(EmailApi::Mailgun)) => mailgun
                .clone()
                .ok_or_else(|| missing(Channel::Email, names::MAILGUN))?,
        };
        let http_sms: Option<Arc<dyn Provider>> = match config.sms.backend {
            Backend::Real => Some(Arc::new(HttpSmsProvider::build(
                names::HTTP_SMS,
                &config.sms,
                connect_timeout,
                send_timeout,
            )?)),
            Backend::Sandbox => None,
        };
        let messagebird = config
            .messagebird
            .as_ref()
            .map(|c| {
                let client = http_client(Channel::Sms, connect_timeout, send_timeout)?;
                MessageBirdProvider::build(c, client)
            })
            .transpose()?
            .map(|p| Arc::new(p) as Arc<dyn Provider>);
        let sms: Arc<dyn Provider> = match config.sms.api {
            SmsApi::MessageBird => messagebird
                .clone()
                .ok_or_else(|| missing(Channel::Sms, names::MESSAGEBIRD))?,
            SmsApi::Twilio => http_sms
                .clone()
                .unwrap_or_else(|| Arc::new(Sandbox::new(Channel::Sms))),
        };
        let webhook: Arc<dyn Provider> = match config.webhook.backend {
            Backend::Real => Arc::new(WebhookProvider::build(&config.webhook, send_timeout)?),
            Backend::Sandbox => Arc::new(Sandbox::new(Channel::Webhook)),
        };
        let push_client = http_client(Channel::Push, connect_timeout, send_timeout)?;
        let fcm = config
            .push
            .fcm
            .as_ref()
            .map(|fcm| FcmProvider::build(fcm, push_client.clone()).map(Arc::new))
            .transpose()?;
        let onesignal = config
            .push
            .onesignal
            .as_ref()
            .map(|os| OneSignalProvider::build(os, push_client.clone()).map(Arc::new))
            .transpose()?;
        let push: Arc<dyn Provider> = match config.push.backend {
            PushBackend::Fcm => fcm
                .clone()
                .ok_or_else(|| missing(Channel::Push, names::FCM))?,
            PushBackend::OneSignal => onesignal
                .clone()
                .ok_or_else(|| missing(Channel::Push, names::ONESIGNAL))?,
            PushBackend::Sandbox => Arc::new(Sandbox::new(Channel::Push)),
        };
        let mut providers = Self {
            email: ChannelProviders::new(Channel::Email, email),
            sms: ChannelProviders::new(Channel::Sms, sms),
            webhook: ChannelProviders::new(Channel::Webhook, webhook),
            push: ChannelProviders::new(Channel::Push, push),
        };
        // Every configured provider of a channel serves whichever sends first, so that a client's `provider` or a
        // retry rule can pick it.
        for extra in [smtp, sendgrid, mailgun].into_iter().flatten() {
            providers.email.add(extra);
        }
        for extra in &config.email_extras {
            let relay = SmtpProvider::build(&extra.name, &extra.config, send_timeout)?;
            providers.email.add(Arc::new(relay));
        }
        if let Some(http_sms) = &http_sms {
            providers.sms.add(Arc::clone(http_sms));
            providers.sms.alias(names::TWILIO, http_sms);
        }
        if let Some(messagebird) = messagebird {
            providers.sms.add(messagebird);
        }
        for extra in &config.sms_extras {
            let api =
                HttpSmsProvider::build(&extra.name, &extra.config, connect_timeout, send_timeout)?;
            providers.sms.add(Arc::new(api));
        }
        if let Some(fcm) = fcm {
            let fcm = fcm as Arc<dyn Provider>;
            providers.push.alias(names::FIREBASE, &fcm);
            providers.push.add(fcm);
        }
        if let Some(onesignal) = onesignal {
            providers.push.add(onesignal);
        }
        Ok(providers)
    }

    fn of(&self, channel: Channel) -> &ChannelProviders {
        match channel {
            Channel::Email => &self.email,
            Channel::Sms => &self.sms,
            Channel::Webhook => &self.webhook,
            Channel::Push => &self.push,
        }
    }

    /// The names of `channel`'s providers in this process, sorted.
    pub fn names(&self, channel: Channel) -> Vec<String> {
        self.of(channel).by_name.keys().cloned().collect()
    }

    /// The provider for an event of `channel`: the one a retry rule `requested` by name, or the configured one
    /// when none was requested.
    pub fn select(
        &self,
        channel: Channel,
        requested: Option<&str>,
    ) -> Result<&dyn Provider, UnknownProvider> {
        let providers = self.of(channel);
        match requested {
            None => Ok(providers.configured.as_ref()),
            Some(name) => providers
                .by_name
                .get(name)
                .map(|p| p.as_ref())
                .ok_or_else(|| UnknownProvider {
                    channel,
                    requested: name.to_owned(),
                    available: self.names(channel),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::Lane;
    use herald_platform::EnvReader;

    fn providers(pairs: &[(&str, &str)]) -> Providers {
        let mut env = EnvReader::from_pairs(pairs);
        let config = Config::read(&mut env, Some(Lane::Retry));
        env.finish().expect("valid configuration");
        Providers::build(&config).expect("providers")
    }

    // lettre's pooled transport starts its pool on the current tokio runtime.
    #[tokio::test]
    async fn providers_are_selected_by_name_and_an_unknown_name_is_an_error() {
        let providers = providers(&[
            ("HERALD_SMS_BASE_URL", "http://127.0.0.1:9/a"),
            ("HERALD_SMS_ACCOUNT_ID", "AC1"),
            ("HERALD_SMS_AUTH_TOKEN", "t1"),
            ("HERALD_SMS_FROM", "+15550001111"),
            ("HERALD_SMS_PROVIDERS", "backup"),
            ("HERALD_SMS_BACKUP_BASE_URL", "http://127.0.0.1:9/b"),
            ("HERALD_SMS_BACKUP_ACCOUNT_ID", "AC2"),
            ("HERALD_SMS_BACKUP_AUTH_TOKEN", "t2"),
            ("HERALD_SMS_BACKUP_FROM", "+15550002222"),
            ("HERALD_EMAIL_PROVIDERS", "relay-2"),
            ("HERALD_SMTP_RELAY_2_HOST", "127.0.0.1"),
        ]);
        let name = |channel, requested| {
            providers
                .select(channel, requested)
                .map(|p| p.name().to_owned())
        };
        assert_eq!(name(Channel::Sms, None), Ok("http-sms".into()));
        assert_eq!(name(Channel::Sms, Some("backup")), Ok("backup".into()));
        assert_eq!(
            name(Channel::Sms, Some("twilio")),
            Ok("twilio".into()),
            "twilio names the API of HERALD_SMS_*, and its attempts record the name that chose it"
        );
        assert_eq!(name(Channel::Sms, Some("sandbox")), Ok("sandbox".into()));
        assert_eq!(name(Channel::Email, None), Ok("smtp".into()));
        assert_eq!(name(Channel::Email, Some("relay-2")), Ok("relay-2".into()));
        assert_eq!(name(Channel::Webhook, None), Ok("webhook".into()));
        let unknown = name(Channel::Email, Some("backup")).expect_err("an SMS provider");
        assert_eq!(
            unknown.to_string(),
            "no email provider named 'backup' in this dispatcher (it has: relay-2, sandbox, smtp)"
        );
    }

    #[tokio::test]
    async fn the_registry_has_exactly_the_providers_ingest_accepts() {
        let fcm_key = service_account_file();
        let env: Vec<(&str, &str)> = vec![
            ("HERALD_EMAIL_PROVIDER", "sendgrid"),
            ("HERALD_SENDGRID_API_KEY", "SG.x"),
            ("HERALD_MAILGUN_API_KEY", "mg"),
            ("HERALD_MAILGUN_DOMAIN", "mg.example.com"),
            ("HERALD_SMS_PROVIDER", "messagebird"),
            ("HERALD_MESSAGEBIRD_ACCESS_KEY", "mb"),
            ("HERALD_SMS_FROM", "+15550001111"),
            ("HERALD_FCM_SERVICE_ACCOUNT_FILE", fcm_key.as_str()),
            ("HERALD_SMS_PROVIDERS", "backup"),
            ("HERALD_SMS_BACKUP_BASE_URL", "http://127.0.0.1:9/b"),
            ("HERALD_SMS_BACKUP_ACCOUNT_ID", "AC2"),
            ("HERALD_SMS_BACKUP_AUTH_TOKEN", "t2"),
            ("HERALD_SMS_BACKUP_FROM", "+15550002222"),
        ];
        let built = providers(&env);
        let vars: std::collections::HashMap<&str, &str> = env.iter().copied().collect();
        let extras = BTreeMap::from([(Channel::Sms, vec!["backup".to_owned()])]);
        let known = names::KnownProviders::configured(&extras, |key| vars.get(key).copied());
        for channel in Channel::ALL {
            assert_eq!(
                built.names(*channel),
                known.names(*channel),
                "{channel}: the dispatcher and ingest read the same variables alike"
            );
        }
        let name = |channel, requested| {
            built
                .select(channel, requested)
                .map(|p| p.name().to_owned())
        };
        assert_eq!(name(Channel::Email, None), Ok("sendgrid".into()));
        assert_eq!(name(Channel::Email, Some("mailgun")), Ok("mailgun".into()));
        assert_eq!(name(Channel::Sms, None), Ok("messagebird".into()));
        assert_eq!(
            name(Channel::Push, Some("firebase")),
            Ok("firebase".into()),
            "firebase sends through FCM under the name the client chose"
        );
        std::fs::remove_file(&fcm_key).ok();
    }

    /// A service-account key file FCM's provider can load (its key is only used to sign, never checked here).
    fn service_account_file() -> String {
        let path = std::env::temp_dir().join(format!("herald-sa-{}.json", std::process::id()));
        let key = herald_test_support::push_fakes::rsa_private_key().expect("openssl");
        let account = serde_json::json!({
            "type": "service_account", "project_id": "p", "private_key_id": "k",
            "private_key": key, "client_email": "a@p.iam.gserviceaccount.com",
            "token_uri": "http://127.0.0.1:9/token",
        });
        std::fs::write(&path, account.to_string()).expect("written");
        path.display().to_string()
    }
}
