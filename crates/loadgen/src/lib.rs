//! herald-loadgen: realistic traffic into Herald's ingest over HTTP, a webhook sink that timestamps every
//! delivery, a ledger that proves no accepted event was lost, and a report (table and JSON) of rates, latency
//! percentiles per lane, errors by kind and the CPU and memory of Herald's processes.
//!
//! [`run`] is the whole measurement; the binary parses a [`RunConfig`] and prints the [`Report`]. `cargo xtask
//! bench` runs the binary once per scenario; the smoke test in `tests/` runs [`run`] against Herald in-process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Parser;
use herald_domain::{Lane, Status};
use herald_platform::MongoConfig;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::MissedTickBehavior;

pub mod baseline;
pub mod ledger;
pub mod mix;
pub mod procstat;
pub mod report;
pub mod sink;

pub use mix::{Kind, Mix};
pub use report::{Ledger, Percentiles, Report};
use sink::Sink;

/// Parses `500ms`, `10s`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{raw}' is not a duration such as 500ms, 10s, 2m"))?;
    let secs = match unit.trim() {
        "ms" => value / 1_000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3_600.0,
        other => return Err(format!("unknown unit '{other}' in '{raw}' (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("'{raw}': {e}"))
}

/// One run: what to send, how fast, for how long, and where to look for the outcome.
#[derive(Debug, Clone, Parser)]
#[command(about = "Send realistic traffic to Herald's ingest and account for every event")]
pub struct RunConfig {
    /// Ingest's base URL.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub ingest: String,
    /// MongoDB the services write to, read for the ledger.
    #[arg(long, env = "MONGODB_URI", default_value = "mongodb://127.0.0.1:27017")]
    pub mongodb_uri: String,
    /// Database the services write to.
    #[arg(long, env = "MONGODB_DATABASE", default_value = "herald")]
    pub database: String,
    /// Concurrent connections of the main stream (0: only the critical stream).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Events per second of the main stream, across its connections; 0 sends as fast as ingest answers.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How long to send (500ms, 10s, 2m). Default 10s, or unlimited with --count.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop the main stream after this many requests.
    #[arg(long)]
    pub count: Option<u64>,
    /// Weights of the kinds of request: webhook, email, sms, record (record-only /event), activity (/api/logs).
    #[arg(
        long,
        default_value = "webhook=60,email=5,sms=10,record=10,activity=15"
    )]
    pub mix: Mix,
    /// Share of /event requests of the main stream sent as critical, in percent.
    #[arg(long, default_value_t = 10.0)]
    pub critical_pct: f64,
    /// An extra stream of critical webhooks at this rate (events/s), alongside the main stream: how the critical
    /// lane fares while the main stream floods the default lane.
    #[arg(long, default_value_t = 0.0)]
    pub critical_rate: f64,
    /// Connections of the critical stream, each sending at its share of the rate: enough that a slow ingest
    /// answer does not hold the stream below its rate.
    #[arg(long, default_value_t = 8)]
    pub critical_connections: usize,
    /// Distinct users (a few of them much busier than the rest).
    #[arg(long, default_value_t = 1_000)]
    pub users: u32,
    /// The sink answers 503 to the first N requests of each webhook (retries), then 200.
    #[arg(long, default_value_t = 0)]
    pub sink_fail_first: u32,
    /// Where the webhook sink listens; the dispatchers must reach it.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub sink_addr: SocketAddr,
    /// The dispatchers' `HERALD_WEBHOOK_SECRET`, to check signatures (unchecked without it).
    #[arg(long, env = "HERALD_WEBHOOK_SECRET")]
    pub webhook_secret: Option<String>,
    /// After sending, wait at most this long for every accepted event to reach an end state.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub drain: Duration,
    /// API key sent to ingest as `X-API-Key` (where `HERALD_AUTH` is on; the dev stack runs without).
    #[arg(long, env = "HERALD_API_KEY")]
    pub api_key: Option<String>,
    /// Bound on one request to ingest.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub request_timeout: Duration,
    /// A folder of `<name>.pid` files (the dev stack's `.stack/pids`) whose processes' CPU and memory to report.
    #[arg(long)]
    pub pid_dir: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Tag of the run (in every event's metadata as `loadgenRun`); a fresh one by default.
    #[arg(long)]
    pub run_id: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Seed of the traffic's randomness.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl RunConfig {
    /// The defaults, against `ingest` and the MongoDB database the services write to.
    pub fn new(ingest: &str, mongodb_uri: &str, database: &str) -> Self {
        let mut config = Self::parse_from(["herald-loadgen"]);
        config.ingest = ingest.to_owned();
        config.mongodb_uri = mongodb_uri.to_owned();
        config.database = database.to_owned();
        config
    }
}

/// One request sent and ingest's answer.
#[derive(Debug, Clone)]
struct Sent {
    kind: Kind,
    lane: Lane,
    sent_at: DateTime<Utc>,
    ingest_ms: f64,
    /// The id ingest answered with (None when it did not answer 2xx).
    accepted_id: Option<String>,
}

/// What a connection did.
#[derive(Debug, Default)]
struct ConnectionLog {
    sent: Vec<Sent>,
    errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    errors: AtomicU64,
}

/// One stream's shape.
#[derive(Debug, Clone)]
struct Stream {
    mix: Mix,
    critical_pct: f64,
    connections: usize,
    /// Events/s across the stream's connections, 0 for as fast as possible.
    rate: f64,
    /// Requests left to send, shared by the stream's connections (None: until the deadline).
    budget: Option<Arc<AtomicU64>>,
}

fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "client timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else if e.is_body() || e.is_decode() {
        "reading the answer".into()
    } else {
        "transport".into()
    }
}

