//! Configuration from environment variables, validated at startup with every bad field listed at once.
//!
//! Each service builds its own `Config` with an [`EnvReader`]; the pieces every service shares (Kafka, MongoDB,
//! telemetry) are defined here once.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use mongodb::options::{Acknowledgment, ConnectionString, WriteConcern};

mod kafka_security;

pub use kafka_security::{
    KafkaSecurity, SaslCredentials, SaslMechanism, SecurityProtocol, SslFiles,
};

/// Every field that could not be read, so an operator fixes them all in one go.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    /// The `keys` that none of the problems names: what a configuration test of several bad variables checks
    /// is empty.
    pub fn unnamed<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        keys.into_iter()
            .filter(|key| !self.problems.iter().any(|p| p.contains(key)))
            .collect()
    }
}

/// Reads typed values from the environment (or a map, in tests), collecting problems instead of stopping at the
/// first one.
#[derive(Debug)]
pub struct EnvReader {
    vars: HashMap<String, String>,
    problems: Vec<String>,
    /// Whether every [`Listen`] defaults to port 0 ([`EnvReader::embedded`]).
    free_ports: bool,
}

impl Default for EnvReader {
    fn default() -> Self {
        Self::from_env()
    }
}

impl EnvReader {
    /// Reads the process environment.
    pub fn from_env() -> Self {
        Self::from_map(std::env::vars().collect())
    }

    /// Reads a given set of variables (tests, or a service embedded in another process).
    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self {
            vars,
            problems: Vec::new(),
            free_ports: false,
        }
    }

    /// The defaults of a service embedded in another process (tests, the end-to-end harness): no variables,
    /// the HTTP APIs' authentication off (`HERALD_AUTH=off`) and every [`Listen`] on a port the system picks.
    pub fn embedded() -> Self {
        Self {
            free_ports: true,
            ..Self::from_pairs(&[("HERALD_AUTH", "off")])
        }
    }

    /// Reads the given pairs; a later pair wins over an earlier one with the same key (tests: defaults first).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self::from_map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// Sets `key` as if the environment had it: a binary's command-line flag (dispatch's `--lane`) that wins
    /// over the variable of the same meaning.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.vars.insert(key.to_owned(), value.into());
    }

    /// The raw value, if set and not blank.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A string with a default.
    pub fn string(&mut self, key: &str, default: &str) -> String {
        self.raw(key).unwrap_or(default).to_owned()
    }

    /// An optional string.
    pub fn optional_string(&mut self, key: &str) -> Option<String> {
        self.raw(key).map(str::to_owned)
    }

    /// Any `FromStr` value with a default; a value that does not parse is recorded as a problem.
    pub fn parse<T>(&mut self, key: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(key) {
            None => default,
            Some(raw) => match raw.parse() {
                Ok(value) => value,
                Err(e) => {
                    self.problem(key, format!("'{raw}' is not valid: {e}"));
                    default
                }
            },
        }
    }

    /// A duration in milliseconds (`..._MS` variables).
    pub fn millis(&mut self, key: &str, default: Duration) -> Duration {
        let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.parse(key, default_ms))
    }

    /// A whole number that must not be 0 (a count, a size, a rate): 0 is recorded as a problem.
    pub fn positive<T>(&mut self, key: &str, default: T) -> T
    where
        T: FromStr + Default + PartialEq + Clone,
        T::Err: fmt::Display,
    {
        let value = self.parse(key, default.clone());
        if value == T::default() {
            self.problem(key, "must be greater than 0");
            return default;
        }
        value
    }

    /// A duration in milliseconds that must not be 0 (a timeout, an interval): 0 is recorded as a problem.
    pub fn positive_millis(&mut self, key: &str, default: Duration) -> Duration {
        let value = self.millis(key, default);
        if value.is_zero() {
            self.problem(key, "must be greater than 0");
            return default;
        }
        value
    }

    /// A boolean: true/false, 1/0, yes/no, on/off.
    pub fn flag(&mut self, key: &str, default: bool) -> bool {
        match self.raw(key).map(str::to_ascii_lowercase).as_deref() {
            None => default,
            Some("1" | "true" | "yes" | "on") => true,
            Some("0" | "false" | "no" | "off") => false,
            Some(other) => {
                self.problem(key, format!("'{other}' is not a boolean (true/false)"));
                default
            }
        }
    }

    /// The file whose path `key` names, and what `parse` makes of it (given the path and the text); unset, the
    /// path is `None`. A file that cannot be read, or each problem `parse` finds in it, is a problem of `key`
    /// (`cannot read <path>: <error>`, `<path>: <problem>`), and `fallback()` stands in for what it would have
    /// given, as it does when `key` is unset.
    pub fn file<T, P: fmt::Display>(
        &mut self,
        key: &str,
        fallback: impl FnOnce() -> T,
        parse: impl FnOnce(&str, &str) -> Result<T, Vec<P>>,
    ) -> (Option<String>, T) {
        let Some(path) = self.optional_string(key) else {
            return (None, fallback());
        };
        let value = match std::fs::read_to_string(&path) {
            Err(e) => {
                self.problem(key, format!("cannot read {path}: {e}"));
                fallback()
            }
            Ok(text) => parse(&path, &text).unwrap_or_else(|problems| {
                for problem in problems {
                    self.problem(key, format!("{path}: {problem}"));
                }
                fallback()
            }),
        };
        (Some(path), value)
    }

    /// Records a problem found by a service's own cross-field checks.
    pub fn problem(&mut self, key: &str, message: impl fmt::Display) {
        self.problems.push(format!("{key}: {message}"));
    }

    /// Ends reading: `Err` with every problem if there was any.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

