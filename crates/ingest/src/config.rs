//! The service's configuration, read from environment variables with every bad field reported at once.

use std::sync::Arc;
use std::time::Duration;

use herald_domain::provider::KnownProviders;
use herald_domain::template::Templates;

use herald_domain::request::{Region, Rules};
use herald_platform::http::rate_limit::RateLimitConfig;
use herald_platform::http::HttpConfig;
use herald_platform::lanes::Sweep;
use herald_platform::service::ServiceConfig;
use herald_platform::{EnvReader, KafkaConfig, Listen, MongoConfig, TelemetryConfig};

/// Everything `herald-ingest` can be told. See `.env.example` for the variables.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HERALD_INGEST_HOST` and `HERALD_INGEST_PORT`: where the HTTP server listens, see [`Listen`]. Default
    /// `127.0.0.1:3000`.
    pub listen: Listen,
    /// `HERALD_MAX_BODY_BYTES`: largest accepted request body, in bytes; larger bodies get 413.
    /// Default 262144 (256 KiB).
    pub max_body_bytes: usize,
    /// `HERALD_DEFAULT_REGION`: ISO 3166-1 alpha-2 region of SMS numbers written without `+` (national form).
    /// Default `US`.
    pub default_region: Region,
    /// `HERALD_SWEEP_INTERVAL_MS` and `HERALD_SWEEP_AGE_MS`: the outbox sweeper's pace, see [`Sweep`].
    pub sweep: Sweep,
    /// `HERALD_REQUEST_TIMEOUT_MS`: bound on handling one request, in milliseconds; past it the answer is 503.
    /// Default 10000.
    pub request_timeout: Duration,
    /// `KAFKA_*` and `HERALD_TOPIC_PREFIX`: see [`KafkaConfig`]. The client id defaults to `herald-ingest`.
    pub kafka: KafkaConfig,
    /// `MONGODB_URI` and `MONGODB_DATABASE`: see [`MongoConfig`].
    pub mongo: MongoConfig,
    /// `HERALD_LOG_FORMAT` and `RUST_LOG`: see [`TelemetryConfig`].
    pub telemetry: TelemetryConfig,
    /// `HERALD_AUTH`, `HERALD_API_KEYS`, `HERALD_API_KEYS_FILE`, `HERALD_CORS_ORIGINS`: see [`HttpConfig`].
    pub http: HttpConfig,
    /// `HERALD_RATE_LIMIT_PER_SEC` and `HERALD_RATE_LIMIT_BURST`: see [`RateLimitConfig`].
    pub rate_limit: RateLimitConfig,
    /// The providers a `POST /event` may name in `provider`, per channel: those the dispatchers configured by
    /// the same provider variables have (`HERALD_SENDGRID_API_KEY`, `HERALD_SMS_BASE_URL`, ...,
    /// `HERALD_EMAIL_PROVIDERS`, `HERALD_SMS_PROVIDERS`; only their presence is read here), and the sandbox.
    pub providers: Arc<KnownProviders>,
    /// `HERALD_TEMPLATES_DIR`: the message templates by event type (`herald_domain::template`); default none.
    /// A bad template keeps ingest from starting.
    pub templates: Arc<Templates>,
}

impl ServiceConfig for Config {
    /// Reads the configuration, recording every problem in `env`.
    fn read(env: &mut EnvReader) -> Self {
        Self {
            listen: Listen::read(env, ["HERALD_INGEST_HOST", "HERALD_INGEST_PORT"], 3000),
            max_body_bytes: env.positive("HERALD_MAX_BODY_BYTES", 256 * 1024),
            default_region: env.parse("HERALD_DEFAULT_REGION", Region::default()),
            sweep: Sweep::read(env),
            request_timeout: env
                .positive_millis("HERALD_REQUEST_TIMEOUT_MS", Duration::from_secs(10)),
            kafka: KafkaConfig::read(env, "herald-ingest"),
            mongo: MongoConfig::read(env),
            telemetry: TelemetryConfig::read(env),
            http: HttpConfig::read(env),
            rate_limit: RateLimitConfig::read(env),
            providers: Arc::new(herald_platform::templates::read_providers(env)),
            templates: herald_platform::templates::read_templates(env),
        }
    }

    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

impl Config {
    /// The defaults, listening on a free port, with the given Kafka and MongoDB: for tests and embedding.
    pub fn for_test(kafka: KafkaConfig, mongo: MongoConfig) -> Self {
        Self {
            kafka,
            mongo,
            ..Self::read(&mut EnvReader::embedded())
        }
    }

    /// The validation settings this configuration implies.
    pub fn rules(&self) -> Rules {
        Rules {
            default_region: self.default_region,
            providers: Arc::clone(&self.providers),
            templates: Arc::clone(&self.templates),
        }
    }

    /// The provider and template settings of `env` (the variables a dispatcher reads), on top of these: for
    /// tests and embedding, which start from [`Config::for_test`].
    pub fn with_delivery_env(mut self, env: &mut EnvReader) -> Self {
        self.providers = Arc::new(herald_platform::templates::read_providers(env));
        self.templates = herald_platform::templates::read_templates(env);
        self
    }
}

#[cfg(test)]
mod tests {
    //! These read with authentication off: its own checks are tested in herald-platform.

    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = Config::read_pairs_without_auth(&[]).expect("the defaults are valid");
        assert_eq!(
            (config.listen.host.as_str(), config.listen.port),
            ("127.0.0.1", 3000)
        );
        assert_eq!(config.max_body_bytes, 262_144);
        assert_eq!(config.default_region.to_string(), "US");
        assert_eq!(config.sweep.interval, Duration::from_millis(2000));
        assert_eq!(config.sweep.age, Duration::from_millis(5000));
        assert_eq!(config.request_timeout, Duration::from_millis(10_000));
        assert_eq!(config.kafka.client_id, "herald-ingest");
    }

    #[test]
    fn every_bad_variable_is_listed() {
        let bad = [
            ("HERALD_INGEST_PORT", "70000"),
            ("HERALD_MAX_BODY_BYTES", "0"),
            ("HERALD_DEFAULT_REGION", "Atlantis"),
            ("HERALD_SWEEP_INTERVAL_MS", "soon"),
            ("HERALD_REQUEST_TIMEOUT_MS", "0"),
        ];
        let err = Config::read_pairs_without_auth(&bad).expect_err("five bad variables");
        assert_eq!(err.problems.len(), 5, "{err}");
        assert!(err.unnamed(bad.map(|(key, _)| key)).is_empty(), "{err}");
    }

    #[test]
    fn providers_come_from_the_dispatchers_variables_and_templates_from_their_folder() {
        let config = Config::read_pairs_without_auth(&[
            ("HERALD_MAILGUN_API_KEY", "key"),
            ("HERALD_SMS_PROVIDERS", "backup"),
        ])
        .expect("valid");
        assert_eq!(
            config.providers.names(herald_domain::Channel::Email),
            ["mailgun", "sandbox", "smtp"]
        );
        assert_eq!(
            config.providers.names(herald_domain::Channel::Sms),
            ["backup", "sandbox"]
        );
        assert!(config.templates.is_empty());
        let err = Config::read_pairs_without_auth(&[(
            "HERALD_TEMPLATES_DIR",
            "/nonexistent/herald-templates",
        )])
        .expect_err("no such folder");
        assert!(
            err.to_string().contains(
                "HERALD_TEMPLATES_DIR: cannot read the folder /nonexistent/herald-templates"
            ),
            "{err}"
        );
    }
}
