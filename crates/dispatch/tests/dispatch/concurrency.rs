//! Concurrency within a partition: messages of different users on one partition are sent in parallel, while one
//! user's messages go one after the other, in partition order; each is sent once.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_domain::{Event, Lane, LaneMessage, Priority, Status};
use herald_platform::store::EventRecord;
use rdkafka::producer::FutureRecord;

use super::support::{webhook, Harness, Receiver};

/// How long the receiver holds each request: far longer than the store work around a send, so that whether
/// sends overlap does not depend on how loaded the machine is.
const HOLD_MS: u64 = 1500;

/// Records `event` as accepted and publishes its first lane message to partition 0 of its lane, whatever its key.
async fn seed_on_partition_zero(harness: &Harness, event: &Event) -> Result<()> {
    harness
        .store
        .insert_accepted(&EventRecord::accepted(event), None)
        .await?;
    let payload = serde_json::to_vec(&LaneMessage::first(event.clone()))?;
    let topic = harness.ctx.topics.lane(Lane::for_priority(event.priority));
    let record = FutureRecord::to(&topic)
        .partition(0)
        .key(event.partition_key())
        .payload(&payload);
    harness
        .producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .context("publishing to partition 0")?;
    harness
        .store
        .mark_published(&[(event.event_id.clone(), 0)])
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_users_on_one_partition_are_sent_in_parallel_and_one_users_in_order() -> Result<()>
{
    let harness = Harness::new("dispatch-concurrency").await?;
    let receiver = Receiver::start().await?;
    let url = receiver.url(&format!("/delay/{HOLD_MS}"));
    // Four users with one event each, then one user with four events, all on partition 0.
    let others: Vec<Event> = (0..4)
        .map(|n| webhook(Priority::Default, &format!("user-{n}"), &url))
        .collect();
    let ordered: Vec<Event> = (0..4)
        .map(|_| webhook(Priority::Default, "one-user", &url))
        .collect();
    for event in others.iter().chain(&ordered) {
        seed_on_partition_zero(&harness, event).await?;
    }
    let dispatcher = harness
        .start(Lane::Default, &[("HERALD_DISPATCH_CONCURRENCY", "8")])
        .await?;
    for event in others.iter().chain(&ordered) {
        harness
            .wait_for_status(&event.event_id, Status::Delivered, Duration::from_secs(90))
            .await;
    }

    let by_event = receiver.hits_by_event();
    for event in others.iter().chain(&ordered) {
        let hits = by_event.get(event.event_id.as_str()).map_or(0, Vec::len);
        ensure!(hits == 1, "{} was sent {hits} times", event.event_id);
    }
    let arrived = |event: &Event| by_event[event.event_id.as_str()][0].at;
    // In parallel: the four users' sends (and the first of the one user's) overlap. One after the other, each
    // would arrive at least HOLD_MS after the one before it.
    let mut starts: Vec<_> = others.iter().map(arrived).collect();
    starts.push(arrived(&ordered[0]));
    starts.sort();
    let spread = starts[starts.len() - 1] - starts[0];
    ensure!(
        spread < Duration::from_millis(HOLD_MS),
        "five sends of different users took {spread:?} to start: not in parallel"
    );
    // In order: each of the one user's events starts after the one before it was answered.
    for pair in ordered.windows(2) {
        let gap = arrived(&pair[1]) - arrived(&pair[0]);
        ensure!(
            gap >= Duration::from_millis(HOLD_MS),
            "{} started {gap:?} after {}, before it was answered",
            pair[1].event_id,
            pair[0].event_id
        );
    }
    dispatcher.stop().await?;
    harness.finish().await
}
