//! The deployment files (Dockerfile, docker-compose.yml, .env.example, k8s/), checked without a Docker engine or a
//! cluster, which this project's machines do not have.
//!
//! Two layers:
//! - `tools/validate-deploy`, a small Go program on the libraries the real tools use: BuildKit's Dockerfile
//!   parser and linter, compose-go (what `docker compose` loads files with: schema, interpolation, consistency)
//!   and k8s.io/api with apimachinery's strict decoding (what the API server would reject as unknown or malformed
//!   fields). It prints the normalised compose project and every Kubernetes object as JSON.
//! - the tests below, on that JSON and on the files themselves: Herald's own rules (every service has a
//!   healthcheck and a restart policy, the topic lists equal `Topics::all`, every variable the code reads is in
//!   .env.example and the other way round, probes and resources on every Deployment, an HPA per dispatcher lane).
//!
//! How the validator gets built, here and in CI: `go build` once into `<cache>/bin/validate-deploy-<hash of its
//! sources>` (`HERALD_CACHE_DIR`, else `~/.cache/herald`, like the native stack's downloads), so later runs only
//! execute it. Its modules come through the Go module proxy (`GOPROXY`'s default) into Go's module cache,
//! `~/go/pkg/mod`, which persists on the machine like `~/.cache`: a fresh clone with a warm cache downloads
//! nothing. `-mod=readonly`: go.sum is committed and complete, and a test must not rewrite it.

#[path = "deploy/compose_native.rs"]
mod compose_native;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use herald_domain::{Lane, Topics, DEFAULT_DELAY_TIERS_SECS};
use serde_json::Value;

/// From the `CARGO_MANIFEST_DIR` cargo sets at run time: the one baked in at build time can name another clone
/// that shares the target directory (see `xtask::paths::repo_root`).
fn repo_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .parent()
        .expect("xtask sits in the repository root")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Where `cargo xtask stack` caches downloads and builds (`xtask/src/paths.rs`).
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HERALD_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("herald");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("herald")
}

/// The validator binary, built once per version of its sources.
fn validator() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let source = repo_root().join("tools/validate-deploy");
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for file in ["go.mod", "go.sum", "main.go"] {
            file.hash(&mut hasher);
            read(&format!("tools/validate-deploy/{file}")).hash(&mut hasher);
        }
        let bin_dir = cache_dir().join("bin");
        let binary = bin_dir.join(format!("validate-deploy-{:016x}", hasher.finish()));
        if binary.exists() {
            return binary;
        }
        std::fs::create_dir_all(&bin_dir).expect("creating the cache's bin directory");
        // Built beside its final name and renamed, so a concurrent run never executes half a binary.
        let partial = bin_dir.join(format!(
            "{}.{}.partial",
            binary
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("validate-deploy"),
            std::process::id()
        ));
        eprintln!("building tools/validate-deploy with go (once per version of its sources)");
        let output = Command::new("go")
            .args(["build", "-o"])
            .arg(&partial)
            .arg(".")
            .current_dir(&source)
            .env("GOFLAGS", "-mod=readonly -buildvcs=false")
            .output()
            .expect("running `go build` for tools/validate-deploy (is Go installed?)");
        assert!(
            output.status.success(),
            "`go build` of tools/validate-deploy failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::rename(&partial, &binary).expect("moving the validator into place");
        // Builds of older sources are of no further use.
        for entry in std::fs::read_dir(&bin_dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let stale = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("validate-deploy-") && !n.contains(".partial"));
            if stale && path != binary {
                let _ = std::fs::remove_file(path);
            }
        }
        binary
    })
}

/// Runs the validator on a directory holding the Dockerfile, docker-compose.yml, .env.example and k8s/.
fn run_validator(root: &Path) -> std::process::Output {
    Command::new(validator())
        .arg("-root")
        .arg(root)
        .output()
        .expect("running the validator")
}

/// The validator's summary of this repository's files: `{"compose": project, "k8s": [objects]}`.
fn summary() -> &'static Value {
    static SUMMARY: OnceLock<Value> = OnceLock::new();
    SUMMARY.get_or_init(|| {
        let output = run_validator(&repo_root());
        assert!(
            output.status.success(),
            "tools/validate-deploy rejected the deployment files:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("the validator prints JSON")
    })
}

fn compose_services() -> &'static serde_json::Map<String, Value> {
    summary()["compose"]["services"]
        .as_object()
        .expect("the compose project has services")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `herald.events.critical 6` lines between `<<'TOPICS'` and `TOPICS` in a topic-init script.
