//! SMTP settings (`HERALD_SMTP_*`) and the pooled lettre transport built from them, for every service that sends
//! mail: one transport per process, whose pool reuses connections instead of dialling for every message.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, Tokio1Executor};

use crate::config::EnvReader;

/// The transport every sender shares.
pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// How to talk TLS to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain text (a local relay or test sink).
    None,
    /// A plain connection upgraded with STARTTLS, which is then required (usually port 587).
    StartTls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

impl FromStr for Tls {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "starttls" => Ok(Self::StartTls),
            "tls" => Ok(Self::Tls),
            _ => Err("expected one of: none, starttls, tls".into()),
        }
    }
}

/// Where and how to send mail.
#[derive(Clone)]
pub struct SmtpConfig {
    /// `HERALD_SMTP_HOST`: the SMTP server. Default `127.0.0.1`.
    pub host: String,
    /// `HERALD_SMTP_PORT`: its port. Default 1025.
    pub port: u16,
    /// `HERALD_SMTP_TLS`: `none`, `starttls` or `tls`. Default `none`.
    pub tls: Tls,
    /// `HERALD_SMTP_USERNAME`: login, if the server wants one (with the password). Default none.
    pub username: Option<String>,
    /// `HERALD_SMTP_PASSWORD`: its password; never shown by `Debug`. Default none.
    password: Option<String>,
    /// `HERALD_SMTP_FROM`: the sender (`Name <addr>` or `addr`). Default `herald@localhost`.
    pub from: Mailbox,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .finish()
    }
}

/// `herald@localhost`, the sender when none is configured.
fn default_from() -> Mailbox {
    Mailbox::new(None, lettre::Address::new_dangerous("herald", "localhost"))
}

impl SmtpConfig {
    /// Reads the `HERALD_SMTP_*` variables, recording every problem in `env`.
    pub fn read(env: &mut EnvReader) -> Self {
        let from_raw = env.string("HERALD_SMTP_FROM", "herald@localhost");
        let from = match from_raw.parse::<Mailbox>() {
            Ok(from) => from,
            Err(e) => {
                env.problem(
                    "HERALD_SMTP_FROM",
                    format!("'{from_raw}' is not an address: {e}"),
                );
                default_from()
            }
        };
        let config = Self {
            host: env.string("HERALD_SMTP_HOST", "127.0.0.1"),
            port: env.parse("HERALD_SMTP_PORT", 1025),
            tls: env.parse("HERALD_SMTP_TLS", Tls::None),
            username: env.optional_string("HERALD_SMTP_USERNAME"),
            password: env.optional_string("HERALD_SMTP_PASSWORD"),
            from,
        };
        if config.username.is_some() != config.password.is_some() {
            env.problem(
                "HERALD_SMTP_USERNAME",
                "HERALD_SMTP_USERNAME and HERALD_SMTP_PASSWORD go together",
            );
        }
        config
    }

    /// Another server, read from `{prefix}HOST` (given, as the caller checked it is there), `{prefix}TLS`,
    /// `{prefix}PORT` (default 25, 587 with STARTTLS, 465 with TLS), `{prefix}USERNAME` and `{prefix}PASSWORD`
    /// (together or not at all), and `{prefix}FROM` (default `from`). Every problem is recorded in `env`.
    pub fn read_relay(env: &mut EnvReader, prefix: &str, host: String, from: &Mailbox) -> Self {
        let key = |field: &str| format!("{prefix}{field}");
        let tls = env.parse(&key("TLS"), Tls::None);
        let default_port = match tls {
            Tls::None => 25,
            Tls::StartTls => 587,
            Tls::Tls => 465,
        };
        let from = match env.optional_string(&key("FROM")) {
            None => from.clone(),
            Some(raw) => raw.parse::<Mailbox>().unwrap_or_else(|e| {
                env.problem(&key("FROM"), format!("'{raw}' is not an address: {e}"));
                from.clone()
            }),
        };
        let config = Self {
            host,
            port: env.parse(&key("PORT"), default_port),
            tls,
            username: env.optional_string(&key("USERNAME")),
            password: env.optional_string(&key("PASSWORD")),
            from,
        };
        if config.username.is_some() != config.password.is_some() {
            env.problem(
                &key("USERNAME"),
                format!("{} and {} go together", key("USERNAME"), key("PASSWORD")),
            );
        }
        config
    }

    /// The local test sink: `host:port`, no TLS, no login, from `herald@localhost`.
    pub fn plain(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            tls: Tls::None,
            username: None,
            password: None,
            from: default_from(),
        }
    }

    /// A pooled transport of at most `pool_size` connections; each command waits at most `timeout`.
    ///
    /// Nothing is dialled here: a server that is away makes sends fail, not the build.
    pub fn transport(
        &self,
        timeout: Duration,
        pool_size: u32,
    ) -> Result<Transport, lettre::transport::smtp::Error> {
        let mut builder = match self.tls {
            Tls::None => Transport::builder_dangerous(&self.host),
            Tls::StartTls => Transport::starttls_relay(&self.host)?,
            Tls::Tls => Transport::relay(&self.host)?,
        };
        builder = builder
            .port(self.port)
            .timeout(Some(timeout))
            .pool_config(PoolConfig::new().max_size(pool_size));
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(builder.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fields_are_all_reported_and_the_password_stays_hidden() {
        let mut env = EnvReader::from_map(
            [
                ("HERALD_SMTP_TLS", "ssl"),
                ("HERALD_SMTP_FROM", "not an address"),
                ("HERALD_SMTP_PASSWORD", "s3cret"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let config = SmtpConfig::read(&mut env);
        assert!(!format!("{config:?}").contains("s3cret"));
        let err = env.finish().expect_err("three problems");
        assert_eq!(err.problems.len(), 3, "{err}");
    }
}
