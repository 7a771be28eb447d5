//! `cargo xtask bench`: Herald's standard benchmark scenarios on the local native stack, with the machine's own
//! limits measured in the same run, written as a report (markdown and JSON) under `target/bench/`.
//!
//! 1. `throughput`: webhooks to the load generator's sink as fast as ingest takes them.
//! 2. `priority`: critical webhooks at a low rate, alone and then beside a default-lane flood.
//! 3. `retry`: webhooks whose receiver fails the first attempt once; scheduled against actual retry times.
//! 4. `query`: `GET /api/logs` with filters over a bulk-seeded collection (`herald-query`'s `query_bench`).
//! 5. `baseline`: Kafka's own producer performance tool and the MongoDB-wire server's raw insert rate.
//!
//! The stack is started if it is not running (and left running); the dev services are started from a release
//! build if they are not running, and those this started are stopped at the end. Benchmarks report numbers:
//! nothing here passes or fails on a time limit. A scenario whose ledger does not balance fails the command after
//! the report is written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use herald_domain::TopicSpec;
use herald_platform::KafkaConfig;
use serde_json::{json, Value};

use crate::paths;
use crate::stack::Stack;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    Baseline,
    Throughput,
    Priority,
    Retry,
    Query,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::Baseline,
        Scenario::Throughput,
        Scenario::Priority,
        Scenario::Retry,
        Scenario::Query,
    ];
}

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scenarios to run, comma-separated (default: all, baselines first).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// How long the throughput run and the priority flood send (500ms, 10s, 2m).
    #[arg(long, default_value = "60s")]
    duration: String,
    /// Connections of the throughput run and of the flood.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Events whose first delivery fails, for the retry scenario.
    #[arg(long, default_value_t = 2_000)]
    retry_events: u64,
    /// Events seeded for the query scenario (the issue asks for 1,000,000; see docs/BENCHMARKS.md for how long
    /// FerretDB takes to take them).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Requests per query kind.
    #[arg(long, default_value_t = 20)]
    query_requests: usize,
    /// Reuse the query scenario's seeded database when it holds exactly `--events` events.
    #[arg(long)]
    reuse_seed: bool,
    /// Records sent by Kafka's producer performance tool.
    #[arg(long, default_value_t = 1_000_000)]
    kafka_records: u64,
    /// Use the binaries already in target/release instead of building them (on a machine where other builds
    /// keep invalidating the shared target folder).
    #[arg(long)]
    no_build: bool,
    /// Leave the services this started running.
    #[arg(long)]
    keep_services: bool,
    /// Where to write the report (default target/bench).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The dev stack's webhook secret (`services.rs`), so the sink checks every signature.
const DEV_WEBHOOK_SECRET: &str = "dev-webhook-secret-change-me";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| paths::repo_root().join("target"), PathBuf::from)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Output of a command, or what went wrong, for the report's versions.
fn version_of(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

/// Cores, memory, CPU model, load and the versions of everything measured.
fn machine() -> Value {
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg_at_start": read("/proc/loadavg").trim(),
        "versions": {
            "herald": env!("CARGO_PKG_VERSION"),
            "rustc": version_of("rustc", &["--version"]),
            "kafka": crate::stack::KAFKA_VERSION,
            "java": version_of("java", &["-version"]),
            "ferretdb": crate::stack::FERRETDB_VERSION,
            "postgresql": version_of("psql", &["--version"]),
        },
    })
}

/// Runs `cmd`, echoing its stdout as it comes and keeping it; stderr (progress bars) goes to the terminal.
fn run_captured(mut cmd: Command, what: &str) -> Result<(bool, String)> {
    use std::io::{BufRead, BufReader};
    eprintln!("bench: {what}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut text = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            eprintln!("  {line}");
            text.push_str(&line);
            text.push('\n');
        }
    }
    let status = child.wait()?;
    Ok((status.success(), text))
}

/// One loadgen run: its report as text and as JSON, and whether its ledger balanced.
struct LoadgenRun {
    text: String,
    json: Value,
    balanced: bool,
}