fn topics_in_script(script: &str) -> Vec<(String, i32)> {
    let start = script
        .find("<<'TOPICS'\n")
        .expect("the topic-init script lists its topics in a <<'TOPICS' heredoc");
    script[start..]
        .lines()
        .skip(1)
        .map(str::trim)
        .take_while(|line| *line != "TOPICS")
        .map(|line| {
            let (name, partitions) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("'{line}' is not '<topic> <partitions>'"));
            (
                name.to_owned(),
                partitions.trim().parse().expect("a partition count"),
            )
        })
        .collect()
}

fn expected_topics() -> Vec<(String, i32)> {
    let mut topics: Vec<(String, i32)> = Topics::new("")
        .all(DEFAULT_DELAY_TIERS_SECS)
        .into_iter()
        .map(|t| (t.name, t.partitions))
        .collect();
    topics.sort();
    topics
}

/// The services the image is built with, from the Dockerfile's `HERALD_SERVICES` (crate directories).
fn image_services() -> Vec<String> {
    let dockerfile = read("Dockerfile");
    let line = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG HERALD_SERVICES="))
        .expect("the Dockerfile names its services in ARG HERALD_SERVICES");
    line.trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// One Herald process of the compose stack: its command, and the port its health server answers on.
struct Expected {
    service: &'static str,
    command: &'static [&'static str],
    port: u16,
}

/// The dev stack's processes and ports (`xtask/src/services.rs`, the README), plus herald-alert.
const HERALD_SERVICES: &[Expected] = &[
    Expected {
        service: "ingest",
        command: &["ingest"],
        port: 3000,
    },
    Expected {
        service: "dispatch-critical-1",
        command: &["dispatch", "--lane", "critical"],
        port: 3010,
    },
    Expected {
        service: "dispatch-critical-2",
        command: &["dispatch", "--lane", "critical"],
        port: 3011,
    },
    Expected {
        service: "dispatch-default",
        command: &["dispatch", "--lane", "default"],
        port: 3012,
    },
    Expected {
        service: "dispatch-retry",
        command: &["dispatch", "--lane", "retry"],
        port: 3013,
    },
    Expected {
        service: "retry",
        command: &["retry"],
        port: 3020,
    },
    Expected {
        service: "replay",
        command: &["replay"],
        port: 3005,
    },
    Expected {
        service: "query",
        command: &["query"],
        port: 3001,
    },
    Expected {
        service: "alert",
        command: &["alert"],
        port: 3030,
    },
];

#[test]
fn the_go_validator_accepts_the_dockerfile_the_compose_file_and_every_k8s_manifest() {
    let summary = summary();
    assert!(!compose_services().is_empty());
    assert!(summary["k8s"].as_array().is_some_and(|o| !o.is_empty()));
}

