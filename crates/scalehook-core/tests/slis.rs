//! Job SLIs and delivery latency through the whole `Service`: queue wait and run time come
//! from the ledger's own timestamps and are counted once per job, whatever GitHub does with
//! its deliveries (duplicates, reordering, a 5xx and its redelivery); the reconcile-time
//! gauges; the EMF lines stay within CloudWatch's limits.

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::config::LedgerTtl;
use scalehook_core::ledger::{Expired, JobRecord};
use scalehook_core::metrics::{self, Metrics};
use scalehook_core::policy::Census;
use scalehook_core::signature::sign;
use scalehook_core::{
    Answer, Config, Fleet, FleetError, FleetState, JobState, Ledger, LedgerError, LocalFleet,
    ManualClock, MemoryLedger, PoolConfig, PoolLedger, Recorded, Service, Transition,
    WebhookSecrets,
};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const SECRET: &str = "sli-test-secret";
const LINUX: &[&str] = &["self-hosted", "linux"];
const CONFIG: &str = r#"
[[pools]]
name = "linux"
labels = ["self-hosted", "linux"]
min = 0
max = 5

[[pools]]
name = "big"
labels = ["self-hosted", "big"]
min = 0
max = 2
"#;

/// A local fleet whose calls fail while `fail` is set.
#[derive(Default)]
struct FailingFleet {
    inner: LocalFleet,
    fail: AtomicBool,
}

impl FailingFleet {
    fn check(&self) -> Result<(), FleetError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(FleetError::Unavailable("injected".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Fleet for FailingFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        self.check()?;
        self.inner.describe(pool).await
    }
    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        self.check()?;
        self.inner.set_desired(pool, desired).await
    }
    async fn remove_instance(&self, pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        self.check()?;
        self.inner.remove_instance(pool, id).await
    }
    async fn set_protection(
        &self,
        pool: &PoolConfig,
        ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        self.check()?;
        self.inner.set_protection(pool, ids, protected).await
    }
}

/// A memory ledger that also answers `unfinished_before` from the transitions it saw (so
/// the test does not depend on which backends implement the hook).
#[derive(Default)]
struct SeeingLedger {
    inner: MemoryLedger,
    seen: Mutex<HashMap<u64, JobRecord>>,
}

#[async_trait]
impl Ledger for SeeingLedger {
    async fn record(&self, t: &Transition) -> Result<Recorded, LedgerError> {
        let r = self.inner.record(t).await?;
        if let Some(rec) = self.inner.job(t.job_id) {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(t.job_id, rec);
        }
        Ok(r)
    }
    async fn pool(&self, pool: &str) -> Result<PoolLedger, LedgerError> {
        self.inner.pool(pool).await
    }
    async fn busy_runners(&self, pool: &str) -> Result<Vec<String>, LedgerError> {
        self.inner.busy_runners(pool).await
    }
    async fn expire(&self, now: u64, ttl: &LedgerTtl) -> Result<Expired, LedgerError> {
        self.inner.expire(now, ttl).await
    }
    async fn unfinished_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, LedgerError> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<JobRecord> = seen
            .values()
            .filter(|r| r.state != JobState::Completed && r.updated_at <= before)
            .cloned()
            .collect();
        out.sort_by_key(|r| (r.updated_at, r.job_id));
        out.truncate(limit);
        Ok(out)
    }
}

struct Harness {
    service: Service,
    clock: Arc<ManualClock>,
    fleet: Arc<FailingFleet>,
}

