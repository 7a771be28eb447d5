//! Dependencies away: without Kafka the event is recorded and swept out later (outbox); without MongoDB
//! nothing is accepted and nothing published.

use std::time::Duration;

use anyhow::{Context, Result};
use herald_domain::{Lane, Status};
use herald_ingest::Config;
use herald_platform::MongoConfig;
use herald_test_support::{eventually, TestContext};
use serde_json::json;

use super::support::{lane_consumer, lane_count, next_message, record, unpublished, Service};

#[tokio::test]
async fn without_kafka_the_event_stays_pending_until_the_sweeper_publishes_it() -> Result<()> {
    let ctx = TestContext::new("ingest-kafka-down").await?;
    let mut dead_kafka = ctx.kafka.clone();
    dead_kafka.brokers = "127.0.0.1:1".into();
    dead_kafka.message_timeout = Duration::from_millis(1500);
    let mut config = Config::for_test(dead_kafka, ctx.mongo.clone());
    config.sweep.interval = Duration::from_millis(200);
    config.sweep.age = Duration::from_millis(300);
    let service = Service::start_with(config).await?;

    let body = json!({"eventId": "outbox-1", "userId": "u5", "channel": "email", "priority": "critical",
        "payload": {"to": "ada@example.com", "subject": "Later", "text": "Eventually"}});
    let (status, answer) = service.post("/event", &body).await?;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        answer,
        json!({"error": "Service unavailable", "details": [{"field": "kafka", "message":
            "did not acknowledge the event; it is recorded and will be published when Kafka is back: \
             retry with the same Idempotency-Key or eventId to learn its status"}]})
    );
    service.stop().await?;
    let stored = record(&ctx, "outbox-1")
        .await?
        .context("recorded before publishing")?;
    assert_eq!(stored.status, Status::Queued);
    let waiting = unpublished(&ctx).await?;
    assert!(
        waiting.iter().any(|r| r.event_id.as_str() == "outbox-1"),
        "in the outbox: {waiting:?}"
    );
    assert_eq!(lane_count(&ctx, Lane::Critical).await?, 0);

    // Kafka is back: a new instance with the same database and prefix sweeps the outbox.
    let service = Service::start(&ctx, |config| {
        config.sweep.interval = Duration::from_millis(200);
        config.sweep.age = Duration::from_millis(300);
    })
    .await?;
    let consumer = lane_consumer(&ctx, Lane::Critical).await?;
    let received = next_message(&consumer).await?;
    assert_eq!(received.message.event, stored.event());
    assert_eq!(received.message.attempt, 1);
    eventually(
        Duration::from_secs(15),
        "the swept event's outbox entry to go",
        || async {
            match unpublished(&ctx).await {
                Ok(left) if left.is_empty() => Ok(()),
                other => Err(format!("{:?}", other.map(|l| l.len()))),
            }
        },
    )
    .await;
    assert_eq!(
        record(&ctx, "outbox-1").await?.map(|r| r.status),
        Some(Status::Queued)
    );
    // A retry of the original request now learns the status, and publishes nothing more.
    let (status, answer) = service.post("/event", &body).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"eventId": "outbox-1", "status": "QUEUED", "priority": "critical"})
    );
    assert_eq!(lane_count(&ctx, Lane::Critical).await?, 1);
    service.stop().await
}

#[tokio::test]
async fn without_mongodb_nothing_is_accepted_or_published() -> Result<()> {
    let ctx = TestContext::new("ingest-mongo-down").await?;
    let dead_mongo = MongoConfig::new(
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=1000",
        &ctx.mongo.database,
    );
    let service = Service::start_with(Config::for_test(ctx.kafka.clone(), dead_mongo)).await?;

    let body = json!({"channel": "sms", "priority": "critical",
        "payload": {"phoneNumber": "+12025555555", "message": "hi"}});
    let (status, answer) = service.post("/event", &body).await?;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        answer,
        json!({"error": "Service unavailable", "details": [{"field": "mongodb",
            "message": "did not answer; the event was not accepted, try again later"}]})
    );
    assert_eq!(lane_count(&ctx, Lane::Critical).await?, 0);
    assert_eq!(lane_count(&ctx, Lane::Default).await?, 0);

    let (status, ready) =
        super::support::answer(service.http.get(service.url("/api/ready")).send().await?).await?;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["details"][0]["field"], "mongodb");
    service.stop().await
}
