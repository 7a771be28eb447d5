//! The parameters of a replay (a JSON body) and of a listing (a query string), read with every problem reported
//! at once.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use herald_domain::{Channel, EventId, FieldError, Priority};
use herald_platform::http::params::{self, Problems};
use herald_platform::store::DeadLetterFilter;
use serde_json::Value;

/// Dead letters a replay takes when the request does not say.
pub const DEFAULT_REPLAY_LIMIT: u32 = 1000;
/// Most dead letters one replay takes.
pub const MAX_REPLAY_LIMIT: u32 = 10_000;
/// Dead letters on a page of the listing when the request does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Most dead letters on a page of the listing.
pub const MAX_PAGE_SIZE: u32 = 100;

/// `POST /replay-dead-letter`: which dead letters, how many, and whether only to report them.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRequest {
    pub filter: DeadLetterFilter,
    /// 1 to [`MAX_REPLAY_LIMIT`].
    pub limit: u32,
    /// How many of the selected dead letters to skip first, in the order replays take them (0 by default).
    pub from: u32,
    pub dry_run: bool,
}

/// `GET /api/dead-letters`: which dead letters, and which page of them.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRequest {
    pub filter: DeadLetterFilter,
    /// 1 or more.
    pub page: u32,
    /// 1 to [`MAX_PAGE_SIZE`].
    pub limit: u32,
}

const FILTER_FIELDS: [&str; 6] = [
    "eventIds",
    "channel",
    "eventType",
    "priority",
    "since",
    "until",
];

/// Reads the filter fields, whichever way they arrive, collecting problems.
#[derive(Default)]
struct Reader {
    filter: DeadLetterFilter,
    problems: Problems,
}

impl Reader {
    fn problem(&mut self, field: &str, message: impl Into<String>) {
        self.problems.add(field, message);
    }

    /// Reads one filter field; false if `field` is not one.
    fn filter_field(&mut self, field: &str, raw: &str) -> bool {
        match field {
            "channel" => self.filter.channel = self.parse_enum::<Channel>(field, raw),
            "priority" => self.filter.priority = self.parse_enum::<Priority>(field, raw),
            "eventType" => {
                if raw.trim().is_empty() {
                    self.problem(field, "must not be empty");
                } else {
                    self.filter.event_type = Some(raw.to_owned());
                }
            }
            "since" => self.filter.since = self.parse_time(field, raw),
            "until" => self.filter.until = self.parse_time(field, raw),
            _ => return false,
        }
        true
    }

    fn parse_enum<T>(&mut self, field: &str, raw: &str) -> Option<T>
    where
        T: std::str::FromStr<Err = herald_domain::ParseError>,
    {
        raw.parse()
            .map_err(|e: herald_domain::ParseError| self.problem(field, e.to_string()))
            .ok()
    }

    fn parse_time(&mut self, field: &str, raw: &str) -> Option<DateTime<Utc>> {
        self.problems.check(field, params::parse_date_time(raw))
    }

    /// The event ids of `eventIds`, each reported under its index.
    fn event_ids<'a>(&mut self, raw: impl IntoIterator<Item = Option<&'a str>>) {
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        let mut n_given = 0;
        for (index, item) in raw.into_iter().enumerate() {
            n_given += 1;
            let field = format!("eventIds[{index}]");
            match item.map(EventId::parse) {
                Some(Ok(id)) => {
                    if seen.insert(id.clone()) {
                        ids.push(id);
                    }
                }
                Some(Err(e)) => self.problem(&field, e.to_string()),
                None => self.problem(&field, "must be a string"),
            }
        }
        if n_given == 0 {
            self.problem("eventIds", "must list at least one event id");
        } else if n_given > MAX_REPLAY_LIMIT as usize {
            self.problem(
                "eventIds",
                format!("must list at most {MAX_REPLAY_LIMIT} event ids"),
            );
        }
        self.filter.event_ids = Some(ids);
    }

    fn number(&mut self, field: &str, value: Option<u64>, min: u32, max: u32) -> Option<u32> {
        match value {
            Some(n) if n >= u64::from(min) && n <= u64::from(max) => u32::try_from(n).ok(),
            _ => {
                let message = if max == u32::MAX {
                    format!("must be an integer of at least {min}")
                } else {
                    format!("must be an integer from {min} to {max}")
                };
                self.problem(field, message);
                None
            }
        }
    }

    fn unknown(&mut self, field: &str, known: &[&str]) {
        self.problem(
            field,
            format!(
                "is not a known field; expected one of: {}",
                known.join(", ")
            ),
        );
    }

    /// The filter, or every problem sorted by field so that answers are deterministic.
    fn finish(mut self) -> Result<DeadLetterFilter, Vec<FieldError>> {
        if let (Some(since), Some(until)) = (self.filter.since, self.filter.until) {
            if since > until {
                self.problem("since", "must not be later than until");
            }
        }
        let Reader { filter, problems } = self;
        problems.finish(|| filter)
    }
}

