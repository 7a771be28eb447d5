//! Masking: values under configured `payload`/`metadata` paths are shown as `"***"` in every answer, so
//! recipients, phone numbers or secrets stored with an event do not leave through the read API.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// What a masked value is replaced with.
pub const MASKED: &str = "***";

/// The roots a mask path may start from: the two free-form parts of an event.
const ROOTS: [&str; 2] = ["payload", "metadata"];

/// A set of dotted paths (`payload.to`, `metadata.client.ip`) to mask.
///
/// A path crosses arrays: `payload.recipients.email` masks the `email` of every element of `recipients`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Masker {
    /// Each path split at its dots, the root first.
    paths: Vec<Vec<String>>,
}

impl Masker {
    /// Whether nothing is masked.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The configured paths, dotted.
    pub fn paths(&self) -> Vec<String> {
        self.paths.iter().map(|p| p.join(".")).collect()
    }

    /// Masks `value`, the part of an event named `root` (`payload` or `metadata`), in place.
    pub fn apply(&self, root: &str, value: &mut Value) {
        for path in &self.paths {
            if let Some((first, rest)) = path.split_first() {
                if first == root {
                    mask_at(value, rest);
                }
            }
        }
    }
}

impl Masker {
    /// The values `apply` would hide in `value` (the part named `root`): the strings and numbers at the masked
    /// paths, so they can be scrubbed from free text too.
    pub fn secrets(&self, root: &str, value: &Value) -> Vec<String> {
        let mut found = Vec::new();
        for path in &self.paths {
            if let Some((first, rest)) = path.split_first() {
                if first == root {
                    collect_at(value, rest, &mut found);
                }
            }
        }
        found
    }

    /// `text` with every occurrence of each secret replaced by `***`: provider errors and dead-letter reasons often
    /// quote the recipient (`550 5.1.1 <ada@example.com>: user unknown`).
    pub fn scrub(text: String, secrets: &[String]) -> String {
        let mut text = text;
        for secret in secrets {
            // Too short a value would mask unrelated text (`1`, `no`), and is no secret worth hiding.
            if secret.chars().count() >= 3 && text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), MASKED);
            }
        }
        text
    }
}

fn collect_at(value: &Value, path: &[String], found: &mut Vec<String>) {
    match (value, path.split_first()) {
        (Value::Array(items), _) => {
            for item in items {
                collect_at(item, path, found);
            }
        }
        (Value::Object(map), Some((key, rest))) => {
            if let Some(inner) = map.get(key) {
                collect_at(inner, rest, found);
            }
        }
        (Value::String(s), None) => found.push(s.clone()),
        (Value::Number(n), None) => found.push(n.to_string()),
        (Value::Object(_), None) => {
            // A masked object: every string under it is a secret.
            let mut stack = vec![value];
            while let Some(v) = stack.pop() {
                match v {
                    Value::String(s) => found.push(s.clone()),
                    Value::Array(items) => stack.extend(items),
                    Value::Object(map) => stack.extend(map.values()),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn mask_at(value: &mut Value, path: &[String]) {
    let Some((key, rest)) = path.split_first() else {
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(found) = map.get_mut(key) {
                if rest.is_empty() {
                    *found = Value::String(MASKED.to_owned());
                } else {
                    mask_at(found, rest);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                mask_at(item, path);
            }
        }
        _ => {}
    }
}

/// A `HERALD_QUERY_MASK_FIELDS` value that is not a list of paths under `payload` or `metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskError(Vec<String>);

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (each path must be payload.<field> or metadata.<field>, dotted, without empty parts)",
            self.0.join("; ")
        )
    }
}

impl FromStr for Masker {
    type Err = MaskError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let mut paths = Vec::new();
        let mut bad = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parts: Vec<String> = item.split('.').map(str::to_owned).collect();
            let valid = parts.len() >= 2
                && ROOTS.contains(&parts[0].as_str())
                && parts.iter().all(|p| !p.is_empty());
            if valid {
                paths.push(parts);
            } else {
                bad.push(format!("'{item}' is not a mask path"));
            }
        }
        if bad.is_empty() {
            Ok(Self { paths })
        } else {
            Err(MaskError(bad))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn masker(raw: &str) -> Masker {
        raw.parse().expect("valid paths")
    }

    #[test]
    fn masks_present_values_and_leaves_the_rest() {
        let mask = masker("payload.to,payload.auth.token,metadata.ip");
        let mut payload = json!({"to": "ada@example.com", "subject": "Hi", "auth": {"token": "s3cret", "kind": "bearer"}});
        mask.apply("payload", &mut payload);
        assert_eq!(
            payload,
            json!({"to": "***", "subject": "Hi", "auth": {"token": "***", "kind": "bearer"}})
        );
        let mut metadata = json!({"ip": "10.0.0.1", "to": "kept: only payload.to is masked"});
        mask.apply("metadata", &mut metadata);
        assert_eq!(
            metadata,
            json!({"ip": "***", "to": "kept: only payload.to is masked"})
        );
    }

    #[test]
    fn whole_objects_and_array_elements_are_masked() {
        let mask = masker("payload.body,payload.recipients.email");
        let mut payload = json!({
            "body": {"card": "4111"},
            "recipients": [{"email": "a@example.com", "name": "A"}, {"name": "B"}, "plain"],
        });
        mask.apply("payload", &mut payload);
        assert_eq!(
            payload,
            json!({"body": "***", "recipients": [{"email": "***", "name": "A"}, {"name": "B"}, "plain"]})
        );
    }

    #[test]
    fn absent_paths_add_nothing() {
        let mask = masker("payload.phoneNumber");
        let mut payload = json!({"to": "x"});
        mask.apply("payload", &mut payload);
        assert_eq!(payload, json!({"to": "x"}));
    }

    #[test]
    fn bad_paths_are_refused_all_at_once() {
        let err = "payload.to,userId,payload..x,other.y"
            .parse::<Masker>()
            .expect_err("three bad paths");
        let text = err.to_string();
        for bad in ["'userId'", "'payload..x'", "'other.y'"] {
            assert!(text.contains(bad), "{bad} missing from {text}");
        }
        assert!(!text.contains("'payload.to'"), "{text}");
        assert!("".parse::<Masker>().expect("empty is valid").is_empty());
    }

    #[test]
    fn masked_values_are_scrubbed_from_free_text() {
        let mask: Masker = "payload.to,metadata.ip".parse().expect("valid");
        let payload = json!({"to": "ada@example.com", "subject": "hi"});
        let metadata = json!({"ip": "10.0.0.7"});
        let mut secrets = mask.secrets("payload", &payload);
        secrets.extend(mask.secrets("metadata", &metadata));
        assert_eq!(secrets, ["ada@example.com", "10.0.0.7"]);
        assert_eq!(
            Masker::scrub(
                "550 5.1.1 <ada@example.com>: unknown (from 10.0.0.7)".into(),
                &secrets
            ),
            "550 5.1.1 <***>: unknown (from ***)"
        );
        assert_eq!(
            Masker::scrub("hi there".into(), &["hi".into()]),
            "hi there",
            "too short to hide"
        );
    }
}
