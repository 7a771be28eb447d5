//! Measures herald-retry's scheduling error: for a few thousand retries, the time each was fired to the retry lane
//! (and received there) minus the time it was due.
//!
//! ```text
//! KAFKA_BROKERS=127.0.0.1:9092 MONGODB_URI=mongodb://127.0.0.1:27017 \
//! cargo run --release -p herald-retry --example retry_bench -- \
//!     [--retries 3000] [--rate 300] [--tiers 1,2,5] [--base-ms 4000] [--timeout-secs 300] [--json]
//! ```
//!
//! The retry scheduler runs in-process (as in production, minus the process boundary) on a topic prefix and a
//! database of its own, which are removed at the end (the database; topics stay, as the tests' do). The program
//! records `--retries` events as a dispatcher leaves them after a failed first attempt, publishes one retry
//! request per event at `--rate` per second, and reads the retry lane. With `--base-ms 4000` the jittered
//! backoffs spread over the 1, 2 and 5 s tiers. For each retry it takes the due time (the `herald-due-at` header,
//! the same instant MongoDB holds as `nextAttemptAt`), the fire time (the lane message's `enqueuedAt`, stamped by
//! herald-retry just before publishing) and the time this program received it, and prints p50/p90/p99/max of
//! fired minus due and received minus due, and how many fired early (there must be none). `--json` prints one
//! JSON object instead, for `cargo xtask bench`. The exit status is non-zero if a retry is missing or early.

// A benchmark's report is what it prints.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use herald_domain::retry::RetryRules;
use herald_domain::{
    Attempt, AttemptOutcome, Channel, ErrorClass, Event, EventId, Lane, LaneMessage, Priority,
    RetryRequest, Status,
};
use herald_platform::config::LogFormat;
use herald_platform::kafka::{self, build_consumer, build_producer};
use herald_platform::service::Service;
use herald_platform::store::{EventRecord, EventStore};
use herald_platform::{mongo, KafkaConfig, Listen, MongoConfig, TelemetryConfig};
use herald_retry::delay::HEADER_DUE_AT;
use herald_retry::{App, Config};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Args {
    n_retries: usize,
    rate: u64,
    tiers_secs: Vec<u64>,
    base_ms: u64,
    timeout: Duration,
    json: bool,
}

