//! Consumers recover from broker outages (issue 13): a Kafka broker of this test's own is SIGKILLed under the
//! dispatchers, the retry scheduler and the alert service, and started again on the same ports and data; each
//! consumer group must consume again within 30 s, over several cycles, since librdkafka's failure to rejoin
//! (rust-rdkafka issue 597) is intermittent. Each consumer then rebuilds itself if it is stuck
//! (`herald_platform::kafka::watch`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use herald_domain::Lane;
use herald_e2e::{Herald, TIERS_SECS};
use herald_platform::kafka::{self, build_producer};
use herald_platform::KafkaConfig;
use herald_test_support::eventually;
use herald_test_support::plain_kafka::PlainKafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// Kill/restart cycles.
const CYCLES: usize = 3;
/// How long the broker stays down: longer than the consumers' session timeout (10 s), as in the incident.
const OUTAGE: Duration = Duration::from_secs(11);
/// The bound the issue sets on consuming again after the broker is back.
const RECOVERY: Duration = Duration::from_secs(30);

/// Each consumer group of Herald, with the topics it reads.
fn groups(herald: &Herald) -> Vec<(String, Vec<String>)> {
    let topics = &herald.ctx.topics;
    let prefix = topics.prefix();
    let mut groups: Vec<(String, Vec<String>)> = Lane::ALL
        .iter()
        .map(|lane| {
            (
                format!("{prefix}herald-dispatch-{}", lane.as_str()),
                vec![topics.lane(*lane)],
            )
        })
        .collect();
    groups.push((
        format!("{prefix}herald-retry-requests"),
        vec![topics.retry_requests()],
    ));
    groups.push((
        format!("{prefix}herald-retry-delay"),
        TIERS_SECS.iter().map(|t| topics.delay(*t)).collect(),
    ));
    groups.push((format!("{prefix}herald-alert"), vec![topics.status()]));
    groups
}

/// One undecodable message on every topic a Herald consumer reads: each consumer dead-letters it and stores its
/// offset, so a group has consumed once its committed offsets reach the ends of its topics.
async fn poison_every_topic(kafka: &KafkaConfig, groups: &[(String, Vec<String>)]) -> Result<()> {
    let producer = build_producer(kafka)?;
    for (_, topics) in groups {
        for topic in topics {
            kafka::send(&producer, topic, "recovery", b"not json", None).await?;
        }
    }
    Ok(())
}

/// The partitions of `group` whose committed offset is behind their end, as `topic/partition committed/end`.
async fn behind(
    kafka: &KafkaConfig,
    group: &str,
    topics: &[String],
) -> Result<Vec<String>, String> {
    let mut client = kafka::client_config(kafka);
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
        let timeout = Duration::from_secs(3);
        let probe: BaseConsumer = client.create().map_err(|e| e.to_string())?;
        let metadata = probe
            .fetch_metadata(None, timeout)
            .map_err(|e| e.to_string())?;
        let mut list = TopicPartitionList::new();
        for t in metadata
            .topics()
            .iter()
            .filter(|t| topics.iter().any(|n| n == t.name()))
        {
            for p in t.partitions() {
                list.add_partition(t.name(), p.id());
            }
        }
        let committed = probe
            .committed_offsets(list, timeout)
            .map_err(|e| e.to_string())?;
        let mut behind = Vec::new();
        for e in committed.elements() {
            let (_, end) = probe
                .fetch_watermarks(e.topic(), e.partition(), timeout)
                .map_err(|e| e.to_string())?;
            let at = match e.offset() {
                Offset::Offset(n) => n,
                _ => 0,
            };
            if at < end {
                behind.push(format!("{}/{} {at}/{end}", e.topic(), e.partition()));
            }
        }
        Ok(behind)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Puts a poison message on every topic and waits until every group has consumed it; returns how long it took.
async fn every_group_consumes(
    kafka: &KafkaConfig,
    groups: &[(String, Vec<String>)],
    what: &str,
) -> Result<Duration> {
    let started = Instant::now();
    poison_every_topic(kafka, groups).await?;
    for (group, topics) in groups {
        eventually(
            RECOVERY.saturating_sub(started.elapsed()),
            &format!("{group} to consume again {what}"),
            || behind_none(kafka, group, topics),
        )
        .await;
    }
    Ok(started.elapsed())
}

async fn behind_none(kafka: &KafkaConfig, group: &str, topics: &[String]) -> Result<(), String> {
    let behind = behind(kafka, group, topics).await?;
    if behind.is_empty() {
        Ok(())
    } else {
        Err(behind.join(", "))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_consumer_consumes_again_after_its_broker_is_sigkilled_and_restarted() -> Result<()> {
    let mut broker = PlainKafka::start().await?;
    let env: HashMap<String, String> = [
        ("KAFKA_BROKERS", broker.brokers.clone()),
        // Shorter than the defaults (15 s, 5 s), so a stuck consumer is rebuilt well within the 30 s.
        ("HERALD_KAFKA_CONSUMER_STALL_MS", "8000".to_owned()),
        ("HERALD_KAFKA_CONSUMER_CHECK_MS", "2000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let herald = Herald::start_on_kafka(
        broker.config(""),
        &env,
        "consumer-recovery",
        "[default]\nbase_ms = 500\n",
    )
    .await?;
    let kafka = herald.ctx.kafka.clone();
    let groups = groups(&herald);
    let first = every_group_consumes(&kafka, &groups, "at the start").await?;
    eprintln!("every group consumed at the start in {first:?}");
    for cycle in 1..=CYCLES {
        broker.kill()?;
        // The outage itself: how long the broker stays away, not a wait for something to happen.
        tokio::time::sleep(OUTAGE).await;
        broker.restart().await?;
        let took = every_group_consumes(&kafka, &groups, &format!("after restart {cycle}")).await?;
        eprintln!("cycle {cycle}: every group consumed again {took:?} after the broker answered");
    }
    // Every service stops (final commits, leaving the groups) while the broker is still up.
    herald.stop().await?;
    drop(broker);
    Ok(())
}
