//! Drop-in routes for clients of the event services Herald replaces, read from Herald's own `events`:
//! `GET /events/processed` (the activity-event service's processed events), `GET /user-logs` and
//! `GET /user-logs/{id}` (the financial activity-log service's, `{data, metadata: {page, limit, total,
//! totalPages}}`).
//!
//! They are views of the same events `GET /api/logs` lists, through the same reader, masking and parameter
//! checks; only the parameter names and the answer's shape are those systems'.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use chrono::{DateTime, Utc};
use herald_domain::{FieldError, Status};
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::logs::params::{self, ListQuery, Position};
use crate::logs::routes::find_event;
use crate::logs::view::EventSummary;
use crate::openapi::ErrorBody;
use crate::AppState;

/// Most processed events one `GET /events/processed` answers with.
pub const MAX_PROCESSED: u32 = 1000;
/// Processed events answered when the request does not say.
pub const DEFAULT_PROCESSED: u32 = 100;

fn iso<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A processed event, as the activity-event service lists it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessedEvent {
    #[schema(example = "0196a0b4-6f0e-7c1a-9d7e-3b1f2a4c5d6e")]
    pub event_id: String,
    pub user_id: Option<String>,
    #[schema(example = "LOGIN")]
    pub event_type: Option<String>,
    /// When it happened: a `payload.timestamp` the client gave, else when Herald accepted it.
    #[serde(serialize_with = "iso")]
    pub timestamp: DateTime<Utc>,
    /// The event's payload, with the configured fields masked as `"***"`.
    #[schema(value_type = Object)]
    pub payload: Value,
}

impl From<EventSummary> for ProcessedEvent {
    fn from(event: EventSummary) -> Self {
        Self {
            event_id: event.event_id,
            user_id: event.user_id,
            event_type: event.event_type,
            timestamp: event.timestamp,
            payload: event.payload,
        }
    }
}

/// A user activity log (a send, a receive, a balance inquiry), as the financial activity-log service shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserLog {
    /// The log's id, which `GET /user-logs/{id}` takes: the event id.
    #[serde(rename = "_id")]
    #[schema(rename = "_id")]
    pub id: String,
    /// The same id, under Herald's name.
    pub event_id: String,
    pub user_id: Option<String>,
    /// What the user did (`send`, `receive`, `balance_inquiry`): the event's `eventType`.
    #[schema(example = "send")]
    pub action: Option<String>,
    /// Where the event is in Herald (`RECORDED` for an activity log entry).
    #[schema(schema_with = crate::openapi::status)]
    pub status: Status,
    /// The event's payload, with the configured fields masked as `"***"`.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The event's metadata, with the configured fields masked as `"***"`.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// When it happened: the client's `timestamp`, else when Herald accepted it.
    #[serde(serialize_with = "iso")]
    pub timestamp: DateTime<Utc>,
    /// When Herald accepted it.
    #[serde(serialize_with = "iso")]
    pub created_at: DateTime<Utc>,
}

impl From<EventSummary> for UserLog {
    fn from(event: EventSummary) -> Self {
        Self {
            id: event.event_id.clone(),
            event_id: event.event_id,
            user_id: event.user_id,
            action: event.event_type,
            status: event.status,
            payload: event.payload,
            metadata: event.metadata,
            timestamp: event.timestamp,
            created_at: event.created_at,
        }
    }
}

/// Where a page of user logs is in its list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserLogMetadata {
    pub page: u32,
    pub limit: u32,
    /// How many logs match the filters.
    pub total: u64,
    /// How many pages of `limit` logs that is.
    pub total_pages: u64,
}

/// A page of user logs.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UserLogPage {
    pub data: Vec<UserLog>,
    pub metadata: UserLogMetadata,
}

/// The parameters of `GET /user-logs`, as documented.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct UserLogParams {
    /// Only this user's logs (exact match).
    #[param(max_length = 256)]
    pub user_id: Option<String>,
    /// Only this action (`send`, `receive`, `balance_inquiry`, or any event type; exact match).
    #[param(max_length = 128)]
    pub action: Option<String>,
    /// Page number, from 1. Default 1.
    #[param(value_type = Option<u32>, minimum = 1)]
    pub page: Option<String>,
    /// Logs per page, 1 to 100. Default 10.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
}

