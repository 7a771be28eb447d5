//! `GET /api/stats`: counts of the events created within a range, by status, channel and priority, answered from
//! hourly buckets instead of a pass over the events.
//!
//! Reading every event of a range cannot be fast on FerretDB 1.24 (it pushes no range down and groups in Go:
//! 113 s at 200,000 events), so the counts are kept as events change state. [`consumer`] reads the status topic
//! (a step is published there once it is recorded in MongoDB) and folds the terminal steps, in batches, into one
//! document per hour of creation ([`buckets`]); [`reader`] sums the buckets of the hours a range covers and adds
//! the events still in flight, counted live (an equality on their status, so the cost is the number of events in
//! flight, not the size of the table). Buckets are never deleted with the events they count: retention deletes
//! events, not history.

pub mod buckets;
pub mod consumer;
pub mod minutes;
pub mod reader;
pub mod routes;
pub mod view;
