//! The whole delivery flow through `Service`: HTTP answers, scaling, duplicates, faults.
//!
//! `FlakyFleet` below is a fault-injecting wrapper around the real in-process `LocalFleet`
//! (it fails or stalls on demand); the cloud fleets are tested against moto and an ARM
//! double in their own crates.

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::signature::sign;
use scalehook_core::{
    Config, Fleet, FleetError, FleetState, LocalFleet, MemoryLedger, PoolConfig, Service,
    WebhookSecrets,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "test-secret-value";

#[derive(Default)]
struct FlakyFleet {
    inner: LocalFleet,
    fail: AtomicBool,
    stall: AtomicBool,
}

impl FlakyFleet {
    async fn check(&self) -> Result<(), FleetError> {
        if self.stall.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(FleetError::Unavailable("injected".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Fleet for FlakyFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        self.check().await?;
        self.inner.describe(pool).await
    }
    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        self.check().await?;
        self.inner.set_desired(pool, desired).await
    }
    async fn remove_instance(&self, pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        self.check().await?;
        self.inner.remove_instance(pool, id).await
    }
    async fn set_protection(
        &self,
        pool: &PoolConfig,
        ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        self.check().await?;
        self.inner.set_protection(pool, ids, protected).await
    }
}

struct Harness {
    service: Service,
    ledger: Arc<MemoryLedger>,
    fleet: Arc<FlakyFleet>,
}

const CONFIG: &str = r#"
[[pools]]
name = "linux"
labels = ["self-hosted", "linux"]
min = 0
max = 3
standby = 0

[[pools]]
name = "big"
labels = ["self-hosted", "big"]
min = 1
max = 4
standby = 1
runners_per_instance = 2
"#;

fn harness() -> Harness {
    let ledger = Arc::new(MemoryLedger::new());
    let fleet = Arc::new(FlakyFleet::default());
    let mut config = Config::from_toml(CONFIG).expect("config");
    config.max_body_bytes = 4096;
    let service = Service::new(
        config,
        WebhookSecrets::new([SECRET]).expect("secret"),
        ledger.clone(),
        fleet.clone(),
    )
    .with_log(scalehook_core::LogFormat::Off);
    Harness {
        service,
        ledger,
        fleet,
    }
}

fn job(action: &str, id: u64, labels: &[&str], runner: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "workflow_job": {"id": id, "run_id": 7, "labels": labels, "runner_name": runner,
                         "runner_id": runner.map(|_| 11)},
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}}
    })
    .to_string()
    .into_bytes()
}

fn headers(event: &str, body: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "x-github-event",
        HeaderValue::from_str(event).expect("event"),
    );
    h.insert("x-github-delivery", HeaderValue::from_static("d-1"));
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(SECRET.as_bytes(), body)).expect("sig"),
    );
    h
}

impl Harness {
    async fn deliver(&self, event: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let a = self
            .service
            .handle(&Method::POST, &headers(event, body), body)
            .await;
        (a.status, serde_json::from_str(&a.body).expect("json body"))
    }

    async fn summary(&self) -> Vec<(String, u32, u32, u32)> {
        self.service
            .summary()
            .await
            .expect("summary")
            .into_iter()
            .map(|p| (p.name, p.desired, p.queued, p.running))
            .collect()
    }

    async fn desired(&self, pool: &str) -> u32 {
        let p = self.service.config().pool(pool).expect("pool").clone();
        self.fleet
            .inner
            .describe(&p)
            .await
            .expect("describe")
            .desired
    }
}

const LINUX: &[&str] = &["self-hosted", "Linux"];

#[tokio::test]
async fn queued_scales_out_and_duplicates_change_nothing() {
    let h = harness();
    let (status, body) = h
        .deliver("workflow_job", &job("queued", 1, LINUX, None))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "handled");
    assert_eq!(body["pool"], "linux");
    assert_eq!(body["action"], "scale_out");
    assert_eq!(body["desired"], 1);
    assert_eq!(body["duplicate"], false);
    let (status, body) = h
        .deliver("workflow_job", &job("queued", 1, LINUX, None))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["duplicate"], true);
    assert_eq!(body["action"], "hold");
    assert_eq!(h.desired("linux").await, 1);
    assert_eq!(h.ledger.pool_len(), 1);
}

