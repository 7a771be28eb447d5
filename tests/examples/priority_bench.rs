//! A measurement, not a test: against a running Herald (`cargo xtask up --release`), how many events a second
//! ingest accepts, and the end-to-end latency of critical events while the default lane holds a backlog,
//! against the same with the lanes idle.
//!
//! `cargo run --release -p herald-e2e --example priority_bench -- [ingest-url] [backlog] [accept-secs]`
//!
//! Events are webhooks to a receiver this program runs on 127.0.0.1; latency is from just before the POST to the
//! receiver's first hit for the event id.

#![allow(clippy::print_stdout)] // a benchmark program: printing its numbers is its job

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use serde_json::json;

type Hits = Arc<Mutex<HashMap<String, Instant>>>;

async fn receiver() -> Result<(String, Hits)> {
    let hits: Hits = Arc::default();
    let recorded = hits.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let hits = recorded.clone();
            async move {
                if let Some(id) = headers.get("herald-event-id").and_then(|v| v.to_str().ok()) {
                    hits.lock()
                        .expect("lock")
                        .entry(id.to_owned())
                        .or_insert_with(Instant::now);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, hits))
}

async fn post_event(
    client: &reqwest::Client,
    ingest: &str,
    hook: &str,
    priority: &str,
) -> Result<String> {
    let answer: serde_json::Value = client
        .post(format!("{ingest}/event"))
        .json(
            &json!({"channel": "webhook", "priority": priority, "eventType": "bench",
                      "payload": {"url": hook, "body": {"bench": true}}}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(answer["eventId"].as_str().context("eventId")?.to_owned())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Sends `n` critical events at `per_sec` and returns their end-to-end latencies in ms, sorted.
async fn critical_latencies(
    client: &reqwest::Client,
    ingest: &str,
    hook: &str,
    hits: &Hits,
    n: usize,
    per_sec: f64,
) -> Result<Vec<f64>> {
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(n);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
    for _ in 0..n {
        ticker.tick().await;
        let at = Instant::now();
        sent.push((post_event(client, ingest, hook, "critical").await?, at));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let h = hits.lock().expect("lock");
            sent.iter().all(|(id, _)| h.contains_key(id))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h = hits.lock().expect("lock");
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            h.get(id)
                .map(|got| got.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    anyhow::ensure!(
        latencies.len() == n,
        "{} of {n} critical events arrived within 120 s",
        latencies.len()
    );
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let ingest = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:3000".into());
    let backlog: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let accept_secs: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let (hook, hits) = receiver().await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;

    // 1. Critical latency, lanes idle.
    let idle = critical_latencies(&client, &ingest, &hook, &hits, 100, 10.0).await?;

    // 2. Accepted per second: 32 connections posting default-lane events as fast as ingest takes them; these
    //    also become the default lane's backlog.
    let accepted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (client, ingest, hook, accepted) = (
            client.clone(),
            ingest.clone(),
            hook.clone(),
            accepted.clone(),
        );
        workers.push(tokio::spawn(async move {
            while started.elapsed() < Duration::from_secs(accept_secs)
                && accepted.load(Ordering::Relaxed) < backlog
            {
                if post_event(&client, &ingest, &hook, "default").await.is_ok() {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let n_accepted = accepted.load(Ordering::Relaxed);
    let accept_rate = n_accepted as f64 / started.elapsed().as_secs_f64();
    let delivered_default = hits.lock().expect("lock").len().saturating_sub(100);

    // 3. Critical latency while the default lane works through what was just accepted.
    let busy = critical_latencies(&client, &ingest, &hook, &hits, 100, 10.0).await?;
    let backlog_left =
        n_accepted.saturating_sub(hits.lock().expect("lock").len().saturating_sub(200));

    println!("accepted: {n_accepted} default-lane events in {:.1} s = {accept_rate:.0} events/s (32 connections)", started.elapsed().as_secs_f64());
    println!("default lane delivered during the accept phase: {delivered_default}; still queued after the busy phase: {backlog_left}");
    for (name, l) in [("idle", &idle), ("default backlog", &busy)] {
        println!(
            "critical end-to-end latency, {name}: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms (n={})",
            percentile(l, 0.5), percentile(l, 0.95), percentile(l, 0.99), percentile(l, 1.0), l.len()
        );
    }
    Ok(())
}
