//! The retry rules engine: pure functions that decide, for a failed attempt, whether to retry after a delay (and
//! through which provider) or to dead-letter. No I/O and no clock: the caller passes the jitter draw, so every
//! decision is reproducible and property-tested.
//!
//! Rules come from a TOML file (`HERALD_RETRY_RULES`), merged in three levels, most specific first:
//! `[event_types."<eventType>"]`, then `[channels.<channel>]`, then `[default]`:
//!
//! ```toml
//! [default]
//! max_attempts = 5          # attempts in all, the first included
//! base_ms = 1000            # backoff before the 2nd attempt, before jitter
//! factor = 2.0              # growth per attempt
//! cap_ms = 600000           # no backoff exceeds this (Retry-After excepted)
//! max_retry_after_ms = 86400000  # a receiver asking for more than this is dead-lettered
//!
//! [channels.email]
//! max_attempts = 6
//! providers = ["smtp", "sandbox"]  # fallback order
//! switch_after = 2                  # failures on one provider before the next is used
//!
//! [event_types."password.reset"]
//! max_attempts = 3
//! cap_ms = 60000
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::event::{Channel, ErrorClass};
use crate::provider::KnownProviders;

/// One level of rules; every field optional so levels can be merged.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    pub max_attempts: Option<u32>,
    pub base_ms: Option<u64>,
    pub factor: Option<f64>,
    pub cap_ms: Option<u64>,
    pub max_retry_after_ms: Option<u64>,
    pub providers: Option<Vec<String>>,
    pub switch_after: Option<u32>,
}

/// The rules file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub default: PolicyOverride,
    #[serde(default)]
    pub channels: BTreeMap<String, PolicyOverride>,
    #[serde(default)]
    pub event_types: BTreeMap<String, PolicyOverride>,
}

/// The effective policy for one failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub max_attempts: u32,
    pub base_ms: u64,
    pub factor: f64,
    pub cap_ms: u64,
    pub max_retry_after_ms: u64,
    /// Providers in fallback order; empty means "the channel's configured provider" throughout.
    pub providers: Vec<String>,
    pub switch_after: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_ms: 1_000,
            factor: 2.0,
            cap_ms: 600_000,
            max_retry_after_ms: 86_400_000,
            providers: Vec::new(),
            switch_after: 1,
        }
    }
}

impl Policy {
    fn apply(&mut self, o: &PolicyOverride) {
        if let Some(v) = o.max_attempts {
            self.max_attempts = v;
        }
        if let Some(v) = o.base_ms {
            self.base_ms = v;
        }
        if let Some(v) = o.factor {
            self.factor = v;
        }
        if let Some(v) = o.cap_ms {
            self.cap_ms = v;
        }
        if let Some(v) = o.max_retry_after_ms {
            self.max_retry_after_ms = v;
        }
        if let Some(v) = &o.providers {
            self.providers = v.clone();
        }
        if let Some(v) = o.switch_after {
            self.switch_after = v;
        }
    }

    /// The backoff ceiling before attempt `next` (2 for the first retry): `base * factor^(next-2)`, capped.
    pub fn ceiling_ms(&self, next: u32) -> u64 {
        let exponent = i32::try_from(next.saturating_sub(2)).unwrap_or(i32::MAX);
        let raw = self.base_ms as f64 * self.factor.powi(exponent);
        if raw.is_finite() && raw < self.cap_ms as f64 {
            raw.max(0.0) as u64
        } else {
            self.cap_ms
        }
    }

    /// The provider for attempt `next`: after `switch_after` failures on one provider, the next in the list.
    ///
    /// `chosen` is the provider the client named for the first attempt: the list goes on from there (from its
    /// place in the list, or from the list's start after it when the list does not name it), and without a list
    /// the chosen provider serves every attempt, as the configured one would.
    pub fn provider_for<'a>(&'a self, next: u32, chosen: Option<&'a str>) -> Option<&'a str> {
        let order: Vec<&str> = match chosen {
            None => self.providers.iter().map(String::as_str).collect(),
            Some(chosen) => match self.providers.iter().position(|p| p == chosen) {
                Some(at) => self.providers[at..].iter().map(String::as_str).collect(),
                None => std::iter::once(chosen)
                    .chain(self.providers.iter().map(String::as_str))
                    .collect(),
            },
        };
        let last = order.len().checked_sub(1)?;
        let failures = next.saturating_sub(1);
        let index = (failures / self.switch_after.max(1)) as usize;
        order.get(index.min(last)).copied()
    }
}

