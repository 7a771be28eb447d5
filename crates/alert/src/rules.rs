//! Alert rules: what to count, per what, how many within which window, how often to tell whom.
//!
//! Rules come from a TOML or JSON file (`HERALD_ALERT_RULES`) on top of three built-in ones, and are validated
//! as a whole: every problem of every rule is reported at once. Matching a status message and reading its group
//! are pure functions, tested here.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use herald_domain::{Channel, Priority, StatusMessage, StatusOutcome};
use serde::Deserialize;

/// How loud an alert is; shown in the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    fn parse(raw: &str) -> Result<Self, String> {
        match raw.to_ascii_lowercase().as_str() {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(format!(
                "unknown severity '{raw}', expected one of: info, warning, critical"
            )),
        }
    }
}

/// Which status messages a rule counts; every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub event_type: Option<String>,
    pub channel: Option<Channel>,
    pub priority: Option<Priority>,
    pub outcome: Option<StatusOutcome>,
}

impl Match {
    pub fn matches(&self, status: &StatusMessage) -> bool {
        self.event_type
            .as_ref()
            .is_none_or(|t| status.event_type.as_ref() == Some(t))
            && self.channel.is_none_or(|c| status.channel == Some(c))
            && self.priority.is_none_or(|p| status.priority == p)
            && self.outcome.is_none_or(|o| status.outcome == o)
    }

    /// `eventType=request.failed, outcome=recorded`, for people.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            self.event_type.as_ref().map(|t| format!("eventType={t}")),
            self.channel.map(|c| format!("channel={c}")),
            self.priority.map(|p| format!("priority={p}")),
            self.outcome.map(|o| format!("outcome={o}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "every step".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// The field a rule groups by: each value is counted, alerted and cooled down on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    EventId,
    EventType,
    Channel,
    Priority,
    Provider,
    Outcome,
    /// A path inside the event's metadata (`metadata.ip` is `["ip"]`).
    Metadata(Vec<String>),
}

/// The group of a rule without `groupBy`.
pub const ALL: &str = "*";
/// The group of a message that lacks the `groupBy` field.
pub const MISSING: &str = "(none)";
/// Longest group value kept; longer values are cut.
const MAX_GROUP_LEN: usize = 200;

impl GroupBy {
    fn parse(raw: &str) -> Result<Self, String> {
        let known = "eventId, eventType, channel, priority, provider, outcome or metadata.<field>";
        match raw {
            "eventId" => Ok(GroupBy::EventId),
            "eventType" => Ok(GroupBy::EventType),
            "channel" => Ok(GroupBy::Channel),
            "priority" => Ok(GroupBy::Priority),
            "provider" => Ok(GroupBy::Provider),
            "outcome" => Ok(GroupBy::Outcome),
            _ => match raw.strip_prefix("metadata.") {
                Some(path) if path.split('.').all(|p| !p.is_empty()) => Ok(GroupBy::Metadata(
                    path.split('.').map(str::to_owned).collect(),
                )),
                _ => Err(format!("unknown field '{raw}', expected {known}")),
            },
        }
    }

    /// The value of this field in `status`, as text.
    pub fn value(&self, status: &StatusMessage) -> String {
        let value = match self {
            GroupBy::EventId => Some(status.event_id.to_string()),
            GroupBy::EventType => status.event_type.clone(),
            GroupBy::Channel => status.channel.map(|c| c.as_str().to_owned()),
            GroupBy::Priority => Some(status.priority.as_str().to_owned()),
            GroupBy::Provider => status.provider.clone(),
            GroupBy::Outcome => Some(status.outcome.as_str().to_owned()),
            GroupBy::Metadata(path) => status
                .metadata
                .as_ref()
                .and_then(|metadata| path.iter().try_fold(metadata, |value, key| value.get(key)))
                .and_then(|value| match value {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(text) => Some(text.clone()),
                    other => Some(other.to_string()),
                }),
        };
        match value {
            Some(value) if !value.is_empty() => value.chars().take(MAX_GROUP_LEN).collect(),
            _ => MISSING.to_owned(),
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupBy::EventId => f.write_str("eventId"),
            GroupBy::EventType => f.write_str("eventType"),
            GroupBy::Channel => f.write_str("channel"),
            GroupBy::Priority => f.write_str("priority"),
            GroupBy::Provider => f.write_str("provider"),
            GroupBy::Outcome => f.write_str("outcome"),
            GroupBy::Metadata(path) => write!(f, "metadata.{}", path.join(".")),
        }
    }
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub matcher: Match,
    pub group_by: Option<GroupBy>,
    /// Alert when at least this many matching steps of one group fall within `window`.
    pub threshold: u64,
    pub window: Duration,
    /// After an alert, the same rule and group stay quiet this long; a burst still going on then gives one
    /// reminder.
    pub cooldown: Duration,
    pub recipients: Vec<String>,
    pub severity: Severity,
}

impl Rule {
    /// The group `status` falls in under this rule.
    pub fn group_of(&self, status: &StatusMessage) -> String {
        self.group_by
            .as_ref()
            .map_or_else(|| ALL.to_owned(), |by| by.value(status))
    }
}

/// Every rule in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// A rule as written in the file, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    name: Option<String>,
    #[serde(default, rename = "match")]
    matcher: RawMatch,
    group_by: Option<String>,
    threshold: Option<u64>,
    window: Option<RawDuration>,
    cooldown: Option<RawDuration>,
    recipients: Option<Vec<String>>,
    severity: Option<String>,
    /// `false` switches a rule (a built-in one, by its name) off.
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMatch {
    event_type: Option<String>,
    channel: Option<String>,
    priority: Option<String>,
    outcome: Option<String>,
}

/// A duration as text (`90s`, `5m`, `2h`, `1d`) or a number of seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

/// The file: built-in rules are kept unless `builtins = false`; a rule named like a built-in replaces it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    builtins: Option<bool>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

/// The name of the built-in dead-letter rule.
pub const CRITICAL_DEAD_LETTER: &str = "critical-dead-letter";
/// The name of the built-in failed-attempts rule.
pub const CHANNEL_FAILURES: &str = "channel-failures";
/// The name of the built-in failed-request monitor.
pub const FAILED_REQUESTS: &str = "failed-requests";

/// Parses `90s`, `5m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let bad = || format!("'{raw}' is not a duration such as 30s, 5m, 2h or 1d");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(bad)
}

/// `600s` as `10m`, for people.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Whether `raw` looks like an email address lettre can send to.
fn check_address(raw: &str) -> Result<(), String> {
    raw.parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|e| format!("'{raw}' is not an email address: {e}"))
}

