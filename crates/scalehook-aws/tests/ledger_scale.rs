//! The DynamoDB ledger's cost per delivery does not grow with the number of running jobs:
//! with 10 and with 10,000 in-progress jobs in one pool, each transition *plus the account
//! read* (what every delivery does) makes the same number of DynamoDB requests (counted by
//! an SDK interceptor, every HTTP attempt), the account read's response is the same size
//! (bytes of the HTTP bodies, counted by another interceptor), and the largest item of the
//! table (computed from a `Scan` of moto's items) stays the same size. The old layout kept
//! every busy runner in one pool item (~41 bytes each): 10,000 running jobs made it ~410 KB,
//! past DynamoDB's 400 KB item limit; the layout after it read every `busy#` item with the
//! account (~60 B per running job, a second page at ~15,000).
//!
//! The busy list, read apart (`busy_runners`, only by passes that may take instances out),
//! is checked complete and exact across pages: with 4,000 items per page, 10,000 busy
//! runners are three pages.
//!
//! The 10,000 jobs are seeded with `BatchWriteItem` in the ledger's own layout (job item,
//! busy item, counter shards), which is what 10,000 recorded transitions leave behind. The
//! seeded shards have no `changes` attribute, as shards written before the change stamp: it
//! reads as 0, and the first transition on a shard creates it.

mod common;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::interceptors::AfterDeserializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use common::{create_table, ddb_client, sdk, Moto, RequestCounter as Counter};
use scalehook_aws::ledger::{counter_shard, due_partition, COUNTER_SHARDS};
use scalehook_aws::DynamoLedger;
use scalehook_core::{JobState, Ledger, Transition};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const POOL: &str = "linux";
const AT: u64 = 1_800_000_000;
/// Job ids of one width, so item sizes compare like for like.
const FIRST_JOB: u64 = 30_000_000_000;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn runner(job: u64) -> String {
    format!("gh-runner-i-{job:017x}")
}

/// Seeds in-progress jobs `jobs` (and adds them to `shards`) the way recorded transitions
/// leave them, then rewrites the counter shards with the totals.
async fn seed_running(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    jobs: std::ops::Range<u64>,
    shards: &mut [u64],
) {
    let mut requests = Vec::new();
    for job in jobs {
        let state = JobState::InProgress;
        let mut item = HashMap::from([
            ("pk".to_string(), s(format!("job#{job}"))),
            ("sk".to_string(), s("job")),
            ("pool".to_string(), s(POOL)),
            ("state".to_string(), s(state.as_str())),
            ("runner".to_string(), s(runner(job))),
            ("repository".to_string(), s("octo-org/app")),
            ("updated_at".to_string(), n(AT)),
        ]);
        item.insert("due".into(), s(due_partition(state, AT).expect("due")));
        let busy = HashMap::from([
            ("pk".to_string(), s(format!("pool#{POOL}"))),
            ("sk".to_string(), s(format!("busy#{job}"))),
            ("runner".to_string(), s(runner(job))),
        ]);
        shards[counter_shard(job) as usize] += 1;
        for i in [item, busy] {
            requests.push(
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(i))
                            .build()
                            .expect("put"),
                    )
                    .build(),
            );
        }
    }
    for (k, running) in shards.iter().enumerate() {
        let shard = HashMap::from([
            ("pk".to_string(), s(format!("pool#{POOL}"))),
            ("sk".to_string(), s(format!("count#{k:02}"))),
            ("queued".to_string(), n(0)),
            ("running".to_string(), n(running)),
        ]);
        requests.push(
            WriteRequest::builder()
                .put_request(
                    PutRequest::builder()
                        .set_item(Some(shard))
                        .build()
                        .expect("put"),
                )
                .build(),
        );
    }
    for batch in requests.chunks(25) {
        let mut pending = batch.to_vec();
        while !pending.is_empty() {
            let out = ddb
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .expect("BatchWriteItem");
            pending = out
                .unprocessed_items()
                .and_then(|u| u.get(table))
                .cloned()
                .unwrap_or_default();
        }
    }
}

