//! The native dev/test stack: Apache Kafka (KRaft, one node), FerretDB (on Debian's PostgreSQL) and an SMTP sink, all
//! on loopback, started as detached processes whose pids are kept under the state folder.
//!
//! Everything downloaded or built is cached under [`paths::cache_dir`]; everything a run writes (data, logs,
//! pids) is under [`paths::state_dir`]. `up` is idempotent: what is running and answering is left alone.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use herald_domain::{Topics, DEFAULT_DELAY_TIERS_SECS};
use herald_platform::kafka::kraft::SingleNode;
use herald_platform::{mongo, KafkaConfig, MongoConfig};

use crate::paths;
use crate::procs::Procs;

/// Apache Kafka, from Maven Central through `stack/pom.xml` (keep the two in step).
pub const KAFKA_VERSION: &str = "3.9.1";
/// FerretDB, the latest v1 release, built with the Go toolchain.
const FERRETDB_MODULE: &str = "github.com/FerretDB/FerretDB";
pub const FERRETDB_VERSION: &str = "v1.24.2";
/// The SMTP sink's one dependency, from PyPI.
const AIOSMTPD: &str = "aiosmtpd==1.4.6";
/// GIN indexes for FerretDB's pushed-down lookups, installed into PostgreSQL before FerretDB starts.
const FERRETDB_INDEXES: &str = include_str!("ferretdb_indexes.sql");

/// The ports, each overridable by env.
#[derive(Debug, Clone)]
struct Ports {
    kafka: u16,
    kafka_controller: u16,
    mongo: u16,
    postgres: u16,
    ferretdb_debug: u16,
    smtp: u16,
    smtp_http: u16,
}

/// A process of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Kafka,
    Postgres,
    FerretDb,
    SmtpSink,
}

impl Part {
    const ALL: [Part; 4] = [Part::Kafka, Part::Postgres, Part::FerretDb, Part::SmtpSink];

    pub fn name(self) -> &'static str {
        match self {
            Part::Kafka => "kafka",
            Part::Postgres => "postgres",
            Part::FerretDb => "ferretdb",
            Part::SmtpSink => "smtp-sink",
        }
    }

    /// A string the process's command line contains, so `down` never signals a pid that was reused by
    /// something else.
    fn marker(self) -> &'static str {
        match self {
            Part::Kafka => "kafka.Kafka",
            Part::Postgres => "postgres",
            Part::FerretDb => "ferretdb",
            Part::SmtpSink => "smtp_sink.py",
        }
    }
}

#[derive(Debug)]
pub struct Stack {
    ports: Ports,
    cache: PathBuf,
    state: PathBuf,
    procs: Procs,
    topic_prefix: String,
    heap: String,
    timeout: Duration,
}

fn env_port(key: &str, default: u16) -> Result<u16> {
    match std::env::var(key) {
        Ok(raw) if !raw.trim().is_empty() => raw
            .trim()
            .parse()
            .with_context(|| format!("{key}='{raw}' is not a port number")),
        _ => Ok(default),
    }
}

impl Stack {
    pub fn from_env() -> Result<Self> {
        Self::build(0, paths::state_dir())
    }

    /// A second stack beside the default one: every port `offset` above its default (or its variable), data,
    /// logs and pids under `state`. `cargo xtask chaos` runs on one, so the faults it injects never reach the
    /// stack other tests use.
    pub fn offset(offset: u16, state: PathBuf) -> Result<Self> {
        let mut stack = Self::build(offset, state)?;
        // Two brokers on one machine: the second one smaller.
        if std::env::var_os("HERALD_KAFKA_HEAP").is_none() {
            stack.heap = "512m".into();
        }
        Ok(stack)
    }

