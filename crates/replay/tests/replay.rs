//! Integration tests of `herald-replay` against the real stack: each test runs the service in-process on port 0
//! with its own topic prefix and database, makes dead letters through the event store, and checks what the
//! service answers, what it changes in MongoDB and what it publishes on the lanes.

mod replay {
    pub mod api;
    pub mod concurrency;
    pub mod http;
    pub mod listing;
    pub mod outages;
    pub mod replays;
    pub mod retention;
    pub mod support;
}
