//! `herald-dispatch --lane <critical|default|retry>`: the dispatcher binary. Configuration is read from the
//! environment (see `herald_dispatch::config`).

use clap::Parser;
use herald_dispatch::{App, Config};
use herald_domain::Lane;

/// Sends the events of one delivery lane.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The lane to consume: critical, default or retry.
    #[arg(long, env = "HERALD_LANE")]
    lane: Option<Lane>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env(cli.lane)?;
    herald_platform::telemetry::init(&config.telemetry);
    let shutdown_bound = config.telemetry.shutdown_timeout;
    let shutdown = herald_platform::shutdown_signal_within(shutdown_bound);
    App::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await?;
    Ok(())
}
