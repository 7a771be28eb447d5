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
/// SendGrid's v3 Mail Send API (`HERALD_SENDGRID_*`).
pub const SENDGRID: &str = "sendgrid";
/// Mailgun's messages API (`HERALD_MAILGUN_*`).
pub const MAILGUN: &str = "mailgun";
/// MessageBird's SMS API (`HERALD_MESSAGEBIRD_*`).
pub const MESSAGEBIRD: &str = "messagebird";
/// Signed HTTP webhooks.
pub const WEBHOOK: &str = "webhook";
/// Firebase Cloud Messaging's HTTP v1 API (`HERALD_FCM_*`).
pub const FCM: &str = "fcm";
/// Another name of [`FCM`], the one the notification dispatchers' clients use.
pub const FIREBASE: &str = "firebase";
/// OneSignal's REST API (`HERALD_ONESIGNAL_*`).
pub const ONESIGNAL: &str = "onesignal";

/// Longest provider name.
pub const MAX_NAME_LEN: usize = 32;

/// The names a dispatcher may know for `channel`: the channel's built-in providers (each there when configured,
/// see [`configured`]) and the sandbox.
pub fn builtin(channel: Channel) -> &'static [&'static str] {
    match channel {
        Channel::Email => &[SMTP, SENDGRID, MAILGUN, SANDBOX],
        Channel::Sms => &[HTTP_SMS, TWILIO, MESSAGEBIRD, SANDBOX],
        Channel::Webhook => &[WEBHOOK, SANDBOX],
        Channel::Push => &[FCM, FIREBASE, ONESIGNAL, SANDBOX],
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

/// Every variable [`configured`] and the extras lists read: what ingest must be given alike with the dispatchers,
/// or it refuses a `provider` they have (the deployment files pass these to both; a test checks it).
pub const SELECTION_VARS: &[&str] = &[
    "HERALD_EMAIL_PROVIDER",
    "HERALD_EMAIL_PROVIDERS",
    "HERALD_SENDGRID_API_KEY",
    "HERALD_MAILGUN_API_KEY",
    "HERALD_SMS_PROVIDER",
    "HERALD_SMS_PROVIDERS",
    "HERALD_SMS_BASE_URL",
    "HERALD_MESSAGEBIRD_ACCESS_KEY",
    "HERALD_WEBHOOK_PROVIDER",
    "HERALD_FCM_SERVICE_ACCOUNT_FILE",
    "HERALD_ONESIGNAL_APP_ID",
];

/// The built-in providers a process configured with `var` (an environment lookup) has for `channel`: the one
/// place that says which variables make which provider, read alike by the dispatchers (which build them) and by
/// ingest (which accepts a client's `provider` only among them). A provider is there when its defining variable
/// is set: `smtp` unless `HERALD_EMAIL_PROVIDER` is `sandbox`, `sendgrid` with `HERALD_SENDGRID_API_KEY`,
/// `mailgun` with `HERALD_MAILGUN_API_KEY`, `http-sms` (and `twilio`) with `HERALD_SMS_BASE_URL`, `messagebird`
/// with `HERALD_MESSAGEBIRD_ACCESS_KEY`, `webhook` unless `HERALD_WEBHOOK_PROVIDER` is `sandbox`, `fcm` (and
/// `firebase`) with `HERALD_FCM_SERVICE_ACCOUNT_FILE`, `onesignal` with `HERALD_ONESIGNAL_APP_ID`; the sandbox
/// always.
pub fn configured<'a>(
    channel: Channel,
    var: impl Fn(&str) -> Option<&'a str>,
) -> Vec<&'static str> {
    let set = |key: &str| var(key).is_some_and(|v| !v.trim().is_empty());
    let not_sandbox = |key: &str| !var(key).is_some_and(|v| v.trim().eq_ignore_ascii_case(SANDBOX));
    let candidates: &[(&'static str, bool)] = &match channel {
        Channel::Email => vec![
            (SMTP, not_sandbox("HERALD_EMAIL_PROVIDER")),
            (SENDGRID, set("HERALD_SENDGRID_API_KEY")),
            (MAILGUN, set("HERALD_MAILGUN_API_KEY")),
        ],
        Channel::Sms => {
            let http = set("HERALD_SMS_BASE_URL") && not_sandbox("HERALD_SMS_PROVIDER");
            vec![
                (HTTP_SMS, http),
                (TWILIO, http),
                (MESSAGEBIRD, set("HERALD_MESSAGEBIRD_ACCESS_KEY")),
            ]
        }
        Channel::Webhook => vec![(WEBHOOK, not_sandbox("HERALD_WEBHOOK_PROVIDER"))],
        Channel::Push => {
            let fcm = set("HERALD_FCM_SERVICE_ACCOUNT_FILE");
            vec![
                (FCM, fcm),
                (FIREBASE, fcm),
                (ONESIGNAL, set("HERALD_ONESIGNAL_APP_ID")),
            ]
        }
    };
    candidates
        .iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| *name)
        .chain([SANDBOX])
        .collect()
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

    /// The providers a process configured by `var` has ([`configured`]), plus `extras`.
    pub fn configured<'a>(
        extras: &BTreeMap<Channel, Vec<String>>,
        var: impl Fn(&str) -> Option<&'a str>,
    ) -> Self {
        let by_channel = Channel::ALL
            .iter()
            .map(|channel| {
                let mut names: Vec<String> = configured(*channel, &var)
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                names.extend(extras.get(channel).into_iter().flatten().cloned());
                names.sort();
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
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn selection_vars_are_exactly_what_the_selection_reads() {
        let asked = RefCell::new(Vec::new());
        for channel in Channel::ALL {
            // Every variable set, so that no `&&` leaves one unread.
            configured(*channel, |key| {
                asked.borrow_mut().push(key.to_owned());
                Some("set")
            });
            asked
                .borrow_mut()
                .extend(extras_variable(*channel).map(str::to_owned));
        }
        let mut asked = asked.into_inner();
        asked.sort();
        asked.dedup();
        let mut listed: Vec<String> = SELECTION_VARS.iter().map(|v| (*v).to_owned()).collect();
        listed.sort();
        assert_eq!(asked, listed);
    }

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

    #[test]
    fn configured_providers_follow_their_variables() {
        let vars = BTreeMap::from([
            ("HERALD_SENDGRID_API_KEY", "SG.x"),
            ("HERALD_MESSAGEBIRD_ACCESS_KEY", "live_x"),
            ("HERALD_WEBHOOK_PROVIDER", "Sandbox"),
        ]);
        let var = |key: &str| vars.get(key).copied();
        assert_eq!(configured(Channel::Email, var), [SMTP, SENDGRID, SANDBOX]);
        assert_eq!(configured(Channel::Sms, var), [MESSAGEBIRD, SANDBOX]);
        assert_eq!(configured(Channel::Webhook, var), [SANDBOX]);
        assert_eq!(configured(Channel::Push, var), [SANDBOX]);
        let extras = BTreeMap::from([(Channel::Sms, vec!["backup".to_owned()])]);
        let known = KnownProviders::configured(&extras, var);
        assert_eq!(
            known.names(Channel::Sms),
            ["backup", "messagebird", "sandbox"]
        );
    }
}
