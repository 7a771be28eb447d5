//! Messages that come more than once, or not as they should: a redelivered lane message is harmless, an event
//! held by a dead dispatcher's lease is taken over when the lease runs out, and a poison message is dead-lettered
//! without holding up its partition.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use herald_dispatch::Counter;
use herald_domain::{Lane, LaneMessage, Priority, Status};
use herald_platform::store::{Claim, EventRecord};
use herald_test_support::eventually;
use rdkafka::message::Message;

use super::support::{kafka_header, read_until, webhook, Harness, Receiver};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_lane_message_twice_delivers_once() -> Result<()> {
    let harness = Harness::new("dispatch-twice").await?;
    let receiver = Receiver::start().await?;
    let dispatcher = harness.start(Lane::Default, &[]).await?;
    let hook = webhook(Priority::Default, "ada", &receiver.url("/hook"));
    harness.seed(&hook).await?;
    harness.publish(&LaneMessage::first(hook.clone())).await?;

    harness
        .wait_for_status(&hook.event_id, Status::Delivered, WAIT)
        .await;
    eventually(WAIT, "the second copy to be skipped", || async {
        let skipped = dispatcher.stats.get(Counter::Skipped);
        if skipped == 1 {
            Ok(())
        } else {
            Err(format!("skipped {skipped}"))
        }
    })
    .await;
    let hits = receiver.hits_by_event();
    ensure!(
        hits.get(hook.event_id.as_str()).map(Vec::len) == Some(1),
        "hits: {:?}",
        hits.keys()
    );
    let record = harness.store.find(&hook.event_id).await?;
    ensure!(
        record.is_some_and(|r| r.attempts.len() == 1),
        "one attempt recorded"
    );
    ensure!(dispatcher.stats.get(Counter::Delivered) == 1);

    dispatcher.stop().await?;
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over() -> Result<()> {
    let harness = Harness::new("dispatch-lease").await?;
    let receiver = Receiver::start().await?;
    let hook = webhook(Priority::Critical, "ada", &receiver.url("/hook"));
    harness
        .store
        .insert_accepted(&EventRecord::accepted(&hook), None)
        .await?;
    // A dispatcher claimed the event for 3 s and died mid-send.
    let lease = Duration::from_secs(3);
    let claimed_at = Instant::now();
    let claim = harness.store.claim(&hook.event_id, 1, 0, lease).await?;
    ensure!(matches!(claim, Claim::Send(_)), "{claim:?}");

    let dispatcher = harness.start(Lane::Critical, &[]).await?;
    harness.publish(&LaneMessage::first(hook.clone())).await?;
    let record = harness
        .wait_for_status(&hook.event_id, Status::Delivered, WAIT)
        .await;
    let hits = receiver.hits();
    ensure!(
        hits.len() == 1,
        "sent once, by the new dispatcher: {}",
        hits.len()
    );
    ensure!(
        hits[0].at.duration_since(claimed_at) >= lease - Duration::from_millis(100),
        "sent {:?} after the claim, before the lease ran out",
        hits[0].at.duration_since(claimed_at)
    );
    ensure!(record.attempts.len() == 1);

    dispatcher.stop().await?;
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_and_its_partition_goes_on() -> Result<()> {
    let harness = Harness::new("dispatch-poison").await?;
    let receiver = Receiver::start().await?;
    let user = "poisoned-user";
    let poison_partition = harness
        .publish_raw(Lane::Default, user, b"{\"this is\": not a lane message")
        .await?;
    let mut behind = Vec::new();
    for _ in 0..3 {
        let hook = webhook(Priority::Default, user, &receiver.url("/hook"));
        let partition = harness.seed(&hook).await?;
        ensure!(partition == poison_partition, "same key, same partition");
        behind.push(hook);
    }
    let dispatcher = harness.start(Lane::Default, &[]).await?;

    for hook in &behind {
        harness
            .wait_for_status(&hook.event_id, Status::Delivered, WAIT)
            .await;
    }
    let lane_topic = harness.ctx.topics.lane(Lane::Default);
    let dead = read_until(
        &harness.ctx,
        &harness.ctx.topics.dead_letters(),
        WAIT,
        |m| Some(m.clone()),
    )
    .await?;
    ensure!(
        dead.payload() == Some(&b"{\"this is\": not a lane message"[..]),
        "raw payload kept"
    );
    ensure!(dead.key() == Some(user.as_bytes()));
    let reason = kafka_header(&dead, "herald-dlq-reason").unwrap_or_default();
    ensure!(reason.starts_with("not a lane message"), "reason: {reason}");
    ensure!(kafka_header(&dead, "herald-original-topic") == Some(lane_topic));
    ensure!(kafka_header(&dead, "herald-original-partition") == Some(poison_partition.to_string()));
    ensure!(kafka_header(&dead, "herald-original-offset") == Some("0".into()));
    ensure!(dispatcher.stats.get(Counter::DeadLettered) == 1);
    // Order within the partition is kept: the events behind the poison arrive in the order they were published.
    let order: Vec<String> = receiver
        .hits()
        .iter()
        .filter_map(|h| h.header("herald-event-id").map(str::to_owned))
        .collect();
    let expected: Vec<String> = behind.iter().map(|e| e.event_id.to_string()).collect();
    ensure!(order == expected, "{order:?} != {expected:?}");

    dispatcher.stop().await?;
    harness.finish().await
}
