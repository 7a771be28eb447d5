//! Message templates keyed by event type: what an email (subject, text, html), an SMS (message) or a push
//! message (title, body) says, rendered with minijinja from the event's `payload.data`, strictly (a variable the
//! data lacks is an error, never an empty string).
//!
//! A template set is one file per part, named `<eventType>[.<locale>].<channel>.<part>`: `order.shipped.email.subject`,
//! `order.shipped.email.text`, `order.shipped.email.html`, `order.shipped.sms.message`, `order.shipped.push.title`,
//! `order.shipped.push.body`, and per-locale variants such as `order.shipped.fr.email.subject`. An event of type
//! `order.shipped` whose `metadata.locale` is `fr-CA` uses the first set found of `order.shipped.fr-CA`,
//! `order.shipped.fr` and `order.shipped`. An `.html` part is HTML-escaped, the others are not.
//!
//! [`Templates::parse`] checks every file and lists every problem (a name that is no channel part, a syntax
//! error, a set without its required parts); herald-platform reads them from `HERALD_TEMPLATES_DIR`
//! (`herald_platform::templates`). No I/O here.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::FieldError;
use crate::event::Channel;

/// One part of a message a template can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Subject,
    Text,
    Html,
    Message,
    Title,
    Body,
}

impl Part {
    /// The payload field the part fills.
    pub fn field(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Text => "text",
            Part::Html => "html",
            Part::Message => "message",
            Part::Title => "title",
            Part::Body => "body",
        }
    }

    /// The parts of `channel`'s messages.
    pub fn of(channel: Channel) -> &'static [Part] {
        match channel {
            Channel::Email => &[Part::Subject, Part::Text, Part::Html],
            Channel::Sms => &[Part::Message],
            Channel::Push => &[Part::Title, Part::Body],
            Channel::Webhook => &[],
        }
    }
}

/// A problem with one template file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct TemplateProblem {
    pub file: String,
    pub message: String,
}

/// The parts of one set (one event type, locale and channel), by the template name each is compiled under.
type Set = BTreeMap<Part, String>;

/// Every template, compiled, by event type (and locale) and channel.
#[derive(Debug, Default)]
pub struct Templates {
    env: minijinja::Environment<'static>,
    sets: BTreeMap<(String, Channel), Set>,
}

/// What a set rendered: the key it was found under (`order.shipped.fr`) and each part's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub key: String,
    pub parts: BTreeMap<Part, String>,
}

impl Templates {
    /// Compiles `files` (file name, contents). Every problem is returned, each naming its file.
    pub fn parse(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Vec<TemplateProblem>> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        // A template's text is what is sent: a trailing newline in the file is part of it only for bodies.
        env.set_keep_trailing_newline(false);
        let mut sets: BTreeMap<(String, Channel), Set> = BTreeMap::new();
        let mut problems = Vec::new();
        let mut problem = |file: &str, message: String| {
            problems.push(TemplateProblem {
                file: file.to_owned(),
                message,
            })
        };
        for (name, source) in files {
            let Some((key, channel, part)) = split_name(&name) else {
                problem(
                    &name,
                    "is not named <eventType>[.<locale>].<channel>.<part> (email.subject, email.text, \
                     email.html, sms.message, push.title, push.body)"
                        .to_owned(),
                );
                continue;
            };
            if let Err(e) = env.add_template_owned(name.clone(), source) {
                problem(&name, format!("does not compile: {}", describe(&e)));
                continue;
            }
            sets.entry((key, channel)).or_default().insert(part, name);
        }
        for ((key, channel), set) in &sets {
            let required: &[&[Part]] = match channel {
                Channel::Email => &[&[Part::Subject], &[Part::Text, Part::Html]],
                Channel::Sms => &[&[Part::Message]],
                Channel::Push => &[&[Part::Title], &[Part::Body]],
                Channel::Webhook => &[],
            };
            for any_of in required {
                if !any_of.iter().any(|part| set.contains_key(part)) {
                    let names: Vec<String> = any_of
                        .iter()
                        .map(|p| format!("{key}.{channel}.{}", p.field()))
                        .collect();
                    problem(
                        &format!("{key}.{channel}.*"),
                        format!("the set needs {}", names.join(" or ")),
                    );
                }
            }
        }
        if problems.is_empty() {
            Ok(Self { env, sets })
        } else {
            Err(problems)
        }
    }