fn harness() -> Harness {
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let fleet = Arc::new(FailingFleet::default());
    let service = Service::new(
        Config::from_toml(CONFIG).expect("config"),
        WebhookSecrets::new([SECRET]).expect("secret"),
        Arc::new(SeeingLedger::default()),
        fleet.clone(),
    )
    .with_clock(clock.clone())
    .with_log(scalehook_core::LogFormat::Off);
    Harness {
        service,
        clock,
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

impl Harness {
    async fn send(&self, action: &str, id: u64, runner: Option<&str>) -> Answer {
        let body = job(action, id, LINUX, runner);
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
        h.insert("x-github-delivery", HeaderValue::from_static("d-1"));
        h.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(&sign(SECRET.as_bytes(), &body)).expect("sig"),
        );
        self.service.handle(&Method::POST, &h, &body).await
    }

    fn metrics(&self) -> &Metrics {
        self.service.metrics()
    }

    /// (count, sum) of a pool's queue wait and run time histograms.
    fn slis(&self, pool: &str) -> ((u64, f64), (u64, f64)) {
        let m = self.metrics();
        let wait = m
            .queue_wait(pool)
            .map_or((0, 0.0), |h| (h.count(), h.sum()));
        let run = m.run_time(pool).map_or((0, 0.0), |h| (h.count(), h.sum()));
        (wait, run)
    }
}

#[tokio::test]
async fn each_job_is_measured_once_across_duplicates() {
    let h = harness();
    h.send("queued", 1, None).await;
    h.clock.advance(45);
    let started = h.send("in_progress", 1, Some("linux-0001")).await;
    assert_eq!(started.status, 200);
    assert_eq!(started.report.queue_wait_secs, Some(45));
    assert_eq!(started.report.run_secs, None);
    // Duplicates and late redeliveries of earlier states measure nothing.
    h.clock.advance(10);
    for (action, runner) in [
        ("in_progress", Some("linux-0001")),
        ("queued", None),
        ("waiting", None),
    ] {
        let a = h.send(action, 1, runner).await;
        assert_eq!(a.report.duplicate, Some(true), "{action}");
        assert_eq!((a.report.queue_wait_secs, a.report.run_secs), (None, None));
    }
    h.clock.advance(290);
    let done = h.send("completed", 1, Some("linux-0001")).await;
    assert_eq!(done.report.run_secs, Some(300));
    assert_eq!(
        h.send("completed", 1, Some("linux-0001"))
            .await
            .report
            .run_secs,
        None
    );
    assert_eq!(h.slis("linux"), ((1, 45.0), (1, 300.0)));
    assert!(h.metrics().queue_wait("big").is_none());
}

#[tokio::test]
async fn out_of_order_deliveries_measure_only_what_the_ledger_saw() {
    let h = harness();
    // Job 2: in_progress arrives before queued: its queue wait is unknown, never guessed.
    h.send("in_progress", 2, Some("linux-0001")).await;
    h.clock.advance(5);
    let late = h.send("queued", 2, None).await;
    assert_eq!(late.report.duplicate, Some(true));
    h.clock.advance(120);
    assert_eq!(
        h.send("completed", 2, Some("linux-0001"))
            .await
            .report
            .run_secs,
        Some(125)
    );
    // Job 3: completed first: nothing afterwards measures anything.
    h.send("completed", 3, Some("linux-0002")).await;
    h.clock.advance(30);
    h.send("in_progress", 3, Some("linux-0002")).await;
    h.send("queued", 3, None).await;
    // Job 4: queued -> completed (cancelled before it started): no queue wait, no run time.
    h.send("queued", 4, None).await;
    h.clock.advance(30);
    h.send("completed", 4, None).await;
    assert_eq!(h.slis("linux"), ((0, 0.0), (1, 125.0)));
}

#[tokio::test]
async fn a_5xx_and_its_redelivery_count_the_wait_once() {
    let h = harness();
    h.send("queued", 5, None).await;
    h.clock.advance(70);
    h.fleet.fail.store(true, Ordering::SeqCst);
    let failed = h.send("in_progress", 5, Some("linux-0001")).await;
    assert_eq!(failed.status, 502);
    // The ledger recorded the transition before the fleet failed: measured here, once.
    assert_eq!(failed.report.queue_wait_secs, Some(70));
    h.fleet.fail.store(false, Ordering::SeqCst);
    h.clock.advance(20);
    let redelivered = h.send("in_progress", 5, Some("linux-0001")).await;
    assert_eq!(redelivered.status, 200);
    assert_eq!(redelivered.report.queue_wait_secs, None);
    assert_eq!(h.slis("linux").0, (1, 70.0));
    // Every delivery, failed or not, is in the latency histogram.
    assert_eq!(h.metrics().latency().count(), 3);
}

#[tokio::test]
async fn reconcile_counts_jobs_waiting_past_the_threshold() {
    let h = harness();
    h.metrics().set_wait_threshold_secs(100);
    h.send("queued", 10, None).await;
    h.send("queued", 11, None).await;
    h.send("queued", 12, None).await;
    h.send("in_progress", 12, Some("linux-0001")).await;
    h.clock.advance(60);
    h.send("queued", 13, None).await;
    h.service.reconcile().await;
    assert_eq!(h.metrics().waiting_over("linux"), Some(0));
    h.clock.advance(50);
    h.service.reconcile().await;
    // Jobs 10 and 11 have waited 110 s; 12 started; 13 has waited 50 s.
    assert_eq!(h.metrics().waiting_over("linux"), Some(2));
    assert_eq!(h.metrics().waiting_over("big"), Some(0));
    let text = h.metrics().render_prometheus();
    assert!(text.contains("scalehook_pool_jobs_waiting_over_threshold{pool=\"linux\"} 2"));
    assert!(text.contains("scalehook_queue_wait_threshold_seconds 100"));
}

#[tokio::test]
async fn prometheus_histograms_are_cumulative_and_complete() {
    let h = harness();
    for (id, wait) in [(20, 4), (21, 65), (22, 7200)] {
        h.send("queued", id, None).await;
        h.clock.advance(wait);
        h.send("in_progress", id, Some("linux-0001")).await;
    }
    let text = h.metrics().render_prometheus();
    let buckets: Vec<(String, u64)> = text
        .lines()
        .filter(|l| l.starts_with("scalehook_job_queue_wait_seconds_bucket{pool=\"linux\""))
        .map(|l| {
            let (series, n) = l.rsplit_once(' ').expect("value");
            (series.to_string(), n.parse().expect("count"))
        })
        .collect();
    assert_eq!(buckets.len(), metrics::QUEUE_WAIT_BUCKETS.len() + 1);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert!(buckets[0].0.contains("le=\"5\""), "{buckets:?}");
    assert_eq!(buckets[0].1, 1);
    let inf = buckets.last().expect("+Inf");
    assert!(inf.0.contains("le=\"+Inf\""));
    assert_eq!(inf.1, 3);
    assert!(text.contains("scalehook_job_queue_wait_seconds_count{pool=\"linux\"} 3"));
    assert!(text.contains("scalehook_job_queue_wait_seconds_sum{pool=\"linux\"} 7269"));
    assert!(text.contains("# TYPE scalehook_delivery_duration_seconds histogram"));
    assert!(text.contains("scalehook_delivery_duration_seconds_count 6"));
}

#[test]
fn census_github_and_redelivered_reach_both_formats() {
    let m = Metrics::new();
    m.census(
        "linux",
        Census {
            live: 4,
            launching: 1,
            busy: 2,
            idle: 1,
            unregistered: Some(1),
            warm: 3,
        },
    );
    m.census("big", Census::default());
    m.github(Some(4321), 17);
    m.github_secondary_limits(2);
    m.redelivered(3);
    let text = m.render_prometheus();
    for needle in [
        "scalehook_pool_instances{pool=\"linux\",state=\"live\"} 4",
        "scalehook_pool_instances{pool=\"linux\",state=\"unregistered\"} 1",
        "scalehook_pool_instances{pool=\"linux\",state=\"warm\"} 3",
        "scalehook_github_rate_limit_remaining 4321",
        "scalehook_github_requests_total 17",
        "scalehook_github_secondary_rate_limits_total 2",
        "scalehook_redelivered_deliveries_total 3",
    ] {
        assert!(text.contains(needle), "{needle}\n{text}");
    }
    // Without a GitHub App the census has no unregistered figure.
    assert!(!text.contains("pool=\"big\",state=\"unregistered\""));
    let lines = metrics::emf_state_lines(&m, 1_700_000_000_000);
    let parsed: Vec<Value> = lines.iter().map(|l| check_emf(l)).collect();
    let linux = parsed.iter().find(|v| v["Pool"] == "linux").expect("linux");
    assert_eq!(linux["LiveInstances"], 4);
    assert_eq!(linux["UnregisteredInstances"], 1);
    assert_eq!(linux["WarmInstances"], 3, "warm instances, apart from live");
    let global = parsed
        .iter()
        .find(|v| v.get("Pool").is_none())
        .expect("global");
    assert_eq!(global["GitHubRateLimitRemaining"], 4321);
    assert_eq!(global["RedeliveredDeliveries"], 3);
    // Redeliveries are written once: the next pass reports 0.
    let again = metrics::emf_state_lines(&m, 1_700_000_060_000);
    let global = again
        .iter()
        .map(|l| check_emf(l))
        .find(|v| v.get("Pool").is_none())
        .expect("global");
    assert_eq!(global["RedeliveredDeliveries"], 0);
}

#[tokio::test]
async fn every_emf_line_is_within_cloudwatch_limits() {
    let h = harness();
    h.metrics().census("linux", Census::default());
    let mut lines = Vec::new();
    for (action, runner) in [
        ("queued", None),
        ("in_progress", Some("linux-0001")),
        ("in_progress", Some("linux-0001")),
        ("completed", Some("linux-0001")),
    ] {
        h.clock.advance(30);
        let a = h.send(action, 30, runner).await;
        lines.push(metrics::emf_line(&a.report, 1_700_000_000_000));
    }
    let unauthorized = h
        .service
        .handle(&Method::POST, &HeaderMap::new(), b"{}")
        .await;
    lines.push(metrics::emf_line(&unauthorized.report, 1_700_000_000_000));
    let report = h.service.reconcile().await;
    lines.push(metrics::emf_reconcile_line(&report, 1_700_000_000_000));
    if let Some(g) = h.metrics().pool("linux") {
        lines.push(metrics::emf_pool_line("linux", &g, 1_700_000_000_000));
    }
    lines.extend(metrics::emf_state_lines(h.metrics(), 1_700_000_000_000));
    let values: Vec<Value> = lines.iter().map(|l| check_emf(l)).collect();
    assert_eq!(values[1]["QueueWaitSeconds"], 30);
    assert_eq!(values[3]["RunSeconds"], 60);
    assert!(values[2].get("QueueWaitSeconds").is_none(), "duplicate");
    assert!(values
        .iter()
        .any(|v| v.get("JobsWaitingOverThreshold").is_some()));
}

/// Every kind of EMF line the code writes: a delivery that started a job, one that completed
/// it, a 4xx, a reconcile pass, a pool's gauges, the state lines with a full census.
async fn every_kind_of_emf_line() -> Vec<String> {
    let h = harness();
    let ts = 1_700_000_000_000;
    let mut lines = Vec::new();
    h.send("queued", 40, None).await;
    h.clock.advance(30);
    let started = h.send("in_progress", 40, Some("linux-0001")).await;
    lines.push(metrics::emf_line(&started.report, ts));
    h.clock.advance(30);
    let done = h.send("completed", 40, Some("linux-0001")).await;
    lines.push(metrics::emf_line(&done.report, ts));
    let rejected = h.service.handle(&Method::GET, &HeaderMap::new(), b"").await;
    lines.push(metrics::emf_line(&rejected.report, ts));
    let report = h.service.reconcile().await;
    lines.push(metrics::emf_reconcile_line(&report, ts));
    let gauges = h.metrics().pool("linux").expect("linux gauges");
    lines.push(metrics::emf_pool_line("linux", &gauges, ts));
    h.metrics().census(
        "linux",
        Census {
            unregistered: Some(0),
            ..Census::default()
        },
    );
    h.metrics().github(Some(5000), 1);
    lines.extend(metrics::emf_state_lines(h.metrics(), ts));
    lines
}

/// `infra/tests/emf-catalog.json`: every EMF metric the code writes, with its unit and
/// dimension sets. The Terraform tests check alarms and dashboard widgets against it; this
/// test keeps it equal to the code (`SCALEHOOK_BLESS=1` rewrites it).
#[tokio::test]
async fn the_emf_catalog_of_the_infra_tests_is_what_the_code_writes() {
    use std::collections::{BTreeMap, BTreeSet};
    let mut catalog: BTreeMap<String, (String, BTreeSet<Vec<String>>)> = BTreeMap::new();
    for line in every_kind_of_emf_line().await {
        let v = check_emf(&line);
        for d in v["_aws"]["CloudWatchMetrics"]
            .as_array()
            .expect("directives")
        {
            let sets: Vec<Vec<String>> =
                serde_json::from_value(d["Dimensions"].clone()).expect("dimension sets");
            for m in d["Metrics"].as_array().expect("metrics") {
                let name = m["Name"].as_str().expect("name").to_string();
                let unit = m["Unit"].as_str().expect("unit").to_string();
                let entry = catalog
                    .entry(name.clone())
                    .or_insert((unit.clone(), BTreeSet::new()));
                assert_eq!(entry.0, unit, "{name} has one unit");
                entry.1.extend(sets.iter().cloned());
            }
        }
    }
    let metrics: serde_json::Map<String, Value> = catalog
        .into_iter()
        .map(|(name, (unit, dims))| (name, serde_json::json!({"unit": unit, "dimensions": dims})))
        .collect();
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "namespace": metrics::EMF_NAMESPACE,
        "metrics": metrics,
    }))
    .expect("json")
        + "\n";
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/tests/emf-catalog.json");
    if std::env::var_os("SCALEHOOK_BLESS").is_some() {
        std::fs::write(&path, &text).expect("write the catalog");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        committed,
        text,
        "{} differs from what the code writes: rerun with SCALEHOOK_BLESS=1",
        path.display()
    );
}

