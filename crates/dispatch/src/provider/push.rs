//! The push channel: which provider sends first (`HERALD_PUSH_PROVIDER`), FCM (`fcm.rs`) and OneSignal
//! (`onesignal.rs`), and how a message to several device tokens ends.

use herald_platform::EnvReader;

use super::fcm::FcmConfig;
use super::onesignal::OneSignalConfig;
use super::{Delivered, SendError};
use herald_domain::ErrorClass;

/// Which provider takes a push message's first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushBackend {
    Fcm,
    OneSignal,
    Sandbox,
}

/// The push channel.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// `HERALD_PUSH_PROVIDER`: `fcm`, `onesignal` or `sandbox`. Default `fcm` when `HERALD_FCM_SERVICE_ACCOUNT_FILE`
    /// is set, else `onesignal` when `HERALD_ONESIGNAL_APP_ID` is, else `sandbox`.
    pub backend: PushBackend,
    /// `HERALD_FCM_*`, when set: FCM is then a provider of this dispatcher whichever sends first.
    pub fcm: Option<FcmConfig>,
    /// `HERALD_ONESIGNAL_*`, when set: likewise for OneSignal (the usual fallback).
    pub onesignal: Option<OneSignalConfig>,
}

impl PushConfig {
    /// `HERALD_PUSH_PROVIDER`, `HERALD_FCM_*` and `HERALD_ONESIGNAL_*`.
    pub(crate) fn read(env: &mut EnvReader) -> Self {
        let fcm = FcmConfig::read(env);
        let onesignal = OneSignalConfig::read(env);
        let default = if env.raw("HERALD_FCM_SERVICE_ACCOUNT_FILE").is_some() {
            PushBackend::Fcm
        } else if env.raw("HERALD_ONESIGNAL_APP_ID").is_some() {
            PushBackend::OneSignal
        } else {
            PushBackend::Sandbox
        };
        let key = "HERALD_PUSH_PROVIDER";
        let backend = match env.raw(key).map(str::to_ascii_lowercase).as_deref() {
            None => default,
            Some("fcm") => PushBackend::Fcm,
            Some("onesignal") => PushBackend::OneSignal,
            Some("sandbox") => PushBackend::Sandbox,
            Some(other) => {
                let problem = format!("'{other}' is not valid: expected fcm, onesignal or sandbox");
                env.problem(key, problem);
                default
            }
        };
        match backend {
            PushBackend::Fcm
                if fcm.is_none() && env.raw("HERALD_FCM_SERVICE_ACCOUNT_FILE").is_none() =>
            {
                env.problem(
                    "HERALD_FCM_SERVICE_ACCOUNT_FILE",
                    "is required when HERALD_PUSH_PROVIDER is fcm",
                );
            }
            PushBackend::OneSignal
                if onesignal.is_none() && env.raw("HERALD_ONESIGNAL_APP_ID").is_none() =>
            {
                env.problem(
                    "HERALD_ONESIGNAL_APP_ID",
                    "is required when HERALD_PUSH_PROVIDER is onesignal",
                );
            }
            _ => {}
        }
        Self {
            backend,
            fcm,
            onesignal,
        }
    }
}

/// How a message to several tokens ends, sent one token at a time: a retryable failure fails the attempt (the
/// retry sends to every token again: push is at least once, like every channel); otherwise it is delivered when
/// one token took it (the tokens that are gone are named in the detail), and fails as the last refusal when none did.
pub(crate) fn combine(
    results: Vec<(String, Result<Delivered, SendError>)>,
) -> Result<Delivered, SendError> {
    let n_tokens = results.len();
    let mut delivered: Option<Delivered> = None;
    let mut refused: Vec<(String, SendError)> = Vec::new();
    for (token, result) in results {
        match result {
            Ok(ok) => delivered = delivered.or(Some(ok)),
            Err(e) if e.class == ErrorClass::Retryable => return Err(e),
            Err(e) => refused.push((token, e)),
        }
    }
    match delivered {
        Some(mut ok) => {
            if !refused.is_empty() {
                let gone: Vec<&str> = refused.iter().map(|(t, _)| t.as_str()).collect();
                ok.detail = Some(format!(
                    "delivered to {} of {n_tokens} tokens; refused: {}",
                    n_tokens - refused.len(),
                    gone.join(", ")
                ));
            }
            Ok(ok)
        }
        None => Err(refused
            .pop()
            .map(|(_, e)| e)
            .unwrap_or_else(|| SendError::invalid("a push message without tokens"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::outcome::TransportFailure;

    #[test]
    fn several_tokens_end_as_their_worst_retryable_or_best_delivery() {
        let ok = || Ok(Delivered::default());
        let gone = || Err(SendError::invalid("HTTP 404: UNREGISTERED"));
        let busy = || Err(SendError::transport(TransportFailure::Timeout, "slow"));
        let partial =
            combine(vec![("a".into(), ok()), ("b".into(), gone())]).expect("delivered to a");
        assert_eq!(
            partial.detail.as_deref(),
            Some("delivered to 1 of 2 tokens; refused: b")
        );
        let retry = combine(vec![("a".into(), ok()), ("b".into(), busy())]).expect_err("retry");
        assert_eq!(retry.class, ErrorClass::Retryable);
        let none = combine(vec![("a".into(), gone()), ("b".into(), gone())]).expect_err("none");
        assert_eq!(none.class, ErrorClass::Permanent);
    }
}