/// Sends one request; the id ingest accepted it under, or the kind of error.
async fn send(
    client: &reqwest::Client,
    ingest: &str,
    request: &mix::Request,
) -> std::result::Result<String, String> {
    let response = client
        .post(format!("{ingest}{}", request.path))
        .json(&request.body)
        .send()
        .await
        .map_err(|e| error_kind(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("ingest {}", status.as_u16()));
    }
    let answer: serde_json::Value = response.json().await.map_err(|e| error_kind(&e))?;
    answer["eventId"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "ingest answer without eventId".into())
}

#[allow(clippy::too_many_arguments)] // the parts of one connection, passed once
async fn connection(
    client: reqwest::Client,
    ingest: String,
    mut generator: mix::Generator,
    interval: Option<Duration>,
    offset: Duration,
    deadline: Instant,
    budget: Option<Arc<AtomicU64>>,
    counters: Arc<Counters>,
) -> ConnectionLog {
    let mut log = ConnectionLog::default();
    let mut ticker = interval.map(|every| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
        // A late tick is sent at once but the schedule does not catch up in a burst.
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    loop {
        if let Some(t) = ticker.as_mut() {
            tokio::select! {
                _ = t.tick() => {}
                _ = tokio::time::sleep_until(deadline.into()) => break,
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        if let Some(budget) = &budget {
            let took = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            });
            if took.is_err() {
                break;
            }
        }
        let request = generator.next_request();
        let sent_at = Utc::now();
        let started = Instant::now();
        let answer = send(&client, &ingest, &request).await;
        let ingest_ms = started.elapsed().as_secs_f64() * 1_000.0;
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let accepted_id = match answer {
            Ok(id) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                Some(id)
            }
            Err(kind) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                *log.errors.entry(kind).or_default() += 1;
                None
            }
        };
        log.sent.push(Sent {
            kind: request.kind,
            lane: request.lane,
            sent_at,
            ingest_ms,
            accepted_id,
        });
    }
    log
}

