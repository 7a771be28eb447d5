//! The `alerts` resource: `GET /api/alerts` and `GET /api/alerts/{id}`, the alerts `herald-alert` raised, read
//! from the `alerts` collection (`herald_platform::alerts`), newest first, with filters on rule, group and time
//! and offset pages. Parameters, reader, answers and handlers each have their file here.

pub mod params;
pub mod reader;
pub mod routes;
pub mod view;
