//! The HTTP API: `POST /event`, `POST /api/logs`, the health routes, and the middleware around them (request
//! ids, tracing, the request timeout, the body limit).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use herald_domain::request::{parse_activity, parse_event, IdempotencyKey};
use herald_domain::{Event, EventId, FieldError, Priority, Status};
use herald_platform::health::{self, Readiness};
use herald_platform::store::{EventRecord, Inserted};
use serde::Serialize;
use serde_json::Value;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::Config;
use crate::error::{ApiError, Dependency};
use crate::outbox::PublishError;
use crate::AppState;

/// The header carrying the request id: the client's, or a UUID generated here.
const REQUEST_ID: &str = "x-request-id";

/// Every route of the service, with its middleware.
pub(crate) fn router(state: AppState, config: &Config) -> Router {
    let readiness = Readiness {
        kafka: Some(config.kafka.clone()),
        mongo: Some(state.db.clone()),
        timeout: None,
    };
    let api = Router::new()
        .route("/event", post(accept_event))
        .route("/api/logs", post(accept_activity))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state);
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
        })
        .on_response(DefaultOnResponse::new().level(Level::INFO));
    api.merge(health::router(readiness))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(trace)
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn_with_state(
                    config.request_timeout,
                    time_limit,
                )),
        )
}

/// Answers 503 in the standard shape when a request takes longer than `limit`.
///
/// (tower-http's `TimeoutLayer` answers with an empty body, which would break the one-error-shape rule.) A
/// request cut short after its event was recorded leaves it PENDING: the sweeper publishes it, and a retry with
/// the same key or event id finds it.
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// A JSON body, read as a `serde_json::Value` so that validation can report every problem at once.
///
/// Rejects a body not declared as JSON (415), one over the limit (413) and one that is not JSON (400).
struct JsonBody(Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if !content_type.as_deref().is_some_and(is_json) {
            return Err(ApiError::UnsupportedMediaType(content_type));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge {
                        limit: state.max_body_bytes,
                    }
                } else {
                    ApiError::UnreadableBody(rejection.body_text())
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::MalformedJson(e.to_string()))
    }
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The answer to an accepted (202) or repeated (200) event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    event_id: EventId,
    status: Status,
    priority: Priority,
}

type Answer = (StatusCode, Json<Accepted>);

/// `POST /event`.
async fn accept_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Answer, ApiError> {
    let event = parse_event(&body, &state.rules);
    accept_parsed(&state, &headers, event).await
}

/// `POST /api/logs`: an activity log entry, stored and published as a record-only event.
async fn accept_activity(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Answer, ApiError> {
    let event = parse_activity(&body);
    accept_parsed(&state, &headers, event).await
}

/// Reports the body's and the headers' problems together, or accepts the event.
async fn accept_parsed(
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
    let request_id = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok());
    accept(state, event, key, request_id).await
}

/// Records the event as PENDING, publishes it, marks it QUEUED: 202 only once both MongoDB and Kafka have it.
/// A repeated key or event id answers 200 with the event accepted first, and publishes nothing.
#[tracing::instrument(skip_all, fields(event_id = %event.event_id, priority = %event.priority))]
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
    if !state.indexes_ready() {
        tracing::warn!("the mongodb indexes do not exist yet; nothing accepted");
        return Err(ApiError::Unavailable(Dependency::Mongo));
    }
    let key = key.as_ref().map(IdempotencyKey::as_str);
    let record = EventRecord::pending(&event);
    if let Inserted::Existing(found) = state
        .store
        .insert_pending(&record, key)
        .await
        .map_err(mongo_down)?
    {
        tracing::info!(original = %found.event_id, status = %found.status, "repeated request");
        let answer = Accepted {
            event_id: found.event_id,
            status: found.status,
            priority: found.priority,
        };
        return Ok((StatusCode::OK, Json(answer)));
    }
    if let Some(key) = key {
        // A key whose first request failed between its two writes names the event that was just created.
        if let Some(id) = state
            .store
            .event_id_for_key(key)
            .await
            .map_err(mongo_down)?
        {
            if id != event.event_id {
                tracing::info!(adopted = %id, "the idempotency key named an event id already");
                tracing::Span::current().record("event_id", tracing::field::display(&id));
                event.event_id = id;
            }
        }
    }
    if let Err(e) = state.publisher.publish(&event, 0, request_id).await {
        tracing::warn!(error = %e, "kafka did not acknowledge; the event stays PENDING for the sweeper");
        return Err(match e {
            PublishError::Kafka(_) => ApiError::Unavailable(Dependency::Kafka),
            PublishError::Encode(_) => ApiError::Internal,
        });
    }
    let status = match state.store.mark_queued(&event.event_id).await {
        Ok(true) => Status::Queued,
        // A dispatcher was faster: answer where the event is now.
        Ok(false) => match state.store.find(&event.event_id).await {
            Ok(Some(current)) => current.status,
            _ => Status::Queued,
        },
        Err(e) => {
            // Kafka has the event, so it is accepted; the sweeper publishes it once more, which is harmless.
            tracing::warn!(error = %e, "cannot mark the event QUEUED");
            Status::Queued
        }
    };
    tracing::info!(%status, "accepted");
    let answer = Accepted {
        event_id: event.event_id,
        status,
        priority: event.priority,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json(""));
    }
}
