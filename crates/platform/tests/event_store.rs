//! The event store's conditional updates against the real MongoDB-wire server: duplicates found, idempotency
//! keys honoured, claims that never move an event backwards, and leases that let a second dispatcher take over
//! only when the first has gone quiet.

use std::time::Duration;

use anyhow::{ensure, Result};
use chrono::Utc;
use herald_domain::{
    Attempt, AttemptOutcome, Channel, ErrorClass, Event, EventId, Priority, Status,
};
use herald_platform::mongo;
use herald_platform::store::{Accepting, Claim, EventRecord, EventStore, Inserted};
use herald_test_support::TestContext;

fn event(id: &str) -> Event {
    Event {
        event_id: EventId::parse(id).expect("valid id"),
        user_id: Some("u-1".into()),
        event_type: Some("order.shipped".into()),
        channel: Some(Channel::Webhook),
        priority: Priority::Default,
        payload: serde_json::json!({"url": "http://127.0.0.1:9/hook", "body": {"n": 1}}),
        metadata: None,
        created_at: Utc::now(),
    }
}

fn attempt(number: u32, outcome: AttemptOutcome) -> Attempt {
    let now = Utc::now();
    Attempt {
        number,
        provider: "webhook".into(),
        started_at: now,
        ended_at: now,
        outcome,
        error_class: (outcome == AttemptOutcome::Failed).then_some(ErrorClass::Retryable),
        error: (outcome == AttemptOutcome::Failed).then(|| "HTTP 500".to_string()),
        http_status: Some(if outcome == AttemptOutcome::Failed {
            500
        } else {
            200
        }),
        retry_after_secs: None,
    }
}

async fn store(label: &str) -> Result<EventStore> {
    let ctx = TestContext::new(label).await?;
    let db = mongo::connect(&ctx.mongo, label).await?;
    EventStore::ensure_indexes(&db).await?;
    Ok(EventStore::new(&db))
}

