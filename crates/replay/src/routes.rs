//! The HTTP API: `POST /replay-dead-letter`, `GET /api/dead-letters`, the health routes, and the middleware around
//! them (request ids, tracing, the request timeout, the body limit).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use herald_domain::{Channel, EventId, FieldError, Priority};
use herald_platform::health::{self, Readiness};
use herald_platform::store::EventRecord;
use serde::Serialize;
use serde_json::Value;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::Config;
use crate::error::ApiError;
use crate::params::{parse_list, parse_replay};
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
        .route("/replay-dead-letter", post(replay_dead_letters))
        .route("/api/dead-letters", get(list_dead_letters))
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
/// (tower-http's `TimeoutLayer` answers with an empty body, which would break the one-error-shape rule.) A replay
/// runs on a task of its own, so cutting its request short does not cut the replay short.
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// An optional JSON body: `None` when there is none (an empty body needs no content type).
///
/// Rejects a body declared as anything but JSON, or not declared at all (415), one over the limit (413) and one
/// that is not JSON (400).
struct OptionalJson(Option<Value>);

impl FromRequest<AppState> for OptionalJson {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if content_type.as_deref().is_some_and(|ct| !is_json(ct)) {
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
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        if content_type.is_none() {
            return Err(ApiError::UnsupportedMediaType(None));
        }
        serde_json::from_slice(&bytes)
            .map(|value| Self(Some(value)))
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

/// The answer to a replay or a dry run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReplayAnswer {
    /// How many dead letters were (or, in a dry run, would be) put back on their lanes.
    replayed: usize,
    /// Their ids, oldest dead letter first.
    event_ids: Vec<EventId>,
    dry_run: bool,
}

/// `POST /replay-dead-letter`.
async fn replay_dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson,
) -> Result<Json<ReplayAnswer>, ApiError> {
    let request = parse_replay(body.as_ref()).map_err(ApiError::Validation)?;
    state.ensure_indexes().await;
    if request.dry_run {
        let selected = state
            .replayer
            .select(&request.filter, request.limit)
            .await
            .map_err(mongo_down)?;
        let event_ids: Vec<EventId> = selected.into_iter().map(|r| r.event_id).collect();
        return Ok(Json(ReplayAnswer {
            replayed: event_ids.len(),
            event_ids,
            dry_run: true,
        }));
    }
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let replayer = state.replayer.clone();
    // On a task of its own: a client that goes away, or the request timeout, does not stop the replay half-way.
    let running = state
        .tasks
        .spawn(async move { replayer.replay(request, request_id).await });
    match running.await {
        Ok(Ok(event_ids)) => Ok(Json(ReplayAnswer {
            replayed: event_ids.len(),
            event_ids,
            dry_run: false,
        })),
        Ok(Err(stopped)) => Err(ApiError::ReplayStopped(stopped)),
        Err(e) => {
            tracing::error!(error = %e, "the replay task failed");
            Err(ApiError::Internal)
        }
    }
}

fn mongo_down(e: mongodb::error::Error) -> ApiError {
    tracing::warn!(error = %e, "mongodb did not answer");
    ApiError::MongoUnavailable
}

/// One dead letter in a listing.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetterItem {
    event_id: EventId,
    user_id: Option<String>,
    event_type: Option<String>,
    channel: Option<Channel>,
    priority: Priority,
    attempt_count: u32,
    replay_count: u32,
    dead_letter_reason: Option<String>,
    dead_lettered_at: Option<String>,
    last_error: Option<String>,
    created_at: String,
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<EventRecord> for DeadLetterItem {
    fn from(record: EventRecord) -> Self {
        Self {
            event_id: record.event_id,
            user_id: record.user_id,
            event_type: record.event_type,
            channel: record.channel,
            priority: record.priority,
            attempt_count: record.attempt_count,
            replay_count: record.replay_count,
            dead_letter_reason: record.dead_letter_reason,
            dead_lettered_at: record.dead_lettered_at.map(timestamp),
            last_error: record.last_error,
            created_at: timestamp(record.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
struct Pagination {
    page: u32,
    limit: u32,
    total: u64,
    pages: u64,
}

#[derive(Debug, Serialize)]
struct DeadLetterPage {
    data: Vec<DeadLetterItem>,
    pagination: Pagination,
}

/// `GET /api/dead-letters`: the dead letters a replay with the same filter would take, oldest first, a page at a
/// time.
async fn list_dead_letters(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let Query(pairs) = query.map_err(|rejection| {
        ApiError::Validation(vec![FieldError::new("query", rejection.body_text())])
    })?;
    let request = parse_list(&pairs).map_err(ApiError::Validation)?;
    state.ensure_indexes().await;
    let skip = u64::from(request.page - 1) * u64::from(request.limit);
    let (records, total) = tokio::try_join!(
        state
            .store
            .dead_letters_page(&request.filter, skip, i64::from(request.limit)),
        state.store.count_dead_letters(&request.filter),
    )
    .map_err(mongo_down)?;
    Ok(Json(DeadLetterPage {
        data: records.into_iter().map(DeadLetterItem::from).collect(),
        pagination: Pagination {
            page: request.page,
            limit: request.limit,
            total,
            pages: total.div_ceil(u64::from(request.limit)),
        },
    }))
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
