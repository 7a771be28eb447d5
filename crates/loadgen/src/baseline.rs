//! The MongoDB-wire server's own insert rate, without Herald: documents shaped like Herald's event records,
//! inserted one at a time over N concurrent connections (as ingest writes them) and in batches of 1,000 (as a
//! bulk seed does). Herald's accepted rate reads as a fraction of this.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use herald_platform::MongoConfig;
use mongodb::bson::{doc, Document};
use serde::Serialize;

/// Options of `herald-loadgen mongo-baseline`.
#[derive(Debug, Clone, Parser)]
pub struct MongoBaselineConfig {
    #[arg(long, env = "MONGODB_URI", default_value = "mongodb://127.0.0.1:27017")]
    pub mongodb_uri: String,
    /// A scratch database, dropped before and after.
    #[arg(long, default_value = "herald_bench_baseline")]
    pub database: String,
    /// Documents inserted one at a time.
    #[arg(long, default_value_t = 20_000)]
    pub n_single: u64,
    /// Documents inserted in batches of 1,000.
    #[arg(long, default_value_t = 100_000)]
    pub n_batched: u64,
    /// Concurrent connections of the one-at-a-time part.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// Inserts per second, each way.
#[derive(Debug, Clone, Serialize)]
pub struct MongoBaseline {
    pub n_single: u64,
    pub single_per_sec: f64,
    pub connections: usize,
    pub n_batched: u64,
    pub batched_per_sec: f64,
}

impl std::fmt::Display for MongoBaseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "MongoDB-wire insert_one: {} documents over {} connections, {:.0} documents/s",
            self.n_single, self.connections, self.single_per_sec
        )?;
        write!(
            f,
            "MongoDB-wire insert_many (batches of 1,000): {} documents, {:.0} documents/s",
            self.n_batched, self.batched_per_sec
        )
    }
}

/// A document about the size and shape of a stored event (about 600 bytes).
fn document(i: u64) -> Document {
    let now = mongodb::bson::DateTime::now();
    doc! {
        "eventId": format!("baseline-{i:010}"),
        "userId": format!("user-{}", i % 1_000),
        "eventType": "order.shipped",
        "channel": "webhook",
        "priority": "default",
        "payload": {"url": "http://127.0.0.1:9/hook", "body": {"orderId": i as i64, "note": "x".repeat(200)}},
        "metadata": {"source": "baseline"},
        "status": "PENDING",
        "attemptCount": 0,
        "createdAt": now,
        "updatedAt": now,
    }
}

/// Runs both parts on a scratch database and drops it.
pub async fn mongo_baseline(config: &MongoBaselineConfig) -> Result<MongoBaseline> {
    let db = herald_platform::mongo::connect(
        &MongoConfig::new(config.mongodb_uri.clone(), config.database.clone()),
        "herald-loadgen-baseline",
    )
    .await?;
    db.drop().await?;
    let single = db.collection::<Document>("single");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..config.connections.max(1) {
        let (single, next, n) = (single.clone(), next.clone(), config.n_single);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, mongodb::error::Error>(());
                }
                single.insert_one(document(i)).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let single_secs = started.elapsed().as_secs_f64().max(1e-3);

    let batched = db.collection::<Document>("batched");
    let started = Instant::now();
    let mut i = 0;
    while i < config.n_batched {
        let end = (i + 1_000).min(config.n_batched);
        batched
            .insert_many((i..end).map(document).collect::<Vec<_>>())
            .await?;
        i = end;
    }
    let batched_secs = started.elapsed().as_secs_f64().max(1e-3);
    // Leave nothing behind; a failed drop only leaves a scratch database.
    let _ = tokio::time::timeout(Duration::from_secs(60), db.drop()).await;
    Ok(MongoBaseline {
        n_single: config.n_single,
        single_per_sec: config.n_single as f64 / single_secs,
        connections: config.connections,
        n_batched: config.n_batched,
        batched_per_sec: config.n_batched as f64 / batched_secs,
    })
}