/// Validated rules, ready to decide.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryRules {
    file: RulesFile,
}

/// A problem in the rules file, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuleError {
    pub path: String,
    pub message: String,
}

impl RetryRules {
    /// Parses and validates a TOML rules file; every problem is returned, not just the first.
    pub fn from_toml(text: &str) -> Result<Self, Vec<RuleError>> {
        let file: RulesFile = toml::from_str(text).map_err(|e| {
            vec![RuleError {
                path: "rules file".into(),
                message: e.to_string().trim().replace('\n', " "),
            }]
        })?;
        Self::new(file)
    }

    pub fn new(file: RulesFile) -> Result<Self, Vec<RuleError>> {
        let mut problems = check_level("default", &file.default);
        for (name, o) in &file.channels {
            if name.parse::<Channel>().is_err() {
                problems.push(RuleError {
                    path: format!("channels.{name}"),
                    message: "unknown channel, expected one of: email, sms, webhook, push".into(),
                });
            }
            problems.extend(check_level(&format!("channels.{name}"), o));
        }
        for (name, o) in &file.event_types {
            problems.extend(check_level(&format!("event_types.{name}"), o));
        }
        if problems.is_empty() {
            Ok(Self { file })
        } else {
            Err(problems)
        }
    }

    /// Every provider a rule names that `known` does not have: a `[channels.<channel>]` list is checked against
    /// that channel's providers; a `[default]` or `[event_types]` list, which may serve any channel, against the
    /// providers of all channels (a dispatcher records a permanent error for a name its channel lacks).
    pub fn unknown_providers(&self, known: &KnownProviders) -> Vec<RuleError> {
        let mut problems = Vec::new();
        let mut check = |path: String, o: &PolicyOverride, channel: Option<Channel>| {
            for name in o.providers.iter().flatten() {
                let (found, expected) = match channel {
                    Some(channel) => (known.has(channel, name), known.names(channel).to_vec()),
                    None => (
                        known.has_any(name),
                        Channel::ALL
                            .iter()
                            .flat_map(|c| known.names(*c).iter().cloned())
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .collect(),
                    ),
                };
                if !found {
                    problems.push(RuleError {
                        path: format!("{path}.providers"),
                        message: format!(
                            "unknown provider '{name}', expected one of: {}",
                            expected.join(", ")
                        ),
                    });
                }
            }
        };
        check("default".into(), &self.file.default, None);
        for (name, o) in &self.file.channels {
            check(format!("channels.{name}"), o, name.parse().ok());
        }
        for (name, o) in &self.file.event_types {
            check(format!("event_types.{name}"), o, None);
        }
        problems
    }

    /// The policy for a channel and event type, levels merged.
    pub fn policy(&self, channel: Channel, event_type: Option<&str>) -> Policy {
        let mut policy = Policy::default();
        policy.apply(&self.file.default);
        if let Some(o) = self.file.channels.get(channel.as_str()) {
            policy.apply(o);
        }
        if let Some(o) = event_type.and_then(|t| self.file.event_types.get(t)) {
            policy.apply(o);
        }
        policy
    }

    /// Decides what follows a failed attempt. `jitter` is a uniform draw from [0, 1) (full jitter).
    pub fn decide(&self, failure: &Failure<'_>, jitter: f64) -> Decision {
        let policy = self.policy(failure.channel, failure.event_type);
        if failure.error_class == ErrorClass::Permanent {
            return Decision::DeadLetter {
                reason: format!("permanent error on attempt {}", failure.attempt),
            };
        }
        if failure.attempt >= policy.max_attempts {
            return Decision::DeadLetter {
                reason: format!("gave up after {} attempts", failure.attempt),
            };
        }
        let next = failure.attempt + 1;
        let retry_after_ms = failure
            .retry_after
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if let Some(asked) = retry_after_ms {
            if asked > policy.max_retry_after_ms {
                return Decision::DeadLetter {
                    reason: format!(
                        "receiver asked to wait {asked} ms, more than the {} ms allowed",
                        policy.max_retry_after_ms
                    ),
                };
            }
        }
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let jittered = (policy.ceiling_ms(next) as f64 * jitter) as u64;
        let delay_ms = jittered.max(retry_after_ms.unwrap_or(0));
        Decision::Retry {
            attempt: next,
            delay: Duration::from_millis(delay_ms),
            provider: policy
                .provider_for(next, failure.chosen_provider)
                .map(str::to_owned),
        }
    }
}

