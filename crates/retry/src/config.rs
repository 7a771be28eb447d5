//! `herald-retry`'s configuration, from the environment.

use std::path::PathBuf;

use herald_domain::provider::KnownProviders;
use herald_domain::retry::RetryRules;
use herald_domain::DEFAULT_DELAY_TIERS_SECS;
use herald_platform::kafka::watch::WatchConfig;
use herald_platform::service::ServiceConfig;
use herald_platform::{EnvReader, KafkaConfig, Listen, MongoConfig, TelemetryConfig};

/// Everything `herald-retry` reads at startup.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HERALD_RETRY_HOST` and `HERALD_RETRY_PORT`: the health server (`/api/health`, `/api/ready`), see
    /// [`Listen`]. Default `127.0.0.1:3020`.
    pub listen: Listen,
    /// `HERALD_RETRY_RULES`: path of a TOML rules file (see the README). Default: none, built-in rules.
    pub rules_path: Option<PathBuf>,
    /// The rules, parsed and validated from `rules_path`. Every provider they name must be known: a built-in
    /// name (`smtp`, `http-sms`, `webhook`, `sandbox`) or one listed in `HERALD_EMAIL_PROVIDERS` /
    /// `HERALD_SMS_PROVIDERS`, read here as the dispatchers read them (default none).
    pub rules: RetryRules,
    /// `HERALD_RETRY_TIERS`: delay tiers in seconds, comma-separated. Default `5,30,120,600,3600`.
    pub tiers_secs: Vec<u64>,
    /// `HERALD_TOPIC_REPLICATION`: replication factor of the delay topics this service creates. Default 1.
    pub topic_replication: i32,
    /// `KAFKA_BROKERS`, `HERALD_TOPIC_PREFIX` and the other Kafka settings: see [`KafkaConfig`].
    pub kafka: KafkaConfig,
    /// `HERALD_KAFKA_CONSUMER_*`: when a consumer counts as stuck and is rebuilt.
    pub watch: WatchConfig,
    /// `MONGODB_URI` and `MONGODB_DATABASE`: see [`MongoConfig`].
    pub mongo: MongoConfig,
    /// `HERALD_LOG_FORMAT`, `RUST_LOG` and the OpenTelemetry exporter's variables: see [`TelemetryConfig`].
    pub telemetry: TelemetryConfig,
}

impl ServiceConfig for Config {
    /// Reads every field, recording each problem in `env` (call `env.finish()` afterwards).
    fn read(env: &mut EnvReader) -> Self {
        let listen = Listen::read(env, ["HERALD_RETRY_HOST", "HERALD_RETRY_PORT"], 3020);
        let (rules_path, rules) = env.file("HERALD_RETRY_RULES", RetryRules::default, |_, text| {
            RetryRules::from_toml(text)
        });
        let rules_path = rules_path.map(PathBuf::from);
        let providers = KnownProviders::new(&herald_platform::templates::read_extra_providers(env));
        for e in rules.unknown_providers(&providers) {
            let path = rules_path
                .as_deref()
                .unwrap_or(std::path::Path::new("rules"));
            env.problem(
                "HERALD_RETRY_RULES",
                format!(
                    "{}: {e} (extra providers are named in HERALD_EMAIL_PROVIDERS / HERALD_SMS_PROVIDERS)",
                    path.display()
                ),
            );
        }
        let tiers_raw = env.string(
            "HERALD_RETRY_TIERS",
            &DEFAULT_DELAY_TIERS_SECS
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        let tiers_secs = match parse_tiers(&tiers_raw) {
            Ok(tiers) => tiers,
            Err(message) => {
                env.problem("HERALD_RETRY_TIERS", message);
                DEFAULT_DELAY_TIERS_SECS.to_vec()
            }
        };
        let topic_replication = env.parse("HERALD_TOPIC_REPLICATION", 1i32);
        let kafka = KafkaConfig::read(env, "herald-retry");
        let watch = WatchConfig::read(env);
        let mongo = MongoConfig::read(env);
        let telemetry = TelemetryConfig::read(env);
        Self {
            listen,
            rules_path,
            rules,
            tiers_secs,
            topic_replication,
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
    /// The defaults, the health server on a free port, with the given Kafka, MongoDB, rules and delay tiers: for
    /// tests and embedding.
    pub fn for_test(
        kafka: KafkaConfig,
        mongo: MongoConfig,
        rules: RetryRules,
        tiers_secs: &[u64],
    ) -> Self {
        Self {
            kafka,
            mongo,
            rules,
            tiers_secs: tiers_secs.to_vec(),
            ..Self::read(&mut EnvReader::embedded())
        }
    }
}

/// `"5,30,120"` to `[5, 30, 120]`: positive, strictly increasing, at least one.
pub fn parse_tiers(raw: &str) -> Result<Vec<u64>, String> {
    let tiers: Vec<u64> = raw
        .split(',')
        .map(|t| {
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("'{t}' is not a whole number of seconds"))
        })
        .collect::<Result<_, _>>()?;
    if tiers.is_empty() || tiers.contains(&0) {
        return Err("give at least one tier, each at least 1 second".into());
    }
    if tiers.windows(2).any(|w| w[0] >= w[1]) {
        return Err("tiers must be strictly increasing".into());
    }
    Ok(tiers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Config, herald_platform::ConfigError> {
        Config::read_all(EnvReader::from_pairs(pairs))
    }

    #[test]
    fn tiers_are_checked() {
        assert_eq!(parse_tiers("5, 30,120"), Ok(vec![5, 30, 120]));
        assert!(parse_tiers("30,5").is_err());
        assert!(parse_tiers("0,5").is_err());
        assert!(parse_tiers("5s").is_err());
    }

    #[test]
    fn rules_may_name_only_known_providers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rules.toml");
        std::fs::write(
            &path,
            "[channels.sms]\nproviders = [\"http-sms\", \"backup\"]\n[channels.email]\nproviders = [\"smtp\", \"relay\"]\n",
        )
        .expect("write rules");
        let path = path.display().to_string();
        let err = read(&[
            ("HERALD_RETRY_RULES", &path),
            ("HERALD_SMS_PROVIDERS", "backup"),
        ])
        .expect_err("relay is unknown");
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(
            err.to_string()
                .contains("channels.email.providers: unknown provider 'relay', expected one of: smtp, sendgrid, mailgun, sandbox"),
            "{err}"
        );
        let err = read(&[("HERALD_RETRY_RULES", &path), ("HERALD_SMS_PROVIDERS", "")])
            .expect_err("backup and relay are unknown");
        assert_eq!(err.problems.len(), 2, "{err}");
        let config = read(&[
            ("HERALD_RETRY_RULES", &path),
            ("HERALD_SMS_PROVIDERS", "backup"),
            ("HERALD_EMAIL_PROVIDERS", "relay"),
        ])
        .expect("every provider is known");
        assert!(config.rules_path.is_some());
    }

    #[test]
    fn a_bad_rules_file_and_bad_tiers_are_reported_together() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rules.toml");
        std::fs::write(&path, "[default]\nmax_attempts = 0\n").expect("write rules");
        let err = read(&[
            ("HERALD_RETRY_RULES", &path.display().to_string()),
            ("HERALD_RETRY_TIERS", "9,3"),
        ])
        .expect_err("two problems");
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.to_string().contains("default.max_attempts"), "{err}");
    }
}