#[test]
fn the_validator_rejects_what_docker_compose_and_the_api_server_would() {
    let dir = std::env::temp_dir().join(format!("herald-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("k8s")).expect("temp dir");
    let compose = read("docker-compose.yml").replacen(
        "    restart: unless-stopped\n",
        "    restart: unless-stopped\n    helthcheck: {}\n",
        1,
    );
    std::fs::write(dir.join("docker-compose.yml"), compose).expect("write");
    std::fs::write(dir.join(".env.example"), read(".env.example")).expect("write");
    let dockerfile = read("Dockerfile").replacen("USER 10001:10001", "USER root", 1);
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("write");
    for entry in std::fs::read_dir(repo_root().join("k8s")).expect("k8s/") {
        let path = entry.expect("entry").path();
        let mut text = std::fs::read_to_string(&path).expect("read");
        if path.ends_with("retry.yaml") {
            text = text.replacen("          livenessProbe:\n", "          livenesProbe:\n", 1);
        }
        std::fs::write(dir.join("k8s").join(path.file_name().expect("name")), text).expect("write");
    }
    let output = run_validator(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    std::fs::remove_dir_all(&dir).expect("removing the temp dir");
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("helthcheck"), "{stderr}");
    assert!(stderr.contains("livenesProbe"), "{stderr}");
    assert!(stderr.contains("non-root USER"), "{stderr}");
}

#[test]
fn every_compose_service_has_a_restart_policy_and_long_running_ones_a_healthcheck() {
    let services = compose_services();
    let jobs: BTreeSet<&str> = services
        .values()
        .filter_map(|s| s["depends_on"].as_object())
        .flat_map(|deps| deps.iter())
        .filter(|(_, dep)| dep["condition"] == "service_completed_successfully")
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(jobs, BTreeSet::from(["topic-init"]));
    for (name, service) in services {
        let restart = service["restart"].as_str().unwrap_or("");
        if jobs.contains(name.as_str()) {
            // A job that restarted itself would race the services waiting for it to complete.
            assert_eq!(restart, "no", "{name} is a one-shot job");
            continue;
        }
        assert!(
            ["always", "unless-stopped", "on-failure"].contains(&restart),
            "{name} needs a restart policy, has '{restart}'"
        );
        let check = &service["healthcheck"];
        assert!(
            check["disable"] != true && strings(&check["test"]).len() > 1,
            "{name} needs a healthcheck"
        );
    }
}

#[test]
fn compose_runs_every_herald_service_on_the_readme_ports() {
    let services = compose_services();
    for expected in HERALD_SERVICES {
        let name = expected.service;
        let service = &services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"));
        assert_eq!(service["image"], "herald:local", "{name}");
        assert_eq!(strings(&service["command"]), expected.command, "{name}");
        let port = expected.port.to_string();
        let ports = service["ports"].as_array().expect("published ports");
        assert!(
            ports.iter().any(|p| p["target"] == expected.port
                && p["published"] == port.as_str()
                && p["host_ip"] == "127.0.0.1"),
            "{name} must publish 127.0.0.1:{port}:{port}"
        );
        // The port the process listens on is the one published and health-checked.
        let env = &service["environment"];
        let port_var = env
            .as_object()
            .expect("environment")
            .iter()
            .find(|(k, _)| {
                k.starts_with("HERALD_") && k.ends_with("_PORT") && *k != "HERALD_SMTP_PORT"
            })
            .map(|(_, v)| v.as_str().unwrap_or(""));
        assert_eq!(port_var, Some(port.as_str()), "{name}'s listen port");
        assert_eq!(
            strings(&service["healthcheck"]["test"]),
            ["CMD", "herald", "healthcheck", port.as_str()],
            "{name}"
        );
        assert_eq!(
            service["depends_on"]["topic-init"]["condition"], "service_completed_successfully",
            "{name} must wait for the topics"
        );
        // Docker must not kill a service that is still draining within its own shutdown bound.
        let grace_secs: u64 = service["stop_grace_period"]
            .as_str()
            .and_then(|g| g.strip_suffix('s'))
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a stop_grace_period in seconds"));
        let shutdown_ms: u64 = env["HERALD_SHUTDOWN_TIMEOUT_MS"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs HERALD_SHUTDOWN_TIMEOUT_MS"));
        assert!(
            grace_secs * 1000 > shutdown_ms,
            "{name}: stop_grace_period {grace_secs}s must exceed HERALD_SHUTDOWN_TIMEOUT_MS {shutdown_ms}"
        );
        assert_eq!(env["KAFKA_BROKERS"], "kafka:19092", "{name}");
        assert_eq!(env["MONGODB_URI"], "mongodb://mongo:27017", "{name}");
    }
    // Every service the image is built with runs in the stack, and nothing else is expected of the image.
    let commanded: BTreeSet<String> = HERALD_SERVICES
        .iter()
        .map(|e| e.command[0].to_owned())
        .collect();
    let built: BTreeSet<String> = image_services().into_iter().collect();
    assert_eq!(commanded, built, "Dockerfile HERALD_SERVICES vs compose");
    for service in &built {
        let manifest = read(&format!("crates/{service}/Cargo.toml"));
        assert!(
            manifest.contains(&format!("name = \"herald-{service}\"")),
            "crates/{service} must build the binary herald-{service}, which `herald {service}` runs"
        );
    }
}

#[test]
fn the_topic_init_jobs_create_exactly_topics_all() {
    let script = strings(&compose_services()["topic-init"]["command"]).join("\n");
    let mut compose = topics_in_script(&script);
    compose.sort();
    assert_eq!(compose, expected_topics(), "docker-compose.yml topic-init");

    let job = k8s_objects("Job")
        .into_iter()
        .find(|o| o["name"] == "herald-topic-init")
        .expect("k8s has the herald-topic-init Job");
    let container = &job["object"]["spec"]["template"]["spec"]["containers"][0];
    let mut k8s = topics_in_script(&strings(&container["args"]).join("\n"));
    k8s.sort();
    assert_eq!(k8s, expected_topics(), "k8s/topics-job.yaml");
}

/// An entry of .env.example: `NAME=value` (passed by compose) or `#NAME=value` (reference only).
#[derive(Debug)]
struct EnvEntry {
    name: String,
    active: bool,
}

fn env_name(candidate: &str) -> Option<&str> {
    let (name, _) = candidate.split_once('=')?;
    let valid = name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    valid.then_some(name)
}

fn env_example() -> Vec<EnvEntry> {
    let text = read(".env.example");
    let mut entries = Vec::new();
    let mut described = false;
    for line in text.lines() {
        let (name, active) = match (env_name(line), line.strip_prefix('#').and_then(env_name)) {
            (Some(name), _) => (name, true),
            (None, Some(name)) => (name, false),
            (None, None) => {
                described = line.starts_with("# ") && line.len() > 3 && !line.starts_with("# ---");
                continue;
            }
        };
        assert!(
            described,
            ".env.example: {name} needs a `# ` line saying what it is, directly above it"
        );
        described = false;
        entries.push(EnvEntry {
            name: name.to_owned(),
            active,
        });
    }
    entries
}

/// Every variable name the services' code reads: string literals such as `"HERALD_SMTP_HOST"` in the non-test
/// code of the shared crates and of every crate the image is built with. A literal ending in `_` is a prefix
/// (`KAFKA_PROPERTY_`).
fn variables_in_code() -> BTreeSet<String> {
    let mut crates = vec!["domain".to_owned(), "platform".to_owned()];
    crates.extend(image_services());
    let mut names = BTreeSet::new();
    for krate in crates {
        let src = repo_root().join("crates").join(&krate).join("src");
        if !src.exists() {
            continue;
        }
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).expect("read");
                    names.extend(literals(non_test_code(&text)));
                }
            }
        }
    }
    names
}

