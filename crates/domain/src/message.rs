//! What a deliverable event carries: one [`Message`] per channel, built only by validating constructors.
//!
//! Ingest turns a request's payload into a `Message` (`request::parse_event`), and the dispatcher reads the same
//! type back from the event ([`Message::from_payload`]), so a payload is judged by one set of rules: a
//! disagreement between what ingest accepts and what a provider can send cannot arise. The JSON on Kafka and in
//! MongoDB is the payload as ingest has always written it (`{to, subject, text?, html?}`,
//! `{phoneNumber, message}`, `{url, body, headers?}`); the tests pin it.
//!
//! The constructors take every part as an `Option` (a part is `None` when the request lacked it or gave it the
//! wrong JSON type, which the request reader reports) and list every problem at once, each under its field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use validator::{ValidateEmail, ValidateLength, ValidateNonControlCharacter};

use crate::error::FieldError;
use crate::event::{Channel, Event};
use crate::request::{check_webhook_url, normalise_phone, Region};

/// Longest email subject, in characters (RFC 5322's line limit).
pub const MAX_SUBJECT_LEN: u64 = 998;
/// Longest SMS message, in characters (ten concatenated segments).
pub const MAX_SMS_LEN: u64 = 1600;
/// Most device tokens one push message may name.
pub const MAX_PUSH_TOKENS: usize = 500;
/// Longest device token, in bytes.
pub const MAX_PUSH_TOKEN_LEN: usize = 4096;
/// Longest push title, in characters.
pub const MAX_PUSH_TITLE_LEN: u64 = 256;
/// Longest push body, in characters.
pub const MAX_PUSH_BODY_LEN: u64 = 2048;
/// Largest push `data`, keys and values together, in bytes (FCM refuses a message over 4 KB).
pub const MAX_PUSH_DATA_BYTES: usize = 3072;

/// A payload that does not make a message of its channel: every problem, each under its payload field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {channel} payload: {}", describe(.problems))]
pub struct MessageError {
    pub channel: Channel,
    pub problems: Vec<FieldError>,
}

fn describe(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(|p| format!("{} {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What to deliver, by channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Email(Email),
    Sms(Sms),
    Webhook(Webhook),
    Push(Push),
}

impl Message {
    /// The channel the message goes out on.
    pub fn channel(&self) -> Channel {
        match self {
            Message::Email(_) => Channel::Email,
            Message::Sms(_) => Channel::Sms,
            Message::Webhook(_) => Channel::Webhook,
            Message::Push(_) => Channel::Push,
        }
    }

    /// Reads an accepted event's payload (as ingest wrote it to Kafka and MongoDB) as a message of `channel`,
    /// by the rules ingest applied.
    pub fn from_payload(channel: Channel, payload: &Value) -> Result<Self, MessageError> {
        let decoded = match channel {
            Channel::Email => Email::deserialize(payload).map(Message::Email),
            Channel::Sms => Sms::deserialize(payload).map(Message::Sms),
            Channel::Webhook => Webhook::deserialize(payload).map(Message::Webhook),
            Channel::Push => Push::deserialize(payload).map(Message::Push),
        };
        decoded.map_err(|e| MessageError {
            channel,
            problems: vec![FieldError::new("payload", e.to_string())],
        })
    }

    /// The payload as it travels on Kafka and is stored in MongoDB.
    pub fn to_payload(&self) -> Value {
        let encoded = match self {
            Message::Email(email) => serde_json::to_value(email),
            Message::Sms(sms) => serde_json::to_value(sms),
            Message::Webhook(webhook) => serde_json::to_value(webhook),
            Message::Push(push) => serde_json::to_value(push),
        };
        // Plain structs of strings and JSON values always serialize.
        encoded.unwrap_or(Value::Null)
    }
}

impl Event {
    /// The message a deliverable event carries; `None` for a record-only event.
    pub fn message(&self) -> Result<Option<Message>, MessageError> {
        self.channel
            .map(|channel| Message::from_payload(channel, &self.payload))
            .transpose()
    }
}

/// Collects problems under their field names.
#[derive(Debug, Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// The value, or "is required" recorded under `field`.
    fn required<T>(&mut self, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.push(field, "is required");
        }
        value
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(self.0),
        }
    }
}

