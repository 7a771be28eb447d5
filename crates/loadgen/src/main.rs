//! `herald-loadgen run ...` sends traffic and prints the report; `herald-loadgen mongo-baseline` measures the
//! MongoDB-wire server's own insert rate. Exits 2 when the ledger does not balance.

#![allow(clippy::print_stdout)] // a command-line tool: its report is what it prints

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use herald_loadgen::baseline::{mongo_baseline, MongoBaselineConfig};
use herald_loadgen::RunConfig;

#[derive(Debug, Parser)]
#[command(name = "herald-loadgen", about = "Herald's load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send realistic traffic to ingest, wait for it to settle, account for every event.
    Run(Box<RunConfig>),
    /// Measure the MongoDB-wire server's insert rate without Herald.
    MongoBaseline(MongoBaselineConfig),
}

fn write_json(path: Option<&std::path::Path>, value: &impl serde::Serialize) -> Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    match Cli::parse().command {
        Command::Run(config) => {
            let report = herald_loadgen::run(&config).await?;
            println!("{report}");
            write_json(config.json.as_deref(), &report)?;
            Ok(if report.ledger.balanced {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::MongoBaseline(config) => {
            let result = mongo_baseline(&config).await?;
            println!("{result}");
            write_json(config.json.as_deref(), &result)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
