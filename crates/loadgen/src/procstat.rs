//! CPU and memory of Herald's processes during a run, read from `/proc/<pid>/stat` and `/proc/<pid>/status`.
//!
//! The processes are named by the pid files the dev stack writes (`.stack/pids/<name>.pid`, see
//! `xtask/src/procs.rs`); the load generator itself is always included.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Clock ticks per second of `/proc/<pid>/stat` times: 100 on every Linux this runs on (`getconf CLK_TCK`).
const TICKS_PER_SEC: f64 = 100.0;

/// One process's use of the machine over the run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUsage {
    pub name: String,
    pub pid: u32,
    /// Average CPU over the run of the process and its children, in percent of one core (200 is both cores of a
    /// 2-core machine).
    pub cpu_pct: f64,
    /// Resident memory of the process itself (not its children, which share much of it): the largest sample and
    /// the last one, in MiB.
    pub rss_max_mib: f64,
    pub rss_end_mib: f64,
}

#[derive(Debug, Clone)]
struct Tracked {
    name: String,
    pid: u32,
    /// CPU ticks of the process and of each of its children, first and last seen: PostgreSQL does its work in
    /// one child process per connection, which the postmaster's own times do not include.
    ticks: HashMap<u32, (u64, u64)>,
    rss_max_kib: u64,
    rss_last_kib: u64,
}

/// Samples the processes once a second until stopped.
#[derive(Debug)]
pub struct Sampler {
    task: JoinHandle<Vec<Tracked>>,
    stop: tokio::sync::oneshot::Sender<()>,
    started: Instant,
}

/// The parent pid and `utime + stime` (in ticks) of `pid`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the fields start at 3 (state); ppid is 4, utime 14 and stime 15.
    let ppid: u32 = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `utime + stime` of `pid`, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, ticks)| ticks)
}

/// Every process's parent and CPU ticks.
fn all_processes() -> Vec<(u32, u32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| stat(pid).map(|(ppid, ticks)| (pid, ppid, ticks)))
        .collect()
}

/// `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The live processes named by `<dir>/*.pid`, by name.
pub fn processes_in(dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, u32)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            if path.extension()? != "pid" {
                return None;
            }
            let name = path.file_stem()?.to_string_lossy().into_owned();
            let pid: u32 = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
            cpu_ticks(pid).map(|_| (name, pid))
        })
        .collect();
    found.sort();
    found
}

fn sample(tracked: &mut [Tracked]) {
    let all = all_processes();
    for t in tracked {
        for &(pid, ppid, ticks) in &all {
            if pid == t.pid || ppid == t.pid {
                t.ticks
                    .entry(pid)
                    .and_modify(|(_, last)| *last = ticks)
                    .or_insert((ticks, ticks));
            }
        }
        if let Some(rss) = rss_kib(t.pid) {
            t.rss_max_kib = t.rss_max_kib.max(rss);
            t.rss_last_kib = rss;
        }
    }
}

impl Sampler {
    /// Starts sampling `processes` and this process.
    pub fn start(processes: Vec<(String, u32)>) -> Self {
        let mut tracked: Vec<Tracked> = processes
            .into_iter()
            .chain([("herald-loadgen".to_owned(), std::process::id())])
            .map(|(name, pid)| Tracked {
                name,
                pid,
                ticks: HashMap::new(),
                rss_max_kib: 0,
                rss_last_kib: 0,
            })
            .collect();
        sample(&mut tracked);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticker.tick() => sample(&mut tracked),
                }
            }
            sample(&mut tracked);
            tracked
        });
        Self {
            task,
            stop,
            started: Instant::now(),
        }
    }

    /// Stops sampling; the usage of each process over the time sampled.
    pub async fn finish(self) -> Vec<ProcessUsage> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-3);
        let _ = self.stop.send(());
        let tracked = self.task.await.unwrap_or_default();
        let mut by_name: BTreeMap<String, ProcessUsage> = BTreeMap::new();
        for t in tracked {
            let ticks: u64 = t
                .ticks
                .values()
                .map(|(first, last)| last.saturating_sub(*first))
                .sum();
            by_name.insert(
                t.name.clone(),
                ProcessUsage {
                    name: t.name,
                    pid: t.pid,
                    cpu_pct: ticks as f64 / TICKS_PER_SEC / wall * 100.0,
                    rss_max_mib: t.rss_max_kib as f64 / 1024.0,
                    rss_end_mib: t.rss_last_kib as f64 / 1024.0,
                },
            );
        }
        by_name.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
    }
}
