//! `GET /api/alerts` and `GET /api/alerts/{id}`: the alerts `herald-alert` raised, read from the `alerts`
//! collection (`herald_platform::alerts`), newest first, with filters on rule, group and time and offset pages.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use herald_domain::FieldError;
use herald_platform::alerts::{AlertRecord, EmailStatus, ALERTS};
use mongodb::bson::{self, doc, Document};
use mongodb::{Collection, Database};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::openapi::ErrorBody;
use crate::params::{self, Range, DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET};
use crate::view::Pagination;
use crate::AppState;

/// Longest rule name or group value accepted as a filter.
const MAX_LABEL_LEN: usize = 200;

/// Read access to `alerts`, every query bounded by `max_time` on the server.
#[derive(Debug, Clone)]
pub struct AlertReader {
    alerts: Collection<AlertRecord>,
    max_time: std::time::Duration,
}

/// A validated `GET /api/alerts` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertQuery {
    pub rule: Option<String>,
    pub group: Option<String>,
    /// On `createdAt`, when the alert was raised.
    pub range: Range,
    pub page: u32,
    pub limit: u32,
}

impl AlertReader {
    pub fn new(db: &Database, max_time: std::time::Duration) -> Self {
        Self {
            alerts: db.collection(ALERTS),
            max_time,
        }
    }

    fn filter(query: &AlertQuery) -> Document {
        let mut filter = Document::new();
        if let Some(rule) = &query.rule {
            filter.insert("rule", rule);
        }
        if let Some(group) = &query.group {
            filter.insert("group", group);
        }
        let mut created = Document::new();
        if let Some(from) = query.range.from {
            created.insert("$gte", bson::DateTime::from_chrono(from));
        }
        if let Some(before) = query.range.before {
            created.insert("$lt", bson::DateTime::from_chrono(before));
        }
        if !created.is_empty() {
            filter.insert("createdAt", created);
        }
        filter
    }

    /// One page, newest first, and the number of alerts matching.
    pub async fn page(
        &self,
        query: &AlertQuery,
    ) -> mongodb::error::Result<(Vec<AlertRecord>, u64)> {
        let filter = Self::filter(query);
        let skip = u64::from(query.page - 1) * u64::from(query.limit);
        let alerts: Vec<AlertRecord> = self
            .alerts
            .find(filter.clone())
            .sort(doc! { "createdAt": -1, "_id": -1 })
            .skip(skip)
            .limit(i64::from(query.limit))
            .max_time(self.max_time)
            .await?
            .try_collect()
            .await?;
        let total = self
            .alerts
            .count_documents(filter)
            .max_time(self.max_time)
            .await?;
        Ok((alerts, total))
    }

    pub async fn find(&self, id: &str) -> mongodb::error::Result<Option<AlertRecord>> {
        self.alerts
            .find_one(doc! { "_id": id })
            .max_time(self.max_time)
            .await
    }
}

