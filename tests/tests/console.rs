//! The console in a real browser: Debian's headless Chromium driven through chromedriver (started here on a free
//! loopback port, stopped at the end) against every Herald service on this test's corner of the stack.
//!
//! It signs in (a wrong key first), watches the overview's numbers move as events flow, searches an event and
//! opens its attempts, dead-letters two events and replays one from the dead-letter view (dry run, confirm, watch)
//! and one from its detail view, until both are DELIVERED. Each view is saved as a small PNG under docs/console/,
//! which the README shows.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use herald_domain::{EventId, Status};
use herald_e2e::{Herald, Receiver};
use herald_platform::http::auth::ApiKey;
use herald_platform::http::AuthConfig;
use herald_platform::service::Service as _;
use herald_test_support::{eventually, unique_name};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// A key with the read and admin scopes, the console's operator.
const OPERATOR_KEY: &str = "console-operator-key-0001";
/// How long a view may take to show what the test waits for (the machine is shared and slow).
const VIEW_TIMEOUT: Duration = Duration::from_secs(30);

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    url: String,
    _child: Child,
}

impl Driver {
    async fn start() -> Result<Self> {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context(
                "starting chromedriver (Debian's chromium-driver package; .ci/run installs it)",
            )?;
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        eventually(
            Duration::from_secs(20),
            "chromedriver to answer",
            || async {
                reqwest::get(&status)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await;
        Ok(Self { url, _child: child })
    }

    async fn browser(&self) -> Result<Client> {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-background-networking",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1280,800",
                    "--force-device-scale-factor=1",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        Ok(ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await?)
    }
}

/// herald-query and herald-replay with authentication on, beside the rest of Herald.
struct Console {
    base: String,
    stop: CancellationToken,
}

impl Drop for Console {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Console {
    async fn start(herald: &Herald) -> Result<Self> {
        let auth = || {
            AuthConfig::with_keys(vec![ApiKey::parse(&format!(
                "operator:read+admin:{OPERATOR_KEY}"
            ))
            .expect("a valid key")])
        };
        let stop = CancellationToken::new();
        let mut replay =
            herald_replay::Config::for_test(herald.ctx.kafka.clone(), herald.ctx.mongo.clone());
        replay.http.auth = auth();
        let replay = herald_replay::App::build(replay).await?;
        let replay_url = format!("http://127.0.0.1:{}/", replay.port());
        tokio::spawn(replay.run_until_stopped(stop.clone()));
        let mut query = herald_query::Config::for_test(herald.ctx.mongo.clone());
        query.kafka = herald.ctx.kafka.clone();
        // The overview's minutes are folded from the lanes and the status topic by the stats consumer.
        query.stats_consumer = true;
        query.http.auth = auth();
        query.replay_url = replay_url.parse()?;
        let query = herald_query::App::build(query).await?;
        let base = format!("http://127.0.0.1:{}", query.port());
        tokio::spawn(query.run_until_stopped(stop.clone()));
        Ok(Self { base, stop })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Where the screenshots go: docs/console/ of this checkout.
fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/console")
}

async fn screenshot(browser: &Client, name: &str) -> Result<()> {
    let png = browser.screenshot().await?;
    std::fs::create_dir_all(shots())?;
    std::fs::write(shots().join(format!("{name}.png")), png)?;
    Ok(())
}

/// The text of the element `css`, once it exists.
async fn text(browser: &Client, css: &str) -> Result<String> {
    Ok(browser.find(Locator::Css(css)).await?.text().await?)
}

/// Waits until the element `css` exists and its text satisfies `ok`, reloading nothing: the page must get there by
/// itself (or already be there).
async fn wait_text(browser: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    eventually(VIEW_TIMEOUT, what, || async {
        match browser.find(Locator::Css(css)).await {
            Ok(element) => match element.text().await {
                Ok(text) if ok(&text) => Ok(text),
                Ok(text) => Err(format!("{css} reads {text:?}")),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(format!("no {css} yet: {e}")),
        }
    })
    .await
}

fn number(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

#[tokio::test]
async fn an_operator_watches_searches_and_replays_in_the_console() -> Result<()> {
    let herald = Herald::start("e2e-console", "").await?;
    let console = Console::start(&herald).await?;
    let driver = Driver::start().await?;
    let browser = driver.browser().await?;
    let outcome = session(&herald, &console, &browser).await;
    if outcome.is_err() {
        // What the browser showed when the test stopped, to tell a broken page from a slow one.
        let url = browser
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let source = browser.source().await.unwrap_or_default();
        eprintln!("the browser was at {url}:\n{source}");
    }
    let closed = browser.close().await;
    outcome?;
    closed?;
    Ok(())
}

async fn session(herald: &Herald, console: &Console, browser: &Client) -> Result<()> {
    let ok = Receiver::start(0, 200).await?;
    // Fails each event's first request with a permanent error, so it is dead-lettered, and accepts its replay.
    let once = Receiver::start(1, 400).await?;
    let user = unique_name("console-user");

    // A wrong key gets the sign-in view again, saying so.
    browser.goto(&console.url("/console")).await?;
    browser.wait().for_element(Locator::Id("sign-in")).await?;
    browser
        .find(Locator::Id("key"))
        .await?
        .send_keys("not-a-key-of-ours")
        .await?;
    browser
        .find(Locator::Css("#sign-in button[type=submit]"))
        .await?
        .click()
        .await?;
    let said = wait_text(
        browser,
        "#sign-in-error",
        "the sign-in view to say the key was refused",
        |t| t.contains("not accepted"),
    )
    .await;
    ensure!(said.contains("not accepted"), "{said}");
    screenshot(browser, "sign-in").await?;

    // The right key is kept for the session: the overview, then every other view without asking again.
    browser
        .find(Locator::Id("key"))
        .await?
        .send_keys(OPERATOR_KEY)
        .await?;
    browser
        .find(Locator::Css("#sign-in button[type=submit]"))
        .await?
        .click()
        .await?;
    let before = number(&wait_text(browser, "#n-accepted", "the overview", |_| true).await);

    // The overview's numbers move as events flow, by its own refresh.
    let mut delivered = Vec::new();
    for n in 0..3 {
        delivered.push(
            herald
                .post_event(json!({
                    "userId": user, "eventType": "order.shipped", "channel": "webhook", "priority": "critical",
                    "payload": {"url": ok.url, "body": {"order": n}},
                }))
                .await?,
        );
    }
    for id in &delivered {
        herald.wait_for(id, Status::Delivered, VIEW_TIMEOUT).await;
    }
    wait_text(
        browser,
        "#n-accepted",
        "the overview to count the new events",
        |t| number(t) >= before + 3,
    )
    .await;
    wait_text(
        browser,
        "#n-delivered",
        "the overview to count the deliveries",
        |t| number(t) >= 3,
    )
    .await;
    screenshot(browser, "overview").await?;

    // Search by user, open the event, see its attempt.
    browser.goto(&console.url("/console/events")).await?;
    browser
        .find(Locator::Id("f-user"))
        .await?
        .send_keys(&user)
        .await?;
    browser.find(Locator::Id("search")).await?.click().await?;
    let first = delivered[0].as_str();
    let link = format!("#events a[href='/console/events/{first}']");
    // The unfiltered page lists the event too (it is among the newest): wait for the search's page, which holds
    // the filter in its URL, before looking for it (the link found on the old page failed this under load).
    eventually(VIEW_TIMEOUT, "the search to list the event", || async {
        let url = browser.current_url().await.map_err(|e| e.to_string())?;
        if !url.as_str().contains(&format!("userId={user}")) {
            return Err(format!("the URL does not hold the filter yet: {url}"));
        }
        browser
            .find(Locator::Css(&link))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    ensure!(
        browser
            .find_all(Locator::Css("#events tbody a.id"))
            .await?
            .len()
            == 3
    );
    screenshot(browser, "events").await?;
    browser.find(Locator::Css(&link)).await?.click().await?;
    let attempts = wait_text(browser, "#attempts tbody", "the event's attempts", |t| {
        t.contains("delivered")
    })
    .await;
    ensure!(
        attempts.contains("webhook") && attempts.contains("200"),
        "{attempts}"
    );
    ensure!(text(browser, "#event-status").await? == "DELIVERED");
    ensure!(text(browser, "#curl").await?.contains("curl -X POST"));
    screenshot(browser, "event").await?;

    // Two dead letters: one replayed from the dead-letter view, one from its detail view.
    let mut dead: Vec<EventId> = Vec::new();
    for n in 0..2 {
        dead.push(
            herald
                .post_event(json!({
                    "userId": user, "eventType": "invoice.paid", "channel": "webhook",
                    "payload": {"url": once.url, "body": {"invoice": n}},
                }))
                .await?,
        );
    }
    for id in &dead {
        herald
            .wait_for(id, Status::DeadLettered, VIEW_TIMEOUT)
            .await;
    }
    browser
        .goto(&console.url("/console/dead-letters?channel=webhook"))
        .await?;
    wait_text(browser, "#dead-total", "the dead letters counted", |t| {
        number(t) == 2
    })
    .await;
    screenshot(browser, "dead-letters").await?;
    browser
        .find(Locator::Css(&format!(
            "#dead-letters input[value='{}']",
            dead[0].as_str()
        )))
        .await?
        .click()
        .await?;
    browser
        .find(Locator::Id("preview-selected"))
        .await?
        .click()
        .await?;
    let preview = wait_text(browser, "#preview-count", "the dry run", |_| true).await;
    ensure!(preview.starts_with("1 dead letter would"), "{preview}");
    ensure!(
        herald.store.find(&dead[0]).await?.map(|r| r.status) == Some(Status::DeadLettered),
        "a dry run changes nothing"
    );
    browser
        .find(Locator::Id("confirm-replay"))
        .await?
        .click()
        .await?;
    wait_text(
        browser,
        "#replayed tbody",
        "the replayed event to be delivered",
        |t| t.contains("DELIVERED"),
    )
    .await;
    wait_text(
        browser,
        "#replay-settled",
        "the replay view to settle",
        |_| true,
    )
    .await;
    screenshot(browser, "replay").await?;
    herald
        .wait_for(&dead[0], Status::Delivered, VIEW_TIMEOUT)
        .await;

    browser
        .goto(&console.url(&format!("/console/events/{}", dead[1].as_str())))
        .await?;
    browser
        .find(Locator::Id("replay-one"))
        .await?
        .click()
        .await?;
    wait_text(
        browser,
        "#event-status",
        "the event replayed from its view to be delivered",
        |t| t == "DELIVERED",
    )
    .await;
    herald
        .wait_for(&dead[1], Status::Delivered, VIEW_TIMEOUT)
        .await;

    browser.goto(&console.url("/console/alerts")).await?;
    browser.wait().for_element(Locator::Id("alerts")).await?;
    screenshot(browser, "alerts").await?;

    // Phone width: nothing wider than the screen but the tables, which scroll inside their box.
    browser.set_window_size(390, 844).await?;
    for path in ["/console", "/console/events", "/console/dead-letters"] {
        browser.goto(&console.url(path)).await?;
        browser.wait().for_element(Locator::Id("main")).await?;
        let fits = browser
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await?;
        ensure!(fits == json!(true), "{path} is wider than a phone");
    }
    screenshot(browser, "phone").await?;
    Ok(())
}
