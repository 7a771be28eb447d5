//! The sender: emails every alert whose email is pending, through one pooled SMTP transport, retrying failures
//! with a capped exponential backoff.
//!
//! It works only from MongoDB: it wakes when the consumer stores an alert, and every sweep interval, and sends
//! the pending alerts that are due. An alert raised while the SMTP server is away is therefore sent when it
//! comes back, by this process or by the next one after a restart. Each try is claimed first by a unique insert
//! into `alert_sends` (`<alert id>/<try>`), so two processes never send the same try; a claim whose process died
//! is given up after a lease, and the next try is claimed.

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
pub type BuildError = lettre::transport::smtp::Error;

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

    /// One try at emailing `alert`, unless another process holds the try.
    async fn send(&self, alert: &AlertRecord) -> mongo::Result<()> {
        let Some(attempt) = self.claim(alert).await? else {
            return Ok(());
        };
        let outcome = match self.message(alert) {
            Err(e) => Err((e, true)),
            Ok(message) => self
                .transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| (format!("smtp: {e}"), e.is_permanent())),
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
                doc! {
                    "$set": {
                        "email.status": EmailStatus::Sent.as_str(),
                        "email.attempts": i64::from(attempt),
                        "email.sentAt": bson::DateTime::now(),
                    },
                    "$unset": { "email.nextAttemptAt": "" },
                }
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

    /// Claims the next try of `alert`'s email; `None` while another process holds it.
    async fn claim(&self, alert: &AlertRecord) -> mongo::Result<Option<u32>> {
        let mut attempt = alert.email.attempts + 1;
        loop {
            let id = format!("{}/{attempt}", alert.id);
            match self
                .sends
                .insert_one(doc! { "_id": &id, "at": bson::DateTime::now() })
                .await
            {
                Ok(_) => return Ok(Some(attempt)),
                Err(e) if is_duplicate_key(&e) => {
                    let held = self.sends.find_one(doc! { "_id": &id }).await?;
                    let taken_at = held
                        .as_ref()
                        .and_then(|d| d.get_datetime("at").ok())
                        .map(|at| at.to_chrono());
                    let lease = chrono::Duration::from_std(self.lease).unwrap_or_default();
                    match taken_at {
                        Some(at) if at + lease > Utc::now() => return Ok(None),
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
