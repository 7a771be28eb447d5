//! Email over SMTP: one pooled lettre transport per process, and a Message-ID made of the event id so that
//! receivers can drop a duplicate sent after a crash.

use std::time::Duration;

use async_trait::async_trait;
use herald_domain::message::Email;
use herald_domain::outcome::{Observation, TransportFailure};
use herald_domain::provider::{self as names, env_segment};
use herald_domain::{Channel, Event, Message};
use herald_platform::smtp::SmtpConfig;
use herald_platform::EnvReader;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::settings::{backend, read_extra_names, required, Backend, NamedProvider};
use super::{wrong_channel, BuildError, Delivered, Provider, SendError, Try};

/// An HTTP email API that sends first instead of SMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailApi {
    SendGrid,
    Mailgun,
}

/// The email channel.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// `HERALD_EMAIL_PROVIDER`: `smtp`, `sendgrid`, `mailgun` or `sandbox`: which provider takes an email's first
    /// attempt. Default `smtp`. `sandbox` here is the only way to have no SMTP provider.
    pub backend: Backend,
    /// `sendgrid` or `mailgun` in `HERALD_EMAIL_PROVIDER` (`backend` is then `Real`).
    pub api: Option<EmailApi>,
    /// `HERALD_SMTP_*`: the server, as herald-alert reads it too (`herald_platform::smtp`).
    pub smtp: SmtpConfig,
}

impl EmailConfig {
    /// `HERALD_EMAIL_PROVIDER` and `HERALD_SMTP_*`.
    pub(crate) fn read(env: &mut EnvReader) -> Self {
        let key = "HERALD_EMAIL_PROVIDER";
        let api = match env.raw(key).map(str::to_ascii_lowercase).as_deref() {
            Some(names::SENDGRID) => Some(EmailApi::SendGrid),
            Some(names::MAILGUN) => Some(EmailApi::Mailgun),
            _ => None,
        };
        let backend = match api {
            Some(_) => Backend::Real,
            None => backend(env, key, "smtp, sendgrid, mailgun", Backend::Real),
        };
        Self {
            backend,
            api,
            smtp: SmtpConfig::read(env),
        }
    }

    /// `HERALD_EMAIL_PROVIDERS` and each relay's `HERALD_SMTP_<NAME>_*`, sending from `from` unless told otherwise.
    pub(crate) fn read_extras(
        env: &mut EnvReader,
        from: &Mailbox,
    ) -> Vec<NamedProvider<EmailConfig>> {
        let list = "HERALD_EMAIL_PROVIDERS";
        read_extra_names(env, Channel::Email)
            .into_iter()
            .map(|name| {
                let prefix = format!("HERALD_SMTP_{}_", env_segment(&name));
                let host = required(env, &format!("{prefix}HOST"), list, &name).unwrap_or_default();
                let config = EmailConfig {
                    backend: Backend::Real,
                    api: None,
                    smtp: SmtpConfig::read_relay(env, &prefix, host, from),
                };
                NamedProvider { name, config }
            })
            .collect()
    }
}

/// Pooled SMTP connections: at most one send per partition runs at a time, and a lane has 6 partitions.
const POOL_SIZE: u32 = 8;

/// `Herald-Event-Id: <id>`, the header receivers deduplicate on (the Message-ID carries the same id).
#[derive(Debug, Clone)]
struct HeraldEventId(String);

impl Header for HeraldEventId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Herald-Event-Id")
    }

    fn parse(raw: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(raw.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// Sends email through an SMTP server.
#[derive(Debug)]
pub struct SmtpProvider {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpProvider {
    /// An SMTP provider called `name` (`smtp` for the one of `HERALD_SMTP_*`).
    pub fn build(
        name: &str,
        config: &EmailConfig,
        send_timeout: Duration,
    ) -> Result<Self, BuildError> {
        let invalid = |e: lettre::transport::smtp::Error| BuildError {
            channel: Channel::Email,
            message: e.to_string(),
        };
        let transport = config
            .smtp
            .transport(send_timeout, POOL_SIZE)
            .map_err(invalid)?;
        Ok(Self {
            name: name.to_owned(),
            transport,
            from: config.smtp.from.clone(),
        })
    }

    fn message(&self, event: &Event, email: &Email) -> Result<lettre::Message, SendError> {
        let to: Mailbox = email
            .to()
            .parse()
            .map_err(|e| SendError::invalid(format!("invalid recipient '{}': {e}", email.to())))?;
        let builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject())
            .message_id(Some(format!("<{}@herald>", event.event_id)))
            .header(HeraldEventId(event.event_id.to_string()));
        let built = match (email.text(), email.html()) {
            (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(
                text.to_owned(),
                html.to_owned(),
            )),
            (None, Some(html)) => builder.singlepart(SinglePart::html(html.to_owned())),
            (text, None) => builder
                .header(ContentType::TEXT_PLAIN)
                .body(text.unwrap_or_default().to_owned()),
        };
        built.map_err(|e| SendError::invalid(format!("cannot build the email: {e}")))
    }
}

#[async_trait]
impl Provider for SmtpProvider {
    fn name(&self) -> &str {
        &self.name
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
        let message = self.message(event, email)?;
        match self.transport.send(message).await {
            Ok(response) => Ok(Delivered {
                http_status: None,
                detail: Some(format!(
                    "{} {}",
                    response.code(),
                    response.first_line().unwrap_or_default()
                )),
            }),
            Err(e) => Err(smtp_error(&e)),
        }
    }
}

fn smtp_error(error: &lettre::transport::smtp::Error) -> SendError {
    if let Some(code) = error.status() {
        return SendError::observed(
            Observation::Smtp {
                code: u16::from(code),
            },
            None,
            format!("smtp: {error}"),
        );
    }
    let failure = if error.is_timeout() {
        TransportFailure::Timeout
    } else if error.is_tls() {
        TransportFailure::Tls
    } else {
        TransportFailure::Connect
    };
    SendError::transport(failure, format!("smtp: {error}"))
}