/// The parameters of `GET /api/alerts`, as the OpenAPI document shows them.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the raw query string; this type only documents the parameters.
pub struct AlertParams {
    /// Only alerts of this rule (exact match), such as `failed-requests`.
    #[param(max_length = 200)]
    rule: Option<String>,
    /// Only alerts of this group (exact match), such as `10.0.0.1`; `*` for rules without `groupBy`.
    #[param(max_length = 200)]
    group: Option<String>,
    /// Only alerts raised at or after this time: an ISO 8601 date-time with a zone, or a date.
    #[param(example = "2024-05-01T00:00:00Z")]
    from: Option<String>,
    /// Only alerts raised at or before this time: an ISO 8601 date-time with a zone, or a date (up to its end).
    #[param(example = "2024-05-31")]
    to: Option<String>,
    /// Page number, from 1 (`(page - 1) * limit` may be at most 10000). Default 1.
    #[param(value_type = Option<u32>, minimum = 1)]
    page: Option<String>,
    /// Alerts per page, 1 to 100. Default 10.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

const NAMES: [&str; 8] = [
    "rule",
    "group",
    "from",
    "startDate",
    "to",
    "endDate",
    "page",
    "limit",
];

/// Validates the parameters of `GET /api/alerts`, listing every problem.
pub fn parse_list(pairs: Vec<(String, String)>) -> Result<AlertQuery, Vec<FieldError>> {
    let mut problems = Vec::new();
    let mut times = Vec::new();
    let (mut rule, mut group, mut page, mut limit) = (None, None, None, None);
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in pairs {
        if !NAMES.contains(&name.as_str()) {
            problems.push(FieldError::new(
                &name,
                format!("is not a parameter here; known: {}", NAMES.join(", ")),
            ));
            continue;
        }
        if !seen.insert(name.clone()) {
            problems.push(FieldError::new(&name, "is given more than once"));
            continue;
        }
        match name.as_str() {
            "rule" | "group" => {
                let slot = if name == "rule" {
                    &mut rule
                } else {
                    &mut group
                };
                if value.trim().is_empty() {
                    problems.push(FieldError::new(&name, "must not be empty"));
                } else if value.chars().count() > MAX_LABEL_LEN {
                    problems.push(FieldError::new(
                        &name,
                        format!("must be at most {MAX_LABEL_LEN} characters long"),
                    ));
                } else {
                    *slot = Some(value);
                }
            }
            "page" => match value.parse::<u32>() {
                Ok(n) if n >= 1 => page = Some(n),
                _ => problems.push(FieldError::new(
                    "page",
                    "must be a whole number of 1 or more",
                )),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = Some(n),
                _ => problems.push(FieldError::new(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                )),
            },
            _ => times.push((name, value)),
        }
    }
    // The time range reads exactly as on `/api/stats`.
    let range = match params::parse_stats(times) {
        Ok(stats) => stats.range,
        Err(errors) => {
            problems.extend(errors);
            Range::default()
        }
    };
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if u64::from(page - 1) * u64::from(limit) > MAX_OFFSET {
        problems.push(FieldError::new(
            "page",
            format!("reaches past {MAX_OFFSET} alerts ((page - 1) * limit); narrow from/to"),
        ));
    }
    if problems.is_empty() {
        Ok(AlertQuery {
            rule,
            group,
            range,
            page,
            limit,
        })
    } else {
        problems.sort_by(|a, b| {
            a.field
                .cmp(&b.field)
                .then_with(|| a.message.cmp(&b.message))
        });
        Err(problems)
    }
}

/// Where an alert's email is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailView {
    /// `pending` (not sent yet; tried again at `nextAttemptAt`), `sent`, or `failed` (given up).
    #[schema(example = "sent")]
    pub status: String,
    /// Sends tried.
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// An alert: a rule's threshold crossed by one group within its window.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    #[schema(example = "5f0c6a1e9b2d4c7a8e3f1b20")]
    pub id: String,
    #[schema(example = "failed-requests")]
    pub rule: String,
    /// The value of the rule's `groupBy` field, `*` for a rule without one.
    #[schema(example = "10.0.0.1")]
    pub group: String,
    /// 0 for the first alert of this rule and group, 1 for the first reminder, ...
    pub seq: u32,
    /// `info`, `warning` or `critical`.
    #[schema(example = "warning")]
    pub severity: String,
    /// Matching steps within the window when the alert was raised.
    pub count: u64,
    pub threshold: u64,
    pub window_secs: u64,
    pub cooldown_secs: u64,
    /// The first and last counted step within the window.
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    /// The newest events counted.
    pub sample_event_ids: Vec<String>,
    /// `GET /api/logs` listing the events of the rule around the window.
    pub query_url: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub email: EmailView,
    /// When the alert was raised.
    pub created_at: DateTime<Utc>,
}

impl From<AlertRecord> for AlertView {
    fn from(a: AlertRecord) -> Self {
        Self {
            id: a.id,
            rule: a.rule,
            group: a.group,
            seq: a.seq,
            severity: a.severity,
            count: a.count,
            threshold: a.threshold,
            window_secs: a.window_secs,
            cooldown_secs: a.cooldown_secs,
            first_at: a.first_at,
            last_at: a.last_at,
            sample_event_ids: a.sample_event_ids,
            query_url: a.query_url,
            recipients: a.recipients,
            subject: a.subject,
            email: EmailView {
                status: match a.email.status {
                    EmailStatus::Pending => "pending",
                    EmailStatus::Sent => "sent",
                    EmailStatus::Failed => "failed",
                }
                .to_owned(),
                attempts: a.email.attempts,
                last_error: a.email.last_error,
                next_attempt_at: a.email.next_attempt_at,
                sent_at: a.email.sent_at,
            },
            created_at: a.created_at,
        }
    }
}

