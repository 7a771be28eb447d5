//! Integration tests of `herald-ingest` against the real stack: each test runs the service in-process on port
//! 0 with its own topic prefix and database, and checks what it answers, what it stores in MongoDB and what it
//! publishes on Kafka.

mod ingest {
    pub mod delivery;
    pub mod http;
    pub mod idempotency;
    pub mod outages;
    pub mod startup;
    pub mod support;
    pub mod validation;
}