/// The jitter draw of one decision, in [0, 1): a function of the event, its replay generation and the failed
/// attempt only, so a redelivered retry request reproduces the decision it had (the same delay, hence the same
/// delay tier) instead of drawing a new one. FNV-1a then the SplitMix64 finaliser: stable across builds and Rust
/// releases (std's `DefaultHasher` promises neither) and spread evenly enough for full jitter.
pub fn jitter_for(event_id: &str, replay_count: u32, attempt: u32) -> f64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    let (replay, attempt) = (replay_count.to_le_bytes(), attempt.to_le_bytes());
    let bytes = event_id
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(&replay)
        .chain(&attempt);
    for byte in bytes {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    // The top 53 bits are exactly representable: the draw is below 1.
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

fn check_level(path: &str, o: &PolicyOverride) -> Vec<RuleError> {
    let mut problems = Vec::new();
    let mut bad = |field: &str, message: &str| {
        problems.push(RuleError {
            path: format!("{path}.{field}"),
            message: message.into(),
        })
    };
    if o.max_attempts == Some(0) {
        bad("max_attempts", "must be at least 1");
    }
    if o.factor.is_some_and(|f| !f.is_finite() || f < 1.0) {
        bad("factor", "must be a number of at least 1.0");
    }
    if o.cap_ms == Some(0) {
        bad("cap_ms", "must be greater than 0");
    }
    if o.switch_after == Some(0) {
        bad("switch_after", "must be at least 1");
    }
    if o.providers
        .as_ref()
        .is_some_and(|providers| providers.iter().any(|p| p.trim().is_empty()))
    {
        bad("providers", "provider names must not be empty");
    }
    problems
}

/// What is known of a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure<'a> {
    pub channel: Channel,
    pub event_type: Option<&'a str>,
    pub provider: &'a str,
    /// The provider the client chose for the first attempt (`Event::chosen_provider`), if any.
    pub chosen_provider: Option<&'a str>,
    pub error_class: ErrorClass,
    pub http_status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// The number of the attempt that failed (1 for the first).
    pub attempt: u32,
}

/// What follows a failed attempt: exactly one of these.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Try again: attempt `attempt` after `delay`, through `provider` (or the channel's configured one).
    Retry {
        attempt: u32,
        delay: Duration,
        provider: Option<String>,
    },
    /// Stop: the event is dead-lettered with this reason.
    DeadLetter { reason: String },
}

