//! Seeds N events into a database and measures the latency of `herald-query`'s requests against them.
//!
//! ```text
//! MONGODB_URI=mongodb://127.0.0.1:27017 cargo run --release -p herald-query --example query_bench -- \
//!     [--events 100000] [--requests 50] [--budget-secs 60] [--database herald_bench] [--reuse] \
//!     [--selective-only] [--slicing auto|on|off] [--json FILE]
//! ```
//!
//! The query service runs in-process on a free port, as in production (it creates the indexes before the seed
//! goes in, so the seed pays for index upkeep as real writes do). Each request kind is sent `--requests` times,
//! one after the other, and reported with p50/p90/p99/max and `matches`, how many seeded events its filter
//! selects (computed from the seed, not counted on the server). A kind stops early once it has spent
//! `--budget-secs`, and says how many it measured. `--reuse` keeps a database seeded by an earlier run with as
//! many events. `--selective-only` leaves out the kinds whose filter matches a large part of the events.
//! `--slicing` sets `HERALD_QUERY_SLICED_LISTS` (default `auto`: sliced on FerretDB), to compare a list read
//! slice by slice with one read in one query on the same seed. `--json FILE` writes one entry per kind:
//! `{"name", "p50_ms", "p99_ms", "matches", "n"}`. The seed also
//! fills the stats buckets, through the stats consumer's own fold, since it bypasses Kafka.

// A benchmark's report is what it prints.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use herald_domain::{Channel, Event, EventId, Priority, Status, StatusMessage, StatusOutcome};
use herald_platform::mongo::{self, EVENTS};
use herald_platform::service::Service as _;
use herald_platform::store::EventRecord;
use herald_platform::MongoConfig;
use herald_query::logs::slices::Slicing;
use herald_query::stats::buckets::{hour_of, Buckets, Step};
use herald_query::{App, Config};
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 1_000;

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
    slicing: Slicing,
    json: Option<std::path::PathBuf>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        n_events: 100_000,
        n_requests: 50,
        budget: Duration::from_secs(60),
        database: "herald_bench".into(),
        reuse: false,
        selective_only: false,
        slicing: Slicing::Auto,
        json: None,
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
            "--slicing" => args.slicing = value()?.parse()?,
            "--json" => args.json = Some(value()?.into()),
            other => bail!("unknown argument {other}; see the header of query_bench.rs"),
        }
    }
    Ok(args)
}

/// What the requests filter on, of event `i` of `n`: a thousand users, every status, channel and priority, spread
/// over thirty days that end at `end`.
#[derive(Debug, Clone)]
struct Shape {
    user_id: String,
    event_type: &'static str,
    channel: Option<Channel>,
    priority: Priority,
    status: Status,
    created_at: DateTime<Utc>,
}

fn shape(i: u64, n: u64, end: DateTime<Utc>) -> Shape {
    let span_ms = DAYS * 86_400_000;
    let offset = (i as i64 * span_ms) / n.max(1) as i64;
    Shape {
        user_id: format!("user-{}", (i * 7_919) % N_USERS),
        event_type: ["order.shipped", "user.signup", "password.reset"][(i % 3) as usize],
        channel: match i % 4 {
            0 => Some(Channel::Email),
            1 => Some(Channel::Sms),
            2 => Some(Channel::Webhook),
            _ => None,
        },
        priority: if i % 10 == 0 {
            Priority::Critical
        } else {
            Priority::Default
        },
        // Mostly delivered, as in a healthy system: 5% dead letters, 5% recorded, and two in a thousand still in
        // flight (a stored month holds few events that have not finished).
        status: match (i % 20, i % 1_000) {
            (0, _) => Status::DeadLettered,
            (3, _) => Status::Recorded,
            (_, 1) => Status::RetryScheduled,
            (_, 2) => Status::Queued,
            _ => Status::Delivered,
        },
        created_at: end - chrono::Duration::milliseconds(span_ms - offset),
    }
}

fn record(i: u64, n: u64, end: DateTime<Utc>) -> Result<EventRecord> {
    let shape = shape(i, n, end);
    let event = Event {
        event_id: EventId::parse(&format!("bench-{i:08}"))?,
        user_id: Some(shape.user_id),
        event_type: Some(shape.event_type.into()),
        channel: shape.channel,
        priority: shape.priority,
        payload: json!({"to": format!("user{i}@example.com"), "subject": "Your order", "text": "Shipped."}),
        metadata: Some(json!({"source": "bench"})),
        created_at: shape.created_at,
    };
    let mut record = EventRecord::accepted(&event);
    record.status = shape.status;
    record.attempt_count = 1;
    record.updated_at = shape.created_at;
    Ok(record)
}

