//! A message whose handling panics (defect 4): it is dead-lettered with the panic's message, and the messages
//! queued behind it on its partition are still handled, none skipped. The panic comes from a debug-build-only
//! hook (`herald_dispatch::lane::test_hook`), since no real message makes the handler panic.

use std::time::Duration;

use anyhow::{ensure, Result};
use herald_dispatch::lane::test_hook::PANIC_MARKER;
use herald_domain::messages::dlq_headers;
use herald_domain::{Channel, Lane, Priority, Status};
use rdkafka::message::Message;
use serde_json::json;

use super::support::{event, kafka_header, read_until, webhook, Harness, Receiver};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_message_is_dead_lettered_and_the_messages_behind_it_are_handled() -> Result<()>
{
    let harness = Harness::new("dispatch-panic").await?;
    let receiver = Receiver::start().await?;
    // One user, so one partition: the panicking message first, then ten queued behind it, all published before
    // the dispatcher starts so its router queues them while the first one is in hand.
    let user = "panic-user";
    let poisoned = event(
        Some(Channel::Webhook),
        Priority::Default,
        user,
        json!({"url": receiver.url("/ok"), "body": {"note": PANIC_MARKER}}),
    );
    harness.seed(&poisoned).await?;
    let mut behind = Vec::new();
    for _ in 0..10 {
        let next = webhook(Priority::Default, user, &receiver.url("/ok"));
        harness.seed(&next).await?;
        behind.push(next);
    }
    let dispatcher = harness.start(Lane::Default, &[]).await?;
    for next in &behind {
        harness
            .wait_for_status(&next.event_id, Status::Delivered, WAIT)
            .await;
    }
    let poisoned_id = poisoned.event_id.to_string();
    let reason = read_until(
        &harness.ctx,
        &harness.ctx.topics.dead_letters(),
        WAIT,
        |message| {
            let payload = String::from_utf8_lossy(message.payload()?);
            payload
                .contains(&poisoned_id)
                .then(|| kafka_header(message, dlq_headers::REASON))
        },
    )
    .await?;
    ensure!(
        reason.as_deref().is_some_and(|r| r.contains("panicked")),
        "dead-letter reason {reason:?}"
    );
    ensure!(
        !receiver.hits_by_event().contains_key(&poisoned_id),
        "the panicking message was sent"
    );
    dispatcher.stop().await?;
    harness.finish().await
}