/// An email: a valid recipient, a one-line subject and a text body, an HTML body, or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "EmailWire", into = "EmailWire")]
pub struct Email {
    to: String,
    subject: String,
    text: Option<String>,
    html: Option<String>,
}

/// The JSON form of [`Email`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EmailWire {
    to: String,
    subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    html: Option<String>,
}

impl Email {
    /// Checks an email's parts; a missing `to` or `subject` is reported as required.
    pub fn parse(
        to: Option<String>,
        subject: Option<String>,
        text: Option<String>,
        html: Option<String>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut problems = Problems::default();
        let to = problems.required("to", to).filter(|to| {
            let valid = to.validate_email();
            if !valid {
                problems.push("to", "must be a valid email address");
            }
            valid
        });
        let subject = problems.required("subject", subject).filter(|subject| {
            if !subject.validate_length(Some(1), Some(MAX_SUBJECT_LEN), None) {
                problems.push("subject", "must be 1 to 998 characters long");
                false
            } else if !subject.validate_non_control_character() {
                problems.push(
                    "subject",
                    "must not contain line breaks or other control characters",
                );
                false
            } else {
                true
            }
        });
        if [&text, &html]
            .iter()
            .all(|body| body.as_deref().is_none_or(str::is_empty))
        {
            problems.push(
                "text",
                "an email needs a body: give text, html or both (not empty)",
            );
        }
        let email = to.zip(subject).map(|(to, subject)| Self {
            to,
            subject,
            text,
            html,
        });
        problems.finish(email)
    }

    pub fn to(&self) -> &str {
        &self.to
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    pub fn html(&self) -> Option<&str> {
        self.html.as_deref()
    }
}

impl TryFrom<EmailWire> for Email {
    type Error = String;

    fn try_from(wire: EmailWire) -> Result<Self, Self::Error> {
        Self::parse(Some(wire.to), Some(wire.subject), wire.text, wire.html)
            .map_err(|p| describe(&p))
    }
}

impl From<Email> for EmailWire {
    fn from(email: Email) -> Self {
        Self {
            to: email.to,
            subject: email.subject,
            text: email.text,
            html: email.html,
        }
    }
}

/// An SMS: a number in E.164 form and a message of 1 to 1600 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SmsWire", into = "SmsWire")]
pub struct Sms {
    phone_number: String,
    message: String,
}

/// The JSON form of [`Sms`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SmsWire {
    phone_number: String,
    message: String,
}

impl Sms {
    /// Checks an SMS's parts, normalising the number to E.164 (a national number is read in `region`'s plan).
    pub fn parse(
        phone_number: Option<String>,
        message: Option<String>,
        region: Region,
    ) -> Result<Self, Vec<FieldError>> {
        let mut problems = Problems::default();
        let phone_number = problems
            .required("phoneNumber", phone_number)
            .and_then(|raw| {
                normalise_phone(&raw, region)
                    .map_err(|e| problems.push("phoneNumber", e))
                    .ok()
            });
        let message = problems.required("message", message).filter(|message| {
            let valid = message.validate_length(Some(1), Some(MAX_SMS_LEN), None);
            if !valid {
                problems.push("message", "must be 1 to 1600 characters long");
            }
            valid
        });
        let sms = phone_number
            .zip(message)
            .map(|(phone_number, message)| Self {
                phone_number,
                message,
            });
        problems.finish(sms)
    }

