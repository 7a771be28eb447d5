//! Replays: a dry run changes nothing; a filtered replay puts exactly the matching dead letters back on their own
//! lane, as a first attempt with the new replay count; no filter means everything up to the limit, oldest first;
//! a dead letter can be replayed again after it dies again; the pace holds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use herald_domain::messages::{HEADER_ATTEMPT, HEADER_EVENT_ID, HEADER_REQUEST_ID};
use herald_domain::{Lane, Priority, Status};
use herald_platform::store::Claim;
use serde_json::{json, Value};

use super::support::{ids, Fixture, Service, Spec, LIVE, SET};

#[tokio::test]
async fn a_dry_run_reports_what_would_be_replayed_and_changes_nothing() -> Result<()> {
    let fx = Fixture::new("replay-dry-run").await?;
    fx.standard_set().await?;
    let service = Service::start(&fx.ctx, |_| {}).await?;

    let (status, answer) = service.replay(&json!({"dryRun": true})).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"replayed": 5, "eventIds": SET, "dryRun": true})
    );
    let (status, answer) = service
        .replay(&json!({"dryRun": true, "limit": 2, "priority": "critical"}))
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"replayed": 2, "eventIds": ["a", "e"], "dryRun": true})
    );

    for id in SET {
        let record = fx.record(id).await?;
        assert_eq!(record.status, Status::DeadLettered, "{id}");
        assert_eq!(record.replay_count, 0, "{id}");
        assert!(record.timeline.iter().all(|entry| entry.kind != "replayed"));
    }
    assert_eq!(fx.lane_count(Lane::Critical).await?, 0);
    assert_eq!(fx.lane_count(Lane::Default).await?, 0);
    service.stop().await
}

/// Replays the standard set with `body` and checks that exactly `expected` (oldest first) came back.
async fn check_filtered_replay(label: &str, body: Value, expected: &[&str]) -> Result<()> {
    let fx = Fixture::new(label).await?;
    fx.standard_set().await?;
    let service = Service::start(&fx.ctx, |_| {}).await?;

    let (status, answer) = service.replay(&body).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"replayed": expected.len(), "eventIds": expected, "dryRun": false}),
        "replaying {body}"
    );

    let mut on_lanes = HashMap::new();
    for lane in [Lane::Critical, Lane::Default] {
        for received in fx.lane_messages(lane).await? {
            let id = received.message.event.event_id.to_string();
            ensure!(
                on_lanes.insert(id.clone(), (lane, received)).is_none(),
                "{id} was published twice"
            );
        }
    }
    let mut published: Vec<&str> = on_lanes.keys().map(String::as_str).collect();
    published.sort();
    assert_eq!(published, expected, "what is on the lanes");

    for id in SET.iter().chain([&LIVE]) {
        let record = fx.record(id).await?;
        if !expected.contains(id) {
            let unchanged = if *id == LIVE {
                Status::Queued
            } else {
                Status::DeadLettered
            };
            assert_eq!(record.status, unchanged, "{id} does not match");
            assert_eq!(record.replay_count, 0, "{id}");
            continue;
        }
        assert_eq!(record.status, Status::Queued, "{id}");
        assert_eq!(record.replay_count, 1, "{id}");
        assert_eq!(record.attempt_count, 0, "{id}: a fresh attempt budget");
        assert_eq!(record.lease_until, None);
        assert_eq!(record.next_attempt_at, None);
        let replayed: Vec<_> = record
            .timeline
            .iter()
            .filter(|entry| entry.kind == "replayed")
            .collect();
        assert_eq!(replayed.len(), 1, "{id}: {:?}", record.timeline);
        assert_eq!(
            replayed[0].detail.as_deref(),
            Some("replay 1, request test-request")
        );
        assert_eq!(
            record.attempts.len(),
            1,
            "the failed attempt stays in the history"
        );

        let (lane, received) = &on_lanes[*id];
        assert_eq!(
            *lane,
            Lane::for_priority(record.priority),
            "{id} goes back to its own lane"
        );
        assert_eq!(received.message.event, record.event());
        assert_eq!(received.message.attempt, 1);
        assert_eq!(received.message.replay_count, 1);
        assert_eq!(received.key, format!("user-{id}"));
        assert_eq!(
            received.headers.get(HEADER_EVENT_ID).map(String::as_str),
            Some(*id)
        );
        assert_eq!(
            received.headers.get(HEADER_ATTEMPT).map(String::as_str),
            Some("1")
        );
        assert_eq!(
            received.headers.get(HEADER_REQUEST_ID).map(String::as_str),
            Some("test-request")
        );
    }
    service.stop().await
}

