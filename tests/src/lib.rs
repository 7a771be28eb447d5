//! Herald end to end: ingest, the dispatchers of every lane, the retry scheduler and the alert service, started
//! in this process on one test's corner of the real stack, with a local webhook receiver whose answers the test
//! scripts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use herald_domain::retry::RetryRules;
use herald_domain::{EventId, Lane, Status};
use herald_platform::kafka::watch::WatchConfig;
use herald_platform::store::{EventRecord, EventStore};
use herald_platform::EnvReader;
use herald_test_support::{eventually, spawn, stack, Spawned, TestContext};
use tokio_util::sync::CancellationToken;

/// The webhook secret of every dispatcher started here.
pub const WEBHOOK_SECRET: &str = "e2e-webhook-secret";
/// Delay tiers short enough for tests.
pub const TIERS_SECS: &[u64] = &[1, 2, 4];

/// Every Herald service of one test, and a store to read the outcome.
#[derive(Debug)]
pub struct Herald {
    pub ctx: TestContext,
    pub store: EventStore,
    pub ingest_url: String,
    pub http: reqwest::Client,
    /// Where this test's herald-alert sends every alert (unique, so tests tell their mail apart in the sink).
    pub alert_recipient: String,
    /// The services, each started through [`herald_test_support::spawn`]; `None` once [`Herald::stop`] took them.
    services: Option<Services>,
}

/// Every service of one [`Herald`].
#[derive(Debug)]
struct Services {
    ingest: Spawned<herald_ingest::App>,
    dispatchers: Vec<Spawned<herald_dispatch::App>>,
    retry: Spawned<herald_retry::App>,
    alert: Spawned<herald_alert::App>,
}

impl Services {
    /// Every service's shutdown token.
    fn tokens(&self) -> Vec<CancellationToken> {
        let mut tokens = vec![self.ingest.shutdown_token()];
        tokens.extend(self.dispatchers.iter().map(Spawned::shutdown_token));
        tokens.push(self.retry.shutdown_token());
        tokens.push(self.alert.shutdown_token());
        tokens
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        for token in self.services.iter().flat_map(Services::tokens) {
            token.cancel();
        }
    }
}

impl Herald {
    /// Starts ingest, one dispatcher per lane and the retry scheduler with `rules` (TOML).
    pub async fn start(label: &str, rules: &str) -> Result<Self> {
        Self::start_with(label, rules, &[]).await
    }

    /// [`Herald::start`], with `dispatch_env` added to every dispatcher's environment (providers).
    pub async fn start_with(
        label: &str,
        rules: &str,
        dispatch_env: &[(&str, &str)],
    ) -> Result<Self> {
        let ctx = TestContext::with_tiers(label, TIERS_SECS).await?;
        Self::start_in(ctx, label, rules, dispatch_env, &[]).await
    }

    /// Every service on the Kafka of `kafka` (another broker than the stack's, with its TLS/SASL settings, which
    /// `kafka_env` gives the services that read their configuration from the environment) and the stack's MongoDB,
    /// under a fresh prefix and database.
    pub async fn start_on_kafka(
        kafka: herald_platform::KafkaConfig,
        kafka_env: &HashMap<String, String>,
        label: &str,
        rules: &str,
    ) -> Result<Self> {
        let name = herald_test_support::unique_name(label);
        let mut database = format!("t_{}", name.replace(['.', '-'], "_"));
        database.truncate(63);
        let kafka = herald_platform::KafkaConfig {
            topic_prefix: format!("{name}."),
            ..kafka
        };
        let topics = kafka.topics();
        herald_platform::kafka::ensure_topics(&kafka, &topics.all(TIERS_SECS), 1).await?;
        let ctx = TestContext {
            mongo: herald_platform::MongoConfig::new(&stack().mongodb_uri, database),
            kafka,
            topics,
        };
        let kafka_env: Vec<(&str, &str)> = kafka_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Self::start_in(ctx, label, rules, &[], &kafka_env).await
    }

