//! herald-retry against the real stack: decisions recorded in MongoDB, retries waiting on delay-tier topics until
//! due and then fired to the retry lane, dead letters on the DLQ topic, and no scheduled retry lost to SIGKILL.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Utc};
use herald_domain::messages::dlq_headers;
use herald_domain::retry::RetryRules;
use herald_domain::{
    Attempt, AttemptOutcome, Channel, ErrorClass, Event, EventId, Lane, LaneMessage, Priority,
    RetryRequest, Status,
};
use herald_platform::kafka::{self, build_consumer, build_producer};
use herald_platform::mongo;
use herald_platform::store::{Claim, EventRecord, EventStore};
use herald_retry::delay::HEADER_DUE_AT;
use herald_retry::{App, Config};
use herald_test_support::{eventually, spawn, Spawned, TestContext};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;

struct Harness {
    ctx: TestContext,
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

fn config(ctx: &TestContext, rules: &str, tiers: &[u64]) -> Config {
    let rules = RetryRules::from_toml(rules).expect("valid test rules");
    Config::for_test(ctx.kafka.clone(), ctx.mongo.clone(), rules, tiers)
}

async fn harness(label: &str, rules: &str, tiers: &[u64]) -> Result<Harness> {
    let ctx = TestContext::with_tiers(label, tiers).await?;
    let db = mongo::connect(&ctx.mongo, label).await?;
    EventStore::ensure_indexes(&db).await?;
    let retry = spawn::<App>(config(&ctx, rules, tiers)).await?;
    Ok(Harness {
        store: EventStore::new(&db),
        producer: build_producer(&ctx.kafka)?,
        ctx,
        retry: Some(retry),
    })
}

fn event(id: &str, priority: Priority) -> Event {
    Event {
        event_id: EventId::parse(id).expect("valid id"),
        user_id: Some(format!("user-{id}")),
        event_type: Some("invoice.ready".into()),
        channel: Some(Channel::Webhook),
        priority,
        payload: serde_json::json!({"url": "http://127.0.0.1:9/hook", "body": {}}),
        metadata: None,
        created_at: Utc::now(),
    }
}

fn failed_attempt(number: u32, class: ErrorClass, provider: &str) -> Attempt {
    let now = Utc::now();
    Attempt {
        number,
        provider: provider.into(),
        started_at: now,
        ended_at: now,
        outcome: AttemptOutcome::Failed,
        error_class: Some(class),
        error: Some("HTTP 503".into()),
        http_status: Some(503),
        retry_after_secs: None,
    }
}

/// Puts an event in the state a dispatcher leaves after attempt `n` failed, and returns the request it sends.
async fn fail_attempts(
    h: &Harness,
    event: Event,
    n: u32,
    class: ErrorClass,
    retry_after_secs: Option<u64>,
) -> Result<RetryRequest> {
    let record = EventRecord::accepted(&event);
    h.store.insert_accepted(&record, None).await?;
    let lease = Duration::from_secs(30);
    let mut last = None;
    for k in 1..=n {
        let claim = h.store.claim(&event.event_id, k, 0, lease).await?;
        ensure!(matches!(claim, Claim::Send(_)), "attempt {k}: {claim:?}");
        let attempt = failed_attempt(k, class, "webhook");
        ensure!(h.store.record_failed(&event.event_id, &attempt, 0).await?);
        last = Some(attempt);
    }
    Ok(RetryRequest {
        lane: Lane::for_priority(event.priority),
        event,
        failed: last.context("n >= 1")?,
        replay_count: 0,
        retry_after_secs,
    })
}

async fn publish(h: &Harness, request: &RetryRequest) -> Result<()> {
    let payload = serde_json::to_vec(request)?;
    kafka::send(
        &h.producer,
        &h.ctx.topics.retry_requests(),
        request.event.partition_key(),
        &payload,
        None,
    )
    .await?;
    Ok(())
}

fn subscribe(h: &Harness, topic: &str, label: &str) -> Result<StreamConsumer> {
    let consumer = build_consumer(&h.ctx.kafka, &h.ctx.group(label))?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// A fired retry as the dispatcher of the retry lane sees it.
#[derive(Debug)]
struct Fired {
    message: LaneMessage,
    due_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
}

async fn next_fired(consumer: &StreamConsumer, timeout: Duration) -> Result<Fired> {
    let message = tokio::time::timeout(timeout, consumer.recv())
        .await
        .context("no retry fired in time")??;
    let received_at = Utc::now();
    let due = message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == HEADER_DUE_AT))
        .and_then(|h| h.value)
        .context("fired retry without a due time")?;
    Ok(Fired {
        message: serde_json::from_slice(message.payload().context("empty")?)?,
        due_at: DateTime::parse_from_rfc3339(std::str::from_utf8(due)?)?.with_timezone(&Utc),
        received_at,
    })
}