/// Where a service listens: its HTTP API, or the health server of a service whose only HTTP is health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// `HERALD_<SERVICE>_HOST`: the address to listen on. Default `127.0.0.1`.
    pub host: String,
    /// `HERALD_<SERVICE>_PORT`: the TCP port; 0 lets the system pick one. Default the service's own (ingest 3000,
    /// query 3001, replay 3005, dispatch 3010 to 3012 by lane, retry 3020, alert 3030), 0 for an
    /// [`EnvReader::embedded`] service.
    pub port: u16,
}

impl Listen {
    /// Reads the variables `[host, port]` (`["HERALD_INGEST_HOST", "HERALD_INGEST_PORT"]`: named whole, so that a
    /// search of the code finds every variable it reads, as the deployment files' test does).
    pub fn read(env: &mut EnvReader, [host, port]: [&str; 2], default_port: u16) -> Self {
        let default_port = if env.free_ports { 0 } else { default_port };
        Self {
            host: env.string(host, "127.0.0.1"),
            port: env.parse(port, default_port),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for production log pipelines.
    Json,
    /// Human-readable lines, for development.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" | "text" => Ok(Self::Pretty),
            _ => Err("expected 'json' or 'pretty'".into()),
        }
    }
}

/// Logging settings shared by every service.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `HERALD_LOG_FORMAT`: `json` or `pretty`. Default `pretty`.
    pub format: LogFormat,
    /// `RUST_LOG`: an `EnvFilter` directive. Default `info`.
    pub filter: String,
    /// `HERALD_SHUTDOWN_TIMEOUT_MS`: after SIGTERM or SIGINT, how long the process may take to finish its work in
    /// flight, store its offsets and exit before it exits anyway (code 1), in milliseconds. Default 30000.
    pub shutdown_timeout: Duration,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_SERVICE_NAME`: where traces are exported, see [`OtlpConfig`].
    /// Default none: no traces are exported.
    pub otlp: Option<OtlpConfig>,
}

impl TelemetryConfig {
    pub fn read(env: &mut EnvReader) -> Self {
        Self {
            format: env.parse("HERALD_LOG_FORMAT", LogFormat::Pretty),
            filter: env.string("RUST_LOG", "info"),
            shutdown_timeout: env
                .positive_millis("HERALD_SHUTDOWN_TIMEOUT_MS", Duration::from_secs(30)),
            otlp: OtlpConfig::read(env),
        }
    }
}

/// Where a service exports its traces (OTLP over HTTP, JSON), named by the standard OpenTelemetry variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's OTLP/HTTP base URL (`http://collector:4318`); spans are
    /// posted to `<endpoint>/v1/traces`. Unset: no exporter.
    pub endpoint: String,
    /// `OTEL_SERVICE_NAME`: the `service.name` of the traces. Default the service's own (`herald-ingest`).
    pub service_name: Option<String>,
}

