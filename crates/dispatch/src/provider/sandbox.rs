//! The sandbox provider: for demos and tests without real providers. It never touches the network.
//!
//! It looks at one field of the payload, the *target*: the email `to`, the SMS `message`, the webhook `url`, the
//! push `token` (or the `tokens`, together). It
//! succeeds unless the target contains one of these patterns (case-insensitive), checked in this order:
//!
//! | pattern in the target | result                                                                     |
//! |-----------------------|----------------------------------------------------------------------------|
//! | `fail-permanent`      | permanent failure, every attempt                                           |
//! | `fail-retryable`      | retryable failure, every attempt                                           |
//! | `fail-first-N`        | retryable failure on attempts 1 to N, delivered from attempt N+1 on        |
//! | `fail-once`           | same as `fail-first-1`                                                     |
//! | `fail-twice`          | same as `fail-first-2`                                                     |
//! | `status-NNN`          | as if an HTTP receiver answered NNN, judged by the usual rules (`status-429` is retryable, `status-404` permanent, `status-200` delivered); with `retry-after-S` also in the target, it carried `Retry-After: S` |
//!
//! The result depends only on the target and the attempt number, so a demo behaves the same every time.

use async_trait::async_trait;
use chrono::Utc;
use herald_domain::outcome::{classify, Observation, Outcome};
use herald_domain::{Channel, Event, Message};

use super::{wrong_channel, Delivered, Provider, SendError, Try};

/// The sandbox's provider name, in attempts and retry rules.
pub const SANDBOX: &str = herald_domain::provider::SANDBOX;

/// The sandbox of one channel.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox {
    channel: Channel,
}

impl Sandbox {
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }
}

/// The part of a message the patterns are looked for in, lower-cased.
fn target(message: &Message) -> String {
    match message {
        Message::Email(email) => email.to().to_ascii_lowercase(),
        Message::Sms(sms) => sms.message().to_ascii_lowercase(),
        Message::Webhook(webhook) => webhook.url().to_ascii_lowercase(),
        Message::Push(push) => push.tokens().join(" ").to_ascii_lowercase(),
    }
}

/// The number right after `prefix` in `text`, if there is one.
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let start = text.find(prefix)? + prefix.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What the sandbox does for `target` on attempt `attempt`.
fn decide(target: &str, attempt: u32) -> Result<Delivered, SendError> {
    let retryable = |why: &str| {
        Err(SendError {
            class: herald_domain::ErrorClass::Retryable,
            message: format!("sandbox: {why}"),
            http_status: None,
            retry_after_secs: None,
        })
    };
    if target.contains("fail-permanent") {
        return Err(SendError::invalid("sandbox: permanent failure requested"));
    }
    if target.contains("fail-retryable") {
        return retryable("retryable failure requested");
    }
    let failing_attempts = number_after(target, "fail-first-").or_else(|| {
        if target.contains("fail-once") {
            Some(1)
        } else if target.contains("fail-twice") {
            Some(2)
        } else {
            None
        }
    });
    if let Some(n) = failing_attempts {
        if u64::from(attempt) <= n {
            return retryable(&format!("failure {attempt} of {n} requested"));
        }
    }
    if let Some(status) = number_after(target, "status-").and_then(|s| u16::try_from(s).ok()) {
        let retry_after = number_after(target, "retry-after-").map(|s| s.to_string());
        let observation = Observation::Http {
            status,
            retry_after: retry_after.as_deref(),
            abort: false,
        };
        return match classify(observation, Utc::now()) {
            Outcome::Delivered => Ok(Delivered {
                http_status: Some(status),
                detail: Some("sandbox".into()),
            }),
            Outcome::Failed(failure) => Err(SendError {
                class: failure.class,
                message: format!("sandbox: HTTP {status} requested"),
                http_status: Some(status),
                retry_after_secs: failure.retry_after_secs,
            }),
        };
    }
    Ok(Delivered {
        http_status: None,
        detail: Some("sandbox".into()),
    })
}

#[async_trait]
impl Provider for Sandbox {
    fn name(&self) -> &str {
        SANDBOX
    }

    async fn send(
        &self,
        _event: &Event,
        message: &Message,
        attempt: Try,
    ) -> Result<Delivered, SendError> {
        if message.channel() != self.channel {
            return Err(wrong_channel(self.channel, message));
        }
        decide(&target(message), attempt.number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::ErrorClass;

    fn class(target: &str, attempt: u32) -> Option<ErrorClass> {
        decide(target, attempt).err().map(|e| e.class)
    }

    #[test]
    fn plain_targets_are_delivered() {
        assert_eq!(class("ada@example.com", 1), None);
        assert_eq!(class("https://example.com/hook", 7), None);
    }

    #[test]
    fn fail_patterns_give_their_class() {
        assert_eq!(
            class("fail-permanent@example.com", 1),
            Some(ErrorClass::Permanent)
        );
        assert_eq!(
            class("x+fail-retryable@example.com", 9),
            Some(ErrorClass::Retryable)
        );
    }

    #[test]
    fn counted_failures_stop_after_their_count() {
        for (target, n) in [
            ("fail-once@x.io", 1),
            ("fail-twice@x.io", 2),
            ("fail-first-3@x.io", 3),
        ] {
            for attempt in 1..=n {
                assert_eq!(
                    class(target, attempt),
                    Some(ErrorClass::Retryable),
                    "{target} #{attempt}"
                );
            }
            assert_eq!(class(target, n + 1), None, "{target} #{}", n + 1);
        }
    }

    #[test]
    fn status_patterns_follow_the_http_rules() {
        let err = decide("http://h/status-429-retry-after-30", 1).expect_err("429 fails");
        assert_eq!(err.class, ErrorClass::Retryable);
        assert_eq!(err.http_status, Some(429));
        assert_eq!(err.retry_after_secs, Some(30));
        assert_eq!(class("http://h/status-404", 1), Some(ErrorClass::Permanent));
        assert_eq!(class("http://h/status-204", 1), None);
    }

    #[test]
    fn the_target_depends_on_the_channel() {
        let sms = Message::from_payload(
            Channel::Sms,
            &serde_json::json!({"phoneNumber": "+14155550123", "message": "FAIL-PERMANENT please"}),
        )
        .expect("an SMS");
        assert_eq!(target(&sms), "fail-permanent please");
        let email = Message::from_payload(
            Channel::Email,
            &serde_json::json!({"to": "a@b.io", "subject": "fail-permanent", "text": "t"}),
        )
        .expect("an email");
        assert_eq!(target(&email), "a@b.io", "the subject is not the target");
    }
}
