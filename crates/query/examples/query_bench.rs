//! Seeds N events into a database and measures the latency of `herald-query`'s requests against them.
//!
//! ```text
//! MONGODB_URI=mongodb://127.0.0.1:27017 cargo run --release -p herald-query --example query_bench -- \
//!     [--events 100000] [--requests 50] [--budget-secs 60] [--database herald_bench] [--reuse] \
//!     [--selective-only]
//! ```
//!
//! The query service runs in-process on a free port, as in production (it creates the indexes before the seed
//! goes in, so the seed pays for index upkeep as real writes do). Each scenario sends its requests one after the
//! other and reports p50/p90/p99/max; a scenario stops early once it has spent `--budget-secs` (FerretDB
//! answers some of them in tens of seconds at 100,000 events), and says how many it measured. `--reuse` keeps a database seeded by an earlier run with as many events.
//! `--selective-only` runs only the requests that select few events (a user's, one event), which are the only
//! ones FerretDB answers in reasonable time at a million events. The last part compares the two ways of computing `/api/stats` on the server: one `$group` aggregation, or a
//! `count_documents` per status, channel and priority.

// A benchmark's report is what it prints.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use herald_domain::{Channel, Event, EventId, Priority, Status};
use herald_platform::mongo::{self, EVENTS};
use herald_platform::store::EventRecord;
use herald_platform::MongoConfig;
use herald_query::{App, Config};
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 1_000;

/// A scenario: its name, and the path of its k-th request.
type Scenario = (&'static str, Box<dyn Fn(usize) -> String>);
const N_USERS: u64 = 1_000;
const DAYS: i64 = 30;

#[derive(Debug)]
struct Args {
    n_events: u64,
    n_requests: usize,
    budget: Duration,
    database: String,
    reuse: bool,
    selective_only: bool,
}

fn args() -> Result<Args> {
    let mut args = Args {
        n_events: 100_000,
        n_requests: 50,
        budget: Duration::from_secs(60),
        database: "herald_bench".into(),
        reuse: false,
        selective_only: false,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => args.n_events = value()?.parse()?,
            "--requests" => args.n_requests = value()?.parse()?,
            "--budget-secs" => args.budget = Duration::from_secs(value()?.parse()?),
            "--database" => args.database = value()?,
            "--reuse" => args.reuse = true,
            "--selective-only" => args.selective_only = true,
            other => bail!("unknown argument {other}; see the header of query_bench.rs"),
        }
    }
    Ok(args)
}

/// Event `i` of `n`: a thousand users, every status, channel and priority, spread over thirty days.
fn record(i: u64, n: u64, end: DateTime<Utc>) -> Result<EventRecord> {
    let span_ms = DAYS * 86_400_000;
    let offset = (i as i64 * span_ms) / n.max(1) as i64;
    let created_at = end - chrono::Duration::milliseconds(span_ms - offset);
    let channel = match i % 4 {
        0 => Some(Channel::Email),
        1 => Some(Channel::Sms),
        2 => Some(Channel::Webhook),
        _ => None,
    };
    let event = Event {
        event_id: EventId::parse(&format!("bench-{i:08}"))?,
        user_id: Some(format!("user-{}", (i * 7_919) % N_USERS)),
        event_type: Some(
            ["order.shipped", "user.signup", "password.reset"][(i % 3) as usize].into(),
        ),
        channel,
        priority: if i % 10 == 0 {
            Priority::Critical
        } else {
            Priority::Default
        },
        payload: json!({"to": format!("user{i}@example.com"), "subject": "Your order", "text": "Shipped."}),
        metadata: Some(json!({"source": "bench"})),
        created_at,
    };
    let mut record = EventRecord::pending(&event);
    // Mostly delivered, as in a healthy system.
    record.status = match i % 20 {
        0 => Status::DeadLettered,
        1 => Status::RetryScheduled,
        2 => Status::Queued,
        3 => Status::Recorded,
        _ => Status::Delivered,
    };
    record.attempt_count = 1;
    record.updated_at = created_at;
    Ok(record)
}