#[tokio::test]
async fn a_replay_by_channel_takes_only_that_channel() -> Result<()> {
    check_filtered_replay("replay-channel", json!({"channel": "EMAIL"}), &["a", "d"]).await
}

#[tokio::test]
async fn a_replay_by_event_type_takes_only_that_type() -> Result<()> {
    check_filtered_replay(
        "replay-type",
        json!({"eventType": "invoice.ready"}),
        &["d", "e"],
    )
    .await
}

#[tokio::test]
async fn a_replay_by_priority_takes_only_that_priority() -> Result<()> {
    check_filtered_replay(
        "replay-priority",
        json!({"priority": "critical"}),
        &["a", "e"],
    )
    .await
}

#[tokio::test]
async fn a_replay_by_event_ids_takes_only_the_dead_letters_among_them() -> Result<()> {
    check_filtered_replay(
        "replay-ids",
        json!({"eventIds": ["e", "b", LIVE, "missing"]}),
        &["b", "e"],
    )
    .await
}

#[tokio::test]
async fn a_replay_by_time_range_takes_what_died_in_it_bounds_included() -> Result<()> {
    check_filtered_replay(
        "replay-range",
        json!({"since": "2024-02-01T00:00:00Z", "until": "2024-04-01T02:00:00+02:00"}),
        &["b", "c", "d"],
    )
    .await
}

#[tokio::test]
async fn filters_combine() -> Result<()> {
    check_filtered_replay(
        "replay-combined",
        json!({"channel": "webhook", "priority": "default", "eventType": "order.shipped", "dryRun": false}),
        &["c"],
    )
    .await
}

#[tokio::test]
async fn from_skips_the_oldest_dead_letters() -> Result<()> {
    check_filtered_replay("replay-from", json!({"from": 1, "limit": 2}), &["b", "c"]).await
}

#[tokio::test]
async fn from_counts_within_the_filter() -> Result<()> {
    check_filtered_replay(
        "replay-from-filter",
        json!({"from": 1, "channel": "email"}),
        &["d"],
    )
    .await
}

/// The notification dispatcher's replay body, `{"limit": 1000, "from": 0}`, takes everything from the oldest; a
/// `from` past the last dead letter takes nothing, in a dry run and in a replay.
#[tokio::test]
async fn from_zero_takes_everything_and_from_past_the_end_nothing() -> Result<()> {
    let fx = Fixture::new("replay-from-bounds").await?;
    fx.standard_set().await?;
    let service = Service::start(&fx.ctx, |_| {}).await?;
    for body in [
        json!({"from": 5, "dryRun": true}),
        json!({"from": 9, "limit": 1}),
    ] {
        let (status, answer) = service.replay(&body).await?;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["replayed"], 0, "{body}: {answer}");
    }
    let (status, answer) = service.replay(&json!({"from": 3, "dryRun": true})).await?;
    assert_eq!(
        (status, answer),
        (
            200,
            json!({"replayed": 2, "eventIds": ["d", "e"], "dryRun": true})
        )
    );
    let (status, answer) = service.replay(&json!({"limit": 1000, "from": 0})).await?;
    assert_eq!(
        (status, answer),
        (
            200,
            json!({"replayed": 5, "eventIds": SET, "dryRun": false})
        )
    );
    service.stop().await
}