/// The text before a file's `#[cfg(test)] mod ...`.
fn non_test_code(text: &str) -> &str {
    let mut offset = 0;
    let mut previous_is_cfg_test = false;
    for line in text.split_inclusive('\n') {
        if previous_is_cfg_test && line.trim_start().starts_with("mod ") {
            return &text[..offset];
        }
        previous_is_cfg_test = line.trim() == "#[cfg(test)]";
        offset += line.len();
    }
    text
}

fn literals(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (start, _) in code.match_indices('"') {
        let rest = &code[start + 1..];
        if !["HERALD_", "KAFKA_", "MONGODB_", "OTEL_", "RUST_LOG"]
            .iter()
            .any(|p| rest.starts_with(p))
        {
            continue;
        }
        let len = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        if rest[len..].starts_with('"') {
            out.push(rest[..len].to_owned());
        }
    }
    out
}

#[test]
fn env_example_lists_every_variable_the_services_read_and_nothing_else() {
    let entries = env_example();
    let mut listed = BTreeSet::new();
    for entry in &entries {
        assert!(
            listed.insert(entry.name.clone()),
            ".env.example lists {} twice",
            entry.name
        );
    }
    let text = read(".env.example");
    let in_code = variables_in_code();
    let prefixes: Vec<&String> = in_code.iter().filter(|n| n.ends_with('_')).collect();
    for prefix in &prefixes {
        assert!(
            text.contains(&format!("{prefix}<NAME>")),
            ".env.example must describe the {prefix}<NAME> variables"
        );
    }
    // A prefix's own instances (`KAFKA_PROPERTY_SECURITY_PROTOCOL`) are covered by its description.
    let read_by_code: BTreeSet<String> = in_code
        .iter()
        .filter(|name| !prefixes.iter().any(|p| name.starts_with(p.as_str())))
        .cloned()
        .collect();
    let missing: Vec<_> = read_by_code.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&read_by_code).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        ".env.example is out of date: read by the code but not listed {missing:?}; listed but read by no \
         service {unknown:?}"
    );

    // An active line is one compose passes on, so changing it in .env changes the stack.
    let compose = read("docker-compose.yml");
    for entry in entries.iter().filter(|e| e.active) {
        assert!(
            compose.contains(&format!("${{{}:-", entry.name)),
            "{} is an active line of .env.example, but docker-compose.yml never uses ${{{}:-...}}",
            entry.name,
            entry.name
        );
    }
    // Every interpolation has a default, so a fresh clone without .env still starts.
    let code_lines = compose
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'));
    for line in code_lines {
        for (start, _) in line.match_indices("${") {
            if line[..start].ends_with('$') {
                continue; // `$${name}`: a shell variable, escaped from compose
            }
            let end = line[start..].find('}').map_or(line.len(), |e| start + e);
            let reference = &line[start..end];
            assert!(
                reference.contains(":-"),
                "{reference}}} in docker-compose.yml needs a default (`:-`)"
            );
        }
    }

    // Kubernetes' ConfigMap and Secret carry only documented variables, each in one of them.
    let data_keys = |kind: &str, field: &str| -> BTreeSet<String> {
        k8s_objects(kind)
            .iter()
            .filter_map(|o| o["object"][field].as_object())
            .flat_map(|m| m.keys().cloned())
            .collect()
    };
    let config = data_keys("ConfigMap", "data");
    let secret = data_keys("Secret", "stringData");
    assert!(
        config.is_disjoint(&secret),
        "in both the ConfigMap and the Secret: {:?}",
        config.intersection(&secret).collect::<Vec<_>>()
    );
    for key in config.union(&secret) {
        assert!(
            listed.contains(key),
            "k8s sets {key}, which .env.example does not document"
        );
    }
    for secret_name in [
        "HERALD_API_KEYS",
        "HERALD_WEBHOOK_SECRET",
        "HERALD_SMTP_PASSWORD",
        "MONGODB_URI",
    ] {
        assert!(
            secret.contains(secret_name),
            "{secret_name} belongs in the Secret"
        );
    }
}