/// Where a seed's `end` is kept, so that `--reuse` knows which events a date filter selects.
const META: &str = "bench_meta";

/// The step the status topic carries for a seeded event in a terminal state, as the stats consumer would read it
/// (partition 0, offset `i`); none for one in flight.
fn step(i: u64, record: &EventRecord) -> Option<Step> {
    let outcome = match record.status {
        Status::Delivered => StatusOutcome::Delivered,
        Status::Recorded => StatusOutcome::Recorded,
        Status::DeadLettered => StatusOutcome::DeadLettered,
        _ => return None,
    };
    Some(Step {
        partition: 0,
        offset: i as i64,
        status: StatusMessage::new(&record.event(), outcome, 1, 0),
    })
}

/// Inserts the events and folds their steps into the stats buckets through the stats consumer's own code (the
/// seed goes straight into MongoDB, not through Kafka).
async fn seed(db: &mongodb::Database, n: u64, end: DateTime<Utc>) -> Result<()> {
    let events = db.collection::<Document>(EVENTS);
    let buckets = Buckets::new(db);
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<EventRecord> = (i..(i + BATCH as u64).min(n))
            .map(|j| record(j, n, end))
            .collect::<Result<_>>()?;
        // As the writers store them: with the slices of their creation time.
        let documents = batch
            .iter()
            .map(EventRecord::to_document)
            .collect::<Result<Vec<_>, _>>()?;
        events.insert_many(documents).await?;
        let steps: Vec<Step> = batch
            .iter()
            .zip(i..)
            .filter_map(|(record, j)| step(j, record))
            .collect();
        buckets.apply(&steps).await?;
        i += batch.len() as u64;
        if i % 50_000 == 0 || i == n {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "seeded {i} events in {secs:.1} s ({:.0} events/s)",
                i as f64 / secs
            );
        }
    }
    db.collection::<Document>(META)
        .insert_one(doc! { "_id": "seed", "n": n as i64, "endMs": end.timestamp_millis() })
        .await?;
    Ok(())
}

/// One request kind's figures, as `--json` writes them.
#[derive(Debug, serde::Serialize)]
struct Entry {
    name: String,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    matches: u64,
    /// How many requests were measured (fewer than asked when the budget ran out).
    n: usize,
    n_failed: usize,
}

