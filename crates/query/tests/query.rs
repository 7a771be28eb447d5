//! Integration tests of `herald-query` against the real MongoDB-wire server: each test runs the service
//! in-process on port 0 with its own database, seeds events the way the writers store them, and checks what the
//! API answers against an in-memory model of the seed.

mod query {
    pub mod alerts;
    pub mod auth;
    pub mod console;
    pub mod cursor;
    pub mod dead_letters;
    pub mod detail;
    pub mod lists;
    pub mod masking;
    pub mod openapi;
    pub mod service;
    pub mod slices;
    pub mod stats;
    pub mod support;
    pub mod validation;
}
