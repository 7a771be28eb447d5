//! The query parameters of `GET /api/logs` and `GET /api/stats`, read from the raw query string so that every
//! problem (an unknown or repeated name, a bad value, a forbidden combination) is reported at once, by name.

use herald_domain::request::{MAX_EVENT_TYPE_LEN, MAX_USER_ID_LEN};
use herald_domain::FieldError;
use herald_platform::http::params::{parse_bound, Bound, Problems};
use utoipa::IntoParams;

use super::cursor::Cursor;
pub use super::{Filters, Range, SortOrder};

/// Largest page size.
pub const MAX_LIMIT: u32 = 100;
/// Page size when none is given.
pub const DEFAULT_LIMIT: u32 = 10;
/// Deepest offset page mode reaches (`(page - 1) * limit`): skipping is work the server does for every skipped
/// event, so deeper walks use the cursor, which costs the same on every page.
pub const MAX_OFFSET: u64 = 10_000;

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Offset pagination: page n (from 1), with a total count.
    Page(u32),
    /// Keyset pagination: just after the cursor's event, without a total.
    After(Cursor),
}

/// A validated `GET /api/logs` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub filters: Filters,
    pub order: SortOrder,
    pub limit: u32,
    pub position: Position,
    /// Whether the client asked for `total` (`total=true`), which counts every matching event.
    pub with_total: bool,
}

impl ListQuery {
    /// How many events come before the page: `(page - 1) * limit` in offset mode, 0 after a cursor.
    pub fn offset(&self) -> u64 {
        match self.position {
            Position::Page(page) => u64::from(page - 1) * u64::from(self.limit),
            Position::After(_) => 0,
        }
    }
}

/// A validated `GET /api/stats` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsQuery {
    pub range: Range,
}

/// The parameters of `GET /api/logs`, as the OpenAPI document shows them and as read before validation.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ListParams {
    /// Only events of this user (exact match).
    #[param(max_length = 256)]
    user_id: Option<String>,
    /// Only events of this type (exact match), such as `order.shipped`.
    #[param(max_length = 128)]
    event_type: Option<String>,
    /// Another name for `eventType` (activity logs call it so); give one of the two.
    #[param(max_length = 128)]
    activity_type: Option<String>,
    /// Only events sent through this channel (case-insensitive).
    #[param(schema_with = crate::openapi::channel_param)]
    channel: Option<String>,
    /// Only events of this priority (case-insensitive).
    #[param(schema_with = crate::openapi::priority_param)]
    priority: Option<String>,
    /// Only events in this status (case-insensitive).
    #[param(schema_with = crate::openapi::status_param)]
    status: Option<String>,
    /// Only events created at or after this time: an ISO 8601 date-time with a zone (`2024-05-01T12:00:00Z`) or a
    /// date (`2024-05-01`, from its first millisecond, UTC).
    #[param(example = "2024-05-01T00:00:00Z")]
    from: Option<String>,
    /// Another name for `from`.
    start_date: Option<String>,
    /// Only events created at or before this time: an ISO 8601 date-time with a zone, or a date (up to its last
    /// millisecond, UTC).
    #[param(example = "2024-05-31")]
    to: Option<String>,
    /// Another name for `to`.
    end_date: Option<String>,
    /// Page number, from 1 (offset pagination; `(page - 1) * limit` may be at most 10000). Default 1. Not
    /// together with `cursor`.
    #[param(value_type = Option<u32>, minimum = 1)]
    page: Option<String>,
    /// Events per page, 1 to 100. Default 10.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `-createdAt` (newest first, the default) or `createdAt` (oldest first); ties are broken on `eventId`.
    #[param(schema_with = crate::openapi::sort_param)]
    sort: Option<String>,
    /// `nextCursor` of the previous page (keyset pagination: no gaps or repeats while events arrive, no total).
    /// Repeat the same filters with it; `sort` may be left out.
    cursor: Option<String>,
    /// `true` to count every matching event into `total` and `pages`. Without it they are given only when the
    /// page itself tells them (the last page); counting costs as much as reading every match.
    #[param(value_type = Option<bool>)]
    total: Option<String>,
}

