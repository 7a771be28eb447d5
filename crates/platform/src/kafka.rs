//! Kafka producer, consumer and admin builders with Herald's delivery guarantees built in.
//!
//! - Producers are idempotent with `acks=all` and a finite message timeout; callers await the delivery report
//!   before they answer anyone or store an offset.
//! - Consumers auto-commit only offsets that were explicitly stored (`enable.auto.offset.store=false`), and code
//!   stores an offset only after the work it stands for is durable.
//! - Consumers watch themselves and are rebuilt when stuck ([`watch`]).
//! - [`kraft`]: the properties of the one-node brokers of the dev stack and of tests.

pub mod kraft;
pub mod watch;

use std::time::Duration;

use herald_domain::TopicSpec;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, DefaultConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// What went wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka client error: {0}")]
    Client(#[from] KafkaError),
    #[error("creating topic {topic} failed: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("deleting topic {topic} failed: {code}")]
    DeleteTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("kafka did not answer within {0:?}")]
    Timeout(Duration),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The settings every client shares: brokers, client id, TLS and SASL, then the `KAFKA_PROPERTY_*` extras (which
/// win over everything before them).
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id);
    for (key, value) in config.security.properties() {
        client.set(key, value);
    }
    for (key, value) in &config.extra {
        client.set(key, value);
    }
    client
}

/// An idempotent producer with `acks=all`: a delivery report means every in-sync replica has the message, and
/// internal retries cannot duplicate or reorder it.
pub fn build_producer(config: &KafkaConfig) -> Result<FutureProducer> {
    let timeout_ms = config.message_timeout.as_millis().to_string();
    let producer = client_config(config)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", &timeout_ms)
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .create()?;
    Ok(producer)
}

/// A consumer in `group_id` that commits, in the background, only offsets stored with [`store_offset`].
///
/// A new group starts at the earliest offset, so nothing published before the first consumer joined is skipped.
pub fn build_consumer(config: &KafkaConfig, group_id: &str) -> Result<StreamConsumer> {
    let consumer = consumer_config(config, group_id).create_with_context(DefaultConsumerContext)?;
    Ok(consumer)
}

/// [`build_consumer`] with a context of the caller's, for consumers that follow rebalances (a dispatcher stops
/// the worker of a partition that is taken away from it).
pub fn build_consumer_with_context<C>(
    config: &KafkaConfig,
    group_id: &str,
    context: C,
) -> Result<StreamConsumer<C>>
where
    C: ConsumerContext + 'static,
{
    let consumer = consumer_config(config, group_id)
        // The context's `stats` callback gets the consumer lag of every assigned partition every 5 s (see
        // [`record_consumer_lag`]); the default context would only log it, so `build_consumer` leaves it off.
        .set("statistics.interval.ms", "5000")
        .create_with_context(context)?;
    Ok(consumer)
}

/// The settings of every Herald consumer: offsets committed in the background, but only those stored with
/// [`store_offset`]; a new group starts at the earliest offset.
fn consumer_config(config: &KafkaConfig, group_id: &str) -> ClientConfig {
    let mut client = client_config(config);
    client
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", "cooperative-sticky");
    client
}

/// Sets `herald_kafka_consumer_lag{group, topic, partition}` from rdkafka's statistics: how many messages each
/// partition this consumer holds is behind its end. Call from a consumer context's `stats`.
pub fn record_consumer_lag(statistics: &rdkafka::Statistics, group: &str) {
    for (topic, stats) in &statistics.topics {
        for (partition, p) in &stats.partitions {
            // -1 is librdkafka's internal "unassigned" partition; a lag of -1 means "not known yet".
            if *partition < 0 || p.consumer_lag < 0 {
                continue;
            }
            metrics::gauge!("herald_kafka_consumer_lag",
                "group" => group.to_owned(), "topic" => topic.clone(), "partition" => partition.to_string())
            .set(p.consumer_lag as f64);
        }
    }
}

/// Marks `message` as processed: its offset is committed with the next automatic commit (or on close, or when
/// the partition is revoked). Call only after the work the message stands for is durable.
pub fn store_offset<X, C>(consumer: &C, message: &impl Message) -> Result<()>
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    consumer.store_offset(message.topic(), message.partition(), message.offset())?;
    Ok(())
}