fn progress_bar(quiet: bool, length: u64, by_count: bool) -> ProgressBar {
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(length), target);
    let template = if by_count {
        "{elapsed_precise} [{bar:30}] {pos}/{len} sent  {msg}"
    } else {
        "{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Sends the traffic `config` describes, waits for it to settle, and accounts for every event.
pub async fn run(config: &RunConfig) -> Result<Report> {
    let started_at = Utc::now();
    let run_id = config.run_id.clone().unwrap_or_else(|| {
        format!(
            "lg{}{:04x}",
            started_at.format("%m%d%H%M%S"),
            rand::random::<u16>()
        )
    });
    let sink = Sink::start(config.sink_addr, config.webhook_secret.clone())
        .await
        .context("starting the webhook sink")?;
    let db = herald_platform::mongo::connect(
        &MongoConfig::new(config.mongodb_uri.clone(), config.database.clone()),
        "herald-loadgen",
    )
    .await
    .context("connecting to MongoDB")?;
    let processes = config
        .pid_dir
        .as_deref()
        .map(procstat::processes_in)
        .unwrap_or_default();
    let sampler = procstat::Sampler::start(processes);

    let n_critical = if config.critical_rate > 0.0 {
        config.critical_connections.max(1)
    } else {
        0
    };
    let n_connections = config.connections + n_critical;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &config.api_key {
        let mut value = reqwest::header::HeaderValue::from_str(key)
            .context("--api-key is not a header value")?;
        value.set_sensitive(true);
        headers.insert("x-api-key", value);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(n_connections.max(1))
        .timeout(config.request_timeout)
        .build()?;
    let duration = config.duration.unwrap_or(if config.count.is_some() {
        Duration::from_secs(86_400)
    } else {
        Duration::from_secs(10)
    });
    let mut streams = vec![Stream {
        mix: config.mix.clone(),
        critical_pct: config.critical_pct,
        connections: config.connections,
        rate: config.rate,
        budget: config.count.map(|n| Arc::new(AtomicU64::new(n))),
    }];
    if config.critical_rate > 0.0 {
        streams.push(Stream {
            mix: Mix::only(Kind::Webhook),
            critical_pct: 100.0,
            connections: n_critical,
            rate: config.critical_rate,
            budget: None,
        });
    }

    let counters = Arc::new(Counters::default());
    let load_started = Instant::now();
    let deadline = load_started + duration;
    let mut tasks = Vec::new();
    for (s, stream) in streams.iter().enumerate() {
        for c in 0..stream.connections {
            let interval = (stream.rate > 0.0)
                .then(|| Duration::from_secs_f64(stream.connections as f64 / stream.rate));
            // Spread the connections of a paced stream over one interval.
            let offset = interval
                .map(|every| every.mul_f64(c as f64 / stream.connections as f64))
                .unwrap_or_default();
            let generator = mix::Generator::new(
                stream.mix.clone(),
                stream.critical_pct,
                config.users,
                &run_id,
                &sink.base_url,
                config.sink_fail_first,
                format!("{run_id}-{s}-{c}"),
                StdRng::seed_from_u64(
                    config.seed.wrapping_mul(1_000_003) + (s * 10_000 + c) as u64,
                ),
            );
            tasks.push(tokio::spawn(connection(
                client.clone(),
                config.ingest.trim_end_matches('/').to_owned(),
                generator,
                interval,
                offset,
                deadline,
                stream.budget.clone(),
                counters.clone(),
            )));
        }
    }

    let bar = match config.count {
        Some(n) if config.duration.is_none() => progress_bar(config.quiet, n, true),
        _ => progress_bar(config.quiet, duration.as_secs().max(1), false),
    };
    let by_count = config.count.is_some() && config.duration.is_none();
    let progress = {
        let (bar, counters, sink) = (bar.clone(), counters.clone(), sink.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(500));
            loop {
                ticker.tick().await;
                let secs = load_started.elapsed().as_secs_f64().max(1e-3);
                let accepted = counters.accepted.load(Ordering::Relaxed);
                bar.set_position(if by_count {
                    counters.sent.load(Ordering::Relaxed)
                } else {
                    secs as u64
                });
                bar.set_message(format!(
                    "accepted {accepted} ({:.0}/s), errors {}, webhooks delivered {}",
                    accepted as f64 / secs,
                    counters.errors.load(Ordering::Relaxed),
                    sink.n_delivered_events()
                ));
            }
        })
    };

    let mut logs = Vec::new();
    for task in tasks {
        logs.push(task.await.context("a connection task failed")?);
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    progress.abort();
    bar.finish_and_clear();

    let mut sent: Vec<Sent> = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for log in logs {
        sent.extend(log.sent);
        for (kind, n) in log.errors {
            *errors.entry(kind).or_default() += n;
        }
    }
    let n_accepted = sent.iter().filter(|s| s.accepted_id.is_some()).count() as u64;

    let drain_bar = progress_bar(config.quiet, n_accepted.max(1), true);
    if let Ok(style) =
        ProgressStyle::with_template("draining {elapsed_precise} [{bar:30}] {pos}/{len} settled")
    {
        drain_bar.set_style(style.progress_chars("=> "));
    }
    let drain = ledger::wait_settled(&db, &run_id, n_accepted, config.drain, |settled| {
        drain_bar.set_position(settled);
    })
    .await;
    drain_bar.finish_and_clear();
    let processes = sampler.finish().await;
    let rows = ledger::read_rows(&db, &run_id)
        .await
        .context("reading the run's events from MongoDB")?;

    Ok(account(
        config,
        Accounting {
            run_id,
            started_at,
            load_started_at: started_at,
            load_secs,
            drain_secs: drain.as_secs_f64(),
            sent,
            errors,
            rows,
            sink: &sink,
            processes,
        },
    ))
}

/// What [`account`] works from.
struct Accounting<'a> {
    run_id: String,
    started_at: DateTime<Utc>,
    load_started_at: DateTime<Utc>,
    load_secs: f64,
    drain_secs: f64,
    sent: Vec<Sent>,
    errors: BTreeMap<String, u64>,
    rows: Vec<ledger::Row>,
    sink: &'a Sink,
    processes: Vec<procstat::ProcessUsage>,
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1_000.0
}