/// The parameters of `GET /events/processed`.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ProcessedParams {
    /// Only this user's events (exact match).
    #[param(max_length = 256)]
    pub user_id: Option<String>,
    /// Only events of this type (exact match).
    #[param(max_length = 128)]
    pub event_type: Option<String>,
    /// At most this many, newest first: 1 to 1000. Default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// Checks a drop-in route's parameters with `GET /api/logs`'s rules: `names` maps each of the route's names to
/// the name `/api/logs` knows it by, and problems are reported under the route's names.
fn translated(
    pairs: Vec<(String, String)>,
    names: &[(&str, &str)],
) -> Result<ListQuery, Vec<FieldError>> {
    let known: Vec<&str> = names.iter().map(|(ours, _)| *ours).collect();
    let mut problems = Vec::new();
    let mut passed = Vec::new();
    for (name, value) in pairs {
        match names.iter().find(|(ours, _)| *ours == name) {
            Some((_, theirs)) => passed.push(((*theirs).to_owned(), value)),
            None => problems.push(FieldError::new(
                &name,
                format!("is not a parameter here; known: {}", known.join(", ")),
            )),
        }
    }
    let parsed = params::parse_list(passed).map_err(|errors| {
        errors
            .into_iter()
            .map(|mut e| {
                if let Some((ours, _)) = names.iter().find(|(_, theirs)| *theirs == e.field) {
                    e.field = (*ours).to_owned();
                }
                e
            })
            .collect::<Vec<_>>()
    });
    with_problems(parsed, problems)
}

/// `parsed`, unless it or the `problems` found beside it have any: then all of them, sorted by field.
fn with_problems(
    parsed: Result<ListQuery, Vec<FieldError>>,
    mut problems: Vec<FieldError>,
) -> Result<ListQuery, Vec<FieldError>> {
    match parsed {
        Ok(query) if problems.is_empty() => Ok(query),
        parsed => {
            problems.extend(parsed.err().unwrap_or_default());
            problems.sort_by(|a, b| {
                a.field
                    .cmp(&b.field)
                    .then_with(|| a.message.cmp(&b.message))
            });
            Err(problems)
        }
    }
}

/// Reads `GET /user-logs`'s parameters: `action` is the event type.
pub fn parse_user_logs(pairs: Vec<(String, String)>) -> Result<ListQuery, Vec<FieldError>> {
    translated(
        pairs,
        &[
            ("userId", "userId"),
            ("action", "eventType"),
            ("page", "page"),
            ("limit", "limit"),
        ],
    )
}

/// Reads `GET /events/processed`'s parameters: the RECORDED events, newest first, at most `limit` (1 to
/// [`MAX_PROCESSED`], a longer page than `/api/logs` allows, since these clients expect every event at once).
pub fn parse_processed(pairs: Vec<(String, String)>) -> Result<ListQuery, Vec<FieldError>> {
    let (limits, rest): (Vec<_>, Vec<_>) = pairs.into_iter().partition(|(name, _)| name == "limit");
    let mut problems = Vec::new();
    let limit = match limits.as_slice() {
        [] => DEFAULT_PROCESSED,
        [(_, raw)] => match raw.parse::<u32>() {
            Ok(n) if (1..=MAX_PROCESSED).contains(&n) => n,
            _ => {
                problems.push(FieldError::new(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_PROCESSED}"),
                ));
                DEFAULT_PROCESSED
            }
        },
        _ => {
            problems.push(FieldError::new("limit", "is given more than once"));
            DEFAULT_PROCESSED
        }
    };
    let names = [
        ("userId", "userId"),
        ("eventType", "eventType"),
        ("limit", "limit"),
    ];
    with_problems(translated(rest, &names), problems).map(|mut query| {
        query.filters.status = Some(Status::Recorded);
        query.limit = limit;
        query
    })
}

