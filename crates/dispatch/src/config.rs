//! The dispatcher's configuration: one [`Config`] read from the environment, with every bad field listed at once.
//!
//! Each provider's own settings live beside it in `provider/` (`EmailConfig` in `provider/email.rs`, ...); this
//! module assembles them with the service's.

use std::time::Duration;

use herald_domain::Lane;
use herald_platform::kafka::watch::WatchConfig;
use herald_platform::service::ServiceConfig;
use herald_platform::{EnvReader, KafkaConfig, Listen, MongoConfig, TelemetryConfig};

pub use crate::provider::settings::{Backend, NamedProvider, Secret};
pub use crate::provider::{
    EmailApi, EmailConfig, MailgunConfig, MessageBirdConfig, PushBackend, PushConfig,
    SendGridConfig, SmsApi, SmsConfig, WebhookConfig, DEV_WEBHOOK_SECRET,
};

/// The service name: Kafka client id, MongoDB app name, consumer group stem.
pub const SERVICE: &str = "herald-dispatch";

/// Everything `herald-dispatch` reads at startup.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--lane` / `HERALD_LANE`: the lane this process consumes: `critical`, `default` or `retry`. Required.
    pub lane: Lane,
    /// `HERALD_DISPATCH_HOST` and `HERALD_DISPATCH_PORT`: the health/ready/metrics server, see [`Listen`].
    /// Default `127.0.0.1` (use `0.0.0.0` in a container) and port 3010 for `critical`, 3011 for `default`, 3012
    /// for `retry`, so the three lanes run side by side on one host.
    pub listen: Listen,
    /// `HERALD_SEND_TIMEOUT_MS`: the longest one send may take, in milliseconds, connection included. Default
    /// 10000. A claim's lease is this plus 5 s.
    pub send_timeout: Duration,
    /// `HERALD_DISPATCH_QUEUE_DEPTH`: messages queued for each assigned partition's worker. Default 16. At most
    /// `partitions × (depth + concurrency + 1)` messages are in flight (see `lane`).
    pub queue_depth: usize,
    /// `HERALD_DISPATCH_CONCURRENCY`: most messages each partition's worker has in hand at once (one key's
    /// messages still go one after the other). Default 8, at most 256; 1 handles a partition sequentially.
    pub concurrency: usize,
    pub email: EmailConfig,
    pub sms: SmsConfig,
    pub webhook: WebhookConfig,
    pub push: PushConfig,
    /// `HERALD_SENDGRID_*`, when `HERALD_SENDGRID_API_KEY` is set: SendGrid is then an email provider of this
    /// dispatcher whichever sends first.
    pub sendgrid: Option<SendGridConfig>,
    /// `HERALD_MAILGUN_*`, when `HERALD_MAILGUN_API_KEY` is set: likewise for Mailgun.
    pub mailgun: Option<MailgunConfig>,
    /// `HERALD_MESSAGEBIRD_*`, when `HERALD_MESSAGEBIRD_ACCESS_KEY` is set: an SMS provider of this dispatcher.
    pub messagebird: Option<MessageBirdConfig>,
    /// `HERALD_EMAIL_PROVIDERS`: more SMTP relays, by name (comma-separated; default none), each configured by
    /// `HERALD_SMTP_<NAME>_HOST` (required), `_PORT` (default 25, 587 with STARTTLS, 465 with TLS), `_TLS`,
    /// `_USERNAME`, `_PASSWORD` and `_FROM` (default `HERALD_SMTP_FROM`), `<NAME>` upper-cased with `-` as `_`.
    pub email_extras: Vec<NamedProvider<EmailConfig>>,
    /// `HERALD_SMS_PROVIDERS`: more SMS APIs, by name (comma-separated; default none), each configured by
    /// `HERALD_SMS_<NAME>_BASE_URL`, `_ACCOUNT_ID`, `_AUTH_TOKEN` and `_FROM`, all required.
    pub sms_extras: Vec<NamedProvider<SmsConfig>>,
    /// `KAFKA_BROKERS`, `HERALD_TOPIC_PREFIX` and the other Kafka settings: see [`KafkaConfig`].
    pub kafka: KafkaConfig,
    /// `HERALD_KAFKA_CONSUMER_*`: when the lane consumer counts as stuck and is rebuilt.
    pub watch: WatchConfig,
    /// `MONGODB_URI` and `MONGODB_DATABASE`: see [`MongoConfig`].
    pub mongo: MongoConfig,
    /// `HERALD_LOG_FORMAT`, `RUST_LOG` and the OpenTelemetry exporter's variables: see [`TelemetryConfig`].
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

