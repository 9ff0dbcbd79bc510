//! The model test of the whole service (crates/scalehook-core/tests/model_support) against
//! the DynamoDB ledger on moto (a real DynamoDB API server), with scalehook's own SDK
//! retries and timeouts: random workloads with duplicates, reordering, concurrent
//! deliveries (two worker threads, so conditional-write conflicts are real) and injected
//! fleet and ledger failures; after the final reconcile the ledger's counts equal the
//! ground truth and no busy instance was removed.
//! `SCALEHOOK_MODEL_SEED=<n>` replays one case; `SCALEHOOK_MODEL_CASES=<n>` runs more.

mod common;
#[path = "../../scalehook-core/tests/model_support/fault_proxy.rs"]
mod fault_proxy;
#[path = "../../scalehook-core/tests/model_support/mod.rs"]
mod model_support;

use common::{create_table, sdk, Moto};
use fault_proxy::{black_hole_then_heal, FaultProxy, Flavor};
use model_support::{run, Options};
use scalehook_aws::DynamoLedger;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_dynamodb_ledger() {
    let moto = Moto::start();
    let sdk = sdk(&moto.endpoint).await;
    create_table(&sdk, "model-ledger").await;
    let opts = Options {
        cases: 15,
        first_seed: 300_001,
        jobs_per_round: 4,
        rounds: 10,
        fleet_faults: 100,
        ledger_faults: 40,
        // A stall costs cloud_timeout_ms of real time here; lost answers and refusals
        // are injected instead, and real timeouts come from moto under load.
        ledger_stalls: false,
        duplicates: 150,
        hold_back: 100,
        reconcile: 300,
        cloud_timeout_ms: 8000,
    }
    .with_env();
    let ledger = DynamoLedger::from_sdk(&sdk, "model-ledger", Default::default());
    let totals = run("dynamodb on moto", Arc::new(ledger), &opts).await;
    assert_eq!(totals.cases, opts.cases);
    if opts.cases >= 10 {
        assert!(
            totals.answers_5xx > 0 && totals.duplicates > 0,
            "{totals:?}"
        );
    }
}

/// The same model with the DynamoDB ledger behind a proxy that throttles, answers 500, or
/// lets a write land and loses its answer (`fault_proxy.rs`): the SDK's bounded retries and
/// the ledger's conditional writes must keep every count exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_dynamodb_ledger_through_a_faulty_network() {
    let moto = Moto::start();
    let direct = sdk(&moto.endpoint).await;
    create_table(&direct, "model-ledger").await;
    let upstream = ([127, 0, 0, 1], moto.port).into();
    let proxy = FaultProxy::start(upstream, Flavor::DynamoDb, 60, 42).await;
    let through_proxy = sdk(&proxy.endpoint).await;
    let opts = Options {
        cases: 8,
        first_seed: 310_001,
        jobs_per_round: 4,
        rounds: 10,
        fleet_faults: 50,
        ledger_faults: 0,
        ledger_stalls: false,
        duplicates: 150,
        hold_back: 100,
        reconcile: 300,
        cloud_timeout_ms: 8000,
    }
    .with_env();
    let ledger = DynamoLedger::from_sdk(&through_proxy, "model-ledger", Default::default());
    let totals = run("dynamodb on moto, faulty network", Arc::new(ledger), &opts).await;
    proxy.print_figures("DynamoDB", "throttled");
    assert_eq!(totals.cases, opts.cases);
    if opts.cases >= 5 {
        assert!(proxy.injected() > 0, "the proxy injected nothing");
    }
}

/// A network partition between the service and DynamoDB: the delivery gets a 5xx (bounded by
/// `cloud_timeout_ms`, inside GitHub's 10 s, whatever the SDK's retries), and its redelivery
/// once the network is back counts the job once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_from_dynamodb_is_a_5xx_and_a_redelivery_repairs() {
    let moto = Moto::start();
    let direct = sdk(&moto.endpoint).await;
    create_table(&direct, "partition-ledger").await;
    let proxy = FaultProxy::start(([127, 0, 0, 1], moto.port).into(), Flavor::DynamoDb, 0, 1).await;
    let through_proxy = sdk(&proxy.endpoint).await;
    let ledger = DynamoLedger::from_sdk(&through_proxy, "partition-ledger", Default::default());
    let seen = black_hole_then_heal(&proxy, Arc::new(ledger)).await;
    assert!(matches!(seen.during.0, 503 | 504), "{:?}", seen.during);
    assert_eq!(seen.after.0, 200, "{:?}", seen.after);
    assert!(
        seen.after.1.contains("\"duplicate\":false"),
        "{:?}",
        seen.after
    );
    assert_eq!(seen.pool, (1, 1, 0));
}

/// The model with DynamoDB cancelling a third of the transactions as a conflict with another
/// transaction (`TransactionConflict`) or throttling (`ThrottlingError`), as it does under a
/// burst: the ledger retries them (jittered, within its budget), so no delivery is answered
/// 5xx, and every count is exact (the model's checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_dynamodb_ledger_with_cancelled_transactions() {
    let moto = Moto::start();
    let direct = sdk(&moto.endpoint).await;
    create_table(&direct, "model-ledger").await;
    let proxy = FaultProxy::start(([127, 0, 0, 1], moto.port).into(), Flavor::DynamoDb, 0, 7).await;
    proxy.set_cancellations(333);
    let through_proxy = sdk(&proxy.endpoint).await;
    let opts = Options {
        cases: 6,
        first_seed: 320_001,
        jobs_per_round: 4,
        rounds: 10,
        // Only the cancellations: any 5xx would be the ledger giving up.
        fleet_faults: 0,
        ledger_faults: 0,
        ledger_stalls: false,
        duplicates: 150,
        hold_back: 100,
        reconcile: 300,
        cloud_timeout_ms: 8000,
    }
    .with_env();
    let ledger = DynamoLedger::from_sdk(&through_proxy, "model-ledger", Default::default());
    let totals = run(
        "dynamodb on moto, cancelled transactions",
        Arc::new(ledger),
        &opts,
    )
    .await;
    let conflicts = proxy.cancelled_conflict.load(Ordering::Relaxed);
    let throttled = proxy.cancelled_throttling.load(Ordering::Relaxed);
    println!(
        "cancelled transactions: {conflicts} TransactionConflict, {throttled} ThrottlingError; \
         {} deliveries, {} answered 5xx",
        totals.deliveries, totals.answers_5xx
    );
    assert_eq!(totals.cases, opts.cases);
    assert!(conflicts > 0 && throttled > 0, "nothing was cancelled");
    assert_eq!(totals.answers_5xx, 0, "{totals:?}");
}
