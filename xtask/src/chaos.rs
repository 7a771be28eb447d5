//! `cargo xtask chaos`: the load generator at a steady rate while Herald's services are SIGKILLed and restarted
//! every few seconds and Kafka and FerretDB are each killed and restarted, on a stack of its own; it ends with
//! the ledger (nothing accepted may be missing, duplicates within the dispatchers' in-flight bound) and, for
//! every fault, how long until each lane delivered again.
//!
//! The run has its own Kafka, PostgreSQL + FerretDB and SMTP sink ([`Stack::offset`]: every port `--port-offset`
//! above the default, state under `.stack/chaos`), wiped at the start and stopped at the end, so the stack other
//! tests use never sees a fault. Processes are killed by pid through [`Procs::kill`](crate::procs::Procs::kill)
//! and restarted as `cargo xtask stack up` and `cargo xtask up` start them.
//!
//! Recovery. After each fault is restarted, one probe webhook per lane is sent (critical, default, and one whose
//! first attempt the receiver fails, so it goes through herald-retry and the retry lane) to a receiver of the
//! chaos run's own, and the time from the restart until each is delivered is recorded. A probe not delivered
//! within `--stall-timeout` is a stall: the run stops injecting faults, drains, and fails naming the lane.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use herald_loadgen::sink::Sink;
use herald_loadgen::{parse_duration, Report, RunConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::paths;
use crate::services::{self, Service, DEV_WEBHOOK_SECRET};
use crate::stack::{Part, Stack};

/// Options of `cargo xtask chaos`. The defaults are the short run `cargo xtask test` ends with.
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// How long faults are injected while the load generator sends (90s, 10m).
    #[arg(long, value_parser = parse_duration, default_value = "90s")]
    pub duration: Duration,
    /// Events per second the load generator sends, across its connections.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Connections of the load generator.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Seed of the fault plan (which service, how long down) and of the traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Time from one fault to the next (or more, when the probes of the last one take longer).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub kill_every: Duration,
    /// A probe not delivered this long after its fault was restarted is a stall, and fails the run.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub stall_timeout: Duration,
    /// After the faults stop, how long every accepted event has to reach an end state.
    #[arg(long, value_parser = parse_duration, default_value = "300s")]
    pub drain: Duration,
    /// The chaos stack's ports and the services' ports are this far above the defaults.
    #[arg(long, default_value_t = 100)]
    pub port_offset: u16,
    /// Run the services from a release build (for long runs); the default is the debug build.
    #[arg(long)]
    pub release: bool,
    /// Use the service binaries already built instead of building them.
    #[arg(long)]
    pub no_build: bool,
    /// Leave the chaos stack running at the end (its services are always stopped).
    #[arg(long)]
    pub keep_stack: bool,
    /// Where to write report.json (default target/chaos).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What one fault kills.
#[derive(Debug, Clone, Copy)]
enum Target {
    Service(&'static Service),
    Stack(Part),
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Service(s) => s.name,
            Target::Stack(p) => p.name(),
        }
    }
}

/// The lanes a probe is sent through, with the webhook path of the chaos run's receiver and the priority.
const PROBE_LANES: [(&str, &str, &str); 3] = [
    ("critical", "", "critical"),
    ("default", "", "default"),
    // The receiver answers 503 to the first request: the event goes through herald-retry and the retry lane.
    ("retry", "/1", "default"),
];

/// `herald_dispatch_in_flight_bound` of a dispatcher with the whole lane (6 partitions × (16 + 8 + 1)), used when
/// its `/metrics` cannot be read just before the kill.
const DEFAULT_IN_FLIGHT_BOUND: u64 = 150;

/// One injected fault and what it took to recover.
#[derive(Debug, Default)]
struct Fault {
    at_secs: f64,
    target: String,
    pid: Option<u32>,
    down_ms: f64,
    /// From the restart to the restarted part answering ready.
    restart_ms: f64,
    /// Per lane, from the restart answering ready until its probe was delivered.
    recovery_ms: BTreeMap<String, f64>,
    /// Services that were not running after the fault although it did not kill them (they exited on their own)
    /// and were started again.
    also_restarted: Vec<String>,
    /// Redeliveries this fault may cause: the in-flight bound of each dispatcher it interrupted.
    duplicate_bound: u64,
    stall: Option<String>,
}