impl ServiceConfig for Config {
    /// The lane comes from `HERALD_LANE` (the binary sets it from `--lane`).
    fn read(env: &mut EnvReader) -> Self {
        // The inherent `Config::read`, which takes the lane too.
        Config::read(env, None)
    }

    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

/// Largest accepted `HERALD_DISPATCH_QUEUE_DEPTH`.
const MAX_QUEUE_DEPTH: usize = 10_000;
/// Largest `HERALD_DISPATCH_CONCURRENCY`.
const MAX_CONCURRENCY: usize = 256;

impl Config {
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
        let send_timeout = env.positive_millis("HERALD_SEND_TIMEOUT_MS", Duration::from_secs(10));
        let queue_depth = env.parse("HERALD_DISPATCH_QUEUE_DEPTH", 16usize);
        if !(1..=MAX_QUEUE_DEPTH).contains(&queue_depth) {
            env.problem(
                "HERALD_DISPATCH_QUEUE_DEPTH",
                format!("must be between 1 and {MAX_QUEUE_DEPTH}"),
            );
        }
        let concurrency = env.parse("HERALD_DISPATCH_CONCURRENCY", 8usize);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            env.problem(
                "HERALD_DISPATCH_CONCURRENCY",
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            );
        }
        let mut config = Self {
            lane,
            listen: Listen::read(
                env,
                ["HERALD_DISPATCH_HOST", "HERALD_DISPATCH_PORT"],
                default_port(lane),
            ),
            send_timeout,
            queue_depth,
            concurrency,
            email: EmailConfig::read(env),
            sms: SmsConfig::read(env),
            webhook: WebhookConfig::read(env),
            push: PushConfig::read(env),
            sendgrid: SendGridConfig::read(env),
            mailgun: MailgunConfig::read(env),
            messagebird: MessageBirdConfig::read(env),
            email_extras: Vec::new(),
            sms_extras: Vec::new(),
            kafka: KafkaConfig::read(env, SERVICE),
            watch: WatchConfig::read(env),
            mongo: MongoConfig::read(env),
            telemetry: TelemetryConfig::read(env),
        };
        config.email_extras = EmailConfig::read_extras(env, &config.email.smtp.from);
        config.sms_extras = SmsConfig::read_extras(env);
        match config.email.api {
            Some(EmailApi::SendGrid) if config.sendgrid.is_none() => env.problem(
                "HERALD_SENDGRID_API_KEY",
                "is required when HERALD_EMAIL_PROVIDER is sendgrid",
            ),
            Some(EmailApi::Mailgun) if env.raw("HERALD_MAILGUN_API_KEY").is_none() => env.problem(
                "HERALD_MAILGUN_API_KEY",
                "is required when HERALD_EMAIL_PROVIDER is mailgun",
            ),
            _ => {}
        }
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
            (
                "push",
                if self.push.backend == PushBackend::Sandbox {
                    Backend::Sandbox
                } else {
                    Backend::Real
                },
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        pairs: &[(&str, &str)],
        lane: Option<Lane>,
    ) -> Result<Config, herald_platform::ConfigError> {
        let mut env = EnvReader::from_pairs(pairs);
        let config = Config::read(&mut env, lane);
        env.finish().map(|()| config)
    }

    #[test]
    fn defaults_follow_the_lane() {
        let config = read(&[("HERALD_LANE", "critical")], None).expect("valid");
        assert_eq!(config.lane, Lane::Critical);
        assert_eq!(config.listen.port, 3010);
        assert_eq!(config.send_timeout, Duration::from_secs(10));
        assert_eq!(config.lease(), Duration::from_secs(15));
        assert_eq!(config.queue_depth, 16);
        assert_eq!(config.concurrency, 8);
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
        assert_eq!(retry.listen.port, 3012);
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
    fn http_email_and_messagebird_are_read_and_required_when_chosen() {
        let config = read(
            &[
                ("HERALD_EMAIL_PROVIDER", "SendGrid"),
                ("HERALD_SENDGRID_API_KEY", "SG.s3cret"),
                ("HERALD_MAILGUN_API_KEY", "mg-s3cret"),
                ("HERALD_MAILGUN_DOMAIN", "mg.example.com"),
                ("HERALD_SMS_PROVIDER", "messagebird"),
                ("HERALD_MESSAGEBIRD_ACCESS_KEY", "mb-s3cret"),
                ("HERALD_MESSAGEBIRD_ORIGINATOR", "Herald"),
            ],
            Some(Lane::Default),
        )
        .expect("valid");
        assert_eq!(config.email.api, Some(EmailApi::SendGrid));
        assert_eq!(config.email.backend, Backend::Real);
        assert_eq!(
            config.mailgun.as_ref().map(|m| m.domain.as_str()),
            Some("mg.example.com")
        );
        assert_eq!(config.sms.api, SmsApi::MessageBird);
        assert_eq!(
            config.sms.backend,
            Backend::Sandbox,
            "no Twilio-shaped API configured"
        );
        let shown = format!("{config:?}");
        for secret in ["SG.s3cret", "mg-s3cret", "mb-s3cret"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        let err = read(
            &[
                ("HERALD_EMAIL_PROVIDER", "mailgun"),
                ("HERALD_SMS_PROVIDER", "messagebird"),
                ("HERALD_SENDGRID_API_KEY", "SG.x"),
                ("HERALD_SENDGRID_BASE_URL", "ftp://x"),
            ],
            Some(Lane::Default),
        )
        .expect_err("incomplete");
        let text = err.to_string();
        for key in [
            "HERALD_MAILGUN_API_KEY: is required when HERALD_EMAIL_PROVIDER is mailgun",
            "HERALD_MESSAGEBIRD_ACCESS_KEY: is required when HERALD_SMS_PROVIDER is messagebird",
            "HERALD_SENDGRID_BASE_URL: must be an http",
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
