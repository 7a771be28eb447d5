//! Smoke test of the Kafka plumbing every service relies on, against the real broker: an idempotent producer,
//! and a consumer group that stores offsets only after processing and resumes exactly after the last stored
//! offset when a consumer stops mid-stream.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_domain::Lane;
use herald_platform::kafka::{build_consumer, build_producer, send, store_offset};
use herald_test_support::TestContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::Offset;

const N_MESSAGES: usize = 120;
const N_FIRST_RUN: usize = 50;

/// Receives one message, bounded so a stalled group fails the test instead of hanging it.
async fn next(consumer: &StreamConsumer) -> Result<(i32, i64, usize)> {
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .context("no message within 30 s")??;
    let value: usize = std::str::from_utf8(message.payload().context("empty payload")?)?.parse()?;
    Ok((message.partition(), message.offset(), value))
}

#[tokio::test]
async fn consumer_resumes_exactly_after_the_last_stored_offset() -> Result<()> {
    let ctx = TestContext::new("kafka-smoke").await?;
    let topic = ctx.topics.lane(Lane::Default);
    let producer = build_producer(&ctx.kafka)?;

    let mut produced: BTreeMap<usize, (i32, i64)> = BTreeMap::new();
    for value in 0..N_MESSAGES {
        let key = format!("user-{}", value % 17);
        let at = send(&producer, &topic, &key, value.to_string().as_bytes(), None).await?;
        produced.insert(value, at);
    }
    let partitions: BTreeSet<i32> = produced.values().map(|(p, _)| *p).collect();
    ensure!(
        partitions.len() > 1,
        "keys should spread over several partitions"
    );

    let group = ctx.group("smoke");
    // First run: process N_FIRST_RUN messages, storing each offset after its "work"; then receive one more and
    // stop before processing it, as a crash would. Its offset is never stored.
    let mut processed: BTreeSet<usize> = BTreeSet::new();
    let mut stored: BTreeMap<i32, i64> = BTreeMap::new();
    let unprocessed;
    {
        let consumer = build_consumer(&ctx.kafka, &group)?;
        consumer.subscribe(&[&topic])?;
        while processed.len() < N_FIRST_RUN {
            let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
                .await
                .context("no message within 30 s")??;
            let value: usize = std::str::from_utf8(message.payload().context("empty")?)?.parse()?;
            ensure!(
                processed.insert(value),
                "message {value} seen twice in one run"
            );
            store_offset(&consumer, &message)?;
            stored.insert(message.partition(), message.offset());
        }
        unprocessed = next(&consumer).await?;
        consumer.commit_consumer_state(CommitMode::Sync)?;

        // What the group committed is exactly what was stored: last processed offset + 1 per partition.
        let committed = consumer.committed(Duration::from_secs(10))?;
        for element in committed.elements() {
            if let Some(last) = stored.get(&element.partition()) {
                ensure!(
                    element.offset() == Offset::Offset(last + 1),
                    "partition {} committed {:?}, expected {}",
                    element.partition(),
                    element.offset(),
                    last + 1
                );
            }
        }
    }

    // Second run, a new consumer in the same group: it must start on each partition right after the stored
    // offset, so the unprocessed message comes again and nothing processed does.
    let consumer = build_consumer(&ctx.kafka, &group)?;
    consumer.subscribe(&[&topic])?;
    let mut first_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let mut second_run: BTreeSet<usize> = BTreeSet::new();
    while processed.len() + second_run.len() < N_MESSAGES {
        let (partition, offset, value) = next(&consumer).await?;
        first_offset.entry(partition).or_insert(offset);
        ensure!(
            !processed.contains(&value),
            "message {value} was processed and came back"
        );
        ensure!(
            second_run.insert(value),
            "message {value} seen twice in the second run"
        );
    }
    for (partition, offset) in &first_offset {
        let expected = stored.get(partition).map_or(0, |last| last + 1);
        ensure!(
            *offset == expected,
            "partition {partition} resumed at {offset}, expected {expected}"
        );
    }
    ensure!(
        second_run.contains(&unprocessed.2),
        "the message received but never processed ({unprocessed:?}) was not delivered again"
    );
    let all: BTreeSet<usize> = processed.union(&second_run).copied().collect();
    ensure!(
        all.len() == N_MESSAGES,
        "lost messages: {} of {N_MESSAGES} seen",
        all.len()
    );
    Ok(())
}