async fn status_of(store: &EventStore, id: &EventId) -> Result<EventRecord, String> {
    store
        .find(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "missing".to_string())
}

#[tokio::test]
async fn a_retry_waits_on_its_tier_and_fires_to_the_retry_lane() -> Result<()> {
    let h = harness("retry-fire", "[default]\nbase_ms = 500\n", &[1, 2, 4]).await?;
    let lane = subscribe(&h, &h.ctx.topics.lane(Lane::Retry), "lane")?;
    let request = fail_attempts(
        &h,
        event("fire-1", Priority::Critical),
        1,
        ErrorClass::Retryable,
        None,
    )
    .await?;
    publish(&h, &request).await?;

    let scheduled = eventually(Duration::from_secs(20), "RETRY_SCHEDULED", || async {
        let r = status_of(&h.store, &request.event.event_id).await?;
        if r.status == Status::RetryScheduled {
            Ok(r)
        } else {
            Err(format!("{:?}", r.status))
        }
    })
    .await;
    let next_at = scheduled.next_attempt_at.context("nextAttemptAt is set")?;

    let fired = next_fired(&lane, Duration::from_secs(20)).await?;
    ensure!(fired.message.attempt == 2, "fired {:?}", fired.message);
    ensure!(fired.message.event.event_id == request.event.event_id);
    ensure!(
        fired.due_at == next_at,
        "due {} vs stored {next_at}",
        fired.due_at
    );
    // Never early: the lane got it at or after its due time, and the due time is a whole tier away.
    ensure!(
        fired.message.enqueued_at >= fired.due_at,
        "fired early: {fired:?}"
    );
    ensure!(
        fired.received_at >= fired.due_at,
        "received early: {fired:?}"
    );
    ensure!(
        fired.due_at - request.failed.ended_at >= chrono::Duration::milliseconds(900),
        "the 1 s tier was not waited out"
    );
    let kinds: Vec<String> = scheduled.timeline.iter().map(|e| e.kind.clone()).collect();
    ensure!(
        kinds.last().map(String::as_str) == Some("retry_scheduled"),
        "{kinds:?}"
    );
    Ok(())
}

