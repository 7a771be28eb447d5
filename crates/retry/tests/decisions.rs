//! herald-retry's decisions against the real stack, when a request comes more than once or its event record
//! cannot be processed: a redelivered request lands on the same delay tier with the same due time, and a request
//! whose record does not decode is dead-lettered with the reason while the partition goes on.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use chrono::Utc;
use herald_domain::messages::dlq_headers;
use herald_domain::retry::RetryRules;
use herald_domain::{
    Attempt, AttemptOutcome, Channel, DelayedRetry, ErrorClass, Event, EventId, Lane, Priority,
    RetryRequest, Status,
};
use herald_platform::kafka::{self, build_consumer, build_producer};
use herald_platform::mongo::{self, EVENTS};
use herald_platform::store::{Claim, EventRecord, EventStore};
use herald_retry::requests::decide_and_apply;
use herald_retry::{App, AppState, Config};
use herald_test_support::{eventually, spawn, Spawned, TestContext};
use mongodb::bson::{doc, Document};
use mongodb::Database;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;

const WAIT: Duration = Duration::from_secs(30);

struct Harness {
    ctx: TestContext,
    db: Database,
    store: EventStore,
    producer: FutureProducer,
    /// The herald-retry of this test, when it runs in this process.
    retry: Option<Spawned<App>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(retry) = &self.retry {
            retry.shutdown_token().cancel();
        }
    }
}

/// One test's corner of the stack; with `run`, a herald-retry on it.
async fn harness(label: &str, rules: &str, tiers: &[u64], run: bool) -> Result<Harness> {
    let ctx = TestContext::with_tiers(label, tiers).await?;
    let db = mongo::connect(&ctx.mongo, label).await?;
    EventStore::ensure_indexes(&db).await?;
    let retry = if run {
        let rules = RetryRules::from_toml(rules).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let config = Config::for_test(ctx.kafka.clone(), ctx.mongo.clone(), rules, tiers);
        Some(spawn::<App>(config).await?)
    } else {
        None
    };
    Ok(Harness {
        store: EventStore::new(&db),
        producer: build_producer(&ctx.kafka)?,
        db,
        ctx,
        retry,
    })
}

fn event(user: &str) -> Event {
    Event {
        event_id: EventId::generate(),
        user_id: Some(user.into()),
        event_type: Some("invoice.ready".into()),
        channel: Some(Channel::Webhook),
        priority: Priority::Default,
        payload: serde_json::json!({"url": "http://127.0.0.1:9/hook", "body": {}}),
        metadata: None,
        created_at: Utc::now(),
    }
}

fn request(event: Event, failed: Attempt) -> RetryRequest {
    RetryRequest {
        lane: Lane::for_priority(event.priority),
        event,
        failed,
        replay_count: 0,
        retry_after_secs: None,
    }
}

fn failed_attempt() -> Attempt {
    let now = Utc::now();
    Attempt {
        number: 1,
        provider: "webhook".into(),
        started_at: now,
        ended_at: now,
        outcome: AttemptOutcome::Failed,
        error_class: Some(ErrorClass::Retryable),
        error: Some("HTTP 503".into()),
        http_status: Some(503),
        retry_after_secs: None,
    }
}

/// An event whose first attempt failed, as a dispatcher leaves it, and the retry request it sends.
async fn failed_once(h: &Harness, event: Event) -> Result<RetryRequest> {
    h.store
        .insert_accepted(&EventRecord::accepted(&event), None)
        .await?;
    let claim = h
        .store
        .claim(&event.event_id, 1, 0, Duration::from_secs(30))
        .await?;
    ensure!(matches!(claim, Claim::Send(_)), "{claim:?}");
    let failed = failed_attempt();
    ensure!(h.store.record_failed(&event.event_id, &failed, 0).await?);
    Ok(request(event, failed))
}

async fn publish(h: &Harness, request: &RetryRequest) -> Result<i32> {
    let (partition, _) = kafka::send(
        &h.producer,
        &h.ctx.topics.retry_requests(),
        request.event.partition_key(),
        &serde_json::to_vec(request)?,
        None,
    )
    .await?;
    Ok(partition)
}

