//! Provider fallback through every service: a retry rule sends the next attempt through another real provider.

use std::time::Duration;

use anyhow::{ensure, Result};
use herald_domain::{AttemptOutcome, Status};
use herald_e2e::{Herald, SmsApi};
use serde_json::json;

#[tokio::test]
async fn a_fallback_rule_sends_the_retry_through_the_next_provider() -> Result<()> {
    let primary = SmsApi::start(503).await?;
    let backup = SmsApi::start(201).await?;
    let rules = r#"
        [default]
        base_ms = 500
        [channels.sms]
        providers = ["http-sms", "backup"]
        switch_after = 1
    "#;
    let herald = Herald::start_with(
        "e2e-fallback",
        rules,
        &[
            ("HERALD_SMS_BASE_URL", &primary.base_url),
            ("HERALD_SMS_ACCOUNT_ID", "AC-primary"),
            ("HERALD_SMS_AUTH_TOKEN", "token-primary"),
            ("HERALD_SMS_FROM", "+15550001111"),
            ("HERALD_SMS_PROVIDERS", "backup"),
            ("HERALD_SMS_BACKUP_BASE_URL", &backup.base_url),
            ("HERALD_SMS_BACKUP_ACCOUNT_ID", "AC-backup"),
            ("HERALD_SMS_BACKUP_AUTH_TOKEN", "token-backup"),
            ("HERALD_SMS_BACKUP_FROM", "+15550002222"),
        ],
    )
    .await?;
    let id = herald
        .post_event(json!({
            "channel": "sms",
            "payload": {"phoneNumber": "+12025550123", "message": "Your code is 123456"},
        }))
        .await?;
    let record = herald
        .wait_for(&id, Status::Delivered, Duration::from_secs(60))
        .await;
    let attempts: Vec<(u32, &str, AttemptOutcome)> = record
        .attempts
        .iter()
        .map(|a| (a.number, a.provider.as_str(), a.outcome))
        .collect();
    ensure!(
        attempts
            == [
                (1, "http-sms", AttemptOutcome::Failed),
                (2, "backup", AttemptOutcome::Delivered),
            ],
        "{attempts:?}"
    );
    // The timeline names both providers: each attempt, and the decision to switch.
    let timeline_providers: Vec<&str> = record
        .timeline
        .iter()
        .filter_map(|e| e.attempt.as_ref().map(|a| a.provider.as_str()))
        .collect();
    ensure!(
        timeline_providers == ["http-sms", "backup"],
        "{timeline_providers:?}"
    );
    ensure!(
        record.timeline.iter().any(|e| e.kind == "retry_scheduled"
            && e.detail
                .as_deref()
                .is_some_and(|d| d.contains("provider backup"))),
        "{:?}",
        record.timeline
    );
    ensure!(
        primary.paths() == ["/2010-04-01/Accounts/AC-primary/Messages.json"],
        "{:?}",
        primary.paths()
    );
    ensure!(
        backup.paths() == ["/2010-04-01/Accounts/AC-backup/Messages.json"],
        "{:?}",
        backup.paths()
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_fcm_send_falls_back_to_onesignal() -> Result<()> {
    let fakes = herald_test_support::push_fakes::PushFakes::start().await?;
    let rules = r#"
        [default]
        base_ms = 500
        [channels.push]
        providers = ["fcm", "onesignal"]
        switch_after = 1
    "#;
    let env = fakes.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let herald = Herald::start_with("e2e-push-fallback", rules, &env).await?;
    let id = herald
        .post_event(json!({
            "channel": "push",
            "payload": {"token": "device-unavailable", "title": "Shipped", "body": "On its way"},
        }))
        .await?;
    let record = herald
        .wait_for(&id, Status::Delivered, Duration::from_secs(60))
        .await;
    let attempts: Vec<(u32, &str, AttemptOutcome)> = record
        .attempts
        .iter()
        .map(|a| (a.number, a.provider.as_str(), a.outcome))
        .collect();
    ensure!(
        attempts
            == [
                (1, "fcm", AttemptOutcome::Failed),
                (2, "onesignal", AttemptOutcome::Delivered),
            ],
        "{attempts:?}"
    );
    ensure!(
        fakes.fcm_messages().len() == 1,
        "{:?}",
        fakes.fcm_messages()
    );
    ensure!(
        fakes.onesignal_notifications().len() == 1,
        "{:?}",
        fakes.onesignal_notifications()
    );
    ensure!(fakes.refused().is_empty(), "{:?}", fakes.refused());
    Ok(())
}
