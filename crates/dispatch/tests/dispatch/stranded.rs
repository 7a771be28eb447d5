//! Events that must not be stranded: a record the store cannot process is dead-lettered with its reason instead
//! of holding its partition, and a lane message of an older replay generation leaves a replayed event to the
//! outbox sweeper instead of claiming it for a generation nothing was published for.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use chrono::Utc;
use herald_dispatch::Counter;
use herald_domain::{Attempt, AttemptOutcome, ErrorClass, Lane, LaneMessage, Priority, Status};
use herald_platform::mongo::EVENTS;
use herald_platform::store::Claim;
use herald_test_support::eventually;
use mongodb::bson::{doc, Document};
use rdkafka::message::Message;

use super::support::{kafka_header, read_until, webhook, Harness, Receiver};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_decode_is_dead_lettered_and_the_partition_goes_on() -> Result<()> {
    let harness = Harness::new("dispatch-undecodable").await?;
    let receiver = Receiver::start().await?;
    let user = "grace";
    let broken = webhook(Priority::Default, user, &receiver.url("/hook"));
    // Written around the store, as a bad migration or a hand edit would: a status no version of Herald knows.
    let created = mongodb::bson::DateTime::from_chrono(broken.created_at);
    harness
        .db
        .collection::<Document>(EVENTS)
        .insert_one(doc! {
            "eventId": broken.event_id.as_str(),
            "userId": user,
            "channel": "webhook",
            "priority": "default",
            "payload": { "url": receiver.url("/hook") },
            "status": "SHIPPED_BY_PIGEON",
            "createdAt": created,
            "updatedAt": created,
        })
        .await?;
    let broken_partition = harness.publish(&LaneMessage::first(broken.clone())).await?;
    let behind = webhook(Priority::Default, user, &receiver.url("/hook"));
    ensure!(
        harness.seed(&behind).await? == broken_partition,
        "same key, same partition"
    );
    let dispatcher = harness.start(Lane::Default, &[]).await?;

    harness
        .wait_for_status(&behind.event_id, Status::Delivered, WAIT)
        .await;
    let dead = read_until(
        &harness.ctx,
        &harness.ctx.topics.dead_letters(),
        WAIT,
        |m| {
            let id = kafka_header(m, "herald-event-id");
            let raw = m.payload().map(String::from_utf8_lossy).unwrap_or_default();
            (id.as_deref() == Some(broken.event_id.as_str())
                || raw.contains(broken.event_id.as_str()))
            .then(|| m.clone())
        },
    )
    .await?;
    let reason = kafka_header(&dead, "herald-dlq-reason").unwrap_or_default();
    ensure!(reason.contains("SHIPPED_BY_PIGEON"), "reason: {reason}");
    ensure!(dead.key() == Some(user.as_bytes()));
    let raw = harness
        .db
        .collection::<Document>(EVENTS)
        .find_one(doc! { "eventId": broken.event_id.as_str() })
        .await?
        .context("the broken record")?;
    ensure!(raw.get_str("status") == Ok("DEAD_LETTERED"), "{raw}");
    ensure!(
        raw.get_str("deadLetterReason")
            .is_ok_and(|r| r.contains("SHIPPED_BY_PIGEON")),
        "{raw}"
    );
    ensure!(dispatcher.stats.get(Counter::DeadLettered) == 1);
    let hits = receiver.hits_by_event();
    ensure!(
        !hits.contains_key(broken.event_id.as_str()),
        "nothing sent for the broken record"
    );

    dispatcher.stop().await?;
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_an_older_replay_leaves_the_replayed_event_to_the_outbox() -> Result<()> {
    let harness = Harness::new("dispatch-replay-gen").await?;
    let receiver = Receiver::start().await?;
    let hook = webhook(Priority::Default, "ada", &receiver.url("/hook"));
    harness.seed(&hook).await?;
    // The first lane message's attempt failed for good and the event was dead-lettered (as a dispatcher and the
    // retry scheduler would leave it)...
    let claim = harness
        .store
        .claim(&hook.event_id, 1, 0, Duration::from_secs(30))
        .await?;
    ensure!(matches!(claim, Claim::Send(_)), "{claim:?}");
    let now = Utc::now();
    let failed = Attempt {
        number: 1,
        provider: "webhook".into(),
        started_at: now,
        ended_at: now,
        outcome: AttemptOutcome::Failed,
        error_class: Some(ErrorClass::Permanent),
        error: Some("HTTP 400".into()),
        http_status: Some(400),
        retry_after_secs: None,
    };
    ensure!(
        harness
            .store
            .record_failed(&hook.event_id, &failed, 0)
            .await?
    );
    harness
        .store
        .dead_letter(&hook.event_id, 1, 0, "permanent error on attempt 1")
        .await?;
    // ...then replayed, and the replay's publish failed: QUEUED in replay generation 1, nothing on the lane.
    let replayed = harness
        .store
        .replay_dead_letter(&hook.event_id, 0, "test".into())
        .await?
        .context("replayed")?;
    ensure!(replayed.status == Status::Queued && replayed.replay_count == 1);

    let dispatcher = harness.start(Lane::Default, &[]).await?;
    // The first lane message (generation 0) comes again: the offset had not been committed before a restart.
    harness.publish(&LaneMessage::first(hook.clone())).await?;
    // Both messages of generation 0 (the seeded one and its copy) are skipped.
    eventually(
        WAIT,
        "the old generation's messages to be skipped",
        || async {
            match dispatcher.stats.get(Counter::Skipped) {
                2 => Ok(()),
                n => Err(format!("skipped {n}")),
            }
        },
    )
    .await;
    let record = harness
        .store
        .find(&hook.event_id)
        .await?
        .context("record")?;
    ensure!(
        record.status == Status::Queued,
        "a message of replay 0 moved replay 1 to {}",
        record.status
    );
    // So the outbox sweeper still sees it, and publishes it as ingest's does: the current generation.
    let outbox = harness
        .store
        .unpublished_before(Utc::now() + chrono::Duration::seconds(1), 100)
        .await?
        .events;
    let pending = outbox
        .iter()
        .find(|r| r.event_id == hook.event_id)
        .context("the replayed event in the outbox")?;
    harness
        .publish(&LaneMessage {
            replay_count: pending.replay_count,
            ..LaneMessage::first(pending.event())
        })
        .await?;
    harness
        .wait_for_status(&hook.event_id, Status::Delivered, WAIT)
        .await;
    ensure!(
        receiver
            .hits_by_event()
            .get(hook.event_id.as_str())
            .map(Vec::len)
            == Some(1)
    );

    dispatcher.stop().await?;
    harness.finish().await
}
