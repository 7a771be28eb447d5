//! What the replay tests share: an in-process service on port 0, dead letters made through the event store the
//! way a dispatcher and the retry scheduler make them, and exact views of the lanes and the records.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Utc};
use herald_domain::{
    Attempt, AttemptOutcome, Channel, ErrorClass, Event, EventId, Lane, LaneMessage, Priority,
};
use herald_platform::kafka::build_consumer;
use herald_platform::mongo::{self, EVENTS};
use herald_platform::store::retention::Retention;
use herald_platform::store::{Claim, DeadLettered, EventRecord, EventStore};
use herald_replay::{App, Config};
use herald_test_support::{eventually, spawn, unique_name, Spawned, TestContext};
use mongodb::bson::{self, doc, Document};
use mongodb::Database;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

/// A running `herald-replay`, stopped (and checked to stop cleanly) with [`Service::stop`].
pub struct Service {
    pub base: String,
    pub http: reqwest::Client,
    app: Spawned<App>,
}

impl Service {
    /// Starts the service with the test's Kafka and MongoDB and the defaults, adjusted by `adjust`.
    pub async fn start(ctx: &TestContext, adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        let mut config = Config::for_test(ctx.kafka.clone(), ctx.mongo.clone());
        // The fixtures are dead letters of 2024: the retention sweeper (tested in herald-platform) must not take
        // them away under the replay tests.
        config.retention = Retention::from_days(36_500, 36_500);
        adjust(&mut config);
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

    /// POSTs `body` as JSON to `/replay-dead-letter`; returns the status and the decoded answer.
    pub async fn replay(&self, body: &Value) -> Result<(u16, Value)> {
        let request = self
            .http
            .post(self.url("/replay-dead-letter"))
            .header("x-request-id", "test-request")
            .json(body);
        answer(request.send().await?).await
    }

    /// GETs `path_and_query`; returns the status and the decoded answer.
    pub async fn get(&self, path_and_query: &str) -> Result<(u16, Value)> {
        answer(self.http.get(self.url(path_and_query)).send().await?).await
    }

    /// The token whose cancellation stops the service, as SIGTERM does.
    pub fn shutdown(&self) -> tokio_util::sync::CancellationToken {
        self.app.shutdown_token()
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

/// The ids in a replay answer or a listing, in order.
pub fn ids(values: &Value) -> Vec<String> {
    values
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .or_else(|| item["eventId"].as_str())
                        .unwrap_or("?")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An event to make a dead letter of.
#[derive(Debug, Clone)]
pub struct Spec {
    pub id: String,
    pub channel: Channel,
    pub priority: Priority,
    pub event_type: &'static str,
    /// When it died; the store's clock when `None`.
    pub dead_lettered_at: Option<&'static str>,
}

impl Spec {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            channel: Channel::Webhook,
            priority: Priority::Default,
            event_type: "order.shipped",
            dead_lettered_at: None,
        }
    }

    pub fn event(&self) -> Event {
        Event {
            event_id: EventId::parse(&self.id).expect("a valid test id"),
            user_id: Some(format!("user-{}", self.id)),
            event_type: Some(self.event_type.into()),
            channel: Some(self.channel),
            priority: self.priority,
            payload: json!({"url": "http://127.0.0.1:9/hook", "body": {"n": 1}}),
            metadata: None,
            created_at: Utc::now(),
        }
    }
}

/// The five dead letters (and one live event) the filter tests share, oldest dead letter first:
///
/// | id | channel | priority | event type | dead-lettered |
/// |----|---------|----------|------------|---------------|
/// | a  | email   | critical | order.shipped | 2024-01-01 |
/// | b  | sms     | default  | otp.sent      | 2024-02-01 |
/// | c  | webhook | default  | order.shipped | 2024-03-01 |
/// | d  | email   | default  | invoice.ready | 2024-04-01 |
/// | e  | webhook | critical | invoice.ready | 2024-05-01 |
/// | f  | email   | critical | invoice.ready | never: QUEUED |
pub const SET: [&str; 5] = ["a", "b", "c", "d", "e"];
pub const LIVE: &str = "f";

fn set_specs() -> Vec<Spec> {
    let spec = |id: &str, channel, priority, event_type, at| Spec {
        id: id.into(),
        channel,
        priority,
        event_type,
        dead_lettered_at: Some(at),
    };
    vec![
        spec(
            "a",
            Channel::Email,
            Priority::Critical,
            "order.shipped",
            "2024-01-01T00:00:00Z",
        ),
        spec(
            "b",
            Channel::Sms,
            Priority::Default,
            "otp.sent",
            "2024-02-01T00:00:00Z",
        ),
        spec(
            "c",
            Channel::Webhook,
            Priority::Default,
            "order.shipped",
            "2024-03-01T00:00:00Z",
        ),
        spec(
            "d",
            Channel::Email,
            Priority::Default,
            "invoice.ready",
            "2024-04-01T00:00:00Z",
        ),
        spec(
            "e",
            Channel::Webhook,
            Priority::Critical,
            "invoice.ready",
            "2024-05-01T00:00:00Z",
        ),
    ]
}

/// One test's stack corner plus a store on its database.
pub struct Fixture {
    pub ctx: TestContext,
    pub db: Database,
    pub store: EventStore,
}

impl Fixture {
    pub async fn new(label: &str) -> Result<Self> {
        let ctx = TestContext::new(label).await?;
        let db = mongo::connect(&ctx.mongo, label).await?;
        EventStore::ensure_indexes(&db).await?;
        Ok(Self {
            store: EventStore::new(&db),
            db,
            ctx,
        })
    }

    /// Makes [`SET`] and [`LIVE`].
    pub async fn standard_set(&self) -> Result<()> {
        for spec in set_specs() {
            self.dead_letter(&spec).await?;
        }
        let live = Spec {
            channel: Channel::Email,
            priority: Priority::Critical,
            event_type: "invoice.ready",
            ..Spec::new(LIVE)
        };
        self.store
            .insert_accepted(&EventRecord::accepted(&live.event()), None)
            .await?;
        Ok(())
    }

    /// Records `spec` as accepted, then fails its first attempt and dead-letters it, as the services would.
    pub async fn dead_letter(&self, spec: &Spec) -> Result<EventRecord> {
        let event = spec.event();
        self.store
            .insert_accepted(&EventRecord::accepted(&event), None)
            .await?;
        self.fail_again(&spec.id, 0).await?;
        if let Some(at) = spec.dead_lettered_at {
            let at = DateTime::parse_from_rfc3339(at)?.with_timezone(&Utc);
            self.db
                .collection::<Document>(EVENTS)
                .update_one(
                    doc! { "eventId": &spec.id },
                    doc! { "$set": { "deadLetteredAt": bson::DateTime::from_chrono(at) } },
                )
                .await?;
        }
        self.record(&spec.id).await
    }

    /// Claims and fails attempt 1 of `id` after `replay_count` replays, and dead-letters it: what a dispatcher and
    /// the retry scheduler do with a replayed event that fails again.
    pub async fn fail_again(&self, id: &str, replay_count: u32) -> Result<()> {
        let event_id = EventId::parse(id)?;
        let claim = self
            .store
            .claim(&event_id, 1, replay_count, Duration::from_secs(30))
            .await?;
        ensure!(matches!(claim, Claim::Send(_)), "claim of {id}: {claim:?}");
        self.fail_claimed(id, replay_count).await
    }

    /// Fails the claimed attempt 1 of `id` and dead-letters it.
    pub async fn fail_claimed(&self, id: &str, replay_count: u32) -> Result<()> {
        let event_id = EventId::parse(id)?;
        let now = Utc::now();
        let attempt = Attempt {
            number: 1,
            provider: "webhook".into(),
            started_at: now,
            ended_at: now,
            outcome: AttemptOutcome::Failed,
            error_class: Some(ErrorClass::Permanent),
            error: Some("HTTP 410".into()),
            http_status: Some(410),
            retry_after_secs: None,
        };
        ensure!(
            self.store
                .record_failed(&event_id, &attempt, replay_count)
                .await?
        );
        let dead = self
            .store
            .dead_letter(&event_id, 1, replay_count, "receiver answered 410 Gone")
            .await?;
        ensure!(
            matches!(dead, DeadLettered::Now(_)),
            "dead letter of {id}: {dead:?}"
        );
        Ok(())
    }

    pub async fn record(&self, id: &str) -> Result<EventRecord> {
        self.store
            .find(&EventId::parse(id)?)
            .await?
            .with_context(|| format!("no record of {id}"))
    }

    /// Every message on `lane`, read from the beginning: exactly as many as the partitions' watermarks count.
    pub async fn lane_messages(&self, lane: Lane) -> Result<Vec<Received>> {
        let topic = self.ctx.topics.lane(lane);
        let brokers = self.ctx.kafka.brokers.clone();
        let (partitions, total) =
            eventually(Duration::from_secs(20), "the lane's watermarks", || {
                let (topic, brokers) = (topic.clone(), brokers.clone());
                async move {
                    tokio::task::spawn_blocking(move || watermarks(&brokers, &topic))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())
                }
            })
            .await;
        if total == 0 {
            return Ok(Vec::new());
        }
        let consumer: StreamConsumer = build_consumer(&self.ctx.kafka, &unique_name("check"))?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment.add_partition_offset(&topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let mut out = Vec::new();
        while (out.len() as i64) < total {
            let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
                .await
                .with_context(|| format!("{} of {total} messages within 30 s", out.len()))??;
            let mut headers = HashMap::new();
            if let Some(list) = message.headers() {
                for header in list.iter() {
                    let value = header
                        .value
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    headers.insert(header.key.to_owned(), value.unwrap_or_default());
                }
            }
            out.push(Received {
                message: serde_json::from_slice(message.payload().context("a payload")?)?,
                key: String::from_utf8_lossy(message.key().context("a key")?).into_owned(),
                headers,
            });
        }
        Ok(out)
    }

    /// How many messages `lane` holds.
    pub async fn lane_count(&self, lane: Lane) -> Result<usize> {
        Ok(self.lane_messages(lane).await?.len())
    }
}

/// A message read from a lane.
#[derive(Debug)]
pub struct Received {
    pub message: LaneMessage,
    pub key: String,
    pub headers: HashMap<String, String>,
}

/// The partition count of `topic` and the number of messages in it.
fn watermarks(brokers: &str, topic: &str) -> Result<(i32, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "replay-test-watermarks")
        .create()?;
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        bail!("topic {topic} does not exist");
    };
    if found.partitions().is_empty() {
        bail!("topic {topic} has no partitions yet");
    }
    let mut total = 0;
    for partition in found.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
        total += high - low;
    }
    Ok((found.partitions().len() as i32, total))
}
