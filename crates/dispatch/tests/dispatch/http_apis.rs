//! The HTTP email and SMS providers (SendGrid, Mailgun, MessageBird) against their local fakes, which check the
//! credentials and the body: an accepted message, and every kind of refusal classified (a refused recipient is
//! permanent, 429 and 503 are retried with their `Retry-After`, no answer is retried).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_dispatch::config::{MailgunConfig, MessageBirdConfig, Secret, SendGridConfig};
use herald_dispatch::provider::{MailgunProvider, MessageBirdProvider, SendGridProvider};
use herald_dispatch::{Provider, SendError, Try};
use herald_domain::{Channel, ErrorClass, Event, Priority};
use herald_test_support::message_fakes::{self, MessageFakes};
use serde_json::json;
use url::Url;

use super::support::event;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a client")
}

fn from() -> lettre::message::Mailbox {
    "Herald <herald@example.com>".parse().expect("a mailbox")
}

fn email(to: &str) -> Event {
    event(
        Some(Channel::Email),
        Priority::Default,
        "ada",
        json!({"to": to, "subject": "Shipped", "text": "On its way", "html": "<p>On its way</p>"}),
    )
}

async fn send(
    provider: &dyn Provider,
    event: &Event,
) -> Result<herald_dispatch::Delivered, SendError> {
    let message = event
        .message()
        .expect("a valid payload")
        .expect("a deliverable event");
    let first = Try {
        number: 1,
        replay_count: 0,
    };
    provider.send(event, &message, first).await
}

