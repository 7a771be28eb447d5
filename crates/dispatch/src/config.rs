//! The dispatcher's configuration: one [`Config`] read from the environment, with every bad field listed at once.

use std::fmt;
use std::time::Duration;

use herald_domain::provider::{self as names, env_segment};
use herald_domain::{Channel, Lane};
use herald_platform::kafka::watch::WatchConfig;
use herald_platform::smtp::SmtpConfig;
use herald_platform::{ConfigError, EnvReader, KafkaConfig, MongoConfig, TelemetryConfig};
use lettre::message::Mailbox;
use url::Url;

/// The service name: Kafka client id, MongoDB app name, consumer group stem.
pub const SERVICE: &str = "herald-dispatch";

/// The webhook signing secret used when `HERALD_WEBHOOK_SECRET` is unset. Fine for a laptop, wrong anywhere
/// else: [`Config::warnings`] says so at startup.
pub const DEV_WEBHOOK_SECRET: &str = "herald-dev-webhook-secret";

/// A value that must never reach a log: `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which implementation serves a channel: the real one (SMTP, the SMS API, HTTP webhooks) or the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Real,
    Sandbox,
}

/// The email channel.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// `HERALD_EMAIL_PROVIDER`: `smtp` or `sandbox`. Default `smtp`.
    pub backend: Backend,
    /// `HERALD_SMTP_*`: the server, as herald-alert reads it too (`herald_platform::smtp`).
    pub smtp: SmtpConfig,
}

/// The SMS channel.
#[derive(Debug, Clone)]
pub struct SmsConfig {
    /// `HERALD_SMS_PROVIDER`: `http` or `sandbox`. Default `http` when `HERALD_SMS_BASE_URL` is set, else
    /// `sandbox`.
    pub backend: Backend,
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

/// The webhook channel.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `HERALD_WEBHOOK_PROVIDER`: `http` or `sandbox`. Default `http`.
    pub backend: Backend,
    /// `HERALD_WEBHOOK_SECRET`: the HMAC-SHA256 key of `Herald-Signature`. Default [`DEV_WEBHOOK_SECRET`], with a
    /// warning at startup.
    pub secret: Secret,
    /// `HERALD_WEBHOOK_CONNECT_TIMEOUT_MS`: how long connecting to a receiver (and the SMS API) may take,
    /// in milliseconds. Default 3000. The whole request is bounded by `HERALD_SEND_TIMEOUT_MS`.
    pub connect_timeout: Duration,
}

/// A provider beyond a channel's configured one, reachable by its name from retry rules (`providers = [..]`).
#[derive(Debug, Clone)]
pub struct NamedProvider<C> {
    /// Its name, as listed in `HERALD_EMAIL_PROVIDERS` / `HERALD_SMS_PROVIDERS`, recorded in each attempt.
    pub name: String,
    pub config: C,
}

/// Everything `herald-dispatch` reads at startup.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--lane` / `HERALD_LANE`: the lane this process consumes: `critical`, `default` or `retry`. Required.
    pub lane: Lane,
    /// `HERALD_DISPATCH_HOST`: address of the health/ready/metrics server. Default `127.0.0.1` (use `0.0.0.0` in
    /// a container).
    pub host: String,
    /// `HERALD_DISPATCH_PORT`: its port; 0 picks a free one. Default 3010 for `critical`, 3011 for `default`,
    /// 3012 for `retry`, so the three lanes run side by side on one host.
    pub port: u16,
    /// `HERALD_SEND_TIMEOUT_MS`: the longest one send may take, in milliseconds, connection included. Default
    /// 10000. A claim's lease is this plus 5 s.
    pub send_timeout: Duration,
    /// `HERALD_DISPATCH_QUEUE_DEPTH`: messages queued for each assigned partition's worker. Default 16. At most
    /// `partitions × (depth + 2)` messages are in flight (see `lane`).
    pub queue_depth: usize,
    pub email: EmailConfig,
    pub sms: SmsConfig,
    pub webhook: WebhookConfig,
    /// `HERALD_EMAIL_PROVIDERS`: more SMTP relays, by name (comma-separated; default none), each configured by
    /// `HERALD_SMTP_<NAME>_HOST` (required), `_PORT` (default 25, 587 with STARTTLS, 465 with TLS), `_TLS`,
    /// `_USERNAME`, `_PASSWORD` and `_FROM` (default `HERALD_SMTP_FROM`), `<NAME>` upper-cased with `-` as `_`.
    pub email_extras: Vec<NamedProvider<EmailConfig>>,
    /// `HERALD_SMS_PROVIDERS`: more SMS APIs, by name (comma-separated; default none), each configured by
    /// `HERALD_SMS_<NAME>_BASE_URL`, `_ACCOUNT_ID`, `_AUTH_TOKEN` and `_FROM`, all required.
    pub sms_extras: Vec<NamedProvider<SmsConfig>>,
    pub kafka: KafkaConfig,
    /// `HERALD_KAFKA_CONSUMER_*`: when the lane consumer counts as stuck and is rebuilt.
    pub watch: WatchConfig,
    pub mongo: MongoConfig,
    pub telemetry: TelemetryConfig,
}

