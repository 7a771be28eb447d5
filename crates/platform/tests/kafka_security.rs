//! Kafka over SSL (with a client certificate) and SASL_SSL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512): a broker of this
//! test's own with certificates generated at test time, reached through `KafkaConfig::read` and the platform's
//! producer and consumer builders, as every service reaches Kafka.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_domain::TopicSpec;
use herald_platform::kafka::{self, build_consumer, build_producer, check_metadata};
use herald_platform::{EnvReader, KafkaConfig};
use herald_test_support::secure_kafka::SecureKafka;
use herald_test_support::unique_name;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;

/// Creates a topic, produces a message and consumes it back through `config`.
async fn round_trip(config: &KafkaConfig, label: &str) -> Result<()> {
    let topic = unique_name(label);
    kafka::ensure_topics(
        config,
        &[TopicSpec {
            name: topic.clone(),
            partitions: 1,
        }],
        1,
    )
    .await
    .with_context(|| format!("{label}: creating a topic"))?;
    let producer = build_producer(config)?;
    let payload = format!("hello over {label}");
    kafka::send(&producer, &topic, "key", payload.as_bytes(), None)
        .await
        .with_context(|| format!("{label}: producing"))?;
    let consumer = build_consumer(config, &unique_name(&format!("{label}-group")))?;
    consumer.subscribe(&[&topic])?;
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .with_context(|| format!("{label}: nothing consumed within 30 s"))??;
    ensure!(
        message.payload() == Some(payload.as_bytes()),
        "{label}: consumed {:?}",
        message.payload().map(String::from_utf8_lossy)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_over_ssl_and_every_sasl_mechanism() -> Result<()> {
    let broker = SecureKafka::start().await?;

    // SSL with the client certificate: every file found in the certificates directory by default.
    let ssl = broker.config(None)?;
    ensure!(
        ssl.security.ssl.certificate_location == Some(broker.certificates.join("client.pem")),
        "{ssl:?}"
    );
    round_trip(&ssl, "ssl").await?;
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let config = broker.config(Some(mechanism))?;
        round_trip(&config, &mechanism.to_ascii_lowercase()).await?;
    }

    // A wrong password is refused; so is SSL without the client certificate the listener requires.
    let mut env = broker.env(Some("SCRAM-SHA-512"));
    env.insert("KAFKA_SASL_PASSWORD".into(), "wrong".into());
    let mut reader = EnvReader::from_map(env);
    let wrong = KafkaConfig::read(&mut reader, "herald-test");
    reader.finish()?;
    ensure!(
        check_metadata(&wrong, Duration::from_secs(5))
            .await
            .is_err(),
        "a wrong SCRAM password was accepted"
    );
    let mut anonymous = broker.config(None)?;
    anonymous.security.ssl.certificate_location = None;
    anonymous.security.ssl.key_location = None;
    ensure!(
        check_metadata(&anonymous, Duration::from_secs(5))
            .await
            .is_err(),
        "SSL without a client certificate was accepted"
    );
    let shown = format!("{:?}", broker.config(Some("PLAIN"))?);
    ensure!(
        !shown.contains(herald_test_support::secure_kafka::PASSWORD),
        "{shown}"
    );

    broker.stop()
}