fn loadgen(out: &Path, name: &str, args: &[String]) -> Result<LoadgenRun> {
    let json_path = out.join(format!("{name}.json"));
    let _ = std::fs::remove_file(&json_path);
    let mut cmd = Command::new(target_dir().join("release").join("herald-loadgen"));
    cmd.arg("run")
        .args(args)
        .arg("--json")
        .arg(&json_path)
        .arg("--pid-dir")
        .arg(paths::state_dir().join("pids"))
        .arg("--webhook-secret")
        .arg(DEV_WEBHOOK_SECRET)
        .current_dir(paths::repo_root());
    let (ok, text) = run_captured(
        cmd,
        &format!("{name}: herald-loadgen run {}", args.join(" ")),
    )?;
    let json: Value = std::fs::read(&json_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .with_context(|| format!("{name}: herald-loadgen wrote no report (exit ok: {ok})"))?;
    let balanced = json["ledger"]["balanced"].as_bool().unwrap_or(false);
    Ok(LoadgenRun {
        text,
        json,
        balanced,
    })
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Record sizes of the Kafka baseline: about a Herald lane message with a small payload.
const KAFKA_RECORD_SIZES: &[u64] = &[1024];

/// Kafka's `ProducerPerformance` (`kafka-producer-perf-test`) from the stack's own jars, with Herald's producer
/// settings (`acks=all`, idempotence) and events of about Herald's size.
async fn kafka_baseline(stack: &Stack, records: u64) -> Result<Value> {
    let topic = "herald-bench.baseline";
    let kafka = KafkaConfig::new(stack.kafka_brokers(), "");
    herald_platform::kafka::ensure_topics(
        &kafka,
        &[TopicSpec {
            name: topic.into(),
            partitions: 6,
        }],
        1,
    )
    .await
    .context("creating the baseline topic")?;
    let libs = stack.kafka_libs()?;
    let mut results = Vec::new();
    for &record_size in KAFKA_RECORD_SIZES {
        let mut cmd = Command::new("java");
        cmd.arg(format!(
            "-Dlog4j.configuration=file:{}",
            paths::state_dir()
                .join("kafka")
                .join("log4j.properties")
                .display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg("org.apache.kafka.tools.ProducerPerformance")
        .args(["--topic", topic])
        .args(["--num-records", &records.to_string()])
        .args(["--record-size", &record_size.to_string()])
        .args(["--throughput", "-1"])
        .arg("--producer-props")
        .arg(format!("bootstrap.servers={}", stack.kafka_brokers()))
        .args(["acks=all", "enable.idempotence=true"]);
        let (ok, text) = run_captured(
            cmd,
            &format!(
                "baseline: kafka ProducerPerformance, {records} records of {record_size} bytes"
            ),
        )?;
        if !ok {
            bail!("ProducerPerformance failed:\n{text}");
        }
        // The last line: "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency, ...".
        let last = text
            .lines()
            .rev()
            .find(|l| l.contains("records/sec"))
            .unwrap_or_default()
            .to_owned();
        let number_before = |marker: &str| -> Option<f64> {
            let head = &last[..last.find(marker)?];
            head.split([' ', '(', ','])
                .rfind(|s| !s.is_empty())?
                .parse()
                .ok()
        };
        results.push(json!({
            "record_size": record_size,
            "records": records,
            "records_per_sec": number_before(" records/sec"),
            "mb_per_sec": number_before(" MB/sec"),
            "avg_latency_ms": number_before(" ms avg latency"),
            "p99_ms": number_before(" ms 99th"),
            "summary": last,
        }));
    }
    Ok(json!({ "producer_perf": results }))
}

fn mongo_baseline(out: &Path) -> Result<Value> {
    let json_path = out.join("mongo-baseline.json");
    let mut cmd = Command::new(target_dir().join("release").join("herald-loadgen"));
    cmd.arg("mongo-baseline").arg("--json").arg(&json_path);
    let (ok, text) = run_captured(cmd, "baseline: MongoDB-wire insert rate")?;
    if !ok {
        bail!("mongo-baseline failed:\n{text}");
    }
    let bytes = std::fs::read(&json_path).context("reading mongo-baseline.json")?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// `herald-query`'s own query benchmark, in release, on a seeded database of its own.
fn query(stack: &Stack, args: &BenchArgs) -> Result<Value> {
    let mut cmd = if args.no_build {
        Command::new(
            target_dir()
                .join("release")
                .join("examples")
                .join("query_bench"),
        )
    } else {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "herald-query",
            "--example",
            "query_bench",
            "--",
        ]);
        cargo
    };
    cmd.args(["--events", &args.events.to_string()])
        .args(["--requests", &args.query_requests.to_string()])
        .args(["--budget-secs", "30"])
        .args(["--database", "herald_bench"])
        .arg("--json")
        .arg(target_dir().join("bench").join("query.json"))
        .envs(
            stack
                .test_env()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .current_dir(paths::repo_root());
    if args.reuse_seed {
        cmd.arg("--reuse");
    }
    // A file left by an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(target_dir().join("bench").join("query.json"));
    // The seed's progress ("seeded N events in S s") goes to stderr: keep it for the report too.
    let log = std::fs::File::create(target_dir().join("bench").join("query-seed.log"))?;
    cmd.stderr(Stdio::from(log));
    let started = Instant::now();
    let (ok, text) = run_captured(
        cmd,
        &format!("query: query_bench over {} events", args.events),
    )?;
    let seed_log = read(
        &target_dir()
            .join("bench")
            .join("query-seed.log")
            .to_string_lossy(),
    );
    let seeded = seed_log
        .lines()
        .rev()
        .find(|l| l.starts_with("seeded ") || l.starts_with("reusing "))
        .unwrap_or("")
        .to_owned();
    // query_bench stops at a request FerretDB does not answer within its timeout; what it measured until then
    // is still worth reporting.
    let failure = (!ok).then(|| {
        seed_log
            .lines()
            .rev()
            .find(|l| l.contains("Error") || l.contains("error"))
            .unwrap_or("query_bench failed")
            .to_owned()
    });
    // One entry per request kind, `{"name", "p50_ms", "p99_ms", "matches", "n", "n_failed"}`, as query_bench wrote it.
    let entries: Value = std::fs::read_to_string(target_dir().join("bench").join("query.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    Ok(json!({
        "events": args.events,
        "seed": seeded,
        "entries": entries,
        "wall_secs": started.elapsed().as_secs_f64(),
        "output": text,
        "failed": failure,
    }))
}

/// Whether each running service is a release build (a debug build would make the numbers meaningless).
fn service_builds(stack: &Stack) -> BTreeMap<String, String> {
    crate::services::present()
        .into_iter()
        .filter_map(|s| {
            let pid = stack.procs().running_pid(s.name, s.bin)?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            Some((s.name.to_owned(), exe.display().to_string()))
        })
        .collect()
}

fn get<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, k| &v[*k])
}

fn num(value: &Value, path: &[&str]) -> f64 {
    get(value, path).as_f64().unwrap_or(f64::NAN)
}

/// Runs the chosen scenarios and writes `report.md` and `report.json`.
pub async fn bench(stack: &Stack, args: &BenchArgs) -> Result<bool> {
    let scenarios: Vec<Scenario> = if args.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        let mut s = args.scenario.clone();
        s.sort();
        s.dedup();
        s
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("bench"));
    std::fs::create_dir_all(&out)?;
    std::fs::create_dir_all(target_dir().join("bench"))?;
    let started_at = chrono_now();
    let machine = machine();

    stack.up().await?;
    // One build of the load generator with the services, so that dependencies are built once with the features
    // they share (building the load generator alone would rebuild some of them with fewer).
    let mut build = vec!["build", "--quiet", "--release", "--bin", "herald-loadgen"];
    let mut bins: Vec<&str> = crate::services::present().iter().map(|s| s.bin).collect();
    bins.dedup();
    for bin in bins {
        build.extend(["--bin", bin]);
    }
    if !args.no_build {
        crate::cargo(&build, &[])?;
    }
    let needs_services = scenarios.iter().any(|s| {
        matches!(
            s,
            Scenario::Throughput | Scenario::Priority | Scenario::Retry
        )
    });
    let mut started_services = Vec::new();
    if needs_services {
        // The build above made the release binaries.
        started_services = crate::services::start(stack.procs(), &stack.test_env(), true)?;
    }
    let builds = service_builds(stack);
    let debug_builds: Vec<&String> = builds
        .iter()
        .filter(|(_, exe)| !exe.contains("/release/"))
        .map(|(name, _)| name)
        .collect();
    if needs_services && !debug_builds.is_empty() {
        eprintln!(
            "bench: WARNING: {debug_builds:?} were already running from a non-release build; stop them \
             (`cargo xtask down --services-only`) for meaningful numbers"
        );
    }

    let result = run_scenarios(stack, args, &scenarios, &out).await;

    if !started_services.is_empty() && !args.keep_services {
        crate::services::stop(stack.procs(), &started_services)?;
    }
    let (results, all_balanced) = result?;

    let report = json!({
        "started_at": started_at,
        "finished_at": chrono_now(),
        "machine": machine,
        "loadavg_at_end": read("/proc/loadavg").trim(),
        "service_builds": builds,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "scenarios": results,
        "ratios": ratios(&results),
    });
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    let markdown = markdown(&report);
    std::fs::write(out.join("report.md"), &markdown)?;
    println!("{markdown}");
    println!(
        "report: {} and {}",
        out.join("report.md").display(),
        out.join("report.json").display()
    );
    if !all_balanced {
        eprintln!("bench: A LEDGER DID NOT BALANCE OR A SCENARIO FAILED: see the report");
    }
    Ok(all_balanced)
}

