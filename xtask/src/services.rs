//! The Herald services of the dev stack: which run, on which ports, with which settings, and how `cargo xtask up`
//! starts them (built from this checkout, detached, logs beside the stack's) and `down` stops them.
//!
//! A service joins the list when its crate lands; a crate that is not in the checkout is skipped.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::paths;
use crate::procs::Procs;

/// One process of the dev stack.
#[derive(Debug, Clone)]
pub struct Service {
    /// Process name: pid and log files are named after it.
    pub name: &'static str,
    /// The crate directory under `crates/`.
    pub krate: &'static str,
    /// The binary.
    pub bin: &'static str,
    pub args: &'static [&'static str],
    /// The HTTP port serving `/api/ready` (and the API, for HTTP services).
    pub port: u16,
    /// The variable that sets that port.
    pub port_var: &'static str,
    /// What the port serves, for the endpoint list.
    pub role: &'static str,
}

/// The dev stack: two critical dispatchers, one default, one retry-lane dispatcher, and every other service.
pub const SERVICES: &[Service] = &[
    Service {
        name: "ingest",
        krate: "ingest",
        bin: "herald-ingest",
        args: &[],
        port: 3000,
        port_var: "HERALD_INGEST_PORT",
        role: "POST /event, POST /api/logs",
    },
    Service {
        name: "dispatch-critical-1",
        krate: "dispatch",
        bin: "herald-dispatch",
        args: &["--lane", "critical"],
        port: 3010,
        port_var: "HERALD_DISPATCH_PORT",
        role: "critical lane, health only",
    },
    Service {
        name: "dispatch-critical-2",
        krate: "dispatch",
        bin: "herald-dispatch",
        args: &["--lane", "critical"],
        port: 3011,
        port_var: "HERALD_DISPATCH_PORT",
        role: "critical lane, health only",
    },
    Service {
        name: "dispatch-default",
        krate: "dispatch",
        bin: "herald-dispatch",
        args: &["--lane", "default"],
        port: 3012,
        port_var: "HERALD_DISPATCH_PORT",
        role: "default lane, health only",
    },
    Service {
        name: "dispatch-retry",
        krate: "dispatch",
        bin: "herald-dispatch",
        args: &["--lane", "retry"],
        port: 3013,
        port_var: "HERALD_DISPATCH_PORT",
        role: "retry lane, health only",
    },
    Service {
        name: "retry",
        krate: "retry",
        bin: "herald-retry",
        args: &[],
        port: 3020,
        port_var: "HERALD_RETRY_PORT",
        role: "retry scheduler, health only",
    },
    Service {
        name: "replay",
        krate: "replay",
        bin: "herald-replay",
        args: &[],
        port: 3005,
        port_var: "HERALD_REPLAY_PORT",
        role: "POST /replay-dead-letter, GET /api/dead-letters",
    },
    Service {
        name: "query",
        krate: "query",
        bin: "herald-query",
        args: &[],
        port: 3001,
        port_var: "HERALD_QUERY_PORT",
        role: "GET /api/logs, GET /api/logs/:id, GET /api/stats, GET /api/alerts, the console at /console",
    },
    Service {
        name: "alert",
        krate: "alert",
        bin: "herald-alert",
        args: &[],
        port: 3030,
        port_var: "HERALD_ALERT_PORT",
        role: "alerting (mail to the SMTP sink), health only",
    },
];

/// The dev stack's webhook secret, so a receiver (the load generator's sink) can check every signature.
pub const DEV_WEBHOOK_SECRET: &str = "dev-webhook-secret-change-me";

/// Settings every service of the dev stack gets on top of the stack's endpoints: readable logs, the SMTP sink
/// as the mail server, sandbox SMS (there is no real SMS provider here) and a development webhook secret.
const DEV_ENV: &[(&str, &str)] = &[
    ("HERALD_LOG_FORMAT", "pretty"),
    ("HERALD_SMTP_FROM", "herald@localhost"),
    ("HERALD_SMS_PROVIDER", "sandbox"),
    ("HERALD_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET),
    // The dev stack is a local demo: no API keys, and no rate limit in the way of `cargo xtask bench`. Both are on
    // by default everywhere else.
    ("HERALD_AUTH", "off"),
    ("HERALD_RATE_LIMIT_PER_SEC", "0"),
];

/// The services whose crates are in this checkout.
pub fn present() -> Vec<&'static Service> {
    let crates = paths::repo_root().join("crates");
    SERVICES
        .iter()
        .filter(|s| crates.join(s.krate).join("Cargo.toml").exists())
        .collect()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| paths::repo_root().join("target"), PathBuf::from)
}

/// Builds the service binaries (release with `release`).
pub fn build(release: bool) -> Result<()> {
    let mut build = vec!["build", "--quiet"];
    let mut bins: Vec<&str> = present().iter().map(|s| s.bin).collect();
    bins.dedup();
    for bin in &bins {
        build.extend(["--bin", bin]);
    }
    if release {
        build.push("--release");
    }
    crate::cargo(&build, &[])
}

