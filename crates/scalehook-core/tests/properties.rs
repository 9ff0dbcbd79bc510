//! Property tests: any interleaving, duplication and reordering of a set of deliveries
//! leaves the same final account as the clean sequence, and counts always equal the
//! number of records in each state (so they can never go negative or drift).

use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use scalehook_core::ledger::{JobState, Ledger, MemoryLedger, Transition};
use scalehook_core::signature::sign;
use scalehook_core::{Config, LocalFleet, LogFormat, Service, WebhookSecrets};
use std::collections::HashMap;
use std::sync::Arc;

/// Ledger cases and service cases run per `cargo test` (see the closing note of issue 2).
const LEDGER_CASES: u32 = 1000;
const SERVICE_CASES: u32 = 200;

#[derive(Debug, Clone)]
struct Job {
    id: u64,
    pool: usize,
    /// The furthest state the job reaches.
    reach: JobState,
    /// Whether it went through `waiting` (environment approval) first.
    waited: bool,
    /// Whether the in_progress event exists (a job cancelled while queued has none).
    started: bool,
    runner: String,
}

fn job_strategy() -> impl Strategy<Value = Job> {
    (
        1u64..u64::MAX,
        0usize..2,
        prop_oneof![
            Just(JobState::Waiting),
            Just(JobState::Queued),
            Just(JobState::InProgress),
            Just(JobState::Completed)
        ],
        any::<bool>(),
        any::<bool>(),
        0u32..6,
    )
        .prop_map(|(id, pool, reach, waited, started, r)| Job {
            id,
            pool,
            reach,
            waited,
            started: started || reach == JobState::InProgress,
            runner: format!("runner-{r}"),
        })
}

/// The job's deliveries in their natural order.
fn lifecycle(job: &Job) -> Vec<(u64, usize, JobState, Option<String>)> {
    let mut out = Vec::new();
    let mut push = |s: JobState, runner: Option<String>| out.push((job.id, job.pool, s, runner));
    if job.waited || job.reach == JobState::Waiting {
        push(JobState::Waiting, None);
    }
    if job.reach >= JobState::Queued {
        push(JobState::Queued, None);
    }
    if job.reach >= JobState::InProgress && job.started {
        push(JobState::InProgress, Some(job.runner.clone()));
    }
    if job.reach == JobState::Completed {
        push(JobState::Completed, job.started.then(|| job.runner.clone()));
    }
    out
}

/// A clean sequence and a messy one: shuffled, with duplicates.
fn workload() -> impl Strategy<Value = (Vec<Job>, Vec<usize>, Vec<usize>)> {
    prop::collection::vec(job_strategy(), 1..25)
        .prop_map(|mut jobs| {
            jobs.sort_by_key(|j| j.id);
            jobs.dedup_by_key(|j| j.id);
            jobs
        })
        .prop_flat_map(|jobs| {
            let n: usize = jobs.iter().map(|j| lifecycle(j).len()).sum();
            let dups = prop::collection::vec(0..n.max(1), 0..n.max(1));
            let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            (Just(jobs), dups, order)
        })
}

fn pools() -> [&'static str; 2] {
    ["linux", "big"]
}

fn expected_counts(jobs: &[Job]) -> HashMap<&'static str, (u32, u32)> {
    let mut out = HashMap::new();
    for j in jobs {
        let e: &mut (u32, u32) = out.entry(pools()[j.pool]).or_default();
        match j.reach {
            JobState::Queued => e.0 += 1,
            JobState::InProgress => e.1 += 1,
            _ => {}
        }
    }
    out
}