    /// The number, in E.164 form (`+12025555555`).
    pub fn phone_number(&self) -> &str {
        &self.phone_number
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl TryFrom<SmsWire> for Sms {
    type Error = String;

    fn try_from(wire: SmsWire) -> Result<Self, Self::Error> {
        // A stored number is already E.164, which reads the same in every region.
        Self::parse(
            Some(wire.phone_number),
            Some(wire.message),
            Region::default(),
        )
        .map_err(|p| describe(&p))
    }
}

impl From<Sms> for SmsWire {
    fn from(sms: Sms) -> Self {
        Self {
            phone_number: sms.phone_number,
            message: sms.message,
        }
    }
}

/// A webhook: an http(s) URL, any JSON body, and extra request headers with valid names and printable values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WebhookWire", into = "WebhookWire")]
pub struct Webhook {
    url: String,
    body: Value,
    headers: Option<BTreeMap<String, String>>,
}

/// The JSON form of [`Webhook`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WebhookWire {
    url: String,
    body: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, String>>,
}

impl Webhook {
    /// Checks a webhook's parts. `headers` holds each header's value, or `None` for a value that was not a
    /// string (reported by the reader); a `null` body counts as missing.
    pub fn parse(
        url: Option<String>,
        body: Option<Value>,
        headers: Option<BTreeMap<String, Option<String>>>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut problems = Problems::default();
        let url = problems.required("url", url).and_then(|raw| {
            check_webhook_url(&raw)
                .map_err(|e| problems.push("url", e))
                .ok()
        });
        let body = problems.required("body", body.filter(|b| !b.is_null()));
        let mut checked = BTreeMap::new();
        for (name, value) in headers.iter().flatten() {
            let field = format!("headers.{name}");
            if name.is_empty() || !name.bytes().all(is_header_name_byte) {
                problems.push(&field, "is not a valid HTTP header name");
            }
            if let Some(value) = value {
                if value
                    .bytes()
                    .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
                {
                    checked.insert(name.clone(), value.clone());
                } else {
                    problems.push(&field, "may contain only printable ASCII characters");
                }
            }
        }
        let webhook = url.zip(body).map(|(url, body)| Self {
            url,
            body,
            headers: headers.map(|_| checked),
        });
        problems.finish(webhook)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The JSON body to POST.
    pub fn body(&self) -> &Value {
        &self.body
    }

    /// The extra request headers, by name.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .flatten()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

/// RFC 9110 `tchar`: what a header name is made of.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl TryFrom<WebhookWire> for Webhook {
    type Error = String;

    fn try_from(wire: WebhookWire) -> Result<Self, Self::Error> {
        let headers = wire
            .headers
            .map(|h| h.into_iter().map(|(k, v)| (k, Some(v))).collect());
        Self::parse(Some(wire.url), Some(wire.body), headers).map_err(|p| describe(&p))
    }
}

impl From<Webhook> for WebhookWire {
    fn from(webhook: Webhook) -> Self {
        Self {
            url: webhook.url,
            body: webhook.body,
            headers: webhook.headers,
        }
    }
}

/// A push notification: one device token (`token`) or several (`tokens`), a title, a body and optional string
/// `data` for the app. The JSON keeps the form the client used (`token` or `tokens`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PushWire", into = "PushWire")]
pub struct Push {
    tokens: Vec<String>,
    /// Whether the client named one `token` (rather than a list), kept so the JSON reads back as written.
    single: bool,
    title: String,
    body: String,
    data: Option<BTreeMap<String, String>>,
}

/// The JSON form of [`Push`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PushWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokens: Option<Vec<String>>,
    title: String,
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<BTreeMap<String, String>>,
}

/// Keys FCM keeps for itself in `data`.
const RESERVED_DATA_KEYS: &[&str] = &["from", "message_type", "notification", "collapse_key"];

impl Push {
    /// Checks a push message's parts. Exactly one of `token` and `tokens` is given; a list item or a `data`
    /// value that is `None` was not a string (reported by the reader).
    pub fn parse(
        token: Option<String>,
        tokens: Option<Vec<Option<String>>>,
        title: Option<String>,
        body: Option<String>,
        data: Option<BTreeMap<String, Option<String>>>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut problems = Problems::default();
        let single = tokens.is_none();
        let tokens: Option<Vec<String>> = match (token, tokens) {
            (Some(_), Some(_)) => {
                problems.push("token", "give token or tokens, not both");
                None
            }
            (None, None) => {
                problems.push("token", "is required (or tokens, a list of device tokens)");
                None
            }
            (Some(token), None) => check_token(&mut problems, "token", token).map(|t| vec![t]),
            (None, Some(list)) => {
                if list.is_empty() || list.len() > MAX_PUSH_TOKENS {
                    problems.push(
                        "tokens",
                        format!("must list 1 to {MAX_PUSH_TOKENS} device tokens"),
                    );
                }
                let mut checked = Vec::new();
                for (i, token) in list.into_iter().enumerate() {
                    if let Some(token) =
                        token.and_then(|t| check_token(&mut problems, &format!("tokens.{i}"), t))
                    {
                        checked.push(token);
                    }
                }
                Some(checked)
            }
        };
        let title = problems.required("title", title).filter(|title| {
            let valid = title.validate_length(Some(1), Some(MAX_PUSH_TITLE_LEN), None);
            if !valid {
                problems.push(
                    "title",
                    format!("must be 1 to {MAX_PUSH_TITLE_LEN} characters long"),
                );
            }
            valid
        });
        let body = problems.required("body", body).filter(|body| {
            let valid = body.validate_length(Some(1), Some(MAX_PUSH_BODY_LEN), None);
            if !valid {
                problems.push(
                    "body",
                    format!("must be 1 to {MAX_PUSH_BODY_LEN} characters long"),
                );
            }
            valid
        });
        let data = data.map(|data| {
            let mut checked = BTreeMap::new();
            let mut size = 0;
            for (key, value) in data {
                let field = format!("data.{key}");
                let lower = key.to_ascii_lowercase();
                if key.is_empty()
                    || RESERVED_DATA_KEYS.contains(&lower.as_str())
                    || lower.starts_with("google.")
                    || lower.starts_with("gcm.")
                {
                    problems.push(&field, "is a key FCM reserves (from, message_type, notification, collapse_key, google.*, gcm.*)");
                }
                if let Some(value) = value {
                    size += key.len() + value.len();
                    checked.insert(key, value);
                }
            }
            if size > MAX_PUSH_DATA_BYTES {
                problems.push("data", format!("must be at most {MAX_PUSH_DATA_BYTES} bytes, keys and values together"));
            }
            checked
        });
        let push = match (tokens, title, body) {
            (Some(tokens), Some(title), Some(body)) => Some(Self {
                tokens,
                single,
                title,
                body,
                data,
            }),
            _ => None,
        };
        problems.finish(push)
    }

