//! The `logs` resource: events as `GET /api/logs`, `GET /api/logs/{id}` and `GET /api/stats` show them. Its
//! parameters ([`params`]), keyset cursor ([`cursor`]), reads of the `events` collection ([`reader`]), answers
//! ([`view`]) and handlers ([`routes`]) live here, with the slice walk that reads a page on FerretDB ([`slices`]); the words they share (the filters, the range, the sort order)
//! are defined in this module, so that the cursor and the parameters both depend on them and not on each other.

use chrono::{DateTime, Utc};
use herald_domain::{Channel, Priority, Status};

pub mod cursor;
pub mod params;
pub mod reader;
pub mod routes;
pub mod slices;
pub mod view;

/// The order of a list, on `createdAt` with `eventId` as the tie-break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    NewestFirst,
    OldestFirst,
}

impl SortOrder {
    pub fn as_param(self) -> &'static str {
        match self {
            SortOrder::NewestFirst => "-createdAt",
            SortOrder::OldestFirst => "createdAt",
        }
    }
}

/// A range of `createdAt`, at the millisecond precision events are stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    /// Inclusive lower bound.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub before: Option<DateTime<Utc>>,
}

/// What a list is narrowed to; every field set must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filters {
    pub user_id: Option<String>,
    pub event_type: Option<String>,
    pub channel: Option<Channel>,
    pub priority: Option<Priority>,
    pub status: Option<Status>,
    pub range: Range,
}
