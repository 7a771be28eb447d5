//! `cargo xtask`: Herald's project automation.
//!
//! - `stack up | down | status`: the native dev/test stack (Kafka, FerretDB, SMTP sink) on loopback.
//! - `up`: the stack, then every Herald service (as the services land).
//! - `test`: brings the stack up, runs every test against it, and stops what it started.
//! - `bench`: the standard benchmark scenarios on the native stack, report under `target/bench/`.
//! - `chaos`: the load generator while services, Kafka and FerretDB are killed and restarted, on a stack of its
//!   own; fails when an accepted event is missing or a lane stalls (see docs/BENCHMARKS.md).
//! - `ci`: what CI runs: formatting, clippy, then `test`.

#![allow(clippy::print_stdout)] // a command-line tool: printing is its job

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod chaos;
mod console_probe;
mod limits;
mod paths;
mod procs;
mod prune;
mod services;
mod stack;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Herald's project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Manage the native dev/test stack.
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
    /// Start everything: the stack, then the Herald services (two critical dispatchers, one default, one retry
    /// lane, and every other service), each waited on until ready.
    Up {
        /// Build the services with optimisations (slower to build, what benchmarks use).
        #[arg(long)]
        release: bool,
    },
    /// Stop everything `up` started: the services, then the stack.
    Down {
        /// Stop only the Herald services and leave the stack running.
        #[arg(long)]
        services_only: bool,
    },
    /// Say which parts of the stack and which services are up. Exits 1 when any is not.
    Status,
    /// Run every test against the native stack (started if needed, stopped afterwards if this started it).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// What CI runs: `cargo fmt --check`, `cargo clippy -D warnings`, then `test`.
    Ci,
    /// Run the standard benchmark scenarios on the native stack (services from a release build) and write the
    /// report to target/bench/ (see docs/BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Load at a steady rate while Herald's services, Kafka and FerretDB are SIGKILLed and restarted, on a stack
    /// of its own (ports offset, state under .stack/chaos); prints the ledger and each fault's recovery and
    /// writes target/chaos/report.json. Exits 1 when an event is missing or a lane stalls.
    Chaos(chaos::ChaosArgs),
}

/// The short chaos run `cargo xtask test` ends with: `cargo xtask chaos`'s defaults on the binaries just built.
#[derive(Debug, Parser)]
struct ShortChaos {
    #[command(flatten)]
    args: chaos::ChaosArgs,
}

#[derive(Debug, Subcommand)]
enum StackAction {
    /// Install what is missing (cached under ~/.cache/herald), start what is not running, wait until ready,
    /// create Herald's topics and print the endpoints. A second `up` is a no-op.
    Up,
    /// Stop the processes `up` started, by pid.
    Down {
        /// Also delete the stack's data (topics, databases, mail).
        #[arg(long)]
        wipe: bool,
    },
    /// Say which parts of the stack are running and answering. Exits 1 when any is not.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    limits::raise_open_files();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Cmd) -> Result<ExitCode> {
    let stack = stack::Stack::from_env()?;
    match command {
        Cmd::Stack { action } => match action {
            StackAction::Up => {
                stack.up().await?;
                stack.print_endpoints();
            }
            StackAction::Down { wipe } => stack.down(wipe)?,
            StackAction::Status => {
                if !stack.status() {
                    return Ok(ExitCode::FAILURE);
                }
            }
        },
        Cmd::Up { release } => {
            stack.up().await?;
            services::up(stack.procs(), &stack.test_env(), release)?;
            stack.print_endpoints();
            services::print_endpoints();
        }
        Cmd::Down { services_only } => {
            services::down(stack.procs())?;
            if !services_only {
                stack.down(false)?;
            }
        }
        Cmd::Bench(args) => {
            if !bench::bench(&stack, &args).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Chaos(args) => {
            if !chaos::chaos(&args).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Status => {
            let stack_up = stack.status();
            if !(services::status(stack.procs()) && stack_up) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Test { args } => return test(&stack, &args).await,
        Cmd::Ci => {
            cargo(&["fmt", "--all", "--check"], &[])?;
            cargo(
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
                &[],
            )?;
            return test(&stack, &[]).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Brings the stack up, runs `cargo test` against it, and stops it again if it was not running before
/// (set `HERALD_KEEP_STACK=1` to keep it). A whole-workspace run (no arguments) then runs the short chaos
/// scenario on its own stack, as a step of its own; a failed chaos run fails the command. `HERALD_TEST_CHAOS=0`
/// leaves it out (for a quick local run; CI runs it).
async fn test(stack: &stack::Stack, args: &[String]) -> Result<ExitCode> {
    let started = stack.up().await?;
    prune::leftovers(&stack.kafka_admin(), &stack.mongo_admin()).await;
    // `cargo xtask test -p herald-query` tests one package; without `-p`, the whole workspace.
    let one_package = args
        .iter()
        .any(|a| a == "-p" || a.starts_with("--package") || a.starts_with("-p"));
    let mut cargo_args = vec!["test", "--all-targets"];
    if !one_package {
        cargo_args.push("--workspace");
    }
    cargo_args.extend(args.iter().map(String::as_str));
    // xtask's deploy test runs the service binaries as the compose file does: build them all first (a workspace
    // `cargo test` would, a one-package one would not).
    let result = cargo(&["build", "--bins", "--workspace"], &[])
        .and_then(|()| cargo(&cargo_args, &stack.test_env()));
    let keep = std::env::var("HERALD_KEEP_STACK").is_ok_and(|v| v == "1" || v == "true");
    if started && !keep {
        stack.down(false)?;
    }
    result?;
    let chaos = !std::env::var("HERALD_TEST_CHAOS").is_ok_and(|v| v == "0" || v == "false");
    if args.is_empty() && chaos {
        eprintln!("$ cargo xtask chaos --no-build (the short run)");
        let short = ShortChaos::parse_from(["chaos", "--no-build"]);
        if !chaos::chaos(&short.args).await? {
            bail!("the chaos run failed: see its report above and target/chaos/report.json");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn cargo(args: &[&str], env: &[(String, String)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(paths::repo_root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