/// Reads a replay request. No body, `{}` and `null` all mean every dead letter, up to the default limit.
pub fn parse_replay(body: Option<&Value>) -> Result<ReplayRequest, Vec<FieldError>> {
    let mut request = ReplayRequest {
        filter: DeadLetterFilter::default(),
        limit: DEFAULT_REPLAY_LIMIT,
        from: 0,
        dry_run: false,
    };
    let object = match body {
        None | Some(Value::Null) => return Ok(request),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(vec![FieldError::new("body", "must be a JSON object")]),
    };
    let known: Vec<&str> = FILTER_FIELDS
        .iter()
        .copied()
        .chain(["limit", "from", "dryRun"])
        .collect();
    let mut reader = Reader::default();
    for (field, value) in object {
        let field = field.as_str();
        if !known.contains(&field) {
            reader.unknown(field, &known);
            continue;
        }
        // An explicit null is the same as leaving the field out.
        if value.is_null() {
            continue;
        }
        match field {
            "eventIds" => match value.as_array() {
                Some(items) => reader.event_ids(items.iter().map(Value::as_str)),
                None => reader.problem(field, "must be an array of event ids"),
            },
            "limit" => {
                if let Some(limit) = reader.number(field, value.as_u64(), 1, MAX_REPLAY_LIMIT) {
                    request.limit = limit;
                }
            }
            "from" => {
                if let Some(from) = reader.number(field, value.as_u64(), 0, u32::MAX) {
                    request.from = from;
                }
            }
            "dryRun" => match value.as_bool() {
                Some(dry_run) => request.dry_run = dry_run,
                None => reader.problem(field, "must be true or false"),
            },
            _ => match value.as_str() {
                Some(raw) => {
                    reader.filter_field(field, raw);
                }
                None => reader.problem(field, "must be a string"),
            },
        }
    }
    request.filter = reader.finish()?;
    Ok(request)
}

