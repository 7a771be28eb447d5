//! The HTTP API: `POST /event`, `POST /api/logs` and `POST /events/generate` (a key with the `ingest` scope, rate
//! limited per key), the health and metrics routes and the documentation, in platform's standard middleware with
//! the body limit.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::{Json, Router};
use herald_domain::request::{parse_activity, parse_event, IdempotencyKey};
use herald_domain::{Event, EventId, FieldError, Priority, Status};
use herald_platform::health::{self, Readiness};
use herald_platform::http::auth::{self, Required};
use herald_platform::http::{self, rate_limit, BodyLimit, JsonBody, Scope, Standard};
use herald_platform::store::{Accepting, EventRecord, Inserted};
use serde::Serialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::dropin::{published, Published, PublishedBody, ACTIVITY_PUBLISHED};
use crate::error::{ApiError, Dependency};
use crate::openapi::{AcceptedBody, ActivityRequest, ApiDoc, ErrorBody, EventRequest};
use crate::AppState;
use herald_platform::lanes::PublishError;

/// What a request cut short by the timeout means for its caller: a request cut short after its event was recorded
/// leaves it in the outbox, the sweeper publishes it, and a retry with the same key or event id finds it.
const TIMEOUT_HINT: &str =
    "the event may have been accepted: retry with the same Idempotency-Key or eventId";

/// Every route of the service, with its middleware.
pub(crate) fn router(state: AppState, config: &Config) -> Router {
    let readiness = Readiness::of(Some(&config.kafka), &state.db, &state.indexes);
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accept_event))
        .routes(routes!(accept_activity))
        .routes(routes!(crate::dropin::generate_event));
    // Layers run outside in: the key is checked first, then its bucket.
    if let Some(limiter) = config.rate_limit.limiter() {
        api = api.route_layer(middleware::from_fn_with_state(limiter, rate_limit::limit));
    }
    let ingest = Required {
        auth: Arc::new(config.http.auth.clone()),
        scope: Scope::Ingest,
    };
    let api = api
        .route_layer(middleware::from_fn_with_state(ingest, auth::require))
        .with_state(state);
    let (api, document) = OpenApiRouter::new()
        .merge(api)
        .merge(health::openapi_router("herald-ingest", readiness))
        .split_for_parts();
    let api = BodyLimit(config.max_body_bytes).apply(api);
    let docs = http::openapi::finish(document);
    Standard {
        service: "herald-ingest",
        request_timeout: config.request_timeout,
        timeout_hint: TIMEOUT_HINT,
        http: &config.http,
    }
    .apply(api.merge(docs))
}

/// The answer to an accepted (202) or repeated (200) event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Accepted {
    event_id: EventId,
    status: Status,
    priority: Priority,
}

pub(crate) type Answer = (StatusCode, Json<Accepted>);

/// Accept an event.
///
/// Validates the event (every problem is listed at once), records it as QUEUED, publishes it to the Kafka lane
/// of its priority and answers 202 once Kafka has acknowledged it. An `Idempotency-Key` header (or a client
/// `eventId`) makes the request safe to repeat: a repeat answers 200 with the event accepted first.
#[utoipa::path(
    post,
    path = "/event",
    tag = "events",
    security(("apiKey" = []), ("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a repeated request answer the first one's event (1 to 255 visible ASCII characters)")),
    request_body(content = EventRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: recorded in MongoDB and acknowledged by Kafka", body = AcceptedBody),
        (status = 200, description = "A repeat of an event accepted before (same Idempotency-Key or eventId)", body = AcceptedBody),
        (status = 400, description = "Not an acceptable event (each problem named in `details`), malformed JSON, or a bad Idempotency-Key", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `ingest` scope", body = ErrorBody),
        (status = 413, description = "The body is larger than HERALD_MAX_BODY_BYTES", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON", body = ErrorBody),
        (status = 429, description = "The key's rate limit is reached; see the Retry-After header", body = ErrorBody),
        (status = 503, description = "MongoDB or Kafka did not answer, or the request timed out (see the message: the event may be recorded and published later)", body = ErrorBody),
    )
)]
async fn accept_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Answer, ApiError> {
    let event = parse_event(&body, &state.rules);
    accept_parsed(&state, &headers, event).await
}

