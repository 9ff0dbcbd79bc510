//! The Table Storage ledger against Azurite (the real emulator, started per test on a free
//! loopback port): transitions, duplicates, late events, expiry and concurrent deliveries.

mod common;

use base64::Engine;
use common::azurite::{Azurite, ACCOUNT, KEY};
use scalehook_azure::{TableAuth, TableClient, TableLedger};
use scalehook_core::config::LedgerTtl;
use scalehook_core::ledger::{JobState, Ledger, Recorded, Transition};
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
    assert_eq!(
        l.busy_runners("linux").await.expect("busy"),
        vec!["gh-runnervmss000003".to_string()]
    );

    // completed; then a late queued and a redelivered in_progress change nothing
    l.record(&t(1, JobState::Completed, None, 120))
        .await
        .expect("ok");
    assert_eq!(counts(&l, "linux").await, (0, 0));
    assert!(l.busy_runners("linux").await.expect("busy").is_empty());
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
    // the record as stored: first pool, the runner it started on, the time of the move
    let rec = l
        .record_of(3)
        .await
        .expect("ok")
        .expect("job 3 is recorded");
    assert_eq!(
        (
            rec.pool.as_str(),
            rec.state,
            rec.runner.as_deref(),
            rec.updated_at
        ),
        ("linux", JobState::InProgress, Some("r"), 160)
    );
    assert_eq!(l.record_of(424242).await.expect("ok"), None);

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
    let mut busy = l.busy_runners("linux").await.expect("busy");
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
    assert_eq!(counts(&l, "linux").await, (0, 0));
    assert!(l.busy_runners("linux").await.expect("busy").is_empty());

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