#[tokio::test]
async fn max_clamps_and_completion_scales_in_one_idle_instance() {
    let h = harness();
    for id in 1..=5 {
        h.deliver("workflow_job", &job("queued", id, LINUX, None))
            .await;
    }
    assert_eq!(h.desired("linux").await, 3, "clamped at max");
    // two jobs start on the first two instances
    h.deliver(
        "workflow_job",
        &job("in_progress", 1, LINUX, Some("linux-0001")),
    )
    .await;
    h.deliver(
        "workflow_job",
        &job("in_progress", 2, LINUX, Some("runner-linux-0002")),
    )
    .await;
    // the queued ones are cancelled
    for id in 3..=5 {
        h.deliver("workflow_job", &job("completed", id, LINUX, None))
            .await;
    }
    // 3 instances, 2 busy: one idle, standby 0: the idle one goes
    let p = h.service.config().pool("linux").expect("pool").clone();
    let state = h.fleet.inner.describe(&p).await.expect("describe");
    let ids: Vec<_> = state.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["linux-0001", "linux-0002"],
        "busy instances survive"
    );
    assert!(
        state.instances.iter().all(|i| i.protected),
        "busy ones protected"
    );
    // job 1 completes: its instance becomes idle and is removed; the busy one stays
    let (_, body) = h
        .deliver(
            "workflow_job",
            &job("completed", 1, LINUX, Some("linux-0001")),
        )
        .await;
    assert_eq!(body["action"], "remove_idle");
    let state = h.fleet.inner.describe(&p).await.expect("describe");
    let ids: Vec<_> = state.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, vec!["linux-0002"]);
    assert_eq!(h.summary().await[0], ("linux".to_string(), 1, 0, 1));
}

#[tokio::test]
async fn runners_per_instance_and_min() {
    let h = harness();
    let big = &["self-hosted", "big"];
    // min 1 and standby 1 with 2 runners per instance: 3 queued -> ceil((3+1)/2) = 2
    for id in 1..=3 {
        h.deliver("workflow_job", &job("queued", id, big, None))
            .await;
    }
    assert_eq!(h.desired("big").await, 2);
    for id in 1..=3 {
        h.deliver("workflow_job", &job("completed", id, big, None))
            .await;
    }
    // scale-in stops at ceil(standby/2) = 1 = min
    h.service.reconcile().await;
    assert_eq!(h.desired("big").await, 1);
}

#[tokio::test]
async fn out_of_order_and_late_events_never_go_back() {
    let h = harness();
    h.deliver(
        "workflow_job",
        &job("completed", 9, LINUX, Some("linux-0001")),
    )
    .await;
    h.deliver(
        "workflow_job",
        &job("in_progress", 9, LINUX, Some("linux-0001")),
    )
    .await;
    let (_, body) = h
        .deliver("workflow_job", &job("queued", 9, LINUX, None))
        .await;
    assert_eq!(body["duplicate"], true);
    assert_eq!(body["queued"], 0);
    assert_eq!(body["running"], 0);
    assert_eq!(h.desired("linux").await, 0);
}

#[tokio::test]
async fn ignored_deliveries_answer_202_and_change_nothing() {
    let h = harness();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("push", b"{}".to_vec(), "event push"),
        (
            "workflow_job",
            job("queued", 1, &["ubuntu-latest"], None),
            "no pool",
        ),
        (
            "workflow_job",
            job("started", 2, LINUX, None),
            "action started",
        ),
        ("workflow_job", job("completed", 3, &[], None), "no pool"),
    ];
    for (event, body, reason) in cases {
        let (status, answer) = h.deliver(event, &body).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["status"], "ignored");
        assert!(
            answer["reason"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{answer}"
        );
    }
    assert!(h.ledger.is_empty());
    assert_eq!(h.desired("linux").await, 0);
}

#[tokio::test]
async fn allow_lists_ignore_other_organizations() {
    let ledger = Arc::new(MemoryLedger::new());
    let config = Config::from_toml(&format!(
        "allowed_organizations = [\"someone-else\"]\n{CONFIG}"
    ))
    .expect("config");
    let service = Service::new(
        config,
        WebhookSecrets::new([SECRET]).expect("secret"),
        ledger.clone(),
        Arc::new(LocalFleet::new()),
    );
    let body = job("queued", 1, LINUX, None);
    let a = service
        .handle(&Method::POST, &headers("workflow_job", &body), &body)
        .await;
    assert_eq!(a.status, 202);
    assert!(ledger.is_empty());
}

