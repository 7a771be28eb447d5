//! Providers through every service: a retry rule sends the next attempt through another real provider, a client
//! names the provider of the first attempt, the HTTP email and SMS APIs against their fakes, and message templates
//! rendered at ingest.

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

fn env_of(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[tokio::test]
async fn a_client_chosen_sendgrid_sends_the_email_and_an_unknown_provider_is_a_400() -> Result<()> {
    let fakes = herald_test_support::message_fakes::MessageFakes::start().await?;
    let env = fakes.env();
    let herald = Herald::start_with("e2e-sendgrid", "", &env_of(&env)).await?;
    let id = herald
        .post_event(json!({
            "channel": "email",
            "provider": "sendgrid",
            "payload": {"to": "ada@example.com", "subject": "Shipped", "text": "On its way", "html": "<p>On its way</p>"},
        }))
        .await?;
    let record = herald
        .wait_for(&id, Status::Delivered, Duration::from_secs(60))
        .await;
    let attempts: Vec<(&str, AttemptOutcome, Option<u16>)> = record
        .attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.outcome, a.http_status))
        .collect();
    ensure!(
        attempts == [("sendgrid", AttemptOutcome::Delivered, Some(202))],
        "{attempts:?}"
    );
    let mails = fakes.sendgrid_mails();
    ensure!(mails.len() == 1, "{mails:?}");
    ensure!(
        mails[0]["personalizations"] == json!([{"to": [{"email": "ada@example.com"}]}])
            && mails[0]["subject"] == "Shipped"
            && mails[0]["content"][0] == json!({"type": "text/plain", "value": "On its way"})
            && mails[0]["headers"]["Herald-Event-Id"] == id.as_str(),
        "{mails:?}"
    );
    ensure!(fakes.refused().is_empty(), "{:?}", fakes.refused());

    let (status, answer) = herald
        .post_event_raw(json!({
            "channel": "email",
            "provider": "postmark",
            "payload": {"to": "ada@example.com", "subject": "Shipped", "text": "On its way"},
        }))
        .await?;
    ensure!(status == 400, "{status}: {answer}");
    ensure!(
        answer["details"]
            == json!([{"field": "provider",
                "message": "unknown email provider 'postmark', expected one of: mailgun, sandbox, sendgrid, smtp"}]),
        "{answer}"
    );
    Ok(())
}

