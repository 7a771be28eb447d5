//! What the alert routes answer with (camelCase JSON, each type also its OpenAPI schema).

use chrono::{DateTime, Utc};
use herald_platform::alerts::{AlertRecord, EmailStatus};
use serde::Serialize;
use utoipa::ToSchema;

use crate::logs::view::Pagination;

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