impl Rules {
    /// The built-in rules, sending to `recipients`.
    pub fn builtin(recipients: &[String]) -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            rules: vec![
                Rule {
                    name: CRITICAL_DEAD_LETTER.to_owned(),
                    matcher: Match {
                        priority: Some(Priority::Critical),
                        outcome: Some(StatusOutcome::DeadLettered),
                        ..Match::default()
                    },
                    group_by: Some(GroupBy::EventId),
                    threshold: 1,
                    window: minutes(60),
                    cooldown: minutes(60),
                    recipients: recipients.to_vec(),
                    severity: Severity::Critical,
                },
                Rule {
                    name: CHANNEL_FAILURES.to_owned(),
                    matcher: Match {
                        outcome: Some(StatusOutcome::Failed),
                        ..Match::default()
                    },
                    group_by: Some(GroupBy::Channel),
                    threshold: 20,
                    window: minutes(5),
                    cooldown: minutes(15),
                    recipients: recipients.to_vec(),
                    severity: Severity::Warning,
                },
                Rule {
                    name: FAILED_REQUESTS.to_owned(),
                    matcher: Match {
                        event_type: Some("request.failed".to_owned()),
                        outcome: Some(StatusOutcome::Recorded),
                        ..Match::default()
                    },
                    group_by: Some(GroupBy::Metadata(vec!["ip".to_owned()])),
                    threshold: 6,
                    window: minutes(10),
                    cooldown: minutes(30),
                    recipients: recipients.to_vec(),
                    severity: Severity::Warning,
                },
            ],
        }
    }

    /// Reads a rules file: JSON when `path` ends in `.json`, TOML otherwise. `recipients` is the default for
    /// rules (built-in ones among them) that name none. Every problem is returned.
    pub fn from_file_text(
        path: &str,
        text: &str,
        recipients: &[String],
    ) -> Result<Self, Vec<String>> {
        let raw: RawFile = if path.ends_with(".json") {
            serde_json::from_str(text).map_err(|e| vec![e.to_string()])?
        } else {
            toml::from_str(text).map_err(|e| vec![e.to_string().trim().replace('\n', " ")])?
        };
        Self::from_raw(raw, recipients)
    }

    fn from_raw(raw: RawFile, recipients: &[String]) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut rules = if raw.builtins.unwrap_or(true) {
            Self::builtin(recipients).rules
        } else {
            Vec::new()
        };
        let mut seen = BTreeSet::new();
        for (i, rule) in raw.rules.into_iter().enumerate() {
            let at = format!(
                "rules[{i}]{}",
                rule.name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
            let name = rule.name.clone().unwrap_or_default();
            if !name.is_empty() && !seen.insert(name.clone()) {
                problems.push(format!("{at}.name: '{name}' is used by another rule"));
            }
            // Replaces (or, when disabled, removes) the built-in rule of the same name.
            rules.retain(|r| r.name != name);
            if rule.enabled == Some(false) {
                continue;
            }
            match validate(rule, recipients) {
                Ok(rule) => rules.push(rule),
                Err(errors) => problems.extend(errors.into_iter().map(|e| format!("{at}.{e}"))),
            }
        }
        if problems.is_empty() {
            Ok(Self { rules })
        } else {
            Err(problems)
        }
    }

    /// The rules `status` matches.
    pub fn matching<'a>(&'a self, status: &'a StatusMessage) -> impl Iterator<Item = &'a Rule> {
        self.rules.iter().filter(|r| r.matcher.matches(status))
    }

    pub fn all(&self) -> &[Rule] {
        &self.rules
    }

    /// The longest window of any rule (hits older than this are no longer needed).
    pub fn longest_window(&self) -> Duration {
        self.rules
            .iter()
            .map(|r| r.window)
            .max()
            .unwrap_or_default()
    }
}

