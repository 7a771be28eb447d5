//! Starting `herald-ingest` with bad message templates: the binary refuses to start, exits 2 and names every
//! bad file, before it touches Kafka or MongoDB.

use std::process::Command;

use anyhow::{ensure, Result};

#[test]
fn bad_templates_stop_the_binary_at_startup_with_every_problem_listed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (name, source) in [
        ("order.shipped.email.subject", "Order {{ order.id"),
        ("order.shipped.email.text", "fine {{ name }}"),
        ("order.shipped.sms.title", "SMS has no title"),
        ("otp.push.title", "Code"),
    ] {
        std::fs::write(dir.path().join(name), source)?;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_herald-ingest"))
        .env("HERALD_TEMPLATES_DIR", dir.path())
        .env("HERALD_AUTH", "off")
        .env("HERALD_INGEST_PORT", "0")
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(2),
        "{:?}: {stderr}",
        output.status
    );
    for expected in [
        "HERALD_TEMPLATES_DIR: order.shipped.email.subject: does not compile",
        "HERALD_TEMPLATES_DIR: order.shipped.sms.title: is not named",
        "HERALD_TEMPLATES_DIR: otp.push.*: the set needs otp.push.body",
    ] {
        ensure!(
            stderr.contains(expected),
            "{expected} missing from: {stderr}"
        );
    }
    ensure!(
        !stderr.contains("order.shipped.email.text"),
        "a good file is no problem: {stderr}"
    );

    Ok(())
}