    fn build(offset: u16, state: PathBuf) -> Result<Self> {
        let timeout_secs: u64 = match std::env::var("HERALD_STACK_TIMEOUT_SECS") {
            Ok(raw) => raw
                .parse()
                .with_context(|| format!("HERALD_STACK_TIMEOUT_SECS='{raw}' is not a number"))?,
            Err(_) => 120,
        };
        let port = |key: &str, default: u16| -> Result<u16> {
            let base = env_port(key, default)?;
            base.checked_add(offset)
                .with_context(|| format!("{key} {base} + offset {offset} is not a port"))
        };
        Ok(Self {
            ports: Ports {
                kafka: port("HERALD_KAFKA_PORT", 9092)?,
                kafka_controller: port("HERALD_KAFKA_CONTROLLER_PORT", 9093)?,
                mongo: port("HERALD_MONGO_PORT", 27017)?,
                postgres: port("HERALD_POSTGRES_PORT", 5432)?,
                ferretdb_debug: port("HERALD_FERRETDB_DEBUG_PORT", 8088)?,
                smtp: port("HERALD_SMTP_PORT", 1025)?,
                smtp_http: port("HERALD_SMTP_HTTP_PORT", 8025)?,
            },
            cache: paths::cache_dir(),
            procs: Procs::new(state.clone()),
            state,
            topic_prefix: std::env::var("HERALD_TOPIC_PREFIX").unwrap_or_default(),
            heap: std::env::var("HERALD_KAFKA_HEAP").unwrap_or_else(|_| "1g".into()),
            timeout: Duration::from_secs(timeout_secs),
        })
    }

    /// SIGKILLs `part` by its recorded pid (checked against its command line), as a crash would; `up` starts
    /// it again. Returns the pid killed, if it was running.
    pub fn kill(&self, part: Part) -> Result<Option<u32>> {
        self.procs.kill(part.name(), part.marker())
    }

