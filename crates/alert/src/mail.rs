//! The sender: emails every alert whose email is pending, through one pooled SMTP transport, retrying failures
//! with a capped exponential backoff.
//!
//! It works only from MongoDB: it wakes when the consumer stores an alert, and every sweep interval, and sends
//! the pending alerts that are due. An alert raised while the SMTP server is away is therefore sent when it
//! comes back, by this process or by the next one after a restart. Each try is claimed first by a unique insert
//! into `alert_sends` (`<alert id>/<try>`), so two processes never send the same try; a claim whose process died
//! is given up after a lease, and the next try is claimed.
//!
//! A claimed try sends only if the alert is still pending and not past that try when read again after the claim
//! (the sweep's batch may be old by then: another process may have sent the alert meanwhile), and only with
//! enough of the claim's lease left for the whole send, which is bounded to fit in it. A send that went through is
//! marked on its claim before the alert is, so that if the alert's update fails, the next sweep (of any process)
//! finds the mark and completes the update instead of sending again.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::TryStreamExt;
use herald_platform::alerts::{AlertRecord, EmailStatus, ALERTS};
use herald_platform::mongo::{self, is_duplicate_key};
use herald_platform::smtp::{SmtpConfig, Transport};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncTransport, Message};
use mongodb::bson::{self, doc, Document};
use mongodb::{Collection, Database};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The claims of send tries.
pub const ALERT_SENDS: &str = "alert_sends";
/// Connections in the pool: alerts are sent one at a time, a second connection covers a slow one going away.
const POOL_SIZE: u32 = 2;
/// Most pending alerts handled per sweep.
const BATCH: i64 = 50;
/// First wait after a failed try; it doubles up to the configured cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// How often expired window hits and old claims are deleted, in sweeps.
const CLEANUP_EVERY: u64 = 100;
/// Tries of the status update after a send went through (a failed one is completed by a later sweep).
const RECORD_TRIES: u32 = 3;

/// What claiming the next try of an alert's email found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claimed {
    /// Try `n` is ours, held until the given time.
    Try(u32, chrono::DateTime<Utc>),
    /// Try `n` was sent, but the alert was not marked sent (its update failed, or its process died).
    AlreadySent(u32),
    /// Another process holds the current try.
    Held,
}

/// Sends alert emails. One per process.
#[derive(Debug, Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    alerts: Collection<AlertRecord>,
    raw: Collection<Document>,
    sends: Collection<Document>,
    backoff_cap: Duration,
    max_attempts: u32,
    /// A claimed try older than this was abandoned by a process that died.
    lease: Duration,
}

