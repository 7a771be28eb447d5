//! The query parameters of `GET /api/alerts`, every problem reported at once, by name.

use herald_domain::FieldError;
use herald_platform::http::Problems;
use utoipa::IntoParams;

use crate::logs::params::{self, Range, DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET};

/// Longest rule name or group value accepted as a filter.
const MAX_LABEL_LEN: usize = 200;

/// A validated `GET /api/alerts` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertQuery {
    pub rule: Option<String>,
    pub group: Option<String>,
    /// On `createdAt`, when the alert was raised.
    pub range: Range,
    pub page: u32,
    pub limit: u32,
}

/// The parameters of `GET /api/alerts`, as the OpenAPI document shows them.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read from the raw query string; this type only documents the parameters.
pub struct AlertParams {
    /// Only alerts of this rule (exact match), such as `failed-requests`.
    #[param(max_length = 200)]
    rule: Option<String>,
    /// Only alerts of this group (exact match), such as `10.0.0.1`; `*` for rules without `groupBy`.
    #[param(max_length = 200)]
    group: Option<String>,
    /// Only alerts raised at or after this time: an ISO 8601 date-time with a zone, or a date.
    #[param(example = "2024-05-01T00:00:00Z")]
    from: Option<String>,
    /// Only alerts raised at or before this time: an ISO 8601 date-time with a zone, or a date (up to its end).
    #[param(example = "2024-05-31")]
    to: Option<String>,
    /// Page number, from 1 (`(page - 1) * limit` may be at most 10000). Default 1.
    #[param(value_type = Option<u32>, minimum = 1)]
    page: Option<String>,
    /// Alerts per page, 1 to 100. Default 10.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

const NAMES: [&str; 8] = [
    "rule",
    "group",
    "from",
    "startDate",
    "to",
    "endDate",
    "page",
    "limit",
];

/// Validates the parameters of `GET /api/alerts`, listing every problem.
pub fn parse_list(pairs: Vec<(String, String)>) -> Result<AlertQuery, Vec<FieldError>> {
    let mut problems = Problems::default();
    let mut times = Vec::new();
    let (mut rule, mut group, mut page, mut limit) = (None, None, None, None);
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in pairs {
        if !NAMES.contains(&name.as_str()) {
            problems.add(
                &name,
                format!("is not a parameter here; known: {}", NAMES.join(", "),),
            );
            continue;
        }
        if !seen.insert(name.clone()) {
            problems.add(&name, "is given more than once");
            continue;
        }
        match name.as_str() {
            "rule" | "group" => {
                let slot = if name == "rule" {
                    &mut rule
                } else {
                    &mut group
                };
                if value.trim().is_empty() {
                    problems.add(&name, "must not be empty");
                } else if value.chars().count() > MAX_LABEL_LEN {
                    problems.add(
                        &name,
                        format!("must be at most {MAX_LABEL_LEN} characters long"),
                    );
                } else {
                    *slot = Some(value);
                }
            }
            "page" => match value.parse::<u32>() {
                Ok(n) if n >= 1 => page = Some(n),
                _ => problems.add("page", "must be a whole number of 1 or more"),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = Some(n),
                _ => problems.add(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                ),
            },
            _ => times.push((name, value)),
        }
    }
    // The time range reads exactly as on `/api/stats`.
    let range = match params::parse_stats(times) {
        Ok(stats) => stats.range,
        Err(errors) => {
            problems.extend(errors);
            Range::default()
        }
    };
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if u64::from(page - 1) * u64::from(limit) > MAX_OFFSET {
        problems.add(
            "page",
            format!("reaches past {MAX_OFFSET} alerts ((page - 1) * limit); narrow from/to"),
        );
    }
    problems.finish(|| AlertQuery {
        rule,
        group,
        range,
        page,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(query: &str) -> Vec<String> {
        parse_list(params::pairs(Some(query)))
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn filters_and_pages_are_read_and_every_bad_one_named() {
        let query = parse_list(params::pairs(Some(
            "rule=failed-requests&group=10.0.0.1&from=2024-05-01&to=2024-05-01&page=2&limit=5",
        )))
        .expect("valid");
        assert_eq!(query.rule.as_deref(), Some("failed-requests"));
        assert_eq!(query.group.as_deref(), Some("10.0.0.1"));
        assert!(query.range.from.is_some() && query.range.before.is_some());
        assert_eq!((query.page, query.limit), (2, 5));
        let defaults = parse_list(Vec::new()).expect("valid");
        assert_eq!((defaults.page, defaults.limit), (1, DEFAULT_LIMIT));
        assert_eq!(
            fields("rule=&limit=0&page=0&from=soon&colour=red&group=a&group=b"),
            ["colour", "from", "group", "limit", "page", "rule"]
        );
        assert_eq!(fields("from=2024-05-02&to=2024-05-01"), ["to"]);
    }
}
