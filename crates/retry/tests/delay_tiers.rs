//! The delay-tier consumer against the real stack: a wait longer than its tier goes through the tier once per tier
//! length, not in a loop (defect 1), and a held head of a partition taken away by a rebalance is fired by the
//! partition's new owner only (defect 6).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use chrono::Utc;
use herald_domain::retry::RetryRules;
use herald_domain::{Channel, DelayedRetry, Event, EventId, Lane, LaneMessage, Priority};
use herald_platform::kafka::{build_consumer, build_producer};
use herald_platform::KafkaConfig;
use herald_retry::{App, Config};
use herald_test_support::{eventually, spawn, unique_name, Spawned, TestContext};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Starts a herald-retry of `ctx` with the default rules and `tiers`.
async fn start(ctx: &TestContext, tiers: &[u64]) -> Result<Spawned<App>> {
    let config = Config::for_test(
        ctx.kafka.clone(),
        ctx.mongo.clone(),
        RetryRules::default(),
        tiers,
    );
    spawn::<App>(config).await
}

fn delayed(due_in: chrono::Duration, tier_secs: u64) -> DelayedRetry {
    let id = EventId::generate();
    DelayedRetry {
        message: LaneMessage {
            event: Event {
                user_id: Some(format!("user-{id}")),
                event_id: id,
                event_type: Some("invoice.ready".into()),
                channel: Some(Channel::Webhook),
                priority: Priority::Default,
                payload: serde_json::json!({"url": "http://127.0.0.1:9/hook", "body": {}}),
                metadata: None,
                created_at: Utc::now(),
            },
            attempt: 2,
            replay_count: 0,
            provider: None,
            enqueued_at: Utc::now(),
        },
        due_at: Utc::now() + due_in,
        tier_secs,
    }
}

async fn publish(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    retry: &DelayedRetry,
) -> Result<()> {
    let payload = serde_json::to_vec(retry)?;
    let mut record = FutureRecord::to(topic)
        .key(retry.message.event.partition_key())
        .payload(&payload);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// The partitions of `topic` and the sum of their ends.
async fn topic_ends(kafka: &KafkaConfig, topic: &str) -> Result<(Vec<i32>, i64)> {
    let probe: BaseConsumer = herald_platform::kafka::client_config(kafka).create()?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || -> Result<(Vec<i32>, i64)> {
        let timeout = Duration::from_secs(5);
        let metadata = probe.fetch_metadata(Some(&topic), timeout)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut sum = 0;
        for p in &partitions {
            sum += probe.fetch_watermarks(&topic, *p, timeout)?.1;
        }
        Ok((partitions, sum))
    })
    .await?
}