/// The entity group transaction the ledger relies on is all or nothing on Azurite: a failed
/// `If-Match` on one operation leaves the other unapplied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_all_or_nothing() {
    use scalehook_azure::table::{BatchOp, BatchOutcome};
    use serde_json::json;
    let az = Azurite::start();
    let l = ledger(&az, "batches").await;
    let c = l.client();
    let a = json!({"PartitionKey": "p", "RowKey": "a", "N": 1});
    assert!(c.insert(&a).await.expect("insert").is_some());
    let (_, etag) = c.get("p", "a").await.expect("get").expect("a");
    let b = json!({"PartitionKey": "p", "RowKey": "b", "N": 2});
    let stale = BatchOp::Replace {
        row: "a".into(),
        etag: "W/\"datetime'2000-01-01T00%3A00%3A00.0000000Z'\"".into(),
        entity: json!({"PartitionKey": "p", "RowKey": "a", "N": 9}),
    };
    let out = c
        .batch("p", &[BatchOp::Insert(b.clone()), stale])
        .await
        .expect("batch");
    assert_eq!(out, BatchOutcome::Conflict(412));
    assert!(
        c.get("p", "b").await.expect("get").is_none(),
        "b rolled back"
    );
    // With the right ETag both land; inserting an existing entity is a conflict too.
    let fresh = BatchOp::Replace {
        row: "a".into(),
        etag: etag.clone(),
        entity: json!({"PartitionKey": "p", "RowKey": "a", "N": 3}),
    };
    assert_eq!(
        c.batch("p", &[BatchOp::Insert(b.clone()), fresh])
            .await
            .expect("batch"),
        BatchOutcome::Committed
    );
    assert!(c.get("p", "b").await.expect("get").is_some());
    assert_eq!(
        c.batch("p", &[BatchOp::Insert(b)]).await.expect("batch"),
        BatchOutcome::Conflict(409)
    );
    // The old ETag is spent.
    assert_eq!(
        c.batch(
            "p",
            &[BatchOp::Delete {
                row: "a".into(),
                etag
            }]
        )
        .await
        .expect("batch"),
        BatchOutcome::Conflict(412)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_lease_is_exclusive_until_it_expires() {
    let az = Azurite::start();
    let l = Arc::new(ledger(&az, "leases").await);
    assert!(l.acquire_lease("linux", "a", 100, 130).await.expect("ok"));
    assert!(!l.acquire_lease("linux", "b", 110, 140).await.expect("ok"));
    // Another pool is another lease.
    assert!(l.acquire_lease("gpu", "b", 110, 140).await.expect("ok"));
    // The holder may renew; after it expires anyone may take it.
    assert!(l.acquire_lease("linux", "a", 110, 140).await.expect("ok"));
    assert!(!l.acquire_lease("linux", "b", 139, 170).await.expect("ok"));
    assert!(l.acquire_lease("linux", "b", 140, 170).await.expect("ok"));
    // Releasing someone else's lease does nothing; the holder's release frees it.
    l.release_lease("linux", "a").await.expect("ok");
    assert!(!l.acquire_lease("linux", "c", 150, 180).await.expect("ok"));
    l.release_lease("linux", "b").await.expect("ok");
    assert!(l.acquire_lease("linux", "c", 150, 180).await.expect("ok"));
    l.release_lease("linux", "c").await.expect("ok");

    // Sixteen contenders at once: exactly one wins.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let l = l.clone();
            tokio::spawn(async move {
                l.acquire_lease("race", &format!("h{i}"), 200, 230)
                    .await
                    .expect("ok")
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("task") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_are_kept_by_name() {
    let az = Azurite::start();
    let l = ledger(&az, "cursors").await;
    assert_eq!(l.cursor("deliveries").await.expect("ok"), None);
    l.set_cursor("deliveries", "12345").await.expect("ok");
    l.set_cursor("deliveries", "12346").await.expect("ok");
    l.set_cursor("odd/name#?'", "x y").await.expect("ok");
    assert_eq!(
        l.cursor("deliveries").await.expect("ok").as_deref(),
        Some("12346")
    );
    assert_eq!(
        l.cursor("odd/name#?'").await.expect("ok").as_deref(),
        Some("x y")
    );
    l.delete_cursor("odd/name#?'").await.expect("delete");
    assert_eq!(l.cursor("odd/name#?'").await.expect("ok"), None, "deleted");
    l.delete_cursor("odd/name#?'")
        .await
        .expect("deleting none is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_before_lists_the_oldest_unfinished_records() {
    let az = Azurite::start();
    let l = ledger(&az, "unfinished").await;
    // Spread over two hours' buckets.
    l.record(&t(1, JobState::Queued, None, 1_000))
        .await
        .expect("ok");
    l.record(&t(2, JobState::Queued, None, 2_000))
        .await
        .expect("ok");
    l.record(&t(2, JobState::InProgress, Some("r2"), 4_000))
        .await
        .expect("ok");
    l.record(&t(3, JobState::Waiting, None, 5_000))
        .await
        .expect("ok");
    let mut done = t(4, JobState::Queued, None, 500);
    done.repository = Some("octo-org/octo-repo".into());
    l.record(&done).await.expect("ok");
    l.record(&t(4, JobState::Completed, None, 600))
        .await
        .expect("ok");
    l.record(&t(5, JobState::Queued, None, 9_000))
        .await
        .expect("ok");

    let ids = |v: Vec<scalehook_core::ledger::JobRecord>| -> Vec<u64> {
        v.into_iter().map(|r| r.job_id).collect()
    };
    assert_eq!(
        ids(l.unfinished_before(5_000, 10).await.expect("ok")),
        vec![1, 2, 3]
    );
    assert_eq!(
        ids(l.unfinished_before(5_000, 2).await.expect("ok")),
        vec![1, 2]
    );
    assert_eq!(
        ids(l.unfinished_before(999, 10).await.expect("ok")),
        Vec::<u64>::new()
    );
    let all = l.unfinished_before(10_000, 10).await.expect("ok");
    assert_eq!(all.len(), 4);
    assert_eq!(all[1].state, JobState::InProgress);
    assert_eq!(all[1].runner.as_deref(), Some("r2"));
}

/// Expiry reads only due hints, stops at its time budget and goes on from its cursor: many
/// passes with a tiny budget expire everything exactly once, and a pass over a table full of
/// records that are not due yet costs the same few requests as over an empty one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_bounded_and_resumable() {
    let az = Azurite::start();
    let ttl = LedgerTtl {
        queued: Duration::from_secs(100),
        in_progress: Duration::from_secs(200),
        retention: Duration::from_secs(10_000),
    };
    let l = ledger(&az, "bounded")
        .await
        .with_expiry_budget(Duration::from_millis(60));
    // 40 queued jobs over two hours, then 300 fresh ones that are not due.
    for job in 1..=40u64 {
        l.record(&t(job, JobState::Queued, None, job * 180))
            .await
            .expect("ok");
    }
    let fresh_at = 1_000_000;
    let tasks: Vec<_> = (1000..1300u64)
        .map(|job| {
            let l = &l;
            async move { l.record(&t(job, JobState::Queued, None, fresh_at)).await }
        })
        .collect();
    for f in tasks {
        f.await.expect("ok");
    }
    assert_eq!(counts(&l, "linux").await, (340, 0));
    let now = 40 * 180 + 100;
    let mut expired = 0;
    let mut passes = 0;
    while expired < 40 {
        passes += 1;
        assert!(passes < 200, "expiry makes no progress");
        expired += l.expire(now, &ttl).await.expect("expire").expired;
    }
    assert_eq!(expired, 40);
    assert!(passes > 1, "the budget split the work ({passes} passes)");
    assert_eq!(counts(&l, "linux").await, (300, 0));
    // Nothing more is due: a pass costs the same handful of requests whatever is stored.
    let before = l.client().requests();
    let e = l.expire(now + 1, &ttl).await.expect("expire");
    assert_eq!((e.expired, e.forgotten), (0, 0));
    let cost = l.client().requests() - before;
    assert!(cost <= 8, "an idle expiry pass took {cost} requests");
}

/// A delivery that wrote its job entity and died before the pool batch leaves the marker
/// behind: its redelivery repairs it, and without one, expiry visiting the job's old hint does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_died_between_its_writes_is_repaired() {
    let az = Azurite::start();
    let l = ledger(&az, "repair").await;
    let c = l.client();
    // What a completed delivery writes first, alone: the job entity.
    let complete_job_entity_only = |job: u64| async move {
        let (mut e, etag) = c
            .get(&format!("job-{job}"), "job")
            .await
            .expect("get")
            .expect("job");
        e.insert("State".into(), "completed".into());
        e.retain(|k, _| !k.starts_with("odata.") && k != "Timestamp");
        assert!(c
            .replace(
                &format!("job-{job}"),
                "job",
                &etag,
                &serde_json::Value::Object(e)
            )
            .await
            .expect("replace")
            .is_some());
    };
    for job in [1, 2] {
        l.record(&t(job, JobState::Queued, None, 100))
            .await
            .expect("ok");
        complete_job_entity_only(job).await;
    }
    assert_eq!(counts(&l, "linux").await, (2, 0), "the markers lag");
    // Job 1 is redelivered: stale, but it syncs the pool.
    assert!(!l
        .record(&t(1, JobState::Completed, None, 120))
        .await
        .expect("ok")
        .is_applied());
    assert_eq!(counts(&l, "linux").await, (1, 0));
    // Job 2 is not: expiry reaches its queued hint, finds the job moved on, repairs.
    let ttl = LedgerTtl {
        queued: Duration::from_secs(10),
        in_progress: Duration::from_secs(20),
        retention: Duration::from_secs(3600),
    };
    let e = l.expire(200, &ttl).await.expect("expire");
    assert_eq!(
        (e.expired, e.forgotten),
        (0, 0),
        "nothing to expire, only repair"
    );
    assert_eq!(counts(&l, "linux").await, (0, 0));
    assert!(l.busy_runners("linux").await.expect("busy").is_empty());
}