impl OtlpConfig {
    /// An exporter to `endpoint`, named after the service.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: None,
        }
    }

    /// Reads `OTEL_EXPORTER_OTLP_ENDPOINT` (none when unset) and `OTEL_SERVICE_NAME`.
    pub fn read(env: &mut EnvReader) -> Option<Self> {
        const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
        let service_name = env.optional_string("OTEL_SERVICE_NAME");
        let endpoint = env.optional_string(ENDPOINT)?;
        let is_http = endpoint.parse::<axum::http::Uri>().ok().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
        });
        if !is_http {
            env.problem(
                ENDPOINT,
                format!(
                    "'{endpoint}' is not an http:// or https:// URL like http://collector:4318"
                ),
            );
            return None;
        }
        Some(Self {
            endpoint,
            service_name,
        })
    }

    /// Where spans are posted: the endpoint's `/v1/traces`, as the OTLP/HTTP specification has it.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }
}

/// How to reach Kafka, shared by every producer and consumer.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `KAFKA_BROKERS`: bootstrap servers, comma-separated. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// `HERALD_TOPIC_PREFIX`: prepended to every topic name. Default empty.
    pub topic_prefix: String,
    /// `KAFKA_CLIENT_ID`: client id reported to the brokers. Default the service name.
    pub client_id: String,
    /// `KAFKA_MESSAGE_TIMEOUT_MS`: how long a produce may take, retries included, before it fails. Default 10000.
    pub message_timeout: Duration,
    /// Extra librdkafka properties from `KAFKA_PROPERTY_<NAME>` variables (`KAFKA_PROPERTY_SECURITY_PROTOCOL=ssl`
    /// sets `security.protocol`). Values are secrets as far as logging is concerned. Applied last: they win.
    pub extra: Vec<(String, String)>,
    /// `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*`: TLS and SASL. Default plaintext.
    pub security: KafkaSecurity,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("client_id", &self.client_id)
            .field("message_timeout", &self.message_timeout)
            .field(
                "extra",
                &self
                    .extra
                    .iter()
                    .map(|(k, _)| (k.as_str(), "<redacted>"))
                    .collect::<Vec<_>>(),
            )
            .field("security", &self.security)
            .finish()
    }
}

impl KafkaConfig {
    pub fn read(env: &mut EnvReader, service: &str) -> Self {
        let mut extra: Vec<(String, String)> = env
            .vars
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("KAFKA_PROPERTY_")
                    .map(|name| (name.to_ascii_lowercase().replace('_', "."), v.clone()))
            })
            .collect();
        extra.sort();
        Self {
            brokers: env.string("KAFKA_BROKERS", "127.0.0.1:9092"),
            topic_prefix: env.string("HERALD_TOPIC_PREFIX", ""),
            client_id: env.string("KAFKA_CLIENT_ID", service),
            message_timeout: env
                .positive_millis("KAFKA_MESSAGE_TIMEOUT_MS", Duration::from_secs(10)),
            extra,
            security: KafkaSecurity::read(env),
        }
    }

    /// A config for tests and tools: given brokers and prefix, defaults for the rest.
    pub fn new(brokers: impl Into<String>, topic_prefix: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: topic_prefix.into(),
            client_id: "herald".into(),
            message_timeout: Duration::from_secs(10),
            extra: Vec::new(),
            security: KafkaSecurity::default(),
        }
    }

    /// The topic names under this installation's prefix.
    pub fn topics(&self) -> herald_domain::Topics {
        herald_domain::Topics::new(self.topic_prefix.clone())
    }
}