#[tokio::test]
async fn duplicates_and_idempotency_keys_return_the_first_event() -> Result<()> {
    let store = store("store-dup").await?;
    let first = EventRecord::accepted(&event("dup-1"));
    ensure!(store.insert_accepted(&first, None).await? == Inserted::New);
    match store.insert_accepted(&first, None).await? {
        Inserted::Existing(found) => ensure!(found.event_id.as_str() == "dup-1"),
        other => anyhow::bail!("the same event id was inserted twice: {other:?}"),
    }
    // A different event id under a known idempotency key answers with the first event.
    let keyed = EventRecord::accepted(&event("key-1"));
    ensure!(store.insert_accepted(&keyed, Some("k-1")).await? == Inserted::New);
    let retry_of_request = EventRecord::accepted(&event("key-2"));
    match store
        .insert_accepted(&retry_of_request, Some("k-1"))
        .await?
    {
        Inserted::Existing(found) => {
            ensure!(found.event_id.as_str() == "key-1", "got {}", found.event_id)
        }
        other => anyhow::bail!("an idempotency key created two events: {other:?}"),
    }
    ensure!(store.find(&EventId::parse("key-2")?).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn a_batch_of_accepted_events_answers_each_as_its_own_insert_would() -> Result<()> {
    let store = store("store-batch").await?;
    store
        .insert_accepted(&EventRecord::accepted(&event("batch-seen")), None)
        .await?;
    store
        .insert_accepted(&EventRecord::accepted(&event("batch-keyed")), Some("bk-1"))
        .await?;
    let accepting = |id: &str, key: Option<&str>| Accepting {
        record: EventRecord::accepted(&event(id)),
        key: key.map(str::to_owned),
    };
    let batch = vec![
        accepting("batch-new-1", None),
        accepting("batch-seen", None),
        accepting("batch-new-2", Some("bk-2")),
        // A repeat of the keyed request above, under a new event id: answered with the first event.
        accepting("batch-other", Some("bk-1")),
        // The same new event twice in one batch: one of the two is the first.
        accepting("batch-twice", None),
        accepting("batch-twice", None),
    ];
    let answers: Vec<Inserted> = store
        .insert_accepted_many(&batch)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    ensure!(answers[0] == Inserted::New, "{:?}", answers[0]);
    ensure!(
        matches!(&answers[1], Inserted::Existing(found) if found.event_id.as_str() == "batch-seen"),
        "{:?}",
        answers[1]
    );
    ensure!(answers[2] == Inserted::New, "{:?}", answers[2]);
    ensure!(
        matches!(&answers[3], Inserted::Existing(found) if found.event_id.as_str() == "batch-keyed"),
        "{:?}",
        answers[3]
    );
    let twice = [&answers[4], &answers[5]];
    ensure!(
        twice.iter().filter(|a| ***a == Inserted::New).count() == 1
            && twice
                .iter()
                .filter(|a| matches!(a, Inserted::Existing(_)))
                .count()
                == 1,
        "{twice:?}"
    );
    ensure!(store.find(&EventId::parse("batch-other")?).await?.is_none());
    for id in ["batch-new-1", "batch-new-2", "batch-twice"] {
        let found = store.find(&EventId::parse(id)?).await?;
        ensure!(
            found.is_some_and(|r| r.status == Status::Queued),
            "{id} not QUEUED"
        );
    }
    // Each new event has its outbox entry, for the sweeper should the publish fail.
    let waiting = store
        .unpublished_before(Utc::now() + chrono::Duration::seconds(1), 100)
        .await?;
    let named: Vec<&str> = waiting.events.iter().map(|r| r.event_id.as_str()).collect();
    for id in ["batch-new-1", "batch-new-2", "batch-twice"] {
        ensure!(named.contains(&id), "{id} has no outbox entry: {named:?}");
    }
    Ok(())
}

#[tokio::test]
async fn claims_follow_the_attempt_sequence_and_never_go_backwards() -> Result<()> {
    let store = store("store-claim").await?;
    let record = EventRecord::accepted(&event("c-1"));
    let id = record.event_id.clone();
    store.insert_accepted(&record, None).await?;
    let lease = Duration::from_secs(30);

    // Attempt 2 before attempt 1 ran is out of sequence.
    ensure!(matches!(
        store.claim(&id, 2, 0, lease).await?,
        Claim::Skip(_)
    ));
    // Attempt 1: claimed once; a concurrent claim sees the live lease.
    ensure!(matches!(
        store.claim(&id, 1, 0, lease).await?,
        Claim::Send(_)
    ));
    ensure!(matches!(
        store.claim(&id, 1, 0, lease).await?,
        Claim::Leased(_)
    ));
    // It fails: recorded once (a duplicate record matches nothing), and a redelivery asks for the follow-up.
    ensure!(
        store
            .record_failed(&id, &attempt(1, AttemptOutcome::Failed), 0)
            .await?
    );
    ensure!(
        !store
            .record_failed(&id, &attempt(1, AttemptOutcome::Failed), 0)
            .await?
    );
    ensure!(matches!(
        store.claim(&id, 1, 0, lease).await?,
        Claim::FollowUp(_)
    ));
    // Attempt 2 (from the retry lane) is claimed from the failed state and delivered.
    ensure!(matches!(
        store.claim(&id, 2, 0, lease).await?,
        Claim::Send(_)
    ));
    ensure!(
        store
            .record_delivered(&id, &attempt(2, AttemptOutcome::Delivered), 0)
            .await?
    );
    // Late messages for either attempt, or from another replay generation, change nothing.
    for (n, replay) in [(1, 0), (2, 0), (3, 0), (1, 1)] {
        ensure!(
            matches!(store.claim(&id, n, replay, lease).await?, Claim::Skip(_)),
            "attempt {n} replay {replay} should be skipped"
        );
    }
    let stored = store.find(&id).await?.expect("stored");
    ensure!(
        stored.status == Status::Delivered,
        "status {:?}",
        stored.status
    );
    ensure!(stored.attempt_count == 2);
    ensure!(stored.attempts.len() == 2, "attempts {:?}", stored.attempts);
    let kinds: Vec<&str> = stored.timeline.iter().map(|e| e.kind.as_str()).collect();
    ensure!(
        kinds == ["accepted", "attempt", "attempt", "delivered"],
        "timeline {kinds:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_expired_lease_can_be_taken_over_once() -> Result<()> {
    let store = store("store-lease").await?;
    let record = EventRecord::accepted(&event("l-1"));
    let id = record.event_id.clone();
    store.insert_accepted(&record, None).await?;
    // The first dispatcher claims with a lease that runs out at once, as if it died mid-send.
    ensure!(matches!(
        store.claim(&id, 1, 0, Duration::ZERO).await?,
        Claim::Send(_)
    ));
    // Two successors race for the expired lease: exactly one wins, the other sees its live lease.
    let (a, b) = tokio::join!(
        store.claim(&id, 1, 0, Duration::from_secs(30)),
        store.claim(&id, 1, 0, Duration::from_secs(30))
    );
    let outcomes = [a?, b?];
    let sends = outcomes
        .iter()
        .filter(|c| matches!(c, Claim::Send(_)))
        .count();
    let leased = outcomes
        .iter()
        .filter(|c| matches!(c, Claim::Leased(_)))
        .count();
    ensure!(sends == 1 && leased == 1, "outcomes {outcomes:?}");
    Ok(())
}

#[tokio::test]
async fn record_only_events_are_recorded_once_and_their_outbox_entries_found_until_published(
) -> Result<()> {
    let store = store("store-record").await?;
    let mut activity = event("r-1");
    activity.channel = None;
    let record = EventRecord::accepted(&activity);
    store.insert_accepted(&record, None).await?;
    let soon = || Utc::now() + chrono::Duration::seconds(1);
    let unpublished = store.unpublished_before(soon(), 10).await?.events;
    ensure!(unpublished.iter().any(|r| r.event_id == record.event_id));
    ensure!(store.find(&record.event_id).await?.map(|r| r.status) == Some(Status::Queued));
    ensure!(store.mark_recorded(&record.event_id, 0).await?);
    ensure!(!store.mark_recorded(&record.event_id, 0).await?);
    // Recorded before its publisher cleared the entry: the sweeper must not publish it again.
    let unpublished = store.unpublished_before(soon(), 10).await?.events;
    ensure!(unpublished.is_empty(), "still to publish: {unpublished:?}");
    store
        .mark_published(&[(record.event_id.clone(), 0)])
        .await?;
    let found = store.find(&record.event_id).await?.expect("stored");
    ensure!(
        found.status == Status::Recorded,
        "moved to {}",
        found.status
    );
    Ok(())
}

#[tokio::test]
async fn a_claim_whose_claimer_died_before_marking_the_event_is_taken_over_after_its_lease(
) -> Result<()> {
    let ctx = TestContext::new("store-orphan").await?;
    let db = mongo::connect(&ctx.mongo, "store-orphan").await?;
    EventStore::ensure_indexes(&db).await?;
    let store = EventStore::new(&db);
    let record = EventRecord::accepted(&event("o-1"));
    store.insert_accepted(&record, None).await?;
    // A dispatcher won the claim of attempt 1 and was killed before it could mark the event DISPATCHING.
    let claims = db.collection::<mongodb::bson::Document>(herald_platform::store::CLAIMS);
    let long_ago = mongodb::bson::DateTime::from_chrono(Utc::now() - chrono::Duration::minutes(5));
    claims
        .insert_one(mongodb::bson::doc! { "_id": "o-1/0/1/0", "at": long_ago })
        .await?;
    let lease = Duration::from_secs(30);
    ensure!(matches!(
        store.claim(&record.event_id, 1, 0, lease).await?,
        Claim::Send(_)
    ));
    // The new claim holds: a second claimer now waits.
    ensure!(matches!(
        store.claim(&record.event_id, 1, 0, lease).await?,
        Claim::Leased(_)
    ));
    Ok(())
}

#[tokio::test]
async fn pruned_claims_of_finished_steps_never_let_a_stale_message_send_again() -> Result<()> {
    let store = store("store-prune").await?;
    // Attempt 1 fails, the event is dead-lettered and replayed once: one dispatch claim, one replay claim.
    let record = EventRecord::accepted(&event("p-1"));
    let id = record.event_id.clone();
    store.insert_accepted(&record, None).await?;
    ensure!(matches!(
        store.claim(&id, 1, 0, Duration::from_secs(30)).await?,
        Claim::Send(_)
    ));
    ensure!(
        store
            .record_failed(&id, &attempt(1, AttemptOutcome::Failed), 0)
            .await?
    );
    store.dead_letter(&id, 1, 0, "out of attempts").await?;
    ensure!(store
        .replay_dead_letter(&id, 0, "test".into())
        .await?
        .is_some());
    // A claim taken just now is kept by a day's retention.
    let fresh = EventRecord::accepted(&event("p-2"));
    store.insert_accepted(&fresh, None).await?;
    ensure!(matches!(
        store
            .claim(&fresh.event_id, 1, 0, Duration::from_secs(30))
            .await?,
        Claim::Send(_)
    ));
    let day = herald_platform::store::retention::CLAIM_RETENTION;
    ensure!(store.prune_claims(day).await? == 0);
    ensure!(store.prune_replay_claims(day).await? == 0);

    // With no retention at all every claim goes (the next sweep may also find none).
    ensure!(store.prune_claims(Duration::ZERO).await? == 2);
    ensure!(store.prune_replay_claims(Duration::ZERO).await? == 1);
    // Old messages come back after the prune: attempt 1 of replay 0, and the replay of replay 0. Neither sends or
    // replays again: the event's own state turns them away.
    let stale = store.claim(&id, 1, 0, Duration::from_secs(30)).await?;
    ensure!(matches!(stale, Claim::Skip(_)), "{stale:?}");
    ensure!(store
        .replay_dead_letter(&id, 0, "again".into())
        .await?
        .is_none());
    Ok(())
}

/// The record `Claim::Send` holds, or a failure naming what the claim was instead.
fn sent(claim: Claim) -> Result<EventRecord> {
    match claim {
        Claim::Send(record) => Ok(*record),
        other => anyhow::bail!("expected a claim to send, got {other:?}"),
    }
}

/// A queued event claimed for attempt 1 by a dispatcher whose lease has already run out (it stalled), then taken
/// over by a second one: the two claims, generations 0 and 1.
async fn taken_over(store: &EventStore, id: &str) -> Result<(EventRecord, EventRecord)> {
    let record = EventRecord::accepted(&event(id));
    store.insert_accepted(&record, None).await?;
    let first = sent(store.claim(&record.event_id, 1, 0, Duration::ZERO).await?)?;
    let second = sent(
        store
            .claim(&record.event_id, 1, 0, Duration::from_secs(30))
            .await?,
    )?;
    ensure!(first.claim_generation == 0 && second.claim_generation == 1);
    Ok((first, second))
}

#[tokio::test]
async fn an_older_claims_failure_never_lands_over_a_takeover() -> Result<()> {
    let store = store("store-generation").await?;
    let (first, second) = taken_over(&store, "gen-1").await?;
    let id = first.event_id.clone();
    // The stalled dispatcher's failed attempt comes back first: it matches nothing.
    ensure!(
        !store
            .record_claimed(&first, &attempt(1, AttemptOutcome::Failed))
            .await?,
        "a failure of generation 0 was recorded over generation 1's claim"
    );
    let record = store.find(&id).await?.expect("stored");
    ensure!(record.status == Status::Dispatching && record.attempts.is_empty());
    // The second dispatcher's delivery lands.
    ensure!(
        store
            .record_claimed(&second, &attempt(1, AttemptOutcome::Delivered))
            .await?
    );
    let record = store.find(&id).await?.expect("stored");
    ensure!(record.status == Status::Delivered && record.attempts.len() == 1);
    Ok(())
}

#[tokio::test]
async fn a_delivery_whose_claim_was_written_over_still_ends_the_event_delivered() -> Result<()> {
    // FerretDB 1.24 reads, then writes a whole document: a write that read the event before a dispatcher's claim
    // can put QUEUED back over DISPATCHING (ingest's PENDING to QUEUED update did, before the outbox collection).
    // The send still happened.
    let ctx = TestContext::new("store-lost-claim").await?;
    let db = mongo::connect(&ctx.mongo, "store-lost-claim").await?;
    EventStore::ensure_indexes(&db).await?;
    let store = EventStore::new(&db);
    let record = EventRecord::accepted(&event("lost-claim-1"));
    store.insert_accepted(&record, None).await?;
    let claim = sent(
        store
            .claim(&record.event_id, 1, 0, Duration::from_secs(30))
            .await?,
    )?;
    // What the publisher's stale write leaves: the QUEUED document it read, over the claim.
    db.collection::<mongodb::bson::Document>(mongo::EVENTS)
        .update_one(
            mongodb::bson::doc! { "eventId": record.event_id.as_str() },
            mongodb::bson::doc! { "$set": { "status": "QUEUED", "leaseUntil": mongodb::bson::Bson::Null } },
        )
        .await?;
    ensure!(
        store
            .record_claimed(&claim, &attempt(1, AttemptOutcome::Delivered))
            .await?,
        "a delivery whose claim was written over was dropped"
    );
    let stored = store.find(&record.event_id).await?.expect("stored");
    ensure!(
        stored.status == Status::Delivered && stored.attempt_count == 1,
        "{:?} at {}",
        stored.status,
        stored.attempt_count
    );
    Ok(())
}

#[tokio::test]
async fn a_late_delivery_of_an_older_claim_ends_the_event_delivered() -> Result<()> {
    let store = store("store-late-delivery").await?;
    // The newer claim failed and its retry was scheduled, then the stalled dispatcher's delivery comes in.
    let (first, second) = taken_over(&store, "late-1").await?;
    let id = first.event_id.clone();
    ensure!(
        store
            .record_claimed(&second, &attempt(1, AttemptOutcome::Failed))
            .await?
    );
    store
        .schedule_retry(
            &id,
            1,
            0,
            Utc::now() + chrono::Duration::seconds(60),
            "test".into(),
        )
        .await?;
    ensure!(
        store
            .record_claimed(&first, &attempt(1, AttemptOutcome::Delivered))
            .await?,
        "a delivery that happened was dropped"
    );
    let record = store.find(&id).await?.expect("stored");
    ensure!(
        record.status == Status::Delivered && record.attempt_count == 1,
        "{:?} at {}",
        record.status,
        record.attempt_count
    );
    // The scheduled retry then finds nothing to send.
    ensure!(matches!(
        store.claim(&id, 2, 0, Duration::from_secs(30)).await?,
        Claim::Skip(_)
    ));

    // The same before the newer claim has recorded anything: the delivery wins, the newer claim's failure is
    // then turned away.
    let (first, second) = taken_over(&store, "late-2").await?;
    ensure!(
        store
            .record_claimed(&first, &attempt(1, AttemptOutcome::Delivered))
            .await?
    );
    ensure!(
        !store
            .record_claimed(&second, &attempt(1, AttemptOutcome::Failed))
            .await?
    );
    let record = store.find(&first.event_id).await?.expect("stored");
    ensure!(record.status == Status::Delivered && record.attempts.len() == 1);
    Ok(())
}

#[tokio::test]
async fn a_message_of_an_older_replay_leaves_a_replayed_event_to_the_outbox() -> Result<()> {
    let store = store("store-replay-gen").await?;
    let record = EventRecord::accepted(&event("replay-gen-1"));
    let id = record.event_id.clone();
    store.insert_accepted(&record, None).await?;
    sent(store.claim(&id, 1, 0, Duration::from_secs(30)).await?)?;
    ensure!(
        store
            .record_failed(&id, &attempt(1, AttemptOutcome::Failed), 0)
            .await?
    );
    store.dead_letter(&id, 1, 0, "gave up").await?;
    // Replayed, and the replay's own publish failed: QUEUED in generation 1 with nothing on its lane.
    store
        .replay_dead_letter(&id, 0, "test".into())
        .await?
        .expect("replayed");
    // A lane message of generation 0 comes again: it must not vouch for generation 1's publish.
    ensure!(matches!(
        store.claim(&id, 1, 0, Duration::from_secs(30)).await?,
        Claim::Skip(_)
    ));
    let found = store.find(&id).await?.expect("stored");
    ensure!(found.status == Status::Queued, "moved to {}", found.status);
    // So the outbox sweeper still finds it, and the current generation's message claims it.
    let outbox = store
        .unpublished_before(Utc::now() + chrono::Duration::seconds(1), 100)
        .await?
        .events;
    ensure!(outbox
        .iter()
        .any(|r| r.event_id == id && r.replay_count == 1));
    sent(store.claim(&id, 1, 1, Duration::from_secs(30)).await?)?;
    Ok(())
}
