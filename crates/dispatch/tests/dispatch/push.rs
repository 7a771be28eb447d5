//! The push channel against local fakes of Google's token endpoint, FCM and OneSignal: the JWT grant is signed
//! with the service account's key and minted once for many sends, the bearer token and the message reach FCM,
//! a gone token is a permanent failure, and OneSignal gets its key, app and tokens.

use std::time::Duration;

use anyhow::{ensure, Result};
use herald_domain::{AttemptOutcome, Channel, ErrorClass, Lane, Priority, Status};
use herald_test_support::eventually;
use herald_test_support::push_fakes::PushFakes;
use serde_json::json;

use super::support::{event, Harness};

const WAIT: Duration = Duration::from_secs(60);

fn vars(fakes: &PushFakes, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = fakes.env();
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    vars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_mints_one_token_and_sends_each_message_with_it() -> Result<()> {
    let harness = Harness::new("dispatch-fcm").await?;
    let fakes = PushFakes::start().await?;
    let env = vars(&fakes, &[]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dispatcher = harness.start(Lane::Default, &env).await?;
    let first = event(
        Some(Channel::Push),
        Priority::Default,
        "ada",
        json!({"token": "device-a", "title": "Shipped", "body": "On its way", "data": {"orderId": "42"}}),
    );
    let second = event(
        Some(Channel::Push),
        Priority::Default,
        "grace",
        json!({"tokens": ["device-b", "device-c"], "title": "Hi", "body": "Two devices"}),
    );
    harness.seed(&first).await?;
    harness.seed(&second).await?;
    for id in [&first.event_id, &second.event_id] {
        let record = harness.wait_for_status(id, Status::Delivered, WAIT).await;
        ensure!(
            record.attempts[0].provider == "fcm",
            "{:?}",
            record.attempts
        );
        ensure!(
            record.attempts[0].http_status == Some(200),
            "{:?}",
            record.attempts
        );
    }
    ensure!(fakes.refused().is_empty(), "{:?}", fakes.refused());
    ensure!(
        fakes.grants() == 1,
        "one access token for every send, got {}",
        fakes.grants()
    );
    let messages = fakes.fcm_messages();
    let tokens: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["message"]["token"].as_str())
        .collect();
    ensure!(
        tokens.len() == 3 && tokens.contains(&"device-b") && tokens.contains(&"device-c"),
        "{tokens:?}"
    );
    let to_a = messages
        .iter()
        .find(|m| m["message"]["token"] == "device-a")
        .map(|m| m["message"].clone())
        .unwrap_or_default();
    ensure!(
        to_a == json!({"token": "device-a", "notification": {"title": "Shipped", "body": "On its way"},
            "data": {"orderId": "42"}}),
        "{to_a}"
    );
    dispatcher.stop().await?;
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_answers_are_classified_and_onesignal_gets_its_key() -> Result<()> {
    let harness = Harness::new("dispatch-push-answers").await?;
    let fakes = PushFakes::start().await?;
    let env = vars(&fakes, &[]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dispatcher = harness.start(Lane::Default, &env).await?;
    let gone = event(
        Some(Channel::Push),
        Priority::Default,
        "u1",
        json!({"token": "device-unregistered", "title": "t", "body": "b"}),
    );
    let busy = event(
        Some(Channel::Push),
        Priority::Default,
        "u2",
        json!({"token": "device-unavailable", "title": "t", "body": "b"}),
    );
    harness.seed(&gone).await?;
    harness.seed(&busy).await?;
    for (event, class, status, retry_after) in [
        (&gone, ErrorClass::Permanent, 404, None),
        (&busy, ErrorClass::Retryable, 503, Some(1)),
    ] {
        let attempt = eventually(WAIT, "a failed attempt", || async {
            match harness.store.find(&event.event_id).await {
                Ok(Some(record)) if !record.attempts.is_empty() => Ok(record.attempts[0].clone()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        ensure!(attempt.outcome == AttemptOutcome::Failed, "{attempt:?}");
        ensure!(attempt.error_class == Some(class), "{attempt:?}");
        ensure!(attempt.http_status == Some(status), "{attempt:?}");
        ensure!(attempt.retry_after_secs == retry_after, "{attempt:?}");
    }
    dispatcher.stop().await?;

    // The same messages with OneSignal first: one notification each, with the key and the app.
    let env = vars(&fakes, &[("HERALD_PUSH_PROVIDER", "onesignal")]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dispatcher = harness.start(Lane::Default, &env).await?;
    let ok = event(
        Some(Channel::Push),
        Priority::Default,
        "u3",
        json!({"tokens": ["sub-1", "sub-2"], "title": "Hello", "body": "World", "data": {"k": "v"}}),
    );
    let unsubscribed = event(
        Some(Channel::Push),
        Priority::Default,
        "u4",
        json!({"token": "sub-unsubscribed", "title": "t", "body": "b"}),
    );
    harness.seed(&ok).await?;
    harness.seed(&unsubscribed).await?;
    let record = harness
        .wait_for_status(&ok.event_id, Status::Delivered, WAIT)
        .await;
    ensure!(
        record.attempts[0].provider == "onesignal",
        "{:?}",
        record.attempts
    );
    let attempt = eventually(WAIT, "a failed attempt", || async {
        match harness.store.find(&unsubscribed.event_id).await {
            Ok(Some(record)) if !record.attempts.is_empty() => Ok(record.attempts[0].clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    ensure!(
        attempt.error_class == Some(ErrorClass::Permanent),
        "{attempt:?}"
    );
    let mut sent = fakes
        .onesignal_notifications()
        .into_iter()
        .find(|n| n["include_subscription_ids"] == json!(["sub-1", "sub-2"]))
        .unwrap_or_default();
    // The attempt's idempotency key (a UUID OneSignal deduplicates a resend on), then the notification itself.
    let key = sent
        .as_object_mut()
        .and_then(|n| n.remove("idempotency_key"))
        .unwrap_or_default();
    ensure!(
        key.as_str()
            .is_some_and(|k| uuid::Uuid::parse_str(k).is_ok()),
        "{key}"
    );
    ensure!(
        sent == json!({"app_id": "os-app-1", "target_channel": "push", "include_subscription_ids": ["sub-1", "sub-2"],
            "headings": {"en": "Hello"}, "contents": {"en": "World"}, "data": {"k": "v"}}),
        "{sent}"
    );
    ensure!(fakes.refused().is_empty(), "{:?}", fakes.refused());
    dispatcher.stop().await?;
    harness.finish().await
}