#[tokio::test]
async fn a_chosen_messagebird_falls_back_to_twilio_and_each_attempt_records_its_name() -> Result<()>
{
    let fakes = herald_test_support::message_fakes::MessageFakes::start().await?;
    let twilio = SmsApi::start(201).await?;
    let rules = r#"
        [default]
        base_ms = 500
        [channels.sms]
        providers = ["http-sms", "messagebird", "twilio"]
        switch_after = 1
    "#;
    let mut env = fakes.env();
    env.extend(
        [
            ("HERALD_SMS_BASE_URL", twilio.base_url.as_str()),
            ("HERALD_SMS_ACCOUNT_ID", "AC-1"),
            ("HERALD_SMS_AUTH_TOKEN", "token-1"),
            ("HERALD_SMS_FROM", "+15550001111"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let herald = Herald::start_with("e2e-messagebird", rules, &env_of(&env)).await?;
    // "down" makes the MessageBird fake answer 503; the rules go on from the client's choice to twilio.
    let id = herald
        .post_event(json!({
            "channel": "sms",
            "provider": "messagebird",
            "payload": {"phoneNumber": "+12025550123", "message": "down for maintenance tonight"},
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
                (1, "messagebird", AttemptOutcome::Failed),
                (2, "twilio", AttemptOutcome::Delivered),
            ],
        "{attempts:?}"
    );
    let sent = fakes.messagebird_messages();
    ensure!(
        sent.len() == 1
            && sent[0]["recipients"] == json!(["12025550123"])
            && sent[0]["reference"] == id.as_str(),
        "{sent:?}"
    );
    ensure!(
        twilio.paths() == ["/2010-04-01/Accounts/AC-1/Messages.json"],
        "{:?}",
        twilio.paths()
    );
    ensure!(fakes.refused().is_empty(), "{:?}", fakes.refused());
    Ok(())
}

#[tokio::test]
async fn templates_render_per_locale_at_ingest_and_a_missing_variable_is_a_400() -> Result<()> {
    let fakes = herald_test_support::message_fakes::MessageFakes::start().await?;
    let dir = tempfile::tempdir()?;
    for (name, source) in [
        (
            "order.shipped.email.subject",
            "Order {{ order.id }} shipped",
        ),
        (
            "order.shipped.email.text",
            "Hi {{ name }}, it is on its way.",
        ),
        (
            "order.shipped.fr.email.subject",
            "Commande {{ order.id }} expédiée",
        ),
        (
            "order.shipped.fr.email.text",
            "Bonjour {{ name }}, elle est en route.",
        ),
        ("order.shipped.fr.email.html", "<p>Bonjour {{ name }}</p>"),
    ] {
        std::fs::write(dir.path().join(name), source)?;
    }
    let mut env = fakes.env();
    env.push(("HERALD_EMAIL_PROVIDER".into(), "mailgun".into()));
    env.push((
        "HERALD_TEMPLATES_DIR".into(),
        dir.path().display().to_string(),
    ));
    let herald = Herald::start_with("e2e-templates", "", &env_of(&env)).await?;
    let id = herald
        .post_event(json!({
            "eventType": "order.shipped",
            "channel": "email",
            "metadata": {"locale": "fr-CA"},
            "payload": {"to": "zoe@example.com", "data": {"order": {"id": "A-7"}, "name": "Zoé & Cie"}},
        }))
        .await?;
    let record = herald
        .wait_for(&id, Status::Delivered, Duration::from_secs(60))
        .await;
    ensure!(
        record.attempts.len() == 1 && record.attempts[0].provider == "mailgun",
        "{:?}",
        record.attempts
    );
    // The stored payload is what was sent: the rendered message, without the variables.
    ensure!(
        record.payload
            == json!({"to": "zoe@example.com", "subject": "Commande A-7 expédiée",
                "text": "Bonjour Zoé & Cie, elle est en route.", "html": "<p>Bonjour Zoé &amp; Cie</p>"}),
        "{}",
        record.payload
    );
    let sent = fakes.mailgun_messages();
    ensure!(
        sent.len() == 1
            && sent[0]["subject"] == "Commande A-7 expédiée"
            && sent[0]["html"] == "<p>Bonjour Zoé &amp; Cie</p>"
            && sent[0]["h:Herald-Event-Id"] == id.as_str(),
        "{sent:?}"
    );
    // An explicit subject wins over the template's; the base set serves a locale without its own.
    let id = herald
        .post_event(json!({
            "eventType": "order.shipped",
            "channel": "email",
            "metadata": {"locale": "de"},
            "payload": {"to": "max@example.com", "subject": "Custom", "data": {"order": {"id": "B-1"}, "name": "Max"}},
        }))
        .await?;
    let record = herald
        .wait_for(&id, Status::Delivered, Duration::from_secs(60))
        .await;
    ensure!(
        record.payload["subject"] == "Custom"
            && record.payload["text"] == "Hi Max, it is on its way.",
        "{}",
        record.payload
    );

    let (status, answer) = herald
        .post_event_raw(json!({
            "eventType": "order.shipped",
            "channel": "email",
            "payload": {"to": "zoe@example.com", "data": {"order": {}}},
        }))
        .await?;
    ensure!(status == 400, "{status}: {answer}");
    let fields: Vec<&str> = answer["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["field"].as_str())
        .collect();
    ensure!(
        fields == ["payload.data.name", "payload.data.order.id"],
        "{answer}"
    );
    ensure!(fakes.refused().is_empty(), "{:?}", fakes.refused());
    Ok(())
}
