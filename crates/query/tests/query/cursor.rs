//! A cursor walk visits every event that existed when it started exactly once, in order, while new events are
//! inserted all along: newer ones, and back-dated ones that land in the part already walked and in the part
//! still ahead, some in the very millisecond of the cursor.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Utc};
use herald_domain::EventId;
use herald_platform::store::EventRecord;
use herald_test_support::TestContext;
use mongodb::Database;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::support::{database, insert, seed, seeded, walk_with_cursor, Expect, Service};

const N_EVENTS: u32 = 1_500;

/// How many events the background task inserts at most per walk, so that an oldest-first walk, which meets every
/// new event at its end, ends.
const MAX_BACKGROUND: u32 = 300;

/// A new event: a copy of seed event `template` with the id `id` and the given creation time.
fn arriving(id: &str, template: u32, created_at: DateTime<Utc>) -> EventRecord {
    let mut record = seeded(template);
    record.event_id = EventId::parse(id).expect("a valid id");
    record.created_at = created_at;
    record
}

fn created_at_of(item: &Value) -> Result<DateTime<Utc>> {
    let raw = item["createdAt"].as_str().context("createdAt")?;
    Ok(DateTime::parse_from_rfc3339(raw)?.with_timezone(&Utc))
}

/// Inserts events until `stop`, alternating new ones (now) and back-dated ones spread over the seed's days.
async fn keep_inserting(
    db: Database,
    tag: String,
    stop: CancellationToken,
    inserted: Arc<AtomicU32>,
) -> Result<()> {
    for n in 0..MAX_BACKGROUND {
        if stop.is_cancelled() {
            break;
        }
        let created_at = if n % 2 == 0 {
            Utc::now()
        } else {
            seeded((n * 37) % N_EVENTS).created_at
        };
        insert(&db, &[arriving(&format!("{tag}-bg-{n}"), n, created_at)]).await?;
        inserted.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

async fn walk_while_inserting(
    service: &Service,
    db: &Database,
    records: &[EventRecord],
    tag: &str,
    query: &str,
    expect: Expect,
) -> Result<()> {
    let stop = CancellationToken::new();
    let inserted = Arc::new(AtomicU32::new(0));
    let background = tokio::spawn(keep_inserting(
        db.clone(),
        tag.to_owned(),
        stop.clone(),
        inserted.clone(),
    ));
    let mut n_pages = 0_u32;
    let mut previous: Option<(DateTime<Utc>, String)> = None;
    let walked = walk_with_cursor(service, query, 40, |page| {
        n_pages += 1;
        // Check the order across pages as they come, and insert around the cursor's own position.
        let items = page["data"].as_array().cloned().unwrap_or_default();
        let mut keys = Vec::new();
        for item in &items {
            let key = (
                created_at_of(item),
                item["eventId"].as_str().unwrap_or_default().to_owned(),
            );
            keys.push(key);
        }
        let db = db.clone();
        let expect = expect.clone();
        let last = previous.clone();
        let mut ordered = Ok(());
        let mut position = last;
        for (at, id) in keys {
            match at {
                Ok(at) => {
                    if let Some((prev_at, prev_id)) = &position {
                        let forward = if expect.oldest_first {
                            (prev_at, prev_id) < (&at, &id)
                        } else {
                            (prev_at, prev_id) > (&at, &id)
                        };
                        if !forward {
                            ordered = Err(anyhow::anyhow!(
                                "{id} at {at} came after {prev_id} at {prev_at}"
                            ));
                        }
                    }
                    position = Some((at, id));
                }
                Err(e) => ordered = Err(e),
            }
        }
        previous = position.clone();
        let n = n_pages;
        let tag = tag.to_owned();
        async move {
            ordered?;
            if let Some((at, _)) = position {
                // Same millisecond as the cursor, ids on both sides of it; and one far behind, one far ahead.
                insert(
                    &db,
                    &[
                        arriving(&format!("{tag}-{n}"), n, at),
                        arriving(&format!("0-{tag}-{n}"), n, at),
                        arriving(&format!("zz-{tag}-{n}"), n, at),
                        arriving(&format!("{tag}-now-{n}"), n, Utc::now()),
                        arriving(&format!("{tag}-old-{n}"), n, seeded(n * 13).created_at),
                    ],
                )
                .await?;
            }
            Ok(())
        }
    })
    .await?;
    stop.cancel();
    background.await??;

    let mut seen = HashSet::new();
    for id in &walked {
        ensure!(seen.insert(id.clone()), "{query}: {id} was served twice");
    }
    let expected = expect.ids(records);
    let missing: Vec<&String> = expected.iter().filter(|id| !seen.contains(*id)).collect();
    ensure!(
        missing.is_empty(),
        "{query}: {} seeded events skipped, first {:?}",
        missing.len(),
        missing.first()
    );
    let seeded_ids: HashSet<&str> = records.iter().map(|r| r.event_id.as_str()).collect();
    ensure!(
        walked
            .iter()
            .filter(|id| seeded_ids.contains(id.as_str()))
            .count()
            == expected.len(),
        "{query}: seeded events outside the filter were served"
    );
    ensure!(
        inserted.load(Ordering::Relaxed) > 0 && n_pages > 5,
        "{query}: nothing was inserted during the walk ({n_pages} pages)"
    );
    Ok(())
}

#[tokio::test]
async fn a_cursor_walk_neither_skips_nor_repeats_while_events_arrive() -> Result<()> {
    let ctx = TestContext::new("query-cursor").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let db = database(&ctx).await?;
    let records = seed(&db, N_EVENTS).await?;
    walk_while_inserting(&service, &db, &records, "desc", "", Expect::default()).await?;
    walk_while_inserting(
        &service,
        &db,
        &records,
        "asc",
        "sort=createdAt&channel=email",
        Expect {
            channel: Some(herald_domain::Channel::Email),
            oldest_first: true,
            ..Expect::default()
        },
    )
    .await?;
    service.stop().await
}
