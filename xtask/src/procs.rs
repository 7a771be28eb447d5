//! Detached processes tracked by pid files: how the stack and the services are started, found and stopped.
//!
//! A pid is trusted only while `/proc/<pid>/cmdline` still contains the process's marker, so a stop never
//! signals a pid the system has since given to something else.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The pid and log files under one state folder.
#[derive(Debug, Clone)]
pub struct Procs {
    state: PathBuf,
}

impl Procs {
    pub fn new(state: PathBuf) -> Self {
        Self { state }
    }

    pub fn log_dir(&self) -> PathBuf {
        self.state.join("logs")
    }

    pub fn log_file(&self, name: &str) -> PathBuf {
        self.log_dir().join(format!("{name}.log"))
    }

    fn pid_file(&self, name: &str) -> PathBuf {
        self.state.join("pids").join(format!("{name}.pid"))
    }

    /// The recorded pid of `name`, if that process is alive and its command line still contains `marker`.
    pub fn running_pid(&self, name: &str, marker: &str) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.pid_file(name))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        // A zombie has an empty command line: it is not running.
        String::from_utf8_lossy(&cmdline)
            .contains(marker)
            .then_some(pid)
    }

    /// Starts `cmd` detached (its own process group, so a Ctrl-C in this terminal does not reach it), output
    /// appended to `name`'s log, and records its pid.
    pub fn spawn(&self, name: &str, mut cmd: Command) -> Result<u32> {
        fs::create_dir_all(self.log_dir())?;
        fs::create_dir_all(self.state.join("pids"))?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(name))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        fs::write(self.pid_file(name), child.id().to_string())?;
        Ok(child.id())
    }

    /// SIGTERM, then SIGKILL after `grace`; forgets the pid. Returns the pid it stopped, if any.
    pub fn stop(&self, name: &str, marker: &str, grace: Duration) -> Result<Option<u32>> {
        let stopped = match self.running_pid(name, marker) {
            Some(pid) => {
                signal(pid, "TERM")?;
                let deadline = Instant::now() + grace;
                while self.running_pid(name, marker).is_some() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if self.running_pid(name, marker).is_some() {
                    signal(pid, "KILL")?;
                }
                Some(pid)
            }
            None => None,
        };
        let _ = fs::remove_file(self.pid_file(name));
        Ok(stopped)
    }

    /// Stops `pid`, a child this process spawned and has not waited for (so the pid is still its own, whatever
    /// its command line shows): SIGTERM, then SIGKILL after `grace`; waits until it has exited (a zombie
    /// counts as exited) and forgets `name`'s pid file.
    pub fn stop_child(&self, name: &str, pid: u32, grace: Duration) -> Result<()> {
        // Its state, not its command line: an exec'ing process shows an empty command line for a moment after its
        // parent's spawn returned (seen in CI with FerretDB), as a zombie does.
        let exited = || {
            fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                stat.rsplit_once(')')
                    .is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            })
        };
        if !exited() {
            signal(pid, "TERM")?;
        }
        let deadline = Instant::now() + grace;
        while !exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !exited() {
            signal(pid, "KILL")?;
            gone_after_kill(name, pid, exited)?;
        }
        let _ = fs::remove_file(self.pid_file(name));
        Ok(())
    }
}

impl Procs {
    /// SIGKILL, as a crash: no chance to finish work in flight or store offsets. Waits (at most 10 s) until the
    /// process is gone and forgets its pid. Returns the pid it killed, if `name` was running.
    pub fn kill(&self, name: &str, marker: &str) -> Result<Option<u32>> {
        let Some(pid) = self.running_pid(name, marker) else {
            return Ok(None);
        };
        signal(pid, "KILL")?;
        gone_after_kill(name, pid, || self.running_pid(name, marker).is_none())?;
        let _ = fs::remove_file(self.pid_file(name));
        Ok(Some(pid))
    }
}

/// Waits (at most 10 s) until `gone` says the SIGKILLed `pid` is gone.
fn gone_after_kill(name: &str, pid: u32, gone: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone() {
        if Instant::now() >= deadline {
            bail!("{name} (pid {pid}) still runs 10 s after SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}
