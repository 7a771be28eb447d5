//! The service's configuration, read from environment variables with every bad field reported at once.

use std::time::Duration;

use herald_platform::http::HttpConfig;
use herald_platform::lanes::Sweep;
use herald_platform::service::ServiceConfig;
use herald_platform::store::retention::{
    Retention, DEFAULT_DLQ_RETENTION_DAYS, DEFAULT_RETENTION_DAYS,
};
use herald_platform::{EnvReader, KafkaConfig, Listen, MongoConfig, TelemetryConfig};

/// Everything `herald-replay` can be told. See `.env.example` for the variables.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HERALD_REPLAY_HOST` and `HERALD_REPLAY_PORT`: where the HTTP server listens, see [`Listen`]. Default
    /// `127.0.0.1:3005`.
    pub listen: Listen,
    /// `HERALD_REPLAY_RATE_PER_SEC`: most dead letters put back on the lanes per second, across every replay
    /// this process runs, so that a large replay does not swamp the dispatchers. Default 200.
    pub rate_per_sec: u32,
    /// `HERALD_REQUEST_TIMEOUT_MS`: bound on answering one request, in milliseconds; past it the answer is 503
    /// (a replay that was running goes on in the background). Default 60000, above the 50 s that the largest
    /// replay (10000 events) takes at the default rate.
    pub request_timeout: Duration,
    /// `HERALD_MAX_BODY_BYTES`: largest accepted request body, in bytes; larger bodies get 413. Default 2097152
    /// (2 MiB: room for 10000 event ids of the longest kind).
    pub max_body_bytes: usize,
    /// `KAFKA_*` and `HERALD_TOPIC_PREFIX`: see [`KafkaConfig`]. The client id defaults to `herald-replay`.
    pub kafka: KafkaConfig,
    /// `MONGODB_URI` and `MONGODB_DATABASE`: see [`MongoConfig`].
    pub mongo: MongoConfig,
    /// `HERALD_LOG_FORMAT` and `RUST_LOG`: see [`TelemetryConfig`].
    pub telemetry: TelemetryConfig,
    /// `HERALD_AUTH`, `HERALD_API_KEYS`, `HERALD_API_KEYS_FILE`, `HERALD_CORS_ORIGINS`: see [`HttpConfig`].
    pub http: HttpConfig,
    /// `HERALD_RETENTION_DAYS` (delivered and recorded events, after their last change; default 30) and
    /// `HERALD_DLQ_RETENTION_DAYS` (dead letters, after they were dead-lettered; default 90), in whole days:
    /// herald-replay deletes what is older.
    pub retention: Retention,
    /// `HERALD_SWEEP_INTERVAL_MS` and `HERALD_SWEEP_AGE_MS`: the outbox sweeper's pace, see [`Sweep`]. Replay
    /// sweeps as ingest does, so that a replayed event whose publish failed goes out without ingest running.
    pub sweep: Sweep,
}

impl ServiceConfig for Config {
    /// Reads the configuration, recording every problem in `env`.
    fn read(env: &mut EnvReader) -> Self {
        Self {
            listen: Listen::read(env, ["HERALD_REPLAY_HOST", "HERALD_REPLAY_PORT"], 3005),
            rate_per_sec: env.positive("HERALD_REPLAY_RATE_PER_SEC", 200),
            request_timeout: env
                .positive_millis("HERALD_REQUEST_TIMEOUT_MS", Duration::from_secs(60)),
            max_body_bytes: env.positive("HERALD_MAX_BODY_BYTES", 2 * 1024 * 1024),
            kafka: KafkaConfig::read(env, "herald-replay"),
            mongo: MongoConfig::read(env),
            telemetry: TelemetryConfig::read(env),
            http: HttpConfig::read(env),
            retention: Retention::from_days(
                env.positive("HERALD_RETENTION_DAYS", DEFAULT_RETENTION_DAYS),
                env.positive("HERALD_DLQ_RETENTION_DAYS", DEFAULT_DLQ_RETENTION_DAYS),
            ),
            sweep: Sweep::read(env),
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
            ("127.0.0.1", 3005)
        );
        assert_eq!(config.rate_per_sec, 200);
        assert_eq!(config.request_timeout, Duration::from_secs(60));
        assert_eq!(config.max_body_bytes, 2_097_152);
        assert_eq!(config.kafka.client_id, "herald-replay");
        assert_eq!(config.mongo.database, "herald");
    }

    #[test]
    fn every_bad_variable_is_listed() {
        let bad = [
            ("HERALD_REPLAY_PORT", "-1"),
            ("HERALD_REPLAY_RATE_PER_SEC", "0"),
            ("HERALD_REQUEST_TIMEOUT_MS", "a minute"),
            ("HERALD_MAX_BODY_BYTES", "0"),
            ("MONGODB_URI", "postgres://db"),
        ];
        let err = Config::read_pairs_without_auth(&bad).expect_err("five bad variables");
        assert_eq!(err.problems.len(), 5, "{err}");
        assert!(err.unnamed(bad.map(|(key, _)| key)).is_empty(), "{err}");
    }
}