/// Commits what `consumer` has stored, then closes it (it leaves its group), both on a blocking thread: each waits
/// on the broker, and with Kafka gone librdkafka can wait there until the shutdown watchdog ends the process. The
/// runtime's other tasks go on shutting down meanwhile. Nothing stored to commit is not an error.
pub async fn commit_and_close<X, C>(consumer: C) -> Result<()>
where
    X: ConsumerContext,
    C: Consumer<X> + Send + 'static,
{
    let committed = tokio::task::spawn_blocking(move || {
        let committed = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
        drop(consumer);
        committed
    })
    .await
    .map_err(|_cancelled_or_panicked| KafkaError::Canceled)?;
    match committed {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sends one message and waits for the broker's acknowledgement. The message carries the current span's trace
/// context in its headers, when traces are exported ([`crate::telemetry::with_trace_context`]).
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<(i32, i64)> {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(headers) = crate::telemetry::with_trace_context(headers) {
        record = record.headers(headers);
    }
    // The producer's own message.timeout.ms bounds the wait; rdkafka's queue timeout only covers a full queue.
    let delivery = producer
        .send(record, Duration::from_secs(5))
        .await
        .map_err(|(e, _)| e)?;
    Ok((delivery.partition, delivery.offset))
}

/// An admin client for topic management and readiness checks.
pub fn build_admin(config: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>> {
    Ok(client_config(config).create()?)
}

/// Creates the topics that do not exist yet; existing ones are left as they are.
pub async fn ensure_topics(
    config: &KafkaConfig,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<()> {
    let admin = build_admin(config)?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            NewTopic::new(
                &spec.name,
                spec.partitions,
                TopicReplication::Fixed(replication),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// The names of every topic in the cluster.
pub async fn topic_names(config: &KafkaConfig, timeout: Duration) -> Result<Vec<String>> {
    with_metadata(config, timeout, |metadata| {
        metadata
            .topics()
            .iter()
            .map(|topic| topic.name().to_owned())
            .collect()
    })
    .await
}

/// Deletes `names` (a topic already gone is fine). Returns how many the cluster deleted.
pub async fn delete_topics(config: &KafkaConfig, names: &[String]) -> Result<usize> {
    let admin = build_admin(config)?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    let mut deleted = 0;
    for chunk in names.chunks(200) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for result in admin.delete_topics(&chunk, &options).await? {
            match result {
                Ok(_) => deleted += 1,
                Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => return Err(Error::DeleteTopic { topic, code }),
            }
        }
    }
    Ok(deleted)
}

/// Asks the cluster for its metadata: the readiness check for anything that talks to Kafka.
///
/// Returns the number of brokers that answered. Runs on the blocking pool, since librdkafka's metadata call
/// blocks its thread.
pub async fn check_metadata(config: &KafkaConfig, timeout: Duration) -> Result<usize> {
    with_metadata(config, timeout, |metadata| metadata.brokers().len()).await
}

/// Fetches the cluster's metadata on the blocking pool (librdkafka's call blocks its thread) and reads `read` from it.
async fn with_metadata<T: Send + 'static>(
    config: &KafkaConfig,
    timeout: Duration,
    read: impl FnOnce(&rdkafka::metadata::Metadata) -> T + Send + 'static,
) -> Result<T> {
    let admin = build_admin(config)?;
    let answer = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(None, timeout)
            .map(|metadata| read(&metadata))
    });
    match tokio::time::timeout(timeout + Duration::from_secs(1), answer).await {
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(_join)) => Err(Error::Timeout(timeout)),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

/// Sends a message that cannot be decoded (a poison message) to the dead-letter topic, with why and where it came
/// from, so its partition can move on. Await this before storing the poison message's offset.
pub async fn dead_letter_poison(
    producer: &FutureProducer,
    dead_letters: &str,
    message: &impl Message,
    reason: &str,
) -> Result<()> {
    use herald_domain::messages::dlq_headers;
    use rdkafka::message::Header;
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: dlq_headers::REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: "herald-original-topic",
            value: Some(message.topic()),
        })
        .insert(Header {
            key: "herald-original-partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "herald-original-offset",
            value: Some(&offset),
        });
    let key = message
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    send(
        producer,
        dead_letters,
        &key,
        message.payload().unwrap_or_default(),
        Some(headers),
    )
    .await?;
    Ok(())
}

/// Headers from `(name, value)` pairs.
pub fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs
        .iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(rdkafka::message::Header {
                key,
                value: Some(*value),
            })
        })
}
