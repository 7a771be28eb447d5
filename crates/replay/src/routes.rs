//! The HTTP API: `POST /replay-dead-letter` (a key with the `admin` scope), `GET /api/dead-letters` (`read`), the
//! health and metrics routes and the documentation, in platform's standard middleware with the body limit.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::middleware;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use herald_domain::{Channel, EventId, FieldError, Priority};
use herald_platform::health::{self, Readiness};
use herald_platform::http::auth::{self, Required};
use herald_platform::http::{self, BodyLimit, OptionalJsonBody, Scope, Standard};
use herald_platform::store::EventRecord;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::error::ApiError;
use crate::openapi::{ApiDoc, ErrorBody, ReplayRequest};
use crate::params::{parse_list, parse_replay};
use crate::AppState;

/// What a request cut short by the timeout means for its caller.
const TIMEOUT_HINT: &str =
    "a replay that was running goes on in the background: GET /api/dead-letters shows what is left";

/// Every route of the service, with its middleware.
pub(crate) fn router(state: AppState, config: &Config) -> Router {
    let readiness = Readiness::of(Some(&config.kafka), &state.db, &state.indexes);
    let auth = Arc::new(config.http.auth.clone());
    let admin = OpenApiRouter::new()
        .routes(routes!(replay_dead_letters))
        .route_layer(middleware::from_fn_with_state(
            Required {
                auth: auth.clone(),
                scope: Scope::Admin,
            },
            auth::require,
        ));
    let read = OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .route_layer(middleware::from_fn_with_state(
            Required {
                auth,
                scope: Scope::Read,
            },
            auth::require,
        ));
    let (api, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(admin)
        .merge(read)
        .with_state(state)
        .merge(health::openapi_router("herald-replay", readiness))
        .split_for_parts();
    let api = BodyLimit(config.max_body_bytes).apply(api);
    let docs = http::openapi::finish(document);
    Standard {
        service: "herald-replay",
        request_timeout: config.request_timeout,
        timeout_hint: TIMEOUT_HINT,
        http: &config.http,
    }
    .apply(api.merge(docs))
}

/// The answer to a replay or a dry run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ReplayAnswer {
    /// How many dead letters were (or, in a dry run, would be) put back on their lanes.
    replayed: usize,
    /// Their ids, oldest dead letter first.
    #[schema(value_type = Vec<String>)]
    event_ids: Vec<EventId>,
    dry_run: bool,
}

/// Replay dead letters.
///
/// Puts the selected dead letters (oldest first, after skipping the first `from`) back on their original priority
/// lane with a fresh attempt budget and a replay entry in their timeline, paced at the configured rate. An event already back in flight is left
/// alone, so repeating a request (or two at once) delivers each event once. `dryRun` changes nothing.
#[utoipa::path(
    post,
    path = "/replay-dead-letter",
    tag = "replay",
    security(("apiKey" = []), ("bearer" = [])),
    request_body(content = Option<ReplayRequest>, content_type = "application/json", description = "Optional: no body (or `{}`) replays the oldest dead letters up to 1000"),
    responses(
        (status = 200, description = "What was (or, in a dry run, would be) replayed", body = ReplayAnswer),
        (status = 400, description = "Bad fields (each named), or malformed JSON", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 413, description = "The body is larger than HERALD_MAX_BODY_BYTES", body = ErrorBody),
        (status = 415, description = "A body not declared as JSON", body = ErrorBody),
        (status = 503, description = "MongoDB or Kafka failed part-way (the message says what was done and what is left), or the request timed out (the replay goes on)", body = ErrorBody),
    )
)]
async fn replay_dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Json<ReplayAnswer>, ApiError> {
    let request = parse_replay(body.as_ref()).map_err(ApiError::Validation)?;
    if request.dry_run {
        let selected = state
            .replayer
            .select(&request.filter, request.from, request.limit)
            .await
            .map_err(mongo_down)?;
        let event_ids: Vec<EventId> = selected.into_iter().map(|r| r.event_id).collect();
        return Ok(Json(ReplayAnswer {
            replayed: event_ids.len(),
            event_ids,
            dry_run: true,
        }));
    }
    let request_id = http::request_id(&headers).map(str::to_owned);
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
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DeadLetterItem {
    #[schema(value_type = String)]
    event_id: EventId,
    user_id: Option<String>,
    event_type: Option<String>,
    #[schema(value_type = Option<String>, example = "webhook")]
    channel: Option<Channel>,
    #[schema(value_type = String, example = "critical")]
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

#[derive(Debug, Serialize, ToSchema)]
struct Pagination {
    page: u32,
    limit: u32,
    total: u64,
    pages: u64,
}

/// A page of dead letters.
#[derive(Debug, Serialize, ToSchema)]
struct DeadLetterPage {
    data: Vec<DeadLetterItem>,
    pagination: Pagination,
}

/// List dead letters.
///
/// The dead letters a replay with the same filter would take, oldest dead letter first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/dead-letters",
    tag = "replay",
    security(("apiKey" = []), ("bearer" = [])),
    params(
        ("eventIds" = Option<String>, Query, description = "Comma-separated event ids"),
        ("channel" = Option<String>, Query, description = "`email`, `sms` or `webhook`"),
        ("eventType" = Option<String>, Query),
        ("priority" = Option<String>, Query, description = "`critical` or `default`"),
        ("since" = Option<String>, Query, description = "Dead-lettered at or after (ISO 8601)"),
        ("until" = Option<String>, Query, description = "Dead-lettered before (ISO 8601)"),
        ("page" = Option<u32>, Query, description = "From 1; default 1"),
        ("limit" = Option<u32>, Query, description = "1 to 100; default 20"),
    ),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterPage),
        (status = 400, description = "Bad parameters, each one named", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer", body = ErrorBody),
    )
)]
async fn list_dead_letters(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let Query(pairs) = query.map_err(|rejection| {
        ApiError::Validation(vec![FieldError::new("query", rejection.body_text())])
    })?;
    let request = parse_list(&pairs).map_err(ApiError::Validation)?;
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
