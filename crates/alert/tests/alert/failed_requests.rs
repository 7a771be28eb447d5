//! The failed-request monitor: six `request.failed` events from one IP within ten minutes give exactly one email,
//! a hundred more within the cooldown give none (and are not even stored), another IP gets its own, five give none.

use anyhow::{ensure, Context, Result};
use herald_alert::rules::FAILED_REQUESTS;
use herald_platform::alerts::EmailStatus;
use herald_test_support::eventually;

use super::support::{failed_request, Harness, MAIL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ip_gets_one_email_per_burst_and_each_ip_its_own() -> Result<()> {
    let harness = Harness::new("alert-ips").await?;
    let running = harness.start(&[]).await?;
    let (a, b, c) = ("10.9.0.1", "10.9.0.2", "10.9.0.3");

    // Five from A: one short of the threshold. Then six from B, handled after A's five (one partition).
    let mut a_ids = Vec::new();
    for _ in 0..5 {
        let step = failed_request(a);
        a_ids.push(step.event_id.to_string());
        harness.publish(&step).await?;
    }
    for _ in 0..6 {
        harness.publish(&failed_request(b)).await?;
    }
    harness.wait_for_mails(b, 1).await;
    ensure!(harness.mails(a).await?.is_empty(), "five events alerted");
    ensure!(harness.alerts(FAILED_REQUESTS, a).await?.is_empty());

    // The sixth from A alerts, once.
    let sixth = failed_request(a);
    a_ids.push(sixth.event_id.to_string());
    harness.publish(&sixth).await?;
    let mails = harness.wait_for_mails(a, 1).await;
    let (subject, text) = harness.read(&mails[0]).await?;
    ensure!(
        subject == format!("[Herald WARNING] failed-requests: {a}"),
        "{subject}"
    );
    ensure!(
        text.contains("6 matching events within 10m (threshold 6)"),
        "{text}"
    );
    for id in &a_ids[1..] {
        ensure!(text.contains(id.as_str()), "sample {id} missing: {text}");
    }
    ensure!(
        text.contains(
            "http://query.test:3001/api/logs?eventType=request.failed&status=RECORDED&from="
        ),
        "{text}"
    );
    let alerts = harness.alerts(FAILED_REQUESTS, a).await?;
    let alert = alerts.first().context("the stored alert")?;
    ensure!(alert.count == 6 && alert.seq == 0, "{alert:?}");
    ensure!(alert.recipients == std::slice::from_ref(&harness.recipient));
    ensure!(text.contains(&format!("http://query.test:3001/api/alerts/{}", alert.id)));
    eventually(MAIL, "the alert marked sent", || async {
        match harness.alerts(FAILED_REQUESTS, a).await {
            Ok(alerts)
                if alerts
                    .first()
                    .is_some_and(|a| a.email.status == EmailStatus::Sent) =>
            {
                Ok(())
            }
            Ok(alerts) => Err(format!("{alerts:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;

    // A hundred more within the cooldown: nothing. Six from C after them, so that they are all handled when C's
    // email arrives.
    for _ in 0..100 {
        harness.publish(&failed_request(a)).await?;
    }
    for _ in 0..6 {
        harness.publish(&failed_request(c)).await?;
    }
    harness.wait_for_mails(c, 1).await;
    // The hundred came within the first twenty minutes of a thirty-minute cooldown: no window that can alert again
    // (ten minutes, ending after the cooldown) would count them, so none was stored (each cost no command).
    let kept = harness.hits(FAILED_REQUESTS, a).await?;
    ensure!(kept == 6, "{kept} hits kept for A");
    ensure!(
        harness.mails(a).await?.len() == 1,
        "{:?}",
        harness.mails(a).await?
    );
    ensure!(harness.alerts(FAILED_REQUESTS, a).await?.len() == 1);
    ensure!(harness.mails(b).await?.len() == 1);

    running.stop().await?;
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_going_on_after_the_cooldown_gives_one_reminder_with_the_new_count() -> Result<()> {
    let harness = Harness::new("alert-reminder").await?;
    let dir = std::env::temp_dir().join(herald_test_support::unique_name("alert-rules"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("rules.toml");
    std::fs::write(
        &path,
        "builtins = false\n\n[[rules]]\nname = \"bursts\"\nmatch = { eventType = \"request.failed\" }\n\
         groupBy = \"metadata.ip\"\nthreshold = 2\nwindow = \"1h\"\ncooldown = \"10m\"\nseverity = \"info\"\n",
    )?;
    let running = harness
        .start(&[("HERALD_ALERT_RULES", &path.display().to_string())])
        .await?;
    let ip = "10.6.0.1";
    let t0 = chrono::Utc::now();
    let at = |minutes: i64| {
        let mut step = failed_request(ip);
        step.at = t0 + chrono::Duration::minutes(minutes);
        step
    };
    // Two alert; three more a minute later are within the cooldown; one eleven minutes after the alert is a
    // reminder counting all six; one more after it is within the new cooldown.
    for minutes in [0, 0, 1, 1, 1, 11, 12] {
        harness.publish(&at(minutes)).await?;
    }
    for _ in 0..2 {
        harness.publish(&failed_request("10.6.0.2")).await?;
    }
    harness.wait_for_mails("10.6.0.2", 1).await;
    let mails = harness.wait_for_mails(ip, 2).await;
    let subjects: Vec<&str> = mails.iter().filter_map(|m| m["Subject"].as_str()).collect();
    ensure!(
        subjects.contains(&format!("[Herald INFO] bursts: {ip} (still going on)").as_str()),
        "{subjects:?}"
    );
    let alerts = harness.alerts("bursts", ip).await?;
    let counts: Vec<(u32, u64)> = alerts.iter().map(|a| (a.seq, a.count)).collect();
    ensure!(counts == [(0, 2), (1, 6)], "{counts:?}");

    running.stop().await?;
    std::fs::remove_dir_all(&dir)?;
    harness.finish().await
}