impl Fault {
    fn longest_ms(&self) -> f64 {
        self.recovery_ms.values().copied().fold(0.0, f64::max)
    }

    fn to_json(&self) -> Value {
        json!({
            "at_secs": self.at_secs,
            "target": self.target,
            "pid": self.pid,
            "down_ms": self.down_ms,
            "restart_ms": self.restart_ms,
            "recovery_ms": self.recovery_ms,
            "longest_recovery_ms": self.longest_ms(),
            "also_restarted": self.also_restarted,
            "duplicate_bound": self.duplicate_bound,
            "stall": self.stall,
        })
    }
}

struct Chaos<'a> {
    stack: &'a Stack,
    args: &'a ChaosArgs,
    env: Vec<(String, String)>,
    http: reqwest::Client,
    probes: Sink,
    ingest: String,
}

/// Runs the scenario and writes the report; `Ok(false)` when the run failed its checks.
pub async fn chaos(args: &ChaosArgs) -> Result<bool> {
    let stack = Stack::offset(args.port_offset, paths::state_dir().join("chaos"))?;
    // A fresh stack every run: nothing left over from an earlier run (a backlog, a half-written topic) muddies
    // the ledger or the recovery times.
    services::down(stack.procs())?;
    stack.down(true)?;
    if !args.no_build {
        services::build(args.release)?;
    }
    let outcome = run_on(&stack, args).await;
    // Whatever happened, stop what this started.
    let stopped = services::down(stack.procs());
    if !args.keep_stack {
        stack.down(false)?;
    }
    stopped?;
    outcome
}

async fn run_on(stack: &Stack, args: &ChaosArgs) -> Result<bool> {
    stack.up().await.context("starting the chaos stack")?;
    let env = stack.test_env();
    services::start_offset(stack.procs(), &env, args.release, args.port_offset)?;
    let ingest_port = port_of("ingest", args.port_offset)?;
    let chaos = Chaos {
        stack,
        args,
        env,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?,
        probes: Sink::start("127.0.0.1:0".parse()?, Some(DEV_WEBHOOK_SECRET.to_owned())).await?,
        ingest: format!("http://127.0.0.1:{ingest_port}"),
    };

    let mut load = RunConfig::new(&chaos.ingest, &stack.mongodb_uri(), "herald");
    load.rate = args.rate;
    load.connections = args.connections;
    load.duration = Some(args.duration);
    load.drain = args.drain;
    load.seed = args.seed;
    load.quiet = true;
    load.webhook_secret = Some(DEV_WEBHOOK_SECRET.to_owned());
    load.pid_dir = Some(paths::state_dir().join("chaos").join("pids"));
    // A client timeout shorter than an outage, so a request held by a dead server is counted and the stream
    // goes on at its rate.
    load.request_timeout = Duration::from_secs(10);
    eprintln!(
        "chaos: loadgen at {} events/s for {:?} against {}; faults every {:?}",
        args.rate, args.duration, chaos.ingest, args.kill_every
    );
    let started = Instant::now();
    let loadgen = tokio::spawn(async move { herald_loadgen::run(&load).await });

    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut faults: Vec<Fault> = Vec::new();
    let mut next_at = started + args.kill_every;
    while Instant::now() < started + args.duration {
        tokio::time::sleep_until(next_at.into()).await;
        if Instant::now() >= started + args.duration {
            break;
        }
        let target = pick(faults.len(), &mut rng)?;
        let at = Instant::now();
        let fault = chaos
            .inject(target, faults.len(), &mut rng, started)
            .await
            .with_context(|| format!("fault {} ({})", faults.len() + 1, target.name()))?;
        eprintln!("chaos: {}", row(faults.len() + 1, &fault));
        let stalled = fault.stall.is_some();
        faults.push(fault);
        if stalled {
            eprintln!("chaos: a lane stalled; no more faults, draining");
            break;
        }
        next_at = (at + args.kill_every).max(Instant::now());
    }
    eprintln!(
        "chaos: {} faults in {:.0} s; waiting for the load generator to finish sending and drain (at most {:?})",
        faults.len(),
        started.elapsed().as_secs_f64(),
        args.drain
    );
    let report = loadgen
        .await
        .context("the load generator task failed")?
        .context("the load generator failed")?;
    let summary = summarize(args, &faults, &report, &chaos.probes);
    let passed = summary["passed"].as_bool().unwrap_or(false);

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| services::target_dir().join("chaos"));
    std::fs::create_dir_all(&out)?;
    let json = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "args": format!("{args:?}"),
        "summary": summary,
        "faults": faults.iter().map(Fault::to_json).collect::<Vec<_>>(),
        "loadgen": report,
    });
    let path = out.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json)?)?;
    println!("{}", table(&faults, &summary, &report));
    println!("report: {}", path.display());
    Ok(passed)
}

