//! The `dead-letters` resource: `GET /api/dead-letters`, the dead letters a page at a time, newest first, by
//! keyset cursor. A dead letter is an event in `DEAD_LETTERED`, so its pages are `GET /api/logs` pages with that
//! status ([`crate::logs`]: the same reader, slice walk, cursor and masking); its parameters ([`params`]) are the
//! filters that make sense for dead letters, and no offset pages or totals, which would read every dead letter.

pub mod params;
pub mod routes;
