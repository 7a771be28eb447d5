//! While a bench load runs, reads what the console's overview reads, once a second, as an operator's open browser
//! tab would: the overview page and the API routes it is drawn from. Reports, per path, how many reads answered
//! 200 and their latency, so a run shows whether the console stays usable when the store is saturated.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What is read each round, in order.
pub const PATHS: [&str; 4] = ["/console", "/api/stats/minutes", "/api/lanes", "/api/stats"];
/// How long one read may take: the console's own refresh period.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between two rounds.
const EVERY: Duration = Duration::from_secs(1);

/// A probe running in the background until [`Probe::finish`].
#[derive(Debug)]
pub struct Probe {
    stop: oneshot::Sender<()>,
    task: JoinHandle<BTreeMap<&'static str, Vec<Option<Duration>>>>,
}

impl Probe {
    /// Starts reading herald-query at `base` (`http://127.0.0.1:3001`).
    pub fn start(base: String) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(READ_TIMEOUT)
                .build()
                .unwrap_or_default();
            let mut reads: BTreeMap<&'static str, Vec<Option<Duration>>> = BTreeMap::new();
            loop {
                for path in PATHS {
                    let started = Instant::now();
                    let answered = http.get(format!("{base}{path}")).send().await;
                    let ok = match answered {
                        Ok(response) if response.status() == 200 => response.bytes().await.is_ok(),
                        _ => false,
                    };
                    reads
                        .entry(path)
                        .or_default()
                        .push(ok.then(|| started.elapsed()));
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(EVERY) => {}
                }
            }
            reads
        });
        Self { stop, task }
    }

    /// Stops the probe; per path `{"reads", "failed", "p50_ms", "p99_ms", "max_ms"}` (latencies of the reads that
    /// answered 200 within the timeout).
    pub async fn finish(self) -> Value {
        let _ = self.stop.send(());
        let reads = self.task.await.unwrap_or_default();
        let by_path: BTreeMap<&str, Value> = reads
            .into_iter()
            .map(|(path, reads)| (path, summary(&reads)))
            .collect();
        json!(by_path)
    }
}

/// The summary of one path's reads.
fn summary(reads: &[Option<Duration>]) -> Value {
    let mut ms: Vec<f64> = reads
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        (!ms.is_empty()).then(|| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1])
    };
    json!({
        "reads": reads.len(),
        "failed": reads.iter().filter(|r| r.is_none()).count(),
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "max_ms": ms.last(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_counts_failures_and_ranks_the_answers() {
        let reads: Vec<Option<Duration>> = (1..=100)
            .map(|i| (i % 10 != 0).then(|| Duration::from_millis(i)))
            .collect();
        let s = summary(&reads);
        assert_eq!(s["reads"], json!(100));
        assert_eq!(s["failed"], json!(10));
        assert_eq!(s["p50_ms"], json!(49.0));
        assert_eq!(s["max_ms"], json!(99.0));
        assert_eq!(summary(&[None])["p99_ms"], Value::Null);
    }
}
