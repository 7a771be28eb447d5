//! The service's configuration, read from environment variables with every bad field reported at once.

use std::time::Duration;

use herald_platform::http::HttpConfig;
use herald_platform::kafka::watch::WatchConfig;
use herald_platform::service::ServiceConfig;
use herald_platform::{EnvReader, KafkaConfig, Listen, MongoConfig, TelemetryConfig};
use url::Url;

use crate::logs::slices::Slicing;
use crate::mask::Masker;

/// Everything `herald-query` can be told. See `.env.example` for the variables.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HERALD_QUERY_HOST` and `HERALD_QUERY_PORT`: where the HTTP server listens, see [`Listen`]. Default
    /// `127.0.0.1:3001`.
    pub listen: Listen,
    /// `HERALD_QUERY_MASK_FIELDS`: comma-separated dotted paths under `payload` or `metadata`
    /// (`payload.to,payload.phoneNumber`) whose values every answer shows as `"***"`. Default empty: nothing
    /// masked.
    pub mask: Masker,
    /// `HERALD_REQUEST_TIMEOUT_MS`: bound on handling one request, in milliseconds; past it the answer is 503 and
    /// MongoDB is told to stop the query (`maxTimeMS`). Default 10000.
    pub request_timeout: Duration,
    /// `MONGODB_URI` and `MONGODB_DATABASE`: see [`MongoConfig`].
    pub mongo: MongoConfig,
    /// `KAFKA_BROKERS`, `HERALD_TOPIC_PREFIX` and the other Kafka settings: see [`KafkaConfig`]. The stats
    /// consumer (the status topic) and `GET /api/lanes` (the lanes' consumer lag) use Kafka.
    pub kafka: KafkaConfig,
    /// `HERALD_QUERY_STATS_CONSUMER`: whether this process keeps the hourly stats buckets from the status topic
    /// (`true`/`false`). Default true; one process per installation is enough, more share the work (one group).
    /// [`Config::for_test`] turns it off.
    pub stats_consumer: bool,
    /// `HERALD_KAFKA_CONSUMER_STALL_MS`, `HERALD_KAFKA_CONSUMER_CHECK_MS`: how the stats consumer watches itself.
    pub watch: WatchConfig,
    /// `HERALD_QUERY_STATS_IN_FLIGHT_MAX_AGE_MS`: how old, in milliseconds, the count of the events in flight that
    /// `GET /api/stats` answers with may be before it is taken again (in the background, while the answer is
    /// given from the last one). Default 2000; 0 counts them for every answer.
    pub stats_in_flight_max_age: Duration,
    /// `HERALD_QUERY_REPLAY_URL`: where herald-replay answers, for the console's replays (which it forwards with
    /// the signed-in key). Default `http://127.0.0.1:3005`.
    pub replay_url: Url,
    /// `HERALD_QUERY_SLICED_LISTS`: whether list pages are read one hour or day of creation at a time (`on`), in
    /// one query (`off`), or sliced when the server is FerretDB (`auto`, the default). See [`crate::logs::slices`].
    pub slicing: Slicing,
    /// `HERALD_LOG_FORMAT` and `RUST_LOG`: see [`TelemetryConfig`].
    pub telemetry: TelemetryConfig,
    /// `HERALD_AUTH`, `HERALD_API_KEYS`, `HERALD_API_KEYS_FILE`, `HERALD_CORS_ORIGINS`: see [`HttpConfig`].
    pub http: HttpConfig,
}

impl ServiceConfig for Config {
    /// Reads the configuration, recording every problem in `env`.
    fn read(env: &mut EnvReader) -> Self {
        Self {
            listen: Listen::read(env, ["HERALD_QUERY_HOST", "HERALD_QUERY_PORT"], 3001),
            mask: env.parse("HERALD_QUERY_MASK_FIELDS", Masker::default()),
            request_timeout: env
                .positive_millis("HERALD_REQUEST_TIMEOUT_MS", Duration::from_secs(10)),
            mongo: MongoConfig::read(env),
            kafka: KafkaConfig::read(env, "herald-query"),
            stats_consumer: env.flag("HERALD_QUERY_STATS_CONSUMER", true),
            watch: WatchConfig::read(env),
            stats_in_flight_max_age: env.millis(
                "HERALD_QUERY_STATS_IN_FLIGHT_MAX_AGE_MS",
                crate::stats::reader::IN_FLIGHT_MAX_AGE,
            ),
            replay_url: env.parse(
                "HERALD_QUERY_REPLAY_URL",
                Url::parse("http://127.0.0.1:3005").expect("a valid default"),
            ),
            slicing: env.parse("HERALD_QUERY_SLICED_LISTS", Slicing::Auto),
            telemetry: TelemetryConfig::read(env),
            http: HttpConfig::read(env),
        }
    }

    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

impl Config {
    /// The defaults, listening on a free port, with the given MongoDB: for tests and embedding.
    pub fn for_test(mongo: MongoConfig) -> Self {
        Self {
            mongo,
            // A test that counts stats turns it on, with its own topics.
            stats_consumer: false,
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
            ("127.0.0.1", 3001)
        );
        assert!(config.mask.is_empty());
        assert_eq!(config.request_timeout, Duration::from_millis(10_000));
        assert_eq!(config.mongo.database, "herald");
        assert!(config.stats_consumer);
    }

    #[test]
    fn mask_fields_are_read() {
        let config = Config::read_pairs_without_auth(&[(
            "HERALD_QUERY_MASK_FIELDS",
            " payload.to, payload.phoneNumber ,metadata.ip",
        )])
        .expect("valid");
        assert_eq!(
            config.mask.paths(),
            vec!["payload.to", "payload.phoneNumber", "metadata.ip"]
        );
    }

    #[test]
    fn every_bad_variable_is_listed() {
        let bad = [
            ("HERALD_QUERY_PORT", "70000"),
            ("HERALD_QUERY_MASK_FIELDS", "payload.to,userId"),
            ("HERALD_REQUEST_TIMEOUT_MS", "0"),
            ("MONGODB_URI", "postgres://x"),
        ];
        let err = Config::read_pairs_without_auth(&bad).expect_err("four bad variables");
        assert_eq!(err.problems.len(), 4, "{err}");
        assert!(err.unnamed(bad.map(|(key, _)| key)).is_empty(), "{err}");
    }
}
