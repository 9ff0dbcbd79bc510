//! The model test (see `model_support/mod.rs`) against the in-memory ledger: random
//! workloads through the whole service with duplicates, reordering, concurrent deliveries,
//! and injected fleet and ledger failures (including stalls past `cloud_timeout_ms`).
//! `SCALEHOOK_MODEL_SEED=<n>` replays one case; `SCALEHOOK_MODEL_CASES=<n>` runs more.

mod model_support;

use model_support::{run, Options};
use scalehook_core::MemoryLedger;
use std::sync::Arc;

fn options(first_seed: u64, cases: u64, ledger_stalls: bool) -> Options {
    Options {
        cases,
        first_seed,
        jobs_per_round: 6,
        rounds: 14,
        fleet_faults: 100,
        ledger_faults: 50,
        ledger_stalls,
        duplicates: 150,
        hold_back: 100,
        reconcile: 300,
        cloud_timeout_ms: 50,
    }
    .with_env()
}

/// Many cases, stalls included: tasks interleave on one thread at every await (the fault
/// wrappers yield at each call) and time is virtual, so a stall past `cloud_timeout_ms`
/// costs nothing.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn model_memory_ledger_interleaved() {
    let opts = options(1, 250, true);
    let totals = run("memory, interleaved", Arc::new(MemoryLedger::new()), &opts).await;
    assert_eq!(totals.cases, opts.cases);
    // The faults were really there, and removals were really checked.
    if opts.cases >= 100 {
        assert!(totals.fleet_faults > 0 && totals.ledger_faults > 0 && totals.answers_5xx > 0);
        assert!(totals.duplicates > 0 && totals.redeliveries > 0);
        assert!(totals.removals_checked > 0, "{totals:?}");
    }
}

/// Fewer cases on two worker threads: deliveries run in parallel for real. No stalls (each
/// would cost `cloud_timeout_ms` of real time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_memory_ledger_parallel() {
    let opts = options(100_001, 80, false);
    let totals = run("memory, parallel", Arc::new(MemoryLedger::new()), &opts).await;
    assert_eq!(totals.cases, opts.cases);
    if opts.cases >= 50 {
        assert!(
            totals.answers_5xx > 0 && totals.removals_checked > 0,
            "{totals:?}"
        );
    }
}