/// Checks the refusals every API shares: `bounce` permanent, `busy` 429 retryable after 1 s, `down` 503 retryable.
async fn check_refusals(provider: &dyn Provider, event_for: impl Fn(&str) -> Event) -> Result<()> {
    for (word, class, status, retry_after) in [
        ("bounce", ErrorClass::Permanent, None, None),
        ("busy", ErrorClass::Retryable, Some(429), Some(1)),
        ("down", ErrorClass::Retryable, Some(503), None),
    ] {
        let error = send(provider, &event_for(word))
            .await
            .err()
            .with_context(|| format!("{word} must fail"))?;
        ensure!(error.class == class, "{word}: {error:?}");
        ensure!(
            status.is_none_or(|s| error.http_status == Some(s)),
            "{word}: {error:?}"
        );
        ensure!(error.retry_after_secs == retry_after, "{word}: {error:?}");
        ensure!(
            error.message.starts_with(provider.name()),
            "the error names the provider: {error:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn sendgrid_sends_with_its_key_and_classifies_its_answers() -> Result<()> {
    let fakes = MessageFakes::start().await?;
    let config = SendGridConfig {
        api_key: Secret::new(message_fakes::SENDGRID_API_KEY),
        base_url: Url::parse(&fakes.base_url)?,
    };
    let sendgrid = SendGridProvider::build(&config, from(), client())?;
    let delivered = send(&sendgrid, &email("ada@example.com")).await?;
    ensure!(delivered.http_status == Some(202), "{delivered:?}");
    ensure!(
        delivered.detail.as_deref() == Some("message sg-fake-1"),
        "{delivered:?}"
    );
    check_refusals(&sendgrid, |word| email(&format!("{word}@example.com"))).await?;
    let bounced = send(&sendgrid, &email("bounce@example.com")).await.err();
    ensure!(
        bounced.as_ref().is_some_and(|e| e.http_status == Some(400)),
        "{bounced:?}"
    );
    ensure!(fakes.refused().is_empty(), "{:?}", fakes.refused());

    let wrong_key = SendGridConfig {
        api_key: Secret::new("SG.wrong"),
        ..config
    };
    let refused = send(
        &SendGridProvider::build(&wrong_key, from(), client())?,
        &email("ada@example.com"),
    )
    .await
    .err()
    .context("a wrong key is refused")?;
    ensure!(
        refused.class == ErrorClass::Permanent && refused.http_status == Some(401),
        "{refused:?}"
    );
    // No answer at all (nothing listens on the discard port) is worth another try.
    let gone = SendGridConfig {
        api_key: Secret::new("SG.x"),
        base_url: Url::parse("http://127.0.0.1:9")?,
    };
    let unreachable = send(
        &SendGridProvider::build(&gone, from(), client())?,
        &email("ada@example.com"),
    )
    .await
    .err()
    .context("nothing listens")?;
    ensure!(
        unreachable.class == ErrorClass::Retryable,
        "{unreachable:?}"
    );
    Ok(())
}

#[tokio::test]
async fn mailgun_posts_its_form_with_basic_auth_and_classifies_its_answers() -> Result<()> {
    let fakes = MessageFakes::start().await?;
    let config = MailgunConfig {
        api_key: Secret::new(message_fakes::MAILGUN_API_KEY),
        domain: message_fakes::MAILGUN_DOMAIN.into(),
        base_url: Url::parse(&fakes.base_url)?,
    };
    let mailgun = MailgunProvider::build(&config, from(), client())?;
    let event = email("ada@example.com");
    let delivered = send(&mailgun, &event).await?;
    ensure!(delivered.http_status == Some(200), "{delivered:?}");
    let sent = fakes.mailgun_messages();
    ensure!(
        sent.len() == 1
            && sent[0]["from"] == "Herald <herald@example.com>"
            && sent[0]["to"] == "ada@example.com"
            && sent[0]["text"] == "On its way"
            && sent[0]["html"] == "<p>On its way</p>"
            && sent[0]["h:Message-Id"] == format!("<{}@herald>", event.event_id),
        "{sent:?}"
    );
    check_refusals(&mailgun, |word| email(&format!("{word}@example.com"))).await?;
    ensure!(fakes.refused().is_empty(), "{:?}", fakes.refused());
    let wrong_domain = MailgunConfig {
        domain: "other.example.com".into(),
        ..config
    };
    let refused = send(
        &MailgunProvider::build(&wrong_domain, from(), client())?,
        &email("ada@example.com"),
    )
    .await
    .err()
    .context("an unknown domain is refused")?;
    ensure!(
        refused.class == ErrorClass::Permanent && refused.http_status == Some(404),
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test]
async fn messagebird_sends_with_its_access_key_and_classifies_its_answers() -> Result<()> {
    let fakes = MessageFakes::start().await?;
    let config = MessageBirdConfig {
        access_key: Secret::new(message_fakes::MESSAGEBIRD_ACCESS_KEY),
        originator: message_fakes::MESSAGEBIRD_ORIGINATOR.into(),
        base_url: Url::parse(&fakes.base_url)?,
    };
    let messagebird = MessageBirdProvider::build(&config, client())?;
    let sms = |text: &str| {
        event(
            Some(Channel::Sms),
            Priority::Default,
            "ada",
            json!({"phoneNumber": "+31612345678", "message": text}),
        )
    };
    let event = sms("Your code is 123456");
    let delivered = send(&messagebird, &event).await?;
    ensure!(delivered.http_status == Some(201), "{delivered:?}");
    let sent = fakes.messagebird_messages();
    ensure!(
        sent == [
            json!({"originator": "Herald", "recipients": ["31612345678"],
            "body": "Your code is 123456", "reference": event.event_id.as_str()})
        ],
        "{sent:?}"
    );
    check_refusals(&messagebird, |word| sms(&format!("{word} test"))).await?;
    let bounced = send(&messagebird, &sms("bounce")).await.err();
    ensure!(
        bounced.as_ref().is_some_and(|e| e.http_status == Some(422)),
        "{bounced:?}"
    );
    ensure!(fakes.refused().is_empty(), "{:?}", fakes.refused());
    let wrong_key = MessageBirdConfig {
        access_key: Secret::new("live_wrong"),
        ..config
    };
    let refused = send(
        &MessageBirdProvider::build(&wrong_key, client())?,
        &sms("hello"),
    )
    .await
    .err()
    .context("a wrong key is refused")?;
    ensure!(
        refused.class == ErrorClass::Permanent && refused.http_status == Some(401),
        "{refused:?}"
    );
    Ok(())
}
