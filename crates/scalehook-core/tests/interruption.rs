//! Spot interruptions through the service (LocalFleet, LocalGitHub, MemoryLedger): a notice
//! for an idle instance deregisters its runner and replaces it; for a busy one the instance
//! stays, out of capacity, and one more is launched; the job's failed completion is recorded
//! interrupted and, with `rerun_interrupted`, re-run exactly once (reconcile asks again
//! while GitHub says "not yet"); the re-run routes to the overflow pool.

use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::interruption::{Notice, NoticeKind};
use scalehook_core::signature::sign;
use scalehook_core::{
    Config, Fleet, LocalFleet, LocalGitHub, LogFormat, ManualClock, MemoryLedger, Service,
    WebhookSecrets,
};
use std::sync::Arc;

const SECRET: &str = "interruption-secret";
const NOW: u64 = 1_800_000_000;

const CONFIG: &str = r#"
[[pools]]
name = "spot"
labels = ["self-hosted", "linux"]
min = 2
max = 10
capacity = "spot"
overflow = "od"
rerun_interrupted = true

[[pools]]
name = "od"
labels = ["self-hosted", "linux", "on-demand"]
max = 10
"#;

struct World {
    service: Service,
    fleet: Arc<LocalFleet>,
    github: Arc<LocalGitHub>,
    config: Config,
}

fn world(toml: &str) -> World {
    let clock = Arc::new(ManualClock::new(NOW));
    let fleet = Arc::new(LocalFleet::new().with_clock(clock.clone()));
    let github = Arc::new(LocalGitHub::new());
    let config = Config::from_toml(toml).expect("config");
    let service = Service::new(
        config.clone(),
        WebhookSecrets::new([SECRET]).expect("secret"),
        Arc::new(MemoryLedger::new()),
        fleet.clone(),
    )
    .with_github(github.clone())
    .with_clock(clock)
    .with_log(LogFormat::Off);
    World {
        service,
        fleet,
        github,
        config,
    }
}

impl World {
    async fn instances(&self) -> Vec<String> {
        let state = self
            .fleet
            .describe(&self.config.pools[0])
            .await
            .expect("describe");
        state.instances.into_iter().map(|i| i.id).collect()
    }

    async fn desired(&self) -> u32 {
        self.fleet
            .describe(&self.config.pools[0])
            .await
            .expect("describe")
            .desired
    }

    /// A runner for every instance of the spot pool, as JIT provisioning registers them.
    async fn provision(&self) {
        let registered = self.github.registered();
        for id in self.instances().await {
            let name = format!("spot-{id}");
            if !registered.iter().any(|r| r.name == name) {
                self.github.register(&name, &self.config.pools[0].labels);
            }
        }
    }

    async fn deliver(&self, job: serde_json::Value) -> serde_json::Value {
        let body = job.to_string().into_bytes();
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
        h.insert("x-github-delivery", HeaderValue::from_static("d-1"));
        h.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(&sign(SECRET.as_bytes(), &body)).expect("sig"),
        );
        let a = self.service.handle(&Method::POST, &h, &body).await;
        assert!(a.status < 300, "{} {}", a.status, a.body);
        serde_json::from_str(&a.body).expect("json")
    }
}

fn job(
    action: &str,
    id: u64,
    attempt: u64,
    runner: Option<&str>,
    conclusion: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "action": action,
        "workflow_job": {"id": id, "run_id": 77, "run_attempt": attempt, "name": "build",
                         "labels": ["self-hosted", "linux"], "runner_name": runner,
                         "runner_id": runner.map(|_| 11), "conclusion": conclusion},
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}}
    })
}

fn warning(instance: &str, kind: NoticeKind) -> Notice {
    Notice {
        instance_id: instance.into(),
        kind,
    }
}

#[tokio::test]
async fn an_idle_instance_is_deregistered_and_replaced_at_once() {
    let w = world(CONFIG);
    let before = w.instances().await;
    assert_eq!(before.len(), 2);
    w.provision().await;
    let report = w
        .service
        .interruption(warning(&before[0], NoticeKind::Interruption))
        .await
        .expect("handled");
    assert_eq!(report.pool.as_deref(), Some("spot"));
    assert_eq!(report.action, "replaced");
    assert_eq!(report.runners_deregistered, 1);
    assert_eq!(w.github.removed(), vec![format!("spot-{}", before[0])]);
    let after = w.instances().await;
    assert!(!after.contains(&before[0]), "the doomed instance is gone");
    assert_eq!(after.len(), 2, "its replacement is launched: {after:?}");
    assert_eq!(w.desired().await, 2);
}

