//! What the dispatcher tests share: a harness around one test's corner of the stack, an in-process dispatcher,
//! a local HTTP receiver that records what it got, and readers of Herald's topics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use herald_dispatch::{App, Config, Stats};
use herald_domain::{Channel, Event, EventId, Lane, LaneMessage, Priority, Status};
use herald_platform::kafka::{build_consumer, build_producer, send};
use herald_platform::store::{EventRecord, EventStore, Inserted};
use herald_platform::EnvReader;
use herald_test_support::{eventually, spawn_with, stack, unique_name, Spawned, TestContext};
use mongodb::Database;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::task::JoinHandle;

/// The webhook signing secret every test dispatcher uses.
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

/// One test's stack corner, with a store and a producer to seed events.
pub struct Harness {
    pub ctx: TestContext,
    pub db: Database,
    pub store: EventStore,
    pub producer: FutureProducer,
}

impl Harness {
    pub async fn new(label: &str) -> Result<Self> {
        init_logs();
        let ctx = TestContext::new(label).await?;
        let db = herald_platform::mongo::connect(&ctx.mongo, label).await?;
        EventStore::ensure_indexes(&db).await?;
        let store = EventStore::new(&db);
        let producer = build_producer(&ctx.kafka)?;
        Ok(Self {
            ctx,
            db,
            store,
            producer,
        })
    }