/// A page of alerts.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlertPage {
    pub data: Vec<AlertView>,
    pub pagination: Pagination,
}

/// The errors of the alert routes: the service's own, and an unknown alert.
#[derive(Debug)]
pub enum AlertError {
    Api(ApiError),
    /// 404: no alert has this id.
    NotFound,
}

impl From<ApiError> for AlertError {
    fn from(e: ApiError) -> Self {
        AlertError::Api(e)
    }
}

impl IntoResponse for AlertError {
    fn into_response(self) -> Response {
        match self {
            AlertError::Api(e) => e.into_response(),
            AlertError::NotFound => (
                StatusCode::NOT_FOUND,
                Json(herald_domain::ErrorBody::new("Alert not found")),
            )
                .into_response(),
        }
    }
}

/// List alerts, newest first.
#[utoipa::path(
    get,
    path = "/api/alerts",
    tag = "alerts",
    security(("apiKey" = []), ("bearer" = [])),
    params(AlertParams),
    responses(
        (status = 200, description = "A page of alerts, with the total", body = AlertPage),
        (status = 400, description = "Bad parameters, each one named in `details`", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
pub async fn list_alerts(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AlertPage>, AlertError> {
    let query = parse_list(params::pairs(raw.as_deref())).map_err(ApiError::Validation)?;
    let (alerts, total) = state
        .alerts
        .page(&query)
        .await
        .map_err(|e| ApiError::from_mongo(e, state.request_timeout))?;
    Ok(Json(AlertPage {
        data: alerts.into_iter().map(AlertView::from).collect(),
        pagination: Pagination {
            page: Some(query.page),
            limit: query.limit,
            total: Some(total),
            pages: Some(total.div_ceil(u64::from(query.limit))),
            next_cursor: None,
        },
    }))
}

/// Show one alert.
#[utoipa::path(
    get,
    path = "/api/alerts/{id}",
    tag = "alerts",
    security(("apiKey" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The alert id", max_length = 64)),
    responses(
        (status = 200, description = "The alert, with its email's state", body = AlertView),
        (status = 400, description = "The id cannot be an alert id", body = ErrorBody),
        (status = 404, description = "No alert has this id", body = ErrorBody,
            example = json!({"error": "Alert not found", "details": []})),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
pub async fn get_alert(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<AlertView>, AlertError> {
    let id = id.map_err(|e| ApiError::Validation(vec![FieldError::new("id", e.body_text())]))?;
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "id",
            "must be 1 to 64 letters and digits",
        )])
        .into());
    }
    let alert = state
        .alerts
        .find(&id)
        .await
        .map_err(|e| ApiError::from_mongo(e, state.request_timeout))?
        .ok_or(AlertError::NotFound)?;
    Ok(Json(AlertView::from(alert)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(query: &str) -> Vec<String> {
        parse_list(params::pairs(Some(query)))
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn filters_and_pages_are_read_and_every_bad_one_named() {
        let query = parse_list(params::pairs(Some(
            "rule=failed-requests&group=10.0.0.1&from=2024-05-01&to=2024-05-01&page=2&limit=5",
        )))
        .expect("valid");
        assert_eq!(query.rule.as_deref(), Some("failed-requests"));
        assert_eq!(query.group.as_deref(), Some("10.0.0.1"));
        assert!(query.range.from.is_some() && query.range.before.is_some());
        assert_eq!((query.page, query.limit), (2, 5));
        let defaults = parse_list(Vec::new()).expect("valid");
        assert_eq!((defaults.page, defaults.limit), (1, DEFAULT_LIMIT));
        assert_eq!(
            fields("rule=&limit=0&page=0&from=soon&colour=red&group=a&group=b"),
            ["colour", "from", "group", "limit", "page", "rule"]
        );
        assert_eq!(fields("from=2024-05-02&to=2024-05-01"), ["to"]);
    }
}