/// The port of a lane's health server when `HERALD_DISPATCH_PORT` is unset.
pub fn default_port(lane: Lane) -> u16 {
    match lane {
        Lane::Critical => 3010,
        Lane::Default => 3011,
        Lane::Retry => 3012,
    }
}

/// Largest accepted `HERALD_DISPATCH_QUEUE_DEPTH`.
const MAX_QUEUE_DEPTH: usize = 10_000;

impl Config {
    /// Reads the process environment; `lane` (from the command line) wins over `HERALD_LANE`.
    pub fn from_env(lane: Option<Lane>) -> Result<Self, ConfigError> {
        let mut env = EnvReader::from_env();
        let config = Self::read(&mut env, lane);
        env.finish().map(|()| config)
    }

    /// Reads every field, recording each problem in `env` (call `env.finish()` afterwards).
    pub fn read(env: &mut EnvReader, lane: Option<Lane>) -> Self {
        let lane = match lane {
            Some(lane) => lane,
            None => match env.raw("HERALD_LANE").map(str::parse::<Lane>) {
                Some(Ok(lane)) => lane,
                Some(Err(e)) => {
                    env.problem("HERALD_LANE", e);
                    Lane::Default
                }
                None => {
                    env.problem(
                        "HERALD_LANE",
                        "is required (or --lane): critical, default or retry",
                    );
                    Lane::Default
                }
            },
        };
        let send_timeout = env.millis("HERALD_SEND_TIMEOUT_MS", Duration::from_secs(10));
        if send_timeout.is_zero() {
            env.problem("HERALD_SEND_TIMEOUT_MS", "must be greater than 0");
        }
        let queue_depth = env.parse("HERALD_DISPATCH_QUEUE_DEPTH", 16usize);
        if !(1..=MAX_QUEUE_DEPTH).contains(&queue_depth) {
            env.problem(
                "HERALD_DISPATCH_QUEUE_DEPTH",
                format!("must be between 1 and {MAX_QUEUE_DEPTH}"),
            );
        }
        let mut config = Self {
            lane,
            host: env.string("HERALD_DISPATCH_HOST", "127.0.0.1"),
            port: env.parse("HERALD_DISPATCH_PORT", default_port(lane)),
            send_timeout,
            queue_depth,
            email: read_email(env),
            sms: read_sms(env),
            webhook: read_webhook(env),
            email_extras: Vec::new(),
            sms_extras: Vec::new(),
            kafka: KafkaConfig::read(env, SERVICE),
            watch: WatchConfig::read(env),
            mongo: MongoConfig::read(env),
            telemetry: TelemetryConfig::read(env),
        };
        config.email_extras = read_email_extras(env, &config.email.smtp.from);
        config.sms_extras = read_sms_extras(env);
        config
    }

