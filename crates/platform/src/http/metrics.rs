//! Prometheus metrics: one recorder per process (the `metrics` facade with its Prometheus renderer), `/metrics`
//! in the text format on every service, and the HTTP request metrics of the standard layers.
//!
//! Every Herald metric is named `herald_*`; the README's metrics table lists them.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of the latency histograms, in seconds: 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle). Metrics recorded before the first
/// call are lost, so services call it while they are built.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// `GET /metrics`: every metric of the process, in Prometheus's text format.
pub async fn render() -> Response {
    let handle = install();
    // Histograms' rolling summaries are not used; this only trims buckets no longer needed.
    handle.run_upkeep();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

/// Middleware: counts requests by service, method, route and status, and times them.
///
/// The route is the matched pattern (`/api/logs/{id}`), never the raw path, so ids do not explode the label set.
pub async fn track(State(service): State<&'static str>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("herald_http_requests_total",
        "service" => service, "method" => method.clone(), "route" => route.clone(), "status" => status)
    .increment(1);
    metrics::histogram!("herald_http_request_duration_seconds",
        "service" => service, "method" => method, "route" => route)
    .record(started.elapsed().as_secs_f64());
    response
}