/// Splits a raw query string into its name/value pairs, percent-decoded.
pub fn pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Sorts `pairs` into the slots named by `names`; unknown and repeated names are problems.
fn slots<const N: usize>(
    pairs: Vec<(String, String)>,
    names: [&str; N],
    problems: &mut Problems,
) -> [Option<String>; N] {
    let mut slots: [Option<String>; N] = std::array::from_fn(|_| None);
    for (name, value) in pairs {
        match names.iter().position(|known| *known == name) {
            Some(i) if slots[i].is_some() => problems.add(&name, "is given more than once"),
            Some(i) => slots[i] = Some(value),
            None => problems.add(
                &name,
                format!("is not a parameter here; known: {}", names.join(", ")),
            ),
        }
    }
    slots
}

const LIST_NAMES: [&str; 15] = [
    "userId",
    "eventType",
    "activityType",
    "channel",
    "priority",
    "status",
    "from",
    "startDate",
    "to",
    "endDate",
    "page",
    "limit",
    "sort",
    "cursor",
    "total",
];

/// Reads the raw parameters of `GET /api/logs`.
fn list_params(pairs: Vec<(String, String)>, problems: &mut Problems) -> ListParams {
    let [user_id, event_type, activity_type, channel, priority, status, from, start_date, to, end_date, page, limit, sort, cursor, total] =
        slots(pairs, LIST_NAMES, problems);
    ListParams {
        user_id,
        event_type,
        activity_type,
        channel,
        priority,
        status,
        from,
        start_date,
        to,
        end_date,
        page,
        limit,
        sort,
        cursor,
        total,
    }
}

/// Validates the parameters of `GET /api/logs`, listing every problem.
pub fn parse_list(pairs: Vec<(String, String)>) -> Result<ListQuery, Vec<FieldError>> {
    let mut problems = Problems::default();
    let raw = list_params(pairs, &mut problems);
    let user_id = raw
        .user_id
        .and_then(|v| label(&mut problems, "userId", v, MAX_USER_ID_LEN));
    let event_type = alias(
        &mut problems,
        ("eventType", raw.event_type),
        ("activityType", raw.activity_type),
    )
    .and_then(|(name, v)| label(&mut problems, name, v, MAX_EVENT_TYPE_LEN));
    let channel = raw
        .channel
        .and_then(|v| problems.check("channel", v.parse::<herald_domain::Channel>()));
    let priority = raw
        .priority
        .and_then(|v| problems.check("priority", v.parse::<herald_domain::Priority>()));
    let status = raw
        .status
        .and_then(|v| problems.check("status", v.parse::<herald_domain::Status>()));
    let range = range(
        &mut problems,
        ("from", raw.from),
        ("startDate", raw.start_date),
        ("to", raw.to),
        ("endDate", raw.end_date),
    );
    let limit = match raw.limit {
        None => Some(DEFAULT_LIMIT),
        Some(v) => problems.check(
            "limit",
            v.parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| format!("must be a whole number from 1 to {MAX_LIMIT}")),
        ),
    };
    let sort = raw.sort.and_then(|v| {
        let order = match v.as_str() {
            "-createdAt" => Ok(SortOrder::NewestFirst),
            "createdAt" | "+createdAt" => Ok(SortOrder::OldestFirst),
            _ => Err("must be createdAt (oldest first) or -createdAt (newest first)".to_owned()),
        };
        problems.check("sort", order)
    });
    let page = raw.page.and_then(|v| {
        problems.check(
            "page",
            v.parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| "must be a whole number of 1 or more".to_owned()),
        )
    });
    let cursor = raw
        .cursor
        .and_then(|v| problems.check("cursor", Cursor::decode(&v)));
    let with_total = raw.total.and_then(|v| {
        let asked = match v.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("must be true or false".to_owned()),
        };
        problems.check("total", asked)
    });
    let filters = Filters {
        user_id,
        event_type,
        channel,
        priority,
        status,
        range: range.unwrap_or_default(),
    };
    let position = match (page, cursor) {
        (Some(_), Some(_)) => {
            problems.add(
                "page",
                "cannot be given together with cursor: a cursor already says where the page starts",
            );
            None
        }
        (None, Some(cursor)) => {
            // The filters can only be compared once they are all valid.
            if problems.is_empty() && !cursor.fits(&filters) {
                problems.add(
                    "cursor",
                    "was made for other filters; repeat the filters of the request that returned it",
                );
            }
            if sort.is_some_and(|order| order != cursor.order) {
                problems.add(
                    "cursor",
                    format!(
                        "was made for sort={}; keep the sort of the request that returned it",
                        cursor.order.as_param()
                    ),
                );
            }
            Some(Position::After(cursor))
        }
        (page, None) => {
            let page = page.unwrap_or(1);
            let offset = u64::from(page - 1) * u64::from(limit.unwrap_or(DEFAULT_LIMIT));
            if offset > MAX_OFFSET {
                problems.add(
                    "page",
                    format!("reaches past {MAX_OFFSET} events ((page - 1) * limit); walk further with cursor (nextCursor)"),
                );
            }
            Some(Position::Page(page))
        }
    };
    let order = match &position {
        Some(Position::After(cursor)) => cursor.order,
        _ => sort.unwrap_or_default(),
    };
    problems.finish(|| ListQuery {
        filters,
        order,
        limit: limit.unwrap_or(DEFAULT_LIMIT),
        position: position.unwrap_or(Position::Page(1)),
        with_total: with_total.unwrap_or(false),
    })
}

