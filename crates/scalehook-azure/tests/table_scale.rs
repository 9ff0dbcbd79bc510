//! What one delivery costs the Table ledger as the pool grows: the requests of each
//! transition plus the account read (`pool()`, what every delivery does), the account read's
//! response size (bytes Azurite sends back, counted by a loopback proxy), and the largest
//! entity in the table, with 10 and with 10,000 jobs running (Azurite, the real emulator).
//! The busy list (`busy_runners()`, read only by passes that may take instances out) is
//! checked complete and exact across its pages (1,000 markers each: ten at 10,000). The running jobs are written in
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback TCP proxy in front of Azurite that counts the bytes Azurite answers with
/// (headers and bodies). A request's answer is counted before the client has it, so the
/// count is complete when the call returns.
struct CountingProxy {
    port: u16,
    answered: Arc<AtomicU64>,
}

impl CountingProxy {
    async fn start(upstream: u16) -> CountingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answered = Arc::new(AtomicU64::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = async {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                        let _ = server_write.shutdown().await;
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = server_read.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            count.fetch_add(n as u64, Ordering::SeqCst);
                            if client_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = client_write.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        CountingProxy { port, answered }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }
}

async fn ledger(endpoint: &str, table: &str) -> TableLedger {
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("key");
    let client = TableClient::new(
        scalehook_azure::app::http_client().expect("client"),
        endpoint,
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
    /// Requests of each of those transitions plus the account read after it.
    delivery: [u64; 3],
    /// Bytes Azurite answered the account read with, after each transition.
    account_bytes: [u64; 3],
    /// Requests (pages) of one complete busy-list read.
    busy_list: u64,
    /// The largest entity in the table, in bytes of JSON (properties only).
    largest_entity: usize,
    /// Entities in the pool's partition after the job completed.
    pool_partition: usize,
}

async fn measure(az: &Azurite, table: &str, running: u64) -> Cost {
    let proxy = CountingProxy::start(az.port).await;
    let l = ledger(&proxy.endpoint(), table).await;
    let now = 1_795_000_000;
    let started = Instant::now();
    let job_entities = std::env::var("SCALEHOOK_SCALE_JOB_ENTITIES").is_ok_and(|v| v == "1");
    // Every counter shard exists in both cases (as in any pool that has seen a few dozen
    // jobs), so the account reads compare like for like: 16 shards each.
    for shard in 0..16 {
        let entity = serde_json::json!({
            "PartitionKey": "pool-linux",
            "RowKey": format!("c-{shard:02}"),
            "Kind": "counter",
            "Queued": "0", "Queued@odata.type": "Edm.Int64",
            "Running": "0", "Running@odata.type": "Edm.Int64",
            "Changes": "0", "Changes@odata.type": "Edm.Int64",
        });
        assert!(l.client().insert(&entity).await.expect("shard").is_some());
    }
    l.seed_in_progress("linux", 1_000_000, running, now - 60, job_entities)
        .await
        .expect("seed");
    let p = l.pool("linux").await.expect("pool");
    assert_eq!((p.queued, p.running), (0, running as u32));
    eprintln!("seeded {running} running jobs in {:?}", started.elapsed());

    let c = l.client();
    let job = 42;
    let mut record = [0; 3];
    let mut delivery = [0; 3];
    let mut account_bytes = [0; 3];
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
        let bytes = proxy.answered();
        let p = l.pool("linux").await.expect("pool");
        account_bytes[i] = proxy.answered() - bytes;
        delivery[i] = c.requests() - before;
        let runs = u32::from(to == JobState::InProgress);
        assert_eq!(
            (p.queued, p.running),
            (u32::from(to == JobState::Queued), running as u32 + runs)
        );
    }
    let p = l.pool("linux").await.expect("pool");
    assert_eq!((p.queued, p.running), (0, running as u32));
    // The busy list, complete and exact across its pages.
    let before = c.requests();
    let mut busy = l.busy_runners("linux").await.expect("busy runners");
    let busy_list = c.requests() - before;
    busy.sort();
    let mut want: Vec<String> = (1_000_000..1_000_000 + running)
        .map(|id| format!("runner-{id}"))
        .collect();
    want.sort();
    assert!(
        busy == want,
        "busy list: {} runners, want {running}",
        busy.len()
    );

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
        delivery,
        account_bytes,
        busy_list,
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
    // Every transition, and every transition plus the account read (what each delivery
    // does), costs the same requests however many jobs run.
    assert_eq!(small.record, big.record);
    assert_eq!(small.delivery, big.delivery);
    // pool(): one read of the 16 counter shards, whatever runs.
    for i in 0..3 {
        assert_eq!(small.delivery[i], small.record[i] + 1);
    }
    // Its answer does not grow (the counts' and stamps' digits aside: 16 shards).
    for (a, b) in small.account_bytes.iter().zip(&big.account_bytes) {
        assert!(b <= &(a + 96), "account read grew: {a} B -> {b} B");
    }
    // The busy list, read apart, is one page per 1000 in-progress markers.
    let pages = |n: u64| n.div_ceil(1000).max(1);
    assert_eq!(small.busy_list, pages(10));
    assert_eq!(big.busy_list, pages(large));
    // No entity grows with the pool (a few bytes of counter digits aside).
    assert!(
        big.largest_entity <= small.largest_entity + 8,
        "{} vs {}",
        big.largest_entity,
        small.largest_entity
    );
    // The pool partition holds the live jobs and the counter shards, not history.
    assert!(small.pool_partition <= 10 + 16);
    assert!(big.account_bytes[0] < 8192, "{big:?}");
    assert!(big.pool_partition <= large as usize + 16);
}