/// Prints p50, p90, p99 and max of `samples`, in milliseconds, and returns the entry.
fn report(name: &str, matches: u64, mut samples: Vec<Duration>, n_failed: usize) -> Entry {
    let mut entry = Entry {
        name: name.to_owned(),
        p50_ms: None,
        p99_ms: None,
        matches,
        n: samples.len(),
        n_failed,
    };
    if samples.is_empty() {
        println!("{name:<58} matches={matches:<8} no answer ({n_failed} failed)");
        return entry;
    }
    samples.sort();
    let pick = |q: f64| {
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        (samples[index].as_secs_f64() * 10_000.0).round() / 10.0
    };
    entry.p50_ms = Some(pick(0.50));
    entry.p99_ms = Some(pick(0.99));
    println!(
        "{name:<58} matches={matches:<8} n={:<4} p50={:>9.1} ms  p90={:>9.1} ms  p99={:>9.1} ms  max={:>9.1} ms{}",
        samples.len(),
        pick(0.50),
        pick(0.90),
        pick(0.99),
        pick(1.0),
        if n_failed > 0 {
            format!("  ({n_failed} failed)")
        } else {
            String::new()
        }
    );
    entry
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

/// A request kind: its name, its query string (`None` for the by-id lookup), which seeded events it selects, and
/// whether it walks by cursor (each measured request continues the previous page) instead of repeating page 1.
struct Kind {
    name: &'static str,
    /// `/api/logs` or `/api/dead-letters`.
    route: &'static str,
    query: String,
    selects: Box<dyn Fn(&Shape) -> bool>,
    walk: bool,
    selective: bool,
}

fn kind(
    name: &'static str,
    query: impl Into<String>,
    walk: bool,
    selects: impl Fn(&Shape) -> bool + 'static,
) -> Kind {
    Kind {
        name,
        route: "/api/logs",
        query: query.into(),
        selects: Box::new(selects),
        walk,
        selective: true,
    }
}

/// The request kinds: one event, lists by every filter and some combinations (first pages and cursor walks),
/// unselective lists, and stats.
fn kinds(end: DateTime<Utc>) -> Vec<Kind> {
    let day = (end - chrono::Duration::days(10)).date_naive();
    let day_start = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let in_day = move |s: &Shape| {
        day_start.is_some_and(|d| s.created_at >= d && s.created_at < d + chrono::Duration::days(1))
    };
    let user = |s: &Shape| s.user_id == "user-1";
    let dead = |s: &Shape| s.status == Status::DeadLettered;
    let unselective = |mut k: Kind| {
        k.selective = false;
        k
    };
    let dead_letters = |mut k: Kind| {
        k.route = "/api/dead-letters";
        k
    };
    vec![
        kind("userId, page 1", "userId=user-1", false, user),
        kind(
            "userId, limit=100, cursor pages",
            "userId=user-1&limit=100",
            true,
            user,
        ),
        kind(
            "status=RETRY_SCHEDULED, page 1",
            "status=RETRY_SCHEDULED",
            false,
            |s| s.status == Status::RetryScheduled,
        ),
        kind(
            "status=RETRY_SCHEDULED, cursor pages",
            "status=RETRY_SCHEDULED",
            true,
            |s| s.status == Status::RetryScheduled,
        ),
        dead_letters(kind("dead letters, page 1", "", false, dead)),
        dead_letters(kind("dead letters, cursor pages", "", true, dead)),
        dead_letters(kind(
            "dead letters eventType=password.reset, cursor pages",
            "eventType=password.reset",
            true,
            move |s| s.event_type == "password.reset" && dead(s),
        )),
        dead_letters(kind(
            "dead letters channel=email + one day, page 1",
            format!("channel=email&from={day}&to={day}"),
            false,
            move |s| s.channel == Some(Channel::Email) && dead(s) && in_day(s),
        )),
        kind("userId, cursor pages", "userId=user-1", true, user),
        kind(
            "userId, page 1 with total=true",
            "userId=user-1&total=true",
            false,
            user,
        ),
        kind(
            "userId + status=DELIVERED, page 1",
            "userId=user-1&status=DELIVERED",
            false,
            move |s| user(s) && s.status == Status::Delivered,
        ),
        kind(
            "status=DEAD_LETTERED, page 1",
            "status=DEAD_LETTERED",
            false,
            dead,
        ),
        kind(
            "status=DEAD_LETTERED, cursor pages",
            "status=DEAD_LETTERED",
            true,
            dead,
        ),
        kind(
            "priority=critical + status=DEAD_LETTERED, page 1",
            "priority=critical&status=DEAD_LETTERED",
            false,
            move |s| s.priority == Priority::Critical && dead(s),
        ),
        kind(
            "eventType=password.reset + status=DEAD_LETTERED, cursor pages",
            "eventType=password.reset&status=DEAD_LETTERED",
            true,
            move |s| s.event_type == "password.reset" && dead(s),
        ),
        kind(
            "channel=email + status=DEAD_LETTERED, page 1",
            "channel=email&status=DEAD_LETTERED",
            false,
            move |s| s.channel == Some(Channel::Email) && dead(s),
        ),
        unselective(kind(
            "channel=sms + from/to (one day), page 1",
            format!("channel=sms&from={day}&to={day}"),
            false,
            move |s| s.channel == Some(Channel::Sms) && in_day(s),
        )),
        unselective(kind(
            "priority=critical, page 1",
            "priority=critical",
            false,
            |s| s.priority == Priority::Critical,
        )),
        unselective(kind("no filter, page 1", "", false, |_| true)),
        unselective(kind(
            "status=DELIVERED, limit=100, cursor pages",
            "status=DELIVERED&limit=100",
            true,
            |s| s.status == Status::Delivered,
        )),
    ]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let uri = std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
    let mongo_config = MongoConfig::new(uri, &args.database);
    let db = mongo::connect(&mongo_config, "query-bench").await?;
    let seeded = db
        .collection::<Document>(META)
        .find_one(doc! { "_id": "seed" })
        .await?
        .filter(|meta| meta.get_i64("n").ok() == Some(args.n_events as i64))
        .and_then(|meta| meta.get_i64("endMs").ok())
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    let reuse = args.reuse && seeded.is_some();
    if !reuse {
        db.drop().await?;
    }

    let mut config = Config::for_test(mongo_config);
    config.request_timeout = Duration::from_secs(120);
    config.slicing = args.slicing;
    let app = App::build(config).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    let end = match seeded.filter(|_| reuse) {
        Some(end) => {
            eprintln!("reusing {} events in {}", args.n_events, args.database);
            end
        }
        None => {
            let end = Utc::now();
            seed(&db, args.n_events, end).await?;
            end
        }
    };

    let http = reqwest::Client::new();
    let m = args.n_requests;
    let n_events = args.n_events.max(1);
    println!(
        "{} events, {m} requests per kind, one at a time",
        args.n_events
    );
    let budget = args.budget;
    let mut entries = Vec::new();

    let mut samples = Vec::with_capacity(m);
    let mut n_failed = 0;
    for k in 0..m {
        let url = format!("{base}/api/logs/bench-{:08}", (k as u64 * 7_777) % n_events);
        match get(&http, &url).await {
            Ok((took, _)) => samples.push(took),
            Err(e) => {
                n_failed += 1;
                eprintln!("by id: {e}");
            }
        }
    }
    entries.push(report("by id", 1, samples, n_failed));

    let shapes: Vec<Shape> = (0..args.n_events)
        .map(|i| shape(i, args.n_events, end))
        .collect();
    for kind in kinds(end) {
        if args.selective_only && !kind.selective {
            continue;
        }
        let matches = shapes.iter().filter(|s| (kind.selects)(s)).count() as u64;
        let path = |cursor: Option<&str>| {
            let mut query = kind.query.clone();
            if let Some(cursor) = cursor {
                if !query.is_empty() {
                    query.push('&');
                }
                query.push_str("cursor=");
                query.push_str(cursor);
            }
            format!("{base}{}?{query}", kind.route)
        };
        let mut samples = Vec::with_capacity(m);
        let mut n_failed = 0;
        let mut cursor: Option<String> = None;
        if kind.walk {
            // The first page is not measured: each measured request continues the walk.
            match get(&http, &path(None)).await {
                Ok((_, body)) => {
                    cursor = body["pagination"]["nextCursor"].as_str().map(str::to_owned)
                }
                Err(e) => eprintln!("{}: {e}", kind.name),
            }
        }
        // The budget starts after the unmeasured first page, so that a slow one still leaves a measured page.
        let started = Instant::now();
        for _ in 0..m {
            if started.elapsed() > budget || (kind.walk && cursor.is_none()) {
                break;
            }
            match get(&http, &path(cursor.as_deref())).await {
                Ok((took, body)) => {
                    samples.push(took);
                    if kind.walk {
                        cursor = body["pagination"]["nextCursor"].as_str().map(str::to_owned);
                    }
                }
                Err(e) => {
                    n_failed += 1;
                    eprintln!("{}: {e}", kind.name);
                }
            }
        }
        entries.push(report(kind.name, matches, samples, n_failed));
    }

    let day = (end - chrono::Duration::days(10))
        .format("%Y-%m-%d")
        .to_string();
    let stats: Vec<(&str, String, u64)> = vec![
        ("stats all", String::new(), args.n_events),
        (
            "stats one day",
            format!("from={day}&to={day}"),
            shapes
                .iter()
                .filter(|s| s.created_at.format("%Y-%m-%d").to_string() == day)
                .count() as u64,
        ),
        (
            "stats last 7 days",
            format!(
                "from={}",
                (end - chrono::Duration::days(7))
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            // Stats count whole hours: from the start of the hour `from` falls in.
            shapes
                .iter()
                .filter(|s| s.created_at >= hour_of(end - chrono::Duration::days(7)))
                .count() as u64,
        ),
    ];
    // The first answer of a process (or the first after 30 s without one) counts the events in flight before it
    // answers; the later ones answer from that count and take the next behind them. Measured on its own.
    let cold = "stats all, first answer (counts the events in flight)";
    match get(&http, &format!("{base}/api/stats")).await {
        Ok((took, _)) => entries.push(report(cold, args.n_events, vec![took], 0)),
        Err(e) => {
            eprintln!("{cold}: {e}");
            entries.push(report(cold, args.n_events, Vec::new(), 1));
        }
    }
    for (name, query, matches) in stats {
        let mut samples = Vec::new();
        let mut n_failed = 0;
        let started = Instant::now();
        for _ in 0..m {
            if started.elapsed() > budget {
                break;
            }
            match get(&http, &format!("{base}/api/stats?{query}")).await {
                Ok((took, body)) => {
                    samples.push(took);
                    if body["total"].as_u64() != Some(matches) {
                        eprintln!(
                            "{name}: total {} where the seed has {matches}",
                            body["total"]
                        );
                    }
                }
                Err(e) => {
                    n_failed += 1;
                    eprintln!("{name}: {e}");
                }
            }
        }
        entries.push(report(name, matches, samples, n_failed));
    }

    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&entries)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    shutdown.cancel();
    server.await??;
    Ok(())
}