    /// What an operator should hear about at startup, although it is not an error.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.webhook.backend == Backend::Real
            && self.webhook.secret.expose() == DEV_WEBHOOK_SECRET
        {
            out.push(
                "HERALD_WEBHOOK_SECRET is unset: webhooks are signed with the public development secret".into(),
            );
        }
        for (channel, backend) in [
            ("email", self.email.backend),
            ("sms", self.sms.backend),
            ("webhook", self.webhook.backend),
        ] {
            if backend == Backend::Sandbox {
                out.push(format!(
                    "the {channel} channel uses the sandbox: nothing is really sent"
                ));
            }
        }
        out
    }

    /// How long a claim keeps other dispatchers off an event: the send timeout plus 5 s for the bookkeeping.
    pub fn lease(&self) -> Duration {
        self.send_timeout + Duration::from_secs(5)
    }

    /// The consumer group of this lane under the installation's prefix.
    pub fn group_id(&self) -> String {
        self.kafka.topics().dispatch_group(self.lane)
    }
}

fn backend(env: &mut EnvReader, key: &str, real: &str, default: Backend) -> Backend {
    match env.raw(key).map(str::to_ascii_lowercase) {
        None => default,
        Some(raw) if raw == real => Backend::Real,
        Some(raw) if raw == "sandbox" => Backend::Sandbox,
        Some(raw) => {
            env.problem(
                key,
                format!("'{raw}' is not valid: expected {real} or sandbox"),
            );
            default
        }
    }
}

fn read_email(env: &mut EnvReader) -> EmailConfig {
    EmailConfig {
        backend: backend(env, "HERALD_EMAIL_PROVIDER", "smtp", Backend::Real),
        smtp: SmtpConfig::read(env),
    }
}

fn read_sms(env: &mut EnvReader) -> SmsConfig {
    let base_url =
        env.optional_string("HERALD_SMS_BASE_URL")
            .and_then(|raw| match Url::parse(&raw) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                Ok(_) => {
                    env.problem("HERALD_SMS_BASE_URL", "must be an http:// or https:// URL");
                    None
                }
                Err(e) => {
                    env.problem("HERALD_SMS_BASE_URL", format!("'{raw}' is not a URL: {e}"));
                    None
                }
            });
    let default = if env.raw("HERALD_SMS_BASE_URL").is_some() {
        Backend::Real
    } else {
        Backend::Sandbox
    };
    let config = SmsConfig {
        backend: backend(env, "HERALD_SMS_PROVIDER", "http", default),
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
    config
}

/// The names listed in a channel's `HERALD_<CHANNEL>_PROVIDERS`, each problem recorded.
fn read_extra_names(env: &mut EnvReader, channel: Channel) -> Vec<String> {
    let Some(key) = names::extras_variable(channel) else {
        return Vec::new();
    };
    match env.raw(key).map(|raw| names::parse_names(channel, raw)) {
        None => Vec::new(),
        Some(Ok(names)) => names,
        Some(Err(problems)) => {
            for problem in problems {
                env.problem(key, problem);
            }
            Vec::new()
        }
    }
}

/// A required per-provider variable; its absence is recorded as a problem naming the provider.
fn required(env: &mut EnvReader, key: &str, list: &str, name: &str) -> Option<String> {
    let value = env.optional_string(key);
    if value.is_none() {
        env.problem(
            key,
            format!("is required for the provider '{name}' of {list}"),
        );
    }
    value
}

/// An http(s) URL, or a problem.
fn read_url(env: &mut EnvReader, key: &str) -> Option<Url> {
    let raw = env.optional_string(key)?;
    match Url::parse(&raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(_) => {
            env.problem(key, "must be an http:// or https:// URL");
            None
        }
        Err(e) => {
            env.problem(key, format!("'{raw}' is not a URL: {e}"));
            None
        }
    }
}

fn read_email_extras(env: &mut EnvReader, from: &Mailbox) -> Vec<NamedProvider<EmailConfig>> {
    let list = "HERALD_EMAIL_PROVIDERS";
    read_extra_names(env, Channel::Email)
        .into_iter()
        .map(|name| {
            let prefix = format!("HERALD_SMTP_{}_", env_segment(&name));
            let host = required(env, &format!("{prefix}HOST"), list, &name).unwrap_or_default();
            let config = EmailConfig {
                backend: Backend::Real,
                smtp: SmtpConfig::read_relay(env, &prefix, host, from),
            };
            NamedProvider { name, config }
        })
        .collect()
}

