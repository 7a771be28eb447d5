//! Integration tests of `herald-alert` against the real stack: Kafka, the MongoDB-wire server and the SMTP sink,
//! whose Mailpit-compatible API the tests read the alert emails back from. Status messages are published straight
//! to the status topic, as the dispatchers and the retry scheduler publish them.

mod alert {
    pub mod support;

    mod dead_letters;
    mod failed_requests;
    mod restart;
    mod smtp_down;
}