fn subscribe(h: &Harness, topics: &[String], label: &str) -> Result<StreamConsumer> {
    let consumer: StreamConsumer = build_consumer(&h.ctx.kafka, &h.ctx.group(label))?;
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

#[tokio::test]
async fn a_redelivered_request_goes_to_the_same_tier_with_the_same_due_time() -> Result<()> {
    // Backoffs of up to a minute over five tiers: a fresh random draw per delivery would scatter the copies.
    let tiers = [1, 5, 10, 30, 60];
    let rules = "[default]\nbase_ms = 60000\n";
    // No herald-retry runs: its delay consumer would put copies of its own on the tiers (a long wait passes through
    // its tier more than once), and the test counts decisions. Each call below is one delivery of the request.
    let h = harness("retry-redecide", rules, &tiers, false).await?;
    let state = AppState {
        producer: h.producer.clone(),
        store: h.store.clone(),
        topics: h.ctx.topics.clone(),
        rules: Arc::new(RetryRules::from_toml(rules).map_err(|e| anyhow::anyhow!("{e:?}"))?),
        tiers_secs: Arc::new(tiers.to_vec()),
    };
    let tier_topics: Vec<String> = tiers.iter().map(|t| h.ctx.topics.delay(*t)).collect();
    let delays = subscribe(&h, &tier_topics, "tiers")?;
    let request = failed_once(&h, event("ada")).await?;
    // The request comes eight times: a retry scheduler that died before storing its offset, again and again.
    const COPIES: usize = 8;
    for _ in 0..COPIES {
        decide_and_apply(&state, &request).await?;
    }
    let mut seen = Vec::new();
    while seen.len() < COPIES {
        let message = tokio::time::timeout(WAIT, delays.recv())
            .await
            .with_context(|| format!("{} of {COPIES} delayed retries", seen.len()))??;
        let delayed: DelayedRetry = serde_json::from_slice(message.payload().context("empty")?)?;
        if delayed.message.event.event_id == request.event.event_id {
            seen.push((
                message.topic().to_owned(),
                delayed.tier_secs,
                delayed.due_at,
            ));
        }
    }
    let record = h
        .store
        .find(&request.event.event_id)
        .await?
        .context("record")?;
    ensure!(record.status == Status::RetryScheduled);
    let (topic, tier, due_at) = seen[0].clone();
    ensure!(topic == h.ctx.topics.delay(tier), "{topic} for tier {tier}");
    ensure!(
        seen.iter().all(|s| *s == (topic.clone(), tier, due_at)),
        "the copies were decided apart: {seen:?}"
    );
    ensure!(record.next_attempt_at == Some(due_at));
    Ok(())
}

#[tokio::test]
async fn a_request_whose_record_does_not_decode_is_dead_lettered_and_the_partition_goes_on(
) -> Result<()> {
    let h = harness(
        "retry-undecodable",
        "[default]\nbase_ms = 500\n",
        &[1],
        true,
    )
    .await?;
    let dlq = subscribe(&h, &[h.ctx.topics.dead_letters()], "dlq")?;
    let user = "grace";
    let broken = event(user);
    // Written around the store, as a bad migration or a hand edit would: a status no version of Herald knows.
    let created = mongodb::bson::DateTime::from_chrono(broken.created_at);
    h.db.collection::<Document>(EVENTS)
        .insert_one(doc! {
            "eventId": broken.event_id.as_str(),
            "userId": user,
            "channel": "webhook",
            "priority": "default",
            "payload": {},
            "status": "SHIPPED_BY_PIGEON",
            "attemptCount": 1_i64,
            "createdAt": created,
            "updatedAt": created,
        })
        .await?;
    let broken_partition = publish(&h, &request(broken.clone(), failed_attempt())).await?;
    let behind = failed_once(&h, event(user)).await?;
    ensure!(
        publish(&h, &behind).await? == broken_partition,
        "same key, same partition"
    );

    eventually(WAIT, "the request behind to be decided", || async {
        match h.store.find(&behind.event.event_id).await {
            Ok(Some(r)) if r.status == Status::RetryScheduled => Ok(()),
            Ok(r) => Err(format!("{:?}", r.map(|r| r.status))),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let dead = loop {
        let message = tokio::time::timeout(WAIT, dlq.recv())
            .await
            .context("no dead letter")??;
        let raw = message
            .payload()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if raw.contains(broken.event_id.as_str()) {
            break message.detach();
        }
    };
    let reason = dead
        .headers()
        .and_then(|hs| hs.iter().find(|h| h.key == dlq_headers::REASON))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    ensure!(reason.contains("SHIPPED_BY_PIGEON"), "reason: {reason}");
    let raw =
        h.db.collection::<Document>(EVENTS)
            .find_one(doc! { "eventId": broken.event_id.as_str() })
            .await?
            .context("the broken record")?;
    ensure!(raw.get_str("status") == Ok("DEAD_LETTERED"), "{raw}");
    Ok(())
}
