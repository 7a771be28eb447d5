//! The one shutdown signal: SIGINT or SIGTERM cancels a token that every task of a service watches.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGINT or SIGTERM.
///
/// Services pass clones (or child tokens) to their HTTP servers and consumers, which then stop taking work,
/// finish what is in flight and store their offsets.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

/// [`shutdown_signal`], bounded: once the signal came, the process has `bound` to stop on its own, and is then
/// ended with exit code 1 (what it had not finished is redelivered by Kafka, so nothing is lost, only delayed).
pub fn shutdown_signal_within(bound: Duration) -> CancellationToken {
    let token = shutdown_signal();
    let signalled = token.clone();
    tokio::spawn(async move {
        signalled.cancelled().await;
        tokio::time::sleep(bound).await;
        tracing::error!(
            bound_ms = bound.as_millis() as u64,
            "did not stop within HERALD_SHUTDOWN_TIMEOUT_MS; exiting now"
        );
        std::process::exit(1);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM, only SIGINT stops this process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