/// Checks one rule, collecting every problem as `field: message`.
fn validate(raw: RawRule, default_recipients: &[String]) -> Result<Rule, Vec<String>> {
    let mut problems = Vec::new();
    let mut check = |field: &str, result: Result<(), String>| {
        if let Err(message) = result {
            problems.push(format!("{field}: {message}"));
        }
    };
    let name = raw.name.unwrap_or_default();
    check(
        "name",
        if name.trim().is_empty() {
            Err("is required".to_owned())
        } else if name.len() > 100
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            Err("must be 1 to 100 letters, digits and - _ .".to_owned())
        } else {
            Ok(())
        },
    );
    let mut matcher = Match {
        event_type: raw.matcher.event_type,
        ..Match::default()
    };
    if let Some(channel) = raw.matcher.channel {
        match channel.parse::<Channel>() {
            Ok(c) => matcher.channel = Some(c),
            Err(e) => check("match.channel", Err(e.to_string())),
        }
    }
    if let Some(priority) = raw.matcher.priority {
        match priority.parse::<Priority>() {
            Ok(p) => matcher.priority = Some(p),
            Err(e) => check("match.priority", Err(e.to_string())),
        }
    }
    if let Some(outcome) = raw.matcher.outcome {
        match outcome.parse::<StatusOutcome>() {
            Ok(o) => matcher.outcome = Some(o),
            Err(e) => check("match.outcome", Err(e.to_string())),
        }
    }
    let group_by = match raw.group_by.as_deref().map(GroupBy::parse) {
        None => None,
        Some(Ok(by)) => Some(by),
        Some(Err(e)) => {
            check("groupBy", Err(e));
            None
        }
    };
    let threshold = raw.threshold.unwrap_or(0);
    check(
        "threshold",
        match raw.threshold {
            None => Err("is required (a count of 1 or more)".to_owned()),
            Some(0) => Err("must be 1 or more".to_owned()),
            Some(_) => Ok(()),
        },
    );
    let mut duration = |field: &str, raw: Option<RawDuration>, zero_ok: bool| {
        let parsed = match raw {
            None => Err("is required (such as 5m)".to_owned()),
            Some(RawDuration::Seconds(s)) => Ok(Duration::from_secs(s)),
            Some(RawDuration::Text(text)) => parse_duration(&text),
        };
        match parsed {
            Ok(d) if d.is_zero() && !zero_ok => {
                check(field, Err("must be longer than 0".to_owned()));
                Duration::ZERO
            }
            Ok(d) => d,
            Err(e) => {
                check(field, Err(e));
                Duration::ZERO
            }
        }
    };
    let window = duration("window", raw.window, false);
    let cooldown = duration("cooldown", raw.cooldown, true);
    let recipients = raw
        .recipients
        .unwrap_or_else(|| default_recipients.to_vec());
    if recipients.is_empty() {
        check(
            "recipients",
            Err("is required (or set HERALD_ALERT_RECIPIENTS)".to_owned()),
        );
    }
    for (i, address) in recipients.iter().enumerate() {
        check(&format!("recipients[{i}]"), check_address(address));
    }
    let severity = match raw.severity.as_deref().map(Severity::parse) {
        None => Severity::Warning,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            check("severity", Err(e));
            Severity::Warning
        }
    };
    if problems.is_empty() {
        Ok(Rule {
            name,
            matcher,
            group_by,
            threshold,
            window,
            cooldown,
            recipients,
            severity,
        })
    } else {
        Err(problems)
    }
}

