//! The `herald-ingest` binary: reads its configuration, starts telemetry, and serves until SIGINT or SIGTERM.

use herald_ingest::{App, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().unwrap_or_else(|e| {
        eprintln!("herald-ingest: {e}");
        std::process::exit(2);
    });
    herald_platform::telemetry::init(&config.telemetry);
    let shutdown_bound = config.telemetry.shutdown_timeout;
    let app = App::build(config).await?;
    app.run_until_stopped(herald_platform::shutdown_signal_within(shutdown_bound))
        .await?;
    Ok(())
}