/// DynamoDB's item size: attribute names plus values (strings by UTF-8 length, numbers
/// about one byte per two digits plus one).
fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    fn value(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
            AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
            AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value(v)).sum::<usize>(),
            AttributeValue::M(m) => {
                3 + m.iter().map(|(k, v)| 1 + k.len() + value(v)).sum::<usize>()
            }
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// (largest item in bytes, its key, number of items) from a full `Scan`.
async fn largest_item(ddb: &aws_sdk_dynamodb::Client, table: &str) -> (usize, String, usize) {
    let mut largest = (0, String::new(), 0);
    let mut start = None;
    loop {
        let page = ddb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("Scan");
        for item in page.items() {
            largest.2 += 1;
            let size = item_size(item);
            if size > largest.0 {
                let key = |a: &str| match item.get(a) {
                    Some(AttributeValue::S(v)) => v.clone(),
                    _ => String::new(),
                };
                largest.0 = size;
                largest.1 = format!("{}/{}", key("pk"), key("sk"));
            }
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    largest
}

/// Bytes of every response body the client deserialized (each attempt's).
#[derive(Debug, Clone, Default)]
struct ResponseBytes(Arc<AtomicU64>);

impl ResponseBytes {
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Intercept for ResponseBytes {
    fn name(&self) -> &'static str {
        "ResponseBytes"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let n = context.response().body().bytes().map_or(0, <[u8]>::len);
        self.0.fetch_add(n as u64, Ordering::SeqCst);
        Ok(())
    }
}

/// One delivery's ledger work: the transition and one account read.
#[derive(Debug)]
struct Delivery {
    what: String,
    /// Requests of the transition and the account read together.
    requests: u32,
    /// Bytes of the account read's response.
    account_bytes: u64,
}

/// What one job's three deliveries cost: requests per (transition + account read), and the
/// account read's response size.
async fn one_job(
    ledger: &DynamoLedger,
    counter: &Counter,
    bytes: &ResponseBytes,
    job: u64,
) -> Vec<Delivery> {
    let mut out = Vec::new();
    for (to, runner_name) in [
        (JobState::Queued, None),
        (JobState::InProgress, Some(runner(job))),
        (JobState::Completed, Some(runner(job))),
    ] {
        counter.take();
        let t = Transition {
            job_id: job,
            pool: POOL.into(),
            to,
            runner: runner_name,
            at: AT + 60,
            repository: Some("octo-org/app".into()),
        };
        assert!(ledger.record(&t).await.expect("record").is_applied());
        let before = bytes.get();
        ledger.pool(POOL).await.expect("account");
        let account_bytes = bytes.get() - before;
        let calls = counter.take();
        let total = calls.values().sum::<u32>();
        let detail = calls
            .iter()
            .map(|(op, c)| format!("{op} {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(Delivery {
            what: format!("{} ({detail})", to.as_str()),
            requests: total,
            account_bytes,
        });
    }
    out
}

/// Reads the busy list with `ledger` and checks it holds exactly the runners of `jobs`.
/// Returns (Query requests, response bytes).
async fn busy_list(
    ledger: &DynamoLedger,
    counter: &Counter,
    bytes: &ResponseBytes,
    jobs: std::ops::Range<u64>,
) -> (u32, u64) {
    counter.take();
    let before = bytes.get();
    let mut busy = ledger.busy_runners(POOL).await.expect("busy runners");
    let read = bytes.get() - before;
    let queries = counter.take().get("Query").copied().unwrap_or(0);
    busy.sort();
    let mut want: Vec<String> = jobs.map(runner).collect();
    want.sort();
    assert!(
        busy == want,
        "busy list: {} runners, want {}",
        busy.len(),
        want.len()
    );
    (queries, read)
}

fn counting_ledger(sdk: &SdkConfig, table: &str) -> (DynamoLedger, Counter, ResponseBytes) {
    let counter = Counter::default();
    let bytes = ResponseBytes::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(counter.clone())
            .interceptor(bytes.clone())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(std::time::Duration::from_secs(60))
                    .operation_attempt_timeout(std::time::Duration::from_secs(60))
                    .build(),
            )
            .build(),
    );
    (
        DynamoLedger::new(client, table, Default::default()),
        counter,
        bytes,
    )
}

