//! The `alerts` collection: every alert `herald-alert` raised, with the state of its email. `herald-alert` writes
//! it, `herald-query` reads it; this type is the one definition of a stored alert.

use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc, Document};
use mongodb::options::IndexOptions;
use mongodb::{Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::mongo;

/// One document per alert.
pub const ALERTS: &str = "alerts";

/// Where an alert's email is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailStatus {
    /// Not sent yet: the sender tries it at `nextAttemptAt`.
    Pending,
    /// Accepted by the SMTP server.
    Sent,
    /// Given up: the attempts ran out, or the message cannot be built.
    Failed,
}

impl EmailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailStatus::Pending => "pending",
            EmailStatus::Sent => "sent",
            EmailStatus::Failed => "failed",
        }
    }
}

/// The email of an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailState {
    pub status: EmailStatus,
    /// Sends tried so far.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "bson::serde_helpers::chrono_datetime_as_bson_datetime_optional"
    )]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "bson::serde_helpers::chrono_datetime_as_bson_datetime_optional"
    )]
    pub sent_at: Option<DateTime<Utc>>,
}

/// An alert: a rule's threshold crossed by one group within its window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRecord {
    /// Derived from rule, group and `seq`, so that two processes raising the same alert collide on it.
    #[serde(rename = "_id")]
    pub id: String,
    pub rule: String,
    /// The value of the rule's `groupBy` field (`10.0.0.1` for `metadata.ip`), `*` without one.
    pub group: String,
    /// 0 for the first alert of this rule and group, then 1, 2, ... (one per cooldown at most).
    pub seq: u32,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// Matching steps within the window when the alert was raised.
    pub count: u64,
    pub threshold: u64,
    pub window_secs: u64,
    pub cooldown_secs: u64,
    /// The first and last matching step within the window.
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub first_at: DateTime<Utc>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub last_at: DateTime<Utc>,
    /// A few of the events counted, newest last.
    pub sample_event_ids: Vec<String>,
    /// Where the events can be listed (`herald-query`).
    pub query_url: String,
    pub recipients: Vec<String>,
    pub subject: String,
    /// The email's text, kept so that a resend after a restart sends the same message.
    pub text: String,
    pub email: EmailState,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub created_at: DateTime<Utc>,
}

fn named(keys: Document, name: &str) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().name(name.to_owned()).build())
        .build()
}

/// The indexes of `alerts`: lists newest first (alone, by rule, by group), the latest alert of a rule and
/// group, and the sender's due pending emails.
pub fn alert_indexes() -> Vec<IndexModel> {
    vec![
        named(doc! { "createdAt": -1, "_id": -1 }, "createdAt_id"),
        named(
            doc! { "rule": 1, "createdAt": -1, "_id": -1 },
            "rule_createdAt_id",
        ),
        named(
            doc! { "group": 1, "createdAt": -1, "_id": -1 },
            "group_createdAt_id",
        ),
        named(doc! { "rule": 1, "group": 1, "seq": -1 }, "rule_group_seq"),
        named(
            doc! { "email.status": 1, "email.nextAttemptAt": 1 },
            "emailStatus_nextAttemptAt",
        ),
    ]
}

/// Creates the `alerts` indexes that are missing.
pub async fn ensure_alert_indexes(db: &Database) -> mongo::Result<()> {
    mongo::ensure_indexes(db, ALERTS, alert_indexes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_round_trips_through_bson() {
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).expect("a time");
        let alert = AlertRecord {
            id: "a1".into(),
            rule: "failed-requests".into(),
            group: "10.0.0.1".into(),
            seq: 0,
            severity: "warning".into(),
            count: 6,
            threshold: 6,
            window_secs: 600,
            cooldown_secs: 600,
            first_at: at,
            last_at: at,
            sample_event_ids: vec!["e1".into()],
            query_url: "http://localhost:3001/api/logs".into(),
            recipients: vec!["ops@example.com".into()],
            subject: "s".into(),
            text: "t".into(),
            email: EmailState {
                status: EmailStatus::Pending,
                attempts: 0,
                last_error: None,
                next_attempt_at: Some(at),
                sent_at: None,
            },
            created_at: at,
        };
        let document = bson::to_document(&alert).expect("encodable");
        assert_eq!(document.get_str("_id").ok(), Some("a1"));
        assert!(document
            .get_document("email")
            .is_ok_and(|e| e.get_datetime("nextAttemptAt").is_ok()));
        let back: AlertRecord = bson::from_document(document).expect("decodable");
        assert_eq!(back, alert);
    }
}
