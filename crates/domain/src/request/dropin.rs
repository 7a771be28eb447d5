//! Bodies of the drop-in routes: requests of the event services Herald replaces, read into Herald's own events.
//!
//! Each is a record-only event, like an activity log entry: stored, published, and RECORDED by a dispatcher.

use serde_json::{Map, Value};

use super::{now, Need, Problems, MAX_EVENT_TYPE_LEN, MAX_USER_ID_LEN};
use crate::error::FieldError;
use crate::event::{Event, EventId, Priority};

/// The fields of `POST /events/generate` (the activity-event service's `UserEvent`).
pub const GENERATE_FIELDS: &[&str] = &["userId", "eventType", "payload"];

/// Reads a `POST /events/generate` body (`{userId, eventType, payload?}`) into a record-only event, or lists every
/// problem with it, sorted by field.
///
/// The payload is kept as it is (an empty object when none is given), as for any record-only event.
pub fn parse_generated(body: &Value) -> Result<Event, Vec<FieldError>> {
    let mut problems = Problems::default();
    let Some(map) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    problems.unknown_fields(map, "", GENERATE_FIELDS);
    let user_id = problems.label(map, "userId", Need::Required, MAX_USER_ID_LEN);
    let event_type = problems.label(map, "eventType", Need::Required, MAX_EVENT_TYPE_LEN);
    let payload = problems
        .object(map, "", "payload", Need::Optional)
        .cloned()
        .unwrap_or_else(Map::new);
    match (user_id, event_type) {
        (Some(user_id), Some(event_type)) if problems.is_empty() => Ok(Event {
            event_id: EventId::generate(),
            user_id: Some(user_id),
            event_type: Some(event_type),
            channel: None,
            priority: Priority::Default,
            payload: Value::Object(payload),
            metadata: None,
            created_at: now(),
        }),
        _ => Err(problems.into_sorted()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_user_event_becomes_a_record_only_event() {
        let body =
            json!({"userId": "user123", "eventType": "LOGIN", "payload": {"ip": "127.0.0.1"}});
        let event = parse_generated(&body).expect("the documented body");
        assert!(event.is_record_only());
        assert_eq!(event.user_id.as_deref(), Some("user123"));
        assert_eq!(event.event_type.as_deref(), Some("LOGIN"));
        assert_eq!(event.payload, json!({"ip": "127.0.0.1"}));
        assert_eq!(event.priority, Priority::Default);

        let bare = parse_generated(&json!({"userId": "u", "eventType": "LOGOUT"})).expect("valid");
        assert_eq!(bare.payload, json!({}));
    }

    #[test]
    fn every_problem_is_listed() {
        let errors = parse_generated(&json!({"eventType": "", "payload": [1], "channel": "sms"}))
            .expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["channel", "eventType", "payload", "userId"]);
        assert_eq!(
            parse_generated(&json!("LOGIN")),
            Err(vec![FieldError::new("body", "must be a JSON object")])
        );
    }
}
