//! SMTP away when an alert fires: the alert is stored with its email pending, and the email is sent once SMTP is
//! back, by the same process or by the next one after a restart.

use anyhow::{ensure, Result};
use herald_alert::rules::FAILED_REQUESTS;
use herald_platform::alerts::{AlertRecord, EmailStatus};
use herald_test_support::{eventually, stack};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::support::{failed_request, Harness, MAIL};

/// A free port on 127.0.0.1 that nothing listens on (yet).
async fn closed_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}

/// SMTP coming back on `port`: a relay to the sink.
async fn relay(port: u16) -> Result<JoinHandle<()>> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let sink = format!("{}:{}", stack().smtp_host, stack().smtp_port);
    Ok(tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(&sink).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    }))
}

/// Fires the failed-request rule for `ip` and waits until its email failed `n_failures` times.
async fn fire_while_down(harness: &Harness, ip: &str, n_failures: u32) -> Result<AlertRecord> {
    for _ in 0..6 {
        harness.publish(&failed_request(ip)).await?;
    }
    let alert = eventually(MAIL, "the alert stored, its email failing", || async {
        match harness.alerts(FAILED_REQUESTS, ip).await {
            Ok(alerts) => match alerts.first() {
                Some(a) if a.email.attempts >= n_failures => Ok(a.clone()),
                other => Err(format!("{other:?}")),
            },
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    ensure!(alert.email.status == EmailStatus::Pending, "{alert:?}");
    ensure!(alert.email.last_error.is_some(), "{alert:?}");
    ensure!(harness.mails(ip).await?.is_empty());
    Ok(alert)
}

async fn wait_until_sent(harness: &Harness, ip: &str) -> AlertRecord {
    eventually(MAIL, "the alert marked sent", || async {
        match harness.alerts(FAILED_REQUESTS, ip).await {
            Ok(alerts) => match alerts.first() {
                Some(a) if a.email.status == EmailStatus::Sent => Ok(a.clone()),
                other => Err(format!("{other:?}")),
            },
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_email_is_sent_once_smtp_is_back() -> Result<()> {
    let harness = Harness::new("alert-smtp-down").await?;
    let port = closed_port().await?;
    let running = harness
        .start(&[("HERALD_SMTP_PORT", &port.to_string())])
        .await?;
    let ip = "10.7.0.1";
    fire_while_down(&harness, ip, 2).await?;

    let relay = relay(port).await?;
    harness.wait_for_mails(ip, 1).await;
    let sent = wait_until_sent(&harness, ip).await;
    ensure!(sent.email.attempts >= 3, "{sent:?}");
    ensure!(harness.mails(ip).await?.len() == 1);

    running.stop().await?;
    relay.abort();
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_email_is_sent_by_the_next_process_after_a_restart() -> Result<()> {
    let harness = Harness::new("alert-smtp-restart").await?;
    let port = closed_port().await?;
    let first = harness
        .start(&[("HERALD_SMTP_PORT", &port.to_string())])
        .await?;
    let ip = "10.7.0.2";
    fire_while_down(&harness, ip, 1).await?;
    first.stop().await?;

    // No alert is raised again (the window and the alert are in MongoDB); the stored one is sent.
    let second = harness.start(&[]).await?;
    harness.wait_for_mails(ip, 1).await;
    wait_until_sent(&harness, ip).await;
    ensure!(harness.alerts(FAILED_REQUESTS, ip).await?.len() == 1);

    second.stop().await?;
    harness.finish().await
}