fn k8s_objects(kind: &str) -> Vec<&'static Value> {
    summary()["k8s"]
        .as_array()
        .expect("k8s objects")
        .iter()
        .filter(|o| o["kind"] == kind)
        .collect()
}

#[test]
fn every_deployment_has_probes_and_resources_and_each_dispatch_lane_an_autoscaler() {
    let deployments = k8s_objects("Deployment");
    let mut commands = BTreeMap::new();
    for deployment in &deployments {
        let name = deployment["name"].as_str().expect("name");
        let containers = deployment["object"]["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        for c in containers {
            assert_eq!(
                c["livenessProbe"]["httpGet"]["path"], "/api/health",
                "{name}"
            );
            assert_eq!(
                c["readinessProbe"]["httpGet"]["path"], "/api/ready",
                "{name}"
            );
            for side in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        c["resources"][side][resource].is_string(),
                        "{name}: resources.{side}.{resource}"
                    );
                }
            }
        }
        commands.insert(strings(&containers[0]["args"]), name.to_owned());
    }
    // Kubernetes must not kill a pod that is still draining within its own shutdown bound.
    let shutdown_ms: i64 = k8s_objects("ConfigMap")
        .iter()
        .find_map(|c| c["object"]["data"]["HERALD_SHUTDOWN_TIMEOUT_MS"].as_str())
        .and_then(|v| v.parse().ok())
        .expect("the ConfigMap sets HERALD_SHUTDOWN_TIMEOUT_MS");
    for deployment in &deployments {
        let grace = deployment["object"]["spec"]["template"]["spec"]
            ["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
        assert!(
            grace * 1000 > shutdown_ms,
            "{}: terminationGracePeriodSeconds {grace} must exceed HERALD_SHUTDOWN_TIMEOUT_MS {shutdown_ms}",
            deployment["name"]
        );
    }
    // The same processes as the compose stack (the two critical dispatchers are one Deployment).
    for expected in HERALD_SERVICES {
        let command: Vec<String> = expected.command.iter().map(|s| s.to_string()).collect();
        assert!(
            commands.contains_key(&command),
            "no Deployment runs `herald {}`",
            command.join(" ")
        );
    }
    let lane_partitions = |lane: Lane| {
        Topics::new("")
            .all(DEFAULT_DELAY_TIERS_SECS)
            .into_iter()
            .find(|t| t.name == Topics::new("").lane(lane))
            .map(|t| t.partitions)
            .expect("a lane topic")
    };
    let hpas = k8s_objects("HorizontalPodAutoscaler");
    for lane in Lane::ALL {
        let command = vec![
            "dispatch".to_owned(),
            "--lane".to_owned(),
            lane.as_str().to_owned(),
        ];
        let deployment = &commands[&command];
        let hpa = hpas
            .iter()
            .find(|h| h["object"]["spec"]["scaleTargetRef"]["name"] == deployment.as_str())
            .unwrap_or_else(|| panic!("no HorizontalPodAutoscaler scales {deployment}"));
        let max = hpa["object"]["spec"]["maxReplicas"]
            .as_i64()
            .expect("maxReplicas");
        assert!(
            max <= i64::from(lane_partitions(*lane)),
            "{deployment}: more replicas than the lane has partitions would sit idle"
        );
    }
    // The HTTP APIs are reachable through Services.
    let services: BTreeSet<&str> = k8s_objects("Service")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for http in ["herald-ingest", "herald-query", "herald-replay"] {
        assert!(services.contains(http), "no Service for {http}");
    }
}

