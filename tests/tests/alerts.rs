//! From `POST /event` to an alert email: record-only `request.failed` events from one IP go through ingest, the
//! default-lane dispatcher (RECORDED, and a status message) and herald-alert's failed-request monitor.

use std::time::Duration;

use anyhow::{ensure, Result};
use herald_domain::Status;
use herald_e2e::Herald;
use herald_test_support::{eventually, stack};
use serde_json::{json, Value};

#[tokio::test]
async fn six_failed_requests_from_one_ip_posted_to_ingest_raise_one_alert_email() -> Result<()> {
    let herald = Herald::start("e2e-alert", "").await?;
    let ip = "192.0.2.77";
    let mut ids = Vec::new();
    for n in 0..6 {
        let id = herald
            .post_event(json!({
                "userId": format!("client-{n}"),
                "eventType": "request.failed",
                "payload": {},
                "metadata": {"ip": ip, "reason": "401"},
            }))
            .await?;
        ids.push(id);
    }
    for id in &ids {
        herald
            .wait_for(id, Status::Recorded, Duration::from_secs(30))
            .await;
    }
    let api = &stack().smtp_api;
    let query = format!("to:{} subject:{ip}", herald.alert_recipient);
    let mails: Vec<Value> = eventually(Duration::from_secs(30), "the alert email", || async {
        let answer: Value = herald
            .http
            .get(format!("{api}/api/v1/search"))
            .query(&[("query", &query)])
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match answer["messages"].as_array() {
            Some(mails) if !mails.is_empty() => Ok(mails.clone()),
            _ => Err(answer.to_string()),
        }
    })
    .await;
    ensure!(mails.len() == 1, "{mails:?}");
    ensure!(
        mails[0]["Subject"] == format!("[Herald WARNING] failed-requests: {ip}"),
        "{}",
        mails[0]
    );
    let id = mails[0]["ID"].as_str().unwrap_or_default();
    let full: Value = herald
        .http
        .get(format!("{api}/api/v1/message/{id}"))
        .send()
        .await?
        .json()
        .await?;
    let text = full["Text"].as_str().unwrap_or_default();
    ensure!(text.contains("6 matching events within 10m"), "{text}");
    // Five samples, the newest hits: the six are recorded together (one batch, the same millisecond), so which
    // five is not given, but each is one of them.
    let sampled = ids.iter().filter(|id| text.contains(id.as_str())).count();
    ensure!(sampled == 5, "{sampled} of the six events sampled: {text}");
    Ok(())
}