#[tokio::test]
async fn no_body_and_an_empty_object_replay_everything_oldest_first_up_to_the_limit() -> Result<()>
{
    let fx = Fixture::new("replay-all").await?;
    // Made one after the other: deadLetteredAt does not decrease, and ties fall back to the id, in the same order.
    for id in ["dl-1", "dl-2", "dl-3"] {
        fx.dead_letter(&Spec::new(id)).await?;
    }
    let service = Service::start(&fx.ctx, |_| {}).await?;

    let response = service
        .http
        .post(service.url("/replay-dead-letter"))
        .send()
        .await?;
    let (status, answer) = super::support::answer(response).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"replayed": 3, "eventIds": ["dl-1", "dl-2", "dl-3"], "dryRun": false})
    );

    for id in ["dl-4", "dl-5", "dl-6"] {
        fx.dead_letter(&Spec::new(id)).await?;
    }
    let (status, answer) = service.replay(&json!({"limit": 2})).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(ids(&answer["eventIds"]), ["dl-4", "dl-5"]);
    assert_eq!(fx.record("dl-6").await?.status, Status::DeadLettered);

    let (status, answer) = service.replay(&json!({})).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"replayed": 1, "eventIds": ["dl-6"], "dryRun": false})
    );
    let (status, answer) = service.replay(&json!({})).await?;
    assert_eq!(
        (status, answer),
        (200, json!({"replayed": 0, "eventIds": [], "dryRun": false})),
        "nothing is left"
    );

    let lane: Vec<String> = fx
        .lane_messages(Lane::Default)
        .await?
        .into_iter()
        .map(|r| r.message.event.event_id.to_string())
        .collect();
    let mut sorted = lane.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["dl-1", "dl-2", "dl-3", "dl-4", "dl-5", "dl-6"],
        "each once"
    );
    service.stop().await
}

#[tokio::test]
async fn a_replayed_event_that_dies_again_can_be_replayed_again() -> Result<()> {
    let fx = Fixture::new("replay-twice").await?;
    let spec = Spec {
        priority: Priority::Critical,
        ..Spec::new("twice")
    };
    fx.dead_letter(&spec).await?;
    let service = Service::start(&fx.ctx, |_| {}).await?;

    let (status, answer) = service.replay(&json!({"eventIds": ["twice"]})).await?;
    assert_eq!(
        (status, ids(&answer["eventIds"])),
        (200, vec!["twice".into()])
    );
    let again = service.replay(&json!({"eventIds": ["twice"]})).await?;
    assert_eq!(
        again,
        (200, json!({"replayed": 0, "eventIds": [], "dryRun": false})),
        "an event back in flight is not replayed"
    );

    // What a dispatcher does with the replayed message: a message from before the replay is stale, the new one
    // is claimed. Then the attempt fails and the event dies again, under replay count 1.
    let first = fx.lane_messages(Lane::Critical).await?;
    assert_eq!(first.len(), 1);
    let message = &first[0].message;
    let id = &message.event.event_id;
    let lease = Duration::from_secs(30);
    let stale = fx.store.claim(id, 1, 0, lease).await?;
    assert!(matches!(stale, Claim::Skip(_)), "{stale:?}");
    let fresh = fx
        .store
        .claim(id, message.attempt, message.replay_count, lease)
        .await?;
    assert!(matches!(fresh, Claim::Send(_)), "{fresh:?}");
    fx.fail_claimed("twice", 1).await?;
    assert_eq!(fx.record("twice").await?.status, Status::DeadLettered);

    let (status, answer) = service.replay(&json!({"eventIds": ["twice"]})).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["replayed"], 1);
    let record = fx.record("twice").await?;
    assert_eq!(record.status, Status::Queued);
    assert_eq!(record.replay_count, 2);
    assert_eq!(record.attempt_count, 0);
    let details: Vec<_> = record
        .timeline
        .iter()
        .filter(|entry| entry.kind == "replayed")
        .filter_map(|entry| entry.detail.as_deref())
        .collect();
    assert_eq!(
        details,
        [
            "replay 1, request test-request",
            "replay 2, request test-request"
        ]
    );
    let counts: Vec<u32> = fx
        .lane_messages(Lane::Critical)
        .await?
        .iter()
        .map(|r| r.message.replay_count)
        .collect();
    assert_eq!(counts, [1, 2]);
    service.stop().await
}