fn messy(
    jobs: &[Job],
    dups: &[usize],
    order: &[usize],
) -> Vec<(u64, usize, JobState, Option<String>)> {
    let clean: Vec<_> = jobs.iter().flat_map(lifecycle).collect();
    let mut out: Vec<_> = order.iter().map(|&i| clean[i].clone()).collect();
    for &d in dups {
        let at = (d * 7) % (out.len() + 1);
        out.insert(at, clean[d % clean.len()].clone());
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(LEDGER_CASES))]

    #[test]
    fn ledger_counts_are_order_and_duplicate_independent((jobs, dups, order) in workload()) {
        let rt = runtime();
        rt.block_on(async {
            let ledger = MemoryLedger::new();
            let mut max_state: HashMap<u64, JobState> = HashMap::new();
            for (id, pool, state, runner) in messy(&jobs, &dups, &order) {
                ledger.record(&Transition { job_id: id, pool: pools()[pool].into(), to: state, runner, at: 0, repository: None })
                    .await.expect("record");
                let m = max_state.entry(id).or_insert(state);
                *m = (*m).max(state);
                // after every step, counts equal the records in each state
                for (p, name) in pools().iter().enumerate() {
                    let acc = ledger.pool(name).await.expect("pool");
                    let want_q = jobs.iter().filter(|j| j.pool == p && max_state.get(&j.id) == Some(&JobState::Queued)).count() as u32;
                    let want_r = jobs.iter().filter(|j| j.pool == p && max_state.get(&j.id) == Some(&JobState::InProgress)).count() as u32;
                    prop_assert_eq!((acc.queued, acc.running), (want_q, want_r));
                    prop_assert_eq!(ledger.busy_runners(name).await.expect("busy").len() as u32, acc.running);
                }
            }
            let want = expected_counts(&jobs);
            for name in pools() {
                let acc = ledger.pool(name).await.expect("pool");
                prop_assert_eq!((acc.queued, acc.running), want.get(name).copied().unwrap_or_default());
            }
            Ok(())
        })?;
    }
}

const CONFIG: &str = r#"
[[pools]]
name = "linux"
labels = ["self-hosted", "linux"]
max = 12
standby = 1
[[pools]]
name = "big"
labels = ["self-hosted", "big"]
min = 1
max = 5
runners_per_instance = 3
"#;

async fn run_service(
    deliveries: &[(u64, usize, JobState, Option<String>)],
) -> Vec<(String, u32, u32, u32)> {
    let service = Service::new(
        Config::from_toml(CONFIG).expect("config"),
        WebhookSecrets::new(["s"]).expect("secret"),
        Arc::new(MemoryLedger::new()),
        Arc::new(LocalFleet::new()),
    )
    .with_log(LogFormat::Off);
    for (id, pool, state, runner) in deliveries {
        let action = match state {
            JobState::Waiting => "waiting",
            JobState::Queued => "queued",
            JobState::InProgress => "in_progress",
            JobState::Completed => "completed",
        };
        let labels = [["self-hosted", "linux"], ["self-hosted", "big"]][*pool];
        let body = serde_json::json!({"action": action, "workflow_job": {"id": id, "run_id": 1,
            "labels": labels, "runner_name": runner}})
        .to_string();
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
        h.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(&sign(b"s", body.as_bytes())).expect("sig"),
        );
        let a = service.handle(&Method::POST, &h, body.as_bytes()).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let report = service.reconcile().await;
    assert!(report.ok());
    service
        .summary()
        .await
        .expect("summary")
        .into_iter()
        .map(|p| (p.name, p.desired, p.queued, p.running))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(SERVICE_CASES))]

    /// Through the whole service: once no job is left running, the final summary after a
    /// reconcile is the same for the clean and the messy sequence, and equals the target.
    #[test]
    fn service_summary_is_order_and_duplicate_independent((jobs, dups, order) in workload()) {
        let jobs: Vec<Job> = jobs.into_iter().filter(|j| j.reach != JobState::InProgress).collect();
        prop_assume!(!jobs.is_empty());
        let n: usize = jobs.iter().map(|j| lifecycle(j).len()).sum();
        let order: Vec<usize> = order.into_iter().filter(|&i| i < n).collect();
        let dups: Vec<usize> = dups.into_iter().filter(|&i| i < n).collect();
        let clean: Vec<_> = jobs.iter().flat_map(lifecycle).collect();
        let rt = runtime();
        let (a, b) = rt.block_on(async {
            (run_service(&clean).await, run_service(&messy(&jobs, &dups, &order)).await)
        });
        prop_assert_eq!(&a, &b);
        let want = expected_counts(&jobs);
        for (name, desired, queued, running) in &a {
            let (q, r) = want.get(name.as_str()).copied().unwrap_or_default();
            prop_assert_eq!((*queued, *running), (q, r));
            let target = match name.as_str() {
                "linux" => (q + r + 1).clamp(0, 12),
                _ => (q + r).div_ceil(3).clamp(1, 5),
            };
            prop_assert_eq!(*desired, target, "pool {}", name);
        }
    }
}
