//! A burst through several independent scalehook processes, as Lambda runs them: 8 `Service`
//! instances (each `Service::new`, its own DynamoDB client and ledger, no shared lock or
//! cache) over one DynamoDB table on moto and one Auto Scaling group stand-in that records
//! every call. 300 jobs are queued, then start, then complete, each phase shuffled, with
//! duplicates, spread over the 8 services, each taking one delivery at a time (as a Lambda
//! execution environment does), so 8 are in flight at once. After each
//! phase: capacity equals the policy's target for the ledger's exact counts, no delivery
//! was answered 5xx, no busy instance was removed, and the fleet calls are counted.

mod common;

use async_trait::async_trait;
use common::{create_table, deliver, sdk, Moto, RequestCounter};
use scalehook_aws::DynamoLedger;
use scalehook_core::{
    Config, Fleet, FleetError, FleetState, Instance, Ledger, LogFormat, PoolConfig, Service,
    WebhookSecrets,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const JOBS: u64 = 300;
const FIRST_JOB: u64 = 70_000_000_000;
const SERVICES: usize = 8;
const GROUP_MAX: u32 = 400;

/// The Auto Scaling group: instances are in service as soon as desired capacity asks for
/// them. Records every call, and every removal of an instance whose runner is busy.
#[derive(Default)]
struct RecordingFleet {
    inner: Mutex<Group>,
}

#[derive(Default)]
struct Group {
    desired: u32,
    next: u32,
    instances: Vec<Instance>,
    calls: BTreeMap<&'static str, u32>,
    /// Instances whose job has not been sent its `completed` yet (the test's ground truth).
    busy: HashSet<String>,
    violations: Vec<String>,
}

impl Group {
    fn launch(&mut self) {
        self.next += 1;
        let id = format!("i-{:05}", self.next);
        self.instances.push(Instance {
            id: id.clone(),
            runner_key: id,
            launching: false,
            protected: false,
            launched_at: None,
        });
    }
}

impl RecordingFleet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Group> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_calls(&self) -> BTreeMap<&'static str, u32> {
        std::mem::take(&mut self.lock().calls)
    }
}

#[async_trait]
impl Fleet for RecordingFleet {
    async fn describe(&self, _pool: &PoolConfig) -> Result<FleetState, FleetError> {
        let mut g = self.lock();
        *g.calls.entry("DescribeAutoScalingGroups").or_default() += 1;
        Ok(FleetState {
            desired: g.desired,
            min: Some(0),
            max: Some(GROUP_MAX),
            instances: g.instances.clone(),
            supports_protection: true,
            ..FleetState::default()
        })
    }

    async fn set_desired(&self, _pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        let mut g = self.lock();
        *g.calls.entry("SetDesiredCapacity").or_default() += 1;
        if desired > GROUP_MAX {
            return Err(FleetError::Rejected(format!("{desired} above max")));
        }
        while (g.instances.len() as u32) < desired {
            g.launch();
        }
        if (g.instances.len() as u32) > desired {
            // The group would pick instances to terminate itself: the core must never ask.
            let msg = format!(
                "SetDesiredCapacity {desired} below {} live instances",
                g.instances.len()
            );
            g.violations.push(msg);
            let keep = desired as usize;
            g.instances.truncate(keep);
        }
        g.desired = desired;
        Ok(())
    }

    async fn remove_instance(&self, _pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        let mut g = self.lock();
        *g.calls
            .entry("TerminateInstanceInAutoScalingGroup")
            .or_default() += 1;
        let Some(at) = g.instances.iter().position(|i| i.id == id) else {
            // What the real API answers for an instance no longer in the group.
            return Err(FleetError::Rejected(format!(
                "ValidationError: instance {id} is not part of the group"
            )));
        };
        if g.busy.contains(id) {
            g.violations.push(format!("removed busy instance {id}"));
        }
        g.instances.remove(at);
        g.desired = g.desired.saturating_sub(1);
        Ok(())
    }

    async fn replace_instance(&self, pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        self.remove_instance(pool, id).await?;
        let mut g = self.lock();
        g.desired += 1;
        g.launch();
        Ok(())
    }