/// Validates the parameters of `GET /api/stats`, listing every problem.
pub fn parse_stats(pairs: Vec<(String, String)>) -> Result<StatsQuery, Vec<FieldError>> {
    let mut problems = Problems::default();
    let [from, start_date, to, end_date] =
        slots(pairs, ["from", "startDate", "to", "endDate"], &mut problems);
    let range = range(
        &mut problems,
        ("from", from),
        ("startDate", start_date),
        ("to", to),
        ("endDate", end_date),
    );
    problems.finish(|| StatsQuery {
        range: range.unwrap_or_default(),
    })
}

/// The value of a parameter that has an alias; giving both is a problem (named by the alias).
fn alias<'a>(
    problems: &mut Problems,
    (name, value): (&'a str, Option<String>),
    (alias, alias_value): (&'a str, Option<String>),
) -> Option<(&'a str, String)> {
    match (value, alias_value) {
        (Some(_), Some(_)) => {
            problems.add(
                alias,
                format!("cannot be given together with {name}; give one"),
            );
            None
        }
        (Some(v), None) => Some((name, v)),
        (None, Some(v)) => Some((alias, v)),
        (None, None) => None,
    }
}

/// A non-empty exact-match value of at most `max` characters.
fn label(problems: &mut Problems, name: &str, value: String, max: u64) -> Option<String> {
    let length = value.chars().count() as u64;
    let checked = if value.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else if length > max {
        Err(format!("must be at most {max} characters long"))
    } else {
        Ok(value)
    };
    problems.check(name, checked)
}

/// Reads `from`/`to` (or their aliases) into a [`Range`]; `None` if any part is bad.
fn range(
    problems: &mut Problems,
    from: (&str, Option<String>),
    start_date: (&str, Option<String>),
    to: (&str, Option<String>),
    end_date: (&str, Option<String>),
) -> Option<Range> {
    let n_before = problems.len();
    let from = alias(problems, from, start_date).and_then(|(name, v)| {
        problems
            .check(name, parse_bound(&v, Bound::Start))
            .map(|t| (name, t))
    });
    let to = alias(problems, to, end_date).and_then(|(name, v)| {
        problems
            .check(name, parse_bound(&v, Bound::End))
            .map(|t| (name, t))
    });
    if let (Some((_, from)), Some((name, before))) = (from, to) {
        if before <= from {
            problems.add(name, "must not be before from");
        }
    }
    (problems.len() == n_before).then(|| Range {
        from: from.map(|(_, t)| t),
        before: to.map(|(_, t)| t),
    })
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use herald_domain::{Channel, Priority, Status};
    use utoipa::openapi::path::ParameterIn;

    use super::*;

    fn list(query: &str) -> Result<ListQuery, Vec<FieldError>> {
        parse_list(pairs(Some(query)))
    }

    fn fields(query: &str) -> Vec<String> {
        list(query)
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    fn at(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw)
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn defaults_are_newest_first_page_one_of_ten() {
        let query = list("").expect("valid");
        assert_eq!(query.order, SortOrder::NewestFirst);
        assert_eq!(query.limit, 10);
        assert_eq!(query.position, Position::Page(1));
        assert_eq!(query.filters, Filters::default());
    }

    #[test]
    fn filters_and_aliases_are_read() {
        let query = list(
            "userId=u%201&activityType=login&channel=SMS&priority=critical&status=dead_lettered\
             &startDate=2024-05-01&endDate=2024-05-01T10:00:00.0005%2B02:00&sort=createdAt&limit=100&page=3",
        )
        .expect("valid");
        assert_eq!(query.filters.user_id.as_deref(), Some("u 1"));
        assert_eq!(query.filters.event_type.as_deref(), Some("login"));
        assert_eq!(query.filters.channel, Some(Channel::Sms));
        assert_eq!(query.filters.priority, Some(Priority::Critical));
        assert_eq!(query.filters.status, Some(Status::DeadLettered));
        assert_eq!(query.filters.range.from, Some(at("2024-05-01T00:00:00Z")));
        assert_eq!(
            query.filters.range.before,
            Some(at("2024-05-01T08:00:00.001Z")),
            "an inclusive end, exclusive one millisecond later"
        );
        assert_eq!(query.order, SortOrder::OldestFirst);
        assert_eq!(query.limit, 100);
        assert_eq!(query.position, Position::Page(3));
    }

    #[test]
    fn a_date_as_end_covers_the_whole_day() {
        let query = list("from=2024-05-01T00:00:00.0001Z&to=2024-05-01").expect("valid");
        assert_eq!(
            query.filters.range.from,
            Some(at("2024-05-01T00:00:00.001Z"))
        );
        assert_eq!(query.filters.range.before, Some(at("2024-05-02T00:00:00Z")));
    }

    #[test]
    fn every_bad_parameter_is_named() {
        assert_eq!(fields("limit=0"), ["limit"]);
        assert_eq!(fields("limit=101"), ["limit"]);
        assert_eq!(fields("limit=ten"), ["limit"]);
        assert_eq!(fields("page=0"), ["page"]);
        assert_eq!(
            fields("page=200&limit=100"),
            ["page"],
            "past the offset limit"
        );
        assert_eq!(fields("status=LOST"), ["status"]);
        assert_eq!(fields("channel=pigeon"), ["channel"]);
        assert_eq!(fields("priority=urgent"), ["priority"]);
        assert_eq!(fields("from=yesterday"), ["from"]);
        assert_eq!(fields("endDate=2024-13-01"), ["endDate"]);
        assert_eq!(fields("to=2024-05-01T10:00:00"), ["to"], "no zone");
        assert_eq!(fields("from=2024-05-02&to=2024-05-01"), ["to"]);
        assert_eq!(fields("cursor=nonsense"), ["cursor"]);
        assert_eq!(fields("colour=red"), ["colour"]);
        assert_eq!(fields("userId=a&userId=b"), ["userId"]);
        assert_eq!(fields("userId="), ["userId"]);
        assert_eq!(fields("eventType=a&activityType=a"), ["activityType"]);
        assert_eq!(fields("sort=name"), ["sort"]);
        assert_eq!(fields("total=yes"), ["total"]);
        assert!(list("total=true").expect("valid").with_total);
        assert!(!list("").expect("valid").with_total);
        assert_eq!(
            fields("limit=0&page=0&status=x&channel=y&priority=z&from=w&colour=red"),
            ["channel", "colour", "from", "limit", "page", "priority", "status"]
        );
    }

    #[test]
    fn a_cursor_continues_only_its_own_walk() {
        let filters = Filters {
            status: Some(Status::Delivered),
            ..Filters::default()
        };
        let id = herald_domain::EventId::parse("e1").expect("valid");
        let cursor = Cursor::after(
            SortOrder::OldestFirst,
            &filters,
            at("2024-05-01T00:00:00Z"),
            id,
        )
        .encode();
        let query = list(&format!("status=DELIVERED&cursor={cursor}")).expect("valid");
        assert_eq!(query.order, SortOrder::OldestFirst, "the cursor's order");
        assert!(matches!(query.position, Position::After(_)));
        assert_eq!(
            fields(&format!("status=QUEUED&cursor={cursor}")),
            ["cursor"]
        );
        assert_eq!(
            fields(&format!("status=DELIVERED&sort=-createdAt&cursor={cursor}")),
            ["cursor"]
        );
        assert_eq!(
            fields(&format!("status=DELIVERED&page=2&cursor={cursor}")),
            ["page"]
        );
    }

    #[test]
    fn stats_take_only_a_range() {
        let query = parse_stats(pairs(Some("startDate=2024-05-01&to=2024-05-02"))).expect("valid");
        assert_eq!(query.range.before, Some(at("2024-05-03T00:00:00Z")));
        let err = parse_stats(pairs(Some("status=QUEUED&from=x"))).expect_err("invalid");
        let named: Vec<_> = err.into_iter().map(|e| e.field).collect();
        assert_eq!(named, ["from", "status"]);
    }

    #[test]
    fn every_documented_parameter_is_read_and_no_other() {
        let documented: Vec<String> = ListParams::into_params(|| Some(ParameterIn::Query))
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(documented, LIST_NAMES);
    }
}