/// The ledger and the report, from what was sent, what MongoDB holds and what the sink received.
fn account(config: &RunConfig, a: Accounting<'_>) -> Report {
    let mut rows: std::collections::HashMap<String, ledger::Row> = a
        .rows
        .into_iter()
        .map(|r| (r.event_id.clone(), r))
        .collect();
    let mut errors = a.errors;
    let mut ledger = Ledger::default();
    let mut lanes: BTreeMap<String, (Vec<f64>, Vec<f64>, u64, u64)> = BTreeMap::new();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let load_end =
        a.load_started_at + chrono::Duration::milliseconds((a.load_secs * 1_000.0) as i64);
    let mut n_delivered_during_load = 0u64;
    let mut last_delivery = a.load_started_at;
    let mut retry = report::RetryAccuracy::default();
    let (mut start_vs_due, mut sink_vs_due, mut scheduled_delay) = (vec![], vec![], vec![]);

    for sent in &a.sent {
        let lane = lanes.entry(sent.lane.as_str().to_owned()).or_default();
        lane.0.push(sent.ingest_ms);
        let Some(id) = &sent.accepted_id else {
            continue;
        };
        lane.2 += 1;
        ledger.accepted += 1;
        *by_kind.entry(sent.kind.as_str().to_owned()).or_default() += 1;
        let Some(row) = rows.remove(id) else {
            ledger.missing += 1;
            continue;
        };
        match row.status {
            Status::Delivered => {
                ledger.delivered += 1;
                let at = if row.channel == Some(herald_domain::Channel::Webhook) {
                    let at = a.sink.delivered_at(id);
                    if at.is_none() {
                        ledger.delivered_not_received += 1;
                    }
                    at
                } else {
                    row.delivered_at()
                };
                if let Some(at) = at {
                    lane.1.push(ms_between(sent.sent_at, at));
                    lane.3 += 1;
                    if at <= load_end {
                        n_delivered_during_load += 1;
                    }
                    last_delivery = last_delivery.max(at);
                }
            }
            Status::Recorded => ledger.recorded += 1,
            Status::DeadLettered => ledger.dead_lettered += 1,
            other => {
                *ledger
                    .in_flight
                    .entry(other.as_str().to_owned())
                    .or_default() += 1
            }
        }
        let hits = a.sink.hits_of(id);
        for (number, scheduled_at, due) in row.scheduled_retries() {
            retry.n_scheduled += 1;
            scheduled_delay.push(ms_between(scheduled_at, due));
            if let Some(attempt) = row.attempts.iter().find(|x| x.number == number) {
                retry.n_ran += 1;
                start_vs_due.push(ms_between(due, attempt.started_at));
            }
            if let Some(hit) = hits.get((number as usize).saturating_sub(1)) {
                sink_vs_due.push(ms_between(due, hit.at));
            }
        }
    }
    ledger.stored_unacknowledged = rows.len() as u64;
    ledger.balanced = ledger.missing == 0
        && ledger.delivered_not_received == 0
        && ledger.accepted
            == ledger.delivered + ledger.recorded + ledger.dead_lettered + ledger.n_in_flight();
    if ledger.missing > 0 {
        errors.insert("ledger: accepted but missing".into(), ledger.missing);
    }
    if ledger.delivered_not_received > 0 {
        errors.insert(
            "ledger: delivered but never received".into(),
            ledger.delivered_not_received,
        );
    }
    let sink_counts = a.sink.counts();
    if sink_counts.n_bad_signature > 0 {
        errors.insert("sink: bad signature".into(), sink_counts.n_bad_signature);
    }
    if sink_counts.n_no_event_id > 0 {
        errors.insert("sink: no Herald-Event-Id".into(), sink_counts.n_no_event_id);
    }

    let load_secs = a.load_secs.max(1e-3);
    let delivered_total: u64 = lanes.values().map(|l| l.3).sum();
    let overall_secs = ms_between(a.load_started_at, last_delivery) / 1_000.0;
    Report {
        run_id: a.run_id,
        started_at: a.started_at.to_rfc3339(),
        ingest_url: config.ingest.clone(),
        mix: config.mix.to_string(),
        connections: config.connections,
        rate: config.rate,
        critical_pct: config.critical_pct,
        critical_rate: config.critical_rate,
        load_secs: a.load_secs,
        drain_secs: a.drain_secs,
        sent: a.sent.len() as u64,
        accepted: ledger.accepted,
        accepted_per_sec: ledger.accepted as f64 / load_secs,
        delivered_per_sec_during_load: n_delivered_during_load as f64 / load_secs,
        delivered_per_sec_overall: if overall_secs > 0.0 {
            delivered_total as f64 / overall_secs
        } else {
            0.0
        },
        lanes: lanes
            .into_iter()
            .map(|(lane, (ingest, e2e, accepted, delivered))| {
                (
                    lane,
                    report::LaneReport {
                        accepted,
                        delivered,
                        ingest: Percentiles::of(ingest),
                        end_to_end: Percentiles::of(e2e),
                    },
                )
            })
            .collect(),
        by_kind,
        errors,
        retry: (retry.n_scheduled > 0).then(|| report::RetryAccuracy {
            start_vs_due: Percentiles::of(start_vs_due),
            sink_vs_due: Percentiles::of(sink_vs_due),
            scheduled_delay: Percentiles::of(scheduled_delay),
            ..retry
        }),
        sink: sink_counts,
        ledger,
        processes: a.processes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn the_defaults_parse() {
        let config = RunConfig::new("http://127.0.0.1:1", "mongodb://127.0.0.1:2", "db");
        assert_eq!(config.connections, 16);
        assert_eq!(config.drain, Duration::from_secs(120));
    }
}