/// Why the transport could not be built.
#[derive(Debug, thiserror::Error)]
#[error("smtp transport: {0}")]
pub struct BuildError(#[from] lettre::transport::smtp::Error);

impl Mailer {
    pub fn build(
        db: &Database,
        smtp: &SmtpConfig,
        send_timeout: Duration,
        backoff_cap: Duration,
        max_attempts: u32,
    ) -> Result<Self, BuildError> {
        Ok(Self {
            transport: smtp.transport(send_timeout, POOL_SIZE)?,
            from: smtp.from.clone(),
            alerts: db.collection(ALERTS),
            raw: db.collection(ALERTS),
            sends: db.collection(ALERT_SENDS),
            backoff_cap,
            max_attempts,
            // A send is a handful of SMTP commands, each bounded by the timeout.
            lease: send_timeout * 6,
        })
    }

    /// Sweeps until `shutdown`: at once, whenever `wake` is notified, and every `interval`. `cleanup` runs every
    /// hundred sweeps.
    pub async fn run<F, Fut>(
        self,
        wake: Arc<Notify>,
        interval: Duration,
        shutdown: CancellationToken,
        cleanup: F,
    ) where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut n_sweeps: u64 = 0;
        loop {
            if let Err(e) = self.sweep(&shutdown).await {
                tracing::warn!(error = %e, "looking for pending alert emails failed; trying again");
            }
            n_sweeps += 1;
            if n_sweeps.is_multiple_of(CLEANUP_EVERY) {
                cleanup().await;
                let day_ago = Utc::now() - chrono::Duration::days(1);
                if let Err(e) = self
                    .sends
                    .delete_many(doc! { "at": { "$lt": bson::DateTime::from_chrono(day_ago) } })
                    .await
                {
                    tracing::warn!(error = %e, "deleting old send claims failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Sends every pending alert that is due.
    pub async fn sweep(&self, shutdown: &CancellationToken) -> mongo::Result<()> {
        let due: Vec<AlertRecord> = self
            .alerts
            .find(doc! {
                "email.status": EmailStatus::Pending.as_str(),
                "email.nextAttemptAt": { "$lte": bson::DateTime::from_chrono(Utc::now()) },
            })
            .sort(doc! { "createdAt": 1 })
            .limit(BATCH)
            .await?
            .try_collect()
            .await?;
        for alert in due {
            if shutdown.is_cancelled() {
                break;
            }
            self.send(&alert).await?;
        }
        Ok(())
    }

    /// One try at emailing `alert`, unless another process holds the try, or the alert has moved on.
    async fn send(&self, alert: &AlertRecord) -> mongo::Result<()> {
        let (attempt, lease_until) = match self.claim(alert).await? {
            Claimed::Try(attempt, lease_until) => (attempt, lease_until),
            Claimed::AlreadySent(attempt) => {
                tracing::info!(alert = %alert.id, attempt, "alert emailed before; marking it sent");
                return self.record_sent(alert, attempt).await;
            }
            Claimed::Held => return Ok(()),
        };
        // Read again under the claim: `alert` comes from the sweep's batch, and another process may have sent it
        // (and its claim expired) since.
        let still_pending = self
            .alerts
            .find_one(doc! {
                "_id": &alert.id,
                "email.status": EmailStatus::Pending.as_str(),
                "email.attempts": { "$lt": i64::from(attempt) },
            })
            .await?;
        let Some(alert) = still_pending else {
            tracing::debug!(alert = %alert.id, attempt, "alert no longer pending; not sending");
            return Ok(());
        };
        let alert = &alert;
        // The send must end while the claim is held, or another process may take the next try over mid-send.
        let send_bound = self.lease / 2;
        let lease_left = (lease_until - Utc::now()).to_std().unwrap_or_default();
        if lease_left < send_bound {
            tracing::warn!(alert = %alert.id, attempt, "claim taken with too little lease left; not sending");
            return Ok(());
        }
        let outcome = match self.message(alert) {
            Err(e) => Err((e, true)),
            Ok(message) => {
                match tokio::time::timeout(send_bound, self.transport.send(message)).await {
                    Ok(sent) => sent
                        .map(|_| ())
                        .map_err(|e| (format!("smtp: {e}"), e.is_permanent())),
                    Err(_) => Err((format!("smtp: no answer within {send_bound:?}"), false)),
                }
            }
        };
        let result = match &outcome {
            Ok(()) => "sent",
            Err(_) => "failed",
        };
        metrics::counter!("herald_alert_emails_total", "result" => result).increment(1);
        let filter = doc! { "_id": &alert.id, "email.status": EmailStatus::Pending.as_str() };
        let update = match outcome {
            Ok(()) => {
                tracing::info!(alert = %alert.id, rule = %alert.rule, group = %alert.group, attempt, "alert emailed");
                return self.record_sent(alert, attempt).await;
            }
            Err((error, permanent)) => {
                let give_up = permanent || attempt >= self.max_attempts;
                let wait = self.backoff(attempt);
                tracing::warn!(alert = %alert.id, attempt, error = %error, give_up, retry_in_ms = wait.as_millis() as u64, "emailing an alert failed");
                let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                let status = if give_up {
                    EmailStatus::Failed
                } else {
                    EmailStatus::Pending
                };
                doc! { "$set": {
                    "email.status": status.as_str(),
                    "email.attempts": i64::from(attempt),
                    "email.lastError": error,
                    "email.nextAttemptAt": bson::DateTime::from_chrono(next),
                } }
            }
        };
        self.raw.update_one(filter, update).await?;
        Ok(())
    }

    /// Marks try `attempt` sent, on its claim and then on the alert, each retried a few times: the claim's mark
    /// lets a later sweep complete the alert's update if it fails here.
    async fn record_sent(&self, alert: &AlertRecord, attempt: u32) -> mongo::Result<()> {
        let claim = format!("{}/{attempt}", alert.id);
        let filter = doc! { "_id": &alert.id, "email.status": EmailStatus::Pending.as_str() };
        let update = doc! {
            "$set": {
                "email.status": EmailStatus::Sent.as_str(),
                "email.attempts": i64::from(attempt),
                "email.sentAt": bson::DateTime::now(),
            },
            "$unset": { "email.nextAttemptAt": "" },
        };
        let mut n_tries = 0;
        loop {
            n_tries += 1;
            let recorded = async {
                self.sends
                    .update_one(doc! { "_id": &claim }, doc! { "$set": { "sent": true } })
                    .await?;
                self.raw.update_one(filter.clone(), update.clone()).await
            }
            .await;
            match recorded {
                Ok(_) => return Ok(()),
                Err(e) if n_tries >= RECORD_TRIES => return Err(e),
                Err(e) => {
                    tracing::warn!(alert = %alert.id, attempt, error = %e, "marking an alert sent failed; trying again");
                    tokio::time::sleep(BACKOFF_FIRST).await;
                }
            }
        }
    }

    /// Claims the next try of `alert`'s email.
    async fn claim(&self, alert: &AlertRecord) -> mongo::Result<Claimed> {
        let mut attempt = alert.email.attempts + 1;
        let lease = chrono::Duration::from_std(self.lease).unwrap_or_default();
        loop {
            let id = format!("{}/{attempt}", alert.id);
            let taken_at = bson::DateTime::now();
            match self
                .sends
                .insert_one(doc! { "_id": &id, "at": taken_at })
                .await
            {
                Ok(_) => return Ok(Claimed::Try(attempt, taken_at.to_chrono() + lease)),
                Err(e) if is_duplicate_key(&e) => {
                    let held = self.sends.find_one(doc! { "_id": &id }).await?;
                    if held
                        .as_ref()
                        .is_some_and(|d| d.get_bool("sent").unwrap_or(false))
                    {
                        return Ok(Claimed::AlreadySent(attempt));
                    }
                    let taken_at = held
                        .as_ref()
                        .and_then(|d| d.get_datetime("at").ok())
                        .map(|at| at.to_chrono());
                    match taken_at {
                        Some(at) if at + lease > Utc::now() => return Ok(Claimed::Held),
                        // Its process died mid-try: that try counts, the next one is ours to claim.
                        _ => attempt += 1,
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn message(&self, alert: &AlertRecord) -> Result<Message, String> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(alert.subject.clone())
            .message_id(Some(format!("<{}@herald-alert>", alert.id)));
        for recipient in &alert.recipients {
            let to: Mailbox = recipient
                .parse()
                .map_err(|e| format!("invalid recipient '{recipient}': {e}"))?;
            builder = builder.to(to);
        }
        builder
            .header(ContentType::TEXT_PLAIN)
            .body(alert.text.clone())
            .map_err(|e| format!("cannot build the email: {e}"))
    }

    /// The wait after failed try `attempt`: 1 s, 2 s, 4 s, ... up to the cap, with up to 20% jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let base = BACKOFF_FIRST
            .saturating_mul(1u32 << exponent)
            .min(self.backoff_cap);
        let jitter_ms = rand::random_range(0..=base.as_millis() as u64 / 5);
        base + Duration::from_millis(jitter_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_test_support::{eventually, stack, unique_name, TestContext};

    /// Two mailers over one test database, sending to the shared sink.
    async fn mailers(label: &str) -> anyhow::Result<(Database, Mailer, Mailer)> {
        let ctx = TestContext::new(label).await?;
        let db = mongo::connect(&ctx.mongo, label).await?;
        let stack = stack();
        let smtp = SmtpConfig::plain(stack.smtp_host.clone(), stack.smtp_port);
        let build = || {
            Mailer::build(
                &db,
                &smtp,
                Duration::from_secs(5),
                Duration::from_millis(300),
                5,
            )
        };
        Ok((db.clone(), build()?, build()?))
    }

    /// A pending alert to a recipient and with a subject no other test uses.
    async fn pending_alert(db: &Database, label: &str) -> anyhow::Result<AlertRecord> {
        let name = unique_name(label).to_ascii_lowercase();
        let now = Utc::now();
        let alert = AlertRecord {
            id: format!("{name}/*/0"),
            rule: name.clone(),
            group: "*".into(),
            seq: 0,
            severity: "warning".into(),
            count: 1,
            threshold: 1,
            window_secs: 60,
            cooldown_secs: 60,
            first_at: now,
            last_at: now,
            sample_event_ids: Vec::new(),
            query_url: "http://query.test/api/logs".into(),
            recipients: vec![format!("{name}@alerts.test")],
            subject: format!("[herald] {name}"),
            text: "one alert".into(),
            email: herald_platform::alerts::EmailState {
                status: EmailStatus::Pending,
                attempts: 0,
                last_error: None,
                next_attempt_at: Some(now),
                sent_at: None,
            },
            created_at: now,
        };
        db.collection::<AlertRecord>(ALERTS)
            .insert_one(&alert)
            .await?;
        Ok(alert)
    }

    /// The emails the sink holds for `alert`.
    async fn mails(alert: &AlertRecord) -> anyhow::Result<usize> {
        let answer: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/search", stack().smtp_api))
            .query(&[("query", format!("to:{}", alert.recipients[0]))])
            .send()
            .await?
            .json()
            .await?;
        Ok(answer["messages"].as_array().map_or(0, Vec::len))
    }

    /// Dates every send claim of `alert` an hour back: their leases have run out, as after a slow send or a stall.
    async fn expire_claims(db: &Database, alert: &AlertRecord) -> anyhow::Result<()> {
        let hour_ago = Utc::now() - chrono::Duration::hours(1);
        db.collection::<Document>(ALERT_SENDS)
            .update_many(
                doc! { "_id": { "$in": (1..=5).map(|n| format!("{}/{n}", alert.id)).collect::<Vec<_>>() } },
                doc! { "$set": { "at": bson::DateTime::from_chrono(hour_ago) } },
            )
            .await?;
        Ok(())
    }

    async fn status(db: &Database, alert: &AlertRecord) -> anyhow::Result<EmailStatus> {
        let stored = db
            .collection::<AlertRecord>(ALERTS)
            .find_one(doc! { "_id": &alert.id })
            .await?
            .ok_or_else(|| anyhow::anyhow!("alert gone"))?;
        Ok(stored.email.status)
    }

    #[tokio::test]
    async fn a_mailer_with_an_old_batch_does_not_send_what_another_sent() -> anyhow::Result<()> {
        let (db, first, second) = mailers("mail-stale-batch").await?;
        let alert = pending_alert(&db, "mail-stale-batch").await?;
        // The first mailer's sweep read the alert, then spent its time on the alerts before it in the batch...
        let snapshot = alert.clone();
        // ...while the second one sent it (and its claim's lease ran out).
        second.sweep(&CancellationToken::new()).await?;
        eventually(Duration::from_secs(10), "the alert sent", || async {
            match mails(&alert).await {
                Ok(1) => Ok(()),
                Ok(n) => Err(format!("{n} emails")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        expire_claims(&db, &alert).await?;
        first.send(&snapshot).await?;
        anyhow::ensure!(mails(&alert).await? == 1, "the alert was emailed twice");
        anyhow::ensure!(status(&db, &alert).await? == EmailStatus::Sent);
        Ok(())
    }

    #[tokio::test]
    async fn a_sent_alert_whose_update_was_lost_is_not_sent_again() -> anyhow::Result<()> {
        let (db, first, second) = mailers("mail-lost-update").await?;
        let alert = pending_alert(&db, "mail-lost-update").await?;
        first.sweep(&CancellationToken::new()).await?;
        eventually(Duration::from_secs(10), "the alert sent", || async {
            match mails(&alert).await {
                Ok(1) => Ok(()),
                Ok(n) => Err(format!("{n} emails")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        // The alert's update after the send did not land (MongoDB answered with an error, or the process died
        // right after the send): the alert is as it was before.
        db.collection::<Document>(ALERTS)
            .update_one(
                doc! { "_id": &alert.id },
                doc! {
                    "$set": { "email.status": "pending", "email.attempts": 0_i64, "email.nextAttemptAt": bson::DateTime::now() },
                    "$unset": { "email.sentAt": "" },
                },
            )
            .await?;
        expire_claims(&db, &alert).await?;
        second.sweep(&CancellationToken::new()).await?;
        anyhow::ensure!(mails(&alert).await? == 1, "the alert was emailed twice");
        anyhow::ensure!(status(&db, &alert).await? == EmailStatus::Sent);
        Ok(())
    }
}
