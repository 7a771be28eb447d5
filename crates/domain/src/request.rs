//! Validation of incoming requests: a JSON body in, an [`Event`] or every problem with it out.
//!
//! Bodies are read as `serde_json::Value` rather than deserialized into typed structs, because serde stops at
//! the first problem while callers want all of them at once: a wrong `priority`, a mistyped `chanel` and a bad
//! `payload.to` are reported together. Reading happens in two steps. The shape (presence, JSON types, unknown
//! fields) is checked here while the value is read; the content of a channel's payload (address syntax,
//! lengths, control characters) is checked by the `validator` rules on the payload structs.
//!
//! Every function here is pure: no I/O, and the only outside inputs are the clock and a fresh id for events
//! that bring no id of their own.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};
use validator::{ValidateLength, ValidateNonControlCharacter};

use crate::error::FieldError;
use crate::event::{Channel, Event, EventId, Priority};
use crate::message::{Email, Message, Push, Sms, Webhook};
use crate::provider::KnownProviders;
use crate::template::Templates;

mod dropin;

pub use dropin::{parse_generated, GENERATE_FIELDS};

/// Longest `userId`, in characters.
pub const MAX_USER_ID_LEN: u64 = 256;
/// Longest `eventType` (and `activityType`), in characters.
pub const MAX_EVENT_TYPE_LEN: u64 = 128;
pub use crate::message::{MAX_SMS_LEN, MAX_SUBJECT_LEN};
/// Longest phone number as written by a client, in characters, before it is parsed.
const MAX_PHONE_INPUT_LEN: usize = 64;
/// Longest webhook URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// The top-level fields of `POST /event`.
pub const EVENT_FIELDS: &[&str] = &[
    "eventId",
    "userId",
    "eventType",
    "channel",
    "priority",
    "payload",
    "metadata",
    "provider",
];

/// The fields of `POST /api/logs`.
pub const ACTIVITY_FIELDS: &[&str] = &["userId", "activityType", "metadata", "timestamp"];

const EMAIL_FIELDS: &[&str] = &["to", "subject", "text", "html"];
const SMS_FIELDS: &[&str] = &["phoneNumber", "message"];
const WEBHOOK_FIELDS: &[&str] = &["url", "body", "headers"];
const PUSH_FIELDS: &[&str] = &["token", "tokens", "title", "body", "data"];

/// The country whose national numbering plan applies to a phone number written without a `+` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(phonenumber::country::Id);

impl Default for Region {
    fn default() -> Self {
        Self(phonenumber::country::Id::US)
    }
}

impl FromStr for Region {
    type Err = String;

    /// An ISO 3166-1 alpha-2 code, in any case (`US`, `gb`).
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        raw.trim()
            .to_ascii_uppercase()
            .parse()
            .map(Self)
            .map_err(|_| {
                format!(
                    "unknown region '{raw}', expected an ISO 3166-1 alpha-2 code such as US or GB"
                )
            })
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

/// The settings validation depends on.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Region of phone numbers written in national form. Default `US`.
    pub default_region: Region,
    /// The providers a client may name in `provider`, per channel. Default: every built-in name.
    pub providers: Arc<KnownProviders>,
    /// The message templates by event type. Default: none.
    pub templates: Arc<Templates>,
}

