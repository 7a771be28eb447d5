//! What the alert tests share: one test's corner of the stack, an in-process `herald-alert`, status messages, and
//! readers of the SMTP sink and of the stored alerts.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use herald_alert::{App, Config};
use herald_domain::{Channel, Event, EventId, Priority, StatusMessage, StatusOutcome};
use herald_platform::alerts::{AlertRecord, ALERTS};
use herald_platform::kafka::{build_producer, send};
use herald_platform::service;
use herald_platform::EnvReader;
use herald_test_support::{eventually, spawn, stack, unique_name, Spawned, TestContext};
use mongodb::bson::{doc, Document};
use mongodb::Database;
use rdkafka::producer::FutureProducer;
use serde_json::{json, Value};

/// How long an alert email may take to show up in the sink.
pub const MAIL: Duration = Duration::from_secs(30);

/// One test's stack corner, with its own alert recipient.
pub struct Harness {
    pub ctx: TestContext,
    pub db: Database,
    pub producer: FutureProducer,
    /// The address every alert of this test goes to, so that parallel tests tell their mail apart.
    pub recipient: String,
    pub http: reqwest::Client,
}

impl Harness {
    pub async fn new(label: &str) -> Result<Self> {
        if std::env::var_os("RUST_LOG").is_some() {
            let _telemetry = herald_platform::telemetry::init(
                &herald_platform::TelemetryConfig::read(&mut EnvReader::from_env()),
                "herald-alert",
            );
        }
        let ctx = TestContext::new(label).await?;
        let db = herald_platform::mongo::connect(&ctx.mongo, label).await?;
        Ok(Self {
            producer: build_producer(&ctx.kafka)?,
            recipient: format!("{}@alerts.test", unique_name(label).to_ascii_lowercase()),
            http: reqwest::Client::new(),
            ctx,
            db,
        })
    }

