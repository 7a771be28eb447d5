//! The decision loop: one failed attempt in, one decision out (retry on a delay tier, or dead-letter).

use chrono::Utc;
use herald_domain::messages::{dlq_headers, HEADER_ATTEMPT, HEADER_EVENT_ID};
use herald_domain::retry::{tier_for, Decision, Failure};
use herald_domain::{
    DelayedRetry, ErrorClass, LaneMessage, RetryRequest, StatusMessage, StatusOutcome,
};
use std::sync::Arc;

use herald_platform::kafka::watch::{self, Watch};
use herald_platform::store::{DeadLettered, Scheduled};
use herald_platform::{kafka, KafkaConfig};
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;

use crate::{until_done, AppState, Result};

/// Consumes retry requests (the topic of `watch`) until `shutdown`; each offset is stored once its decision is
/// durable. A consumer the watch finds stuck is closed (detached) and a fresh one subscribed.
pub async fn run(
    kafka_config: KafkaConfig,
    watch: Arc<Watch>,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut consumer = watch::build_watched(&kafka_config, &watch)?;
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = watch.stuck() => None,
            received = consumer.recv() => Some(received),
        };
        let Some(received) = received else {
            watch.rebuilding(&watch.problem().unwrap_or_default());
            watch::close_detached(consumer);
            consumer = watch::build_watched(&kafka_config, &watch)?;
            continue;
        };
        let message = match received {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, "retry requests: consumer error");
                continue;
            }
        };
        watch.progressed();
        let handling = watch.handling();
        let handled = until_done("handling a retry request", &shutdown, || {
            handle(&state, &message)
        })
        .await;
        if handled.is_none() {
            break;
        }
        if let Err(e) = kafka::store_offset(&consumer, &message) {
            tracing::warn!(error = %e, "storing a retry request offset failed (partition revoked?)");
        }
        drop(handling);
    }
    Ok(kafka::commit_and_close(consumer).await?)
}

#[tracing::instrument(skip_all, fields(event_id, partition = message.partition(), offset = message.offset()))]
async fn handle(
    state: &AppState,
    message: &BorrowedMessage<'_>,
) -> std::result::Result<(), String> {
    let request: RetryRequest = match serde_json::from_slice(message.payload().unwrap_or_default())
    {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable retry request, dead-lettered");
            return kafka::dead_letter_poison(
                &state.producer,
                &state.topics.dead_letters(),
                message,
                &format!("undecodable retry request: {e}"),
            )
            .await
            .map_err(|e| e.to_string());
        }
    };
    tracing::Span::current().record("event_id", request.event.event_id.as_str());
    decide_and_apply(state, &request)
        .await
        .map_err(|e| e.to_string())
}