    /// Starts every service in `ctx`. `dispatch_env` goes to the dispatchers, `kafka_env` to every service that
    /// reads its configuration from the environment (the others take `ctx.kafka`).
    async fn start_in(
        ctx: TestContext,
        label: &str,
        rules: &str,
        dispatch_env: &[(&str, &str)],
        kafka_env: &[(&str, &str)],
    ) -> Result<Self> {
        herald_test_support::test_log();
        let db = herald_platform::mongo::connect(&ctx.mongo, label).await?;
        EventStore::ensure_indexes(&db).await?;

        // Ingest reads the dispatchers' provider and template variables too, as a deployment gives them to both.
        let mut delivery_env = EnvReader::from_map(
            dispatch_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let ingest_config = herald_ingest::Config::for_test(ctx.kafka.clone(), ctx.mongo.clone())
            .with_delivery_env(&mut delivery_env);
        delivery_env.finish()?;
        let ingest = spawn::<herald_ingest::App>(ingest_config).await?;
        let ingest_url = ingest.base.clone();

        let mut dispatchers = Vec::new();
        for lane in Lane::ALL {
            let stack = stack();
            let vars: HashMap<String, String> = [
                ("KAFKA_BROKERS", ctx.kafka.brokers.clone()),
                ("HERALD_TOPIC_PREFIX", ctx.topics.prefix().to_owned()),
                ("MONGODB_URI", ctx.mongo.uri.clone()),
                ("MONGODB_DATABASE", ctx.mongo.database.clone()),
                ("HERALD_DISPATCH_PORT", "0".into()),
                ("HERALD_SMTP_HOST", stack.smtp_host.clone()),
                ("HERALD_SMTP_PORT", stack.smtp_port.to_string()),
                ("HERALD_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
                ("HERALD_SEND_TIMEOUT_MS", "5000".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(
                dispatch_env
                    .iter()
                    .chain(kafka_env)
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
            .collect();
            let mut env = EnvReader::from_map(vars);
            let config = herald_dispatch::Config::read(&mut env, Some(*lane));
            env.finish()?;
            dispatchers.push(spawn::<herald_dispatch::App>(config).await?);
        }

        let rules = RetryRules::from_toml(rules).map_err(|e| anyhow::anyhow!("rules: {e:?}"))?;
        let mut retry_config =
            herald_retry::Config::for_test(ctx.kafka.clone(), ctx.mongo.clone(), rules, TIERS_SECS);
        retry_config.watch = WatchConfig::read(&mut EnvReader::from_map(
            kafka_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ));
        let retry = spawn::<herald_retry::App>(retry_config).await?;

        let alert_recipient = format!(
            "{}@alerts.test",
            herald_test_support::unique_name(label).to_ascii_lowercase()
        );
        let alert_env: HashMap<String, String> = [
            ("KAFKA_BROKERS", ctx.kafka.brokers.clone()),
            ("HERALD_TOPIC_PREFIX", ctx.topics.prefix().to_owned()),
            ("MONGODB_URI", ctx.mongo.uri.clone()),
            ("MONGODB_DATABASE", ctx.mongo.database.clone()),
            ("HERALD_ALERT_PORT", "0".into()),
            ("HERALD_SMTP_HOST", stack().smtp_host.clone()),
            ("HERALD_SMTP_PORT", stack().smtp_port.to_string()),
            ("HERALD_ALERT_RECIPIENTS", alert_recipient.clone()),
            ("HERALD_ALERT_SWEEP_INTERVAL_MS", "200".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(
            kafka_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .collect();
        let alert = spawn::<herald_alert::App>(herald_platform::service::read_config::<
            herald_alert::App,
        >(EnvReader::from_map(alert_env))?)
        .await?;

        Ok(Self {
            store: EventStore::new(&db),
            ctx,
            ingest_url,
            http: reqwest::Client::new(),
            alert_recipient,
            services: Some(Services {
                ingest,
                dispatchers,
                retry,
                alert,
            }),
        })
    }

    /// Stops every service as SIGTERM does and waits until each has finished (offsets committed, consumers out of
    /// their groups), up to 30 s each. Dropping a [`Herald`] only asks them to stop; a test that then takes Kafka
    /// away must stop them first, or the runtime drops consumers that still wait on the broker.
    pub async fn stop(mut self) -> Result<()> {
        let Some(services) = self.services.take() else {
            return Ok(());
        };
        // Every one is asked first, as one SIGTERM to the whole installation would.
        for token in services.tokens() {
            token.cancel();
        }
        let mut problems = Vec::new();
        let mut note = |stopped: Result<()>| {
            if let Err(e) = stopped {
                problems.push(format!("{e:#}"));
            }
        };
        note(services.ingest.stop().await);
        for dispatcher in services.dispatchers {
            note(dispatcher.stop().await);
        }
        note(services.retry.stop().await);
        note(services.alert.stop().await);
        anyhow::ensure!(
            problems.is_empty(),
            "stopping Herald: {}",
            problems.join("; ")
        );
        Ok(())
    }

    /// `POST /event`; returns the accepted event id.
    pub async fn post_event(&self, body: serde_json::Value) -> Result<EventId> {
        let response = self
            .http
            .post(format!("{}/event", self.ingest_url))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer: serde_json::Value = response.json().await?;
        anyhow::ensure!(status == StatusCode::ACCEPTED, "{status}: {answer}");
        let id = answer["eventId"]
            .as_str()
            .context("eventId in the answer")?;
        Ok(EventId::parse(id)?)
    }

    /// `POST /event` with any body; returns the status and the JSON answer.
    pub async fn post_event_raw(
        &self,
        body: serde_json::Value,
    ) -> Result<(StatusCode, serde_json::Value)> {
        let response = self
            .http
            .post(format!("{}/event", self.ingest_url))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await?))
    }

    /// Waits until the event is `status`, and returns its record.
    pub async fn wait_for(&self, id: &EventId, status: Status, timeout: Duration) -> EventRecord {
        eventually(timeout, &format!("{id} to be {status}"), || async {
            match self.store.find(id).await {
                Ok(Some(record)) if record.status == status => Ok(record),
                Ok(Some(record)) => Err(format!(
                    "{:?} after {} attempts",
                    record.status, record.attempt_count
                )),
                Ok(None) => Err("no record".into()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: DateTime<Utc>,
    pub event_id: String,
    pub answered: u16,
}

/// A local webhook receiver: it fails the first `failures` requests of each event with `status`, then answers
/// 200, and records every request.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    pub async fn start(failures: usize, status: u16) -> Result<Self> {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let recorded = hits.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap| {
                let hits = recorded.clone();
                async move {
                    let event_id = headers
                        .get("herald-event-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let mut hits = hits.lock().expect("receiver lock");
                    let seen = hits.iter().filter(|h| h.event_id == event_id).count();
                    let answered = if seen < failures { status } else { 200 };
                    hits.push(Hit {
                        at: Utc::now(),
                        event_id,
                        answered,
                    });
                    StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url, hits })
    }

    pub fn hits(&self, event_id: &EventId) -> Vec<Hit> {
        self.hits
            .lock()
            .expect("receiver lock")
            .iter()
            .filter(|h| h.event_id == event_id.as_str())
            .cloned()
            .collect()
    }
}

/// A local SMS API of the shape `herald-dispatch` speaks (`POST {base}/Accounts/{account}/Messages.json`): it
/// answers every request with one status (201 with a message id when it accepts) and records the paths it got.
#[derive(Debug, Clone)]
pub struct SmsApi {
    pub base_url: String,
    paths: Arc<Mutex<Vec<String>>>,
}

impl SmsApi {
    pub async fn start(status: u16) -> Result<Self> {
        let paths: Arc<Mutex<Vec<String>>> = Arc::default();
        let recorded = paths.clone();
        let app = Router::new().fallback(move |uri: axum::http::Uri| {
            let paths = recorded.clone();
            async move {
                paths
                    .lock()
                    .expect("sms api lock")
                    .push(uri.path().to_owned());
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, axum::Json(serde_json::json!({"sid": "SM-local"})))
            }
        });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let base_url = format!("http://{}/2010-04-01", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { base_url, paths })
    }

    /// The paths of every request so far.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("sms api lock").clone()
    }
}
