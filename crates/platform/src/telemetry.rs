//! Tracing setup: JSON lines in production, readable lines in development, and OpenTelemetry traces exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! A trace follows an event across Kafka: every publish ([`crate::kafka::send`]) carries the W3C trace context of
//! the span it is sent from in its `traceparent` and `tracestate` headers ([`with_trace_context`]), and every
//! consumer of a message about an event makes its handling span a child of the context the message carries
//! ([`follow_message`]). An HTTP request's span follows the client's `traceparent` the same way
//! ([`follow_request`]). Without an exporter the spans stay what they were: the context is empty, nothing is
//! added to a message, and following a message changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogFormat, OtlpConfig, TelemetryConfig};

/// The W3C trace context headers, on Kafka messages as on HTTP requests.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

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

/// `headers` with the current span's trace context in place of any they carried: what [`crate::kafka::send`]
/// publishes. Unchanged when there is no context to carry (no exporter, or no span).
pub fn with_trace_context(headers: Option<OwnedHeaders>) -> Option<OwnedHeaders> {
    let mut fields: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut fields);
    if fields.is_empty() {
        return headers;
    }
    // A message passed on as it came (a long delay re-queued on its tier) carries the context of its first
    // publish: the new one replaces it.
    let kept = headers.iter().flat_map(|headers| {
        headers
            .iter()
            .filter(|header| !TRACE_HEADERS.contains(&header.key))
    });
    let mut out = OwnedHeaders::new();
    for header in kept {
        out = out.insert(header);
    }
    for (key, value) in &fields {
        out = out.insert(Header {
            key: key.as_str(),
            value: Some(value.as_str()),
        });
    }
    Some(out)
}

/// Makes `span` a child of the trace context `message` carries, if it carries one. Call before the span is first
/// entered.
pub fn follow_message(span: &tracing::Span, message: &impl Message) {
    if let Some(headers) = message.headers() {
        follow(span, &KafkaHeaders(headers));
    }
}

/// Makes `span` (a request's) a child of the client's `traceparent`, if it sent one.
pub fn follow_request(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    follow(span, &HttpHeaders(headers));
}

fn follow(span: &tracing::Span, carrier: &dyn Extractor) {
    let parent = TraceContextPropagator::new().extract(carrier);
    if parent.span().span_context().is_valid() {
        // Fails only where there is nothing to follow: no exporter, a span filtered out, or one already entered.
        let _ = span.set_parent(parent);
    }
}

/// A Kafka message's headers, read as a W3C trace context carrier.
struct KafkaHeaders<'a, H: Headers>(&'a H);

impl<H: Headers> Extractor for KafkaHeaders<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|header| header.key.eq_ignore_ascii_case(key))
            .and_then(|header| header.value)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|header| header.key).collect()
    }
}

/// An HTTP request's headers, read as a W3C trace context carrier.
struct HttpHeaders<'a>(&'a axum::http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}