#[tokio::test]
async fn ping_is_pong() {
    let h = harness();
    let (status, body) = h
        .deliver(
            "ping",
            br#"{"zen":"Keep it logically awesome.","hook_id":1}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "pong");
}

#[tokio::test]
async fn bad_input_gets_4xx_json_and_no_state_change() {
    let h = harness();
    let good = job("queued", 1, LINUX, None);
    let post = Method::POST;
    let mut cases: Vec<(Method, HeaderMap, Vec<u8>, u16, &str)> = Vec::new();
    cases.push((
        Method::GET,
        headers("workflow_job", &good),
        good.clone(),
        405,
        "POST",
    ));
    let mut h_nosig = headers("workflow_job", &good);
    h_nosig.remove("x-hub-signature-256");
    cases.push((post.clone(), h_nosig, good.clone(), 401, "missing"));
    let mut h_bad = headers("workflow_job", &good);
    h_bad.insert("x-hub-signature-256", HeaderValue::from_static("sha256=00"));
    cases.push((post.clone(), h_bad, good.clone(), 401, "malformed"));
    let mut h_sha1 = headers("workflow_job", &good);
    h_sha1.remove("x-hub-signature-256");
    h_sha1.insert(
        "x-hub-signature",
        HeaderValue::from_static("sha1=3374ef144403e8035423b23b02e2c9d7a4c50368"),
    );
    cases.push((post.clone(), h_sha1, good.clone(), 401, "missing"));
    let mut tampered = good.clone();
    tampered[3] ^= 1;
    cases.push((
        post.clone(),
        headers("workflow_job", &good),
        tampered,
        401,
        "does not match",
    ));
    let broken = b"{\"action\": \"queued\", \"workflow_job\": ".to_vec();
    cases.push((
        post.clone(),
        headers("workflow_job", &broken),
        broken,
        400,
        "malformed",
    ));
    let mut h_noevent = headers("workflow_job", &good);
    h_noevent.remove("x-github-event");
    cases.push((post.clone(), h_noevent, good.clone(), 400, "X-GitHub-Event"));
    let mut h_form = headers("workflow_job", &good);
    h_form.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    cases.push((post.clone(), h_form, good.clone(), 415, "application/json"));
    let big = vec![b' '; 4097];
    cases.push((
        post.clone(),
        headers("workflow_job", &big),
        big,
        413,
        "max_body_bytes",
    ));

    for (method, hdrs, body, want, reason) in cases {
        let a = h.service.handle(&method, &hdrs, &body).await;
        assert_eq!(a.status, want, "{}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).expect("json");
        assert_eq!(v["status"], "error");
        assert!(
            v["reason"].as_str().unwrap_or_default().contains(reason),
            "{want}: {}",
            a.body
        );
        assert!(!a.body.contains(SECRET));
    }
    assert!(h.ledger.is_empty(), "no state change");
    assert_eq!(h.desired("linux").await, 0);
    assert_eq!(
        h.service
            .metrics()
            .deliveries(scalehook_core::Outcome::Unauthorized),
        4
    );
}

#[tokio::test]
async fn content_type_with_charset_is_json() {
    let h = harness();
    let body = job("queued", 1, LINUX, None);
    let mut hdrs = headers("workflow_job", &body);
    hdrs.insert(
        "content-type",
        HeaderValue::from_static("Application/JSON; charset=utf-8"),
    );
    let a = h.service.handle(&Method::POST, &hdrs, &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn fleet_failure_is_5xx_ledger_stays_exact_and_redelivery_repairs() {
    let h = harness();
    h.fleet.fail.store(true, Ordering::SeqCst);
    let body = job("queued", 1, LINUX, None);
    let (status, answer) = h.deliver("workflow_job", &body).await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["status"], "error");
    // the job is recorded exactly once
    assert_eq!(h.ledger.pool_len(), 1);
    h.fleet.fail.store(false, Ordering::SeqCst);
    assert_eq!(h.desired("linux").await, 0);
    // GitHub redelivery: same body, a duplicate for the ledger, and capacity is repaired
    let (status, answer) = h.deliver("workflow_job", &body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["queued"], 1);
    assert_eq!(h.desired("linux").await, 1);
}

#[tokio::test(start_paused = true)]
async fn stalled_fleet_times_out_with_504() {
    let h = harness();
    h.fleet.stall.store(true, Ordering::SeqCst);
    let (status, answer) = h
        .deliver("workflow_job", &job("queued", 1, LINUX, None))
        .await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(h.ledger.pool_len(), 1);
}

#[tokio::test]
async fn reconcile_converges_after_a_lost_delivery_and_expires_stale_jobs() {
    let clock = Arc::new(scalehook_core::ManualClock::new(1_000_000));
    let ledger = Arc::new(MemoryLedger::new());
    let fleet = Arc::new(LocalFleet::new());
    let config =
        Config::from_toml(&format!("[ledger]\nqueued_ttl_secs = 600\n{CONFIG}")).expect("config");
    let service = Service::new(
        config,
        WebhookSecrets::new([SECRET]).expect("secret"),
        ledger.clone(),
        fleet.clone(),
    )
    .with_clock(clock.clone());
    let deliver = |body: Vec<u8>| {
        let service = &service;
        async move {
            service
                .handle(&Method::POST, &headers("workflow_job", &body), &body)
                .await
        }
    };
    deliver(job("queued", 1, LINUX, None)).await;
    deliver(job("queued", 2, LINUX, None)).await;
    let linux = service.config().pool("linux").expect("pool").clone();
    assert_eq!(fleet.describe(&linux).await.expect("d").desired, 2);
    // job 1's completion is lost; job 2 completes
    deliver(job("completed", 2, LINUX, None)).await;
    assert_eq!(fleet.describe(&linux).await.expect("d").desired, 1);
    // within the TTL reconcile keeps capacity for job 1
    let report = service.reconcile().await;
    assert!(report.ok());
    assert_eq!(report.expired, 0);
    assert_eq!(fleet.describe(&linux).await.expect("d").desired, 1);
    // past the queued TTL job 1 is expired and the pool converges to 0
    clock.advance(601);
    let report = service.reconcile().await;
    assert_eq!(report.expired, 1);
    assert_eq!(fleet.describe(&linux).await.expect("d").desired, 0);
    // a late redelivery of job 1's queued stays a no-op
    let a = deliver(job("queued", 1, LINUX, None)).await;
    assert_eq!(a.report.duplicate, Some(true));
    assert_eq!(fleet.describe(&linux).await.expect("d").desired, 0);
}

#[tokio::test]
async fn log_and_answer_never_contain_the_secret_or_payload() {
    let h = harness();
    let body = job("queued", 1, LINUX, None);
    let a = h
        .service
        .handle(&Method::POST, &headers("workflow_job", &body), &body)
        .await;
    let report = serde_json::to_string(&a.report).expect("report");
    assert!(!report.contains(SECRET));
    assert!(
        !report.contains("octo-org/app"),
        "no payload content in the report"
    );
    assert!(!a.body.contains(SECRET));
    let line = scalehook_core::metrics::emf_line(&a.report, 0);
    assert!(!line.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deliveries_leave_exact_counts_and_the_highest_target() {
    let h = Arc::new(harness());
    let mut tasks = Vec::new();
    // 40 jobs, each queued twice (a duplicate), all at once
    for id in 0..80u64 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let body = job("queued", 1000 + id % 40, &["self-hosted", "big"], None);
            h.deliver("workflow_job", &body).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    let summary = h.summary().await;
    let big = summary.iter().find(|p| p.0 == "big").expect("big");
    // ceil((40 + standby 1) / 2) = 21, clamped to max 4
    assert_eq!(big, &("big".to_string(), 4, 40, 0));
    assert_eq!(h.ledger.pool_len(), 40);
}

/// A fleet whose cloud group has its own max below the pool's (an ASG's max_size).
struct CappedFleet {
    inner: LocalFleet,
    group_max: u32,
}

#[async_trait]
impl Fleet for CappedFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        let mut state = self.inner.describe(pool).await?;
        state.max = Some(self.group_max);
        Ok(state)
    }
    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        self.inner.set_desired(pool, desired).await
    }
    async fn remove_instance(&self, pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        self.inner.remove_instance(pool, id).await
    }
    async fn set_protection(
        &self,
        pool: &PoolConfig,
        ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        self.inner.set_protection(pool, ids, protected).await
    }
}

#[tokio::test]
async fn at_max_with_queue_uses_the_groups_own_max_when_lower() {
    let fleet = Arc::new(CappedFleet {
        inner: LocalFleet::default(),
        group_max: 2,
    });
    let service = Service::new(
        Config::from_toml(CONFIG).expect("config"),
        WebhookSecrets::new([SECRET]).expect("secret"),
        Arc::new(MemoryLedger::new()),
        fleet,
    )
    .with_log(scalehook_core::LogFormat::Off);
    let deliver = |id: u64| {
        let body = job("queued", id, LINUX, None);
        let service = &service;
        async move {
            service
                .handle(&Method::POST, &headers("workflow_job", &body), &body)
                .await
        }
    };
    deliver(1).await;
    let gauges = service.metrics().pool("linux").expect("gauges");
    assert_eq!((gauges.desired, gauges.at_max_with_queue), (1, 0));
    // Three jobs queued, the group stops at 2 (pool max 3): jobs wait, and the gauge says so.
    deliver(2).await;
    deliver(3).await;
    let gauges = service.metrics().pool("linux").expect("gauges");
    assert_eq!(gauges.desired, 2, "clamped to the group's max");
    assert_eq!(gauges.queued, 3);
    assert_eq!(
        gauges.at_max_with_queue, 1,
        "at the effective max with a queue"
    );
}

/// Counts reads of the busy list (the one ledger read that grows with running jobs).
#[derive(Default)]
struct CountingLedger {
    inner: MemoryLedger,
    busy_reads: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl scalehook_core::Ledger for CountingLedger {
    async fn record(
        &self,
        t: &scalehook_core::Transition,
    ) -> Result<scalehook_core::Recorded, scalehook_core::LedgerError> {
        self.inner.record(t).await
    }
    async fn pool(
        &self,
        pool: &str,
    ) -> Result<scalehook_core::PoolLedger, scalehook_core::LedgerError> {
        self.inner.pool(pool).await
    }
    async fn busy_runners(&self, pool: &str) -> Result<Vec<String>, scalehook_core::LedgerError> {
        self.busy_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.busy_runners(pool).await
    }
    async fn expire(
        &self,
        now: u64,
        ttl: &scalehook_core::config::LedgerTtl,
    ) -> Result<scalehook_core::ledger::Expired, scalehook_core::LedgerError> {
        self.inner.expire(now, ttl).await
    }
}

/// A demand delivery (queued, in_progress) reads the account only, never the busy list,
/// and still protects the instance its own runner is on; a completion and reconcile read
/// the complete list, and only such passes give the fleet census.
#[tokio::test]
async fn demand_never_reads_the_busy_list_completion_and_reconcile_do() {
    let ledger = Arc::new(CountingLedger::default());
    let fleet = Arc::new(FlakyFleet::default());
    let service = Service::new(
        Config::from_toml(CONFIG).expect("config"),
        WebhookSecrets::new([SECRET]).expect("secret"),
        ledger.clone(),
        fleet.clone(),
    )
    .with_log(scalehook_core::LogFormat::Off);
    let deliver = |body: Vec<u8>| {
        let service = &service;
        async move {
            let a = service
                .handle(&Method::POST, &headers("workflow_job", &body), &body)
                .await;
            assert_eq!(a.status, 200, "{}", a.body);
        }
    };
    let census = |service: &Service| {
        service
            .metrics()
            .render_prometheus()
            .lines()
            .filter(|l| l.starts_with("scalehook_pool_instances{"))
            .count()
    };
    for id in 1..=3 {
        deliver(job("queued", id, LINUX, None)).await;
    }
    deliver(job("in_progress", 1, LINUX, Some("linux-0001"))).await;
    deliver(job("in_progress", 2, LINUX, Some("linux-0002"))).await;
    assert_eq!(ledger.busy_reads.load(Ordering::SeqCst), 0);
    assert_eq!(census(&service), 0, "no census from demand passes");
    let p = service.config().pool("linux").expect("pool").clone();
    let state = fleet.inner.describe(&p).await.expect("describe");
    let protected: Vec<&str> = state
        .instances
        .iter()
        .filter(|i| i.protected)
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(protected, vec!["linux-0001", "linux-0002"]);

    deliver(job("completed", 3, LINUX, None)).await;
    assert!(ledger.busy_reads.load(Ordering::SeqCst) >= 1);
    assert!(census(&service) > 0, "a completion's pass gives the census");
    // The idle instance went, the busy ones stayed.
    let state = fleet.inner.describe(&p).await.expect("describe");
    let ids: Vec<&str> = state.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, vec!["linux-0001", "linux-0002"]);

    let before = ledger.busy_reads.load(Ordering::SeqCst);
    assert!(service.reconcile().await.ok());
    assert!(ledger.busy_reads.load(Ordering::SeqCst) > before);
}
