//! `cargo xtask stack up` on a stack of the test's own: state in a temporary folder of mode 700 (which the
//! `postgres` user cannot enter when this runs as root), every port a free one, so the shared stack on the default
//! ports is never touched.
//!
//! The SMTP sink's port is held by the test, so `up` fails at the last part, after starting Kafka, PostgreSQL and
//! FerretDB: FerretDB only starts once PostgreSQL accepts connections and has its indexes, so getting that far shows
//! PostgreSQL initialised and ran from such a folder, and the failure must then stop those three.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

fn xtask(state: &Path, ports: &[(&str, u16)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("HERALD_STACK_DIR", state)
        .env("HERALD_KAFKA_HEAP", "512m")
        .envs(ports.iter().map(|(k, v)| (*k, v.to_string())))
        .output()
        .expect("running xtask")
}

/// The pids `up` printed as started ("kafka      started (pid 123), log ...").
fn started_pids(stderr: &str) -> Vec<(String, u32)> {
    stderr
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(" started (pid ")?;
            let pid = rest.split_once(')')?.0.parse().ok()?;
            Some((name.trim().to_owned(), pid))
        })
        .collect()
}

#[test]
fn a_failed_up_from_a_private_folder_stops_what_it_started() {
    let root = tempfile::tempdir().expect("a temporary folder");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod 700");
    let state = root.path().join(".stack");
    let smtp = TcpListener::bind("127.0.0.1:0").expect("hold a port for the SMTP sink");
    let smtp_port = smtp.local_addr().expect("its address").port();
    let ports = [
        ("HERALD_KAFKA_PORT", free_port()),
        ("HERALD_KAFKA_CONTROLLER_PORT", free_port()),
        ("HERALD_MONGO_PORT", free_port()),
        ("HERALD_POSTGRES_PORT", free_port()),
        ("HERALD_FERRETDB_DEBUG_PORT", free_port()),
        ("HERALD_SMTP_PORT", smtp_port),
        ("HERALD_SMTP_HTTP_PORT", free_port()),
    ];

    // Whatever the assertions find, the test's stack is stopped and its data (also PostgreSQL's, wherever it
    // went) deleted at the end.
    let _down = Down {
        state: &state,
        ports: &ports,
    };
    let up = xtask(&state, &ports, &["stack", "up"]);
    let stderr = String::from_utf8_lossy(&up.stderr).into_owned();
    let started = started_pids(&stderr);
    let names: Vec<&str> = started.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names == ["kafka", "postgres", "ferretdb"] && !up.status.success(),
        "expected kafka, postgres and ferretdb started, then a failure at the SMTP port:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("port {smtp_port} for smtp-sink is taken")),
        "{stderr}"
    );
    // Each was stopped before `up` returned: no pid left alive, no port answering.
    for (name, pid) in &started {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            cmdline.is_empty(),
            "{name} (pid {pid}) still runs after the failed up:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("{name:<10} stopped (pid {pid})")),
            "{stderr}"
        );
    }
    for (key, port) in &ports[..5] {
        assert!(!answers(*port), "{key} {port} still answers:\n{stderr}");
    }
}

struct Down<'a> {
    state: &'a Path,
    ports: &'a [(&'a str, u16)],
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let down = xtask(self.state, self.ports, &["stack", "down", "--wipe"]);
        assert!(down.status.success(), "stack down --wipe: {down:?}");
    }
}
