//! `herald-dispatch --lane <critical|default|retry>`: the dispatcher (exit codes: `herald_platform::service::main`).
use clap::Parser;

/// Sends the events of one delivery lane; configuration from the environment (`herald_dispatch::config`).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The lane to consume: critical, default or retry (wins over `HERALD_LANE`).
    #[arg(long)]
    lane: Option<herald_domain::Lane>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut env = herald_platform::EnvReader::from_env();
    if let Some(lane) = Cli::parse().lane {
        env.set("HERALD_LANE", lane.as_str());
    }
    herald_platform::service::main::<herald_dispatch::App>(env).await
}
