//! The pipeline over SASL_SSL: ingest, the dispatchers, the retry scheduler and the alert service on a Kafka broker of
//! this test's own that takes only SSL and SASL_SSL clients, with certificates generated at test time.

use std::time::Duration;

use anyhow::{ensure, Result};
use herald_domain::Status;
use herald_e2e::{Herald, Receiver};
use herald_test_support::secure_kafka::SecureKafka;
use serde_json::json;

#[tokio::test]
async fn an_event_is_ingested_and_delivered_over_sasl_ssl() -> Result<()> {
    let broker = SecureKafka::start().await?;
    let mechanism = Some("SCRAM-SHA-512");
    let herald = Herald::start_on_kafka(
        broker.config(mechanism)?,
        &broker.env(mechanism),
        "e2e-sasl-ssl",
        "[default]\nbase_ms = 500\n",
    )
    .await?;
    // One failure first, so the retry scheduler's consumers and producer take part too.
    let receiver = Receiver::start(1, 503).await?;
    let id = herald
        .post_event(json!({
            "channel": "webhook",
            "payload": {"url": receiver.url, "body": {"over": "sasl_ssl"}},
        }))
        .await?;
    let record = herald
        .wait_for(&id, Status::Delivered, Duration::from_secs(180))
        .await;
    ensure!(record.attempts.len() == 2, "{:?}", record.attempts);
    ensure!(receiver.hits(&id).len() == 2, "{:?}", receiver.hits(&id));
    // Every service shuts down cleanly over SASL_SSL (final commits, leaving the groups) before the broker goes.
    herald.stop().await?;
    broker.stop()
}
