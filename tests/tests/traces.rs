//! Traces across Kafka: one event, posted by a client that traces its call, failed once and retried, is one
//! trace from the client's request through ingest, the first attempt, the retry scheduler and the second attempt,
//! exported over OTLP/HTTP to a collector of the test's own.
//!
//! Its own test binary: the subscriber, with its exporter, is global to the process, and every service started
//! here shares it.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_domain::{EventId, Status};
use herald_e2e::{Herald, Receiver};
use herald_platform::config::LogFormat;
use herald_platform::{telemetry, OtlpConfig, TelemetryConfig};
use herald_test_support::eventually;
use herald_test_support::otlp::{Collector, ExportedSpan, Trace};
use serde_json::json;

/// The client's own trace and span, as its `traceparent` names them.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

// Two workers: flushing waits on a blocking thread for the exporter's task, which runs on the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_event_is_one_trace_from_the_request_to_the_second_attempt() -> Result<()> {
    let collector = Collector::start().await?;
    let config = TelemetryConfig {
        format: LogFormat::Pretty,
        filter: "info".into(),
        shutdown_timeout: Duration::from_secs(30),
        otlp: Some(OtlpConfig::new(collector.endpoint())),
    };
    let telemetry = telemetry::init_with_writer(
        &config,
        "herald-e2e",
        tracing_subscriber::fmt::TestWriter::new,
    );
    ensure!(telemetry.exports(), "the exporter was not installed");

    // base 500 ms: the retry waits the 1 s tier.
    let herald =
        Herald::start("e2e-traces", "[default]\nbase_ms = 500\nmax_attempts = 3\n").await?;
    let receiver = Receiver::start(1, 503).await?;
    let answer = herald
        .http
        .post(format!("{}/event", herald.ingest_url))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({
            "channel": "webhook",
            "payload": {"url": receiver.url, "body": {"invoice": 8}},
        }))
        .send()
        .await?;
    ensure!(answer.status() == 202, "{}", answer.status());
    let answer: serde_json::Value = answer.json().await?;
    let id = EventId::parse(answer["eventId"].as_str().context("eventId")?)?;
    let record = herald
        .wait_for(&id, Status::Delivered, Duration::from_secs(60))
        .await;
    ensure!(record.attempts.len() == 2, "{:?}", record.attempts);

    // Spans are exported once they end: the second attempt's ends after its status is published.
    let trace = eventually(Duration::from_secs(30), "the event's spans", || async {
        telemetry.flush().await;
        let spans = collector.spans()?;
        let trace = Trace::of(&spans, CLIENT_TRACE);
        let missing = missing_hops(&trace, &id);
        if missing.is_empty() {
            Ok((spans, trace))
        } else {
            Err(format!(
                "missing {missing:?}; {} spans in the trace, {} exported",
                trace.spans.len(),
                spans.len()
            ))
        }
    })
    .await;
    let (spans, trace) = trace;

    // One trace: every span about the event is in the client's.
    let elsewhere: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|span| span.attribute("event_id") == Some(id.as_str()))
        .filter(|span| span.trace_id != CLIENT_TRACE)
        .collect();
    ensure!(
        elsewhere.is_empty(),
        "spans of the event in other traces: {elsewhere:#?}"
    );

    // The request continues the client's span; every other span has its parent in the trace.
    let request = only(&trace, "request", |span| {
        span.attribute("path") == Some("/event")
    })?;
    ensure!(request.parent_span_id == CLIENT_SPAN, "{request:?}");
    let orphans: Vec<&ExportedSpan> = trace
        .orphans()
        .into_iter()
        .filter(|span| span.span_id != request.span_id)
        .collect();
    ensure!(
        orphans.is_empty(),
        "spans whose parent is not in the trace: {orphans:#?}"
    );

    // Each hop descends from the one before it: across the lane, the retry requests, the delay tier and the
    // retry lane.
    let of_event = |span: &ExportedSpan| span.attribute("event_id") == Some(id.as_str());
    let accept = only(&trace, "ingest.accept", of_event)?;
    let first = only(&trace, "dispatch.attempt", |s| {
        of_event(s) && s.attribute("attempt") == Some("1")
    })?;
    let schedule = only(&trace, "retry.schedule", of_event)?;
    let release = only(&trace, "retry.release", of_event)?;
    let second = only(&trace, "dispatch.attempt", |s| {
        of_event(s) && s.attribute("attempt") == Some("2")
    })?;
    let chain = [request, accept, first, schedule, release, second];
    for pair in chain.windows(2) {
        ensure!(
            trace.descends_from(pair[1], pair[0]),
            "{} does not descend from {}: {:#?}",
            pair[1].name,
            pair[0].name,
            trace.spans
        );
    }
    // The provider calls, with their channel and provider, in their attempts.
    for (attempt, outcome) in [(first, "failed"), (second, "delivered")] {
        let n = attempt.attribute("attempt").unwrap_or_default();
        let send = only(&trace, "dispatch.send", |s| {
            s.attribute("attempt") == Some(n)
        })?;
        ensure!(
            trace.descends_from(send, attempt),
            "{send:?} is not in {attempt:?}"
        );
        ensure!(send.attribute("channel") == Some("webhook"), "{send:?}");
        ensure!(send.attribute("provider") == Some("webhook"), "{send:?}");
        ensure!(send.attribute("outcome") == Some(outcome), "{send:?}");
    }
    ensure!(accept.service == "herald-e2e", "{accept:?}");

    herald.stop().await?;
    telemetry.shutdown().await;
    Ok(())
}

/// The hops of the event's way that `trace` lacks so far.
fn missing_hops(trace: &Trace, id: &EventId) -> Vec<String> {
    let of_event = |span: &&ExportedSpan| span.attribute("event_id") == Some(id.as_str());
    let mut missing = Vec::new();
    for name in ["ingest.accept", "retry.schedule", "retry.release"] {
        if trace.named(name).filter(of_event).count() == 0 {
            missing.push(name.to_owned());
        }
    }
    for n in ["1", "2"] {
        for name in ["dispatch.attempt", "dispatch.send"] {
            if !trace
                .named(name)
                .filter(of_event)
                .any(|span| span.attribute("attempt") == Some(n))
            {
                missing.push(format!("{name} {n}"));
            }
        }
    }
    if trace.named("request").next().is_none() {
        missing.push("request".to_owned());
    }
    missing
}

/// The one span named `name` that `pick` chooses.
fn only<'a>(
    trace: &'a Trace,
    name: &'a str,
    pick: impl Fn(&ExportedSpan) -> bool,
) -> Result<&'a ExportedSpan> {
    let found: Vec<&ExportedSpan> = trace.named(name).filter(|span| pick(span)).collect();
    ensure!(
        found.len() == 1,
        "{} spans {name} where one was expected: {found:#?}",
        found.len()
    );
    Ok(found[0])
}