    /// The environment of a dispatcher of this test: stack endpoints, port 0, the test secret, plus `extra`.
    pub fn env(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let stack = stack();
        let mut vars: HashMap<String, String> = [
            ("KAFKA_BROKERS", self.ctx.kafka.brokers.clone()),
            ("HERALD_TOPIC_PREFIX", self.ctx.topics.prefix().to_owned()),
            ("MONGODB_URI", self.ctx.mongo.uri.clone()),
            ("MONGODB_DATABASE", self.ctx.mongo.database.clone()),
            ("HERALD_DISPATCH_PORT", "0".into()),
            ("HERALD_SMTP_HOST", stack.smtp_host.clone()),
            ("HERALD_SMTP_PORT", stack.smtp_port.to_string()),
            ("HERALD_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
            ("HERALD_SEND_TIMEOUT_MS", "5000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (key, value) in extra {
            vars.insert((*key).to_owned(), (*value).to_owned());
        }
        vars
    }

    /// Starts a dispatcher of `lane` in this process.
    pub async fn start(&self, lane: Lane, extra: &[(&str, &str)]) -> Result<Running> {
        let mut env = EnvReader::from_map(self.env(extra));
        let config = Config::read(&mut env, Some(lane));
        env.finish()?;
        let (app, stats) = spawn_with::<App, _>(config, App::stats).await?;
        Ok(Running {
            port: app.port,
            stats,
            app,
        })
    }

    /// Records `event` as accepted (PENDING) and publishes its first lane message; returns the partition.
    pub async fn seed(&self, event: &Event) -> Result<i32> {
        let inserted = self
            .store
            .insert_accepted(&EventRecord::accepted(event), None)
            .await?;
        anyhow::ensure!(
            inserted == Inserted::New,
            "{} was seeded twice",
            event.event_id
        );
        let partition = self.publish(&LaneMessage::first(event.clone())).await?;
        // As ingest does once Kafka has acknowledged the event.
        self.store
            .mark_published(&[(event.event_id.clone(), 0)])
            .await?;
        Ok(partition)
    }

    /// Publishes a lane message on its event's lane; returns the partition.
    pub async fn publish(&self, message: &LaneMessage) -> Result<i32> {
        let lane = Lane::for_priority(message.event.priority);
        self.publish_raw(
            lane,
            message.event.partition_key(),
            &serde_json::to_vec(message)?,
        )
        .await
    }

    /// Publishes raw bytes on a lane topic; returns the partition.
    pub async fn publish_raw(&self, lane: Lane, key: &str, payload: &[u8]) -> Result<i32> {
        let (partition, _) = send(
            &self.producer,
            &self.ctx.topics.lane(lane),
            key,
            payload,
            None,
        )
        .await?;
        Ok(partition)
    }

    /// Waits until the event's record has `status`, and returns it.
    pub async fn wait_for_status(
        &self,
        id: &EventId,
        status: Status,
        timeout: Duration,
    ) -> EventRecord {
        eventually(timeout, &format!("{id} to be {status}"), || async {
            match self.store.find(id).await {
                Ok(Some(record)) if record.status == status => Ok(record),
                Ok(Some(record)) => Err(format!(
                    "{} with {} attempts",
                    record.status,
                    record.attempts.len()
                )),
                Ok(None) => Err("no record".into()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Drops this test's database: FerretDB keeps one SQLite file per database.
    pub async fn finish(self) -> Result<()> {
        self.db.drop().await?;
        Ok(())
    }
}

/// A dispatcher running in this process.
pub struct Running {
    pub port: u16,
    pub stats: Arc<Stats>,
    app: Spawned<App>,
}

impl Running {
    /// Stops it as SIGTERM would, and waits until it has committed and returned.
    pub async fn stop(self) -> Result<()> {
        self.app.stop().await
    }
}

/// An event of this test, with a fresh id.
pub fn event(
    channel: Option<Channel>,
    priority: Priority,
    user: &str,
    payload: serde_json::Value,
) -> Event {
    Event {
        event_id: EventId::generate(),
        user_id: Some(user.to_owned()),
        event_type: Some("test.event".into()),
        channel,
        priority,
        payload,
        metadata: None,
        created_at: Utc::now(),
    }
}

/// A webhook event to `url` with a small JSON body.
pub fn webhook(priority: Priority, user: &str, url: &str) -> Event {
    event(
        Some(Channel::Webhook),
        priority,
        user,
        serde_json::json!({"url": url, "body": {"user": user, "n": 1}}),
    )
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A local HTTP server on 127.0.0.1 that records every request and answers as its path says:
/// `/status/NNN` answers NNN (`?retry_after=S` adds `Retry-After: S`, `?abort=why` adds `Herald-Abort: why`),
/// `/delay/MS` waits MS milliseconds first, and a path ending in `Messages.json` answers 201 with an SMS id, as
/// an SMS API does. Anything else answers 200.
pub struct Receiver {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Result<Self> {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let recorded = Arc::clone(&hits);
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let recorded = Arc::clone(&recorded);
                async move { answer(recorded, method, uri, headers, body).await }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, hits, task })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Requests per `Herald-Event-Id`.
    pub fn hits_by_event(&self) -> HashMap<String, Vec<Hit>> {
        let mut by_event: HashMap<String, Vec<Hit>> = HashMap::new();
        for hit in self.hits() {
            let id = hit.header("herald-event-id").unwrap_or_default().to_owned();
            by_event.entry(id).or_default().push(hit);
        }
        by_event
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    hits: Arc<Mutex<Vec<Hit>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let segment_after = |name: &str| {
        let mut parts = path.split('/');
        parts.by_ref().find(|p| *p == name)?;
        parts.next().and_then(|n| n.parse::<u64>().ok())
    };
    // Recorded on arrival: a send under way when its dispatcher dies has arrived.
    if let Ok(mut hits) = hits.lock() {
        hits.push(Hit {
            method,
            path: path.clone(),
            headers,
            body,
            at: Instant::now(),
        });
    }
    if let Some(ms) = segment_after("delay") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let status = segment_after("status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    if let Some(status) = status {
        let mut response = (status, "as you asked").into_response();
        if let Some(secs) = query.get("retry_after") {
            response
                .headers_mut()
                .insert("retry-after", secs.parse().expect("a header value"));
        }
        if let Some(why) = query.get("abort") {
            response
                .headers_mut()
                .insert("herald-abort", why.parse().expect("a header value"));
        }
        return response;
    }
    if path.ends_with("Messages.json") {
        return (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({"sid": "SM0001", "status": "queued"})),
        )
            .into_response();
    }
    StatusCode::OK.into_response()
}

/// Reads `topic` from the start with a fresh group until `pick` returns something, or fails after `timeout`.
pub async fn read_until<T>(
    ctx: &TestContext,
    topic: &str,
    timeout: Duration,
    mut pick: impl FnMut(&OwnedMessage) -> Option<T>,
) -> Result<T> {
    let consumer: StreamConsumer = build_consumer(&ctx.kafka, &ctx.group(&unique_name("reader")))?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, consumer.recv())
            .await
            .with_context(|| format!("nothing matching on {topic} within {timeout:?}"))??
            .detach();
        if let Some(found) = pick(&message) {
            return Ok(found);
        }
    }
}

/// The value of a Kafka header, as text.
pub fn kafka_header(message: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// Logs of in-process dispatchers go to the test output when `RUST_LOG` is set.
fn init_logs() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _telemetry = herald_platform::telemetry::init(
            &herald_platform::TelemetryConfig {
                format: herald_platform::config::LogFormat::Pretty,
                filter,
                shutdown_timeout: std::time::Duration::from_secs(30),
                otlp: None,
            },
            "herald-dispatch",
        );
    }
}
