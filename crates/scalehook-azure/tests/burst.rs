//! A burst across processes: eight independent `Service`s (each its own `Service::new`, HTTP
//! client, Table client and ledger; nothing shared in memory but the fleet stand-in, which
//! plays the one cloud scale set) over one Azurite table. 300 jobs are queued, then all go
//! in progress, then all complete, each phase with duplicate deliveries mixed in and sent to
//! any of the services at once. After each phase: the scale set's capacity is the policy's
//! target, no delivery got a 5xx, and the fleet calls are counted and bounded.
//! `SCALEHOOK_BURST_JOBS=<n>` changes the job count.

mod common;

use async_trait::async_trait;
use base64::Engine;
use common::azurite::{Azurite, ACCOUNT, KEY};
use http::{HeaderMap, HeaderValue, Method};
use scalehook_azure::{TableAuth, TableClient, TableLedger};
use scalehook_core::signature::sign;
use scalehook_core::{
    Config, Fleet, FleetError, FleetState, Instance, Ledger, PoolConfig, Service, WebhookSecrets,
};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;

const SECRET: &str = "burst-test-secret";
const SERVICES: usize = 8;
/// Deliveries in flight at once, over all services.
const IN_FLIGHT: usize = 32;

const CONFIG: &str = r#"
cloud_timeout_ms = 8000

[[pools]]
name = "linux"
labels = ["self-hosted", "linux"]
min = 0
max = 1000
"#;

/// The cloud's scale set as one shared stand-in: instances appear at once when capacity
/// rises, and every call is counted. Removing an instance that is gone is `NotFound` (what
/// two processes deleting the same idle VM would meet).
#[derive(Default)]
struct RecordingFleet {
    st: Mutex<FleetSt>,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Calls {
    describe: u64,
    set_desired: u64,
    remove: u64,
    replace: u64,
    not_found: u64,
}

#[derive(Default)]
struct FleetSt {
    next: u32,
    instances: Vec<Instance>,
    calls: Calls,
}

impl FleetSt {
    fn launch(&mut self) {
        let key = format!("inst-{:04}", self.next);
        self.next += 1;
        self.instances.push(Instance {
            id: key.clone(),
            runner_key: key,
            launching: false,
            protected: false,
            launched_at: None,
        });
    }
}

impl RecordingFleet {
    fn lock(&self) -> std::sync::MutexGuard<'_, FleetSt> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn capacity(&self) -> u32 {
        self.lock().instances.len() as u32
    }
    fn calls(&self) -> Calls {
        self.lock().calls
    }
}

#[async_trait]
impl Fleet for RecordingFleet {
    async fn describe(&self, _pool: &PoolConfig) -> Result<FleetState, FleetError> {
        let mut st = self.lock();
        st.calls.describe += 1;
        Ok(FleetState {
            desired: st.instances.len() as u32,
            min: None,
            max: None,
            instances: st.instances.clone(),
            supports_protection: false,
            ..FleetState::default()
        })
    }
    async fn set_desired(&self, _pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        let mut st = self.lock();
        st.calls.set_desired += 1;
        while (st.instances.len() as u32) < desired {
            st.launch();
        }
        while (st.instances.len() as u32) > desired {
            st.instances.pop();
        }
        Ok(())
    }
    async fn remove_instance(&self, _pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        let mut st = self.lock();
        st.calls.remove += 1;
        match st.instances.iter().position(|i| i.id == id) {
            Some(i) => {
                st.instances.remove(i);
                Ok(())
            }
            None => {
                st.calls.not_found += 1;
                Err(FleetError::NotFound(format!("instance {id}")))
            }
        }
    }
    async fn replace_instance(&self, _pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        let mut st = self.lock();
        st.calls.replace += 1;
        match st.instances.iter().position(|i| i.id == id) {
            Some(i) => {
                st.instances.remove(i);
                st.launch();
                Ok(())
            }
            None => {
                st.calls.not_found += 1;
                Err(FleetError::NotFound(format!("instance {id}")))
            }
        }
    }
}

async fn table_ledger(endpoint: &str) -> TableLedger {
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("key");
    // Each service gets its own HTTP client, as separate processes would.
    let client = TableClient::new(
        scalehook_azure::app::http_client().expect("client"),
        endpoint,
        "burstledger",
        TableAuth::SharedKey {
            account: ACCOUNT.into(),
            key,
        },
    )
    .expect("table client");
    client.ensure_table().await.expect("create table");
    TableLedger::new(client)
}

fn body(action: &str, id: u64, runner: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "workflow_job": {"id": id, "run_id": 7, "labels": ["self-hosted", "linux"],
                         "runner_name": runner, "runner_id": runner.map(|_| 11)},
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}}
    })
    .to_string()
    .into_bytes()
}

fn headers(body: &[u8], n: usize) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
    h.insert(
        "x-github-delivery",
        HeaderValue::from_str(&format!("burst-{n}")).expect("id"),
    );
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(SECRET.as_bytes(), body)).expect("sig"),
    );
    h
}

#[derive(Debug, Default)]
struct PhaseResult {
    deliveries: usize,
    statuses: std::collections::BTreeMap<u16, usize>,
    elapsed_ms: u128,
}