/// List processed events.
///
/// The activity-event service's route: the record-only events Herald has recorded (status RECORDED), newest
/// first, as a plain array. Herald keeps every event, so the answer is bounded by `limit`.
#[utoipa::path(
    get,
    path = "/events/processed",
    tag = "logs",
    security(("apiKey" = []), ("bearer" = [])),
    params(ProcessedParams),
    responses(
        (status = 200, description = "The processed events, newest first", body = Vec<ProcessedEvent>),
        (status = 400, description = "Bad parameters, each one named", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
pub(crate) async fn list_processed(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<ProcessedEvent>>, ApiError> {
    let query = parse_processed(params::pairs(raw.as_deref())).map_err(ApiError::Validation)?;
    let page = state
        .reader
        .page(&query)
        .await
        .map_err(|e| ApiError::from_mongo(e, state.request_timeout))?;
    Ok(Json(
        page.events
            .into_iter()
            .map(|found| ProcessedEvent::from(EventSummary::new(found, &state.mask)))
            .collect(),
    ))
}

/// List user activity logs.
///
/// The financial activity-log service's route over Herald's events: filters by user and action (the event type),
/// newest first, with the total counted on every page.
#[utoipa::path(
    get,
    path = "/user-logs",
    tag = "logs",
    security(("apiKey" = []), ("bearer" = [])),
    params(UserLogParams),
    responses(
        (status = 200, description = "A page of logs", body = UserLogPage),
        (status = 400, description = "Bad parameters, each one named", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
pub(crate) async fn list_user_logs(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<UserLogPage>, ApiError> {
    let query = parse_user_logs(params::pairs(raw.as_deref())).map_err(ApiError::Validation)?;
    // The documented answer always has the total, so it is counted, beside the page.
    let (page, total) = tokio::try_join!(
        state.reader.page(&query),
        state.reader.count(&query.filters)
    )
    .map_err(|e| ApiError::from_mongo(e, state.request_timeout))?;
    let number = match query.position {
        Position::Page(number) => number,
        Position::After(_) => 1,
    };
    Ok(Json(UserLogPage {
        data: page
            .events
            .into_iter()
            .map(|found| UserLog::from(EventSummary::new(found, &state.mask)))
            .collect(),
        metadata: UserLogMetadata {
            page: number,
            limit: query.limit,
            total,
            total_pages: total.div_ceil(u64::from(query.limit)),
        },
    }))
}

/// Show one user activity log.
#[utoipa::path(
    get,
    path = "/user-logs/{id}",
    tag = "logs",
    security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The log's `_id` (its event id)", max_length = 128)),
    responses(
        (status = 200, description = "The log", body = UserLog),
        (status = 400, description = "The id cannot be an event id", body = ErrorBody),
        (status = 404, description = "No log has this id", body = ErrorBody,
            example = json!({"error": "Event not found", "details": []})),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
pub(crate) async fn get_user_log(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<UserLog>, ApiError> {
    let found = find_event(&state, id).await?;
    Ok(Json(UserLog::from(EventSummary::new(found, &state.mask))))
}

#[cfg(test)]
mod tests {
    use herald_domain::Status;

    use super::*;

    fn pairs(raw: &str) -> Vec<(String, String)> {
        params::pairs(Some(raw))
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn user_log_parameters_are_read_as_list_filters() {
        let query = parse_user_logs(pairs("userId=user-1&action=send&page=1&limit=10"))
            .expect("the documented request");
        assert_eq!(query.filters.user_id.as_deref(), Some("user-1"));
        assert_eq!(query.filters.event_type.as_deref(), Some("send"));
        assert_eq!((query.limit, query.position), (10, Position::Page(1)));
        let defaults = parse_user_logs(Vec::new()).expect("no parameters");
        assert_eq!((defaults.limit, defaults.position), (10, Position::Page(1)));
    }

    #[test]
    fn user_log_problems_are_named_as_the_client_named_them() {
        let errors =
            parse_user_logs(pairs("action=&page=0&limit=500&status=x")).expect_err("invalid");
        assert_eq!(fields(&errors), ["action", "limit", "page", "status"]);
        assert!(
            errors[3].message.contains("userId, action, page, limit"),
            "{errors:?}"
        );
    }

    #[test]
    fn processed_events_are_the_recorded_ones_up_to_a_long_limit() {
        let query = parse_processed(Vec::new()).expect("no parameters");
        assert_eq!(query.filters.status, Some(Status::Recorded));
        assert_eq!(query.limit, DEFAULT_PROCESSED);
        let query = parse_processed(pairs("limit=1000&userId=user123")).expect("valid");
        assert_eq!(query.limit, 1000);
        assert_eq!(query.filters.user_id.as_deref(), Some("user123"));
        let errors = parse_processed(pairs("limit=1001&status=DELIVERED")).expect_err("invalid");
        assert_eq!(fields(&errors), ["limit", "status"]);
        let errors = parse_processed(pairs("limit=1&limit=2")).expect_err("repeated");
        assert_eq!(
            errors,
            vec![FieldError::new("limit", "is given more than once")]
        );
    }
}