    /// The configuration of an alert service of this test: stack endpoints, port 0, this test's recipient,
    /// quick sweeps and retries, plus `extra`.
    pub fn config(&self, extra: &[(&str, &str)]) -> Result<Config> {
        let stack = stack();
        let mut vars: HashMap<String, String> = [
            ("KAFKA_BROKERS", self.ctx.kafka.brokers.clone()),
            ("HERALD_TOPIC_PREFIX", self.ctx.topics.prefix().to_owned()),
            ("MONGODB_URI", self.ctx.mongo.uri.clone()),
            ("MONGODB_DATABASE", self.ctx.mongo.database.clone()),
            ("HERALD_ALERT_PORT", "0".into()),
            ("HERALD_SMTP_HOST", stack.smtp_host.clone()),
            ("HERALD_SMTP_PORT", stack.smtp_port.to_string()),
            ("HERALD_ALERT_RECIPIENTS", self.recipient.clone()),
            ("HERALD_ALERT_SWEEP_INTERVAL_MS", "200".into()),
            ("HERALD_ALERT_SEND_BACKOFF_CAP_MS", "300".into()),
            ("HERALD_ALERT_SEND_TIMEOUT_MS", "3000".into()),
            ("HERALD_QUERY_PUBLIC_URL", "http://query.test:3001".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (key, value) in extra {
            vars.insert((*key).to_owned(), (*value).to_owned());
        }
        Ok(service::read_config::<App>(EnvReader::from_map(vars))?)
    }

    /// Starts an alert service of this test in this process.
    pub async fn start(&self, extra: &[(&str, &str)]) -> Result<Running> {
        spawn::<App>(self.config(extra)?).await
    }

    /// Publishes `status` on the status topic. Every message of a test has the same key, hence the same
    /// partition: they are handled in the order published.
    pub async fn publish(&self, status: &StatusMessage) -> Result<()> {
        send(
            &self.producer,
            &self.ctx.topics.status(),
            self.ctx.topics.prefix(),
            &serde_json::to_vec(status)?,
            None,
        )
        .await?;
        Ok(())
    }

    /// The alert emails of this test whose subject contains `subject` (newest first).
    pub async fn mails(&self, subject: &str) -> Result<Vec<Value>> {
        let api = &stack().smtp_api;
        let answer: Value = self
            .http
            .get(format!("{api}/api/v1/search"))
            .query(&[("query", format!("to:{} subject:{subject}", self.recipient))])
            .send()
            .await?
            .json()
            .await?;
        Ok(answer["messages"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until exactly `n` emails whose subject contains `subject` arrived, and returns them.
    pub async fn wait_for_mails(&self, subject: &str, n: usize) -> Vec<Value> {
        eventually(
            MAIL,
            &format!("{n} alert emails about {subject}"),
            || async {
                match self.mails(subject).await {
                    Ok(mails) if mails.len() == n => Ok(mails),
                    Ok(mails) => Err(format!("{} emails: {mails:?}", mails.len())),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
    }

    /// The subject and the text of the email a sink summary stands for.
    pub async fn read(&self, summary: &Value) -> Result<(String, String)> {
        let api = &stack().smtp_api;
        let id = summary["ID"].as_str().context("a sink id")?;
        let full: Value = self
            .http
            .get(format!("{api}/api/v1/message/{id}"))
            .send()
            .await?
            .json()
            .await?;
        let field = |name: &str| full[name].as_str().unwrap_or_default().to_owned();
        Ok((field("Subject"), field("Text")))
    }

    /// The stored alerts of `rule` and `group`, oldest first.
    pub async fn alerts(&self, rule: &str, group: &str) -> Result<Vec<AlertRecord>> {
        use futures::TryStreamExt;
        Ok(self
            .db
            .collection::<AlertRecord>(ALERTS)
            .find(doc! { "rule": rule, "group": group })
            .sort(doc! { "seq": 1 })
            .await?
            .try_collect()
            .await?)
    }

    /// How many distinct steps are counted for `rule` and `group`.
    pub async fn hits(&self, rule: &str, group: &str) -> Result<u64> {
        Ok(self
            .db
            .collection::<Document>(herald_alert::window::ALERT_HITS)
            .count_documents(doc! { "rule": rule, "group": group })
            .await?)
    }

    /// Waits until `n` steps are counted for `rule` and `group`.
    pub async fn wait_for_hits(&self, rule: &str, group: &str, n: u64) {
        eventually(MAIL, &format!("{n} hits of {rule}/{group}"), || async {
            match self.hits(rule, group).await {
                Ok(found) if found == n => Ok(()),
                Ok(found) => Err(format!("{found} hits")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Drops this test's database.
    pub async fn finish(self) -> Result<()> {
        self.db.drop().await?;
        Ok(())
    }
}

/// An alert service running in this process.
pub type Running = Spawned<App>;

/// A record-only `request.failed` event from `ip`, as recorded: its status message.
pub fn failed_request(ip: &str) -> StatusMessage {
    let event = Event {
        event_id: EventId::generate(),
        user_id: None,
        event_type: Some("request.failed".into()),
        channel: None,
        priority: Priority::Default,
        payload: json!({}),
        metadata: Some(json!({"ip": ip, "reason": "401"})),
        created_at: Utc::now(),
    };
    StatusMessage::new(&event, StatusOutcome::Recorded, 0, 0)
}

/// A dead letter of a webhook event of `priority`, after `attempts` attempts.
pub fn dead_letter(priority: Priority, attempts: u32) -> StatusMessage {
    let event = Event {
        event_id: EventId::generate(),
        user_id: Some("u-1".into()),
        event_type: Some("invoice.paid".into()),
        channel: Some(Channel::Webhook),
        priority,
        payload: json!({"url": "https://hooks.example.com/x", "body": {}}),
        metadata: None,
        created_at: Utc::now(),
    };
    StatusMessage {
        provider: Some("webhook".into()),
        error: Some("http 410".into()),
        ..StatusMessage::new(&event, StatusOutcome::DeadLettered, attempts, 0)
    }
}
