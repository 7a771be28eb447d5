//! docker-compose.yml's Herald services, run without Docker.
//!
//! No Docker engine here, so the image cannot be built nor the compose stack started. What can run is everything
//! the compose file says about each Herald service but the container itself: its command, through the image's
//! entrypoint (`docker/herald`), with the environment compose gives it (interpolated from .env.example by
//! compose-go, as `docker compose up` would after `cp .env.example .env`), health-checked with the compose
//! healthcheck, then stopped with SIGTERM inside its `stop_grace_period`.
//!
//! Only what a container would have differently is rewritten: host names (`kafka`, `mongo`, `mailpit`) become the
//! test stack's addresses, `0.0.0.0` becomes `127.0.0.1`, each listen port a free one (every container has its
//! own network; here they share one), and the topic prefix and database are the test's own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use herald_domain::EventId;
use herald_e2e::Receiver;
use herald_test_support::{eventually, stack, TestContext};
use serde_json::{json, Value};

use super::{compose_services, repo_root, strings};

/// The demo key of .env.example (`HERALD_API_KEYS`), which has every scope.
const DEMO_KEY: &str = "herald-demo-key-change-me";

/// One compose service started as a process.
struct Service {
    name: String,
    port: u16,
    healthcheck: Vec<String>,
    grace: Duration,
    log: PathBuf,
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// Where `cargo test --workspace` put the service binaries: next to this test's own `deps/` folder.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>")
        .to_path_buf();
    for service in super::image_services() {
        let bin = dir.join(format!("herald-{service}"));
        assert!(
            bin.exists(),
            "{} is missing: `cargo xtask test` builds every binary first (or run `cargo build --bins`)",
            bin.display()
        );
    }
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The service's compose environment with what only a container has rewritten; returns it and its listen port.
fn native_env(name: &str, service: &Value, ctx: &TestContext) -> (BTreeMap<String, String>, u16) {
    let stack = stack();
    let port = free_port();
    // A path inside the container that a volume mounts is, here, the volume's source on the host.
    let mounts: BTreeMap<String, String> = service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v["target"].as_str()?.to_owned(),
                v["source"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let mut env = BTreeMap::new();
    for (key, value) in service["environment"]
        .as_object()
        .unwrap_or_else(|| panic!("{name} has an environment"))
    {
        let value = value.as_str().unwrap_or_default().to_owned();
        let native = match key.as_str() {
            "KAFKA_BROKERS" => stack.kafka_brokers.clone(),
            "MONGODB_URI" => stack.mongodb_uri.clone(),
            "MONGODB_DATABASE" => ctx.mongo.database.clone(),
            "HERALD_TOPIC_PREFIX" => ctx.topics.prefix().to_owned(),
            "HERALD_SMTP_HOST" => stack.smtp_host.clone(),
            "HERALD_SMTP_PORT" => stack.smtp_port.to_string(),
            "RUST_LOG" => "warn,herald=info".to_owned(),
            k if k.starts_with("HERALD_") && k.ends_with("_HOST") => {
                assert_eq!(value, "0.0.0.0", "{name}: {k}");
                "127.0.0.1".to_owned()
            }
            k if k.starts_with("HERALD_") && k.ends_with("_PORT") => port.to_string(),
            _ => mounts.get(&value).cloned().unwrap_or(value),
        };
        env.insert(key.clone(), native);
    }
    (env, port)
}

/// Where the services' logs go: a folder per test run, removed when the test passes.
fn log_dir(ctx: &TestContext) -> PathBuf {
    std::env::temp_dir().join(ctx.topics.prefix().trim_end_matches('.'))
}

fn start(name: &str, service: &Value, ctx: &TestContext, bin_dir: &PathBuf) -> Service {
    let (env, port) = native_env(name, service, ctx);
    let log = log_dir(ctx).join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let command = strings(&service["command"]);
    let child = Command::new("bash")
        .arg(repo_root().join("docker/herald"))
        .args(&command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HERALD_BIN_DIR", bin_dir)
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().expect("log file")))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    // The compose healthcheck, on the port this process got.
    let mut healthcheck = strings(&service["healthcheck"]["test"]);
    assert_eq!(
        healthcheck.first().map(String::as_str),
        Some("CMD"),
        "{name}"
    );
    assert_eq!(
        healthcheck.get(1).map(String::as_str),
        Some("herald"),
        "{name}"
    );
    healthcheck.drain(..2);
    let grace: u64 = service["stop_grace_period"]
        .as_str()
        .and_then(|g| g.strip_suffix('s'))
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("{name}: stop_grace_period"));
    Service {
        name: name.to_owned(),
        port,
        healthcheck,
        grace: Duration::from_secs(grace),
        log,
        child,
    }
}