/// Waits until `group` is stable with `members` members (each has its assignment).
async fn group_is_stable_with(kafka: &KafkaConfig, group: &str, members: usize) {
    eventually(
        Duration::from_secs(30),
        &format!("{group} to be stable with {members} members"),
        || async {
            let probe: BaseConsumer = herald_platform::kafka::client_config(kafka)
                .create()
                .map_err(|e| e.to_string())?;
            let group = group.to_owned();
            tokio::task::spawn_blocking(move || {
                let list = probe
                    .fetch_group_list(Some(&group), Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                let info = list.groups().first().ok_or("no such group")?;
                if info.state() == "Stable" && info.members().len() == members {
                    Ok(())
                } else {
                    Err(format!(
                        "{} with {} members",
                        info.state(),
                        info.members().len()
                    ))
                }
            })
            .await
            .map_err(|e| e.to_string())?
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_beyond_the_longest_tier_goes_through_it_once_per_tier_length() -> Result<()> {
    let tiers = [1, 2];
    let ctx = TestContext::with_tiers("delay-long-wait", &tiers).await?;
    let scheduler = start(&ctx, &tiers).await?;
    let producer = build_producer(&ctx.kafka)?;
    let tier = ctx.topics.delay(2);
    // Due in an hour, on the 2 s tier: it must come back through the tier about every 2 s, not every few ms.
    let retry = delayed(chrono::Duration::hours(1), 2);
    let published = Instant::now();
    publish(&producer, &tier, None, &retry).await?;
    eventually(
        Duration::from_secs(30),
        "the long wait to pass through its tier three more times",
        || async {
            let (_, end) = topic_ends(&ctx.kafka, &tier)
                .await
                .map_err(|e| e.to_string())?;
            if end >= 4 {
                Ok(())
            } else {
                Err(format!("{end} messages on the tier"))
            }
        },
    )
    .await;
    let took = published.elapsed();
    // Three passes at one per tier length take 6 s; the busy loop took milliseconds.
    ensure!(
        took >= Duration::from_secs(4),
        "three republishes within {took:?}: more than one per tier length"
    );
    let (_, lane_end) = topic_ends(&ctx.kafka, &ctx.topics.lane(Lane::Retry)).await?;
    ensure!(lane_end == 0, "a retry due in an hour was fired");
    scheduler.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_held_on_a_revoked_partition_is_fired_by_its_new_owner_only() -> Result<()> {
    let tiers = [30];
    let ctx = TestContext::with_tiers("delay-revoked", &tiers).await?;
    let producer = build_producer(&ctx.kafka)?;
    let tier = ctx.topics.delay(30);
    // Right after the topic is created its partitions may have no leader yet.
    // Right after the topic is created the metadata may also list fewer partitions than it has: wait for several.
    let (partitions, _) = eventually(Duration::from_secs(30), "the tier's partitions", || async {
        match topic_ends(&ctx.kafka, &tier).await {
            Ok(found) if found.0.len() > 1 => Ok(found),
            Ok(found) => Err(format!("{} partition(s) so far", found.0.len())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    ensure!(partitions.len() > 1, "the tier needs several partitions");
    // A head on every partition, due in 15 s, and behind each a marker due a second later.
    let heads: Vec<DelayedRetry> = partitions
        .iter()
        .map(|_| delayed(chrono::Duration::seconds(15), 30))
        .collect();
    let markers: Vec<DelayedRetry> = partitions
        .iter()
        .map(|_| delayed(chrono::Duration::seconds(16), 30))
        .collect();
    for ((partition, head), marker) in partitions.iter().zip(&heads).zip(&markers) {
        publish(&producer, &tier, Some(*partition), head).await?;
        publish(&producer, &tier, Some(*partition), marker).await?;
    }
    let lane: StreamConsumer = build_consumer(&ctx.kafka, &ctx.group(&unique_name("lane-reader")))?;
    lane.subscribe(&[&ctx.topics.lane(Lane::Retry)])?;
    // The first scheduler holds every head; the second takes some partitions away from it before they are due.
    let first = start(&ctx, &tiers).await?;
    let group = format!("{}herald-retry-delay", ctx.topics.prefix());
    group_is_stable_with(&ctx.kafka, &group, 1).await;
    let second = start(&ctx, &tiers).await?;
    group_is_stable_with(&ctx.kafka, &group, 2).await;
    ensure!(
        Utc::now() < heads[0].due_at,
        "the second scheduler joined only after the heads were due: nothing was tested"
    );
    let mut fired: HashMap<String, usize> = HashMap::new();
    let wanted: Vec<String> = markers
        .iter()
        .map(|m| m.message.event.event_id.to_string())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every marker fires after the head of its partition, so once all markers are in, a duplicate head would be
    // too.
    while !wanted.iter().all(|id| fired.contains_key(id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, lane.recv())
            .await
            .map_err(|_| anyhow::anyhow!("fired so far: {fired:?}"))??;
        let fired_message: LaneMessage =
            serde_json::from_slice(message.payload().unwrap_or_default())?;
        *fired
            .entry(fired_message.event.event_id.to_string())
            .or_default() += 1;
    }
    for head in &heads {
        let id = head.message.event.event_id.to_string();
        ensure!(
            fired.get(&id) == Some(&1),
            "head {id} fired {:?} times: {fired:?}",
            fired.get(&id)
        );
    }
    first.stop().await?;
    second.stop().await
}