#[tokio::test]
async fn the_replay_keeps_to_its_rate() -> Result<()> {
    let fx = Fixture::new("replay-rate").await?;
    let n_events = 8;
    for id in ["r-1", "r-2", "r-3", "r-4", "r-5", "r-6", "r-7", "r-8"] {
        fx.dead_letter(&Spec::new(id)).await?;
    }
    let service = Service::start(&fx.ctx, |config| config.rate_per_sec = 20).await?;
    let started = Instant::now();
    let (status, answer) = service.replay(&json!({})).await?;
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["replayed"], n_events);
    // 20 a second is one every 50 ms: the 8th goes out no earlier than 7 intervals after the first.
    assert!(
        elapsed >= Duration::from_millis(7 * 50),
        "8 events at 20/s took only {elapsed:?}"
    );
    assert_eq!(fx.lane_count(Lane::Default).await?, n_events);
    service.stop().await
}

#[tokio::test]
async fn a_replay_goes_on_when_its_request_times_out() -> Result<()> {
    let fx = Fixture::new("replay-timeout").await?;
    let ids: Vec<String> = (1..=6).map(|n| format!("slow-{n}")).collect();
    for id in &ids {
        fx.dead_letter(&Spec::new(id)).await?;
    }
    // 6 events at 10 a second take half a second; the request may take a fifth of that.
    let service = Service::start(&fx.ctx, |config| {
        config.rate_per_sec = 10;
        config.request_timeout = Duration::from_millis(200);
    })
    .await?;
    let (status, answer) = service.replay(&json!({})).await?;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "Request timed out");
    herald_test_support::eventually(Duration::from_secs(20), "every event replayed", || async {
        let mut n_queued = 0;
        for id in &ids {
            match fx.record(id).await {
                Ok(record) if record.status == Status::Queued => n_queued += 1,
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        if n_queued == ids.len() {
            Ok(())
        } else {
            Err(format!("{n_queued} QUEUED"))
        }
    })
    .await;
    assert_eq!(fx.lane_count(Lane::Default).await?, ids.len());
    service.stop().await
}

#[tokio::test]
async fn shutdown_stops_a_replay_part_way_and_says_so() -> Result<()> {
    let fx = Fixture::new("replay-shutdown").await?;
    let ids: Vec<String> = (1..=8).map(|n| format!("stop-{n}")).collect();
    for id in &ids {
        fx.dead_letter(&Spec::new(id)).await?;
    }
    let service = Service::start(&fx.ctx, |config| config.rate_per_sec = 4).await?;
    let everything = json!({});
    let request = service.replay(&everything);
    let stop_after_first = async {
        herald_test_support::eventually(
            Duration::from_secs(10),
            "a first replayed event",
            || async {
                match fx.record("stop-1").await {
                    Ok(record) if record.status == Status::Queued => Ok(()),
                    other => Err(format!("{:?}", other.map(|r| r.status))),
                }
            },
        )
        .await;
        service.shutdown().cancel();
    };
    let ((status, answer), ()) = tokio::join!(
        async { request.await.expect("an answer") },
        stop_after_first
    );
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "Shutting down");
    let mut n_queued = 0;
    for id in &ids {
        let record = fx.record(id).await?;
        match record.status {
            Status::Queued => n_queued += 1,
            Status::DeadLettered => assert_eq!(record.replay_count, 0),
            other => panic!("{id} is {other}: a stopped replay leaves nothing half-done"),
        }
    }
    assert!(n_queued >= 1 && n_queued < ids.len(), "{n_queued} replayed");
    let message = answer["details"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("after {n_queued} events")),
        "{message}"
    );
    assert_eq!(fx.lane_count(Lane::Default).await?, n_queued);
    service.stop().await
}
