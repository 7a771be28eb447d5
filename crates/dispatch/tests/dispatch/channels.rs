//! Each channel delivers through its real provider: email into the SMTP sink, SMS to an HTTP SMS API, webhooks
//! signed to a receiver; and a record-only event is recorded.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_domain::{AttemptOutcome, Channel, Lane, Priority, Status};
use herald_test_support::{eventually, stack, unique_name};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::support::{event, Harness, Receiver, WEBHOOK_SECRET};

const DELIVERY: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_the_smtp_sink_with_the_event_id() -> Result<()> {
    let harness = Harness::new("dispatch-email").await?;
    let dispatcher = harness.start(Lane::Critical, &[]).await?;
    let to = format!("{}@example.test", unique_name("rcpt").to_ascii_lowercase());
    let email = event(
        Some(Channel::Email),
        Priority::Critical,
        "ada",
        json!({"to": to, "subject": "Your order shipped", "text": "It is on its way.", "html": "<p>It is on its way.</p>"}),
    );
    harness.seed(&email).await?;

    let record = harness
        .wait_for_status(&email.event_id, Status::Delivered, DELIVERY)
        .await;
    ensure!(
        record.attempts.len() == 1,
        "attempts: {:?}",
        record.attempts
    );
    ensure!(
        record.attempts[0].provider == "smtp"
            && record.attempts[0].outcome == AttemptOutcome::Delivered
    );

    let api = &stack().smtp_api;
    let http = reqwest::Client::new();
    let found: Value = eventually(Duration::from_secs(10), "the email in the sink", || async {
        let list: Value = http
            .get(format!("{api}/api/v1/search"))
            .query(&[("query", format!("to:{to}"))])
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match list["messages"].as_array().map(Vec::as_slice) {
            Some([one]) => Ok(one.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    ensure!(found["Subject"] == "Your order shipped", "{found}");
    ensure!(
        found["MessageID"] == format!("{}@herald", email.event_id),
        "Message-ID carries the event id: {found}"
    );
    let id = found["ID"].as_str().context("sink id")?;
    let headers: Value = http
        .get(format!("{api}/api/v1/message/{id}/headers"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        headers["Herald-Event-Id"] == json!([email.event_id.as_str()]),
        "{headers}"
    );
    let full: Value = http
        .get(format!("{api}/api/v1/message/{id}"))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        full["Text"]
            .as_str()
            .is_some_and(|t| t.contains("It is on its way.")),
        "{full}"
    );

    dispatcher.stop().await?;
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_is_posted_as_a_form_with_basic_auth() -> Result<()> {
    let harness = Harness::new("dispatch-sms").await?;
    let api = Receiver::start().await?;
    let base = api.url("/2010-04-01");
    let dispatcher = harness
        .start(
            Lane::Default,
            &[
                ("HERALD_SMS_BASE_URL", base.as_str()),
                ("HERALD_SMS_ACCOUNT_ID", "AC123"),
                ("HERALD_SMS_AUTH_TOKEN", "tok"),
                ("HERALD_SMS_FROM", "+15550001111"),
            ],
        )
        .await?;
    let sms = event(
        Some(Channel::Sms),
        Priority::Default,
        "grace",
        json!({"phoneNumber": "+14155550123", "message": "Your code is 123456"}),
    );
    harness.seed(&sms).await?;

    let record = harness
        .wait_for_status(&sms.event_id, Status::Delivered, DELIVERY)
        .await;
    ensure!(record.attempts.len() == 1 && record.attempts[0].provider == "http-sms");
    ensure!(
        record.attempts[0].http_status == Some(201),
        "{:?}",
        record.attempts
    );
    let hits = api.hits();
    ensure!(hits.len() == 1, "one request, got {}", hits.len());
    let hit = &hits[0];
    ensure!(
        hit.method == "POST" && hit.path == "/2010-04-01/Accounts/AC123/Messages.json",
        "{hit:?}"
    );
    ensure!(
        hit.header("authorization") == Some("Basic QUMxMjM6dG9r"),
        "basic auth AC123:tok: {hit:?}"
    );
    ensure!(
        hit.header("content-type") == Some("application/x-www-form-urlencoded"),
        "{hit:?}"
    );
    let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&hit.body)
        .into_owned()
        .collect();
    ensure!(
        form.get("To").map(String::as_str) == Some("+14155550123"),
        "{form:?}"
    );
    ensure!(
        form.get("From").map(String::as_str) == Some("+15550001111"),
        "{form:?}"
    );
    ensure!(
        form.get("Body").map(String::as_str) == Some("Your code is 123456"),
        "{form:?}"
    );

    dispatcher.stop().await?;
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_is_signed_with_the_secret() -> Result<()> {
    let harness = Harness::new("dispatch-webhook").await?;
    let receiver = Receiver::start().await?;
    let dispatcher = harness.start(Lane::Critical, &[]).await?;
    let body = json!({"order": 42, "items": ["a", "b"], "note": "ünïcode"});
    let hook = event(
        Some(Channel::Webhook),
        Priority::Critical,
        "linus",
        json!({"url": receiver.url("/hooks/orders"), "body": body, "headers": {"X-Tenant": "acme"}}),
    );
    harness.seed(&hook).await?;

    let record = harness
        .wait_for_status(&hook.event_id, Status::Delivered, DELIVERY)
        .await;
    ensure!(record.attempts.len() == 1 && record.attempts[0].http_status == Some(200));
    let hits = receiver.hits();
    ensure!(hits.len() == 1, "one request, got {}", hits.len());
    let hit = &hits[0];
    ensure!(hit.path == "/hooks/orders" && hit.method == "POST");
    ensure!(hit.header("content-type") == Some("application/json"));
    ensure!(
        hit.header("x-tenant") == Some("acme"),
        "payload headers are sent"
    );
    ensure!(hit.header("herald-event-id") == Some(hook.event_id.as_str()));
    let received: Value = serde_json::from_slice(&hit.body)?;
    ensure!(
        received == body,
        "the body is the payload's body: {received}"
    );

    // Verify as a receiver would: HMAC-SHA256 over "{id}.{timestamp}.{raw body}", and a recent timestamp.
    let timestamp: i64 = hit
        .header("herald-timestamp")
        .context("timestamp")?
        .parse()?;
    ensure!(
        (chrono::Utc::now().timestamp() - timestamp).abs() < 300,
        "stale timestamp {timestamp}"
    );
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(WEBHOOK_SECRET.as_bytes())?;
    mac.update(format!("{}.{timestamp}.", hook.event_id).as_bytes());
    mac.update(&hit.body);
    let signature = hit.header("herald-signature").context("signature")?;
    let hex_mac = signature.strip_prefix("v1=").context("v1= prefix")?;
    mac.verify_slice(&hex::decode(hex_mac)?)
        .map_err(|_| anyhow::anyhow!("signature {signature} does not verify"))?;

    dispatcher.stop().await?;
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_only_events_end_recorded() -> Result<()> {
    let harness = Harness::new("dispatch-record").await?;
    let dispatcher = harness.start(Lane::Default, &[]).await?;
    let activity = event(
        None,
        Priority::Default,
        "ada",
        json!({"activityType": "login"}),
    );
    harness.seed(&activity).await?;

    let record = harness
        .wait_for_status(&activity.event_id, Status::Recorded, DELIVERY)
        .await;
    ensure!(
        record.attempts.is_empty(),
        "nothing was sent: {:?}",
        record.attempts
    );
    ensure!(record.timeline.iter().any(|t| t.kind == "recorded"));
    eventually(Duration::from_secs(10), "the recorded counter", || async {
        let n = dispatcher.stats.get(herald_dispatch::Counter::Recorded);
        if n == 1 {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;

    // The health server answers on its own port, and /metrics reports the counters and the in-flight bound.
    let base = format!("http://127.0.0.1:{}", dispatcher.port);
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/api/health")).send().await?;
    ensure!(health.status() == 200);
    let health: Value = health.json().await?;
    ensure!(
        health == json!({"status": "ok", "service": "herald-dispatch"}),
        "{health}"
    );
    let ready = http.get(format!("{base}/api/ready")).send().await?;
    ensure!(ready.status() == 200, "ready: {}", ready.text().await?);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    // Other tests of this binary run dispatchers in the same process, sharing its recorder: at least ours.
    let samples =
        herald_test_support::http::parse_prometheus(&metrics).map_err(anyhow::Error::msg)?;
    let sum =
        |name: &str| herald_test_support::http::sum_of(&samples, name, &[("lane", "default")]);
    ensure!(sum("herald_dispatch_recorded_total") >= 1.0, "{metrics}");
    ensure!(sum("herald_dispatch_in_flight_bound") > 0.0, "{metrics}");

    dispatcher.stop().await?;
    harness.finish().await
}
