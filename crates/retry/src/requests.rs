//! The decision loop: one failed attempt in, one decision out (retry on a delay tier, or dead-letter).
//!
//! A decision is a function of the request alone (its jitter too, `retry::jitter_for`), so a redelivered request
//! reproduces it. A request whose event record fails a store step for good (`store::is_permanent`) is
//! dead-lettered after [`PERMANENT_TRIES`] tries instead of holding its partition.

use std::sync::Arc;

use chrono::Utc;
use herald_domain::messages::{dlq_headers, HEADER_EVENT_ID};
use herald_domain::retry::{jitter_for, tier_for, Decision, Failure};
use herald_domain::{
    DelayedRetry, ErrorClass, LaneMessage, RetryRequest, StatusMessage, StatusOutcome,
};
use herald_platform::kafka::watch::{Watch, WatchedConsumer};
use herald_platform::retry::{until_done, Backoff};
use herald_platform::store::{self, DeadLettered, Scheduled};
use herald_platform::{kafka, lanes, telemetry, KafkaConfig};
use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{AppState, Result};

/// Tries of a request whose store steps fail with a permanent error before it is dead-lettered.
const PERMANENT_TRIES: u32 = 3;
/// Wait between two such tries (bounded: at most `PERMANENT_TRIES - 1` of them per request).
const PERMANENT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Why a retry request could not be handled this time.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("event store: {0}")]
    Store(#[from] store::Error),
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error("cannot encode a message: {0}")]
    Encode(#[from] serde_json::Error),
}

impl ApplyError {
    /// Whether trying again cannot help: the event's record is at fault, not MongoDB or Kafka.
    pub fn is_permanent(&self) -> bool {
        match self {
            ApplyError::Store(e) => store::is_permanent(e),
            ApplyError::Kafka(_) => false,
            ApplyError::Encode(_) => true,
        }
    }
}

/// Consumes retry requests (the topic of `watch`) until `shutdown`; each offset is stored once its decision is
/// durable. A consumer the watch finds stuck is closed (detached) and a fresh one subscribed.
pub async fn run(
    kafka_config: KafkaConfig,
    watch: Arc<Watch>,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut consumer = WatchedConsumer::subscribe(&kafka_config, &watch, "retry requests")?;
    while let Some(message) = consumer.next(&shutdown).await? {
        let handling = consumer.watch().handling();
        // Every try of the request in one span, continuing the trace of the attempt that failed.
        let span = tracing::info_span!(
            "retry.schedule",
            event_id = tracing::field::Empty,
            partition = message.partition(),
            offset = message.offset(),
        );
        telemetry::follow_message(&span, &message);
        let handled = until_done(
            "handling a retry request",
            Backoff::TRANSIENT,
            &shutdown,
            || handle(&state, &message),
        )
        .instrument(span)
        .await;
        if handled.is_none() {
            break;
        }
        consumer.store_offset(&message);
        drop(handling);
    }
    Ok(consumer.commit_and_close().await?)
}

/// One try of a retry request, in the `retry.schedule` span [`run`] opened for it.
async fn handle(state: &AppState, message: &OwnedMessage) -> std::result::Result<(), ApplyError> {
    let request: RetryRequest = match serde_json::from_slice(message.payload().unwrap_or_default())
    {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable retry request, dead-lettered");
            return Ok(kafka::dead_letter_poison(
                &state.producer,
                &state.topics.dead_letters(),
                message,
                &format!("undecodable retry request: {e}"),
            )
            .await?);
        }
    };
    tracing::Span::current().record("event_id", request.event.event_id.as_str());
    let mut n_permanent = 0;
    loop {
        match decide_and_apply(state, &request).await {
            Err(e) if e.is_permanent() => {
                n_permanent += 1;
                if n_permanent >= PERMANENT_TRIES {
                    return dead_letter_unprocessable(state, message, &request, &e.to_string())
                        .await;
                }
                tracing::warn!(error = %e, "permanent error handling a retry request; trying again");
                tokio::time::sleep(PERMANENT_BACKOFF).await;
            }
            // Transient errors go back to `until_done`, which waits them out.
            done => return done,
        }
    }
}

