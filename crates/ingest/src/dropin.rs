//! Drop-in routes for clients of the event services Herald replaces: `POST /events/generate` (the activity-event
//! service's), and the answer shape those services give when they accept an entry (`success`, `message`).
//!
//! Each request becomes an ordinary Herald event, recorded and published as `POST /event` would; only the body
//! read and the answer's shape differ.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use herald_domain::request::parse_generated;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::openapi::ErrorBody;
use crate::routes::{accept_parsed, Accepted, Answer};
use crate::AppState;

/// What `POST /events/generate` answers, as the activity-event service documents it.
pub(crate) const EVENT_PUBLISHED: &str = "Event published successfully";
/// What `POST /api/logs` answers, as the activity-log service documents it.
pub(crate) const ACTIVITY_PUBLISHED: &str = "Activity log published successfully";

/// Herald's answer to an accepted event, with the `success` and `message` of the services Herald replaces.
#[derive(Debug, Serialize)]
pub(crate) struct Published {
    success: bool,
    message: &'static str,
    #[serde(flatten)]
    accepted: Accepted,
}

/// The answer of `accept_parsed`, in the replaced services' shape.
pub(crate) fn published(
    (status, Json(accepted)): Answer,
    message: &'static str,
) -> (StatusCode, Json<Published>) {
    (
        status,
        Json(Published {
            success: true,
            message,
            accepted,
        }),
    )
}

/// The answer to an accepted (202) or repeated (200) entry of the drop-in shape.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
#[schema(example = json!({"success": true, "message": "Event published successfully",
    "eventId": "0192f0c4-7d4e-7a8e-9b1c-3f5d2a1e9c77", "status": "QUEUED", "priority": "default"}))]
pub struct PublishedBody {
    /// Always `true` (a failure is an error answer).
    pub success: bool,
    /// `Event published successfully` or `Activity log published successfully`.
    pub message: String,
    pub event_id: String,
    /// `QUEUED` (published), `PENDING` (recorded, publishing later), or where a repeated event is now.
    pub status: String,
    /// Always `default` for these record-only events.
    pub priority: String,
}

/// `POST /events/generate`: a user activity event (`UserEvent`).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
#[schema(example = json!({"userId": "user123", "eventType": "LOGIN", "payload": {"ip": "127.0.0.1"}}))]
pub struct GenerateRequest {
    /// Who did it (at most 256 characters).
    pub user_id: String,
    /// What happened (`LOGIN`; stored as the event's `eventType`, at most 128 characters).
    pub event_type: String,
    /// Anything to keep with it (an object); default `{}`.
    pub payload: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// Publish a user activity event.
///
/// The activity-event service's route: the event is recorded and published as a record-only event (it ends
/// RECORDED, and `GET /events/processed` on herald-query lists it then). 202 once MongoDB and Kafka have it.
#[utoipa::path(
    post,
    path = "/events/generate",
    tag = "events",
    security(("apiKey" = []), ("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a repeated request answer the first one's event")),
    request_body(content = GenerateRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: recorded in MongoDB and acknowledged by Kafka", body = PublishedBody),
        (status = 200, description = "A repeat of an event accepted before (same Idempotency-Key)", body = PublishedBody),
        (status = 400, description = "Not an acceptable event (each problem named), or malformed JSON", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `ingest` scope", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON", body = ErrorBody),
        (status = 429, description = "The key's rate limit is reached; see Retry-After", body = ErrorBody),
        (status = 503, description = "MongoDB or Kafka did not answer, or the request timed out", body = ErrorBody),
    )
)]
pub(crate) async fn generate_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    herald_platform::http::JsonBody(body): herald_platform::http::JsonBody,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let event = parse_generated(&body);
    let answer = accept_parsed(&state, &headers, event).await?;
    Ok(published(answer, EVENT_PUBLISHED))
}
