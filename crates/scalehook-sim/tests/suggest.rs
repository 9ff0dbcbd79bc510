//! Issue 24: `simulate --suggest` finds, per pool, the cheapest standby and max meeting a
//! p95 queue-wait target, deterministically.

mod common;

use scalehook_sim::suggest::suggest;
use scalehook_sim::{simulate, Policy, SimOptions, Workload};
use std::path::PathBuf;

fn small() -> Workload {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/traces/sim-small.jsonl");
    Workload::from_file(&path).expect("trace reads")
}

/// On the hand-checked trace (standby 1: waits 0, 30, 50, 0, p95 50 s), a 0 s target needs
/// three standby runners: the suggestion meets it, one standby fewer does not, and the
/// search gives the same answer twice.
#[tokio::test]
async fn suggests_the_cheapest_standby_meeting_the_target() {
    let config = common::config();
    let options = SimOptions::default();
    let found = suggest(&config, &small(), &options, 0)
        .await
        .expect("search");
    assert_eq!(found.policy, Policy::ScalehookWebhookOnly);
    let s = found
        .pools
        .iter()
        .find(|s| s.pool == "linux-x64")
        .expect("pool");
    assert_eq!((s.current.standby, s.current.p95_wait_secs), (1, 50));
    assert!(s.meets_target, "{s:?}");
    assert_eq!(
        (s.best.standby, s.best.max, s.best.p95_wait_secs),
        (3, 20, 0)
    );
    let mut fewer = config.clone();
    fewer.pools[0].standby = s.best.standby - 1;
    let r = simulate(&fewer, small(), &options)
        .await
        .expect("simulates");
    let p95 = r
        .pool("linux-x64")
        .and_then(|p| p.policy(Policy::ScalehookWebhookOnly));
    assert!(p95.expect("figures").queue_wait_secs.p95 > 0);
    let again = suggest(&config, &small(), &options, 0)
        .await
        .expect("search");
    assert_eq!(found, again);
    let toml = found.toml();
    assert!(toml.contains("name = \"linux-x64\""), "{toml}");
    assert!(toml.contains("standby = 3\nmax = 20"), "{toml}");
}