fn chrono_now() -> String {
    version_of("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
}

async fn run_scenarios(
    stack: &Stack,
    args: &BenchArgs,
    scenarios: &[Scenario],
    out: &Path,
) -> Result<(BTreeMap<String, Value>, bool)> {
    let mut results: BTreeMap<String, Value> = BTreeMap::new();
    let mut all_balanced = true;
    let connections = args.connections.to_string();
    for scenario in scenarios {
        let started = Instant::now();
        let outcome: Result<()> = async {
            match scenario {
                Scenario::Baseline => {
                    let kafka = kafka_baseline(stack, args.kafka_records).await?;
                    let mongo = mongo_baseline(out)?;
                    results.insert("baseline".into(), json!({"kafka": kafka, "mongo": mongo}));
                }
                Scenario::Throughput => {
                    let throughput = strings(&[
                        "--mix",
                        "webhook=100",
                        "--critical-pct",
                        "10",
                        "--connections",
                        &connections,
                        "--duration",
                        &args.duration,
                        "--drain",
                        "600s",
                    ]);
                    let before = store_commands().await;
                    // An operator's console tab open through the run: does it still answer?
                    let query = crate::services::SERVICES.iter().find(|s| s.name == "query");
                    let probe = crate::console_probe::Probe::start(format!(
                        "http://127.0.0.1:{}",
                        query.map_or(3001, |s| s.port)
                    ));
                    let run =
                        tokio::task::block_in_place(|| loadgen(out, "throughput", &throughput));
                    let console = probe.finish().await;
                    let run = run?;
                    let spent = spent_since(&before, &store_commands().await);
                    all_balanced &= keep("throughput", run, &mut results);
                    with_store_commands(&mut results, "throughput", spent);
                    if let Some(scenario) = results.get_mut("throughput") {
                        scenario["console"] = console;
                    }
                    // The same load with a second default-lane dispatcher beside the first.
                    let second = [&crate::services::SECOND_DEFAULT_DISPATCHER];
                    let started = crate::services::start_these(
                        stack.procs(),
                        &stack.test_env(),
                        true,
                        0,
                        &second,
                    )?;
                    let before = store_commands().await;
                    let run = loadgen(out, "throughput-two-dispatchers", &throughput);
                    let spent = spent_since(&before, &store_commands().await);
                    crate::services::stop(stack.procs(), &started)?;
                    all_balanced &= keep("throughput-two-dispatchers", run?, &mut results);
                    with_store_commands(&mut results, "throughput-two-dispatchers", spent);
                }
                Scenario::Priority => {
                    let idle = loadgen(
                        out,
                        "priority-idle",
                        &strings(&[
                            "--connections",
                            "0",
                            "--critical-rate",
                            "10",
                            "--duration",
                            "30s",
                            "--drain",
                            "120s",
                        ]),
                    )?;
                    all_balanced &= keep("priority-idle", idle, &mut results);
                    let flood = loadgen(
                        out,
                        "priority-flood",
                        &strings(&[
                            "--mix",
                            "webhook=100",
                            "--critical-pct",
                            "0",
                            "--connections",
                            &connections,
                            "--critical-rate",
                            "10",
                            "--duration",
                            &args.duration,
                            "--drain",
                            "900s",
                        ]),
                    )?;
                    all_balanced &= keep("priority-flood", flood, &mut results);
                }
                Scenario::Retry => {
                    let run = loadgen(
                        out,
                        "retry",
                        &strings(&[
                            "--mix",
                            "webhook=100",
                            "--critical-pct",
                            "0",
                            "--sink-fail-first",
                            "1",
                            "--count",
                            &args.retry_events.to_string(),
                            "--rate",
                            "100",
                            "--connections",
                            "8",
                            "--drain",
                            "300s",
                        ]),
                    )?;
                    all_balanced &= keep("retry", run, &mut results);
                }
                Scenario::Query => {
                    results.insert("query".into(), query(stack, args)?);
                }
            }
            Ok(())
        }
        .await;
        // A scenario that fails is reported as such; the others still run and the report is still written.
        if let Err(e) = outcome {
            eprintln!("bench: {scenario:?} failed: {e:#}");
            all_balanced = false;
            results.insert(
                format!("{scenario:?}-error").to_lowercase(),
                json!({ "error": format!("{e:#}") }),
            );
        }
        eprintln!(
            "bench: {scenario:?} took {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok((results, all_balanced))
}

/// `herald_store_commands_total` of each running service (summed over commands and collections), read from its
/// `/metrics`: the store round trips it has spent since it started. A service that does not answer is left out.
async fn store_commands() -> BTreeMap<String, f64> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut services = crate::services::present();
    services.push(&crate::services::SECOND_DEFAULT_DISPATCHER);
    let mut counts = BTreeMap::new();
    for service in services {
        let url = format!("http://127.0.0.1:{}/metrics", service.port);
        let Ok(response) = client.get(&url).send().await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        let total: f64 = text
            .lines()
            .filter(|line| line.starts_with("herald_store_commands_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        counts.insert(service.name.to_owned(), total);
    }
    counts
}

/// The commands each service spent between two readings of [`store_commands`].
fn spent_since(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

/// Adds to scenario `name` the store commands its run cost, in all and per delivered event, per service.
fn with_store_commands(
    results: &mut BTreeMap<String, Value>,
    name: &str,
    spent: BTreeMap<String, f64>,
) {
    let Some(scenario) = results.get_mut(name) else {
        return;
    };
    let delivered = num(scenario, &["report", "ledger", "delivered"]);
    let per_event: BTreeMap<&String, f64> = spent.iter().map(|(k, v)| (k, v / delivered)).collect();
    let total: f64 = spent.values().sum();
    scenario["store_commands"] = json!({
        "by_service": spent,
        "per_delivered_event_by_service": per_event,
        "per_delivered_event": total / delivered,
    });
}

/// Keeps a loadgen run's report under `name`; whether its ledger balanced.
fn keep(name: &str, run: LoadgenRun, results: &mut BTreeMap<String, Value>) -> bool {
    results.insert(
        name.to_owned(),
        json!({"report": run.json, "text": run.text, "loadavg_after": read("/proc/loadavg").trim()}),
    );
    run.balanced
}

/// Herald's rates as fractions of the machine's limits measured in the same run.
fn ratios(results: &BTreeMap<String, Value>) -> Value {
    let empty = Value::Null;
    let baseline = results.get("baseline").unwrap_or(&empty);
    let kafka = baseline["kafka"]["producer_perf"][0]["records_per_sec"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let mongo_single = num(baseline, &["mongo", "single_per_sec"]);
    let throughput = results.get("throughput").unwrap_or(&empty);
    let accepted = num(throughput, &["report", "accepted_per_sec"]);
    let delivered = num(throughput, &["report", "delivered_per_sec_overall"]);
    let two = results.get("throughput-two-dispatchers").unwrap_or(&empty);
    let delivered_two = num(two, &["report", "delivered_per_sec_overall"]);
    let critical_p99 = |name: &str| {
        num(
            results.get(name).unwrap_or(&empty),
            &["report", "lanes", "critical", "end_to_end", "p99_ms"],
        )
    };
    let finite = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
    json!({
        "accepted_per_sec_vs_kafka_records_per_sec": finite(accepted / kafka),
        "accepted_per_sec_vs_mongo_insert_one_per_sec": finite(accepted / mongo_single),
        "delivered_per_sec_vs_mongo_insert_one_per_sec": finite(delivered / mongo_single),
        "delivered_per_sec_two_default_dispatchers_vs_one": finite(delivered_two / delivered),
        "store_commands_per_delivered_event": finite(num(throughput, &["store_commands", "per_delivered_event"])),
        "critical_p99_flood_vs_idle": finite(critical_p99("priority-flood") / critical_p99("priority-idle")),
    })
}

fn markdown(report: &Value) -> String {
    let mut md = String::new();
    let m = &report["machine"];
    let _ = writeln!(md, "# Herald benchmark report\n");
    let _ = writeln!(
        md,
        "- started {}, finished {}",
        report["started_at"].as_str().unwrap_or("?"),
        report["finished_at"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        md,
        "- machine: {} cores ({}), {} GiB, kernel {}; load average at start {}, at end {}",
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or("?"),
        m["loadavg_at_start"].as_str().unwrap_or("?"),
        report["loadavg_at_end"].as_str().unwrap_or("?")
    );
    let v = &m["versions"];
    let _ = writeln!(
        md,
        "- versions: herald {}, {}, Kafka {}, {}, FerretDB {}, {}",
        v["herald"].as_str().unwrap_or("?"),
        v["rustc"].as_str().unwrap_or("?"),
        v["kafka"].as_str().unwrap_or("?"),
        v["java"].as_str().unwrap_or("?"),
        v["ferretdb"].as_str().unwrap_or("?"),
        v["postgresql"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        md,
        "- command: `{}`\n",
        report["command"].as_str().unwrap_or("?")
    );

    let scenarios = &report["scenarios"];
    let _ = writeln!(md, "## Headline\n");
    let _ = writeln!(md, "| figure | value |\n|---|---|");
    let row = |md: &mut String, name: &str, value: f64, unit: &str| {
        if value.is_finite() {
            let _ = writeln!(md, "| {name} | {value:.1} {unit} |");
        }
    };
    let b = &scenarios["baseline"];
    row(
        &mut md,
        "Kafka ProducerPerformance (1 KiB, acks=all)",
        b["kafka"]["producer_perf"][0]["records_per_sec"]
            .as_f64()
            .unwrap_or(f64::NAN),
        "records/s",
    );
    row(
        &mut md,
        "FerretDB insert_one, 16 connections",
        num(b, &["mongo", "single_per_sec"]),
        "documents/s",
    );
    row(
        &mut md,
        "FerretDB insert_many, batches of 1,000",
        num(b, &["mongo", "batched_per_sec"]),
        "documents/s",
    );
    let t = &scenarios["throughput"]["report"];
    row(
        &mut md,
        "throughput: accepted",
        num(t, &["accepted_per_sec"]),
        "events/s",
    );
    row(
        &mut md,
        "throughput: delivered (first request to last delivery)",
        num(t, &["delivered_per_sec_overall"]),
        "events/s",
    );
    for lane in ["critical", "default"] {
        row(
            &mut md,
            &format!("throughput: {lane} ingest p99"),
            num(t, &["lanes", lane, "ingest", "p99_ms"]),
            "ms",
        );
        row(
            &mut md,
            &format!("throughput: {lane} end-to-end p99"),
            num(t, &["lanes", lane, "end_to_end", "p99_ms"]),
            "ms",
        );
    }
    for path in crate::console_probe::PATHS {
        let c = &scenarios["throughput"]["console"][path];
        row(
            &mut md,
            &format!(
                "throughput: console `GET {path}` p50 / p99 ({} of {} reads failed)",
                c["failed"], c["reads"]
            ),
            num(c, &["p50_ms"]),
            &format!("ms / {:.1} ms", num(c, &["p99_ms"])),
        );
    }
    for name in ["priority-idle", "priority-flood"] {
        let r = &scenarios[name]["report"];
        row(
            &mut md,
            &format!("{name}: critical end-to-end p50 / p99"),
            num(r, &["lanes", "critical", "end_to_end", "p50_ms"]),
            &format!(
                "ms / {:.1} ms",
                num(r, &["lanes", "critical", "end_to_end", "p99_ms"])
            ),
        );
    }
    let r = &scenarios["retry"]["report"]["retry"];
    row(
        &mut md,
        "retry: attempt start minus due time, p50 / p99",
        num(r, &["start_vs_due", "p50_ms"]),
        &format!("ms / {:.1} ms", num(r, &["start_vs_due", "p99_ms"])),
    );
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "Ratios: `{}`\n",
        serde_json::to_string(&report["ratios"]).unwrap_or_default()
    );

    for (name, value) in scenarios.as_object().into_iter().flatten() {
        let _ = writeln!(md, "## {name}\n");
        if let Some(text) = value["text"].as_str() {
            let _ = writeln!(md, "```\n{}```\n", text);
        }
        if name == "baseline" {
            let _ = writeln!(
                md,
                "```\n{}\n{}\n```\n",
                value["kafka"]["producer_perf"][0]["summary"]
                    .as_str()
                    .unwrap_or(""),
                serde_json::to_string_pretty(&value["mongo"]).unwrap_or_default()
            );
        }
        if name == "query" {
            let _ = writeln!(
                md,
                "{}; whole scenario {:.0} s\n\n```\n{}```\n",
                value["seed"].as_str().unwrap_or(""),
                value["wall_secs"].as_f64().unwrap_or(f64::NAN),
                value["output"].as_str().unwrap_or("")
            );
        }
    }
    md
}
