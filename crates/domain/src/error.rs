//! The one error body every Herald HTTP API answers with, and its conversion from `validator` errors.

use serde::{Deserialize, Serialize};
use validator::{ValidationErrors, ValidationErrorsKind};

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Dotted path of the field (`payload.to`, `metadata`, `limit`).
    pub field: String,
    /// What is wrong, in words a caller can act on.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `{"error": "...", "details": [{"field", "message"}]}`: the shape of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub details: Vec<FieldError>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            details: Vec::new(),
        }
    }

    pub fn with_details(error: impl Into<String>, details: Vec<FieldError>) -> Self {
        Self {
            error: error.into(),
            details,
        }
    }
}

/// Flattens `validator`'s nested errors into field paths, sorted so that answers are deterministic.
///
/// A rule's `message` is used when it has one; otherwise the rule's code is turned into a sentence.
pub fn field_errors(errors: &ValidationErrors) -> Vec<FieldError> {
    let mut out = Vec::new();
    collect(errors, "", &mut out);
    out.sort_by(|a, b| {
        a.field
            .cmp(&b.field)
            .then_with(|| a.message.cmp(&b.message))
    });
    out
}

fn collect(errors: &ValidationErrors, prefix: &str, out: &mut Vec<FieldError>) {
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for e in list {
                    let message = e
                        .message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("failed the '{}' check", e.code));
                    out.push(FieldError::new(path.clone(), message));
                }
            }
            ValidationErrorsKind::Struct(inner) => collect(inner, &path, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    collect(inner, &format!("{path}[{index}]"), out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use validator::Validate;

    #[derive(Validate)]
    struct Inner {
        #[validate(length(min = 1, message = "must not be empty"))]
        name: String,
    }

    #[derive(Validate)]
    struct Outer {
        #[validate(range(min = 1, max = 100))]
        limit: u32,
        #[validate(nested)]
        inner: Inner,
    }

    #[test]
    fn nested_errors_become_dotted_paths_in_order() {
        let value = Outer {
            limit: 0,
            inner: Inner {
                name: String::new(),
            },
        };
        let errors = value.validate().expect_err("both fields are invalid");
        assert_eq!(
            field_errors(&errors),
            vec![
                FieldError::new("inner.name", "must not be empty"),
                FieldError::new("limit", "failed the 'range' check"),
            ]
        );
    }

    #[test]
    fn error_body_serializes_in_the_documented_shape() {
        let body = ErrorBody::with_details(
            "Validation failed",
            vec![FieldError::new("payload.to", "required")],
        );
        assert_eq!(
            serde_json::to_value(&body).expect("serializable"),
            serde_json::json!({"error": "Validation failed", "details": [{"field": "payload.to", "message": "required"}]})
        );
    }
}
