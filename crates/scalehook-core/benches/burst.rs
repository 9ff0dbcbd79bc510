//! Deliveries per second through the whole service in a burst (`make bench-burst`): the shape
//! of the core test `burst_over_eight_services_converges_with_few_fleet_calls` (8 independent
//! `Service`s, one `MemoryLedger` and one fleet stand-in shared, 300 jobs queued, then in
//! progress, then completed, every fifth delivered twice more), driven for throughput: each
//! service takes one delivery at a time from a shared queue (as a Lambda execution
//! environment takes one invocation at a time), on a multi-threaded runtime, with the real
//! signed payloads of `fixtures/github/`.
//!
//! Each run prints one `SCALEHOOK-BENCH {json}` line that `bench/measure.py` collects into
//! bench/RESULTS.md: deliveries, wall time, fleet calls by kind, 5xx answers, deferred
//! deliveries, and capacity against the policy's target after each phase. Runs without and
//! with a simulated fleet latency (`BENCH_BURST_FLEET_MS`, default 50 ms per fleet call).
//! `BENCH_BURST_RUNS` (default 10) and `BENCH_BURST_SLOW_RUNS` (default 3) set the runs.
//! Not a criterion bench: one burst is the unit measured, not an iteration.

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::signature::sign;
use scalehook_core::{
    Config, Fleet, FleetError, FleetState, Ledger, LocalFleet, LogFormat, MemoryLedger, PoolConfig,
    Service, WebhookSecrets,
};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "bench-webhook-secret";
const JOBS: u64 = 300;
const SERVICES: usize = 8;
const FIRST_JOB: u64 = 6_000_000_000;
/// The pool of the core burst test: 10 runners per instance, so 300 jobs fit in 30.
const CONFIG: &str = r#"
[[pools]]
name = "linux"
labels = ["self-hosted"]
min = 0
max = 40
standby = 0
runners_per_instance = 10
"#;
const QUEUED: &str = "workflow_job.queued.self-hosted.2021-capture.philips-labs.json";
const QUEUED_ID: &str = "3169272040";
const IN_PROGRESS: &str = "workflow_job.in_progress.octokit.json";
const COMPLETED: &str = "workflow_job.completed.success.with-organization.octokit.json";
const HOSTED_ID: &str = "289782451";

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/github")
        .join(name);
    let body = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    // Job times moved to now, as `scalehook replay` does: a job older than the ledger's
    // retention is refused as a replay, which is not the path measured here.
    let now = scalehook_core::Clock::now(&scalehook_core::SystemClock);
    let event = if name.starts_with("workflow_job") {
        "workflow_job"
    } else {
        ""
    };
    scalehook_core::trace::restamp_job_times(event, body.as_bytes(), now)
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or(body)
}

/// `LocalFleet` with every call counted and, optionally, delayed (a cloud API's latency).
struct RecordingFleet {
    inner: LocalFleet,
    latency: Duration,
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl RecordingFleet {
    async fn call(&self, kind: &'static str) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    fn take_calls(&self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl Fleet for RecordingFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        self.call("describe").await;
        self.inner.describe(pool).await
    }
    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        self.call("set_desired").await;
        self.inner.set_desired(pool, desired).await
    }
    async fn remove_instance(&self, pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        self.call("remove_instance").await;
        self.inner.remove_instance(pool, id).await
    }
    async fn replace_instance(&self, pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        self.call("replace_instance").await;
        self.inner.replace_instance(pool, id).await
    }
    async fn set_protection(
        &self,
        pool: &PoolConfig,
        ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        self.call("set_protection").await;
        self.inner.set_protection(pool, ids, protected).await
    }
}

fn headers(body: &[u8], n: usize) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
    h.insert(
        "x-github-delivery",
        HeaderValue::from_str(&format!("00000000-0000-4000-8000-{n:012x}")).expect("guid"),
    );
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(SECRET.as_bytes(), body)).expect("signature"),
    );
    h
}