/// The delay tier a delay waits on: the smallest tier at least as long, or the longest tier (a message due later
/// than that is passed through the longest tier again until it is due).
pub fn tier_for(delay: Duration, tiers_secs: &[u64]) -> Option<u64> {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    tiers_secs
        .iter()
        .copied()
        .filter(|t| *t >= secs)
        .min()
        .or_else(|| tiers_secs.iter().copied().max())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn failure(attempt: u32, class: ErrorClass) -> Failure<'static> {
        Failure {
            channel: Channel::Webhook,
            event_type: None,
            provider: "webhook",
            chosen_provider: None,
            error_class: class,
            http_status: Some(500),
            retry_after: None,
            attempt,
        }
    }

    #[test]
    fn permanent_errors_are_dead_lettered_at_once() {
        let rules = RetryRules::default();
        assert!(matches!(
            rules.decide(&failure(1, ErrorClass::Permanent), 0.5),
            Decision::DeadLetter { .. }
        ));
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let policy = Policy {
            base_ms: 100,
            factor: 3.0,
            cap_ms: 1_000,
            ..Policy::default()
        };
        assert_eq!(policy.ceiling_ms(2), 100);
        assert_eq!(policy.ceiling_ms(3), 300);
        assert_eq!(policy.ceiling_ms(4), 900);
        assert_eq!(policy.ceiling_ms(5), 1_000);
        assert_eq!(policy.ceiling_ms(500), 1_000);
    }

    #[test]
    fn levels_merge_most_specific_first() {
        let rules = RetryRules::from_toml(
            r#"
            [default]
            max_attempts = 4
            base_ms = 10
            [channels.email]
            max_attempts = 6
            providers = ["smtp", "backup"]
            switch_after = 2
            [event_types."password.reset"]
            max_attempts = 2
            "#,
        )
        .expect("valid rules");
        assert_eq!(rules.policy(Channel::Sms, None).max_attempts, 4);
        assert_eq!(rules.policy(Channel::Email, None).max_attempts, 6);
        let reset = rules.policy(Channel::Email, Some("password.reset"));
        assert_eq!(reset.max_attempts, 2);
        assert_eq!(reset.base_ms, 10);
        assert_eq!(reset.providers, vec!["smtp", "backup"]);
    }

    #[test]
    fn providers_fall_back_after_n_failures() {
        let policy = Policy {
            providers: vec!["a".into(), "b".into(), "c".into()],
            switch_after: 2,
            ..Policy::default()
        };
        let chosen: Vec<_> = (1..=8)
            .map(|n| policy.provider_for(n, None).unwrap_or("-"))
            .collect();
        assert_eq!(chosen, ["a", "a", "b", "b", "c", "c", "c", "c"]);
    }

    #[test]
    fn the_fallback_order_goes_on_from_the_clients_choice() {
        let policy = Policy {
            providers: vec!["a".into(), "b".into(), "c".into()],
            ..Policy::default()
        };
        let order = |chosen| -> Vec<&str> {
            (1..=4)
                .map(|n| policy.provider_for(n, chosen).unwrap_or("-"))
                .collect()
        };
        assert_eq!(order(Some("b")), ["b", "c", "c", "c"]);
        assert_eq!(
            order(Some("x")),
            ["x", "a", "b", "c"],
            "a choice outside the list comes first"
        );
        let no_list = Policy::default();
        assert_eq!(
            no_list.provider_for(3, Some("x")),
            Some("x"),
            "without a list the choice stays"
        );
        assert_eq!(no_list.provider_for(3, None), None);
    }

    #[test]
    fn bad_rules_are_all_reported_with_their_place() {
        let errors = RetryRules::from_toml(
            r#"
            [default]
            max_attempts = 0
            factor = 0.5
            [channels.pigeon]
            switch_after = 0
            "#,
        )
        .expect_err("invalid rules");
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "default.max_attempts",
                "default.factor",
                "channels.pigeon",
                "channels.pigeon.switch_after"
            ]
        );
        let unknown = RetryRules::from_toml("[default]\nmax_attemps = 3\n").expect_err("typo");
        assert!(unknown[0].message.contains("max_attemps"), "{unknown:?}");
    }

    #[test]
    fn providers_named_by_rules_must_exist() {
        let rules = RetryRules::from_toml(
            r#"
            [default]
            providers = ["sandbox"]
            [channels.sms]
            providers = ["http-sms", "backup"]
            [channels.email]
            providers = ["smtp", "backup"]
            [event_types."otp"]
            providers = ["backup", "pigeon"]
            "#,
        )
        .expect("valid rules");
        let extras = BTreeMap::from([(Channel::Sms, vec!["backup".to_owned()])]);
        let problems = rules.unknown_providers(&KnownProviders::new(&extras));
        let shown: Vec<_> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "channels.email.providers: unknown provider 'backup', expected one of: smtp, sendgrid, mailgun, sandbox",
                "event_types.otp.providers: unknown provider 'pigeon', expected one of: backup, fcm, firebase, http-sms, mailgun, messagebird, onesignal, sandbox, sendgrid, smtp, twilio, webhook",
            ]
        );
        assert!(RetryRules::default()
            .unknown_providers(&KnownProviders::default())
            .is_empty());
    }

    #[test]
    fn delays_round_up_to_a_tier() {
        let tiers = [5, 30, 120];
        assert_eq!(tier_for(Duration::from_millis(1), &tiers), Some(5));
        assert_eq!(tier_for(Duration::from_secs(5), &tiers), Some(5));
        assert_eq!(tier_for(Duration::from_millis(5_001), &tiers), Some(30));
        assert_eq!(tier_for(Duration::from_secs(4_000), &tiers), Some(120));
        assert_eq!(tier_for(Duration::ZERO, &tiers), Some(5));
        assert_eq!(tier_for(Duration::from_secs(1), &[]), None);
    }

    fn class() -> impl Strategy<Value = ErrorClass> {
        prop_oneof![Just(ErrorClass::Retryable), Just(ErrorClass::Permanent)]
    }

    fn channel() -> impl Strategy<Value = Channel> {
        prop_oneof![
            Just(Channel::Email),
            Just(Channel::Sms),
            Just(Channel::Webhook)
        ]
    }

    #[test]
    fn jitter_draws_spread_over_the_range_and_tell_attempts_apart() {
        let draws: Vec<f64> = (0..2000)
            .map(|i| jitter_for(&format!("event-{i}"), 0, 1))
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
        assert!(draws.iter().any(|d| *d < 0.05) && draws.iter().any(|d| *d > 0.95));
        assert_ne!(jitter_for("e-1", 0, 1), jitter_for("e-1", 0, 2));
        assert_ne!(jitter_for("e-1", 0, 1), jitter_for("e-1", 1, 1));
    }

    proptest! {
        #[test]
        fn every_input_gives_one_sound_decision(
            max_attempts in 1u32..20,
            base_ms in 0u64..100_000,
            factor in 1.0f64..10.0,
            cap_ms in 1u64..10_000_000,
            attempt in 1u32..40,
            retry_after_ms in proptest::option::of(0u64..200_000_000),
            jitter in 0.0f64..1.0,
            error_class in class(),
            channel in channel(),
        ) {
            let rules = RetryRules::new(RulesFile {
                default: PolicyOverride {
                    max_attempts: Some(max_attempts),
                    base_ms: Some(base_ms),
                    factor: Some(factor),
                    cap_ms: Some(cap_ms),
                    ..PolicyOverride::default()
                },
                ..RulesFile::default()
            }).expect("valid");
            let retry_after = retry_after_ms.map(Duration::from_millis);
            let input = Failure { channel, event_type: None, provider: "p", chosen_provider: None, error_class, http_status: None, retry_after, attempt };
            match rules.decide(&input, jitter) {
                Decision::Retry { attempt: next, delay, .. } => {
                    prop_assert_eq!(error_class, ErrorClass::Retryable);
                    prop_assert_eq!(next, attempt + 1);
                    // Never more attempts than the maximum.
                    prop_assert!(next <= max_attempts);
                    let delay_ms = delay.as_millis() as u64;
                    // Within [0, cap], unless the receiver asked for longer.
                    prop_assert!(delay_ms <= cap_ms.max(retry_after_ms.unwrap_or(0)));
                    // Never earlier than Retry-After.
                    prop_assert!(delay_ms >= retry_after_ms.unwrap_or(0));
                }
                Decision::DeadLetter { reason } => {
                    prop_assert!(!reason.is_empty());
                    let out_of_attempts = attempt >= max_attempts;
                    let too_long = retry_after_ms.is_some_and(|ms| ms > Policy::default().max_retry_after_ms);
                    prop_assert!(error_class == ErrorClass::Permanent || out_of_attempts || too_long);
                }
            }
        }

        #[test]
        fn the_jitter_of_a_decision_is_reproducible_and_in_range(
            event_id in "[a-zA-Z0-9-]{1,40}",
            replay_count in 0u32..5,
            attempt in 1u32..40,
        ) {
            let draw = jitter_for(&event_id, replay_count, attempt);
            prop_assert!((0.0..1.0).contains(&draw), "{draw}");
            prop_assert_eq!(draw.to_bits(), jitter_for(&event_id, replay_count, attempt).to_bits());
        }

        #[test]
        fn the_tier_is_never_shorter_than_the_delay_unless_it_is_the_longest(
            delay_ms in 0u64..10_000_000,
            tiers in proptest::collection::vec(1u64..5_000, 1..6),
        ) {
            let tier = tier_for(Duration::from_millis(delay_ms), &tiers).expect("tiers given");
            let longest = *tiers.iter().max().expect("non-empty");
            prop_assert!(tier * 1000 >= delay_ms || tier == longest);
        }
    }
}
