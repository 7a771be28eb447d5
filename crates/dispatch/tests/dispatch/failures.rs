//! Failed attempts: each is recorded and handed to the retry scheduler as a `RetryRequest` whose class follows
//! the receiver's answer; attempt numbers reach the provider; a follow-up lost in a crash is published again.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use chrono::Utc;
use herald_domain::{
    Attempt, AttemptOutcome, Channel, ErrorClass, Lane, LaneMessage, Priority, RetryRequest, Status,
};
use herald_platform::store::Claim;
use rdkafka::message::Message;
use serde_json::json;

use super::support::{event, kafka_header, read_until, webhook, Harness, Receiver};

const WAIT: Duration = Duration::from_secs(60);

/// Reads retry requests until one has arrived for each of `ids`.
async fn retry_requests(harness: &Harness, ids: &[&str]) -> Result<HashMap<String, RetryRequest>> {
    let mut found: HashMap<String, RetryRequest> = HashMap::new();
    let topic = harness.ctx.topics.retry_requests();
    read_until(&harness.ctx, &topic, WAIT, |message| {
        let request: RetryRequest = serde_json::from_slice(message.payload()?).ok()?;
        let id = request.event.event_id.to_string();
        if ids.contains(&id.as_str()) {
            assert_eq!(
                kafka_header(message, "herald-event-id").as_deref(),
                Some(id.as_str())
            );
            assert_eq!(
                message.key(),
                Some(request.event.partition_key().as_bytes()),
                "keyed like the event"
            );
            found.insert(id, request);
        }
        (found.len() == ids.len()).then_some(())
    })
    .await?;
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_answers_decide_the_class_of_the_retry_request() -> Result<()> {
    let harness = Harness::new("dispatch-answers").await?;
    let receiver = Receiver::start().await?;
    let dispatcher = harness.start(Lane::Default, &[]).await?;
    let cases = [
        ("/status/500", ErrorClass::Retryable, 500, None),
        ("/status/400", ErrorClass::Permanent, 400, None),
        (
            "/status/503?abort=customer%20deleted",
            ErrorClass::Permanent,
            503,
            None,
        ),
        (
            "/status/429?retry_after=42",
            ErrorClass::Retryable,
            429,
            Some(42),
        ),
    ];
    let mut events = Vec::new();
    for (i, (path, ..)) in cases.iter().enumerate() {
        let hook = webhook(Priority::Default, &format!("user-{i}"), &receiver.url(path));
        harness.seed(&hook).await?;
        events.push(hook);
    }
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let requests = retry_requests(&harness, &ids).await?;

    for (hook, (path, class, status, retry_after)) in events.iter().zip(cases) {
        let request = &requests[hook.event_id.as_str()];
        ensure!(
            request.failed.error_class == Some(class),
            "{path}: {request:?}"
        );
        ensure!(
            request.failed.http_status == Some(status),
            "{path}: {request:?}"
        );
        ensure!(
            request.retry_after_secs == retry_after,
            "{path}: {request:?}"
        );
        ensure!(
            request.failed.number == 1 && request.failed.provider == "webhook",
            "{path}: {request:?}"
        );
        ensure!(request.failed.outcome == AttemptOutcome::Failed);
        ensure!(request.lane == Lane::Default && request.replay_count == 0);
        let record = harness
            .store
            .find(&hook.event_id)
            .await?
            .context("record")?;
        ensure!(
            record.status == Status::Dispatching
                && record.attempt_count == 1
                && record.lease_until.is_none(),
            "{path}: failed attempts wait for the scheduler without a lease: {record:?}"
        );
        ensure!(record.attempts == vec![request.failed.clone()]);
    }
    let abort = &requests[events[2].event_id.as_str()];
    ensure!(
        abort
            .failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("customer deleted")),
        "the abort reason is kept: {abort:?}"
    );

    dispatcher.stop().await?;
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_fails_the_first_attempts_it_is_told_to() -> Result<()> {
    let harness = Harness::new("dispatch-sandbox").await?;
    let dispatcher = harness
        .start(Lane::Retry, &[("HERALD_EMAIL_PROVIDER", "sandbox")])
        .await?;
    let email = event(
        Some(Channel::Email),
        Priority::Critical,
        "ada",
        json!({"to": "fail-twice@example.test", "subject": "hi", "text": "hello"}),
    );
    harness
        .store
        .insert_accepted(&herald_platform::store::EventRecord::accepted(&email), None)
        .await?;
    // What the retry scheduler would publish on the retry lane: attempts 1, 2 and 3, each once the last failed.
    for attempt in 1..=3u32 {
        let message = LaneMessage {
            attempt,
            ..LaneMessage::first(email.clone())
        };
        harness
            .publish_raw(
                Lane::Retry,
                email.partition_key(),
                &serde_json::to_vec(&message)?,
            )
            .await?;
        if attempt < 3 {
            herald_test_support::eventually(
                WAIT,
                &format!("attempt {attempt} recorded"),
                || async {
                    let record = harness
                        .store
                        .find(&email.event_id)
                        .await
                        .map_err(|e| e.to_string())?;
                    match record {
                        Some(r) if r.attempt_count == attempt => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await;
        }
    }
    let record = harness
        .wait_for_status(&email.event_id, Status::Delivered, WAIT)
        .await;
    let outcomes: Vec<(u32, AttemptOutcome, Option<ErrorClass>)> = record
        .attempts
        .iter()
        .map(|a| (a.number, a.outcome, a.error_class))
        .collect();
    ensure!(
        outcomes
            == [
                (1, AttemptOutcome::Failed, Some(ErrorClass::Retryable)),
                (2, AttemptOutcome::Failed, Some(ErrorClass::Retryable)),
                (3, AttemptOutcome::Delivered, None),
            ],
        "{outcomes:?}"
    );
    ensure!(record.attempts.iter().all(|a| a.provider == "sandbox"));
    let requests = retry_requests(&harness, &[email.event_id.as_str()]).await?;
    ensure!(
        requests[email.event_id.as_str()].lane == Lane::Critical,
        "a retry request names the event's own lane, not the retry lane"
    );

    dispatcher.stop().await?;
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_request_lost_in_a_crash_is_published_again() -> Result<()> {
    let harness = Harness::new("dispatch-follow-up").await?;
    let hook = webhook(Priority::Critical, "ada", "http://127.0.0.1:9/never-called");
    harness
        .store
        .insert_accepted(&herald_platform::store::EventRecord::accepted(&hook), None)
        .await?;
    // A dispatcher claimed attempt 1, recorded it as failed, and died before publishing the retry request.
    let claim = harness
        .store
        .claim(&hook.event_id, 1, 0, Duration::from_secs(30))
        .await?;
    ensure!(matches!(claim, Claim::Send(_)), "{claim:?}");
    let failed = Attempt {
        number: 1,
        provider: "webhook".into(),
        started_at: Utc::now(),
        ended_at: Utc::now(),
        outcome: AttemptOutcome::Failed,
        error_class: Some(ErrorClass::Retryable),
        error: Some("HTTP 429".into()),
        http_status: Some(429),
        retry_after_secs: Some(7),
    };
    ensure!(
        harness
            .store
            .record_failed(&hook.event_id, &failed, 0)
            .await?
    );

    // Its lane message comes again (the offset was never stored) to a new dispatcher.
    let dispatcher = harness.start(Lane::Critical, &[]).await?;
    harness.publish(&LaneMessage::first(hook.clone())).await?;
    let requests = retry_requests(&harness, &[hook.event_id.as_str()]).await?;
    let request = &requests[hook.event_id.as_str()];
    ensure!(
        request.failed.http_status == Some(429)
            && request.failed.error_class == Some(ErrorClass::Retryable)
    );
    ensure!(
        request.retry_after_secs == Some(7) && request.failed.retry_after_secs == Some(7),
        "the receiver's Retry-After survives the crash: {request:?}"
    );
    ensure!(request.lane == Lane::Critical);
    let record = harness
        .store
        .find(&hook.event_id)
        .await?
        .context("record")?;
    ensure!(
        record.attempts.len() == 1,
        "nothing was sent again: {:?}",
        record.attempts
    );
    herald_test_support::eventually(WAIT, "the follow-up counter", || async {
        match dispatcher.stats.get(herald_dispatch::Counter::FollowUps) {
            1 => Ok(()),
            n => Err(n.to_string()),
        }
    })
    .await;

    dispatcher.stop().await?;
    harness.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_provider_is_a_permanent_failure_that_names_it() -> Result<()> {
    let harness = Harness::new("dispatch-unknown-provider").await?;
    let receiver = Receiver::start().await?;
    let dispatcher = harness.start(Lane::Retry, &[]).await?;
    let hook = webhook(Priority::Default, "ada", &receiver.url("/never"));
    harness
        .store
        .insert_accepted(&herald_platform::store::EventRecord::accepted(&hook), None)
        .await?;
    let message = LaneMessage {
        provider: Some("pigeon".into()),
        ..LaneMessage::first(hook.clone())
    };
    harness
        .publish_raw(
            Lane::Retry,
            hook.partition_key(),
            &serde_json::to_vec(&message)?,
        )
        .await?;
    let requests = retry_requests(&harness, &[hook.event_id.as_str()]).await?;
    let failed = &requests[hook.event_id.as_str()].failed;
    ensure!(
        failed.error_class == Some(ErrorClass::Permanent),
        "{failed:?}"
    );
    ensure!(failed.provider == "pigeon", "{failed:?}");
    ensure!(
        failed.error.as_deref()
            == Some(
                "no webhook provider named 'pigeon' in this dispatcher (it has: sandbox, webhook)"
            ),
        "{failed:?}"
    );
    ensure!(receiver.hits().is_empty(), "nothing was sent");

    dispatcher.stop().await?;
    harness.finish().await
}
