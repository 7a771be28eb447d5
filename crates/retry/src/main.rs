//! `herald-retry`: the retry scheduler's process.

use std::process::ExitCode;

use herald_retry::{App, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("herald-retry: {e}");
            return ExitCode::FAILURE;
        }
    };
    herald_platform::telemetry::init(&config.telemetry);
    let shutdown_bound = config.telemetry.shutdown_timeout;
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "herald-retry failed to start");
            return ExitCode::FAILURE;
        }
    };
    match app
        .run_until_stopped(herald_platform::shutdown_signal_within(shutdown_bound))
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "herald-retry stopped with an error");
            ExitCode::FAILURE
        }
    }
}
