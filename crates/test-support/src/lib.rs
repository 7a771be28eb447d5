//! What Herald's integration tests share: where the stack is, unique names, `eventually`, and [`spawn`] to run any
//! service in the test's process.
//!
//! Tests run against real Kafka and a real MongoDB-wire server, found in this order:
//! 1. `KAFKA_BROKERS` and `MONGODB_URI` (set by `cargo xtask test`, which starts the native stack);
//! 2. a Docker engine, where `apache/kafka` and `mongo` are started once per test binary with testcontainers;
//! 3. neither: the test fails with a message naming the command that starts the stack. Never a silent skip.

pub mod http;
pub mod message_fakes;
pub mod otlp;
pub mod plain_kafka;
pub mod push_fakes;
pub mod secure_kafka;
pub mod spawn;

pub use spawn::{spawn, spawn_with, Spawned};

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use herald_domain::{Topics, DEFAULT_DELAY_TIERS_SECS};
use herald_platform::{KafkaConfig, MongoConfig};

/// Logs of the services a test starts in its own process, printed through the test harness's capture when
/// `HERALD_TEST_LOG` holds a filter (`HERALD_TEST_LOG=info,rdkafka=debug cargo test ...`); silent otherwise. Safe to
/// call from every test: only the first call installs the subscriber.
pub fn test_log() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        if let Ok(filter) = std::env::var("HERALD_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Where the shared test stack is.
#[derive(Debug, Clone)]
pub struct Stack {
    pub kafka_brokers: String,
    pub mongodb_uri: String,
    /// `HERALD_SMTP_HOST`/`HERALD_SMTP_PORT`: the SMTP sink. Default 127.0.0.1:1025.
    pub smtp_host: String,
    pub smtp_port: u16,
    /// `HERALD_SMTP_API`: the sink's HTTP API (Mailpit-compatible). Default `http://127.0.0.1:8025`.
    pub smtp_api: String,
}

const HOW_TO_START: &str = "no test stack: set KAFKA_BROKERS and MONGODB_URI, or run the tests with \
`cargo xtask test` (it starts the native stack), or start it with `cargo xtask stack up` and export the \
variables it prints, or run where a Docker engine answers (testcontainers)";

static STACK: OnceLock<Stack> = OnceLock::new();

/// The stack every test of this binary shares. Panics, naming the command to run, when there is none.
pub fn stack() -> &'static Stack {
    STACK.get_or_init(|| {
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
        let smtp_host = env("HERALD_SMTP_HOST").unwrap_or_else(|| "127.0.0.1".into());
        let smtp_port = env("HERALD_SMTP_PORT")
            .and_then(|p| p.parse().ok())
            .unwrap_or(1025);
        let smtp_api = env("HERALD_SMTP_API").unwrap_or_else(|| "http://127.0.0.1:8025".into());
        let (kafka_brokers, mongodb_uri) = match (env("KAFKA_BROKERS"), env("MONGODB_URI")) {
            (Some(kafka), Some(mongo)) => (kafka, mongo),
            _ if docker::engine_answers() => docker::start(),
            _ => panic!("{HOW_TO_START}"),
        };
        Stack {
            kafka_brokers,
            mongodb_uri,
            smtp_host,
            smtp_port,
            smtp_api,
        }
    })
}

/// A name no other test in any concurrent run uses: `<label>-<pid>-<n>-<random>`.
pub fn unique_name(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{label}-{}-{n}-{}", std::process::id(), &random[..8])
}

/// One test's own corner of the stack: a topic prefix and a database nobody else uses.
#[derive(Debug, Clone)]
pub struct TestContext {
    pub kafka: KafkaConfig,
    pub mongo: MongoConfig,
    pub topics: Topics,
}

impl TestContext {
    /// A fresh prefix and database; Herald's topics are created under the prefix, with delay tiers
    /// `delay_tiers_secs`.
    pub async fn with_tiers(label: &str, delay_tiers_secs: &[u64]) -> anyhow::Result<Self> {
        let stack = stack();
        let name = unique_name(label);
        let prefix = format!("{name}.");
        // MongoDB database names may not contain '.', and are at most 63 bytes.
        let mut database = format!("t_{}", name.replace(['.', '-'], "_"));
        database.truncate(63);
        let kafka = KafkaConfig::new(&stack.kafka_brokers, &prefix);
        let topics = kafka.topics();
        herald_platform::kafka::ensure_topics(&kafka, &topics.all(delay_tiers_secs), 1).await?;
        Ok(Self {
            mongo: MongoConfig::new(&stack.mongodb_uri, database),
            kafka,
            topics,
        })
    }

    /// A fresh context with the default delay tiers.
    pub async fn new(label: &str) -> anyhow::Result<Self> {
        Self::with_tiers(label, DEFAULT_DELAY_TIERS_SECS).await
    }

    /// A unique consumer group id for this test.
    pub fn group(&self, label: &str) -> String {
        format!("{}{label}", self.topics.prefix())
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with the last observation.
///
/// The one way tests wait: bounded, and it says what it was waiting for.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(250));
            }
        }
    }
}

mod docker {
    //! The testcontainers fallback, used only when no stack is configured and a Docker engine answers.

    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    use testcontainers_modules::kafka::apache;
    use testcontainers_modules::mongo::Mongo;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;

    pub(super) fn engine_answers() -> bool {
        Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Starts Kafka and MongoDB containers on a thread of their own, which keeps them alive for the rest of
    /// the test binary (each test has its own runtime; the containers must outlive all of them).
    pub(super) fn start() -> (String, String) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for the containers");
            runtime.block_on(async move {
                let started = async {
                    let kafka = apache::Kafka::default().with_jvm_image().start().await?;
                    let mongo = Mongo::default().start().await?;
                    let brokers = format!(
                        "127.0.0.1:{}",
                        kafka.get_host_port_ipv4(apache::KAFKA_PORT).await?
                    );
                    let uri = format!(
                        "mongodb://127.0.0.1:{}",
                        mongo.get_host_port_ipv4(27017).await?
                    );
                    Ok::<_, anyhow::Error>((brokers, uri, kafka, mongo))
                };
                match started.await {
                    Ok((brokers, uri, _kafka, _mongo)) => {
                        let _ = tx.send(Ok((brokers, uri)));
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        match rx.recv() {
            Ok(Ok(endpoints)) => endpoints,
            Ok(Err(e)) => panic!("starting the test stack with testcontainers failed: {e}"),
            Err(_) => panic!("the testcontainers thread died before reporting"),
        }
    }
}