/// The value of an `Idempotency-Key` header: 1 to 255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The header's name, as HTTP libraries spell it (lower case).
    pub const HEADER: &'static str = "idempotency-key";
    /// The field name problems with the header are reported under.
    pub const FIELD: &'static str = "headers.Idempotency-Key";
    /// Longest key, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Checks a header value as received (raw bytes: a header need not be UTF-8).
    pub fn parse(raw: impl AsRef<[u8]>) -> Result<Self, FieldError> {
        let raw = raw.as_ref();
        let problem = |message: String| FieldError::new(Self::FIELD, message);
        let text = std::str::from_utf8(raw)
            .ok()
            .filter(|text| text.bytes().all(|b| (0x20..=0x7e).contains(&b)))
            .ok_or_else(|| problem("may contain only printable ASCII characters".into()))?
            .trim();
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(problem(format!(
                "must be 1 to {} characters long",
                Self::MAX_LEN
            )));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Reads a `POST /event` body into an event, or lists every problem with it, sorted by field.
///
/// The event gets the client's `eventId`, or a fresh one. A channel's payload is normalised (a phone number to
/// E.164) and keeps only the fields the channel knows; a record-only payload is kept as it is.
pub fn parse_event(body: &Value, rules: &Rules) -> Result<Event, Vec<FieldError>> {
    let mut problems = Problems::default();
    let Some(map) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    problems.unknown_fields(map, "", EVENT_FIELDS);

    let event_id = problems
        .string(map, "", "eventId", Need::Optional)
        .and_then(|raw| problems.check("eventId", EventId::parse(&raw)));
    let user_id = problems.label(map, "userId", Need::Optional, MAX_USER_ID_LEN);
    let event_type = problems.label(map, "eventType", Need::Optional, MAX_EVENT_TYPE_LEN);
    // `None` for a record-only event; `Err` when the channel was given but is not one we know, in which case
    // the payload can only be checked for being an object.
    let channel: Result<Option<Channel>, ()> =
        match problems.string(map, "", "channel", Need::Optional) {
            None if map.get("channel").is_some_and(|v| !v.is_null()) => Err(()),
            None => Ok(None),
            Some(raw) => problems.check("channel", raw.parse()).map(Some).ok_or(()),
        };
    let priority = problems
        .string(map, "", "priority", Need::Optional)
        .map_or(Some(Priority::default()), |raw| {
            problems.check("priority", raw.parse())
        });
    let payload = problems.object(map, "", "payload", Need::Required);
    let metadata = problems.object(map, "", "metadata", Need::Optional);
    let provider = problems
        .string(map, "", "provider", Need::Optional)
        .or_else(|| chosen_in(metadata));
    let provider = match (provider, channel) {
        (Some(name), Ok(Some(channel))) => problems.provider(&name, channel, &rules.providers),
        (Some(_), Ok(None)) => {
            problems.push(
                "provider",
                "only an event with a channel is sent through a provider",
            );
            None
        }
        _ => None,
    };
    let locale = metadata
        .and_then(|m| m.get("locale"))
        .and_then(Value::as_str);

    let payload = match (payload, channel) {
        (Some(payload), Ok(Some(channel))) => {
            let before = problems.0.len();
            let templated = event_type.as_deref().and_then(|event_type| {
                problems.templated(payload, event_type, locale, channel, &rules.templates)
            });
            // A template that could not be rendered leaves its parts missing: saying so again would only confuse.
            (problems.0.len() == before)
                .then(|| {
                    problems.channel_payload(
                        templated.as_ref().unwrap_or(payload),
                        channel,
                        rules.default_region,
                    )
                })
                .flatten()
                .map(|message| message.to_payload())
        }
        (Some(payload), Ok(None)) => Some(Value::Object(payload.clone())),
        _ => None,
    };

    match (payload, channel, priority) {
        (Some(payload), Ok(channel), Some(priority)) if problems.is_empty() => {
            let mut metadata = metadata.cloned();
            if let Some(provider) = provider {
                metadata
                    .get_or_insert_with(Map::new)
                    .insert(PROVIDER_KEY.into(), Value::String(provider));
            }
            Ok(Event {
                event_id: event_id.unwrap_or_else(EventId::generate),
                user_id,
                event_type,
                channel,
                priority,
                payload,
                metadata: metadata.map(Value::Object),
                created_at: now(),
            })
        }
        _ => Err(problems.into_sorted()),
    }
}

/// Where an accepted event keeps the provider its client chose (`provider` on `POST /event`), in its
/// `metadata`: the metadata is stored and travels with the event wherever it goes (Kafka, MongoDB, a replay),
/// so every first attempt, retry decision and replay sees the choice. A client may also set it there itself;
/// it is checked alike.
pub const PROVIDER_KEY: &str = "heraldProvider";

/// The provider a client put in the metadata itself, when it is a string.
fn chosen_in(metadata: Option<&Map<String, Value>>) -> Option<String> {
    metadata?.get(PROVIDER_KEY)?.as_str().map(str::to_owned)
}

impl Event {
    /// The provider the client chose for the first attempt, if any (see [`PROVIDER_KEY`]).
    pub fn chosen_provider(&self) -> Option<&str> {
        self.metadata.as_ref()?.get(PROVIDER_KEY)?.as_str()
    }
}

/// Reads a `POST /api/logs` body (`{userId, activityType, metadata?, timestamp?}`) into a record-only event
/// whose `eventType` is the activity type, or lists every problem with it.
///
/// The payload is `{"activityType", "timestamp"?}`, the timestamp normalised to RFC 3339 in UTC.
pub fn parse_activity(body: &Value) -> Result<Event, Vec<FieldError>> {
    let mut problems = Problems::default();
    let Some(map) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    problems.unknown_fields(map, "", ACTIVITY_FIELDS);
    let user_id = problems.label(map, "userId", Need::Required, MAX_USER_ID_LEN);
    let activity_type = problems.label(map, "activityType", Need::Required, MAX_EVENT_TYPE_LEN);
    let metadata = problems.object(map, "", "metadata", Need::Optional);
    let timestamp = problems
        .string(map, "", "timestamp", Need::Optional)
        .and_then(|raw| {
            let parsed = DateTime::parse_from_rfc3339(&raw).map_err(|e| {
                format!("must be an RFC 3339 date-time such as 2024-05-01T12:00:00Z: {e}")
            });
            problems.check("timestamp", parsed)
        });

    match (user_id, activity_type) {
        (Some(user_id), Some(activity_type)) if problems.is_empty() => {
            let mut payload = Map::new();
            payload.insert("activityType".into(), Value::String(activity_type.clone()));
            if let Some(at) = timestamp {
                let utc = at.with_timezone(&Utc);
                payload.insert(
                    "timestamp".into(),
                    Value::String(utc.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                );
            }
            Ok(Event {
                event_id: EventId::generate(),
                user_id: Some(user_id),
                event_type: Some(activity_type),
                channel: None,
                priority: Priority::Default,
                payload: Value::Object(payload),
                metadata: metadata.map(|m| Value::Object(m.clone())),
                created_at: now(),
            })
        }
        _ => Err(problems.into_sorted()),
    }
}

/// The acceptance time, at the millisecond precision MongoDB stores, so the event on Kafka and the stored
/// record carry the same `createdAt`.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// Whether a field must be present (and not null).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The problems found so far, and the readers that add to them.
#[derive(Debug, Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn into_sorted(mut self) -> Vec<FieldError> {
        self.0.sort_by(|a, b| {
            a.field
                .cmp(&b.field)
                .then_with(|| a.message.cmp(&b.message))
        });
        self.0
    }

    /// The value of a parse, or a problem recorded under `field`.
    fn check<T, E: fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.push(field, e.to_string())).ok()
    }

    fn unknown_fields(&mut self, map: &Map<String, Value>, prefix: &str, known: &[&str]) {
        for key in map.keys().filter(|key| !known.contains(&key.as_str())) {
            self.push(
                join(prefix, key),
                format!("unknown field, expected one of: {}", known.join(", ")),
            );
        }
    }

    /// A field that is present and not null, or a problem if it is required.
    fn present<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        prefix: &str,
        key: &str,
        need: Need,
    ) -> Option<&'v Value> {
        match map.get(key) {
            Some(Value::Null) | None => {
                if need == Need::Required {
                    self.push(join(prefix, key), "is required");
                }
                None
            }
            Some(value) => Some(value),
        }
    }

    fn string(
        &mut self,
        map: &Map<String, Value>,
        prefix: &str,
        key: &str,
        need: Need,
    ) -> Option<String> {
        match self.present(map, prefix, key, need)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.push(
                    join(prefix, key),
                    format!("must be a string, not {}", kind(other)),
                );
                None
            }
        }
    }

    fn object<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        prefix: &str,
        key: &str,
        need: Need,
    ) -> Option<&'v Map<String, Value>> {
        match self.present(map, prefix, key, need)? {
            Value::Object(inner) => Some(inner),
            other => {
                self.push(
                    join(prefix, key),
                    format!("must be an object, not {}", kind(other)),
                );
                None
            }
        }
    }

    /// A short top-level string that names something (a user, a type): 1 to `max` characters, no control
    /// characters.
    fn label(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        need: Need,
        max: u64,
    ) -> Option<String> {
        let value = self.string(map, "", key, need)?;
        if !value.validate_length(Some(1), Some(max), None) {
            self.push(key, format!("must be 1 to {max} characters long"));
            return None;
        }
        if !value.validate_non_control_character() {
            self.push(key, "must not contain control characters");
            return None;
        }
        Some(value)
    }

    /// A client's `provider` for `channel`, lower-cased, if the dispatchers have it (`firebase`, FCM's other
    /// name, among them); otherwise a problem listing the ones they have.
    fn provider(&mut self, name: &str, channel: Channel, known: &KnownProviders) -> Option<String> {
        let name = name.trim().to_ascii_lowercase();
        if known.has(channel, &name) {
            return Some(name);
        }
        self.push(
            "provider",
            format!(
                "unknown {channel} provider '{name}', expected one of: {}",
                known.names(channel).join(", ")
            ),
        );
        None
    }

    /// The payload with the parts of the event type's template set filled in (an explicit part in the payload
    /// wins), and its `data` taken out for the channels whose messages have none; `None` when there is no set
    /// (or the rendering had problems, which are recorded).
    fn templated(
        &mut self,
        payload: &Map<String, Value>,
        event_type: &str,
        locale: Option<&str>,
        channel: Channel,
        templates: &Templates,
    ) -> Option<Map<String, Value>> {
        if templates.is_empty() {
            return None;
        }
        let data = match payload.get("data") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(data)) => data.clone(),
            // The push reader reports a mistyped `data`; for the others it is the templates' input only.
            Some(other) => {
                if channel != Channel::Push {
                    self.push(
                        "payload.data",
                        format!("must be an object, not {}", kind(other)),
                    );
                }
                return None;
            }
        };
        let rendered = match templates.render(event_type, locale, channel, &data) {
            Ok(rendered) => rendered?,
            Err(problems) => {
                self.0.extend(problems);
                return None;
            }
        };
        let mut filled = payload.clone();
        if channel != Channel::Push {
            filled.remove("data");
        }
        for (part, text) in rendered.parts {
            let explicit = filled.get(part.field()).is_some_and(|v| !v.is_null());
            if !explicit {
                filled.insert(part.field().to_owned(), Value::String(text));
            }
        }
        Some(filled)
    }

    /// Checks and normalises the payload of a channel into its [`Message`]; `None` if it has problems (they
    /// are recorded, the reader's shape problems first, then the message's content rules for the other fields).
    fn channel_payload(
        &mut self,
        payload: &Map<String, Value>,
        channel: Channel,
        region: Region,
    ) -> Option<Message> {
        let before = self.0.len();
        let message = match channel {
            Channel::Email => self.email(payload),
            Channel::Sms => self.sms(payload, region),
            Channel::Webhook => self.webhook(payload),
            Channel::Push => self.push_payload(payload),
        };
        let message = match message {
            Ok(message) => Some(message),
            Err(problems) => {
                // A field the reader already found missing or mistyped needs no second problem from the rules.
                let known: Vec<String> = self.0[before..].iter().map(|p| p.field.clone()).collect();
                for problem in problems {
                    let field = join("payload", &problem.field);
                    if !known.contains(&field) {
                        self.push(field, problem.message);
                    }
                }
                None
            }
        };
        (self.0.len() == before).then_some(message).flatten()
    }

    fn email(&mut self, map: &Map<String, Value>) -> Result<Message, Vec<FieldError>> {
        self.unknown_fields(map, "payload", EMAIL_FIELDS);
        let to = self.string(map, "payload", "to", Need::Required);
        let subject = self.string(map, "payload", "subject", Need::Required);
        let text = self.string(map, "payload", "text", Need::Optional);
        let html = self.string(map, "payload", "html", Need::Optional);
        // A body of the wrong type was reported already; saying it is also missing would only confuse.
        let wrong_type = ["text", "html"].iter().any(|key| {
            map.get(*key)
                .is_some_and(|v| !v.is_null() && !v.is_string())
        });
        Email::parse(to, subject, text, html)
            .map(Message::Email)
            .map_err(|problems| {
                problems
                    .into_iter()
                    .filter(|p| !(wrong_type && p.field == "text"))
                    .collect()
            })
    }

    fn sms(
        &mut self,
        map: &Map<String, Value>,
        region: Region,
    ) -> Result<Message, Vec<FieldError>> {
        self.unknown_fields(map, "payload", SMS_FIELDS);
        let phone = self.string(map, "payload", "phoneNumber", Need::Required);
        let message = self.string(map, "payload", "message", Need::Required);
        Sms::parse(phone, message, region).map(Message::Sms)
    }

    fn push_payload(&mut self, map: &Map<String, Value>) -> Result<Message, Vec<FieldError>> {
        self.unknown_fields(map, "payload", PUSH_FIELDS);
        let token = self.string(map, "payload", "token", Need::Optional);
        let tokens = match self.present(map, "payload", "tokens", Need::Optional) {
            None => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.string_item(&format!("payload.tokens.{i}"), item))
                    .collect(),
            ),
            Some(other) => {
                self.push(
                    "payload.tokens",
                    format!("must be a list of strings, not {}", kind(other)),
                );
                Some(Vec::new())
            }
        };
        let title = self.string(map, "payload", "title", Need::Required);
        let body = self.string(map, "payload", "body", Need::Required);
        let data = self
            .object(map, "payload", "data", Need::Optional)
            .map(|data| {
                data.iter()
                    .map(|(key, value)| {
                        let value = self.string_item(&format!("payload.data.{key}"), value);
                        (key.clone(), value)
                    })
                    .collect()
            });
        Push::parse(token, tokens, title, body, data).map(Message::Push)
    }

    /// A string inside a list or an object, or a problem under `field`.
    fn string_item(&mut self, field: &str, value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.push(field, format!("must be a string, not {}", kind(other)));
                None
            }
        }
    }

    fn webhook(&mut self, map: &Map<String, Value>) -> Result<Message, Vec<FieldError>> {
        self.unknown_fields(map, "payload", WEBHOOK_FIELDS);
        let url = self.string(map, "payload", "url", Need::Required);
        let body = self
            .present(map, "payload", "body", Need::Required)
            .cloned();
        let headers = self
            .object(map, "payload", "headers", Need::Optional)
            .map(|headers| {
                headers
                    .iter()
                    .map(|(name, value)| {
                        let value = match value {
                            Value::String(s) => Some(s.clone()),
                            other => {
                                self.push(
                                    format!("payload.headers.{name}"),
                                    format!("must be a string, not {}", kind(other)),
                                );
                                None
                            }
                        };
                        (name.clone(), value)
                    })
                    .collect()
            });
        Webhook::parse(url, body, headers).map(Message::Webhook)
    }
}
/// A phone number in E.164 form (`+12025555555`); numbers without `+` are read in `region`'s national plan.
pub fn normalise_phone(raw: &str, region: Region) -> Result<String, String> {
    if raw.trim().is_empty() || raw.chars().count() > MAX_PHONE_INPUT_LEN {
        return Err(format!(
            "must be a phone number of at most {MAX_PHONE_INPUT_LEN} characters"
        ));
    }
    let number = phonenumber::parse(Some(region.0), raw)
        .map_err(|_| format!("is not a phone number (national numbers are read as {region})"))?;
    if number.extension().is_some() {
        return Err("must not have an extension".into());
    }
    if !phonenumber::is_valid(&number) {
        return Err(format!(
            "is not a valid phone number (national numbers are read as {region}; use +<country code> otherwise)"
        ));
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// An absolute `http` or `https` URL with a host, returned as written.
pub fn check_webhook_url(raw: &str) -> Result<String, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} bytes long"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http or https URL, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn rules() -> Rules {
        Rules::default()
    }

    fn problems(body: Value) -> Vec<FieldError> {
        parse_event(&body, &rules()).expect_err("the body is invalid")
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    fn email_body() -> Value {
        json!({"channel": "email", "payload": {"to": "ada@example.com", "subject": "Hi", "text": "Hello"}})
    }

    #[test]
    fn a_valid_email_event_is_accepted_with_defaults() {
        let event = parse_event(&email_body(), &rules()).expect("valid");
        assert_eq!(event.channel, Some(Channel::Email));
        assert_eq!(event.priority, Priority::Default);
        assert_eq!(event.payload["to"], "ada@example.com");
        assert!(event.payload.get("html").is_none());
        assert_eq!(event.created_at.timestamp_subsec_nanos() % 1_000_000, 0);
    }

    #[test]
    fn channel_and_priority_are_case_insensitive() {
        let mut body = email_body();
        body["channel"] = json!("EMAIL");
        body["priority"] = json!("CRITICAL");
        let event = parse_event(&body, &rules()).expect("valid");
        assert_eq!(event.channel, Some(Channel::Email));
        assert_eq!(event.priority, Priority::Critical);
    }

    #[test]
    fn a_client_event_id_is_kept_and_a_bad_one_reported() {
        let mut body = email_body();
        body["eventId"] = json!("order-42.confirm");
        let event = parse_event(&body, &rules()).expect("valid");
        assert_eq!(event.event_id.as_str(), "order-42.confirm");
        body["eventId"] = json!("has space");
        assert_eq!(
            problems(body),
            vec![FieldError::new(
                "eventId",
                "may contain only letters, digits and the characters - _ . :"
            )]
        );
    }

    #[test]
    fn missing_payload_is_required() {
        assert_eq!(
            problems(json!({"channel": "email"})),
            vec![FieldError::new("payload", "is required")]
        );
        assert_eq!(
            problems(json!({"payload": null})),
            vec![FieldError::new("payload", "is required")]
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_one_problem() {
        assert_eq!(
            problems(json!([1, 2])),
            vec![FieldError::new("body", "must be a JSON object")]
        );
    }

    #[test]
    fn email_rules() {
        let bad_to = problems(
            json!({"channel": "email", "payload": {"to": "nope", "subject": "s", "html": "<p>"}}),
        );
        assert_eq!(
            bad_to,
            vec![FieldError::new(
                "payload.to",
                "must be a valid email address"
            )]
        );

        let no_body = problems(
            json!({"channel": "email", "payload": {"to": "a@example.com", "subject": "s"}}),
        );
        assert_eq!(
            no_body,
            vec![FieldError::new(
                "payload.text",
                "an email needs a body: give text, html or both (not empty)"
            )]
        );
        let empty_bodies = problems(
            json!({"channel": "email", "payload": {"to": "a@example.com", "subject": "s", "text": ""}}),
        );
        assert_eq!(fields(&empty_bodies), vec!["payload.text"]);

        let header_injection = problems(
            json!({"channel": "email", "payload": {"to": "a@example.com", "subject": "a\r\nBcc: x@y.z", "text": "t"}}),
        );
        assert_eq!(fields(&header_injection), vec!["payload.subject"]);

        let wrong_types = problems(
            json!({"channel": "email", "payload": {"to": 5, "subject": "s", "text": ["t"]}}),
        );
        assert_eq!(
            wrong_types,
            vec![
                FieldError::new("payload.text", "must be a string, not an array"),
                FieldError::new("payload.to", "must be a string, not a number"),
            ]
        );
    }

    #[test]
    fn sms_numbers_are_normalised_to_e164() {
        let body =
            json!({"channel": "sms", "payload": {"phoneNumber": "2025555555", "message": "hi"}});
        let event = parse_event(&body, &rules()).expect("valid");
        assert_eq!(
            event.payload,
            json!({"phoneNumber": "+12025555555", "message": "hi"})
        );

        let gb = Rules {
            default_region: "gb".parse().expect("a region"),
            ..Rules::default()
        };
        let body =
            json!({"channel": "sms", "payload": {"phoneNumber": "020 7946 0018", "message": "hi"}});
        let event = parse_event(&body, &gb).expect("valid in GB");
        assert_eq!(event.payload["phoneNumber"], "+442079460018");

        let body = json!({"channel": "sms", "payload": {"phoneNumber": "+1 (202) 555-5555", "message": "hi"}});
        let event = parse_event(&body, &gb).expect("an international number ignores the region");
        assert_eq!(event.payload["phoneNumber"], "+12025555555");
    }

    #[test]
    fn invalid_sms_numbers_are_reported() {
        for raw in ["123", "not a number", "+999 1234", "", "2025555555 ext. 7"] {
            let body = json!({"channel": "sms", "payload": {"phoneNumber": raw, "message": "hi"}});
            let errors = problems(body);
            assert_eq!(
                fields(&errors),
                vec!["payload.phoneNumber"],
                "{raw}: {errors:?}"
            );
        }
    }

    #[test]
    fn a_chosen_provider_is_checked_against_the_channels_and_kept_in_the_metadata() {
        let extras =
            std::collections::BTreeMap::from([(Channel::Email, vec!["eu-relay".to_owned()])]);
        let rules = Rules {
            providers: Arc::new(KnownProviders::configured(&extras, |key| {
                (key == "HERALD_SENDGRID_API_KEY").then_some("SG.x")
            })),
            ..Rules::default()
        };
        let mut body = email_body();
        body["provider"] = json!("SendGrid");
        body["metadata"] = json!({"ip": "10.0.0.1"});
        let event = parse_event(&body, &rules).expect("valid");
        assert_eq!(event.chosen_provider(), Some("sendgrid"));
        assert_eq!(
            event.metadata,
            Some(json!({"ip": "10.0.0.1", "heraldProvider": "sendgrid"}))
        );
        assert_eq!(
            crate::LaneMessage::first(event).provider.as_deref(),
            Some("sendgrid")
        );

        body["provider"] = json!("mailgun");
        let problems = parse_event(&body, &rules).expect_err("not configured");
        assert_eq!(
            problems,
            [FieldError::new(
                "provider",
                "unknown email provider 'mailgun', expected one of: eu-relay, sandbox, sendgrid, smtp"
            )]
        );
        // Set in the metadata by hand, it is checked alike.
        let mut by_hand = email_body();
        by_hand["metadata"] = json!({"heraldProvider": "pigeon"});
        assert_eq!(
            parse_event(&by_hand, &rules).expect_err("unknown")[0].field,
            "provider"
        );
        let record_only = json!({"payload": {}, "provider": "smtp"});
        assert_eq!(
            parse_event(&record_only, &rules).expect_err("no channel")[0].message,
            "only an event with a channel is sent through a provider"
        );
        assert_eq!(
            parse_event(&email_body(), &rules)
                .expect("valid")
                .chosen_provider(),
            None
        );
    }

    #[test]
    fn the_provider_names_the_notification_dispatchers_clients_use_are_accepted() {
        let set = [
            "HERALD_SENDGRID_API_KEY",
            "HERALD_MAILGUN_API_KEY",
            "HERALD_SMS_BASE_URL",
            "HERALD_MESSAGEBIRD_ACCESS_KEY",
            "HERALD_FCM_SERVICE_ACCOUNT_FILE",
            "HERALD_ONESIGNAL_APP_ID",
        ];
        let rules = Rules {
            providers: Arc::new(KnownProviders::configured(&Default::default(), |key| {
                set.contains(&key).then_some("x")
            })),
            ..Rules::default()
        };
        for (channel, payload, names) in [
            (
                "email",
                json!({"to": "a@example.com", "subject": "s", "text": "t"}),
                ["sendgrid", "mailgun"],
            ),
            (
                "sms",
                json!({"phoneNumber": "+12025550123", "message": "m"}),
                ["twilio", "messagebird"],
            ),
            (
                "push",
                json!({"token": "t", "title": "t", "body": "b"}),
                ["firebase", "onesignal"],
            ),
        ] {
            for name in names {
                let body = json!({"channel": channel, "provider": name, "payload": payload});
                let event = parse_event(&body, &rules).unwrap_or_else(|e| panic!("{name}: {e:?}"));
                assert_eq!(event.chosen_provider(), Some(name));
            }
        }
    }

    #[test]
    fn a_template_fills_the_payload_and_a_missing_variable_is_named() {
        let templates = Templates::parse([
            (
                "otp.sms.message".to_owned(),
                "Your code is {{ code }}".to_owned(),
            ),
            ("otp.push.title".to_owned(), "Code".to_owned()),
            ("otp.push.body".to_owned(), "{{ code }}".to_owned()),
        ])
        .expect("valid");
        let rules = Rules {
            templates: Arc::new(templates),
            ..Rules::default()
        };
        let sms = json!({"eventType": "otp", "channel": "sms",
            "payload": {"phoneNumber": "+12025550123", "data": {"code": "123456"}}});
        let event = parse_event(&sms, &rules).expect("valid");
        assert_eq!(
            event.payload,
            json!({"phoneNumber": "+12025550123", "message": "Your code is 123456"}),
            "the rendered message is stored, the variables are not"
        );
        let push = json!({"eventType": "otp", "channel": "push",
            "payload": {"token": "t1", "data": {"code": "42"}}});
        let event = parse_event(&push, &rules).expect("valid");
        assert_eq!(event.payload["title"], "Code");
        assert_eq!(event.payload["body"], "42");
        assert_eq!(
            event.payload["data"],
            json!({"code": "42"}),
            "push data is the app's too"
        );
        let missing = json!({"eventType": "otp", "channel": "sms",
            "payload": {"phoneNumber": "+12025550123"}});
        assert_eq!(
            parse_event(&missing, &rules).expect_err("no code"),
            [FieldError::new(
                "payload.data.code",
                "is required by the template otp.sms.message"
            )]
        );
        let untemplated = json!({"eventType": "welcome", "channel": "sms",
            "payload": {"phoneNumber": "+12025550123", "data": {}}});
        let problems = parse_event(&untemplated, &rules).expect_err("no template: data is unknown");
        assert!(
            problems.iter().any(|p| p.field == "payload.data"),
            "{problems:?}"
        );
    }

    #[test]
    fn webhook_rules() {
        let ok = json!({"channel": "webhook", "payload": {"url": "https://hooks.example.com/x", "body": {"a": 1},
            "headers": {"X-Token": "abc"}}});
        let event = parse_event(&ok, &rules()).expect("valid");
        assert_eq!(event.payload["headers"]["X-Token"], "abc");

        let ftp = problems(
            json!({"channel": "webhook", "payload": {"url": "ftp://example.com/x", "body": {}}}),
        );
        assert_eq!(
            ftp,
            vec![FieldError::new(
                "payload.url",
                "must be an http or https URL, not ftp"
            )]
        );

        let bad_headers = problems(
            json!({"channel": "webhook", "payload": {"url": "http://example.com",
            "body": "x", "headers": {"Bad Name": "v", "X-Num": 1}}}),
        );
        assert_eq!(
            bad_headers,
            vec![
                FieldError::new(
                    "payload.headers.Bad Name",
                    "is not a valid HTTP header name"
                ),
                FieldError::new("payload.headers.X-Num", "must be a string, not a number"),
            ]
        );
        let no_body =
            problems(json!({"channel": "webhook", "payload": {"url": "http://example.com"}}));
        assert_eq!(
            no_body,
            vec![FieldError::new("payload.body", "is required")]
        );
    }

    #[test]
    fn push_rules() {
        let ok = json!({"channel": "push", "payload": {"token": "tok-1", "title": "Shipped", "body": "On its way",
            "data": {"orderId": "42"}}});
        let event = parse_event(&ok, &rules()).expect("valid");
        assert_eq!(event.payload, ok["payload"]);
        let many = json!({"channel": "push", "payload": {"tokens": ["a", "b"], "title": "t", "body": "b"}});
        assert_eq!(
            parse_event(&many, &rules()).expect("valid").payload,
            many["payload"]
        );
        let bad = problems(
            json!({"channel": "push", "payload": {"tokens": ["a", 7], "title": "",
            "data": {"n": 1}, "sound": "x"}}),
        );
        assert_eq!(
            fields(&bad),
            vec![
                "payload.body",
                "payload.data.n",
                "payload.sound",
                "payload.title",
                "payload.tokens.1"
            ],
            "{bad:?}"
        );
        let neither = problems(json!({"channel": "push", "payload": {"title": "t", "body": "b"}}));
        assert_eq!(fields(&neither), vec!["payload.token"]);
    }

    #[test]
    fn unknown_values_and_fields_are_field_errors() {
        let errors = problems(
            json!({"chanel": "email", "channel": "pigeon", "priority": "urgent", "payload": {}}),
        );
        assert_eq!(
            errors,
            vec![
                FieldError::new(
                    "chanel",
                    "unknown field, expected one of: eventId, userId, eventType, channel, priority, payload, metadata, provider"
                ),
                FieldError::new(
                    "channel",
                    "unknown channel 'pigeon', expected one of: email, sms, webhook, push"
                ),
                FieldError::new(
                    "priority",
                    "unknown priority 'urgent', expected one of: critical, default"
                ),
            ]
        );
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let errors = problems(json!({
            "eventId": "",
            "userId": 7,
            "channel": "email",
            "priority": "soon",
            "payload": {"to": "x", "subject": "", "cc": "y@example.com"},
            "metadata": "m",
        }));
        assert_eq!(
            fields(&errors),
            vec![
                "eventId",
                "metadata",
                "payload.cc",
                "payload.subject",
                "payload.text",
                "payload.to",
                "priority",
                "userId"
            ]
        );
    }

    #[test]
    fn record_only_events_keep_their_payload() {
        let body = json!({"userId": "u1", "eventType": "login", "payload": {"ip": "10.0.0.1", "nested": {"a": [1]}}});
        let event = parse_event(&body, &rules()).expect("valid");
        assert!(event.is_record_only());
        assert_eq!(event.payload, body["payload"]);
        let null_channel = json!({"channel": null, "payload": {}});
        assert!(parse_event(&null_channel, &rules())
            .expect("valid")
            .is_record_only());
    }

    #[test]
    fn activity_logs_become_record_only_events() {
        let body = json!({"userId": "u1", "activityType": "login", "metadata": {"ip": "10.0.0.1"},
            "timestamp": "2024-05-01T14:00:00+02:00"});
        let event = parse_activity(&body).expect("valid");
        assert!(event.is_record_only());
        assert_eq!(event.event_type.as_deref(), Some("login"));
        assert_eq!(event.user_id.as_deref(), Some("u1"));
        assert_eq!(
            event.payload,
            json!({"activityType": "login", "timestamp": "2024-05-01T12:00:00Z"})
        );
        assert_eq!(event.metadata, Some(json!({"ip": "10.0.0.1"})));

        let errors =
            parse_activity(&json!({"timestamp": "yesterday", "extra": 1})).expect_err("invalid");
        assert_eq!(
            fields(&errors),
            vec!["activityType", "extra", "timestamp", "userId"]
        );
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert_eq!(
            IdempotencyKey::parse(" abc-1 ").expect("valid").as_str(),
            "abc-1"
        );
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("x".repeat(256)).is_err());
        assert!(IdempotencyKey::parse(b"\xff\xfe").is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
    }

    #[test]
    fn regions_parse_in_any_case() {
        assert_eq!("us".parse::<Region>(), Ok(Region::default()));
        assert_eq!("GB".parse::<Region>().expect("valid").to_string(), "GB");
        assert!("XX".parse::<Region>().is_err());
    }

    /// Arbitrary JSON, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("channel".to_string()),
                        Just("payload".to_string()),
                        Just("to".to_string()),
                        Just("phoneNumber".to_string()),
                        "[a-zA-Z]{1,8}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn mixed_case(word: &'static str) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<bool>(), word.len()).prop_map(move |upper| {
            word.chars()
                .zip(upper)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect()
        })
    }

    proptest! {
        /// Whatever arrives, validation answers (no panic), and a rejection lists at least one problem, sorted.
        #[test]
        fn any_json_is_accepted_or_rejected_with_sorted_problems(body in any_json()) {
            match parse_event(&body, &rules()) {
                Ok(event) => prop_assert!(body.get("payload").is_some_and(Value::is_object), "{event:?}"),
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    let mut sorted = errors.clone();
                    sorted.sort_by(|a, b| a.field.cmp(&b.field).then_with(|| a.message.cmp(&b.message)));
                    prop_assert_eq!(errors, sorted);
                }
            }
        }

        /// Channel and priority names are accepted in any case.
        #[test]
        fn names_are_case_insensitive(channel in mixed_case("email"), priority in mixed_case("critical")) {
            let mut body = email_body();
            body["channel"] = json!(channel);
            body["priority"] = json!(priority);
            let event = parse_event(&body, &rules()).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(event.channel, Some(Channel::Email));
            prop_assert_eq!(event.priority, Priority::Critical);
        }

        /// Every unknown top-level field is reported, each under its own name.
        #[test]
        fn each_unknown_field_is_reported(extra in prop::collection::btree_set("[a-z]{1,10}", 1..5)) {
            let mut body = email_body();
            let unknown: Vec<String> = extra.into_iter().filter(|k| !EVENT_FIELDS.contains(&k.as_str())).collect();
            for key in &unknown {
                body[key] = json!(1);
            }
            match parse_event(&body, &rules()) {
                Ok(_) => prop_assert!(unknown.is_empty()),
                Err(errors) => prop_assert_eq!(fields(&errors), unknown.iter().map(String::as_str).collect::<Vec<_>>()),
            }
        }

        /// A normalised number is a fixed point: normalising it again changes nothing, in any region.
        #[test]
        fn normalised_numbers_are_stable(digits in "[2-9][0-9]{2}[2-9][0-9]{6}", separator in "[ .-]?") {
            let written = format!("{}{separator}{}{separator}{}", &digits[..3], &digits[3..6], &digits[6..]);
            if let Ok(e164) = normalise_phone(&written, Region::default()) {
                prop_assert_eq!(e164.clone(), format!("+1{digits}"));
                let gb: Region = "GB".parse().map_err(TestCaseError::fail)?;
                prop_assert_eq!(normalise_phone(&e164, gb), Ok(e164.clone()));
            }
        }

        /// Any text given as a phone number is either normalised to E.164 or rejected, never a panic.
        #[test]
        fn any_phone_text_is_normalised_or_rejected(raw in "[+0-9 ()./a-z-]{0,24}|\\PC{0,24}") {
            if let Ok(e164) = normalise_phone(&raw, Region::default()) {
                prop_assert!(e164.starts_with('+') && e164[1..].bytes().all(|b| b.is_ascii_digit()), "{}", e164);
            }
        }

        /// Only http and https URLs pass, whatever the rest of the URL.
        #[test]
        fn only_http_urls_pass(scheme in "[a-z]{2,6}", host in "[a-z]{1,10}\\.example", path in "(/[a-z0-9]{0,6}){0,3}") {
            let url = format!("{scheme}://{host}{path}");
            let allowed = scheme == "http" || scheme == "https";
            prop_assert_eq!(check_webhook_url(&url).is_ok(), allowed, "{}", url);
        }
    }
}