/// Sends every delivery of a phase (job ids 1..=jobs, every third one twice, in a shuffled
/// order) to the services round-robin, `IN_FLIGHT` at a time.
async fn phase(
    services: &[Arc<Service>],
    jobs: u64,
    action: &'static str,
    seed: u64,
) -> PhaseResult {
    let mut deliveries: Vec<u64> = (1..=jobs).collect();
    deliveries.extend((1..=jobs).filter(|j| j % 3 == 0));
    // A fixed shuffle (LCG), so duplicates land apart and out of order.
    let mut x = seed;
    for i in (1..deliveries.len()).rev() {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        deliveries.swap(i, (x >> 33) as usize % (i + 1));
    }
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (n, job) in deliveries.iter().copied().enumerate() {
        let service = services[n % services.len()].clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("gate");
            // Job j runs on instance j-1 (scale-out names them inst-0000, inst-0001, ...).
            let runner = (action != "queued").then(|| format!("gh-inst-{:04}-1", job - 1));
            let b = body(action, job, runner.as_deref());
            let a = service.handle(&Method::POST, &headers(&b, n), &b).await;
            if a.status >= 500 {
                eprintln!("{action} job {job}: {} {}", a.status, a.body);
            }
            a.status
        }));
    }
    let mut out = PhaseResult {
        deliveries: deliveries.len(),
        ..PhaseResult::default()
    };
    for t in tasks {
        *out.statuses.entry(t.await.expect("task")).or_default() += 1;
    }
    out.elapsed_ms = started.elapsed().as_millis();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_services_absorb_a_burst_of_three_hundred_jobs() {
    let jobs: u64 = std::env::var("SCALEHOOK_BURST_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let az = Azurite::start();
    let fleet = Arc::new(RecordingFleet::default());
    let mut services = Vec::new();
    let mut ledgers = Vec::new();
    for _ in 0..SERVICES {
        let ledger = Arc::new(table_ledger(&az.endpoint()).await);
        ledgers.push(ledger.clone());
        let service = Service::new(
            Config::from_toml(CONFIG).expect("config"),
            WebhookSecrets::new([SECRET]).expect("secret"),
            ledger,
            fleet.clone(),
        )
        .with_log(scalehook_core::LogFormat::Off);
        services.push(Arc::new(service));
    }
    let requests =
        |ls: &[Arc<TableLedger>]| -> u64 { ls.iter().map(|l| l.client().requests()).sum() };

    // (action, expected queued, running, target capacity after the phase)
    let plan = [
        ("queued", jobs, 0, jobs),
        ("in_progress", 0, jobs, jobs),
        ("completed", 0, 0, 0),
    ];
    let mut calls_before = fleet.calls();
    // One machine-readable line at the end, collected by `make bench-burst` (bench/measure.py).
    let mut bench_phases = Vec::new();
    for (i, (action, queued, running, target)) in plan.into_iter().enumerate() {
        let table_before = requests(&ledgers);
        let r = phase(&services, jobs, action, 7 + i as u64).await;
        let calls = fleet.calls();
        let delta = Calls {
            describe: calls.describe - calls_before.describe,
            set_desired: calls.set_desired - calls_before.set_desired,
            remove: calls.remove - calls_before.remove,
            replace: calls.replace - calls_before.replace,
            not_found: calls.not_found - calls_before.not_found,
        };
        calls_before = calls;
        let account = ledgers[0].pool("linux").await.expect("pool");
        let capacity = fleet.capacity();
        let table_requests = requests(&ledgers) - table_before;
        eprintln!(
            "phase {action}: {} deliveries in {} ms, statuses {:?}; ledger queued {} running {}; capacity {capacity} (target {target}); fleet calls {delta:?}; table requests {table_requests} ({:.1} per delivery)",
            r.deliveries,
            r.elapsed_ms,
            r.statuses,
            account.queued,
            account.running,
            table_requests as f64 / r.deliveries as f64
        );
        let fivexx: usize = r
            .statuses
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum();
        bench_phases.push(serde_json::json!({
            "phase": action,
            "deliveries": r.deliveries,
            "seconds": r.elapsed_ms as f64 / 1000.0,
            "capacity": capacity,
            "target": target,
            "fivexx": fivexx,
            "fleet_calls": {
                "describe": delta.describe,
                "set_desired": delta.set_desired,
                "remove_instance": delta.remove,
                "replace_instance": delta.replace,
            },
            "ledger_requests": table_requests,
        }));
        assert_eq!(fivexx, 0, "{action}: {:?}", r.statuses);
        assert_eq!(
            (account.queued, account.running),
            (queued as u32, running as u32),
            "{action}: ledger counts"
        );
        assert_eq!(capacity, target as u32, "{action}: capacity vs target");
        assert_eq!(
            delta.not_found, 0,
            "{action}: an instance was removed twice"
        );
        // Bounded: at most one capacity change per delivery, and at most a few describes.
        let changes = delta.set_desired + delta.remove + delta.replace;
        assert!(changes <= r.deliveries as u64, "{action}: {delta:?}");
        assert!(
            delta.describe <= 4 * r.deliveries as u64,
            "{action}: {delta:?}"
        );
    }
    println!(
        "SCALEHOOK-BENCH {}",
        serde_json::json!({
            "bench": "burst",
            "ledger": "Table Storage on Azurite",
            "fleet": "VM Scale Set stand-in (in process, recorded)",
            "services": SERVICES,
            "jobs": jobs,
            "phases": bench_phases,
        })
    );
    assert_eq!(
        fleet.calls().remove,
        jobs,
        "each instance removed exactly once"
    );
}