/// How to reach MongoDB (or a MongoDB-wire server such as FerretDB).
#[derive(Clone)]
pub struct MongoConfig {
    /// `MONGODB_URI`: connection string; credentials and TLS go here. Default `mongodb://127.0.0.1:27017`.
    pub uri: String,
    /// `MONGODB_DATABASE`: database name. Default `herald`.
    pub database: String,
    /// The write concern of every write of every service: `w` from `HERALD_MONGO_WRITE_CONCERN` (`majority` or a
    /// number of nodes, at least 1; default `majority`) and `j` from `HERALD_MONGO_JOURNAL` (default `true`).
    /// A `w` or `journal` in `MONGODB_URI` is used when the variable is unset and is a configuration error when
    /// both are set; a `wtimeoutMS` in the URI is kept.
    pub write_concern: WriteConcern,
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &redact_uri(&self.uri))
            .field("database", &self.database)
            .field("write_concern", &self.write_concern)
            .finish()
    }
}

/// A `HERALD_MONGO_WRITE_CONCERN` that is neither `majority` nor a number of nodes of at least 1.
#[derive(Debug, thiserror::Error)]
#[error("expected 'majority' or a number of nodes of at least 1 (w:0 is unacknowledged: a 2xx would not mean durable)")]
pub struct InvalidWriteAck;

/// `majority` or a number of nodes, at least 1.
fn parse_write_ack(raw: &str) -> Result<Acknowledgment, InvalidWriteAck> {
    if raw.eq_ignore_ascii_case("majority") {
        return Ok(Acknowledgment::Majority);
    }
    match raw.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Acknowledgment::Nodes(n)),
        _ => Err(InvalidWriteAck),
    }
}

impl MongoConfig {
    pub fn read(env: &mut EnvReader) -> Self {
        let uri = env.string("MONGODB_URI", "mongodb://127.0.0.1:27017");
        let database = env.string("MONGODB_DATABASE", "herald");
        let mut from_uri = WriteConcern::default();
        if !uri.starts_with("mongodb://") && !uri.starts_with("mongodb+srv://") {
            env.problem(
                "MONGODB_URI",
                "must start with mongodb:// or mongodb+srv://",
            );
        } else {
            match ConnectionString::parse(&uri) {
                Ok(parsed) => from_uri = parsed.write_concern.unwrap_or_default(),
                // The driver's message names the bad option and never repeats the password.
                Err(e) => env.problem("MONGODB_URI", format!("not a valid connection string: {e}")),
            }
        }
        let write_concern = resolve_write_concern(env, from_uri);
        Self {
            uri,
            database,
            write_concern,
        }
    }

    /// A config for tests and tools: the default write concern unless `uri` sets `w` or `journal`.
    pub fn new(uri: impl Into<String>, database: impl Into<String>) -> Self {
        let uri = uri.into();
        let from_uri = ConnectionString::parse(&uri)
            .ok()
            .and_then(|parsed| parsed.write_concern)
            .unwrap_or_default();
        let write_concern =
            resolve_write_concern(&mut EnvReader::from_map(HashMap::new()), from_uri);
        Self {
            uri,
            database: database.into(),
            write_concern,
        }
    }
}

/// The write concern from `HERALD_MONGO_WRITE_CONCERN`/`HERALD_MONGO_JOURNAL`, else the URI's, else
/// `w: majority, j: true`; a setting made in both places is a problem, so an operator never wonders which won.
fn resolve_write_concern(env: &mut EnvReader, from_uri: WriteConcern) -> WriteConcern {
    const W: &str = "HERALD_MONGO_WRITE_CONCERN";
    const J: &str = "HERALD_MONGO_JOURNAL";
    let w = match (env.raw(W).map(str::to_owned), from_uri.w.clone()) {
        (Some(raw), uri_w) => {
            if uri_w.is_some() {
                env.problem(
                    W,
                    "conflicts with the `w` option of MONGODB_URI: set one of them",
                );
            }
            parse_write_ack(&raw).unwrap_or_else(|e| {
                env.problem(W, format!("'{raw}' is not valid: {e}"));
                Acknowledgment::Majority
            })
        }
        (None, Some(uri_w)) => uri_w,
        (None, None) => Acknowledgment::Majority,
    };
    let journal = match (env.raw(J).is_some(), from_uri.journal) {
        (true, uri_j) => {
            if uri_j.is_some() {
                env.problem(
                    J,
                    "conflicts with the `journal` option of MONGODB_URI: set one of them",
                );
            }
            env.flag(J, true)
        }
        (false, Some(uri_j)) => uri_j,
        (false, None) => true,
    };
    WriteConcern::builder()
        .w(w)
        .journal(journal)
        .w_timeout(from_uri.w_timeout)
        .build()
}