async fn seed(db: &mongodb::Database, n: u64) -> Result<()> {
    let events = db.collection::<EventRecord>(EVENTS);
    let end = Utc::now();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<EventRecord> = (i..(i + BATCH as u64).min(n))
            .map(|j| record(j, n, end))
            .collect::<Result<_>>()?;
        events.insert_many(&batch).await?;
        i += batch.len() as u64;
        if i % 50_000 == 0 || i == n {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "seeded {i} events in {secs:.1} s ({:.0} events/s)",
                i as f64 / secs
            );
        }
    }
    Ok(())
}

/// p50, p90, p99 and max of `samples`, in milliseconds.
fn report(name: &str, mut samples: Vec<Duration>, n_failed: usize) {
    if samples.is_empty() {
        println!("{name:<52} no answer ({n_failed} failed)");
        return;
    }
    samples.sort();
    let pick = |q: f64| {
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index].as_secs_f64() * 1_000.0
    };
    let mean =
        samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1_000.0;
    println!(
        "{name:<52} n={:<4} p50={:>9.1} ms  p90={:>9.1} ms  p99={:>9.1} ms  max={:>9.1} ms  mean={:>9.1} ms{}",
        samples.len(),
        pick(0.50),
        pick(0.90),
        pick(0.99),
        pick(1.0),
        mean,
        if n_failed > 0 {
            format!("  ({n_failed} failed)")
        } else {
            String::new()
        }
    );
}

