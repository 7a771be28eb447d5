//! Reading request parameters the same way in every HTTP service: a collector of all the problems of one request
//! (answered together, sorted by field, so that an answer is deterministic) and ISO 8601 times.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, SubsecRound, Utc};
use herald_domain::FieldError;

/// Every problem found in one request, each under the field it concerns.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    /// Records a problem with `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// `Some(value)` if it was read, recording the problem under `field` otherwise.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        parsed: Result<T, E>,
    ) -> Option<T> {
        parsed.map_err(|e| self.add(field, e.to_string())).ok()
    }

    /// Records problems found by another reader.
    pub fn extend(&mut self, problems: impl IntoIterator<Item = FieldError>) {
        self.0.extend(problems);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems are recorded (a reader compares it before and after reading a group of fields).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `value()` when there is no problem, otherwise every problem sorted by field, then by message.
    pub fn finish<T>(mut self, value: impl FnOnce() -> T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            self.0.sort_by(|a, b| {
                a.field
                    .cmp(&b.field)
                    .then_with(|| a.message.cmp(&b.message))
            });
            Err(self.0)
        }
    }
}

/// Why a time parameter was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("'{0}' is not an ISO 8601 date-time with a time zone, such as 2024-05-01T12:00:00Z")]
    NotDateTime(String),
    #[error("must be an ISO 8601 date-time with a zone (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00) or a date (2024-05-01)")]
    NotDateTimeOrDate,
}

/// An ISO 8601 date-time with a zone (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00+02:00`), in UTC.
pub fn parse_date_time(raw: &str) -> Result<DateTime<Utc>, TimeError> {
    raw.parse::<DateTime<FixedOffset>>()
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| TimeError::NotDateTime(raw.to_owned()))
}

/// Which end of a range a time parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Inclusive start: the first stored millisecond at or after the time.
    Start,
    /// Inclusive end, returned as the exclusive bound one millisecond after the last stored millisecond at or
    /// before the time (a date: the next midnight).
    End,
}

/// An ISO 8601 date-time with a zone, or a date (UTC), as the bound it stands for at the millisecond precision
/// Herald stores times with.
pub fn parse_bound(raw: &str, bound: Bound) -> Result<DateTime<Utc>, TimeError> {
    let millis = Duration::milliseconds(1);
    if let Ok(at) = parse_date_time(raw) {
        let floor = at.trunc_subsecs(3);
        return Ok(match bound {
            Bound::Start if floor < at => floor + millis,
            Bound::Start => floor,
            Bound::End => floor + millis,
        });
    }
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let date = match bound {
            Bound::Start => Some(date),
            Bound::End => date.succ_opt(),
        };
        if let Some(midnight) = date.and_then(|d| d.and_hms_opt(0, 0, 0)) {
            return Ok(midnight.and_utc());
        }
    }
    Err(TimeError::NotDateTimeOrDate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw)
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn problems_come_back_sorted_by_field_and_message() {
        let mut problems = Problems::default();
        assert_eq!(problems.check::<u32, _>("limit", "x".parse::<u32>()), None);
        problems.add("from", "b");
        problems.add("from", "a");
        let fields: Vec<(String, String)> = problems
            .finish(|| ())
            .expect_err("problems")
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect();
        assert_eq!(fields[0], ("from".into(), "a".into()));
        assert_eq!(fields[1], ("from".into(), "b".into()));
        assert_eq!(fields[2].0, "limit");
        assert_eq!(Problems::default().finish(|| 7), Ok(7));
    }

    #[test]
    fn times_are_date_times_with_a_zone_or_dates() {
        assert_eq!(
            parse_date_time("2024-05-01T14:00:00+02:00"),
            Ok(at("2024-05-01T12:00:00Z"))
        );
        assert_eq!(
            parse_date_time("2024-05-01"),
            Err(TimeError::NotDateTime("2024-05-01".into()))
        );
        assert_eq!(
            parse_bound("2024-05-01", Bound::Start),
            Ok(at("2024-05-01T00:00:00Z"))
        );
        assert_eq!(
            parse_bound("2024-05-01", Bound::End),
            Ok(at("2024-05-02T00:00:00Z"))
        );
        // Sub-millisecond precision rounds inward: the start up, the end to just after its millisecond.
        assert_eq!(
            parse_bound("2024-05-01T00:00:00.0005Z", Bound::Start),
            Ok(at("2024-05-01T00:00:00.001Z"))
        );
        assert_eq!(
            parse_bound("2024-05-01T00:00:00.0005Z", Bound::End),
            Ok(at("2024-05-01T00:00:00.001Z"))
        );
        assert_eq!(
            parse_bound("soon", Bound::End),
            Err(TimeError::NotDateTimeOrDate)
        );
    }
}
