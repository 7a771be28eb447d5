//! The CI smoke version of benchmark scenario 1: ten seconds of mixed traffic through Herald started in this
//! process, to prove the harness works end to end and that its ledger balances with nothing missing. It
//! measures nothing: the numbers come from `cargo xtask bench`.

use std::time::Duration;

use herald_e2e::{Herald, WEBHOOK_SECRET};
use herald_loadgen::{run, RunConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_seconds_of_mixed_traffic_all_accounted_for() -> anyhow::Result<()> {
    let herald = Herald::start("loadgen-smoke", "").await?;
    let mut config = RunConfig::new(
        &herald.ingest_url,
        &herald.ctx.mongo.uri,
        &herald.ctx.mongo.database,
    );
    config.connections = 4;
    config.rate = 20.0;
    config.duration = Some(Duration::from_secs(10));
    config.drain = Duration::from_secs(90);
    config.webhook_secret = Some(WEBHOOK_SECRET.into());
    config.quiet = true;

    let report = run(&config).await?;
    eprintln!("{report}");

    let ledger = &report.ledger;
    assert!(ledger.accepted > 100, "too little accepted: {ledger:?}");
    assert!(ledger.balanced, "the ledger does not balance: {ledger:?}");
    assert_eq!(ledger.missing, 0);
    assert_eq!(ledger.delivered_not_received, 0);
    // Everything settles well within the drain at 20 events/s, so every kind must have reached its end state.
    assert_eq!(ledger.n_in_flight(), 0, "still in flight: {ledger:?}");
    assert!(ledger.delivered > 0 && ledger.recorded > 0, "{ledger:?}");
    assert_eq!(report.sink.n_bad_signature, 0);
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert!(report.lanes["default"].end_to_end.n > 0);
    Ok(())
}
