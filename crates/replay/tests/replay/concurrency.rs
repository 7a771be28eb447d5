//! Two identical replays at once, through two service instances with a pacer each: every dead letter is claimed
//! by exactly one of them and published exactly once.

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;
use herald_domain::{Lane, Status};
use serde_json::json;

use super::support::{ids, Fixture, Service, Spec};

#[tokio::test]
async fn two_concurrent_identical_replays_publish_each_event_once() -> Result<()> {
    let fx = Fixture::new("replay-race").await?;
    let all: Vec<String> = (1..=20).map(|n| format!("race-{n:02}")).collect();
    for id in &all {
        fx.dead_letter(&Spec::new(id)).await?;
    }
    let one = Service::start(&fx.ctx, |_| {}).await?;
    let two = Service::start(&fx.ctx, |_| {}).await?;

    let body = json!({});
    let (first, second) = tokio::join!(one.replay(&body), two.replay(&body));
    let ((status_one, answer_one), (status_two, answer_two)) = (first?, second?);
    assert_eq!(
        (status_one, status_two),
        (200, 200),
        "{answer_one} {answer_two}"
    );
    let (won_one, won_two) = (ids(&answer_one["eventIds"]), ids(&answer_two["eventIds"]));
    assert_eq!(answer_one["replayed"], won_one.len());
    let overlap: HashSet<_> = won_one.iter().filter(|id| won_two.contains(id)).collect();
    assert!(overlap.is_empty(), "both replays claimed {overlap:?}");
    let mut won: Vec<String> = won_one.iter().chain(&won_two).cloned().collect();
    won.sort();
    assert_eq!(
        won, all,
        "between them, the two replays took every dead letter"
    );

    let mut published: BTreeMap<String, usize> = BTreeMap::new();
    for received in fx.lane_messages(Lane::Default).await? {
        *published
            .entry(received.message.event.event_id.to_string())
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = all.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(published, expected, "messages per event on the lane");
    for id in &all {
        let record = fx.record(id).await?;
        assert_eq!(
            (record.status, record.replay_count),
            (Status::Queued, 1),
            "{id}"
        );
    }
    one.stop().await?;
    two.stop().await
}

#[tokio::test]
async fn a_claim_left_by_a_replay_that_died_is_taken_over_once_stale() -> Result<()> {
    use chrono::Utc;
    use herald_platform::store::REPLAY_CLAIMS;
    use mongodb::bson::{doc, DateTime, Document};

    let fx = Fixture::new("replay-orphan").await?;
    fx.dead_letter(&Spec::new("orphan")).await?;
    fx.dead_letter(&Spec::new("busy")).await?;
    // A replay claimed both and died before bringing them back: two minutes ago for one, just now for the other.
    let claims = fx.db.collection::<Document>(REPLAY_CLAIMS);
    let two_minutes_ago = DateTime::from_chrono(Utc::now() - chrono::Duration::minutes(2));
    claims
        .insert_one(doc! { "_id": "orphan/0/0", "claimedAt": two_minutes_ago })
        .await?;
    claims
        .insert_one(doc! { "_id": "busy/0/0", "claimedAt": DateTime::now() })
        .await?;
    let service = Service::start(&fx.ctx, |_| {}).await?;

    let (status, answer) = service.replay(&json!({})).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"replayed": 1, "eventIds": ["orphan"], "dryRun": false}),
        "a fresh claim holds, a stale one is taken over"
    );
    assert_eq!(fx.record("busy").await?.status, Status::DeadLettered);
    assert_eq!(fx.record("orphan").await?.replay_count, 1);
    let taken_over = claims.find_one(doc! { "_id": "orphan/0/1" }).await?;
    assert!(taken_over.is_some(), "the next generation holds the claim");
    one_message_each(&fx, &["orphan"]).await?;
    service.stop().await
}

async fn one_message_each(fx: &Fixture, expected: &[&str]) -> Result<()> {
    let published: Vec<String> = fx
        .lane_messages(Lane::Default)
        .await?
        .into_iter()
        .map(|r| r.message.event.event_id.to_string())
        .collect();
    assert_eq!(published, expected);
    Ok(())
}
