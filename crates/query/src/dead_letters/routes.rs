//! The handler of the `dead-letters` resource: `GET /api/dead-letters`.

use axum::extract::{RawQuery, State};
use axum::Json;

use super::params::{self, DeadLetterParams};
use crate::error::ApiError;
use crate::logs::params::pairs;
use crate::logs::view::{EventSummary, LogPage, Pagination};
use crate::openapi::ErrorBody;
use crate::AppState;

/// List dead letters.
///
/// The events in `DEAD_LETTERED`, newest (by creation) first, a page at a time: pass `nextCursor` back as
/// `cursor` with the same filters for the next page. Each item has the event's `lastError`, `deadLetterReason`
/// and `deadLetteredAt`, masked as in `GET /api/logs`. No total is counted (it would read every dead letter);
/// `GET /api/stats` counts them. To replay them, `POST /replay-dead-letter` on herald-replay.
#[utoipa::path(
    get,
    path = "/api/dead-letters",
    tag = "logs",
    security(("apiKey" = []), ("bearer" = [])),
    params(DeadLetterParams),
    responses(
        (status = 200, description = "A page of dead letters", body = LogPage),
        (status = 400, description = "Bad parameters, each one named in `details` (unknown or repeated \
            parameter, limit outside 1..100, unknown channel or priority, bad date, bad cursor or one made for \
            other filters)", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<LogPage>, ApiError> {
    let query = params::parse(pairs(raw.as_deref())).map_err(ApiError::Validation)?;
    let page = state
        .reader
        .page(&query)
        .await
        .map_err(|e| ApiError::from_mongo(e, state.request_timeout))?;
    let next_cursor = page.next_cursor(&query);
    let data = page
        .events
        .into_iter()
        .map(|found| EventSummary::new(found, &state.mask))
        .collect();
    Ok(Json(LogPage {
        data,
        pagination: Pagination {
            page: None,
            limit: query.limit,
            total: None,
            pages: None,
            next_cursor,
        },
    }))
}