/// Dead-letters a retry request whose event record fails a store step for good: the request, raw, to the
/// dead-letter topic with the reason, then the event marked DEAD_LETTERED where the store can still be written,
/// then its status for the alert rules.
async fn dead_letter_unprocessable(
    state: &AppState,
    message: &OwnedMessage,
    request: &RetryRequest,
    error: &str,
) -> std::result::Result<(), ApplyError> {
    let reason = format!("unprocessable event record: {error}");
    tracing::error!(reason, "dead-lettering the retry request");
    kafka::dead_letter_poison(
        &state.producer,
        &state.topics.dead_letters(),
        message,
        &reason,
    )
    .await?;
    match state
        .store
        .dead_letter_unprocessable(&request.event.event_id, &reason)
        .await
    {
        Ok(marked) => tracing::info!(marked, "unprocessable event dead-lettered"),
        // The dead-letter topic has the request and the reason; the record cannot take the mark.
        Err(e) if store::is_permanent(&e) => {
            tracing::error!(error = %e, "cannot mark the event DEAD_LETTERED")
        }
        Err(e) => return Err(e.into()),
    }
    publish_dead_letter_status(state, request, &reason).await
}

/// Asks the rules, records the outcome, and publishes its follow-up message. Idempotent: a redelivered request
/// finds its decision already recorded and publishes the same follow-up again.
pub async fn decide_and_apply(
    state: &AppState,
    request: &RetryRequest,
) -> std::result::Result<(), ApplyError> {
    let event_id = &request.event.event_id;
    let failed = &request.failed;
    let Some(channel) = request.event.channel else {
        return dead_letter(state, request, "a record-only event cannot be retried").await;
    };
    let failure = Failure {
        channel,
        event_type: request.event.event_type.as_deref(),
        provider: &failed.provider,
        chosen_provider: request.event.chosen_provider(),
        error_class: failed.error_class.unwrap_or(ErrorClass::Retryable),
        http_status: failed.http_status,
        // The request's own value, or the attempt's (recorded with it, so it survives a dispatcher's crash).
        retry_after: request
            .retry_after_secs
            .or(failed.retry_after_secs)
            .map(std::time::Duration::from_secs),
        attempt: failed.number,
    };
    // Drawn from the request, not at random: a redelivered request must decide the same delay, or its retry
    // could land on another tier (looping through a shorter one, or holding a longer one's head too long).
    let jitter = jitter_for(event_id.as_str(), request.replay_count, failed.number);
    match state.rules.decide(&failure, jitter) {
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
                .await?;
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
            let payload = serde_json::to_vec(&delayed)?;
            let headers = lanes::attempt_headers(event_id, attempt, None);
            kafka::send(
                &state.producer,
                &state.topics.delay(tier),
                request.event.partition_key(),
                &payload,
                Some(headers),
            )
            .await?;
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
) -> std::result::Result<(), ApplyError> {
    let failed = &request.failed;
    let outcome = state
        .store
        .dead_letter(
            &request.event.event_id,
            failed.number,
            request.replay_count,
            reason,
        )
        .await?;
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
    let payload = serde_json::to_vec(&record.event())?;
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
    .await?;
    // Also for a redelivered request (`Already`): the first try may have died before this publish.
    publish_dead_letter_status(state, request, reason).await?;
    tracing::info!(reason, "dead-lettered");
    Ok(())
}

/// Publishes the DEAD_LETTERED step of a request's event on the status topic.
async fn publish_dead_letter_status(
    state: &AppState,
    request: &RetryRequest,
    reason: &str,
) -> std::result::Result<(), ApplyError> {
    let failed = &request.failed;
    let status = StatusMessage {
        provider: Some(failed.provider.clone()),
        error: Some(reason.to_owned()),
        ..StatusMessage::new(
            &request.event,
            StatusOutcome::DeadLettered,
            failed.number,
            request.replay_count,
        )
    };
    let payload = serde_json::to_vec(&status)?;
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
    .await?;
    Ok(())
}
