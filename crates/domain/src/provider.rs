//! Provider names: what a dispatcher calls the providers it has, and what retry rules may name in `providers`.
//!
//! Both sides read this one definition, so that `herald-retry` can refuse at startup a rule naming a provider no
//! dispatcher has, instead of every event finding out at its second attempt.

use std::collections::BTreeMap;

use crate::event::Channel;

/// The sandbox, which every dispatcher has for every channel.
pub const SANDBOX: &str = "sandbox";
/// The SMTP relay of `HERALD_SMTP_*`.
pub const SMTP: &str = "smtp";
/// The SMS API of `HERALD_SMS_*`.
pub const HTTP_SMS: &str = "http-sms";
/// Another name of [`HTTP_SMS`]: the SMS API Herald speaks has Twilio's shape.
pub const TWILIO: &str = "twilio";
/// Signed HTTP webhooks.
pub const WEBHOOK: &str = "webhook";
/// Firebase Cloud Messaging's HTTP v1 API (`HERALD_FCM_*`).
pub const FCM: &str = "fcm";
/// OneSignal's REST API (`HERALD_ONESIGNAL_*`).
pub const ONESIGNAL: &str = "onesignal";

/// Longest provider name.
pub const MAX_NAME_LEN: usize = 32;

/// The names every dispatcher knows for `channel` whatever its configuration: the channel's built-in provider and
/// the sandbox.
pub fn builtin(channel: Channel) -> &'static [&'static str] {
    match channel {
        Channel::Email => &[SMTP, SANDBOX],
        Channel::Sms => &[HTTP_SMS, TWILIO, SANDBOX],
        Channel::Webhook => &[WEBHOOK, SANDBOX],
        Channel::Push => &[FCM, ONESIGNAL, SANDBOX],
    }
}

/// Which channels may name extra providers (`HERALD_EMAIL_PROVIDERS`, `HERALD_SMS_PROVIDERS`): a webhook's
/// receiver is in the event itself, so there is nothing to fall back to but the sandbox.
pub fn accepts_extras(channel: Channel) -> bool {
    matches!(channel, Channel::Email | Channel::Sms)
}

/// The variable listing a channel's extra providers by name.
pub fn extras_variable(channel: Channel) -> Option<&'static str> {
    match channel {
        Channel::Email => Some("HERALD_EMAIL_PROVIDERS"),
        Channel::Sms => Some("HERALD_SMS_PROVIDERS"),
        Channel::Webhook | Channel::Push => None,
    }
}

/// Reads a comma-separated list of extra provider names for `channel`: each 1 to 32 of `a-z`, `0-9` and `-`
/// (case-insensitive, kept lower-case), none a built-in name, none twice. Every problem is returned.
pub fn parse_names(channel: Channel, raw: &str) -> Result<Vec<String>, Vec<String>> {
    let mut names = Vec::new();
    let mut problems = Vec::new();
    for name in raw.split(',').map(|n| n.trim().to_ascii_lowercase()) {
        if name.is_empty() {
            problems.push("provider names must not be empty".to_owned());
        } else if name.len() > MAX_NAME_LEN
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            problems.push(format!(
                "'{name}' is not a provider name: 1 to {MAX_NAME_LEN} of a-z, 0-9 and -"
            ));
        } else if builtin(channel).contains(&name.as_str()) {
            problems.push(format!(
                "'{name}' is a built-in {channel} provider and cannot be redefined"
            ));
        } else if names.contains(&name) {
            problems.push(format!("'{name}' is listed twice"));
        } else {
            names.push(name);
        }
    }
    if problems.is_empty() {
        Ok(names)
    } else {
        Err(problems)
    }
}

/// The environment-variable form of a provider name inside other variables: `eu-relay` is `EU_RELAY` in
/// `HERALD_SMTP_EU_RELAY_HOST`.
pub fn env_segment(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// Every provider name known per channel: the built-in ones and the configured extras.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownProviders {
    by_channel: BTreeMap<Channel, Vec<String>>,
}

impl KnownProviders {
    /// The built-in names, plus `extras` (per channel, already checked with [`parse_names`]).
    pub fn new(extras: &BTreeMap<Channel, Vec<String>>) -> Self {
        let by_channel = Channel::ALL
            .iter()
            .map(|channel| {
                let mut names: Vec<String> =
                    builtin(*channel).iter().map(|n| (*n).to_owned()).collect();
                names.extend(extras.get(channel).into_iter().flatten().cloned());
                (*channel, names)
            })
            .collect();
        Self { by_channel }
    }

    /// The names known for `channel`.
    pub fn names(&self, channel: Channel) -> &[String] {
        self.by_channel.get(&channel).map_or(&[], Vec::as_slice)
    }

    /// Whether `name` is a provider of `channel`.
    pub fn has(&self, channel: Channel, name: &str) -> bool {
        self.names(channel).iter().any(|n| n == name)
    }

    /// Whether `name` is a provider of any channel.
    pub fn has_any(&self, name: &str) -> bool {
        Channel::ALL.iter().any(|channel| self.has(*channel, name))
    }
}

impl Default for KnownProviders {
    fn default() -> Self {
        Self::new(&BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_every_problem_listed() {
        assert_eq!(
            parse_names(Channel::Sms, " Backup ,eu-2"),
            Ok(vec!["backup".to_owned(), "eu-2".to_owned()])
        );
        let problems =
            parse_names(Channel::Email, "relay,,smtp,relay,bad_name").expect_err("four problems");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[1].contains("built-in"), "{problems:?}");
        assert!(problems[2].contains("twice"), "{problems:?}");
        assert!(problems[3].contains("bad_name"), "{problems:?}");
        assert_eq!(env_segment("eu-relay"), "EU_RELAY");
    }

    #[test]
    fn known_names_are_per_channel() {
        let extras = BTreeMap::from([(Channel::Sms, vec!["backup".to_owned()])]);
        let known = KnownProviders::new(&extras);
        assert!(known.has(Channel::Sms, "backup"));
        assert!(known.has(Channel::Sms, "http-sms"));
        assert!(!known.has(Channel::Email, "backup"));
        assert!(known.has(Channel::Webhook, "sandbox"));
        assert!(known.has_any("backup"));
        assert!(!known.has_any("pigeon"));
    }
}