    pub fn kafka_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.ports.kafka)
    }

    pub fn mongodb_uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.ports.mongo)
    }

    /// A Kafka configuration for admin work (no topic prefix).
    pub fn kafka_admin(&self) -> KafkaConfig {
        KafkaConfig::new(self.kafka_brokers(), "")
    }

    /// A MongoDB configuration for admin work (the `admin` database).
    pub fn mongo_admin(&self) -> MongoConfig {
        MongoConfig::new(self.mongodb_uri(), "admin")
    }

    /// The variables tests and services read to find the stack.
    pub fn test_env(&self) -> Vec<(String, String)> {
        vec![
            ("KAFKA_BROKERS".into(), self.kafka_brokers()),
            ("MONGODB_URI".into(), self.mongodb_uri()),
            ("HERALD_SMTP_HOST".into(), "127.0.0.1".into()),
            ("HERALD_SMTP_PORT".into(), self.ports.smtp.to_string()),
            (
                "HERALD_SMTP_API".into(),
                format!("http://127.0.0.1:{}", self.ports.smtp_http),
            ),
        ]
    }

    pub fn procs(&self) -> &Procs {
        &self.procs
    }

    pub fn print_endpoints(&self) {
        println!("Herald stack is up:");
        println!("  kafka       {}", self.kafka_brokers());
        println!(
            "  mongodb     {}  (FerretDB {FERRETDB_VERSION} on PostgreSQL)",
            self.mongodb_uri()
        );
        println!("  smtp        127.0.0.1:{}", self.ports.smtp);
        println!(
            "  smtp api    http://127.0.0.1:{}/api/v1/messages",
            self.ports.smtp_http
        );
        println!("  logs        {}", self.log_dir().display());
        println!("For tests or services run by hand:");
        for (key, value) in self.test_env() {
            println!("  export {key}={value}");
        }
    }

    fn log_dir(&self) -> PathBuf {
        self.procs.log_dir()
    }

    fn log_file(&self, part: Part) -> PathBuf {
        self.procs.log_file(part.name())
    }

    fn port(&self, part: Part) -> u16 {
        match part {
            Part::Kafka => self.ports.kafka,
            Part::Postgres => self.ports.postgres,
            Part::FerretDb => self.ports.mongo,
            Part::SmtpSink => self.ports.smtp,
        }
    }

    /// The pid `up` recorded for `part`, if that process is still alive and is still ours.
    fn running_pid(&self, part: Part) -> Option<u32> {
        self.procs.running_pid(part.name(), part.marker())
    }

    /// Installs what is missing, starts what is not running, waits for readiness, creates topics.
    /// Returns whether anything was started.
    ///
    /// A failed `up` stops what it started (and only that), so a `cargo xtask test` that fails at PostgreSQL does
    /// not leave the Kafka it had started running.
    pub async fn up(&self) -> Result<bool> {
        let mut started = Vec::new();
        match self.start_all(&mut started).await {
            Ok(()) => Ok(!started.is_empty()),
            Err(e) => {
                for &(part, pid) in started.iter().rev() {
                    // Each pid is this process's own child, never waited for, so it cannot have been given to
                    // anything else: it is stopped by pid, not found again through its pid file and marker (which
                    // missed a FerretDB that had just started, in CI, and left it running).
                    match self
                        .procs
                        .stop_child(part.name(), pid, Duration::from_secs(30))
                    {
                        Ok(()) => eprintln!(
                            "{:<10} stopped (pid {pid}): `up` failed after starting it",
                            part.name()
                        ),
                        Err(stop) => {
                            eprintln!("{:<10} could not be stopped: {stop:#}", part.name())
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// `up`'s work; every part it starts is pushed onto `started` as soon as its process exists.
    async fn start_all(&self, started: &mut Vec<(Part, u32)>) -> Result<()> {
        for dir in ["logs", "pids", "kafka", "ferretdb/state"] {
            fs::create_dir_all(self.state.join(dir))
                .with_context(|| format!("creating {}", self.state.join(dir).display()))?;
        }
        for part in Part::ALL {
            if let Some(pid) = self.running_pid(part) {
                eprintln!("{:<10} already running (pid {pid})", part.name());
                if matches!(part, Part::FerretDb) {
                    // A stack started by an older checkout gets this checkout's indexes too (idempotent).
                    self.install_ferretdb_indexes(Instant::now() + self.timeout)?;
                }
                continue;
            }
            let port = self.port(part);
            if port_answers(port) {
                bail!(
                    "port {port} for {} is taken by a process this stack did not start; stop it or choose \
                     another port (see the README's stack variables)",
                    part.name()
                );
            }
            let pid = match part {
                Part::Kafka => self.start_kafka()?,
                Part::Postgres => self.start_postgres()?,
                Part::FerretDb => self.start_ferretdb()?,
                Part::SmtpSink => self.start_smtp_sink()?,
            };
            eprintln!(
                "{:<10} started (pid {pid}), log {}",
                part.name(),
                self.log_file(part).display()
            );
            started.push((part, pid));
        }
        self.wait_ready().await?;
        let kafka = KafkaConfig::new(self.kafka_brokers(), self.topic_prefix.clone());
        let topics = Topics::new(self.topic_prefix.clone()).all(DEFAULT_DELAY_TIERS_SECS);
        herald_platform::kafka::ensure_topics(&kafka, &topics, 1)
            .await
            .context("creating Herald's topics")?;
        eprintln!("topics     {} present", topics.len());
        Ok(())
    }

    /// Waits until Kafka answers a metadata request, FerretDB a ping and the sink its HTTP API; fails naming the
    /// log of whatever did not come up.
    async fn wait_ready(&self) -> Result<()> {
        let waiting_since = Instant::now();
        let deadline = waiting_since + self.timeout;
        let kafka = self.kafka_admin();
        let mongo = mongo::connect(&self.mongo_admin(), "xtask").await?;
        let mut pending: Vec<Part> = Part::ALL.to_vec();
        let mut last_error: Vec<(Part, String)> = Vec::new();
        while !pending.is_empty() {
            last_error.clear();
            let mut still = Vec::new();
            for part in pending {
                // Between fork and exec a child's command line is still this process's, without the part's
                // marker: a missing process only counts after a short grace.
                if self.running_pid(part).is_none()
                    && waiting_since.elapsed() > Duration::from_secs(3)
                {
                    bail!(
                        "{} exited during startup; read {}",
                        part.name(),
                        self.log_file(part).display()
                    );
                }
                let check = match part {
                    Part::Kafka => {
                        herald_platform::kafka::check_metadata(&kafka, Duration::from_secs(2))
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    Part::Postgres => {
                        if port_answers(self.ports.postgres) {
                            Ok(())
                        } else {
                            Err("not listening yet".to_string())
                        }
                    }
                    Part::FerretDb => mongo::ping(&mongo, Duration::from_secs(2))
                        .await
                        .map_err(|e| e.to_string()),
                    Part::SmtpSink => http_get_ok(self.ports.smtp_http, "/api/v1/info"),
                };
                if let Err(e) = check {
                    last_error.push((part, e));
                    still.push(part);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let report: Vec<String> = last_error
                    .iter()
                    .map(|(part, e)| {
                        format!(
                            "{} not ready ({e}); read {}",
                            part.name(),
                            self.log_file(*part).display()
                        )
                    })
                    .collect();
                bail!(
                    "the stack was not ready within {:?}:\n  {}",
                    self.timeout,
                    report.join("\n  ")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Stops every process `up` started, by pid: SIGTERM, then SIGKILL after 30 s.
    pub fn down(&self, wipe: bool) -> Result<()> {
        for part in Part::ALL.iter().rev() {
            match self
                .procs
                .stop(part.name(), part.marker(), Duration::from_secs(30))?
            {
                Some(pid) => eprintln!("{:<10} stopped (pid {pid})", part.name()),
                None => eprintln!("{:<10} not running", part.name()),
            }
        }
        if wipe {
            let dirs = [
                self.state.join("kafka"),
                self.state.join("postgres"),
                self.postgres_dir(),
                self.state.join("ferretdb"),
            ];
            for path in dirs {
                if path.exists() {
                    fs::remove_dir_all(&path)
                        .with_context(|| format!("deleting {}", path.display()))?;
                }
            }
            eprintln!("data deleted under {}", self.state.display());
        }
        Ok(())
    }

    /// Prints one line per part; returns whether all are running and answering.
    pub fn status(&self) -> bool {
        let mut all_up = true;
        for part in Part::ALL {
            let port = self.port(part);
            let line = match (self.running_pid(part), port_answers(port)) {
                (Some(pid), true) => format!("running   pid {pid}, 127.0.0.1:{port}"),
                (Some(pid), false) => {
                    all_up = false;
                    format!("starting or stuck: pid {pid} alive, 127.0.0.1:{port} not answering")
                }
                (None, true) => {
                    all_up = false;
                    format!(
                        "NOT OURS: 127.0.0.1:{port} answers, but not a process this stack started"
                    )
                }
                (None, false) => {
                    all_up = false;
                    "stopped   (`cargo xtask stack up` starts it)".to_string()
                }
            };
            println!(
                "{:<10} {line}   log {}",
                part.name(),
                self.log_file(part).display()
            );
        }
        all_up
    }

    // ---- Kafka ----------------------------------------------------------------------------------------------

    /// Kafka's jars, fetched by Maven into the cache once per version.
    pub fn kafka_libs(&self) -> Result<PathBuf> {
        let libs = self
            .cache
            .join(format!("kafka-{KAFKA_VERSION}"))
            .join("libs");
        let done = libs.join(".complete");
        if done.exists() {
            return Ok(libs);
        }
        eprintln!(
            "kafka      fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (once)"
        );
        let pom = paths::repo_root().join("stack").join("pom.xml");
        run(Command::new("mvn")
            .args(["-q", "-B", "-f"])
            .arg(&pom)
            .arg("dependency:copy-dependencies")
            .arg(format!("-DoutputDirectory={}", libs.display()))
            .arg("-DincludeScope=runtime"))
        .context("fetching Kafka with mvn (is Maven installed? .ci/run installs it)")?;
        fs::write(&done, KAFKA_VERSION)?;
        Ok(libs)
    }

    fn start_kafka(&self) -> Result<u32> {
        let libs = self.kafka_libs()?;
        let dir = self.state.join("kafka");
        let data = dir.join("data");
        let properties = dir.join("server.properties");
        fs::write(&properties, self.kafka_properties(&data))?;
        let log4j = dir.join("log4j.properties");
        fs::write(&log4j, KAFKA_LOG4J)?;
        let classpath = format!("{}/*", libs.display());
        let java = |main: &str| {
            let mut cmd = Command::new("java");
            cmd.arg(format!("-Dlog4j.configuration=file:{}", log4j.display()))
                .arg("-cp")
                .arg(&classpath)
                .arg(main);
            cmd
        };
        if !data.join("meta.properties").exists() {
            let uuid = output(java("kafka.tools.StorageTool").arg("random-uuid"))?;
            run(java("kafka.tools.StorageTool")
                .args(["format", "--ignore-formatted", "-t", uuid.trim(), "-c"])
                .arg(&properties))
            .context("formatting Kafka's KRaft storage")?;
        }
        let mut cmd = Command::new("java");
        cmd.arg(format!("-Xmx{}", self.heap))
            .arg(format!("-Xms{}", "256m"))
            .args([
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
            ])
            .arg(format!("-Dlog4j.configuration=file:{}", log4j.display()))
            .arg(format!("-Dkafka.logs.dir={}", self.log_dir().display()))
            .arg("-cp")
            .arg(&classpath)
            .arg("kafka.Kafka")
            .arg(&properties);
        self.spawn(Part::Kafka, cmd)
    }

    fn kafka_properties(&self, data: &Path) -> String {
        let Ports {
            kafka,
            kafka_controller,
            ..
        } = self.ports;
        let broker = SingleNode::plaintext(kafka, kafka_controller, data)
            .partitions(3, 10)
            .properties();
        format!(
            "# Written by `cargo xtask stack up`; edits are overwritten.\n\
             {broker}\
             log.retention.hours=24\n\
             log.segment.bytes=67108864\n"
        )
    }

    // ---- FerretDB -------------------------------------------------------------------------------------------

    /// FerretDB built from its Go module into the cache once per version.
    ///
    /// `go install` of the module builds a binary that refuses to start without its generated version file, so
    /// the module's source is copied, the file written as its release process does, and the command built.
    fn ferretdb_binary(&self) -> Result<PathBuf> {
        let binary = self
            .cache
            .join("bin")
            .join(format!("ferretdb-{FERRETDB_VERSION}"));
        if binary.exists() {
            return Ok(binary);
        }
        eprintln!("ferretdb   building FerretDB {FERRETDB_VERSION} with go (once)");
        let module = format!("{FERRETDB_MODULE}@{FERRETDB_VERSION}");
        let json = output(Command::new("go").args(["mod", "download", "-json", &module]))
            .context("downloading FerretDB with go (is Go installed?)")?;
        let dir = json
            .lines()
            .find_map(|line| {
                let line = line.trim();
                line.strip_prefix("\"Dir\": \"")
                    .and_then(|rest| rest.strip_suffix("\","))
            })
            .ok_or_else(|| anyhow!("`go mod download -json {module}` printed no Dir"))?;
        let src = self
            .cache
            .join("src")
            .join(format!("ferretdb-{FERRETDB_VERSION}"));
        if src.exists() {
            fs::remove_dir_all(&src)?;
        }
        fs::create_dir_all(src.parent().unwrap_or(&self.cache))?;
        run(Command::new("cp").arg("-r").arg(dir).arg(&src))?;
        run(Command::new("chmod").arg("-R").arg("u+w").arg(&src))?;
        fs::write(
            src.join("build").join("version").join("version.txt"),
            FERRETDB_VERSION,
        )?;
        fs::create_dir_all(self.cache.join("bin"))?;
        run(Command::new("go")
            .args(["build", "-trimpath", "-o"])
            .arg(&binary)
            .arg("./cmd/ferretdb")
            .current_dir(&src))
        .context("building FerretDB")?;
        Ok(binary)
    }

    fn start_ferretdb(&self) -> Result<u32> {
        let binary = self.ferretdb_binary()?;
        let dir = self.state.join("ferretdb");
        let mut cmd = Command::new(binary);
        // FerretDB starts without PostgreSQL but fails every request until it answers: wait for it first.
        let waiting_since = Instant::now();
        let deadline = waiting_since + self.timeout;
        while !port_answers(self.ports.postgres) {
            // Just after the start the pid may not show its command line yet (setpriv is exec'ing the server):
            // a missing process only counts after a short grace.
            let gone = self.running_pid(Part::Postgres).is_none()
                && waiting_since.elapsed() > Duration::from_secs(3);
            if gone || Instant::now() >= deadline {
                bail!(
                    "PostgreSQL did not come up for FerretDB; read {}",
                    self.log_file(Part::Postgres).display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.install_ferretdb_indexes(deadline)?;
        cmd.arg("--handler=postgresql")
            .arg(format!(
                "--postgresql-url=postgres://postgres@127.0.0.1:{}/postgres",
                self.ports.postgres
            ))
            .arg(format!("--state-dir={}", dir.join("state").display()))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.ports.mongo))
            .arg(format!(
                "--debug-addr=127.0.0.1:{}",
                self.ports.ferretdb_debug
            ))
            .arg("--telemetry=disable")
            .arg("--log-level=warn");
        self.spawn(Part::FerretDb, cmd)
    }

    // ---- PostgreSQL (FerretDB's backend) ------------------------------------------------------------------------

    /// Runs `ferretdb_indexes.sql` (GIN indexes FerretDB's lookups can use, on every table it has and will create)
    /// once PostgreSQL accepts connections; idempotent, so every `stack up` runs it.
    fn install_ferretdb_indexes(&self, deadline: Instant) -> Result<()> {
        let bin = Self::postgres_bin_dir()?;
        self.wait_postgres_accepts(&bin, deadline)?;
        let psql = bin.join("psql");
        loop {
            let output = Command::new(&psql)
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                ])
                .args(["-d", "postgres", "-p", &self.ports.postgres.to_string()])
                .args(["-c", FERRETDB_INDEXES])
                .output()
                .context("running psql")?;
            if output.status.success() {
                return Ok(());
            }
            let error = String::from_utf8_lossy(&output.stderr);
            // PostgreSQL can still turn a connection away just after `pg_isready` said yes (a restart between
            // the two); anything else is a bug.
            if !postgres_refuses_for_now(&error) || Instant::now() >= deadline {
                bail!("installing FerretDB's indexes into PostgreSQL failed: {error}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits (until `deadline`) for PostgreSQL to accept connections. After an unclean stop it recovers first and
    /// turns connections away meanwhile ("the database system is not yet accepting connections", "... is
    /// starting up"), for as long as its WAL takes to replay, which a listening port does not show.
    fn wait_postgres_accepts(&self, bin: &Path, deadline: Instant) -> Result<()> {
        loop {
            let output = Command::new(bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-t",
                    "2",
                ])
                .args(["-p", &self.ports.postgres.to_string()])
                .output()
                .context("running pg_isready")?;
            // 0: accepting; 1: rejecting (starting up, recovering); 2: no answer; 3: bad arguments.
            match output.status.code() {
                Some(0) => return Ok(()),
                Some(1 | 2) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                _ => bail!(
                    "PostgreSQL on port {} did not accept connections within {:?} ({}); read {}",
                    self.ports.postgres,
                    self.timeout,
                    String::from_utf8_lossy(&output.stdout).trim(),
                    self.log_file(Part::Postgres).display()
                ),
            }
        }
    }

    /// Debian's PostgreSQL server binaries, newest version first.
    fn postgres_bin_dir() -> Result<PathBuf> {
        let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
            .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        versions.sort();
        versions
            .into_iter()
            .rev()
            .map(|v| v.join("bin"))
            .find(|bin| bin.join("postgres").exists())
            .ok_or_else(|| {
                anyhow!(
                    "PostgreSQL is not installed: `apt-get install postgresql` (.ci/run does it)"
                )
            })
    }

    /// Whether this process runs as root, when PostgreSQL (which refuses to run as root) runs as `postgres`.
    fn is_root() -> bool {
        std::env::var("USER").is_ok_and(|u| u == "root")
            || fs::read_to_string("/proc/self/status")
                .map(|s| {
                    s.lines()
                        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
                })
                .unwrap_or(false)
    }

    /// A command that runs as the `postgres` user when this process is root (PostgreSQL refuses to run as
    /// root), as this user otherwise. `setpriv` execs, so the pid is PostgreSQL's own.
    fn as_postgres_user(program: &Path) -> Command {
        if Self::is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    /// PostgreSQL's folder (data and socket): `<state>/postgres`, unless this process is root and the `postgres`
    /// user, which the server then runs as, cannot enter the state folder (a clone in root's home, or in a
    /// temporary folder of mode 700): then `<postgres's home>/herald/<state folder, slashes as underscores>`, one
    /// per state folder, which that user owns. Pid and log stay under the state folder either way.
    fn postgres_dir(&self) -> PathBuf {
        let local = self.state.join("postgres");
        if !Self::is_root() {
            return local;
        }
        let postgres_can_enter = Self::as_postgres_user(Path::new("test"))
            .arg("-x")
            .arg(&self.state)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if postgres_can_enter {
            return local;
        }
        let home = output(Command::new("getent").args(["passwd", "postgres"]))
            .ok()
            .and_then(|line| line.trim().split(':').nth(5).map(PathBuf::from))
            .filter(|home| home.is_absolute())
            .unwrap_or_else(|| PathBuf::from("/var/lib/postgresql"));
        let name = self
            .state
            .to_string_lossy()
            .trim_matches('/')
            .replace('/', "_");
        home.join("herald").join(name)
    }

    fn start_postgres(&self) -> Result<u32> {
        let bin = Self::postgres_bin_dir()?;
        let dir = self.postgres_dir();
        let data = dir.join("data");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if dir != self.state.join("postgres") {
            eprintln!(
                "postgres   data in {}: the postgres user cannot enter {}",
                dir.display(),
                self.state.display()
            );
        }
        // When run as root the server runs as `postgres`, which must own its folders.
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        if !data.join("PG_VERSION").exists() {
            run(Self::as_postgres_user(&bin.join("initdb"))
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                    "-D",
                ])
                .arg(&data)
                .stdout(Stdio::null()))
            .context("initialising PostgreSQL's data folder")?;
        }
        let mut cmd = Self::as_postgres_user(&bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-p")
            .arg(self.ports.postgres.to_string())
            .arg("-k")
            .arg(&dir)
            .args(["-c", "max_connections=300", "-c", "shared_buffers=256MB"])
            // FerretDB's finds are prepared as `_jsonb->$1 @> $2`: only a plan made with the values can use the
            // GIN indexes of ferretdb_indexes.sql.
            .args(["-c", "plan_cache_mode=force_custom_plan"]);
        self.spawn(Part::Postgres, cmd)
    }

    // ---- SMTP sink ------------------------------------------------------------------------------------------

    /// A virtualenv with aiosmtpd, in the cache.
    fn smtp_python(&self) -> Result<PathBuf> {
        let venv = self.cache.join("venv-smtp");
        let python = venv.join("bin").join("python");
        let done = venv.join(".complete");
        if done.exists() && fs::read_to_string(&done).unwrap_or_default() == AIOSMTPD {
            return Ok(python);
        }
        eprintln!("smtp-sink  installing {AIOSMTPD} from PyPI (once)");
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("creating a virtualenv (is python3 with venv installed?)")?;
        run(Command::new(&python).args(["-m", "pip", "install", "-q", AIOSMTPD]))?;
        fs::write(&done, AIOSMTPD)?;
        Ok(python)
    }

    fn start_smtp_sink(&self) -> Result<u32> {
        let python = self.smtp_python()?;
        let mut cmd = Command::new(python);
        cmd.arg("-u")
            .arg(paths::repo_root().join("stack").join("smtp_sink.py"))
            .arg(format!("--smtp-port={}", self.ports.smtp))
            .arg(format!("--http-port={}", self.ports.smtp_http));
        self.spawn(Part::SmtpSink, cmd)
    }

    fn spawn(&self, part: Part, cmd: Command) -> Result<u32> {
        self.procs.spawn(part.name(), cmd)
    }
}

const KAFKA_LOG4J: &str = "\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
";

/// Whether psql's error is PostgreSQL turning connections away while it starts or recovers (or is not listening
/// yet), which waiting ends, rather than a failure of the SQL.
fn postgres_refuses_for_now(psql_stderr: &str) -> bool {
    [
        "starting up",
        "not yet accepting connections",
        "Connection refused",
    ]
    .iter()
    .any(|transient| psql_stderr.contains(transient))
}

fn port_answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// A bare HTTP/1.0 GET on loopback that succeeds on a 200.
pub fn http_get_ok(port: u16, path: &str) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    if head.ends_with(b"200") {
        Ok(())
    } else {
        Err(format!("answered {}", String::from_utf8_lossy(&head)))
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed ({status})", cmd);
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{:?} failed ({})", cmd, out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovering_postgres_is_waited_for() {
        // What `stack up` printed when PostgreSQL was still replaying its WAL after an unclean stop.
        let recovering = "psql: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  the \
                          database system is not yet accepting connections\nDETAIL:  Consistent recovery state \
                          has not been yet reached.";
        assert!(postgres_refuses_for_now(recovering));
        assert!(postgres_refuses_for_now(
            "FATAL:  the database system is starting up"
        ));
        assert!(!postgres_refuses_for_now(
            "ERROR:  syntax error at or near \"CREAT\""
        ));
    }
}