#[tokio::test]
async fn a_busy_instance_stays_out_of_capacity_and_its_job_is_rerun_once() {
    let w = world(CONFIG);
    w.provision().await;
    let doomed = w.instances().await[0].clone();
    let runner = format!("spot-{doomed}");
    w.deliver(job("queued", 1, 1, None, None)).await;
    w.deliver(job("in_progress", 1, 1, Some(&runner), None))
        .await;
    w.github.set_busy(&runner, true);
    w.github.set_job(1, "in_progress", Some(&runner));
    let report = w
        .service
        .interruption(warning(&doomed, NoticeKind::Interruption))
        .await
        .expect("handled");
    assert_eq!(report.action, "kept_out_of_capacity");
    assert_eq!(report.interrupted_runners, vec![runner.clone()]);
    assert!(
        w.github.removed().is_empty(),
        "a busy runner is not deregistered"
    );
    let instances = w.instances().await;
    assert!(instances.contains(&doomed), "the busy instance stays");
    assert_eq!(
        instances.len(),
        3,
        "one more instance is launched: {instances:?}"
    );
    assert_eq!(w.desired().await, 3);
    // A second warning for the same instance starts no second replacement.
    w.service
        .interruption(warning(&doomed, NoticeKind::Interruption))
        .await
        .expect("handled");
    assert_eq!(w.desired().await, 3);

    // The reclaim fails the job; its run is still going: recorded, re-run asked, not yet.
    w.github.set_busy(&runner, false);
    w.deliver(job("completed", 1, 1, Some(&runner), Some("failure")))
        .await;
    assert_eq!(w.service.metrics().interruptions("spot"), (1, 0));
    assert!(w.github.reruns().is_empty());
    // The run completed: reconcile re-runs the job, once.
    w.github.set_job(1, "completed", Some(&runner));
    w.service.reconcile().await;
    assert_eq!(w.github.reruns(), vec![1]);
    assert_eq!(w.service.metrics().interruptions("spot"), (1, 1));
    w.service.reconcile().await;
    w.deliver(job("completed", 1, 1, Some(&runner), Some("failure")))
        .await;
    assert_eq!(w.github.reruns(), vec![1], "at most once");
    assert_eq!(w.service.metrics().interruptions("spot"), (1, 1));
    let text = w.service.metrics().render_prometheus();
    assert!(
        text.contains("scalehook_jobs_interrupted_total{pool=\"spot\"} 1")
            && text.contains("scalehook_jobs_rerun_total{pool=\"spot\"} 1"),
        "{text}"
    );

    // The re-run (new job id, same run and name, attempt 2) runs on the overflow pool; a
    // first attempt of another job keeps the spot pool.
    let rerun = w.deliver(job("queued", 2, 2, None, None)).await;
    assert_eq!(rerun["pool"], "od", "{rerun}");
    let mut other = job("queued", 3, 1, None, None);
    other["workflow_job"]["name"] = "test".into();
    assert_eq!(w.deliver(other).await["pool"], "spot");
}

#[tokio::test]
async fn a_job_that_finishes_in_time_or_a_rebalance_is_no_interruption() {
    let w = world(CONFIG);
    w.provision().await;
    let ids = w.instances().await;
    let (a, b) = (format!("spot-{}", ids[0]), format!("spot-{}", ids[1]));
    for (id, runner) in [(1, &a), (2, &b)] {
        w.deliver(job("queued", id, 1, None, None)).await;
        w.deliver(job("in_progress", id, 1, Some(runner), None))
            .await;
        w.github.set_busy(runner, true);
    }
    w.service
        .interruption(warning(&ids[0], NoticeKind::Interruption))
        .await
        .expect("handled");
    let rebalance = w
        .service
        .interruption(warning(&ids[1], NoticeKind::Rebalance))
        .await
        .expect("handled");
    assert_eq!(rebalance.action, "kept_out_of_capacity");
    assert!(rebalance.interrupted_runners.is_empty());
    assert_eq!(w.desired().await, 4, "a replacement for each");
    w.deliver(job("completed", 1, 1, Some(&a), Some("success")))
        .await;
    w.deliver(job("completed", 2, 1, Some(&b), Some("failure")))
        .await;
    assert_eq!(w.service.metrics().interruptions("spot"), (0, 0));
}

#[tokio::test]
async fn an_instance_of_no_spot_pool_is_ignored() {
    let w = world(CONFIG);
    let report = w
        .service
        .interruption(warning("i-0123456789abcdef0", NoticeKind::Interruption))
        .await
        .expect("handled");
    assert_eq!((report.pool, report.action), (None, "ignored"));
    assert_eq!(w.desired().await, 2);
}