/// Builds the service binaries (release with `release`), starts those not running, waits until each answers
/// `/api/ready`. Returns the services it started.
pub fn up(
    procs: &Procs,
    stack_env: &[(String, String)],
    release: bool,
) -> Result<Vec<&'static Service>> {
    if present().is_empty() {
        return Ok(Vec::new());
    }
    build(release)?;
    start(procs, stack_env, release)
}

/// Starts the services that are not running from the binaries already built, waits until each answers
/// `/api/ready`. Returns the services it started.
pub fn start(
    procs: &Procs,
    stack_env: &[(String, String)],
    release: bool,
) -> Result<Vec<&'static Service>> {
    start_offset(procs, stack_env, release, 0)
}

/// [`start`] with every service's port `port_offset` above its default, for a second stack beside the dev one
/// (`cargo xtask chaos`).
pub fn start_offset(
    procs: &Procs,
    stack_env: &[(String, String)],
    release: bool,
    port_offset: u16,
) -> Result<Vec<&'static Service>> {
    start_these(procs, stack_env, release, port_offset, &present())
}

/// A second default-lane dispatcher, which `cargo xtask bench` adds for its two-dispatcher throughput run.
pub const SECOND_DEFAULT_DISPATCHER: Service = Service {
    name: "dispatch-default-2",
    krate: "dispatch",
    bin: "herald-dispatch",
    args: &["--lane", "default"],
    port: 3014,
    port_var: "HERALD_DISPATCH_PORT",
    role: "default lane, health only",
};

/// Starts those of `services` that are not running, each on its port plus `port_offset`, and waits until each
/// answers `/api/ready`. Returns the services it started.
pub fn start_these(
    procs: &Procs,
    stack_env: &[(String, String)],
    release: bool,
    port_offset: u16,
    services: &[&'static Service],
) -> Result<Vec<&'static Service>> {
    let profile = if release { "release" } else { "debug" };
    let mut started = Vec::new();
    for service in services {
        if let Some(pid) = procs.running_pid(service.name, service.bin) {
            eprintln!("{:<20} already running (pid {pid})", service.name);
            continue;
        }
        let mut cmd = Command::new(target_dir().join(profile).join(service.bin));
        cmd.args(service.args)
            .envs(stack_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(DEV_ENV.iter().copied())
            .env(service.port_var, (service.port + port_offset).to_string())
            .env("KAFKA_CLIENT_ID", service.name)
            .current_dir(paths::repo_root());
        let pid = procs.spawn(service.name, cmd)?;
        eprintln!(
            "{:<20} started (pid {pid}), log {}",
            service.name,
            procs.log_file(service.name).display()
        );
        started.push(*service);
    }
    let spawned = Instant::now();
    let deadline = spawned + Duration::from_secs(60);
    for service in started.iter().copied() {
        loop {
            // Between fork and exec the child's command line is still this process's, without the service's
            // name: a missing process only counts after a short grace.
            if procs.running_pid(service.name, service.bin).is_none()
                && spawned.elapsed() > Duration::from_secs(3)
            {
                bail!(
                    "{} exited during startup; read {}",
                    service.name,
                    procs.log_file(service.name).display()
                );
            }
            if crate::stack::http_get_ok(service.port + port_offset, "/api/ready").is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not become ready on port {} within 60 s; read {}",
                    service.name,
                    service.port + port_offset,
                    procs.log_file(service.name).display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    Ok(started)
}

pub fn print_endpoints() {
    let services = present();
    if services.is_empty() {
        return;
    }
    println!("Herald services:");
    for service in services {
        println!(
            "  {:<20} http://127.0.0.1:{:<5}  {}",
            service.name, service.port, service.role
        );
    }
}

/// Stops every service `up` started.
pub fn down(procs: &Procs) -> Result<()> {
    // The bench's second default-lane dispatcher too: an interrupted bench leaves it running, and a stale
    // dispatcher in the group takes half the lane's partitions in every later run.
    let mut all: Vec<&Service> = SERVICES.iter().collect();
    all.push(&SECOND_DEFAULT_DISPATCHER);
    stop(procs, &all)
}

/// Stops `services`, last first, by their pid files.
pub fn stop(procs: &Procs, services: &[&Service]) -> Result<()> {
    for service in services.iter().rev() {
        if let Some(pid) = procs
            .stop(service.name, service.bin, Duration::from_secs(30))
            .with_context(|| format!("stopping {}", service.name))?
        {
            eprintln!("{:<20} stopped (pid {pid})", service.name);
        }
    }
    Ok(())
}

/// Prints one line per service; returns whether all present services answer `/api/ready`.
pub fn status(procs: &Procs) -> bool {
    let mut all_up = true;
    for service in present() {
        let line = match procs.running_pid(service.name, service.bin) {
            Some(pid) if crate::stack::http_get_ok(service.port, "/api/ready").is_ok() => {
                format!("ready     pid {pid}, http://127.0.0.1:{}", service.port)
            }
            Some(pid) => {
                all_up = false;
                format!(
                    "not ready pid {pid}, http://127.0.0.1:{}/api/ready",
                    service.port
                )
            }
            None => {
                all_up = false;
                "stopped   (`cargo xtask up` starts it)".to_string()
            }
        };
        println!("{:<20} {line}", service.name);
    }
    all_up
}