/// Replaces the password of a `scheme://user:password@host` URI with `***`, for logs.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return uri.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(pairs: &[(&str, &str)]) -> EnvReader {
        EnvReader::from_pairs(pairs)
    }

    #[test]
    fn every_bad_field_is_listed() {
        let mut env = reader(&[
            ("HERALD_PORT", "eighty"),
            ("HERALD_LOG_FORMAT", "xml"),
            ("MONGODB_URI", "postgres://x"),
        ]);
        let _port: u16 = env.parse("HERALD_PORT", 3000);
        let _telemetry = TelemetryConfig::read(&mut env);
        let _mongo = MongoConfig::read(&mut env);
        let err = env.finish().expect_err("three bad fields");
        assert_eq!(err.problems.len(), 3, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("HERALD_PORT: 'eighty' is not valid"),
            "{text}"
        );
        assert!(text.contains("HERALD_LOG_FORMAT"), "{text}");
        assert!(text.contains("MONGODB_URI"), "{text}");
    }

    #[test]
    fn defaults_apply_when_unset() {
        let mut env = reader(&[]);
        let kafka = KafkaConfig::read(&mut env, "ingest");
        let mongo = MongoConfig::read(&mut env);
        env.finish().expect("defaults are valid");
        assert_eq!(kafka.brokers, "127.0.0.1:9092");
        assert_eq!(kafka.client_id, "ingest");
        assert_eq!(mongo.database, "herald");
    }

    #[test]
    fn a_service_listens_on_its_own_variables_and_an_embedded_one_on_a_free_port() {
        let mut env = reader(&[("HERALD_QUERY_PORT", "4001")]);
        let query = Listen::read(&mut env, ["HERALD_QUERY_HOST", "HERALD_QUERY_PORT"], 3001);
        let ingest = Listen::read(&mut env, ["HERALD_INGEST_HOST", "HERALD_INGEST_PORT"], 3000);
        env.finish().expect("valid");
        assert_eq!((query.host.as_str(), query.port), ("127.0.0.1", 4001));
        assert_eq!((ingest.host.as_str(), ingest.port), ("127.0.0.1", 3000));
        let mut env = EnvReader::embedded();
        assert_eq!(
            Listen::read(&mut env, ["HERALD_INGEST_HOST", "HERALD_INGEST_PORT"], 3000).port,
            0
        );
        assert_eq!(env.raw("HERALD_AUTH"), Some("off"));
        let mut env = reader(&[("HERALD_INGEST_PORT", "eighty")]);
        let _listen = Listen::read(&mut env, ["HERALD_INGEST_HOST", "HERALD_INGEST_PORT"], 3000);
        let text = env.finish().expect_err("a bad port").to_string();
        assert!(text.contains("HERALD_INGEST_PORT"), "{text}");
    }

    #[test]
    fn a_file_is_read_and_parsed_or_its_problems_recorded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rules.txt");
        std::fs::write(&path, "3").expect("write");
        let path = path.display().to_string();
        let parse = |_: &str, text: &str| text.parse::<u8>().map_err(|e| vec![e]);
        let mut env = reader(&[("HERALD_RULES", &path)]);
        assert_eq!(
            env.file("HERALD_RULES", || 0, parse),
            (Some(path.clone()), 3)
        );
        assert_eq!(env.file("HERALD_UNSET", || 0, parse), (None, 0));
        env.finish().expect("valid");

        std::fs::write(&path, "three").expect("write");
        let missing = dir.path().join("missing.txt").display().to_string();
        let mut env = reader(&[("HERALD_RULES", &path), ("HERALD_OTHER", &missing)]);
        assert_eq!(env.file("HERALD_RULES", || 0, parse).1, 0);
        assert_eq!(env.file("HERALD_OTHER", || 0, parse).1, 0);
        let err = env.finish().expect_err("a bad and a missing file");
        assert!(
            err.problems[0].starts_with(&format!("HERALD_RULES: {path}: ")),
            "{err}"
        );
        assert!(
            err.problems[1].starts_with(&format!("HERALD_OTHER: cannot read {missing}: ")),
            "{err}"
        );
    }

    #[test]
    fn the_write_concern_defaults_to_majority_and_journal() {
        let mut env = reader(&[]);
        let mongo = MongoConfig::read(&mut env);
        env.finish().expect("defaults are valid");
        assert_eq!(mongo.write_concern.w, Some(Acknowledgment::Majority));
        assert_eq!(mongo.write_concern.journal, Some(true));
        let new = MongoConfig::new("mongodb://127.0.0.1:27017", "x");
        assert_eq!(new.write_concern, mongo.write_concern);
    }

    #[test]
    fn the_write_concern_is_read_from_env_or_from_the_uri() {
        let mut env = reader(&[
            ("HERALD_MONGO_WRITE_CONCERN", "1"),
            ("HERALD_MONGO_JOURNAL", "false"),
        ]);
        let mongo = MongoConfig::read(&mut env);
        env.finish().expect("valid");
        assert_eq!(mongo.write_concern.w, Some(Acknowledgment::Nodes(1)));
        assert_eq!(mongo.write_concern.journal, Some(false));

        let mut env = reader(&[(
            "MONGODB_URI",
            "mongodb://db:27017/?w=2&journal=false&wtimeoutMS=5000",
        )]);
        let mongo = MongoConfig::read(&mut env);
        env.finish().expect("valid");
        assert_eq!(mongo.write_concern.w, Some(Acknowledgment::Nodes(2)));
        assert_eq!(mongo.write_concern.journal, Some(false));
        assert_eq!(mongo.write_concern.w_timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_bad_or_doubly_set_write_concern_is_a_startup_error() {
        let mut env = reader(&[
            ("MONGODB_URI", "mongodb://db:27017/?w=majority&journal=true"),
            ("HERALD_MONGO_WRITE_CONCERN", "1"),
            ("HERALD_MONGO_JOURNAL", "true"),
        ]);
        let _mongo = MongoConfig::read(&mut env);
        let text = env.finish().expect_err("conflicts").to_string();
        assert!(
            text.contains("HERALD_MONGO_WRITE_CONCERN: conflicts"),
            "{text}"
        );
        assert!(text.contains("HERALD_MONGO_JOURNAL: conflicts"), "{text}");

        for bad in ["0", "all", "-1"] {
            let mut env = reader(&[("HERALD_MONGO_WRITE_CONCERN", bad)]);
            let _mongo = MongoConfig::read(&mut env);
            let text = env.finish().expect_err(bad).to_string();
            assert!(text.contains("HERALD_MONGO_WRITE_CONCERN"), "{text}");
        }
        let mut env = reader(&[("HERALD_MONGO_JOURNAL", "maybe")]);
        let _mongo = MongoConfig::read(&mut env);
        assert!(env.finish().is_err());
    }

    #[test]
    fn traces_are_exported_only_to_an_http_endpoint() {
        let mut env = reader(&[]);
        assert_eq!(TelemetryConfig::read(&mut env).otlp, None);
        env.finish().expect("no endpoint is valid");

        let mut env = reader(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_SERVICE_NAME", "herald-eu"),
        ]);
        let otlp = TelemetryConfig::read(&mut env).otlp.expect("an exporter");
        env.finish().expect("valid");
        assert_eq!(otlp.traces_url(), "http://collector:4318/v1/traces");
        assert_eq!(otlp.service_name.as_deref(), Some("herald-eu"));

        for bad in ["collector:4318", "ftp://collector", "http://"] {
            let mut env = reader(&[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)]);
            let _telemetry = TelemetryConfig::read(&mut env);
            let text = env.finish().expect_err(bad).to_string();
            assert!(text.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{text}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let mut env = reader(&[
            ("MONGODB_URI", "mongodb://herald:s3cret@db:27017/herald"),
            ("KAFKA_PROPERTY_SASL_PASSWORD", "hunter2"),
        ]);
        let kafka = KafkaConfig::read(&mut env, "x");
        let mongo = MongoConfig::read(&mut env);
        assert_eq!(
            kafka.extra,
            vec![("sasl.password".to_string(), "hunter2".to_string())]
        );
        let shown = format!("{kafka:?} {mongo:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("herald:***@db:27017"), "{shown}");
    }
}
