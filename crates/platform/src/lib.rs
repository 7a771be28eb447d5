//! What every Herald service shares: configuration from the environment, telemetry, the shutdown signal, the
//! health/ready/metrics router, the HTTP plumbing (errors, bodies, middleware, API keys, rate limits, OpenAPI), and the Kafka and MongoDB builders that carry Herald's delivery guarantees.

pub mod alerts;
pub mod batch;
pub mod config;
pub mod health;
pub mod http;
pub mod kafka;
pub mod lanes;
pub mod mongo;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod smtp;
pub mod store;
pub mod telemetry;
pub mod templates;

pub use config::{
    ConfigError, EnvReader, KafkaConfig, Listen, MongoConfig, OtlpConfig, TelemetryConfig,
};
pub use shutdown::{shutdown_signal, shutdown_signal_within};