/// Asks the rules, records the outcome, and publishes its follow-up message. Idempotent: a redelivered request
/// finds its decision already recorded and publishes the same follow-up again.
pub async fn decide_and_apply(
    state: &AppState,
    request: &RetryRequest,
) -> std::result::Result<(), String> {
    let event_id = &request.event.event_id;
    let failed = &request.failed;
    let Some(channel) = request.event.channel else {
        return dead_letter(state, request, "a record-only event cannot be retried").await;
    };
    let failure = Failure {
        channel,
        event_type: request.event.event_type.as_deref(),
        provider: &failed.provider,
        error_class: failed.error_class.unwrap_or(ErrorClass::Retryable),
        http_status: failed.http_status,
        // The request's own value, or the attempt's (recorded with it, so it survives a dispatcher's crash).
        retry_after: request
            .retry_after_secs
            .or(failed.retry_after_secs)
            .map(std::time::Duration::from_secs),
        attempt: failed.number,
    };
    match state.rules.decide(&failure, rand::random::<f64>()) {
        Decision::DeadLetter { reason } => dead_letter(state, request, &reason).await,
        Decision::Retry {
            attempt,
            delay,
            provider,
        } => {
            let tier = tier_for(delay, &state.tiers_secs).unwrap_or(1);
            // The wait is the tier itself (the delay rounded up), so every message on a tier topic is due in the
            // order it was published and a held head never delays a message behind it. Only a delay longer than
            // the longest tier keeps its exact length; it passes through that tier as often as needed.
            let tier_duration = std::time::Duration::from_secs(tier);
            let wait = delay.max(tier_duration);
            let now = Utc::now();
            // MongoDB keeps milliseconds: round up, so the stored and the published due time agree and neither
            // is earlier than the wait.
            let exact =
                now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1));
            let millis = exact.timestamp_millis()
                + i64::from(!exact.timestamp_subsec_nanos().is_multiple_of(1_000_000));
            let due_at = chrono::DateTime::from_timestamp_millis(millis).unwrap_or(exact);
            let detail = format!(
                "attempt {attempt} due at {} (backoff {} ms, tier {tier}s{})",
                due_at.to_rfc3339(),
                delay.as_millis(),
                provider
                    .as_deref()
                    .map(|p| format!(", provider {p}"))
                    .unwrap_or_default()
            );
            let scheduled = state
                .store
                .schedule_retry(
                    event_id,
                    failed.number,
                    request.replay_count,
                    due_at,
                    detail,
                )
                .await
                .map_err(|e| e.to_string())?;
            let due_at = match scheduled {
                Scheduled::Now => due_at,
                Scheduled::Already(record) => record.next_attempt_at.unwrap_or(due_at),
                Scheduled::Stale => {
                    tracing::debug!("retry request is stale, the event moved on");
                    return Ok(());
                }
            };
            let delayed = DelayedRetry {
                message: LaneMessage {
                    event: request.event.clone(),
                    attempt,
                    replay_count: request.replay_count,
                    provider,
                    enqueued_at: now,
                },
                due_at,
                tier_secs: tier,
            };
            let payload = serde_json::to_vec(&delayed).map_err(|e| e.to_string())?;
            let headers = kafka::headers(&[
                (HEADER_EVENT_ID, event_id.as_str()),
                (HEADER_ATTEMPT, &attempt.to_string()),
            ]);
            kafka::send(
                &state.producer,
                &state.topics.delay(tier),
                request.event.partition_key(),
                &payload,
                Some(headers),
            )
            .await
            .map_err(|e| e.to_string())?;
            tracing::info!(attempt, tier, due_at = %due_at, "retry scheduled");
            metrics::counter!("herald_retries_scheduled_total",
                "tier" => format!("{tier}s"), "channel" => channel.as_str())
            .increment(1);
            Ok(())
        }
    }
}

async fn dead_letter(
    state: &AppState,
    request: &RetryRequest,
    reason: &str,
) -> std::result::Result<(), String> {
    let failed = &request.failed;
    let outcome = state
        .store
        .dead_letter(
            &request.event.event_id,
            failed.number,
            request.replay_count,
            reason,
        )
        .await
        .map_err(|e| e.to_string())?;
    let record = match outcome {
        DeadLettered::Now(record) => {
            metrics::counter!("herald_dead_letters_total",
                "lane" => request.lane.as_str(),
                "channel" => request.event.channel.map_or("none", |c| c.as_str()))
            .increment(1);
            record
        }
        DeadLettered::Already(record) => record,
        DeadLettered::Stale => return Ok(()),
    };
    let payload = serde_json::to_vec(&record.event()).map_err(|e| e.to_string())?;
    let attempts = failed.number.to_string();
    let last_error = failed.error.clone().unwrap_or_default();
    let headers = kafka::headers(&[
        (HEADER_EVENT_ID, request.event.event_id.as_str()),
        (dlq_headers::REASON, reason),
        (dlq_headers::ORIGINAL_LANE, request.lane.as_str()),
        (dlq_headers::ATTEMPTS, &attempts),
        (dlq_headers::LAST_ERROR, &last_error),
    ]);
    kafka::send(
        &state.producer,
        &state.topics.dead_letters(),
        request.event.partition_key(),
        &payload,
        Some(headers),
    )
    .await
    .map_err(|e| e.to_string())?;
    // Also for a redelivered request (`Already`): the first try may have died before this publish.
    let status = StatusMessage {
        provider: Some(failed.provider.clone()),
        error: Some(reason.to_owned()),
        ..StatusMessage::new(
            &record.event(),
            StatusOutcome::DeadLettered,
            failed.number,
            request.replay_count,
        )
    };
    let payload = serde_json::to_vec(&status).map_err(|e| e.to_string())?;
    kafka::send(
        &state.producer,
        &state.topics.status(),
        request.event.partition_key(),
        &payload,
        Some(kafka::headers(&[(
            HEADER_EVENT_ID,
            request.event.event_id.as_str(),
        )])),
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(reason, "dead-lettered");
    Ok(())
}
