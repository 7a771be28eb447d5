//! From `POST /event` to a delivered, retried or dead-lettered event, through every service.

use std::time::Duration;

use anyhow::{ensure, Result};
use herald_domain::{AttemptOutcome, ErrorClass, Status};
use herald_e2e::{Herald, Receiver};
use herald_test_support::{eventually, stack, unique_name};
use serde_json::json;

#[tokio::test]
async fn an_email_goes_from_post_to_the_smtp_sink() -> Result<()> {
    let herald = Herald::start("e2e-email", "").await?;
    let to = format!("{}@example.com", unique_name("e2e"));
    let id = herald
        .post_event(json!({
            "userId": "u-1",
            "eventType": "order.shipped",
            "channel": "email",
            "priority": "critical",
            "payload": {"to": to, "subject": "Shipped", "text": "On its way"},
        }))
        .await?;
    let record = herald
        .wait_for(&id, Status::Delivered, Duration::from_secs(30))
        .await;
    ensure!(record.attempts.len() == 1, "{:?}", record.attempts);
    let api = &stack().smtp_api;
    let found = eventually(Duration::from_secs(10), "the mail in the sink", || async {
        let answer: serde_json::Value = reqwest::get(format!("{api}/api/v1/search?query=to:{to}"))
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if answer["total"] == 1 {
            Ok(answer)
        } else {
            Err(answer.to_string())
        }
    })
    .await;
    ensure!(found["messages"][0]["Subject"] == "Shipped", "{found}");
    Ok(())
}

#[tokio::test]
async fn a_webhook_failing_twice_is_delivered_on_attempt_3_on_schedule() -> Result<()> {
    // base 500 ms: both backoffs are at most 500 ms and 1 s, so each waits exactly the 1 s tier.
    let herald = Herald::start("e2e-retry", "[default]\nbase_ms = 500\nmax_attempts = 5\n").await?;
    let receiver = Receiver::start(2, 503).await?;
    let id = herald
        .post_event(json!({
            "channel": "webhook",
            "payload": {"url": receiver.url, "body": {"invoice": 7}},
        }))
        .await?;
    let record = herald
        .wait_for(&id, Status::Delivered, Duration::from_secs(60))
        .await;
    let attempts = &record.attempts;
    ensure!(attempts.len() == 3, "attempts: {attempts:?}");
    ensure!(
        attempts[0].outcome == AttemptOutcome::Failed
            && attempts[1].outcome == AttemptOutcome::Failed
    );
    ensure!(attempts[0].error_class == Some(ErrorClass::Retryable));
    ensure!(attempts[2].outcome == AttemptOutcome::Delivered);
    ensure!(
        receiver.hits(&id).len() == 3,
        "receiver saw {:?}",
        receiver.hits(&id)
    );
    // The gap between attempts is the 1 s tier, never less, plus the pipeline's own latency.
    for pair in attempts.windows(2) {
        let gap = (pair[1].started_at - pair[0].ended_at).num_milliseconds();
        eprintln!("gap before attempt {}: {gap} ms", pair[1].number);
        ensure!(
            (1_000..=4_000).contains(&gap),
            "gap before attempt {} was {gap} ms",
            pair[1].number
        );
    }
    let kinds: Vec<&str> = record.timeline.iter().map(|e| e.kind.as_str()).collect();
    ensure!(
        kinds.iter().filter(|k| **k == "retry_scheduled").count() == 2,
        "timeline {kinds:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_always_failing_webhook_is_dead_lettered_after_the_maximum() -> Result<()> {
    let herald = Herald::start("e2e-dlq", "[default]\nbase_ms = 100\nmax_attempts = 3\n").await?;
    let receiver = Receiver::start(usize::MAX, 500).await?;
    let id = herald
        .post_event(json!({
            "channel": "webhook",
            "priority": "critical",
            "payload": {"url": receiver.url, "body": {}},
        }))
        .await?;
    let record = herald
        .wait_for(&id, Status::DeadLettered, Duration::from_secs(60))
        .await;
    ensure!(record.attempts.len() == 3, "{:?}", record.attempts);
    ensure!(receiver.hits(&id).len() == 3);
    Ok(())
}

#[tokio::test]
async fn a_permanent_error_is_dead_lettered_at_once() -> Result<()> {
    let herald = Herald::start("e2e-permanent", "").await?;
    let receiver = Receiver::start(usize::MAX, 400).await?;
    let id = herald
        .post_event(json!({"channel": "webhook", "payload": {"url": receiver.url, "body": {}}}))
        .await?;
    let record = herald
        .wait_for(&id, Status::DeadLettered, Duration::from_secs(30))
        .await;
    ensure!(record.attempts.len() == 1, "{:?}", record.attempts);
    ensure!(record.attempts[0].error_class == Some(ErrorClass::Permanent));
    Ok(())
}

#[tokio::test]
async fn record_only_events_and_activity_logs_end_recorded() -> Result<()> {
    let herald = Herald::start("e2e-record", "").await?;
    let id = herald
        .post_event(json!({"userId": "u-9", "eventType": "request.failed", "payload": {}, "metadata": {"ip": "10.1.2.3"}}))
        .await?;
    herald
        .wait_for(&id, Status::Recorded, Duration::from_secs(30))
        .await;
    let response = herald
        .http
        .post(format!("{}/api/logs", herald.ingest_url))
        .json(&json!({"userId": "u-9", "activityType": "balance.inquiry"}))
        .send()
        .await?;
    ensure!(response.status() == 202);
    let answer: serde_json::Value = response.json().await?;
    let log_id = herald_domain::EventId::parse(answer["eventId"].as_str().unwrap_or_default())?;
    let record = herald
        .wait_for(&log_id, Status::Recorded, Duration::from_secs(30))
        .await;
    ensure!(record.event_type.as_deref() == Some("balance.inquiry"));
    Ok(())
}