    async fn set_protection(
        &self,
        _pool: &PoolConfig,
        ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        let mut g = self.lock();
        *g.calls.entry("SetInstanceProtection").or_default() += 1;
        for i in g.instances.iter_mut().filter(|i| ids.contains(&i.id)) {
            i.protected = protected;
        }
        Ok(())
    }
}

fn config() -> Config {
    Config::from_toml(&format!(
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\", \"linux\", \"x64\"]\n\
         min = 0\nmax = {GROUP_MAX}\nstandby = 0\n"
    ))
    .expect("valid config")
}

/// SplitMix64, seeded: the shuffles and the choice of service.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

struct Phase {
    answers: BTreeMap<u16, u32>,
    deliveries: usize,
    seconds: f64,
}

/// Delivers `(job, runner)` events of `action`, each job once plus `duplicates` copies,
/// shuffled, over the services.
async fn phase(
    services: &[Arc<Service>],
    fleet: &Arc<RecordingFleet>,
    action: &'static str,
    jobs: &[(u64, Option<String>)],
    duplicates: usize,
    rng: &mut Rng,
) -> Phase {
    let mut events: Vec<(u64, Option<String>)> = jobs.to_vec();
    for _ in 0..duplicates {
        events.push(jobs[(rng.next() % jobs.len() as u64) as usize].clone());
    }
    rng.shuffle(&mut events);
    let started = Instant::now();
    // One delivery at a time per service, as a Lambda execution environment takes one
    // invocation at a time; the services pull from one queue, so a job's events (and their
    // duplicates) land on different services concurrently.
    let queue = Arc::new(Mutex::new(std::collections::VecDeque::from(events.clone())));
    let mut tasks = Vec::new();
    for svc in services {
        let svc = Arc::clone(svc);
        let queue = Arc::clone(&queue);
        let fleet = Arc::clone(fleet);
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((job, runner)) = next else { break };
                if action == "completed" {
                    // GitHub sends `completed` once the runner is done: from here on the
                    // instance may go.
                    if let Some(r) = &runner {
                        let id = r.trim_start_matches("gh-runner-").to_string();
                        fleet.lock().busy.remove(&id);
                    }
                }
                let a = deliver(&svc, action, job, runner.as_deref()).await;
                answers.push((a.status, a.body));
            }
            answers
        }));
    }
    let mut answers = BTreeMap::new();
    for t in tasks {
        for (status, body) in t.await.expect("delivery task") {
            if status >= 500 {
                println!("  {action}: {status} {body}");
            }
            *answers.entry(status).or_default() += 1;
        }
    }
    Phase {
        answers,
        deliveries: events.len(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn burst_of_300_jobs_through_8_services() {
    let moto = Moto::start();
    let direct = sdk(&moto.endpoint).await;
    create_table(&direct, "burst-ledger").await;
    let fleet = Arc::new(RecordingFleet::default());
    let counter = RequestCounter::default();
    let mut services = Vec::new();
    for _ in 0..SERVICES {
        // Each its own SDK configuration and client, as separate Lambda instances have.
        let own = sdk(&moto.endpoint).await;
        let mut config = config();
        // moto deep-copies the whole table for every item of every transaction (its rollback),
        // so its transactions slow down as the table fills, far beyond DynamoDB's tens of
        // milliseconds: the per-call and per-delivery timeouts are stretched here, so that a
        // 5xx in this test can only be the design's (contention, a lost lease), not moto's.
        config.cloud_timeout = Duration::from_secs(120);
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&own)
                .interceptor(counter.clone())
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_timeout(Duration::from_secs(60))
                        .operation_attempt_timeout(Duration::from_secs(60))
                        .build(),
                )
                .build(),
        );
        let ledger = DynamoLedger::new(client, "burst-ledger", config.ledger);
        services.push(Arc::new(
            Service::new(
                config,
                WebhookSecrets::new([common::SECRET]).expect("secret"),
                Arc::new(ledger),
                Arc::clone(&fleet) as Arc<dyn Fleet>,
            )
            .with_log(LogFormat::Off),
        ));
    }
    let reader = DynamoLedger::new(common::ddb_client(&direct), "burst-ledger", config().ledger);
    let mut rng = Rng(14);
    let jobs: Vec<u64> = (0..JOBS).map(|k| FIRST_JOB + k).collect();
    let mut failures = Vec::new();
    let mut total_5xx = 0;
    // One machine-readable line at the end, collected by `make bench-burst` (bench/measure.py).
    let mut bench_phases = Vec::new();

    let mut started: Vec<(u64, Option<String>)> = Vec::new();
    for action in ["queued", "in_progress", "completed"] {
        let events: Vec<(u64, Option<String>)> = match action {
            "queued" => jobs.iter().map(|&j| (j, None)).collect(),
            "in_progress" => {
                // Job k runs on the k-th instance (its runner's name holds the instance id).
                let mut g = fleet.lock();
                let mut ids: Vec<String> = g.instances.iter().map(|i| i.id.clone()).collect();
                ids.sort();
                g.busy = ids.iter().cloned().collect();
                started = jobs
                    .iter()
                    .enumerate()
                    .map(|(k, &j)| (j, ids.get(k).map(|id| format!("gh-runner-{id}"))))
                    .collect();
                started.clone()
            }
            _ => started.clone(),
        };
        counter.take();
        let p = phase(&services, &fleet, action, &events, 100, &mut rng).await;
        let ddb_requests = counter.total();
        let calls = fleet.take_calls();
        let account = reader.pool("linux").await.expect("account");
        let mut g = fleet.lock();
        let target = (account.queued + account.running).min(GROUP_MAX);
        let fivexx: u32 = p
            .answers
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, c)| c)
            .sum();
        total_5xx += fivexx;
        println!(
            "{action}: {} deliveries in {:.1} s, answers {:?}; ledger queued {} running {}; \
             target {target}, desired {}, instances {} ({} protected); \
             DynamoDB requests {} ({:.1} per delivery); fleet calls {:?}",
            p.deliveries,
            p.seconds,
            p.answers,
            account.queued,
            account.running,
            g.desired,
            g.instances.len(),
            g.instances.iter().filter(|i| i.protected).count(),
            ddb_requests,
            f64::from(ddb_requests) / p.deliveries as f64,
            calls,
        );
        bench_phases.push(serde_json::json!({
            "phase": action,
            "deliveries": p.deliveries,
            "seconds": p.seconds,
            "capacity": g.instances.len(),
            "desired": g.desired,
            "target": target,
            "fivexx": fivexx,
            "fleet_calls": calls,
            "ledger_requests": ddb_requests,
        }));
        let expected = match action {
            "queued" => (JOBS as u32, 0),
            "in_progress" => (0, JOBS as u32),
            _ => (0, 0),
        };
        if (account.queued, account.running) != expected {
            failures.push(format!(
                "{action}: ledger ({}, {}) != {expected:?}",
                account.queued, account.running
            ));
        }
        if g.desired != target || g.instances.len() as u32 != target {
            failures.push(format!(
                "{action}: desired {} with {} instances, target {target}",
                g.desired,
                g.instances.len()
            ));
        }
        if fivexx > 0 {
            failures.push(format!("{action}: {fivexx} answered 5xx"));
        }
        // Bounded: no more mutating calls than deliveries, and one removal per instance.
        let mutating: u32 = calls
            .iter()
            .filter(|(k, _)| **k != "DescribeAutoScalingGroups")
            .map(|(_, c)| c)
            .sum();
        if mutating as usize > p.deliveries {
            failures.push(format!("{action}: {mutating} mutating fleet calls"));
        }
        if calls
            .get("TerminateInstanceInAutoScalingGroup")
            .is_some_and(|&c| c > JOBS as u32)
        {
            failures.push(format!("{action}: more removals than instances: {calls:?}"));
        }
        let violations = std::mem::take(&mut g.violations);
        failures.extend(violations.iter().map(|v| format!("{action}: {v}")));
    }
    println!("answered 5xx in all: {total_5xx}");
    println!(
        "SCALEHOOK-BENCH {}",
        serde_json::json!({
            "bench": "burst",
            "ledger": "DynamoDB on moto",
            "fleet": "Auto Scaling group stand-in (in process, recorded)",
            "services": SERVICES,
            "jobs": JOBS,
            "phases": bench_phases,
        })
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
