//! The query parameters of `GET /api/dead-letters`, read into a `GET /api/logs` query with
//! `status=DEAD_LETTERED`, every problem reported at once.

use herald_domain::FieldError;
use herald_platform::http::params::Problems;
use utoipa::IntoParams;

use crate::logs::params::{self as logs, ListQuery};

/// The parameters of `GET /api/dead-letters`, as the OpenAPI document shows them. Never built: [`parse`] reads
/// the pairs into the list's own parameters, and a test keeps the two lists of names equal.
#[allow(dead_code)]
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct DeadLetterParams {
    /// Only dead letters sent through this channel (case-insensitive).
    #[param(schema_with = crate::openapi::channel_param)]
    channel: Option<String>,
    /// Only dead letters of this type (exact match).
    #[param(max_length = 128)]
    event_type: Option<String>,
    /// Only dead letters of this priority (case-insensitive).
    #[param(schema_with = crate::openapi::priority_param)]
    priority: Option<String>,
    /// Only dead letters of this user (exact match).
    #[param(max_length = 256)]
    user_id: Option<String>,
    /// Only events created at or after this time (ISO 8601 date-time with a zone, or a date).
    #[param(example = "2026-12-01")]
    from: Option<String>,
    /// Only events created at or before this time (a date covers the whole day, UTC).
    #[param(example = "2026-12-02")]
    to: Option<String>,
    /// Dead letters per page, 1 to 100. Default 10.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `nextCursor` of the previous page, with the same filters.
    cursor: Option<String>,
}

/// The names [`DeadLetterParams`] documents, in its order.
pub const NAMES: [&str; 8] = [
    "channel",
    "eventType",
    "priority",
    "userId",
    "from",
    "to",
    "limit",
    "cursor",
];

/// Validates the parameters of `GET /api/dead-letters` into the list query of its page.
pub fn parse(pairs: Vec<(String, String)>) -> Result<ListQuery, Vec<FieldError>> {
    let mut problems = Problems::default();
    let mut known = Vec::with_capacity(pairs.len() + 1);
    for (name, value) in pairs {
        if NAMES.contains(&name.as_str()) {
            known.push((name, value));
        } else {
            problems.add(
                &name,
                format!(
                    "is not a parameter of /api/dead-letters; known: {}",
                    NAMES.join(", ")
                ),
            );
        }
    }
    known.push(("status".to_owned(), "DEAD_LETTERED".to_owned()));
    let parsed = logs::parse_list(known);
    if let Err(more) = &parsed {
        problems.extend(more.iter().cloned());
    }
    // Every problem, ours and the list's, sorted alike; the list's query when there is none.
    problems.finish(|| ()).and(parsed)
}

#[cfg(test)]
mod tests {
    use herald_domain::{Channel, Status};
    use utoipa::openapi::path::ParameterIn;

    use super::*;

    fn fields(query: &str) -> Vec<String> {
        parse(logs::pairs(Some(query)))
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_page_of_dead_letters_is_a_list_of_that_status() {
        let query = parse(logs::pairs(Some("channel=SMS&limit=50"))).expect("valid");
        assert_eq!(query.filters.status, Some(Status::DeadLettered));
        assert_eq!(query.filters.channel, Some(Channel::Sms));
        assert_eq!(query.limit, 50);
        assert_eq!(query.position, logs::Position::Page(1));
    }

    #[test]
    fn other_parameters_and_bad_values_are_named() {
        assert_eq!(fields("status=DELIVERED"), ["status"]);
        assert_eq!(fields("page=2&total=true"), ["page", "total"]);
        assert_eq!(fields("limit=0&channel=pigeon"), ["channel", "limit"]);
        assert_eq!(fields("cursor=nonsense"), ["cursor"]);
    }

    #[test]
    fn every_documented_parameter_is_read_and_no_other() {
        let documented: Vec<String> = DeadLetterParams::into_params(|| Some(ParameterIn::Query))
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(documented, NAMES);
    }
}
