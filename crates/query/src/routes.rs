//! The HTTP API: `GET /api/logs`, `GET /api/logs/{id}`, `GET /api/stats`, the health routes, the documentation,
//! and the middleware around them (request ids, tracing, the request timeout).
//!
//! Routes are only added through [`OpenApiRouter::routes`], which records each handler's `#[utoipa::path]`
//! operation as it adds the route: the document and the router are built from the same list.

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use herald_domain::{EventId, FieldError};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::cursor::Cursor;
use crate::error::ApiError;
use crate::openapi::{self, ApiDoc, ErrorBody, HealthStatus};
use crate::params::{self, ListParams, Position};
use crate::view::{EventDetail, EventSummary, LogPage, Pagination, Stats};
use crate::AppState;

/// The header carrying the request id: the client's, or a UUID generated here.
const REQUEST_ID: &str = "x-request-id";

/// Every route of the service with its middleware, the OpenAPI document among them.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let (api, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_logs))
        .routes(routes!(get_log))
        .routes(routes!(stats))
        .routes(routes!(health))
        .routes(routes!(ready))
        .with_state(state)
        .split_for_parts();
    openapi::add_doc_routes(&mut document);
    let docs = SwaggerUi::new(openapi::DOCS_PATH).url(openapi::OPENAPI_PATH, document);
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
    api.merge(docs)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(trace)
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn_with_state(request_timeout, time_limit)),
        )
}

/// Answers 503 in the standard shape when a request takes longer than `limit`.
///
/// (tower-http's `TimeoutLayer` answers with an empty body, which would break the one-error-shape rule.) The
/// MongoDB queries carry the same bound as `maxTimeMS`, so the server stops working on an abandoned request too.
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// List events.
///
/// Filters combine (all must match). Offset pagination (`page`) answers with `total` and `pages`; keyset
/// pagination (`cursor`, from the previous page's `nextCursor`) answers without them, costs the same on every
/// page and never skips or repeats an event while new ones arrive.
#[utoipa::path(
    get,
    path = "/api/logs",
    tag = "logs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of events", body = LogPage),
        (status = 400, description = "Bad parameters: each one is named in `details` (unknown or repeated \
            parameter, limit outside 1..100, page 0 or too deep, unknown status/channel/priority, bad date, \
            bad cursor or one made for other filters, cursor together with page)", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
async fn list_logs(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<LogPage>, ApiError> {
    let query = params::parse_list(params::pairs(raw.as_deref())).map_err(ApiError::Validation)?;
    let mongo = |e| ApiError::from_mongo(e, state.request_timeout);
    let page = state.reader.page(&query).await.map_err(mongo)?;
    // The total is counted only for offset pages, and only when the page does not already tell it (a last
    // page): counting is as expensive as the page itself on FerretDB, and a cursor walk has no use for it.
    let total = match query.position {
        Position::After(_) => None,
        Position::Page(number) if !page.more && (number == 1 || !page.events.is_empty()) => {
            Some(query.offset() + page.events.len() as u64)
        }
        Position::Page(_) => Some(state.reader.count(&query.filters).await.map_err(mongo)?),
    };
    let next_cursor = match page.events.last() {
        Some(last) if page.more => Some(
            Cursor::after(
                query.order,
                &query.filters,
                last.record.created_at,
                last.record.event_id.clone(),
            )
            .encode(),
        ),
        _ => None,
    };
    let pagination = Pagination {
        page: match query.position {
            Position::Page(page) => Some(page),
            Position::After(_) => None,
        },
        limit: query.limit,
        total,
        pages: total.map(|total| total.div_ceil(u64::from(query.limit))),
        next_cursor,
    };
    let data = page
        .events
        .into_iter()
        .map(|found| EventSummary::new(found, &state.mask))
        .collect();
    Ok(Json(LogPage { data, pagination }))
}

/// Show one event with its attempts and timeline.
#[utoipa::path(
    get,
    path = "/api/logs/{id}",
    tag = "logs",
    params(("id" = String, Path, description = "The event id", max_length = 128)),
    responses(
        (status = 200, description = "The event, its attempts and every step of its timeline, in order", body = EventDetail),
        (status = 400, description = "The id cannot be an event id", body = ErrorBody),
        (status = 404, description = "No event has this id", body = ErrorBody,
            example = json!({"error": "Event not found", "details": []})),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
async fn get_log(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<EventDetail>, ApiError> {
    let id = id.map_err(|e| ApiError::Validation(vec![FieldError::new("id", e.body_text())]))?;
    let id = EventId::parse(&id)
        .map_err(|e| ApiError::Validation(vec![FieldError::new("id", e.to_string())]))?;
    let found = state
        .reader
        .find(&id)
        .await
        .map_err(|e| ApiError::from_mongo(e, state.request_timeout))?
        .ok_or(ApiError::EventNotFound)?;
    Ok(Json(EventDetail::new(found, &state.mask)))
}

/// Count events by status, channel and priority.
#[utoipa::path(
    get,
    path = "/api/stats",
    tag = "stats",
    params(
        ("from" = Option<String>, Query, description = "Only events created at or after this time (ISO 8601 \
            date-time with a zone, or a date)"),
        ("startDate" = Option<String>, Query, description = "Another name for `from`"),
        ("to" = Option<String>, Query, description = "Only events created at or before this time (a date: up to \
            its end)"),
        ("endDate" = Option<String>, Query, description = "Another name for `to`"),
    ),
    responses(
        (status = 200, description = "The counts", body = Stats),
        (status = 400, description = "Bad parameters, each one named", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
async fn stats(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Stats>, ApiError> {
    let query = params::parse_stats(params::pairs(raw.as_deref())).map_err(ApiError::Validation)?;
    let counts = state
        .reader
        .counts(&query.range)
        .await
        .map_err(|e| ApiError::from_mongo(e, state.request_timeout))?;
    Ok(Json(Stats::from(counts)))
}

/// Whether the process is up. Touches no dependency.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "health",
    responses((status = 200, description = "Up", body = HealthStatus)),
)]
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Whether MongoDB answers a ping (within 2 s). This service needs nothing else.
#[utoipa::path(
    get,
    path = "/api/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = HealthStatus, example = json!({"status": "ready"})),
        (status = 503, description = "MongoDB did not answer", body = ErrorBody),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.readiness.check().await.map_err(ApiError::NotReady)?;
    Ok(Json(json!({ "status": "ready" })))
}
