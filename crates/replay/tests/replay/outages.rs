//! Kafka away during a replay: the claimed events stay in the outbox with their new replay count, the answer says so,
//! and replay's own outbox sweeper publishes them, with that replay count, once Kafka answers (no herald-ingest is
//! running).

use std::time::Duration;

use anyhow::Result;
use herald_domain::{Lane, Status};
use herald_platform::store::Claim;
use herald_test_support::eventually;
use serde_json::json;

use super::support::{Fixture, Service, Spec};

#[tokio::test]
async fn without_kafka_replayed_events_stay_in_the_outbox_until_the_sweeper_publishes_them(
) -> Result<()> {
    let fx = Fixture::new("replay-kafka-down").await?;
    for id in ["down-1", "down-2"] {
        fx.dead_letter(&Spec::new(id)).await?;
    }
    let service = Service::start(&fx.ctx, |config| {
        config.kafka.brokers = "127.0.0.1:1".into();
        config.kafka.message_timeout = Duration::from_millis(1500);
    })
    .await?;
    let (status, body) = service.replay(&json!({})).await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "Service unavailable");
    assert_eq!(body["details"][0]["field"], "kafka");
    service.stop().await?;

    let mut n_pending = 0;
    for id in ["down-1", "down-2"] {
        let record = fx.record(id).await?;
        match record.status {
            Status::Queued => {
                assert_eq!(record.replay_count, 1, "{id}");
                assert_eq!(record.attempt_count, 0, "{id}");
                n_pending += 1;
            }
            Status::DeadLettered => assert_eq!(record.replay_count, 0, "{id}"),
            other => panic!("{id} is {other}"),
        }
    }
    assert!(
        n_pending >= 1,
        "the first claim happens before the first publish"
    );
    let message = body["details"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("{n_pending} more are QUEUED in the outbox")),
        "{message}"
    );
    assert_eq!(fx.lane_count(Lane::Default).await?, 0);
    let in_outbox = fx
        .store
        .unpublished_before(chrono::Utc::now() + chrono::Duration::seconds(1), 100)
        .await?
        .events;
    assert_eq!(in_outbox.len(), n_pending, "{in_outbox:?}");

    // Kafka is back: replay's outbox sweeper publishes the ones in the outbox, with their replay count.
    let service = Service::start(&fx.ctx, |config| {
        config.sweep.interval = Duration::from_millis(200);
        config.sweep.age = Duration::from_millis(300);
    })
    .await?;
    let swept = eventually(
        Duration::from_secs(20),
        "the sweeper to publish",
        || async {
            match fx.lane_messages(Lane::Default).await {
                Ok(messages) if messages.len() == n_pending => Ok(messages),
                other => Err(format!("{:?}", other.map(|m| m.len()))),
            }
        },
    )
    .await;
    for received in &swept {
        assert_eq!(received.message.replay_count, 1);
        assert_eq!(received.message.attempt, 1);
        let id = &received.message.event.event_id;
        let record = fx.record(id.as_str()).await?;
        assert_eq!(record.status, Status::Queued);
        let claim = fx
            .store
            .claim(
                id,
                1,
                received.message.replay_count,
                Duration::from_secs(30),
            )
            .await?;
        assert!(
            matches!(claim, Claim::Send(_)),
            "a dispatcher takes it: {claim:?}"
        );
    }
    eventually(
        Duration::from_secs(10),
        "the sweeper to clear the outbox",
        || async {
            match fx
                .store
                .unpublished_before(chrono::Utc::now() + chrono::Duration::seconds(1), 100)
                .await
            {
                Ok(left) if left.events.is_empty() => Ok(()),
                other => Err(format!("{:?}", other.map(|l| l.events.len()))),
            }
        },
    )
    .await;

    // What the failed replay did not claim, a second one takes.
    let (status, body) = service.replay(&json!({})).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replayed"], 2 - n_pending);
    service.stop().await
}
