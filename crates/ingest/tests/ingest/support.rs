//! What the ingest tests share: an in-process service on port 0, and ways to look at its lanes and records.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use herald_domain::{EventId, Lane, LaneMessage};
use herald_ingest::{App, Config};
use herald_platform::kafka::build_consumer;
use herald_platform::store::{EventRecord, EventStore};
use herald_test_support::{eventually, spawn, Spawned, TestContext};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use serde_json::Value;

/// A running `herald-ingest`, stopped (and checked to stop cleanly) with [`Service::stop`].
pub struct Service {
    pub base: String,
    pub http: reqwest::Client,
    app: Spawned<App>,
}

impl Service {
    /// Starts the service with the test's Kafka and MongoDB and the defaults, adjusted by `adjust`.
    pub async fn start(ctx: &TestContext, adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        let mut config = Config::for_test(ctx.kafka.clone(), ctx.mongo.clone());
        adjust(&mut config);
        Self::start_with(config).await
    }

    pub async fn start_with(config: Config) -> Result<Self> {
        let app = spawn::<App>(config).await?;
        Ok(Self {
            base: app.base.clone(),
            http: reqwest::Client::new(),
            app,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` as JSON; returns the status and the decoded answer.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.post_with(path, body, &[]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value)> {
        let mut request = self.http.post(self.url(path)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.send().await?).await
    }

    /// Stops the service and checks that it stopped cleanly, within a bound.
    pub async fn stop(self) -> Result<()> {
        self.app.stop().await
    }
}

/// The status and JSON body of a response.
pub async fn answer(response: reqwest::Response) -> Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body =
        serde_json::from_str(&text).with_context(|| format!("not JSON ({status}): {text}"))?;
    Ok((status, body))
}

/// The stored record of an event.
pub async fn record(ctx: &TestContext, event_id: &str) -> Result<Option<EventRecord>> {
    let db = herald_platform::mongo::connect(&ctx.mongo, "ingest-test").await?;
    let id = EventId::parse(event_id)?;
    Ok(EventStore::new(&db).find(&id).await?)
}

/// The events the outbox still names as unpublished (whatever the age of their entries).
pub async fn unpublished(ctx: &TestContext) -> Result<Vec<EventRecord>> {
    let db = herald_platform::mongo::connect(&ctx.mongo, "ingest-test").await?;
    let soon = chrono::Utc::now() + chrono::Duration::seconds(1);
    Ok(EventStore::new(&db)
        .unpublished_before(soon, 1000)
        .await?
        .events)
}

/// How many messages a lane topic holds, from its partitions' watermarks: exact, with no waiting for messages.
///
/// Asked again while the broker is still electing the leaders of the test's new topics.
pub async fn lane_count(ctx: &TestContext, lane: Lane) -> Result<i64> {
    let topic = ctx.topics.lane(lane);
    let brokers = ctx.kafka.brokers.clone();
    let count = eventually(Duration::from_secs(20), "the lane's watermarks", || {
        let (topic, brokers) = (topic.clone(), brokers.clone());
        async move {
            tokio::task::spawn_blocking(move || watermark_total(&brokers, &topic))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }
    })
    .await;
    Ok(count)
}

fn watermark_total(brokers: &str, topic: &str) -> Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "ingest-test-watermarks")
        .create()?;
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        bail!("topic {topic} does not exist");
    };
    let mut total = 0;
    for partition in found.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
        total += high - low;
    }
    Ok(total)
}

/// A message read from a lane: the decoded body, its key and its headers.
#[derive(Debug)]
pub struct Received {
    pub message: LaneMessage,
    pub key: String,
    pub headers: HashMap<String, String>,
}

/// A consumer of one lane, in a group of its own, from the beginning of the topic.
pub async fn lane_consumer(ctx: &TestContext, lane: Lane) -> Result<StreamConsumer> {
    let consumer = build_consumer(&ctx.kafka, &ctx.group(&format!("check-{}", lane.as_str())))?;
    consumer.subscribe(&[&ctx.topics.lane(lane)])?;
    Ok(consumer)
}

/// The next message of the lane, within 30 s.
pub async fn next_message(consumer: &StreamConsumer) -> Result<Received> {
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .context("no message on the lane within 30 s")??;
    let payload = message.payload().context("a message without payload")?;
    let key = String::from_utf8(message.key().context("a message without key")?.to_vec())?;
    let mut headers = HashMap::new();
    if let Some(list) = message.headers() {
        for header in list.iter() {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned());
            headers.insert(header.key.to_owned(), value.unwrap_or_default());
        }
    }
    Ok(Received {
        message: serde_json::from_slice(payload)?,
        key,
        headers,
    })
}