#[tokio::test]
async fn out_of_attempts_and_permanent_errors_go_to_the_dead_letters() -> Result<()> {
    let h = harness("retry-dlq", "[default]\nmax_attempts = 2\n", &[1]).await?;
    let dlq = subscribe(&h, &h.ctx.topics.dead_letters(), "dlq")?;
    let statuses = subscribe(&h, &h.ctx.topics.status(), "status")?;
    let exhausted = fail_attempts(
        &h,
        event("dlq-1", Priority::Critical),
        2,
        ErrorClass::Retryable,
        None,
    )
    .await?;
    let permanent = fail_attempts(
        &h,
        event("dlq-2", Priority::Default),
        1,
        ErrorClass::Permanent,
        None,
    )
    .await?;
    publish(&h, &exhausted).await?;
    publish(&h, &permanent).await?;

    let mut seen: HashMap<String, HashMap<String, String>> = HashMap::new();
    while seen.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(20), dlq.recv())
            .await
            .context("no dead letter in time")??;
        let event: Event = serde_json::from_slice(message.payload().context("empty")?)?;
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        seen.insert(event.event_id.to_string(), headers);
    }
    let first = &seen["dlq-1"];
    ensure!(first[dlq_headers::ORIGINAL_LANE] == "critical", "{first:?}");
    ensure!(first[dlq_headers::ATTEMPTS] == "2", "{first:?}");
    ensure!(first[dlq_headers::LAST_ERROR] == "HTTP 503", "{first:?}");
    ensure!(
        first[dlq_headers::REASON].contains("gave up after 2 attempts"),
        "{first:?}"
    );
    ensure!(
        seen["dlq-2"][dlq_headers::REASON].contains("permanent"),
        "{:?}",
        seen["dlq-2"]
    );
    for id in ["dlq-1", "dlq-2"] {
        let record = status_of(&h.store, &EventId::parse(id)?)
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(
            record.status == Status::DeadLettered,
            "{id}: {:?}",
            record.status
        );
    }
    // Each dead letter is also a step on the status topic, for alerting.
    let mut steps: HashMap<String, herald_domain::StatusMessage> = HashMap::new();
    while steps.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(20), statuses.recv())
            .await
            .context("no status message in time")??;
        let step: herald_domain::StatusMessage =
            serde_json::from_slice(message.payload().context("empty")?)?;
        steps.insert(step.event_id.to_string(), step);
    }
    let first = &steps["dlq-1"];
    ensure!(
        first.outcome == herald_domain::StatusOutcome::DeadLettered
            && first.attempt == 2
            && first.priority == Priority::Critical
            && first
                .error
                .as_deref()
                .is_some_and(|e| e.contains("gave up after 2 attempts")),
        "{first:?}"
    );
    ensure!(steps["dlq-2"].outcome == herald_domain::StatusOutcome::DeadLettered);
    Ok(())
}

#[tokio::test]
async fn retry_after_is_never_undercut_and_fallback_providers_are_chosen() -> Result<()> {
    let rules = "[default]\nbase_ms = 100\n[channels.webhook]\nproviders = [\"primary\", \"backup\"]\nswitch_after = 1\n";
    let h = harness("retry-after", rules, &[1, 2, 5]).await?;
    let lane = subscribe(&h, &h.ctx.topics.lane(Lane::Retry), "lane")?;
    let request = fail_attempts(
        &h,
        event("ra-1", Priority::Default),
        1,
        ErrorClass::Retryable,
        Some(3),
    )
    .await?;
    publish(&h, &request).await?;
    let fired = next_fired(&lane, Duration::from_secs(30)).await?;
    let waited = fired.received_at - request.failed.ended_at;
    ensure!(
        waited >= chrono::Duration::seconds(3),
        "retried after {waited}, Retry-After was 3 s"
    );
    ensure!(
        fired.message.provider.as_deref() == Some("backup"),
        "{:?}",
        fired.message.provider
    );
    Ok(())
}

#[tokio::test]
async fn a_poison_request_is_dead_lettered_and_the_partition_goes_on() -> Result<()> {
    let h = harness("retry-poison", "[default]\nbase_ms = 100\n", &[1]).await?;
    let lane = subscribe(&h, &h.ctx.topics.lane(Lane::Retry), "lane")?;
    let dlq = subscribe(&h, &h.ctx.topics.dead_letters(), "dlq")?;
    let request = fail_attempts(
        &h,
        event("after-poison", Priority::Default),
        1,
        ErrorClass::Retryable,
        None,
    )
    .await?;
    // Same key, so the same partition: the poison sits right before the good request.
    kafka::send(
        &h.producer,
        &h.ctx.topics.retry_requests(),
        request.event.partition_key(),
        b"{not json",
        None,
    )
    .await?;
    publish(&h, &request).await?;
    let poison = tokio::time::timeout(Duration::from_secs(20), dlq.recv())
        .await
        .context("no DLQ")??;
    ensure!(poison.payload() == Some(&b"{not json"[..]));
    let fired = next_fired(&lane, Duration::from_secs(20)).await?;
    ensure!(fired.message.event.event_id == request.event.event_id);
    Ok(())
}