/// CloudWatch's standard units (the EMF `Unit` field must be one of them).
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one EMF document against the specification's limits and returns it parsed: one
/// line of JSON under 256 KB; `_aws` with a millisecond `Timestamp` and directives; a
/// directive has a namespace (1-255 characters), at most 30 dimension keys per set, each a
/// string member of the root, at most 100 metrics, each with a valid unit and, at the root,
/// a number or an array of at most 100 numbers.
fn check_emf(line: &str) -> Value {
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.len() < 256 * 1024, "size");
    let v: Value = serde_json::from_str(line).expect("EMF line is JSON");
    let aws = &v["_aws"];
    assert!(
        aws["Timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_000_000_000_000),
        "{line}"
    );
    let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
    assert!(!directives.is_empty());
    for d in directives {
        let ns = d["Namespace"].as_str().expect("namespace");
        assert!(!ns.is_empty() && ns.len() <= 255 && !ns.starts_with("AWS/"));
        assert_eq!(ns, metrics::EMF_NAMESPACE);
        for set in d["Dimensions"].as_array().expect("dimension sets") {
            let keys = set.as_array().expect("dimension set");
            assert!(keys.len() <= 30, "{line}");
            for k in keys {
                let k = k.as_str().expect("dimension name");
                assert!(v[k].is_string(), "dimension {k} is a string member: {line}");
            }
        }
        let ms = d["Metrics"].as_array().expect("metrics");
        assert!(!ms.is_empty() && ms.len() <= 100, "{line}");
        for m in ms {
            let name = m["Name"].as_str().expect("name");
            assert!(!name.is_empty() && name.len() <= 255);
            let unit = m["Unit"].as_str().expect("unit");
            assert!(UNITS.contains(&unit), "unit {unit}");
            match &v[name] {
                Value::Number(_) => {}
                Value::Array(a) => {
                    assert!(a.len() <= 100 && a.iter().all(Value::is_number), "{name}")
                }
                other => panic!("metric {name} is {other} in {line}"),
            }
        }
    }
    v
}