fn args() -> Result<Args> {
    let mut args = Args {
        n_retries: 3_000,
        rate: 300,
        tiers_secs: vec![1, 2, 5],
        base_ms: 4_000,
        timeout: Duration::from_secs(300),
        json: false,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--retries" => args.n_retries = value()?.parse()?,
            "--rate" => args.rate = value()?.parse()?,
            "--tiers" => {
                args.tiers_secs =
                    herald_retry::parse_tiers(&value()?).map_err(anyhow::Error::msg)?
            }
            "--base-ms" => args.base_ms = value()?.parse()?,
            "--timeout-secs" => args.timeout = Duration::from_secs(value()?.parse()?),
            "--json" => args.json = true,
            other => bail!("unknown argument {other}; see the header of retry_bench.rs"),
        }
    }
    if args.n_retries == 0 || args.rate == 0 {
        bail!("--retries and --rate must be at least 1");
    }
    Ok(args)
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Event `i`, as a dispatcher leaves it after its first attempt failed: DISPATCHING, no lease, one attempt.
fn failed_record(run: &str, i: usize) -> Result<(EventRecord, RetryRequest)> {
    let now = Utc::now();
    let event = Event {
        event_id: EventId::parse(&format!("{run}-{i}"))?,
        user_id: Some(format!("user-{}", i % 500)),
        event_type: Some("bench.retry".into()),
        channel: Some(Channel::Webhook),
        priority: Priority::Default,
        payload: json!({"url": "http://127.0.0.1:9/bench", "body": {"i": i}}),
        metadata: None,
        created_at: now,
    };
    let failed = Attempt {
        number: 1,
        provider: "webhook".into(),
        started_at: now,
        ended_at: now,
        outcome: AttemptOutcome::Failed,
        error_class: Some(ErrorClass::Retryable),
        error: Some("HTTP 503".into()),
        http_status: Some(503),
        retry_after_secs: None,
    };
    let mut record = EventRecord::accepted(&event);
    record.status = Status::Dispatching;
    record.attempt_count = 1;
    record.attempts = vec![failed.clone()];
    let request = RetryRequest {
        lane: Lane::Default,
        event,
        failed,
        replay_count: 0,
        retry_after_secs: None,
    };
    Ok((record, request))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(mut values: Vec<i64>) -> serde_json::Value {
    values.sort_unstable();
    json!({
        "p50_ms": percentile(&values, 0.50),
        "p90_ms": percentile(&values, 0.90),
        "p99_ms": percentile(&values, 0.99),
        "max_ms": values.last().copied().unwrap_or(0),
        "min_ms": values.first().copied().unwrap_or(0),
        "early": values.iter().filter(|v| **v < 0).count(),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let run = format!(
        "retry-bench-{}-{}",
        std::process::id(),
        Utc::now().timestamp_millis()
    );
    let kafka_config =
        KafkaConfig::new(env_or("KAFKA_BROKERS", "127.0.0.1:9092"), format!("{run}."));
    let mongo_config = MongoConfig::new(
        env_or("MONGODB_URI", "mongodb://127.0.0.1:27017"),
        run.replace('-', "_"),
    );
    let topics = kafka_config.topics();
    kafka::ensure_topics(&kafka_config, &topics.all(&args.tiers_secs), 1).await?;
    let db = mongo::connect(&mongo_config, "retry-bench").await?;
    EventStore::ensure_indexes(&db).await?;

    let started = Instant::now();
    let mut requests = Vec::with_capacity(args.n_retries);
    let mut batch = Vec::new();
    let events = db.collection::<EventRecord>(mongo::EVENTS);
    for i in 0..args.n_retries {
        let (record, request) = failed_record(&run, i)?;
        batch.push(record);
        requests.push(request);
        if batch.len() == 500 || i + 1 == args.n_retries {
            events.insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    eprintln!(
        "seeded {} failed events in {:.1} s",
        args.n_retries,
        started.elapsed().as_secs_f64()
    );

    let rules = format!("[default]\nbase_ms = {}\nmax_attempts = 10\n", args.base_ms);
    let app = App::build(Config {
        listen: Listen {
            host: "127.0.0.1".into(),
            port: 0,
        },
        rules_path: None,
        rules: RetryRules::from_toml(&rules).map_err(|e| anyhow::anyhow!("rules: {e:?}"))?,
        tiers_secs: args.tiers_secs.clone(),
        topic_replication: 1,
        kafka: kafka_config.clone(),
        watch: Default::default(),
        mongo: mongo_config.clone(),
        telemetry: TelemetryConfig {
            format: LogFormat::Pretty,
            filter: "warn".into(),
            shutdown_timeout: std::time::Duration::from_secs(30),
            otlp: None,
        },
    })
    .await?;
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    let lane: StreamConsumer = build_consumer(&kafka_config, &format!("{run}.reader"))?;
    lane.subscribe(&[&topics.lane(Lane::Retry)])?;

    // Publish the retry requests at the given rate, each send awaited in its own task.
    let producer = build_producer(&kafka_config)?;
    let publisher = {
        let topic = topics.retry_requests();
        let rate = args.rate;
        tokio::spawn(async move {
            let mut sends = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let per_tick = (rate as f64 / 100.0).max(0.01);
            let mut owed = 0.0;
            let mut pending = requests.into_iter();
            'ticks: loop {
                tick.tick().await;
                owed += per_tick;
                while owed >= 1.0 {
                    owed -= 1.0;
                    let Some(request) = pending.next() else {
                        break 'ticks;
                    };
                    let (producer, topic) = (producer.clone(), topic.clone());
                    sends.spawn(async move {
                        let payload = serde_json::to_vec(&request)?;
                        kafka::send(
                            &producer,
                            &topic,
                            request.event.partition_key(),
                            &payload,
                            None,
                        )
                        .await?;
                        Ok::<_, anyhow::Error>(())
                    });
                }
            }
            while let Some(sent) = sends.join_next().await {
                sent??;
            }
            Ok::<_, anyhow::Error>(())
        })
    };

    let mut fired_minus_due: HashMap<String, i64> = HashMap::new();
    let mut received_minus_due: Vec<i64> = Vec::with_capacity(args.n_retries);
    let mut duplicates = 0usize;
    let deadline = Instant::now() + args.timeout;
    while fired_minus_due.len() < args.n_retries {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(received) = tokio::time::timeout(left, lane.recv()).await else {
            break;
        };
        let message = received?;
        let received_at = Utc::now();
        let due = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == HEADER_DUE_AT))
            .and_then(|h| h.value)
            .context("a fired retry without its due time")?;
        let due_at: DateTime<Utc> =
            DateTime::parse_from_rfc3339(std::str::from_utf8(due)?)?.with_timezone(&Utc);
        let fired: LaneMessage = serde_json::from_slice(message.payload().context("empty")?)?;
        let id = fired.event.event_id.to_string();
        if fired_minus_due.contains_key(&id) {
            duplicates += 1;
            continue;
        }
        fired_minus_due.insert(id, (fired.enqueued_at - due_at).num_milliseconds());
        received_minus_due.push((received_at - due_at).num_milliseconds());
    }
    publisher.await??;
    shutdown.cancel();
    service.await??;
    db.drop().await?;

    let n_fired = fired_minus_due.len();
    let fired = summary(fired_minus_due.into_values().collect());
    let received = summary(received_minus_due);
    let report = json!({
        "retries": args.n_retries,
        "fired": n_fired,
        "missing": args.n_retries - n_fired,
        "duplicates": duplicates,
        "rate_per_sec": args.rate,
        "tiers_secs": args.tiers_secs,
        "base_ms": args.base_ms,
        "fired_minus_due": fired,
        "received_minus_due": received,
        "wall_secs": started.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "retry scheduling error over {n_fired} of {} retries (tiers {:?} s, requests at {}/s):",
            args.n_retries, args.tiers_secs, args.rate
        );
        for (name, s) in [
            ("fired minus due", &report["fired_minus_due"]),
            ("received minus due", &report["received_minus_due"]),
        ] {
            println!(
                "  {name:<20} p50 {} ms, p90 {} ms, p99 {} ms, max {} ms, min {} ms, early {}",
                s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"], s["min_ms"], s["early"]
            );
        }
        println!("  missing {}, duplicates {duplicates}", report["missing"]);
    }
    let early = report["fired_minus_due"]["early"].as_u64().unwrap_or(0);
    if n_fired < args.n_retries || early > 0 {
        bail!(
            "{} retries missing, {early} fired early",
            args.n_retries - n_fired
        );
    }
    Ok(())
}
