//! The handler of `GET /api/stats`.

use axum::extract::{RawQuery, State};
use axum::Json;

use super::view::Stats;
use crate::error::ApiError;
use crate::logs::params;
use crate::openapi::ErrorBody;
use crate::AppState;

/// Count events by status, channel and priority.
///
/// Counted per whole UTC hour of creation: `from` is taken down to its hour and `to` up to the end of its hour
/// (`countedFrom` and `countedBefore` say which hours were counted). Delivered, recorded and dead-lettered events
/// come from day and hour buckets kept from the status topic (seconds behind the events); events still in flight
/// from a count of the events themselves at most `HERALD_QUERY_STATS_IN_FLIGHT_MAX_AGE_MS` old
/// (`inFlightCountedAt` says when).
#[utoipa::path(
    get,
    path = "/api/stats",
    tag = "stats",
    security(("apiKey" = []), ("bearer" = [])),
    params(
        ("from" = Option<String>, Query, description = "Only events created at or after this time (ISO 8601 \
            date-time with a zone, or a date), down to its hour"),
        ("startDate" = Option<String>, Query, description = "Another name for `from`"),
        ("to" = Option<String>, Query, description = "Only events created at or before this time (a date: up to \
            its end), up to the end of its hour"),
        ("endDate" = Option<String>, Query, description = "Another name for `to`"),
    ),
    responses(
        (status = 200, description = "The counts", body = Stats),
        (status = 400, description = "Bad parameters, each one named", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Stats>, ApiError> {
    let query = params::parse_stats(params::pairs(raw.as_deref())).map_err(ApiError::Validation)?;
    let counts = state
        .stats
        .counts(&query.range)
        .await
        .map_err(|e| ApiError::from_mongo(e, state.request_timeout))?;
    Ok(Json(Stats::from(counts)))
}