    /// Whether there are no templates at all.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// How many template sets there are.
    pub fn n_sets(&self) -> usize {
        self.sets.len()
    }

    /// The set for an event of `event_type` on `channel` in `locale`: the locale's own, its language's, or the
    /// base one.
    fn find(
        &self,
        event_type: &str,
        locale: Option<&str>,
        channel: Channel,
    ) -> Option<(&str, &Set)> {
        let mut keys = Vec::new();
        if let Some(locale) = locale.map(str::trim).filter(|l| !l.is_empty()) {
            keys.push(format!("{event_type}.{locale}"));
            if let Some((language, _)) = locale.split_once(['-', '_']) {
                keys.push(format!("{event_type}.{language}"));
            }
        }
        keys.push(event_type.to_owned());
        keys.into_iter().find_map(|key| {
            self.sets
                .get_key_value(&(key, channel))
                .map(|((key, _), set)| (key.as_str(), set))
        })
    }

    /// Renders the set for `event_type` on `channel` in `locale` from `data`; `Ok(None)` when there is none.
    /// Every variable the templates use that `data` lacks is a problem under `payload.data.<name>`.
    pub fn render(
        &self,
        event_type: &str,
        locale: Option<&str>,
        channel: Channel,
        data: &Map<String, Value>,
    ) -> Result<Option<Rendered>, Vec<FieldError>> {
        let Some((key, set)) = self.find(event_type, locale, channel) else {
            return Ok(None);
        };
        let context = minijinja::Value::from_serialize(data);
        let mut parts = BTreeMap::new();
        let mut problems: Vec<FieldError> = Vec::new();
        for (part, name) in set {
            // Every name in a set was compiled into the environment by `parse`.
            let Ok(template) = self.env.get_template(name) else {
                continue;
            };
            let error = match template.render(&context) {
                Ok(text) => {
                    parts.insert(*part, text);
                    continue;
                }
                Err(error) => error,
            };
            // Rendering stops at the first undefined value; the template's variables name all of them.
            let missing = missing_variables(&self.env, &template, data);
            if error.kind() != minijinja::ErrorKind::UndefinedError || missing.is_empty() {
                problems.push(FieldError::new(
                    "payload.data",
                    format!(
                        "the template {name} cannot be rendered: {}",
                        describe(&error)
                    ),
                ));
                continue;
            }
            for variable in missing {
                let field = format!("payload.data.{variable}");
                if !problems.iter().any(|p| p.field == field) {
                    problems.push(FieldError::new(
                        field,
                        format!("is required by the template {name}"),
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(Some(Rendered {
                key: key.to_owned(),
                parts,
            }))
        } else {
            Err(problems)
        }
    }
}

/// The variables (dotted paths) `template` uses that are neither in `data` nor globals of `env`.
fn missing_variables(
    env: &minijinja::Environment<'_>,
    template: &minijinja::Template<'_, '_>,
    data: &Map<String, Value>,
) -> Vec<String> {
    let mut missing: Vec<String> = template
        .undeclared_variables(true)
        .into_iter()
        .filter(|path| {
            let mut segments = path.split('.');
            let first = segments.next().unwrap_or_default();
            if env.globals().any(|(name, _)| name == first) {
                return false;
            }
            let mut value = data.get(first);
            for segment in segments {
                value = value.and_then(|v| v.get(segment));
            }
            value.is_none()
        })
        .collect();
    missing.sort();
    missing
}

/// A minijinja error with its line, without the debug dump.
fn describe(error: &minijinja::Error) -> String {
    match error.line() {
        Some(line) => format!(
            "{} (line {line})",
            error.detail().unwrap_or(&error.kind().to_string())
        ),
        None => error
            .detail()
            .map_or_else(|| error.kind().to_string(), str::to_owned),
    }
}

/// `order.shipped.fr.email.subject` into (`order.shipped.fr`, email, subject).
fn split_name(name: &str) -> Option<(String, Channel, Part)> {
    let (rest, part) = name.rsplit_once('.')?;
    let (key, channel) = rest.rsplit_once('.')?;
    let channel: Channel = channel.parse().ok()?;
    let part = *Part::of(channel).iter().find(|p| p.field() == part)?;
    (!key.is_empty()).then(|| (key.to_owned(), channel, part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn templates(files: &[(&str, &str)]) -> Result<Templates, Vec<TemplateProblem>> {
        Templates::parse(
            files
                .iter()
                .map(|(name, source)| ((*name).to_owned(), (*source).to_owned())),
        )
    }

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn shipped() -> Templates {
        templates(&[
            (
                "order.shipped.email.subject",
                "Order {{ order.id }} shipped",
            ),
            ("order.shipped.email.html", "<p>Hi {{ name }}</p>"),
            (
                "order.shipped.fr.email.subject",
                "Commande {{ order.id }} expédiée",
            ),
            ("order.shipped.fr.email.html", "<p>Bonjour {{ name }}</p>"),
            (
                "order.shipped.sms.message",
                "{{ name }}: order {{ order.id }} is on its way",
            ),
        ])
        .expect("valid templates")
    }

    #[test]
    fn a_set_renders_from_the_data_with_html_escaped_in_html_only() {
        let rendered = shipped()
            .render(
                "order.shipped",
                None,
                Channel::Email,
                &data(json!({"order": {"id": "A<1>"}, "name": "Ada & Co"})),
            )
            .expect("renders")
            .expect("a set");
        assert_eq!(rendered.key, "order.shipped");
        assert_eq!(rendered.parts[&Part::Subject], "Order A<1> shipped");
        assert_eq!(rendered.parts[&Part::Html], "<p>Hi Ada &amp; Co</p>");
        assert_eq!(
            shipped()
                .render("order.paid", None, Channel::Email, &Map::new())
                .expect("no set"),
            None
        );
    }

    #[test]
    fn a_locale_picks_its_variant_then_its_language_then_the_base() {
        let t = shipped();
        let d = data(json!({"order": {"id": 7}, "name": "Zoé"}));
        let key = |locale| {
            t.render("order.shipped", locale, Channel::Email, &d)
                .expect("renders")
                .map(|r| r.key)
        };
        assert_eq!(key(Some("fr")).as_deref(), Some("order.shipped.fr"));
        assert_eq!(key(Some("fr-CA")).as_deref(), Some("order.shipped.fr"));
        assert_eq!(key(Some("de")).as_deref(), Some("order.shipped"));
        let sms = t
            .render("order.shipped", Some("fr"), Channel::Sms, &d)
            .expect("renders")
            .expect("the base sms set");
        assert_eq!(sms.parts[&Part::Message], "Zoé: order 7 is on its way");
    }

    #[test]
    fn every_missing_variable_is_named() {
        let problems = shipped()
            .render(
                "order.shipped",
                None,
                Channel::Email,
                &data(json!({"order": {}})),
            )
            .expect_err("order.id and name are missing");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["payload.data.order.id", "payload.data.name"],
            "{problems:?}"
        );
        assert!(
            problems[0].message.contains("order.shipped.email"),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_templates_are_all_listed() {
        let problems = templates(&[
            ("order.shipped.email.subject", "{{ unclosed"),
            ("order.shipped.email.footer", "x"),
            ("README", "x"),
            ("otp.sms.message", "{% if %}"),
            ("otp.push.title", "Code"),
        ])
        .expect_err("five problems");
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 5, "{shown:?}");
        assert!(
            shown
                .iter()
                .any(|p| p.starts_with("order.shipped.email.subject: does not compile")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|p| p.starts_with("order.shipped.email.footer: is not named")),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|p| p.starts_with("README: is not named")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|p| p.starts_with("otp.sms.message: does not compile")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|p| p == "otp.push.*: the set needs otp.push.body"),
            "{shown:?}"
        );
    }
}
