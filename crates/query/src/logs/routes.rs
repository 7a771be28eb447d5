//! The handlers of the `logs` resource: `GET /api/logs` and `GET /api/logs/{id}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use herald_domain::{EventId, FieldError};

use super::params::{self, ListParams, Position};
use super::reader::Found;
use super::view::{EventDetail, EventSummary, LogPage, Pagination};
use crate::error::ApiError;
use crate::openapi::ErrorBody;
use crate::AppState;

/// List events.
///
/// Filters combine (all must match). Offset pagination (`page`) and keyset pagination (`cursor`, from the
/// previous page's `nextCursor`, which costs the same on every page and never skips or repeats an event while new
/// ones arrive). `total` and `pages` are given on the last page, and on any page with `total=true` (which counts
/// every matching event); otherwise they are null.
#[utoipa::path(
    get,
    path = "/api/logs",
    tag = "logs",
    security(("apiKey" = []), ("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of events", body = LogPage),
        (status = 400, description = "Bad parameters: each one is named in `details` (unknown or repeated \
            parameter, limit outside 1..100, page 0 or too deep, unknown status/channel/priority, bad date, \
            bad cursor or one made for other filters, cursor together with page)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
pub async fn list_logs(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<LogPage>, ApiError> {
    let query = params::parse_list(params::pairs(raw.as_deref())).map_err(ApiError::Validation)?;
    let mongo = |e| ApiError::from_mongo(e, state.request_timeout);
    let page = state.reader.page(&query).await.map_err(mongo)?;
    // The total is given when the page tells it (the last offset page) and counted only when asked for
    // (`total=true`): a count reads every matching event (on FerretDB, fetches it), which an unselective list
    // cannot afford on every page, and a cursor walk has no use for it.
    let told = match query.position {
        Position::Page(number) if !page.more && (number == 1 || !page.events.is_empty()) => {
            Some(query.offset() + page.events.len() as u64)
        }
        _ => None,
    };
    let total = match told {
        Some(total) => Some(total),
        None if query.with_total => Some(state.reader.count(&query.filters).await.map_err(mongo)?),
        None => None,
    };
    let next_cursor = page.next_cursor(&query);
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
    security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The event id", max_length = 128)),
    responses(
        (status = 200, description = "The event, its attempts and every step of its timeline, in order", body = EventDetail),
        (status = 400, description = "The id cannot be an event id", body = ErrorBody),
        (status = 404, description = "No event has this id", body = ErrorBody,
            example = json!({"error": "Event not found", "details": []})),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
pub async fn get_log(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<EventDetail>, ApiError> {
    let found = find_event(&state, id).await?;
    Ok(Json(EventDetail::new(found, &state.mask)))
}

/// The event a route's `{id}` names: 400 when it cannot be an event id, 404 when no event has it.
pub(crate) async fn find_event(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
) -> Result<Found, ApiError> {
    let id = id.map_err(|e| ApiError::Validation(vec![FieldError::new("id", e.body_text())]))?;
    let id = EventId::parse(&id)
        .map_err(|e| ApiError::Validation(vec![FieldError::new("id", e.to_string())]))?;
    state
        .reader
        .find(&id)
        .await
        .map_err(|e| ApiError::from_mongo(e, state.request_timeout))?
        .ok_or(ApiError::EventNotFound)
}