    /// The device tokens, at least one.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    pub fn body(&self) -> &str {
        &self.body
    }

    /// The app's key/value data, when given.
    pub fn data(&self) -> Option<&BTreeMap<String, String>> {
        self.data.as_ref()
    }
}

/// A device token: 1 to 4096 visible ASCII characters.
fn check_token(problems: &mut Problems, field: &str, token: String) -> Option<String> {
    if token.is_empty()
        || token.len() > MAX_PUSH_TOKEN_LEN
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        problems.push(
            field,
            format!("must be a device token: 1 to {MAX_PUSH_TOKEN_LEN} visible ASCII characters"),
        );
        return None;
    }
    Some(token)
}

impl TryFrom<PushWire> for Push {
    type Error = String;

    fn try_from(wire: PushWire) -> Result<Self, Self::Error> {
        let tokens = wire.tokens.map(|list| list.into_iter().map(Some).collect());
        let data = wire
            .data
            .map(|d| d.into_iter().map(|(k, v)| (k, Some(v))).collect());
        Self::parse(wire.token, tokens, Some(wire.title), Some(wire.body), data)
            .map_err(|p| describe(&p))
    }
}

impl From<Push> for PushWire {
    fn from(push: Push) -> Self {
        let (token, tokens) = if push.single {
            (push.tokens.into_iter().next(), None)
        } else {
            (None, Some(push.tokens))
        };
        Self {
            token,
            tokens,
            title: push.title,
            body: push.body,
            data: push.data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The payloads as ingest wrote them before there was a `Message` type, as they sit in Kafka and MongoDB:
    /// each reads as a message and writes back byte for byte.
    #[test]
    fn the_wire_format_is_pinned() {
        let payloads = [
            (
                Channel::Email,
                r#"{"html":"<p>On its way</p>","subject":"Shipped","text":"On its way","to":"ada@example.com"}"#,
            ),
            (
                Channel::Email,
                r#"{"subject":"Shipped","to":"ada@example.com","text":"On its way"}"#,
            ),
            (
                Channel::Sms,
                r#"{"phoneNumber":"+12025555555","message":"Your code is 123456"}"#,
            ),
            (
                Channel::Webhook,
                r#"{"url":"https://hooks.example.com/x","body":{"a":[1,{"b":null}]},"headers":{"X-Token":"abc"}}"#,
            ),
            (
                Channel::Webhook,
                r#"{"url":"http://127.0.0.1:9/hook","body":"plain"}"#,
            ),
            (
                Channel::Push,
                r#"{"token":"fcm-token-1","title":"Shipped","body":"On its way","data":{"orderId":"42"}}"#,
            ),
            (
                Channel::Push,
                r#"{"tokens":["fcm-token-1","fcm-token-2"],"title":"Shipped","body":"On its way"}"#,
            ),
        ];
        for (channel, text) in payloads {
            let stored: Value = serde_json::from_str(text).expect("JSON");
            let message = Message::from_payload(channel, &stored).expect(text);
            assert_eq!(message.channel(), channel);
            assert_eq!(message.to_payload(), stored, "{text}");
        }
        let email = Message::from_payload(
            Channel::Email,
            &json!({"to": "a@b.io", "subject": "s", "text": "t"}),
        )
        .expect("an email");
        assert_eq!(
            email.to_payload(),
            json!({"to": "a@b.io", "subject": "s", "text": "t"}),
            "an absent body stays absent"
        );
        assert!(email.to_payload().get("html").is_none());
    }

    #[test]
    fn a_payload_that_breaks_the_rules_does_not_read() {
        for (channel, payload) in [
            (
                Channel::Email,
                json!({"to": "nope", "subject": "s", "text": "t"}),
            ),
            (Channel::Email, json!({"to": "a@b.io", "subject": "s"})),
            (Channel::Sms, json!({"phoneNumber": "123", "message": "hi"})),
            (Channel::Webhook, json!({"url": "ftp://x.io", "body": {}})),
            (
                Channel::Webhook,
                json!({"url": "http://x.io", "body": {}, "headers": {"Bad Name": "v"}}),
            ),
            (Channel::Sms, json!({"to": "a@b.io"})),
            (
                Channel::Push,
                json!({"token": "t", "tokens": ["u"], "title": "t", "body": "b"}),
            ),
            (
                Channel::Push,
                json!({"tokens": [], "title": "t", "body": "b"}),
            ),
            (
                Channel::Push,
                json!({"token": "has space", "title": "t", "body": "b"}),
            ),
            (
                Channel::Push,
                json!({"token": "t", "title": "t", "body": "b", "data": {"google.x": "1"}}),
            ),
        ] {
            let err = Message::from_payload(channel, &payload).expect_err("invalid");
            assert_eq!(err.channel, channel);
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid {channel} payload: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn constructors_list_every_problem() {
        let problems = Email::parse(Some("x".into()), Some(String::new()), None, None)
            .expect_err("three problems");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["to", "subject", "text"]);
        let problems =
            Sms::parse(None, Some("x".repeat(1601)), Region::default()).expect_err("two problems");
        assert_eq!(
            problems,
            vec![
                FieldError::new("phoneNumber", "is required"),
                FieldError::new("message", "must be 1 to 1600 characters long"),
            ]
        );
        let sms = Sms::parse(
            Some("(202) 555-5555".into()),
            Some("hi".into()),
            Region::default(),
        )
        .expect("valid");
        assert_eq!(sms.phone_number(), "+12025555555");
    }
}
