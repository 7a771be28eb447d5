//! How a delivery attempt ended (delivered, retryable or permanent), decided in this one place for every
//! provider, so that an SMTP server, an SMS API and a webhook receiver are judged by the same rules.
//!
//! Providers only report what they observed ([`Observation`]); [`classify`] turns that into an [`Outcome`].
//!
//! | observed                                   | outcome                                        |
//! |--------------------------------------------|------------------------------------------------|
//! | any HTTP answer with a `Herald-Abort` header | permanent, whatever the status                 |
//! | HTTP 2xx                                   | delivered                                      |
//! | HTTP 408, 429, 5xx                         | retryable, keeping `Retry-After` (seconds or HTTP-date) |
//! | other HTTP 4xx, 1xx, 3xx (redirects are not followed) | permanent                           |
//! | SMTP 2xx                                   | delivered                                      |
//! | SMTP 4xx (transient reply)                 | retryable                                      |
//! | SMTP 5xx (permanent reply, e.g. unknown recipient) | permanent                              |
//! | no answer: timeout, connection refused or reset, DNS, TLS | retryable                       |
//! | the event itself cannot be sent (malformed payload, invalid recipient) | permanent          |

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::event::ErrorClass;

/// The response header with which a receiver asks Herald to stop trying an event, on any response.
pub const HEADER_ABORT: &str = "Herald-Abort";

/// Why a request got no answer. Every kind is retryable; the kind is kept for the error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportFailure {
    /// No answer within the send timeout.
    Timeout,
    /// The connection was refused, reset or closed early.
    Connect,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake failed.
    Tls,
    /// Anything else between us and the receiver (a malformed answer, an I/O error).
    Io,
}

impl fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportFailure::Timeout => "timeout",
            TransportFailure::Connect => "connection error",
            TransportFailure::Dns => "dns error",
            TransportFailure::Tls => "tls error",
            TransportFailure::Io => "transport error",
        })
    }
}

/// What a provider saw when it tried to hand an event over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation<'a> {
    /// An HTTP answer: its status, its raw `Retry-After` value and whether it carried `Herald-Abort`.
    Http {
        status: u16,
        retry_after: Option<&'a str>,
        abort: bool,
    },
    /// The SMTP server's reply to the message: the final one, or the first that refused it.
    Smtp { code: u16 },
    /// No answer at all.
    Transport(TransportFailure),
    /// The event cannot be sent as it is (malformed payload, invalid recipient), found before any I/O.
    Invalid,
}

/// A failed attempt, as the retry scheduler needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Failure {
    pub class: ErrorClass,
    /// The receiver's `Retry-After`, in seconds from now: never retry earlier.
    pub retry_after_secs: Option<u64>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Delivered,
    Failed(Failure),
}

impl Outcome {
    fn retryable(retry_after_secs: Option<u64>) -> Self {
        Outcome::Failed(Failure {
            class: ErrorClass::Retryable,
            retry_after_secs,
        })
    }

    fn permanent() -> Self {
        Outcome::Failed(Failure {
            class: ErrorClass::Permanent,
            retry_after_secs: None,
        })
    }

    /// The error class of a failed attempt; `None` when delivered.
    pub fn error_class(&self) -> Option<ErrorClass> {
        match self {
            Outcome::Delivered => None,
            Outcome::Failed(failure) => Some(failure.class),
        }
    }
}

/// Decides the outcome of an attempt. `now` is only used to turn an HTTP-date `Retry-After` into seconds.
pub fn classify(observation: Observation<'_>, now: DateTime<Utc>) -> Outcome {
    match observation {
        // The receiver's explicit word beats whatever its status says.
        Observation::Http { abort: true, .. } => Outcome::permanent(),
        Observation::Http {
            status,
            retry_after,
            abort: false,
        } => match status {
            200..=299 => Outcome::Delivered,
            408 | 429 | 500..=599 => {
                Outcome::retryable(retry_after.and_then(|value| parse_retry_after(value, now)))
            }
            _ => Outcome::permanent(),
        },
        Observation::Smtp { code } => match code {
            200..=299 => Outcome::Delivered,
            500..=599 => Outcome::permanent(),
            // 4xx is the server's "try again later"; anything else is a protocol hiccup worth another try.
            _ => Outcome::retryable(None),
        },
        Observation::Transport(_) => Outcome::retryable(None),
        Observation::Invalid => Outcome::permanent(),
    }
}

/// Parses a `Retry-After` value: delta-seconds (`120`) or an HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`, and the
/// obsolete RFC 850 and asctime forms), as seconds from `now`. A date in the past is 0; garbage is `None`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than u64 is "a very long time", not garbage.
        return Some(value.parse().unwrap_or(u64::MAX));
    }
    let at = parse_http_date(value)?;
    let secs = (at - now).num_seconds();
    Some(u64::try_from(secs).unwrap_or(0))
}

/// The three HTTP-date forms of RFC 9110 section 5.6.7, all in GMT.
fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc2822(value) {
        return Some(at.with_timezone(&Utc));
    }
    const OBSOLETE: [&str; 2] = ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"];
    OBSOLETE.iter().find_map(|format| {
        NaiveDateTime::parse_from_str(value, format)
            .ok()
            .map(|naive| naive.and_utc())
    })
}

