//! The handlers of the `alerts` resource.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use herald_domain::FieldError;

use super::params::{self, AlertParams};
use super::view::{AlertPage, AlertView};
use crate::error::ApiError;
use crate::logs::view::Pagination;
use crate::openapi::ErrorBody;
use crate::AppState;

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
) -> Result<Json<AlertPage>, ApiError> {
    let query = params::parse_list(crate::logs::params::pairs(raw.as_deref()))
        .map_err(ApiError::Validation)?;
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
) -> Result<Json<AlertView>, ApiError> {
    let id = id.map_err(|e| ApiError::Validation(vec![FieldError::new("id", e.body_text())]))?;
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "id",
            "must be 1 to 64 letters and digits",
        )]));
    }
    let alert = state
        .alerts
        .find(&id)
        .await
        .map_err(|e| ApiError::from_mongo(e, state.request_timeout))?
        .ok_or(ApiError::AlertNotFound)?;
    Ok(Json(AlertView::from(alert)))
}
