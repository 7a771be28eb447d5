//! The one service skeleton every Herald service starts through: [`Service`] (read the configuration, build,
//! run until stopped), [`main`] (a binary's whole body: the same steps and exit codes everywhere),
//! [`Supervisor`] (the service's tasks under one child token; the first that fails ends them all, naming
//! itself), [`IndexGate`] (MongoDB indexes created in the background, with the retry helper, reported by
//! `/api/ready`), [`HttpServer`] and [`HealthServer`] (an HTTP service's server, and the health server of the
//! services whose only HTTP is health, with a request timeout) and [`bind`].
//!
//! A new service implements [`ServiceConfig`] on its `Config` and [`Service`] on its `App`, spawns its consumers and servers on a [`Supervisor`] in
//! `run_until_stopped`, and its binary is `herald_platform::service::main::<App>(EnvReader::from_env())`.

use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, EnvReader, TelemetryConfig};

mod gate;
mod server;
mod supervisor;

pub use gate::{connect_with_indexes, IndexGate};
pub use server::{bind, HealthServer, HttpServer, HEALTH_TIMEOUT};
pub use supervisor::{BoxError, EndedEarly, Supervisor, TaskFailed};

/// The exit code of a service that stopped on SIGINT or SIGTERM, as asked.
pub const EXIT_STOPPED: u8 = 0;
/// The exit code of a service one of whose tasks failed while it ran (a consumer, the HTTP server), or that
/// did not stop within `HERALD_SHUTDOWN_TIMEOUT_MS` of the signal ([`crate::shutdown_signal_within`]).
pub const EXIT_FAILED: u8 = 1;
/// The exit code of a service whose configuration is invalid (every bad variable is printed on stderr).
pub const EXIT_CONFIG: u8 = 2;
/// The exit code of a service that could not start (a port taken, a Kafka client refused, ...).
pub const EXIT_START: u8 = 3;

/// A service's configuration, as [`main`] reads it.
pub trait ServiceConfig: Sized + Send + 'static {
    /// Reads every field, recording each bad variable in `env` (the caller then calls `env.finish()`).
    fn read(env: &mut EnvReader) -> Self;

    /// The telemetry settings (log format, shutdown bound).
    fn telemetry(&self) -> &TelemetryConfig;

    /// Reads every field from `env`: `Err` lists every bad variable.
    fn read_all(mut env: EnvReader) -> Result<Self, ConfigError> {
        let config = Self::read(&mut env);
        env.finish().map(|()| config)
    }

    /// Reads exactly these variables, with the HTTP APIs' authentication off (`HERALD_AUTH=off`, which a
    /// service without an API does not read): what configuration tests start from.
    fn read_pairs_without_auth(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::read_all(EnvReader::from_pairs(
            &[&[("HERALD_AUTH", "off")], pairs].concat(),
        ))
    }
}

/// A Herald service, as [`main`] runs it.
pub trait Service: Sized + Send + 'static {
    /// The binary's name (`herald-retry`), in logs and error messages.
    const NAME: &'static str;
    type Config: ServiceConfig;

    /// Connects, binds its port, and returns the service ready to run.
    fn build(config: Self::Config) -> impl Future<Output = Result<Self, Error>> + Send;

    /// The port it listens on (the one the system picked, when configured with 0).
    fn port(&self) -> u16;

    /// Runs until `shutdown` is cancelled or one of its tasks fails, then stops the others and returns.
    fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Reads `S`'s configuration from `env`: `Err` lists every bad variable.
pub fn read_config<S: Service>(env: EnvReader) -> Result<S::Config, ConfigError> {
    S::Config::read_all(env)
}

/// A service binary's whole `main`: reads the configuration from `env`, starts telemetry, builds the service and
/// runs it until SIGINT or SIGTERM, then exports the spans still held. Exits [`EXIT_STOPPED`], [`EXIT_FAILED`],
/// [`EXIT_CONFIG`] or [`EXIT_START`].
pub async fn main<S: Service>(env: EnvReader) -> ExitCode {
    let config = match read_config::<S>(env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{}: {e}", S::NAME);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let telemetry = crate::telemetry::init(config.telemetry(), S::NAME);
    let code = build_and_run::<S>(config).await;
    telemetry.shutdown().await;
    ExitCode::from(code)
}

/// Builds the service and runs it until SIGINT or SIGTERM; returns the exit code.
async fn build_and_run<S: Service>(config: S::Config) -> u8 {
    let shutdown = crate::shutdown_signal_within(config.telemetry().shutdown_timeout);
    let service = match S::build(config).await {
        Ok(service) => service,
        Err(e) => {
            tracing::error!(service = S::NAME, error = %error_chain(&e), "failed to start");
            return EXIT_START;
        }
    };
    match service.run_until_stopped(shutdown).await {
        Ok(()) => EXIT_STOPPED,
        Err(e) => {
            tracing::error!(service = S::NAME, error = %error_chain(&e), "stopped with an error");
            EXIT_FAILED
        }
    }
}

/// An error and its sources, `: `-separated, for the one log line a failed service leaves.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // `#[error(transparent)]` and `{0}` wrappers repeat their source's message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What can stop a service from starting or running: the `Error` of every service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] crate::kafka::Error),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
    /// A part of the service's own that could not be built (dispatch's providers, alert's SMTP transport).
    #[error(transparent)]
    Build(BoxError),
}

impl Error {
    /// A part of the service's own that could not be built: its error says which.
    pub fn build(error: impl Into<BoxError>) -> Self {
        Error::Build(error.into())
    }
}

/// A port that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    pub address: String,
    #[source]
    pub source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("building the consumer")]
        Build(#[source] Inner),
        #[error(transparent)]
        Same(Inner),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("broker refused")]
    struct Inner;

    #[test]
    fn the_log_line_names_every_cause_once() {
        assert_eq!(
            error_chain(&Outer::Build(Inner)),
            "building the consumer: broker refused"
        );
        assert_eq!(error_chain(&Outer::Same(Inner)), "broker refused");
    }
}
