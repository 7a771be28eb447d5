//! Every recorded step is published on the status topic, keyed like its event, for herald-alert and other
//! watchers: a delivered attempt, a failed one (before its retry request), a recorded record-only event.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{ensure, Result};
use herald_domain::{Lane, Priority, StatusMessage, StatusOutcome};
use rdkafka::message::Message;
use serde_json::json;

use super::support::{event, read_until, webhook, Harness, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_failed_and_recorded_steps_are_published() -> Result<()> {
    let harness = Harness::new("dispatch-status").await?;
    let receiver = Receiver::start().await?;
    let dispatcher = harness.start(Lane::Default, &[]).await?;
    let delivered = webhook(Priority::Default, "ada", &receiver.url("/ok"));
    let failed = webhook(Priority::Default, "grace", &receiver.url("/status/500"));
    let mut recorded = event(None, Priority::Default, "linus", json!({}));
    recorded.event_type = Some("request.failed".into());
    recorded.metadata = Some(json!({"ip": "10.0.0.1", "reason": "401"}));
    for e in [&delivered, &failed, &recorded] {
        harness.seed(e).await?;
    }

    let ids = [
        delivered.event_id.to_string(),
        failed.event_id.to_string(),
        recorded.event_id.to_string(),
    ];
    let mut steps: HashMap<String, StatusMessage> = HashMap::new();
    let topic = harness.ctx.topics.status();
    read_until(&harness.ctx, &topic, Duration::from_secs(60), |message| {
        let step: StatusMessage = serde_json::from_slice(message.payload()?).ok()?;
        let key = String::from_utf8_lossy(message.key()?).into_owned();
        if ids.contains(&step.event_id.to_string()) {
            steps.insert(step.event_id.to_string(), step);
            assert!(
                ["ada", "grace", "linus"].contains(&key.as_str()),
                "keyed by user: {key}"
            );
        }
        (steps.len() == ids.len()).then_some(())
    })
    .await?;

    let step = &steps[&ids[0]];
    ensure!(
        step.outcome == StatusOutcome::Delivered
            && step.attempt == 1
            && step.provider.as_deref() == Some("webhook"),
        "{step:?}"
    );
    let step = &steps[&ids[1]];
    ensure!(
        step.outcome == StatusOutcome::Failed
            && step.attempt == 1
            && step.error.as_deref().is_some_and(|e| e.contains("500")),
        "{step:?}"
    );
    let step = &steps[&ids[2]];
    ensure!(
        step.outcome == StatusOutcome::Recorded
            && step.event_type.as_deref() == Some("request.failed")
            && step.metadata == Some(json!({"ip": "10.0.0.1", "reason": "401"})),
        "{step:?}"
    );

    dispatcher.stop().await?;
    harness.finish().await
}
