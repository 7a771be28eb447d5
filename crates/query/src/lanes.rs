//! `GET /api/lanes`: how far each lane's dispatchers are behind, from Kafka (the group's committed offsets against
//! the partitions' ends), for the console's overview and for scripts.
//!
//! This is the only thing herald-query asks Kafka; readiness stays a MongoDB ping, so a Kafka outage makes this
//! route answer 503 and leaves every other route up.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use herald_domain::Lane;
use herald_platform::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::openapi::ErrorBody;
use crate::AppState;

/// How long each Kafka request of one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One partition of a lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    pub partition: i32,
    /// The group's committed offset; the partition's start when the group has committed nothing there.
    pub committed: i64,
    /// The partition's end (high watermark).
    pub end: i64,
    /// `end - committed`: messages not yet done by the lane's dispatchers.
    pub lag: i64,
}

/// One lane: its topic, its dispatchers' consumer group and their lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LaneLag {
    /// `critical`, `default` or `retry`.
    pub lane: String,
    pub topic: String,
    pub group: String,
    /// The sum of the partitions' lag.
    pub lag: i64,
    pub partitions: Vec<PartitionLag>,
}

/// Every lane's lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Lanes {
    pub lanes: Vec<LaneLag>,
}

/// Why the lag could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LagError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the probe of a lane panicked")]
    Panicked,
}

/// Reads the lag of every lane, on a blocking thread (rdkafka's calls block), bounded.
pub async fn read_lag(kafka: &KafkaConfig) -> Result<Lanes, LagError> {
    let kafka = kafka.clone();
    let task = tokio::task::spawn_blocking(move || {
        let topics = kafka.topics();
        // The lanes at once, each with its own client (a client reads its own group's offsets): the answer
        // takes as long as the slowest lane, not as the three together.
        std::thread::scope(|scope| {
            let probes: Vec<_> = Lane::ALL
                .iter()
                .map(|lane| {
                    let (kafka, topics) = (&kafka, &topics);
                    scope.spawn(move || {
                        lane_lag(
                            kafka,
                            *lane,
                            &topics.lane(*lane),
                            &topics.dispatch_group(*lane),
                        )
                    })
                })
                .collect();
            probes
                .into_iter()
                .map(|probe| probe.join().unwrap_or(Err(LagError::Panicked)))
                .collect::<Result<Vec<_>, _>>()
                .map(|lanes| Lanes { lanes })
        })
    });
    // A client that hangs past its own timeouts is left on its thread, not awaited.
    let bound = PROBE_TIMEOUT * 4;
    match tokio::time::timeout(bound, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => Err(LagError::Timeout(bound)),
    }
}

fn lane_lag(
    kafka: &KafkaConfig,
    lane: Lane,
    topic: &str,
    group: &str,
) -> Result<LaneLag, LagError> {
    let mut client = herald_platform::kafka::client_config(kafka);
    // A consumer that never subscribes does not join the group: it only reads the group's committed offsets.
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let probe: BaseConsumer = client.create()?;
    let metadata = probe.fetch_metadata(Some(topic), PROBE_TIMEOUT)?;
    let mut ids: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    ids.sort_unstable();
    let mut list = TopicPartitionList::new();
    for id in &ids {
        list.add_partition(topic, *id);
    }
    let committed = if ids.is_empty() {
        list
    } else {
        probe.committed_offsets(list, PROBE_TIMEOUT)?
    };
    let mut partitions = Vec::with_capacity(ids.len());
    for id in ids {
        let (low, high) = probe.fetch_watermarks(topic, id, PROBE_TIMEOUT)?;
        let at = match committed.find_partition(topic, id).map(|e| e.offset()) {
            Some(Offset::Offset(n)) => n,
            _ => low,
        };
        partitions.push(PartitionLag {
            partition: id,
            committed: at,
            end: high,
            lag: (high - at).max(0),
        });
    }
    Ok(LaneLag {
        lane: lane.as_str().to_owned(),
        topic: topic.to_owned(),
        group: group.to_owned(),
        lag: partitions.iter().map(|p| p.lag).sum(),
        partitions,
    })
}

/// Show each lane's consumer lag.
///
/// For each lane (`critical`, `default`, `retry`): its topic, the consumer group of its dispatchers, and per
/// partition the group's committed offset, the partition's end and the difference. Read from Kafka on each call.
#[utoipa::path(
    get,
    path = "/api/lanes",
    tag = "stats",
    security(("apiKey" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Every lane's lag", body = Lanes),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "Kafka did not answer", body = ErrorBody),
    )
)]
pub async fn lanes(State(state): State<AppState>) -> Result<Json<Lanes>, ApiError> {
    read_lag(&state.kafka).await.map(Json).map_err(|e| {
        tracing::warn!(error = %e, "cannot read the lanes' lag");
        ApiError::KafkaUnavailable
    })
}