/// Record an activity log entry.
///
/// Stored and published as a record-only event: it reaches RECORDED and is never delivered. Alert rules can
/// watch these (the failed-request monitor counts `request.failed` entries per `metadata.ip`). The answer also
/// carries the activity-log service's `success` and `message`.
#[utoipa::path(
    post,
    path = "/api/logs",
    tag = "events",
    security(("apiKey" = []), ("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a repeated request answer the first one's event")),
    request_body(content = ActivityRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted", body = PublishedBody),
        (status = 200, description = "A repeat of an entry accepted before", body = PublishedBody),
        (status = 400, description = "Not an acceptable entry (each problem named), or malformed JSON", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `ingest` scope", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON", body = ErrorBody),
        (status = 429, description = "The key's rate limit is reached; see Retry-After", body = ErrorBody),
        (status = 503, description = "MongoDB or Kafka did not answer, or the request timed out", body = ErrorBody),
    )
)]
async fn accept_activity(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let event = parse_activity(&body);
    let answer = accept_parsed(&state, &headers, event).await?;
    Ok(published(answer, ACTIVITY_PUBLISHED))
}

/// Reports the body's and the headers' problems together, or accepts the event.
pub(crate) async fn accept_parsed(
    state: &AppState,
    headers: &HeaderMap,
    event: Result<Event, Vec<FieldError>>,
) -> Result<Answer, ApiError> {
    let key = headers
        .get(IdempotencyKey::HEADER)
        .map(|raw| IdempotencyKey::parse(raw.as_bytes()))
        .transpose();
    let (event, key) = match (event, key) {
        (Ok(event), Ok(key)) => (event, key),
        (event, key) => {
            let mut details = event.err().unwrap_or_default();
            details.extend(key.err());
            details.sort_by(|a, b| {
                a.field
                    .cmp(&b.field)
                    .then_with(|| a.message.cmp(&b.message))
            });
            return Err(ApiError::Validation(details));
        }
    };
    let request_id = http::request_id(headers);
    accept(state, event, key, request_id).await
}

/// Records the event as QUEUED with its outbox entry and publishes it: 202 only once both MongoDB and Kafka have it;
/// the entry is cleared after the answer.
/// A repeated key or event id answers 200 with the event accepted first, and publishes nothing.
///
/// Its span, `ingest.accept`, is the request's child, and the lane message carries the trace context of its
/// publish, a child of this one: the publish runs here, in the request's task, while the store writes are batched
/// in a task of their own.
#[tracing::instrument(name = "ingest.accept", skip_all, fields(event_id = %event.event_id, priority = %event.priority))]
async fn accept(
    state: &AppState,
    mut event: Event,
    key: Option<IdempotencyKey>,
    request_id: Option<&str>,
) -> Result<Answer, ApiError> {
    let mongo_down = |e: mongodb::error::Error| {
        tracing::warn!(error = %e, "mongodb did not answer; nothing accepted");
        ApiError::Unavailable(Dependency::Mongo)
    };
    if !state.indexes.is_open() {
        tracing::warn!("the mongodb indexes do not exist yet; nothing accepted");
        return Err(ApiError::Unavailable(Dependency::Mongo));
    }
    let accepting = Accepting {
        record: EventRecord::accepted(&event),
        key: key.map(|key| key.as_str().to_owned()),
    };
    let inserted = state
        .recorders
        .for_priority(event.priority)
        .call(accepting)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot record events");
            ApiError::Internal
        })?
        .map_err(mongo_down)?;
    match inserted {
        Inserted::New => {}
        Inserted::Adopted(id) => {
            // The key's first request recorded the key, then failed: its event id is the one created now.
            tracing::info!(adopted = %id, "the idempotency key named an event id already");
            tracing::Span::current().record("event_id", tracing::field::display(&id));
            event.event_id = id;
        }
        Inserted::Existing(found) => {
            tracing::info!(original = %found.event_id, status = %found.status, "repeated request");
            let answer = Accepted {
                event_id: found.event_id,
                status: found.status,
                priority: found.priority,
            };
            return Ok((StatusCode::OK, Json(answer)));
        }
    }
    if let Err(e) = state.publisher.publish_first(&event, 0, request_id).await {
        tracing::warn!(error = %e, "kafka did not acknowledge; the event stays in the outbox for the sweeper");
        return Err(match e {
            PublishError::Kafka(_) => ApiError::Unavailable(Dependency::Kafka),
            PublishError::Encode(_) => ApiError::Internal,
        });
    }
    // Kafka has the event, so it is accepted whatever happens here: the outbox entry is cleared after the answer,
    // gathered with other requests' entries. An entry left behind makes the sweeper publish the event once more,
    // which is harmless.
    state.clearer.clear(event.event_id.clone(), 0);
    let status = Status::Queued;
    tracing::info!(%status, "accepted");
    metrics::counter!("herald_events_accepted_total",
        "channel" => event.channel.map_or("none", |c| c.as_str()),
        "priority" => event.priority.as_str())
    .increment(1);
    let answer = Accepted {
        event_id: event.event_id,
        status,
        priority: event.priority,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)))
}
