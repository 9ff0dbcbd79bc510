//! What one delivery costs the Table ledger as the pool grows: the requests of each
//! transition, the requests of `pool()`, and the largest entity in the table, with 10 and
//! with 10,000 jobs running (Azurite, the real emulator). The running jobs are written in
//! bulk (`seed_in_progress`: the entities `record` writes in the shared partitions, the pool
//! partition and the hint bucket, batched), then one new job goes through queued,
//! in_progress and completed the ordinary way. The seeded jobs' own entities (one partition
//! each, never read by another job's delivery) are left out by default because Azurite
//! inserts them at ~100 a second; `SCALEHOOK_SCALE_JOB_ENTITIES=1` writes them too (about
//! two minutes for 10,000). `SCALEHOOK_SCALE_LARGE=<n>` changes the large count.

mod common;

use base64::Engine;
use common::azurite::{Azurite, ACCOUNT, KEY};
use scalehook_azure::{TableAuth, TableClient, TableLedger};
use scalehook_core::ledger::{JobState, Ledger, Transition};
use serde_json::Value;
use std::time::Instant;

async fn ledger(az: &Azurite, table: &str) -> TableLedger {
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("key");
    let client = TableClient::new(
        scalehook_azure::app::http_client().expect("client"),
        &az.endpoint(),
        table,
        TableAuth::SharedKey {
            account: ACCOUNT.into(),
            key,
        },
    )
    .expect("table client");
    client.ensure_table().await.expect("create table");
    TableLedger::new(client)
}

#[derive(Debug, PartialEq, Eq)]
struct Cost {
    /// Requests of `record` for queued, in_progress and completed of one new job.
    record: [u64; 3],
    /// Requests of one `pool()` read while the job runs.
    pool: u64,
    /// The largest entity in the table, in bytes of JSON (properties only).
    largest_entity: usize,
    /// Entities in the pool's partition after the job completed.
    pool_partition: usize,
}

async fn measure(az: &Azurite, table: &str, running: u64) -> Cost {
    let l = ledger(az, table).await;
    let now = 1_795_000_000;
    let started = Instant::now();
    let job_entities = std::env::var("SCALEHOOK_SCALE_JOB_ENTITIES").is_ok_and(|v| v == "1");
    l.seed_in_progress("linux", 1_000_000, running, now - 60, job_entities)
        .await
        .expect("seed");
    let p = l.pool("linux").await.expect("pool");
    assert_eq!((p.queued, p.running), (0, running as u32));
    assert_eq!(p.busy_runners.len(), running as usize);
    eprintln!("seeded {running} running jobs in {:?}", started.elapsed());

    let c = l.client();
    let job = 42;
    let mut record = [0; 3];
    let mut pool = 0;
    for (i, (to, runner)) in [
        (JobState::Queued, None),
        (JobState::InProgress, Some("runner-42")),
        (JobState::Completed, None),
    ]
    .into_iter()
    .enumerate()
    {
        let before = c.requests();
        let r = l
            .record(&Transition {
                job_id: job,
                pool: "linux".into(),
                to,
                runner: runner.map(String::from),
                at: now + i as u64,
                repository: Some("octo-org/octo-repo".into()),
            })
            .await
            .expect("record");
        assert!(r.is_applied());
        record[i] = c.requests() - before;
        if to == JobState::InProgress {
            let before = c.requests();
            let p = l.pool("linux").await.expect("pool");
            pool = c.requests() - before;
            assert_eq!(p.running, running as u32 + 1);
        }
    }
    let p = l.pool("linux").await.expect("pool");
    assert_eq!((p.queued, p.running), (0, running as u32));

    let all = c.query("PartitionKey ne ''", None).await.expect("scan");
    let largest_entity = all
        .iter()
        .map(|e| {
            let props: serde_json::Map<String, Value> = e
                .iter()
                .filter(|(k, _)| !k.starts_with("odata.") && *k != "Timestamp")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Value::Object(props).to_string().len()
        })
        .max()
        .unwrap_or(0);
    let pool_partition = all
        .iter()
        .filter(|e| e.get("PartitionKey").and_then(Value::as_str) == Some("pool-linux"))
        .count();
    Cost {
        record,
        pool,
        largest_entity,
        pool_partition,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_delivery_cost_does_not_grow_with_running_jobs() {
    let large: u64 = std::env::var("SCALEHOOK_SCALE_LARGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let az = Azurite::start();
    let small = measure(&az, "scalesmall", 10).await;
    let big = measure(&az, "scalelarge", large).await;
    eprintln!("10 running: {small:?}");
    eprintln!("{large} running: {big:?}");
    // Every transition costs the same requests however many jobs run.
    assert_eq!(small.record, big.record);
    // pool(): one read of the 16 counter shards, plus the busy runners' names, which the
    // core needs in full: one page per 1000 in-progress markers.
    let pages = |n: u64| (n + 1).div_ceil(1000);
    assert_eq!(small.pool, 1 + pages(10));
    assert_eq!(big.pool, 1 + pages(large));
    // No entity grows with the pool (a few bytes of counter digits aside).
    assert!(
        big.largest_entity <= small.largest_entity + 8,
        "{} vs {}",
        big.largest_entity,
        small.largest_entity
    );
    // The pool partition holds the live jobs and the counter shards, not history.
    assert!(small.pool_partition <= 10 + 16);
    assert!(big.pool_partition <= large as usize + 16);
}
