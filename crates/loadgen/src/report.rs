//! The report of a run: rates, latency percentiles per lane, errors by kind, the ledger, the retry accuracy and
//! the processes' CPU and memory; printed as a table (`Display`) and written as JSON (`Serialize`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::procstat::ProcessUsage;
use crate::sink::SinkCounts;

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub min_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (milliseconds); all zero when there are none.
    pub fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let rank = |q: f64| samples[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
        Self {
            n,
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
            p99_ms: rank(0.99),
            max_ms: samples[n - 1],
            min_ms: samples[0],
            mean_ms: samples.iter().sum::<f64>() / n as f64,
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.n == 0 {
            return write!(f, "{:>8} {:>9} {:>9} {:>9} {:>9}", 0, "-", "-", "-", "-");
        }
        write!(
            f,
            "{:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            self.n, self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Where every accepted event ended up when the run stopped waiting.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ledger {
    /// Events ingest answered 2xx for.
    pub accepted: u64,
    pub delivered: u64,
    pub recorded: u64,
    pub dead_lettered: u64,
    /// Not yet in an end state at the cutoff, by status.
    pub in_flight: BTreeMap<String, u64>,
    /// Accepted, but not in MongoDB at all. Must be zero.
    pub missing: u64,
    /// Webhooks MongoDB says were delivered that the sink never answered 2xx. Must be zero.
    pub delivered_not_received: u64,
    /// In MongoDB with this run's tag although ingest never answered 2xx for them (a request that timed out
    /// on the client after ingest had recorded it). Not counted in `accepted`.
    pub stored_unacknowledged: u64,
    /// Whether accepted = delivered + recorded + dead-lettered + in flight, with nothing missing.
    pub balanced: bool,
}

impl Ledger {
    pub fn n_in_flight(&self) -> u64 {
        self.in_flight.values().sum()
    }
}

/// How late retries ran against the time the retry scheduler set for them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryAccuracy {
    /// Retries scheduled (attempts 2 and later), across all events.
    pub n_scheduled: u64,
    /// Retries whose next attempt started by the cutoff.
    pub n_ran: u64,
    /// Dispatcher start of the attempt minus its scheduled due time (negative would be early).
    pub start_vs_due: Percentiles,
    /// Arrival at the sink minus the scheduled due time (webhooks only).
    pub sink_vs_due: Percentiles,
    /// The delay between the failed attempt and its due time, as scheduled.
    pub scheduled_delay: Percentiles,
}

/// Per lane: how many, how fast ingest answered, how long until delivered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LaneReport {
    pub accepted: u64,
    pub delivered: u64,
    /// `POST` round trip, as the client saw it.
    pub ingest: Percentiles,
    /// From just before the `POST` to the sink's first 2xx (webhooks) or the provider's acceptance as recorded
    /// (email, SMS).
    pub end_to_end: Percentiles,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub run_id: String,
    pub started_at: String,
    pub ingest_url: String,
    pub mix: String,
    pub connections: usize,
    /// Requested rate of the main stream, events/s; 0 means as fast as possible.
    pub rate: f64,
    pub critical_pct: f64,
    /// Rate of the extra critical-only stream, events/s (0: none).
    pub critical_rate: f64,
    /// Seconds of sending.
    pub load_secs: f64,
    /// Seconds spent after sending waiting for events to reach an end state.
    pub drain_secs: f64,
    pub sent: u64,
    pub accepted: u64,
    pub accepted_per_sec: f64,
    /// Deliveries that happened while sending, per second of sending.
    pub delivered_per_sec_during_load: f64,
    /// All deliveries, per second from the first request to the last delivery.
    pub delivered_per_sec_overall: f64,
    pub lanes: BTreeMap<String, LaneReport>,
    /// Accepted events by kind (webhook, email, sms, record, activity).
    pub by_kind: BTreeMap<String, u64>,
    /// Errors by kind: `ingest 503`, `timeout`, `connect`, `sink bad signature`...
    pub errors: BTreeMap<String, u64>,
    pub ledger: Ledger,
    pub retry: Option<RetryAccuracy>,
    pub sink: SinkCounts,
    pub processes: Vec<ProcessUsage>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "herald-loadgen run {} at {} against {}",
            self.run_id, self.started_at, self.ingest_url
        )?;
        let main_stream = if self.connections == 0 {
            "no main stream".to_owned()
        } else {
            format!(
                "mix {}, {} connections, rate {}, critical {}%",
                self.mix,
                self.connections,
                if self.rate > 0.0 {
                    format!("{}/s", self.rate)
                } else {
                    "as fast as possible".into()
                },
                self.critical_pct
            )
        };
        let critical_stream = if self.critical_rate > 0.0 {
            format!(", plus critical webhooks at {}/s", self.critical_rate)
        } else {
            String::new()
        };
        writeln!(f, "{main_stream}{critical_stream}")?;
        writeln!(
            f,
            "sent {} in {:.1} s, accepted {} ({:.1}/s); delivered {:.1}/s while sending, {:.1}/s overall; drained for {:.1} s",
            self.sent,
            self.load_secs,
            self.accepted,
            self.accepted_per_sec,
            self.delivered_per_sec_during_load,
            self.delivered_per_sec_overall,
            self.drain_secs
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<10} {:<12} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "lane", "latency", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"
        )?;
        for (lane, report) in &self.lanes {
            writeln!(f, "{lane:<10} {:<12} {}", "ingest", report.ingest)?;
            writeln!(f, "{lane:<10} {:<12} {}", "end-to-end", report.end_to_end)?;
        }
        if let Some(retry) = &self.retry {
            writeln!(f)?;
            writeln!(
                f,
                "retries: {} scheduled, {} ran by the cutoff",
                retry.n_scheduled, retry.n_ran
            )?;
            writeln!(f, "{:<23} {}", "  scheduled delay", retry.scheduled_delay)?;
            writeln!(f, "{:<23} {}", "  start - due", retry.start_vs_due)?;
            writeln!(f, "{:<23} {}", "  sink arrival - due", retry.sink_vs_due)?;
            writeln!(
                f,
                "  (earliest start - due: {:.1} ms; negative would be early)",
                retry.start_vs_due.min_ms
            )?;
        }
        writeln!(f)?;
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(f, "accepted by kind: {}", kinds.join(", "))?;
        if self.errors.is_empty() {
            writeln!(f, "errors: none")?;
        } else {
            writeln!(f, "errors:")?;
            for (kind, n) in &self.errors {
                writeln!(f, "  {kind:<40} {n}")?;
            }
        }
        writeln!(
            f,
            "sink: {} requests, {} answered 2xx, {} events delivered more than once, {} bad signatures",
            self.sink.n_requests,
            self.sink.n_accepted,
            self.sink.n_duplicate_deliveries,
            self.sink.n_bad_signature
        )?;
        if !self.processes.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<22} {:>8} {:>8} {:>12} {:>12}",
                "process", "pid", "cpu %", "rss max MiB", "rss end MiB"
            )?;
            for p in &self.processes {
                writeln!(
                    f,
                    "{:<22} {:>8} {:>8.1} {:>12.1} {:>12.1}",
                    p.name, p.pid, p.cpu_pct, p.rss_max_mib, p.rss_end_mib
                )?;
            }
        }
        writeln!(f)?;
        let l = &self.ledger;
        let in_flight: Vec<String> = l
            .in_flight
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(
            f,
            "ledger: accepted {} = delivered {} + recorded {} + dead-lettered {} + in flight {}{}; missing {}, delivered but not received {}, stored but unacknowledged {}",
            l.accepted,
            l.delivered,
            l.recorded,
            l.dead_lettered,
            l.n_in_flight(),
            if in_flight.is_empty() {
                String::new()
            } else {
                format!(" ({})", in_flight.join(", "))
            },
            l.missing,
            l.delivered_not_received,
            l.stored_unacknowledged
        )?;
        if l.balanced {
            writeln!(f, "LEDGER BALANCES: nothing lost")
        } else {
            writeln!(
                f,
                "!!!!!!!! LEDGER DOES NOT BALANCE: {} accepted events missing, {} delivered webhooks never received !!!!!!!!",
                l.missing, l.delivered_not_received
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (p.n, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(vec![]).n, 0);
    }
}
