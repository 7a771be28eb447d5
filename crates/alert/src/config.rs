//! `herald-alert`'s configuration, from the environment, with every bad field listed at once.

use std::time::Duration;

use herald_platform::kafka::watch::WatchConfig;
use herald_platform::service::ServiceConfig;
use herald_platform::smtp::SmtpConfig;
use herald_platform::{EnvReader, KafkaConfig, Listen, MongoConfig, TelemetryConfig};
use url::Url;

use crate::rules::{self, Rules};

/// The service name: Kafka client id, MongoDB app name, consumer group.
pub const SERVICE: &str = "herald-alert";

/// Everything `herald-alert` reads at startup.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HERALD_ALERT_HOST` and `HERALD_ALERT_PORT`: the health server (`/api/health`, `/api/ready`), see
    /// [`Listen`]. Default `127.0.0.1:3030`.
    pub listen: Listen,
    /// `HERALD_ALERT_RULES`: path of a TOML (or `.json`) rules file. Default: none, the built-in rules.
    pub rules_path: Option<String>,
    /// The rules in force, validated.
    pub rules: Rules,
    /// `HERALD_ALERT_RECIPIENTS`: comma-separated addresses of the built-in rules and of rules naming none.
    /// Default `herald-alerts@localhost`.
    pub recipients: Vec<String>,
    /// `HERALD_QUERY_PUBLIC_URL`: where people reach herald-query, for the links in alerts. Default
    /// `http://localhost:3001`.
    pub query_url: Url,
    /// `HERALD_ALERT_SWEEP_INTERVAL_MS`: how often pending alert emails are looked for. Default 2000.
    pub sweep_interval: Duration,
    /// `HERALD_ALERT_SEND_TIMEOUT_MS`: bound on each SMTP command. Default 10000.
    pub send_timeout: Duration,
    /// `HERALD_ALERT_SEND_BACKOFF_CAP_MS`: longest wait between two tries of an email (it doubles from 1 s).
    /// Default 60000.
    pub send_backoff_cap: Duration,
    /// `HERALD_ALERT_SEND_ATTEMPTS`: tries of an email before it is marked failed. Default 100.
    pub send_attempts: u32,
    /// `HERALD_SMTP_*`: the mail server (see the README).
    pub smtp: SmtpConfig,
    /// `KAFKA_BROKERS`, `HERALD_TOPIC_PREFIX` and the other Kafka settings: see [`KafkaConfig`].
    pub kafka: KafkaConfig,
    /// `HERALD_KAFKA_CONSUMER_*`: when the status consumer counts as stuck and is rebuilt.
    pub watch: WatchConfig,
    /// `MONGODB_URI` and `MONGODB_DATABASE`: see [`MongoConfig`].
    pub mongo: MongoConfig,
    /// `HERALD_LOG_FORMAT`, `RUST_LOG` and the OpenTelemetry exporter's variables: see [`TelemetryConfig`].
    pub telemetry: TelemetryConfig,
}

impl ServiceConfig for Config {
    /// Reads every field, recording each problem in `env` (call `env.finish()` afterwards).
    fn read(env: &mut EnvReader) -> Self {
        let listen = Listen::read(env, ["HERALD_ALERT_HOST", "HERALD_ALERT_PORT"], 3030);
        let recipients: Vec<String> = env
            .string("HERALD_ALERT_RECIPIENTS", "herald-alerts@localhost")
            .split(',')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        if let Err(e) = rules::check_recipients(&recipients) {
            env.problem("HERALD_ALERT_RECIPIENTS", e);
        }
        let (rules_path, rules) = env.file(
            "HERALD_ALERT_RULES",
            || Rules::builtin(&recipients),
            |path, text| Rules::from_file_text(path, text, &recipients),
        );
        let query_raw = env.string("HERALD_QUERY_PUBLIC_URL", "http://localhost:3001");
        let query_url = match Url::parse(&query_raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            _ => {
                env.problem(
                    "HERALD_QUERY_PUBLIC_URL",
                    format!("'{query_raw}' is not an http:// or https:// URL"),
                );
                Url::parse("http://localhost:3001").expect("a valid URL")
            }
        };
        let sweep_interval =
            env.positive_millis("HERALD_ALERT_SWEEP_INTERVAL_MS", Duration::from_secs(2));
        let send_timeout =
            env.positive_millis("HERALD_ALERT_SEND_TIMEOUT_MS", Duration::from_secs(10));
        let send_backoff_cap =
            env.positive_millis("HERALD_ALERT_SEND_BACKOFF_CAP_MS", Duration::from_secs(60));
        let send_attempts = env.parse("HERALD_ALERT_SEND_ATTEMPTS", 100u32);
        if send_attempts == 0 {
            env.problem("HERALD_ALERT_SEND_ATTEMPTS", "must be 1 or more");
        }
        let smtp = SmtpConfig::read(env);
        let kafka = KafkaConfig::read(env, SERVICE);
        let watch = WatchConfig::read(env);
        let mongo = MongoConfig::read(env);
        let telemetry = TelemetryConfig::read(env);
        Self {
            listen,
            rules_path,
            rules,
            recipients,
            query_url,
            sweep_interval,
            send_timeout,
            send_backoff_cap,
            send_attempts,
            smtp,
            kafka,
            watch,
            mongo,
            telemetry,
        }
    }

    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

impl Config {
    /// The consumer group under the installation's prefix.
    pub fn group_id(&self) -> String {
        format!("{}{SERVICE}", self.kafka.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Config, herald_platform::ConfigError> {
        Config::read_all(EnvReader::from_pairs(pairs))
    }

    #[test]
    fn defaults() {
        let config = read(&[]).expect("valid");
        assert_eq!(config.listen.port, 3030);
        assert_eq!(config.rules.all().len(), 3);
        assert_eq!(config.recipients, ["herald-alerts@localhost"]);
        assert_eq!(config.query_url.as_str(), "http://localhost:3001/");
        assert_eq!(config.group_id(), "herald-alert");
    }

    #[test]
    fn every_bad_field_is_listed_with_the_rules_file_problems() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rules.toml");
        std::fs::write(
            &path,
            "[[rules]]\nname = \"x\"\nthreshold = 0\nwindow = \"5m\"\ncooldown = \"5m\"\n",
        )
        .expect("write rules");
        let err = read(&[
            ("HERALD_ALERT_RULES", &path.display().to_string()),
            ("HERALD_ALERT_RECIPIENTS", "nobody"),
            ("HERALD_QUERY_PUBLIC_URL", "ftp://x"),
            ("HERALD_ALERT_SWEEP_INTERVAL_MS", "0"),
            ("HERALD_ALERT_PORT", "eighty"),
            ("HERALD_SMTP_TLS", "ssl"),
        ])
        .expect_err("all bad");
        let text = err.to_string();
        for key in [
            "HERALD_ALERT_RULES",
            "threshold",
            "HERALD_ALERT_RECIPIENTS",
            "HERALD_QUERY_PUBLIC_URL",
            "HERALD_ALERT_SWEEP_INTERVAL_MS",
            "HERALD_ALERT_PORT",
            "HERALD_SMTP_TLS",
        ] {
            assert!(text.contains(key), "{key} missing from: {text}");
        }
    }
}