/// Answers one connection with `status_line`, or accepts and closes when it is empty.
fn one_shot_server(status_line: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            // Read the whole request first: closing with unread bytes would reset the connection.
            let mut request = Vec::new();
            let mut chunk = [0u8; 256];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            if !status_line.is_empty() {
                let _ = write!(stream, "{status_line}\r\ncontent-length: 0\r\n\r\n");
            }
        }
    });
    port
}

fn entrypoint(args: &[&str]) -> std::process::ExitStatus {
    Command::new("bash")
        .arg(repo_root().join("docker/herald"))
        .args(args)
        .status()
        .expect("running docker/herald")
}

#[test]
fn the_image_healthcheck_passes_only_on_a_2xx() {
    let ok = one_shot_server("HTTP/1.1 200 OK");
    assert!(entrypoint(&["healthcheck", &ok.to_string()]).success());
    let unavailable = one_shot_server("HTTP/1.1 503 Service Unavailable");
    assert!(!entrypoint(&["healthcheck", &unavailable.to_string(), "/api/ready"]).success());
    let silent = one_shot_server("");
    assert!(!entrypoint(&["healthcheck", &silent.to_string()]).success());
    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    assert!(!entrypoint(&["healthcheck", &closed.to_string()]).success());
    assert!(!entrypoint(&["no-such-service"]).success());
}

/// Ingest accepts a client's `provider` only among those the dispatchers have, reading the same variables
/// (`herald_domain::provider::SELECTION_VARS`): every deployment gives both the same values.
#[test]
fn ingest_and_every_dispatcher_are_given_the_same_provider_selection() {
    use herald_domain::provider::SELECTION_VARS;
    let services = compose_services();
    let ingest = &services["ingest"]["environment"];
    let dispatchers: Vec<&String> = services
        .keys()
        .filter(|name| name.starts_with("dispatch-"))
        .collect();
    assert!(!dispatchers.is_empty());
    for var in SELECTION_VARS {
        assert!(ingest.get(*var).is_some(), "compose: ingest lacks {var}");
        for name in &dispatchers {
            assert_eq!(
                services[name.as_str()]["environment"].get(*var),
                ingest.get(*var),
                "compose: {name} and ingest differ on {var}"
            );
        }
    }

    // Kubernetes: both read the shared ConfigMap and Secret, which hold every selection variable, and neither
    // overrides one in its own `env`.
    let shared: BTreeSet<String> = k8s_objects("ConfigMap")
        .iter()
        .filter_map(|o| o["object"]["data"].as_object())
        .chain(
            k8s_objects("Secret")
                .iter()
                .filter_map(|o| o["object"]["stringData"].as_object()),
        )
        .flat_map(|m| m.keys().cloned())
        .collect();
    for var in SELECTION_VARS {
        assert!(
            shared.contains(*var),
            "k8s: neither the ConfigMap nor the Secret sets {var}"
        );
    }
    for deployment in k8s_objects("Deployment") {
        let name = deployment["name"].as_str().expect("name");
        let container = &deployment["object"]["spec"]["template"]["spec"]["containers"][0];
        let command = strings(&container["args"]);
        if !matches!(
            command.first().map(String::as_str),
            Some("ingest" | "dispatch")
        ) {
            continue;
        }
        let from: Vec<&str> = container["envFrom"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|source| {
                source["configMapRef"]["name"]
                    .as_str()
                    .or(source["secretRef"]["name"].as_str())
            })
            .collect();
        assert_eq!(
            from,
            ["herald-config", "herald-secrets"],
            "k8s: {name}'s envFrom"
        );
        for own in container["env"].as_array().into_iter().flatten() {
            let own = own["name"].as_str().unwrap_or_default();
            assert!(
                !SELECTION_VARS.contains(&own),
                "k8s: {name} overrides {own}"
            );
        }
    }
}
