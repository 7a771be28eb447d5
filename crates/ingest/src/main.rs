//! The `herald-ingest` binary: serves until SIGINT or SIGTERM (exit codes: `herald_platform::service::main`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let env = herald_platform::EnvReader::from_env();
    herald_platform::service::main::<herald_ingest::App>(env).await
}