/// Runs the compose healthcheck (`herald healthcheck <port> [path]`) on the native port.
fn healthy(service: &mut Service, path: Option<&str>) -> Result<(), String> {
    if let Ok(Some(status)) = service.child.try_wait() {
        panic!(
            "{} exited ({status}) before it was healthy:\n{}",
            service.name,
            service.log_tail()
        );
    }
    let mut args: Vec<String> = service.healthcheck.clone();
    // `healthcheck <compose port> [path]`: the port is this process's.
    if let Some(port) = args.get_mut(1) {
        *port = service.port.to_string();
    }
    if let Some(path) = path {
        args.truncate(2);
        args.push(path.to_owned());
    }
    let output = Command::new("bash")
        .arg(repo_root().join("docker/herald"))
        .args(&args)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_services_run_natively_and_deliver_retry_and_answer_with_the_demo_key() {
    let bin_dir = bin_dir();
    let ctx = TestContext::new("compose").await.expect("test context");
    std::fs::create_dir_all(log_dir(&ctx)).expect("log folder");
    let mut services: Vec<Service> = compose_services()
        .iter()
        .filter(|(_, s)| s["image"] == "herald:local")
        .map(|(name, s)| start(name, s, &ctx, &bin_dir))
        .collect();
    assert_eq!(
        services.len(),
        9,
        "every Herald service of the compose stack"
    );

    // Healthy by the compose healthcheck (`/api/health`), then ready (Kafka and MongoDB reached).
    for service in &mut services {
        let name = service.name.clone();
        for path in [None, Some("/api/ready")] {
            eventually(
                Duration::from_secs(120),
                &format!("{name} to pass `herald healthcheck` {path:?}"),
                || {
                    let answer = healthy(service, path);
                    async move { answer }
                },
            )
            .await;
        }
    }
    let url = |name: &str, path: &str| {
        let service = services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("compose service {name}"));
        format!("http://127.0.0.1:{}{path}", service.port)
    };
    let http = reqwest::Client::new();

    // Auth is on, as .env.example has it: no key 401, the demo key 202.
    let receiver = Receiver::start(1, 503).await.expect("receiver");
    let event = |priority: &str| {
        json!({
            "channel": "webhook",
            "priority": priority,
            "payload": {"url": receiver.url, "body": {"from": "compose"}},
        })
    };
    let refused = http
        .post(url("ingest", "/event"))
        .json(&event("critical"))
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(refused.status(), 401);
    let mut ids = Vec::new();
    for priority in ["critical", "default"] {
        let answer = http
            .post(url("ingest", "/event"))
            .header("x-api-key", DEMO_KEY)
            .json(&event(priority))
            .send()
            .await
            .expect("ingest answers");
        assert_eq!(answer.status(), 202, "{priority}");
        let body: Value = answer.json().await.expect("json");
        ids.push(body["eventId"].as_str().expect("eventId").to_owned());
    }

    // Each event fails once (503), goes through herald-retry's first delay tier and the retry lane, and is
    // delivered; herald-query shows it with both attempts.
    for id in &ids {
        let detail = eventually(
            Duration::from_secs(90),
            &format!("{id} to be DELIVERED in herald-query"),
            || {
                let request = http
                    .get(url("query", &format!("/api/logs/{id}")))
                    .header("authorization", format!("Bearer {DEMO_KEY}"))
                    .send();
                async move {
                    let answer = request.await.map_err(|e| e.to_string())?;
                    let body: Value = answer.json().await.map_err(|e| e.to_string())?;
                    if body["status"] == "DELIVERED" {
                        Ok(body)
                    } else {
                        Err(body.to_string())
                    }
                }
            },
        )
        .await;
        assert_eq!(
            detail["attempts"].as_array().map(Vec::len),
            Some(2),
            "{detail}"
        );
        let id = EventId::parse(id).expect("event id");
        assert_eq!(receiver.hits(&id).len(), 2, "{id}");
    }

    // The templates compose mounts into ingest (docker/templates by default) fill in a message from its data.
    let answer = http
        .post(url("ingest", "/event"))
        .header("x-api-key", DEMO_KEY)
        .json(&json!({
            "eventType": "order.shipped", "channel": "email", "metadata": {"locale": "fr"},
            "payload": {"to": "ada@example.com", "data": {"order": {"id": "A-7"}}},
        }))
        .send()
        .await
        .expect("ingest answers");
    assert_eq!(answer.status(), 202);
    let body: Value = answer.json().await.expect("json");
    let id = body["eventId"].as_str().expect("eventId").to_owned();
    let detail: Value = http
        .get(url("query", &format!("/api/logs/{id}")))
        .header("authorization", format!("Bearer {DEMO_KEY}"))
        .send()
        .await
        .expect("query answers")
        .json()
        .await
        .expect("json");
    assert_eq!(
        detail["payload"]["subject"], "Votre commande A-7 est partie",
        "{detail}"
    );

    // herald-replay takes the demo key too (a dry run: nothing is dead-lettered).
    let replay = http
        .post(url("replay", "/replay-dead-letter"))
        .header("x-api-key", DEMO_KEY)
        .json(&json!({"dryRun": true}))
        .send()
        .await
        .expect("replay answers");
    assert_eq!(replay.status(), 200);

    // `docker compose stop`: SIGTERM, and each exits 0 within its stop_grace_period.
    for service in &services {
        let pid = service.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "SIGTERM to {}",
            service.name
        );
    }
    for service in &mut services {
        let (name, grace) = (service.name.clone(), service.grace);
        let status = eventually(
            grace,
            &format!("{name} to exit within its stop_grace_period after SIGTERM"),
            || {
                let exited = match service.child.try_wait() {
                    Ok(Some(status)) => Ok(status),
                    Ok(None) => Err("still running".to_owned()),
                    Err(e) => Err(e.to_string()),
                };
                async move { exited }
            },
        )
        .await;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM:\n{}",
            service.name,
            service.log_tail()
        );
    }
    drop(services);
    std::fs::remove_dir_all(log_dir(&ctx)).expect("removing the logs");
}