async fn get(http: &reqwest::Client, url: &str) -> Result<(Duration, Value)> {
    let started = Instant::now();
    let response = http.get(url).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    let took = started.elapsed();
    if !status.is_success() {
        bail!("GET {url}: {status} {body}");
    }
    Ok((took, body))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let uri = std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
    let mongo_config = MongoConfig::new(uri, &args.database);
    let db = mongo::connect(&mongo_config, "query-bench").await?;
    let existing = db
        .collection::<Document>(EVENTS)
        .estimated_document_count()
        .await?;
    let reuse = args.reuse && existing == args.n_events;
    if !reuse {
        db.collection::<Document>(EVENTS).drop().await?;
    }

    let mut config = Config::for_test(mongo_config);
    config.request_timeout = Duration::from_secs(120);
    let app = App::build(config).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    if reuse {
        eprintln!("reusing {existing} events in {}", args.database);
    } else {
        seed(&db, args.n_events).await?;
    }

    let http = reqwest::Client::new();
    let m = args.n_requests;
    println!(
        "{} events, {m} requests per scenario, one at a time",
        args.n_events
    );
    let n_events = args.n_events.max(1);
    let scenarios: Vec<Scenario> = vec![
        (
            "userId (about n/1000 events), page 1, with total",
            Box::new(|k| format!("/api/logs?userId=user-{}", k % 1000)),
        ),
        (
            "userId + status=DELIVERED, page 1, with total",
            Box::new(|k| format!("/api/logs?userId=user-{}&status=DELIVERED", k % 1000)),
        ),
        (
            "status=DEAD_LETTERED (n/20), page 1, with total",
            Box::new(|_| "/api/logs?status=DEAD_LETTERED".into()),
        ),
        (
            "no filter, page 1, with total",
            Box::new(|_| "/api/logs".into()),
        ),
        (
            "channel=sms + from/to (one day), page 1, with total",
            Box::new(|_| {
                let day = Utc::now() - chrono::Duration::days(10);
                format!(
                    "/api/logs?channel=sms&from={}&to={}",
                    day.format("%Y-%m-%d"),
                    day.format("%Y-%m-%d")
                )
            }),
        ),
        (
            "detail /api/logs/{id}",
            Box::new(move |k| format!("/api/logs/bench-{:08}", (k as u64 * 7_777) % n_events)),
        ),
    ];
    let budget = args.budget;
    for (name, path) in &scenarios {
        let selective = name.starts_with("userId") || name.starts_with("detail");
        if args.selective_only && !selective {
            continue;
        }
        let mut samples = Vec::with_capacity(m);
        let mut n_failed = 0;
        let started = Instant::now();
        for k in 0..m {
            if started.elapsed() > budget {
                break;
            }
            let url = format!("{base}{}", path(k));
            match get(&http, &url).await {
                Ok((took, _)) => samples.push(took),
                Err(e) => {
                    n_failed += 1;
                    eprintln!("{name}: {e}");
                }
            }
        }
        report(name, samples, n_failed);
    }

    // A user's events, walked by cursor ten at a time.
    let mut samples = Vec::with_capacity(m);
    let (_, mut page) = get(&http, &format!("{base}/api/logs?userId=user-1")).await?;
    for _ in 0..m {
        let Some(cursor) = page["pagination"]["nextCursor"].as_str().map(str::to_owned) else {
            break;
        };
        let (took, next) = get(
            &http,
            &format!("{base}/api/logs?userId=user-1&cursor={cursor}"),
        )
        .await?;
        samples.push(took);
        page = next;
    }
    report("userId, cursor walk (no total)", samples, 0);
    if args.selective_only {
        shutdown.cancel();
        server.await??;
        return Ok(());
    }

    // A keyset walk: each page after the first carries the previous nextCursor and skips the count.
    let mut samples = Vec::with_capacity(m);
    let (_, mut page) = get(
        &http,
        &format!("{base}/api/logs?status=DELIVERED&limit=100"),
    )
    .await?;
    let started = Instant::now();
    for _ in 0..m {
        if started.elapsed() > budget {
            break;
        }
        let Some(cursor) = page["pagination"]["nextCursor"].as_str().map(str::to_owned) else {
            break;
        };
        let (took, next) = get(
            &http,
            &format!("{base}/api/logs?status=DELIVERED&limit=100&cursor={cursor}"),
        )
        .await?;
        samples.push(took);
        page = next;
    }
    report(
        "status=DELIVERED, limit=100, cursor walk (no total)",
        samples,
        0,
    );

    let stats_runs = m.clamp(1, 10);
    let mut samples = Vec::new();
    let started = Instant::now();
    for _ in 0..stats_runs {
        if started.elapsed() > budget {
            break;
        }
        samples.push(get(&http, &format!("{base}/api/stats")).await?.0);
    }
    report("/api/stats ($group aggregation, as served)", samples, 0);

    // The alternative /api/stats, measured on the driver: one count_documents per value (record-only events
    // are the total less the channels).
    let events = db.collection::<Document>(EVENTS);
    let mut samples = Vec::new();
    let all_started = Instant::now();
    for _ in 0..stats_runs {
        if all_started.elapsed() > budget {
            break;
        }
        let started = Instant::now();
        for status in Status::ALL {
            events
                .count_documents(doc! { "status": status.as_str() })
                .await?;
        }
        for channel in Channel::ALL {
            events
                .count_documents(doc! { "channel": channel.as_str() })
                .await?;
        }
        events.count_documents(doc! {}).await?;
        for priority in Priority::ALL {
            events
                .count_documents(doc! { "priority": priority.as_str() })
                .await?;
        }
        samples.push(started.elapsed());
    }
    report("stats as 13 count_documents (not served)", samples, 0);

    // Where the time of an unfiltered first page goes: the sorted find, and the count.
    let parts: Vec<(&str, Document)> = vec![
        ("driver: status=DELIVERED", doc! { "status": "DELIVERED" }),
        ("driver: no filter", doc! {}),
    ];
    for (name, filter) in parts {
        let mut finds = Vec::new();
        let mut counts = Vec::new();
        let started = Instant::now();
        for _ in 0..stats_runs {
            if started.elapsed() > budget {
                break;
            }
            let t = Instant::now();
            let mut cursor = events
                .find(filter.clone())
                .sort(doc! { "createdAt": -1, "eventId": -1 })
                .limit(11)
                .projection(doc! { "attempts": 0, "timeline": 0 })
                .await?;
            while cursor.advance().await? {}
            finds.push(t.elapsed());
            let t = Instant::now();
            events.count_documents(filter.clone()).await?;
            counts.push(t.elapsed());
        }
        report(&format!("{name}, sorted find limit 11"), finds, 0);
        report(&format!("{name}, count_documents"), counts, 0);
    }

    shutdown.cancel();
    server.await??;
    Ok(())
}
