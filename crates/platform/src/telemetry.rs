//! Tracing setup: JSON lines in production, readable lines in development, and OpenTelemetry traces exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogFormat, OtlpConfig, TelemetryConfig};

/// Longest the exporter may take to send what it still holds when the service stops.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Targets whose spans are never exported: the exporter's own HTTP client, which would otherwise trace its exports.
const NOT_EXPORTED: [&str; 4] = ["opentelemetry", "hyper", "h2", "reqwest"];

/// The exporter of an installed subscriber, if there is one: flushed and shut down when the service stops.
#[derive(Debug, Default)]
#[must_use = "dropping it skips the final export of the spans still held"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (an endpoint was configured and this call installed the subscriber).
    pub fn exports(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans ended so far and waits for the collector's answer (tests, before they look).
    pub async fn flush(&self) {
        if let Some(provider) = self.provider.clone() {
            // The SDK waits on its export task, which runs on this runtime: wait on a blocking thread instead.
            let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "flushing the trace exporter failed");
            }
        }
    }

    /// Exports what is left and stops the exporter, waiting a few seconds at most. Called once, as the service
    /// exits.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let stopping = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, stopping).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "the trace exporter did not shut down cleanly; spans may be lost")
            }
            Ok(Err(_)) | Err(_) => {
                tracing::warn!("the trace exporter did not shut down in time; spans may be lost")
            }
        }
    }
}

/// Installs the global subscriber, logging to stdout, with `service` as the traces' `service.name` unless
/// `OTEL_SERVICE_NAME` set one. Call once, first thing in `main`, on the Tokio runtime (the exporter's task runs
/// there).
pub fn init(config: &TelemetryConfig, service: &str) -> Telemetry {
    init_with_writer(config, service, std::io::stdout)
}

/// [`init`], with the log lines written to `writer` (a test's captured output).
///
/// A second init (tests that start several services in one process) keeps the first subscriber, and exports
/// nothing of its own.
pub fn init_with_writer<W>(config: &TelemetryConfig, service: &str, writer: W) -> Telemetry
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => fmt::layer().compact().with_writer(writer).boxed(),
    };
    // Checked first: an exporter built for nothing would still hold a task, and dropping it blocks.
    let otlp = config
        .otlp
        .as_ref()
        .filter(|_| !tracing::dispatcher::has_been_set());
    let (provider, unbuilt) = match otlp.map(|otlp| provider(otlp, service)) {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let traces = provider.as_ref().map(|provider| {
        let not_exported = tracing_subscriber::filter::filter_fn(|metadata| {
            !NOT_EXPORTED
                .iter()
                .any(|target| metadata.target().starts_with(target))
        });
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("herald"))
            .with_filter(not_exported)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if let Some(e) = unbuilt {
        tracing::warn!(error = %e, "cannot build the OTLP exporter; no traces are exported");
    }
    match provider {
        Some(provider) if installed => {
            let endpoint = otlp.map(OtlpConfig::traces_url).unwrap_or_default();
            tracing::info!(service, endpoint, "exporting traces over OTLP/HTTP");
            Telemetry {
                provider: Some(provider),
            }
        }
        Some(provider) => {
            // Another subscriber was installed in between: this exporter would never get a span. Its shutdown
            // waits on its task, so not on this thread.
            tokio::task::spawn_blocking(move || provider.shutdown());
            Telemetry::default()
        }
        None => Telemetry::default(),
    }
}

/// The tracer provider exporting to `otlp`'s endpoint in batches, from a task on the current Tokio runtime.
fn provider(
    otlp: &OtlpConfig,
    service: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(otlp.traces_url())
        .build()?;
    let batches =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(
            otlp.service_name
                .clone()
                .unwrap_or_else(|| service.to_owned()),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(resource)
        .build())
}