/// Starts the real binary with this test's prefix, database and rules.
fn spawn_binary(ctx: &TestContext, rules_path: &std::path::Path, tiers: &str) -> Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_herald-retry"))
        .env("KAFKA_BROKERS", &ctx.kafka.brokers)
        .env("HERALD_TOPIC_PREFIX", ctx.topics.prefix())
        .env("MONGODB_URI", &ctx.mongo.uri)
        .env("MONGODB_DATABASE", &ctx.mongo.database)
        .env("HERALD_RETRY_PORT", "0")
        .env("HERALD_RETRY_TIERS", tiers)
        .env("HERALD_RETRY_RULES", rules_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?)
}

#[tokio::test]
async fn sigkill_with_500_retries_scheduled_loses_none_and_fires_none_early() -> Result<()> {
    const N: usize = 500;
    let ctx = TestContext::with_tiers("retry-kill", &[8]).await?;
    let db = mongo::connect(&ctx.mongo, "retry-kill").await?;
    EventStore::ensure_indexes(&db).await?;
    // A harness without an in-process service: the binary is the service here.
    let h = Harness {
        store: EventStore::new(&db),
        producer: build_producer(&ctx.kafka)?,
        ctx,
        retry: None,
    };
    let rules_path = std::env::temp_dir().join(format!("{}rules.toml", h.ctx.topics.prefix()));
    std::fs::write(&rules_path, "[default]\nbase_ms = 5000\n")?;
    let lane = subscribe(&h, &h.ctx.topics.lane(Lane::Retry), "lane")?;

    let mut requests = Vec::with_capacity(N);
    for i in 0..N {
        requests.push(
            fail_attempts(
                &h,
                event(&format!("k-{i}"), Priority::Default),
                1,
                ErrorClass::Retryable,
                None,
            )
            .await?,
        );
    }
    let mut service = spawn_binary(&h.ctx, &rules_path, "8")?;
    for request in &requests {
        publish(&h, request).await?;
    }
    let events = db.collection::<mongodb::bson::Document>(mongo::EVENTS);
    eventually(
        Duration::from_secs(60),
        "all 500 RETRY_SCHEDULED",
        || async {
            let n = events
                .count_documents(mongodb::bson::doc! { "status": "RETRY_SCHEDULED" })
                .await
                .map_err(|e| e.to_string())?;
            if n as usize == N {
                Ok(())
            } else {
                Err(format!("{n} scheduled"))
            }
        },
    )
    .await;
    service.kill()?;
    service.wait()?;
    let mut service = spawn_binary(&h.ctx, &rules_path, "8")?;

    let mut fired: HashMap<String, Fired> = HashMap::new();
    while fired.len() < N {
        let f = next_fired(&lane, Duration::from_secs(60)).await?;
        ensure!(f.message.enqueued_at >= f.due_at, "fired early: {f:?}");
        ensure!(f.received_at >= f.due_at, "received early: {f:?}");
        fired
            .entry(f.message.event.event_id.to_string())
            .or_insert(f);
    }
    service.kill()?;
    service.wait()?;
    let mut lateness_ms: Vec<i64> = fired
        .values()
        .map(|f| (f.message.enqueued_at - f.due_at).num_milliseconds())
        .collect();
    lateness_ms.sort_unstable();
    let p = |q: f64| lateness_ms[((lateness_ms.len() - 1) as f64 * q) as usize];
    eprintln!(
        "scheduling error over {N} retries across a SIGKILL (fired minus due): p50 {} ms, p99 {} ms, max {} ms",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    ensure!(fired.len() == N);
    Ok(())
}