/// Every delivery of the three phases, signed: each job once, every fifth twice more, in
/// the core test's order (job order, duplicates next to their job).
fn phases() -> Vec<Phase> {
    let queued = fixture(QUEUED);
    let self_hosted = |text: String| text.replace(r#""ubuntu-latest""#, r#""self-hosted""#);
    let started = self_hosted(fixture(IN_PROGRESS));
    let done = self_hosted(fixture(COMPLETED));
    // Job k runs on runner k % 10 of instance k / 10 + 1 (`LocalFleet` names them linux-NNNN).
    let runner = |k: u64| format!("linux-linux-{:04}-{}", k / 10 + 1, k % 10);
    let mut n = 0;
    ["queued", "in_progress", "completed"]
        .into_iter()
        .map(|action| {
            let mut bodies = Vec::new();
            for k in 0..JOBS {
                let id = (FIRST_JOB + k).to_string();
                let body = match action {
                    "queued" => queued.replace(QUEUED_ID, &id),
                    "in_progress" => started
                        .replace(HOSTED_ID, &id)
                        .replace(r#""GitHub Actions 5""#, &format!("{:?}", runner(k))),
                    _ => done
                        .replace(HOSTED_ID, &id)
                        .replace(r#""GitHub Actions 5""#, &format!("{:?}", runner(k))),
                }
                .into_bytes();
                for _ in 0..if k % 5 == 0 { 3 } else { 1 } {
                    n += 1;
                    bodies.push((headers(&body, n), body.clone()));
                }
            }
            (action, bodies)
        })
        .collect()
}

/// A phase's action and its signed deliveries (headers, body).
type Phase = (&'static str, Vec<(HeaderMap, Vec<u8>)>);
type Phases = [Phase];

async fn burst(phases: &'static Phases, latency: Duration) -> serde_json::Value {
    let ledger = Arc::new(MemoryLedger::new());
    let fleet = Arc::new(RecordingFleet {
        inner: LocalFleet::new(),
        latency,
        calls: Mutex::default(),
    });
    let services: Vec<Arc<Service>> = (0..SERVICES)
        .map(|_| {
            Arc::new(
                Service::new(
                    Config::from_toml(CONFIG).expect("config"),
                    WebhookSecrets::new([SECRET]).expect("secret"),
                    ledger.clone(),
                    fleet.clone(),
                )
                .with_log(LogFormat::Off),
            )
        })
        .collect();
    let pool = services[0].config().pool("linux").expect("pool").clone();
    let mut rows = Vec::new();
    let mut deliveries = 0usize;
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut deferred = 0u64;
    let mut calls: BTreeMap<&'static str, u64> = BTreeMap::new();
    let started = Instant::now();
    for (action, bodies) in phases {
        deliveries += bodies.len();
        let queue = Arc::new(Mutex::new(bodies.iter().collect::<VecDeque<_>>()));
        let phase_started = Instant::now();
        let answers: Vec<(u16, Option<&'static str>)> = {
            // Scoped tasks: each service one delivery at a time, pulling from one queue.
            let tasks: Vec<_> = services
                .iter()
                .map(|svc| {
                    let queue = queue.clone();
                    let svc = svc.clone();
                    async move {
                        let post = Method::POST;
                        let mut out = Vec::new();
                        loop {
                            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                            let Some((h, body)) = next else { break };
                            let a = svc.handle(&post, h, body).await;
                            out.push((a.status, a.report.decision));
                        }
                        out
                    }
                })
                .collect();
            join_all_spawned(tasks).await
        };
        let phase_seconds = phase_started.elapsed().as_secs_f64();
        let mut phase_5xx = 0u64;
        for (status, decision) in answers {
            *statuses.entry(status).or_default() += 1;
            phase_5xx += u64::from(status >= 500);
            deferred += u64::from(decision == Some("deferred"));
        }
        let account = ledger.pool("linux").await.expect("account");
        let state = fleet.inner.describe(&pool).await.expect("describe");
        let target = scalehook_core::policy::target(&pool, &account, &state);
        let phase_calls = fleet.take_calls();
        for (k, v) in &phase_calls {
            *calls.entry(k).or_default() += v;
        }
        rows.push(serde_json::json!({
            "phase": action,
            "deliveries": bodies.len(),
            "seconds": phase_seconds,
            "capacity": state.instances.len(),
            "desired": state.desired,
            "target": target,
            "fivexx": phase_5xx,
            "fleet_calls": phase_calls,
        }));
    }
    let seconds = started.elapsed().as_secs_f64();
    serde_json::json!({
        "bench": "burst",
        "ledger": "memory",
        "fleet": "LocalFleet, recorded",
        "fleet_latency_ms": latency.as_millis() as u64,
        "services": SERVICES,
        "jobs": JOBS,
        "deliveries": deliveries,
        "seconds": seconds,
        "per_second": deliveries as f64 / seconds,
        "statuses": statuses,
        "deferred": deferred,
        "fleet_calls": calls,
        "phases": rows,
    })
}

/// The services run as spawned tasks, on the runtime's worker threads (like processes on the
/// machine's cores).
async fn join_all_spawned<F>(tasks: Vec<F>) -> Vec<(u16, Option<&'static str>)>
where
    F: std::future::Future<Output = Vec<(u16, Option<&'static str>)>> + Send + 'static,
{
    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.extend(h.await.expect("delivery task"));
    }
    out
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench` (and criterion's filters); none apply here.
    let runs = env_or("BENCH_BURST_RUNS", 10);
    let slow_runs = env_or("BENCH_BURST_SLOW_RUNS", 3);
    let fleet_ms = env_or("BENCH_BURST_FLEET_MS", 50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let workers = rt.metrics().num_workers();
    // 'static bodies for the spawned tasks: built once, kept for the whole program.
    let phases: &'static Phases = Box::leak(phases().into_boxed_slice());
    // One burst first, not reported: page faults, the allocator's arenas, the runtime's threads.
    rt.block_on(burst(phases, Duration::ZERO));
    let plan = (0..runs)
        .map(|_| Duration::ZERO)
        .chain((0..slow_runs).map(|_| Duration::from_millis(fleet_ms)));
    for (i, latency) in plan.enumerate() {
        let mut row = rt.block_on(burst(phases, latency));
        row["run"] = serde_json::json!(i + 1);
        row["workers"] = serde_json::json!(workers);
        row["load"] = serde_json::json!(std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default());
        eprintln!(
            "burst (memory ledger, fleet latency {} ms): {} deliveries in {:.3} s, {:.0}/s, fleet calls {}, answers {}",
            latency.as_millis(),
            row["deliveries"],
            row["seconds"].as_f64().unwrap_or(0.0),
            row["per_second"].as_f64().unwrap_or(0.0),
            row["fleet_calls"],
            row["statuses"],
        );
        println!("SCALEHOOK-BENCH {row}");
    }
}
