//! The Table Storage ledger against Azurite (the real emulator, started per test on a free
//! loopback port): transitions, duplicates, late events, expiry and concurrent deliveries.

mod common;

use base64::Engine;
use common::azurite::{Azurite, ACCOUNT, KEY};
use scalehook_azure::{TableAuth, TableClient, TableLedger};
use scalehook_core::config::LedgerTtl;
use scalehook_core::ledger::{JobState, Ledger, PoolLedger, Recorded, Transition};
use std::sync::Arc;
use std::time::Duration;

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
    // Idempotent.
    client.ensure_table().await.expect("create table again");
    TableLedger::new(client)
}

fn t(job_id: u64, to: JobState, runner: Option<&str>, at: u64) -> Transition {
    Transition {
        repository: None,
        job_id,
        pool: "linux".into(),
        to,
        runner: runner.map(String::from),
        at,
    }
}

async fn counts(l: &TableLedger, pool: &str) -> (u32, u32) {
    let p = l.pool(pool).await.expect("pool");
    (p.queued, p.running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_duplicates_and_late_events() {
    let az = Azurite::start();
    let l = ledger(&az, "transitions").await;

    // queued, then its duplicate
    assert_eq!(
        l.record(&t(1, JobState::Queued, None, 100))
            .await
            .expect("ok"),
        Recorded::Applied {
            from: None,
            since: None
        }
    );
    assert_eq!(
        l.record(&t(1, JobState::Queued, None, 101))
            .await
            .expect("ok"),
        Recorded::Stale {
            current: JobState::Queued
        }
    );
    assert_eq!(counts(&l, "linux").await, (1, 0));

    // in progress on a runner
    assert_eq!(
        l.record(&t(
            1,
            JobState::InProgress,
            Some("gh-runnervmss000003"),
            110
        ))
        .await
        .expect("ok"),
        Recorded::Applied {
            from: Some(JobState::Queued),
            since: Some(100)
        }
    );
    let p = l.pool("linux").await.expect("pool");
    assert_eq!((p.queued, p.running), (0, 1));
    assert_eq!(p.busy_runners, vec!["gh-runnervmss000003".to_string()]);

    // completed; then a late queued and a redelivered in_progress change nothing
    l.record(&t(1, JobState::Completed, None, 120))
        .await
        .expect("ok");
    assert_eq!(l.pool("linux").await.expect("pool"), PoolLedger::default());
    assert_eq!(
        l.record(&t(1, JobState::Queued, None, 130))
            .await
            .expect("ok"),
        Recorded::Stale {
            current: JobState::Completed
        }
    );
    l.record(&t(1, JobState::InProgress, Some("x"), 131))
        .await
        .expect("ok");
    assert_eq!(counts(&l, "linux").await, (0, 0));

    // completed for a job never seen: recorded, never negative, late queued ignored
    l.record(&t(2, JobState::Completed, None, 140))
        .await
        .expect("ok");
    l.record(&t(2, JobState::Queued, None, 141))
        .await
        .expect("ok");
    assert_eq!(counts(&l, "linux").await, (0, 0));

    // waiting is recorded but not demand; then queued counts
    l.record(&t(3, JobState::Waiting, None, 150))
        .await
        .expect("ok");
    assert_eq!(counts(&l, "linux").await, (0, 0));
    l.record(&t(3, JobState::Queued, None, 151))
        .await
        .expect("ok");
    assert_eq!(counts(&l, "linux").await, (1, 0));

    // a record keeps the pool of its first sighting
    let mut moved = t(3, JobState::InProgress, Some("r"), 160);
    moved.pool = "gpu".into();
    l.record(&moved).await.expect("ok");
    assert_eq!(counts(&l, "linux").await, (0, 1));
    assert_eq!(counts(&l, "gpu").await, (0, 0));

    // job ids beyond 32 bits
    let big = u64::MAX - 7;
    l.record(&t(big, JobState::Queued, None, 170))
        .await
        .expect("ok");
    assert_eq!(counts(&l, "linux").await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_stay_exact() {
    let az = Azurite::start();
    let l = Arc::new(ledger(&az, "concurrent").await);
    const JOBS: u64 = 30;
    // Every job: queued twice (a redelivery), in_progress, and for the even ones completed,
    // all sent at once and in no particular order: 30 * 3 + 15 = 105 concurrent deliveries.
    let mut deliveries = Vec::new();
    for job in 1..=JOBS {
        deliveries.push(t(job, JobState::Queued, None, 100));
        deliveries.push(t(job, JobState::Queued, None, 100));
        deliveries.push(t(
            job,
            JobState::InProgress,
            Some(&format!("runner-{job}")),
            101,
        ));
        if job % 2 == 0 {
            deliveries.push(t(job, JobState::Completed, None, 102));
        }
    }
    // Interleave so the deliveries of one job race each other.
    deliveries.sort_by_key(|d| (d.job_id * 7919) % 31);
    let total = deliveries.len();
    assert!(total >= 50);
    let tasks: Vec<_> = deliveries
        .into_iter()
        .map(|d| {
            let l = l.clone();
            tokio::spawn(async move { l.record(&d).await })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        if task.await.expect("task").expect("record").is_applied() {
            applied += 1;
        }
    }
    let p = l.pool("linux").await.expect("pool");
    // Odd jobs are running, even jobs are done; nothing is queued whatever the order.
    assert_eq!((p.queued, p.running), (0, (JOBS / 2) as u32));
    let mut busy = p.busy_runners.clone();
    busy.sort();
    let mut want: Vec<String> = (1..=JOBS)
        .filter(|j| j % 2 == 1)
        .map(|j| format!("runner-{j}"))
        .collect();
    want.sort();
    assert_eq!(busy, want);
    // Each job applied at least one transition and at most its distinct states.
    assert!(
        applied >= JOBS as usize && applied <= (JOBS * 3) as usize,
        "{applied}"
    );

    // And now 60 new jobs queued concurrently: exactly 60 queued.
    let tasks: Vec<_> = (1000..1060)
        .map(|job| {
            let l = l.clone();
            tokio::spawn(async move { l.record(&t(job, JobState::Queued, None, 200)).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("record");
    }
    assert_eq!(counts(&l, "linux").await, (60, (JOBS / 2) as u32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_uses_the_core_rules() {
    let az = Azurite::start();
    let l = ledger(&az, "expiry").await;
    let ttl = LedgerTtl {
        queued: Duration::from_secs(10),
        in_progress: Duration::from_secs(20),
        retention: Duration::from_secs(30),
    };
    l.record(&t(1, JobState::Queued, None, 100))
        .await
        .expect("ok");
    l.record(&t(2, JobState::Queued, None, 100))
        .await
        .expect("ok");
    l.record(&t(2, JobState::InProgress, Some("r2"), 100))
        .await
        .expect("ok");
    let none = l.expire(105, &ttl).await.expect("expire");
    assert_eq!((none.expired, none.forgotten), (0, 0));
    assert_eq!(counts(&l, "linux").await, (1, 1));

    let e = l.expire(110, &ttl).await.expect("expire");
    assert_eq!(e.expired, 1, "the queued job is stale at 10 s");
    assert_eq!(counts(&l, "linux").await, (0, 1));

    let e = l.expire(120, &ttl).await.expect("expire");
    assert_eq!(e.expired, 1, "the running job is stale at 20 s");
    assert_eq!(l.pool("linux").await.expect("pool"), PoolLedger::default());

    // An expired job stays completed: a late in_progress does not revive it.
    l.record(&t(1, JobState::InProgress, Some("late"), 125))
        .await
        .expect("ok");
    assert_eq!(counts(&l, "linux").await, (0, 0));

    // Completed at 110 and 120, forgotten after the 30 s retention.
    let e = l.expire(151, &ttl).await.expect("expire");
    assert_eq!(e.forgotten, 2);
    // Forgotten means gone: the same job id starts afresh.
    l.record(&t(1, JobState::Queued, None, 160))
        .await
        .expect("ok");
    assert_eq!(counts(&l, "linux").await, (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failures_are_errors_not_panics() {
    let az = Azurite::start();
    // A table that does not exist: every call fails cleanly.
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("key");
    let client = TableClient::new(
        scalehook_azure::app::http_client().expect("client"),
        &az.endpoint(),
        "missingtable",
        TableAuth::SharedKey {
            account: ACCOUNT.into(),
            key: key.clone(),
        },
    )
    .expect("client");
    let l = TableLedger::new(client);
    let err = l
        .record(&t(1, JobState::Queued, None, 1))
        .await
        .expect_err("no table");
    assert!(err.to_string().contains("missingtable"), "{err}");

    // A wrong key is refused by Azurite (403) and reported, without the key.
    let wrong = TableClient::new(
        scalehook_azure::app::http_client().expect("client"),
        &az.endpoint(),
        "anytable",
        TableAuth::SharedKey {
            account: ACCOUNT.into(),
            key: b"not-the-key".to_vec(),
        },
    )
    .expect("client");
    let err = wrong.ensure_table().await.expect_err("bad key");
    assert!(err.to_string().contains("403"), "{err}");
    assert!(!err.to_string().contains(KEY));

    // Nothing listening: unavailable, not a panic.
    drop(az);
    let err = l.pool("linux").await.expect_err("down");
    assert!(err.to_string().contains("unavailable"), "{err}");
}