/// Checks a recipient list from the environment.
pub fn check_recipients(recipients: &[String]) -> Result<(), String> {
    if recipients.is_empty() {
        return Err("give at least one address".to_owned());
    }
    recipients
        .iter()
        .map(|r| check_address(r))
        .collect::<Result<Vec<()>, String>>()
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::Event;

    fn ops() -> Vec<String> {
        vec!["ops@example.com".to_owned()]
    }

    fn status(outcome: StatusOutcome, metadata: serde_json::Value) -> StatusMessage {
        let event: Event = serde_json::from_value(serde_json::json!({
            "eventId": "e1", "eventType": "request.failed", "payload": {}, "metadata": metadata,
            "createdAt": "2024-01-01T00:00:00Z"
        }))
        .expect("an event");
        StatusMessage::new(&event, outcome, 0, 0)
    }

    #[test]
    fn durations_read_units_and_plain_seconds() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn the_failed_request_monitor_groups_by_ip() {
        let rules = Rules::builtin(&ops());
        let failed = status(
            StatusOutcome::Recorded,
            serde_json::json!({"ip": "10.0.0.1"}),
        );
        let matched: Vec<&Rule> = rules.matching(&failed).collect();
        assert_eq!(matched.len(), 1);
        assert_eq!(matched[0].name, FAILED_REQUESTS);
        assert_eq!(matched[0].group_of(&failed), "10.0.0.1");
        let no_ip = status(
            StatusOutcome::Recorded,
            serde_json::json!({"reason": "401"}),
        );
        assert_eq!(matched[0].group_of(&no_ip), MISSING);
        let delivered = status(StatusOutcome::Delivered, serde_json::json!({}));
        assert_eq!(rules.matching(&delivered).count(), 0);
    }

    #[test]
    fn a_file_replaces_and_adds_rules_in_toml_and_json() {
        let toml = r#"
            [[rules]]
            name = "failed-requests"
            match = { eventType = "login.failed", outcome = "recorded" }
            groupBy = "metadata.user.id"
            threshold = 3
            window = "1m"
            cooldown = 0
            recipients = ["sec@example.com"]
            severity = "critical"

            [[rules]]
            name = "channel-failures"
            enabled = false
        "#;
        let rules = Rules::from_file_text("rules.toml", toml, &ops()).expect("valid");
        let names: Vec<&str> = rules.all().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, [CRITICAL_DEAD_LETTER, FAILED_REQUESTS]);
        let rule = &rules.all()[1];
        assert_eq!(rule.threshold, 3);
        assert_eq!(rule.cooldown, Duration::ZERO);
        assert_eq!(
            rule.group_by.as_ref().map(ToString::to_string).as_deref(),
            Some("metadata.user.id")
        );
        let json = r#"{"builtins": false, "rules": [{"name": "webhooks", "match": {"channel": "webhook",
            "outcome": "dead_lettered"}, "threshold": 1, "window": 60, "cooldown": "5m"}]}"#;
        let rules = Rules::from_file_text("rules.json", json, &ops()).expect("valid");
        assert_eq!(rules.all().len(), 1);
        assert_eq!(rules.all()[0].recipients, ops(), "the default recipients");
        assert_eq!(rules.all()[0].severity, Severity::Warning);
    }

    #[test]
    fn every_problem_of_every_rule_is_listed() {
        let toml = r#"
            [[rules]]
            name = "bad one"
            match = { channel = "pigeon", priority = "urgent", outcome = "lost" }
            groupBy = "colour"
            threshold = 0
            window = "soon"
            recipients = ["not-an-address"]
            severity = "loud"

            [[rules]]
            name = "no-threshold"
            window = "0s"
            cooldown = "1m"
        "#;
        let problems = Rules::from_file_text("r.toml", toml, &[]).expect_err("invalid");
        let text = problems.join("\n");
        for field in [
            "rules[0] (bad one).name",
            "match.channel",
            "match.priority",
            "match.outcome",
            "groupBy",
            "rules[0] (bad one).threshold",
            "rules[0] (bad one).window",
            "rules[0] (bad one).cooldown",
            "recipients[0]",
            "severity",
            "rules[1] (no-threshold).threshold",
            "rules[1] (no-threshold).window",
            "rules[1] (no-threshold).recipients",
        ] {
            assert!(text.contains(field), "{field} missing from:\n{text}");
        }
        let unknown = Rules::from_file_text(
            "r.toml",
            "[[rules]]\nname = \"x\"\nthreshhold = 3\n",
            &ops(),
        )
        .expect_err("a typo");
        assert!(unknown[0].contains("threshhold"), "{unknown:?}");
    }
}
