//! A dead letter on the critical lane gives one email naming the event; one on the default lane gives none, and
//! a redelivered dead letter no second email.

use anyhow::{ensure, Result};
use herald_alert::rules::CRITICAL_DEAD_LETTER;
use herald_domain::Priority;

use super::support::{dead_letter, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_dead_letter_gives_one_email_naming_the_event() -> Result<()> {
    let harness = Harness::new("alert-dlq").await?;
    let running = harness.start(&[]).await?;
    for path in ["/api/health", "/api/ready"] {
        let url = format!("http://127.0.0.1:{}{path}", running.port);
        let status = harness.http.get(&url).send().await?.status();
        ensure!(status.is_success(), "{path}: {status}");
    }

    let default = dead_letter(Priority::Default, 5);
    let critical = dead_letter(Priority::Critical, 5);
    harness.publish(&default).await?;
    harness.publish(&critical).await?;
    let id = critical.event_id.to_string();
    let mails = harness.wait_for_mails(&id, 1).await;
    let (subject, text) = harness.read(&mails[0]).await?;
    ensure!(
        subject == format!("[Herald CRITICAL] critical-dead-letter: {id}"),
        "{subject}"
    );
    ensure!(
        text.contains(&format!("http://query.test:3001/api/logs/{id}")),
        "{text}"
    );
    ensure!(
        text.contains("priority=critical, outcome=dead_lettered"),
        "{text}"
    );

    // The same dead letter again (a redelivery), then another one: only the other one is new.
    harness.publish(&critical).await?;
    let other = dead_letter(Priority::Critical, 3);
    harness.publish(&other).await?;
    harness.wait_for_mails(other.event_id.as_str(), 1).await;
    ensure!(harness.mails(&id).await?.len() == 1);
    ensure!(harness.mails(default.event_id.as_str()).await?.is_empty());
    ensure!(harness.mails(CRITICAL_DEAD_LETTER).await?.len() == 2);
    ensure!(harness.alerts(CRITICAL_DEAD_LETTER, &id).await?.len() == 1);

    running.stop().await?;
    harness.finish().await
}