/// Busy items per page of the paged reader: 10,000 busy runners are three pages.
const BUSY_PAGE: i32 = 4_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_delivery_requests_and_item_size_do_not_grow_with_running_jobs() {
    let started = Instant::now();
    let moto = Moto::start();
    let sdk = sdk(&moto.endpoint).await;
    let table = "scale-ledger";
    create_table(&sdk, table).await;
    let ddb = ddb_client(&sdk);
    let (ledger, counter, bytes) = counting_ledger(&sdk, table);
    let paged = ledger.clone().with_busy_page(Some(BUSY_PAGE));
    let mut shards = vec![0u64; COUNTER_SHARDS as usize];

    seed_running(&ddb, table, FIRST_JOB..FIRST_JOB + 10, &mut shards).await;
    let small = one_job(&ledger, &counter, &bytes, FIRST_JOB + 20_000).await;
    let small_item = largest_item(&ddb, table).await;
    let account = ledger.pool(POOL).await.expect("account");
    assert_eq!(account.running, 10);
    let small_busy = busy_list(&ledger, &counter, &bytes, FIRST_JOB..FIRST_JOB + 10).await;
    let small_paged = busy_list(&paged, &counter, &bytes, FIRST_JOB..FIRST_JOB + 10).await;

    seed_running(&ddb, table, FIRST_JOB + 10..FIRST_JOB + 10_000, &mut shards).await;
    let seeded = started.elapsed();
    let account = ledger.pool(POOL).await.expect("account");
    assert_eq!(account.running, 10_000);
    let large = one_job(&ledger, &counter, &bytes, FIRST_JOB + 20_001).await;
    let large_item = largest_item(&ddb, table).await;
    let large_busy = busy_list(&ledger, &counter, &bytes, FIRST_JOB..FIRST_JOB + 10_000).await;
    let large_paged = busy_list(&paged, &counter, &bytes, FIRST_JOB..FIRST_JOB + 10_000).await;

    println!("DynamoDB requests per delivery (transition + account read), account read bytes:");
    for (a, b) in small.iter().zip(&large) {
        println!(
            "  {}: {} requests, {} B with 10 running; {} requests, {} B with 10,000 running",
            a.what, a.requests, a.account_bytes, b.requests, b.account_bytes
        );
    }
    println!(
        "busy list (reconcile and completions only): {} Query, {} B with 10 running; {} Query, {} B with 10,000 running; {}-item pages: {} and {} Query",
        small_busy.0, small_busy.1, large_busy.0, large_busy.1, BUSY_PAGE, small_paged.0, large_paged.0
    );
    println!(
        "largest item: {} B ({}) of {} items with 10 running; {} B ({}) of {} items with 10,000 running",
        small_item.0, small_item.1, small_item.2, large_item.0, large_item.1, large_item.2
    );
    println!(
        "seeded in {:.1} s, whole test {:.1} s",
        seeded.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for (a, b) in small.iter().zip(&large) {
        assert_eq!(
            a.requests, b.requests,
            "{}: requests grew with running jobs",
            a.what
        );
        // The same 16 shards; only the digits of the counts and stamps may differ.
        assert!(
            b.account_bytes <= a.account_bytes + 96 && b.account_bytes < 2048,
            "{}: the account read grew: {} B -> {} B",
            a.what,
            a.account_bytes,
            b.account_bytes
        );
    }
    // The busy list is still complete across pages.
    assert_eq!(small_paged.0, 1);
    assert_eq!(large_paged.0, 10_000u32.div_ceil(BUSY_PAGE as u32));
    assert!(
        large_item.0 <= small_item.0,
        "the largest item grew: {small_item:?} -> {large_item:?}"
    );
    assert!(large_item.0 < 1024, "{large_item:?}");
}