fn read_sms_extras(env: &mut EnvReader) -> Vec<NamedProvider<SmsConfig>> {
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
                base_url: read_url(env, &key("BASE_URL")),
                account_id: required(env, &key("ACCOUNT_ID"), list, &name),
                auth_token: required(env, &key("AUTH_TOKEN"), list, &name).map(Secret::new),
                from: required(env, &key("FROM"), list, &name),
            };
            NamedProvider { name, config }
        })
        .collect()
}

fn read_webhook(env: &mut EnvReader) -> WebhookConfig {
    let config = WebhookConfig {
        backend: backend(env, "HERALD_WEBHOOK_PROVIDER", "http", Backend::Real),
        secret: Secret::new(env.string("HERALD_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET)),
        connect_timeout: env.millis("HERALD_WEBHOOK_CONNECT_TIMEOUT_MS", Duration::from_secs(3)),
    };
    if config.connect_timeout.is_zero() {
        env.problem(
            "HERALD_WEBHOOK_CONNECT_TIMEOUT_MS",
            "must be greater than 0",
        );
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)], lane: Option<Lane>) -> Result<Config, ConfigError> {
        let mut env = EnvReader::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let config = Config::read(&mut env, lane);
        env.finish().map(|()| config)
    }

    #[test]
    fn defaults_follow_the_lane() {
        let config = read(&[("HERALD_LANE", "critical")], None).expect("valid");
        assert_eq!(config.lane, Lane::Critical);
        assert_eq!(config.port, 3010);
        assert_eq!(config.send_timeout, Duration::from_secs(10));
        assert_eq!(config.lease(), Duration::from_secs(15));
        assert_eq!(config.queue_depth, 16);
        assert_eq!(config.email.backend, Backend::Real);
        assert_eq!(
            config.sms.backend,
            Backend::Sandbox,
            "no SMS API configured"
        );
        assert_eq!(config.webhook.backend, Backend::Real);
        assert_eq!(config.group_id(), "herald-dispatch-critical");
        assert!(config
            .warnings()
            .iter()
            .any(|w| w.contains("HERALD_WEBHOOK_SECRET")));
        let retry = read(&[], Some(Lane::Retry)).expect("valid");
        assert_eq!(retry.port, 3012);
    }

    #[test]
    fn every_bad_field_is_listed() {
        let err = read(
            &[
                ("HERALD_LANE", "bulk"),
                ("HERALD_SEND_TIMEOUT_MS", "0"),
                ("HERALD_DISPATCH_QUEUE_DEPTH", "0"),
                ("HERALD_SMTP_TLS", "ssl"),
                ("HERALD_SMTP_FROM", "not an address"),
                ("HERALD_SMS_PROVIDER", "http"),
                ("HERALD_WEBHOOK_PROVIDER", "carrier-pigeon"),
            ],
            None,
        )
        .expect_err("all bad");
        let text = err.to_string();
        for key in [
            "HERALD_LANE",
            "HERALD_SEND_TIMEOUT_MS",
            "HERALD_DISPATCH_QUEUE_DEPTH",
            "HERALD_SMTP_TLS",
            "HERALD_SMTP_FROM",
            "HERALD_SMS_BASE_URL",
            "HERALD_SMS_ACCOUNT_ID",
            "HERALD_SMS_AUTH_TOKEN",
            "HERALD_SMS_FROM",
            "HERALD_WEBHOOK_PROVIDER",
        ] {
            assert!(text.contains(key), "{key} missing from: {text}");
        }
    }

    #[test]
    fn named_providers_are_read_with_their_own_variables() {
        let config = read(
            &[
                ("HERALD_EMAIL_PROVIDERS", "eu-relay"),
                ("HERALD_SMTP_EU_RELAY_HOST", "smtp.eu.example"),
                ("HERALD_SMTP_EU_RELAY_TLS", "starttls"),
                ("HERALD_SMTP_EU_RELAY_USERNAME", "mailer"),
                ("HERALD_SMTP_EU_RELAY_PASSWORD", "relay-s3cret"),
                ("HERALD_SMS_PROVIDERS", "backup"),
                ("HERALD_SMS_BACKUP_BASE_URL", "http://127.0.0.1:9/api"),
                ("HERALD_SMS_BACKUP_ACCOUNT_ID", "AC2"),
                ("HERALD_SMS_BACKUP_AUTH_TOKEN", "backup-s3cret"),
                ("HERALD_SMS_BACKUP_FROM", "+15550002222"),
            ],
            Some(Lane::Default),
        )
        .expect("valid");
        let relay = &config.email_extras[0];
        assert_eq!(relay.name, "eu-relay");
        assert_eq!(relay.config.smtp.host, "smtp.eu.example");
        assert_eq!(relay.config.smtp.port, 587, "the STARTTLS port by default");
        assert_eq!(relay.config.smtp.from, config.email.smtp.from);
        let backup = &config.sms_extras[0];
        assert_eq!(backup.name, "backup");
        assert_eq!(backup.config.account_id.as_deref(), Some("AC2"));
        let shown = format!("{config:?}");
        for secret in ["relay-s3cret", "backup-s3cret"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }

    #[test]
    fn bad_named_providers_are_all_listed() {
        let err = read(
            &[
                ("HERALD_EMAIL_PROVIDERS", "smtp,relay"),
                ("HERALD_SMS_PROVIDERS", "backup,Bad Name"),
                ("HERALD_SMS_BACKUP_BASE_URL", "ftp://x"),
            ],
            Some(Lane::Default),
        )
        .expect_err("all bad");
        let text = err.to_string();
        for expected in [
            "HERALD_EMAIL_PROVIDERS: 'smtp' is a built-in email provider",
            "HERALD_SMS_PROVIDERS: 'bad name' is not a provider name",
        ] {
            assert!(text.contains(expected), "{expected} missing from: {text}");
        }
        // One bad name spoils the list, so the good ones' variables are not read either.
        assert!(!text.contains("HERALD_SMTP_RELAY_HOST"), "{text}");
        let err = read(
            &[
                ("HERALD_SMS_PROVIDERS", "backup"),
                ("HERALD_SMS_BACKUP_BASE_URL", "ftp://x"),
            ],
            Some(Lane::Default),
        )
        .expect_err("incomplete");
        let text = err.to_string();
        for key in [
            "HERALD_SMS_BACKUP_BASE_URL: must be an http",
            "HERALD_SMS_BACKUP_ACCOUNT_ID: is required for the provider 'backup' of HERALD_SMS_PROVIDERS",
            "HERALD_SMS_BACKUP_AUTH_TOKEN",
            "HERALD_SMS_BACKUP_FROM",
        ] {
            assert!(text.contains(key), "{key} missing from: {text}");
        }
    }

    #[test]
    fn a_base_url_selects_the_http_sms_provider_and_secrets_stay_hidden() {
        let config = read(
            &[
                ("HERALD_SMS_BASE_URL", "http://127.0.0.1:9/2010-04-01"),
                ("HERALD_SMS_ACCOUNT_ID", "AC1"),
                ("HERALD_SMS_AUTH_TOKEN", "tok-s3cret"),
                ("HERALD_SMS_FROM", "+15550001111"),
                ("HERALD_SMTP_USERNAME", "mailer"),
                ("HERALD_SMTP_PASSWORD", "smtp-s3cret"),
                ("HERALD_WEBHOOK_SECRET", "hook-s3cret"),
            ],
            Some(Lane::Default),
        )
        .expect("valid");
        assert_eq!(config.sms.backend, Backend::Real);
        let shown = format!("{config:?}");
        for secret in ["tok-s3cret", "smtp-s3cret", "hook-s3cret"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(config.warnings().iter().all(|w| !w.contains("SECRET")));
    }
}
