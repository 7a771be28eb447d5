//! The sliding windows, kept in MongoDB so that they survive a restart, and the raising of alerts.
//!
//! Each matching status message becomes one document of `alert_hits` whose `_id` names the rule, the group and
//! the step (`eventId`, replay count, attempt, outcome): a redelivered message inserts nothing new, so it is never
//! counted twice. A window's count is a count of hits since `at - window`.
//!
//! An alert is claimed by inserting it under an id made of rule, group and sequence number (the latest alert's
//! plus one): two processes, or a redelivery, raising the same alert collide on that id, and only one wins. While
//! the latest alert of a rule and group is younger than the cooldown, nothing is raised. (FerretDB 1.x does not
//! make concurrent conditional updates of one document atomic; unique inserts are atomic everywhere.)
//!
//! Within a cooldown a step costs at most one command, and usually none: each process remembers until when each
//! rule and group is quiet (from the alerts it read or raised; alerts are only ever added, so what it remembers
//! can only be earlier than the truth, never later). A step inside that time raises nothing, so nothing is
//! counted; its hit is kept only when a window ending after the cooldown would still count it. A restart forgets
//! this and reads the alerts again: a cost, never a different answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use herald_domain::StatusMessage;
use herald_platform::alerts::{AlertRecord, EmailState, EmailStatus, ALERTS};
use herald_platform::mongo::{self, is_duplicate_key};
use mongodb::bson::{self, doc, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use sha2::{Digest, Sha256};
use url::Url;

use crate::rules::{format_duration, Rule, ALL};

/// One document per counted step.
pub const ALERT_HITS: &str = "alert_hits";
/// How many event ids an alert carries as samples.
pub const N_SAMPLES: i64 = 5;
/// The most rule and group pairs whose quiet time a process remembers; past it, it forgets them all.
const MAX_REMEMBERED: usize = 10_000;

/// Until when each (rule name, group) is known to be quiet.
type QuietUntil = HashMap<(String, String), DateTime<Utc>>;

/// The windows and the alerts of one database.
#[derive(Debug, Clone)]
pub struct Windows {
    hits: Collection<Document>,
    alerts: Collection<AlertRecord>,
    query_url: Url,
    /// Until when each (rule, group) is known to be in its cooldown.
    quiet: Arc<Mutex<QuietUntil>>,
}

/// A stored alert that was just raised.
pub type Raised = AlertRecord;

fn to_bson_time(at: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_chrono(at)
}

fn chrono_window(rule: &Rule) -> chrono::Duration {
    chrono::Duration::from_std(rule.window).unwrap_or(chrono::Duration::MAX)
}

fn chrono_cooldown(rule: &Rule) -> chrono::Duration {
    chrono::Duration::from_std(rule.cooldown).unwrap_or(chrono::Duration::MAX)
}

impl Windows {
    pub fn new(db: &Database, query_url: Url) -> Self {
        Self {
            hits: db.collection(ALERT_HITS),
            alerts: db.collection(ALERTS),
            query_url,
            quiet: Arc::default(),
        }
    }

    /// Creates the indexes of `alert_hits` and `alerts` that are missing.
    pub async fn ensure_indexes(db: &Database) -> mongo::Result<()> {
        let named = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build()
        };
        mongo::ensure_indexes(
            db,
            ALERT_HITS,
            vec![
                named(doc! { "rule": 1, "group": 1, "at": -1 }, "rule_group_at"),
                named(doc! { "expireAt": 1 }, "expireAt"),
            ],
        )
        .await?;
        herald_platform::alerts::ensure_alert_indexes(db).await
    }

    /// Counts `status` in `rule`'s window for `group` (once, however often it is delivered) and raises an alert
    /// when the threshold is reached outside the cooldown. Idempotent: calling it again for the same message
    /// raises nothing more.
    pub async fn observe(
        &self,
        rule: &Rule,
        group: &str,
        status: &StatusMessage,
    ) -> mongo::Result<Option<Raised>> {
        let window = chrono_window(rule);
        // Within a cooldown this process knows of, nothing is raised. Only a window ending after it would count
        // this step.
        let in_cooldown = self
            .quiet_until(rule, group)
            .filter(|until| status.at < *until);
        if let Some(until) = in_cooldown {
            if status.at < until.checked_sub_signed(window).unwrap_or(until) {
                return Ok(None);
            }
        }
        let hit_id = format!(
            "{}\u{1f}{group}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            rule.name, status.event_id, status.replay_count, status.attempt, status.outcome
        );
        let hit = doc! {
            "_id": &hit_id,
            "rule": &rule.name,
            "group": group,
            "eventId": status.event_id.as_str(),
            "at": to_bson_time(status.at),
            "expireAt": to_bson_time(status.at.checked_add_signed(window).unwrap_or(status.at)),
        };
        match self.hits.insert_one(hit).await {
            Ok(_) => {}
            // Counted before: this is a redelivery. It is still evaluated, because the first delivery may have
            // died before it could raise its alert.
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e),
        }
        if in_cooldown.is_some() {
            return Ok(None);
        }
        let since = status.at.checked_sub_signed(window).unwrap_or(status.at);
        let in_window =
            doc! { "rule": &rule.name, "group": group, "at": { "$gte": to_bson_time(since) } };
        let count = self.hits.count_documents(in_window.clone()).await?;
        if count < rule.threshold {
            return Ok(None);
        }
        let latest = self
            .alerts
            .find_one(doc! { "rule": &rule.name, "group": group })
            .sort(doc! { "seq": -1 })
            .await?;
        let seq = match &latest {
            Some(latest) => {
                let quiet_until = latest.last_at.checked_add_signed(chrono_cooldown(rule));
                self.remember_quiet(rule, group, quiet_until);
                if quiet_until.is_none_or(|until| status.at < until) {
                    return Ok(None);
                }
                latest.seq + 1
            }
            None => 0,
        };
        let newest: Vec<Document> = self
            .hits
            .find(in_window.clone())
            .sort(doc! { "at": -1, "_id": -1 })
            .limit(N_SAMPLES)
            .await?
            .try_collect()
            .await?;
        let oldest = self.hits.find_one(in_window).sort(doc! { "at": 1 }).await?;
        let time = |d: &Document| d.get_datetime("at").ok().map(|t| t.to_chrono());
        let last_at = newest.first().and_then(time).unwrap_or(status.at);
        let first_at = oldest.as_ref().and_then(time).unwrap_or(last_at);
        let mut samples: Vec<String> = newest
            .iter()
            .filter_map(|d| d.get_str("eventId").ok().map(str::to_owned))
            .collect();
        samples.reverse();
        let alert = self.compose(rule, group, seq, count, first_at, last_at, samples);
        match self.alerts.insert_one(&alert).await {
            Ok(_) => {
                let quiet_until = alert.last_at.checked_add_signed(chrono_cooldown(rule));
                self.remember_quiet(rule, group, quiet_until);
                Ok(Some(alert))
            }
            // Raised by another process, or by an earlier delivery of this message.
            Err(e) if is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Until when `rule` is known to be quiet for `group`, if this process has seen an alert of theirs.
    fn quiet_until(&self, rule: &Rule, group: &str) -> Option<DateTime<Utc>> {
        let quiet = self.quiet.lock().unwrap_or_else(|e| e.into_inner());
        quiet.get(&(rule.name.clone(), group.to_owned())).copied()
    }

    /// Remembers that `rule` is quiet for `group` until `until` (`None`: for ever), unless it knew of a later time.
    fn remember_quiet(&self, rule: &Rule, group: &str, until: Option<DateTime<Utc>>) {
        let until = until.unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut quiet = self.quiet.lock().unwrap_or_else(|e| e.into_inner());
        if quiet.len() >= MAX_REMEMBERED {
            quiet.clear();
        }
        let known = quiet
            .entry((rule.name.clone(), group.to_owned()))
            .or_insert(until);
        *known = (*known).max(until);
    }

    /// Deletes hits that no window needs any more.
    pub async fn delete_expired(&self) -> mongo::Result<u64> {
        let result = self
            .hits
            .delete_many(doc! { "expireAt": { "$lt": to_bson_time(Utc::now()) } })
            .await?;
        Ok(result.deleted_count)
    }

    /// Where people read an alert, and list the events of a rule between two times.
    fn link(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut url = self.query_url.clone();
        url.set_path(path);
        if query.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut()
                .clear()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url.to_string()
    }

    #[allow(clippy::too_many_arguments)]
    fn compose(
        &self,
        rule: &Rule,
        group: &str,
        seq: u32,
        count: u64,
        first_at: DateTime<Utc>,
        last_at: DateTime<Utc>,
        samples: Vec<String>,
    ) -> AlertRecord {
        let id = alert_id(&rule.name, group, seq);
        let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        // The events were created before their steps, so the list starts a window before the first step.
        let from = first_at
            .checked_sub_signed(chrono_window(rule))
            .unwrap_or(first_at);
        let mut filters: Vec<(&str, String)> = Vec::new();
        if let Some(t) = &rule.matcher.event_type {
            filters.push(("eventType", t.clone()));
        }
        if let Some(c) = rule.matcher.channel {
            filters.push(("channel", c.as_str().to_owned()));
        }
        if let Some(p) = rule.matcher.priority {
            filters.push(("priority", p.as_str().to_owned()));
        }
        match rule.matcher.outcome {
            Some(herald_domain::StatusOutcome::DeadLettered) => {
                filters.push(("status", "DEAD_LETTERED".to_owned()))
            }
            Some(herald_domain::StatusOutcome::Recorded) => {
                filters.push(("status", "RECORDED".to_owned()))
            }
            _ => {}
        }
        filters.push(("from", stamp(from)));
        filters.push(("to", stamp(last_at)));
        filters.push(("limit", "100".to_owned()));
        let query_url = self.link("/api/logs", &filters);
        let alert_url = self.link(&format!("/api/alerts/{id}"), &[]);
        let severity = rule.severity.as_str();
        let shown_group = if group == ALL { "all" } else { group };
        let subject = format!(
            "[Herald {}] {}: {shown_group}{}",
            severity.to_ascii_uppercase(),
            rule.name,
            if seq > 0 { " (still going on)" } else { "" }
        );
        let grouping = rule
            .group_by
            .as_ref()
            .map(|by| format!(", grouped by {by}"))
            .unwrap_or_default();
        let mut text = format!(
            "Rule {} ({severity}) fired for {shown_group}.\n\n\
             {count} matching events within {} (threshold {}).\n\
             First: {}\nLast:  {}\n\
             Rule: {}{grouping}.\n\nSample events:\n",
            rule.name,
            format_duration(rule.window),
            rule.threshold,
            stamp(first_at),
            stamp(last_at),
            rule.matcher.describe(),
        );
        for sample in &samples {
            text.push_str(&format!(
                "  {sample}  {}\n",
                self.link(&format!("/api/logs/{sample}"), &[])
            ));
        }
        text.push_str(&format!(
            "\nList them: {query_url}\nThis alert: {alert_url}\n\n\
             No further alert for this rule and group for {} after the last event; a burst still going on then \
             gives one reminder.\n",
            format_duration(rule.cooldown)
        ));
        let now = Utc::now();
        AlertRecord {
            id,
            rule: rule.name.clone(),
            group: group.to_owned(),
            seq,
            severity: severity.to_owned(),
            count,
            threshold: rule.threshold,
            window_secs: rule.window.as_secs(),
            cooldown_secs: rule.cooldown.as_secs(),
            first_at,
            last_at,
            sample_event_ids: samples,
            query_url,
            recipients: rule.recipients.clone(),
            subject,
            text,
            email: EmailState {
                status: EmailStatus::Pending,
                attempts: 0,
                last_error: None,
                next_attempt_at: Some(now),
                sent_at: None,
            },
            created_at: now,
        }
    }
}

/// The id of alert `seq` of `rule` and `group`: the same in every process, URL-safe.
pub fn alert_id(rule: &str, group: &str, seq: u32) -> String {
    let digest = Sha256::digest(format!("{rule}\u{1f}{group}\u{1f}{seq}").as_bytes());
    hex::encode(&digest[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_ids_depend_on_rule_group_and_sequence_only() {
        let id = alert_id("failed-requests", "10.0.0.1", 0);
        assert_eq!(id.len(), 24);
        assert_eq!(id, alert_id("failed-requests", "10.0.0.1", 0));
        assert_ne!(id, alert_id("failed-requests", "10.0.0.1", 1));
        assert_ne!(id, alert_id("failed-requests", "10.0.0.2", 0));
    }
}