/// Reads a listing's query parameters (`eventIds` comma-separated).
pub fn parse_list(pairs: &[(String, String)]) -> Result<ListRequest, Vec<FieldError>> {
    let mut request = ListRequest {
        filter: DeadLetterFilter::default(),
        page: 1,
        limit: DEFAULT_PAGE_SIZE,
    };
    let known: Vec<&str> = FILTER_FIELDS
        .iter()
        .copied()
        .chain(["page", "limit"])
        .collect();
    let mut reader = Reader::default();
    let mut seen = HashSet::new();
    for (field, raw) in pairs {
        let field = field.as_str();
        if !known.contains(&field) {
            reader.unknown(field, &known);
            continue;
        }
        if !seen.insert(field) {
            reader.problem(field, "is given more than once");
            continue;
        }
        match field {
            "eventIds" => reader.event_ids(raw.split(',').map(|id| Some(id.trim()))),
            "page" => {
                if let Some(page) = reader.number(field, raw.parse().ok(), 1, u32::MAX) {
                    request.page = page;
                }
            }
            "limit" => {
                if let Some(limit) = reader.number(field, raw.parse().ok(), 1, MAX_PAGE_SIZE) {
                    request.limit = limit;
                }
            }
            _ => {
                reader.filter_field(field, raw);
            }
        }
    }
    request.filter = reader.finish()?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(problems: &[FieldError]) -> Vec<&str> {
        problems.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn no_body_an_empty_object_and_null_select_everything_up_to_the_default_limit() {
        let everything = ReplayRequest {
            filter: DeadLetterFilter::default(),
            limit: DEFAULT_REPLAY_LIMIT,
            from: 0,
            dry_run: false,
        };
        assert_eq!(parse_replay(None), Ok(everything.clone()));
        assert_eq!(parse_replay(Some(&json!({}))), Ok(everything.clone()));
        assert_eq!(parse_replay(Some(&Value::Null)), Ok(everything));
    }

    #[test]
    fn a_full_replay_request_is_read() {
        let request = parse_replay(Some(&json!({
            "eventIds": ["a", "b", "a"], "channel": "SMS", "eventType": "otp.sent", "priority": "critical",
            "since": "2024-05-01T14:00:00+02:00", "until": "2024-05-02T00:00:00Z", "limit": 10000,
            "dryRun": true,
        })))
        .expect("valid");
        assert_eq!(request.limit, 10_000);
        assert!(request.dry_run);
        let filter = request.filter;
        let ids: Vec<&str> = filter
            .event_ids
            .iter()
            .flatten()
            .map(EventId::as_str)
            .collect();
        assert_eq!(ids, ["a", "b"], "duplicates are dropped");
        assert_eq!(filter.channel, Some(Channel::Sms));
        assert_eq!(filter.priority, Some(Priority::Critical));
        assert_eq!(filter.event_type.as_deref(), Some("otp.sent"));
        assert_eq!(
            filter.since.map(|t| t.to_rfc3339()).as_deref(),
            Some("2024-05-01T12:00:00+00:00")
        );
    }

    #[test]
    fn from_skips_dead_letters_and_must_be_a_whole_number() {
        let request =
            parse_replay(Some(&json!({"limit": 1000, "from": 0}))).expect("the documented body");
        assert_eq!((request.limit, request.from), (1000, 0));
        let request = parse_replay(Some(&json!({"from": 25}))).expect("valid");
        assert_eq!((request.limit, request.from), (DEFAULT_REPLAY_LIMIT, 25));
        for from in [json!(-1), json!(1.5), json!("3"), json!(4_294_967_296_u64)] {
            let problems = parse_replay(Some(&json!({ "from": from }))).expect_err("a bad from");
            assert_eq!(
                problems,
                vec![FieldError::new("from", "must be an integer of at least 0")]
            );
        }
    }

    #[test]
    fn every_problem_of_a_replay_request_is_listed() {
        let problems = parse_replay(Some(&json!({
            "eventIds": ["ok", "bad id", 7], "channel": "pigeon", "priority": "urgent", "since": "yesterday",
            "until": 5, "limit": 0, "dryRun": "yes", "colour": "red", "eventType": "",
        })))
        .expect_err("invalid");
        assert_eq!(
            fields(&problems),
            [
                "channel",
                "colour",
                "dryRun",
                "eventIds[1]",
                "eventIds[2]",
                "eventType",
                "limit",
                "priority",
                "since",
                "until"
            ]
        );
    }

    #[test]
    fn limits_outside_the_range_and_reversed_ranges_are_refused() {
        for limit in [json!(0), json!(10_001), json!(-1), json!(2.5), json!("5")] {
            let problems = parse_replay(Some(&json!({ "limit": limit }))).expect_err("a bad limit");
            assert_eq!(
                problems,
                vec![FieldError::new(
                    "limit",
                    "must be an integer from 1 to 10000"
                )]
            );
        }
        let problems = parse_replay(Some(&json!({
            "since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z",
        })))
        .expect_err("since after until");
        assert_eq!(
            problems,
            vec![FieldError::new("since", "must not be later than until")]
        );
        assert_eq!(
            parse_replay(Some(&json!([1]))),
            Err(vec![FieldError::new("body", "must be a JSON object")])
        );
        assert_eq!(
            fields(&parse_replay(Some(&json!({"eventIds": []}))).expect_err("empty")),
            ["eventIds"]
        );
    }

    fn pairs(raw: &[(&str, &str)]) -> Vec<(String, String)> {
        raw.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_listing_defaults_to_the_first_page_of_twenty() {
        assert_eq!(
            parse_list(&[]),
            Ok(ListRequest {
                filter: DeadLetterFilter::default(),
                page: 1,
                limit: 20
            })
        );
        let request = parse_list(&pairs(&[
            ("eventIds", "a, b"),
            ("page", "3"),
            ("limit", "100"),
        ]))
        .expect("valid");
        assert_eq!((request.page, request.limit), (3, 100));
        assert_eq!(request.filter.event_ids.map(|ids| ids.len()), Some(2));
    }

    #[test]
    fn every_problem_of_a_listing_is_listed() {
        let problems = parse_list(&pairs(&[
            ("page", "0"),
            ("limit", "101"),
            ("channel", "fax"),
            ("since", "2024-13-01"),
            ("eventIds", "a,,b"),
            ("sort", "asc"),
            ("priority", "low"),
            ("priority", "critical"),
        ]))
        .expect_err("invalid");
        assert_eq!(
            fields(&problems),
            [
                "channel",
                "eventIds[1]",
                "limit",
                "page",
                "priority",
                "priority",
                "since",
                "sort"
            ]
        );
        let limit = problems.iter().find(|p| p.field == "limit").expect("limit");
        assert_eq!(limit.message, "must be an integer from 1 to 100");
    }
}