/// Formats `at` as an IMF-fixdate, the HTTP-date form senders must use.
pub fn format_http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn http(status: u16, retry_after: Option<&str>, abort: bool) -> Outcome {
        classify(
            Observation::Http {
                status,
                retry_after,
                abort,
            },
            now(),
        )
    }

    #[test]
    fn http_statuses_map_to_their_classes() {
        assert_eq!(http(200, None, false), Outcome::Delivered);
        assert_eq!(http(202, None, false), Outcome::Delivered);
        for status in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                http(status, None, false).error_class(),
                Some(ErrorClass::Retryable),
                "{status}"
            );
        }
        for status in [301, 400, 401, 403, 404, 410, 422] {
            assert_eq!(
                http(status, None, false).error_class(),
                Some(ErrorClass::Permanent),
                "{status}"
            );
        }
    }

    #[test]
    fn herald_abort_makes_any_answer_permanent() {
        assert_eq!(http(503, Some("10"), true), Outcome::permanent());
        assert_eq!(http(200, None, true), Outcome::permanent());
    }

    #[test]
    fn retry_after_is_kept_for_retryable_answers_only() {
        assert_eq!(http(429, Some("7"), false), Outcome::retryable(Some(7)));
        assert_eq!(
            http(503, Some("Wed, 21 Oct 2015 07:30:00 GMT"), false),
            Outcome::retryable(Some(120))
        );
        assert_eq!(http(400, Some("7"), false), Outcome::permanent());
        assert_eq!(
            http(500, Some("soon"), false),
            Outcome::retryable(None),
            "garbage is ignored"
        );
    }

    #[test]
    fn retry_after_accepts_every_http_date_form() {
        for value in [
            "Wed, 21 Oct 2015 07:29:00 GMT",
            "Wednesday, 21-Oct-15 07:29:00 GMT",
            "Wed Oct 21 07:29:00 2015",
        ] {
            assert_eq!(parse_retry_after(value, now()), Some(60), "{value}");
        }
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:37 1994", now()),
            Some(0),
            "a past date means now"
        );
        assert_eq!(parse_retry_after(" 30 ", now()), Some(30));
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(parse_retry_after("", now()), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now()),
            Some(u64::MAX)
        );
    }

    #[test]
    fn smtp_replies_map_to_their_classes() {
        let smtp = |code| classify(Observation::Smtp { code }, now());
        assert_eq!(smtp(250), Outcome::Delivered);
        assert_eq!(smtp(421).error_class(), Some(ErrorClass::Retryable));
        assert_eq!(smtp(451).error_class(), Some(ErrorClass::Retryable));
        assert_eq!(smtp(550).error_class(), Some(ErrorClass::Permanent));
        assert_eq!(smtp(553).error_class(), Some(ErrorClass::Permanent));
    }

    #[test]
    fn no_answer_is_retryable_and_an_invalid_event_is_permanent() {
        for failure in [
            TransportFailure::Timeout,
            TransportFailure::Connect,
            TransportFailure::Dns,
            TransportFailure::Tls,
            TransportFailure::Io,
        ] {
            assert_eq!(
                classify(Observation::Transport(failure), now()),
                Outcome::retryable(None),
                "{failure}"
            );
        }
        assert_eq!(classify(Observation::Invalid, now()), Outcome::permanent());
    }

    proptest! {
        #[test]
        fn every_2xx_without_abort_is_delivered(status in 200u16..300) {
            prop_assert_eq!(http(status, None, false), Outcome::Delivered);
        }

        #[test]
        fn abort_is_permanent_for_every_status(status in 100u16..600, retry_after in proptest::option::of("[0-9]{1,4}")) {
            prop_assert_eq!(http(status, retry_after.as_deref(), true), Outcome::permanent());
        }

        #[test]
        fn every_status_has_exactly_the_documented_class(status in 100u16..600) {
            let expected = match status {
                200..=299 => None,
                408 | 429 | 500..=599 => Some(ErrorClass::Retryable),
                _ => Some(ErrorClass::Permanent),
            };
            prop_assert_eq!(http(status, None, false).error_class(), expected);
        }

        #[test]
        fn smtp_classes_follow_the_first_digit(code in 200u16..600) {
            let expected = match code / 100 {
                2 => None,
                5 => Some(ErrorClass::Permanent),
                _ => Some(ErrorClass::Retryable),
            };
            prop_assert_eq!(classify(Observation::Smtp { code }, now()).error_class(), expected);
        }

        #[test]
        fn delta_seconds_round_trip(secs in any::<u64>()) {
            prop_assert_eq!(parse_retry_after(&secs.to_string(), now()), Some(secs));
        }

        #[test]
        fn http_dates_round_trip_to_the_seconds_until_them(offset in -10_000_000i64..10_000_000) {
            let at = now() + chrono::Duration::seconds(offset);
            let expected = u64::try_from(offset).unwrap_or(0);
            prop_assert_eq!(parse_retry_after(&format_http_date(at), now()), Some(expected));
        }

        #[test]
        fn parsing_never_panics(value in ".{0,64}") {
            let _ = parse_retry_after(&value, now());
        }
    }
}