/// The `n`th fault's target: Kafka second and FerretDB fourth in every six, so that even a short run kills each
/// once, and a random Herald service otherwise.
fn pick(n: usize, rng: &mut StdRng) -> Result<Target> {
    Ok(match n % 6 {
        1 => Target::Stack(Part::Kafka),
        3 => Target::Stack(Part::FerretDb),
        _ => {
            let present = services::present();
            if present.is_empty() {
                bail!("no Herald service crates in this checkout");
            }
            Target::Service(present[rng.random_range(0..present.len())])
        }
    })
}

fn port_of(name: &str, offset: u16) -> Result<u16> {
    services::SERVICES
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.port + offset)
        .with_context(|| format!("no service named {name}"))
}

impl Chaos<'_> {
    /// Kills `target`, leaves it down a moment, starts it again and times the probes of every lane.
    async fn inject(
        &self,
        target: Target,
        n: usize,
        rng: &mut StdRng,
        started: Instant,
    ) -> Result<Fault> {
        let mut fault = Fault {
            at_secs: started.elapsed().as_secs_f64(),
            target: target.name().to_owned(),
            ..Fault::default()
        };
        let dispatchers: Vec<&Service> = services::present()
            .into_iter()
            .filter(|s| s.krate == "dispatch")
            .collect();
        // Read before the kill: what the process held is what may be sent twice.
        fault.duplicate_bound = match target {
            Target::Service(s) if s.krate == "dispatch" => self.in_flight_bound(s).await,
            Target::Service(_) => 0,
            Target::Stack(_) => {
                let mut sum = 0;
                for d in &dispatchers {
                    sum += self.in_flight_bound(d).await;
                }
                sum
            }
        };
        let down = match target {
            Target::Service(_) => Duration::from_millis(rng.random_range(300..2_000)),
            Target::Stack(_) => Duration::from_millis(rng.random_range(2_000..5_000)),
        };
        let killed_at = Instant::now();
        fault.pid = match target {
            Target::Service(s) => self.stack.procs().kill(s.name, s.bin)?,
            Target::Stack(part) => self.stack.kill(part)?,
        };
        if fault.pid.is_none() {
            bail!("{} was not running when its turn came", target.name());
        }
        tokio::time::sleep(down).await;
        fault.down_ms = ms(killed_at.elapsed());
        let restarting = Instant::now();
        if let Target::Stack(_) = target {
            self.stack
                .up()
                .await
                .with_context(|| format!("restarting {}", target.name()))?;
        }
        // Restarts the killed service, and any other a stack fault made exit.
        let restarted = services::start_offset(
            self.stack.procs(),
            &self.env,
            self.args.release,
            self.args.port_offset,
        )?;
        fault.restart_ms = ms(restarting.elapsed());
        fault.also_restarted = restarted
            .iter()
            .filter(|s| s.name != target.name())
            .map(|s| s.name.to_owned())
            .collect();
        let ready = Instant::now();
        let deadline = ready + self.args.stall_timeout;

        let mut pending = Vec::new();
        for (lane, path, priority) in PROBE_LANES {
            let id = format!("chaos-probe-{}-{n}-{lane}", self.args.seed);
            let user = format!("probe-{}", rng.random_range(0..1_000u32));
            match self.send_probe(&id, &user, path, priority, deadline).await {
                Ok(()) => pending.push((lane, id)),
                Err(e) => {
                    fault.stall = Some(format!(
                        "ingest did not accept the {lane} probe within {:?} after {} restarted: {e:#}",
                        self.args.stall_timeout,
                        target.name()
                    ));
                    return Ok(fault);
                }
            }
        }
        while !pending.is_empty() {
            pending.retain(|(lane, id)| {
                if self.probes.delivered_at(id).is_some() {
                    fault
                        .recovery_ms
                        .insert((*lane).to_owned(), ms(ready.elapsed()));
                    false
                } else {
                    true
                }
            });
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let lanes: Vec<&str> = pending.iter().map(|(lane, _)| *lane).collect();
                fault.stall = Some(format!(
                    "lane {} consumed nothing for {:?} after {} restarted: probe {} not delivered \
                     (read the dispatchers' logs under {})",
                    lanes.join(", "),
                    self.args.stall_timeout,
                    target.name(),
                    pending
                        .iter()
                        .map(|(_, id)| id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.stack.procs().log_dir().display()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(fault)
    }

    /// `herald_dispatch_in_flight_bound` from the dispatcher's `/metrics`, or the bound of a whole lane.
    async fn in_flight_bound(&self, dispatcher: &Service) -> u64 {
        let url = format!(
            "http://127.0.0.1:{}/metrics",
            dispatcher.port + self.args.port_offset
        );
        let text = match self.http.get(&url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let bound: f64 = text
            .lines()
            .filter(|l| l.starts_with("herald_dispatch_in_flight_bound"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if bound > 0.0 {
            bound as u64
        } else {
            DEFAULT_IN_FLIGHT_BOUND
        }
    }

    /// Posts one probe webhook until ingest answers 2xx (it answers 503 while a dependency is down).
    async fn send_probe(
        &self,
        id: &str,
        user: &str,
        path: &str,
        priority: &str,
        deadline: Instant,
    ) -> Result<()> {
        let body = json!({
            "eventId": id,
            "userId": user,
            "eventType": "chaos.probe",
            "priority": priority,
            "channel": "webhook",
            "payload": {"url": format!("{}{path}", self.probes.base_url), "body": {"probe": id}},
            "metadata": {"source": "cargo xtask chaos"},
        });
        loop {
            let answer = self
                .http
                .post(format!("{}/event", self.ingest))
                .json(&body)
                .send()
                .await;
            let last = match answer {
                // 409: an earlier try was stored although its answer was lost.
                Ok(r) if r.status().is_success() || r.status().as_u16() == 409 => return Ok(()),
                Ok(r) => format!("ingest answered {}", r.status()),
                Err(e) => format!("{e}"),
            };
            if Instant::now() >= deadline {
                bail!("{last}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The figures of the run and whether it passed: nothing missing, duplicates within their bound and each
/// carrying its event id, no bad signature, no stall.
fn summarize(args: &ChaosArgs, faults: &[Fault], report: &Report, probes: &Sink) -> Value {
    let ledger = &report.ledger;
    let n_in_flight = ledger.n_in_flight();
    let missing = ledger.missing + n_in_flight + ledger.delivered_not_received;
    let probe_counts = probes.counts();
    let duplicates = report.sink.n_duplicate_deliveries + probe_counts.n_duplicate_deliveries;
    let duplicate_bound: u64 = faults.iter().map(|f| f.duplicate_bound).sum();
    let count = |pred: &dyn Fn(&Fault) -> bool| faults.iter().filter(|f| pred(f)).count();
    let kafka_kills = count(&|f| f.target == Part::Kafka.name());
    let ferretdb_kills = count(&|f| f.target == Part::FerretDb.name());
    let longest = faults
        .iter()
        .max_by(|a, b| a.longest_ms().total_cmp(&b.longest_ms()));
    let mut failures: Vec<String> = faults.iter().filter_map(|f| f.stall.clone()).collect();
    if missing > 0 {
        failures.push(format!(
            "{missing} accepted events never reached an end state ({} not stored, {n_in_flight} still in \
             flight after the {:?} drain, {} delivered but never received)",
            ledger.missing, args.drain, ledger.delivered_not_received
        ));
    }
    if duplicates > duplicate_bound {
        failures.push(format!(
            "{duplicates} events delivered more than once, above the in-flight bound {duplicate_bound} of the \
             dispatchers the faults interrupted"
        ));
    }
    let no_id = report.sink.n_no_event_id + probe_counts.n_no_event_id;
    if no_id > 0 {
        failures.push(format!("{no_id} webhooks came without a Herald-Event-Id"));
    }
    let bad_signatures = report.sink.n_bad_signature + probe_counts.n_bad_signature;
    if bad_signatures > 0 {
        failures.push(format!("{bad_signatures} webhooks with a bad signature"));
    }
    if kafka_kills == 0 || ferretdb_kills == 0 {
        failures.push(format!(
            "the run ended before Kafka and FerretDB were each killed ({kafka_kills} and {ferretdb_kills}): \
             lengthen --duration"
        ));
    }
    json!({
        "passed": failures.is_empty(),
        "failures": failures,
        "kills": faults.len(),
        "service_kills": faults.len() - kafka_kills - ferretdb_kills,
        "kafka_kills": kafka_kills,
        "ferretdb_kills": ferretdb_kills,
        "exited_on_their_own": faults.iter().map(|f| f.also_restarted.len()).sum::<usize>(),
        "sent": report.sent,
        "accepted": ledger.accepted,
        "rejected": report.errors.iter().filter(|(k, _)| k.starts_with("ingest ")).map(|(_, n)| n).sum::<u64>(),
        "stored_unacknowledged": ledger.stored_unacknowledged,
        "delivered": ledger.delivered,
        "recorded": ledger.recorded,
        "dead_lettered": ledger.dead_lettered,
        "missing": missing,
        "duplicates": duplicates,
        "duplicate_bound": duplicate_bound,
        "longest_recovery_ms": longest.map_or(0.0, Fault::longest_ms),
        "longest_recovery_after": longest.map(|f| f.target.clone()),
        "load_secs": report.load_secs,
        "drain_secs": report.drain_secs,
        "errors": report.errors,
    })
}

fn row(n: usize, f: &Fault) -> String {
    let lane = |name: &str| {
        f.recovery_ms
            .get(name)
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
    };
    format!(
        "{n:>3} {:>7.1} {:<20} {:>8} {:>8.0} {:>9.0} {:>9} {:>9} {:>9}{}{}",
        f.at_secs,
        f.target,
        f.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        f.down_ms,
        f.restart_ms,
        lane("critical"),
        lane("default"),
        lane("retry"),
        if f.also_restarted.is_empty() {
            String::new()
        } else {
            format!("  (also restarted: {})", f.also_restarted.join(", "))
        },
        f.stall
            .as_deref()
            .map_or_else(String::new, |s| format!("  STALL: {s}")),
    )
}

fn table(faults: &[Fault], summary: &Value, report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# cargo xtask chaos\n");
    let _ = writeln!(
        out,
        "  # {:>7} {:<20} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "at s", "killed", "pid", "down ms", "restart", "critical", "default", "retry"
    );
    let _ = writeln!(
        out,
        "  (down ms: from the kill to the restart; restart: ms until ready; critical, default, retry: ms from \
         ready until that lane's probe was delivered, the retry probe after its receiver failed it once)"
    );
    for (i, f) in faults.iter().enumerate() {
        let _ = writeln!(out, "{}", row(i + 1, f));
    }
    let s = summary;
    let _ = writeln!(
        out,
        "\nkills {} (services {}, kafka {}, ferretdb {}); services that exited on their own {}",
        s["kills"],
        s["service_kills"],
        s["kafka_kills"],
        s["ferretdb_kills"],
        s["exited_on_their_own"]
    );
    let _ = writeln!(
        out,
        "events sent {}, accepted {}, rejected (non-2xx) {}, stored though not acknowledged {}",
        s["sent"], s["accepted"], s["rejected"], s["stored_unacknowledged"]
    );
    let _ = writeln!(
        out,
        "ledger: delivered {}, recorded {}, dead-lettered {}, MISSING {}",
        s["delivered"], s["recorded"], s["dead_lettered"], s["missing"]
    );
    let _ = writeln!(
        out,
        "duplicates {} (bound {}), longest recovery {:.0} ms (after {})",
        s["duplicates"],
        s["duplicate_bound"],
        s["longest_recovery_ms"].as_f64().unwrap_or(f64::NAN),
        s["longest_recovery_after"].as_str().unwrap_or("-")
    );
    let _ = writeln!(out, "errors by kind: {:?}", report.errors);
    if s["passed"].as_bool() == Some(true) {
        let _ = writeln!(out, "PASSED");
    } else {
        let _ = writeln!(out, "FAILED:");
        for failure in s["failures"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  - {}", failure.as_str().unwrap_or_default());
        }
    }
    out
}
