//! The model test of the whole service (crates/scalehook-core/tests/model_support) against
//! the Table Storage ledger on Azurite (the real emulator): random workloads with
//! duplicates, reordering, concurrent deliveries (two worker threads, so ETag conflicts are
//! real) and injected fleet and ledger failures; after the final reconcile the ledger's
//! counts equal the ground truth and no busy instance was removed.
//! `SCALEHOOK_MODEL_SEED=<n>` replays one case; `SCALEHOOK_MODEL_CASES=<n>` runs more.

#[path = "common/azurite.rs"]
mod azurite;
#[path = "../../scalehook-core/tests/model_support/fault_proxy.rs"]
mod fault_proxy;
#[path = "../../scalehook-core/tests/model_support/mod.rs"]
mod model_support;

use azurite::{Azurite, ACCOUNT, KEY};
use base64::Engine;
use fault_proxy::{black_hole_then_heal, FaultProxy, Flavor};
use model_support::{run, Options};
use scalehook_azure::{TableAuth, TableClient, TableLedger};
use std::sync::Arc;

async fn table_ledger(endpoint: &str) -> TableLedger {
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("key");
    let client = TableClient::new(
        scalehook_azure::app::http_client().expect("client"),
        endpoint,
        "modelledger",
        TableAuth::SharedKey {
            account: ACCOUNT.into(),
            key,
        },
    )
    .expect("table client");
    client.ensure_table().await.expect("create table");
    TableLedger::new(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_table_storage_ledger() {
    let az = Azurite::start();
    let ledger = table_ledger(&az.endpoint()).await;
    let opts = Options {
        cases: 15,
        first_seed: 200_001,
        jobs_per_round: 4,
        rounds: 10,
        fleet_faults: 100,
        ledger_faults: 40,
        // A stall costs cloud_timeout_ms of real time here; lost answers and refusals
        // are injected instead, and real timeouts come from Azurite under load.
        ledger_stalls: false,
        duplicates: 150,
        hold_back: 100,
        reconcile: 300,
        cloud_timeout_ms: 8000,
    }
    .with_env();
    let totals = run("table storage on azurite", Arc::new(ledger), &opts).await;
    assert_eq!(totals.cases, opts.cases);
    if opts.cases >= 10 {
        assert!(
            totals.answers_5xx > 0 && totals.duplicates > 0,
            "{totals:?}"
        );
    }
}

/// The same model with the Table Storage ledger behind a proxy that answers 503 ServerBusy
/// or 500, or lets a write land and loses its answer (`fault_proxy.rs`): the ledger's bounded
/// retries and ETag writes must keep every count exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_table_storage_ledger_through_a_faulty_network() {
    let az = Azurite::start();
    // The table exists before faults begin.
    table_ledger(&az.endpoint()).await;
    let upstream = ([127, 0, 0, 1], az.port).into();
    let proxy = FaultProxy::start(upstream, Flavor::TableStorage, 60, 43).await;
    let ledger = table_ledger(&format!("{}/{ACCOUNT}", proxy.endpoint)).await;
    let opts = Options {
        cases: 8,
        first_seed: 210_001,
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
    let totals = run(
        "table storage on azurite, faulty network",
        Arc::new(ledger),
        &opts,
    )
    .await;
    proxy.print_figures("Table Storage", "answered 503 ServerBusy");
    assert_eq!(totals.cases, opts.cases);
    if opts.cases >= 5 {
        assert!(proxy.injected() > 0, "the proxy injected nothing");
    }
}

/// A network partition between the service and Table Storage: the delivery gets a 5xx
/// (bounded by `cloud_timeout_ms`, inside GitHub's 10 s, whatever the client's retries), and
/// its redelivery once the network is back counts the job once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_from_table_storage_is_a_5xx_and_a_redelivery_repairs() {
    let az = Azurite::start();
    table_ledger(&az.endpoint()).await;
    let proxy =
        FaultProxy::start(([127, 0, 0, 1], az.port).into(), Flavor::TableStorage, 0, 1).await;
    let ledger = table_ledger(&format!("{}/{ACCOUNT}", proxy.endpoint)).await;
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
