//! Channel providers: one trait, one implementation per way of sending, chosen per channel by configuration.
//!
//! Providers report what they observed; whether that is a delivery, a retryable or a permanent failure is decided
//! by `herald_domain::outcome`, the one place that knows.

mod email;
mod sandbox;
mod sms;
mod webhook;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use herald_domain::outcome::{classify, Observation, Outcome, TransportFailure, HEADER_ABORT};
use herald_domain::{Channel, ErrorClass, Event};
use serde::de::DeserializeOwned;

use crate::config::{Backend, Config};

pub use email::SmtpProvider;
pub use sandbox::{Sandbox, SANDBOX};
pub use sms::HttpSmsProvider;
pub use webhook::{sign, WebhookProvider};

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

/// One way of sending events of one channel.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The name recorded in each attempt and used by retry rules to pick a fallback (`smtp`, `http-sms`,
    /// `webhook`, `sandbox`).
    fn name(&self) -> &str;

    /// Hands `event` over for attempt number `attempt` (1 for the first). The caller bounds the time it takes.
    async fn send(&self, event: &Event, attempt: u32) -> Result<Delivered, SendError>;
}

/// Reads a channel's payload into the provider's own shape; a payload that does not fit is permanent.
pub(crate) fn payload<T: DeserializeOwned>(
    event: &Event,
    channel: Channel,
) -> Result<T, SendError> {
    serde_json::from_value(event.payload.clone())
        .map_err(|e| SendError::invalid(format!("invalid {channel} payload: {e}")))
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

/// The providers of one channel: the configured one, and the sandbox a retry rule may fall back to.
#[derive(Debug, Clone)]
struct ChannelProviders {
    configured: Arc<dyn Provider>,
    sandbox: Arc<dyn Provider>,
}

/// Every provider of this process, built once at startup.
#[derive(Debug, Clone)]
pub struct Providers {
    email: ChannelProviders,
    sms: ChannelProviders,
    webhook: ChannelProviders,
}

/// A provider could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the {channel} provider: {message}")]
pub struct BuildError {
    pub channel: Channel,
    pub message: String,
}

impl Providers {
    pub fn build(config: &Config) -> Result<Self, BuildError> {
        let send_timeout = config.send_timeout;
        let email: Arc<dyn Provider> = match config.email.backend {
            Backend::Real => Arc::new(SmtpProvider::build(&config.email, send_timeout)?),
            Backend::Sandbox => Arc::new(Sandbox::new(Channel::Email)),
        };
        let sms: Arc<dyn Provider> = match config.sms.backend {
            Backend::Real => Arc::new(HttpSmsProvider::build(
                &config.sms,
                config.webhook.connect_timeout,
                send_timeout,
            )?),
            Backend::Sandbox => Arc::new(Sandbox::new(Channel::Sms)),
        };
        let webhook: Arc<dyn Provider> = match config.webhook.backend {
            Backend::Real => Arc::new(WebhookProvider::build(&config.webhook, send_timeout)?),
            Backend::Sandbox => Arc::new(Sandbox::new(Channel::Webhook)),
        };
        let with_sandbox = |configured, channel| ChannelProviders {
            configured,
            sandbox: Arc::new(Sandbox::new(channel)),
        };
        Ok(Self {
            email: with_sandbox(email, Channel::Email),
            sms: with_sandbox(sms, Channel::Sms),
            webhook: with_sandbox(webhook, Channel::Webhook),
        })
    }

    /// The provider for an event of `channel`: the one a retry rule `requested` when this process has it, else
    /// the configured one.
    pub fn select(&self, channel: Channel, requested: Option<&str>) -> &dyn Provider {
        let providers = match channel {
            Channel::Email => &self.email,
            Channel::Sms => &self.sms,
            Channel::Webhook => &self.webhook,
        };
        match requested {
            Some(name) if name == providers.configured.name() => providers.configured.as_ref(),
            Some(SANDBOX) => providers.sandbox.as_ref(),
            Some(other) => {
                tracing::warn!(
                    requested = other,
                    using = providers.configured.name(),
                    %channel,
                    "a retry rule asked for a provider this dispatcher does not have"
                );
                providers.configured.as_ref()
            }
            None => providers.configured.as_ref(),
        }
    }
}
