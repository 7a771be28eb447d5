//! Integration tests of `herald-dispatch` against the real stack: Kafka, the MongoDB-wire server and the SMTP
//! sink, with local HTTP receivers standing in for webhook targets and the SMS API.

mod dispatch {
    pub mod support;

    mod channels;
    mod concurrency;
    mod crash;
    mod failures;
    mod http_apis;
    mod instances;
    mod panic;
    mod push;
    mod redelivery;
    mod retention;
    mod status;
    mod stranded;
}
